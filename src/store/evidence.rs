//! Settlement CANCEL lines as evidence of refunds. A line is matched to one refund of its order:
//! first to a refund kassa recorded at the same time, then to a refund whose outcome is unknown
//! (which the line closes as refunded), else it is a refund kassa does not know.
//!
//! Invariants: a line is used once (`CANCEL_LINES_USED`); it closes an unknown refund only when
//! its order, PG and absolute amount match, its cancel time is not before the attempt started,
//! and no recorded refund of the same amount could own it instead. Anything doubtful is left to
//! a person.

use super::StoreError;
use super::alerts::{AlertLevel, insert_alert};
use super::cancels::{UNKNOWN_SYNCS_ALERT, record_refund, settle};
use super::dead_letters::close_letters_of;
use super::intents::{StoredIntent, get_intent, intents_of, put_intent};
use super::payments::{get_payment, put_payment};
use super::tx::Tx;
use crate::domain::calendar::kst_date;
use crate::domain::settlement::SettlementLine;
use crate::domain::{CancelId, IntentState, PaymentId, Provider};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use redb::ReadableTable;

/// How far a PG's refund time may lie from the time kassa recorded for the same refund: Payple
/// reports whole seconds.
const SAME_REFUND_S: i64 = 1;
/// How far behind kassa's clock the PG's may run when a line is taken for a refund kassa
/// recorded (the same slack `flows::cancel::PG_CLOCK_SLACK` gives the PG's record). Unknown
/// refunds keep the strict bound: a line of a refund before the attempt never closes one.
const RECORDED_CLOCK_SLACK_S: i64 = 60;
/// Most unknown refunds one sync looks at.
const UNKNOWN_SCAN_MAX: usize = 1_000;

/// What a CANCEL line showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Evidence {
    /// A refund kassa recorded.
    Known,
    /// It closed a refund whose outcome was unknown.
    ClosedUnknown,
    /// It could be an unknown refund's or a recorded one's: left to a person.
    Ambiguous,
    /// No refund kassa knows of (a refund in the PG's console, or a line without its time).
    Unexplained,
    /// Used before (a re-run of the same day).
    Used,
    /// Asked for exact matches only, and this line has none: it is looked at again with the
    /// rest of its page.
    NotExact,
}

fn line_key(provider: &str, line: &SettlementLine, at: DateTime<Utc>, amount: i64) -> String {
    format!(
        "{provider}:{}:{}:{amount}:{}",
        line.order_id,
        at.timestamp_millis(),
        line.occurrence
    )
}

/// A CANCEL line of a refund kassa recorded under the PG's id `id`, or `Unexplained`.
fn known_by_id(
    txn: &Tx<'_>,
    provider: &str,
    line: &SettlementLine,
    id: &str,
) -> Result<Evidence, StoreError> {
    let key = format!("{provider}:{}:id:{id}", line.order_id);
    if txn.cancel_lines_used()?.get(key.as_str())?.is_some() {
        return Ok(Evidence::Used);
    }
    let payments: Vec<u128> = {
        let index = txn.payments_by_order()?;
        index
            .range((line.order_id.as_str(), 0)..=(line.order_id.as_str(), u128::MAX))?
            .take(super::payments::PAYMENTS_PER_ORDER_MAX)
            .map(|entry| entry.map(|(key, _)| key.value().1))
            .collect::<Result<_, _>>()?
    };
    for payment_id in payments {
        for mut stored in intents_of(txn, PaymentId::from_u128(payment_id))? {
            if stored.intent.state == IntentState::Done
                && stored.intent.pg_cancel_id.as_deref() == Some(id)
            {
                txn.cancel_lines_used()?
                    .insert(key.as_str(), stored.intent.id.as_u128())?;
                stored.intent.cancel_line_seen = true;
                put_intent(txn, &stored)?;
                return Ok(Evidence::Known);
            }
        }
    }
    Ok(Evidence::Unexplained)
}

/// Marks a CANCEL line as used by `cancel` (a refund recorded from it), and the intent as seen.
pub(super) fn mark_line_used(
    txn: &Tx<'_>,
    provider: &str,
    line: &SettlementLine,
    at: DateTime<Utc>,
    amount: i64,
    cancel: CancelId,
) -> Result<(), StoreError> {
    let key = line_key(provider, line, at, amount);
    txn.cancel_lines_used()?
        .insert(key.as_str(), cancel.as_u128())?;
    if let Some(mut stored) = get_intent(txn, cancel)? {
        stored.intent.cancel_line_seen = true;
        put_intent(txn, &stored)?;
    }
    Ok(())
}

/// Matches a CANCEL line to a refund (see the module's invariants).
#[expect(
    clippy::too_many_lines,
    reason = "the whole matching rule and what it writes, read top to bottom"
)]
pub(super) fn apply_cancel_line(
    txn: &Tx<'_>,
    provider: &str,
    line: &SettlementLine,
    now: DateTime<Utc>,
    exact_only: bool,
) -> Result<Evidence, StoreError> {
    if line.cancel_at.is_none()
        && let Some(id) = line.pg_cancel_id.as_deref().filter(|id| !id.is_empty())
    {
        // A line without its time can still name its refund by the PG's own id.
        return known_by_id(txn, provider, line, id);
    }
    let (Some(at), Some(amount)) = (line.cancel_at, line.amount.checked_abs()) else {
        return Ok(Evidence::Unexplained);
    };
    let key = line_key(provider, line, at, amount);
    if txn.cancel_lines_used()?.get(key.as_str())?.is_some() {
        return Ok(Evidence::Used);
    }
    let Ok(provider_kind) = Provider::parse(provider) else {
        return Ok(Evidence::Unexplained);
    };
    let payments: Vec<u128> = {
        let index = txn.payments_by_order()?;
        index
            .range((line.order_id.as_str(), 0)..=(line.order_id.as_str(), u128::MAX))?
            .take(super::payments::PAYMENTS_PER_ORDER_MAX)
            .map(|entry| entry.map(|(key, _)| key.value().1))
            .collect::<Result<_, _>>()?
    };
    let slack = Duration::seconds(SAME_REFUND_S);
    let mut exact = None;
    let mut unknown: Vec<StoredIntent> = Vec::new();
    let mut recorded: Vec<StoredIntent> = Vec::new();
    for payment_id in payments {
        let payment_id = PaymentId::from_u128(payment_id);
        let Some(payment) = get_payment(txn, payment_id)? else {
            continue;
        };
        if payment.payment.provider != provider_kind {
            continue;
        }
        for stored in intents_of(txn, payment_id)? {
            let intent = &stored.intent;
            if intent.amount.won() != amount || intent.cancel_line_seen {
                continue;
            }
            let started_before = intent
                .first_attempt_at
                .is_none_or(|started| started <= at + slack);
            match intent.state {
                IntentState::Done => {
                    let same_id = line.pg_cancel_id.as_deref().is_some_and(|id| {
                        !id.is_empty() && intent.pg_cancel_id.as_deref() == Some(id)
                    });
                    let same_time = intent
                        .done_at
                        .is_some_and(|done| (done - at).num_seconds().abs() <= SAME_REFUND_S);
                    // Both name their refund by the PG's own id, and the ids differ: another
                    // refund's line.
                    let other_id = line.pg_cancel_id.as_deref().is_some_and(|id| {
                        !id.is_empty()
                            && intent
                                .pg_cancel_id
                                .as_deref()
                                .is_some_and(|own| !own.is_empty() && own != id)
                    });
                    if exact.is_none() && (same_id || same_time) {
                        exact = Some(stored.clone());
                    } else if !other_id
                        && intent.first_attempt_at.is_none_or(|started| {
                            started <= at + Duration::seconds(RECORDED_CLOCK_SLACK_S)
                        })
                    {
                        recorded.push(stored);
                    }
                }
                IntentState::Unknown if intent.first_attempt_at.is_some() && started_before => {
                    unknown.push(stored);
                }
                _ => {}
            }
        }
    }
    // Unknown refunds of more than one payment of the order (a cancel and a rollback of the
    // same amount): the line cannot say whose it is.
    if unknown
        .iter()
        .any(|other| other.intent.payment_id != unknown[0].intent.payment_id)
        && exact.is_none()
    {
        return Ok(Evidence::Ambiguous);
    }
    if exact_only && exact.is_none() {
        return Ok(Evidence::NotExact);
    }
    let (mut chosen, evidence) = match (exact, unknown.is_empty(), recorded.is_empty()) {
        (Some(known), _, _) => (known, Evidence::Known),
        (None, false, true) => (unknown.remove(0), Evidence::ClosedUnknown),
        (None, false, false) => return Ok(Evidence::Ambiguous),
        (None, true, false) => (recorded.remove(0), Evidence::Known),
        (None, true, true) => return Ok(Evidence::Unexplained),
    };
    txn.cancel_lines_used()?
        .insert(key.as_str(), chosen.intent.id.as_u128())?;
    chosen.intent.cancel_line_seen = true;
    if evidence == Evidence::ClosedUnknown {
        let Some(mut payment) = get_payment(txn, chosen.intent.payment_id)? else {
            return Err(StoreError::Corrupt(
                "cancel intent names a missing payment".into(),
            ));
        };
        record_refund(
            txn,
            &mut chosen,
            &mut payment,
            "",
            at,
            now,
            &format!(
                "the PG's settlement shows the refund (a {provider} CANCEL line of {} at {})",
                line.amount,
                at.to_rfc3339()
            ),
        )?;
        close_letters_of(
            txn,
            chosen.intent.id,
            now,
            "closed: a settlement CANCEL line shows the refund",
        )?;
        put_intent(txn, &chosen)?;
        settle(txn, &mut payment)?;
        put_payment(txn, &payment)?;
        tracing::info!(provider, order_id = %line.order_id, cancel_id = %chosen.intent.id, "a settlement CANCEL line closed a refund whose outcome was unknown");
    } else {
        put_intent(txn, &chosen)?;
    }
    Ok(evidence)
}

/// Counts a completed sync of `provider` for `date` against every unknown refund of that PG it
/// could have shown; one that reaches `UNKNOWN_SYNCS_ALERT` raises an urgent alert once.
pub(super) fn count_sync(
    txn: &Tx<'_>,
    provider: &str,
    date: NaiveDate,
    alert_base: u128,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let ids: Vec<u128> = txn
        .unknown_intents()?
        .iter()?
        .take(UNKNOWN_SCAN_MAX)
        .map(|entry| entry.map(|(key, _)| key.value()))
        .collect::<Result<_, _>>()?;
    for (index, id) in ids.into_iter().enumerate() {
        let Some(mut stored) = get_intent(txn, CancelId::from_u128(id))? else {
            continue;
        };
        let Some(payment) = get_payment(txn, stored.intent.payment_id)? else {
            continue;
        };
        let shown = stored
            .intent
            .first_attempt_at
            .is_some_and(|started| kst_date(started) <= date);
        let counted = stored
            .intent
            .unknown_counted_through
            .is_some_and(|through| through >= date);
        if payment.payment.provider.as_str() != provider || !shown || counted {
            continue;
        }
        stored.intent.unknown_counted_through = Some(date);
        stored.intent.unknown_syncs = stored.intent.unknown_syncs.saturating_add(1);
        if stored.intent.unknown_syncs == UNKNOWN_SYNCS_ALERT {
            let message = format!(
                "payment {}: after {UNKNOWN_SYNCS_ALERT} settlement syncs no CANCEL line shows the refund whose outcome is unknown; a missing line proves nothing: check {provider}'s console, then resolve or re-drive it",
                payment.payment.id
            );
            insert_alert(
                txn,
                alert_base.wrapping_add(u128::try_from(index).unwrap_or(0)),
                AlertLevel::Urgent,
                "REFUND_STILL_UNKNOWN",
                &message,
                Some(payment.payment.id),
                now,
            )?;
        }
        put_intent(txn, &stored)?;
    }
    Ok(())
}

/// How far back refunds are looked at for a missing CANCEL line.
const MISSING_LINE_LOOKBACK_DAYS: i64 = 31;
/// Most refunds one look for missing CANCEL lines reads.
const MISSING_LINE_SCAN_MAX: usize = 5_000;

/// Raises a warning, once per refund, for every refund kassa recorded at `provider` more than
/// `wait` ago that no settlement CANCEL line has shown (a refund the PG never carried out, or a
/// settlement that lost it). Refunds of the last `MISSING_LINE_LOOKBACK_DAYS` are looked at.
pub(super) fn alert_missing_lines(
    txn: &Tx<'_>,
    provider: &str,
    wait: Duration,
    alert_base: u128,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let due = now - wait;
    let from = due - Duration::days(MISSING_LINE_LOOKBACK_DAYS);
    let key_of =
        |at: DateTime<Utc>| u128::try_from(at.timestamp_millis().max(0)).unwrap_or(0) << 80;
    let ids: Vec<u128> = txn
        .cancel_intents()?
        .range(key_of(from)..key_of(due))?
        .take(MISSING_LINE_SCAN_MAX)
        .map(|entry| entry.map(|(key, _)| key.value()))
        .collect::<Result<_, _>>()?;
    for (index, id) in ids.into_iter().enumerate() {
        let Some(mut stored) = get_intent(txn, CancelId::from_u128(id))? else {
            continue;
        };
        let intent = &stored.intent;
        let waiting = intent.state == IntentState::Done
            && !intent.cancel_line_seen
            && !intent.missing_line_alerted
            && intent.done_at.is_some_and(|done| done <= due);
        if !waiting {
            continue;
        }
        let Some(payment) = get_payment(txn, intent.payment_id)? else {
            continue;
        };
        if payment.payment.provider.as_str() != provider {
            continue;
        }
        let message = format!(
            "payment {}: the refund of {} kassa recorded on {} has no {provider} settlement CANCEL line after {} days; check the PG's console",
            payment.payment.id,
            intent.amount,
            intent
                .done_at
                .map(|at| kst_date(at).to_string())
                .unwrap_or_default(),
            wait.num_days()
        );
        insert_alert(
            txn,
            alert_base.wrapping_add(u128::try_from(index).unwrap_or(0)),
            AlertLevel::Warning,
            "CANCEL_LINE_MISSING",
            &message,
            Some(payment.payment.id),
            now,
        )?;
        stored.intent.missing_line_alerted = true;
        put_intent(txn, &stored)?;
    }
    Ok(())
}

//! The cancel pipeline in redb: cancel requests and their idempotency keys, claims of cancel
//! attempts, key generations, and attempt outcomes. Intents live in `intents`, the queue and
//! the turn rule in `queue`, dead letters in `dead_letters`.
//!
//! Invariants:
//! - an intent, its reservation on the payment and its job are written in one transaction,
//!   before any PG call;
//! - claiming an attempt records, in the same transaction, that attempt n started and when; an
//!   attempt that finds its predecessor's mark still there starts as an unknown outcome;
//! - an outcome is recorded only by the attempt that holds the intent (fenced by the attempt
//!   number), except a refund, which is recorded whenever it is reported and never twice;
//! - an intent is finished once: a second outcome for a finished intent changes nothing.

use super::alerts::{AlertLevel, insert_alert};
use super::codec::{decode, encode};
use super::dead_letters::{ERROR_CHARS_MAX, UNKNOWN_OUTCOME_JOB, insert_dead_letter};
use super::intents::{
    INTENTS_PER_PAYMENT_MAX, StoredIntent, counts, get_intent, insert_intent, intents_of,
    put_intent,
};
use super::partners::{Entry, record_entry, today};
use super::payments::{StoredPayment, append_event, clip, get_payment, put_payment};
use super::queue::{
    Gate, InFlight, JobClaim, JobOutcome, Turn, cancel_turn, claim_job, due_ids, enqueue,
    enqueue_cancel, finish_job, get_job, lease_job, millis, move_job, remove_job,
};
use super::tx::Tx;
use super::{Store, StoreError, tables};
use crate::domain::job::JobKind;
use crate::domain::{
    Amount, AttemptMark, CancelId, CancelIntent, CancelKind, EventKind, IdempotencyKey,
    IntentState, Job, Payment, PaymentId, PaymentStatus, Provider,
};
use chrono::{DateTime, Duration, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const IDEMPOTENCY_RECORD: u8 = 1;

/// How long a cancel request's key counts as "still running" when its first request never
/// answered (its process died): after that, repeats answer the cancel's state.
pub const REQUEST_RUNNING_MS_MAX: i64 = 60_000;
/// How long a settlement sync waits while another sync of its PG was claimed with it.
const SYNC_WAIT_MS: u64 = 5_000;
/// Settlement syncs without a matching CANCEL line after which an unknown refund raises an
/// urgent alert (a missing line proves nothing, so a person must look).
pub const UNKNOWN_SYNCS_ALERT: u32 = 3;

#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    amount: Option<i64>,
    reason: String,
    started_at_ms: i64,
    answered: bool,
    cancel_id: Option<u128>,
    /// The request was refused as exceeding this available balance.
    exceeded_available: Option<i64>,
}

/// A cancel asked for through the API.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    pub payment_id: PaymentId,
    pub key: IdempotencyKey,
    pub amount: Option<Amount>,
    pub reason: String,
    pub cancel_id: CancelId,
    pub pg_key: String,
    pub now: DateTime<Utc>,
    /// Claim the new intent's first attempt for this long in the same transaction, when it is
    /// its turn (see `Store::claim_cancel`): the attempt's mark is then durable with the
    /// request, one commit instead of two. `None`: the intent waits for its job.
    pub claim_lease: Option<Duration>,
}

#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per cancel request, answered once"
)]
pub enum CancelRequestOutcome {
    /// A new intent, stored with its job, and its first attempt's claim when one was asked for
    /// and it was the intent's turn.
    Created(CancelIntent, Option<Claim>),
    /// The same key and body as an earlier request: that request's intent.
    Replay(CancelIntent),
    /// The same key while the first request is still running.
    InProgress,
    /// The same key with a different body.
    KeyReused,
    /// More than the balance not already held by other cancels.
    Exceeds {
        available: Amount,
    },
    /// The payment cannot be cancelled in this status.
    NotCancellable(PaymentStatus),
    /// The payment has as many cancels as one payment may have.
    TooMany,
    PaymentNotFound,
}

fn request_cancel(
    txn: &Tx<'_>,
    in_flight: &InFlight,
    request: &CancelRequest,
) -> Result<CancelRequestOutcome, StoreError> {
    let key = answered_key(request.payment_id, &request.key);
    let now_ms = request.now.timestamp_millis();
    let existing = txn
        .idempotency()?
        .get(key.as_str())?
        .map(|value| value.value().to_vec());
    if let Some(bytes) = existing {
        let record: IdempotencyRecord = decode("idempotency key", IDEMPOTENCY_RECORD, &bytes)?;
        if record.amount != request.amount.map(Amount::won) || record.reason != request.reason {
            return Ok(CancelRequestOutcome::KeyReused);
        }
        if !record.answered && now_ms - record.started_at_ms < REQUEST_RUNNING_MS_MAX {
            return Ok(CancelRequestOutcome::InProgress);
        }
        let cancel = record
            .cancel_id
            .ok_or_else(|| StoreError::Corrupt("idempotency key without its cancel".into()))?;
        let stored = get_intent(txn, CancelId::from_u128(cancel))?
            .ok_or_else(|| StoreError::Corrupt("idempotency key names a missing cancel".into()))?;
        return Ok(CancelRequestOutcome::Replay(stored.intent));
    }
    let Some(mut stored) = get_payment(txn, request.payment_id)? else {
        return Ok(CancelRequestOutcome::PaymentNotFound);
    };
    let status = stored.payment.status();
    if !matches!(
        status,
        PaymentStatus::Paid
            | PaymentStatus::PartiallyCancelled
            | PaymentStatus::CancelRequested
            | PaymentStatus::CancelFailed
            | PaymentStatus::CancelUnknown
            | PaymentStatus::Cancelled
    ) {
        return Ok(CancelRequestOutcome::NotCancellable(status));
    }
    // A refused request stores nothing, not even its key: a repeat is judged again.
    let available = stored.payment.available();
    let amount = request.amount.unwrap_or(available);
    if amount.is_zero() || amount > available {
        return Ok(CancelRequestOutcome::Exceeds { available });
    }
    if intents_of(txn, request.payment_id)?.len() >= INTENTS_PER_PAYMENT_MAX {
        return Ok(CancelRequestOutcome::TooMany);
    }
    stored
        .payment
        .reserve(amount)
        .map_err(|error| StoreError::Bug(error.to_string()))?;
    let intent = CancelIntent::new(
        request.cancel_id,
        request.payment_id,
        CancelKind::Cancel,
        amount,
        request.reason.clone(),
        request.pg_key.clone(),
        request.now,
    );
    insert_intent(txn, &intent)?;
    enqueue_cancel(txn, intent.id, stored.payment.provider, request.now)?;
    settle(txn, &mut stored)?;
    put_payment(txn, &stored)?;
    let detail = format!(
        "{amount} requested (key {}): {}",
        request.key.as_str(),
        request.reason
    );
    append_event(
        txn,
        request.payment_id,
        request.now,
        EventKind::CancelRequested,
        &detail,
    )?;
    let record = IdempotencyRecord {
        amount: request.amount.map(Amount::won),
        reason: request.reason.clone(),
        started_at_ms: now_ms,
        answered: false,
        cancel_id: Some(intent.id.as_u128()),
        exceeded_available: None,
    };
    let bytes = encode(IDEMPOTENCY_RECORD, &record)?;
    txn.idempotency()?.insert(key.as_str(), bytes.as_slice())?;
    let claim = match request.claim_lease {
        Some(lease) => claim_cancel(
            txn,
            in_flight,
            intent.id,
            request.now,
            lease,
            ClaimMode::Inline,
        )?,
        None => None,
    };
    // The claim read the intent back and marked its attempt: answer the intent as claimed.
    let intent = claim.as_ref().map_or(intent, |claim| claim.intent.clone());
    Ok(CancelRequestOutcome::Created(intent, claim))
}

/// Marks the first request of the idempotency key `key` (`payment:key`) as answered.
fn mark_answered(txn: &Tx<'_>, key: &str) -> Result<(), StoreError> {
    let existing = txn
        .idempotency()?
        .get(key)?
        .map(|value| value.value().to_vec());
    if let Some(bytes) = existing {
        let mut record: IdempotencyRecord = decode("idempotency key", IDEMPOTENCY_RECORD, &bytes)?;
        record.answered = true;
        let bytes = encode(IDEMPOTENCY_RECORD, &record)?;
        txn.idempotency()?.insert(key, bytes.as_slice())?;
    }
    Ok(())
}

fn answered_key(payment_id: PaymentId, key: &IdempotencyKey) -> String {
    format!("{payment_id}:{}", key.as_str())
}

/// An intent claimed for one attempt, with its payment as it is now.
#[derive(Debug, Clone)]
pub struct Claim {
    pub intent: CancelIntent,
    pub payment: Payment,
    /// This attempt's number: only it may record an outcome other than a refund.
    pub attempt: u32,
    /// Until when the claim holds; a call that moves money starts only if it fits.
    pub lease_until: DateTime<Utc>,
    /// The refunds kassa knows of this payment: a PG record with any other refund is not
    /// "nothing happened", and a refund kassa knows is not this intent's.
    pub known_refunds: Vec<KnownRefund>,
}

/// A refund kassa recorded, as the PG's record would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRefund {
    /// The PG's cancel id (empty when kassa learned the refund without one).
    pub pg_cancel_id: String,
    pub amount: Amount,
    pub at: Option<DateTime<Utc>>,
}

/// What one attempt at an intent came to.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// The PG refunded the intent's amount. `warning` raises a warning alert with it (a refund
    /// whose cash-receipt cancellation failed).
    Refunded {
        pg_cancel_id: String,
        at: DateTime<Utc>,
        warning: Option<String>,
    },
    /// Try again at `due`. `queued` counts it as a queue attempt; `alert` raises a warning.
    /// `new_key_if_untouched`: the PG keeps this answer under the key, so the next attempt asks
    /// and sends under a new key generation if nothing was refunded.
    Retry {
        error: String,
        due: DateTime<Utc>,
        outcome_unknown: bool,
        new_key_if_untouched: bool,
        queued: bool,
        alert: bool,
    },
    /// Give up: a dead letter and an urgent alert. `outcome_unknown`: what the last send did is
    /// not known (a re-drive asks first; until then the payment's other cancels wait).
    Dead {
        error: String,
        pg_answer: String,
        outcome_unknown: bool,
        new_key_if_untouched: bool,
    },
    /// The PG may have refunded and cannot be asked (Payple): nothing is sent again; the
    /// intent waits for evidence, listed with the dead letters, with an urgent alert.
    Unknown { error: String },
}

/// A due job claimed by the worker.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "at most JOBS_IN_FLIGHT_MAX of them exist at a time"
)]
pub enum Claimed {
    Cancel(Claim),
    Other(JobClaim),
}

/// How a claim treats an intent whose turn has not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimMode {
    /// The request's own inline attempt: the job may be due later, and nothing moves.
    Inline,
    /// The queue: only due jobs, and a job that must wait is moved to when its turn can come,
    /// so waiting jobs never crowd the front of the queue.
    Queue,
}

fn turn_of(
    txn: &Tx<'_>,
    in_flight: &InFlight,
    id: CancelId,
    now: DateTime<Utc>,
) -> Result<Turn, StoreError> {
    cancel_turn(
        &*txn.cancel_intents()?,
        &*txn.payments()?,
        &*txn.cancels_by_payment()?,
        &*txn.queue()?,
        in_flight,
        id,
        now,
    )
}

/// Claims cancel `id` for one attempt if it is its turn (see `queue::cancel_turn`), marking the
/// attempt as started in this transaction.
fn claim_cancel(
    txn: &Tx<'_>,
    in_flight: &InFlight,
    id: CancelId,
    now: DateTime<Utc>,
    lease: Duration,
    mode: ClaimMode,
) -> Result<Option<Claim>, StoreError> {
    let job_id = id.as_u128();
    let turn = turn_of(txn, in_flight, id, now)?;
    let Some(mut job) = get_job(txn, job_id)? else {
        return Ok(None);
    };
    match turn {
        Turn::Closed => {
            // Finished by another path (a late answer, a resolve): nothing left to run.
            remove_job(txn, job_id)?;
            return Ok(None);
        }
        Turn::Wait(at) => {
            if mode == ClaimMode::Queue {
                move_job(txn, job_id, &mut job, at)?;
            }
            return Ok(None);
        }
        Turn::Go => {}
    }
    if mode == ClaimMode::Queue && job.due_ms > millis(now) {
        return Ok(None);
    }
    let Some(mut stored) = get_intent(txn, id)? else {
        return Ok(None);
    };
    let Some(mut payment) = get_payment(txn, stored.intent.payment_id)? else {
        return Err(StoreError::Corrupt(
            "cancel intent names a missing payment".into(),
        ));
    };
    // Every read comes before the first write: a claim that fails part-way in a batch of claims
    // must leave nothing behind (the others of the batch commit).
    let known_refunds = intents_of(txn, payment.payment.id)?
        .into_iter()
        .filter(|other| other.intent.state == IntentState::Done)
        .map(|other| KnownRefund {
            pg_cancel_id: other.intent.pg_cancel_id.unwrap_or_default(),
            amount: other.intent.amount,
            at: other.intent.done_at,
        })
        .collect();
    let until = now + lease;
    let intent = &mut stored.intent;
    // The predecessor left its mark and no outcome (cut off: a dropped request, a crash, a
    // failed commit): what it did at the PG is unknown.
    if intent.in_flight.is_some() {
        intent.outcome_unknown = true;
    }
    intent.attempts = intent.attempts.saturating_add(1);
    intent.in_flight = Some(AttemptMark {
        number: intent.attempts,
        started_at: now,
    });
    intent.first_attempt_at.get_or_insert(now);
    // Only this intent runs now, so the refunds kassa has confirmed are the PG's balance
    // before it; a retry of this intent computes the same balance.
    intent.balance_before = payment.payment.balance();
    let attempt = intent.attempts;
    lease_job(txn, job_id, &mut job, now, until, attempt)?;
    put_intent(txn, &stored)?;
    payment.lease = Some((id, until.timestamp_millis()));
    put_payment(txn, &payment)?;
    Ok(Some(Claim {
        intent: stored.intent,
        payment: payment.payment,
        attempt,
        lease_until: until,
        known_refunds,
    }))
}

/// Sets the payment's status from its intents (see `Payment::settle_status`).
pub(super) fn settle(txn: &Tx<'_>, stored: &mut StoredPayment) -> Result<(), StoreError> {
    let intents = intents_of(txn, stored.payment.id)?;
    let rollback = intents
        .iter()
        .any(|stored| stored.intent.kind.is_rollback());
    stored
        .payment
        .settle_status(rollback, counts(&intents))
        .map_err(|error| StoreError::Bug(error.to_string()))
}

fn label(kind: CancelKind) -> &'static str {
    if kind.is_rollback() {
        "rollback"
    } else {
        "cancel"
    }
}

/// Records a confirmed refund of `stored`: the payment's books, the partner ledger, the event.
pub(super) fn record_refund(
    txn: &Tx<'_>,
    stored: &mut StoredIntent,
    payment: &mut StoredPayment,
    pg_cancel_id: &str,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    how: &str,
) -> Result<(), StoreError> {
    let intent = &mut stored.intent;
    payment
        .payment
        .record_refund(intent.amount)
        .map_err(|error| StoreError::Bug(error.to_string()))?;
    intent.state = IntentState::Done;
    intent.done_at = Some(at);
    intent.outcome_unknown = false;
    intent.in_flight = None;
    intent.pg_cancel_id = Some(pg_cancel_id.to_owned());
    let payment_id = payment.payment.id;
    let detail = format!(
        "{} refunded (PG cancel id {}): {how}",
        intent.amount,
        if pg_cancel_id.is_empty() {
            "not given"
        } else {
            pg_cancel_id
        }
    );
    append_event(txn, payment_id, now, EventKind::Refunded, &detail)?;
    if !intent.kind.is_rollback() {
        // A refund lowers the partner's day it completes on, not the day of the sale.
        let day = today(now);
        let entry = Entry {
            natural: day,
            today: day,
            partner: payment.payment.partner_id.as_ref(),
            id: intent.id.as_u128(),
            refund: true,
            amount: intent.amount,
            payment_id,
        };
        record_entry(txn, &entry)?;
    }
    remove_job(txn, intent.id.as_u128())?;
    txn.unknown_intents()?.remove(intent.id.as_u128())?;
    Ok(())
}

/// Moves an intent to UNKNOWN: no job, listed with the dead letters, an urgent alert.
pub(super) fn mark_unknown(
    txn: &Tx<'_>,
    stored: &mut StoredIntent,
    payment_id: PaymentId,
    error: &str,
    now: DateTime<Utc>,
    record_id: u128,
) -> Result<(), StoreError> {
    let intent = &mut stored.intent;
    intent.state = IntentState::Unknown;
    intent.unknown_syncs = 0;
    let what = label(intent.kind);
    let detail = format!(
        "attempt {}: the refund's outcome is unknown and the PG cannot be asked; nothing is sent again until a settlement CANCEL line or a person says what happened: {error}",
        intent.attempts
    );
    append_event(txn, payment_id, now, EventKind::OutcomeUnknown, &detail)?;
    insert_dead_letter(txn, record_id, intent, UNKNOWN_OUTCOME_JOB, error, "", now)?;
    let message = format!(
        "{what} of payment {payment_id}: the refund's outcome is unknown ({error}); check the PG's console, then resolve it or re-drive it"
    );
    insert_alert(
        txn,
        record_id,
        AlertLevel::Urgent,
        "REFUND_OUTCOME_UNKNOWN",
        &message,
        Some(payment_id),
        now,
    )?;
    stored.last_error = Some(clip(error, ERROR_CHARS_MAX));
    remove_job(txn, intent.id.as_u128())?;
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per outcome, each writing its rows in the same transaction"
)]
fn finish(
    txn: &Tx<'_>,
    id: CancelId,
    attempt: u32,
    result: &AttemptResult,
    now: DateTime<Utc>,
    record_id: u128,
) -> Result<Option<CancelIntent>, StoreError> {
    let Some(mut stored) = get_intent(txn, id)? else {
        return Ok(None);
    };
    let Some(mut payment) = get_payment(txn, stored.intent.payment_id)? else {
        return Err(StoreError::Corrupt(
            "cancel intent names a missing payment".into(),
        ));
    };
    let payment_id = payment.payment.id;
    let current = stored.intent.state == IntentState::Open
        && stored
            .intent
            .in_flight
            .is_some_and(|mark| mark.number == attempt);
    // A refund the PG reports is recorded whichever attempt reports it, as long as the intent
    // is not closed: a late answer of an attempt that was taken over is evidence too.
    let refund_open = matches!(
        stored.intent.state,
        IntentState::Open | IntentState::Unknown | IntentState::Dead
    );
    let is_refund = matches!(result, AttemptResult::Refunded { .. });
    if !(current || (is_refund && refund_open)) {
        return Ok(Some(stored.intent));
    }
    if current {
        stored.intent.in_flight = None;
        if payment.lease.is_some_and(|(holder, _)| holder == id) {
            payment.lease = None;
        }
    }
    let what = label(stored.intent.kind);
    match result {
        AttemptResult::Refunded {
            pg_cancel_id,
            at,
            warning,
        } => {
            let was_dead = stored.intent.state == IntentState::Dead;
            let how = if current {
                format!("attempt {attempt}")
            } else {
                format!("the late answer of attempt {attempt}")
            };
            record_refund(txn, &mut stored, &mut payment, pg_cancel_id, *at, now, &how)?;
            if was_dead {
                super::dead_letters::close_letters_of(
                    txn,
                    id,
                    now,
                    "closed: the PG's late answer confirmed the refund",
                )?;
            }
            if let Some(warning) = warning {
                let message =
                    format!("{what} of payment {payment_id} was refunded, but: {warning}");
                insert_alert(
                    txn,
                    record_id,
                    AlertLevel::Warning,
                    "REFUND_WARNING",
                    &message,
                    Some(payment_id),
                    now,
                )?;
            }
        }
        AttemptResult::Retry {
            error,
            due,
            outcome_unknown,
            new_key_if_untouched,
            queued,
            alert,
        } => {
            let intent = &mut stored.intent;
            if *queued {
                intent.queue_attempts = intent.queue_attempts.saturating_add(1);
            }
            intent.outcome_unknown = *outcome_unknown;
            intent.new_key_if_untouched = *new_key_if_untouched;
            let detail = format!(
                "attempt {attempt} failed: {error}; next attempt at {}",
                due.to_rfc3339()
            );
            append_event(txn, payment_id, now, EventKind::CancelFailed, &detail)?;
            if *alert {
                let message = format!(
                    "{what} of payment {payment_id} failed (attempt {attempt}), retrying: {error}"
                );
                insert_alert(
                    txn,
                    record_id,
                    AlertLevel::Warning,
                    "CANCEL_RETRY",
                    &message,
                    Some(payment_id),
                    now,
                )?;
            }
            stored.last_error = Some(clip(error, ERROR_CHARS_MAX));
            // Moves the job to its next try, lease released (or queues it again, should it be
            // missing: an open intent always has its job).
            enqueue_cancel(txn, id, payment.payment.provider, *due)?;
        }
        AttemptResult::Dead {
            error,
            pg_answer,
            outcome_unknown,
            new_key_if_untouched,
        } => {
            let intent = &mut stored.intent;
            intent.state = IntentState::Dead;
            intent.outcome_unknown = *outcome_unknown;
            intent.new_key_if_untouched = *new_key_if_untouched;
            let detail =
                format!("attempt {attempt} failed: {error}; a human must look at it (dead letter)");
            append_event(txn, payment_id, now, EventKind::DeadLettered, &detail)?;
            insert_dead_letter(
                txn,
                record_id,
                intent,
                intent.kind.as_str(),
                error,
                pg_answer,
                now,
            )?;
            let held = intents_of(txn, payment_id)?
                .iter()
                .filter(|other| other.intent.id != id && other.intent.state == IntentState::Open)
                .count();
            let waiting = if *outcome_unknown && held > 0 {
                format!(
                    "; its outcome is unknown, so the payment's {held} other cancel(s) wait until it is re-driven or resolved"
                )
            } else {
                String::new()
            };
            let message = format!(
                "{what} of payment {payment_id} needs a human (dead letter): {error}{waiting}"
            );
            insert_alert(
                txn,
                record_id,
                AlertLevel::Urgent,
                "DEAD_LETTER",
                &message,
                Some(payment_id),
                now,
            )?;
            stored.last_error = Some(clip(error, ERROR_CHARS_MAX));
            remove_job(txn, id.as_u128())?;
        }
        AttemptResult::Unknown { error } => {
            mark_unknown(txn, &mut stored, payment_id, error, now, record_id)?;
        }
    }
    put_intent(txn, &stored)?;
    settle(txn, &mut payment)?;
    put_payment(txn, &payment)?;
    Ok(Some(stored.intent))
}

/// A refund the PG made that kassa did not ask for (in the PG's console, say), as the PG's
/// record or its settlement shows it.
#[derive(Debug, Clone)]
pub struct OutsideRefund {
    /// The PG's cancel id, when the record has one (Toss `transactionKey`, PortOne
    /// `cancellation_id` or `pg_tid`).
    pub pg_cancel_id: String,
    /// True when `pg_cancel_id` names this refund alone (not PortOne's shared `pg_tid`).
    pub id_is_unique: bool,
    pub amount: Amount,
    pub at: DateTime<Utc>,
    /// Where kassa saw it, for the payment's history.
    pub source: String,
    /// Seen in a settlement CANCEL line (which then counts as that refund's line).
    pub from_line: bool,
}

/// What recording an outside refund did.
#[derive(Debug, Clone)]
pub enum OutsideOutcome {
    /// Recorded as a refund of the payment, with its ledger entry and an alert.
    Recorded,
    /// kassa knows this refund already.
    Known,
    /// The payment has cancels running, dead or in doubt, or is a rollback: they account for
    /// its refunds, so nothing is recorded beside them.
    Busy,
    /// More than the payment has left that no cancel holds: a person must look (an alert).
    TooMuch,
    NotFound,
}

/// True when a refund kassa recorded (`stored`) is the PG's `refund`: the same amount, and an
/// id that names the refund alone decides; otherwise (no id, or PortOne's shared `pg_tid`) the
/// same time within a second, and the same id when both have one. The same rule as the cancel
/// flow's look at the PG's record (`flows::cancel::is_known`).
/// Both name the refund by the PG's unique id, and it is the same.
fn same_unique_id(stored: &CancelIntent, refund: &OutsideRefund) -> bool {
    let id = stored.pg_cancel_id.as_deref().unwrap_or("");
    refund.id_is_unique && !id.is_empty() && id == refund.pg_cancel_id
}

fn same_refund(stored: &CancelIntent, refund: &OutsideRefund) -> bool {
    let id = stored.pg_cancel_id.as_deref().unwrap_or("");
    if stored.amount != refund.amount {
        return false;
    }
    if refund.id_is_unique && !id.is_empty() {
        return id == refund.pg_cancel_id;
    }
    let close = stored
        .done_at
        .is_some_and(|done| (done - refund.at).num_seconds().abs() <= 1);
    close && (id.is_empty() || refund.pg_cancel_id.is_empty() || id == refund.pg_cancel_id)
}

/// An alert id made from a refund the PG shows: time-ordered by the refund's time (the top 48
/// bits), the same every time the refund is found.
fn once_id(payment_id: PaymentId, refund: &OutsideRefund) -> u128 {
    // With the PG's id, the refund is that id (its time may be one kassa filled in); without,
    // its amount and time.
    let what = if refund.pg_cancel_id.is_empty() {
        format!(
            "{payment_id}::{}:{}",
            refund.amount.won(),
            refund.at.timestamp_millis()
        )
    } else {
        format!(
            "{payment_id}:{}:{}",
            refund.pg_cancel_id,
            refund.amount.won()
        )
    };
    let hash = what.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // Time-ordered by the payment's own time (its id is a UUIDv7), the same on every sweep.
    let time = payment_id.as_u128() >> 80;
    (time << 80) | u128::from(hash)
}

pub(super) fn record_outside_refund(
    txn: &Tx<'_>,
    payment_id: PaymentId,
    refund: &OutsideRefund,
    cancel_id: CancelId,
    record_id: u128,
    now: DateTime<Utc>,
) -> Result<OutsideOutcome, StoreError> {
    let Some(mut payment) = get_payment(txn, payment_id)? else {
        return Ok(OutsideOutcome::NotFound);
    };
    let intents = intents_of(txn, payment_id)?;
    // A refund matched by its time whose line was another line already is not this line's: two
    // lines alike are two refunds (kassa's books then hold both, whichever line each was matched
    // to). The PG's own unique id is the same refund however often it is listed.
    if let Some(known) = intents.iter().find(|other| {
        other.intent.state == IntentState::Done
            && same_refund(&other.intent, refund)
            && (same_unique_id(&other.intent, refund)
                || !(refund.from_line && other.intent.cancel_line_seen))
    }) {
        if refund.from_line {
            // This line is that refund's line.
            let mut seen = known.clone();
            seen.intent.cancel_line_seen = true;
            put_intent(txn, &seen)?;
        }
        return Ok(OutsideOutcome::Known);
    }
    let busy = payment.payment.status().is_rollback()
        || intents.iter().any(|other| {
            other
                .intent
                .may_explain_refund(refund.amount, Some(refund.at))
        });
    if busy {
        return Ok(OutsideOutcome::Busy);
    }
    if refund.amount > payment.payment.available()
        || refund.amount.is_zero()
        || intents.len() >= INTENTS_PER_PAYMENT_MAX
    {
        let message = format!(
            "payment {payment_id}: {} shows a refund of {} that kassa cannot account for (it holds {} refundable); compare with the PG's console",
            refund.source,
            refund.amount,
            payment.payment.available()
        );
        // Once per refund, however often the sweep finds it: the id is made from the refund.
        let id = once_id(payment_id, refund);
        if txn.alerts()?.get(id)?.is_none() {
            insert_alert(
                txn,
                id,
                AlertLevel::Urgent,
                "OUTSIDE_REFUND_UNACCOUNTED",
                &message,
                Some(payment_id),
                now,
            )?;
        }
        let _ = record_id;
        return Ok(OutsideOutcome::TooMuch);
    }
    payment
        .payment
        .reserve(refund.amount)
        .map_err(|error| StoreError::Bug(error.to_string()))?;
    let intent = CancelIntent::new(
        cancel_id,
        payment_id,
        CancelKind::Cancel,
        refund.amount,
        format!("refunded outside kassa, found in {}", refund.source),
        format!(
            "outside-{}",
            uuid::Uuid::from_u128(cancel_id.as_u128()).simple()
        ),
        now,
    );
    insert_intent(txn, &intent)?;
    let mut stored = StoredIntent {
        intent,
        last_error: None,
    };
    record_refund(
        txn,
        &mut stored,
        &mut payment,
        &refund.pg_cancel_id,
        refund.at,
        now,
        &format!("made outside kassa, found in {}", refund.source),
    )?;
    stored.intent.cancel_line_seen = refund.from_line;
    put_intent(txn, &stored)?;
    settle(txn, &mut payment)?;
    put_payment(txn, &payment)?;
    let message = format!(
        "payment {payment_id}: a refund of {} made outside kassa (the PG's console?) was found in {} and recorded",
        refund.amount, refund.source
    );
    insert_alert(
        txn,
        record_id,
        AlertLevel::Warning,
        "OUTSIDE_REFUND",
        &message,
        Some(payment_id),
        now,
    )?;
    Ok(OutsideOutcome::Recorded)
}

/// Commits a new key generation for the attempt that holds the intent, after the PG's record
/// showed nothing refunded under the old key. `None` when the attempt no longer holds it.
fn new_key_generation(
    txn: &Tx<'_>,
    id: CancelId,
    attempt: u32,
    why: &str,
    now: DateTime<Utc>,
) -> Result<Option<CancelIntent>, StoreError> {
    let Some(mut stored) = get_intent(txn, id)? else {
        return Ok(None);
    };
    let holds = stored.intent.state == IntentState::Open
        && stored
            .intent
            .in_flight
            .is_some_and(|mark| mark.number == attempt);
    if !holds {
        return Ok(None);
    }
    let intent = &mut stored.intent;
    intent.key_generation = intent.key_generation.saturating_add(1);
    intent.new_key_if_untouched = false;
    intent.outcome_unknown = false;
    let detail = format!(
        "key generation {} ({}): {why}",
        intent.key_generation,
        intent.pg_key_now()
    );
    append_event(
        txn,
        intent.payment_id,
        now,
        EventKind::NewKeyGeneration,
        &detail,
    )?;
    put_intent(txn, &stored)?;
    Ok(Some(stored.intent))
}

impl Store {
    /// Records a cancel request: balance check, reservation, intent, job and status in one
    /// transaction (with the first attempt's claim when `claim_lease` asks for it), answered
    /// only after it is durable.
    pub async fn request_cancel(
        &self,
        request: CancelRequest,
    ) -> Result<CancelRequestOutcome, StoreError> {
        let in_flight = self.in_flight.clone();
        self.write(move |txn| request_cancel(txn, &in_flight, &request))
            .await
    }

    /// Marks the first request of an idempotency key as answered.
    pub async fn cancel_request_answered(
        &self,
        payment_id: PaymentId,
        key: &IdempotencyKey,
    ) -> Result<(), StoreError> {
        let key = answered_key(payment_id, key);
        self.write(move |txn| mark_answered(txn, &key)).await
    }

    /// Claims one intent for an inline attempt now; `None` when it is not its turn.
    pub async fn claim_cancel(
        &self,
        id: CancelId,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let in_flight = self.in_flight.clone();
        self.write(move |txn| claim_cancel(txn, &in_flight, id, now, lease, ClaimMode::Inline))
            .await
    }

    /// True when `id` is open and it is its turn: a read, so waiting for a turn does not
    /// itself commit. The same rule as the claim.
    pub async fn cancel_turn(&self, id: CancelId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let in_flight = self.in_flight.clone();
        self.read_point(move |txn| {
            let turn = cancel_turn(
                &txn.open_table(tables::CANCEL_INTENTS)?,
                &txn.open_table(tables::PAYMENTS)?,
                &txn.open_table(tables::CANCELS_BY_PAYMENT)?,
                &txn.open_table(tables::QUEUE)?,
                &in_flight,
                id,
                now,
            )?;
            Ok(turn == Turn::Go)
        })
        .await
    }

    /// Claims up to `limit` due jobs of every kind, each under its lease (`leases` by kind).
    /// Jobs of a PG whose gate is paused move to the end of the pause without spending a try;
    /// a probing PG lets one job through.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        leases: HashMap<JobKind, Duration>,
        gates: HashMap<Provider, Gate>,
    ) -> Result<Vec<Claimed>, StoreError> {
        let in_flight = self.in_flight.clone();
        self.write(move |txn| {
            let mut claims = Vec::new();
            let mut probed: Vec<Provider> = Vec::new();
            let mut syncing: Vec<Provider> = Vec::new();
            for id in due_ids(txn, now)? {
                if claims.len() == limit {
                    break;
                }
                // One unreadable job must not stop the others: it is logged and skipped.
                match claim_one(txn, &in_flight, id, now, &leases, &gates, &mut probed, &mut syncing) {
                    Ok(Some(claim)) => claims.push(claim),
                    Ok(None) => {}
                    Err(error) => tracing::error!(job = %uuid::Uuid::from_u128(id), error = %error, "a queued job cannot be claimed; skipped"),
                }
            }
            Ok(claims)
        })
        .await
    }

    /// Records what a cancel attempt came to, and answers the intent as it now stands (`None`
    /// when it is gone). `record_id` names the dead letter or alert it may make. `answered`:
    /// the cancel request whose key this attempt answers, marked in the same transaction.
    pub async fn finish_attempt(
        &self,
        claim: &Claim,
        result: AttemptResult,
        now: DateTime<Utc>,
        record_id: u128,
        answered: Option<(PaymentId, IdempotencyKey)>,
    ) -> Result<Option<CancelIntent>, StoreError> {
        let (id, attempt) = (claim.intent.id, claim.attempt);
        let answered = answered.map(|(payment_id, key)| answered_key(payment_id, &key));
        self.write(move |txn| {
            let finished = finish(txn, id, attempt, &result, now, record_id)?;
            // The outcome must be recorded whatever becomes of the key's mark: an unreadable
            // key record is logged and left (its repeats answer "in progress" until it ages).
            if let Some(key) = &answered {
                match mark_answered(txn, key) {
                    Ok(()) => {}
                    Err(StoreError::Corrupt(error)) => {
                        tracing::error!(cancel_id = %id, error = %error, "the cancel request's key cannot be marked answered");
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(finished)
        })
        .await
    }

    /// Commits a new key generation for `claim`'s attempt; answers the intent with its new key,
    /// or `None` when the attempt no longer holds the intent.
    pub async fn new_key_generation(
        &self,
        claim: &Claim,
        why: String,
        now: DateTime<Utc>,
    ) -> Result<Option<CancelIntent>, StoreError> {
        let (id, attempt) = (claim.intent.id, claim.attempt);
        self.write(move |txn| new_key_generation(txn, id, attempt, &why, now))
            .await
    }

    /// Records what a non-cancel job's run came to; answers its tries so far, or `None` when
    /// the run no longer held the job.
    pub async fn finish_job(
        &self,
        claim: &JobClaim,
        outcome: JobOutcome,
    ) -> Result<Option<u32>, StoreError> {
        let (id, token) = (claim.queued.id, claim.token);
        self.write(move |txn| finish_job(txn, id, token, &outcome))
            .await
    }

    /// Queues a job now (or at `due`); a job with a unique key already queued stays as it is.
    pub async fn enqueue(
        &self,
        id: u128,
        job: Job,
        provider: Option<Provider>,
        due: DateTime<Utc>,
    ) -> Result<u128, StoreError> {
        self.write(move |txn| enqueue(txn, id, &job, provider, due))
            .await
    }

    /// Records a refund the PG made outside kassa (see `OutsideOutcome`). `cancel_id` and
    /// `record_id` name the intent and the alert it may make.
    pub async fn record_outside_refund(
        &self,
        payment_id: PaymentId,
        refund: OutsideRefund,
        cancel_id: CancelId,
        record_id: u128,
        now: DateTime<Utc>,
    ) -> Result<OutsideOutcome, StoreError> {
        self.write(move |txn| {
            record_outside_refund(txn, payment_id, &refund, cancel_id, record_id, now)
        })
        .await
    }

    /// Queues a schedule's jobs for one fire time and marks the schedule as run for it, in one
    /// transaction: a fire is either queued and marked, or neither.
    pub async fn enqueue_scheduled(
        &self,
        schedule: &str,
        fire: DateTime<Utc>,
        jobs: Vec<(u128, Job)>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let key = format!("{}{schedule}", tables::SCHEDULE_MARK_PREFIX);
        self.write(move |txn| {
            for (id, job) in &jobs {
                enqueue(txn, *id, job, None, now)?;
            }
            txn.meta()?.insert(
                key.as_str(),
                fire.timestamp_millis().to_le_bytes().as_slice(),
            )?;
            Ok(())
        })
        .await
    }

    /// Makes every leased job due now and lets go of every payment's lease. Called once at
    /// start, before anything runs: kassa is the only process on its data file, so a lease
    /// found then belongs to a process that died, and the attempt marks, not the leases, say
    /// what its attempts may have done. Answers how many jobs were released.
    pub async fn release_leases(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let leased: Vec<u128> = {
                let queue = txn.queue()?;
                let mut leased = Vec::new();
                for entry in queue.iter()?.take(super::payments::LIST_SCAN_ROWS_MAX) {
                    let (key, value) = entry?;
                    let record: super::queue::JobRecord =
                        decode("job", super::queue::JOB_RECORD, value.value())?;
                    if record.lease.is_some() {
                        leased.push(key.value());
                    }
                }
                leased
            };
            for id in &leased {
                if let Some(mut record) = get_job(txn, *id)? {
                    record.lease = None;
                    move_job(txn, *id, &mut record, millis(now))?;
                }
                if let Some(stored) = get_intent(txn, CancelId::from_u128(*id))?
                    && let Some(mut payment) = get_payment(txn, stored.intent.payment_id)?
                    && payment.lease.is_some()
                {
                    payment.lease = None;
                    put_payment(txn, &payment)?;
                }
            }
            Ok(leased.len())
        })
        .await
    }

    /// The payments with an attempt running in this process.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    pub async fn cancel_intent(&self, id: CancelId) -> Result<Option<CancelIntent>, StoreError> {
        self.read_point(move |txn| {
            let table = txn.open_table(tables::CANCEL_INTENTS)?;
            table
                .get(id.as_u128())?
                .map(|value| {
                    super::intents::decode_intent(value.value()).map(|stored| stored.intent)
                })
                .transpose()
        })
        .await
    }

    /// Intents not yet finished (open, dead or unknown), oldest first, at most `limit`.
    pub async fn open_cancel_intents(&self, limit: usize) -> Result<Vec<CancelIntent>, StoreError> {
        self.read(move |txn| {
            let intents = txn.open_table(tables::CANCEL_INTENTS)?;
            let mut open = Vec::new();
            for entry in intents.iter()?.take(super::payments::LIST_SCAN_ROWS_MAX) {
                let (_, value) = entry?;
                let stored = super::intents::decode_intent(value.value())?;
                if !matches!(
                    stored.intent.state,
                    IntentState::Done | IntentState::Resolved
                ) {
                    open.push(stored.intent);
                    if open.len() == limit {
                        break;
                    }
                }
            }
            Ok(open)
        })
        .await
    }

    /// How many jobs of each kind are queued.
    pub async fn queue_depth(&self) -> Result<Vec<(JobKind, usize)>, StoreError> {
        self.read(move |txn| super::queue::depth(&txn.open_table(tables::QUEUE)?))
            .await
    }

    /// When the next job is due, if any: the worker sleeps until then at most.
    pub async fn next_job_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read_point(move |txn| super::queue::first_due(&txn.open_table(tables::QUEUE_DUE)?))
            .await
    }

    /// A payment's intents, oldest first.
    pub async fn intents_of_payment(
        &self,
        payment: PaymentId,
    ) -> Result<Vec<CancelIntent>, StoreError> {
        self.read(move |txn| {
            let index = txn.open_table(tables::CANCELS_BY_PAYMENT)?;
            let intents = txn.open_table(tables::CANCEL_INTENTS)?;
            let mut found = Vec::new();
            for id in super::intents::intent_ids_of(&index, payment)? {
                if let Some(value) = intents.get(id)? {
                    found.push(super::intents::decode_intent(value.value())?.intent);
                }
            }
            Ok(found)
        })
        .await
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one claim and the limits of its batch"
)]
/// Claims one due job: a cancel under the turn rule, anything else as it is; a paused PG's job
/// moves to the end of its pause.
fn claim_one(
    txn: &Tx<'_>,
    in_flight: &InFlight,
    id: u128,
    now: DateTime<Utc>,
    leases: &HashMap<JobKind, Duration>,
    gates: &HashMap<Provider, Gate>,
    probed: &mut Vec<Provider>,
    syncing: &mut Vec<Provider>,
) -> Result<Option<Claimed>, StoreError> {
    let Some(mut record) = get_job(txn, id)? else {
        return Ok(None);
    };
    let provider = record
        .provider
        .as_deref()
        .and_then(|raw| Provider::parse(raw).ok());
    let kind = super::queue::kind_named(&record.kind)?;
    if let Some(provider) = provider {
        match gates.get(&provider) {
            Some(Gate::Paused(until)) => {
                move_job(txn, id, &mut record, millis(*until).max(millis(now) + 1))?;
                return Ok(None);
            }
            Some(Gate::Probe) if probed.contains(&provider) => {
                let soon = millis(now) + super::queue::POSTPONE_MS_MIN;
                move_job(txn, id, &mut record, soon)?;
                return Ok(None);
            }
            _ => {}
        }
    }
    // One settlement sync of a PG at a time: the others of this claim wait a little (the sync's
    // own lock would refuse them anyway, and spend a try).
    if kind == JobKind::SettlementSync
        && let Some(provider) = provider
    {
        if syncing.contains(&provider) {
            let later = millis(now) + SYNC_WAIT_MS;
            move_job(txn, id, &mut record, later)?;
            return Ok(None);
        }
        syncing.push(provider);
    }
    let lease = leases
        .get(&kind)
        .copied()
        .unwrap_or_else(|| Duration::minutes(5));
    let claimed = if kind == JobKind::Cancel {
        claim_cancel(
            txn,
            in_flight,
            CancelId::from_u128(record.target),
            now,
            lease,
            ClaimMode::Queue,
        )?
        .map(Claimed::Cancel)
    } else {
        claim_job(txn, id, now, lease)?.map(Claimed::Other)
    };
    if claimed.is_some()
        && let Some(provider) = provider
        && gates.get(&provider) == Some(&Gate::Probe)
    {
        probed.push(provider);
    }
    Ok(claimed)
}

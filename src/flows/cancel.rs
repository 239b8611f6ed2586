//! Cancels and rollbacks: recording a cancel request, and carrying out cancel intents at the PG
//! exactly once, inline within the request and then from the retry queue.
//!
//! Invariants: the intent, its reservation and its job are durable before the PG is called;
//! every attempt sends the intent's own key and the balance kassa expects; when an outcome is
//! unknown or the PG says "already cancelled" or refuses, kassa asks the PG and converges on its
//! answer before it tries again; every attempt ends in exactly one recorded outcome.

use super::{FlowError, Kassa};
use crate::domain::retry::RetrySchedule;
use crate::domain::{
    Amount, CancelId, CancelIntent, IdempotencyKey, IntentState, PaymentId, PaymentStatus,
    parse_text,
};
use crate::gateway::{CancelRequest, GatewayError, PgPayment};
use crate::store::{AttemptResult, CancelRequestOutcome, Claim};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Pause between inline attempts (times the attempt number).
pub const INLINE_BACKOFF: Duration = Duration::from_millis(200);
/// Longest an inline attempt waits for its turn behind other cancels of the same payment.
pub const INLINE_TURN_WAIT_MAX: Duration = Duration::from_secs(10);
/// Longest reason kept with a cancel.
pub const REASON_CHARS_MAX: usize = 200;

/// Where a cancel stands, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStatus {
    Cancelled,
    PartiallyCancelled,
    Pending,
    Failed,
    /// Closed by an operator without a refund by kassa.
    Resolved,
}

impl CancelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelStatus::Cancelled => "CANCELLED",
            CancelStatus::PartiallyCancelled => "PARTIALLY_CANCELLED",
            CancelStatus::Pending => "CANCEL_PENDING",
            CancelStatus::Failed => "CANCEL_FAILED",
            CancelStatus::Resolved => "CANCEL_RESOLVED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CancelAnswer {
    pub cancel_id: CancelId,
    pub payment_id: PaymentId,
    pub amount: Amount,
    pub status: CancelStatus,
}

/// The lease an attempt holds: long enough for a token call, the cancel and a re-query, each
/// bounded by the PG timeout.
pub fn lease(kassa: &Kassa) -> chrono::Duration {
    let pg_timeout = kassa.config.retry.pg_timeout;
    chrono::Duration::from_std(pg_timeout * 4 + Duration::from_secs(5))
        .unwrap_or(chrono::Duration::minutes(5))
}

fn schedule(kassa: &Kassa) -> RetrySchedule {
    RetrySchedule::new(
        kassa.config.retry.backoff.clone(),
        kassa.config.retry.queue_attempts_max,
    )
}

async fn answer(kassa: &Kassa, intent: &CancelIntent) -> Result<CancelAnswer, FlowError> {
    let intent = kassa
        .store
        .cancel_intent(intent.id)
        .await?
        .unwrap_or_else(|| intent.clone());
    let status = match intent.state {
        IntentState::Open => CancelStatus::Pending,
        IntentState::Dead => CancelStatus::Failed,
        IntentState::Resolved => CancelStatus::Resolved,
        IntentState::Done => {
            let view = kassa.store.payment(intent.payment_id).await?;
            let full = view.is_some_and(|view| view.payment.status() == PaymentStatus::Cancelled);
            if full {
                CancelStatus::Cancelled
            } else {
                CancelStatus::PartiallyCancelled
            }
        }
    };
    Ok(CancelAnswer {
        cancel_id: intent.id,
        payment_id: intent.payment_id,
        amount: intent.amount,
        status,
    })
}

/// Records a cancel of `amount` (the whole available balance when `None`) and tries it inline.
/// The same `key` again answers the same cancel; it never cancels twice.
pub async fn request(
    kassa: &Kassa,
    payment_id: PaymentId,
    key: IdempotencyKey,
    amount: Option<i64>,
    reason: &str,
) -> Result<CancelAnswer, FlowError> {
    let amount = amount.map(Amount::positive).transpose()?;
    let reason = parse_text("reason", reason, REASON_CHARS_MAX)?;
    let cancel_uuid = kassa.env.new_uuid();
    let request = crate::store::CancelRequest {
        payment_id,
        key: key.clone(),
        amount,
        reason,
        cancel_id: CancelId::from_uuid(cancel_uuid),
        pg_key: cancel_uuid.simple().to_string(),
        now: kassa.env.now(),
    };
    match kassa.store.request_cancel(request).await? {
        CancelRequestOutcome::Created(intent) => {
            tracing::info!(payment_id = %payment_id, cancel_id = %intent.id, amount = intent.amount.won(), "cancel accepted");
            drive_inline(kassa, &intent).await?;
            kassa
                .store
                .cancel_request_answered(payment_id, &key)
                .await?;
            answer(kassa, &intent).await
        }
        CancelRequestOutcome::Replay(intent) => answer(kassa, &intent).await,
        CancelRequestOutcome::InProgress => Err(FlowError::Conflict {
            code: "IDEMPOTENCY_REQUEST_IN_PROGRESS",
            message:
                "the first request with this Idempotency-Key is still running; ask again shortly"
                    .into(),
        }),
        CancelRequestOutcome::KeyReused => Err(FlowError::Unprocessable {
            code: "IDEMPOTENCY_KEY_REUSED",
            message: "this Idempotency-Key was used with a different request".into(),
        }),
        CancelRequestOutcome::Exceeds { available } => Err(FlowError::Unprocessable {
            code: "CANCEL_EXCEEDS_BALANCE",
            message: format!("at most {available} of this payment can still be cancelled"),
        }),
        CancelRequestOutcome::NotCancellable(status) => Err(FlowError::Conflict {
            code: "PAYMENT_NOT_CANCELLABLE",
            message: format!("a payment in status {status} cannot be cancelled"),
        }),
        CancelRequestOutcome::TooMany => Err(FlowError::Conflict {
            code: "TOO_MANY_CANCELS",
            message: "this payment has as many cancels as one payment may have".into(),
        }),
        CancelRequestOutcome::PaymentNotFound => Err(FlowError::NotFound { what: "payment" }),
    }
}

/// How an attempt was started, which decides what a failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inside the request; `last` hands the job to the queue on failure.
    Inline { last: bool },
    /// From the retry queue.
    Queue,
}

/// Makes the inline attempts of `retry.inline_attempts`, each when it is the intent's turn.
/// Whatever is left is done by the retry worker.
pub async fn drive_inline(kassa: &Kassa, intent: &CancelIntent) -> Result<(), FlowError> {
    let attempts = kassa.config.retry.inline_attempts;
    let turn_deadline = tokio::time::Instant::now() + INLINE_TURN_WAIT_MAX;
    for attempt in 0..attempts {
        let Some(claim) = wait_for_turn(kassa, intent.id, turn_deadline).await? else {
            return Ok(());
        };
        let result = run_claim(
            kassa,
            &claim,
            Mode::Inline {
                last: attempt + 1 == attempts,
            },
        )
        .await?;
        if !matches!(result, AttemptResult::Retry { .. }) {
            return Ok(());
        }
        if attempt + 1 < attempts {
            tokio::time::sleep(INLINE_BACKOFF * (attempt + 1)).await;
        }
    }
    Ok(())
}

/// Claims `id` as soon as it is its turn, waking on every commit; `None` once it is no longer
/// open or the deadline passes (the queue then carries on).
async fn wait_for_turn(
    kassa: &Kassa,
    id: CancelId,
    deadline: tokio::time::Instant,
) -> Result<Option<Claim>, FlowError> {
    let mut changes = kassa.store.changes();
    loop {
        changes.borrow_and_update();
        // Look first (a read); claim (a write) only when it is our turn, so waiting does not
        // commit and wake every waiter, this one included.
        if kassa.store.cancel_turn(id, kassa.env.now()).await?
            && let Some(claim) = kassa
                .store
                .claim_cancel(id, kassa.env.now(), lease(kassa))
                .await?
        {
            return Ok(Some(claim));
        }
        let still_open = kassa
            .store
            .cancel_intent(id)
            .await?
            .is_some_and(|intent| intent.state == IntentState::Open);
        if !still_open || tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Runs one claimed attempt and records its outcome. Answers what was recorded.
pub async fn run_claim(
    kassa: &Kassa,
    claim: &Claim,
    mode: Mode,
) -> Result<AttemptResult, FlowError> {
    let result = attempt(kassa, claim, mode).await;
    let now = kassa.env.now();
    match &result {
        AttemptResult::Refunded { .. } => {
            tracing::info!(payment_id = %claim.payment.id, cancel_id = %claim.intent.id, amount = claim.intent.amount.won(), "refund confirmed by the PG");
        }
        AttemptResult::Retry { error, due, .. } => {
            tracing::warn!(payment_id = %claim.payment.id, cancel_id = %claim.intent.id, error = %error, next = %due.to_rfc3339(), "refund attempt failed; will retry");
        }
        AttemptResult::Dead { error, .. } => {
            tracing::error!(payment_id = %claim.payment.id, cancel_id = %claim.intent.id, error = %error, "refund moved to the dead letters; a human must look at it");
        }
    }
    let record_id = kassa.env.new_uuid().as_u128();
    kassa
        .store
        .finish_attempt(claim, result.clone(), now, record_id)
        .await?;
    Ok(result)
}

/// A short account of the PG's record, kept with a dead letter.
fn describe(pg: &PgPayment) -> String {
    format!(
        "PG payment {}: status {:?}, amount {}, cancelled {}, balance {}, {} cancellation(s)",
        pg.pg_tid,
        pg.status,
        pg.amount,
        pg.cancelled_amount,
        pg.balance(),
        pg.cancellations.len()
    )
}

fn retry(
    kassa: &Kassa,
    claim: &Claim,
    mode: Mode,
    error: String,
    outcome_unknown: bool,
) -> AttemptResult {
    let now = kassa.env.now();
    let schedule = schedule(kassa);
    let random = {
        let mut bytes = [0u8; 8];
        kassa.env.entropy.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    };
    let after = |delay: Duration| {
        now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero())
    };
    match mode {
        Mode::Inline { last: false } => AttemptResult::Retry {
            error,
            due: now,
            outcome_unknown,
            queued: false,
            alert: false,
        },
        Mode::Inline { last: true } => AttemptResult::Retry {
            error,
            due: after(schedule.delay(0, random)),
            outcome_unknown,
            queued: false,
            alert: true,
        },
        Mode::Queue => {
            let made = claim.intent.queue_attempts.saturating_add(1);
            if schedule.exhausted(made) {
                let error = format!("{error} (after {made} queued attempts)");
                AttemptResult::Dead {
                    error,
                    pg_answer: String::new(),
                }
            } else {
                AttemptResult::Retry {
                    error,
                    due: after(schedule.delay(made, random)),
                    outcome_unknown,
                    queued: true,
                    alert: true,
                }
            }
        }
    }
}

/// One attempt: ask the PG first if the last outcome is unknown, then send the cancel, and
/// classify what comes back.
async fn attempt(kassa: &Kassa, claim: &Claim, mode: Mode) -> AttemptResult {
    let intent = &claim.intent;
    let payment = &claim.payment;
    let Some(gateway) = kassa.gateways.get(payment.provider) else {
        return AttemptResult::Dead {
            error: format!(
                "{} is not configured in this kassa",
                payment.provider.as_str()
            ),
            pg_answer: String::new(),
        };
    };
    // Without a guard against a repeated cancel (Payple), every retry asks the PG first.
    if intent.outcome_unknown || (!gateway.cancels_are_guarded() && intent.attempts > 0) {
        match gateway.fetch_payment(&payment.pg_tid).await {
            Ok(pg) => {
                if let Some(done) = converge(intent, &pg, kassa.env.now()) {
                    return done;
                }
                if pg.balance() != intent.balance_before {
                    return AttemptResult::Dead {
                        error: "the PG's balance matches neither before nor after this cancel"
                            .into(),
                        pg_answer: describe(&pg),
                    };
                }
            }
            Err(error) => {
                return retry(
                    kassa,
                    claim,
                    mode,
                    format!("re-query failed: {error}"),
                    true,
                );
            }
        }
    }
    let request = CancelRequest {
        pg_tid: payment.pg_tid.clone(),
        order_id: payment.order_id.as_str().to_owned(),
        amount: intent.amount,
        balance_before: intent.balance_before,
        reason: intent.reason.clone(),
        idempotency_key: intent.pg_key.clone(),
    };
    match gateway.cancel(&request).await {
        Ok(receipt) => AttemptResult::Refunded {
            pg_cancel_id: receipt.pg_cancel_id,
            at: receipt.at,
        },
        Err(error @ GatewayError::Transient(_)) => {
            retry(kassa, claim, mode, error.to_string(), false)
        }
        Err(error @ (GatewayError::NotFound | GatewayError::Credentials(_))) => {
            AttemptResult::Dead {
                error: error.to_string(),
                pg_answer: String::new(),
            }
        }
        Err(error) => {
            // Unknown, refused, "already cancelled" or unreadable: the PG's record decides.
            let unknown = matches!(
                error,
                GatewayError::UnknownOutcome(_) | GatewayError::BadResponse(_)
            );
            match gateway.fetch_payment(&payment.pg_tid).await {
                Ok(pg) => {
                    if let Some(done) = converge(intent, &pg, kassa.env.now()) {
                        return done;
                    }
                    if unknown && pg.balance() == intent.balance_before {
                        // Nothing happened at the PG: an ordinary retry.
                        return retry(kassa, claim, mode, error.to_string(), false);
                    }
                    AttemptResult::Dead {
                        error: error.to_string(),
                        pg_answer: describe(&pg),
                    }
                }
                Err(query_error) => retry(
                    kassa,
                    claim,
                    mode,
                    format!("{error}; and the re-query failed: {query_error}"),
                    true,
                ),
            }
        }
    }
}

/// Decides from the PG's record whether `intent` is already carried out: its balance went down
/// by exactly the intent's amount from the balance the intent was sent against.
fn converge(intent: &CancelIntent, pg: &PgPayment, now: DateTime<Utc>) -> Option<AttemptResult> {
    let expected_after = intent.balance_before.checked_sub(intent.amount)?;
    if pg.balance() != expected_after {
        return None;
    }
    let last = pg
        .cancellations
        .iter()
        .rev()
        .find(|entry| entry.amount == intent.amount);
    Some(AttemptResult::Refunded {
        pg_cancel_id: last
            .map(|entry| entry.pg_cancel_id.clone())
            .unwrap_or_default(),
        at: last.map_or(now, |entry| entry.at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CancelKind, PgTid};
    use crate::gateway::{PgCancellation, PgStatus};

    fn won(value: i64) -> Amount {
        Amount::non_negative(value).unwrap()
    }

    fn intent(amount: i64, balance_before: i64) -> CancelIntent {
        CancelIntent {
            id: CancelId::from_u128(1),
            payment_id: PaymentId::from_u128(2),
            kind: CancelKind::Cancel,
            amount: won(amount),
            balance_before: won(balance_before),
            reason: String::new(),
            pg_key: "k".into(),
            created_at: DateTime::UNIX_EPOCH,
            done_at: None,
            attempts: 0,
            queue_attempts: 0,
            state: IntentState::Open,
            outcome_unknown: false,
            pg_cancel_id: None,
        }
    }

    fn pg(amount: i64, cancelled: i64) -> PgPayment {
        PgPayment {
            pg_tid: PgTid::parse("imp_1").unwrap(),
            order_id: "order-1".into(),
            status: PgStatus::Paid,
            amount: won(amount),
            cancelled_amount: won(cancelled),
            currency: "KRW".into(),
            paid_at: None,
            cancellations: vec![PgCancellation {
                pg_cancel_id: "c1".into(),
                amount: won(cancelled),
                at: DateTime::UNIX_EPOCH,
            }],
        }
    }

    #[test]
    fn a_refund_counts_as_done_only_when_the_pg_balance_moved_by_exactly_its_amount() {
        let now = DateTime::UNIX_EPOCH;
        assert!(matches!(
            converge(&intent(100, 100), &pg(100, 100), now),
            Some(AttemptResult::Refunded { .. })
        ));
        assert!(converge(&intent(100, 100), &pg(100, 0), now).is_none());
        assert!(matches!(
            converge(&intent(30, 100), &pg(100, 30), now),
            Some(AttemptResult::Refunded { .. })
        ));
        assert!(converge(&intent(30, 100), &pg(100, 60), now).is_none());
    }
}

//! The cancel pipeline in redb: cancel intents, their retry jobs, claims with leases, attempt
//! outcomes and the idempotency keys of cancel requests. Dead letters live in `dead_letters`.
//!
//! Invariants:
//! - an intent, its reservation on the payment and its job are written in one transaction,
//!   before any PG call;
//! - the intents of one payment run one at a time, oldest first: only the oldest open intent can
//!   be claimed, and only while no other intent of the payment holds an unexpired lease;
//! - a claimed job is moved to its lease's expiry, so a crash mid-attempt makes it due again;
//! - an intent is finished once: a second outcome for a finished intent changes nothing.

use super::alerts::{AlertLevel, insert_alert};
use super::codec::{decode, encode};
use super::dead_letters::{DEAD_LETTER_RECORD, DeadLetterRecord};
use super::orders::millis_to_time;
use super::partners::{Entry, record_entry, today};
use super::payments::{StoredPayment, append_event, clip, get_payment, put_payment, view_in_write};
use super::{PaymentView, Store, StoreError, tables};
use crate::domain::{
    Amount, CancelId, CancelIntent, CancelKind, EventKind, IdempotencyKey, IntentState, Payment,
    PaymentId, PaymentStatus,
};
use chrono::{DateTime, Duration, Utc};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

const INTENT_RECORD: u8 = 1;
const IDEMPOTENCY_RECORD: u8 = 1;

/// Most characters of a PG's answer kept with a dead letter.
pub const PG_ANSWER_CHARS_MAX: usize = 2_000;
/// Most characters of an error kept with an intent or dead letter.
pub const ERROR_CHARS_MAX: usize = 500;
/// Most cancel intents one payment may have.
pub const INTENTS_PER_PAYMENT_MAX: usize = 100;
/// How long a cancel request's key counts as "still running" when its first request never
/// answered (its process died): after that, repeats answer the cancel's state.
pub const REQUEST_RUNNING_MS_MAX: i64 = 60_000;
/// Most due jobs one claim looks at.
pub const CLAIM_SCAN_MAX: usize = 1_000;

#[derive(Serialize, Deserialize)]
struct IntentRecord {
    id: u128,
    payment_id: u128,
    kind: String,
    amount: i64,
    balance_before: i64,
    reason: String,
    pg_key: String,
    created_at_ms: i64,
    done_at_ms: Option<i64>,
    attempts: u32,
    queue_attempts: u32,
    state: String,
    outcome_unknown: bool,
    pg_cancel_id: Option<String>,
    /// Where its job sits in `JOBS` (due time), if it has one.
    job_due_ms: Option<u64>,
    last_error: Option<String>,
    /// The token of the attempt that holds the intent now; a finish without it is stale.
    claim_token: Option<u128>,
}

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

/// A stored intent with where its job is.
#[derive(Debug, Clone)]
pub(super) struct StoredIntent {
    pub intent: CancelIntent,
    pub job_due_ms: Option<u64>,
    pub last_error: Option<String>,
    pub claim_token: Option<u128>,
}

/// An intent claimed for one attempt, with its payment as it is now.
#[derive(Debug, Clone)]
pub struct Claim {
    pub intent: CancelIntent,
    pub payment: Payment,
    /// Names this attempt: only its holder may record the outcome.
    pub token: u128,
}

/// What one attempt at an intent came to.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// The PG refunded the intent's amount.
    Refunded {
        pg_cancel_id: String,
        at: DateTime<Utc>,
    },
    /// Try again at `due`. `queued` counts it as a queue attempt; `alert` raises a warning.
    Retry {
        error: String,
        due: DateTime<Utc>,
        outcome_unknown: bool,
        queued: bool,
        alert: bool,
    },
    /// Give up: a dead letter and an urgent alert.
    Dead { error: String, pg_answer: String },
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
}

#[derive(Debug, Clone)]
pub enum CancelRequestOutcome {
    /// A new intent, stored with its job.
    Created(CancelIntent),
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

pub(super) fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

pub(super) fn millis(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_millis()).unwrap_or(0)
}

fn kind_of(raw: &str) -> Result<CancelKind, StoreError> {
    [
        CancelKind::Cancel,
        CancelKind::RollbackAmountMismatch,
        CancelKind::RollbackAlreadyPaid,
    ]
    .into_iter()
    .find(|kind| kind.as_str() == raw)
    .ok_or_else(|| corrupt("cancel kind", raw))
}

/// A new, open intent that has not been attempted.
pub(super) fn new_intent(
    id: CancelId,
    payment_id: PaymentId,
    kind: CancelKind,
    amount: Amount,
    reason: String,
    pg_key: String,
    now: DateTime<Utc>,
) -> CancelIntent {
    CancelIntent {
        id,
        payment_id,
        kind,
        amount,
        balance_before: amount,
        reason,
        pg_key,
        created_at: now,
        done_at: None,
        attempts: 0,
        queue_attempts: 0,
        state: IntentState::Open,
        outcome_unknown: false,
        pg_cancel_id: None,
    }
}

fn encode_intent(stored: &StoredIntent) -> Result<Vec<u8>, StoreError> {
    let intent = &stored.intent;
    encode(
        INTENT_RECORD,
        &IntentRecord {
            id: intent.id.as_u128(),
            payment_id: intent.payment_id.as_u128(),
            kind: intent.kind.as_str().to_owned(),
            amount: intent.amount.won(),
            balance_before: intent.balance_before.won(),
            reason: intent.reason.clone(),
            pg_key: intent.pg_key.clone(),
            created_at_ms: intent.created_at.timestamp_millis(),
            done_at_ms: intent.done_at.map(|at| at.timestamp_millis()),
            attempts: intent.attempts,
            queue_attempts: intent.queue_attempts,
            state: intent.state.as_str().to_owned(),
            outcome_unknown: intent.outcome_unknown,
            pg_cancel_id: intent.pg_cancel_id.clone(),
            job_due_ms: stored.job_due_ms,
            last_error: stored.last_error.clone(),
            claim_token: stored.claim_token,
        },
    )
}

fn decode_intent(bytes: &[u8]) -> Result<StoredIntent, StoreError> {
    let record: IntentRecord = decode("cancel intent", INTENT_RECORD, bytes)?;
    let intent = CancelIntent {
        id: CancelId::from_u128(record.id),
        payment_id: PaymentId::from_u128(record.payment_id),
        kind: kind_of(&record.kind)?,
        amount: Amount::non_negative(record.amount)
            .map_err(|error| corrupt("cancel amount", error))?,
        balance_before: Amount::non_negative(record.balance_before)
            .map_err(|error| corrupt("balance", error))?,
        reason: record.reason,
        pg_key: record.pg_key,
        created_at: millis_to_time(record.created_at_ms)?,
        done_at: record.done_at_ms.map(millis_to_time).transpose()?,
        attempts: record.attempts,
        queue_attempts: record.queue_attempts,
        state: IntentState::parse(&record.state)
            .ok_or_else(|| corrupt("intent state", &record.state))?,
        outcome_unknown: record.outcome_unknown,
        pg_cancel_id: record.pg_cancel_id,
    };
    Ok(StoredIntent {
        intent,
        job_due_ms: record.job_due_ms,
        last_error: record.last_error,
        claim_token: record.claim_token,
    })
}

pub(super) fn get_intent(
    txn: &WriteTransaction,
    id: CancelId,
) -> Result<Option<StoredIntent>, StoreError> {
    let bytes = txn
        .open_table(tables::CANCEL_INTENTS)?
        .get(id.as_u128())?
        .map(|value| value.value().to_vec());
    bytes.map(|bytes| decode_intent(&bytes)).transpose()
}

pub(super) fn put_intent(txn: &WriteTransaction, stored: &StoredIntent) -> Result<(), StoreError> {
    let bytes = encode_intent(stored)?;
    txn.open_table(tables::CANCEL_INTENTS)?
        .insert(stored.intent.id.as_u128(), bytes.as_slice())?;
    Ok(())
}

/// Moves (or removes, with `None`) an intent's job.
pub(super) fn move_job(
    txn: &WriteTransaction,
    stored: &mut StoredIntent,
    due_ms: Option<u64>,
) -> Result<(), StoreError> {
    let mut jobs = txn.open_table(tables::JOBS)?;
    let id = stored.intent.id.as_u128();
    if let Some(old) = stored.job_due_ms {
        jobs.remove((old, id))?;
    }
    if let Some(due) = due_ms {
        jobs.insert((due, id), ())?;
    }
    stored.job_due_ms = due_ms;
    Ok(())
}

/// Stores a new intent with its job due now and indexes it under its payment.
pub(super) fn insert_intent(
    txn: &WriteTransaction,
    intent: &CancelIntent,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut stored = StoredIntent {
        intent: intent.clone(),
        job_due_ms: None,
        last_error: None,
        claim_token: None,
    };
    move_job(txn, &mut stored, Some(millis(now)))?;
    put_intent(txn, &stored)?;
    txn.open_table(tables::CANCELS_BY_PAYMENT)?
        .insert((intent.payment_id.as_u128(), intent.id.as_u128()), ())?;
    Ok(())
}

/// A payment's intents, oldest first.
fn intents_of(txn: &WriteTransaction, payment: PaymentId) -> Result<Vec<StoredIntent>, StoreError> {
    let index = txn.open_table(tables::CANCELS_BY_PAYMENT)?;
    let key = payment.as_u128();
    let ids: Vec<u128> = index
        .range((key, 0)..=(key, u128::MAX))?
        .take(INTENTS_PER_PAYMENT_MAX)
        .map(|entry| entry.map(|(key, _)| key.value().1))
        .collect::<Result<_, _>>()?;
    drop(index);
    let mut intents = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(stored) = get_intent(txn, CancelId::from_u128(id))? {
            intents.push(stored);
        }
    }
    Ok(intents)
}

/// Sets the payment's status from its intents (see `Payment::settle_status`).
pub(super) fn settle(txn: &WriteTransaction, stored: &mut StoredPayment) -> Result<(), StoreError> {
    let intents = intents_of(txn, stored.payment.id)?;
    let open = intents
        .iter()
        .filter(|stored| stored.intent.state == IntentState::Open)
        .count();
    let dead = intents
        .iter()
        .filter(|stored| stored.intent.state == IntentState::Dead)
        .count();
    let rollback = intents
        .iter()
        .any(|stored| stored.intent.kind.is_rollback());
    stored
        .payment
        .settle_status(rollback, open, dead)
        .map_err(|error| StoreError::Bug(error.to_string()))
}

fn request_cancel(
    txn: &WriteTransaction,
    request: &CancelRequest,
) -> Result<CancelRequestOutcome, StoreError> {
    let key = format!("{}:{}", request.payment_id, request.key.as_str());
    let now_ms = request.now.timestamp_millis();
    let existing = txn
        .open_table(tables::IDEMPOTENCY)?
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
            .ok_or_else(|| corrupt("idempotency key", "no cancel"))?;
        let stored = get_intent(txn, CancelId::from_u128(cancel))?
            .ok_or_else(|| corrupt("idempotency key", "missing cancel"))?;
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
    let intent = new_intent(
        request.cancel_id,
        request.payment_id,
        CancelKind::Cancel,
        amount,
        request.reason.clone(),
        request.pg_key.clone(),
        request.now,
    );
    insert_intent(txn, &intent, request.now)?;
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
    txn.open_table(tables::IDEMPOTENCY)?
        .insert(key.as_str(), bytes.as_slice())?;
    Ok(CancelRequestOutcome::Created(intent))
}

/// How a claim treats an intent whose turn has not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimMode {
    /// The request's own inline attempt: the job may be due later, and nothing moves.
    Inline,
    /// The retry queue: only due jobs, and a job that must wait is moved to when its turn can
    /// come, so waiting jobs never crowd the front of the queue.
    Queue,
}

/// Earliest a postponed job is looked at again.
const POSTPONE_MS_MIN: u64 = 1_000;

/// Claims `id` for one attempt if it is open, due (from the queue), the oldest open intent of
/// its payment, and no other intent of the payment holds a live lease.
fn claim_one(
    txn: &WriteTransaction,
    id: CancelId,
    now: DateTime<Utc>,
    lease: Duration,
    mode: ClaimMode,
) -> Result<Option<Claim>, StoreError> {
    let Some(mut stored) = get_intent(txn, id)? else {
        return Ok(None);
    };
    let now_ms = millis(now);
    let Some(due) = stored
        .job_due_ms
        .filter(|_| stored.intent.state == IntentState::Open)
    else {
        return Ok(None);
    };
    if mode == ClaimMode::Queue && due > now_ms {
        return Ok(None);
    }
    let Some(mut payment) = get_payment(txn, stored.intent.payment_id)? else {
        return Err(corrupt("cancel intent", "names a missing payment"));
    };
    // Any live lease blocks a claim, this intent's own too: another attempt (the worker's, or
    // one whose process died) may be talking to the PG right now.
    let held_until = payment
        .lease
        .filter(|(_, until)| u64::try_from(*until).unwrap_or(0) > now_ms)
        .map(|(_, until)| u64::try_from(until).unwrap_or(0));
    let head = intents_of(txn, stored.intent.payment_id)?
        .into_iter()
        .find(|other| other.intent.state == IntentState::Open);
    let head_due = head
        .as_ref()
        .filter(|head| head.intent.id != id)
        .map(|head| head.job_due_ms.unwrap_or(now_ms));
    if held_until.is_some() || head_due.is_some() {
        if mode == ClaimMode::Queue {
            let wait = held_until
                .unwrap_or(0)
                .max(head_due.unwrap_or(0))
                .max(now_ms + POSTPONE_MS_MIN);
            move_job(txn, &mut stored, Some(wait))?;
            put_intent(txn, &stored)?;
        }
        return Ok(None);
    }
    let until = millis(now + lease);
    move_job(txn, &mut stored, Some(until))?;
    // Only this intent runs now, so the refunds kassa has confirmed are the PG's balance
    // before it; a retry of this intent computes the same balance.
    stored.intent.balance_before = payment.payment.balance();
    // A token unique to this claim: made from the time and the attempt count, so a re-applied
    // write makes the same one.
    let token = (u128::from(now_ms) << 32) | u128::from(stored.intent.attempts);
    stored.claim_token = Some(token);
    put_intent(txn, &stored)?;
    payment.lease = Some((id, i64::try_from(until).unwrap_or(i64::MAX)));
    put_payment(txn, &payment)?;
    Ok(Some(Claim {
        intent: stored.intent,
        payment: payment.payment,
        token,
    }))
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per outcome, each writing its rows in the same transaction"
)]
fn finish(
    txn: &WriteTransaction,
    id: CancelId,
    token: u128,
    result: &AttemptResult,
    now: DateTime<Utc>,
    record_id: u128,
) -> Result<Option<(CancelIntent, PaymentView)>, StoreError> {
    let Some(mut stored) = get_intent(txn, id)? else {
        return Ok(None);
    };
    let Some(mut payment) = get_payment(txn, stored.intent.payment_id)? else {
        return Err(corrupt("cancel intent", "names a missing payment"));
    };
    if stored.intent.state != IntentState::Open || stored.claim_token != Some(token) {
        // Finished already, or this attempt's lease ran out and another attempt took over:
        // its outcome is not recorded (the holder's is).
        let view = view_in_write(txn, payment.payment.id)?;
        return Ok(Some((stored.intent, view)));
    }
    stored.claim_token = None;
    if payment.lease.is_some_and(|(holder, _)| holder == id) {
        payment.lease = None;
    }
    let intent = &mut stored.intent;
    intent.attempts = intent.attempts.saturating_add(1);
    let payment_id = payment.payment.id;
    let label = if intent.kind.is_rollback() {
        "rollback"
    } else {
        "cancel"
    };
    match result {
        AttemptResult::Refunded { pg_cancel_id, at } => {
            payment
                .payment
                .record_refund(intent.amount)
                .map_err(|error| StoreError::Bug(error.to_string()))?;
            intent.state = IntentState::Done;
            intent.done_at = Some(*at);
            intent.outcome_unknown = false;
            intent.pg_cancel_id = Some(pg_cancel_id.clone());
            let detail = format!(
                "{} refunded by the PG (cancel id {pg_cancel_id}), attempt {}",
                intent.amount, intent.attempts
            );
            append_event(txn, payment_id, now, EventKind::Refunded, &detail)?;
            if !intent.kind.is_rollback() {
                // A refund lowers the partner's day it completes on, not the day of the sale.
                let partner = payment.payment.partner_id.clone();
                let day = today(now);
                let entry = Entry {
                    natural: day,
                    today: day,
                    partner: partner.as_ref(),
                    id: intent.id.as_u128(),
                    refund: true,
                    amount: intent.amount,
                    payment_id,
                };
                record_entry(txn, &entry)?;
            }
            move_job(txn, &mut stored, None)?;
        }
        AttemptResult::Retry {
            error,
            due,
            outcome_unknown,
            queued,
            alert,
        } => {
            if *queued {
                intent.queue_attempts = intent.queue_attempts.saturating_add(1);
            }
            intent.outcome_unknown = *outcome_unknown;
            let detail = format!(
                "attempt {} failed: {error}; next attempt at {}",
                intent.attempts,
                due.to_rfc3339()
            );
            append_event(txn, payment_id, now, EventKind::CancelFailed, &detail)?;
            if *alert {
                let message = format!(
                    "{label} of payment {payment_id} failed (attempt {}), retrying: {error}",
                    intent.attempts
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
            move_job(txn, &mut stored, Some(millis(*due)))?;
        }
        AttemptResult::Dead { error, pg_answer } => {
            intent.state = IntentState::Dead;
            let detail = format!(
                "attempt {} failed: {error}; a human must look at it (dead letter)",
                intent.attempts
            );
            append_event(txn, payment_id, now, EventKind::DeadLettered, &detail)?;
            let letter = DeadLetterRecord {
                cancel_id: intent.id.as_u128(),
                payment_id: payment_id.as_u128(),
                job: intent.kind.as_str().to_owned(),
                attempts: intent.attempts,
                last_error: clip(error, ERROR_CHARS_MAX),
                last_pg_answer: clip(pg_answer, PG_ANSWER_CHARS_MAX),
                created_at_ms: now.timestamp_millis(),
                redriven_at_ms: None,
                resolved_at_ms: None,
                resolution: None,
            };
            let bytes = encode(DEAD_LETTER_RECORD, &letter)?;
            txn.open_table(tables::DEAD_LETTERS)?
                .insert(record_id, bytes.as_slice())?;
            let message =
                format!("{label} of payment {payment_id} needs a human (dead letter): {error}");
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
            move_job(txn, &mut stored, None)?;
        }
    }
    put_intent(txn, &stored)?;
    settle(txn, &mut payment)?;
    put_payment(txn, &payment)?;
    Ok(Some((stored.intent, view_in_write(txn, payment_id)?)))
}

impl Store {
    /// Records a cancel request: balance check, reservation, intent, job and status in one
    /// transaction, answered only after it is durable.
    pub async fn request_cancel(
        &self,
        request: CancelRequest,
    ) -> Result<CancelRequestOutcome, StoreError> {
        self.write(move |txn| request_cancel(txn, &request)).await
    }

    /// Marks the first request of an idempotency key as answered.
    pub async fn cancel_request_answered(
        &self,
        payment_id: PaymentId,
        key: &IdempotencyKey,
    ) -> Result<(), StoreError> {
        let key = format!("{payment_id}:{}", key.as_str());
        self.write(move |txn| {
            let existing = txn
                .open_table(tables::IDEMPOTENCY)?
                .get(key.as_str())?
                .map(|value| value.value().to_vec());
            if let Some(bytes) = existing {
                let mut record: IdempotencyRecord =
                    decode("idempotency key", IDEMPOTENCY_RECORD, &bytes)?;
                record.answered = true;
                let bytes = encode(IDEMPOTENCY_RECORD, &record)?;
                txn.open_table(tables::IDEMPOTENCY)?
                    .insert(key.as_str(), bytes.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    /// Claims one intent for an attempt now (see `claim_one`); `None` when it is not its turn.
    pub async fn claim_cancel(
        &self,
        id: CancelId,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        self.write(move |txn| claim_one(txn, id, now, lease, ClaimMode::Inline))
            .await
    }

    /// True when `id` is open and it is its turn (nothing older open, no other live lease):
    /// a read, so waiting for a turn does not itself commit.
    pub async fn cancel_turn(&self, id: CancelId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.read(move |txn| {
            let intents = txn.open_table(tables::CANCEL_INTENTS)?;
            let Some(stored) = intents
                .get(id.as_u128())?
                .map(|value| decode_intent(value.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            if stored.intent.state != IntentState::Open {
                return Ok(false);
            }
            let payments = txn.open_table(tables::PAYMENTS)?;
            let Some(payment) = payments
                .get(stored.intent.payment_id.as_u128())?
                .map(|value| super::payments::decode_payment(value.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            if payment
                .lease
                .is_some_and(|(_, until)| until > now.timestamp_millis())
            {
                return Ok(false);
            }
            let index = txn.open_table(tables::CANCELS_BY_PAYMENT)?;
            let key = stored.intent.payment_id.as_u128();
            for entry in index
                .range((key, 0)..=(key, u128::MAX))?
                .take(INTENTS_PER_PAYMENT_MAX)
            {
                let (entry_key, _) = entry?;
                let other = entry_key.value().1;
                if other == id.as_u128() {
                    return Ok(true);
                }
                let open = intents
                    .get(other)?
                    .map(|value| decode_intent(value.value()))
                    .transpose()?;
                if open.is_some_and(|other| other.intent.state == IntentState::Open) {
                    return Ok(false);
                }
            }
            Ok(false)
        })
        .await
    }

    /// Claims up to `limit` due jobs, each under a lease.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        self.write(move |txn| {
            let candidates: Vec<u128> = txn
                .open_table(tables::JOBS)?
                .range(..=(millis(now), u128::MAX))?
                .take(CLAIM_SCAN_MAX)
                .map(|entry| entry.map(|(key, _)| key.value().1))
                .collect::<Result<_, _>>()?;
            let mut claims = Vec::new();
            for id in candidates {
                if claims.len() == limit {
                    break;
                }
                // One unreadable job must not stop the others: it is logged and skipped.
                match claim_one(txn, CancelId::from_u128(id), now, lease, ClaimMode::Queue) {
                    Ok(Some(claim)) => claims.push(claim),
                    Ok(None) => {}
                    Err(error) => tracing::error!(job = %uuid::Uuid::from_u128(id), error = %error, "a queued job cannot be claimed; skipped"),
                }
            }
            Ok(claims)
        })
        .await
    }

    /// Records what an attempt came to. `record_id` names the dead letter or alert it may make.
    pub async fn finish_attempt(
        &self,
        claim: &Claim,
        result: AttemptResult,
        now: DateTime<Utc>,
        record_id: u128,
    ) -> Result<Option<(CancelIntent, PaymentView)>, StoreError> {
        let (id, token) = (claim.intent.id, claim.token);
        self.write(move |txn| finish(txn, id, token, &result, now, record_id))
            .await
    }

    pub async fn cancel_intent(&self, id: CancelId) -> Result<Option<CancelIntent>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(tables::CANCEL_INTENTS)?;
            table
                .get(id.as_u128())?
                .map(|value| decode_intent(value.value()).map(|stored| stored.intent))
                .transpose()
        })
        .await
    }

    /// Intents not yet finished (open or dead), oldest first, at most `limit`.
    pub async fn open_cancel_intents(&self, limit: usize) -> Result<Vec<CancelIntent>, StoreError> {
        self.read(move |txn| {
            let intents = txn.open_table(tables::CANCEL_INTENTS)?;
            let mut open = Vec::new();
            for entry in intents.iter()? {
                let (_, value) = entry?;
                let stored = decode_intent(value.value())?;
                if stored.intent.state != IntentState::Done {
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

    /// When the next job is due, if any: the worker sleeps until then at most.
    pub async fn next_job_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(move |txn| {
            let first = txn
                .open_table(tables::JOBS)?
                .first()?
                .map(|(key, _)| key.value().0);
            first
                .map(|ms| millis_to_time(i64::try_from(ms).unwrap_or(i64::MAX)))
                .transpose()
        })
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
            let key = payment.as_u128();
            let mut found = Vec::new();
            for entry in index
                .range((key, 0)..=(key, u128::MAX))?
                .take(INTENTS_PER_PAYMENT_MAX)
            {
                let (key, _) = entry?;
                if let Some(value) = intents.get(key.value().1)? {
                    found.push(decode_intent(value.value())?.intent);
                }
            }
            Ok(found)
        })
        .await
    }
}

//! Cancel intents in redb: the record, its reads and writes, a payment's intents, and the status
//! that follows from them.
//!
//! Invariant: an intent's record says everything its next attempt needs to decide safely: which
//! key it sends (`key_generation`), whether the last attempt's outcome is known (`in_flight`,
//! `outcome_unknown`), and whether the PG keeps a refusal under the current key.

use super::StoreError;
use super::codec::{decode, encode};
use super::orders::millis_to_time;
use super::tx::Tx;
use crate::domain::{
    Amount, AttemptMark, CancelId, CancelIntent, CancelKind, IntentCounts, IntentState, PaymentId,
};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// Version 1 (parts 1–3) kept the job's place and the claim token in the intent; version 2 has
/// the attempt mark and the key generation, and the job lives in the queue.
pub(super) const INTENT_RECORD_V1: u8 = 1;
const INTENT_RECORD: u8 = 2;
/// Most cancel intents one payment may have.
pub const INTENTS_PER_PAYMENT_MAX: usize = 100;

#[derive(Serialize, Deserialize)]
pub(super) struct IntentRecordV1 {
    pub id: u128,
    pub payment_id: u128,
    pub kind: String,
    pub amount: i64,
    pub balance_before: i64,
    pub reason: String,
    pub pg_key: String,
    pub created_at_ms: i64,
    pub done_at_ms: Option<i64>,
    pub attempts: u32,
    pub queue_attempts: u32,
    pub state: String,
    pub outcome_unknown: bool,
    pub pg_cancel_id: Option<String>,
    pub job_due_ms: Option<u64>,
    pub last_error: Option<String>,
    pub claim_token: Option<u128>,
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "the stored shape of CancelIntent"
)]
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
    last_error: Option<String>,
    key_generation: u32,
    in_flight: Option<(u32, i64)>,
    first_attempt_at_ms: Option<i64>,
    new_key_if_untouched: bool,
    cancel_line_seen: bool,
    missing_line_alerted: bool,
    unknown_syncs: u32,
    unknown_counted_through: Option<u32>,
}

/// A stored intent with its last error.
#[derive(Debug, Clone)]
pub(super) struct StoredIntent {
    pub intent: CancelIntent,
    pub last_error: Option<String>,
}

pub(super) fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

pub(super) fn kind_of(raw: &str) -> Result<CancelKind, StoreError> {
    [
        CancelKind::Cancel,
        CancelKind::RollbackAmountMismatch,
        CancelKind::RollbackAlreadyPaid,
    ]
    .into_iter()
    .find(|kind| kind.as_str() == raw)
    .ok_or_else(|| corrupt("cancel kind", raw))
}

pub(super) fn encode_intent(stored: &StoredIntent) -> Result<Vec<u8>, StoreError> {
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
            last_error: stored.last_error.clone(),
            key_generation: intent.key_generation,
            in_flight: intent
                .in_flight
                .map(|mark| (mark.number, mark.started_at.timestamp_millis())),
            first_attempt_at_ms: intent.first_attempt_at.map(|at| at.timestamp_millis()),
            new_key_if_untouched: intent.new_key_if_untouched,
            cancel_line_seen: intent.cancel_line_seen,
            missing_line_alerted: intent.missing_line_alerted,
            unknown_syncs: intent.unknown_syncs,
            unknown_counted_through: intent
                .unknown_counted_through
                .map(crate::domain::calendar::date_key),
        },
    )
}

pub(super) fn decode_intent(bytes: &[u8]) -> Result<StoredIntent, StoreError> {
    let record: IntentRecord = decode("cancel intent", INTENT_RECORD, bytes)?;
    let in_flight = record
        .in_flight
        .map(|(number, at_ms)| {
            millis_to_time(at_ms).map(|started_at| AttemptMark { number, started_at })
        })
        .transpose()?;
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
        key_generation: record.key_generation,
        in_flight,
        first_attempt_at: record.first_attempt_at_ms.map(millis_to_time).transpose()?,
        new_key_if_untouched: record.new_key_if_untouched,
        cancel_line_seen: record.cancel_line_seen,
        missing_line_alerted: record.missing_line_alerted,
        unknown_syncs: record.unknown_syncs,
        unknown_counted_through: record.unknown_counted_through.and_then(|key| {
            chrono::NaiveDate::from_ymd_opt(
                i32::try_from(key / 10_000).ok()?,
                key / 100 % 100,
                key % 100,
            )
        }),
    };
    Ok(StoredIntent {
        intent,
        last_error: record.last_error,
    })
}

pub(super) fn get_intent(txn: &Tx<'_>, id: CancelId) -> Result<Option<StoredIntent>, StoreError> {
    let bytes = txn
        .cancel_intents()?
        .get(id.as_u128())?
        .map(|value| value.value().to_vec());
    bytes.map(|bytes| decode_intent(&bytes)).transpose()
}

pub(super) fn put_intent(txn: &Tx<'_>, stored: &StoredIntent) -> Result<(), StoreError> {
    let bytes = encode_intent(stored)?;
    txn.cancel_intents()?
        .insert(stored.intent.id.as_u128(), bytes.as_slice())?;
    let unknown = txn.unknown_intents();
    let mut unknown = unknown?;
    if stored.intent.state == IntentState::Unknown {
        unknown.insert(stored.intent.id.as_u128(), ())?;
    } else {
        unknown.remove(stored.intent.id.as_u128())?;
    }
    Ok(())
}

/// Stores a new intent and indexes it under its payment (its job is the caller's).
pub(super) fn insert_intent(txn: &Tx<'_>, intent: &CancelIntent) -> Result<(), StoreError> {
    put_intent(
        txn,
        &StoredIntent {
            intent: intent.clone(),
            last_error: None,
        },
    )?;
    txn.cancels_by_payment()?
        .insert((intent.payment_id.as_u128(), intent.id.as_u128()), ())?;
    Ok(())
}

/// A payment's intent ids, oldest first, read from any table handle.
pub(super) fn intent_ids_of(
    index: &impl ReadableTable<(u128, u128), ()>,
    payment: PaymentId,
) -> Result<Vec<u128>, StoreError> {
    let key = payment.as_u128();
    index
        .range((key, 0)..=(key, u128::MAX))?
        .take(INTENTS_PER_PAYMENT_MAX)
        .map(|entry| {
            entry
                .map(|(key, _)| key.value().1)
                .map_err(StoreError::from)
        })
        .collect()
}

/// A payment's intents, oldest first.
pub(super) fn intents_of(
    txn: &Tx<'_>,
    payment: PaymentId,
) -> Result<Vec<StoredIntent>, StoreError> {
    let ids = intent_ids_of(&*txn.cancels_by_payment()?, payment)?;
    let mut intents = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(stored) = get_intent(txn, CancelId::from_u128(id))? {
            intents.push(stored);
        }
    }
    Ok(intents)
}

/// How many of `intents` are in each state that decides the payment's status.
pub(super) fn counts(intents: &[StoredIntent]) -> IntentCounts {
    let mut counts = IntentCounts::default();
    for stored in intents {
        match stored.intent.state {
            IntentState::Open => counts.open += 1,
            IntentState::Dead => counts.dead += 1,
            IntentState::Unknown => counts.unknown += 1,
            IntentState::Resolved => counts.resolved_unrefunded += 1,
            IntentState::Done => {}
        }
    }
    counts
}

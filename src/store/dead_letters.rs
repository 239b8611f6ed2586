//! Dead letters: cancel intents that ran out of attempts or were refused, kept for a human, who
//! re-drives them (the same intent, the same PG key, asking the PG first) or resolves them
//! (handled outside kassa: nothing is sent, the hold on the balance is released).
//!
//! Invariant: a dead letter changes its intent only from DEAD; a re-drive or a resolve of an
//! intent in any other state answers what it is and changes nothing.

use super::cancels::{StoredIntent, corrupt, get_intent, millis, move_job, put_intent, settle};
use super::codec::{decode, encode};
use super::orders::millis_to_time;
use super::payments::{append_event, clip, get_payment, put_payment};
use super::{Store, StoreError, tables};
use crate::domain::{CancelId, CancelIntent, EventKind, IntentState, PaymentId};
use chrono::{DateTime, Utc};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

pub(super) const DEAD_LETTER_RECORD: u8 = 1;
/// Most dead letters one list answers.
pub const DEAD_LETTERS_PAGE_MAX: usize = 500;
/// Most characters of a resolution note.
const NOTE_CHARS_MAX: usize = 500;

#[derive(Serialize, Deserialize)]
pub(super) struct DeadLetterRecord {
    pub cancel_id: u128,
    pub payment_id: u128,
    pub job: String,
    pub attempts: u32,
    pub last_error: String,
    pub last_pg_answer: String,
    pub created_at_ms: i64,
    pub redriven_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub resolution: Option<String>,
}

/// A job in the dead-letter table, for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: u128,
    pub cancel_id: CancelId,
    pub payment_id: PaymentId,
    pub job: String,
    pub attempts: u32,
    pub last_error: String,
    pub last_pg_answer: String,
    pub created_at: DateTime<Utc>,
    pub redriven_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

#[derive(Debug, Clone)]
pub enum RedriveOutcome {
    Redriven(CancelIntent),
    AlreadyDone(CancelIntent),
    /// Closed by a human: nothing runs.
    Resolved(CancelIntent),
    NotFound,
}

fn decode_dead_letter(id: u128, bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    let record: DeadLetterRecord = decode("dead letter", DEAD_LETTER_RECORD, bytes)?;
    Ok(DeadLetter {
        id,
        cancel_id: CancelId::from_u128(record.cancel_id),
        payment_id: PaymentId::from_u128(record.payment_id),
        job: record.job,
        attempts: record.attempts,
        last_error: record.last_error,
        last_pg_answer: record.last_pg_answer,
        created_at: millis_to_time(record.created_at_ms)?,
        redriven_at: record.redriven_at_ms.map(millis_to_time).transpose()?,
        resolved_at: record.resolved_at_ms.map(millis_to_time).transpose()?,
        resolution: record.resolution,
    })
}

/// A dead letter and the intent it names.
fn dead_letter_of(
    txn: &WriteTransaction,
    dead_id: u128,
) -> Result<Option<(DeadLetterRecord, StoredIntent)>, StoreError> {
    let bytes = txn
        .open_table(tables::DEAD_LETTERS)?
        .get(dead_id)?
        .map(|value| value.value().to_vec());
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let letter: DeadLetterRecord = decode("dead letter", DEAD_LETTER_RECORD, &bytes)?;
    let stored = get_intent(txn, CancelId::from_u128(letter.cancel_id))?
        .ok_or_else(|| corrupt("dead letter", "names a missing cancel"))?;
    Ok(Some((letter, stored)))
}

fn redrive(
    txn: &WriteTransaction,
    dead_id: u128,
    now: DateTime<Utc>,
) -> Result<RedriveOutcome, StoreError> {
    let Some((mut letter, mut stored)) = dead_letter_of(txn, dead_id)? else {
        return Ok(RedriveOutcome::NotFound);
    };
    match stored.intent.state {
        IntentState::Done => return Ok(RedriveOutcome::AlreadyDone(stored.intent)),
        // Already re-driven and not finished yet: the same job is on its way.
        IntentState::Open => return Ok(RedriveOutcome::Redriven(stored.intent)),
        IntentState::Resolved => return Ok(RedriveOutcome::Resolved(stored.intent)),
        IntentState::Dead => {}
    }
    stored.intent.state = IntentState::Open;
    stored.intent.queue_attempts = 0;
    // A dead letter may have been handled by hand in the PG's console: ask the PG first.
    stored.intent.outcome_unknown = true;
    move_job(txn, &mut stored, Some(millis(now)))?;
    put_intent(txn, &stored)?;
    letter.redriven_at_ms = Some(now.timestamp_millis());
    let bytes = encode(DEAD_LETTER_RECORD, &letter)?;
    txn.open_table(tables::DEAD_LETTERS)?
        .insert(dead_id, bytes.as_slice())?;
    let Some(mut payment) = get_payment(txn, stored.intent.payment_id)? else {
        return Err(corrupt("cancel intent", "names a missing payment"));
    };
    settle(txn, &mut payment)?;
    put_payment(txn, &payment)?;
    let detail = format!(
        "re-driven by an operator: the same cancel (key {}) runs again",
        stored.intent.pg_key
    );
    append_event(txn, payment.payment.id, now, EventKind::Redriven, &detail)?;
    Ok(RedriveOutcome::Redriven(stored.intent))
}

/// Closes a dead letter that a human handled outside kassa: the intent is resolved, its
/// reservation released, and nothing is sent to the PG.
fn resolve(
    txn: &WriteTransaction,
    dead_id: u128,
    note: &str,
    now: DateTime<Utc>,
) -> Result<RedriveOutcome, StoreError> {
    let Some((mut letter, mut stored)) = dead_letter_of(txn, dead_id)? else {
        return Ok(RedriveOutcome::NotFound);
    };
    match stored.intent.state {
        IntentState::Done => return Ok(RedriveOutcome::AlreadyDone(stored.intent)),
        IntentState::Resolved => return Ok(RedriveOutcome::Resolved(stored.intent)),
        // Re-driven and running: it must finish or die again before it can be resolved.
        IntentState::Open => return Ok(RedriveOutcome::Redriven(stored.intent)),
        IntentState::Dead => {}
    }
    stored.intent.state = IntentState::Resolved;
    move_job(txn, &mut stored, None)?;
    put_intent(txn, &stored)?;
    letter.resolved_at_ms = Some(now.timestamp_millis());
    letter.resolution = Some(clip(note, NOTE_CHARS_MAX));
    let bytes = encode(DEAD_LETTER_RECORD, &letter)?;
    txn.open_table(tables::DEAD_LETTERS)?
        .insert(dead_id, bytes.as_slice())?;
    let Some(mut payment) = get_payment(txn, stored.intent.payment_id)? else {
        return Err(corrupt("cancel intent", "names a missing payment"));
    };
    payment.payment.release(stored.intent.amount);
    settle(txn, &mut payment)?;
    put_payment(txn, &payment)?;
    let detail = format!(
        "{} resolved by an operator, not sent to the PG: {note}",
        stored.intent.amount
    );
    append_event(txn, payment.payment.id, now, EventKind::Resolved, &detail)?;
    Ok(RedriveOutcome::Resolved(stored.intent))
}

impl Store {
    /// Closes a dead letter a human handled outside kassa, releasing what it held.
    pub async fn resolve_dead_letter(
        &self,
        dead_id: u128,
        note: String,
        now: DateTime<Utc>,
    ) -> Result<RedriveOutcome, StoreError> {
        self.write(move |txn| resolve(txn, dead_id, &note, now))
            .await
    }

    /// Sends a dead letter's intent again: the same intent, the same PG key.
    pub async fn redrive(
        &self,
        dead_id: u128,
        now: DateTime<Utc>,
    ) -> Result<RedriveOutcome, StoreError> {
        self.write(move |txn| redrive(txn, dead_id, now)).await
    }

    /// Dead letters newest first, below `cursor`; `pending_only` leaves out re-driven ones.
    pub async fn dead_letters(
        &self,
        limit: usize,
        cursor: Option<u128>,
        pending_only: bool,
    ) -> Result<(Vec<DeadLetter>, Option<u128>), StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(tables::DEAD_LETTERS)?;
            let high = cursor.map_or(u128::MAX, |cursor| cursor.saturating_sub(1));
            let mut items = Vec::new();
            let mut more = false;
            for entry in table
                .range(..=high)?
                .rev()
                .take(super::payments::LIST_SCAN_ROWS_MAX)
            {
                let (key, value) = entry?;
                let letter = decode_dead_letter(key.value(), value.value())?;
                if pending_only && (letter.redriven_at.is_some() || letter.resolved_at.is_some()) {
                    continue;
                }
                if items.len() == limit.min(DEAD_LETTERS_PAGE_MAX) {
                    more = true;
                    break;
                }
                items.push(letter);
            }
            let next = if more {
                items.last().map(|letter| letter.id)
            } else {
                None
            };
            Ok((items, next))
        })
        .await
    }
}

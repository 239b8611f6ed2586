//! Dead letters: cancel intents that ran out of attempts or were refused, and refunds whose
//! outcome is unknown (`job: "unknown_outcome"`), kept for a human. This file keeps their
//! records; re-drives and resolves are in `redrive`.
//!
//! Invariant: a dead letter is written in the same transaction as its intent's move to DEAD or
//! UNKNOWN, and closed (re-driven or resolved) in the transaction that moves the intent on.

use super::codec::{decode, encode};
use super::orders::millis_to_time;
use super::payments::clip;
use super::tx::Tx;
use super::{Store, StoreError, tables};
use crate::domain::{CancelId, CancelIntent, PaymentId};
use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

pub(super) const DEAD_LETTER_RECORD: u8 = 1;
/// Most dead letters one list answers.
pub const DEAD_LETTERS_PAGE_MAX: usize = 500;
/// Most characters of a resolution note.
pub const NOTE_CHARS_MAX: usize = 500;
/// Most characters of a PG's answer kept with a dead letter.
pub const PG_ANSWER_CHARS_MAX: usize = 2_000;
/// Most characters of an error kept with an intent or dead letter.
pub const ERROR_CHARS_MAX: usize = 500;
/// The `job` of a dead letter that lists a refund whose outcome is unknown.
pub const UNKNOWN_OUTCOME_JOB: &str = "unknown_outcome";
/// Most dead letters looked at to close those of one intent.
const CLOSE_SCAN_MAX: usize = 5_000;

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

/// Writes a dead letter for `intent` under `id`.
pub(super) fn insert_dead_letter(
    txn: &Tx<'_>,
    id: u128,
    intent: &CancelIntent,
    job: &str,
    error: &str,
    pg_answer: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let letter = DeadLetterRecord {
        cancel_id: intent.id.as_u128(),
        payment_id: intent.payment_id.as_u128(),
        job: job.to_owned(),
        attempts: intent.attempts,
        last_error: clip(error, ERROR_CHARS_MAX),
        last_pg_answer: clip(pg_answer, PG_ANSWER_CHARS_MAX),
        created_at_ms: now.timestamp_millis(),
        redriven_at_ms: None,
        resolved_at_ms: None,
        resolution: None,
    };
    put_letter(txn, id, &letter)
}

pub(super) fn put_letter(
    txn: &Tx<'_>,
    id: u128,
    letter: &DeadLetterRecord,
) -> Result<(), StoreError> {
    let bytes = encode(DEAD_LETTER_RECORD, letter)?;
    txn.dead_letters()?.insert(id, bytes.as_slice())?;
    Ok(())
}

/// Marks every open dead letter of intent `cancel` resolved with `resolution` (its intent was
/// closed by evidence: a late refund answer or a settlement line).
pub(super) fn close_letters_of(
    txn: &Tx<'_>,
    cancel: CancelId,
    now: DateTime<Utc>,
    resolution: &str,
) -> Result<(), StoreError> {
    let open: Vec<(u128, DeadLetterRecord)> = {
        let table = txn.dead_letters()?;
        let mut found = Vec::new();
        for entry in table.iter()?.rev().take(CLOSE_SCAN_MAX) {
            let (key, value) = entry?;
            let letter: DeadLetterRecord =
                decode("dead letter", DEAD_LETTER_RECORD, value.value())?;
            if letter.cancel_id == cancel.as_u128()
                && letter.resolved_at_ms.is_none()
                && letter.redriven_at_ms.is_none()
            {
                found.push((key.value(), letter));
            }
        }
        found
    };
    for (id, mut letter) in open {
        letter.resolved_at_ms = Some(now.timestamp_millis());
        letter.resolution = Some(clip(resolution, NOTE_CHARS_MAX));
        put_letter(txn, id, &letter)?;
    }
    Ok(())
}

/// A dead letter and its record, loaded for a re-drive or a resolve.
pub(super) fn letter(txn: &Tx<'_>, id: u128) -> Result<Option<DeadLetterRecord>, StoreError> {
    let bytes = txn
        .dead_letters()?
        .get(id)?
        .map(|value| value.value().to_vec());
    bytes
        .map(|bytes| decode("dead letter", DEAD_LETTER_RECORD, &bytes))
        .transpose()
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

impl Store {
    /// One dead letter.
    pub async fn dead_letter(&self, id: u128) -> Result<Option<DeadLetter>, StoreError> {
        self.read_point(move |txn| {
            let table = txn.open_table(tables::DEAD_LETTERS)?;
            table
                .get(id)?
                .map(|value| decode_dead_letter(id, value.value()))
                .transpose()
        })
        .await
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

/// Dead letters neither re-driven nor resolved, unknown refunds left out (they are counted on
/// their own); at most `LIST_SCAN_ROWS_MAX` are read.
pub(super) fn pending_count(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    let table = txn.open_table(tables::DEAD_LETTERS)?;
    let mut count = 0;
    for entry in table.iter()?.take(super::payments::LIST_SCAN_ROWS_MAX) {
        let (key, value) = entry?;
        let letter = decode_dead_letter(key.value(), value.value())?;
        if letter.redriven_at.is_none()
            && letter.resolved_at.is_none()
            && letter.job != UNKNOWN_OUTCOME_JOB
        {
            count += 1;
        }
    }
    Ok(count)
}

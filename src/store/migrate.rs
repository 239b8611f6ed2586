//! The schema version, recorded when a file is created and checked on every open.
//!
//! Invariant: kassa never opens a file written by a newer schema; an older one is upgraded
//! step by step in one transaction before anything else runs.

use super::StoreError;
use super::codec::decode;
use super::intents::{INTENT_RECORD_V1, IntentRecordV1, StoredIntent, kind_of, put_intent};
use super::orders::millis_to_time;
use super::tx::Tx;
use crate::domain::{
    Amount, AttemptMark, CancelId, CancelIntent, IntentState, Job, PaymentId, Provider,
};
use redb::{Database, ReadableTable};

/// The schema this build writes. Raise it with a step in `upgrade` when a table or record
/// changes shape. 2: one job queue for all background work, attempt marks and key generations
/// on cancel intents, refunds whose outcome is unknown. 3: each day's partner totals. 4: the
/// settlement row of each order, by order id.
pub const SCHEMA_VERSION: u32 = 4;

const VERSION_KEY: &str = "schema_version";
/// Written into a backup copy (the time it was taken, Unix ms, little-endian): the file that
/// opens with it was restored, and the PGs may have moved on since.
pub(super) const RESTORED_KEY: &str = "restored_from_backup_at";
const COOKIE_KEY: &str = "cookie_key";

/// Records the version of a new file, checks that of an existing one, creates every table, and
/// returns the cookie signing key.
pub fn prepare(db: &Database, new_key: impl FnOnce() -> [u8; 32]) -> Result<[u8; 32], StoreError> {
    let write = db.begin_write()?;
    let txn = Tx::new(&write);
    let key = {
        let mut meta = txn.meta()?;
        let found = meta
            .get(VERSION_KEY)?
            .map(|value| {
                let bytes: [u8; 4] = value
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("schema version".into()))?;
                Ok::<u32, StoreError>(u32::from_le_bytes(bytes))
            })
            .transpose()?;
        match found {
            None => {
                meta.insert(VERSION_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) => {
                drop(meta);
                upgrade(&txn, found)?;
                meta = txn.meta()?;
                meta.insert(VERSION_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
        }
        let existing = meta.get(COOKIE_KEY)?.map(|value| value.value().to_vec());
        match existing {
            Some(bytes) => bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt("cookie key".into()))?,
            None => {
                let key = new_key();
                meta.insert(COOKIE_KEY, key.as_slice())?;
                key
            }
        }
    };
    let restored = txn
        .meta()?
        .get(RESTORED_KEY)?
        .map(|value| value.value().to_vec());
    if let Some(bytes) = restored {
        let taken_ms = bytes
            .try_into()
            .map(i64::from_le_bytes)
            .map_err(|_| StoreError::Corrupt("backup mark".into()))?;
        mark_restored(&txn, taken_ms)?;
        txn.meta()?.remove(RESTORED_KEY)?;
    }
    txn.orders()?;
    txn.ready_orders()?;
    txn.payments()?;
    txn.payments_by_pg()?;
    txn.payments_by_order()?;
    txn.payments_by_buyer()?;
    txn.payment_events()?;
    txn.cancel_intents()?;
    txn.cancels_by_payment()?;
    txn.settlements()?;
    txn.settlement_of_order()?;
    txn.queue()?;
    txn.queue_due()?;
    txn.queue_keys()?;
    txn.unknown_intents()?;
    txn.cancel_lines_used()?;
    txn.cancel_lines_alerted()?;
    txn.dead_letters()?;
    txn.idempotency()?;
    txn.alerts()?;
    txn.partner_ledger()?;
    txn.partner_day_totals()?;
    txn.partner_settlements()?;
    txn.sync_locks()?;
    txn.sync_cursors()?;
    txn.sync_runs()?;
    txn.settlement_findings()?;
    drop(txn);
    write.commit()?;
    Ok(key)
}

/// Upgrades a file from `found` to `SCHEMA_VERSION`, one step at a time, in the opening
/// transaction.
fn upgrade(txn: &Tx<'_>, found: u32) -> Result<(), StoreError> {
    match found {
        SCHEMA_VERSION => Ok(()),
        1 => {
            upgrade_1_to_2(txn)?;
            upgrade_2_to_3(txn)?;
            upgrade_3_to_4(txn)
        }
        2 => {
            upgrade_2_to_3(txn)?;
            upgrade_3_to_4(txn)
        }
        3 => upgrade_3_to_4(txn),
        _ => Err(StoreError::Corrupt(format!(
            "schema version {found} is not one this kassa can upgrade"
        ))),
    }
}

/// Parts 1–3 kept the cancel queue in `jobs` and the claim in the intent, and wrote nothing
/// that said an attempt was in flight. Every intent is rewritten with its attempt mark; a claim
/// that never finished becomes an attempt in flight, so the next attempt asks first; an open
/// Payple intent that was ever claimed becomes a refund whose outcome is unknown (Payple cannot
/// be asked, so it is never sent again blind). Jobs and undelivered alerts move to the queue;
/// dead letters keep their shape.
/// Schema 3 keeps each day's partner totals beside the ledger; a file of schema 2 gets them
/// built from its ledger.
fn upgrade_2_to_3(txn: &Tx<'_>) -> Result<(), StoreError> {
    let read = super::partners::rebuild_totals(txn)?;
    tracing::info!(
        entries = read,
        "the partner ledger's daily totals were built (schema 3)"
    );
    Ok(())
}

/// Schema 4 finds a settlement line's row by its order id; a file of schema 3 gets the index
/// built from its settlement rows, each of which names its order.
fn upgrade_3_to_4(txn: &Tx<'_>) -> Result<(), StoreError> {
    let read = super::sync::rebuild_settlement_index(txn)?;
    tracing::info!(
        rows = read,
        "the settlement rows were indexed by order (schema 4)"
    );
    Ok(())
}

fn upgrade_1_to_2(txn: &Tx<'_>) -> Result<(), StoreError> {
    let old: Vec<(u128, IntentRecordV1)> = {
        let table = txn.cancel_intents()?;
        let mut rows = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            rows.push((
                key.value(),
                decode::<IntentRecordV1>("cancel intent", INTENT_RECORD_V1, value.value())?,
            ));
        }
        rows
    };
    for (id, record) in old {
        migrate_intent(txn, id, record)?;
    }
    // The sweep reads READY orders through their own index.
    let orders: Vec<Vec<u8>> = txn
        .orders()?
        .iter()?
        .map(|entry| entry.map(|(_, value)| value.value().to_vec()))
        .collect::<Result<_, _>>()?;
    for bytes in orders {
        let order = super::orders::decode_order(&bytes)?;
        super::orders::put_order(txn, &order)?;
    }
    let jobs: Vec<(u64, u128)> = txn
        .jobs_v1()?
        .iter()?
        .map(|entry| entry.map(|(key, _)| key.value()))
        .collect::<Result<_, _>>()?;
    let mut old_jobs = txn.jobs_v1()?;
    for key in jobs {
        old_jobs.remove(key)?;
    }
    drop(old_jobs);
    let unsent: Vec<u128> = txn
        .alerts_unsent_v1()?
        .iter()?
        .map(|entry| entry.map(|(key, _)| key.value()))
        .collect::<Result<_, _>>()?;
    for id in unsent {
        let now = super::alerts::next_try_of(txn, id)?;
        super::queue::enqueue(txn, id, &Job::Alert { alert_id: id }, None, now)?;
        txn.alerts_unsent_v1()?.remove(id)?;
    }
    Ok(())
}

fn migrate_intent(txn: &Tx<'_>, id: u128, record: IntentRecordV1) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("part-3 cancel intent: {what}"));
    let state = IntentState::parse(&record.state).ok_or_else(|| corrupt("state"))?;
    let created_at = millis_to_time(record.created_at_ms)?;
    let claimed_at = record
        .claim_token
        .map(|token| millis_to_time(i64::try_from(token >> 32).unwrap_or(record.created_at_ms)))
        .transpose()?;
    let ever_attempted = record.attempts > 0 || claimed_at.is_some();
    let mut attempts = record.attempts;
    let in_flight = match (state, claimed_at) {
        (IntentState::Open, Some(started_at)) => {
            attempts = attempts.saturating_add(1);
            Some(AttemptMark {
                number: attempts,
                started_at,
            })
        }
        _ => None,
    };
    let intent = CancelIntent {
        id: CancelId::from_u128(id),
        payment_id: PaymentId::from_u128(record.payment_id),
        kind: kind_of(&record.kind)?,
        amount: Amount::non_negative(record.amount).map_err(|_| corrupt("amount"))?,
        balance_before: Amount::non_negative(record.balance_before)
            .map_err(|_| corrupt("balance"))?,
        reason: record.reason,
        pg_key: record.pg_key,
        created_at,
        done_at: record.done_at_ms.map(millis_to_time).transpose()?,
        attempts,
        queue_attempts: record.queue_attempts,
        state,
        outcome_unknown: record.outcome_unknown || in_flight.is_some(),
        pg_cancel_id: record.pg_cancel_id,
        key_generation: 0,
        in_flight,
        // The earliest an attempt can have started: a settlement line before it is not its.
        first_attempt_at: ever_attempted.then_some(created_at),
        new_key_if_untouched: false,
        cancel_line_seen: false,
        missing_line_alerted: false,
        unknown_syncs: 0,
        unknown_counted_through: None,
    };
    let mut stored = StoredIntent {
        intent,
        last_error: record.last_error,
    };
    let Some(mut payment) = super::payments::get_payment(txn, stored.intent.payment_id)? else {
        return Err(corrupt("names a missing payment"));
    };
    let payple = payment.payment.provider == Provider::Payple;
    // Parts 1–3 read a refund total from Payple's inquiry that Payple never sends, so a Payple
    // refund they tried may have gone through once or more, whether it is open or dead now.
    if matches!(state, IntentState::Open | IntentState::Dead) && payple && ever_attempted {
        if state == IntentState::Dead {
            super::dead_letters::close_letters_of(
                txn,
                stored.intent.id,
                created_at,
                "superseded: the refund's outcome is unknown (listed again as unknown_outcome)",
            )?;
        }
        // Nothing of parts 1–3 says whether the refund reached Payple; Payple cannot be asked.
        payment.lease = None;
        let record_id = id ^ MIGRATED_RECORD_MASK;
        let now = claimed_at.unwrap_or(created_at);
        super::cancels::mark_unknown(
            txn,
            &mut stored,
            payment.payment.id,
            "opened by a kassa that did not record attempts in flight: the refund may have reached Payple",
            now,
            record_id,
        )?;
        stored.intent.in_flight = None;
        put_intent(txn, &stored)?;
        super::cancels::settle(txn, &mut payment)?;
        super::payments::put_payment(txn, &payment)?;
        return Ok(());
    }
    put_intent(txn, &stored)?;
    if state == IntentState::Open {
        let due = record
            .job_due_ms
            .map(|due| millis_to_time(i64::try_from(due).unwrap_or(i64::MAX)))
            .transpose()?
            .unwrap_or(created_at);
        super::queue::enqueue_cancel(txn, CancelId::from_u128(id), payment.payment.provider, due)?;
    }
    Ok(())
}

/// Makes the ids of the dead letter and alert a migrated intent gets from its own id.
const MIGRATED_RECORD_MASK: u128 = 0x0000_0000_0000_0000_0000_0000_0000_0d1e;

/// Most open cancels one restore marks (far above what the queue holds).
const RESTORED_INTENTS_MAX: usize = 100_000;

/// A restored file knows it was restored: every cancel still open (or dead-lettered) counts as
/// an attempt whose outcome is unknown, since the PG may have refunded it after the backup was
/// taken (a re-drive made on the original, say). Its next
/// turn asks the PG before anything is sent, and for Payple (which cannot be asked) waits for
/// evidence. Returns how many cancels were marked.
fn mark_restored(txn: &Tx<'_>, taken_ms: i64) -> Result<usize, StoreError> {
    use redb::ReadableTable;
    let taken_at = chrono::DateTime::from_timestamp_millis(taken_ms)
        .ok_or_else(|| StoreError::Corrupt("backup mark time".into()))?;
    // Every intent is read (history stays in the table), and every one still open or dead is
    // marked: a cancel left out could be sent again blind, so too many refuses the open.
    let open: Vec<super::intents::StoredIntent> = {
        let intents = txn.cancel_intents()?;
        let mut open = Vec::new();
        for entry in intents.iter()? {
            let (_, value) = entry?;
            let stored = super::intents::decode_intent(value.value())?;
            if matches!(
                stored.intent.state,
                crate::domain::IntentState::Open | crate::domain::IntentState::Dead
            ) {
                if open.len() == RESTORED_INTENTS_MAX {
                    return Err(StoreError::Bug(format!(
                        "the restored file holds more than {RESTORED_INTENTS_MAX} open cancels"
                    )));
                }
                open.push(stored);
            }
        }
        open
    };
    let marked = open.len();
    for mut stored in open {
        let intent = &mut stored.intent;
        // A dead letter re-driven after the restore asks the PG (or, for Payple, waits) too.
        intent.outcome_unknown = true;
        if intent.state == crate::domain::IntentState::Open && intent.in_flight.is_none() {
            intent.in_flight = Some(crate::domain::AttemptMark {
                number: intent.attempts,
                started_at: taken_at,
            });
        }
        super::payments::append_event(
            txn,
            intent.payment_id,
            taken_at,
            crate::domain::EventKind::OutcomeUnknown,
            &format!(
                "the data file was restored from a backup taken at {taken_at}: whether cancel {} reached the PG since is unknown, so the PG is asked before anything is sent",
                intent.id
            ),
        )?;
        super::intents::put_intent(txn, &stored)?;
    }
    if marked > 0 {
        tracing::warn!(cancels = marked, taken_at = %taken_at, "the data file was restored from a backup; its open cancels count as unknown outcomes until the PG is asked");
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables;

    #[test]
    fn a_file_from_a_newer_kassa_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kassa.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::META)
                .unwrap()
                .insert(VERSION_KEY, (SCHEMA_VERSION + 1).to_le_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let error = crate::store::Store::open(dir.path(), || [0; 32]).unwrap_err();
        assert!(
            matches!(error, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{error}"
        );
    }

    #[test]
    fn the_cookie_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kassa.redb");
        let db = Database::create(&path).unwrap();
        let first = prepare(&db, || [7; 32]).unwrap();
        let second = prepare(&db, || [9; 32]).unwrap();
        assert_eq!(first, [7; 32]);
        assert_eq!(second, [7; 32]);
    }
}

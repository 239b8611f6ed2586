//! The one durable job queue: every piece of background work is a row in `QUEUE` with its place
//! in `QUEUE_DUE`, claimed under a lease, finished, rescheduled with backoff or given up. This
//! file also holds the one rule that says whose turn it is among a payment's cancels, used by
//! the claim (a write) and by the inline attempt's look before it claims (a read).
//!
//! Invariants:
//! - a job is written in the same transaction as the change that needs it;
//! - a claimed job moves to its lease's expiry, so a job whose worker died is due again then;
//! - only the holder of a job's current lease token may finish it;
//! - a job with a unique key (a day's sync) is queued at most once at a time;
//! - the intents of one payment run one at a time, oldest first, and never while an attempt of
//!   that payment is still running in this process (`InFlight`), whatever its lease says.

use super::StoreError;
use super::codec::{decode, encode};
use super::intents::{decode_intent, intent_ids_of};
use super::orders::millis_to_time;
use super::payments::decode_payment;
use super::tx::Tx;
use crate::domain::job::JobKind;
use crate::domain::{CancelId, IntentState, Job, OrderId, PaymentId, PgTid, Provider};
use chrono::{DateTime, NaiveDate, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

pub(super) const JOB_RECORD: u8 = 1;
/// Most due jobs one claim looks at.
pub const CLAIM_SCAN_MAX: usize = 1_000;
/// Shortest wait before a job whose turn has not come is looked at again.
pub const POSTPONE_MS_MIN: u64 = 1_000;
/// How long a cancel held back by a dead letter in doubt waits before it looks again.
pub const BLOCKED_MS: u64 = 60_000;
/// Most characters of an error kept with a job.
pub const JOB_ERROR_CHARS_MAX: usize = 500;

#[derive(Serialize, Deserialize)]
pub(super) struct JobRecord {
    pub kind: String,
    /// The cancel, payment or alert the job is about (0 for day jobs).
    pub target: u128,
    pub provider: Option<String>,
    /// The KST day of a day job, as `yyyymmdd`.
    pub date: Option<u32>,
    pub due_ms: u64,
    /// Queued tries made (cancels count theirs on the intent).
    pub attempts: u32,
    /// The current claim: its token and until when it holds (Unix ms).
    pub lease: Option<(u128, i64)>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    /// The PG id and order id a re-check names.
    pub pg_ref: Option<String>,
    pub order_ref: Option<String>,
}

/// A job as the worker sees it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub id: u128,
    pub job: Job,
    pub provider: Option<Provider>,
    /// Queued tries made before this one.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// A non-cancel job claimed for one run: only `token`'s holder may finish it.
#[derive(Debug, Clone)]
pub struct JobClaim {
    pub queued: QueuedJob,
    pub token: u128,
}

/// What running a job came to.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// Done: the job is removed.
    Done,
    /// Run again at `due`. `counted` adds a try toward the job's bound.
    Retry {
        error: String,
        due: DateTime<Utc>,
        counted: bool,
    },
    /// Given up: removed, with the error logged (and an alert, by the caller's choice).
    GaveUp { error: String },
}

/// Whether a PG's jobs may be claimed now (the circuit breaker's view, taken by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Paused until this time: its jobs move there without spending a try.
    Paused(DateTime<Utc>),
    /// One job may go through to see whether the PG is back.
    Probe,
}

/// The payments with an attempt running in this process. kassa is one process per data file,
/// so this is every attempt running anywhere; after a crash there are none.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<u128, usize>>>);

/// Marks a payment as having an attempt running until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    registry: InFlight,
    payment: u128,
}

impl InFlight {
    pub fn enter(&self, payment: PaymentId) -> InFlightGuard {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(payment.as_u128()).or_default() += 1;
        InFlightGuard {
            registry: self.clone(),
            payment: payment.as_u128(),
        }
    }

    pub fn contains(&self, payment: PaymentId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&payment.as_u128())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut map = self
            .registry
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.payment) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.payment);
            }
        }
    }
}

pub(super) fn millis(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_millis()).unwrap_or(0)
}

fn time_of(ms: u64) -> Result<DateTime<Utc>, StoreError> {
    millis_to_time(i64::try_from(ms).unwrap_or(i64::MAX))
}

pub(super) fn kind_named(raw: &str) -> Result<JobKind, StoreError> {
    JobKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == raw)
        .ok_or_else(|| StoreError::Corrupt(format!("job kind {raw:?}")))
}

fn date_of(raw: Option<u32>) -> Result<NaiveDate, StoreError> {
    raw.and_then(|key| {
        NaiveDate::from_ymd_opt(
            i32::try_from(key / 10_000).ok()?,
            key / 100 % 100,
            key % 100,
        )
    })
    .ok_or_else(|| StoreError::Corrupt("job date".into()))
}

fn job_of(record: &JobRecord) -> Result<Job, StoreError> {
    let provider = || {
        record
            .provider
            .as_deref()
            .map(Provider::parse)
            .transpose()
            .map_err(|error| StoreError::Corrupt(format!("job provider: {error}")))?
            .ok_or_else(|| StoreError::Corrupt("job without its provider".into()))
    };
    Ok(match kind_named(&record.kind)? {
        JobKind::Cancel => Job::Cancel {
            cancel_id: CancelId::from_u128(record.target),
        },
        JobKind::Recheck => Job::Recheck {
            provider: provider()?,
            pg_tid: PgTid::parse(record.pg_ref.as_deref().unwrap_or_default())
                .map_err(|error| StoreError::Corrupt(format!("re-check PG id: {error}")))?,
            order_id: record
                .order_ref
                .as_deref()
                .map(OrderId::parse)
                .transpose()
                .map_err(|error| StoreError::Corrupt(format!("re-check order: {error}")))?,
        },
        JobKind::Sweep => Job::Sweep,
        JobKind::Alert => Job::Alert {
            alert_id: record.target,
        },
        JobKind::SettlementSync => Job::SettlementSync {
            provider: provider()?,
            date: date_of(record.date)?,
        },
        JobKind::PartnerSettlement => Job::PartnerSettlement {
            date: date_of(record.date)?,
        },
    })
}

fn queued_of(id: u128, record: &JobRecord) -> Result<QueuedJob, StoreError> {
    Ok(QueuedJob {
        id,
        job: job_of(record)?,
        provider: record
            .provider
            .as_deref()
            .map(Provider::parse)
            .transpose()
            .map_err(|error| StoreError::Corrupt(format!("job provider: {error}")))?,
        attempts: record.attempts,
        created_at: millis_to_time(record.created_at_ms)?,
    })
}

pub(super) fn get_job(txn: &Tx<'_>, id: u128) -> Result<Option<JobRecord>, StoreError> {
    let bytes = txn.queue()?.get(id)?.map(|value| value.value().to_vec());
    bytes
        .map(|bytes| decode("job", JOB_RECORD, &bytes))
        .transpose()
}

fn put_job(txn: &Tx<'_>, id: u128, record: &JobRecord) -> Result<(), StoreError> {
    let bytes = encode(JOB_RECORD, record)?;
    txn.queue()?.insert(id, bytes.as_slice())?;
    Ok(())
}

/// Moves a job to `due_ms` in the due index and stores it.
pub(super) fn move_job(
    txn: &Tx<'_>,
    id: u128,
    record: &mut JobRecord,
    due_ms: u64,
) -> Result<(), StoreError> {
    let mut due = txn.queue_due()?;
    due.remove((record.due_ms, id))?;
    due.insert((due_ms, id), ())?;
    drop(due);
    record.due_ms = due_ms;
    put_job(txn, id, record)
}

/// Queues `job` under `id` at `due`, or moves it there if it is queued already. A job with a
/// unique key that is queued already under another id stays where it is; its id is answered.
pub(super) fn enqueue(
    txn: &Tx<'_>,
    id: u128,
    job: &Job,
    provider: Option<Provider>,
    due: DateTime<Utc>,
) -> Result<u128, StoreError> {
    let unique = job.unique_key();
    if let Some(key) = &unique {
        let existing = txn
            .queue_keys()?
            .get(key.as_str())?
            .map(|value| value.value());
        if let Some(existing) = existing
            && get_job(txn, existing)?.is_some()
        {
            return Ok(existing);
        }
        txn.queue_keys()?.insert(key.as_str(), id)?;
    }
    if let Some(mut record) = get_job(txn, id)? {
        record.lease = None;
        return move_job(txn, id, &mut record, millis(due)).map(|()| id);
    }
    let (target, date) = match job {
        Job::Cancel { cancel_id } => (cancel_id.as_u128(), None),
        Job::Recheck { .. } | Job::Sweep => (0, None),
        Job::Alert { alert_id } => (*alert_id, None),
        Job::SettlementSync { date, .. } | Job::PartnerSettlement { date } => {
            (0, Some(crate::domain::calendar::date_key(*date)))
        }
    };
    let provider = match job {
        Job::SettlementSync { provider, .. } | Job::Recheck { provider, .. } => Some(*provider),
        _ => provider,
    };
    let (pg_ref, order_ref) = match job {
        Job::Recheck {
            pg_tid, order_id, ..
        } => (
            Some(pg_tid.as_str().to_owned()),
            order_id.as_ref().map(|order| order.as_str().to_owned()),
        ),
        _ => (None, None),
    };
    let mut record = JobRecord {
        kind: job.kind().as_str().to_owned(),
        target,
        provider: provider.map(|provider| provider.as_str().to_owned()),
        date,
        due_ms: millis(due),
        attempts: 0,
        lease: None,
        last_error: None,
        created_at_ms: due.timestamp_millis(),
        pg_ref,
        order_ref,
    };
    txn.queue_due()?.insert((record.due_ms, id), ())?;
    record.due_ms = millis(due);
    put_job(txn, id, &record)?;
    Ok(id)
}

/// Queues (or moves) the job of cancel intent `cancel` to `due`; its id is the intent's.
pub(super) fn enqueue_cancel(
    txn: &Tx<'_>,
    cancel: CancelId,
    provider: Provider,
    due: DateTime<Utc>,
) -> Result<(), StoreError> {
    enqueue(
        txn,
        cancel.as_u128(),
        &Job::Cancel { cancel_id: cancel },
        Some(provider),
        due,
    )
    .map(|_| ())
}

/// Takes a job out of the queue (done, given up, or its work closed otherwise).
pub(super) fn remove_job(txn: &Tx<'_>, id: u128) -> Result<(), StoreError> {
    let Some(record) = get_job(txn, id)? else {
        return Ok(());
    };
    // Read everything first: a failure must not leave a job half removed.
    let unique = job_of(&record)?.unique_key();
    txn.queue_due()?.remove((record.due_ms, id))?;
    txn.queue()?.remove(id)?;
    if let Some(key) = unique {
        let mut keys = txn.queue_keys()?;
        let current = keys.get(key.as_str())?.map(|value| value.value());
        if current == Some(id) {
            keys.remove(key.as_str())?;
        }
    }
    Ok(())
}

/// Leases a job until `until`: it moves there, so it is due again if its worker dies. Answers
/// the claim's token, made from the time and the tries so far, so a re-applied write makes the
/// same one.
pub(super) fn lease_job(
    txn: &Tx<'_>,
    id: u128,
    record: &mut JobRecord,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    attempt: u32,
) -> Result<u128, StoreError> {
    let token = (u128::from(millis(now)) << 32) | u128::from(attempt);
    record.lease = Some((token, until.timestamp_millis()));
    move_job(txn, id, record, millis(until))?;
    Ok(token)
}

/// The ids of jobs due at `now`, oldest due first.
pub(super) fn due_ids(txn: &Tx<'_>, now: DateTime<Utc>) -> Result<Vec<u128>, StoreError> {
    txn.queue_due()?
        .range(..=(millis(now), u128::MAX))?
        .take(CLAIM_SCAN_MAX)
        .map(|entry| {
            entry
                .map(|(key, _)| key.value().1)
                .map_err(StoreError::from)
        })
        .collect()
}

/// Claims a due non-cancel job for one run.
pub(super) fn claim_job(
    txn: &Tx<'_>,
    id: u128,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> Result<Option<JobClaim>, StoreError> {
    let Some(mut record) = get_job(txn, id)? else {
        return Ok(None);
    };
    let queued = queued_of(id, &record)?;
    let attempts = record.attempts;
    let token = lease_job(txn, id, &mut record, now, now + lease, attempts)?;
    Ok(Some(JobClaim { queued, token }))
}

/// Records what a non-cancel job's run came to; a run whose lease was taken over changes
/// nothing. Answers the job's tries so far, or `None` when the run was stale.
pub(super) fn finish_job(
    txn: &Tx<'_>,
    id: u128,
    token: u128,
    outcome: &JobOutcome,
) -> Result<Option<u32>, StoreError> {
    let Some(mut record) = get_job(txn, id)? else {
        return Ok(None);
    };
    if record.lease.map(|(held, _)| held) != Some(token) {
        return Ok(None);
    }
    record.lease = None;
    match outcome {
        JobOutcome::Done | JobOutcome::GaveUp { .. } => {
            remove_job(txn, id)?;
        }
        JobOutcome::Retry {
            error,
            due,
            counted,
        } => {
            if *counted {
                record.attempts = record.attempts.saturating_add(1);
            }
            record.last_error = Some(error.chars().take(JOB_ERROR_CHARS_MAX).collect());
            move_job(txn, id, &mut record, millis(*due))?;
        }
    }
    Ok(Some(record.attempts))
}

/// Whether a cancel intent may be attempted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    Go,
    /// Not yet: look again at this time (Unix ms).
    Wait(u64),
    /// Not open any more: nothing to attempt.
    Closed,
}

/// The one rule for whose turn it is among a payment's cancels: the intent is open, it is the
/// oldest open intent of its payment, no live lease of the payment is held (its own included),
/// and no attempt of the payment is running in this process.
pub(super) fn cancel_turn(
    intents: &impl ReadableTable<u128, &'static [u8]>,
    payments: &impl ReadableTable<u128, &'static [u8]>,
    index: &impl ReadableTable<(u128, u128), ()>,
    queue: &impl ReadableTable<u128, &'static [u8]>,
    in_flight: &InFlight,
    id: CancelId,
    now: DateTime<Utc>,
) -> Result<Turn, StoreError> {
    let now_ms = now.timestamp_millis();
    let soon = millis(now) + POSTPONE_MS_MIN;
    let Some(stored) = intents
        .get(id.as_u128())?
        .map(|value| decode_intent(value.value()))
        .transpose()?
    else {
        return Ok(Turn::Closed);
    };
    if stored.intent.state != IntentState::Open {
        return Ok(Turn::Closed);
    }
    let payment_id = stored.intent.payment_id;
    let Some(payment) = payments
        .get(payment_id.as_u128())?
        .map(|value| decode_payment(value.value()))
        .transpose()?
    else {
        return Err(StoreError::Corrupt(
            "cancel intent names a missing payment".into(),
        ));
    };
    if let Some((_, until)) = payment.lease.filter(|(_, until)| *until > now_ms) {
        return Ok(Turn::Wait(
            u64::try_from(until).unwrap_or(u64::MAX).max(soon),
        ));
    }
    if in_flight.contains(payment_id) {
        return Ok(Turn::Wait(soon));
    }
    // The oldest open intent goes first, except that an intent whose last outcome is unknown
    // (open, or dead and not yet re-driven) holds every other intent of the payment back: until
    // the PG's record has been read for it, the balance the others would be sent against is not
    // known, and its refund could be taken for theirs.
    let mut first_open = None;
    let mut in_doubt = None;
    for other in intent_ids_of(index, payment_id)? {
        let Some(stored) = intents
            .get(other)?
            .map(|value| decode_intent(value.value()))
            .transpose()?
        else {
            continue;
        };
        let intent = &stored.intent;
        let doubtful = intent.outcome_unknown || intent.in_flight.is_some();
        if intent.state == IntentState::Open && first_open.is_none() {
            first_open = Some(other);
        }
        // An open one in doubt goes before a dead one: it is running, and once it has read the
        // PG's record its refund is known, so the dead one's later look cannot take it.
        let better = match in_doubt {
            None => true,
            Some((_, IntentState::Dead)) => intent.state == IntentState::Open,
            Some(_) => false,
        };
        if doubtful && matches!(intent.state, IntentState::Open | IntentState::Dead) && better {
            in_doubt = Some((other, intent.state));
        }
    }
    let due_of = |other: u128| -> Result<u64, StoreError> {
        Ok(queue
            .get(other)?
            .map(|value| decode::<JobRecord>("job", JOB_RECORD, value.value()))
            .transpose()?
            .map_or(soon, |job| job.due_ms)
            .max(soon))
    };
    match in_doubt {
        Some((doubtful, _)) if doubtful == id.as_u128() => Ok(Turn::Go),
        // A dead letter in doubt waits for a person; look again now and then.
        Some((_, IntentState::Dead)) => Ok(Turn::Wait(millis(now) + BLOCKED_MS)),
        Some((doubtful, _)) => Ok(Turn::Wait(due_of(doubtful)?)),
        None if first_open == Some(id.as_u128()) => Ok(Turn::Go),
        None => match first_open {
            Some(head) => Ok(Turn::Wait(due_of(head)?)),
            None => Ok(Turn::Closed),
        },
    }
}

/// How many jobs of each kind are queued.
pub(super) fn depth(
    queue: &impl ReadableTable<u128, &'static [u8]>,
) -> Result<Vec<(JobKind, usize)>, StoreError> {
    let mut counts: HashMap<JobKind, usize> = HashMap::new();
    for entry in queue.iter()?.take(super::payments::LIST_SCAN_ROWS_MAX) {
        let (_, value) = entry?;
        let record: JobRecord = decode("job", JOB_RECORD, value.value())?;
        *counts.entry(kind_named(&record.kind)?).or_default() += 1;
    }
    Ok(JobKind::ALL
        .into_iter()
        .map(|kind| (kind, counts.get(&kind).copied().unwrap_or(0)))
        .collect())
}

/// Jobs waiting per kind, with the creation time of the oldest (Unix ms), for the metrics.
pub(super) fn depth_and_oldest(
    queue: &impl ReadableTable<u128, &'static [u8]>,
) -> Result<Vec<(JobKind, usize, Option<i64>)>, StoreError> {
    let mut counts: HashMap<JobKind, (usize, Option<i64>)> = HashMap::new();
    for entry in queue.iter()?.take(super::payments::LIST_SCAN_ROWS_MAX) {
        let (_, value) = entry?;
        let record: JobRecord = decode("job", JOB_RECORD, value.value())?;
        let slot = counts.entry(kind_named(&record.kind)?).or_default();
        slot.0 += 1;
        slot.1 = Some(slot.1.map_or(record.created_at_ms, |oldest| {
            oldest.min(record.created_at_ms)
        }));
    }
    Ok(JobKind::ALL
        .into_iter()
        .map(|kind| {
            let (depth, oldest) = counts.get(&kind).copied().unwrap_or((0, None));
            (kind, depth, oldest)
        })
        .collect())
}

/// When the first job is due, for the worker's sleep.
pub(super) fn first_due(
    due: &impl ReadableTable<(u64, u128), ()>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    due.first()?
        .map(|(key, _)| time_of(key.value().0))
        .transpose()
}

//! The alert outbox: alerts are written in the same transaction as the event that causes them,
//! each with its delivery job in the queue, then delivered (logged once, and sent to Slack when
//! configured) by the worker, and kept for the admin page.

use super::codec::{decode, encode};
use super::orders::millis_to_time;
use super::queue::{JobClaim, JobOutcome, enqueue, finish_job};
use super::tx::Tx;
use super::{Store, StoreError, tables};
use crate::domain::{Job, PaymentId};
use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

const ALERT_RECORD: u8 = 1;

/// Most characters of an alert's message.
pub const ALERT_MESSAGE_CHARS_MAX: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertLevel {
    /// Someone must act: a dead letter.
    Urgent,
    /// Worth knowing: a retry.
    Warning,
}

impl AlertLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Urgent => "URGENT",
            AlertLevel::Warning => "WARNING",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct AlertRecord {
    level: String,
    kind: String,
    message: String,
    payment_id: Option<u128>,
    created_at_ms: i64,
    sent_at_ms: Option<i64>,
    attempts: u32,
    next_try_ms: i64,
    last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: u128,
    pub level: AlertLevel,
    pub kind: String,
    pub message: String,
    pub payment_id: Option<PaymentId>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub next_try_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// What delivering an alert came to.
#[derive(Debug, Clone)]
pub enum Delivery {
    Sent,
    /// Try again at the given time.
    Failed {
        error: String,
        next_try: DateTime<Utc>,
    },
    /// Out of attempts: kept, logged, not sent.
    GaveUp {
        error: String,
    },
}

pub(super) fn insert_alert(
    txn: &Tx<'_>,
    id: u128,
    level: AlertLevel,
    kind: &str,
    message: &str,
    payment_id: Option<PaymentId>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let record = AlertRecord {
        level: level.as_str().to_owned(),
        kind: kind.to_owned(),
        message: message.chars().take(ALERT_MESSAGE_CHARS_MAX).collect(),
        payment_id: payment_id.map(PaymentId::as_u128),
        created_at_ms: now.timestamp_millis(),
        sent_at_ms: None,
        attempts: 0,
        next_try_ms: now.timestamp_millis(),
        last_error: None,
    };
    let bytes = encode(ALERT_RECORD, &record)?;
    txn.alerts()?.insert(id, bytes.as_slice())?;
    enqueue(txn, id, &Job::Alert { alert_id: id }, None, now)?;
    Ok(())
}

/// When an undelivered alert of schema 1 was to be tried next.
pub(super) fn next_try_of(txn: &Tx<'_>, id: u128) -> Result<DateTime<Utc>, StoreError> {
    let bytes = txn.alerts()?.get(id)?.map(|value| value.value().to_vec());
    match bytes {
        Some(bytes) => decode_alert(id, &bytes).map(|alert| alert.next_try_at),
        None => millis_to_time(0),
    }
}

fn decode_alert(id: u128, bytes: &[u8]) -> Result<Alert, StoreError> {
    let record: AlertRecord = decode("alert", ALERT_RECORD, bytes)?;
    Ok(Alert {
        id,
        level: if record.level == AlertLevel::Urgent.as_str() {
            AlertLevel::Urgent
        } else {
            AlertLevel::Warning
        },
        kind: record.kind,
        message: record.message,
        payment_id: record.payment_id.map(PaymentId::from_u128),
        created_at: millis_to_time(record.created_at_ms)?,
        sent_at: record.sent_at_ms.map(millis_to_time).transpose()?,
        attempts: record.attempts,
        next_try_at: millis_to_time(record.next_try_ms)?,
        last_error: record.last_error,
    })
}

impl Store {
    /// Raises an alert on its own (not part of another change).
    pub async fn raise_alert(
        &self,
        id: u128,
        level: AlertLevel,
        kind: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (kind, message) = (kind.to_owned(), message.to_owned());
        self.write(move |txn| insert_alert(txn, id, level, &kind, &message, None, now))
            .await
    }

    /// The alert a delivery job names.
    pub async fn alert(&self, id: u128) -> Result<Option<Alert>, StoreError> {
        self.read_point(move |txn| {
            let alerts = txn.open_table(tables::ALERTS)?;
            alerts
                .get(id)?
                .map(|value| decode_alert(id, value.value()))
                .transpose()
        })
        .await
    }

    /// Records a delivery attempt of alert `id` and what follows for its job, in one
    /// transaction.
    pub async fn alert_delivered(
        &self,
        claim: &JobClaim,
        id: u128,
        delivery: Delivery,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (job_id, token) = (claim.queued.id, claim.token);
        self.write(move |txn| {
            let outcome = match &delivery {
                Delivery::Sent => JobOutcome::Done,
                Delivery::Failed { error, next_try } => JobOutcome::Retry {
                    error: error.clone(),
                    due: *next_try,
                    counted: true,
                },
                Delivery::GaveUp { error } => JobOutcome::GaveUp {
                    error: error.clone(),
                },
            };
            if finish_job(txn, job_id, token, &outcome)?.is_none() {
                // Another run took the job over; its delivery is the one recorded.
                return Ok(());
            }
            let bytes = txn.alerts()?.get(id)?.map(|value| value.value().to_vec());
            let Some(bytes) = bytes else {
                return Ok(());
            };
            let mut record: AlertRecord = decode("alert", ALERT_RECORD, &bytes)?;
            record.attempts = record.attempts.saturating_add(1);
            match &delivery {
                Delivery::Sent => {
                    record.sent_at_ms = Some(now.timestamp_millis());
                }
                Delivery::Failed { error, next_try } => {
                    record.last_error = Some(error.chars().take(ALERT_MESSAGE_CHARS_MAX).collect());
                    record.next_try_ms = next_try.timestamp_millis();
                }
                Delivery::GaveUp { error } => {
                    record.last_error = Some(error.chars().take(ALERT_MESSAGE_CHARS_MAX).collect());
                }
            }
            let bytes = encode(ALERT_RECORD, &record)?;
            txn.alerts()?.insert(id, bytes.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Alerts newest first, at most `limit`.
    pub async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        self.read(move |txn| {
            let alerts = txn.open_table(tables::ALERTS)?;
            let mut found = Vec::new();
            for entry in alerts.iter()?.rev().take(limit) {
                let (key, value) = entry?;
                found.push(decode_alert(key.value(), value.value())?);
            }
            Ok(found)
        })
        .await
    }
}

//! The alert outbox: alerts are written in the same transaction as the event that causes them,
//! then delivered (logged, and sent to Slack when configured) by the alert sender, and kept for
//! the admin page.

use super::codec::{decode, encode};
use super::orders::millis_to_time;
use super::{Store, StoreError, tables};
use crate::domain::PaymentId;
use chrono::{DateTime, Utc};
use redb::{ReadableTable, WriteTransaction};
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
    txn: &WriteTransaction,
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
    txn.open_table(tables::ALERTS)?
        .insert(id, bytes.as_slice())?;
    txn.open_table(tables::ALERTS_UNSENT)?.insert(id, ())?;
    Ok(())
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
    /// Alerts waiting for delivery whose next try is due, oldest first.
    pub async fn due_alerts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, StoreError> {
        self.read(move |txn| {
            let unsent = txn.open_table(tables::ALERTS_UNSENT)?;
            let alerts = txn.open_table(tables::ALERTS)?;
            let mut due = Vec::new();
            for entry in unsent.iter()?.take(super::payments::LIST_SCAN_ROWS_MAX) {
                let (key, _) = entry?;
                if let Some(value) = alerts.get(key.value())? {
                    let alert = decode_alert(key.value(), value.value())?;
                    if alert.next_try_at <= now {
                        due.push(alert);
                        if due.len() == limit {
                            break;
                        }
                    }
                }
            }
            Ok(due)
        })
        .await
    }

    /// Records a delivery attempt of alert `id`.
    pub async fn alert_delivered(
        &self,
        id: u128,
        delivery: Delivery,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            let bytes = txn
                .open_table(tables::ALERTS)?
                .get(id)?
                .map(|value| value.value().to_vec());
            let Some(bytes) = bytes else {
                return Ok(());
            };
            let mut record: AlertRecord = decode("alert", ALERT_RECORD, &bytes)?;
            record.attempts = record.attempts.saturating_add(1);
            let done = match &delivery {
                Delivery::Sent => {
                    record.sent_at_ms = Some(now.timestamp_millis());
                    true
                }
                Delivery::Failed { error, next_try } => {
                    record.last_error = Some(error.chars().take(ALERT_MESSAGE_CHARS_MAX).collect());
                    record.next_try_ms = next_try.timestamp_millis();
                    false
                }
                Delivery::GaveUp { error } => {
                    record.last_error = Some(error.chars().take(ALERT_MESSAGE_CHARS_MAX).collect());
                    true
                }
            };
            let bytes = encode(ALERT_RECORD, &record)?;
            txn.open_table(tables::ALERTS)?
                .insert(id, bytes.as_slice())?;
            if done {
                txn.open_table(tables::ALERTS_UNSENT)?.remove(id)?;
            }
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

//! What the merchant's pages and exports read: totals per day, order details beside payments,
//! and payments in export order. Every scan has a named bound.

use super::orders::get_order;
use super::payments::decode_payment;
use super::{Store, StoreError, tables};
use crate::domain::calendar::{kst_date, kst_day_start};
use crate::domain::{OrderId, Payment, PaymentId, PaymentStatus};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{BTreeMap, HashMap};

/// Most payments one totals scan reads; past it the totals say they are cut short.
pub const TOTALS_SCAN_ROWS_MAX: usize = 500_000;
/// Most orders looked up beside one page of payments.
pub const ORDER_LOOKUPS_MAX: usize = 500;
/// Most payments one export chunk holds.
pub const EXPORT_CHUNK_ROWS: usize = 500;

/// What was paid and given back on one KST day, counted by the day of payment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayTotal {
    pub date: Option<NaiveDate>,
    pub count: u64,
    pub paid: i64,
    pub cancelled: i64,
}

impl DayTotal {
    pub fn net(&self) -> i64 {
        self.paid - self.cancelled
    }
}

/// An order's name and buyer e-mail, shown beside its payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDetails {
    pub name: String,
    pub buyer_email: Option<String>,
}

/// The first and last payment keys created within `from..=to` (KST): UUIDv7 keys begin with
/// their creation time in milliseconds.
pub(super) fn day_bounds(from: Option<NaiveDate>, to: Option<NaiveDate>) -> (u128, u128) {
    let millis_of = |at: DateTime<Utc>| u128::try_from(at.timestamp_millis().max(0)).unwrap_or(0);
    let low = from.map_or(0, |date| millis_of(kst_day_start(date)) << 80);
    let high = to
        .and_then(|date| date.succ_opt())
        .map_or(u128::MAX, |next| {
            (millis_of(kst_day_start(next)) << 80).saturating_sub(1)
        });
    (low, high)
}

/// A payment the merchant counts as taken: rolled-back ones were refused, never sold.
fn counts_as_sale(payment: &Payment) -> bool {
    !matches!(
        payment.status(),
        PaymentStatus::RollbackPending
            | PaymentStatus::RollbackUnknown
            | PaymentStatus::RollbackRefunded
            | PaymentStatus::RollbackFailed
    )
}

impl Store {
    /// Paid and given-back amounts for every KST day of `from..=to`, oldest first, by the day
    /// each payment was made (so a day's refunds belong to that day's sales). The bool is true
    /// when the scan stopped at `TOTALS_SCAN_ROWS_MAX` and the oldest days are incomplete.
    pub async fn day_totals(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<(Vec<DayTotal>, bool), StoreError> {
        self.read(move |txn| {
            let payments = txn.open_table(tables::PAYMENTS)?;
            let mut days: BTreeMap<NaiveDate, DayTotal> = from
                .iter_days()
                .take_while(|date| *date <= to)
                .map(|date| {
                    (
                        date,
                        DayTotal {
                            date: Some(date),
                            ..DayTotal::default()
                        },
                    )
                })
                .collect();
            let (low, high) = day_bounds(Some(from), Some(to));
            let mut scanned = 0;
            if low <= high {
                for entry in payments.range(low..=high)?.rev().take(TOTALS_SCAN_ROWS_MAX) {
                    let (_, value) = entry?;
                    scanned += 1;
                    let payment = decode_payment(value.value())?.payment;
                    if !counts_as_sale(&payment) {
                        continue;
                    }
                    if let Some(day) = days.get_mut(&kst_date(payment.paid_at)) {
                        day.count += 1;
                        day.paid += payment.amount.won();
                        day.cancelled += payment.cancelled_amount().won();
                    }
                }
            }
            Ok((
                days.into_values().collect(),
                scanned == TOTALS_SCAN_ROWS_MAX,
            ))
        })
        .await
    }

    /// The name and buyer e-mail of each order named (at most `ORDER_LOOKUPS_MAX`), in one read.
    pub async fn order_details(
        &self,
        ids: Vec<OrderId>,
    ) -> Result<HashMap<OrderId, OrderDetails>, StoreError> {
        self.read(move |txn| {
            let orders = txn.open_table(tables::ORDERS)?;
            let mut found = HashMap::new();
            for id in ids.into_iter().take(ORDER_LOOKUPS_MAX) {
                if found.contains_key(&id) {
                    continue;
                }
                if let Some(order) = get_order(&orders, &id)? {
                    found.insert(
                        id,
                        OrderDetails {
                            name: order.draft.name.clone(),
                            buyer_email: order.draft.buyer_email.clone(),
                        },
                    );
                }
            }
            Ok(found)
        })
        .await
    }

    /// Up to `EXPORT_CHUNK_ROWS` payments made within `from..=to` (KST), oldest first, after
    /// `after`, each with its order's details. An export reads chunk after chunk until one
    /// comes back short, so its memory stays one chunk whatever the range holds.
    pub async fn export_chunk(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        after: Option<PaymentId>,
    ) -> Result<Vec<(Payment, Option<OrderDetails>, Option<&'static str>)>, StoreError> {
        self.read(move |txn| {
            let payments = txn.open_table(tables::PAYMENTS)?;
            let orders = txn.open_table(tables::ORDERS)?;
            let settlements = txn.open_table(tables::SETTLEMENTS)?;
            let (mut low, high) = day_bounds(from, to);
            if let Some(after) = after {
                low = low.max(after.as_u128().saturating_add(1));
            }
            let mut rows = Vec::new();
            if low > high {
                return Ok(rows);
            }
            for entry in payments.range(low..=high)?.take(EXPORT_CHUNK_ROWS) {
                let (_, value) = entry?;
                let payment = decode_payment(value.value())?.payment;
                let details = get_order(&orders, &payment.order_id)?.map(|order| OrderDetails {
                    name: order.draft.name,
                    buyer_email: order.draft.buyer_email,
                });
                let settlement = super::payments::settlement_status_of(&settlements, &payment)?
                    .map(super::SettlementStatus::as_str);
                rows.push((payment, details, settlement));
            }
            Ok(rows)
        })
        .await
    }
}

/// Counts the metrics show, read in one snapshot.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// Payments by (provider, status).
    pub payments: HashMap<(crate::domain::Provider, PaymentStatus), u64>,
    /// Cancel intents by (provider, state).
    pub cancels: HashMap<(crate::domain::Provider, &'static str), u64>,
    /// Jobs waiting by kind, and the oldest one's creation time.
    pub queue: Vec<(crate::domain::job::JobKind, usize, Option<DateTime<Utc>>)>,
    /// Dead letters not yet re-driven or resolved.
    pub dead_letters: u64,
    /// Refunds whose outcome is unknown.
    pub unknown_refunds: u64,
    /// True when a scan stopped at `TOTALS_SCAN_ROWS_MAX`.
    pub cut_short: bool,
}

impl Store {
    /// What `/metrics` shows of the store; each scan stops at `TOTALS_SCAN_ROWS_MAX`.
    pub async fn metrics_snapshot(&self) -> Result<MetricsSnapshot, StoreError> {
        self.read(move |txn| {
            use redb::{ReadableTable, ReadableTableMetadata};
            let mut snapshot = MetricsSnapshot::default();
            let payments = txn.open_table(tables::PAYMENTS)?;
            let mut scanned = 0;
            for entry in payments.iter()?.take(TOTALS_SCAN_ROWS_MAX) {
                let (_, value) = entry?;
                scanned += 1;
                let payment = decode_payment(value.value())?.payment;
                *snapshot
                    .payments
                    .entry((payment.provider, payment.status()))
                    .or_default() += 1;
            }
            let mut cut_short = scanned == TOTALS_SCAN_ROWS_MAX;
            let intents = txn.open_table(tables::CANCEL_INTENTS)?;
            scanned = 0;
            for entry in intents.iter()?.take(TOTALS_SCAN_ROWS_MAX) {
                let (_, value) = entry?;
                scanned += 1;
                let intent = super::intents::decode_intent(value.value())?.intent;
                let provider = match payments.get(intent.payment_id.as_u128())? {
                    Some(value) => decode_payment(value.value())?.payment.provider,
                    None => continue,
                };
                *snapshot
                    .cancels
                    .entry((provider, intent.state.as_str()))
                    .or_default() += 1;
            }
            cut_short |= scanned == TOTALS_SCAN_ROWS_MAX;
            snapshot.queue = super::queue::depth_and_oldest(&txn.open_table(tables::QUEUE)?)?
                .into_iter()
                .map(|(kind, depth, oldest)| {
                    (
                        kind,
                        depth,
                        oldest.and_then(DateTime::from_timestamp_millis),
                    )
                })
                .collect();
            snapshot.dead_letters = super::dead_letters::pending_count(txn)?;
            snapshot.unknown_refunds = txn.open_table(tables::UNKNOWN_INTENTS)?.len()?;
            snapshot.cut_short = cut_short;
            Ok(snapshot)
        })
        .await
    }
}

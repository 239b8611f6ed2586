//! Payments, their events and settlement rows in redb, and storing a verified PG payment.
//!
//! Invariant: one PG payment (provider, PG id) is stored once; a payment and everything that
//! must follow from it (the order becoming paid, its settlement row, or its cancel intent and
//! retry job) are written in the same transaction.

use super::codec::{decode, encode};
use super::orders::millis_to_time;
use super::tx::Tx;
use super::{Store, StoreError, tables};
use crate::domain::calendar::{date_key, kst_date};
use crate::domain::{
    Amount, BuyerId, CancelId, Event, EventKind, OrderId, PartnerId, Payment, PaymentId,
    PaymentStatus, PgTid, Provider,
};
use chrono::{DateTime, NaiveDate, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

const PAYMENT_RECORD: u8 = 1;
const EVENT_RECORD: u8 = 1;
pub(super) const SETTLEMENT_RECORD: u8 = 1;

/// Most events shown with one payment (the latest ones). Attempts are bounded by the retry
/// policy, so a payment's history stays far below this in practice.
pub const EVENTS_PER_VIEW_MAX: usize = 200;
/// Most characters of detail kept with one event; a PG's answer is cut to this.
pub const EVENT_DETAIL_CHARS_MAX: usize = 500;
/// Most rows one list request examines; past it the page ends early with a cursor.
pub const LIST_SCAN_ROWS_MAX: usize = 5_000;
/// Most payments listed for one order (accepted plus rolled back).
pub const PAYMENTS_PER_ORDER_MAX: usize = 100;

#[derive(Serialize, Deserialize)]
struct PaymentRecord {
    id: u128,
    order_id: String,
    provider: String,
    pg_tid: String,
    amount: i64,
    cancelled_amount: i64,
    reserved_amount: i64,
    status: String,
    partner_id: Option<String>,
    buyer_id: Option<u128>,
    paid_at_ms: i64,
    /// The cancel intent now being attempted at the PG, and until when (Unix ms).
    lease: Option<(u128, i64)>,
}

#[derive(Serialize, Deserialize)]
struct EventRecord {
    at_ms: i64,
    kind: String,
    detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SettlementRecord {
    pub payment_id: u128,
    pub provider: String,
    pub amount: i64,
    pub status: String,
    /// The PG's fee and payout, once a matching settlement line was found.
    pub fee: Option<i64>,
    pub settle_amount: Option<i64>,
    pub order_id: String,
}

/// A payment as stored: the domain payment and the lease of the intent now at the PG.
#[derive(Debug, Clone)]
pub(super) struct StoredPayment {
    pub payment: Payment,
    pub lease: Option<(CancelId, i64)>,
}

/// Where a paid payment stands in the PG's settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementStatus {
    Pending,
    Succeed,
}

impl SettlementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementStatus::Pending => "Pending",
            SettlementStatus::Succeed => "Succeed",
        }
    }
}

/// A payment with what is shown alongside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentView {
    pub payment: Payment,
    pub events: Vec<Event>,
    pub settlement_status: Option<SettlementStatus>,
}

#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub order_id: Option<OrderId>,
    pub status: Option<PaymentStatus>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub provider: Option<Provider>,
    /// Only payments whose order names this buyer e-mail (compared without case).
    pub buyer_email: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PaymentPage {
    pub items: Vec<PaymentView>,
    pub next_cursor: Option<PaymentId>,
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

pub(super) fn clip(text: &str, chars_max: usize) -> String {
    text.chars().take(chars_max).collect()
}

pub(super) fn encode_payment(stored: &StoredPayment) -> Result<Vec<u8>, StoreError> {
    let payment = &stored.payment;
    encode(
        PAYMENT_RECORD,
        &PaymentRecord {
            id: payment.id.as_u128(),
            order_id: payment.order_id.as_str().to_owned(),
            provider: payment.provider.as_str().to_owned(),
            pg_tid: payment.pg_tid.as_str().to_owned(),
            amount: payment.amount.won(),
            cancelled_amount: payment.cancelled_amount().won(),
            reserved_amount: payment.reserved_amount().won(),
            status: payment.status().as_str().to_owned(),
            partner_id: payment.partner_id.as_ref().map(|id| id.as_str().to_owned()),
            buyer_id: payment.buyer_id.map(BuyerId::as_u128),
            paid_at_ms: payment.paid_at.timestamp_millis(),
            lease: stored
                .lease
                .map(|(cancel, until)| (cancel.as_u128(), until)),
        },
    )
}

pub(super) fn decode_payment(bytes: &[u8]) -> Result<StoredPayment, StoreError> {
    let record: PaymentRecord = decode("payment", PAYMENT_RECORD, bytes)?;
    let status = PaymentStatus::parse(&record.status)
        .ok_or_else(|| corrupt("payment status", &record.status))?;
    let mut payment = Payment::restore(
        PaymentId::from_u128(record.id),
        OrderId::parse(&record.order_id).map_err(|error| corrupt("payment order", error))?,
        Provider::parse(&record.provider).map_err(|error| corrupt("payment provider", error))?,
        PgTid::parse(&record.pg_tid).map_err(|error| corrupt("payment PG id", error))?,
        Amount::positive(record.amount).map_err(|error| corrupt("payment amount", error))?,
        millis_to_time(record.paid_at_ms)?,
        Amount::non_negative(record.cancelled_amount)
            .map_err(|error| corrupt("cancelled amount", error))?,
        Amount::non_negative(record.reserved_amount)
            .map_err(|error| corrupt("reserved amount", error))?,
        status,
    )
    .map_err(|error| corrupt("payment", error))?;
    payment.partner_id = record
        .partner_id
        .as_deref()
        .map(PartnerId::parse)
        .transpose()
        .map_err(|error| corrupt("partner", error))?;
    payment.buyer_id = record.buyer_id.map(BuyerId::from_u128);
    Ok(StoredPayment {
        payment,
        lease: record
            .lease
            .map(|(cancel, until)| (CancelId::from_u128(cancel), until)),
    })
}

pub(super) fn pg_key(provider: Provider, pg_tid: &PgTid) -> String {
    format!("{}:{}", provider.as_str(), pg_tid.as_str())
}

pub(super) fn get_payment(
    txn: &Tx<'_>,
    id: PaymentId,
) -> Result<Option<StoredPayment>, StoreError> {
    let bytes = txn
        .payments()?
        .get(id.as_u128())?
        .map(|value| value.value().to_vec());
    bytes.map(|bytes| decode_payment(&bytes)).transpose()
}

pub(super) fn put_payment(txn: &Tx<'_>, stored: &StoredPayment) -> Result<(), StoreError> {
    let bytes = encode_payment(stored)?;
    txn.payments()?
        .insert(stored.payment.id.as_u128(), bytes.as_slice())?;
    Ok(())
}

pub(super) fn append_event(
    txn: &Tx<'_>,
    payment: PaymentId,
    at: DateTime<Utc>,
    kind: EventKind,
    detail: &str,
) -> Result<(), StoreError> {
    let mut events = txn.payment_events()?;
    let key = payment.as_u128();
    let next = events
        .range((key, 0)..=(key, u32::MAX))?
        .next_back()
        .transpose()?
        .map_or(0, |(last, _)| last.value().1.saturating_add(1));
    let bytes = encode(
        EVENT_RECORD,
        &EventRecord {
            at_ms: at.timestamp_millis(),
            kind: kind.as_str().to_owned(),
            detail: clip(detail, EVENT_DETAIL_CHARS_MAX),
        },
    )?;
    events.insert((key, next), bytes.as_slice())?;
    Ok(())
}

pub(super) fn settlement_status_of(
    settlements: &impl ReadableTable<(u32, u128), &'static [u8]>,
    payment: &Payment,
) -> Result<Option<SettlementStatus>, StoreError> {
    let key = (date_key(kst_date(payment.paid_at)), payment.id.as_u128());
    let Some(value) = settlements.get(key)? else {
        return Ok(None);
    };
    let record: SettlementRecord = decode("settlement", SETTLEMENT_RECORD, value.value())?;
    Ok(Some(if record.status == "Succeed" {
        SettlementStatus::Succeed
    } else {
        SettlementStatus::Pending
    }))
}

fn load_view(
    payments: &impl ReadableTable<u128, &'static [u8]>,
    events: &impl ReadableTable<(u128, u32), &'static [u8]>,
    settlements: &impl ReadableTable<(u32, u128), &'static [u8]>,
    id: PaymentId,
    with_events: bool,
) -> Result<Option<PaymentView>, StoreError> {
    let Some(bytes) = payments.get(id.as_u128())? else {
        return Ok(None);
    };
    let payment = decode_payment(bytes.value())?.payment;
    let mut history = Vec::new();
    if with_events {
        let key = id.as_u128();
        for entry in events
            .range((key, 0)..=(key, u32::MAX))?
            .rev()
            .take(EVENTS_PER_VIEW_MAX)
        {
            let (_, value) = entry?;
            let record: EventRecord = decode("event", EVENT_RECORD, value.value())?;
            history.push(Event {
                at: millis_to_time(record.at_ms)?,
                kind: EventKind::parse(&record.kind)
                    .ok_or_else(|| corrupt("event kind", &record.kind))?,
                detail: record.detail,
            });
        }
        history.reverse();
    }
    let settlement_status = settlement_status_of(settlements, &payment)?;
    Ok(Some(PaymentView {
        payment,
        events: history,
        settlement_status,
    }))
}

pub(super) fn view_in_write(txn: &Tx<'_>, id: PaymentId) -> Result<PaymentView, StoreError> {
    load_view(
        &*txn.payments()?,
        &*txn.payment_events()?,
        &*txn.settlements()?,
        id,
        true,
    )?
    .ok_or_else(|| StoreError::Bug(format!("payment {id} vanished inside its transaction")))
}

fn key_bounds(filter: &PaymentFilter) -> (u128, u128) {
    super::reports::day_bounds(filter.from, filter.to)
}

impl Store {
    pub async fn payment(&self, id: PaymentId) -> Result<Option<PaymentView>, StoreError> {
        self.read_point(move |txn| {
            load_view(
                &txn.open_table(tables::PAYMENTS)?,
                &txn.open_table(tables::PAYMENT_EVENTS)?,
                &txn.open_table(tables::SETTLEMENTS)?,
                id,
                true,
            )
        })
        .await
    }

    pub async fn payment_by_pg(
        &self,
        provider: Provider,
        pg_tid: &PgTid,
    ) -> Result<Option<PaymentView>, StoreError> {
        let key = pg_key(provider, pg_tid);
        self.read_point(move |txn| {
            let Some(id) = txn
                .open_table(tables::PAYMENTS_BY_PG)?
                .get(key.as_str())?
                .map(|id| id.value())
            else {
                return Ok(None);
            };
            load_view(
                &txn.open_table(tables::PAYMENTS)?,
                &txn.open_table(tables::PAYMENT_EVENTS)?,
                &txn.open_table(tables::SETTLEMENTS)?,
                PaymentId::from_u128(id),
                true,
            )
        })
        .await
    }

    /// Every payment taken for an order, oldest first, without events.
    pub async fn payments_of_order(
        &self,
        order_id: &OrderId,
    ) -> Result<Vec<PaymentView>, StoreError> {
        let order_id = order_id.clone();
        self.read_point(move |txn| {
            let index = txn.open_table(tables::PAYMENTS_BY_ORDER)?;
            let payments = txn.open_table(tables::PAYMENTS)?;
            let events = txn.open_table(tables::PAYMENT_EVENTS)?;
            let settlements = txn.open_table(tables::SETTLEMENTS)?;
            let mut views = Vec::new();
            let range = (order_id.as_str(), 0)..=(order_id.as_str(), u128::MAX);
            for entry in index.range(range)?.take(PAYMENTS_PER_ORDER_MAX) {
                let (key, _) = entry?;
                let id = PaymentId::from_u128(key.value().1);
                if let Some(view) = load_view(&payments, &events, &settlements, id, false)? {
                    views.push(view);
                }
            }
            Ok(views)
        })
        .await
    }

    /// Payments newest first, filtered; at most `limit`, continuing below `cursor`. A page
    /// examines at most `LIST_SCAN_ROWS_MAX` rows; a page cut short by that still has a cursor.
    pub async fn list_payments(
        &self,
        filter: PaymentFilter,
        limit: usize,
        cursor: Option<PaymentId>,
    ) -> Result<PaymentPage, StoreError> {
        self.read(move |txn| {
            let payments = txn.open_table(tables::PAYMENTS)?;
            let events = txn.open_table(tables::PAYMENT_EVENTS)?;
            let settlements = txn.open_table(tables::SETTLEMENTS)?;
            let (low, mut high) = key_bounds(&filter);
            if let Some(cursor) = cursor {
                high = high.min(cursor.as_u128().saturating_sub(1));
            }
            let keep = |payment: &Payment| {
                filter
                    .status
                    .is_none_or(|status| payment.status() == status)
                    && filter
                        .order_id
                        .as_ref()
                        .is_none_or(|order| &payment.order_id == order)
                    && filter
                        .provider
                        .is_none_or(|provider| payment.provider == provider)
            };
            let orders = txn.open_table(tables::ORDERS)?;
            let email_matches = |payment: &Payment| -> Result<bool, StoreError> {
                let Some(wanted) = &filter.buyer_email else {
                    return Ok(true);
                };
                Ok(super::orders::get_order(&orders, &payment.order_id)?
                    .and_then(|order| order.draft.buyer_email)
                    .is_some_and(|email| email.eq_ignore_ascii_case(wanted)))
            };
            let mut items = Vec::new();
            let mut last_seen = None;
            let mut scanned = 0;
            if low <= high {
                for entry in payments.range(low..=high)?.rev().take(LIST_SCAN_ROWS_MAX) {
                    let (key, value) = entry?;
                    scanned += 1;
                    last_seen = Some(PaymentId::from_u128(key.value()));
                    let payment = decode_payment(value.value())?.payment;
                    if keep(&payment) && email_matches(&payment)? {
                        if let Some(view) =
                            load_view(&payments, &events, &settlements, payment.id, false)?
                        {
                            items.push(view);
                        }
                        if items.len() == limit {
                            break;
                        }
                    }
                }
            }
            let more = items.len() == limit || scanned == LIST_SCAN_ROWS_MAX;
            Ok(PaymentPage {
                items,
                next_cursor: if more { last_seen } else { None },
            })
        })
        .await
    }

    /// One buyer's payments, newest first.
    pub async fn list_buyer_payments(
        &self,
        buyer: BuyerId,
        limit: usize,
        cursor: Option<PaymentId>,
    ) -> Result<PaymentPage, StoreError> {
        self.read(move |txn| {
            let index = txn.open_table(tables::PAYMENTS_BY_BUYER)?;
            let payments = txn.open_table(tables::PAYMENTS)?;
            let events = txn.open_table(tables::PAYMENT_EVENTS)?;
            let settlements = txn.open_table(tables::SETTLEMENTS)?;
            let buyer_key = buyer.as_u128();
            let high = cursor.map_or(u128::MAX, |cursor| cursor.as_u128().saturating_sub(1));
            let mut items = Vec::new();
            let mut more = false;
            for entry in index.range((buyer_key, 0)..=(buyer_key, high))?.rev() {
                let (key, _) = entry?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                let id = PaymentId::from_u128(key.value().1);
                if let Some(view) = load_view(&payments, &events, &settlements, id, false)? {
                    items.push(view);
                }
            }
            let next_cursor = if more {
                items.last().map(|view| view.payment.id)
            } else {
                None
            };
            Ok(PaymentPage { items, next_cursor })
        })
        .await
    }
}

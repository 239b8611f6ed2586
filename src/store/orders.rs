//! Orders in redb.

use super::codec::{decode, encode};
use super::tx::Tx;
use super::{Store, StoreError, tables};
use crate::domain::{
    Amount, BuyerId, Order, OrderDraft, OrderId, OrderStatus, PartnerId, PaymentId, Provider,
};
use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// Version 1 (parts 1–3) had no expiry; version 2 adds it.
const ORDER_RECORD_V1: u8 = 1;
const ORDER_RECORD: u8 = 2;
/// `META` keys of small texts (the sweep's cursors) begin with this.
const META_TEXT_PREFIX: &str = "text:";
/// Most characters of one such text.
const META_TEXT_CHARS_MAX: usize = 200;
/// Most READY orders one sweep step reads.
pub const READY_ORDERS_PAGE_MAX: usize = 500;
/// Most entries of one client's recent orders read (the limit is at most 10,000, and every order
/// adds one entry only after the closed ones are removed).
const OPEN_ORDERS_SCAN_MAX: usize = 10_001;
/// Most entries older than the window removed with one order: more than one order adds, so the
/// tables shrink back to the orders of the last window.
const OPEN_ORDERS_PRUNE_MAX: usize = 8;

#[derive(Serialize, Deserialize)]
struct OrderRecordV1 {
    order_id: String,
    amount: i64,
    name: String,
    partner_id: Option<String>,
    buyer_email: Option<String>,
    provider: String,
    buyer_id: Option<u128>,
    created_at_ms: i64,
    paid_payment_id: Option<u128>,
}

#[derive(Serialize, Deserialize)]
struct OrderRecord {
    order_id: String,
    amount: i64,
    name: String,
    partner_id: Option<String>,
    buyer_email: Option<String>,
    provider: String,
    buyer_id: Option<u128>,
    created_at_ms: i64,
    paid_payment_id: Option<u128>,
    expired: bool,
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

pub(super) fn millis_to_time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

pub(super) fn encode_order(order: &Order) -> Result<Vec<u8>, StoreError> {
    let draft = &order.draft;
    encode(
        ORDER_RECORD,
        &OrderRecord {
            order_id: draft.order_id.as_str().to_owned(),
            amount: draft.amount.won(),
            name: draft.name.clone(),
            partner_id: draft.partner_id.as_ref().map(|id| id.as_str().to_owned()),
            buyer_email: draft.buyer_email.clone(),
            provider: draft.provider.as_str().to_owned(),
            buyer_id: order.buyer_id.map(BuyerId::as_u128),
            created_at_ms: order.created_at.timestamp_millis(),
            paid_payment_id: order.paid_payment_id().map(PaymentId::as_u128),
            expired: order.status() == OrderStatus::Expired,
        },
    )
}

pub(super) fn decode_order(bytes: &[u8]) -> Result<Order, StoreError> {
    let record: OrderRecord = if bytes.first() == Some(&ORDER_RECORD_V1) {
        let old: OrderRecordV1 = decode("order", ORDER_RECORD_V1, bytes)?;
        OrderRecord {
            order_id: old.order_id,
            amount: old.amount,
            name: old.name,
            partner_id: old.partner_id,
            buyer_email: old.buyer_email,
            provider: old.provider,
            buyer_id: old.buyer_id,
            created_at_ms: old.created_at_ms,
            paid_payment_id: old.paid_payment_id,
            expired: false,
        }
    } else {
        decode("order", ORDER_RECORD, bytes)?
    };
    let draft = OrderDraft {
        order_id: OrderId::parse(&record.order_id).map_err(|error| corrupt("order id", error))?,
        amount: Amount::positive(record.amount).map_err(|error| corrupt("order amount", error))?,
        name: record.name,
        partner_id: record
            .partner_id
            .as_deref()
            .map(PartnerId::parse)
            .transpose()
            .map_err(|error| corrupt("order partner", error))?,
        buyer_email: record.buyer_email,
        provider: Provider::parse(&record.provider)
            .map_err(|error| corrupt("order provider", error))?,
    };
    Ok(Order::restore(
        draft,
        record.buyer_id.map(BuyerId::from_u128),
        millis_to_time(record.created_at_ms)?,
        record.paid_payment_id.map(PaymentId::from_u128),
        record.expired,
    ))
}

pub(super) fn get_order(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &OrderId,
) -> Result<Option<Order>, StoreError> {
    table
        .get(id.as_str())?
        .map(|value| decode_order(value.value()))
        .transpose()
}

/// Stores an order and keeps the READY index true to its status.
pub(super) fn put_order(txn: &Tx<'_>, order: &Order) -> Result<(), StoreError> {
    let bytes = encode_order(order)?;
    txn.orders()?
        .insert(order.id().as_str(), bytes.as_slice())?;
    let key = (
        u64::try_from(order.created_at.timestamp_millis()).unwrap_or(0),
        order.id().as_str(),
    );
    let mut ready = txn.ready_orders()?;
    if order.status() == OrderStatus::Ready {
        ready.insert(key, ())?;
    } else {
        ready.remove(key)?;
    }
    Ok(())
}

/// What creating an order did. A repeated request with the same draft is answered with the
/// order as it is; a different draft under a known id is a conflict and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOrderOutcome {
    Created(Order),
    Existing(Order),
    Conflict(Order),
}

impl Store {
    pub async fn create_order(
        &self,
        draft: OrderDraft,
        buyer_id: Option<BuyerId>,
        now: DateTime<Utc>,
    ) -> Result<CreateOrderOutcome, StoreError> {
        self.write(move |txn| {
            let existing = get_order(&*txn.orders()?, &draft.order_id)?;
            if let Some(order) = existing {
                return Ok(if order.draft == draft {
                    CreateOrderOutcome::Existing(order)
                } else {
                    CreateOrderOutcome::Conflict(order)
                });
            }
            let order = Order::new(draft.clone(), buyer_id, now);
            put_order(txn, &order)?;
            Ok(CreateOrderOutcome::Created(order))
        })
        .await
    }

    /// `create_order` for a buyer of the payment page, unless `client` made `open_max` orders
    /// within `window` that are still READY: then `None`, and nothing is stored. Entries older
    /// than `window` are removed as they are met, a few of anybody's with each order.
    pub async fn create_client_order(
        &self,
        draft: OrderDraft,
        buyer_id: Option<BuyerId>,
        now: DateTime<Utc>,
        client: String,
        open_max: u32,
        window: std::time::Duration,
    ) -> Result<Option<CreateOrderOutcome>, StoreError> {
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let since_ms = now_ms.saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        self.write(move |txn| {
            let orders = txn.orders()?;
            if let Some(order) = get_order(&*orders, &draft.order_id)? {
                return Ok(Some(if order.draft == draft {
                    CreateOrderOutcome::Existing(order)
                } else {
                    CreateOrderOutcome::Conflict(order)
                }));
            }
            let mut by_client = txn.open_orders_by_client()?;
            let mut by_time = txn.open_orders_by_time()?;
            // Anybody's entries older than the window, oldest first, a few each time.
            let mut old: Vec<(u64, String, String)> = Vec::new();
            for entry in by_time
                .range(..(since_ms, "", ""))?
                .take(OPEN_ORDERS_PRUNE_MAX)
            {
                let (key, _) = entry?;
                let (created_ms, who, order_id) = key.value();
                old.push((created_ms, who.to_owned(), order_id.to_owned()));
            }
            let mut open = 0u32;
            for entry in by_client
                .range((client.as_str(), since_ms, "")..=(client.as_str(), u64::MAX, "\u{7f}"))?
                .take(OPEN_ORDERS_SCAN_MAX)
            {
                let (key, _) = entry?;
                let (_, created_ms, order_id) = key.value();
                let still_open = match OrderId::parse(order_id) {
                    Ok(id) => get_order(&*orders, &id)?
                        .is_some_and(|order| order.status() == OrderStatus::Ready),
                    Err(_) => false,
                };
                if still_open {
                    open += 1;
                } else {
                    old.push((created_ms, client.clone(), order_id.to_owned()));
                }
            }
            drop(orders);
            for (created_ms, who, order_id) in &old {
                by_client.remove((who.as_str(), *created_ms, order_id.as_str()))?;
                by_time.remove((*created_ms, who.as_str(), order_id.as_str()))?;
            }
            if open >= open_max {
                return Ok(None);
            }
            let order = Order::new(draft.clone(), buyer_id, now);
            put_order(txn, &order)?;
            by_client.insert((client.as_str(), now_ms, order.id().as_str()), ())?;
            by_time.insert((now_ms, client.as_str(), order.id().as_str()), ())?;
            Ok(Some(CreateOrderOutcome::Created(order)))
        })
        .await
    }

    /// READY orders created after `after` (a cursor this answers: creation ms and order id),
    /// oldest first, at most `limit`.
    pub async fn ready_orders(
        &self,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<Vec<Order>, StoreError> {
        self.read(move |txn| {
            let index = txn.open_table(tables::READY_ORDERS)?;
            let orders = txn.open_table(tables::ORDERS)?;
            let mut found = Vec::new();
            let range = match &after {
                Some((ms, id)) => index.range((*ms, id.as_str())..)?,
                None => index.range::<(u64, &str)>(..)?,
            };
            for entry in range.take(limit.min(READY_ORDERS_PAGE_MAX) + 1) {
                let (key, _) = entry?;
                let (ms, id) = key.value();
                if after
                    .as_ref()
                    .is_some_and(|(after_ms, after_id)| (ms, id) == (*after_ms, after_id.as_str()))
                {
                    continue;
                }
                if found.len() == limit.min(READY_ORDERS_PAGE_MAX) {
                    break;
                }
                let id = OrderId::parse(id).map_err(|error| corrupt("ready order id", error))?;
                if let Some(order) = get_order(&orders, &id)? {
                    found.push(order);
                }
            }
            Ok(found)
        })
        .await
    }

    /// Moves a READY order to EXPIRED; answers the order as it is now (unchanged when it is not
    /// READY any more: a payment that landed meanwhile wins).
    pub async fn expire_order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let id = id.clone();
        self.write(move |txn| {
            let Some(mut order) = get_order(&*txn.orders()?, &id)? else {
                return Ok(None);
            };
            if order.expire() {
                put_order(txn, &order)?;
            }
            Ok(Some(order))
        })
        .await
    }

    /// A small text kept in `META` under `key` (the sweep's cursors).
    pub async fn meta_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = format!("{META_TEXT_PREFIX}{key}");
        self.read_point(move |txn| {
            let meta = txn.open_table(tables::META)?;
            let value = meta
                .get(key.as_str())?
                .map(|value| String::from_utf8_lossy(value.value()).into_owned());
            Ok(value)
        })
        .await
    }

    /// Keeps (or, with `None`, removes) a small text in `META`.
    pub async fn set_meta_text(&self, key: &str, value: Option<String>) -> Result<(), StoreError> {
        let key = format!("{META_TEXT_PREFIX}{key}");
        self.write(move |txn| {
            let mut meta = txn.meta()?;
            match &value {
                Some(text) => {
                    let text: String = text.chars().take(META_TEXT_CHARS_MAX).collect();
                    meta.insert(key.as_str(), text.as_bytes())?;
                }
                None => {
                    meta.remove(key.as_str())?;
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let id = id.clone();
        self.read_point(move |txn| get_order(&txn.open_table(tables::ORDERS)?, &id))
            .await
    }
}

//! Orders in redb.

use super::codec::{decode, encode};
use super::{Store, StoreError, tables};
use crate::domain::{Amount, BuyerId, Order, OrderDraft, OrderId, PartnerId, PaymentId, Provider};
use chrono::{DateTime, Utc};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

const ORDER_RECORD: u8 = 1;

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
        },
    )
}

pub(super) fn decode_order(bytes: &[u8]) -> Result<Order, StoreError> {
    let record: OrderRecord = decode("order", ORDER_RECORD, bytes)?;
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

pub(super) fn put_order(txn: &WriteTransaction, order: &Order) -> Result<(), StoreError> {
    let bytes = encode_order(order)?;
    txn.open_table(tables::ORDERS)?
        .insert(order.id().as_str(), bytes.as_slice())?;
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
            let existing = get_order(&txn.open_table(tables::ORDERS)?, &draft.order_id)?;
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

    pub async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let id = id.clone();
        self.read(move |txn| get_order(&txn.open_table(tables::ORDERS)?, &id))
            .await
    }
}

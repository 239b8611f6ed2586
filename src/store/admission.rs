//! Storing a payment verified with the PG: in one transaction, `domain::admit` decides whether
//! it pays its order; accepted, the payment, the order's new state, its settlement row and its
//! partner ledger entry are written together; refused, the payment is stored `ROLLBACK_PENDING`
//! with a cancel intent and its job, exactly like a merchant's cancel.
//!
//! Invariant: one PG payment (provider, PG id) is stored once, whoever reports it.

use super::codec::encode;
use super::intents::insert_intent;
use super::orders::{get_order, put_order};
use super::partners::{Entry, record_entry, today};
use super::payments::{
    PaymentView, SETTLEMENT_RECORD, SettlementRecord, SettlementStatus, StoredPayment,
    append_event, pg_key, put_payment, view_in_write,
};
use super::queue::enqueue_cancel;
use super::tx::Tx;
use super::{Store, StoreError};
use crate::domain::calendar::{date_key, kst_date};
use crate::domain::{
    Admission, Amount, CancelId, CancelIntent, CancelKind, EventKind, OrderId, Payment, PaymentId,
    PaymentStatus, PgTid, Provider, admit,
};
use chrono::{DateTime, Utc};
use redb::ReadableTable;

/// A PG payment as verified with the PG, about to be stored. Ids are made by the caller so the
/// write has no randomness of its own.
#[derive(Debug, Clone)]
pub struct NewPgPayment {
    pub payment_id: PaymentId,
    pub cancel_id: CancelId,
    pub pg_key: String,
    pub provider: Provider,
    pub pg_tid: PgTid,
    pub order_id: OrderId,
    pub amount: Amount,
    /// False when the PG charged another currency than KRW: such a payment is refused.
    pub currency_ok: bool,
    /// What the PG says is still refundable, for the rollback's balance check.
    pub pg_balance: Amount,
    pub paid_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub source: &'static str,
}

/// What storing a verified PG payment did.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "answered once per completion, never kept in bulk"
)]
pub enum RecordOutcome {
    /// The PG payment names an order kassa does not have; nothing was stored.
    OrderNotFound,
    /// This PG payment was stored before; nothing changed.
    Known(PaymentView),
    /// The order is now paid by this payment.
    Paid(PaymentView),
    /// The payment was stored as `ROLLBACK_PENDING` with a cancel intent and its retry job.
    Rollback {
        view: PaymentView,
        intent: CancelIntent,
        admission: Admission,
    },
}

#[expect(
    clippy::too_many_lines,
    reason = "the whole decision and every row it writes, in one transaction"
)]
fn record_pg_payment(txn: &Tx<'_>, new: &NewPgPayment) -> Result<RecordOutcome, StoreError> {
    let index_key = pg_key(new.provider, &new.pg_tid);
    let known = txn
        .payments_by_pg()?
        .get(index_key.as_str())?
        .map(|id| id.value());
    if let Some(known) = known {
        return Ok(RecordOutcome::Known(view_in_write(
            txn,
            PaymentId::from_u128(known),
        )?));
    }
    let Some(mut order) = get_order(&*txn.orders()?, &new.order_id)? else {
        return Ok(RecordOutcome::OrderNotFound);
    };
    // Ids are made by the caller; one that is taken would overwrite another payment.
    if txn.payments()?.get(new.payment_id.as_u128())?.is_some() {
        return Err(StoreError::Bug(format!(
            "payment id {} is taken already",
            new.payment_id
        )));
    }
    let admission = if new.currency_ok {
        admit(&order, new.amount)
    } else {
        Admission::RollbackAmountMismatch {
            expected: order.draft.amount,
            actual: new.amount,
        }
    };
    let status = if admission == Admission::Accept {
        PaymentStatus::Paid
    } else {
        PaymentStatus::RollbackPending
    };
    let mut payment = Payment::new(
        new.payment_id,
        new.order_id.clone(),
        new.provider,
        new.pg_tid.clone(),
        new.amount,
        new.paid_at,
        status,
    )
    .map_err(|error| StoreError::Bug(error.to_string()))?;
    payment.partner_id.clone_from(&order.draft.partner_id);
    payment.buyer_id = order.buyer_id;
    txn.payments_by_pg()?
        .insert(index_key.as_str(), new.payment_id.as_u128())?;
    txn.payments_by_order()?
        .insert((new.order_id.as_str(), new.payment_id.as_u128()), ())?;
    if let Some(buyer) = order.buyer_id {
        txn.payments_by_buyer()?
            .insert((buyer.as_u128(), new.payment_id.as_u128()), ())?;
    }
    let paid_detail = format!(
        "{} confirmed by {} ({})",
        new.amount,
        new.provider.as_str(),
        new.source
    );
    append_event(txn, new.payment_id, new.now, EventKind::Paid, &paid_detail)?;
    if admission == Admission::Accept {
        put_payment(
            txn,
            &StoredPayment {
                payment,
                lease: None,
            },
        )?;
        order.mark_paid(new.payment_id);
        put_order(txn, &order)?;
        let row = encode(
            SETTLEMENT_RECORD,
            &SettlementRecord {
                payment_id: new.payment_id.as_u128(),
                provider: new.provider.as_str().to_owned(),
                amount: new.amount.won(),
                status: SettlementStatus::Pending.as_str().to_owned(),
                fee: None,
                settle_amount: None,
                order_id: new.order_id.as_str().to_owned(),
            },
        )?;
        let row_key = (date_key(kst_date(new.paid_at)), new.payment_id.as_u128());
        txn.settlements()?.insert(row_key, row.as_slice())?;
        txn.settlement_of_order()?
            .insert(new.order_id.as_str(), row_key)?;
        let entry = Entry {
            natural: kst_date(new.paid_at),
            today: today(new.now),
            partner: order.draft.partner_id.as_ref(),
            id: new.payment_id.as_u128(),
            refund: false,
            amount: new.amount,
            payment_id: new.payment_id,
        };
        record_entry(txn, &entry)?;
        return Ok(RecordOutcome::Paid(view_in_write(txn, new.payment_id)?));
    }
    let (kind, reason) = match admission {
        Admission::RollbackAmountMismatch { expected, actual } => (
            CancelKind::RollbackAmountMismatch,
            format!("amount mismatch: the order asks {expected}, the PG took {actual}"),
        ),
        Admission::RollbackAlreadyPaid { paid_by } => (
            CancelKind::RollbackAlreadyPaid,
            format!("the order is already paid by payment {paid_by}"),
        ),
        Admission::Accept => unreachable!("accepted payments returned above"),
    };
    // The whole PG balance goes back; if the PG reports nothing left, nothing is reserved.
    let intent = CancelIntent::new(
        new.cancel_id,
        new.payment_id,
        kind,
        new.pg_balance,
        reason.clone(),
        new.pg_key.clone(),
        new.now,
    );
    // What the PG already refunded before kassa saw the payment is not kassa's to refund again.
    let refunded_before = new
        .amount
        .checked_sub(new.pg_balance)
        .unwrap_or(Amount::ZERO);
    if !refunded_before.is_zero() {
        payment
            .record_refund(refunded_before)
            .map_err(|error| StoreError::Bug(error.to_string()))?;
    }
    if !new.pg_balance.is_zero() {
        payment
            .reserve(new.pg_balance)
            .map_err(|error| StoreError::Bug(error.to_string()))?;
    }
    put_payment(
        txn,
        &StoredPayment {
            payment,
            lease: None,
        },
    )?;
    append_event(
        txn,
        new.payment_id,
        new.now,
        EventKind::RollbackRequested,
        &reason,
    )?;
    insert_intent(txn, &intent)?;
    enqueue_cancel(txn, intent.id, new.provider, new.now)?;
    Ok(RecordOutcome::Rollback {
        view: view_in_write(txn, new.payment_id)?,
        intent,
        admission,
    })
}

impl Store {
    pub async fn record_pg_payment(&self, new: NewPgPayment) -> Result<RecordOutcome, StoreError> {
        self.write(move |txn| record_pg_payment(txn, &new)).await
    }
}

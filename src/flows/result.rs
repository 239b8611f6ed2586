//! An order's outcome as the buyer sees it, and waiting for it to change (the long-poll).
//!
//! Invariant: a waiter wakes on the store's commit notification, not on a timer, and every wait
//! ends by its deadline or at shutdown.

use super::{FlowError, Kassa};
use crate::domain::{OrderId, PaymentId, PaymentStatus};
use crate::store::PaymentView;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest a caller may wait for an outcome.
pub const WAIT_S_MAX: u64 = 180;

/// The outcome names of CONTRACT.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderResult {
    Pending,
    Paid,
    Cancelled,
    CancelPending,
    /// The refund's outcome is unknown and is being checked (a person or a settlement line).
    CancelUnknown,
    CancelFailed,
    RollbackPending,
    RollbackUnknown,
    RollbackRefunded,
    RollbackFailed,
    /// Nobody paid the order, and the PG had nothing when asked once more.
    Expired,
    SystemError,
}

impl OrderResult {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderResult::Pending => "PENDING",
            OrderResult::Paid => "PAID",
            OrderResult::Cancelled => "CANCELLED",
            OrderResult::CancelPending => "CANCEL_PENDING",
            OrderResult::CancelUnknown => "CANCEL_UNKNOWN",
            OrderResult::CancelFailed => "CANCEL_FAILED",
            OrderResult::RollbackPending => "ROLLBACK_PENDING",
            OrderResult::RollbackUnknown => "ROLLBACK_UNKNOWN",
            OrderResult::RollbackRefunded => "ROLLBACK_REFUNDED",
            OrderResult::RollbackFailed => "ROLLBACK_FAILED",
            OrderResult::Expired => "EXPIRED",
            OrderResult::SystemError => "SYSTEM_ERROR",
        }
    }

    /// True when nothing will change it without a new request from someone.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            OrderResult::Pending | OrderResult::CancelPending | OrderResult::RollbackPending
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderOutcome {
    pub order_id: OrderId,
    pub result: OrderResult,
    pub payment_id: Option<PaymentId>,
}

fn of_payment(view: &PaymentView) -> OrderResult {
    match view.payment.status() {
        PaymentStatus::Paid | PaymentStatus::PartiallyCancelled => OrderResult::Paid,
        PaymentStatus::CancelRequested => OrderResult::CancelPending,
        PaymentStatus::Cancelled => OrderResult::Cancelled,
        PaymentStatus::CancelUnknown => OrderResult::CancelUnknown,
        PaymentStatus::CancelFailed => OrderResult::CancelFailed,
        PaymentStatus::RollbackPending => OrderResult::RollbackPending,
        PaymentStatus::RollbackUnknown => OrderResult::RollbackUnknown,
        PaymentStatus::RollbackRefunded => OrderResult::RollbackRefunded,
        PaymentStatus::RollbackFailed => OrderResult::RollbackFailed,
    }
}

/// The order's outcome now: its accepted payment if it has one, else its latest refused one.
pub async fn outcome(kassa: &Kassa, order_id: &OrderId) -> Result<OrderOutcome, FlowError> {
    let order = kassa
        .store
        .order(order_id)
        .await?
        .ok_or(FlowError::NotFound { what: "order" })?;
    let payments = kassa.store.payments_of_order(order_id).await?;
    let chosen = match order.paid_payment_id() {
        Some(paid) => payments.iter().find(|view| view.payment.id == paid),
        None => payments.last(),
    };
    Ok(match chosen {
        Some(view) => OrderOutcome {
            order_id: order_id.clone(),
            result: of_payment(view),
            payment_id: Some(view.payment.id),
        },
        None if order.paid_payment_id().is_some() => OrderOutcome {
            order_id: order_id.clone(),
            result: OrderResult::SystemError,
            payment_id: order.paid_payment_id(),
        },
        None if order.status() == crate::domain::OrderStatus::Expired => OrderOutcome {
            order_id: order_id.clone(),
            result: OrderResult::Expired,
            payment_id: None,
        },
        None => OrderOutcome {
            order_id: order_id.clone(),
            result: OrderResult::Pending,
            payment_id: None,
        },
    })
}

/// Waits up to `wait` for the outcome to be final, waking on every commit, and answers what it
/// is then. An unknown order answers at once.
pub async fn wait_for_outcome(
    kassa: &Kassa,
    order_id: &OrderId,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<OrderOutcome, FlowError> {
    let wait = wait.min(Duration::from_secs(WAIT_S_MAX));
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = kassa.store.changes();
    loop {
        changes.borrow_and_update();
        let current = outcome(kassa, order_id).await?;
        if current.result.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(current);
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(current);
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
            () = shutdown.cancelled() => return Ok(current),
        }
    }
}

//! Orders: what a buyer is asked to pay. An order is paid at most once.
//!
//! Invariant: an order moves READY → PAID exactly once, through `admit`; every other PG payment
//! for it is refused and rolled back.

use super::{Amount, BuyerId, OrderId, PartnerId, PaymentId, Provider};
use chrono::{DateTime, Utc};

/// Longest order name shown to the buyer and sent to the PG.
pub const ORDER_NAME_CHARS_MAX: usize = 100;
/// Longest buyer e-mail kept with an order.
pub const BUYER_EMAIL_CHARS_MAX: usize = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Ready,
    Paid,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Ready => "READY",
            OrderStatus::Paid => "PAID",
        }
    }
}

/// What an order is made of, before it is stored. Two requests for the same order id are the
/// same request when their drafts are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDraft {
    pub order_id: OrderId,
    pub amount: Amount,
    pub name: String,
    pub partner_id: Option<PartnerId>,
    pub buyer_email: Option<String>,
    pub provider: Provider,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub draft: OrderDraft,
    pub buyer_id: Option<BuyerId>,
    pub created_at: DateTime<Utc>,
    status: OrderStatus,
    paid_payment_id: Option<PaymentId>,
}

impl Order {
    pub fn new(draft: OrderDraft, buyer_id: Option<BuyerId>, created_at: DateTime<Utc>) -> Order {
        Order {
            draft,
            buyer_id,
            created_at,
            status: OrderStatus::Ready,
            paid_payment_id: None,
        }
    }

    /// Rebuilds a stored order; a paid order always names its payment.
    pub fn restore(
        draft: OrderDraft,
        buyer_id: Option<BuyerId>,
        created_at: DateTime<Utc>,
        paid_payment_id: Option<PaymentId>,
    ) -> Order {
        let status = if paid_payment_id.is_some() {
            OrderStatus::Paid
        } else {
            OrderStatus::Ready
        };
        Order {
            draft,
            buyer_id,
            created_at,
            status,
            paid_payment_id,
        }
    }

    pub fn id(&self) -> &OrderId {
        &self.draft.order_id
    }

    pub fn status(&self) -> OrderStatus {
        self.status
    }

    pub fn paid_payment_id(&self) -> Option<PaymentId> {
        self.paid_payment_id
    }

    /// Marks the order paid by `payment`. Only `admit` decides that this is allowed.
    pub fn mark_paid(&mut self, payment: PaymentId) {
        debug_assert_eq!(self.status, OrderStatus::Ready);
        self.status = OrderStatus::Paid;
        self.paid_payment_id = Some(payment);
    }
}

/// What to do with a payment the PG reports as paid for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The order was waiting and the amount is the order's own: the order is now paid.
    Accept,
    /// The PG took a different amount than the order asks (tampering): give it back.
    RollbackAmountMismatch { expected: Amount, actual: Amount },
    /// The order is already paid by another payment: give this one back.
    RollbackAlreadyPaid { paid_by: PaymentId },
}

/// Decides whether a paid PG payment of `pg_amount` pays `order`.
pub fn admit(order: &Order, pg_amount: Amount) -> Admission {
    if let Some(paid_by) = order.paid_payment_id {
        return Admission::RollbackAlreadyPaid { paid_by };
    }
    if pg_amount != order.draft.amount {
        return Admission::RollbackAmountMismatch {
            expected: order.draft.amount,
            actual: pg_amount,
        };
    }
    Admission::Accept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(amount: i64) -> Order {
        Order::new(
            OrderDraft {
                order_id: OrderId::parse("order-1").unwrap(),
                amount: Amount::positive(amount).unwrap(),
                name: "Beans".into(),
                partner_id: None,
                buyer_email: None,
                provider: Provider::PortOne,
            },
            None,
            DateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn an_order_is_paid_once_with_its_own_amount() {
        let mut ready = order(15_000);
        assert_eq!(
            admit(&ready, Amount::positive(15_000).unwrap()),
            Admission::Accept
        );
        assert_eq!(
            admit(&ready, Amount::positive(100).unwrap()),
            Admission::RollbackAmountMismatch {
                expected: Amount::positive(15_000).unwrap(),
                actual: Amount::positive(100).unwrap()
            }
        );
        ready.mark_paid(PaymentId::from_u128(9));
        assert_eq!(ready.status(), OrderStatus::Paid);
        assert_eq!(
            admit(&ready, Amount::positive(15_000).unwrap()),
            Admission::RollbackAlreadyPaid {
                paid_by: PaymentId::from_u128(9)
            }
        );
    }
}

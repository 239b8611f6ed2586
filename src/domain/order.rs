//! Orders: what a buyer is asked to pay. An order is paid at most once.
//!
//! Invariant: an order moves READY → PAID exactly once, through `admit`; every other PG payment
//! for it is refused and rolled back. A READY order nobody paid becomes EXPIRED after the PG was
//! asked once more; a payment the PG still reports for it later pays it like a READY one (the
//! buyer's money was taken).

use super::{Amount, BuyerId, DomainError, OrderId, PartnerId, PaymentId, Provider};
use chrono::{DateTime, Utc};

/// Longest order name shown to the buyer and sent to the PG.
pub const ORDER_NAME_CHARS_MAX: usize = 100;
/// Longest buyer e-mail kept with an order.
pub const BUYER_EMAIL_CHARS_MAX: usize = 254;

/// Toss `orderId`: 6 to 64 characters of letters, digits, `-` and `_` (Toss refuses others).
pub const TOSS_ORDER_ID_CHARS_MIN: usize = 6;
pub const TOSS_ORDER_ID_CHARS_MAX: usize = 64;
/// PortOne V1 `merchant_uid`: 40 characters is a safe documented limit. PortOne passes the id on
/// to the PG behind it, and those PGs cut long ids at different lengths.
pub const PORTONE_ORDER_ID_CHARS_MAX: usize = 40;
/// Payple `PCD_PAY_OID`: up to 50 characters of letters, digits, `-` and `_`.
pub const PAYPLE_ORDER_ID_CHARS_MAX: usize = 50;

/// What one PG takes as an order id, within what `OrderId` already holds (letters, digits, `-`
/// and `_`): only the length differs from PG to PG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderIdRule {
    pub chars_min: usize,
    pub chars_max: usize,
    /// The rule in words for the error; it names the PG and the limit.
    pub text: &'static str,
}

impl OrderIdRule {
    /// The rule of the PG an order is paid through. The texts repeat the constants' numbers,
    /// which a test holds them to.
    pub fn of(provider: Provider) -> OrderIdRule {
        match provider {
            Provider::Toss => OrderIdRule {
                chars_min: TOSS_ORDER_ID_CHARS_MIN,
                chars_max: TOSS_ORDER_ID_CHARS_MAX,
                text: "Toss order ids are 6 to 64 characters of letters, digits, - and _",
            },
            Provider::PortOne => OrderIdRule {
                chars_min: 1,
                chars_max: PORTONE_ORDER_ID_CHARS_MAX,
                text: "PortOne order ids (merchant_uid) are 1 to 40 characters of letters, digits, - and _",
            },
            Provider::Payple => OrderIdRule {
                chars_min: 1,
                chars_max: PAYPLE_ORDER_ID_CHARS_MAX,
                text: "Payple order ids (PCD_PAY_OID) are 1 to 50 characters of letters, digits, - and _",
            },
        }
    }

    /// Checks `order_id` against this PG's limits.
    pub fn check(self, order_id: &OrderId) -> Result<(), DomainError> {
        // An `OrderId` is ASCII, so its bytes are its characters.
        let length = order_id.as_str().len();
        if (self.chars_min..=self.chars_max).contains(&length) {
            Ok(())
        } else {
            Err(DomainError::InvalidId {
                what: "order id",
                why: self.text,
            })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Ready,
    Paid,
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Ready => "READY",
            OrderStatus::Paid => "PAID",
            OrderStatus::Expired => "EXPIRED",
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
        expired: bool,
    ) -> Order {
        let status = match (paid_payment_id, expired) {
            (Some(_), _) => OrderStatus::Paid,
            (None, true) => OrderStatus::Expired,
            (None, false) => OrderStatus::Ready,
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
        debug_assert_ne!(self.status, OrderStatus::Paid);
        self.status = OrderStatus::Paid;
        self.paid_payment_id = Some(payment);
    }

    /// Marks a READY order EXPIRED: nobody paid it, and the PG had nothing when asked once more.
    /// Answers false (and changes nothing) for an order that is not READY.
    pub fn expire(&mut self) -> bool {
        if self.status != OrderStatus::Ready {
            return false;
        }
        self.status = OrderStatus::Expired;
        true
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
    fn each_pg_takes_order_ids_of_its_own_length() {
        let id = |raw: &str| OrderId::parse(raw).unwrap();
        let short = id("1042");
        assert!(OrderIdRule::of(Provider::PortOne).check(&short).is_ok());
        assert!(OrderIdRule::of(Provider::Payple).check(&short).is_ok());
        let error = OrderIdRule::of(Provider::Toss).check(&short).unwrap_err();
        assert_eq!(
            error.to_string(),
            "order id is invalid: Toss order ids are 6 to 64 characters of letters, digits, - and _"
        );
        assert!(OrderIdRule::of(Provider::Toss).check(&id("104200")).is_ok());
        let long = id(&"a".repeat(41));
        assert!(OrderIdRule::of(Provider::PortOne).check(&long).is_err());
        assert!(OrderIdRule::of(Provider::Payple).check(&long).is_ok());
        assert!(
            OrderIdRule::of(Provider::Payple)
                .check(&id(&"a".repeat(51)))
                .is_err()
        );
        assert!(
            OrderIdRule::of(Provider::Toss)
                .check(&id(&"a".repeat(64)))
                .is_ok()
        );
        let generated = OrderId::generate(uuid::Uuid::from_u128(7));
        for provider in Provider::ALL {
            let rule = OrderIdRule::of(provider);
            assert!(rule.check(&generated).is_ok(), "{}", provider.as_str());
            let limits = format!("{} to {} characters", rule.chars_min, rule.chars_max);
            assert!(rule.text.contains(&limits), "{}", rule.text);
        }
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

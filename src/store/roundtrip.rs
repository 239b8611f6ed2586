//! Property tests of the codec: every stored value of the main records decodes to what was
//! encoded, whatever its fields (within the domain's rules).

use super::orders::{decode_order, encode_order};
use super::payments::{StoredPayment, decode_payment, encode_payment};
use crate::domain::money::AMOUNT_WON_MAX;
use crate::domain::{
    Amount, BuyerId, CancelId, Order, OrderDraft, OrderId, PartnerId, Payment, PaymentId,
    PaymentStatus, PgTid, Provider,
};
use chrono::DateTime;
use proptest::prelude::*;

fn order_id() -> impl Strategy<Value = OrderId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|raw| OrderId::parse(&raw).expect("the pattern is an order id"))
}

fn pg_tid() -> impl Strategy<Value = PgTid> {
    "[A-Za-z0-9_-]{1,20}(\\.[A-Za-z0-9_-]{1,20}){0,2}"
        .prop_map(|raw| PgTid::parse(&raw).expect("the pattern is a PG id"))
}

fn provider() -> impl Strategy<Value = Provider> {
    prop::sample::select(Provider::ALL.to_vec())
}

fn time() -> impl Strategy<Value = DateTime<chrono::Utc>> {
    (0i64..4_102_444_800_000).prop_map(|ms| DateTime::from_timestamp_millis(ms).expect("in range"))
}

fn partner() -> impl Strategy<Value = Option<PartnerId>> {
    prop::option::of(
        "p-[a-z0-9]{1,20}".prop_map(|raw| PartnerId::parse(&raw).expect("a partner id")),
    )
}

prop_compose! {
    fn order()(
        order_id in order_id(),
        amount in 1i64..=AMOUNT_WON_MAX,
        name in "\\PC{1,100}",
        partner_id in partner(),
        buyer_email in prop::option::of("[a-z]{1,10}@[a-z]{1,10}\\.kr"),
        provider in provider(),
        buyer in prop::option::of(any::<u128>()),
        created_at in time(),
        paid in prop::option::of(any::<u128>()),
        expired in any::<bool>(),
    ) -> Order {
        let draft = OrderDraft {
            order_id,
            amount: Amount::positive(amount).expect("positive"),
            name,
            partner_id,
            buyer_email,
            provider,
        };
        Order::restore(
            draft,
            buyer.map(BuyerId::from_u128),
            created_at,
            paid.map(PaymentId::from_u128),
            expired && paid.is_none(),
        )
    }
}

prop_compose! {
    fn payment()(
        id in any::<u128>(),
        order_id in order_id(),
        provider in provider(),
        pg_tid in pg_tid(),
        amount in 1i64..=AMOUNT_WON_MAX,
        cancelled_permille in 0i64..=1_000,
        reserved_permille in 0i64..=1_000,
        paid_at in time(),
        status in prop::sample::select(PaymentStatus::ALL.to_vec()),
        partner_id in partner(),
        buyer in prop::option::of(any::<u128>()),
        lease in prop::option::of((any::<u128>(), any::<i64>())),
    ) -> StoredPayment {
        let cancelled = amount / 1_000 * cancelled_permille;
        let reserved = (amount - cancelled) / 1_000 * reserved_permille;
        let mut payment = Payment::restore(
            PaymentId::from_u128(id),
            order_id,
            provider,
            pg_tid,
            Amount::positive(amount).expect("positive"),
            paid_at,
            Amount::non_negative(cancelled).expect("in range"),
            Amount::non_negative(reserved).expect("in range"),
            status,
        )
        .expect("held amounts fit the payment");
        payment.partner_id = partner_id;
        payment.buyer_id = buyer.map(BuyerId::from_u128);
        StoredPayment {
            payment,
            lease: lease.map(|(cancel, until)| (CancelId::from_u128(cancel), until)),
        }
    }
}

proptest! {
    #[test]
    fn every_order_decodes_to_what_was_encoded(order in order()) {
        let bytes = encode_order(&order).unwrap();
        prop_assert_eq!(decode_order(&bytes).unwrap(), order);
    }

    #[test]
    fn every_payment_decodes_to_what_was_encoded(stored in payment()) {
        let bytes = encode_payment(&stored).unwrap();
        let decoded = decode_payment(&bytes).unwrap();
        prop_assert_eq!(&decoded.payment, &stored.payment);
        prop_assert_eq!(decoded.lease, stored.lease);
    }

    #[test]
    fn a_record_cut_short_or_of_another_version_is_refused_not_misread(
        stored in payment(),
        cut in 0usize..64,
        version in 2u8..=255,
    ) {
        let bytes = encode_payment(&stored).unwrap();
        let short = &bytes[..bytes.len().saturating_sub(cut + 1)];
        prop_assert!(decode_payment(short).is_err());
        let mut other = bytes.clone();
        other[0] = version;
        prop_assert!(decode_payment(&other).is_err());
    }
}

//! Identifiers. Generated ids are UUIDv7, so they sort by creation time and make good redb keys
//! for scans by day. Ids that come from outside (order ids, PG transaction ids) are checked here.
//!
//! Invariant: an id from outside holds only characters that are safe in a URL path segment and
//! can never be a path step (`..`, `/`, `\`, `%`), because kassa puts order and PG ids into the
//! paths of its authenticated PG requests and of its own pages.

use super::DomainError;
use uuid::Uuid;

/// Longest order id kassa takes: the most any PG allows (Toss, 64). The order's own PG may take
/// fewer; `order::OrderIdRule` checks that when the order is created.
pub const ORDER_ID_CHARS_MAX: usize = 64;
/// What an order id may be, in words for the error; the numbers are `ORDER_ID_CHARS_MAX`'s.
const ORDER_ID_RULE: &str = "it must be 1 to 64 characters of letters, digits, - and _";
/// Longest PG transaction id or key kassa will store (Toss allows payment keys of 200 characters).
pub const PG_TID_CHARS_MAX: usize = 200;
/// What a PG id may be, in words for the error; the number is `PG_TID_CHARS_MAX`'s.
const PG_TID_RULE: &str =
    "it must be 1 to 200 characters of letters, digits, _, - and ., with no .. and no leading .";
/// Longest partner id.
pub const PARTNER_ID_CHARS_MAX: usize = 64;
/// What a partner id may be, in words for the error; the number is `PARTNER_ID_CHARS_MAX`'s.
const PARTNER_ID_RULE: &str = "it must be 1 to 64 characters of letters, digits, - and _";

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A ", $what, " id: a UUIDv7.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn from_u128(key: u128) -> Self {
                Self(Uuid::from_u128(key))
            }

            pub fn as_u128(self) -> u128 {
                self.0.as_u128()
            }

            pub fn parse(raw: &str) -> Result<Self, DomainError> {
                Uuid::try_parse(raw)
                    .map(Self)
                    .map_err(|_| DomainError::InvalidId {
                        what: $what,
                        why: "it is not a UUID",
                    })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(PaymentId, "payment");
uuid_id!(CancelId, "cancel");
uuid_id!(BuyerId, "buyer");

/// Checks that `raw` is `chars_min` to `chars_max` characters that are all `allowed`; the error
/// says `rule`, which states both, whichever part failed.
fn check_token(
    what: &'static str,
    raw: &str,
    chars_min: usize,
    chars_max: usize,
    rule: &'static str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), DomainError> {
    let length = raw.chars().count();
    if length < chars_min || length > chars_max || !raw.chars().all(allowed) {
        return Err(DomainError::InvalidId { what, why: rule });
    }
    Ok(())
}

/// An order id as the merchant and the PGs know it (PortOne `merchant_uid`, Toss `orderId`,
/// Payple `PCD_PAY_OID`): 1 to 64 of `A-Z a-z 0-9 - _`, what at least one PG takes, so a
/// merchant's own short order number (`1042`) is an order id. Whether the order's own PG takes
/// it is checked when the order is created (`order::OrderIdRule`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(raw: &str) -> Result<OrderId, DomainError> {
        check_token("order id", raw, 1, ORDER_ID_CHARS_MAX, ORDER_ID_RULE, |c| {
            c.is_ascii_alphanumeric() || c == '-' || c == '_'
        })?;
        Ok(OrderId(raw.to_owned()))
    }

    /// A fresh order id from a UUIDv7, so generated ids sort by time. It is 36 characters, which
    /// every PG takes.
    pub fn generate(uuid: Uuid) -> OrderId {
        OrderId(format!("ord_{}", uuid.simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The PG's own id of a payment (PortOne `imp_uid`, Toss `paymentKey`, kassa's Payple
/// reference `{type}.{yyyyMMdd}.{order id}`). It comes from callers nobody authenticated and
/// goes into the paths of kassa's authenticated PG requests, so it is only what PG ids are made
/// of: ASCII letters, digits, `_`, `-` and `.` (between the Payple reference's parts), never
/// `..` and never a leading `.`, so that it cannot step to another path of the PG's host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTid(String);

impl PgTid {
    pub fn parse(raw: &str) -> Result<PgTid, DomainError> {
        let what = "PG payment id";
        check_token(what, raw, 1, PG_TID_CHARS_MAX, PG_TID_RULE, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
        })?;
        if raw.starts_with('.') || raw.contains("..") {
            return Err(DomainError::InvalidId {
                what,
                why: PG_TID_RULE,
            });
        }
        Ok(PgTid(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PgTid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A partner (a seller whose products the merchant sells and settles with daily).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartnerId(String);

impl PartnerId {
    pub fn parse(raw: &str) -> Result<PartnerId, DomainError> {
        check_token(
            "partner id",
            raw,
            1,
            PARTNER_ID_CHARS_MAX,
            PARTNER_ID_RULE,
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
        )?;
        Ok(PartnerId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PartnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_accept_what_some_pg_accepts_and_nothing_else() {
        assert!(OrderId::parse("order-2026_11").is_ok());
        assert!(OrderId::parse("1042").is_ok());
        assert!(OrderId::parse(&"a".repeat(ORDER_ID_CHARS_MAX)).is_ok());
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse(&"a".repeat(ORDER_ID_CHARS_MAX + 1)).is_err());
        assert!(OrderId::parse("has space").is_err());
        assert!(OrderId::parse("주문번호123").is_err());
        assert!(OrderId::parse("../../etc").is_err());
        assert!(OrderId::parse("a.b").is_err());
        let generated = OrderId::generate(Uuid::from_u128(7));
        assert_eq!(OrderId::parse(generated.as_str()), Ok(generated));
    }

    #[test]
    fn an_order_id_error_says_what_is_allowed() {
        let error = OrderId::parse(&"a".repeat(ORDER_ID_CHARS_MAX + 1)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("1 to {ORDER_ID_CHARS_MAX} characters"))
        );
        assert!(
            error.to_string().contains("letters, digits, - and _"),
            "{error}"
        );
    }

    #[test]
    fn pg_tids_take_the_ids_pgs_give_and_kassas_payple_reference() {
        assert!(PgTid::parse("imp_123456789012").is_ok());
        assert!(PgTid::parse("tgen_20261123ABCdef-01").is_ok());
        assert!(PgTid::parse("card.20261123.1042").is_ok());
        assert!(PgTid::parse("card.20261123.ord_0190abc").is_ok());
        assert!(PgTid::parse(&"x".repeat(PG_TID_CHARS_MAX)).is_ok());
    }

    #[test]
    fn pg_tids_refuse_anything_that_could_step_to_another_path() {
        for raw in [
            "..",
            "a..b",
            "../payments",
            ".hidden",
            ".",
            "a\\b",
            "..\\..\\admin",
            "a/b",
            "/",
            "%2e%2e",
            "a%2Fb",
            "has space",
            " imp_1",
            "imp_1 ",
            "a?b=c",
            "a#b",
            "imp_1\n",
            "주문",
            "",
        ] {
            let error = PgTid::parse(raw).expect_err(raw);
            assert!(
                error.to_string().contains("letters, digits, _, - and ."),
                "{raw:?}: {error}"
            );
        }
        assert!(PgTid::parse(&"x".repeat(PG_TID_CHARS_MAX + 1)).is_err());
        assert!(PG_TID_RULE.contains(&format!("1 to {PG_TID_CHARS_MAX} characters")));
        assert!(PARTNER_ID_RULE.contains(&format!("1 to {PARTNER_ID_CHARS_MAX} characters")));
    }

    #[test]
    fn uuid_ids_round_trip_through_text_and_keys() {
        let id = PaymentId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        assert_eq!(PaymentId::parse(&id.to_string()), Ok(id));
        assert_eq!(PaymentId::from_u128(id.as_u128()), id);
        assert!(PaymentId::parse("not-a-uuid").is_err());
    }
}

//! Identifiers. Generated ids are UUIDv7, so they sort by creation time and make good redb keys
//! for scans by day. Ids that come from outside (order ids, PG transaction ids) are checked here.

use super::DomainError;
use uuid::Uuid;

/// Longest order id: Toss allows 64 characters, and one order id must work with every PG.
pub const ORDER_ID_CHARS_MAX: usize = 64;
/// Shortest order id: Toss refuses fewer than 6 characters.
pub const ORDER_ID_CHARS_MIN: usize = 6;
/// Longest PG transaction id or key kassa will store (Toss payment keys are about 50 characters).
pub const PG_TID_CHARS_MAX: usize = 200;
/// Longest partner id.
pub const PARTNER_ID_CHARS_MAX: usize = 64;

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

fn check_token(
    what: &'static str,
    raw: &str,
    chars_min: usize,
    chars_max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), DomainError> {
    let length = raw.chars().count();
    if length < chars_min {
        return Err(DomainError::InvalidId {
            what,
            why: "it is too short",
        });
    }
    if length > chars_max {
        return Err(DomainError::InvalidId {
            what,
            why: "it is too long",
        });
    }
    if !raw.chars().all(allowed) {
        return Err(DomainError::InvalidId {
            what,
            why: "it contains characters that are not allowed",
        });
    }
    Ok(())
}

/// An order id as the merchant and every PG know it (PortOne `merchant_uid`, Toss `orderId`,
/// Payple `PCD_PAY_OID`): 6 to 64 of `A-Z a-z 0-9 - _`, the set all three accept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(raw: &str) -> Result<OrderId, DomainError> {
        check_token(
            "order id",
            raw,
            ORDER_ID_CHARS_MIN,
            ORDER_ID_CHARS_MAX,
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
        )?;
        Ok(OrderId(raw.to_owned()))
    }

    /// A fresh order id from a UUIDv7, so generated ids sort by time.
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

/// The PG's own id of a payment (PortOne `imp_uid`, Toss `paymentKey`): printable ASCII without
/// spaces or `/`, so it can sit in a URL path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTid(String);

impl PgTid {
    pub fn parse(raw: &str) -> Result<PgTid, DomainError> {
        check_token("PG payment id", raw, 1, PG_TID_CHARS_MAX, |c| {
            c.is_ascii_graphic() && c != '/' && c != '?' && c != '#' && c != '%'
        })?;
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
        check_token("partner id", raw, 1, PARTNER_ID_CHARS_MAX, |c| {
            c.is_ascii_alphanumeric() || c == '-' || c == '_'
        })?;
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
    fn order_ids_accept_what_every_pg_accepts_and_nothing_else() {
        assert!(OrderId::parse("order-2026_11").is_ok());
        assert!(OrderId::parse("short").is_err());
        assert!(OrderId::parse(&"a".repeat(65)).is_err());
        assert!(OrderId::parse("has space").is_err());
        assert!(OrderId::parse("주문번호123").is_err());
        assert!(OrderId::parse("../../etc").is_err());
        let generated = OrderId::generate(Uuid::from_u128(7));
        assert_eq!(OrderId::parse(generated.as_str()), Ok(generated));
    }

    #[test]
    fn pg_tids_refuse_path_characters() {
        assert!(PgTid::parse("imp_123456789012").is_ok());
        assert!(PgTid::parse("a/b").is_err());
        assert!(PgTid::parse("").is_err());
        assert!(PgTid::parse(&"x".repeat(PG_TID_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn uuid_ids_round_trip_through_text_and_keys() {
        let id = PaymentId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        assert_eq!(PaymentId::parse(&id.to_string()), Ok(id));
        assert_eq!(PaymentId::from_u128(id.as_u128()), id);
        assert!(PaymentId::parse("not-a-uuid").is_err());
    }
}

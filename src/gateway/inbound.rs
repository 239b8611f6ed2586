//! What the PGs send kassa unasked (webhooks, Payple's result post, a checkout window's answer),
//! read from bytes into a typed hint. `http` hands the bytes over and gets the hint back; it
//! knows no PG field names. Each PG's own reader lives in `gateway/<pg>/inbound.rs`; this file
//! holds what they share and names them all.
//!
//! Invariant: a hint only names a payment. None of these messages is signed, so kassa believes
//! nothing in them: the payment they name is asked of the PG before anything is stored.

use crate::domain::{DomainError, OrderId, PgTid};
use serde_json::Value;
use std::collections::BTreeMap;

pub use super::payple::inbound::{PaypleResult, payple_notice, payple_result};
pub use super::portone::inbound::{portone_checkout_end, portone_webhook};
pub use super::toss::inbound::{TossEvent, toss_checkout_end, toss_webhook};

/// Most fields of a form or JSON object read from one message.
pub const FIELDS_MAX: usize = 200;
/// Most characters of the status a message claims (it is only logged).
const CLAIMED_STATUS_CHARS_MAX: usize = 40;

/// A payment an inbound message names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub pg_tid: PgTid,
    /// The order the message claims the payment is for.
    pub order_id: Option<OrderId>,
    /// The status the message claims (logged, never believed).
    pub claimed_status: String,
}

/// Why an inbound message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// Not JSON or not a form, or not of the message's shape.
    #[error("{0}")]
    Malformed(String),
    /// The message names no order.
    #[error("the message names no order")]
    NoOrder,
    /// A field is there but not valid.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

pub(crate) fn malformed(error: impl std::fmt::Display) -> InboundError {
    InboundError::Malformed(error.to_string())
}

pub(crate) fn claimed(status: Option<&str>) -> String {
    status
        .unwrap_or_default()
        .chars()
        .take(CLAIMED_STATUS_CHARS_MAX)
        .collect()
}

/// The fields of a form-encoded body (the last of a repeated name wins), at most `FIELDS_MAX`.
pub fn form_fields(body: &[u8]) -> Result<BTreeMap<String, String>, InboundError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(malformed)?;
    Ok(pairs.into_iter().take(FIELDS_MAX).collect())
}

/// The fields of a JSON object, each value as text (numbers as they are written).
pub(crate) fn json_fields(body: &[u8]) -> Result<BTreeMap<String, String>, InboundError> {
    let value: Value = serde_json::from_slice(body).map_err(malformed)?;
    let object = value
        .as_object()
        .ok_or_else(|| InboundError::Malformed("the body is not a JSON object".into()))?;
    Ok(object
        .iter()
        .take(FIELDS_MAX)
        .map(|(key, value)| {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            (key.clone(), text)
        })
        .collect())
}

/// Why a PG's checkout window ended without a payment, as far as the window says. Only these
/// three reach the buyer's page: the PG's own message is never echoed from the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutEnd {
    /// The buyer closed the window or pressed cancel.
    Cancelled,
    /// The card company or the PG refused the card (limit, a wrong card, a block).
    Declined,
    /// Anything else: the window failed.
    Failed,
}

impl CheckoutEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutEnd::Cancelled => "cancelled",
            CheckoutEnd::Declined => "declined",
            CheckoutEnd::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> CheckoutEnd {
        match raw {
            "cancelled" => CheckoutEnd::Cancelled,
            "declined" => CheckoutEnd::Declined,
            _ => CheckoutEnd::Failed,
        }
    }
}

pub(crate) fn by_message(message: &str) -> Option<CheckoutEnd> {
    if message.contains("취소") || message.to_ascii_lowercase().contains("cancel") {
        Some(CheckoutEnd::Cancelled)
    } else if [
        "거절",
        "한도",
        "거래정지",
        "분실",
        "도난",
        "유효기간",
        "잔액",
    ]
    .iter()
    .any(|word| message.contains(word))
        || message.to_ascii_lowercase().contains("declin")
    {
        Some(CheckoutEnd::Declined)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_that_ended_says_whether_the_buyer_cancelled_or_the_card_was_refused() {
        assert_eq!(
            toss_checkout_end("PAY_PROCESS_CANCELED"),
            CheckoutEnd::Cancelled
        );
        assert_eq!(
            toss_checkout_end("REJECT_CARD_COMPANY"),
            CheckoutEnd::Declined
        );
        assert_eq!(
            toss_checkout_end("EXCEED_MAX_DAILY_PAYMENT_COUNT"),
            CheckoutEnd::Declined
        );
        assert_eq!(
            toss_checkout_end("PAY_PROCESS_ABORTED"),
            CheckoutEnd::Failed
        );
        assert_eq!(
            portone_checkout_end("구매자가 결제를 취소했습니다."),
            CheckoutEnd::Cancelled
        );
        assert_eq!(
            portone_checkout_end("[카드사 거절] 한도가 초과되었습니다."),
            CheckoutEnd::Declined
        );
        assert_eq!(portone_checkout_end("PG사 통신 오류"), CheckoutEnd::Failed);
        for end in [
            CheckoutEnd::Cancelled,
            CheckoutEnd::Declined,
            CheckoutEnd::Failed,
        ] {
            assert_eq!(CheckoutEnd::parse(end.as_str()), end);
        }
        assert_eq!(CheckoutEnd::parse("<script>"), CheckoutEnd::Failed);
    }

    #[test]
    fn each_pgs_message_names_its_payment_and_nothing_more() {
        let portone = portone_webhook(
            br#"{"imp_uid":"imp_123456789012","merchant_uid":"order-1","status":"paid"}"#,
            true,
        )
        .unwrap();
        assert_eq!(portone.pg_tid.as_str(), "imp_123456789012");
        assert_eq!(portone.order_id.unwrap().as_str(), "order-1");
        let form = portone_webhook(b"imp_uid=imp_123456789012&status=paid", false).unwrap();
        assert_eq!(form.order_id, None);
        assert!(matches!(
            toss_webhook(br#"{"eventType":"DEPOSIT_CALLBACK","data":{}}"#).unwrap(),
            TossEvent::Ignored(event) if event == "DEPOSIT_CALLBACK"
        ));
        let notice = payple_notice(
            b"PCD_PAY_RST=success&PCD_PAY_OID=order-2&PCD_PAY_TYPE=card&PCD_PAY_TIME=20261123120000",
            false,
        )
        .unwrap();
        assert_eq!(notice.pg_tid.as_str(), "card.20261123.order-2");
        assert_eq!(
            payple_result(b"PCD_PAY_RST=error&PCD_PAY_OID=order-3").unwrap(),
            PaypleResult::Failed(OrderId::parse("order-3").unwrap(), CheckoutEnd::Failed)
        );
        assert_eq!(
            payple_result(
                "PCD_PAY_RST=error&PCD_PAY_OID=order-3&PCD_PAY_MSG=카드사 승인 거절".as_bytes()
            )
            .unwrap(),
            PaypleResult::Failed(OrderId::parse("order-3").unwrap(), CheckoutEnd::Declined)
        );
        assert_eq!(
            payple_result(b"PCD_PAY_RST=close&PCD_PAY_OID=order-3").unwrap(),
            PaypleResult::Failed(OrderId::parse("order-3").unwrap(), CheckoutEnd::Cancelled)
        );
        assert_eq!(
            payple_result(b"PCD_PAY_RST=success&PCD_PAY_TYPE=card"),
            Err(InboundError::NoOrder)
        );
        assert!(matches!(
            payple_notice(
                br#"{"PCD_PAY_OID":"order-2","PCD_PAY_TYPE":"card","PCD_PAY_TIME":2026}"#,
                true
            ),
            Err(InboundError::Invalid(_))
        ));
        assert!(matches!(
            portone_webhook(b"[", true),
            Err(InboundError::Malformed(_))
        ));
    }
}

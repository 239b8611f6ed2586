//! What the PGs send kassa unasked (webhooks, Payple's result post), read from bytes into a
//! typed hint. `http` hands the bytes over and gets the hint back; it knows no PG field names.
//!
//! Invariant: a hint only names a payment. None of these messages is signed, so kassa believes
//! nothing in them: the payment they name is asked of the PG before anything is stored.

use crate::domain::{DomainError, OrderId, PgTid};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

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

fn malformed(error: impl std::fmt::Display) -> InboundError {
    InboundError::Malformed(error.to_string())
}

fn claimed(status: Option<&str>) -> String {
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
fn json_fields(body: &[u8]) -> Result<BTreeMap<String, String>, InboundError> {
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

#[derive(Debug, Deserialize)]
struct PortOneWebhook {
    imp_uid: String,
    #[serde(default)]
    merchant_uid: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// PortOne V1's webhook: `{"imp_uid", "merchant_uid", "status"}`, as JSON or as a form.
pub fn portone_webhook(body: &[u8], is_json: bool) -> Result<Hint, InboundError> {
    let wire: PortOneWebhook = if is_json {
        serde_json::from_slice(body).map_err(malformed)?
    } else {
        serde_urlencoded::from_bytes(body).map_err(malformed)?
    };
    Ok(Hint {
        pg_tid: PgTid::parse(&wire.imp_uid)?,
        order_id: wire
            .merchant_uid
            .as_deref()
            .and_then(|raw| OrderId::parse(raw).ok()),
        claimed_status: claimed(wire.status.as_deref()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TossWebhook {
    /// A virtual-account `DEPOSIT_CALLBACK` is flat, with no `eventType`.
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    data: Option<TossWebhookData>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TossWebhookData {
    #[serde(default)]
    payment_key: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// What a Toss webhook is: a payment to re-check (`PAYMENT_STATUS_CHANGED`), or an event
/// kassa does not act on (named, for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TossEvent {
    PaymentChanged(Hint),
    Ignored(String),
}

/// Toss's webhook body: `{"eventType", "data": {"paymentKey", "orderId", "status"}}`.
pub fn toss_webhook(body: &[u8]) -> Result<TossEvent, InboundError> {
    let wire: TossWebhook = serde_json::from_slice(body).map_err(malformed)?;
    let data = wire.data.as_ref();
    let key = data.and_then(|data| data.payment_key.as_deref());
    let (true, Some(key)) = (wire.event_type == "PAYMENT_STATUS_CHANGED", key) else {
        return Ok(TossEvent::Ignored(claimed(Some(&wire.event_type))));
    };
    Ok(TossEvent::PaymentChanged(Hint {
        pg_tid: PgTid::parse(key)?,
        order_id: data
            .and_then(|data| data.order_id.as_deref())
            .and_then(|raw| OrderId::parse(raw).ok()),
        claimed_status: claimed(data.and_then(|data| data.status.as_deref())),
    }))
}

/// kassa's reference of a Payple payment, from the type and time a result post or notice
/// names: what the result inquiry is asked with (its answer decides).
fn payple_reference(
    pay_type: &str,
    pay_time: &str,
    order_id: &OrderId,
) -> Result<PgTid, InboundError> {
    let date = pay_time
        .get(..8)
        .and_then(|day| NaiveDate::parse_from_str(day, "%Y%m%d").ok())
        .ok_or_else(|| InboundError::Invalid("PCD_PAY_TIME must be yyyyMMddHHmmss".into()))?;
    if !matches!(pay_type, "card" | "transfer") {
        return Err(InboundError::Invalid(
            "PCD_PAY_TYPE must be card or transfer".into(),
        ));
    }
    super::payple::payment_ref(pay_type, date, order_id.as_str())
        .map_err(|_| InboundError::Invalid("the message names no payment".into()))
}

fn payple_hint(fields: &BTreeMap<String, String>) -> Result<Hint, InboundError> {
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let order_id = OrderId::parse(field("PCD_PAY_OID")).map_err(|_| InboundError::NoOrder)?;
    Ok(Hint {
        pg_tid: payple_reference(field("PCD_PAY_TYPE"), field("PCD_PAY_TIME"), &order_id)?,
        order_id: Some(order_id),
        claimed_status: claimed(Some(field("PCD_PAY_RST"))),
    })
}

/// Payple's payment and cancel notices: `PCD_*` fields, form-encoded or JSON.
pub fn payple_notice(body: &[u8], is_json: bool) -> Result<Hint, InboundError> {
    let fields = if is_json {
        json_fields(body)?
    } else {
        form_fields(body)?
    };
    payple_hint(&fields)
}

/// What Payple's result post from the buyer's browser says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaypleResult {
    /// Payple says it was paid: the payment to verify with the result inquiry.
    Paid(Hint),
    /// Payple says the payment was not completed, and why.
    Failed(OrderId, CheckoutEnd),
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

fn by_message(message: &str) -> Option<CheckoutEnd> {
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

/// PortOne V1's return (`imp_success=false`, `error_code`, `error_msg`): the message is the
/// PG's own, so it is read for its words.
pub fn portone_checkout_end(error_msg: &str) -> CheckoutEnd {
    by_message(error_msg).unwrap_or(CheckoutEnd::Failed)
}

/// Toss's `failUrl` (`code`, `message`): `PAY_PROCESS_CANCELED` is the buyer, `REJECT_*` and
/// the card codes are a refusal, `PAY_PROCESS_ABORTED` and the rest a failure.
pub fn toss_checkout_end(code: &str) -> CheckoutEnd {
    match code {
        "PAY_PROCESS_CANCELED" | "USER_CANCEL" => CheckoutEnd::Cancelled,
        code if code.starts_with("REJECT_")
            || code.starts_with("EXCEED_")
            || code.starts_with("INVALID_CARD")
            || code == "NOT_AVAILABLE_PAYMENT"
            || code == "INSUFFICIENT_BALANCE" =>
        {
            CheckoutEnd::Declined
        }
        _ => CheckoutEnd::Failed,
    }
}

/// Payple's result post without success: `PCD_PAY_RST=close` is the buyer closing the window;
/// otherwise its message says whether the card was refused.
fn payple_checkout_end(rst: &str, message: &str) -> CheckoutEnd {
    if rst == "close" {
        return CheckoutEnd::Cancelled;
    }
    by_message(message).unwrap_or(CheckoutEnd::Failed)
}

/// Payple's result post (form-encoded `PCD_*` fields).
pub fn payple_result(body: &[u8]) -> Result<PaypleResult, InboundError> {
    let fields = form_fields(body)?;
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    if field("PCD_PAY_RST") != "success" {
        let order_id = OrderId::parse(field("PCD_PAY_OID")).map_err(|_| InboundError::NoOrder)?;
        let end = payple_checkout_end(field("PCD_PAY_RST"), field("PCD_PAY_MSG"));
        return Ok(PaypleResult::Failed(order_id, end));
    }
    payple_hint(&fields).map(PaypleResult::Paid)
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

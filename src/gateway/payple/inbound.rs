//! What Payple sends kassa unasked: its payment and cancel notices, and the result post from
//! the buyer's browser.

use crate::domain::{OrderId, PgTid};
use crate::gateway::inbound::{
    CheckoutEnd, Hint, InboundError, by_message, claimed, form_fields, json_fields,
};
use chrono::NaiveDate;
use std::collections::BTreeMap;

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
    super::payment_ref(pay_type, date, order_id.as_str())
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

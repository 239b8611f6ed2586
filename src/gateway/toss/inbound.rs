//! What Toss sends kassa unasked: its webhook, and the checkout window's `failUrl`.

use crate::domain::{OrderId, PgTid};
use crate::gateway::inbound::{CheckoutEnd, Hint, InboundError, claimed, malformed};
use serde::Deserialize;

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

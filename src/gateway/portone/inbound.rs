//! What PortOne V1 sends kassa unasked: its webhook, and the checkout window's return.

use crate::domain::{OrderId, PgTid};
use crate::gateway::inbound::{CheckoutEnd, Hint, InboundError, by_message, claimed, malformed};
use serde::Deserialize;

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

/// PortOne V1's return (`imp_success=false`, `error_code`, `error_msg`): the message is the
/// PG's own, so it is read for its words.
pub fn portone_checkout_end(error_msg: &str) -> CheckoutEnd {
    by_message(error_msg).unwrap_or(CheckoutEnd::Failed)
}

//! Creating orders, from the admin API or from a product on the payment page.

use super::{FlowError, Kassa};
use crate::domain::order::{BUYER_EMAIL_CHARS_MAX, ORDER_NAME_CHARS_MAX, OrderIdRule};
use crate::domain::{Amount, BuyerId, OrderDraft, OrderId, PartnerId, Provider, parse_text};
use crate::store::CreateOrderOutcome;

/// An order as asked for, not yet checked.
#[derive(Debug, Clone, Default)]
pub struct OrderRequest {
    pub order_id: Option<String>,
    pub amount: i64,
    pub name: String,
    pub partner_id: Option<String>,
    pub buyer_email: Option<String>,
    pub provider: Option<String>,
}

/// Checks a request against the domain rules and the config (known partner, usable PG), and
/// its order id against the limits of the order's PG.
pub fn draft(kassa: &Kassa, request: &OrderRequest) -> Result<OrderDraft, FlowError> {
    let order_id = match &request.order_id {
        Some(raw) => OrderId::parse(raw)?,
        None => OrderId::generate(kassa.env.new_uuid()),
    };
    let amount = Amount::positive(request.amount)?;
    let name = parse_text("name", &request.name, ORDER_NAME_CHARS_MAX)?;
    let partner_id = match &request.partner_id {
        None => None,
        Some(raw) => {
            let partner = PartnerId::parse(raw)?;
            if kassa.config.partner(&partner).is_none() {
                return Err(FlowError::Unprocessable {
                    code: "UNKNOWN_PARTNER",
                    message: format!("partner {partner} is not in the config"),
                });
            }
            Some(partner)
        }
    };
    let buyer_email = match &request.buyer_email {
        None => None,
        Some(raw) => {
            let email = parse_text("buyer_email", raw, BUYER_EMAIL_CHARS_MAX)?;
            if !email.contains('@') || email.contains(char::is_whitespace) {
                return Err(FlowError::Unprocessable {
                    code: "INVALID_FIELD",
                    message: "buyer_email is not an e-mail address".into(),
                });
            }
            Some(email)
        }
    };
    let provider = match &request.provider {
        None => kassa.config.default_provider(),
        Some(raw) => Provider::parse(raw)?,
    };
    if kassa.gateways.get(provider).is_none() {
        return Err(FlowError::Unprocessable {
            code: "PROVIDER_NOT_AVAILABLE",
            message: format!("{} is not configured in this kassa", provider.as_str()),
        });
    }
    // `OrderId` holds what some PG takes; the order's own PG may take less (Toss: at least 6).
    OrderIdRule::of(provider).check(&order_id)?;
    Ok(OrderDraft {
        order_id,
        amount,
        name,
        partner_id,
        buyer_email,
        provider,
    })
}

/// Creates an order. The same request twice answers the same order; a different request under
/// an id that exists is a conflict.
pub async fn create_order(
    kassa: &Kassa,
    request: &OrderRequest,
    buyer: Option<BuyerId>,
) -> Result<CreateOrderOutcome, FlowError> {
    let draft = draft(kassa, request)?;
    let outcome = kassa
        .store
        .create_order(draft, buyer, kassa.env.now())
        .await?;
    if let CreateOrderOutcome::Conflict(existing) = &outcome {
        return Err(FlowError::Conflict {
            code: "ORDER_CONFLICT",
            message: format!("order {} exists with different details", existing.id()),
        });
    }
    Ok(outcome)
}

/// How far back a client's orders count against `http.open_orders_per_client`: long enough for
/// a buyer to pay, short enough that abandoned checkouts (or a shared address) never lock a
/// client out for long.
pub const OPEN_ORDERS_WINDOW: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Creates an order for one product of the catalogue, for a buyer of the payment page,
/// through `provider` (the configured default when `None`). `client` names where the request
/// came from: one client holds at most `http.open_orders_per_client` READY orders made within
/// `OPEN_ORDERS_WINDOW`.
pub async fn order_product(
    kassa: &Kassa,
    product_id: &str,
    buyer: BuyerId,
    provider: Option<Provider>,
    client: String,
) -> Result<OrderId, FlowError> {
    let product = kassa
        .config
        .product(product_id)
        .ok_or(FlowError::NotFound { what: "product" })?;
    let request = OrderRequest {
        order_id: None,
        amount: product.price.won(),
        name: product.name.clone(),
        partner_id: product.partner_id.as_ref().map(|id| id.as_str().to_owned()),
        buyer_email: None,
        provider: provider.map(|provider| provider.as_str().to_owned()),
    };
    let open_max = kassa.config.http.open_orders_per_client;
    let outcome = if open_max == 0 {
        create_order(kassa, &request, Some(buyer)).await?
    } else {
        let draft = draft(kassa, &request)?;
        kassa
            .store
            .create_client_order(
                draft,
                Some(buyer),
                kassa.env.now(),
                client,
                open_max,
                OPEN_ORDERS_WINDOW,
            )
            .await?
            .ok_or_else(|| FlowError::TooMany {
                code: "TOO_MANY_OPEN_ORDERS",
                message: format!(
                    "this client has {open_max} orders waiting for payment; pay or let them expire first"
                ),
            })?
    };
    match outcome {
        CreateOrderOutcome::Created(order)
        | CreateOrderOutcome::Existing(order)
        | CreateOrderOutcome::Conflict(order) => Ok(order.id().clone()),
    }
}

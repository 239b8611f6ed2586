//! Orders: created by the merchant (admin), read back by id.

use super::time;
use crate::domain::{Order, OrderId};
use crate::flows::orders;
use crate::http::error::ApiError;
use crate::http::extract::{Admin, ApiJson, ApiPath};
use crate::http::state::AppState;
use crate::store::CreateOrderOutcome;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

fn order_json(state: &AppState, order: &Order) -> Value {
    let draft = &order.draft;
    json!({
        "order_id": draft.order_id.as_str(),
        "amount": draft.amount.won(),
        "name": draft.name,
        "status": order.status().as_str(),
        "provider": draft.provider.as_str(),
        "partner_id": draft.partner_id.as_ref().map(crate::domain::PartnerId::as_str),
        "buyer_email": draft.buyer_email,
        "payment_id": order.paid_payment_id().map(|id| id.to_string()),
        "created_at": time(order.created_at),
        "pay_url": format!("{}/payment/{}", state.public_base_url, draft.order_id),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderBody {
    #[serde(default)]
    order_id: Option<String>,
    amount: i64,
    name: String,
    #[serde(default)]
    partner_id: Option<String>,
    #[serde(default)]
    buyer_email: Option<String>,
    #[serde(default)]
    provider: Option<String>,
}

pub async fn create_order(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<CreateOrderBody>,
) -> Result<Response, ApiError> {
    let request = orders::OrderRequest {
        order_id: body.order_id,
        amount: body.amount,
        name: body.name,
        partner_id: body.partner_id,
        buyer_email: body.buyer_email,
        provider: body.provider,
    };
    let order = match orders::create_order(&state.kassa, &request, None).await? {
        CreateOrderOutcome::Created(order)
        | CreateOrderOutcome::Existing(order)
        | CreateOrderOutcome::Conflict(order) => order,
    };
    Ok((StatusCode::CREATED, Json(order_json(&state, &order))).into_response())
}

pub async fn get_order(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let order_id = OrderId::parse(&order_id).map_err(|_| ApiError::not_found("order"))?;
    let order = state
        .kassa
        .store
        .order(&order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    Ok(Json(order_json(&state, &order)))
}

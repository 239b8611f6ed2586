//! The JSON API of CONTRACT.md, one file per resource (`orders`, `payments`, `cancels`,
//! `settlement`); this file holds what they share (rendering, list parameters). Handlers are
//! thin: extract, call one flow, render.

use super::error::ApiError;
use super::state::AppState;
use crate::domain::PaymentId;
use crate::store::{PaymentPage, PaymentView};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Asia::Seoul;
use serde::Deserialize;
use serde_json::{Value, json};

mod backup;
mod cancels;
mod export;
mod orders;
mod payments;
mod settlement;

pub use backup::*;
pub use cancels::*;
pub use export::*;
pub use orders::*;
pub use payments::*;
pub use settlement::*;

/// Page sizes of list endpoints.
pub const LIST_LIMIT_DEFAULT: usize = 50;
pub const LIST_LIMIT_MAX: usize = 500;

fn time(at: DateTime<Utc>) -> String {
    at.with_timezone(&Seoul)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

pub fn payment_json(view: &PaymentView, with_events: bool) -> Value {
    let payment = &view.payment;
    let mut body = json!({
        "payment_id": payment.id.to_string(),
        "order_id": payment.order_id.as_str(),
        "provider": payment.provider.as_str(),
        "pg_tid": payment.pg_tid.as_str(),
        "amount": payment.amount.won(),
        "cancelled_amount": payment.cancelled_amount().won(),
        "status": payment.status().as_str(),
        "partner_id": payment.partner_id.as_ref().map(crate::domain::PartnerId::as_str),
        "paid_at": time(payment.paid_at),
        "settlement_status": view.settlement_status.map(crate::store::SettlementStatus::as_str),
    });
    if with_events {
        body["events"] = view
            .events
            .iter()
            .map(|event| json!({ "at": time(event.at), "kind": event.kind.as_str(), "detail": event.detail }))
            .collect();
    }
    body
}

fn page_json(page: &PaymentPage) -> Value {
    json!({
        "items": page.items.iter().map(|view| payment_json(view, false)).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor.map(|id| id.to_string()),
    })
}

/// A list that fits one page: `{"items": [...], "next_cursor": null}`.
fn unpaged(items: Vec<Value>) -> Json<Value> {
    Json(json!({ "items": Value::Array(items), "next_cursor": null }))
}

/// `GET /healthz`: 200 while the store can write; 503 with the storage fault's reason and since
/// when while it cannot (writes failed since the last commit, or redb refuses them for good).
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.kassa.store.health().fault() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(fault) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unhealthy",
                "reason": fault.reason,
                "since": time(fault.since),
            })),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    match raw {
        None | Some("") => Ok(LIST_LIMIT_DEFAULT),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=LIST_LIMIT_MAX).contains(limit))
            .ok_or_else(|| {
                ApiError::invalid_query(format!(
                    "limit must be a number from 1 to {LIST_LIMIT_MAX}"
                ))
            }),
    }
}

fn parse_cursor(raw: Option<&str>) -> Result<Option<PaymentId>, ApiError> {
    raw.filter(|raw| !raw.is_empty())
        .map(|raw| {
            PaymentId::parse(raw)
                .map_err(|_| ApiError::invalid_query("cursor is not one kassa gave out"))
        })
        .transpose()
}

fn parse_date(name: &str, raw: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    raw.filter(|raw| !raw.is_empty())
        .map(|raw| {
            NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .map_err(|_| ApiError::invalid_query(format!("{name} must be a date YYYY-MM-DD")))
        })
        .transpose()
}

fn required_date(raw: Option<&str>) -> Result<NaiveDate, ApiError> {
    parse_date("date", raw)?.ok_or_else(|| ApiError::invalid_query("date is required (YYYY-MM-DD)"))
}

#[derive(Debug, Deserialize)]
pub struct DateQuery {
    #[serde(default)]
    date: Option<String>,
}

//! Payments: completion from the browser, redirects and webhooks of each PG, reads, lists and
//! the result long-poll.

use super::{ListQuery, page_json, parse_cursor, parse_date, parse_limit, payment_json, unpaged};
use crate::domain::{OrderId, PaymentId, PaymentStatus, PgTid, Provider};
use crate::flows::payments::{Completion, Source};
use crate::flows::{payments, result};
use crate::gateway::inbound;
use crate::http::error::ApiError;
use crate::http::extract::{Admin, ApiJson, ApiPath, ApiQuery, Caller};
use crate::http::state::AppState;
use crate::store::PaymentFilter;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Deserialize)]
pub struct PortOneCompletion {
    imp_uid: String,
    merchant_uid: String,
}

/// Turns a completion into the answer the browser gets: the payment, or 422/409 for a refusal.
pub fn completion_response(completion: &Completion) -> Response {
    match completion {
        Completion::Stored(view) => Json(payment_json(view, true)).into_response(),
        Completion::RolledBack { view, admission } => {
            let (status, code, message) = match admission {
                crate::domain::Admission::RollbackAlreadyPaid { .. } => (
                    StatusCode::CONFLICT,
                    "ORDER_ALREADY_PAID",
                    "this order was already paid; the second payment is being refunded".to_owned(),
                ),
                crate::domain::Admission::RollbackAmountMismatch { expected, actual } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "AMOUNT_MISMATCH",
                    format!(
                        "the PG charged {actual} but the order asks {expected}; the payment is being refunded"
                    ),
                ),
                crate::domain::Admission::Accept => {
                    return Json(payment_json(view, true)).into_response();
                }
            };
            let mut error = ApiError::new(
                status,
                code,
                format!("{message} (status {})", view.payment.status()),
            );
            error.payment_id = Some(view.payment.id.to_string());
            error.into_response()
        }
    }
}

pub async fn complete_portone(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PortOneCompletion>,
) -> Result<Response, ApiError> {
    let pg_tid = PgTid::parse(&body.imp_uid)?;
    let order_id = OrderId::parse(&body.merchant_uid).map_err(|_| ApiError::not_found("order"))?;
    let completion = payments::complete(
        &state.kassa,
        Provider::PortOne,
        &pg_tid,
        Some(&order_id),
        Source::Browser,
    )
    .await?;
    Ok(completion_response(&completion))
}

/// PortOne V1 webhooks carry no signature: the body only names the payment. One write queues
/// its re-check, which asks PortOne, and the webhook is answered 200 at once; only if that write
/// fails is it answered 5xx, so PortOne sends it again. A body that names no payment is refused.
pub async fn webhook_portone(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"));
    let hint = inbound::portone_webhook(&body, is_json)
        .map_err(|error| inbound_error(error, "webhook"))?;
    let pg_tid = hint.pg_tid.clone();
    crate::flows::recheck::hint(
        &state.kassa,
        Provider::PortOne,
        pg_tid.clone(),
        hint.order_id,
    )
    .await?;
    tracing::info!(pg_tid = %pg_tid, hint = %hint.claimed_status, "PortOne webhook received; its payment is re-checked with PortOne");
    Ok(Json(json!({ "received": true })).into_response())
}

pub async fn get_payment(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(payment_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let viewer = caller.viewer().ok_or_else(ApiError::unauthorized)?;
    let id = PaymentId::parse(&payment_id).map_err(|_| ApiError::not_found("payment"))?;
    let view = crate::flows::payments::visible(&state.kassa, viewer, id).await?;
    Ok(Json(payment_json(&view, true)))
}

pub async fn list_payments(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let filter = PaymentFilter {
        order_id: match query.order_id.as_deref().filter(|raw| !raw.is_empty()) {
            None => None,
            Some(raw) => Some(
                OrderId::parse(raw).map_err(|error| ApiError::invalid_query(error.to_string()))?,
            ),
        },
        status: match query.status.as_deref().filter(|raw| !raw.is_empty()) {
            None => None,
            Some(raw) => Some(
                PaymentStatus::parse(raw)
                    .ok_or_else(|| ApiError::invalid_query("status is not a payment status"))?,
            ),
        },
        from: parse_date("from", query.from.as_deref())?,
        to: parse_date("to", query.to.as_deref())?,
        ..PaymentFilter::default()
    };
    let page = state
        .kassa
        .store
        .list_payments(filter, limit, cursor)
        .await?;
    Ok(Json(page_json(&page)))
}

pub async fn list_own_payments(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let Caller::Buyer(buyer) = caller else {
        return Ok(unpaged(Vec::new()));
    };
    let page = state
        .kassa
        .store
        .list_buyer_payments(buyer, limit, cursor)
        .await?;
    Ok(Json(page_json(&page)))
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait_s: Option<String>,
}

pub async fn order_result(
    State(state): State<AppState>,
    ApiPath(order_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> Result<Json<Value>, ApiError> {
    let wait_s = match query.wait_s.as_deref().filter(|raw| !raw.is_empty()) {
        None => 0,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|wait| *wait <= result::WAIT_S_MAX)
            .ok_or_else(|| {
                ApiError::invalid_query(format!(
                    "wait_s must be a number from 0 to {}",
                    result::WAIT_S_MAX
                ))
            })?,
    };
    let order_id = OrderId::parse(&order_id).map_err(|_| ApiError::not_found("order"))?;
    // Past the bound of waiting requests, a request answers at once with what is known now.
    let permit = state.long_polls.clone().try_acquire_owned().ok();
    let wait = if permit.is_some() {
        Duration::from_secs(wait_s)
    } else {
        Duration::ZERO
    };
    let outcome = result::wait_for_outcome(&state.kassa, &order_id, wait, &state.shutdown).await?;
    drop(permit);
    let mut body =
        json!({ "order_id": outcome.order_id.as_str(), "result": outcome.result.as_str() });
    if let Some(payment_id) = outcome.payment_id {
        body["payment_id"] = json!(payment_id.to_string());
    }
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TossConfirm {
    payment_key: String,
    order_id: String,
    amount: i64,
}

/// The JSON form of Toss's success redirect: confirms with the order's own amount.
pub async fn confirm_toss(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TossConfirm>,
) -> Result<Response, ApiError> {
    let payment_key = PgTid::parse(&body.payment_key)?;
    let order_id = OrderId::parse(&body.order_id).map_err(|_| ApiError::not_found("order"))?;
    let completion = payments::confirm_toss(
        &state.kassa,
        &payment_key,
        &order_id,
        Some(body.amount),
        Source::Browser,
    )
    .await?;
    Ok(completion_response(&completion))
}

/// Toss's `PAYMENT_STATUS_CHANGED` is unsigned: the body names a payment, whose re-check is
/// queued in one write (Toss then fetched by kassa itself). Toss needs exactly 200, so
/// everything it sends that kassa can read is answered 200, unless that write failed.
pub async fn webhook_toss(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let hint = match inbound::toss_webhook(&body)
        .map_err(|error| inbound_error(error, "webhook"))?
    {
        inbound::TossEvent::PaymentChanged(hint) => hint,
        inbound::TossEvent::Ignored(event) => {
            tracing::info!(event = %event, "Toss webhook ignored: kassa acts on PAYMENT_STATUS_CHANGED");
            return Ok(Json(json!({ "received": true })).into_response());
        }
    };
    let payment_key = hint.pg_tid.clone();
    crate::flows::recheck::hint(
        &state.kassa,
        Provider::Toss,
        payment_key.clone(),
        hint.order_id,
    )
    .await?;
    tracing::info!(payment_key = %payment_key, hinted_status = %hint.claimed_status, "Toss webhook received; its payment is re-checked with Toss");
    Ok(Json(json!({ "received": true })).into_response())
}

/// `HEAD /api/webhooks/payple`: Payple checks that the webhook URL answers.
pub async fn webhook_payple_head() -> StatusCode {
    StatusCode::OK
}

/// Payple's payment and cancel notices (PG-CONTRACTS 4.4): form-encoded or JSON `PCD_*` fields,
/// unsigned. The notice names a payment (order, type, day); its re-check, which asks Payple's
/// result inquiry, is queued in one write and the notice is answered 200 at once (Payple wants
/// its answer within 10 s). A notice never records a refund: Payple's refunds are known only
/// from its answers and its settlement lines.
pub async fn webhook_payple(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"));
    let hint =
        inbound::payple_notice(&body, is_json).map_err(|error| inbound_error(error, "notice"))?;
    let order_id = hint
        .order_id
        .clone()
        .ok_or_else(|| inbound_error(inbound::InboundError::NoOrder, "notice"))?;
    crate::flows::recheck::hint(
        &state.kassa,
        Provider::Payple,
        hint.pg_tid,
        Some(order_id.clone()),
    )
    .await?;
    tracing::info!(order_id = %order_id, result = %hint.claimed_status, "Payple notice received; its payment is re-checked with Payple's result inquiry");
    Ok(Json(json!({ "received": true })).into_response())
}

/// A message the gateway could not read, as kassa's JSON error: unreadable is 400, a missing
/// order or a bad field 422 (`what` names the message in the text).
fn inbound_error(error: inbound::InboundError, what: &str) -> ApiError {
    match error {
        inbound::InboundError::Malformed(text) => {
            ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_BODY", text)
        }
        inbound::InboundError::NoOrder => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FIELD",
            format!("the {what} names no order (PCD_PAY_OID)"),
        ),
        inbound::InboundError::Invalid(text) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_FIELD", text)
        }
        inbound::InboundError::Domain(error) => error.into(),
    }
}

/// Payple's result post, form-encoded `PCD_*` fields from the buyer's browser. Only the order,
/// the pay type and the day are taken from it: the payment is fetched with Payple's result
/// inquiry before anything is stored. A browser is sent on to the result page; other callers
/// get JSON.
pub async fn payple_result(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("text/html"));
    let hint = match inbound::payple_result(&body) {
        Ok(inbound::PaypleResult::Paid(hint)) => hint,
        Ok(inbound::PaypleResult::Failed(order_id, end)) => {
            if wants_page {
                return Ok(axum::response::Redirect::to(&format!(
                    "/payment/{order_id}?failed={}",
                    end.as_str()
                ))
                .into_response());
            }
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "PAYMENT_FAILED",
                "Payple reports the payment was not completed",
            ));
        }
        Err(inbound::InboundError::NoOrder) => return Err(ApiError::not_found("order")),
        Err(error) => return Err(inbound_error(error, "result")),
    };
    let pg_tid = hint.pg_tid;
    let order_id = hint.order_id.ok_or_else(|| ApiError::not_found("order"))?;
    let completion = payments::complete(
        &state.kassa,
        Provider::Payple,
        &pg_tid,
        Some(&order_id),
        Source::Redirect,
    )
    .await;
    if wants_page {
        if let Err(error) = &completion {
            tracing::warn!(order_id = %order_id, error = %error, "Payple result not applied; the result page will ask again");
        }
        // The result page asks again with this reference while the outcome is pending.
        return Ok(axum::response::Redirect::to(&format!(
            "/payment/result/{order_id}?payple_ref={pg_tid}"
        ))
        .into_response());
    }
    Ok(completion_response(&completion?))
}

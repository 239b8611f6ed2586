//! The JSON API of CONTRACT.md. Handlers are thin: extract, call one flow, render.

use super::error::ApiError;
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery, Caller};
use super::state::AppState;
use crate::domain::{Order, OrderId, PaymentId, PaymentStatus, PgTid, Provider};
use crate::flows::payments::{Completion, Source};
use crate::flows::{orders, payments, result};
use crate::store::{CreateOrderOutcome, PaymentFilter, PaymentPage, PaymentView};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Asia::Seoul;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

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

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
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

#[derive(Debug, Deserialize)]
struct PortOneWebhook {
    imp_uid: String,
    #[serde(default)]
    merchant_uid: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// PortOne V1 webhooks carry no signature: the body only names the payment to fetch. Answered
/// 200 whatever kassa then learns from the PG, so PortOne does not retry what kassa has handled;
/// only a body that names no payment is refused.
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
    let hint: PortOneWebhook = if is_json {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_BODY", error.to_string())
        })?
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|error| {
            ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_BODY", error.to_string())
        })?
    };
    let pg_tid = PgTid::parse(&hint.imp_uid)?;
    let claimed = hint
        .merchant_uid
        .as_deref()
        .and_then(|raw| OrderId::parse(raw).ok());
    match payments::complete(
        &state.kassa,
        Provider::PortOne,
        &pg_tid,
        claimed.as_ref(),
        Source::Webhook,
    )
    .await
    {
        Ok(completion) => {
            let view = completion.view();
            tracing::info!(pg_tid = %pg_tid, payment_id = %view.payment.id, status = %view.payment.status(), hint = hint.status.as_deref().unwrap_or(""), "PortOne webhook handled");
        }
        Err(error) => {
            tracing::warn!(pg_tid = %pg_tid, error = %error, "PortOne webhook not applied; a later hint or the buyer's return will retry");
        }
    }
    Ok(Json(json!({ "received": true })).into_response())
}

pub async fn get_payment(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(payment_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized());
    }
    let id = PaymentId::parse(&payment_id).map_err(|_| ApiError::not_found("payment"))?;
    let view = state
        .kassa
        .store
        .payment(id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let visible = match caller {
        Caller::Admin => true,
        Caller::Buyer(buyer) => view.payment.buyer_id == Some(buyer),
        Caller::Anonymous => false,
    };
    // Another buyer's payment is answered as unknown, so ids cannot be probed.
    if !visible {
        return Err(ApiError::not_found("payment"));
    }
    Ok(Json(payment_json(&view, true)))
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
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default)]
    amount: Option<i64>,
    reason: String,
}

fn cancel_json(answer: &crate::flows::cancel::CancelAnswer) -> Value {
    json!({
        "cancel_id": answer.cancel_id.to_string(),
        "payment_id": answer.payment_id.to_string(),
        "amount": answer.amount.won(),
        "status": answer.status.as_str(),
    })
}

/// Loads a payment the caller may act on: any for the admin, their own for a buyer.
async fn payment_of_caller(
    state: &AppState,
    caller: Caller,
    raw_id: &str,
) -> Result<PaymentView, ApiError> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized());
    }
    let id = PaymentId::parse(raw_id).map_err(|_| ApiError::not_found("payment"))?;
    let view = state
        .kassa
        .store
        .payment(id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    match caller {
        Caller::Admin => Ok(view),
        Caller::Buyer(buyer) if view.payment.buyer_id == Some(buyer) => Ok(view),
        _ => Err(ApiError::not_found("payment")),
    }
}

pub async fn cancel_payment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(payment_id): ApiPath<String>,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Response, ApiError> {
    let view = payment_of_caller(&state, caller, &payment_id).await?;
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "IDEMPOTENCY_KEY_REQUIRED",
                "send an Idempotency-Key header",
            )
        })?
        .to_str()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_IDEMPOTENCY_KEY",
                "Idempotency-Key must be ASCII",
            )
        })
        .and_then(|raw| {
            crate::domain::IdempotencyKey::parse(raw).map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_IDEMPOTENCY_KEY",
                    error.to_string(),
                )
            })
        })?;
    let answer = crate::flows::cancel::request(
        &state.kassa,
        view.payment.id,
        key,
        body.amount,
        &body.reason,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(cancel_json(&answer))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DeadLetterQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    pending: Option<String>,
}

fn parse_record_id(raw: &str) -> Option<u128> {
    uuid::Uuid::try_parse(raw).ok().map(|uuid| uuid.as_u128())
}

pub async fn dead_letters(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let cursor = match query.cursor.as_deref().filter(|raw| !raw.is_empty()) {
        None => None,
        Some(raw) => Some(
            parse_record_id(raw)
                .ok_or_else(|| ApiError::invalid_query("cursor is not one kassa gave out"))?,
        ),
    };
    let pending = matches!(query.pending.as_deref(), Some("true" | "1"));
    let (items, next) = state
        .kassa
        .store
        .dead_letters(limit, cursor, pending)
        .await?;
    let items: Vec<Value> = items
        .iter()
        .map(|letter| {
            json!({
                "id": uuid::Uuid::from_u128(letter.id).to_string(),
                "payment_id": letter.payment_id.to_string(),
                "cancel_id": letter.cancel_id.to_string(),
                "job": letter.job,
                "attempts": letter.attempts,
                "last_error": letter.last_error,
                "last_pg_answer": letter.last_pg_answer,
                "created_at": time(letter.created_at),
                "redriven_at": letter.redriven_at.map(time),
                "resolved_at": letter.resolved_at.map(time),
                "resolution": letter.resolution,
            })
        })
        .collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": next.map(|id| uuid::Uuid::from_u128(id).to_string()) }),
    ))
}

pub async fn redrive(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_record_id(&id).ok_or_else(|| ApiError::not_found("dead letter"))?;
    match state.kassa.store.redrive(id, state.kassa.env.now()).await? {
        crate::store::RedriveOutcome::NotFound => Err(ApiError::not_found("dead letter")),
        crate::store::RedriveOutcome::Resolved(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CANCEL_RESOLVED",
            format!("cancel {} was resolved by an operator", intent.id),
        )),
        crate::store::RedriveOutcome::AlreadyDone(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CANCEL_ALREADY_DONE",
            format!("cancel {} was already carried out", intent.id),
        )),
        crate::store::RedriveOutcome::Redriven(intent) => {
            tracing::info!(cancel_id = %intent.id, payment_id = %intent.payment_id, "dead letter re-driven");
            state.kassa.wake.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "cancel_id": intent.id.to_string(), "payment_id": intent.payment_id.to_string(), "status": "CANCEL_PENDING" })),
            )
                .into_response())
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    note: String,
}

/// Closes a dead letter handled outside kassa (refunded in the PG's console, or not to be
/// refunded): nothing is sent to the PG and what it held is released.
pub async fn resolve_dead_letter(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Response, ApiError> {
    let id = parse_record_id(&id).ok_or_else(|| ApiError::not_found("dead letter"))?;
    let note = crate::domain::parse_text("note", &body.note, 500)?;
    match state
        .kassa
        .store
        .resolve_dead_letter(id, note, state.kassa.env.now())
        .await?
    {
        crate::store::RedriveOutcome::NotFound => Err(ApiError::not_found("dead letter")),
        crate::store::RedriveOutcome::AlreadyDone(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CANCEL_ALREADY_DONE",
            format!("cancel {} was already carried out", intent.id),
        )),
        crate::store::RedriveOutcome::Redriven(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CANCEL_RUNNING",
            format!(
                "cancel {} was re-driven and is running; resolve it if it fails again",
                intent.id
            ),
        )),
        crate::store::RedriveOutcome::Resolved(intent) => {
            tracing::info!(cancel_id = %intent.id, payment_id = %intent.payment_id, "dead letter resolved by an operator");
            Ok(Json(json!({ "cancel_id": intent.id.to_string(), "payment_id": intent.payment_id.to_string(), "status": "CANCEL_RESOLVED" }))
                .into_response())
        }
    }
}

pub async fn alerts(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let alerts = state.kassa.store.alerts(limit).await?;
    let items: Vec<Value> = alerts
        .iter()
        .map(|alert| {
            json!({
                "id": uuid::Uuid::from_u128(alert.id).to_string(),
                "level": alert.level.as_str(),
                "kind": alert.kind,
                "message": alert.message,
                "payment_id": alert.payment_id.map(|id| id.to_string()),
                "created_at": time(alert.created_at),
                "sent_at": alert.sent_at.map(time),
                "attempts": alert.attempts,
            })
        })
        .collect();
    Ok(unpaged(items))
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TossWebhook {
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

/// Toss's `PAYMENT_STATUS_CHANGED` is unsigned: the body names a payment, which kassa fetches
/// from Toss. Toss needs exactly 200, so everything it sends that kassa can read is answered 200.
pub async fn webhook_toss(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let hint: TossWebhook = serde_json::from_slice(&body).map_err(|error| {
        ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_BODY", error.to_string())
    })?;
    let data = hint.data.as_ref();
    let key = data.and_then(|data| data.payment_key.as_deref());
    if hint.event_type != "PAYMENT_STATUS_CHANGED" || key.is_none() {
        tracing::info!(event = %hint.event_type, "Toss webhook ignored: kassa acts on PAYMENT_STATUS_CHANGED");
        return Ok(Json(json!({ "received": true })).into_response());
    }
    let payment_key = PgTid::parse(key.unwrap_or_default())?;
    let claimed = data
        .and_then(|data| data.order_id.as_deref())
        .and_then(|raw| OrderId::parse(raw).ok());
    match payments::complete(
        &state.kassa,
        Provider::Toss,
        &payment_key,
        claimed.as_ref(),
        Source::Webhook,
    )
    .await
    {
        Ok(completion) => {
            let view = completion.view();
            tracing::info!(payment_key = %payment_key, payment_id = %view.payment.id, status = %view.payment.status(), "Toss webhook handled");
        }
        Err(error) => {
            let hinted = data.and_then(|data| data.status.as_deref()).unwrap_or("");
            tracing::info!(payment_key = %payment_key, hinted_status = hinted, error = %error, "Toss webhook not applied");
        }
    }
    Ok(Json(json!({ "received": true })).into_response())
}

fn partner_settlement_json(row: &crate::store::PartnerSettlement) -> Value {
    json!({
        "id": row.id(),
        "partner_id": row.partner_id,
        "date": row.date.format("%Y-%m-%d").to_string(),
        "gross": row.figures.gross,
        "cancelled": row.figures.cancelled,
        "fee": row.figures.fee,
        "net": row.figures.net,
        "payment_count": row.figures.payment_count,
        "fee_rate_bps": row.fee_rate_bps,
        "status": row.status.as_str(),
        "updated_at": time(row.updated_at),
    })
}

fn required_date(raw: Option<&str>) -> Result<NaiveDate, ApiError> {
    parse_date("date", raw)?.ok_or_else(|| ApiError::invalid_query("date is required (YYYY-MM-DD)"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateBody {
    date: String,
}

pub async fn run_partner_settlements(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<DateBody>,
) -> Result<Json<Value>, ApiError> {
    let date = NaiveDate::parse_from_str(&body.date, "%Y-%m-%d").map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FIELD",
            "date must be YYYY-MM-DD",
        )
    })?;
    let rows = crate::flows::partners::run(&state.kassa, date).await?;
    Ok(unpaged(rows.iter().map(partner_settlement_json).collect()))
}

#[derive(Debug, Deserialize)]
pub struct DateQuery {
    #[serde(default)]
    date: Option<String>,
}

pub async fn partner_settlements(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<DateQuery>,
) -> Result<Json<Value>, ApiError> {
    let date = required_date(query.date.as_deref())?;
    let rows = state.kassa.store.partner_settlements(date).await?;
    Ok(unpaged(rows.iter().map(partner_settlement_json).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    status: String,
}

pub async fn move_partner_settlement(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Json<Value>, ApiError> {
    let row = crate::flows::partners::move_forward(&state.kassa, &id, &body.status).await?;
    Ok(Json(partner_settlement_json(&row)))
}

fn report_json(report: &crate::store::SyncReport) -> Value {
    let millis = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(time);
    json!({
        "run_id": uuid::Uuid::from_u128(report.run_id).to_string(),
        "provider": report.provider,
        "date": report.date.format("%Y-%m-%d").to_string(),
        "pages": report.pages,
        "complete": report.complete,
        "resumed": report.resumed,
        "updated": report.counts.updated,
        "skipped": report.counts.skipped,
        "missing": report.counts.missing,
        "cancel_skipped": report.counts.cancel_skipped,
        "discrepancy": report.counts.discrepancy,
        "failed": report.failed,
        "started_at": millis(report.started_at_ms),
        "finished_at": millis(report.finished_at_ms),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    date: Option<String>,
}

pub async fn run_settlement_sync(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<SyncBody>,
) -> Result<Json<Value>, ApiError> {
    let kassa = &state.kassa;
    let provider = match body.provider.as_deref() {
        Some(raw) => Provider::parse(raw)?,
        None => crate::flows::settlement::default_provider(kassa).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "PROVIDER_NOT_AVAILABLE",
                "neither Payple nor Toss is configured",
            )
        })?,
    };
    let date = match body.date.as_deref() {
        Some(raw) => NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_FIELD",
                "date must be YYYY-MM-DD",
            )
        })?,
        None => crate::flows::settlement::yesterday(kassa),
    };
    let report = crate::flows::settlement::sync(kassa, provider, date).await?;
    Ok(Json(report_json(&report)))
}

pub async fn settlement_runs(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let runs = state.kassa.store.sync_runs(limit).await?;
    Ok(unpaged(runs.iter().map(report_json).collect()))
}

#[derive(Debug, Deserialize)]
pub struct SettlementQuery {
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

pub async fn settlements(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<SettlementQuery>,
) -> Result<Json<Value>, ApiError> {
    let date = required_date(query.date.as_deref())?;
    let status = match query.status.as_deref().filter(|raw| !raw.is_empty()) {
        None => None,
        Some(raw @ ("Pending" | "Succeed")) => Some(raw.to_owned()),
        Some(_) => return Err(ApiError::invalid_query("status must be Pending or Succeed")),
    };
    let rows = state.kassa.store.settlement_rows(date, status).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "payment_id": row.payment_id.to_string(),
                "order_id": row.order_id,
                "provider": row.provider,
                "date": row.date.format("%Y-%m-%d").to_string(),
                "amount": row.amount,
                "status": row.status,
                "fee": row.fee,
                "settle_amount": row.settle_amount,
            })
        })
        .collect();
    Ok(unpaged(items))
}

pub async fn settlement_findings(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<DateQuery>,
) -> Result<Json<Value>, ApiError> {
    let date = required_date(query.date.as_deref())?;
    let findings = state.kassa.store.settlement_findings(date).await?;
    let items: Vec<Value> = findings
        .iter()
        .map(|finding| {
            json!({
                "date": finding.date.format("%Y-%m-%d").to_string(),
                "provider": finding.provider,
                "order_id": finding.order_id,
                "kind": finding.kind,
                "expected": finding.expected,
                "actual": finding.actual,
                "fee": finding.fee,
                "settle_amount": finding.settle_amount,
            })
        })
        .collect();
    Ok(unpaged(items))
}

/// Payple's result post, form-encoded `PCD_*` fields from the buyer's browser. Only the order,
/// the pay type and the day are taken from it: the payment is fetched with Payple's result
/// inquiry before anything is stored. A browser is sent on to the result page; other callers
/// get JSON.
pub async fn payple_result(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<
        axum::Form<std::collections::BTreeMap<String, String>>,
        axum::extract::rejection::FormRejection,
    >,
) -> Result<Response, ApiError> {
    let axum::Form(fields) = form?;
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("text/html"));
    let order_id =
        OrderId::parse(field("PCD_PAY_OID")).map_err(|_| ApiError::not_found("order"))?;
    if field("PCD_PAY_RST") != "success" {
        if wants_page {
            return Ok(
                axum::response::Redirect::to(&format!("/payment/{order_id}?failed=1"))
                    .into_response(),
            );
        }
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PAYMENT_FAILED",
            "Payple reports the payment was not completed",
        ));
    }
    let day = field("PCD_PAY_TIME").get(..8).unwrap_or_default();
    let date = NaiveDate::parse_from_str(day, "%Y%m%d").map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FIELD",
            "PCD_PAY_TIME must be yyyyMMddHHmmss",
        )
    })?;
    let pay_type = field("PCD_PAY_TYPE");
    if !matches!(pay_type, "card" | "transfer") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FIELD",
            "PCD_PAY_TYPE must be card or transfer",
        ));
    }
    let pg_tid =
        crate::gateway::payple::payment_ref(pay_type, date, order_id.as_str()).map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_FIELD",
                "the result names no payment",
            )
        })?;
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
            tracing::warn!(order_id = %order_id, error = %error, "Payple result not applied");
        }
        return Ok(
            axum::response::Redirect::to(&format!("/payment/result/{order_id}")).into_response(),
        );
    }
    Ok(completion_response(&completion?))
}

//! Cancels and what follows them: the cancel request, dead letters (list, re-drive, resolve)
//! and the alert outbox.

use super::{ListQuery, parse_limit, time, unpaged};
use crate::domain::PaymentId;
use crate::http::error::ApiError;
use crate::http::extract::{Admin, ApiJson, ApiPath, ApiQuery, Caller, IdempotencyKeyHeader};
use crate::http::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

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

pub async fn cancel_payment(
    State(state): State<AppState>,
    caller: Caller,
    key: Result<IdempotencyKeyHeader, ApiError>,
    ApiPath(payment_id): ApiPath<String>,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Response, ApiError> {
    let viewer = caller.viewer().ok_or_else(ApiError::unauthorized)?;
    let id = PaymentId::parse(&payment_id).map_err(|_| ApiError::not_found("payment"))?;
    let view = crate::flows::payments::visible(&state.kassa, viewer, id).await?;
    let IdempotencyKeyHeader(key) = key?;
    let answer =
        crate::flows::cancel::request(&state.kassa, &view.payment, key, body.amount, &body.reason)
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    /// The admin looked in the PG's console and saw no refund for this cancel. Required to send
    /// again a refund whose outcome is unknown.
    #[serde(default)]
    console_checked: bool,
    #[serde(default)]
    note: Option<String>,
}

fn intent_json(intent: &crate::domain::CancelIntent, status: &str) -> Value {
    json!({ "cancel_id": intent.id.to_string(), "payment_id": intent.payment_id.to_string(), "status": status })
}

/// `POST /api/admin/dead-letters/{id}/redrive` with an optional body
/// `{"console_checked"?, "note"?}`.
pub async fn redrive(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = parse_record_id(&id).ok_or_else(|| ApiError::not_found("dead letter"))?;
    let body: RedriveBody = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_FIELD",
                format!("the re-drive body is {{\"console_checked\"?, \"note\"?}}: {error}"),
            )
        })?
    };
    let note = body
        .note
        .as_deref()
        .filter(|note| !note.trim().is_empty())
        .map(|note| crate::domain::parse_text("note", note, 500))
        .transpose()?;
    let request = crate::store::Redrive {
        console_checked: body.console_checked,
        note,
    };
    match crate::flows::cancel::redrive(&state.kassa, id, request).await? {
        crate::store::RedriveOutcome::NotFound => Err(ApiError::not_found("dead letter")),
        crate::store::RedriveOutcome::Resolved(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CANCEL_RESOLVED",
            format!("cancel {} was resolved by an operator", intent.id),
        )),
        crate::store::RedriveOutcome::AlreadyDone(intent)
        | crate::store::RedriveOutcome::RefundAlreadyRecorded(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CANCEL_ALREADY_DONE",
            format!("cancel {} was already carried out", intent.id),
        )),
        crate::store::RedriveOutcome::ConsoleCheckRequired(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONSOLE_CHECK_REQUIRED",
            format!(
                "the refund of cancel {} may have gone through and the PG cannot be asked: look in the PG's console first; if it shows no refund, re-drive with {{\"console_checked\": true, \"note\": \"...\"}}, if it does, resolve it as refunded",
                intent.id
            ),
        )),
        crate::store::RedriveOutcome::Redriven(intent) => Ok((
            StatusCode::ACCEPTED,
            Json(intent_json(&intent, "CANCEL_PENDING")),
        )
            .into_response()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    outcome: String,
    #[serde(default)]
    pg_ref: Option<String>,
    note: String,
}

/// `POST /api/admin/dead-letters/{id}/resolve` `{"outcome": "refunded" | "not_refunded",
/// "pg_ref"?, "note"}`: a person says what they did. "refunded" records the refund like a
/// PG-confirmed one; "not_refunded" releases what the cancel held. Nothing is sent to the PG.
pub async fn resolve_dead_letter(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Response, ApiError> {
    let id = parse_record_id(&id).ok_or_else(|| ApiError::not_found("dead letter"))?;
    let note = crate::domain::parse_text("note", &body.note, 500)?;
    let resolution = match body.outcome.as_str() {
        "refunded" => crate::store::Resolution::Refunded {
            at: None,
            pg_ref: body
                .pg_ref
                .as_deref()
                .filter(|pg_ref| !pg_ref.trim().is_empty())
                .map(|pg_ref| crate::domain::parse_text("pg_ref", pg_ref, 100))
                .transpose()?,
        },
        "not_refunded" => crate::store::Resolution::NotRefunded,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_FIELD",
                "outcome must be \"refunded\" or \"not_refunded\"",
            ));
        }
    };
    match crate::flows::cancel::resolve(&state.kassa, id, resolution, note).await? {
        crate::store::RedriveOutcome::NotFound => Err(ApiError::not_found("dead letter")),
        crate::store::RedriveOutcome::AlreadyDone(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CANCEL_ALREADY_DONE",
            format!("cancel {} was already carried out", intent.id),
        )),
        crate::store::RedriveOutcome::RefundAlreadyRecorded(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "PG_REFUND_ALREADY_RECORDED",
            format!(
                "that refund of the PG is already recorded for another cancel of payment {}; nothing was changed",
                intent.payment_id
            ),
        )),
        crate::store::RedriveOutcome::Redriven(intent)
        | crate::store::RedriveOutcome::ConsoleCheckRequired(intent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "CANCEL_RUNNING",
            format!(
                "cancel {} was re-driven and is running; resolve it if it fails again",
                intent.id
            ),
        )),
        crate::store::RedriveOutcome::Resolved(intent) => {
            tracing::info!(cancel_id = %intent.id, payment_id = %intent.payment_id, outcome = %body.outcome, "dead letter resolved by an operator");
            let status = if intent.state == crate::domain::IntentState::Done {
                "CANCEL_REFUNDED"
            } else {
                "CANCEL_RESOLVED"
            };
            Ok(Json(intent_json(&intent, status)).into_response())
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

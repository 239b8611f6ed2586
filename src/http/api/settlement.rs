//! Settlement: the PG settlement sync (runs, rows, findings) and daily partner settlement.

use super::{DateQuery, ListQuery, parse_limit, required_date, time, unpaged};
use crate::domain::Provider;
use crate::http::error::ApiError;
use crate::http::extract::{Admin, ApiJson, ApiPath, ApiQuery};
use crate::http::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};

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
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

fn body_date(name: &str, raw: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FIELD",
            format!("{name} must be YYYY-MM-DD"),
        )
    })
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
    let range = match (&body.date, &body.from, &body.to) {
        (None, Some(from), Some(to)) => Some((body_date("from", from)?, body_date("to", to)?)),
        (_, None, None) => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_FIELD",
                "name one day with \"date\", or a range with both \"from\" and \"to\"",
            ));
        }
    };
    let internal = |error: tokio::task::JoinError| {
        tracing::error!(error = %error, "the settlement sync task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "an internal error happened; it has been logged",
        )
    };
    if let Some((from, to)) = range {
        crate::flows::settlement::range_days(kassa, from, to)?;
        // The range goes on (one day at a time under the lock) even if this request is dropped.
        let run = tokio::spawn({
            let kassa = kassa.clone();
            async move { crate::flows::settlement::sync_range(&kassa, provider, from, to).await }
        });
        let reports = run.await.map_err(internal)??;
        return Ok(unpaged(reports.iter().map(report_json).collect()));
    }
    let date = match body.date.as_deref() {
        Some(raw) => body_date("date", raw)?,
        None => crate::flows::settlement::yesterday(kassa),
    };
    // The run goes on (and releases its lock with its report) even if this request is dropped.
    let run = tokio::spawn({
        let kassa = kassa.clone();
        async move { crate::flows::settlement::sync(&kassa, provider, date).await }
    });
    let report = run.await.map_err(internal)??;
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

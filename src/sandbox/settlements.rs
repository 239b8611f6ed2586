//! The sandbox's settlement data: a day of settlement lines per PG, loaded through the control
//! API, and Toss's `GET /v1/settlements` that pages through them.
//!
//! Lines made from the sandbox's own payments follow the PG: an APPROVAL line per payment
//! approved that KST day and a CANCEL line per refund executed that day, with a negative amount
//! (Toss's published sign; Payple's is not documented, so it gets the same) and no fee.
//!
//! Toss's lines come in the shapes PG-CONTRACTS §6 lists, chosen per load: `api` (what the live
//! API sends: numbers and a top-level `fee`) or `docs` (Toss's docs example: no top-level `fee`,
//! `fees[]` with the fee as a string). A CANCEL line has negative amounts and a filled `cancel{}`
//! in both. `raw_amount`/`raw_fee` put any text where the amount or fee goes, for unreadable
//! lines. Invariant: a line keeps the shape it was loaded with.

use super::{Sandbox, control_error};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most settlement lines the sandbox holds for one PG and day.
pub const LINES_PER_DAY_MAX: usize = 1_000_000;
/// Toss's largest page.
const TOSS_PAGE_SIZE_MAX: usize = 10_000;

/// How a Toss settlement line is written (PG-CONTRACTS §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum TossShape {
    /// As the live API answers: every amount a number, and a top-level `fee`.
    #[default]
    Api,
    /// As Toss's docs example: no top-level `fee`; `fees[]` of `BASE` and `ETC` with the fee as
    /// a string of digits.
    Docs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    /// The amount as the PG sends it, when a test wants it unreadable (Payple sends strings;
    /// Toss gets the text in place of its number).
    pub raw_amount: Option<String>,
    /// The fee as the PG sends it, verbatim: Toss's `fee` (`fees[BASE].fee` in the docs shape),
    /// Payple's `PCD_FEE_TOTAL`.
    pub raw_fee: Option<String>,
    /// Toss only: how the line is written.
    pub shape: TossShape,
    pub order_id: String,
    pub cancel: bool,
    pub amount: i64,
    pub fee: i64,
    pub settle_amount: i64,
    /// When a CANCEL line's refund happened; `None` reads as noon of the line's day.
    pub cancel_at: Option<DateTime<Utc>>,
    /// The refund's own transaction key (Toss), when the line comes from a sandbox refund.
    pub transaction_key: Option<String>,
    /// Made from the sandbox's own payments and refunds (`from_payments`), not given by a test.
    pub from_payments: bool,
}

/// A refund a PG of the sandbox executed, for its CANCEL line.
#[derive(Debug, Clone)]
pub(super) struct Refund {
    pub order_id: String,
    /// The refunded won, positive.
    pub amount: i64,
    pub at: DateTime<Utc>,
    pub transaction_key: Option<String>,
}

impl Line {
    /// A refund's CANCEL line: the amount negative, no fee, the payout equal to the amount.
    fn of_refund(refund: Refund, shape: TossShape) -> Line {
        let amount = refund.amount.saturating_neg();
        Line {
            raw_amount: None,
            raw_fee: None,
            shape,
            order_id: refund.order_id,
            cancel: true,
            amount,
            fee: 0,
            settle_amount: amount,
            cancel_at: Some(refund.at),
            transaction_key: refund.transaction_key,
            from_payments: true,
        }
    }
}

/// Noon of `date` in KST, the time a line shows when none was given.
fn noon_kst(date: NaiveDate) -> String {
    format!("{}T12:00:00+09:00", date.format("%Y-%m-%d"))
}

/// (PG, day) → that day's lines, in order.
pub(super) type Lines = BTreeMap<(String, NaiveDate), Vec<Line>>;

#[derive(Deserialize)]
pub(super) struct LineInput {
    order_id: String,
    #[serde(default)]
    kind: Option<String>,
    amount: i64,
    #[serde(default)]
    fee: Option<i64>,
    #[serde(default)]
    settle_amount: Option<i64>,
    /// Sent as the line's amount text instead of `amount`, to test unreadable lines.
    #[serde(default)]
    raw_amount: Option<String>,
    /// Sent verbatim as the line's fee instead of `fee`, to test unreadable lines.
    #[serde(default)]
    raw_fee: Option<String>,
    /// CANCEL only: when the refund happened (RFC 3339).
    #[serde(default)]
    cancel_time: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub(super) struct LoadRequest {
    provider: String,
    date: NaiveDate,
    #[serde(default)]
    records: Vec<LineInput>,
    /// Also add an APPROVAL line for every payment the sandbox approved that day and a CANCEL
    /// line for every refund it executed that day. These lines are the day as the PG has it
    /// now: they take the place of the lines an earlier such load made (a PG's re-sent day
    /// holds each payment and refund once).
    #[serde(default)]
    from_payments: bool,
    /// Toss only: how this load's lines are written; `api` when not said.
    #[serde(default)]
    toss_shape: Option<TossShape>,
}

/// A PG's fee in the sandbox: 3.3 %, rounded down.
fn default_fee(amount: i64) -> i64 {
    amount.saturating_mul(33) / 1_000
}

/// Loads (appends) a day of settlement lines: `POST /_control/settlements`. Lines made from
/// the sandbox's payments replace those of an earlier load (see `LoadRequest::from_payments`).
pub(super) async fn control_load(
    State(sandbox): State<Arc<Sandbox>>,
    Json(request): Json<LoadRequest>,
) -> Response {
    if !matches!(request.provider.as_str(), "toss" | "payple") {
        return control_error(StatusCode::BAD_REQUEST, "provider must be toss or payple");
    }
    // Loud rather than ignored, so a test that means Toss but says Payple fails.
    if request.toss_shape.is_some() && request.provider != "toss" {
        return control_error(
            StatusCode::BAD_REQUEST,
            "toss_shape is for provider toss only",
        );
    }
    let shape = request.toss_shape.unwrap_or_default();
    let mut lines: Vec<Line> = request
        .records
        .iter()
        .map(|input| {
            let fee = input.fee.unwrap_or_else(|| default_fee(input.amount));
            let cancel = input.kind.as_deref() == Some("CANCEL");
            Line {
                raw_amount: input.raw_amount.clone(),
                raw_fee: input.raw_fee.clone(),
                shape,
                order_id: input.order_id.clone(),
                cancel,
                amount: input.amount,
                fee,
                settle_amount: input
                    .settle_amount
                    .unwrap_or(input.amount.saturating_sub(fee)),
                cancel_at: input.cancel_time.filter(|_| cancel),
                transaction_key: None,
                from_payments: false,
            }
        })
        .collect();
    if request.from_payments {
        lines.extend(
            sandbox
                .approved_on(&request.provider, request.date)
                .into_iter()
                .map(|(order_id, amount)| Line {
                    raw_amount: None,
                    raw_fee: None,
                    shape,
                    order_id,
                    cancel: false,
                    amount,
                    fee: default_fee(amount),
                    settle_amount: amount - default_fee(amount),
                    cancel_at: None,
                    transaction_key: None,
                    from_payments: true,
                }),
        );
        lines.extend(
            sandbox
                .refunded_on(&request.provider, request.date)
                .into_iter()
                .map(|refund| Line::of_refund(refund, shape)),
        );
    }
    let mut state = sandbox.lock();
    let day = state
        .settlements
        .entry((request.provider.clone(), request.date))
        .or_default();
    if request.from_payments {
        day.retain(|line| !line.from_payments);
    }
    if day.len() + lines.len() > LINES_PER_DAY_MAX {
        return control_error(
            StatusCode::INSUFFICIENT_STORAGE,
            "too many settlement lines for one day",
        );
    }
    day.extend(lines);
    let total = day.len();
    Json(json!({ "provider": request.provider, "date": request.date, "lines": total }))
        .into_response()
}

fn toss_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TossQuery {
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    size: Option<usize>,
}

fn toss_line(date: NaiveDate, line: &Line) -> Value {
    let day = date.format("%Y-%m-%d").to_string();
    // Toss fills `cancel` on CANCEL rows, with the refunded amount positive.
    let cancel = if line.cancel {
        json!({
            "cancelAmount": line.amount.saturating_abs(),
            "canceledAt": line.cancel_at.map_or_else(
                || noon_kst(date),
                |at| at.with_timezone(&chrono_tz::Asia::Seoul).to_rfc3339(),
            ),
        })
    } else {
        Value::Null
    };
    let amount = line
        .raw_amount
        .as_ref()
        .map_or_else(|| json!(line.amount), |raw| json!(raw));
    let mut item = json!({
        "mId": "tosspayments_sandbox",
        "paymentKey": format!("tpk_settle_{}", line.order_id),
        "transactionKey": line
            .transaction_key
            .clone()
            .unwrap_or_else(|| format!("tx_settle_{}", line.order_id)),
        "orderId": line.order_id,
        "currency": "KRW",
        "method": "카드",
        "amount": amount,
        "interestFee": 0,
        "supplyAmount": line.fee * 10 / 11,
        "vat": line.fee - line.fee * 10 / 11,
        "payOutAmount": line.settle_amount,
        "approvedAt": noon_kst(date),
        "soldDate": day,
        "paidOutDate": day,
        "cancel": cancel,
    });
    match line.shape {
        TossShape::Api => {
            item["fee"] = line
                .raw_fee
                .as_ref()
                .map_or_else(|| json!(line.fee), |raw| json!(raw));
        }
        TossShape::Docs => {
            let base = line.raw_fee.clone().unwrap_or_else(|| line.fee.to_string());
            item["fees"] = json!([
                { "type": "BASE", "fee": base },
                { "type": "ETC", "fee": "0" },
            ]);
        }
    }
    item
}

/// Toss's `GET /v1/settlements?startDate=&endDate=&page=&size=`: a JSON array per page.
pub(super) async fn toss_settlements(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    query: Result<Query<TossQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let injected = sandbox.before("toss.settlements").await;
    if let Some(response) = super::toss::fault_answer(&injected) {
        return response;
    }
    if !super::toss::authorised(&headers) {
        return toss_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED_KEY",
            "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.",
        );
    }
    let Ok(Query(query)) = query else {
        return toss_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "잘못된 요청입니다.",
        );
    };
    let (Some(start), Some(end)) = (query.start_date, query.end_date) else {
        return toss_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "startDate, endDate 는 필수입니다.",
        );
    };
    if end < start {
        return toss_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "endDate 는 startDate 이후여야 합니다.",
        );
    }
    let page = query.page.unwrap_or(1).max(1);
    let size = query.size.unwrap_or(100).clamp(1, TOSS_PAGE_SIZE_MAX);
    let body: Vec<Value> = {
        let state = sandbox.lock();
        state
            .settlements
            .range((String::from("toss"), start)..=(String::from("toss"), end))
            .flat_map(|((_, date), lines)| lines.iter().map(move |line| (*date, line)))
            .skip((page - 1).saturating_mul(size))
            .take(size)
            .map(|(date, line)| toss_line(date, line))
            .collect()
    };
    sandbox.after(&injected, Json(body).into_response()).await
}

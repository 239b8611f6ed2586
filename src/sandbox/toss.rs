//! The sandbox's Toss Payments: confirm, lookups by `paymentKey` and `orderId`, cancel with
//! idempotent replay of a repeated `Idempotency-Key` (per key and URL, for 15 days), and a
//! checkout window that redirects to the shop's success or fail URL, in Toss's field names.

use super::portone::{CheckoutPage, redirect_allowed};
use super::{Injected, PAYMENTS_MAX, Sandbox, control_error};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use chrono_tz::Asia::Seoul;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The keys the sandbox accepts; kassa uses them in sandbox mode.
pub const SANDBOX_TOSS_SECRET_KEY: &str = "test_sk_sandbox_kassa";
pub const SANDBOX_TOSS_CLIENT_KEY: &str = "test_ck_sandbox_kassa";
/// How long Toss remembers an `Idempotency-Key`.
const IDEMPOTENCY_DAYS: i64 = 15;
/// Most remembered idempotency keys; past it the oldest are forgotten.
const IDEMPOTENCY_ENTRIES_MAX: usize = 100_000;

#[derive(Debug, Default)]
pub(super) struct TossState {
    payments: BTreeMap<String, TossPayment>,
    /// (Idempotency-Key, path) → (status, body, first use).
    replies: HashMap<(String, String), (StatusCode, Value, DateTime<Utc>)>,
}

impl TossState {
    /// The (order id, amount) of every payment approved on a KST day.
    pub(super) fn approved_on(&self, date: chrono::NaiveDate) -> Vec<(String, i64)> {
        self.payments
            .values()
            .filter(|payment| {
                payment
                    .approved_at
                    .is_some_and(|at| at.with_timezone(&Seoul).date_naive() == date)
            })
            .map(|payment| (payment.order_id.clone(), payment.total_amount))
            .collect()
    }
}

#[derive(Debug, Clone)]
struct TossPayment {
    payment_key: String,
    order_id: String,
    order_name: String,
    total_amount: i64,
    balance_amount: i64,
    status: String,
    requested_at: DateTime<Utc>,
    approved_at: Option<DateTime<Utc>>,
    cancels: Vec<Value>,
    refunds_executed: u32,
    /// The `Idempotency-Key` of every cancel call, in order, for tests to inspect.
    cancel_keys: Vec<String>,
}

/// Most cancel keys remembered per payment.
const CANCEL_KEYS_MAX: usize = 100;

fn kst(at: DateTime<Utc>) -> String {
    at.with_timezone(&Seoul).to_rfc3339()
}

impl TossPayment {
    fn wire(&self) -> Value {
        json!({
            "mId": "tosspayments_sandbox",
            "version": "2022-11-16",
            "paymentKey": self.payment_key,
            "orderId": self.order_id,
            "orderName": self.order_name,
            "status": self.status,
            "method": "카드",
            "currency": "KRW",
            "totalAmount": self.total_amount,
            "balanceAmount": self.balance_amount,
            "suppliedAmount": self.total_amount,
            "vat": 0,
            "requestedAt": kst(self.requested_at),
            "approvedAt": self.approved_at.map(kst),
            "isPartialCancelable": true,
            "card": { "number": "12345678****123*", "issuerCode": "71", "approveNo": "00000000" },
            "cancels": if self.cancels.is_empty() { Value::Null } else { Value::Array(self.cancels.clone()) },
            "failure": null,
        })
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

fn fault_answer(injected: &Injected) -> Option<Response> {
    match injected {
        Injected::Fail(StatusCode::UNAUTHORIZED) => Some(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED_KEY",
            "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.",
        )),
        Injected::Fail(status) => Some(error(
            *status,
            "FAILED_INTERNAL_SYSTEM_PROCESSING",
            "내부 시스템 처리 작업이 실패했습니다. 잠시 후 다시 시도해주세요.",
        )),
        Injected::Nothing | Injected::LoseAnswer(_) => None,
    }
}

/// Basic auth with the secret key and a trailing colon, as Toss wants it.
pub(super) fn authorised(headers: &HeaderMap) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
    else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .is_ok_and(|decoded| decoded == format!("{SANDBOX_TOSS_SECRET_KEY}:").as_bytes())
}

fn unauthorised() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED_KEY",
        "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.",
    )
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND_PAYMENT",
        "존재하지 않는 결제 정보 입니다.",
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConfirmBody {
    payment_key: String,
    order_id: String,
    amount: i64,
}

pub(super) async fn confirm(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let injected = sandbox.before("toss.confirm").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if !authorised(&headers) {
        return unauthorised();
    }
    let Ok(request) = serde_json::from_slice::<ConfirmBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "잘못된 요청입니다.",
        );
    };
    let now = sandbox.clock.now();
    let response = {
        let mut state = sandbox.lock();
        match state.toss.payments.get_mut(&request.payment_key) {
            None => not_found(),
            Some(payment) if payment.order_id != request.order_id => error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "주문번호가 일치하지 않습니다.",
            ),
            Some(payment) if payment.status != "IN_PROGRESS" && payment.status != "READY" => error(
                StatusCode::BAD_REQUEST,
                "ALREADY_PROCESSED_PAYMENT",
                "이미 처리된 결제 입니다.",
            ),
            Some(payment) if payment.total_amount != request.amount => error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "결제 금액이 일치하지 않습니다.",
            ),
            Some(payment) => {
                payment.status = "DONE".into();
                payment.approved_at = Some(now);
                Json(payment.wire()).into_response()
            }
        }
    };
    sandbox.after(&injected, response).await
}

/// Answers a lookup as Toss does: faults, Basic auth, then the payment `find` picks or 404.
async fn lookup(
    sandbox: &Sandbox,
    headers: &HeaderMap,
    find: impl FnOnce(&TossState) -> Option<Value>,
) -> Response {
    let injected = sandbox.before("toss.payment").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if !authorised(headers) {
        return unauthorised();
    }
    let found = find(&sandbox.lock().toss);
    let response = found.map_or_else(not_found, |payment| Json(payment).into_response());
    sandbox.after(&injected, response).await
}

pub(super) async fn get_payment(
    State(sandbox): State<Arc<Sandbox>>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup(&sandbox, &headers, |toss| {
        toss.payments.get(&payment_key).map(TossPayment::wire)
    })
    .await
}

/// The latest payment of an order.
pub(super) async fn get_by_order(
    State(sandbox): State<Arc<Sandbox>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup(&sandbox, &headers, |toss| {
        toss.payments
            .values()
            .filter(|payment| payment.order_id == order_id)
            .max_by_key(|payment| payment.requested_at)
            .map(TossPayment::wire)
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CancelBody {
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    cancel_amount: Option<i64>,
}

pub(super) async fn cancel(
    State(sandbox): State<Arc<Sandbox>>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // Every call is seen, even one a fault then answers, so tests can check the keys kassa sent.
    if let Some(payment) = sandbox.lock().toss.payments.get_mut(&payment_key)
        && payment.cancel_keys.len() < CANCEL_KEYS_MAX
    {
        payment.cancel_keys.push(key.clone().unwrap_or_default());
    }
    let injected = sandbox.before("toss.cancel").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if !authorised(&headers) {
        return unauthorised();
    }
    let now = sandbox.clock.now();
    let path = format!("/v1/payments/{payment_key}/cancel");
    if let Some(key) = &key {
        if key.is_empty() || key.len() > 300 {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_IDEMPOTENCY_KEY",
                "멱등키가 올바르지 않습니다.",
            );
        }
        let earlier = {
            let mut state = sandbox.lock();
            state
                .toss
                .replies
                .retain(|_, (_, _, first)| now - *first < chrono::Duration::days(IDEMPOTENCY_DAYS));
            state
                .toss
                .replies
                .get(&(key.clone(), path.clone()))
                .map(|(status, body, _)| (*status, body.clone()))
        };
        // A repeat of a key is answered with the first answer and not executed again.
        if let Some((status, body)) = earlier {
            return sandbox
                .after(&injected, (status, Json(body)).into_response())
                .await;
        }
    }
    let transaction_key = format!("tx_{}", sandbox.random_digits(16));
    let (status, body) = match serde_json::from_slice::<CancelBody>(&body) {
        Err(_) => (
            StatusCode::BAD_REQUEST,
            json!({ "code": "INVALID_REQUEST", "message": "잘못된 요청입니다." }),
        ),
        Ok(request) => {
            let mut state = sandbox.lock();
            let outcome = match state.toss.payments.get_mut(&payment_key) {
                None => (
                    StatusCode::NOT_FOUND,
                    json!({ "code": "NOT_FOUND_PAYMENT", "message": "존재하지 않는 결제 정보 입니다." }),
                ),
                Some(payment) => apply_cancel(payment, &request, now, &transaction_key),
            };
            drop(state);
            outcome
        }
    };
    if let Some(key) = key {
        let mut state = sandbox.lock();
        if state.toss.replies.len() < IDEMPOTENCY_ENTRIES_MAX {
            state
                .toss
                .replies
                .insert((key, path), (status, body.clone(), now));
        }
    }
    sandbox
        .after(&injected, (status, Json(body)).into_response())
        .await
}

fn apply_cancel(
    payment: &mut TossPayment,
    request: &CancelBody,
    now: DateTime<Utc>,
    transaction_key: &str,
) -> (StatusCode, Value) {
    let refuse = |status: StatusCode, code: &str, message: &str| {
        (status, json!({ "code": code, "message": message }))
    };
    if payment.status == "CANCELED" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "ALREADY_CANCELED_PAYMENT",
            "이미 취소된 결제 입니다.",
        );
    }
    if payment.status != "DONE" && payment.status != "PARTIAL_CANCELED" {
        return refuse(
            StatusCode::FORBIDDEN,
            "NOT_CANCELABLE_PAYMENT",
            "취소 할 수 없는 결제 입니다.",
        );
    }
    let amount = request.cancel_amount.unwrap_or(payment.balance_amount);
    if amount <= 0 || amount > payment.balance_amount {
        return refuse(
            StatusCode::FORBIDDEN,
            "NOT_CANCELABLE_AMOUNT",
            "취소 할 수 없는 금액 입니다.",
        );
    }
    payment.balance_amount -= amount;
    payment.refunds_executed += 1;
    payment.status = if payment.balance_amount == 0 {
        "CANCELED".into()
    } else {
        "PARTIAL_CANCELED".into()
    };
    payment.cancels.push(json!({
        "transactionKey": transaction_key,
        "cancelReason": request.cancel_reason,
        "cancelAmount": amount,
        "taxFreeAmount": 0,
        "refundableAmount": payment.balance_amount,
        "canceledAt": kst(now),
        "cancelStatus": "DONE",
    }));
    (StatusCode::OK, payment.wire())
}

fn insert_payment(
    sandbox: &Sandbox,
    order_id: &str,
    order_name: &str,
    amount: i64,
    status: &str,
) -> Result<TossPayment, &'static str> {
    let now = sandbox.clock.now();
    let payment = TossPayment {
        payment_key: format!("tpk_{}", sandbox.random_digits(20)),
        order_id: order_id.to_owned(),
        order_name: order_name.to_owned(),
        total_amount: amount,
        balance_amount: if status == "CANCELED" { 0 } else { amount },
        status: status.to_owned(),
        requested_at: now,
        approved_at: (status == "DONE").then_some(now),
        cancels: Vec::new(),
        refunds_executed: 0,
        cancel_keys: Vec::new(),
    };
    let mut state = sandbox.lock();
    if state.toss.payments.len() >= PAYMENTS_MAX {
        return Err("the sandbox holds its maximum number of payments; restart it");
    }
    state
        .toss
        .payments
        .insert(payment.payment_key.clone(), payment.clone());
    Ok(payment)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ControlCreate {
    order_id: String,
    amount: i64,
    #[serde(default = "in_progress")]
    status: String,
    #[serde(default)]
    order_name: String,
}

fn in_progress() -> String {
    "IN_PROGRESS".into()
}

fn control_view(payment: &TossPayment) -> Value {
    let mut view = payment.wire();
    view["refundsExecuted"] = json!(payment.refunds_executed);
    view["cancelKeys"] = json!(payment.cancel_keys);
    view
}

/// Makes a Toss payment as if a buyer had authorised it in the window (`IN_PROGRESS`, waiting
/// for the shop's confirm) or with any other status.
pub(super) async fn control_create(
    State(sandbox): State<Arc<Sandbox>>,
    Json(request): Json<ControlCreate>,
) -> Response {
    if !matches!(
        request.status.as_str(),
        "IN_PROGRESS" | "DONE" | "ABORTED" | "EXPIRED" | "CANCELED"
    ) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "status must be IN_PROGRESS, DONE, ABORTED, EXPIRED or CANCELED",
        );
    }
    match insert_payment(
        &sandbox,
        &request.order_id,
        &request.order_name,
        request.amount,
        &request.status,
    ) {
        Ok(payment) => (StatusCode::CREATED, Json(control_view(&payment))).into_response(),
        Err(message) => control_error(StatusCode::INSUFFICIENT_STORAGE, message),
    }
}

pub(super) async fn control_get(
    State(sandbox): State<Arc<Sandbox>>,
    Path(payment_key): Path<String>,
) -> Response {
    match sandbox.lock().toss.payments.get(&payment_key) {
        Some(payment) => Json(control_view(payment)).into_response(),
        None => control_error(StatusCode::NOT_FOUND, "no such payment"),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CheckoutQuery {
    #[serde(default)]
    order_id: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    order_name: String,
    #[serde(default)]
    success_url: String,
    #[serde(default)]
    fail_url: String,
}

pub(super) async fn checkout_page(Query(query): Query<CheckoutQuery>) -> Response {
    let problem = if query.order_id.is_empty() || query.amount <= 0 {
        Some("주문 정보가 올바르지 않습니다 (orderId, amount).".to_owned())
    } else if !redirect_allowed(&query.success_url) || !redirect_allowed(&query.fail_url) {
        Some("successUrl, failUrl 이 올바르지 않습니다.".to_owned())
    } else {
        None
    };
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = CheckoutPage {
        pg_label: "Toss Payments",
        hidden: vec![
            ("orderId", query.order_id.clone()),
            ("amount", query.amount.to_string()),
            ("orderName", query.order_name.clone()),
            ("successUrl", query.success_url),
            ("failUrl", query.fail_url),
        ],
        order_id: query.order_id,
        amount: query.amount,
        name: query.order_name,
        problem,
    };
    (status, page).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CheckoutDecision {
    order_id: String,
    amount: i64,
    #[serde(default)]
    order_name: String,
    success_url: String,
    fail_url: String,
    decision: String,
}

fn with_query(url: &str, query: &[(&str, String)]) -> String {
    let encoded = serde_urlencoded::to_string(query).unwrap_or_default();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{encoded}")
}

/// Approve authorises the card and sends the buyer to `successUrl` with the payment's key;
/// the money is taken only when the shop confirms. Decline sends them to `failUrl`.
pub(super) async fn checkout_decide(
    State(sandbox): State<Arc<Sandbox>>,
    axum::Form(form): axum::Form<CheckoutDecision>,
) -> Response {
    if form.order_id.is_empty()
        || form.amount <= 0
        || !redirect_allowed(&form.success_url)
        || !redirect_allowed(&form.fail_url)
    {
        return (StatusCode::BAD_REQUEST, "bad checkout form").into_response();
    }
    if form.decision != "approve" {
        let query = [
            ("code", "PAY_PROCESS_CANCELED".to_owned()),
            ("message", "사용자에 의해 결제가 취소되었습니다.".to_owned()),
            ("orderId", form.order_id.clone()),
        ];
        return Redirect::to(&with_query(&form.fail_url, &query)).into_response();
    }
    match insert_payment(
        &sandbox,
        &form.order_id,
        &form.order_name,
        form.amount,
        "IN_PROGRESS",
    ) {
        Ok(payment) => {
            let query = [
                ("paymentType", "NORMAL".to_owned()),
                ("orderId", payment.order_id.clone()),
                ("paymentKey", payment.payment_key.clone()),
                ("amount", payment.total_amount.to_string()),
            ];
            Redirect::to(&with_query(&form.success_url, &query)).into_response()
        }
        Err(message) => (StatusCode::INSUFFICIENT_STORAGE, message).into_response(),
    }
}

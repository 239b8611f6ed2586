//! The sandbox's PortOne V1: `/users/getToken`, `GET /payments/{imp_uid}`, `POST /payments/cancel`
//! and a checkout window, in PortOne's own envelope and field names.

use super::{Injected, PAYMENTS_MAX, Sandbox, control_error};
use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The credentials the sandbox accepts; kassa uses them in sandbox mode.
pub const SANDBOX_IMP_KEY: &str = "sandbox_imp_key";
pub const SANDBOX_IMP_SECRET: &str = "sandbox_imp_secret";
/// PortOne's token lifetime, and how much a call in its last minute extends it.
const TOKEN_LIFETIME_S: i64 = 30 * 60;
const TOKEN_EXTENSION_S: i64 = 5 * 60;
const TOKEN_EXTEND_WITHIN_S: i64 = 60;

#[derive(Debug, Default)]
pub(super) struct PortOneState {
    token: Option<(String, i64)>,
    payments: BTreeMap<String, SandboxPayment>,
}

#[derive(Debug, Clone, Serialize)]
struct CancelEntry {
    pg_tid: String,
    amount: i64,
    cancelled_at: i64,
    reason: String,
    cancellation_id: String,
    receipt_url: String,
}

#[derive(Debug, Clone)]
struct SandboxPayment {
    imp_uid: String,
    merchant_uid: String,
    name: String,
    amount: i64,
    cancel_amount: i64,
    currency: String,
    status: String,
    paid_at: i64,
    failed_at: i64,
    cancelled_at: i64,
    cancel_history: Vec<CancelEntry>,
    refunds_executed: u32,
}

impl SandboxPayment {
    fn wire(&self) -> serde_json::Value {
        json!({
            "imp_uid": self.imp_uid,
            "merchant_uid": self.merchant_uid,
            "name": self.name,
            "amount": self.amount,
            "cancel_amount": self.cancel_amount,
            "currency": self.currency,
            "status": self.status,
            "pay_method": "card",
            "pg_provider": "sandbox",
            "pg_tid": format!("sandbox_{}", self.imp_uid),
            "channel": "pc",
            "sandbox": true,
            "paid_at": self.paid_at,
            "failed_at": self.failed_at,
            "cancelled_at": self.cancelled_at,
            "cancel_history": self.cancel_history,
            "card_name": "샌드박스카드",
            "card_number": "********1234",
        })
    }
}

fn envelope(
    status: StatusCode,
    code: i64,
    message: Option<&str>,
    response: Option<&serde_json::Value>,
) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message, "response": response })),
    )
        .into_response()
}

fn ok(response: &serde_json::Value) -> Response {
    envelope(StatusCode::OK, 0, None, Some(response))
}

fn refused(message: &str) -> Response {
    envelope(StatusCode::OK, 1, Some(message), None)
}

/// PortOne takes JSON or form bodies.
fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"));
    if is_json {
        serde_json::from_slice(body).map_err(|error| error.to_string())
    } else {
        serde_urlencoded::from_bytes(body).map_err(|error| error.to_string())
    }
}

/// A fault's error in PortOne's envelope, or `None` to go on.
fn fault_answer(injected: &Injected) -> Option<Response> {
    match injected {
        Injected::Fail(StatusCode::UNAUTHORIZED) => Some(envelope(
            StatusCode::UNAUTHORIZED,
            -1,
            Some("Unauthorized"),
            None,
        )),
        Injected::Fail(status) => Some(envelope(
            *status,
            -1,
            Some("sandbox: injected failure"),
            None,
        )),
        // PortOne refuses inside its envelope, over HTTP 200 unless the test chose a status.
        Injected::Refuse(refusal) => Some(envelope(
            refusal.status_or(StatusCode::OK),
            1,
            Some(&refusal.code),
            None,
        )),
        Injected::Nothing | Injected::LoseAnswer(_) | Injected::TaxsaveFail => None,
    }
}

fn authorised(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let presented = value.strip_prefix("Bearer ").unwrap_or(value);
    let now = sandbox.clock.now().timestamp();
    sandbox
        .lock()
        .portone
        .token
        .as_ref()
        .is_some_and(|(token, expires)| token == presented && now < *expires)
}

#[derive(Deserialize)]
pub(super) struct TokenRequest {
    #[serde(default)]
    imp_key: String,
    #[serde(default)]
    imp_secret: String,
}

pub(super) async fn get_token(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let injected = sandbox.before("portone.token").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    let Ok(request) = parse_body::<TokenRequest>(&headers, &body) else {
        return envelope(
            StatusCode::BAD_REQUEST,
            -1,
            Some("imp_key, imp_secret 파라메터가 누락되었습니다."),
            None,
        );
    };
    if request.imp_key != SANDBOX_IMP_KEY || request.imp_secret != SANDBOX_IMP_SECRET {
        return envelope(
            StatusCode::UNAUTHORIZED,
            -1,
            Some("imp_key, imp_secret 정보가 올바르지 않습니다."),
            None,
        );
    }
    let now = sandbox.clock.now().timestamp();
    let (token, expires) = {
        let mut state = sandbox.lock();
        let current = state
            .portone
            .token
            .clone()
            .filter(|(_, expires)| now < *expires);
        let next = match current {
            Some((token, expires)) if expires - now <= TOKEN_EXTEND_WITHIN_S => {
                (token, expires + TOKEN_EXTENSION_S)
            }
            Some(current) => current,
            None => (sandbox.random_digits(40), now + TOKEN_LIFETIME_S),
        };
        state.portone.token = Some(next.clone());
        next
    };
    let answer = ok(&json!({ "access_token": token, "expired_at": expires, "now": now }));
    sandbox.after(&injected, answer).await
}

pub(super) async fn get_payment(
    State(sandbox): State<Arc<Sandbox>>,
    Path(imp_uid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let injected = sandbox.before("portone.payment").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if !authorised(&sandbox, &headers) {
        return envelope(StatusCode::UNAUTHORIZED, -1, Some("Unauthorized"), None);
    }
    let found = sandbox
        .lock()
        .portone
        .payments
        .get(&imp_uid)
        .map(SandboxPayment::wire);
    let response = match found {
        Some(payment) => ok(&payment),
        None => envelope(
            StatusCode::NOT_FOUND,
            -1,
            Some("존재하지 않는 결제정보입니다."),
            None,
        ),
    };
    sandbox.after(&injected, response).await
}

#[derive(Deserialize)]
pub(super) struct CancelRequest {
    #[serde(default)]
    imp_uid: Option<String>,
    #[serde(default)]
    merchant_uid: Option<String>,
    #[serde(default)]
    amount: Option<serde_json::Number>,
    #[serde(default)]
    checksum: Option<serde_json::Number>,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn cancel(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let injected = sandbox.before("portone.cancel").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if !authorised(&sandbox, &headers) {
        return envelope(StatusCode::UNAUTHORIZED, -1, Some("Unauthorized"), None);
    }
    let Ok(request) = parse_body::<CancelRequest>(&headers, &body) else {
        return refused("요청 형식이 올바르지 않습니다.");
    };
    let now = sandbox.clock.now().timestamp();
    let cancellation_id = format!("cancel_{}", sandbox.random_digits(12));
    let response = {
        let mut state = sandbox.lock();
        let payment = match (&request.imp_uid, &request.merchant_uid) {
            (Some(imp_uid), _) => state.portone.payments.get_mut(imp_uid),
            (None, Some(merchant_uid)) => state
                .portone
                .payments
                .values_mut()
                .find(|payment| &payment.merchant_uid == merchant_uid),
            (None, None) => None,
        };
        match payment {
            None => refused("취소할 결제건이 존재하지 않습니다."),
            Some(payment) => apply_cancel(payment, &request, now, cancellation_id),
        }
    };
    sandbox.after(&injected, response).await
}

fn apply_cancel(
    payment: &mut SandboxPayment,
    request: &CancelRequest,
    now: i64,
    cancellation_id: String,
) -> Response {
    let balance = payment.amount - payment.cancel_amount;
    if payment.status == "cancelled" || (payment.status == "paid" && balance == 0) {
        return refused("이미 전액취소된 주문입니다.");
    }
    if payment.status != "paid" {
        return refused("결제완료 상태의 주문만 취소할 수 있습니다.");
    }
    let whole = serde_json::Number::as_i64;
    let requested = request.amount.as_ref().and_then(whole).unwrap_or(0);
    let amount = if requested == 0 { balance } else { requested };
    if let Some(checksum) = request.checksum.as_ref().and_then(whole)
        && checksum != balance
    {
        return refused("취소가능잔액(checksum)이 일치하지 않습니다.");
    }
    if amount < 0 || amount > balance {
        return refused("취소요청금액이 취소가능잔액보다 큽니다.");
    }
    payment.cancel_amount += amount;
    payment.refunds_executed += 1;
    payment.cancel_history.push(CancelEntry {
        pg_tid: format!("sandbox_{}", payment.imp_uid),
        amount,
        cancelled_at: now,
        reason: request.reason.clone().unwrap_or_default(),
        cancellation_id,
        receipt_url: String::new(),
    });
    if payment.cancel_amount == payment.amount {
        payment.status = "cancelled".into();
        payment.cancelled_at = now;
    }
    ok(&payment.wire())
}

fn insert_payment(
    sandbox: &Sandbox,
    merchant_uid: &str,
    name: &str,
    amount: i64,
    status: &str,
    currency: &str,
) -> Result<SandboxPayment, &'static str> {
    let now = sandbox.clock.now().timestamp();
    let imp_uid = format!("imp_{}", sandbox.random_digits(12));
    let payment = SandboxPayment {
        imp_uid: imp_uid.clone(),
        merchant_uid: merchant_uid.to_owned(),
        name: name.to_owned(),
        amount,
        cancel_amount: if status == "cancelled" { amount } else { 0 },
        currency: currency.to_owned(),
        status: status.to_owned(),
        paid_at: if matches!(status, "paid" | "cancelled") {
            now
        } else {
            0
        },
        failed_at: if status == "failed" { now } else { 0 },
        cancelled_at: if status == "cancelled" { now } else { 0 },
        cancel_history: Vec::new(),
        refunds_executed: 0,
    };
    let mut state = sandbox.lock();
    if state.portone.payments.len() >= PAYMENTS_MAX {
        return Err("the sandbox holds its maximum number of payments; restart it");
    }
    state.portone.payments.insert(imp_uid, payment.clone());
    Ok(payment)
}

#[derive(Deserialize)]
pub(super) struct ControlCreate {
    merchant_uid: String,
    amount: i64,
    #[serde(default = "paid")]
    status: String,
    #[serde(default = "krw")]
    currency: String,
    #[serde(default)]
    name: String,
}

fn paid() -> String {
    "paid".into()
}

fn krw() -> String {
    "KRW".into()
}

pub(super) async fn control_create(
    State(sandbox): State<Arc<Sandbox>>,
    Json(request): Json<ControlCreate>,
) -> Response {
    if !matches!(
        request.status.as_str(),
        "paid" | "ready" | "failed" | "cancelled"
    ) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "status must be paid, ready, failed or cancelled",
        );
    }
    match insert_payment(
        &sandbox,
        &request.merchant_uid,
        &request.name,
        request.amount,
        &request.status,
        &request.currency,
    ) {
        Ok(payment) => (StatusCode::CREATED, Json(control_view(&payment))).into_response(),
        Err(message) => control_error(StatusCode::INSUFFICIENT_STORAGE, message),
    }
}

fn control_view(payment: &SandboxPayment) -> serde_json::Value {
    let mut view = payment.wire();
    view["refunds_executed"] = json!(payment.refunds_executed);
    view
}

pub(super) async fn control_get(
    State(sandbox): State<Arc<Sandbox>>,
    Path(imp_uid): Path<String>,
) -> Response {
    match sandbox.lock().portone.payments.get(&imp_uid) {
        Some(payment) => Json(control_view(payment)).into_response(),
        None => control_error(StatusCode::NOT_FOUND, "no such payment"),
    }
}

// The checkout window: what the PG shows the buyer between "pay" and the return to the shop.

#[derive(Deserialize)]
pub(super) struct CheckoutQuery {
    #[serde(default)]
    merchant_uid: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    redirect_url: String,
}

/// The sandbox's card window, shared by every PG it imitates.
#[derive(Template, WebTemplate)]
#[template(path = "sandbox/checkout.html")]
pub(super) struct CheckoutPage {
    pub pg_label: &'static str,
    pub order_id: String,
    pub amount: i64,
    pub name: String,
    /// The form fields the decision is posted with.
    pub hidden: Vec<(&'static str, String)>,
    pub problem: Option<String>,
}

pub(super) fn redirect_allowed(url: &str) -> bool {
    (url.starts_with('/') && !url.starts_with("//"))
        || url.starts_with("http://")
        || url.starts_with("https://")
}

pub(super) async fn checkout_page(Query(query): Query<CheckoutQuery>) -> Response {
    let problem = if query.merchant_uid.is_empty() || query.amount <= 0 {
        Some("주문 정보가 올바르지 않습니다 (merchant_uid, amount).".to_owned())
    } else if !redirect_allowed(&query.redirect_url) {
        Some("redirect_url 이 올바르지 않습니다.".to_owned())
    } else {
        None
    };
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = CheckoutPage {
        pg_label: "PortOne",
        hidden: vec![
            ("merchant_uid", query.merchant_uid.clone()),
            ("amount", query.amount.to_string()),
            ("name", query.name.clone()),
            ("redirect_url", query.redirect_url),
        ],
        order_id: query.merchant_uid,
        amount: query.amount,
        name: query.name,
        problem,
    };
    (status, page).into_response()
}

#[derive(Deserialize)]
pub(super) struct CheckoutDecision {
    merchant_uid: String,
    amount: i64,
    #[serde(default)]
    name: String,
    redirect_url: String,
    decision: String,
}

pub(super) async fn checkout_decide(
    State(sandbox): State<Arc<Sandbox>>,
    axum::Form(form): axum::Form<CheckoutDecision>,
) -> Response {
    if form.merchant_uid.is_empty() || form.amount <= 0 || !redirect_allowed(&form.redirect_url) {
        return (StatusCode::BAD_REQUEST, "bad checkout form").into_response();
    }
    let approve = form.decision == "approve";
    let status = if approve { "paid" } else { "failed" };
    let payment = match insert_payment(
        &sandbox,
        &form.merchant_uid,
        &form.name,
        form.amount,
        status,
        "KRW",
    ) {
        Ok(payment) => payment,
        Err(message) => return (StatusCode::INSUFFICIENT_STORAGE, message).into_response(),
    };
    let mut query = vec![
        ("imp_uid", payment.imp_uid.clone()),
        ("merchant_uid", payment.merchant_uid.clone()),
        ("imp_success", approve.to_string()),
    ];
    if !approve {
        query.push(("error_code", "F0001".into()));
        query.push(("error_msg", "구매자가 결제를 취소했습니다.".into()));
    }
    let encoded = serde_urlencoded::to_string(&query).unwrap_or_default();
    let separator = if form.redirect_url.contains('?') {
        '&'
    } else {
        '?'
    };
    Redirect::to(&format!("{}{separator}{encoded}", form.redirect_url)).into_response()
}

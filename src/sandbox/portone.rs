//! The sandbox's PortOne V1: `/users/getToken`, `GET /payments/{imp_uid}`, the lookups by order
//! (`GET /payments/find/{merchant_uid}[/{payment_status}]` and `findAll`), `POST /payments/cancel`
//! and a checkout window, in PortOne's own envelope and field names.
//!
//! As PortOne's published bodies show (PG-CONTRACTS §6): a payment made with `legacy: true`
//! answers as the 2018–2023 API did, without `sandbox`, `channel`, `pg_id`, `started_at` and
//! `cancel_history[].cancellation_id`, with an `imps_` id, an integer `card_type`, an unknown field,
//! and `\/` and `\uXXXX` escapes. A console refund (a control call) is a cancel made behind
//! kassa's back: it changes the payment as an API cancel does and is counted apart.
//!
//! Invariant: the lookups by order change nothing, and faults put on `portone.payment` answer
//! them as they answer `GET /payments/{imp_uid}`: one endpoint name covers every lookup.

use super::{Injected, PAYMENTS_MAX, Sandbox, control_error};
use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, de::DeserializeOwned};
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

/// The statuses a payment can have, and the ones the lookups by order filter on.
const PAYMENT_STATUSES: [&str; 4] = ["ready", "paid", "failed", "cancelled"];
/// The reason a console refund shows when the test gives none.
const CONSOLE_REFUND_REASON: &str = "관리자 콘솔 취소";

#[derive(Debug, Default)]
pub(super) struct PortOneState {
    token: Option<(String, i64)>,
    payments: BTreeMap<String, SandboxPayment>,
    /// How many payments were made so far: orders payments of one `started_at` second.
    made: u64,
}

#[derive(Debug, Clone)]
struct CancelEntry {
    pg_tid: String,
    amount: i64,
    cancelled_at: i64,
    reason: String,
    cancellation_id: String,
    receipt_url: String,
}

impl CancelEntry {
    /// A `cancel_history[]` entry; a legacy one has no `cancellation_id`, as a 2022 KCP one.
    fn wire(&self, legacy: bool) -> serde_json::Value {
        let mut entry = json!({
            "pg_tid": self.pg_tid,
            "amount": self.amount,
            "cancelled_at": self.cancelled_at,
            "reason": self.reason,
            "receipt_url": self.receipt_url,
        });
        if !legacy {
            entry["cancellation_id"] = json!(self.cancellation_id);
        }
        entry
    }
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
    started_at: i64,
    /// The order the payment was made in, for payments started in the same second.
    made: u64,
    /// Answered in the shape of the 2018–2023 API (see the module comment).
    legacy: bool,
    cancel_history: Vec<CancelEntry>,
    /// Every executed cancel, API and console alike.
    refunds_executed: u32,
    /// The cancels made in the PG's console, behind kassa's back.
    console_refunds: u32,
}

impl SandboxPayment {
    fn wire(&self) -> serde_json::Value {
        let mut wire = json!({
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
            "paid_at": self.paid_at,
            "failed_at": self.failed_at,
            "cancelled_at": self.cancelled_at,
            "cancel_history": self
                .cancel_history
                .iter()
                .map(|entry| entry.wire(self.legacy))
                .collect::<Vec<_>>(),
            "card_name": "샌드박스카드",
            "card_number": "********1234",
            "receipt_url": "https://sandbox.invalid/receipt",
        });
        if self.legacy {
            // What a 2018 body has instead of the fields the 2026 schema marks required.
            wire["card_type"] = json!(0);
            wire["emb_pg_provider"] = serde_json::Value::Null;
        } else {
            wire["channel"] = json!("pc");
            wire["pg_id"] = json!("sandbox_mid");
            wire["sandbox"] = json!(true);
            wire["started_at"] = json!(self.started_at);
        }
        wire
    }

    /// Whether a lookup by order with this status filter finds the payment.
    fn has_status(&self, status: Option<&str>) -> bool {
        status.is_none_or(|status| self.status == status)
    }

    fn balance(&self) -> i64 {
        self.amount - self.cancel_amount
    }

    /// Records one executed cancel of `amount` (checked by the caller against the balance).
    fn record_cancel(&mut self, amount: i64, reason: String, now: i64, cancellation_id: String) {
        self.cancel_amount += amount;
        self.refunds_executed += 1;
        self.cancel_history.push(CancelEntry {
            pg_tid: format!("sandbox_{}", self.imp_uid),
            amount,
            cancelled_at: now,
            reason,
            cancellation_id,
            receipt_url: String::new(),
        });
        if self.cancel_amount == self.amount {
            self.status = "cancelled".into();
            self.cancelled_at = now;
        }
    }
}

/// Serialises JSON as PHP's `json_encode` did for PortOne's old API: `/` as `\/` and every
/// non-ASCII character as `\uXXXX` (UTF-16 units). Outside strings JSON has neither, so the
/// whole text can be rewritten character by character.
fn php_escaped(value: &serde_json::Value) -> String {
    use std::fmt::Write;
    let plain = value.to_string();
    let mut escaped = String::with_capacity(plain.len());
    for character in plain.chars() {
        if character == '/' {
            escaped.push_str("\\/");
        } else if character.is_ascii() {
            escaped.push(character);
        } else {
            let mut units = [0u16; 2];
            for unit in character.encode_utf16(&mut units) {
                // Writing to a String cannot fail.
                let _ = write!(escaped, "\\u{unit:04x}");
            }
        }
    }
    escaped
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

/// A success envelope around `response`, escaped as the old API did when `legacy`.
fn ok_as(response: &serde_json::Value, legacy: bool) -> Response {
    if !legacy {
        return ok(response);
    }
    let body = php_escaped(&json!({ "code": 0, "message": null, "response": response }));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body,
    )
        .into_response()
}

fn not_found() -> Response {
    envelope(
        StatusCode::NOT_FOUND,
        -1,
        Some("존재하지 않는 결제정보입니다."),
        None,
    )
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
        .map(|payment| (payment.wire(), payment.legacy));
    let response = match found {
        Some((payment, legacy)) => ok_as(&payment, legacy),
        None => not_found(),
    };
    sandbox.after(&injected, response).await
}

/// How many payments a lookup by order answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Many {
    /// `find`: the latest one, or 404.
    Latest,
    /// `findAll`: every one, latest first; an empty list when none.
    All,
}

/// The payments of `merchant_uid` in `status` (any when `None`), latest started first. PortOne
/// sorts by `-started` unless told otherwise; the sandbox knows no other sorting.
fn of_order<'a>(
    payments: &'a BTreeMap<String, SandboxPayment>,
    merchant_uid: &str,
    status: Option<&str>,
) -> Vec<&'a SandboxPayment> {
    let mut found: Vec<&SandboxPayment> = payments
        .values()
        .filter(|payment| payment.merchant_uid == merchant_uid && payment.has_status(status))
        .collect();
    found.sort_by_key(|payment| std::cmp::Reverse((payment.started_at, payment.made)));
    found
}

/// Answers a lookup by order as PortOne does: faults (those of `portone.payment`), the token,
/// the status filter, then the payment(s).
async fn lookup_by_order(
    sandbox: &Sandbox,
    headers: &HeaderMap,
    merchant_uid: &str,
    status: Option<&str>,
    many: Many,
) -> Response {
    let injected = sandbox.before("portone.payment").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if !authorised(sandbox, headers) {
        return envelope(StatusCode::UNAUTHORIZED, -1, Some("Unauthorized"), None);
    }
    if status.is_some_and(|status| !PAYMENT_STATUSES.contains(&status)) {
        return envelope(
            StatusCode::BAD_REQUEST,
            -1,
            Some("payment_status 는 ready, paid, failed, cancelled 중 하나여야 합니다."),
            None,
        );
    }
    let response = {
        let state = sandbox.lock();
        let found = of_order(&state.portone.payments, merchant_uid, status);
        let legacy = found.iter().any(|payment| payment.legacy);
        match (many, found.first()) {
            (Many::Latest, None) => not_found(),
            (Many::Latest, Some(latest)) => ok_as(&latest.wire(), latest.legacy),
            (Many::All, _) => {
                let all: Vec<serde_json::Value> =
                    found.iter().map(|payment| payment.wire()).collect();
                ok_as(&json!(all), legacy)
            }
        }
    };
    sandbox.after(&injected, response).await
}

/// `GET /payments/find/{merchant_uid}`: the latest started payment of an order.
pub(super) async fn find(
    State(sandbox): State<Arc<Sandbox>>,
    Path(merchant_uid): Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup_by_order(&sandbox, &headers, &merchant_uid, None, Many::Latest).await
}

/// `GET /payments/find/{merchant_uid}/{payment_status}`: the latest of an order in a status.
pub(super) async fn find_in_status(
    State(sandbox): State<Arc<Sandbox>>,
    Path((merchant_uid, status)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    lookup_by_order(
        &sandbox,
        &headers,
        &merchant_uid,
        Some(&status),
        Many::Latest,
    )
    .await
}

/// `GET /payments/findAll/{merchant_uid}`: every payment of an order, latest first.
pub(super) async fn find_all(
    State(sandbox): State<Arc<Sandbox>>,
    Path(merchant_uid): Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup_by_order(&sandbox, &headers, &merchant_uid, None, Many::All).await
}

/// `GET /payments/findAll/{merchant_uid}/{payment_status}`: every one of an order in a status.
pub(super) async fn find_all_in_status(
    State(sandbox): State<Arc<Sandbox>>,
    Path((merchant_uid, status)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    lookup_by_order(&sandbox, &headers, &merchant_uid, Some(&status), Many::All).await
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
    let balance = payment.balance();
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
    payment.record_cancel(
        amount,
        request.reason.clone().unwrap_or_default(),
        now,
        cancellation_id,
    );
    ok_as(&payment.wire(), payment.legacy)
}

/// What a new payment is made of.
struct NewPayment<'a> {
    merchant_uid: &'a str,
    name: &'a str,
    amount: i64,
    status: &'a str,
    currency: &'a str,
    legacy: bool,
}

fn insert_payment(sandbox: &Sandbox, new: &NewPayment<'_>) -> Result<SandboxPayment, &'static str> {
    let NewPayment {
        merchant_uid,
        name,
        amount,
        status,
        currency,
        legacy,
    } = *new;
    let now = sandbox.clock.now().timestamp();
    // 2018's ids began `imps_`; kassa must take either.
    let prefix = if legacy { "imps" } else { "imp" };
    let imp_uid = format!("{prefix}_{}", sandbox.random_digits(12));
    let mut payment = SandboxPayment {
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
        started_at: now,
        made: 0,
        legacy,
        cancel_history: Vec::new(),
        refunds_executed: 0,
        console_refunds: 0,
    };
    let mut state = sandbox.lock();
    if state.portone.payments.len() >= PAYMENTS_MAX {
        return Err("the sandbox holds its maximum number of payments; restart it");
    }
    state.portone.made += 1;
    payment.made = state.portone.made;
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
    /// Answer this payment in the shape of PortOne's 2018–2023 API (PG-CONTRACTS §6).
    #[serde(default)]
    legacy: bool,
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
    if !PAYMENT_STATUSES.contains(&request.status.as_str()) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "status must be paid, ready, failed or cancelled",
        );
    }
    let new = NewPayment {
        merchant_uid: &request.merchant_uid,
        name: &request.name,
        amount: request.amount,
        status: &request.status,
        currency: &request.currency,
        legacy: request.legacy,
    };
    match insert_payment(&sandbox, &new) {
        Ok(payment) => (StatusCode::CREATED, Json(control_view(&payment))).into_response(),
        Err(message) => control_error(StatusCode::INSUFFICIENT_STORAGE, message),
    }
}

fn control_view(payment: &SandboxPayment) -> serde_json::Value {
    let mut view = payment.wire();
    view["refunds_executed"] = json!(payment.refunds_executed);
    view["console_refunds"] = json!(payment.console_refunds);
    view["legacy"] = json!(payment.legacy);
    view
}

#[derive(Deserialize)]
pub(super) struct ConsoleRefund {
    /// The won to refund; none refunds the whole balance.
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /_control/portone/payments/{imp_uid}/refund`: a cancel made in PortOne's console, with
/// no checksum and without kassa knowing. It shows in `cancel_history` and `cancel_amount` as
/// an API cancel does, and the payment becomes `cancelled` when nothing is left.
pub(super) async fn control_refund(
    State(sandbox): State<Arc<Sandbox>>,
    Path(imp_uid): Path<String>,
    Json(request): Json<ConsoleRefund>,
) -> Response {
    let now = sandbox.clock.now().timestamp();
    let cancellation_id = format!("cancel_{}", sandbox.random_digits(12));
    let mut state = sandbox.lock();
    let Some(payment) = state.portone.payments.get_mut(&imp_uid) else {
        return control_error(StatusCode::NOT_FOUND, "no such payment");
    };
    // The amount first: a cancelled payment has a zero balance, so any amount is out of range.
    let balance = payment.balance();
    let amount = request.amount.unwrap_or(balance);
    if !(1..=balance).contains(&amount) {
        return control_error(
            StatusCode::BAD_REQUEST,
            &format!("amount must be within 1..={balance}, the payment's balance"),
        );
    }
    if payment.status != "paid" {
        return control_error(StatusCode::CONFLICT, "only a paid payment can be refunded");
    }
    let reason = request
        .reason
        .unwrap_or_else(|| CONSOLE_REFUND_REASON.to_owned());
    payment.record_cancel(amount, reason, now, cancellation_id);
    payment.console_refunds += 1;
    Json(control_view(payment)).into_response()
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
    let new = NewPayment {
        merchant_uid: &form.merchant_uid,
        name: &form.name,
        amount: form.amount,
        status,
        currency: "KRW",
        legacy: false,
    };
    let payment = match insert_payment(&sandbox, &new) {
        Ok(payment) => payment,
        Err(message) => return (StatusCode::INSUFFICIENT_STORAGE, message).into_response(),
    };
    let mut query = vec![
        ("imp_uid", payment.imp_uid.clone()),
        ("merchant_uid", payment.merchant_uid.clone()),
        ("imp_success", approve.to_string()),
    ];
    if form.decision == "card_declined" {
        query.push(("error_code", "F0004".into()));
        query.push(("error_msg", "[카드사 거절] 한도가 초과되었습니다.".into()));
    } else if !approve {
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

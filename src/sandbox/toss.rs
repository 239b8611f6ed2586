//! The sandbox's Toss Payments: confirm, lookups by `paymentKey` and `orderId`, cancel, and a
//! checkout window that redirects to the shop's success or fail URL, in Toss's field names.
//!
//! Cancel behaves as Toss's live API was seen to (PG-CONTRACTS §3.3 and §6):
//! - every 2xx and 4xx answer is kept under its `Idempotency-Key` (per key and URL, for 15 days)
//!   and replayed; 5xx answers are not kept, so a retry after one is carried out;
//! - a repeat that arrives while the first request of its key still runs answers 409
//!   `IDEMPOTENT_REQUEST_PROCESSING` and is not kept;
//! - partial cancels that add up to the whole leave `PARTIAL_CANCELED` with a zero balance, and
//!   one more cancel is 403 `NOT_CANCELABLE_AMOUNT`; only a full cancel makes it `CANCELED`;
//! - `refundableAmount` is an optimistic guard on the balance (400 on a mismatch);
//! - two cancels of one payment less than `CONSECUTIVE_CANCEL_GAP` apart: the second is 403
//!   `FORBIDDEN_CONSECUTIVE_REQUEST`.
//!
//! A console refund (`POST /_control/toss/payments/{paymentKey}/refund`) is a cancel made in
//! Toss's own console, behind kassa's back: no key, no guard, no consecutive-cancel gap, but the
//! same `cancels[]` entry, balance and status rule as an API cancel.
//!
//! Invariant: a refused, replayed or fault-answered cancel changes no balance.

use super::portone::{CheckoutPage, redirect_allowed};
use super::{Injected, PAYMENTS_MAX, Refusal, Sandbox, control_error, settlements};
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
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keys the sandbox accepts; kassa uses them in sandbox mode.
pub const SANDBOX_TOSS_SECRET_KEY: &str = "test_sk_sandbox_kassa";
pub const SANDBOX_TOSS_CLIENT_KEY: &str = "test_ck_sandbox_kassa";
/// How long Toss remembers an `Idempotency-Key`.
const IDEMPOTENCY_DAYS: i64 = 15;
/// Most remembered idempotency keys; past it, new answers are not kept.
const IDEMPOTENCY_ENTRIES_MAX: usize = 100_000;
/// Longest `Idempotency-Key` Toss accepts.
const IDEMPOTENCY_KEY_LEN_MAX: usize = 300;
/// Toss processes two cancels of one payment within a second once; the sandbox refuses the
/// second. Measured in real time, like Payple's settlement gap: it is about how kassa paces its
/// calls, which the injected clock does not see.
const CONSECUTIVE_CANCEL_GAP: Duration = Duration::from_secs(1);

/// An (Idempotency-Key, path) pair: the scope Toss keeps an answer under.
type Slot = (String, String);

#[derive(Debug, Default)]
pub(super) struct TossState {
    payments: BTreeMap<String, TossPayment>,
    /// (Idempotency-Key, path) → (status, body, first use).
    replies: HashMap<Slot, (StatusCode, Value, DateTime<Utc>)>,
    /// The slots of the requests still being processed, their answer held included.
    in_flight: HashSet<Slot>,
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

    /// Every refund executed on a KST day.
    pub(super) fn refunded_on(&self, date: chrono::NaiveDate) -> Vec<settlements::Refund> {
        self.payments
            .values()
            .flat_map(|payment| {
                payment
                    .cancels
                    .iter()
                    .filter(move |cancel| cancel.at.with_timezone(&Seoul).date_naive() == date)
                    .map(|cancel| settlements::Refund {
                        order_id: payment.order_id.clone(),
                        amount: cancel.amount,
                        at: cancel.at,
                        transaction_key: Some(cancel.transaction_key.clone()),
                    })
            })
            .collect()
    }
}

/// One executed cancel, as `cancels[]` shows it.
#[derive(Debug, Clone)]
struct TossCancel {
    transaction_key: String,
    reason: String,
    amount: i64,
    /// The balance left after this cancel.
    refundable_after: i64,
    at: DateTime<Utc>,
}

impl TossCancel {
    fn wire(&self) -> Value {
        json!({
            "transactionKey": self.transaction_key,
            "cancelReason": self.reason,
            "cancelAmount": self.amount,
            "taxFreeAmount": 0,
            "refundableAmount": self.refundable_after,
            "canceledAt": kst(self.at),
            "cancelStatus": "DONE",
        })
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
    cancels: Vec<TossCancel>,
    /// Every executed cancel, API and console alike.
    refunds_executed: u32,
    /// The cancels made in Toss's console, behind kassa's back.
    console_refunds: u32,
    /// The `Idempotency-Key` of every cancel call, in order, for tests to inspect.
    cancel_keys: Vec<String>,
    /// When the last cancel of this payment was processed, in real time.
    last_cancel: Option<Instant>,
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
            "cancels": if self.cancels.is_empty() {
                Value::Null
            } else {
                self.cancels.iter().map(TossCancel::wire).collect()
            },
            "failure": null,
        })
    }
}

/// Toss's message for an error code. Kassa matches codes, never messages; these are Toss's
/// wording so logs and screens read as they would live.
fn message_of(code: &str) -> &'static str {
    match code {
        "ALREADY_CANCELED_PAYMENT" => "이미 취소된 결제 입니다.",
        "ALREADY_PROCESSED_PAYMENT" => "이미 처리된 결제 입니다.",
        "NOT_CANCELABLE_AMOUNT" => "취소 할 수 없는 금액 입니다.",
        "NOT_CANCELABLE_PAYMENT" => "취소 할 수 없는 결제 입니다.",
        "FORBIDDEN_CONSECUTIVE_REQUEST" => {
            "반복적인 요청은 허용되지 않습니다. 잠시 후 다시 시도해주세요."
        }
        "NOT_MATCHES_REFUNDABLE_AMOUNT" => "환불 가능 금액이 일치하지 않습니다.",
        "IDEMPOTENT_REQUEST_PROCESSING" => "이전 멱등 요청이 처리 중입니다.",
        "INVALID_IDEMPOTENCY_KEY" => "멱등키가 올바르지 않습니다.",
        "NOT_FOUND_PAYMENT" => "존재하지 않는 결제 정보 입니다.",
        "UNAUTHORIZED_KEY" => "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.",
        "PROVIDER_ERROR" => "일시적인 오류가 발생했습니다. 잠시 후 다시 시도해주세요.",
        "REFUND_REJECTED" => "환불이 거절되었습니다.",
        "FAILED_INTERNAL_SYSTEM_PROCESSING" => {
            "내부 시스템 처리 작업이 실패했습니다. 잠시 후 다시 시도해주세요."
        }
        "FAILED_REFUND_PROCESS" => "환불 처리에 실패했습니다. 잠시 후 다시 시도해주세요.",
        "INVALID_REQUEST" => "잘못된 요청입니다.",
        _ => "샌드박스가 주입한 오류입니다.",
    }
}

/// Toss's error body for `code`, with Toss's message for it.
fn refusal(status: StatusCode, code: &str) -> (StatusCode, Value) {
    (status, json!({ "code": code, "message": message_of(code) }))
}

/// The answer of an `error` fault: the status the test chose (400 by default) and Toss's body.
fn injected_refusal(injected: &Refusal) -> (StatusCode, Value) {
    refusal(injected.status_or(StatusCode::BAD_REQUEST), &injected.code)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

/// What a 500, 401 or timeout fault answers: Toss failing before it looks at the request.
fn failure(status: StatusCode) -> Response {
    if status == StatusCode::UNAUTHORIZED {
        return unauthorised();
    }
    error(
        status,
        "FAILED_INTERNAL_SYSTEM_PROCESSING",
        message_of("FAILED_INTERNAL_SYSTEM_PROCESSING"),
    )
}

/// A fault's answer in Toss's error body, or `None` to go on.
pub(super) fn fault_answer(injected: &Injected) -> Option<Response> {
    match injected {
        Injected::Fail(status) => Some(failure(*status)),
        Injected::Refuse(refused) => Some(answer(injected_refusal(refused))),
        Injected::Nothing | Injected::LoseAnswer(_) | Injected::TaxsaveFail => None,
    }
}

/// A (status, body) pair as a JSON response.
fn answer((status, body): (StatusCode, Value)) -> Response {
    (status, Json(body)).into_response()
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
    /// The balance the caller expects; a cancel is refused when Toss's differs.
    #[serde(default)]
    refundable_amount: Option<i64>,
}

/// Whether Toss keeps an answer under its key: every 2xx and 4xx is replayed for 15 days (a 4xx
/// refusal can never turn into a success under the same key); a 5xx is not, so a retry after
/// one is carried out.
fn kept(status: StatusCode) -> bool {
    status.is_success() || status.is_client_error()
}

/// Marks a slot as being processed for as long as it lives. It is dropped when the answer has
/// been sent, or when the client gave up and the request was dropped mid-hold, so a slot is
/// never left busy.
#[derive(Debug)]
struct InFlight {
    sandbox: Arc<Sandbox>,
    slot: Slot,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.sandbox.lock().toss.in_flight.remove(&self.slot);
    }
}

/// What Toss does with a request under an `Idempotency-Key`.
enum Claim {
    /// The slot is now this request's.
    Mine(InFlight),
    /// An earlier request of the slot is still running.
    Busy,
    /// The slot's kept answer.
    Replay(StatusCode, Value),
}

fn claim(sandbox: &Arc<Sandbox>, slot: Slot, now: DateTime<Utc>) -> Claim {
    let mut state = sandbox.lock();
    state
        .toss
        .replies
        .retain(|_, (_, _, first)| now - *first < chrono::Duration::days(IDEMPOTENCY_DAYS));
    // Busy before replay: a held answer is already kept, but its request has not finished.
    if state.toss.in_flight.contains(&slot) {
        return Claim::Busy;
    }
    if let Some((status, body, _)) = state.toss.replies.get(&slot) {
        return Claim::Replay(*status, body.clone());
    }
    state.toss.in_flight.insert(slot.clone());
    Claim::Mine(InFlight {
        sandbox: Arc::clone(sandbox),
        slot,
    })
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
    // A 500, 401 or timeout fault is Toss failing before it looks at the key: nothing is kept.
    if let Injected::Fail(status) = injected {
        return failure(status);
    }
    // Toss scopes a key by API key too, so a call without a valid one has no slot to keep.
    if !authorised(&headers) {
        return unauthorised();
    }
    let now = sandbox.clock.now();
    let path = format!("/v1/payments/{payment_key}/cancel");
    let mut in_flight = None;
    if let Some(key) = &key {
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
            return answer(refusal(StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY"));
        }
        match claim(&sandbox, (key.clone(), path.clone()), now) {
            Claim::Mine(guard) => in_flight = Some(guard),
            // Not kept: once the first finishes, the same key gets its answer.
            Claim::Busy => {
                let busy = answer(refusal(
                    StatusCode::CONFLICT,
                    "IDEMPOTENT_REQUEST_PROCESSING",
                ));
                return sandbox.after(&injected, busy).await;
            }
            // A repeat of a key is answered with the first answer and not executed again.
            Claim::Replay(status, body) => {
                return sandbox.after(&injected, answer((status, body))).await;
            }
        }
    }
    let (status, body) = match &injected {
        // An injected refusal stands where Toss's own answer would, so it is kept like one.
        Injected::Refuse(refused) => injected_refusal(refused),
        _ => {
            let transaction_key = format!("tx_{}", sandbox.random_digits(TRANSACTION_KEY_DIGITS));
            execute(&sandbox, &payment_key, &body, now, &transaction_key)
        }
    };
    // Kept before a lost answer is held, so the answer survives a client that gives up; the
    // slot stays busy until the hold ends.
    if let Some(key) = key
        && kept(status)
    {
        let mut state = sandbox.lock();
        if state.toss.replies.len() < IDEMPOTENCY_ENTRIES_MAX {
            state
                .toss
                .replies
                .insert((key, path), (status, body.clone(), now));
        }
    }
    let response = sandbox.after(&injected, answer((status, body))).await;
    drop(in_flight);
    response
}

/// Carries out one cancel request that reached Toss's cancel logic.
fn execute(
    sandbox: &Sandbox,
    payment_key: &str,
    body: &[u8],
    now: DateTime<Utc>,
    transaction_key: &str,
) -> (StatusCode, Value) {
    let Ok(request) = serde_json::from_slice::<CancelBody>(body) else {
        return refusal(StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    };
    let mut state = sandbox.lock();
    let Some(payment) = state.toss.payments.get_mut(payment_key) else {
        return refusal(StatusCode::NOT_FOUND, "NOT_FOUND_PAYMENT");
    };
    // Real time on purpose, as for Payple's settlement gap. A refused repeat does not move the
    // mark, so a client that backs off a second after the first cancel gets through.
    let started = Instant::now();
    if payment
        .last_cancel
        .is_some_and(|last| started.duration_since(last) < CONSECUTIVE_CANCEL_GAP)
    {
        return refusal(StatusCode::FORBIDDEN, "FORBIDDEN_CONSECUTIVE_REQUEST");
    }
    payment.last_cancel = Some(started);
    apply_cancel(payment, &request, now, transaction_key)
}

fn apply_cancel(
    payment: &mut TossPayment,
    request: &CancelBody,
    now: DateTime<Utc>,
    transaction_key: &str,
) -> (StatusCode, Value) {
    if payment.status == "CANCELED" {
        return refusal(StatusCode::BAD_REQUEST, "ALREADY_CANCELED_PAYMENT");
    }
    if payment.status != "DONE" && payment.status != "PARTIAL_CANCELED" {
        return refusal(StatusCode::FORBIDDEN, "NOT_CANCELABLE_PAYMENT");
    }
    if request
        .refundable_amount
        .is_some_and(|expected| expected != payment.balance_amount)
    {
        return refusal(StatusCode::BAD_REQUEST, "NOT_MATCHES_REFUNDABLE_AMOUNT");
    }
    // Partial cancels that added up to the whole leave `PARTIAL_CANCELED` with nothing left:
    // Toss answers the next cancel with this, not with `ALREADY_CANCELED_PAYMENT`.
    let amount = request.cancel_amount.unwrap_or(payment.balance_amount);
    if payment.balance_amount == 0 || amount <= 0 || amount > payment.balance_amount {
        return refusal(StatusCode::FORBIDDEN, "NOT_CANCELABLE_AMOUNT");
    }
    // Only a full cancel makes a payment `CANCELED`: no amount (the whole balance), or the whole
    // total of a payment nothing was cancelled from yet.
    let full = request.cancel_amount.is_none()
        || (amount == payment.total_amount && payment.cancels.is_empty());
    payment.balance_amount -= amount;
    payment.refunds_executed += 1;
    payment.status = if full {
        "CANCELED".into()
    } else {
        "PARTIAL_CANCELED".into()
    };
    payment.cancels.push(TossCancel {
        transaction_key: transaction_key.to_owned(),
        reason: request.cancel_reason.clone(),
        amount,
        refundable_after: payment.balance_amount,
        at: now,
    });
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
        console_refunds: 0,
        cancel_keys: Vec::new(),
        last_cancel: None,
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
    // Both spellings: the control view is camelCase like Toss, but the other PGs' views and
    // the tests written against them say `console_refunds`.
    view["consoleRefunds"] = json!(payment.console_refunds);
    view["console_refunds"] = json!(payment.console_refunds);
    view["cancelKeys"] = json!(payment.cancel_keys);
    view
}

/// The reason a console refund shows when the test gives none.
const CONSOLE_REFUND_REASON: &str = "관리자 콘솔 취소";
/// The digits of a console refund's `transactionKey`, as many as an API cancel's.
const TRANSACTION_KEY_DIGITS: usize = 16;

#[derive(Deserialize)]
pub(super) struct ConsoleRefund {
    /// The won to refund; none refunds the whole balance, which is a full cancel.
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /_control/toss/payments/{paymentKey}/refund`: a cancel made in Toss's console. It goes
/// through the API cancel's own rule, so the status and `cancels[]` come out the same.
pub(super) async fn control_refund(
    State(sandbox): State<Arc<Sandbox>>,
    Path(payment_key): Path<String>,
    Json(request): Json<ConsoleRefund>,
) -> Response {
    let now = sandbox.clock.now();
    let transaction_key = format!("tx_{}", sandbox.random_digits(TRANSACTION_KEY_DIGITS));
    let mut state = sandbox.lock();
    let Some(payment) = state.toss.payments.get_mut(&payment_key) else {
        return control_error(StatusCode::NOT_FOUND, "no such payment");
    };
    // The amount first: a cancelled payment has a zero balance, so any amount is out of range.
    let balance = payment.balance_amount;
    if !(1..=balance).contains(&request.amount.unwrap_or(balance)) {
        return control_error(
            StatusCode::BAD_REQUEST,
            &format!("amount must be within 1..={balance}, the payment's balance"),
        );
    }
    if payment.status != "DONE" && payment.status != "PARTIAL_CANCELED" {
        return control_error(
            StatusCode::CONFLICT,
            "only a DONE or PARTIAL_CANCELED payment can be refunded",
        );
    }
    let cancel = CancelBody {
        cancel_reason: request
            .reason
            .unwrap_or_else(|| CONSOLE_REFUND_REASON.to_owned()),
        cancel_amount: request.amount,
        refundable_amount: None,
    };
    let (status, body) = apply_cancel(payment, &cancel, now, &transaction_key);
    if !status.is_success() {
        // Not reached after the checks above; answered rather than assumed.
        return control_error(StatusCode::BAD_REQUEST, &body.to_string());
    }
    payment.console_refunds += 1;
    Json(control_view(payment)).into_response()
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
        let (code, message) = if form.decision == "card_declined" {
            ("REJECT_CARD_COMPANY", "카드사에서 승인을 거절했습니다.")
        } else {
            (
                "PAY_PROCESS_CANCELED",
                "사용자에 의해 결제가 취소되었습니다.",
            )
        };
        let query = [
            ("code", code.to_owned()),
            ("message", message.to_owned()),
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

//! The sandbox's Payple: partner authentication with `return_url` and `PCD_PAY_HOST` pointing at
//! itself, result inquiry, refund, and a settlement inquiry paged with `PCD_LASTKEY` that
//! refuses calls less than a second apart, as a rate-limited PG would. All values are strings.
//!
//! As Payple's published answers show (PG-CONTRACTS §6): the auth answer's `cst_id`/`custKey`
//! are transformed values bound to the AuthKey issued with them, and every follow-up must send
//! those back (the partner's configured pair is refused, `AUTH0003`); the result inquiry says
//! nothing about refunds, so only a refund's own answer or the settlement lines tell whether
//! one went through; and a refund can succeed while its cash receipt's cancellation fails
//! (`PCD_TAXSAVE_RST: "N"`). `PAYC0009` "already cancelled" is the sandbox's own code: Payple
//! documents none.
//!
//! Two control calls play what Payple does on its own (§4.4): a console refund, made behind
//! kassa's back and counted like any refund (and, like any, invisible in the inquiry), and a
//! webhook notice, sent as Payple sends one: a `HEAD`, then the form-encoded `POST`, each given
//! `WEBHOOK_TIMEOUT`. A notice is unsigned, so it is only a claim. Invariant: notices go to
//! loopback addresses only, so the sandbox can never be used to send requests elsewhere.

use super::{Injected, Refusal, Sandbox, control_error, settlements};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Asia::Seoul;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The partner credentials the sandbox accepts; kassa uses them in sandbox mode.
pub const SANDBOX_CST_ID: &str = "sandbox_cst_id";
pub const SANDBOX_CUST_KEY: &str = "sandbox_cust_key_0000";
pub const SANDBOX_REFUND_KEY: &str = "sandbox_refund_key_0000";
/// How long an `AuthKey` is good for.
const AUTH_KEY_MINUTES: i64 = 30;
/// The settlement inquiry refuses calls closer together than this.
const SETTLEMENT_GAP_MS: u128 = 1_000;
/// Most auth keys remembered.
const AUTH_KEYS_MAX: usize = 10_000;
/// How many random digits the transformed `cst_id` and `custKey` of an auth answer carry.
const TRANSFORMED_CST_ID_DIGITS: usize = 12;
const TRANSFORMED_CUST_KEY_DIGITS: usize = 24;

#[derive(Debug, Default)]
pub(super) struct PaypleState {
    /// Order id → payment.
    payments: BTreeMap<String, PayplePayment>,
    /// AuthKey → what it was issued for and with.
    auth_keys: HashMap<String, IssuedAuth>,
    /// When the settlement inquiry was last called, on the real clock and on the sandbox's.
    last_settlement_call: Option<(std::time::Instant, DateTime<Utc>)>,
}

/// An AuthKey as the sandbox issued it.
#[derive(Debug, Clone)]
struct IssuedAuth {
    /// The purpose flag it was issued for: `check`, `cancel` or `settlement`.
    purpose: &'static str,
    expires: DateTime<Utc>,
    /// The transformed partner values issued with it; its follow-ups must send exactly these.
    cst_id: String,
    cust_key: String,
}

/// How long Payple gives a webhook URL to answer each of its requests.
const WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Most `fields` a webhook control call may add or replace.
const WEBHOOK_FIELDS_MAX: usize = 64;

/// One executed refund.
#[derive(Debug, Clone)]
struct PaypleRefund {
    amount: i64,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct PayplePayment {
    order_id: String,
    goods: String,
    pay_type: String,
    total: i64,
    /// The refunded total, the sum of `refunds`.
    refunded: i64,
    paid_at: DateTime<Utc>,
    /// Every executed refund, API and console alike.
    refunds_executed: u32,
    /// The refunds made in Payple's console, behind kassa's back.
    console_refunds: u32,
    refunds: Vec<PaypleRefund>,
}

/// Most refunds one payment takes. Each refunds at least 1 won, but a large payment could
/// still hold millions; tests make a handful.
const REFUNDS_PER_PAYMENT_MAX: usize = 1_000;

impl PaypleState {
    pub(super) fn approved_on(&self, date: NaiveDate) -> Vec<(String, i64)> {
        self.payments
            .values()
            .filter(|payment| payment.paid_at.with_timezone(&Seoul).date_naive() == date)
            .map(|payment| (payment.order_id.clone(), payment.total))
            .collect()
    }

    /// Every refund executed on a KST day.
    pub(super) fn refunded_on(&self, date: NaiveDate) -> Vec<settlements::Refund> {
        self.payments
            .values()
            .flat_map(|payment| {
                payment
                    .refunds
                    .iter()
                    .filter(move |refund| refund.at.with_timezone(&Seoul).date_naive() == date)
                    .map(|refund| settlements::Refund {
                        order_id: payment.order_id.clone(),
                        amount: refund.amount,
                        at: refund.at,
                        transaction_key: None,
                    })
            })
            .collect()
    }
}

fn pay_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&Seoul).format("%Y%m%d%H%M%S").to_string()
}

fn pay_date(at: DateTime<Utc>) -> String {
    at.with_timezone(&Seoul).format("%Y%m%d").to_string()
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body.get(field).and_then(Value::as_str).unwrap_or("")
}

fn pay_error(code: &str, message: &str) -> Response {
    Json(json!({ "PCD_PAY_RST": "error", "PCD_PAY_CODE": code, "PCD_PAY_MSG": message }))
        .into_response()
}

/// The sandbox's message for a Payple code, for refusals a fault makes up.
fn message_of(code: &str) -> &'static str {
    match code {
        "AUTH0003" => "가맹점 정보가 올바르지 않습니다.",
        "AUTH0005" => "인증키가 유효하지 않습니다.",
        "PAYC0001" => "환불키가 올바르지 않습니다.",
        "PAYC0003" => "환불 가능 금액을 초과했습니다.",
        "PAYC0009" => "이미 취소된 결제입니다.",
        "PAYC0404" => "취소할 결제건이 없습니다.",
        "PAYN0404" => "결제 내역이 없습니다.",
        "PAYS0429" => "요청이 너무 잦습니다. 1초에 1회까지 요청할 수 있습니다.",
        _ => "샌드박스가 주입한 오류입니다.",
    }
}

/// What a fault answers on a follow-up endpoint, or `None` to go on. Payple refuses inside a
/// 200 body, so an `error` fault answers 200 unless the test chose a status.
fn fault_answer(injected: &Injected) -> Option<Response> {
    match injected {
        Injected::Fail(status) => Some((*status, "sandbox: injected failure").into_response()),
        Injected::Refuse(Refusal { status, code }) => {
            let mut response = pay_error(code, message_of(code));
            *response.status_mut() = status.unwrap_or(StatusCode::OK);
            Some(response)
        }
        Injected::Nothing | Injected::LoseAnswer(_) | Injected::TaxsaveFail => None,
    }
}

/// This sandbox's own address as the caller reached it, for `return_url` and `PCD_PAY_HOST`.
fn own_host(sandbox: &Sandbox, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}{}", sandbox.prefix)
}

#[derive(Deserialize)]
pub(super) struct AuthBody {
    #[serde(default)]
    cst_id: String,
    #[serde(default, rename = "custKey")]
    cust_key: String,
    #[serde(default, rename = "PCD_PAYCHK_FLAG")]
    check: Option<String>,
    #[serde(default, rename = "PCD_PAYCANCEL_FLAG")]
    cancel: Option<String>,
    #[serde(default, rename = "PCD_SETTLEMENT_FLAG")]
    settlement: Option<String>,
}

/// `POST /payple/php/auth.php`: partner authentication, one purpose flag per call.
pub(super) async fn auth(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Json<AuthBody>,
) -> Response {
    let injected = sandbox.before("payple.auth").await;
    let refuse = |code: &str, message: &str| {
        Json(json!({ "result": "error", "result_msg": message, "code": code })).into_response()
    };
    match &injected {
        Injected::Fail(status) => return (*status, "sandbox: injected failure").into_response(),
        // The auth answer refuses in its own shape, not in `PCD_*` fields.
        Injected::Refuse(Refusal { status, code }) => {
            let mut response = refuse(code, message_of(code));
            *response.status_mut() = status.unwrap_or(StatusCode::OK);
            return response;
        }
        Injected::Nothing | Injected::LoseAnswer(_) | Injected::TaxsaveFail => {}
    }
    let Json(body) = body;
    let referer = headers
        .get(header::REFERER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if body.cst_id.is_empty() {
        return refuse("AUTH0001", "가맹점 아이디가 존재하지 않습니다.");
    }
    if body.cust_key.is_empty() {
        return refuse("AUTH0002", "가맹점 인증키가 존재하지 않습니다.");
    }
    if body.cst_id != SANDBOX_CST_ID || body.cust_key != SANDBOX_CUST_KEY {
        return refuse("AUTH0003", "등록되지 않은 가맹점입니다.");
    }
    if referer.is_empty() {
        return refuse(
            "AUTH0004",
            "등록된 도메인과 요청 도메인이 일치하지 않습니다.",
        );
    }
    let (flag, url) = match (
        body.check.as_deref(),
        body.cancel.as_deref(),
        body.settlement.as_deref(),
    ) {
        (Some("Y"), _, _) => ("check", "/payple/php/PayChkAct.php"),
        (_, Some("Y"), _) => ("cancel", "/payple/php/PayCancelAct.php"),
        (_, _, Some("Y")) => ("settlement", "/payple/php/SettlementAct.php"),
        _ => return refuse("AUTH0005", "요청 구분값이 없습니다."),
    };
    let auth_key = format!("ak_{}", sandbox.random_digits(32));
    let issued = IssuedAuth {
        purpose: flag,
        expires: sandbox.clock.now() + Duration::minutes(AUTH_KEY_MINUTES),
        cst_id: format!("t_{}", sandbox.random_digits(TRANSFORMED_CST_ID_DIGITS)),
        cust_key: format!("t_{}", sandbox.random_digits(TRANSFORMED_CUST_KEY_DIGITS)),
    };
    let (cst_id, cust_key) = (issued.cst_id.clone(), issued.cust_key.clone());
    {
        let mut state = sandbox.lock();
        if state.payple.auth_keys.len() >= AUTH_KEYS_MAX {
            let now = sandbox.clock.now();
            state
                .payple
                .auth_keys
                .retain(|_, issued| issued.expires > now);
        }
        // Still full of live keys: refuse rather than grow without bound.
        if state.payple.auth_keys.len() >= AUTH_KEYS_MAX {
            return refuse("AUTH0005", "인증키를 더 발급할 수 없습니다.");
        }
        state.payple.auth_keys.insert(auth_key.clone(), issued);
    }
    let host = own_host(&sandbox, &headers);
    let answer = json!({
        "result": "success",
        "result_msg": "사용자 인증 완료",
        "server_name": "sandbox",
        "cst_id": cst_id,
        "custKey": cust_key,
        "AuthKey": auth_key,
        "PCD_PAY_HOST": host,
        "PCD_PAY_URL": url,
        "return_url": format!("{host}{url}"),
    });
    sandbox.after(&injected, Json(answer).into_response()).await
}

/// Checks the partner fields of a follow-up call; `None` when they are right for `purpose`.
/// They must be the transformed pair issued with the AuthKey they come with: the partner's own
/// configured pair, or another AuthKey's, is refused.
fn refused(sandbox: &Sandbox, body: &Value, purpose: &str) -> Option<Response> {
    let (cst_id, cust_key) = (text(body, "PCD_CST_ID"), text(body, "PCD_CUST_KEY"));
    let wrong_partner = || Some(pay_error("AUTH0003", message_of("AUTH0003")));
    if cst_id == SANDBOX_CST_ID || cust_key == SANDBOX_CUST_KEY {
        return wrong_partner();
    }
    let now = sandbox.clock.now();
    let state = sandbox.lock();
    let Some(issued) = state.payple.auth_keys.get(text(body, "PCD_AUTH_KEY")) else {
        return Some(pay_error("AUTH0005", message_of("AUTH0005")));
    };
    if cst_id != issued.cst_id || cust_key != issued.cust_key {
        return wrong_partner();
    }
    if issued.purpose != purpose || issued.expires <= now {
        return Some(pay_error("AUTH0005", message_of("AUTH0005")));
    }
    None
}

fn result_fields(payment: &PayplePayment) -> Value {
    json!({
        "PCD_PAY_RST": "success",
        "PCD_PAY_CODE": "PAYN0000",
        "PCD_PAY_MSG": "결제완료",
        "PCD_PAY_OID": payment.order_id,
        "PCD_PAY_TYPE": payment.pay_type,
        "PCD_PAYER_ID": "sandbox_payer",
        "PCD_PAYER_NO": "1",
        "PCD_PAYER_NAME": "홍길동",
        "PCD_PAY_GOODS": payment.goods,
        "PCD_PAY_TOTAL": payment.total.to_string(),
        "PCD_PAY_TAXTOTAL": "0",
        "PCD_PAY_TIME": pay_time(payment.paid_at),
        "PCD_PAY_CARDNAME": "샌드박스카드",
        "PCD_PAY_CARDNUM": "1234-****-****-5678",
        "PCD_PAY_CARDTRADENUM": format!("tr_{}", payment.order_id),
        "PCD_PAY_CARDAUTHNO": "00000000",
    })
}

/// `POST /payple/php/PayChkAct.php`: result inquiry.
pub(super) async fn check(
    State(sandbox): State<Arc<Sandbox>>,
    Json(body): Json<Value>,
) -> Response {
    let injected = sandbox.before("payple.payment").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if let Some(response) = refused(&sandbox, &body, "check") {
        return response;
    }
    let found = sandbox
        .lock()
        .payple
        .payments
        .get(text(&body, "PCD_PAY_OID"))
        .filter(|payment| {
            pay_date(payment.paid_at) == text(&body, "PCD_PAY_DATE")
                && payment.pay_type == text(&body, "PCD_PAY_TYPE")
        })
        .map(result_fields);
    let response = match found {
        Some(fields) => Json(fields).into_response(),
        None => pay_error("PAYN0404", "결제 내역이 없습니다."),
    };
    sandbox.after(&injected, response).await
}

/// `POST /payple/php/PayCancelAct.php`: a full or partial refund.
pub(super) async fn cancel(
    State(sandbox): State<Arc<Sandbox>>,
    Json(body): Json<Value>,
) -> Response {
    let injected = sandbox.before("payple.cancel").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if let Some(response) = refused(&sandbox, &body, "cancel") {
        return response;
    }
    if text(&body, "PCD_REFUND_KEY") != SANDBOX_REFUND_KEY {
        return pay_error("PAYC0001", "환불키가 올바르지 않습니다.");
    }
    let now = sandbox.clock.now();
    let response = {
        let mut state = sandbox.lock();
        let payment = state
            .payple
            .payments
            .get_mut(text(&body, "PCD_PAY_OID"))
            .filter(|payment| pay_date(payment.paid_at) == text(&body, "PCD_PAY_DATE"));
        match (payment, text(&body, "PCD_REFUND_TOTAL").parse::<i64>()) {
            (None, _) => pay_error("PAYC0404", "취소할 결제건이 없습니다."),
            (Some(_), Err(_)) => pay_error("PAYC0002", "환불 금액이 올바르지 않습니다."),
            (Some(payment), Ok(_)) if payment.refunded == payment.total => {
                pay_error("PAYC0009", "이미 취소된 결제입니다.")
            }
            (Some(payment), Ok(amount))
                if amount <= 0 || amount > payment.total - payment.refunded =>
            {
                pay_error("PAYC0003", "환불 가능 금액을 초과했습니다.")
            }
            (Some(payment), Ok(_)) if payment.refunds.len() >= REFUNDS_PER_PAYMENT_MAX => {
                pay_error("PAYC0004", "이 결제건은 더 이상 부분 환불할 수 없습니다.")
            }
            (Some(payment), Ok(amount)) => {
                payment.refunded += amount;
                payment.refunds_executed += 1;
                payment.refunds.push(PaypleRefund { amount, at: now });
                let mut answer = json!({
                    "PCD_PAY_RST": "success",
                    "PCD_PAY_CODE": "PAYC0000",
                    "PCD_PAY_MSG": "환불성공",
                    "PCD_PAY_OID": payment.order_id,
                    "PCD_PAY_TYPE": payment.pay_type,
                    "PCD_PAY_GOODS": payment.goods,
                    "PCD_REFUND_TOTAL": amount.to_string(),
                    "PCD_REFUND_TAXTOTAL": "0",
                    "PCD_PAY_CARDTRADENUM": format!("rf_{}_{}", payment.order_id, payment.refunds_executed),
                    "PCD_PAY_TIME": pay_time(now),
                });
                // The money went back; only the cash receipt's cancellation failed.
                if matches!(injected, Injected::TaxsaveFail) {
                    answer["PCD_TAXSAVE_RST"] = json!("N");
                    answer["PCD_PAY_MSG"] = json!(
                        "환불성공 (현금영수증 발급취소에 실패했습니다. 현금영수증은 별도로 취소해주세요.)"
                    );
                }
                Json(answer).into_response()
            }
        }
    };
    sandbox.after(&injected, response).await
}

/// One settlement line in Payple's fields. A CANCEL line also says when the refund happened.
fn settlement_item(date: NaiveDate, line: &settlements::Line) -> Value {
    let noon = format!("{}120000", date.format("%Y%m%d"));
    let mut item = json!({
        "PCD_TXN_TYPE": if line.cancel { "CANCEL" } else { "APPROVAL" },
        "PCD_PAY_OID": line.order_id,
        "PCD_PAY_TIME": noon,
        "PCD_SETTLE_DATE": date.format("%Y%m%d").to_string(),
        "PCD_PAY_TYPE": "card",
        "PCD_PAYER_NAME": "홍길동",
        "PCD_PAY_GOODS": "상품",
        "PCD_PAY_AMOUNT": line.raw_amount.clone().unwrap_or_else(|| line.amount.to_string()),
        "PCD_FEE_SUPPLY": (line.fee * 10 / 11).to_string(),
        "PCD_FEE_VAT": (line.fee - line.fee * 10 / 11).to_string(),
        "PCD_FEE_TOTAL": line.raw_fee.clone().unwrap_or_else(|| line.fee.to_string()),
        "PCD_SETTLE_AMOUNT": line.settle_amount.to_string(),
    });
    if line.cancel {
        item["PCD_PAY_CANCEL_TIME"] = json!(line.cancel_at.map_or(noon, pay_time));
    }
    item
}

/// `POST /payple/php/SettlementAct.php`: a day's settlement lines, `PCD_LIMIT` at a time after
/// `PCD_LASTKEY`. A call less than a second after the last (on the real clock and on the
/// sandbox's) is refused.
pub(super) async fn settlements(
    State(sandbox): State<Arc<Sandbox>>,
    Json(body): Json<Value>,
) -> Response {
    let injected = sandbox.before("payple.settlements").await;
    if let Some(response) = fault_answer(&injected) {
        return response;
    }
    if let Some(response) = refused(&sandbox, &body, "settlement") {
        return response;
    }
    {
        let mut state = sandbox.lock();
        // Less than a second apart on both clocks: on the real one (kassa paces its calls in
        // real time) and on the sandbox's (which a test moves on instead of waiting).
        let now = (std::time::Instant::now(), sandbox.clock.now());
        let too_soon = state
            .payple
            .last_settlement_call
            .is_some_and(|(real, injected)| {
                now.0.duration_since(real).as_millis() < SETTLEMENT_GAP_MS
                    && (now.1 - injected).num_milliseconds()
                        < i64::try_from(SETTLEMENT_GAP_MS).unwrap_or(i64::MAX)
            });
        state.payple.last_settlement_call = Some(now);
        if too_soon {
            return pay_error(
                "PAYS0429",
                "요청이 너무 잦습니다. 1초에 1회까지 요청할 수 있습니다.",
            );
        }
    }
    let parse_day = |raw: &str| {
        NaiveDate::parse_from_str(raw, "%Y%m%d")
            .or_else(|_| NaiveDate::parse_from_str(raw, "%Y-%m-%d"))
    };
    let (Ok(start), Ok(end)) = (
        parse_day(text(&body, "PCD_START_DATE")),
        parse_day(text(&body, "PCD_END_DATE")),
    ) else {
        return pay_error("PAYS0001", "조회 기간이 올바르지 않습니다.");
    };
    if (end - start).num_days() > 31 || end < start {
        return pay_error("PAYS0002", "조회 기간은 31일 이내여야 합니다.");
    }
    let limit = text(&body, "PCD_LIMIT")
        .parse::<usize>()
        .unwrap_or(100)
        .clamp(1, 3_000);
    let offset = match text(&body, "PCD_LASTKEY") {
        "" => 0,
        raw => match raw
            .strip_prefix("lk_")
            .and_then(|number| number.parse::<usize>().ok())
        {
            Some(offset) => offset,
            None => return pay_error("PAYS0003", "PCD_LASTKEY 가 올바르지 않습니다."),
        },
    };
    let (content, total) = {
        let state = sandbox.lock();
        let lines: Vec<(NaiveDate, &settlements::Line)> = state
            .settlements
            .range((String::from("payple"), start)..=(String::from("payple"), end))
            .flat_map(|((_, date), lines)| lines.iter().map(move |line| (*date, line)))
            .collect();
        let page: Vec<Value> = lines
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(date, line)| settlement_item(*date, line))
            .collect();
        (page, lines.len())
    };
    let next = offset + content.len();
    let has_more = next < total;
    let answer = json!({
        "PCD_PAY_RST": "success",
        "PCD_PAY_CODE": "PAYS0000",
        "PCD_DATA": {
            "PCD_CONTENT": content,
            "PCD_HAS_MORE": if has_more { "Y" } else { "N" },
            "PCD_LASTKEY": if has_more { format!("lk_{next}") } else { String::new() },
            "PCD_PAGE_TOTALS": { "PCD_TOTAL_COUNT": total.to_string() },
        },
    });
    sandbox.after(&injected, Json(answer).into_response()).await
}

fn insert(
    sandbox: &Sandbox,
    order_id: &str,
    goods: &str,
    total: i64,
    paid_at: DateTime<Utc>,
) -> Result<PayplePayment, &'static str> {
    let payment = PayplePayment {
        order_id: order_id.to_owned(),
        goods: goods.to_owned(),
        pay_type: "card".into(),
        total,
        refunded: 0,
        paid_at,
        refunds_executed: 0,
        console_refunds: 0,
        refunds: Vec::new(),
    };
    let mut state = sandbox.lock();
    if state.payple.payments.len() >= super::PAYMENTS_MAX {
        return Err("the sandbox holds its maximum number of payments");
    }
    state
        .payple
        .payments
        .insert(order_id.to_owned(), payment.clone());
    Ok(payment)
}

#[derive(Deserialize)]
pub(super) struct ControlCreate {
    order_id: String,
    amount: i64,
    #[serde(default)]
    goods: String,
}

/// The sandbox's view of a payment for tests: the inquiry's fields plus what the inquiry never
/// says, the refunds.
fn control_view(payment: &PayplePayment) -> Value {
    let mut view = result_fields(payment);
    view["refunds_executed"] = json!(payment.refunds_executed);
    view["console_refunds"] = json!(payment.console_refunds);
    view["refunded"] = json!(payment.refunded);
    view["refunds"] = payment
        .refunds
        .iter()
        .map(|refund| {
            json!({ "amount": refund.amount, "at": refund.at.with_timezone(&Seoul).to_rfc3339() })
        })
        .collect();
    // Control view only, for tests written before `refunded`; the inquiry does not carry it.
    view["PCD_REFUND_TOTAL"] = json!(payment.refunded.to_string());
    view["pg_tid"] = json!(format!(
        "{}.{}.{}",
        payment.pay_type,
        pay_date(payment.paid_at),
        payment.order_id
    ));
    view
}

/// `POST /_control/payple/payments`: a paid Payple payment, as if a buyer had paid.
pub(super) async fn control_create(
    State(sandbox): State<Arc<Sandbox>>,
    Json(request): Json<ControlCreate>,
) -> Response {
    match insert(
        &sandbox,
        &request.order_id,
        &request.goods,
        request.amount,
        sandbox.clock.now(),
    ) {
        Ok(payment) => (StatusCode::CREATED, Json(control_view(&payment))).into_response(),
        Err(message) => control_error(StatusCode::INSUFFICIENT_STORAGE, message),
    }
}

pub(super) async fn control_get(
    State(sandbox): State<Arc<Sandbox>>,
    Path(order_id): Path<String>,
) -> Response {
    match sandbox.lock().payple.payments.get(&order_id) {
        Some(payment) => Json(control_view(payment)).into_response(),
        None => control_error(StatusCode::NOT_FOUND, "no such payment"),
    }
}

#[derive(Deserialize)]
pub(super) struct ConsoleRefund {
    /// The won to refund; none refunds all that is left.
    #[serde(default)]
    amount: Option<i64>,
}

/// `POST /_control/payple/payments/{order_id}/refund`: a refund made in Payple's console. It
/// counts as a refund in every view and becomes a CANCEL line of its day, like one kassa asked
/// for; the inquiry does not show it, as it shows no refund.
pub(super) async fn control_refund(
    State(sandbox): State<Arc<Sandbox>>,
    Path(order_id): Path<String>,
    Json(request): Json<ConsoleRefund>,
) -> Response {
    let now = sandbox.clock.now();
    let mut state = sandbox.lock();
    let Some(payment) = state.payple.payments.get_mut(&order_id) else {
        return control_error(StatusCode::NOT_FOUND, "no such payment");
    };
    let left = payment.total - payment.refunded;
    let amount = request.amount.unwrap_or(left);
    if !(1..=left).contains(&amount) {
        return control_error(
            StatusCode::BAD_REQUEST,
            &format!("amount must be within 1..={left}, what is left to refund"),
        );
    }
    if payment.refunds.len() >= REFUNDS_PER_PAYMENT_MAX {
        return control_error(
            StatusCode::INSUFFICIENT_STORAGE,
            "the payment holds its maximum number of refunds",
        );
    }
    payment.refunded += amount;
    payment.refunds_executed += 1;
    payment.console_refunds += 1;
    payment.refunds.push(PaypleRefund { amount, at: now });
    Json(control_view(payment)).into_response()
}

/// What a webhook notice reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum NoticeKind {
    /// The payment's result, as the result post carries it.
    #[default]
    Payment,
    /// A refund's result: the payment's fields, the refunded won and when.
    Cancel,
}

#[derive(Deserialize)]
pub(super) struct WebhookRequest {
    order_id: String,
    url: String,
    #[serde(default)]
    kind: NoticeKind,
    /// Fields added to the notice or replacing its own, to forge a claim kassa must check.
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// Whether `url` is an `http(s)` address on this machine's loopback: the only place the sandbox
/// sends notices to, so that it is nobody's relay.
fn loopback(url: &str) -> Option<reqwest::Url> {
    let url = reqwest::Url::parse(url).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?;
    let on_loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|address| address.is_loopback());
    on_loopback.then_some(url)
}

/// The form fields of a notice: the result post's, and for a cancel the refund Payple claims:
/// the payment's latest refund, or, when it has none, all of it now (a claim with nothing
/// behind it, which kassa must not take alone).
fn notice_fields(
    payment: &PayplePayment,
    kind: NoticeKind,
    now: DateTime<Utc>,
) -> BTreeMap<String, String> {
    let mut fields: BTreeMap<String, String> = match result_fields(payment) {
        Value::Object(map) => map
            .into_iter()
            .map(|(name, value)| (name, value.as_str().unwrap_or_default().to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    };
    if kind == NoticeKind::Cancel {
        let (amount, at) = payment
            .refunds
            .last()
            .map_or((payment.total, now), |refund| (refund.amount, refund.at));
        fields.insert("PCD_REFUND_TOTAL".into(), amount.to_string());
        fields.insert("PCD_PAY_CANCEL_TIME".into(), pay_time(at));
    }
    fields
}

/// The outcome of one request of a notice: the status the URL answered, or why there was none.
fn outcome(result: Result<reqwest::Response, reqwest::Error>) -> (Value, Option<String>) {
    match result {
        Ok(response) => (json!(response.status().as_u16()), None),
        Err(error) if error.is_timeout() => (Value::Null, Some("timed out".into())),
        Err(error) => (Value::Null, Some(error.to_string())),
    }
}

/// `POST /_control/payple/webhook`: sends a payment's notice to `url` as Payple would, a `HEAD`
/// and then the form-encoded `POST`, and answers the statuses the URL gave (`null` with an
/// error when it gave none).
pub(super) async fn control_webhook(
    State(sandbox): State<Arc<Sandbox>>,
    Json(request): Json<WebhookRequest>,
) -> Response {
    let Some(url) = loopback(&request.url) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "url must be an http(s) address on 127.0.0.1, localhost or [::1]",
        );
    };
    if request.fields.len() > WEBHOOK_FIELDS_MAX {
        return control_error(StatusCode::BAD_REQUEST, "too many fields");
    }
    let now = sandbox.clock.now();
    let fields = {
        let state = sandbox.lock();
        let Some(payment) = state.payple.payments.get(&request.order_id) else {
            return control_error(StatusCode::NOT_FOUND, "no such payment");
        };
        let mut fields = notice_fields(payment, request.kind, now);
        fields.extend(request.fields);
        fields
    };
    let Ok(body) = serde_urlencoded::to_string(&fields) else {
        return control_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the notice cannot be encoded",
        );
    };
    // kassa installs the same provider for its own client; whichever comes first stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No redirects: a loopback URL must not hand the notice on to another host.
    let client = match reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("payple-sandbox-webhook")
        .build()
    {
        Ok(client) => client,
        Err(error) => return control_error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    };
    let (head_status, head_error) = outcome(client.head(url.clone()).send().await);
    let (post_status, post_error) = outcome(
        client
            .post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await,
    );
    Json(json!({
        "head_status": head_status,
        "post_status": post_status,
        "head_error": head_error,
        "post_error": post_error,
        "sent": fields,
    }))
    .into_response()
}

/// The AuthKeys the sandbox has issued, and the transformed partner values issued with each, so
/// a test can look for them in kassa's logs.
pub(super) async fn control_auth_keys(State(sandbox): State<Arc<Sandbox>>) -> Json<Value> {
    let state = sandbox.lock();
    let keys: Vec<&String> = state.payple.auth_keys.keys().collect();
    let issued: Vec<Value> = state
        .payple
        .auth_keys
        .iter()
        .map(|(key, issued)| {
            json!({
                "auth_key": key,
                "purpose": issued.purpose,
                "cst_id": issued.cst_id,
                "cust_key": issued.cust_key,
                "expires_at": issued.expires.to_rfc3339(),
            })
        })
        .collect();
    Json(json!({ "auth_keys": keys, "issued": issued }))
}

#[derive(Deserialize)]
pub(super) struct CheckoutQuery {
    #[serde(default)]
    oid: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    goods: String,
    #[serde(default)]
    result_url: String,
}

/// The checkout window: approving posts the `PCD_*` result to the shop's result URL, from the
/// browser, as Payple's window does.
pub(super) async fn checkout_page(Query(query): Query<CheckoutQuery>) -> Response {
    let problem = if query.oid.is_empty() || query.amount <= 0 {
        Some("주문 정보가 올바르지 않습니다 (oid, amount).".to_owned())
    } else if !super::portone::redirect_allowed(&query.result_url) {
        Some("result_url 이 올바르지 않습니다.".to_owned())
    } else {
        None
    };
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = super::portone::CheckoutPage {
        pg_label: "Payple",
        hidden: vec![
            ("oid", query.oid.clone()),
            ("amount", query.amount.to_string()),
            ("goods", query.goods.clone()),
            ("result_url", query.result_url),
        ],
        order_id: query.oid,
        amount: query.amount,
        name: query.goods,
        problem,
    };
    (status, page).into_response()
}

#[derive(Deserialize)]
pub(super) struct CheckoutDecision {
    oid: String,
    amount: i64,
    #[serde(default)]
    goods: String,
    result_url: String,
    decision: String,
}

fn escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(super) async fn checkout_decide(
    State(sandbox): State<Arc<Sandbox>>,
    axum::Form(form): axum::Form<CheckoutDecision>,
) -> Response {
    if form.oid.is_empty()
        || form.amount <= 0
        || !super::portone::redirect_allowed(&form.result_url)
    {
        return (StatusCode::BAD_REQUEST, "bad checkout form").into_response();
    }
    let fields: Vec<(String, String)> = if form.decision == "approve" {
        match insert(
            &sandbox,
            &form.oid,
            &form.goods,
            form.amount,
            sandbox.clock.now(),
        ) {
            Ok(payment) => {
                let Value::Object(map) = result_fields(&payment) else {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                };
                map.into_iter()
                    .map(|(key, value)| (key, value.as_str().unwrap_or_default().to_owned()))
                    .collect()
            }
            Err(message) => return control_error(StatusCode::INSUFFICIENT_STORAGE, message),
        }
    } else if form.decision == "card_declined" {
        vec![
            ("PCD_PAY_RST".into(), "error".into()),
            ("PCD_PAY_CODE".into(), "PAYN0033".into()),
            ("PCD_PAY_MSG".into(), "카드사 승인 거절 (한도초과)".into()),
            ("PCD_PAY_OID".into(), form.oid.clone()),
        ]
    } else {
        vec![
            ("PCD_PAY_RST".into(), "close".into()),
            ("PCD_PAY_CODE".into(), "PAYN0099".into()),
            ("PCD_PAY_MSG".into(), "결제를 취소했습니다.".into()),
            ("PCD_PAY_OID".into(), form.oid.clone()),
        ]
    };
    let inputs = fields
        .iter()
        .fold(String::new(), |mut html, (name, value)| {
            use std::fmt::Write;
            let _ = write!(
                html,
                r#"<input type="hidden" name="{}" value="{}">"#,
                escape(name),
                escape(value)
            );
            html
        });
    Html(format!(
        r#"<!doctype html><meta charset="utf-8"><title>Payple</title><body><form id="result" method="post" action="{}">{inputs}<noscript><button>계속</button></noscript></form><script>document.getElementById("result").submit();</script></body>"#,
        escape(&form.result_url)
    ))
    .into_response()
}

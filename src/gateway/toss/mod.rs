//! Toss Payments core API (`api.tosspayments.com`): Basic auth with the secret key and a
//! trailing colon, confirm, lookups by `paymentKey` and by `orderId`, and cancel with an
//! `Idempotency-Key`.
//!
//! Invariants: the secret key never reaches a log line or an error; a cancel always carries the
//! key of its intent's current generation, so a repeat within Toss's 15 days replays the first
//! answer instead of refunding again, and the balance kassa expects (`refundableAmount`), so a
//! cancel against another balance is refused; 5xx, lost answers and 409
//! `IDEMPOTENT_REQUEST_PROCESSING` of a confirm or cancel are `UnknownOutcome`; a 4xx refusal
//! that passes (`FORBIDDEN_CONSECUTIVE_REQUEST`, `PROVIDER_ERROR`) is `Throttled`, because Toss
//! replays it under the same key; two cancels of one `paymentKey` are at least
//! `CANCEL_GAP` apart.

pub mod inbound;

use super::client::{CallKind, classify_send_error, read_capped};
use super::{
    CancelReceipt, CancelRequest, ConfirmRequest, GatewayError, GatewayFuture, Pacer,
    PaymentGateway, PgCancellation, PgPayment, PgStatus, SettlementKind, SettlementLine,
    SettlementPage,
};
use crate::clock::Clock;
use crate::domain::{Amount, PgTid, Provider};
use crate::secret::Secret;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use std::sync::Arc;

/// Longest PG message kept in an error.
const MESSAGE_CHARS_MAX: usize = 200;
/// Toss processes two cancels of one payment within a second once: kassa keeps them apart.
pub const CANCEL_GAP: std::time::Duration = std::time::Duration::from_millis(1_100);
/// When one payment's last cancel was sent; its callers take turns on the lock.
type CancelTurn = Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>;
/// Most payments whose last cancel time is remembered for `CANCEL_GAP`.
const CANCEL_TIMES_MAX: usize = 10_000;

#[derive(Debug)]
pub struct TossGateway {
    http: reqwest::Client,
    base_url: String,
    /// `Basic base64("{secret_key}:")`, made once.
    authorization: Secret,
    clock: Arc<dyn Clock>,
    /// Keeps settlement pages `settlement_sync.page_interval_ms` apart.
    pacer: Pacer,
    /// When each payment's last cancel was sent, to keep the next `CANCEL_GAP` later, behind a
    /// lock of its own per payment.
    last_cancels: tokio::sync::Mutex<std::collections::HashMap<String, CancelTurn>>,
}

/// Stands for an amount Toss sent that kassa cannot read: no real line adds up with it, so the
/// line stays a discrepancy instead of failing its page.
const UNREADABLE: i64 = i64::MIN;

/// A whole number of won as Toss sends it in settlement lines: a JSON integer, or (in its own
/// docs' example) a string of digits. Anything else is `None`.
fn won_of(value: Option<&serde_json::Value>) -> Option<i64> {
    match value? {
        serde_json::Value::Number(number) => number.as_i64(),
        serde_json::Value::String(text) => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            text.parse().ok()
        }
        _ => None,
    }
}

/// One settlement line, read field by field so that one odd line never fails its page:
/// amounts as numbers or strings of digits; the fee as `fee`, or the sum of `fees[]`; a CANCEL
/// line by its filled `cancel` object or its negative amount.
fn settlement_line(line: &serde_json::Value) -> SettlementLine {
    let text = |field: &str| line.get(field).and_then(serde_json::Value::as_str);
    let amount = won_of(line.get("amount"));
    let fee = won_of(line.get("fee")).or_else(|| {
        line.get("fees")?
            .as_array()?
            .iter()
            .try_fold(0_i64, |sum, fee| sum.checked_add(won_of(fee.get("fee"))?))
    });
    let cancel = line.get("cancel").filter(|cancel| !cancel.is_null());
    let is_cancel = cancel.is_some() || amount.is_some_and(|amount| amount < 0);
    SettlementLine {
        kind: if is_cancel {
            SettlementKind::Cancel
        } else {
            SettlementKind::Approval
        },
        order_id: text("orderId").unwrap_or_default().to_owned(),
        amount: amount.unwrap_or(UNREADABLE),
        fee: fee.unwrap_or(UNREADABLE),
        settle_amount: won_of(line.get("payOutAmount")).unwrap_or(UNREADABLE),
        cancel_at: time(
            cancel
                .and_then(|cancel| cancel.get("canceledAt"))
                .and_then(serde_json::Value::as_str),
        ),
        pg_ref: text("paymentKey").map(str::to_owned),
        pg_cancel_id: text("transactionKey")
            .filter(|_| is_cancel)
            .map(str::to_owned),
        occurrence: 0,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentWire {
    payment_key: String,
    order_id: String,
    status: String,
    total_amount: i64,
    #[serde(default)]
    balance_amount: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    approved_at: Option<String>,
    #[serde(default)]
    cancels: Option<Vec<CancelWire>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelWire {
    #[serde(default)]
    transaction_key: Option<String>,
    cancel_amount: i64,
    #[serde(default)]
    canceled_at: Option<String>,
}

#[derive(Deserialize)]
struct ErrorWire {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

fn clip(text: &str) -> String {
    text.chars().take(MESSAGE_CHARS_MAX).collect()
}

fn won(value: i64) -> Result<Amount, GatewayError> {
    Amount::non_negative(value).map_err(|error| GatewayError::BadResponse(error.to_string()))
}

fn time(raw: Option<&str>) -> Option<DateTime<Utc>> {
    raw.and_then(|raw| DateTime::parse_from_rfc3339(raw).ok())
        .map(|at| at.with_timezone(&Utc))
}

fn to_payment(wire: PaymentWire) -> Result<PgPayment, GatewayError> {
    let status = match wire.status.as_str() {
        "DONE" | "PARTIAL_CANCELED" => PgStatus::Paid,
        "CANCELED" => PgStatus::Cancelled,
        "ABORTED" | "EXPIRED" => PgStatus::Failed,
        "READY" | "IN_PROGRESS" | "WAITING_FOR_DEPOSIT" => PgStatus::Ready,
        _ => PgStatus::Other,
    };
    let amount = won(wire.total_amount)?;
    let balance = won(wire.balance_amount.unwrap_or(wire.total_amount))?;
    // Partial cancels that add up to the whole stay PARTIAL_CANCELED with nothing left.
    let status =
        if status == PgStatus::Paid && wire.status == "PARTIAL_CANCELED" && balance.is_zero() {
            PgStatus::Cancelled
        } else {
            status
        };
    let cancellations = wire
        .cancels
        .unwrap_or_default()
        .iter()
        .map(|cancel| {
            Ok(PgCancellation {
                pg_cancel_id: cancel.transaction_key.clone().unwrap_or_default(),
                id_is_unique: cancel.transaction_key.is_some(),
                amount: won(cancel.cancel_amount)?,
                at: time(cancel.canceled_at.as_deref()).unwrap_or(DateTime::UNIX_EPOCH),
            })
        })
        .collect::<Result<Vec<_>, GatewayError>>()?;
    Ok(PgPayment {
        pg_tid: PgTid::parse(&wire.payment_key)
            .map_err(|error| GatewayError::BadResponse(error.to_string()))?,
        order_id: wire.order_id,
        status,
        amount,
        cancelled_amount: amount
            .checked_sub(balance)
            .ok_or_else(|| GatewayError::BadResponse("balance above the total".into()))?,
        currency: wire.currency.unwrap_or_else(|| "KRW".into()),
        paid_at: time(wire.approved_at.as_deref()),
        cancellations,
    })
}

/// Toss's answer to a payment call (lookup, confirm, cancel) with `status`: the payment, or the
/// error in kassa's classes.
pub fn read_payment(status: u16, body: &[u8], kind: CallKind) -> Result<PgPayment, GatewayError> {
    let status = reqwest::StatusCode::from_u16(status)
        .map_err(|_| GatewayError::BadResponse(format!("Toss answered status {status}")))?;
    if !status.is_success() {
        return Err(classify(status, body, kind));
    }
    let wire: PaymentWire = serde_json::from_slice(body)
        .map_err(|error| GatewayError::BadResponse(format!("not a Toss payment: {error}")))?;
    to_payment(wire)
}

/// Toss's answer to `GET /v1/settlements` of `page` (from 1) and `page_size`: a page shorter
/// than `page_size` is the last.
pub fn read_settlements(
    status: u16,
    body: &[u8],
    page: u32,
    page_size: u32,
) -> Result<SettlementPage, GatewayError> {
    let status = reqwest::StatusCode::from_u16(status)
        .map_err(|_| GatewayError::BadResponse(format!("Toss answered status {status}")))?;
    if !status.is_success() {
        return Err(classify(status, body, CallKind::Query));
    }
    let wire: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|error| {
        GatewayError::BadResponse(format!("not a Toss settlement list: {error}"))
    })?;
    let full = wire.len() >= usize::try_from(page_size).unwrap_or(usize::MAX);
    let records = wire.iter().map(settlement_line).collect();
    Ok(SettlementPage {
        records,
        next_cursor: full.then(|| format!("{}:{page_size}", page.saturating_add(1))),
    })
}

/// Toss's error codes, in kassa's classes (PG-CONTRACTS.md 3.x).
fn classify(status: reqwest::StatusCode, body: &[u8], kind: CallKind) -> GatewayError {
    let error: ErrorWire = serde_json::from_slice(body).unwrap_or(ErrorWire {
        code: String::new(),
        message: String::new(),
    });
    let described = format!(
        "Toss answered {} {}: {}",
        status.as_u16(),
        error.code,
        clip(&error.message)
    );
    match error.code.as_str() {
        // Partial cancels to zero answer NOT_CANCELABLE_AMOUNT, not ALREADY_CANCELED_PAYMENT:
        // both are "already done" once the record shows it.
        "ALREADY_CANCELED_PAYMENT" | "NOT_CANCELABLE_AMOUNT" => GatewayError::AlreadyCancelled,
        "NOT_MATCHES_REFUNDABLE_AMOUNT" => GatewayError::BalanceMismatch(described),
        "NOT_FOUND_PAYMENT" | "NOT_FOUND_PAYMENT_SESSION" => GatewayError::NotFound,
        "UNAUTHORIZED_KEY" | "INVALID_API_KEY" | "INVALID_SECRET_KEY" => {
            GatewayError::Credentials(described)
        }
        // The first request with this key is still running: its outcome is not known yet.
        "IDEMPOTENT_REQUEST_PROCESSING" => match kind {
            CallKind::Mutation => GatewayError::UnknownOutcome(described),
            CallKind::Query => GatewayError::Transient(described),
        },
        "PROVIDER_ERROR" | "FORBIDDEN_CONSECUTIVE_REQUEST" if !status.is_server_error() => {
            GatewayError::Throttled(described)
        }
        _ if status.is_server_error() => match kind {
            CallKind::Mutation => GatewayError::UnknownOutcome(described),
            CallKind::Query => GatewayError::Transient(described),
        },
        // A 429 is an answer too, which Toss may keep under the key like any other.
        _ if status == reqwest::StatusCode::TOO_MANY_REQUESTS => match kind {
            CallKind::Mutation => GatewayError::Throttled(described),
            CallKind::Query => GatewayError::Transient(described),
        },
        _ if status == reqwest::StatusCode::UNAUTHORIZED => GatewayError::Credentials(described),
        code => GatewayError::Refused {
            code: if code.is_empty() {
                status.as_u16().to_string()
            } else {
                code.to_owned()
            },
            message: clip(&error.message),
        },
    }
}

impl TossGateway {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        secret_key: &Secret,
        clock: Arc<dyn Clock>,
        settlement_interval: std::time::Duration,
    ) -> TossGateway {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", secret_key.expose()));
        TossGateway {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            authorization: Secret::new(format!("Basic {encoded}")),
            clock,
            pacer: Pacer::new(settlement_interval),
            last_cancels: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// `GET /v1/settlements` for one sold date, paged by `page` (from 1) and `size`; a page
    /// shorter than `size` is the last.
    async fn settlements(
        &self,
        date: NaiveDate,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<SettlementPage, GatewayError> {
        // The cursor is `{page}:{size}`: a run resumes with the size the day was started with,
        // so a change of `page_size` between runs neither skips nor repeats lines.
        let (page, page_size): (u32, u32) = match cursor {
            None => (1, page_size),
            Some(raw) => {
                let bad = || GatewayError::BadResponse(format!("cursor {raw:?} is not a page"));
                let (page, size) = raw.split_once(':').ok_or_else(bad)?;
                (
                    page.parse().map_err(|_| bad())?,
                    size.parse().map_err(|_| bad())?,
                )
            }
        };
        let day = date.format("%Y-%m-%d").to_string();
        let mut url = reqwest::Url::parse(&format!("{}/v1/settlements", self.base_url))
            .map_err(|error| GatewayError::BadResponse(error.to_string()))?;
        url.query_pairs_mut()
            .append_pair("startDate", &day)
            .append_pair("endDate", &day)
            .append_pair("page", &page.to_string())
            .append_pair("size", &page_size.to_string());
        self.pacer.wait_turn().await;
        let response = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, self.authorization.expose())
            .send()
            .await
            .map_err(|error| classify_send_error(&error, CallKind::Query))?;
        let status = response.status();
        let body = super::client::read_capped_to(
            response,
            CallKind::Query,
            super::client::SETTLEMENT_PAGE_BYTES_MAX,
        )
        .await?;
        read_settlements(status.as_u16(), &body, page, page_size)
    }

    async fn call(
        &self,
        kind: CallKind,
        request: reqwest::RequestBuilder,
    ) -> Result<PgPayment, GatewayError> {
        let response = request
            .header(reqwest::header::AUTHORIZATION, self.authorization.expose())
            .send()
            .await
            .map_err(|error| classify_send_error(&error, kind))?;
        let status = response.status();
        let body = read_capped(response, kind).await?;
        read_payment(status.as_u16(), &body, kind)
    }

    async fn get(&self, pg_tid: &PgTid) -> Result<PgPayment, GatewayError> {
        let url = super::client::url_with(&self.base_url, &["v1", "payments", pg_tid.as_str()])?;
        self.call(CallKind::Query, self.http.get(url)).await
    }

    async fn get_by_order(&self, order_id: &str) -> Result<PgPayment, GatewayError> {
        let url = super::client::url_with(&self.base_url, &["v1", "payments", "orders", order_id])?;
        self.call(CallKind::Query, self.http.get(url)).await
    }

    async fn confirm_payment(&self, request: &ConfirmRequest) -> Result<PgPayment, GatewayError> {
        let url = format!("{}/v1/payments/confirm", self.base_url);
        let body = serde_json::json!({
            "paymentKey": request.pg_tid.as_str(),
            "orderId": request.order_id,
            "amount": request.amount.won(),
        });
        self.call(CallKind::Mutation, self.http.post(url).json(&body))
            .await
    }

    async fn cancel_payment(&self, request: &CancelRequest) -> Result<CancelReceipt, GatewayError> {
        let url = super::client::url_with(
            &self.base_url,
            &["v1", "payments", request.pg_tid.as_str(), "cancel"],
        )?;
        let body = serde_json::json!({
            "cancelReason": request.reason,
            "cancelAmount": request.amount.won(),
            "refundableAmount": request.balance_before.won(),
        });
        let builder = self
            .http
            .post(url)
            .header("Idempotency-Key", &request.idempotency_key)
            .json(&body);
        self.keep_apart(request.pg_tid.as_str()).await;
        let payment = self.call(CallKind::Mutation, builder).await?;
        // This cancel's entry: the latest of its amount (a refund made in the console meanwhile
        // may be later still, and is not this one's).
        let last = payment
            .cancellations
            .iter()
            .rev()
            .find(|entry| entry.amount == request.amount)
            .or(payment.cancellations.last())
            .cloned();
        Ok(CancelReceipt {
            pg_cancel_id: last
                .as_ref()
                .map(|cancel| cancel.pg_cancel_id.clone())
                .unwrap_or_default(),
            amount: request.amount,
            at: last.map_or_else(|| self.clock.now(), |cancel| cancel.at),
            warning: None,
        })
    }

    /// Waits until `CANCEL_GAP` has passed since the last cancel of `payment_key` was sent,
    /// then counts this one as sent. The callers of one payment queue on that payment's own
    /// lock, so a cancel of another payment never waits behind them; a caller that is dropped
    /// while it waits leaves the last time as it was.
    async fn keep_apart(&self, payment_key: &str) {
        let turn = {
            let mut turns = self.last_cancels.lock().await;
            if turns.len() >= CANCEL_TIMES_MAX {
                let now = tokio::time::Instant::now();
                // A turn is cloned only under this lock: one held elsewhere is in use.
                turns.retain(|_, turn| {
                    Arc::strong_count(turn) > 1
                        || turn
                            .try_lock()
                            .is_ok_and(|sent| sent.is_some_and(|sent| sent + CANCEL_GAP > now))
                });
            }
            Arc::clone(turns.entry(payment_key.to_owned()).or_default())
        };
        let mut sent = turn.lock().await;
        if let Some(previous) = *sent {
            tokio::time::sleep_until(previous + CANCEL_GAP).await;
        }
        *sent = Some(tokio::time::Instant::now());
    }
}

impl PaymentGateway for TossGateway {
    fn provider(&self) -> Provider {
        Provider::Toss
    }

    fn fetch_payment<'a>(&'a self, pg_tid: &'a PgTid) -> GatewayFuture<'a, PgPayment> {
        Box::pin(self.get(pg_tid))
    }

    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> GatewayFuture<'a, CancelReceipt> {
        Box::pin(self.cancel_payment(request))
    }

    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> GatewayFuture<'a, PgPayment> {
        Box::pin(self.confirm_payment(request))
    }

    fn keeps_answers_under_key(&self) -> bool {
        true
    }

    fn fetch_by_order<'a>(&'a self, order_id: &'a str) -> GatewayFuture<'a, PgPayment> {
        Box::pin(self.get_by_order(order_id))
    }

    fn settlement_page<'a>(
        &'a self,
        date: NaiveDate,
        cursor: Option<&'a str>,
        page_size: u32,
    ) -> GatewayFuture<'a, SettlementPage> {
        Box::pin(self.settlements(date, cursor, page_size))
    }
}

#[cfg(test)]
mod tests;

//! PortOne V1 (`api.iamport.kr`): the `{code, message, response}` envelope, the 30-minute
//! access token, payment lookup and cancel with `checksum`.
//!
//! Invariants: the token is cached until shortly before its expiry as the server counts it
//! (corrected by the server's `now`), refreshed once on a 401; `imp_key`, `imp_secret` and the
//! token never reach a log line or an error message.

pub mod inbound;

use super::client::{CallKind, classify_send_error, read_capped};
use super::{
    CancelReceipt, CancelRequest, GatewayError, GatewayFuture, PaymentGateway, PgCancellation,
    PgPayment, PgStatus,
};
use crate::clock::Clock;
use crate::domain::{Amount, PgTid, Provider};
use crate::secret::Secret;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::Mutex;

/// How long before the server's expiry kassa stops using a token. PortOne extends a token used
/// in its last minute by five minutes, so one minute of margin keeps the cached token valid.
pub const TOKEN_MARGIN_S: i64 = 60;
/// Longest PG message kept in an error.
const MESSAGE_CHARS_MAX: usize = 200;
/// Most paid payments of one order kassa reads from `findAll`.
pub const FOUND_PER_ORDER_MAX: usize = 20;
/// PortOne's answer to a cancel of a fully cancelled payment.
const ALREADY_CANCELLED_MESSAGE: &str = "이미 전액취소된 주문입니다.";

#[derive(Debug, Clone)]
struct CachedToken {
    token: Secret,
    use_until: DateTime<Utc>,
}

#[derive(Debug)]
pub struct PortOneGateway {
    http: reqwest::Client,
    base_url: String,
    imp_key: Secret,
    imp_secret: Secret,
    clock: Arc<dyn Clock>,
    token: Mutex<Option<CachedToken>>,
}

// Wire format: only what kassa reads; unknown fields are ignored.

#[derive(Deserialize)]
struct Envelope<T> {
    code: i64,
    #[serde(default)]
    message: Option<String>,
    #[serde(default = "none")]
    response: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expired_at: i64,
    now: i64,
}

#[derive(Deserialize)]
struct PaymentResponse {
    imp_uid: String,
    merchant_uid: String,
    amount: serde_json::Number,
    #[serde(default)]
    cancel_amount: Option<serde_json::Number>,
    #[serde(default)]
    currency: Option<String>,
    status: String,
    #[serde(default)]
    paid_at: Option<i64>,
    #[serde(default)]
    cancel_history: Vec<CancelHistoryEntry>,
}

#[derive(Deserialize)]
struct CancelHistoryEntry {
    #[serde(default)]
    pg_tid: Option<String>,
    amount: serde_json::Number,
    #[serde(default)]
    cancelled_at: Option<i64>,
    #[serde(default)]
    cancellation_id: Option<String>,
}

#[derive(serde::Serialize)]
struct CancelBody<'a> {
    imp_uid: &'a str,
    amount: i64,
    checksum: i64,
    reason: &'a str,
}

/// PortOne declares amounts as JSON numbers; only whole, non-negative won are accepted.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the float is checked to be whole and below 1e15 first"
)]
fn won(number: &serde_json::Number) -> Result<Amount, GatewayError> {
    let value = number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|float| float.fract() == 0.0 && float.abs() < 1e15)
                .map(|float| float as i64)
        })
        .ok_or_else(|| {
            GatewayError::BadResponse(format!("amount {number} is not a whole number of won"))
        })?;
    Amount::non_negative(value).map_err(|error| GatewayError::BadResponse(error.to_string()))
}

fn unix(seconds: Option<i64>) -> Option<DateTime<Utc>> {
    seconds
        .filter(|seconds| *seconds > 0)
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
}

fn clip(text: &str) -> String {
    text.chars().take(MESSAGE_CHARS_MAX).collect()
}

fn to_payment(wire: PaymentResponse) -> Result<PgPayment, GatewayError> {
    let status = match wire.status.as_str() {
        "ready" => PgStatus::Ready,
        "paid" => PgStatus::Paid,
        "cancelled" => PgStatus::Cancelled,
        "failed" => PgStatus::Failed,
        _ => PgStatus::Other,
    };
    let cancellations = wire
        .cancel_history
        .iter()
        .map(|entry| {
            Ok(PgCancellation {
                pg_cancel_id: entry
                    .cancellation_id
                    .clone()
                    .or_else(|| entry.pg_tid.clone())
                    .unwrap_or_default(),
                id_is_unique: entry.cancellation_id.is_some(),
                amount: won(&entry.amount)?,
                at: unix(entry.cancelled_at).unwrap_or(DateTime::UNIX_EPOCH),
            })
        })
        .collect::<Result<Vec<_>, GatewayError>>()?;
    Ok(PgPayment {
        pg_tid: PgTid::parse(&wire.imp_uid)
            .map_err(|error| GatewayError::BadResponse(error.to_string()))?,
        order_id: wire.merchant_uid,
        status,
        amount: won(&wire.amount)?,
        cancelled_amount: wire
            .cancel_amount
            .as_ref()
            .map(won)
            .transpose()?
            .unwrap_or(Amount::ZERO),
        currency: wire.currency.unwrap_or_else(|| "KRW".into()),
        paid_at: unix(wire.paid_at),
        cancellations,
    })
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Envelope<T>, GatewayError> {
    serde_json::from_slice(body)
        .map_err(|error| GatewayError::BadResponse(format!("not a PortOne envelope: {error}")))
}

fn refused(code: i64, message: Option<&str>) -> GatewayError {
    GatewayError::Refused {
        code: code.to_string(),
        message: clip(message.unwrap_or("")),
    }
}

/// The answer to a payment lookup (`GET /payments/{imp_uid}`, `/payments/find/{merchant_uid}`).
pub fn read_payment(body: &[u8]) -> Result<PgPayment, GatewayError> {
    let envelope: Envelope<PaymentResponse> = parse(body)?;
    match (envelope.code, envelope.response) {
        (0, Some(payment)) => to_payment(payment),
        (code, _) => Err(refused(code, envelope.message.as_deref())),
    }
}

/// The answer to `GET /payments/findAll/{merchant_uid}/paid`: at most `FOUND_PER_ORDER_MAX`.
pub fn read_paid_list(body: &[u8]) -> Result<Vec<PgPayment>, GatewayError> {
    let envelope: Envelope<Vec<PaymentResponse>> = parse(body)?;
    if envelope.code != 0 {
        return Err(refused(envelope.code, envelope.message.as_deref()));
    }
    envelope
        .response
        .unwrap_or_default()
        .into_iter()
        .take(FOUND_PER_ORDER_MAX)
        .map(to_payment)
        .collect()
}

/// The answer to `POST /payments/cancel` of `amount`, answered with `status`; `now` stamps a
/// receipt whose answer names no time.
pub fn read_cancel(
    status: u16,
    body: &[u8],
    amount: Amount,
    now: DateTime<Utc>,
) -> Result<CancelReceipt, GatewayError> {
    let status = reqwest::StatusCode::from_u16(status)
        .map_err(|_| GatewayError::UnknownOutcome(format!("PortOne answered status {status}")))?;
    if status.is_server_error() {
        return Err(GatewayError::UnknownOutcome(format!(
            "PortOne answered {status} to a cancel"
        )));
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(GatewayError::Transient("PortOne answered 429".into()));
    }
    if !status.is_success() {
        return Err(GatewayError::Refused {
            code: status.as_u16().to_string(),
            message: "cancel refused".into(),
        });
    }
    let envelope: Envelope<PaymentResponse> = parse(body)?;
    match (envelope.code, envelope.response) {
        (0, Some(wire)) => {
            let payment = to_payment(wire)?;
            // This cancel's entry: the latest of its amount (a refund made in the console meanwhile
            // may be later still, and is not this one's).
            let last = payment
                .cancellations
                .iter()
                .rev()
                .find(|entry| entry.amount == amount)
                .or(payment.cancellations.last())
                .cloned();
            Ok(CancelReceipt {
                pg_cancel_id: last
                    .as_ref()
                    .map(|entry| entry.pg_cancel_id.clone())
                    .unwrap_or_default(),
                amount,
                at: last.map_or(now, |entry| entry.at),
                warning: None,
            })
        }
        (_, _) if envelope.message.as_deref() == Some(ALREADY_CANCELLED_MESSAGE) => {
            Err(GatewayError::AlreadyCancelled)
        }
        (code, _) => Err(refused(code, envelope.message.as_deref())),
    }
}

impl PortOneGateway {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        imp_key: Secret,
        imp_secret: Secret,
        clock: Arc<dyn Clock>,
    ) -> PortOneGateway {
        PortOneGateway {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            imp_key,
            imp_secret,
            clock,
            token: Mutex::new(None),
        }
    }

    /// A token valid for at least `TOKEN_MARGIN_S` more seconds, from the cache or the server.
    async fn token(&self, force_refresh: bool) -> Result<Secret, GatewayError> {
        let mut cached = self.token.lock().await;
        let now = self.clock.now();
        if !force_refresh && let Some(token) = cached.as_ref().filter(|token| token.use_until > now)
        {
            return Ok(token.token.clone());
        }
        let body = serde_json::json!({ "imp_key": self.imp_key.expose(), "imp_secret": self.imp_secret.expose() });
        let response = self
            .http
            .post(format!("{}/users/getToken", self.base_url))
            .json(&body)
            .send()
            .await
            .map_err(|error| classify_send_error(&error, CallKind::Query))?;
        let status = response.status();
        let bytes = read_capped(response, CallKind::Query).await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            *cached = None;
            return Err(GatewayError::Credentials(
                "PortOne refused imp_key/imp_secret".into(),
            ));
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(GatewayError::Transient(format!(
                "PortOne answered {status} to getToken"
            )));
        }
        let envelope: Envelope<TokenResponse> = parse(&bytes)?;
        let token = match (envelope.code, envelope.response) {
            (0, Some(token)) => token,
            (code, _) => {
                return Err(GatewayError::Credentials(format!(
                    "getToken answered code {code}: {}",
                    clip(envelope.message.as_deref().unwrap_or(""))
                )));
            }
        };
        // Trust the server's count of how long the token lives, not the two clocks' agreement.
        let remaining_s = token
            .expired_at
            .saturating_sub(token.now)
            .clamp(0, 3 * 3600);
        let use_until = now + ChronoDuration::seconds(remaining_s - TOKEN_MARGIN_S);
        let secret = Secret::new(token.access_token);
        *cached = Some(CachedToken {
            token: secret.clone(),
            use_until,
        });
        Ok(secret)
    }

    /// Sends an authorised request, refreshing the token once if PortOne answers 401.
    async fn send(
        &self,
        kind: CallKind,
        build: impl Fn(&Secret) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), GatewayError> {
        let mut refreshed = false;
        loop {
            let token = self.token(refreshed).await?;
            let response = build(&token)
                .send()
                .await
                .map_err(|error| classify_send_error(&error, kind))?;
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                // A 401 is answered before anything is done, so one retry is safe for a cancel too.
                if refreshed {
                    return Err(GatewayError::Credentials(
                        "PortOne refused a fresh token".into(),
                    ));
                }
                refreshed = true;
                continue;
            }
            let body = read_capped(response, kind).await?;
            return Ok((status, body));
        }
    }

    /// A lookup (`GET`): its body, or `None` when PortOne answers 404; 5xx and 429 are transient.
    async fn query(&self, url: reqwest::Url) -> Result<Option<Vec<u8>>, GatewayError> {
        let (status, body) = self
            .send(CallKind::Query, |token| {
                self.http.get(url.clone()).bearer_auth(token.expose())
            })
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(GatewayError::Transient(format!(
                "PortOne answered {status}"
            )));
        }
        Ok(Some(body))
    }

    /// One payment looked up at `url`; 404 is `NotFound`.
    async fn payment_at(&self, url: reqwest::Url) -> Result<PgPayment, GatewayError> {
        let body = self.query(url).await?.ok_or(GatewayError::NotFound)?;
        read_payment(&body)
    }

    async fn get_payment(&self, pg_tid: &PgTid) -> Result<PgPayment, GatewayError> {
        let url = super::client::url_with(&self.base_url, &["payments", pg_tid.as_str()])?;
        self.payment_at(url).await
    }

    /// Every paid payment of an order (`GET /payments/findAll/{merchant_uid}/paid`): the way to
    /// find a payment kassa never heard of (the buyer closed the window, the webhook was lost).
    async fn find_paid(&self, order_id: &str) -> Result<Vec<PgPayment>, GatewayError> {
        let url =
            super::client::url_with(&self.base_url, &["payments", "findAll", order_id, "paid"])?;
        let Some(body) = self.query(url).await? else {
            return Ok(Vec::new());
        };
        read_paid_list(&body)
    }

    /// The latest payment of an order in any status (`GET /payments/find/{merchant_uid}`).
    async fn find_latest(&self, order_id: &str) -> Result<PgPayment, GatewayError> {
        let url = super::client::url_with(&self.base_url, &["payments", "find", order_id])?;
        self.payment_at(url).await
    }

    async fn cancel_payment(&self, request: &CancelRequest) -> Result<CancelReceipt, GatewayError> {
        let url = format!("{}/payments/cancel", self.base_url);
        let body = CancelBody {
            imp_uid: request.pg_tid.as_str(),
            amount: request.amount.won(),
            checksum: request.balance_before.won(),
            reason: &request.reason,
        };
        let (status, bytes) = self
            .send(CallKind::Mutation, |token| {
                self.http.post(&url).bearer_auth(token.expose()).json(&body)
            })
            .await?;
        read_cancel(status.as_u16(), &bytes, request.amount, self.clock.now())
    }
}

impl PaymentGateway for PortOneGateway {
    fn provider(&self) -> Provider {
        Provider::PortOne
    }

    fn fetch_payment<'a>(&'a self, pg_tid: &'a PgTid) -> GatewayFuture<'a, PgPayment> {
        Box::pin(self.get_payment(pg_tid))
    }

    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> GatewayFuture<'a, CancelReceipt> {
        Box::pin(self.cancel_payment(request))
    }

    fn find_paid_by_order<'a>(&'a self, order_id: &'a str) -> GatewayFuture<'a, Vec<PgPayment>> {
        Box::pin(self.find_paid(order_id))
    }

    fn fetch_by_order<'a>(&'a self, order_id: &'a str) -> GatewayFuture<'a, PgPayment> {
        Box::pin(self.find_latest(order_id))
    }
}

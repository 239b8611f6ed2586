//! Payple (cpay): partner authentication per operation family, result inquiry, refund and the
//! settlement inquiry, all with string-typed `PCD_*` fields.
//!
//! Invariants: the partner's own `cst_id` and `custKey` are read from the config for every
//! authentication and never cached; a follow-up sends the `cst_id`/`custKey` that the auth
//! answer returned (Payple transforms them), kept as secrets with that purpose's `AuthKey` for
//! at most `AUTH_CACHE_S`; every follow-up goes where the auth answer says (`return_url`,
//! `PCD_PAY_HOST` + `PCD_PAY_URL`); amounts are parsed strictly; a refund answer other than
//! `PAYC0000` success or an auth refusal is an unknown outcome (Payple's other codes, "already
//! cancelled" among them, are not documented); no `PCD_*` secret, payer name, account or card
//! number reaches a log line or an error message.

pub mod inbound;

use super::client::{CallKind, classify_send_error};
use super::{
    CancelReceipt, CancelRequest, GatewayError, GatewayFuture, Pacer, PaymentGateway, PgPayment,
    PgStatus, SettlementKind, SettlementLine, SettlementPage,
};
use crate::clock::Clock;
use crate::domain::{Amount, PgTid, Provider};
use crate::secret::Secret;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Asia::Seoul;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Payple allows at most this many settlement inquiries within `SETTLEMENT_WINDOW`.
pub const SETTLEMENT_CALLS_PER_WINDOW: usize = 20;
pub const SETTLEMENT_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);
/// Longest an `AuthKey` is reused. Payple allows sequential calls within 30 minutes of an auth.
pub const AUTH_CACHE_S: i64 = 15 * 60;
/// Longest PG message kept in an error.
const MESSAGE_CHARS_MAX: usize = 200;
/// Stands for an amount Payple sent that kassa cannot read: no real line adds up with it.
const UNREADABLE: i64 = i64::MIN;
/// Payple's code for a successful refund.
const REFUND_OK: &str = "PAYC0000";

/// The operation families Payple authenticates separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Purpose {
    Check,
    Cancel,
    Settlement,
}

impl Purpose {
    fn flag(self) -> (&'static str, &'static str) {
        match self {
            Purpose::Check => ("PCD_PAYCHK_FLAG", "Y"),
            Purpose::Cancel => ("PCD_PAYCANCEL_FLAG", "Y"),
            Purpose::Settlement => ("PCD_SETTLEMENT_FLAG", "Y"),
        }
    }
}

/// A cached authentication: the key, the credentials Payple returned for the follow-up, and
/// where the follow-up goes. The partner's own credentials are not in here.
#[derive(Debug, Clone)]
struct Auth {
    key: Secret,
    cst_id: Secret,
    cust_key: Secret,
    return_url: String,
    settlement_url: String,
    use_until: DateTime<Utc>,
}

#[derive(Debug)]
pub struct PaypleGateway {
    http: reqwest::Client,
    base_url: String,
    cst_id: Secret,
    cust_key: Secret,
    refund_key: Secret,
    referer: String,
    clock: Arc<dyn Clock>,
    auths: Mutex<HashMap<Purpose, Auth>>,
    pacer: Pacer,
}

fn clip(text: &str) -> String {
    text.chars().take(MESSAGE_CHARS_MAX).collect()
}

/// A field as Payple sends it: a string (numbers too), or absent.
fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body.get(field).and_then(Value::as_str).unwrap_or("")
}

/// An amount field that old official examples give as a JSON number, others as a string.
fn number_or_text(body: &Value, field: &str) -> String {
    match body.get(field) {
        Some(Value::Number(number)) => number.to_string(),
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    }
}

/// Payple sends amounts as strings of digits; nothing else is an amount.
pub fn parse_won(raw: &str) -> Result<i64, GatewayError> {
    let raw = raw.trim();
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(GatewayError::BadResponse(
            "an amount that is not a whole number of won".into(),
        ));
    }
    raw.parse()
        .map_err(|_| GatewayError::BadResponse("an amount out of range".into()))
}

/// kassa's id of a Payple payment: `{type}.{yyyyMMdd}.{order id}`, what the result inquiry needs.
pub fn payment_ref(pay_type: &str, date: NaiveDate, order_id: &str) -> Result<PgTid, GatewayError> {
    PgTid::parse(&format!("{pay_type}.{}.{order_id}", date.format("%Y%m%d")))
        .map_err(|error| GatewayError::BadResponse(error.to_string()))
}

fn split_ref(pg_tid: &PgTid) -> Result<(&str, &str, &str), GatewayError> {
    let mut parts = pg_tid.as_str().splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(pay_type), Some(date), Some(order)) if date.len() == 8 => Ok((pay_type, date, order)),
        _ => Err(GatewayError::NotFound),
    }
}

fn pay_time(raw: &str) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::parse_from_str(raw, "%Y%m%d%H%M%S").ok()?;
    Seoul
        .from_local_datetime(&local)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
}

/// Payple's answer with `status` to a call of `kind`, as JSON. A 5xx or 429 after a money
/// call leaves its outcome unknown.
pub fn read_answer(status: u16, body: &[u8], kind: CallKind) -> Result<Value, GatewayError> {
    if status >= 500 || status == 429 {
        return Err(match kind {
            CallKind::Mutation => GatewayError::UnknownOutcome(format!("Payple answered {status}")),
            CallKind::Query => GatewayError::Transient(format!("Payple answered {status}")),
        });
    }
    serde_json::from_slice(body)
        .map_err(|error| GatewayError::BadResponse(format!("not a Payple answer: {error}")))
}

/// What a refusal means: an auth error is transient (the caller forgets the AuthKey); a
/// payment Payple says it does not have is `NotFound`; anything else is transient, so a payment
/// is never taken for absent because Payple was busy.
fn refusal(answer: &Value) -> GatewayError {
    let code = text(answer, "PCD_PAY_CODE");
    let described = format!(
        "Payple refused ({}): {}",
        clip(code),
        clip(text(answer, "PCD_PAY_MSG"))
    );
    if code.ends_with("0404") && !code.starts_with("AUTH") {
        return GatewayError::NotFound;
    }
    GatewayError::Transient(described)
}

/// Payple's answer to the result inquiry of `order`.
pub fn read_inquiry(answer: &Value, order: &str) -> Result<PgPayment, GatewayError> {
    if text(answer, "PCD_PAY_RST") != "success" {
        return Err(refusal(answer));
    }
    let total = parse_won(&number_or_text(answer, "PCD_PAY_TOTAL"))?;
    let amount = Amount::non_negative(total)
        .map_err(|error| GatewayError::BadResponse(error.to_string()))?;
    // The payment is what Payple answers, not what was asked: its type and day come from the
    // answer, so a request that named another type or day names another payment.
    let answered_type = text(answer, "PCD_PAY_TYPE");
    let answered_oid = text(answer, "PCD_PAY_OID");
    let paid_at = pay_time(text(answer, "PCD_PAY_TIME"));
    let answered = match paid_at {
        Some(at) if !answered_type.is_empty() && answered_oid == order => payment_ref(
            answered_type,
            at.with_timezone(&Seoul).date_naive(),
            answered_oid,
        )?,
        _ => {
            return Err(GatewayError::BadResponse(
                "Payple's inquiry answer does not name the payment's type, time and order".into(),
            ));
        }
    };
    // No published inquiry answer shows refunds: this is what was paid, nothing more. Who
    // reads it must not take "no refund shown" for "nothing refunded".
    Ok(PgPayment {
        pg_tid: answered,
        order_id: text(answer, "PCD_PAY_OID").to_owned(),
        status: PgStatus::Paid,
        amount,
        cancelled_amount: Amount::ZERO,
        currency: "KRW".into(),
        paid_at,
        cancellations: Vec::new(),
    })
}

/// Payple's answer to a refund of `amount`; `now` stamps a receipt whose answer names no time.
pub fn read_refund(
    answer: &Value,
    amount: Amount,
    now: DateTime<Utc>,
) -> Result<CancelReceipt, GatewayError> {
    let code = text(answer, "PCD_PAY_CODE");
    if text(answer, "PCD_PAY_RST") != "success" || code != REFUND_OK {
        let described = format!(
            "Payple answered the refund with {} ({}): {}",
            clip(text(answer, "PCD_PAY_RST")),
            clip(code),
            clip(text(answer, "PCD_PAY_MSG"))
        );
        if code.starts_with("AUTH") {
            // The partner authentication was refused: the refund was not carried out (the
            // caller forgets the AuthKey).
            return Err(GatewayError::Transient(described));
        }
        // Payple documents no refusal codes ("already cancelled" included): what this answer
        // means for the money is unknown, and Payple cannot be asked.
        return Err(GatewayError::UnknownOutcome(described));
    }
    let taxsave = text(answer, "PCD_TAXSAVE_RST");
    let warning = (!taxsave.is_empty() && taxsave != "Y" && taxsave != "success").then(|| {
        format!(
            "Payple could not cancel the cash receipt ({}): {}",
            clip(taxsave),
            clip(text(answer, "PCD_PAY_MSG"))
        )
    });
    Ok(CancelReceipt {
        pg_cancel_id: clip(text(answer, "PCD_PAY_CARDTRADENUM")),
        amount,
        at: pay_time(text(answer, "PCD_PAY_TIME")).unwrap_or(now),
        warning,
    })
}

/// Payple's answer to the settlement inquiry: one page of lines, and the cursor of the next.
pub fn read_settlement_page(answer: &Value) -> Result<SettlementPage, GatewayError> {
    if text(answer, "PCD_PAY_RST") != "success" {
        return Err(refusal(answer));
    }
    let data = answer.get("PCD_DATA").cloned().unwrap_or(Value::Null);
    let content = data
        .get("PCD_CONTENT")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // A line kassa cannot read is kept as an inconsistent one (a discrepancy or a missing
    // payment), so one bad line never blocks the rest of the day.
    let amount_of = |line: &Value, field: &str| parse_won(text(line, field)).unwrap_or(UNREADABLE);
    let records = content
        .iter()
        .map(|line| SettlementLine {
            cancel_at: pay_time(text(line, "PCD_PAY_CANCEL_TIME")),
            pg_cancel_id: None,
            occurrence: 0,
            pg_ref: pay_time(text(line, "PCD_PAY_TIME")).and_then(|at| {
                // The inquiry knows card and transfer; an easy-pay line is asked as card,
                // and the answer (matched on the order) says what it really was.
                let pay_type = match text(line, "PCD_PAY_TYPE") {
                    "transfer" => "transfer",
                    _ => "card",
                };
                payment_ref(
                    pay_type,
                    at.with_timezone(&Seoul).date_naive(),
                    text(line, "PCD_PAY_OID"),
                )
                .ok()
                .map(|reference| reference.as_str().to_owned())
            }),
            kind: if text(line, "PCD_TXN_TYPE") == "CANCEL" {
                SettlementKind::Cancel
            } else {
                SettlementKind::Approval
            },
            order_id: text(line, "PCD_PAY_OID").to_owned(),
            amount: amount_of(line, "PCD_PAY_AMOUNT"),
            fee: amount_of(line, "PCD_FEE_TOTAL"),
            settle_amount: amount_of(line, "PCD_SETTLE_AMOUNT"),
        })
        .collect();
    let has_more = match data.get("PCD_HAS_MORE") {
        Some(Value::Bool(more)) => *more,
        Some(Value::String(more)) => more == "Y" || more == "true",
        _ => false,
    };
    let last_key = text(&data, "PCD_LASTKEY");
    if has_more && last_key.is_empty() {
        return Err(GatewayError::BadResponse(
            "Payple says there is more but gives no PCD_LASTKEY".into(),
        ));
    }
    let next_cursor = has_more.then(|| last_key.to_owned());
    Ok(SettlementPage {
        records,
        next_cursor,
    })
}

fn sent(
    result: Result<reqwest::Response, reqwest::Error>,
    kind: CallKind,
) -> Result<reqwest::Response, GatewayError> {
    result.map_err(|error| classify_send_error(&error, kind))
}

impl PaypleGateway {
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per configured value"
    )]
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        cst_id: Secret,
        cust_key: Secret,
        refund_key: Secret,
        referer: &str,
        clock: Arc<dyn Clock>,
        settlement_interval: std::time::Duration,
    ) -> PaypleGateway {
        PaypleGateway {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            cst_id,
            cust_key,
            refund_key,
            referer: referer.to_owned(),
            clock,
            auths: Mutex::new(HashMap::new()),
            pacer: Pacer::with_window(
                settlement_interval,
                SETTLEMENT_CALLS_PER_WINDOW,
                SETTLEMENT_WINDOW,
            ),
        }
    }

    async fn post_json(
        &self,
        url: &str,
        body: &Value,
        kind: CallKind,
    ) -> Result<Value, GatewayError> {
        self.post_json_capped(url, body, kind, super::client::RESPONSE_BYTES_MAX)
            .await
    }

    async fn post_json_capped(
        &self,
        url: &str,
        body: &Value,
        kind: CallKind,
        bytes_max: usize,
    ) -> Result<Value, GatewayError> {
        let response = sent(
            self.http
                .post(url)
                .header(reqwest::header::REFERER, &self.referer)
                .header(reqwest::header::CACHE_CONTROL, "no-cache")
                .json(body)
                .send()
                .await,
            kind,
        )?;
        let status = response.status();
        let bytes = super::client::read_capped_to(response, kind, bytes_max).await?;
        read_answer(status.as_u16(), &bytes, kind)
    }

    /// The auth of `purpose`, from the cache while fresh, else from `/php/auth.php`.
    async fn auth(&self, purpose: Purpose) -> Result<Auth, GatewayError> {
        let mut auths = self.auths.lock().await;
        let now = self.clock.now();
        if let Some(auth) = auths.get(&purpose).filter(|auth| auth.use_until > now) {
            return Ok(auth.clone());
        }
        let (flag, value) = purpose.flag();
        let body = json!({ "cst_id": self.cst_id.expose(), "custKey": self.cust_key.expose(), flag: value });
        let answer = self
            .post_json(
                &format!("{}/php/auth.php", self.base_url),
                &body,
                CallKind::Query,
            )
            .await?;
        if text(&answer, "result") != "success" {
            auths.remove(&purpose);
            return Err(GatewayError::Credentials(format!(
                "Payple refused the partner authentication ({}): {}",
                clip(text(&answer, "result")),
                clip(text(&answer, "result_msg"))
            )));
        }
        let (auth_key, return_url) = (text(&answer, "AuthKey"), text(&answer, "return_url"));
        let (cst_id, cust_key) = (text(&answer, "cst_id"), text(&answer, "custKey"));
        if auth_key.is_empty() || !return_url.starts_with("http") {
            return Err(GatewayError::BadResponse(
                "Payple's auth answer has no AuthKey or return_url".into(),
            ));
        }
        if cst_id.is_empty() || cust_key.is_empty() {
            return Err(GatewayError::BadResponse(
                "Payple's auth answer has no cst_id or custKey for the follow-up".into(),
            ));
        }
        let auth = Auth {
            key: Secret::new(auth_key),
            cst_id: Secret::new(cst_id),
            cust_key: Secret::new(cust_key),
            return_url: return_url.to_owned(),
            settlement_url: format!(
                "{}{}",
                text(&answer, "PCD_PAY_HOST"),
                text(&answer, "PCD_PAY_URL")
            ),
            use_until: now + chrono::Duration::seconds(AUTH_CACHE_S),
        };
        auths.insert(purpose, auth.clone());
        Ok(auth)
    }

    /// Forgets the AuthKey of `purpose` when Payple refused it, so the next call authenticates
    /// again; answers `result`.
    async fn evicting<T>(
        &self,
        purpose: Purpose,
        answer: &Value,
        result: Result<T, GatewayError>,
    ) -> Result<T, GatewayError> {
        if result.is_err() && text(answer, "PCD_PAY_CODE").starts_with("AUTH") {
            self.auths.lock().await.remove(&purpose);
        }
        result
    }

    /// Result inquiry: `PCD_PAYCHK_FLAG` to the check purpose's `return_url`.
    async fn inquire(&self, pg_tid: &PgTid) -> Result<PgPayment, GatewayError> {
        let (pay_type, date, order) = split_ref(pg_tid)?;
        let auth = self.auth(Purpose::Check).await?;
        let body = json!({
            "PCD_CST_ID": auth.cst_id.expose(),
            "PCD_CUST_KEY": auth.cust_key.expose(),
            "PCD_AUTH_KEY": auth.key.expose(),
            "PCD_PAYCHK_FLAG": "Y",
            "PCD_PAY_TYPE": pay_type,
            "PCD_PAY_OID": order,
            "PCD_PAY_DATE": date,
        });
        let answer = self
            .post_json(&auth.return_url, &body, CallKind::Query)
            .await?;
        let read = read_inquiry(&answer, order);
        self.evicting(Purpose::Check, &answer, read).await
    }

    async fn refund(&self, request: &CancelRequest) -> Result<CancelReceipt, GatewayError> {
        let (_, date, order) = split_ref(&request.pg_tid)?;
        let auth = self.auth(Purpose::Cancel).await?;
        let body = json!({
            "PCD_CST_ID": auth.cst_id.expose(),
            "PCD_CUST_KEY": auth.cust_key.expose(),
            "PCD_AUTH_KEY": auth.key.expose(),
            "PCD_REFUND_KEY": self.refund_key.expose(),
            "PCD_PAYCANCEL_FLAG": "Y",
            "PCD_PAY_OID": order,
            "PCD_PAY_DATE": date,
            "PCD_REFUND_TOTAL": request.amount.won().to_string(),
        });
        let answer = self
            .post_json(&auth.return_url, &body, CallKind::Mutation)
            .await?;
        let read = read_refund(&answer, request.amount, self.clock.now());
        self.evicting(Purpose::Cancel, &answer, read).await
    }

    /// Settlement inquiry for one day, paged with `PCD_LASTKEY` while `PCD_HAS_MORE`.
    async fn settlements(
        &self,
        date: NaiveDate,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<SettlementPage, GatewayError> {
        let auth = self.auth(Purpose::Settlement).await?;
        let day = date.format("%Y%m%d").to_string();
        let mut body = json!({
            "PCD_CST_ID": auth.cst_id.expose(),
            "PCD_CUST_KEY": auth.cust_key.expose(),
            "PCD_AUTH_KEY": auth.key.expose(),
            "PCD_SETTLEMENT_FLAG": "Y",
            "PCD_START_DATE": day,
            "PCD_END_DATE": day,
            "PCD_LIMIT": page_size.clamp(1, 3_000).to_string(),
        });
        if let Some(cursor) = cursor {
            body["PCD_LASTKEY"] = Value::String(cursor.to_owned());
        }
        self.pacer.wait_turn().await;
        let answer = self
            .post_json_capped(
                &auth.settlement_url,
                &body,
                CallKind::Query,
                super::client::SETTLEMENT_PAGE_BYTES_MAX,
            )
            .await?;
        let read = read_settlement_page(&answer);
        self.evicting(Purpose::Settlement, &answer, read).await
    }
}

impl PaymentGateway for PaypleGateway {
    fn provider(&self) -> Provider {
        Provider::Payple
    }

    fn fetch_payment<'a>(&'a self, pg_tid: &'a PgTid) -> GatewayFuture<'a, PgPayment> {
        Box::pin(self.inquire(pg_tid))
    }

    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> GatewayFuture<'a, CancelReceipt> {
        Box::pin(self.refund(request))
    }

    fn cancels_are_guarded(&self) -> bool {
        false
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
mod tests {
    use super::*;

    #[test]
    fn amounts_are_strings_of_digits_and_nothing_else() {
        assert_eq!(parse_won("15000"), Ok(15_000));
        assert_eq!(parse_won("-500"), Ok(-500));
        for bad in [
            "",
            "15,000",
            "1.5",
            "1e3",
            " ",
            "15000원",
            "0x10",
            "+5",
            "9999999999999999",
        ] {
            assert!(parse_won(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_payment_reference_carries_what_the_inquiry_needs() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let reference = payment_ref("card", date, "ord_01a2-x").unwrap();
        assert_eq!(reference.as_str(), "card.20261123.ord_01a2-x");
        assert_eq!(
            split_ref(&reference).unwrap(),
            ("card", "20261123", "ord_01a2-x")
        );
    }
}

//! Payments: search and filters, one payment's page with its timeline, refunds and settlement,
//! and the merchant's cancel form (full or partial).

use super::{Signed, refused, seoul, won};
use crate::domain::{IdempotencyKey, PaymentId, PaymentStatus, Provider};
use crate::flows::payments::{self, Viewer};
use crate::http::error::PageError;
use crate::http::i18n::Lang;
use crate::http::state::AppState;
use crate::store::PaymentFilter;
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use serde::Deserialize;

/// Payments one page of the list shows.
pub const ADMIN_PAGE_ROWS: usize = 50;

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

pub(super) struct Row {
    pub payment_id: String,
    pub order_id: String,
    pub name: String,
    pub provider: &'static str,
    pub amount: String,
    pub cancelled: String,
    pub status: &'static str,
    pub status_text: &'static str,
    pub paid_at: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/payments.html")]
struct PaymentsPage {
    l: Lang,
    csrf: String,
    nav: &'static str,
    rows: Vec<Row>,
    q: String,
    status: String,
    provider: String,
    from: String,
    to: String,
    statuses: Vec<(&'static str, &'static str)>,
    providers: Vec<&'static str>,
    next: Option<String>,
}

fn bad(lang: Lang, message: &str) -> PageError {
    PageError::new(StatusCode::BAD_REQUEST, lang, message.to_owned())
}

fn date(lang: Lang, raw: &str) -> Result<Option<NaiveDate>, PageError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map(Some)
        .map_err(|_| {
            bad(
                lang,
                lang.t(
                    "날짜는 YYYY-MM-DD로 적어 주세요.",
                    "Write dates as YYYY-MM-DD.",
                ),
            )
        })
}

pub async fn payments(
    State(state): State<AppState>,
    signed: Signed,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let texts = lang.texts();
    let Query(query) = query.map_err(|_| bad(lang, texts.bad_request))?;
    let filter = PaymentFilter {
        status: match query.status.as_str() {
            "" => None,
            raw => Some(PaymentStatus::parse(raw).ok_or_else(|| bad(lang, texts.bad_request))?),
        },
        provider: match query.provider.as_str() {
            "" => None,
            raw => Some(Provider::parse(raw).map_err(|_| bad(lang, texts.bad_request))?),
        },
        from: date(lang, &query.from)?,
        to: date(lang, &query.to)?,
        ..PaymentFilter::default()
    };
    let cursor = match query.cursor.as_str() {
        "" => None,
        raw => Some(PaymentId::parse(raw).map_err(|_| bad(lang, texts.bad_request))?),
    };
    let page = payments::search(&state.kassa, &query.q, filter, ADMIN_PAGE_ROWS, cursor)
        .await
        .map_err(|error| refused(lang, &error))?;
    let rows = rows(&state, lang, &page.items).await?;
    let next = page.next_cursor.map(|cursor| {
        serde_urlencoded::to_string([
            ("q", query.q.as_str()),
            ("status", &query.status),
            ("provider", &query.provider),
            ("from", &query.from),
            ("to", &query.to),
            ("cursor", &cursor.to_string()),
        ])
        .unwrap_or_default()
    });
    Ok(PaymentsPage {
        l: lang,
        csrf: signed.csrf,
        nav: "payments",
        rows,
        q: query.q,
        status: query.status,
        provider: query.provider,
        from: query.from,
        to: query.to,
        statuses: PaymentStatus::ALL
            .iter()
            .map(|status| (status.as_str(), texts.status(status.as_str())))
            .collect(),
        providers: Provider::ALL.iter().map(|p| p.as_str()).collect(),
        next,
    }
    .into_response())
}

/// Table rows for payments, with each order's product name.
pub(super) async fn rows(
    state: &AppState,
    lang: Lang,
    views: &[crate::store::PaymentView],
) -> Result<Vec<Row>, PageError> {
    let texts = lang.texts();
    let details = state
        .kassa
        .store
        .order_details(
            views
                .iter()
                .map(|view| view.payment.order_id.clone())
                .collect(),
        )
        .await
        .map_err(|error| PageError::from_flow(lang, &error.into()))?;
    Ok(views
        .iter()
        .map(|view| {
            let payment = &view.payment;
            Row {
                payment_id: payment.id.to_string(),
                order_id: payment.order_id.as_str().to_owned(),
                name: details
                    .get(&payment.order_id)
                    .map(|details| details.name.clone())
                    .unwrap_or_default(),
                provider: payment.provider.as_str(),
                amount: won(lang, payment.amount.won()),
                cancelled: won(lang, payment.cancelled_amount().won()),
                status: payment.status().as_str(),
                status_text: texts.status(payment.status().as_str()),
                paid_at: seoul(payment.paid_at),
            }
        })
        .collect())
}

struct EventLine {
    at: String,
    kind: &'static str,
    detail: String,
}

struct RefundLine {
    cancel_id: String,
    kind: &'static str,
    amount: String,
    state: &'static str,
    receipt: String,
    requested: String,
    done: String,
    reason: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/payment.html")]
struct PaymentPage {
    l: Lang,
    csrf: String,
    nav: &'static str,
    notice: Option<&'static str>,
    row: Row,
    pg_tid: String,
    buyer_email: String,
    partner: String,
    settlement: &'static str,
    balance: String,
    balance_won: i64,
    cancellable: bool,
    key: String,
    events: Vec<EventLine>,
    refunds: Vec<RefundLine>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    #[serde(default)]
    done: Option<String>,
}

pub async fn payment(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    query: Result<Query<NoticeQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let id = PaymentId::parse(&id).map_err(|_| PageError::not_found(lang))?;
    let view = payments::visible(&state.kassa, Viewer::Admin, id)
        .await
        .map_err(|error| PageError::from_flow(lang, &error))?;
    let intents = state
        .kassa
        .store
        .intents_of_payment(id)
        .await
        .map_err(|error| PageError::from_flow(lang, &error.into()))?;
    let details = state
        .kassa
        .store
        .order_details(vec![view.payment.order_id.clone()])
        .await
        .map_err(|error| PageError::from_flow(lang, &error.into()))?;
    let buyer_email = details
        .get(&view.payment.order_id)
        .and_then(|details| details.buyer_email.clone())
        .unwrap_or_default();
    let row = rows(&state, lang, std::slice::from_ref(&view))
        .await?
        .pop()
        .ok_or_else(|| PageError::not_found(lang))?;
    let payment = &view.payment;
    let balance = payment.balance().won();
    let done = query.ok().and_then(|Query(query)| query.done);
    Ok(PaymentPage {
        l: lang,
        csrf: signed.csrf,
        nav: "payments",
        notice: super::notice(lang, done.as_deref()),
        pg_tid: payment.pg_tid.as_str().to_owned(),
        buyer_email,
        partner: payment
            .partner_id
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        settlement: view.settlement_status.map_or("", |status| status.as_str()),
        balance: won(lang, balance),
        balance_won: balance,
        cancellable: balance > 0
            && matches!(
                payment.status(),
                PaymentStatus::Paid | PaymentStatus::PartiallyCancelled
            ),
        key: state.kassa.env.random_hex(16),
        events: view
            .events
            .iter()
            .rev()
            .map(|event| EventLine {
                at: seoul(event.at),
                kind: event.kind.as_str(),
                detail: event.detail.clone(),
            })
            .collect(),
        refunds: intents
            .iter()
            .map(|intent| RefundLine {
                cancel_id: intent.id.to_string(),
                kind: intent.kind.as_str(),
                amount: won(lang, intent.amount.won()),
                state: intent.state.as_str(),
                receipt: intent.pg_cancel_id.clone().unwrap_or_default(),
                requested: seoul(intent.created_at),
                done: intent.done_at.map(seoul).unwrap_or_default(),
                reason: intent.reason.clone(),
            })
            .collect(),
        row,
    }
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    /// Empty: the whole remaining balance.
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

/// The cancel form of a payment's page: the form's own key makes a double submit one cancel.
pub async fn cancel(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    form: Result<Form<CancelForm>, FormRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let texts = lang.texts();
    let form = signed.form(&state, form, |form| &form.csrf)?;
    let id = PaymentId::parse(&id).map_err(|_| PageError::not_found(lang))?;
    let key = IdempotencyKey::parse(&form.key).map_err(|_| bad(lang, texts.bad_request))?;
    let amount = match form.amount.trim().replace(',', "").as_str() {
        "" => None,
        raw => Some(raw.parse::<i64>().map_err(|_| {
            bad(
                lang,
                lang.t(
                    "금액은 원 단위 숫자로 적어 주세요.",
                    "Write the amount in won, as a number.",
                ),
            )
        })?),
    };
    let reason = match form.reason.trim() {
        "" => lang.t("관리자 취소", "cancelled by the merchant"),
        reason => reason,
    };
    let view = payments::visible(&state.kassa, Viewer::Admin, id)
        .await
        .map_err(|error| PageError::from_flow(lang, &error))?;
    crate::flows::cancel::request(&state.kassa, &view.payment, key, amount, reason)
        .await
        .map_err(|error| refused(lang, &error))?;
    Ok(Redirect::to(&format!("/admin/payments/{id}?done=cancel")).into_response())
}

//! The buyer's pages: products and checkout, paying one order, the result, "my payments".

use crate::config::GatewayMode;
use crate::domain::{BuyerId, OrderId, OrderStatus, PgTid, Provider};
use crate::flows::payments::{self, Source};
use crate::flows::{FlowError, orders, result};
use crate::gateway::inbound::CheckoutEnd;
use crate::http::client::Client;
use crate::http::cookie;
use crate::http::error::PageError;
use crate::http::i18n::{Lang, Texts, format_won};
use crate::http::state::AppState;
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono_tz::Asia::Seoul;
use serde::Deserialize;

/// Payments one page of "my payments" shows; older ones are on the next page.
pub const MYPAGE_ROWS_MAX: usize = 20;

/// The buyer of the request, or a new one whose cookie goes out with the response.
fn buyer(
    state: &AppState,
    headers: &HeaderMap,
    client: Client,
) -> (BuyerId, Option<axum::http::HeaderValue>) {
    match cookie::buyer_of(state.cookie_key(), headers) {
        Some(buyer) => (buyer, None),
        None => {
            let buyer = BuyerId::from_uuid(state.kassa.env.new_uuid());
            (
                buyer,
                Some(cookie::set_cookie(
                    state.cookie_key(),
                    buyer,
                    state.secure_cookies(client),
                )),
            )
        }
    }
}

struct ProductRow {
    id: String,
    name: String,
    price: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/products.html")]
struct ProductsPage {
    t: &'static Texts,
    products: Vec<ProductRow>,
    sandbox: bool,
}

pub async fn products(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let lang = Lang::from_headers(&headers);
    let products = state
        .kassa
        .config
        .products
        .iter()
        .map(|product| ProductRow {
            id: product.id.clone(),
            name: product.name.clone(),
            price: format_won(lang, product.price.won()),
        })
        .collect();
    ProductsPage {
        t: lang.texts(),
        products,
        sandbox: state.sandbox,
    }
}

#[derive(Debug, Deserialize)]
pub struct CheckoutForm {
    #[serde(default)]
    product_id: String,
    /// Which PG to pay through; offered on the product list in sandbox mode.
    #[serde(default)]
    provider: Option<String>,
}

pub async fn checkout(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    form: Result<Form<CheckoutForm>, FormRejection>,
) -> Response {
    let lang = Lang::from_headers(&headers);
    let Ok(Form(form)) = form else {
        return PageError::new(StatusCode::BAD_REQUEST, lang, lang.texts().bad_request)
            .into_response();
    };
    let (buyer, set_cookie) = buyer(&state, &headers, client);
    let parsed = form
        .provider
        .as_deref()
        .filter(|raw| !raw.is_empty())
        .map(Provider::parse)
        .transpose();
    let Ok(provider) = parsed else {
        return PageError::new(StatusCode::BAD_REQUEST, lang, lang.texts().bad_request)
            .into_response();
    };
    let client_tag = crate::http::client::tag(state.cookie_key(), client);
    match orders::order_product(&state.kassa, &form.product_id, buyer, provider, client_tag).await {
        Ok(order_id) => {
            let mut response = Redirect::to(&format!("/payment/{order_id}")).into_response();
            if let Some(value) = set_cookie {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) => PageError::from_flow(lang, &error).into_response(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/order.html")]
struct OrderPage {
    t: &'static Texts,
    order_id: String,
    name: String,
    amount: i64,
    amount_text: String,
    buyer_email: String,
    paid: bool,
    /// Why the last checkout ended without a payment, in words, if it did.
    failed: Option<&'static str>,
    sandbox: bool,
    /// `portone` or `toss`: which checkout the page opens.
    provider: &'static str,
    return_url: String,
    sdk_url: String,
    imp_code: String,
    pg: String,
    toss_sdk_url: String,
    toss_client_key: String,
    toss_success_url: String,
    toss_fail_url: String,
    payple_sdk_url: String,
    payple_client_key: String,
    payple_result_url: String,
}

#[derive(Debug, Deserialize)]
pub struct OrderQuery {
    #[serde(default)]
    failed: Option<String>,
}

pub async fn order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
    query: Result<Query<OrderQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = Lang::from_headers(&headers);
    let order_id = OrderId::parse(&order_id).map_err(|_| PageError::not_found(lang))?;
    let order = state
        .kassa
        .store
        .order(&order_id)
        .await
        .map_err(|error| PageError::from_flow(lang, &error.into()))?
        .ok_or_else(|| PageError::not_found(lang))?;
    let portone = &state.kassa.config.gateway.portone;
    let page = OrderPage {
        t: lang.texts(),
        order_id: order_id.as_str().to_owned(),
        name: order.draft.name.clone(),
        amount: order.draft.amount.won(),
        amount_text: format_won(lang, order.draft.amount.won()),
        // Anyone with the link sees the order; only its buyer sees the e-mail address on it.
        buyer_email: if order.buyer_id.is_some()
            && order.buyer_id == cookie::buyer_of(state.cookie_key(), &headers)
        {
            order.draft.buyer_email.clone().unwrap_or_default()
        } else {
            String::new()
        },
        paid: order.status() == OrderStatus::Paid,
        failed: query
            .ok()
            .and_then(|Query(query)| query.failed)
            .map(|raw| checkout_end_text(lang, CheckoutEnd::parse(&raw))),
        sandbox: state.kassa.config.gateway.mode == GatewayMode::Sandbox,
        provider: order.draft.provider.as_str(),
        return_url: format!("{}/payment/portone/return", state.public_base_url),
        sdk_url: portone.sdk_url.clone(),
        imp_code: portone.imp_code.clone(),
        pg: portone.pg.clone(),
        toss_sdk_url: state.kassa.config.gateway.toss.sdk_url.clone(),
        toss_client_key: state.kassa.config.gateway.toss.client_key.clone(),
        toss_success_url: format!("{}/payment/toss/success", state.public_base_url),
        toss_fail_url: format!("{}/payment/toss/fail", state.public_base_url),
        payple_sdk_url: state.kassa.config.gateway.payple.sdk_url.clone(),
        payple_client_key: state.kassa.config.gateway.payple.client_key.clone(),
        payple_result_url: format!("{}/api/payment/payple/result", state.public_base_url),
    };
    Ok(page.into_response())
}

#[derive(Debug, Deserialize)]
pub struct PortOneReturn {
    #[serde(default)]
    imp_uid: Option<String>,
    #[serde(default)]
    merchant_uid: Option<String>,
    #[serde(default)]
    imp_success: Option<String>,
    #[serde(default)]
    error_msg: Option<String>,
}

/// What the order page says after a checkout that took no money.
fn checkout_end_text(lang: Lang, end: CheckoutEnd) -> &'static str {
    match end {
        CheckoutEnd::Cancelled => lang.t(
            "결제를 취소하셨습니다. 돈은 나가지 않았습니다. 다시 결제하거나 상품 목록으로 돌아갈 수 있습니다.",
            "You cancelled the payment; no money was taken. Pay again, or go back to the products.",
        ),
        CheckoutEnd::Declined => lang.t(
            "카드사에서 결제를 거절했습니다. 돈은 나가지 않았습니다. 다른 카드로 다시 결제해 주세요.",
            "The card was declined; no money was taken. Please pay again with another card.",
        ),
        CheckoutEnd::Failed => lang.texts().pay_failed,
    }
}

/// Where the PG's window sends the buyer back. The query only names the payment: it is fetched
/// from the PG before anything is stored, then the buyer sees the result page.
pub async fn portone_return(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PortOneReturn>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = Lang::from_headers(&headers);
    let Ok(Query(query)) = query else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            lang,
            lang.texts().bad_request,
        ));
    };
    let order_id = query
        .merchant_uid
        .as_deref()
        .and_then(|raw| OrderId::parse(raw).ok())
        .ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, lang, lang.texts().bad_request))?;
    let pg_tid = query
        .imp_uid
        .as_deref()
        .and_then(|raw| PgTid::parse(raw).ok());
    let Some(pg_tid) = pg_tid.filter(|_| query.imp_success.as_deref() != Some("false")) else {
        let end = crate::gateway::inbound::portone_checkout_end(
            query.error_msg.as_deref().unwrap_or_default(),
        );
        return Ok(
            Redirect::to(&format!("/payment/{order_id}?failed={}", end.as_str())).into_response(),
        );
    };
    match payments::complete(
        &state.kassa,
        Provider::PortOne,
        &pg_tid,
        Some(&order_id),
        Source::Redirect,
    )
    .await
    {
        Ok(_) => {}
        // The result page asks again while the outcome is pending, so a PG that is down now
        // does not lose the payment.
        Err(FlowError::Gateway(error)) => {
            tracing::warn!(error = %error, "completion on return failed; the result page will retry");
        }
        Err(FlowError::Unprocessable {
            code: "PAYMENT_FAILED",
            ..
        }) => {
            return Ok(Redirect::to(&format!("/payment/{order_id}?failed=failed")).into_response());
        }
        Err(error) => return Err(PageError::from_flow(lang, &error)),
    }
    Ok(Redirect::to(&format!("/payment/result/{order_id}?imp_uid={pg_tid}")).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TossSuccess {
    #[serde(default)]
    payment_key: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    amount: Option<i64>,
}

/// Toss's `successUrl`: the buyer authorised a payment, which kassa now confirms with the
/// order's own amount before anything is stored; then the buyer sees the result page.
pub async fn toss_success(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TossSuccess>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = Lang::from_headers(&headers);
    let bad = || PageError::new(StatusCode::BAD_REQUEST, lang, lang.texts().bad_request);
    let Ok(Query(query)) = query else {
        return Err(bad());
    };
    let order_id = query
        .order_id
        .as_deref()
        .and_then(|raw| OrderId::parse(raw).ok())
        .ok_or_else(bad)?;
    let payment_key = query
        .payment_key
        .as_deref()
        .and_then(|raw| PgTid::parse(raw).ok())
        .ok_or_else(bad)?;
    match payments::confirm_toss(
        &state.kassa,
        &payment_key,
        &order_id,
        query.amount,
        Source::Redirect,
    )
    .await
    {
        Ok(_)
        | Err(FlowError::Conflict {
            code: "ORDER_ALREADY_PAID",
            ..
        }) => {}
        Err(FlowError::Gateway(error)) => {
            tracing::warn!(error = %error, "Toss confirm on return failed; the result page will retry");
        }
        Err(FlowError::Unprocessable { .. }) => {
            return Ok(Redirect::to(&format!("/payment/{order_id}?failed=failed")).into_response());
        }
        Err(error) => return Err(PageError::from_flow(lang, &error)),
    }
    let amount = query.amount.unwrap_or_default();
    Ok(Redirect::to(&format!(
        "/payment/result/{order_id}?payment_key={payment_key}&amount={amount}"
    ))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TossFail {
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// Toss's `failUrl`: the buyer cancelled or the card was refused; nothing was taken.
pub async fn toss_fail(
    headers: HeaderMap,
    query: Result<Query<TossFail>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = Lang::from_headers(&headers);
    let query = query.ok().map(|Query(query)| query);
    let order_id = query
        .as_ref()
        .and_then(|query| query.order_id.as_deref())
        .and_then(|raw| OrderId::parse(raw).ok());
    let Some(order_id) = order_id else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            lang,
            lang.texts().bad_request,
        ));
    };
    let code = query.and_then(|query| query.code).unwrap_or_default();
    tracing::info!(order_id = %order_id, code = %code.chars().take(64).collect::<String>(), "Toss checkout failed or was cancelled");
    let end = crate::gateway::inbound::toss_checkout_end(&code);
    Ok(Redirect::to(&format!("/payment/{order_id}?failed={}", end.as_str())).into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/result.html")]
struct ResultPage {
    t: &'static Texts,
    order_id: String,
    result: &'static str,
    result_text: &'static str,
    is_final: bool,
    /// What the page may ask kassa to verify again while pending: the PG and its payment key.
    verify_provider: &'static str,
    verify_key: String,
    verify_amount: i64,
    texts_json: String,
}

#[derive(Debug, Deserialize)]
pub struct ResultQuery {
    #[serde(default)]
    imp_uid: Option<String>,
    #[serde(default)]
    payment_key: Option<String>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    payple_ref: Option<String>,
}

pub async fn result_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
    query: Result<Query<ResultQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = Lang::from_headers(&headers);
    let texts = lang.texts();
    let order_id = OrderId::parse(&order_id).map_err(|_| PageError::not_found(lang))?;
    let outcome = result::outcome(&state.kassa, &order_id)
        .await
        .map_err(|error| PageError::from_flow(lang, &error))?;
    let query = query.ok().map(|Query(query)| query);
    let valid = |raw: &Option<String>| raw.clone().filter(|raw| PgTid::parse(raw).is_ok());
    let (verify_provider, verify_key, verify_amount) = match &query {
        Some(query) if valid(&query.payment_key).is_some() => (
            "toss",
            valid(&query.payment_key).unwrap_or_default(),
            query.amount.unwrap_or_default(),
        ),
        Some(query) if valid(&query.payple_ref).is_some() => {
            ("payple", valid(&query.payple_ref).unwrap_or_default(), 0)
        }
        Some(query) => ("portone", valid(&query.imp_uid).unwrap_or_default(), 0),
        None => ("portone", String::new(), 0),
    };
    let texts_json = serde_json::to_string(
        &texts
            .results
            .iter()
            .copied()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap_or_else(|_| "{}".into());
    let page = ResultPage {
        t: texts,
        order_id: order_id.as_str().to_owned(),
        result: outcome.result.as_str(),
        result_text: texts.result(outcome.result.as_str()),
        is_final: outcome.result.is_final(),
        verify_provider,
        verify_key,
        verify_amount,
        texts_json,
    };
    Ok(page.into_response())
}

struct PaymentRow {
    payment_id: String,
    cancellable: bool,
    /// A fresh Idempotency-Key per rendering: a double submit of the same form is one cancel.
    key: String,
    /// The form's CSRF token, tied to the buyer and to `key`.
    csrf: String,
    order_id: String,
    name: String,
    amount: String,
    refunded: Option<String>,
    /// Each refund carried out: its amount and its date.
    refunds: Vec<(String, String)>,
    status: &'static str,
    status_text: &'static str,
    paid_at: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/mypage.html")]
struct MyPage {
    t: &'static Texts,
    lang: Lang,
    rows: Vec<PaymentRow>,
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MypageQuery {
    #[serde(default)]
    before: Option<String>,
}

/// The buyer's own payments: found through the signed cookie only, so nobody sees another's.
pub async fn mypage(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<MypageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = Lang::from_headers(&headers);
    let texts = lang.texts();
    let failed = |error: crate::store::StoreError| PageError::from_flow(lang, &error.into());
    let before = query
        .ok()
        .and_then(|Query(query)| query.before)
        .and_then(|raw| crate::domain::PaymentId::parse(&raw).ok());
    let Some(buyer) = cookie::buyer_of(state.cookie_key(), &headers) else {
        return Ok(MyPage {
            t: texts,
            lang,
            rows: Vec::new(),
            next: None,
        }
        .into_response());
    };
    let store = &state.kassa.store;
    let page = store
        .list_buyer_payments(buyer, MYPAGE_ROWS_MAX, before)
        .await
        .map_err(failed)?;
    let details = store
        .order_details(
            page.items
                .iter()
                .map(|view| view.payment.order_id.clone())
                .collect(),
        )
        .await
        .map_err(failed)?;
    let day = |at: chrono::DateTime<chrono::Utc>| {
        at.with_timezone(&Seoul)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let mut rows = Vec::with_capacity(page.items.len());
    for view in &page.items {
        let payment = &view.payment;
        let refunds = if payment.cancelled_amount().won() > 0 {
            store
                .intents_of_payment(payment.id)
                .await
                .map_err(failed)?
                .iter()
                .filter(|intent| intent.state == crate::domain::IntentState::Done)
                .map(|intent| {
                    (
                        format_won(lang, intent.amount.won()),
                        intent.done_at.map(day).unwrap_or_default(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let key = state.kassa.env.random_hex(16);
        rows.push(PaymentRow {
            payment_id: payment.id.to_string(),
            cancellable: matches!(
                payment.status(),
                crate::domain::PaymentStatus::Paid
                    | crate::domain::PaymentStatus::PartiallyCancelled
            ),
            csrf: cookie::csrf_token(state.cookie_key(), buyer, &key),
            key,
            order_id: payment.order_id.as_str().to_owned(),
            name: details.get(&payment.order_id).map_or_else(
                || payment.order_id.as_str().to_owned(),
                |details| details.name.clone(),
            ),
            amount: format_won(lang, payment.amount.won()),
            refunded: (payment.cancelled_amount().won() > 0)
                .then(|| format_won(lang, payment.cancelled_amount().won())),
            refunds,
            status: payment.status().as_str(),
            status_text: texts.status(payment.status().as_str()),
            paid_at: day(payment.paid_at),
        });
    }
    Ok(MyPage {
        t: texts,
        lang,
        rows,
        next: page.next_cursor.map(|cursor| cursor.to_string()),
    }
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct MypageCancelForm {
    #[serde(default)]
    payment_id: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
}

/// The cancel button of "my payments": cancels the buyer's own payment in full.
pub async fn mypage_cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<MypageCancelForm>, FormRejection>,
) -> Result<Response, PageError> {
    let lang = Lang::from_headers(&headers);
    let bad = || PageError::new(StatusCode::BAD_REQUEST, lang, lang.texts().bad_request);
    let Ok(Form(form)) = form else {
        return Err(bad());
    };
    let buyer =
        cookie::buyer_of(state.cookie_key(), &headers).ok_or_else(|| PageError::not_found(lang))?;
    // SameSite=Lax already keeps the cookie off other sites' posts; the token does not rely on it.
    if !cookie::csrf_valid(state.cookie_key(), buyer, &form.key, &form.csrf) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            lang,
            lang.texts().bad_request,
        ));
    }
    let payment_id = crate::domain::PaymentId::parse(&form.payment_id)
        .map_err(|_| PageError::not_found(lang))?;
    let key = crate::domain::IdempotencyKey::parse(&form.key).map_err(|_| bad())?;
    let view = payments::visible(&state.kassa, payments::Viewer::Buyer(buyer), payment_id)
        .await
        .map_err(|error| PageError::from_flow(lang, &error))?;
    let reason = "buyer cancelled on my payments";
    crate::flows::cancel::request(&state.kassa, &view.payment, key, None, reason)
        .await
        .map_err(|error| PageError::from_flow(lang, &error))?;
    Ok(Redirect::to("/payment/mypage").into_response())
}

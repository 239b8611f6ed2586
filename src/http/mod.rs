//! The inbound HTTP adapter (axum): the only module that knows HTTP, JSON and HTML.
//!
//! Invariants: every route is in `router`; bad input gets a 4xx (JSON under `/api`, a page
//! elsewhere) and never reaches a flow unparsed; every request has a body limit and a deadline.

pub mod api;
pub mod client;
pub mod cookie;
pub mod error;
pub mod extract;
pub mod i18n;
pub mod observe;
pub mod pages;
pub mod serve;
pub mod state;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use error::ApiError;
use pages::admin;
use rust_embed::RustEmbed;
use state::AppState;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;

/// Largest request body kassa reads.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest any request other than the long-poll may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The long-poll's own deadline, a little past its longest wait.
pub const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(crate::flows::result::WAIT_S_MAX + 10);

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// An admin page is kept out of caches and frames.
async fn private_admin_page(uri: axum::http::Uri, mut response: Response) -> Response {
    if uri.path() == "/admin" || uri.path().starts_with("/admin/") {
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    response
}

/// All of kassa's routes. `extra` (the sandbox PG, when enabled) is mounted at `/sandbox-pg`.
#[expect(clippy::too_many_lines, reason = "every route in one table")]
pub fn router(state: AppState, sandbox: Option<Router>) -> Router {
    let body_read_timeout = state.kassa.config.http.body_read_timeout;
    let state_for_ids = state.clone();
    // The public endpoints a browser (or a script) can call without a token: per client.
    let limited = || axum::middleware::from_fn_with_state(state.clone(), client::rate_limited);
    let webhook = || axum::middleware::from_fn_with_state(state.clone(), client::webhook_source);
    let api = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/api/orders", post(api::create_order))
        .route("/api/orders/{order_id}", get(api::get_order))
        .route(
            "/api/payment/portone",
            post(api::complete_portone).route_layer(limited()),
        )
        .route(
            "/api/webhooks/portone",
            post(api::webhook_portone).route_layer(webhook()),
        )
        .route(
            "/api/payment/toss/confirm",
            post(api::confirm_toss).route_layer(limited()),
        )
        .route(
            "/api/payment/payple/result",
            post(api::payple_result).route_layer(limited()),
        )
        .route(
            "/api/webhooks/toss",
            post(api::webhook_toss).route_layer(webhook()),
        )
        .route(
            "/api/webhooks/payple",
            post(api::webhook_payple)
                .head(api::webhook_payple_head)
                .route_layer(webhook()),
        )
        .route("/api/payments", get(api::list_payments))
        .route("/api/payments/{payment_id}", get(api::get_payment))
        .route("/api/payment/list", get(api::list_own_payments))
        .route("/api/admin/dead-letters", get(api::dead_letters))
        .route("/api/admin/dead-letters/{id}/redrive", post(api::redrive))
        .route(
            "/api/admin/dead-letters/{id}/resolve",
            post(api::resolve_dead_letter),
        )
        .route("/api/admin/alerts", get(api::alerts))
        .route("/api/admin/settlements", get(api::settlements))
        .route(
            "/api/admin/settlement-findings",
            get(api::settlement_findings),
        )
        .route("/api/admin/settlement-sync/runs", get(api::settlement_runs))
        .route(
            "/api/admin/partner-settlements",
            get(api::partner_settlements),
        )
        .route(
            "/api/admin/partner-settlements/run",
            post(api::run_partner_settlements),
        )
        .route(
            "/api/admin/partner-settlements/{id}/status",
            post(api::move_partner_settlement),
        )
        .route("/", get(|| async { Redirect::to("/payment") }))
        .route("/payment", get(pages::products))
        .route(
            "/payment/checkout",
            post(pages::checkout).route_layer(limited()),
        )
        .route("/payment/mypage", get(pages::mypage))
        .route("/payment/mypage/cancel", post(pages::mypage_cancel))
        .route(
            "/payment/portone/return",
            get(pages::portone_return).route_layer(limited()),
        )
        .route(
            "/payment/toss/success",
            get(pages::toss_success).route_layer(limited()),
        )
        .route("/payment/toss/fail", get(pages::toss_fail))
        .route("/payment/result/{order_id}", get(pages::result_page))
        .route("/payment/{order_id}", get(pages::order))
        .route("/static/{*path}", get(static_file))
        .route("/admin", get(admin::home))
        .route("/admin/login", post(admin::login))
        .route("/admin/logout", post(admin::logout))
        .route("/admin/payments", get(admin::payments))
        .route("/admin/payments/{payment_id}", get(admin::payment))
        .route("/admin/dead-letters", get(admin::dead_letters))
        .route("/admin/dead-letters/{id}/redrive", post(admin::redrive))
        .route("/admin/dead-letters/{id}/resolve", post(admin::resolve))
        .route("/admin/settlement-sync", get(admin::settlement_sync))
        .route(
            "/admin/partner-settlements",
            get(admin::partner_settlements),
        )
        .route(
            "/admin/partner-settlements/run",
            post(admin::partner_settlements_run),
        )
        .route(
            "/admin/partner-settlements/{id}/status",
            post(admin::partner_settlements_move),
        )
        .route("/admin/alerts", get(admin::alerts))
        .route("/metrics", get(observe::metrics))
        .route("/api/admin/export/payments.csv", get(api::export_payments))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::measure,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ));
    let long_poll = Router::new()
        .route(
            "/api/payments/result/{order_id}",
            get(api::order_result).route_layer(limited()),
        )
        // A cancel waits its turn and makes its inline attempts inside the request.
        .route(
            "/api/payments/{payment_id}/cancel",
            post(api::cancel_payment),
        )
        // A backup copies every table before it answers.
        .route("/api/admin/backup", get(api::backup))
        // A sync pages at the PG's pace: up to max_pages_per_run × page_interval_ms.
        .route(
            "/api/admin/settlement-sync/run",
            post(api::run_settlement_sync),
        )
        // The admin page's cancel and "run now" wait like their API twins.
        .route("/admin/payments/{payment_id}/cancel", post(admin::cancel))
        .route(
            "/admin/settlement-sync/run",
            post(admin::settlement_sync_run),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            LONG_POLL_TIMEOUT,
        ));
    let mut router = api.merge(long_poll);
    if let Some(sandbox) = sandbox {
        let deadline = Duration::from_millis(crate::sandbox::HOLD_MS_MAX) + Duration::from_secs(5);
        router = router.nest_service(
            "/sandbox-pg",
            sandbox.layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                deadline,
            )),
        );
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyTimeoutLayer::new(body_read_timeout))
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::map_response(timeout_as_json))
        .layer(axum::middleware::map_response(private_admin_page))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "an internal error happened; it has been logged",
            )
            .into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(
            state_for_ids,
            observe::request_ids,
        ))
}

async fn static_file(Path(path): Path<String>) -> Response {
    match Assets::get(&path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, file.metadata.mimetype().to_owned()),
                (header::CACHE_CONTROL, "public, max-age=3600".to_owned()),
            ],
            file.data,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn wants_json(request: &Request) -> bool {
    request.uri().path().starts_with("/api/") || request.uri().path() == "/healthz"
}

async fn not_found(request: Request) -> Response {
    if wants_json(&request) {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint").into_response()
    } else {
        error::PageError::not_found(i18n::Lang::from_headers(request.headers())).into_response()
    }
}

async fn method_not_allowed(request: Request) -> Response {
    let _ = request;
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this endpoint does not take that method",
    )
    .into_response()
}

/// The timeout layer answers a bare 503; give it kassa's JSON error body.
async fn timeout_as_json(response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TIMEOUT",
            "the request took too long; nothing was lost, ask again",
        )
        .into_response();
    }
    response
}

//! What kassa tells about each request: a request id on every log line of the request, in the
//! `X-Request-Id` answer header and in JSON error answers; latency by route for `/metrics`.

use super::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest request id taken from a caller (a proxy's); longer or odd ones are replaced.
const REQUEST_ID_CHARS_MAX: usize = 64;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being answered, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

fn usable(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= REQUEST_ID_CHARS_MAX
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Outermost middleware: names the request, runs it inside a span that carries the id, and
/// answers with the id.
pub async fn request_ids(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|raw| usable(raw))
        .map_or_else(
            || state.kassa.env.new_uuid().simple().to_string(),
            str::to_owned,
        );
    let span = tracing::info_span!("request", id = %id);
    let header_value = HeaderValue::from_str(&id).ok();
    let mut response = REQUEST_ID
        .scope(id, next.run(request).instrument(span))
        .await;
    if let Some(value) = header_value {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Route middleware: the request's latency under its matched route.
pub async fn measure(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.kassa.metrics.observe_http(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`: open to a scraper on this machine (a loopback peer, not forwarded), and to
/// anyone with the admin token.
pub async fn metrics(
    State(state): State<AppState>,
    client: super::client::Client,
    caller: super::extract::Caller,
    headers: axum::http::HeaderMap,
) -> Response {
    // A proxy on this machine makes every request look local: a trusted proxy's requests, or
    // any that carry a forwarding header, need the token.
    let proxied = client.ip.is_some_and(|ip| {
        state
            .kassa
            .config
            .http
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }) || ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name));
    let local = client.ip.is_some_and(|ip| ip.is_loopback()) && !proxied;
    if !local && caller != super::extract::Caller::Admin {
        return super::error::ApiError::unauthorized().into_response();
    }
    match state
        .kassa
        .metrics
        .render(&state.kassa.store, state.kassa.env.now())
        .await
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "the metrics could not be read from the store");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store could not be read\n",
            )
                .into_response()
        }
    }
}

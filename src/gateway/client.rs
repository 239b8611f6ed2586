//! The shared HTTP client for PGs: rustls on ring with the Mozilla roots built in (no OpenSSL, no
//! system CA store needed), a timeout on every call, and a cap on what a response may weigh.

use super::GatewayError;
use std::time::Duration;

/// Most bytes kassa reads of one PG response; a larger one is refused as unreadable.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024;
/// Most bytes of one settlement page: up to 3,000 lines of a few hundred bytes each.
pub const SETTLEMENT_PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Longest wait for a TCP and TLS connection to a PG.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the client every gateway shares. `timeout` bounds a whole call.
pub fn build(timeout: Duration) -> Result<reqwest::Client, String> {
    // Installing the provider twice (tests build many clients) is harmless: the first one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| reqwest::Certificate::from_der(der.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())?;
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .user_agent(concat!("kassa/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| error.to_string())
}

/// `base` with `segments` appended as path segments, each percent-encoded by the URL builder, so
/// an id can never reach another path of the PG's host (`..`, `/`, `\`, `?` stay inside its
/// segment).
pub fn url_with(base: &str, segments: &[&str]) -> Result<reqwest::Url, GatewayError> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|error| GatewayError::BadResponse(format!("the PG base URL: {error}")))?;
    url.path_segments_mut()
        .map_err(|()| GatewayError::BadResponse("the PG base URL cannot have a path".into()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Whether the call may have changed something at the PG. For a query, a lost answer is
/// harmless; for a cancel, it means the outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Query,
    Mutation,
}

/// Classifies a failed send. A connect error means the request never left; anything after that
/// leaves a mutation's outcome unknown.
pub fn classify_send_error(error: &reqwest::Error, kind: CallKind) -> GatewayError {
    let text = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        without_url(error)
    };
    if error.is_connect() || kind == CallKind::Query {
        GatewayError::Transient(text)
    } else {
        GatewayError::UnknownOutcome(text)
    }
}

/// reqwest's message without the URL, which may carry ids the log does not need.
fn without_url(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut parts = Vec::new();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        "request failed".to_owned()
    } else {
        parts.join(": ")
    }
}

/// Reads a response body, refusing one larger than `RESPONSE_BYTES_MAX`.
pub async fn read_capped(
    response: reqwest::Response,
    kind: CallKind,
) -> Result<Vec<u8>, GatewayError> {
    read_capped_to(response, kind, RESPONSE_BYTES_MAX).await
}

/// Reads a response body, refusing one larger than `bytes_max`.
pub async fn read_capped_to(
    mut response: reqwest::Response,
    kind: CallKind,
    bytes_max: usize,
) -> Result<Vec<u8>, GatewayError> {
    if response
        .content_length()
        .is_some_and(|length| length > bytes_max as u64)
    {
        return Err(GatewayError::BadResponse(format!(
            "response larger than {bytes_max} bytes"
        )));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > bytes_max {
                    return Err(GatewayError::BadResponse(format!(
                        "response larger than {bytes_max} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(classify_send_error(&error, kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_inside_their_path_segment() {
        let url = url_with(
            "https://api.pg.example/v1/",
            &["payments", "../users/getToken"],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.pg.example/v1/payments/..%2Fusers%2FgetToken"
        );
        let url = url_with("https://api.pg.example", &["payments", "a\\b?c#d"]).unwrap();
        assert_eq!(url.path(), "/payments/a%5Cb%3Fc%23d");
        assert_eq!(url.query(), None);
    }
}

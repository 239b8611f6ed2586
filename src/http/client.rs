//! Who a request comes from, and the per-client bounds of what faces the internet: the rate
//! limit of the public endpoints and the allow-list of PG webhook sources.
//!
//! The client is the TCP peer. Only when the peer is one of `http.trusted_proxies` are
//! `X-Forwarded-For` (walked from the right, past the trusted proxies) and `X-Forwarded-Proto`
//! believed; anybody else could write them.

use super::error::ApiError;
use super::i18n::Lang;
use super::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Most `X-Forwarded-For` hops read.
const FORWARDED_HOPS_MAX: usize = 20;
/// How often the rate limiter forgets clients that are back to a full allowance; its memory is
/// bounded by the clients seen within about this long.
pub const RATE_LIMIT_FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The rate limiter of the public endpoints, keyed by client (an IPv6 client by its /64).
pub type ClientLimiter = Arc<DefaultKeyedRateLimiter<IpAddr>>;

/// The bound of the webhook inbox: webhooks are not limited per client (a PG sends from few
/// addresses), but all of them together are.
pub type InboxLimiter = Arc<governor::DefaultDirectRateLimiter>;

pub fn inbox_limiter(per_second: std::num::NonZeroU32) -> InboxLimiter {
    let burst = per_second.saturating_mul(std::num::NonZeroU32::new(10).unwrap_or(per_second));
    Arc::new(RateLimiter::direct(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

pub fn limiter(limit: crate::config::RateLimit) -> ClientLimiter {
    Arc::new(RateLimiter::keyed(
        Quota::per_minute(limit.per_minute).allow_burst(limit.burst),
    ))
}

/// The request's client, as far as kassa can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// `None` only for requests that did not come over a connection (tests of the router).
    pub ip: Option<IpAddr>,
    /// The browser reached kassa over https (directly, or as a trusted proxy says).
    pub https: bool,
}

impl Client {
    pub fn of(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &[IpNet]) -> Client {
        // On a dual-stack listener an IPv4 peer arrives as `::ffff:a.b.c.d`: compare it as the
        // IPv4 address it is, with IPv4 networks.
        let Some(peer) = peer.map(|peer| peer.to_canonical()) else {
            return Client {
                ip: None,
                https: false,
            };
        };
        if !trusted.iter().any(|net| net.contains(&peer)) {
            return Client {
                ip: Some(peer),
                https: false,
            };
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut ip = peer;
        for hop in hops.iter().rev().take(FORWARDED_HOPS_MAX) {
            match hop.parse::<IpAddr>().map(|hop| hop.to_canonical()) {
                Ok(hop) => {
                    ip = hop;
                    if !trusted.iter().any(|net| net.contains(&hop)) {
                        break;
                    }
                }
                // Garbage (or an obfuscated name) ends what can be believed.
                Err(_) => break,
            }
        }
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
        Client {
            ip: Some(ip),
            https,
        }
    }

    /// The key of the client's allowances: its address, or the /64 of an IPv6 one (one host
    /// usually holds a whole /64).
    pub fn bucket(&self) -> IpAddr {
        match self.ip {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let segments = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(
                        segments[0],
                        segments[1],
                        segments[2],
                        segments[3],
                        0,
                        0,
                        0,
                        0,
                    ))
                }
            },
        }
    }
}

fn peer(parts_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

impl FromRequestParts<AppState> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client::of(
            &parts.headers,
            peer(&parts.extensions),
            &state.kassa.config.http.trusted_proxies,
        ))
    }
}

fn client_of_request(state: &AppState, request: &Request) -> Client {
    Client::of(
        request.headers(),
        peer(request.extensions()),
        &state.kassa.config.http.trusted_proxies,
    )
}

/// Middleware of the public endpoints: past the client's allowance, 429 with `Retry-After`
/// (JSON under `/api`, a page elsewhere), and the request is not run.
pub async fn rate_limited(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = &state.limiter else {
        return next.run(request).await;
    };
    let client = client_of_request(&state, &request);
    let Err(not_until) = limiter.check_key(&client.bucket()) else {
        return next.run(request).await;
    };
    let seconds = retry_after(not_until.wait_time_from(DefaultClock::default().now()));
    let mut response = if request.uri().path().starts_with("/api/") {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!("too many requests from this client; try again in {seconds} s"),
        )
        .into_response()
    } else {
        super::error::PageError::too_many_requests(Lang::from_headers(request.headers()))
            .into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Middleware of the PG webhooks: when `http.webhook_networks` lists networks, a webhook from
/// elsewhere is refused with 403 and nothing is queued; past the inbox's bound, 503 with
/// `Retry-After` (the PGs send a webhook again when it is not answered 200).
pub async fn webhook_source(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let networks = &state.kassa.config.http.webhook_networks;
    let client = client_of_request(&state, &request);
    let allowed = networks.is_empty()
        || client
            .ip
            .is_some_and(|ip| networks.iter().any(|net| net.contains(&ip)));
    if allowed {
        if let Err(not_until) = state.inbox.check() {
            let seconds = retry_after(not_until.wait_time_from(DefaultClock::default().now()));
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "INBOX_FULL",
                format!("too many webhooks at once; send it again in {seconds} s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        next.run(request).await
    } else {
        tracing::warn!(client = ?client.ip, path = %request.uri().path(), "a webhook from outside http.webhook_networks was refused");
        ApiError::new(
            StatusCode::FORBIDDEN,
            "WEBHOOK_SOURCE_REFUSED",
            "webhooks are taken only from the PG's networks",
        )
        .into_response()
    }
}

/// The key under which a client's open orders are counted: a keyed hash of its bucket, so that
/// the data file holds no buyer's address.
pub fn tag(key: &[u8; 32], client: Client) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    mac.update(b"client:");
    mac.update(client.bucket().to_string().as_bytes());
    let tag = mac.finalize().into_bytes();
    crate::hex::encode(&tag[..16])
}

/// Forgets, every `RATE_LIMIT_FORGET_INTERVAL`, the clients whose allowance is full again.
pub async fn forget_idle_clients(
    limiter: ClientLimiter,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RATE_LIMIT_FORGET_INTERVAL) => {}
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let forged = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            Client::of(&forged, Some(stranger), &trusted),
            Client {
                ip: Some(stranger),
                https: false
            }
        );
        // Behind the proxy: the nearest untrusted hop, not the leftmost (which the client wrote).
        let chain = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            Client::of(&chain, Some(proxy), &trusted),
            Client {
                ip: Some("198.51.100.7".parse().unwrap()),
                https: true
            }
        );
        let garbage = headers(&[("x-forwarded-for", "<script>, 10.2.2.2")]);
        assert_eq!(
            Client::of(&garbage, Some(proxy), &trusted).ip,
            Some("10.2.2.2".parse().unwrap())
        );
        assert_eq!(
            Client::of(&HeaderMap::new(), Some(proxy), &trusted).ip,
            Some(proxy)
        );
        // A dual-stack listener's IPv4-mapped peer is the IPv4 proxy it is.
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert_eq!(
            Client::of(&chain, Some(mapped), &trusted).ip,
            Some("198.51.100.7".parse().unwrap())
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let a = Client {
            ip: Some("2001:db8:1:2:aaaa::1".parse().unwrap()),
            https: false,
        };
        let b = Client {
            ip: Some("2001:db8:1:2:bbbb::9".parse().unwrap()),
            https: false,
        };
        let c = Client {
            ip: Some("2001:db8:1:3::1".parse().unwrap()),
            https: false,
        };
        assert_eq!(a.bucket(), b.bucket());
        assert_ne!(a.bucket(), c.bucket());
        let mapped = Client {
            ip: Some("::ffff:192.0.2.1".parse().unwrap()),
            https: false,
        };
        assert_eq!(mapped.bucket(), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}

//! The accept loop: hyper's HTTP/1 server under kassa's bounds for what faces the internet.
//!
//! `axum::serve` sets no timer, so hyper's header read timeout is off there and a client that
//! never finishes its headers holds a connection (and a file) for ever. Here:
//! - a client must send each request's header within `http.header_read_timeout`; the same
//!   timer runs while a keep-alive connection waits for its next request, so it is also the
//!   idle timeout;
//! - at most `http.connections_max` connections are served at once; past it, new ones wait in
//!   the listen backlog rather than take memory;
//! - request bodies have their own deadline (`http.body_read_timeout`, a layer of the router);
//! - each request carries its peer address (`ConnectInfo`) for the client key of rate limits.

use crate::config::HttpConfig;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Most header lines one request may have.
pub const HEADERS_MAX: usize = 100;
/// Largest request head (start line and headers).
pub const HEADER_BYTES_MAX: usize = 32 * 1024;
/// How long accepting pauses after an error such as "too many open files".
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Serves `router` on `listener` until `shutdown`, then lets the open connections finish their
/// requests (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(HEADERS_MAX)
        .max_header_size(HEADER_BYTES_MAX)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // A peer that went away before its accept is nothing; anything else (out of
                    // files) is logged and waited out.
                    if !matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(error = %error, "cannot accept a connection; pausing");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, peer = %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

//! `orders`: durable orders over HTTP, against a bare axum handler on the same client.

use super::{AMOUNT, Server, TOKEN, failed, figure, stop};
use crate::bench::Options;
use crate::bench::driver::drive;
use crate::domain::OrderId;
use serde_json::{Value, json};
use std::sync::Arc;

/// `POST /api/orders` over HTTP: durable orders per second and their latency.
pub async fn orders(options: &Options) -> Result<Value, String> {
    let (n, concurrency) = (options.n(20_000, 300), options.concurrency(64));
    let server = Arc::new(Server::start(concurrency).await?);
    let driven = drive("orders", n, concurrency, {
        let server = Arc::clone(&server);
        move |i| {
            let server = Arc::clone(&server);
            async move {
                let body = json!({ "order_id": format!("bench-o-{i:07}"), "amount": AMOUNT, "name": "bench" });
                match server.post("/api/orders", &body, true).await? {
                    (201, _) => Ok(()),
                    (status, body) => Err(format!("{status} {body}")),
                }
            }
        }
    })
    .await;
    // The floor, in the same run with the same client: an axum handler that reads the same
    // JSON body and answers 201, with no storage.
    let floor = bare_floor(n, concurrency, &server.http).await?;
    let mut verified = failed(&driven).is_ok();
    for i in 0..n {
        let id = OrderId::parse(&format!("bench-o-{i:07}")).map_err(|error| error.to_string())?;
        let order = server
            .kassa
            .store
            .order(&id)
            .await
            .map_err(|error| error.to_string())?;
        verified &= order.is_some_and(|order| order.draft.amount.won() == AMOUNT);
    }
    let out = figure(
        "orders",
        n,
        concurrency,
        verified,
        &json!({
            "orders_per_s": driven.rate(n),
            "p50_ms": driven.latencies.ms(0.5),
            "p99_ms": driven.latencies.ms(0.99),
            "p999_ms": driven.latencies.ms(0.999),
            "bare_axum_per_s": floor,
            "share_of_bare": (driven.rate(n) / floor.max(1.0) * 100.0).round() / 100.0,
        }),
    );
    stop(server).await;
    Ok(out)
}

/// Requests per second of a bare axum handler (JSON in, 201 and JSON out, nothing stored) on
/// loopback, driven like the orders.
async fn bare_floor(n: usize, concurrency: usize, http: &reqwest::Client) -> Result<f64, String> {
    async fn handler(
        axum::Json(body): axum::Json<Value>,
    ) -> (axum::http::StatusCode, axum::Json<Value>) {
        (
            axum::http::StatusCode::CREATED,
            axum::Json(json!({ "order_id": body["order_id"], "status": "READY" })),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| error.to_string())?;
    let url = format!(
        "http://{}/api/orders",
        listener.local_addr().map_err(|error| error.to_string())?
    );
    let router = axum::Router::new().route("/api/orders", axum::routing::post(handler));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let url = Arc::new(url);
    let driven = drive("bare axum", n, concurrency, {
        let (http, url) = (http.clone(), Arc::clone(&url));
        move |i| {
            let (http, url) = (http.clone(), Arc::clone(&url));
            async move {
                let body = json!({ "order_id": format!("bench-b-{i:07}"), "amount": AMOUNT, "name": "bench" });
                let response = http
                    .post(url.as_str())
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let _ = response.bytes().await;
                Ok(())
            }
        }
    })
    .await;
    server.abort();
    failed(&driven)?;
    Ok(driven.rate(n))
}

//! The scenarios of `kassa bench`: each sets up what it needs (not timed), drives the real
//! paths (timed), then verifies the outcome against kassa's store and the sandbox's ledgers.

use super::Options;
use super::driver::{Driven, drive, peak_rss_mb, rate, reset_peak, rss_of};
use crate::app::App;
use crate::clock::Env;
use crate::config::{Config, Overrides, Partner};
use crate::domain::job::JobKind;
use crate::domain::{
    Amount, CancelId, Job, OrderDraft, OrderId, PartnerId, PaymentId, PaymentStatus, PgTid,
    Provider,
};
use crate::flows::Kassa;
use crate::gateway::{
    CancelReceipt, CancelRequest, GatewayError, GatewayFuture, Gateways, PaymentGateway, PgPayment,
    SettlementKind, SettlementLine, SettlementPage,
};
use crate::store::{Claimed, JobOutcome, NewPgPayment, RecordOutcome, Store};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-admin-token-0123456789abcdef";
const PG: &str = "sandbox PG on loopback, mounted in the same process";
const AMOUNT: i64 = 10_000;

fn fail(what: &str) -> impl Fn(String) -> String + '_ {
    move |error| format!("{what}: {error}")
}

/// A temporary directory only this user can read, as kassa wants its data directory.
fn private_tempdir() -> Result<tempfile::TempDir, String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|error| error.to_string())?;
    }
    Ok(dir)
}

/// kassa serving on a loopback port of its own, on a temporary data directory.
struct Server {
    base: String,
    http: reqwest::Client,
    kassa: Kassa,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(concurrency: usize) -> Result<Server, String> {
        let dir = private_tempdir()?;
        let env: Vec<(String, String)> = [
            ("KASSA_ADMIN__TOKEN", TOKEN),
            ("KASSA_HTTP__RATE_LIMIT_PER_MINUTE", "0"),
            ("KASSA_HTTP__OPEN_ORDERS_PER_CLIENT", "0"),
            ("KASSA_RECHECK__INTERVAL_MS", "86400000"),
            ("KASSA_SETTLEMENT_SYNC__ENABLED", "false"),
            ("KASSA_PARTNER_SETTLEMENT__ENABLED", "false"),
        ]
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
        let overrides = Overrides {
            config_file: None,
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().to_path_buf()),
        };
        let config = Config::load_from(&overrides, &env).map_err(|error| error.to_string())?;
        let app = App::build(config, Env::system())
            .await
            .map_err(|error| error.to_string())?;
        let base = format!("http://{}", app.local_addr());
        let kassa = app.kassa().clone();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(async move {
            if let Err(error) = app.run().await {
                tracing::error!(error = %error, "the benchmark's kassa stopped");
            }
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(concurrency.max(1))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Server {
            base,
            http,
            kassa,
            shutdown,
            task,
            _dir: dir,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }

    async fn post(&self, path: &str, body: &Value, admin: bool) -> Result<(u16, Value), String> {
        let mut request = self.http.post(self.url(path)).json(body);
        if admin {
            request = request.bearer_auth(TOKEN);
        }
        let response = request.send().await.map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        self.http
            .get(self.url(path))
            .send()
            .await
            .map_err(|error| error.to_string())?
            .json()
            .await
            .map_err(|error| error.to_string())
    }

    /// An order of `provider`, through the order API.
    async fn order(&self, order_id: &str, provider: Provider) -> Result<(), String> {
        let body = json!({ "order_id": order_id, "amount": AMOUNT, "name": "bench", "provider": provider.as_str() });
        match self.post("/api/orders", &body, true).await? {
            (201, _) => Ok(()),
            (status, body) => Err(format!("order {order_id}: {status} {body}")),
        }
    }

    /// The PG's side of a payment, as if a buyer had paid in its window; answers what the
    /// completion call needs (PortOne's imp_uid, Toss's payment key, Payple's result fields).
    async fn pg_side(&self, order_id: &str, provider: Provider) -> Result<Value, String> {
        let (path, body) = match provider {
            Provider::PortOne => (
                "/sandbox-pg/_control/portone/payments",
                json!({ "merchant_uid": order_id, "amount": AMOUNT }),
            ),
            Provider::Toss => (
                "/sandbox-pg/_control/toss/payments",
                json!({ "orderId": order_id, "amount": AMOUNT, "status": "IN_PROGRESS" }),
            ),
            Provider::Payple => (
                "/sandbox-pg/_control/payple/payments",
                json!({ "order_id": order_id, "amount": AMOUNT, "goods": "bench" }),
            ),
        };
        match self.post(path, &body, false).await? {
            (201, body) => Ok(body),
            (status, body) => Err(format!("the sandbox made no payment: {status} {body}")),
        }
    }

    /// The browser's completion call (PortOne), confirm (Toss) or result post (Payple);
    /// answers the payment id once kassa stored it paid.
    async fn complete(
        &self,
        order_id: &str,
        provider: Provider,
        pg: &Value,
    ) -> Result<String, String> {
        let (status, body) = match provider {
            Provider::PortOne => {
                let body = json!({ "imp_uid": pg["imp_uid"], "merchant_uid": order_id });
                self.post("/api/payment/portone", &body, false).await?
            }
            Provider::Toss => {
                let body = json!({ "paymentKey": pg["paymentKey"], "orderId": order_id, "amount": AMOUNT });
                self.post("/api/payment/toss/confirm", &body, false).await?
            }
            Provider::Payple => {
                let form = [
                    ("PCD_PAY_RST", "success".to_owned()),
                    ("PCD_PAY_CODE", "PAYN0000".to_owned()),
                    ("PCD_PAY_OID", order_id.to_owned()),
                    ("PCD_PAY_TYPE", "card".to_owned()),
                    (
                        "PCD_PAY_TIME",
                        pg["PCD_PAY_TIME"].as_str().unwrap_or_default().to_owned(),
                    ),
                    ("PCD_PAY_TOTAL", AMOUNT.to_string()),
                ];
                let response = self
                    .http
                    .post(self.url("/api/payment/payple/result"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(serde_urlencoded::to_string(form).map_err(|error| error.to_string())?)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
        };
        if status != 200 || body["status"] != "PAID" {
            return Err(format!("completion of {order_id}: {status} {body}"));
        }
        body["payment_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("completion of {order_id} named no payment"))
    }
}

/// Where the PG of a scenario is.
const NO_PG: &str = "none";
const DOUBLE_PG: &str = "settlement lines from an in-process double, pacer off";

fn figure(name: &str, n: usize, concurrency: usize, verified: bool, figures: &Value) -> Value {
    let pg = match name {
        "queue" => NO_PG,
        "reconcile" | "partner" => DOUBLE_PG,
        "startup" => "sandbox PG mounted in the started binary (not called)",
        _ => PG,
    };
    let mut out = json!({ "scenario": name, "n": n, "concurrency": concurrency, "pg": pg });
    if let (Some(out), Some(figures)) = (out.as_object_mut(), figures.as_object()) {
        for (key, value) in figures {
            out.insert(key.clone(), value.clone());
        }
        out.insert("verified".into(), Value::Bool(verified));
    }
    out
}

fn failed(driven: &Driven) -> Result<(), String> {
    if driven.failures == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} items failed, the first: {}",
            driven.failures,
            driven.first_failure.as_deref().unwrap_or("?")
        ))
    }
}

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

async fn stop(server: Arc<Server>) {
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
}

fn provider_of(i: usize) -> Provider {
    Provider::ALL[i % Provider::ALL.len()]
}

/// Orders created and paid through the real HTTP paths, a third with each PG: the order API,
/// then the completion call, in which kassa fetches (or confirms) the payment at the PG.
pub async fn ingest(options: &Options) -> Result<Value, String> {
    let (n, concurrency) = (options.n(3_000, 60), options.concurrency(32));
    let server = Arc::new(Server::start(concurrency).await?);
    // The buyers pay in the PG's window first (not timed: it is the PG's part); what the
    // sandbox answers is what each completion call names.
    let sides = Arc::new(tokio::sync::Mutex::new(HashMap::<usize, Value>::new()));
    let setup = drive("PG side", n, concurrency, {
        let (server, sides) = (Arc::clone(&server), Arc::clone(&sides));
        move |i| {
            let (server, sides) = (Arc::clone(&server), Arc::clone(&sides));
            async move {
                let side = server
                    .pg_side(&format!("bench-i-{i:07}"), provider_of(i))
                    .await?;
                sides.lock().await.insert(i, side);
                Ok(())
            }
        }
    })
    .await;
    failed(&setup).map_err(fail("setting up the PG's payments"))?;
    let sides = Arc::new(std::mem::take(&mut *sides.lock().await));
    reset_peak();
    let driven = drive("ingest", n, concurrency, {
        let (server, sides) = (Arc::clone(&server), Arc::clone(&sides));
        move |i| {
            let (server, sides) = (Arc::clone(&server), Arc::clone(&sides));
            async move {
                let order_id = format!("bench-i-{i:07}");
                let provider = provider_of(i);
                server.order(&order_id, provider).await?;
                let pg = sides.get(&i).cloned().unwrap_or(Value::Null);
                server.complete(&order_id, provider, &pg).await.map(drop)
            }
        }
    })
    .await;
    let mut verified = failed(&driven).is_ok();
    let mut total = 0;
    for i in 0..n {
        let id = OrderId::parse(&format!("bench-i-{i:07}")).map_err(|error| error.to_string())?;
        let payments = server
            .kassa
            .store
            .payments_of_order(&id)
            .await
            .map_err(|error| error.to_string())?;
        verified &= payments.len() == 1
            && payments[0].payment.status() == PaymentStatus::Paid
            && payments[0].payment.provider == provider_of(i);
        total += payments
            .iter()
            .map(|view| view.payment.amount.won())
            .sum::<i64>();
    }
    verified &= total == AMOUNT * i64::try_from(n).unwrap_or(i64::MAX);
    let out = figure(
        "ingest",
        n,
        concurrency,
        verified,
        &json!({
            "payments_per_s": driven.rate(n),
            "p50_ms": driven.latencies.ms(0.5),
            "p99_ms": driven.latencies.ms(0.99),
            "peak_rss_mb": peak_rss_mb(),
        }),
    );
    stop(server).await;
    Ok(out)
}

/// PortOne payments made through the real paths for a scenario's setup (not timed); answers
/// (payment id, imp_uid) per item.
async fn paid_payments(
    server: &Arc<Server>,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<(String, String)>, String> {
    let made = Arc::new(tokio::sync::Mutex::new(
        HashMap::<usize, (String, String)>::new(),
    ));
    let prefix = Arc::new(prefix.to_owned());
    let setup = drive("setup", n, concurrency, {
        let (server, made, prefix) = (Arc::clone(server), Arc::clone(&made), Arc::clone(&prefix));
        move |i| {
            let (server, made, prefix) =
                (Arc::clone(&server), Arc::clone(&made), Arc::clone(&prefix));
            async move {
                let order_id = format!("{prefix}-{i:07}");
                server.order(&order_id, Provider::PortOne).await?;
                let side = server.pg_side(&order_id, Provider::PortOne).await?;
                let payment = server.complete(&order_id, Provider::PortOne, &side).await?;
                let imp_uid = side["imp_uid"].as_str().unwrap_or_default().to_owned();
                made.lock().await.insert(i, (payment, imp_uid));
                Ok(())
            }
        }
    })
    .await;
    failed(&setup).map_err(fail("setting up paid payments"))?;
    let mut made = std::mem::take(&mut *made.lock().await);
    (0..n)
        .map(|i| {
            made.remove(&i)
                .ok_or_else(|| format!("payment {i} was not made"))
        })
        .collect()
}

/// Most time one cancel may take to reach its final state in the benchmark.
const CANCEL_FINAL_WAIT: Duration = Duration::from_secs(60);

/// Cancels through the queue to the sandbox PG, each timed from the request until the payment
/// is `CANCELLED` in kassa's store.
pub async fn cancel(options: &Options) -> Result<Value, String> {
    let (n, concurrency) = (options.n(4_000, 40), options.concurrency(32));
    let server = Arc::new(Server::start(concurrency).await?);
    let payments = Arc::new(paid_payments(&server, "bench-c", n, concurrency).await?);
    let driven = drive("cancel", n, concurrency, {
        let (server, payments) = (Arc::clone(&server), Arc::clone(&payments));
        move |i| {
            let (server, payments) = (Arc::clone(&server), Arc::clone(&payments));
            async move {
                let (payment_id, _) = &payments[i];
                let response = server
                    .http
                    .post(server.url(&format!("/api/payments/{payment_id}/cancel")))
                    .bearer_auth(TOKEN)
                    .header("idempotency-key", format!("bench-cancel-{i}"))
                    .json(&json!({ "reason": "bench" }))
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                if response.status().as_u16() != 202 {
                    return Err(format!("cancel {payment_id}: {}", response.status()));
                }
                let id = PaymentId::parse(payment_id).map_err(|error| error.to_string())?;
                let started = Instant::now();
                loop {
                    let view = server
                        .kassa
                        .store
                        .payment(id)
                        .await
                        .map_err(|error| error.to_string())?;
                    if view.is_some_and(|view| view.payment.status() == PaymentStatus::Cancelled) {
                        return Ok(());
                    }
                    if started.elapsed() > CANCEL_FINAL_WAIT {
                        return Err(format!("{payment_id} was not cancelled in time"));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    })
    .await;
    let mut verified = failed(&driven).is_ok();
    for (payment_id, imp_uid) in payments.iter() {
        let id = PaymentId::parse(payment_id).map_err(|error| error.to_string())?;
        let view = server
            .kassa
            .store
            .payment(id)
            .await
            .map_err(|error| error.to_string())?;
        verified &= view.is_some_and(|view| view.payment.cancelled_amount().won() == AMOUNT);
        let pg = server
            .get_json(&format!("/sandbox-pg/_control/portone/payments/{imp_uid}"))
            .await?;
        // Nothing refunded twice at the PG.
        verified &= pg["refunds_executed"] == 1 && pg["cancel_amount"] == AMOUNT;
    }
    let out = figure(
        "cancel",
        n,
        concurrency,
        verified,
        &json!({
            "cancels_per_s": driven.rate(n),
            "p50_ms": driven.latencies.ms(0.5),
            "p99_ms": driven.latencies.ms(0.99),
        }),
    );
    stop(server).await;
    Ok(out)
}

/// Jobs claimed in one batch of the queue scenario.
const QUEUE_CLAIM_BATCH: usize = 200;
/// Claiming clients of the queue scenario (the worker's own loop is one).
const QUEUE_CONSUMERS: usize = 2;
/// Most time the queue scenario waits for its last job.
const QUEUE_WAIT: Duration = Duration::from_secs(300);

/// The durable queue without a PG: `concurrency` producers enqueue (a commit each, grouped by
/// the writer) while consumers claim in batches and complete each batch's jobs at once, as the
/// worker runs its jobs as tasks; timed from the first enqueue to the last completion.
#[expect(
    clippy::too_many_lines,
    reason = "producers, consumers and the checks of one scenario"
)]
pub async fn queue(options: &Options) -> Result<Value, String> {
    let (n, concurrency) = (options.n(20_000, 500), options.concurrency(16));
    let dir = private_tempdir()?;
    let store = Store::open(dir.path(), || [7; 32]).map_err(|error| error.to_string())?;
    let env = Env::system();
    let ids: Arc<Vec<u128>> = Arc::new((0..n).map(|_| env.new_uuid().as_u128()).collect());
    let done = Arc::new(tokio::sync::Mutex::new(HashSet::<u128>::new()));
    let started = Instant::now();
    let mut consumers = Vec::new();
    for _ in 0..QUEUE_CONSUMERS {
        let (store, env, done) = (store.clone(), env.clone(), Arc::clone(&done));
        consumers.push(tokio::spawn(async move {
            let leases = HashMap::from([(JobKind::Alert, chrono::Duration::seconds(60))]);
            loop {
                if done.lock().await.len() >= n {
                    return Ok::<(), String>(());
                }
                if started.elapsed() > QUEUE_WAIT {
                    return Err("the queue did not drain in time".into());
                }
                let claimed = store
                    .claim_due(env.now(), QUEUE_CLAIM_BATCH, leases.clone(), HashMap::new())
                    .await
                    .map_err(|error| error.to_string())?;
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let mut claims = Vec::with_capacity(claimed.len());
                for claim in claimed {
                    let Claimed::Other(claim) = claim else {
                        return Err("a cancel was claimed from a queue of alerts".into());
                    };
                    claims.push(claim);
                }
                let finished = futures_util::future::join_all(
                    claims
                        .iter()
                        .map(|claim| store.finish_job(claim, JobOutcome::Done)),
                )
                .await;
                let mut done = done.lock().await;
                for (claim, outcome) in claims.iter().zip(finished) {
                    outcome.map_err(|error| error.to_string())?;
                    if !done.insert(claim.queued.id) {
                        return Err(format!("job {} was claimed twice", claim.queued.id));
                    }
                }
            }
        }));
    }
    let enqueued = drive("queue", n, concurrency, {
        let (store, ids, env) = (store.clone(), Arc::clone(&ids), env.clone());
        move |i| {
            let (store, ids, env) = (store.clone(), Arc::clone(&ids), env.clone());
            async move {
                store
                    .enqueue(ids[i], Job::Alert { alert_id: ids[i] }, None, env.now())
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            }
        }
    })
    .await;
    let mut consumer_error = failed(&enqueued).err();
    for consumer in consumers {
        match consumer.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                consumer_error.get_or_insert(error);
            }
            Err(error) => {
                consumer_error.get_or_insert(error.to_string());
            }
        }
    }
    let total = started.elapsed();
    let done = done.lock().await;
    let depth: usize = store
        .queue_depth()
        .await
        .map_err(|error| error.to_string())?
        .iter()
        .map(|(_, depth)| depth)
        .sum();
    let verified = consumer_error.is_none()
        && done.len() == n
        && ids.iter().all(|id| done.contains(id))
        && depth == 0;
    if let Some(error) = consumer_error {
        tracing::error!(error = %error, "the queue benchmark failed");
    }
    Ok(figure(
        "queue",
        n,
        concurrency,
        verified,
        &json!({
            "jobs_per_s": rate(n, total),
            "enqueue_per_s": enqueued.rate(n),
            "enqueue_p99_ms": enqueued.latencies.ms(0.99),
        }),
    ))
}

const PARTNERS: usize = 100;
const PAGE_SIZE: u32 = 1_000;
const WRITES_IN_FLIGHT: usize = 4_096;

fn settled_order(n: usize) -> String {
    format!("bench-s-{n:08}")
}

/// A PG whose settlement lists one APPROVAL line per stored payment, `PAGE_SIZE` at a time,
/// answered in this process with no pacing (the "PG pacer off" of the reconcile scenario).
#[derive(Debug)]
struct SettlementDouble {
    lines: usize,
}

impl PaymentGateway for SettlementDouble {
    fn provider(&self) -> Provider {
        Provider::Toss
    }

    fn fetch_payment<'a>(&'a self, _: &'a PgTid) -> GatewayFuture<'a, PgPayment> {
        Box::pin(async { Err(GatewayError::NotFound) })
    }

    fn cancel<'a>(&'a self, _: &'a CancelRequest) -> GatewayFuture<'a, CancelReceipt> {
        Box::pin(async { Err(GatewayError::NotFound) })
    }

    fn settlement_page<'a>(
        &'a self,
        _: NaiveDate,
        cursor: Option<&'a str>,
        page_size: u32,
    ) -> GatewayFuture<'a, SettlementPage> {
        Box::pin(async move {
            let start: usize = cursor.map_or(0, |cursor| cursor.parse().unwrap_or(0));
            let end = (start + page_size as usize).min(self.lines);
            let records = (start..end)
                .map(|n| SettlementLine {
                    kind: SettlementKind::Approval,
                    order_id: settled_order(n),
                    amount: AMOUNT,
                    fee: 330,
                    settle_amount: AMOUNT - 330,
                    cancel_at: None,
                    pg_ref: None,
                    pg_cancel_id: None,
                    occurrence: 0,
                })
                .collect();
            Ok(SettlementPage {
                records,
                next_cursor: (end < self.lines).then(|| end.to_string()),
            })
        })
    }
}

/// A store with `n` paid Toss payments of one KST day over `PARTNERS` partners (not timed),
/// and a `Kassa` on it whose Toss is the settlement double.
async fn settled_day(n: usize) -> Result<(tempfile::TempDir, Kassa, NaiveDate), String> {
    let dir = private_tempdir()?;
    let store = Store::open(dir.path(), || [7; 32]).map_err(|error| error.to_string())?;
    let env = Env::system();
    let paid_at: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-23T12:00:00+09:00")
        .map_err(|error| error.to_string())?
        .with_timezone(&Utc);
    let date = NaiveDate::from_ymd_opt(2026, 11, 23).ok_or("no date")?;
    let partners: Vec<Partner> = (0..PARTNERS)
        .map(|n| {
            PartnerId::parse(&format!("partner-{n:03}")).map(|id| Partner {
                id,
                name: format!("Partner {n}"),
                fee_rate_bps: 330,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|error| error.to_string())?;
    let bar = super::driver::progress("setup", n);
    for chunk_start in (0..n).step_by(WRITES_IN_FLIGHT) {
        let chunk = chunk_start..(chunk_start + WRITES_IN_FLIGHT).min(n);
        let writes = chunk.map(|i| {
            let (store, env, partner) = (
                store.clone(),
                env.clone(),
                partners[i % PARTNERS].id.clone(),
            );
            tokio::spawn(async move {
                let order = OrderId::parse(&settled_order(i)).map_err(|error| error.to_string())?;
                let amount = Amount::positive(AMOUNT).map_err(|error| error.to_string())?;
                let draft = OrderDraft {
                    order_id: order.clone(),
                    amount,
                    name: "bench".into(),
                    partner_id: Some(partner),
                    buyer_email: None,
                    provider: Provider::Toss,
                };
                store
                    .create_order(draft, None, paid_at)
                    .await
                    .map_err(|error| error.to_string())?;
                let new = NewPgPayment {
                    payment_id: PaymentId::from_uuid(env.new_uuid()),
                    cancel_id: CancelId::from_uuid(env.new_uuid()),
                    pg_key: String::new(),
                    provider: Provider::Toss,
                    pg_tid: PgTid::parse(&format!("tpk_{i}")).map_err(|error| error.to_string())?,
                    order_id: order,
                    amount,
                    currency_ok: true,
                    pg_balance: amount,
                    paid_at,
                    now: paid_at,
                    source: "bench",
                };
                match store.record_pg_payment(new).await {
                    Ok(RecordOutcome::Paid(_)) => Ok(()),
                    Ok(other) => Err(format!("payment {i} was not stored paid: {other:?}")),
                    Err(error) => Err(error.to_string()),
                }
            })
        });
        let writes: Vec<_> = writes.collect();
        for write in writes {
            write.await.map_err(|error| error.to_string())??;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut config = Config::defaults();
    config.settlement_sync.page_interval = Duration::ZERO;
    config.settlement_sync.page_size = PAGE_SIZE;
    config.settlement_sync.max_pages_per_run =
        u32::try_from(n / PAGE_SIZE as usize + 2).unwrap_or(u32::MAX);
    config.partners = partners;
    let http = reqwest::Client::new();
    let kassa = Kassa::new(
        config,
        store,
        Gateways::default().with(Arc::new(SettlementDouble { lines: n })),
        env,
        http,
    );
    Ok((dir, kassa, date))
}

/// N settlement lines reconciled against N stored payments, the PG pacer off.
pub async fn reconcile(options: &Options) -> Result<Value, String> {
    let n = options.n(200_000, 2_000);
    let (_dir, kassa, date) = settled_day(n).await?;
    reset_peak();
    let started = Instant::now();
    let report = crate::flows::settlement::sync(&kassa, Provider::Toss, date)
        .await
        .map_err(|error| error.to_string())?;
    let elapsed = started.elapsed();
    let verified = report.complete
        && report.counts.updated == u64::try_from(n).unwrap_or(u64::MAX)
        && report.counts.discrepancy == 0
        && report.counts.missing == 0;
    Ok(figure(
        "reconcile",
        n,
        1,
        verified,
        &json!({
            "lines_per_s": rate(n, elapsed),
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "peak_rss_mb": peak_rss_mb(),
        }),
    ))
}

/// The partner settlement of one day of N payments over 100 partners.
pub async fn partner(options: &Options) -> Result<Value, String> {
    let n = options.n(200_000, 2_000);
    let (_dir, kassa, date) = settled_day(n).await?;
    reset_peak();
    let started = Instant::now();
    let rows = crate::flows::partners::run(&kassa, date)
        .await
        .map_err(|error| error.to_string())?;
    let elapsed = started.elapsed();
    let gross: i64 = rows.iter().map(|row| row.figures.gross).sum();
    let count: u64 = rows.iter().map(|row| row.figures.payment_count).sum();
    let verified = rows.len() == PARTNERS
        && gross == AMOUNT * i64::try_from(n).unwrap_or(i64::MAX)
        && count == u64::try_from(n).unwrap_or(u64::MAX)
        && rows.iter().all(|row| {
            row.figures.fee + row.figures.net == row.figures.gross - row.figures.cancelled
        });
    Ok(figure(
        "partner",
        n,
        1,
        verified,
        &json!({
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "payments_per_s": rate(n, elapsed),
            "peak_rss_mb": peak_rss_mb(),
        }),
    ))
}

/// Payments of the one buyer the pages scenario reads.
const PAGES_BUYER_PAYMENTS: usize = 50;

/// `GET /payment/mypage` of a buyer with 50 payments, and the admin overview, half each.
#[expect(
    clippy::too_many_lines,
    reason = "the setup, the drive and the checks of one scenario"
)]
pub async fn pages(options: &Options) -> Result<Value, String> {
    let (n, concurrency) = (options.n(4_000, 100), options.concurrency(16));
    let server = Arc::new(Server::start(concurrency).await?);
    // One buyer pays 50 times through the checkout page (their cookie names them).
    let mut buyer_cookie: Option<String> = None;
    for i in 0..PAGES_BUYER_PAYMENTS {
        let mut request = server
            .http
            .post(server.url("/payment/checkout"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("product_id=beans-1kg");
        if let Some(cookie) = &buyer_cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.map_err(|error| error.to_string())?;
        if let Some(set) = response.headers().get("set-cookie") {
            let value = set.to_str().map_err(|error| error.to_string())?;
            buyer_cookie = value.split(';').next().map(str::to_owned);
        }
        let order_id = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .and_then(|path| path.strip_prefix("/payment/"))
            .map(str::to_owned)
            .ok_or_else(|| format!("checkout {i} sent the buyer nowhere"))?;
        let price = server
            .kassa
            .config
            .product("beans-1kg")
            .map_or(AMOUNT, |product| product.price.won());
        let (status, side) = server
            .post(
                "/sandbox-pg/_control/portone/payments",
                &json!({ "merchant_uid": order_id, "amount": price }),
                false,
            )
            .await?;
        if status != 201 {
            return Err(format!("the sandbox made no payment: {status}"));
        }
        let body = json!({ "imp_uid": side["imp_uid"], "merchant_uid": order_id });
        let (status, _) = server.post("/api/payment/portone", &body, false).await?;
        if status != 200 {
            return Err(format!("payment {i} was not completed: {status}"));
        }
    }
    let buyer_cookie = buyer_cookie.ok_or("the checkout gave no buyer cookie")?;
    let login = server
        .http
        .post(server.url("/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let admin_cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::to_owned)
        .ok_or("the admin sign-in gave no session")?;
    let cookies = Arc::new((buyer_cookie, admin_cookie));
    let rows_max = crate::http::pages::MYPAGE_ROWS_MAX;
    let driven = drive("pages", n, concurrency, {
        let (server, cookies) = (Arc::clone(&server), Arc::clone(&cookies));
        move |i| {
            let (server, cookies) = (Arc::clone(&server), Arc::clone(&cookies));
            async move {
                let (path, cookie, marker) = if i % 2 == 0 {
                    ("/payment/mypage", &cookies.0, "class=\"payment\"")
                } else {
                    ("/admin", &cookies.1, "id=\"dead-letter-count\"")
                };
                let response = server
                    .http
                    .get(server.url(path))
                    .header("cookie", cookie)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status().as_u16();
                let html = response.text().await.map_err(|error| error.to_string())?;
                let expected = if i % 2 == 0 { rows_max } else { 1 };
                let found = html.matches(marker).count();
                if status == 200 && found == expected {
                    Ok(())
                } else {
                    Err(format!("{path}: {status}, {found} of {expected} marks"))
                }
            }
        }
    })
    .await;
    let verified = failed(&driven).is_ok();
    let out = figure(
        "pages",
        n,
        concurrency,
        verified,
        &json!({
            "requests_per_s": driven.rate(n),
            "p50_ms": driven.latencies.ms(0.5),
            "p99_ms": driven.latencies.ms(0.99),
        }),
    );
    stop(server).await;
    Ok(out)
}

/// Most time `startup` waits for `/healthz`.
const STARTUP_WAIT: Duration = Duration::from_secs(20);

/// From exec to `/healthz` answering, and the resident memory once idle, over `n` starts of
/// the `kassa` binary on a new data directory each.
pub async fn startup(options: &Options) -> Result<Value, String> {
    let n = options.n(5, 2);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|error| error.to_string())?;
    let mut starts = Vec::with_capacity(n);
    let mut idle = Vec::with_capacity(n);
    let mut verified = true;
    for _ in 0..n {
        let dir = private_tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| error.to_string())?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let began = Instant::now();
        let mut child = tokio::process::Command::new(&options.exe)
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(dir.path())
            .env("KASSA_ADMIN__TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", options.exe.display()))?;
        let url = format!("http://{listen}/healthz");
        let mut healthy = false;
        while began.elapsed() < STARTUP_WAIT {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let startup = began.elapsed();
        verified &= healthy;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(pid) = child.id() {
            idle.push(rss_of(pid));
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        verified &= matches!(exit, Ok(Ok(status)) if status.success());
        starts.push(startup.as_secs_f64() * 1000.0);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(figure(
        "startup",
        n,
        1,
        verified,
        &json!({
            "startup_ms": (median(&mut starts) * 10.0).round() / 10.0,
            "idle_rss_mb": median(&mut idle),
        }),
    ))
}

//! Soak: mixed load against one kassa for a long while; every 30 s it prints what was done, the
//! latency of that window, and the process's memory and open files, so that a leak or a slow
//! drift shows as a column that grows.
//!
//! `cargo run --release --example soak -- [minutes] [concurrency]` (defaults 10 and 16). kassa
//! runs in this process on a temporary data directory with the built-in sandbox PG and the real
//! clock; the load goes over loopback HTTP: orders, PortOne payments and their completion calls,
//! partial and full cancels, order pages, the result long-poll (answered at once) and health.
#![expect(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a load program: it stops loudly on anything unexpected, and its figures are approximate"
)]

use kassa::app::App;
use kassa::clock::Env;
use kassa::config::{Config, Overrides};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "soak-admin-token-0123456789";
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Resident memory and open files of this process, from /proc.
fn process_figures() -> (f64, usize) {
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let files = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    (rss_kb / 1024.0, files)
}

fn percentile(sorted: &[u64], permille: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = (sorted.len() * permille / 1000).min(sorted.len() - 1);
    sorted[index] as f64 / 1000.0
}

struct Load {
    http: reqwest::Client,
    base: String,
    latencies_us: Mutex<Vec<u64>>,
    requests: AtomicU64,
    failures: AtomicU64,
    /// The first failure of the window, to print with it.
    first_failure: Mutex<Option<String>>,
}

impl Load {
    async fn timed(&self, request: reqwest::RequestBuilder) -> Option<Value> {
        let started = Instant::now();
        let answer = request.send().await;
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.latencies_us.lock().unwrap().push(took);
        self.requests.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(response) if response.status().is_success() => {
                Some(response.json().await.unwrap_or(Value::Null))
            }
            failed => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let what = match failed {
                    Ok(response) => {
                        let status = response.status();
                        let url = response.url().path().to_owned();
                        format!(
                            "{status} {url} {}",
                            response.text().await.unwrap_or_default()
                        )
                    }
                    Err(error) => error.to_string(),
                };
                self.first_failure.lock().unwrap().get_or_insert(what);
                None
            }
        }
    }

    async fn round(&self, n: u64) {
        let base = &self.base;
        let order_id = format!("soak-{n:09}");
        let amount = 10_000;
        self.timed(
            self.http
                .post(format!("{base}/api/orders"))
                .bearer_auth(TOKEN)
                .json(&json!({ "order_id": order_id, "amount": amount, "name": "soak" })),
        )
        .await;
        self.timed(self.http.get(format!("{base}/payment/{order_id}")))
            .await;
        let created = self
            .timed(
                self.http
                    .post(format!("{base}/sandbox-pg/_control/portone/payments"))
                    .json(&json!({ "merchant_uid": order_id, "amount": amount })),
            )
            .await;
        let Some(imp_uid) = created.and_then(|body| body["imp_uid"].as_str().map(str::to_owned))
        else {
            return;
        };
        let paid = self
            .timed(
                self.http
                    .post(format!("{base}/api/payment/portone"))
                    .json(&json!({ "imp_uid": imp_uid, "merchant_uid": order_id })),
            )
            .await;
        self.timed(
            self.http
                .get(format!("{base}/api/payments/result/{order_id}?wait_s=0")),
        )
        .await;
        let Some(payment_id) = paid.and_then(|body| body["payment_id"].as_str().map(str::to_owned))
        else {
            return;
        };
        if n.is_multiple_of(2) {
            let body = if n.is_multiple_of(4) {
                json!({ "reason": "soak full" })
            } else {
                json!({ "amount": 4_000, "reason": "soak partial" })
            };
            self.timed(
                self.http
                    .post(format!("{base}/api/payments/{payment_id}/cancel"))
                    .bearer_auth(TOKEN)
                    .header("idempotency-key", format!("soak-{n}"))
                    .json(&body),
            )
            .await;
        }
        self.timed(self.http.get(format!("{base}/healthz"))).await;
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let minutes: u64 = args.next().and_then(|raw| raw.parse().ok()).unwrap_or(10);
    let concurrency: u64 = args.next().and_then(|raw| raw.parse().ok()).unwrap_or(16);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("KASSA_ADMIN__TOKEN", TOKEN),
        // One client on loopback is all the load: the per-client bounds would stop it.
        ("KASSA_HTTP__RATE_LIMIT_PER_MINUTE", "0"),
        ("KASSA_HTTP__OPEN_ORDERS_PER_CLIENT", "0"),
    ]
    .iter()
    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
    .collect();
    let overrides = Overrides {
        config_file: None,
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
    };
    let config = Config::load_from(&overrides, &env).unwrap();
    let app = App::build(config, Env::system()).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run());
    let load = Arc::new(Load {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(concurrency).unwrap_or(16))
            .build()
            .unwrap(),
        base,
        latencies_us: Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        first_failure: Mutex::new(None),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (load, stop, next) = (load.clone(), stop.clone(), next.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    load.round(next.fetch_add(1, Ordering::Relaxed)).await;
                }
            })
        })
        .collect();
    println!("minute  requests  failures  req/s   p50 ms  p99 ms  rss MiB  open files");
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut last_requests = 0;
    while Instant::now() < end {
        tokio::time::sleep(REPORT_EVERY.min(end.saturating_duration_since(Instant::now()))).await;
        let mut window = std::mem::take(&mut *load.latencies_us.lock().unwrap());
        window.sort_unstable();
        let requests = load.requests.load(Ordering::Relaxed);
        let (rss, files) = process_figures();
        println!(
            "{:>6.1}  {:>8}  {:>8}  {:>6.0}  {:>6.2}  {:>6.2}  {:>7.1}  {:>10}",
            started.elapsed().as_secs_f64() / 60.0,
            requests,
            load.failures.load(Ordering::Relaxed),
            (requests - last_requests) as f64 / REPORT_EVERY.as_secs_f64(),
            percentile(&window, 500),
            percentile(&window, 990),
            rss,
            files
        );
        last_requests = requests;
        if let Some(failure) = load.first_failure.lock().unwrap().take() {
            println!(
                "        first failure of the window: {}",
                failure.chars().take(300).collect::<String>()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

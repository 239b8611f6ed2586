//! Soak: mixed load against one kassa for a long while; every 30 s it prints what was done, the
//! latency of that window, and the process's memory and open files, so that a leak or a slow
//! drift shows as a column that grows.
//!
//! `cargo build --release && cargo run --release --example soak -- [minutes] [concurrency]`
//! (defaults 10 and 16). kassa runs as its own process (`target/release/kassa serve`, so that
//! its memory and files are its own) on a temporary data directory, pointed at the sandbox PG
//! as another process (`kassa sandbox-pg`) as at a real PortOne; the load goes over loopback
//! HTTP: orders, PortOne payments and their completion calls, partial and full cancels, order
//! pages, the result long-poll (answered at once), payment lists and health. New payments are
//! paced (`PAYMENTS_PER_S`) so that the sandbox, which holds at most 100,000, lasts the run.
#![expect(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a load program: it stops loudly on anything unexpected, and its figures are approximate"
)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "soak-admin-token-0123456789";
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// New payments per second, for all workers together.
const PAYMENTS_PER_S: u64 = 120;

/// Resident memory and open files of process `pid`, from /proc.
fn process_figures(pid: u32) -> (f64, usize) {
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let files = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    (rss_kb / 1024.0, files)
}

fn percentile(sorted: &[u64], permille: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = (sorted.len() * permille / 1000).min(sorted.len() - 1);
    sorted[index] as f64 / 1000.0
}

/// Starts `kassa ARGS` and answers it and the address it logged (`listen=ADDR`).
fn spawn_kassa(args: &[&str], env: &[(&str, String)]) -> (Child, String) {
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("kassa");
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --release` first",
        binary.display()
    );
    let mut command = Command::new(binary);
    command
        .args(args)
        .env("RUST_LOG", "warn,kassa=info")
        .env_remove("KASSA_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("kassa exited before it listened")
            .unwrap();
        if let Some(rest) = line.split("listen=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep reading what it logs, so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{address}"))
}

struct Load {
    http: reqwest::Client,
    base: String,
    pg: String,
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
                    .post(format!("{}/_control/portone/payments", self.pg))
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
        self.timed(
            self.http
                .get(format!("{base}/api/payments?limit=20"))
                .bearer_auth(TOKEN),
        )
        .await;
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let minutes: u64 = args.next().and_then(|raw| raw.parse().ok()).unwrap_or(10);
    let concurrency: u64 = args.next().and_then(|raw| raw.parse().ok()).unwrap_or(16);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (mut sandbox, pg) = spawn_kassa(&["sandbox-pg", "--listen", "127.0.0.1:0"], &[]);
    let data_dir = dir.path().display().to_string();
    let (mut kassa, base) = spawn_kassa(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", &data_dir],
        &[
            ("KASSA_ADMIN__TOKEN", TOKEN.to_owned()),
            ("KASSA_GATEWAY__DEFAULT", "portone".to_owned()),
            ("KASSA_GATEWAY__PORTONE__BASE_URL", format!("{pg}/portone")),
            (
                "KASSA_GATEWAY__PORTONE__IMP_KEY",
                "sandbox_imp_key".to_owned(),
            ),
            (
                "KASSA_GATEWAY__PORTONE__IMP_SECRET",
                "sandbox_imp_secret".to_owned(),
            ),
            ("KASSA_GATEWAY__PORTONE__IMP_CODE", "imp_sandbox".to_owned()),
            // One client on loopback is all the load: the per-client bounds would stop it.
            ("KASSA_HTTP__RATE_LIMIT_PER_MINUTE", "0".to_owned()),
            ("KASSA_HTTP__OPEN_ORDERS_PER_CLIENT", "0".to_owned()),
        ],
    );
    let pid = kassa.id();
    let load = Arc::new(Load {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(concurrency).unwrap_or(16))
            .build()
            .unwrap(),
        base,
        pg,
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
                // Each worker's share of the payment pace.
                let every = Duration::from_micros(1_000_000 * concurrency / PAYMENTS_PER_S);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    load.round(next.fetch_add(1, Ordering::Relaxed)).await;
                    tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
                }
            })
        })
        .collect();
    println!("kassa pid {pid}; its resident memory and open files:");
    println!("minute  requests  failures  req/s   p50 ms  p99 ms  rss MiB  open files");
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut last_requests = 0;
    while Instant::now() < end {
        tokio::time::sleep(REPORT_EVERY.min(end.saturating_duration_since(Instant::now()))).await;
        let mut window = std::mem::take(&mut *load.latencies_us.lock().unwrap());
        window.sort_unstable();
        let requests = load.requests.load(Ordering::Relaxed);
        let (rss, files) = process_figures(pid);
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
    let _ = kassa.kill();
    let _ = sandbox.kill();
    let _ = kassa.wait();
    let _ = sandbox.wait();
}

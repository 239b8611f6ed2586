//! `TestApp`: a real kassa on port 0 with a temporary data directory, the built-in sandbox PG,
//! a manual clock, and helpers that speak its API and the sandbox's control API.

use chrono::{DateTime, Utc};
use kassa::app::App;
use kassa::clock::{Env, ManualClock, SeededEntropy};
use kassa::config::{Config, Overrides};
use kassa::store::StorageFaults;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

static SEED: AtomicU64 = AtomicU64::new(1);

pub fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00+09:00")
        .unwrap()
        .with_timezone(&Utc)
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub kassa: kassa::flows::Kassa,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
}

/// Settings a test may change before the app starts, as `KASSA_*` environment pairs.
pub type Settings = Vec<(&'static str, String)>;

/// Three queued tries, 5 s, 30 s and 2 min apart.
pub fn short_retries() -> Settings {
    vec![
        ("KASSA_RETRY__QUEUE_ATTEMPTS_MAX", "3".into()),
        ("KASSA_RETRY__BACKOFF_MS", "[5000, 30000, 120000]".into()),
    ]
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(Vec::new()).await
    }

    /// The retry policy of parts 1–3 (three queued tries over about 2.5 minutes), for tests that
    /// walk a job to its dead letter.
    pub async fn spawn_with_short_retries() -> TestApp {
        TestApp::spawn_with(short_retries()).await
    }

    pub async fn spawn_with(settings: Settings) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let mut app = TestApp::start(&data_dir, &settings).await;
        app.dir = Some(dir);
        app
    }

    /// Starts on storage that fails when the answered switches say so: `fail_commits` makes a
    /// fault that heals, `fail_disk` one that redb latches (the server then stops, and its task
    /// panics on the error `run` answers).
    pub async fn spawn_on_failing_storage() -> (TestApp, StorageFaults) {
        let dir = tempfile::tempdir().unwrap();
        let faults = StorageFaults::new();
        let mut app = TestApp::boot_on(dir.path(), &Vec::new(), Some(faults.clone()))
            .await
            .expect("kassa starts");
        app.dir = Some(dir);
        (app, faults)
    }

    /// Starts on a copy of the data file `fixture` (one written by an older kassa).
    pub async fn spawn_on_copy_of(fixture: &Path) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture, dir.path().join("kassa.redb")).unwrap();
        let data_dir = dir.path().to_path_buf();
        let mut app = TestApp::start(&data_dir, &Vec::new()).await;
        app.dir = Some(dir);
        app
    }

    async fn start(data_dir: &Path, settings: &Settings) -> TestApp {
        TestApp::boot(data_dir, settings)
            .await
            .expect("kassa starts")
    }

    async fn boot(data_dir: &Path, settings: &Settings) -> Result<TestApp, kassa::app::AppError> {
        TestApp::boot_on(data_dir, settings, None).await
    }

    /// `boot`, on storage that fails when `faults` says so if there are `faults`.
    async fn boot_on(
        data_dir: &Path,
        settings: &Settings,
        faults: Option<StorageFaults>,
    ) -> Result<TestApp, kassa::app::AppError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut env: Vec<(String, String)> = vec![
            ("KASSA_ADMIN__TOKEN".into(), ADMIN_TOKEN.into()),
            ("KASSA_RETRY__PG_TIMEOUT_MS".into(), "400".into()),
            // The re-check sweep asks the sandbox on its own; tests that are not about it keep
            // it out of their way (a day apart), and the sweep's tests set it.
            ("KASSA_RECHECK__INTERVAL_MS".into(), "86400000".into()),
            // Every test client is 127.0.0.1: tests that are not about the per-client rate
            // limit would trip it, so it is on only in the tests of it.
            ("KASSA_HTTP__RATE_LIMIT_PER_MINUTE".into(), "0".into()),
        ];
        env.extend(
            settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone())),
        );
        let overrides = Overrides {
            config_file: None,
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.to_path_buf()),
        };
        let config = Config::load_from(&overrides, &env).unwrap();
        let clock = Arc::new(ManualClock::new(start_time()));
        let seed = SEED.fetch_add(1, Ordering::Relaxed) * 7919 + u64::from(std::process::id());
        let runtime_env = Env::new(clock.clone(), Arc::new(SeededEntropy::new(seed)));
        // The retry worker and alert sender are stepped by hand (`run_jobs`), so tests decide
        // when queued work happens.
        let app = match faults {
            None => App::build(config, runtime_env).await?,
            Some(faults) => App::build_on_failing_storage(config, runtime_env, faults).await?,
        }
        .without_background_work();
        let base = format!("http://{}", app.local_addr());
        let kassa = app.kassa().clone();
        let shutdown = app.shutdown_token();
        let server = tokio::spawn(async move {
            app.run().await.unwrap();
        });
        Ok(TestApp {
            base,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            clock,
            kassa,
            shutdown,
            server: Some(server),
            dir: None,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let dir = self.dir.take();
        let data_dir = self.data_dir.clone();
        drop(self);
        // The writer thread lets go of the file once the last handle to the store is dropped.
        for _ in 0..100 {
            match TestApp::boot(&data_dir, &Vec::new()).await {
                Ok(mut app) => {
                    app.dir = dir;
                    return app;
                }
                Err(kassa::app::AppError::Store(kassa::store::StoreError::Locked(_))) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(error) => panic!("kassa does not restart: {error}"),
            }
        }
        panic!("the data file stayed locked after the server stopped");
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /healthz`: its status and body.
    pub async fn healthz(&self) -> (StatusCode, Value) {
        let response = self.http.get(self.url("/healthz")).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_order(&self, order_id: &str, amount: i64) -> Value {
        let (status, body) = self
            .admin_post(
                "/api/orders",
                &json!({ "order_id": order_id, "amount": amount, "name": "원두 1kg" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Makes the sandbox PG hold a payment for `merchant_uid`, as if a buyer had paid there.
    pub async fn pg_payment(&self, merchant_uid: &str, amount: i64) -> String {
        self.pg_payment_with(json!({ "merchant_uid": merchant_uid, "amount": amount }))
            .await
    }

    pub async fn pg_payment_with(&self, body: Value) -> String {
        let response = self
            .http
            .post(self.url("/sandbox-pg/_control/portone/payments"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["imp_uid"].as_str().unwrap().to_owned()
    }

    /// Creates a Toss order.
    pub async fn create_toss_order(&self, order_id: &str, amount: i64) -> Value {
        let body = json!({ "order_id": order_id, "amount": amount, "name": "원두 1kg", "provider": "toss" });
        let (status, body) = self.admin_post("/api/orders", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A Toss payment the buyer authorised in the window (waiting for the shop's confirm), or
    /// with another `status`; answers its payment key.
    pub async fn toss_payment(&self, order_id: &str, amount: i64, status: &str) -> String {
        let body = json!({ "orderId": order_id, "amount": amount, "status": status });
        let response = self
            .http
            .post(self.url("/sandbox-pg/_control/toss/payments"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["paymentKey"].as_str().unwrap().to_owned()
    }

    pub async fn toss_state(&self, payment_key: &str) -> Value {
        let url = self.url(&format!("/sandbox-pg/_control/toss/payments/{payment_key}"));
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn toss_confirm(
        &self,
        payment_key: &str,
        order_id: &str,
        amount: i64,
    ) -> (StatusCode, Value) {
        let body = json!({ "paymentKey": payment_key, "orderId": order_id, "amount": amount });
        self.post_json("/api/payment/toss/confirm", &body).await
    }

    pub async fn pg_state(&self, imp_uid: &str) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/sandbox-pg/_control/portone/payments/{imp_uid}")))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    pub async fn pg_calls(&self, endpoint: &str) -> u64 {
        let response = self
            .http
            .get(self.url("/sandbox-pg/_control/stats"))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["calls"][endpoint].as_u64().unwrap_or(0)
    }

    /// Makes the next `count` calls of a sandbox endpoint fail with `mode`.
    pub async fn fault(&self, endpoint: &str, mode: &str, count: usize) {
        self.fault_with(
            json!({ "endpoint": endpoint, "mode": mode, "count": count, "hold_ms": 3000 }),
        )
        .await;
    }

    /// A fault that holds the call `hold_ms`: with `lost_response` shorter than the PG timeout,
    /// a slow answer that arrives.
    pub async fn fault_held(&self, endpoint: &str, mode: &str, count: usize, hold_ms: u64) {
        self.fault_with(
            json!({ "endpoint": endpoint, "mode": mode, "count": count, "hold_ms": hold_ms }),
        )
        .await;
    }

    /// Makes the next `count` calls of an endpoint answer the PG's own error `code` with
    /// `status`, doing nothing (a Toss 4xx is kept under its Idempotency-Key, as Toss does).
    pub async fn fault_error(&self, endpoint: &str, status: u16, code: &str, count: usize) {
        self.fault_with(json!({ "endpoint": endpoint, "mode": "error", "status": status, "code": code, "count": count }))
            .await;
    }

    /// Clears every queued fault: the PG answers normally again.
    pub async fn clear_faults(&self) {
        let response = self
            .http
            .delete(self.url("/sandbox-pg/_control/faults"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    async fn fault_with(&self, body: Value) {
        let response = self
            .http
            .post(self.url("/sandbox-pg/_control/faults"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    pub async fn complete(&self, imp_uid: &str, merchant_uid: &str) -> (StatusCode, Value) {
        self.post_json(
            "/api/payment/portone",
            &json!({ "imp_uid": imp_uid, "merchant_uid": merchant_uid }),
        )
        .await
    }

    pub async fn webhook(&self, imp_uid: &str, merchant_uid: &str) -> StatusCode {
        let body = json!({ "imp_uid": imp_uid, "merchant_uid": merchant_uid, "status": "paid" });
        self.http
            .post(self.url("/api/webhooks/portone"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Every payment stored for an order, through the admin API.
    pub async fn payments_of(&self, order_id: &str) -> Vec<Value> {
        let (status, body) = self
            .admin_get(&format!("/api/payments?order_id={order_id}&limit=500"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    /// Asks for a cancel of `payment_id` with an Idempotency-Key, as the admin.
    pub async fn cancel(&self, payment_id: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(&format!("/api/payments/{payment_id}/cancel")))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Records a full cancel of `payment_id` straight in the store, with no attempt yet, as the
    /// cancel API does before its first attempt; answers the intent.
    pub async fn store_cancel(&self, payment_id: &str, key: &str) -> kassa::domain::CancelIntent {
        let request = kassa::store::CancelRequest {
            payment_id: kassa::domain::PaymentId::parse(payment_id).unwrap(),
            key: kassa::domain::IdempotencyKey::parse(key).unwrap(),
            amount: None,
            reason: "refund".into(),
            cancel_id: kassa::domain::CancelId::from_uuid(self.kassa.env.new_uuid()),
            pg_key: format!("{key}-pg"),
            now: self.kassa.env.now(),
            claim_lease: None,
        };
        match self.kassa.store.request_cancel(request).await.unwrap() {
            kassa::store::CancelRequestOutcome::Created(intent, _) => intent,
            other => panic!("the cancel is not recorded: {other:?}"),
        }
    }

    /// One step of the worker: runs every due job. Answers how many cancel attempts ran.
    pub async fn run_jobs(&self) -> usize {
        self.run_all_jobs().await.cancels
    }

    /// One step of the worker, with what ran of each kind.
    pub async fn run_all_jobs(&self) -> kassa::jobs::Ran {
        kassa::jobs::run_due_jobs(&self.kassa).await.unwrap()
    }

    /// Advances the manual clock by `ms` milliseconds.
    pub fn advance_ms(&self, ms: i64) {
        self.clock.advance(chrono::Duration::milliseconds(ms));
    }

    /// A paid payment of `amount` for a new order; answers its payment id and PG id.
    pub async fn paid(&self, order_id: &str, amount: i64) -> (String, String) {
        self.create_order(order_id, amount).await;
        let imp_uid = self.pg_payment(order_id, amount).await;
        let (status, body) = self.complete(&imp_uid, order_id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (body["payment_id"].as_str().unwrap().to_owned(), imp_uid)
    }

    pub async fn payment(&self, payment_id: &str) -> Value {
        let (status, body) = self.admin_get(&format!("/api/payments/{payment_id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Everything stored that a test may compare before and after: all payments with their
    /// events, and the given orders.
    pub async fn snapshot(&self, orders: &[&str]) -> Value {
        let (_, list) = self.admin_get("/api/payments?limit=500").await;
        let mut payments = Vec::new();
        for item in list["items"].as_array().unwrap() {
            payments.push(self.payment(item["payment_id"].as_str().unwrap()).await);
        }
        let mut stored_orders = Vec::new();
        for order in orders {
            let mut stored = self.admin_get(&format!("/api/orders/{order}")).await.1;
            // The pay URL names the listener's port, which is not stored data.
            if let Some(fields) = stored.as_object_mut() {
                fields.remove("pay_url");
            }
            stored_orders.push(stored);
        }
        json!({ "payments": payments, "orders": stored_orders })
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A plain HTTP client for tests that talk to processes (rustls needs its provider first).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// What kassa logged while the guard lives, on this thread (a `#[tokio::test]` runtime runs the
/// server, the attempts and the test on one thread).
pub struct Logs {
    buffer: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture() -> Logs {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = LogWriter(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        Logs {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

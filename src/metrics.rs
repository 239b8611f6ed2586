//! What `/metrics` shows, in the Prometheus (OpenMetrics) text format: HTTP and PG call
//! latency measured as they happen, and counts read from the store at each scrape.
//!
//! Invariant: every label takes values from a closed set (routes as matched, PG names,
//! operations, statuses), so the number of series is bounded whatever requests arrive.

use crate::domain::PgTid;
use crate::domain::{PaymentStatus, Provider};
use crate::gateway::{
    CancelReceipt, CancelRequest, ConfirmRequest, GatewayFuture, PaymentGateway, PgPayment,
    SettlementPage,
};
use chrono::{DateTime, NaiveDate, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// kassa's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http: Histograms,
    pg_calls: Histograms,
    pg_errors: Family<Labels, Counter>,
    payments: Family<Labels, Gauge>,
    cancels: Family<Labels, Gauge>,
    queue_depth: Family<Labels, Gauge>,
    queue_age: Family<Labels, Gauge<f64, AtomicU64>>,
    dead_letters: Gauge,
    unknown_refunds: Gauge,
    sync_counts: Family<Labels, Gauge>,
    sync_finished: Family<Labels, Gauge>,
    scan_cut_short: Gauge,
    /// Serialises scrapes, so two never interleave their refresh of the store counts.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kassa");
        let http = Histograms::new_with_constructor(latency_buckets as fn() -> Histogram);
        let pg_calls = Histograms::new_with_constructor(latency_buckets as fn() -> Histogram);
        let metrics = Metrics {
            http: http.clone(),
            pg_calls: pg_calls.clone(),
            pg_errors: Family::default(),
            payments: Family::default(),
            cancels: Family::default(),
            queue_depth: Family::default(),
            queue_age: Family::default(),
            dead_letters: Gauge::default(),
            unknown_refunds: Gauge::default(),
            sync_counts: Family::default(),
            sync_finished: Family::default(),
            scan_cut_short: Gauge::default(),
            scrape: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by route (as matched), method and status class",
            http,
        );
        registry.register(
            "pg_call_duration_seconds",
            "Calls to a PG by PG and operation",
            pg_calls,
        );
        registry.register(
            "pg_call_errors",
            "Calls to a PG that failed, by PG, operation and kind of failure",
            metrics.pg_errors.clone(),
        );
        registry.register(
            "payments",
            "Payments stored, by PG and status",
            metrics.payments.clone(),
        );
        registry.register(
            "cancels",
            "Cancel intents, by PG and state (OPEN, DONE, DEAD, UNKNOWN, RESOLVED)",
            metrics.cancels.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs waiting, by kind",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest waiting job, by kind (0 when none waits)",
            metrics.queue_age.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead letters waiting for a person (unknown refunds not included)",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "unknown_refunds",
            "Refunds whose outcome is unknown (CANCEL_UNKNOWN), waiting for evidence",
            metrics.unknown_refunds.clone(),
        );
        registry.register(
            "settlement_sync_last_run",
            "The last settlement sync run per PG: its counters",
            metrics.sync_counts.clone(),
        );
        registry.register(
            "settlement_sync_last_finished_timestamp_seconds",
            "When the last settlement sync run per PG finished",
            metrics.sync_finished.clone(),
        );
        registry.register(
            "metrics_scan_cut_short",
            "1 when a store count stopped at its scan bound and is a lower bound",
            metrics.scan_cut_short.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// One HTTP request: `route` is the matched route pattern, never the raw path.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", format!("{}xx", status / 100)),
            ])
            .observe(seconds);
    }

    fn observe_pg(
        &self,
        provider: Provider,
        operation: &'static str,
        seconds: f64,
        error: Option<&'static str>,
    ) {
        let labels = vec![
            ("provider", provider.as_str().to_owned()),
            ("operation", operation.to_owned()),
        ];
        self.pg_calls.get_or_create(&labels).observe(seconds);
        if let Some(kind) = error {
            let mut labels = labels;
            labels.push(("error", kind.to_owned()));
            self.pg_errors.get_or_create(&labels).inc();
        }
    }

    /// The text of a scrape: the store's counts as of now, then every metric.
    pub async fn render(
        &self,
        store: &crate::store::Store,
        now: DateTime<Utc>,
    ) -> Result<String, crate::store::StoreError> {
        let _turn = self.scrape.lock().await;
        let snapshot = store.metrics_snapshot().await?;
        for provider in Provider::ALL {
            for status in PaymentStatus::ALL {
                let count = snapshot
                    .payments
                    .get(&(provider, status))
                    .copied()
                    .unwrap_or(0);
                self.payments
                    .get_or_create(&vec![
                        ("provider", provider.as_str().to_owned()),
                        ("status", status.as_str().to_owned()),
                    ])
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            for state in ["OPEN", "DONE", "DEAD", "UNKNOWN", "RESOLVED"] {
                let count = snapshot
                    .cancels
                    .get(&(provider, state))
                    .copied()
                    .unwrap_or(0);
                self.cancels
                    .get_or_create(&vec![
                        ("provider", provider.as_str().to_owned()),
                        ("state", state.to_owned()),
                    ])
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        for (kind, depth, oldest) in &snapshot.queue {
            let labels = vec![("kind", kind.as_str().to_owned())];
            self.queue_depth
                .get_or_create(&labels)
                .set(i64::try_from(*depth).unwrap_or(i64::MAX));
            let age = oldest.map_or(0.0, |at| {
                let millis = (now - at).num_milliseconds().max(0);
                #[expect(clippy::cast_precision_loss, reason = "an age in seconds for a gauge")]
                let seconds = millis as f64 / 1000.0;
                seconds
            });
            self.queue_age.get_or_create(&labels).set(age);
        }
        self.dead_letters
            .set(i64::try_from(snapshot.dead_letters).unwrap_or(i64::MAX));
        self.unknown_refunds
            .set(i64::try_from(snapshot.unknown_refunds).unwrap_or(i64::MAX));
        self.scan_cut_short.set(i64::from(snapshot.cut_short));
        let mut seen = Vec::new();
        for run in store.sync_runs(50).await? {
            if seen.contains(&run.provider) {
                continue;
            }
            seen.push(run.provider.clone());
            let counters = [
                ("pages", u64::from(run.pages)),
                ("updated", run.counts.updated),
                ("skipped", run.counts.skipped),
                ("missing", run.counts.missing),
                ("cancel_skipped", run.counts.cancel_skipped),
                ("discrepancy", run.counts.discrepancy),
                ("failed", run.failed),
                ("complete", u64::from(run.complete)),
            ];
            for (counter, value) in counters {
                self.sync_counts
                    .get_or_create(&vec![
                        ("provider", run.provider.clone()),
                        ("counter", counter.to_owned()),
                    ])
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
            self.sync_finished
                .get_or_create(&vec![("provider", run.provider.clone())])
                .set(run.finished_at_ms / 1000);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).map_err(|error| {
            crate::store::StoreError::Bug(format!("the metrics could not be written: {error}"))
        })?;
        Ok(text)
    }
}

fn error_kind(error: &crate::gateway::GatewayError) -> &'static str {
    use crate::gateway::GatewayError;
    match error {
        GatewayError::Refused { .. } => "refused",
        GatewayError::NotFound => "not_found",
        _ if error.is_transient() => "transient",
        _ => "other",
    }
}

/// A PG with every call timed and its failures counted.
#[derive(Debug)]
pub struct Measured {
    inner: Arc<dyn PaymentGateway>,
    metrics: Arc<Metrics>,
}

impl Measured {
    pub fn wrap(inner: Arc<dyn PaymentGateway>, metrics: Arc<Metrics>) -> Arc<dyn PaymentGateway> {
        Arc::new(Measured { inner, metrics })
    }

    fn timed<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        call: GatewayFuture<'a, T>,
    ) -> GatewayFuture<'a, T> {
        Box::pin(async move {
            let started = Instant::now();
            let answer = call.await;
            let error = answer.as_ref().err().map(error_kind);
            self.metrics.observe_pg(
                self.inner.provider(),
                operation,
                started.elapsed().as_secs_f64(),
                error,
            );
            answer
        })
    }
}

impl PaymentGateway for Measured {
    fn provider(&self) -> Provider {
        self.inner.provider()
    }

    fn fetch_payment<'a>(&'a self, pg_tid: &'a PgTid) -> GatewayFuture<'a, PgPayment> {
        self.timed("fetch_payment", self.inner.fetch_payment(pg_tid))
    }

    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> GatewayFuture<'a, CancelReceipt> {
        self.timed("cancel", self.inner.cancel(request))
    }

    fn cancels_are_guarded(&self) -> bool {
        self.inner.cancels_are_guarded()
    }

    fn keeps_answers_under_key(&self) -> bool {
        self.inner.keeps_answers_under_key()
    }

    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> GatewayFuture<'a, PgPayment> {
        self.timed("confirm", self.inner.confirm(request))
    }

    fn settlement_page<'a>(
        &'a self,
        date: NaiveDate,
        cursor: Option<&'a str>,
        page_size: u32,
    ) -> GatewayFuture<'a, SettlementPage> {
        self.timed(
            "settlement_page",
            self.inner.settlement_page(date, cursor, page_size),
        )
    }

    fn find_paid_by_order<'a>(&'a self, order_id: &'a str) -> GatewayFuture<'a, Vec<PgPayment>> {
        self.timed(
            "find_paid_by_order",
            self.inner.find_paid_by_order(order_id),
        )
    }

    fn fetch_by_order<'a>(&'a self, order_id: &'a str) -> GatewayFuture<'a, PgPayment> {
        self.timed("fetch_by_order", self.inner.fetch_by_order(order_id))
    }
}

//! Settlement benchmark: reconcile N PG settlement lines against N stored payments (the PG
//! limiter off) and settle the day over 100 partners; prints seconds, records/s and peak memory.
//!
//! `cargo run --release --example settlement_bench -- [payments] [cache MiB]` (defaults
//! 1,000,000 and 64). It writes a temporary data file (about 1 GiB for a million payments) and
//! removes it at the end. redb's page cache is bounded to the given size, so what a phase adds
//! beyond it is the phase's own working set.
#![expect(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap,
    clippy::too_many_lines,
    reason = "a benchmark program: it stops loudly on anything unexpected, and its rates are approximate"
)]

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::future::join_all;
use kassa::clock::Env;
use kassa::config::{Config, Partner};
use kassa::domain::{Amount, CancelId, OrderDraft, OrderId, PartnerId, PaymentId, PgTid, Provider};
use kassa::flows::Kassa;
use kassa::gateway::{
    CancelReceipt, CancelRequest, GatewayError, GatewayFuture, Gateways, PaymentGateway, PgPayment,
    SettlementKind, SettlementLine, SettlementPage,
};
use kassa::store::{NewPgPayment, RecordOutcome, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTNERS: usize = 100;
const PAGE_SIZE: u32 = 1_000;
const WRITES_IN_FLIGHT: usize = 4_096;
const AMOUNT: i64 = 10_000;

fn order_id(n: usize) -> String {
    format!("bench-{n:08}")
}

/// A PG whose settlement lists one APPROVAL line per stored payment, `PAGE_SIZE` at a time.
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
                    order_id: order_id(n),
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

/// A `/proc/self/status` figure in MiB (Linux): `VmHWM` is the peak, `VmRSS` the current.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Starts a new peak measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn report(phase: &str, records: usize, elapsed: Duration, rss_before: f64) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{phase:<36} {records:>9} records {seconds:>7.2} s {:>10.0} records/s   memory {rss_before:>6.1} -> peak {:>6.1} MiB",
        records as f64 / seconds,
        status_mib("VmHWM:")
    );
}

#[tokio::main]
async fn main() {
    let payments: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(1_000_000);
    let cache_mib: usize = std::env::args()
        .nth(2)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open_with_cache(dir.path(), Some(cache_mib << 20), || [7; 32])
        .expect("the store opens");
    let env = Env::system();
    let paid_at: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-23T12:00:00+09:00")
        .unwrap()
        .with_timezone(&Utc);
    let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let partners: Vec<Partner> = (0..PARTNERS)
        .map(|n| Partner {
            id: PartnerId::parse(&format!("partner-{n:03}")).unwrap(),
            name: format!("Partner {n}"),
            fee_rate_bps: 330,
        })
        .collect();
    println!(
        "kassa settlement benchmark: {payments} payments, {PARTNERS} partners, pages of {PAGE_SIZE}, redb cache {cache_mib} MiB"
    );

    reset_peak();
    let rss = status_mib("VmRSS:");
    let started = Instant::now();
    for chunk_start in (0..payments).step_by(WRITES_IN_FLIGHT) {
        let chunk = chunk_start..(chunk_start + WRITES_IN_FLIGHT).min(payments);
        join_all(chunk.map(|n| {
            let (store, env, partner) = (
                store.clone(),
                env.clone(),
                partners[n % PARTNERS].id.clone(),
            );
            async move {
                let order = OrderId::parse(&order_id(n)).unwrap();
                let draft = OrderDraft {
                    order_id: order.clone(),
                    amount: Amount::positive(AMOUNT).unwrap(),
                    name: "bench".into(),
                    partner_id: Some(partner),
                    buyer_email: None,
                    provider: Provider::Toss,
                };
                store
                    .create_order(draft, None, paid_at)
                    .await
                    .expect("order stored");
                let new = NewPgPayment {
                    payment_id: PaymentId::from_uuid(env.new_uuid()),
                    cancel_id: CancelId::from_uuid(env.new_uuid()),
                    pg_key: String::new(),
                    provider: Provider::Toss,
                    pg_tid: PgTid::parse(&format!("tpk_{n}")).unwrap(),
                    order_id: order,
                    amount: Amount::positive(AMOUNT).unwrap(),
                    currency_ok: true,
                    pg_balance: Amount::positive(AMOUNT).unwrap(),
                    paid_at,
                    now: paid_at,
                    source: "bench",
                };
                let outcome = store.record_pg_payment(new).await.expect("payment stored");
                assert!(matches!(outcome, RecordOutcome::Paid(_)));
            }
        }))
        .await;
    }
    report(
        "store orders and payments (durable)",
        payments,
        started.elapsed(),
        rss,
    );

    let mut config = Config::defaults();
    config.settlement_sync.page_interval = Duration::ZERO;
    config.settlement_sync.page_size = PAGE_SIZE;
    config.settlement_sync.max_pages_per_run =
        u32::try_from(payments / PAGE_SIZE as usize + 2).unwrap_or(u32::MAX);
    config.partners = partners;
    let kassa = Kassa::new(
        config,
        store.clone(),
        Gateways::default().with(Arc::new(SettlementDouble { lines: payments })),
        env,
        reqwest::Client::new(),
    );

    reset_peak();
    let rss = status_mib("VmRSS:");
    let started = Instant::now();
    let sync = kassa::flows::settlement::sync(&kassa, Provider::Toss, date)
        .await
        .expect("the sync runs");
    report(
        "reconcile settlement lines",
        payments,
        started.elapsed(),
        rss,
    );
    assert!(
        sync.complete && sync.counts.updated == payments as u64,
        "every line matched: {sync:?}"
    );

    reset_peak();
    let rss = status_mib("VmRSS:");
    let started = Instant::now();
    let rows = kassa::flows::partners::run(&kassa, date)
        .await
        .expect("the partner run");
    report(
        "settle the day over the partners",
        payments,
        started.elapsed(),
        rss,
    );
    let gross: i64 = rows.iter().map(|row| row.figures.gross).sum();
    assert_eq!(
        gross,
        AMOUNT * payments as i64,
        "the partners' gross adds up to the day"
    );
    println!(
        "data file: {:.1} MiB",
        std::fs::metadata(store.path()).map_or(0, |meta| meta.len()) as f64 / 1_048_576.0
    );
}

//! `reconcile` and `partner`: the daily work over one day of N stored payments.

use super::{AMOUNT, figure, private_tempdir};
use crate::bench::Options;
use crate::bench::driver::{peak_rss_mb, rate, reset_peak};
use crate::clock::Env;
use crate::config::{Config, Partner};
use crate::domain::{Amount, CancelId, OrderDraft, OrderId, PartnerId, PaymentId, PgTid, Provider};
use crate::flows::Kassa;
use crate::gateway::{
    CancelReceipt, CancelRequest, GatewayError, GatewayFuture, Gateways, PaymentGateway, PgPayment,
    SettlementKind, SettlementLine, SettlementPage,
};
use crate::store::{NewPgPayment, RecordOutcome, Store};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let bar = crate::bench::driver::progress("setup", n);
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

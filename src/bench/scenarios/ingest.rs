//! `ingest`: orders created and paid through the real HTTP paths of each PG.

use super::{AMOUNT, Server, fail, failed, figure, provider_of, stop};
use crate::bench::Options;
use crate::bench::driver::{drive, peak_rss_mb, reset_peak};
use crate::domain::{OrderId, PaymentStatus};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Orders created and paid through the real HTTP paths, a third with each PG: the order API,
/// then the completion call, in which kassa fetches (or confirms) the payment at the PG.
pub async fn ingest(options: &Options) -> Result<Value, String> {
    let (n, concurrency) = (options.n(6_000, 60), options.concurrency(32));
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

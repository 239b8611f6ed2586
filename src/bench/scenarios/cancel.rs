//! `cancel`: cancels through the real API and the sandbox PG to their final state.

use super::{AMOUNT, Server, TOKEN, failed, figure, paid_payments, stop};
use crate::bench::Options;
use crate::bench::driver::drive;
use crate::domain::{PaymentId, PaymentStatus};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most time one cancel may take to reach its final state in the benchmark.
const CANCEL_FINAL_WAIT: Duration = Duration::from_secs(60);

/// Cancels through the API (inline attempts, then the queue) to the sandbox PG, each timed from
/// the request until the payment is `CANCELLED` in kassa's store.
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

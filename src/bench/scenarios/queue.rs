//! `queue`: the durable queue without a PG.

use super::{failed, figure, private_tempdir};
use crate::bench::Options;
use crate::bench::driver::{drive, rate};
use crate::clock::Env;
use crate::domain::Job;
use crate::domain::job::JobKind;
use crate::store::{Claimed, JobOutcome, Store};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

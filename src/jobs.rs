//! The worker: it claims due jobs of every kind from the one queue and runs them, at most
//! `JOBS_IN_FLIGHT_MAX` at once, each as a tracked task (so shutdown waits for it) that a panic
//! cannot take the worker down with. It can be driven one step at a time by tests
//! (`run_due_jobs`).
//!
//! Invariant: each step is bounded (`JOBS_PER_TICK_MAX`, `JOBS_IN_FLIGHT_MAX`); every job it runs
//! was claimed under a lease first and is finished, rescheduled or given up through the queue;
//! a job of a PG whose circuit breaker is open waits without spending a try.

use crate::domain::Job;
use crate::domain::job::JobKind;
use crate::domain::retry::RetrySchedule;
use crate::flows::cancel::{self, Mode};
use crate::flows::{FlowError, Kassa, partners, settlement};
use crate::store::{AlertLevel, Claimed, Delivery, JobClaim, JobOutcome};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most jobs claimed in one tick.
pub const JOBS_PER_TICK_MAX: usize = 32;
/// Most jobs run at the same time.
pub const JOBS_IN_FLIGHT_MAX: usize = 8;
/// Longest one Slack call may take.
pub const SLACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The lease of a job that is not a cancel attempt: a settlement day may page for a while.
pub const JOB_LEASE: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// How soon an unfinished settlement day (stopped at `max_pages_per_run`) goes on.
pub const SYNC_CONTINUE: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// The retry policy of a kind: cancels from `[retry]`, the others their named defaults.
pub fn schedule_of(kassa: &Kassa, kind: JobKind) -> RetrySchedule {
    match kind {
        JobKind::Cancel => RetrySchedule::new(
            kassa.config.retry.backoff.clone(),
            kassa.config.retry.queue_attempts_max,
        ),
        other => other.default_schedule(),
    }
}

fn leases(kassa: &Kassa) -> HashMap<JobKind, chrono::TimeDelta> {
    JobKind::ALL
        .into_iter()
        .map(|kind| {
            let lease = if kind == JobKind::Cancel {
                cancel::lease(kassa)
            } else {
                JOB_LEASE
            };
            (kind, lease)
        })
        .collect()
}

/// How many jobs one step ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ran {
    /// Cancel attempts.
    pub cancels: usize,
    /// Every other kind (alerts, syncs, partner runs, re-checks).
    pub others: usize,
}

impl Ran {
    pub fn total(self) -> usize {
        self.cancels + self.others
    }
}

/// Claims the due jobs (at most `JOBS_PER_TICK_MAX`) and runs them, at most
/// `JOBS_IN_FLIGHT_MAX` at once. Answers how many ran.
pub async fn run_due_jobs(kassa: &Kassa) -> Result<Ran, FlowError> {
    let mut ran = Ran::default();
    let mut count = 0;
    // Claim only as many as run at once, so no lease ticks away while its job waits to start.
    // Nothing new is claimed once shutdown began: an attempt started then could be cut off.
    while count < JOBS_PER_TICK_MAX && !kassa.shutdown.is_cancelled() {
        let now = kassa.env.now();
        let claims = kassa
            .store
            .claim_due(
                now,
                JOBS_IN_FLIGHT_MAX,
                leases(kassa),
                kassa.breakers.gates(now),
            )
            .await?;
        let claimed = claims.len();
        for claim in &claims {
            match claim {
                Claimed::Cancel(_) => ran.cancels += 1,
                Claimed::Other(_) => ran.others += 1,
            }
        }
        let running: Vec<_> = claims
            .into_iter()
            .map(|claim| {
                let kassa_for_job = kassa.clone();
                kassa
                    .tasks
                    .spawn(async move { run_job(&kassa_for_job, claim).await })
            })
            .collect();
        let mut first_error = None;
        for done in running {
            match done.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(join) => {
                    tracing::error!(error = %join, "a job stopped unexpectedly; its lease makes it due again");
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        count += claimed;
        if claimed < JOBS_IN_FLIGHT_MAX {
            break;
        }
    }
    Ok(ran)
}

async fn run_job(kassa: &Kassa, claimed: Claimed) -> Result<(), FlowError> {
    match claimed {
        Claimed::Cancel(claim) => cancel::run_claim(kassa, &claim, Mode::Queue)
            .await
            .map(|_| ()),
        Claimed::Other(claim) => {
            // The work runs in a task of its own: a panic is a failed try, not a lost job.
            let task = {
                let kassa = kassa.clone();
                let job = claim.clone();
                tokio::spawn(async move { work(&kassa, &job).await })
            };
            let outcome = match task.await {
                Ok(Ok(Some(outcome))) => outcome,
                // The work recorded its own outcome (an alert delivery).
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(error)) => failed(kassa, &claim, error.to_string()),
                Err(join) => {
                    tracing::error!(job = claim.queued.job.kind().as_str(), error = %join, "a job panicked; it is retried within its bound");
                    failed(
                        kassa,
                        &claim,
                        format!("the job stopped unexpectedly: {join}"),
                    )
                }
            };
            finish(kassa, &claim, outcome).await
        }
    }
}

/// A failed try: again after the kind's backoff, or given up once its tries are spent.
fn failed(kassa: &Kassa, claim: &JobClaim, error: String) -> JobOutcome {
    let kind = claim.queued.job.kind();
    let schedule = schedule_of(kassa, kind);
    let made = claim.queued.attempts.saturating_add(1);
    if schedule.exhausted(made) {
        return JobOutcome::GaveUp {
            error: format!("{error} (after {made} tries)"),
        };
    }
    let delay = schedule.delay(made, random(kassa));
    JobOutcome::Retry {
        error,
        due: kassa.env.now() + chrono::TimeDelta::from_std(delay).unwrap_or(JOB_LEASE),
        counted: true,
    }
}

async fn finish(kassa: &Kassa, claim: &JobClaim, outcome: JobOutcome) -> Result<(), FlowError> {
    let kind = claim.queued.job.kind();
    match &outcome {
        JobOutcome::Done => {}
        // The sweep queues itself again each time: not a failure.
        JobOutcome::Retry { .. } if kind == JobKind::Sweep => {}
        JobOutcome::Retry { error, due, .. } => {
            tracing::warn!(job = kind.as_str(), error = %error, next = %due.to_rfc3339(), "a job failed; it runs again later");
        }
        JobOutcome::GaveUp { error } => {
            tracing::error!(job = kind.as_str(), error = %error, "a job ran out of tries");
        }
    }
    kassa.store.finish_job(claim, outcome.clone()).await?;
    if let JobOutcome::GaveUp { error } = outcome
        && kind != JobKind::Alert
    {
        let message = format!("the {} job gave up: {error}", kind.as_str());
        kassa
            .store
            .raise_alert(
                kassa.env.new_uuid().as_u128(),
                AlertLevel::Urgent,
                "JOB_GAVE_UP",
                &message,
                kassa.env.now(),
            )
            .await?;
    }
    Ok(())
}

fn random(kassa: &Kassa) -> u64 {
    let mut bytes = [0u8; 8];
    kassa.env.entropy.fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// What one job does. `None` when it recorded its outcome itself.
async fn work(kassa: &Kassa, claim: &JobClaim) -> Result<Option<JobOutcome>, FlowError> {
    let now = kassa.env.now();
    match &claim.queued.job {
        Job::Cancel { .. } => Err(FlowError::Unprocessable {
            code: "BAD_JOB",
            message: "a cancel job reached the generic worker".into(),
        }),
        Job::Alert { alert_id } => {
            deliver_alert(kassa, claim, *alert_id).await?;
            Ok(None)
        }
        Job::Recheck {
            provider,
            pg_tid,
            order_id,
        } => {
            crate::flows::recheck::recheck(kassa, *provider, pg_tid, order_id.as_ref()).await?;
            Ok(Some(JobOutcome::Done))
        }
        Job::Sweep => {
            if let Err(error) = crate::flows::recheck::sweep(kassa).await {
                tracing::warn!(error = %error, "the re-check sweep failed; it runs again at its interval");
            }
            // The sweep queues itself again, whatever happened: it is how kassa keeps asking.
            let interval = chrono::TimeDelta::from_std(kassa.config.recheck.interval)
                .unwrap_or(chrono::TimeDelta::minutes(1));
            Ok(Some(JobOutcome::Retry {
                error: "next sweep".into(),
                due: now + interval,
                counted: false,
            }))
        }
        Job::SettlementSync { provider, date } => {
            match settlement::sync(kassa, *provider, *date).await {
                Ok(report) if report.complete => Ok(Some(JobOutcome::Done)),
                Ok(report) if report.failed == 0 => {
                    // Stopped at max_pages_per_run with a cursor: the day goes on soon.
                    Ok(Some(JobOutcome::Retry {
                        error: format!("{} pages done, the day goes on", report.pages),
                        due: now + SYNC_CONTINUE,
                        counted: false,
                    }))
                }
                Ok(report) => Ok(Some(failed(
                    kassa,
                    claim,
                    format!("a settlement page failed after {} pages", report.pages),
                ))),
                Err(FlowError::Conflict { message, .. }) => Ok(Some(failed(kassa, claim, message))),
                Err(error) => Err(error),
            }
        }
        Job::PartnerSettlement { date } => {
            partners::run(kassa, *date).await?;
            Ok(Some(JobOutcome::Done))
        }
    }
}

/// Delivers one alert: logged on its first try, and posted to Slack when a webhook is set.
async fn deliver_alert(kassa: &Kassa, claim: &JobClaim, id: u128) -> Result<(), FlowError> {
    let now = kassa.env.now();
    let Some(alert) = kassa.store.alert(id).await? else {
        kassa.store.finish_job(claim, JobOutcome::Done).await?;
        return Ok(());
    };
    if claim.queued.attempts == 0 {
        match alert.level {
            AlertLevel::Urgent => {
                tracing::error!(alert = %alert.kind, payment_id = ?alert.payment_id.map(|id| id.to_string()), "ALERT: {}", alert.message);
            }
            AlertLevel::Warning => {
                tracing::warn!(alert = %alert.kind, payment_id = ?alert.payment_id.map(|id| id.to_string()), "alert: {}", alert.message);
            }
        }
    }
    let delivery = match &kassa.config.alerts.slack_webhook_url {
        None => Delivery::Sent,
        Some(url) => {
            let text = format!("[kassa {}] {}", alert.level.as_str(), alert.message);
            let sent = kassa
                .http
                .post(url.expose())
                .timeout(SLACK_TIMEOUT)
                .json(&serde_json::json!({ "text": text }))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => Delivery::Sent,
                Ok(response) => slack_failed(
                    kassa,
                    claim,
                    format!("Slack answered {}", response.status()),
                    now,
                ),
                // reqwest's error names the URL, which is a secret: keep only its kind.
                Err(error) => slack_failed(
                    kassa,
                    claim,
                    if error.is_timeout() {
                        "Slack timed out".into()
                    } else {
                        "Slack could not be reached".into()
                    },
                    now,
                ),
            }
        }
    };
    kassa
        .store
        .alert_delivered(claim, id, delivery, now)
        .await?;
    Ok(())
}

fn slack_failed(kassa: &Kassa, claim: &JobClaim, error: String, now: DateTime<Utc>) -> Delivery {
    match failed(kassa, claim, error) {
        JobOutcome::Retry { error, due, .. } => Delivery::Failed {
            error,
            next_try: due.max(now),
        },
        JobOutcome::GaveUp { error } => {
            tracing::error!(error = %error, "an alert could not be sent to Slack; it stays in the log and on /admin");
            Delivery::GaveUp { error }
        }
        JobOutcome::Done => Delivery::Sent,
    }
}

/// The worker loop: every `retry.tick_interval` (or when woken) it runs due jobs, until
/// shutdown. It starts after a random part of one interval, so that restarts of many machines
/// do not tick together. Jobs it started go on as tracked tasks; shutdown waits for them.
pub async fn run_worker(kassa: Kassa, shutdown: CancellationToken) {
    let tick = kassa.config.retry.tick_interval;
    let start_delay = {
        let tick_ms = u64::try_from(tick.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(random(&kassa) % tick_ms)
    };
    tokio::select! {
        () = tokio::time::sleep(start_delay) => {}
        () = shutdown.cancelled() => return,
    }
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = kassa.wake.notified() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = run_due_jobs(&kassa).await {
            tracing::error!(error = %error, "the worker could not run its jobs; it tries again next tick");
        }
    }
}

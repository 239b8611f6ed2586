//! Background work: the retry worker, which runs due cancel jobs, and the alert sender, which
//! delivers the alert outbox. Both are loops under the one shutdown token, and both can be
//! driven one step at a time by tests (`run_due_jobs`, `deliver_alerts`).
//!
//! Invariant: each step is bounded (`JOBS_PER_TICK_MAX`, `JOBS_IN_FLIGHT_MAX`,
//! `ALERTS_PER_TICK_MAX`), and every job it runs was claimed under a lease first.

use crate::flows::cancel::{self, Mode};
use crate::flows::{FlowError, Kassa};
use crate::store::{AlertLevel, Delivery};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Most jobs claimed in one tick.
pub const JOBS_PER_TICK_MAX: usize = 32;
/// Most jobs attempted at the same time.
pub const JOBS_IN_FLIGHT_MAX: usize = 8;
/// Most alerts delivered in one tick.
pub const ALERTS_PER_TICK_MAX: usize = 32;
/// Attempts to deliver one alert to Slack before kassa keeps it only in the log and on /admin.
pub const ALERT_ATTEMPTS_MAX: u32 = 8;
/// Delay before the second delivery attempt; it doubles after each failure.
pub const ALERT_RETRY_BASE: Duration = Duration::from_secs(30);
/// Longest one Slack call may take.
pub const SLACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Claims the due jobs (at most `JOBS_PER_TICK_MAX`) and attempts them, at most
/// `JOBS_IN_FLIGHT_MAX` at once. Answers how many were attempted.
pub async fn run_due_jobs(kassa: &Kassa) -> Result<usize, FlowError> {
    let mut count = 0;
    // Claim only as many as run at once, so no lease ticks away while its job waits to start.
    while count < JOBS_PER_TICK_MAX {
        let claims = kassa
            .store
            .claim_due(kassa.env.now(), JOBS_IN_FLIGHT_MAX, cancel::lease(kassa))
            .await?;
        let claimed = claims.len();
        let mut running = JoinSet::new();
        for claim in claims {
            let kassa = kassa.clone();
            running.spawn(async move {
                cancel::run_claim(&kassa, &claim, Mode::Queue)
                    .await
                    .map(|_| ())
            });
        }
        let mut first_error = None;
        while let Some(done) = running.join_next().await {
            if let Ok(Err(error)) = done {
                first_error.get_or_insert(error);
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
    Ok(count)
}

/// Delivers the due alerts: each is logged once, and sent to Slack when a webhook is set.
pub async fn deliver_alerts(kassa: &Kassa, http: &reqwest::Client) -> Result<usize, FlowError> {
    let now = kassa.env.now();
    let due = kassa.store.due_alerts(now, ALERTS_PER_TICK_MAX).await?;
    for alert in &due {
        if alert.attempts == 0 {
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
                let sent = http
                    .post(url.expose())
                    .timeout(SLACK_TIMEOUT)
                    .json(&serde_json::json!({ "text": text }))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => Delivery::Sent,
                    Ok(response) => failed(
                        alert.attempts,
                        format!("Slack answered {}", response.status()),
                        now,
                    ),
                    // reqwest's error names the URL, which is a secret: keep only its kind.
                    Err(error) => failed(
                        alert.attempts,
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
        kassa.store.alert_delivered(alert.id, delivery, now).await?;
    }
    Ok(due.len())
}

fn failed(attempts: u32, error: String, now: chrono::DateTime<chrono::Utc>) -> Delivery {
    let made = attempts.saturating_add(1);
    if made >= ALERT_ATTEMPTS_MAX {
        tracing::error!(error = %error, "an alert could not be sent to Slack; it stays in the log and on /admin");
        return Delivery::GaveUp { error };
    }
    let delay = ALERT_RETRY_BASE.saturating_mul(1 << made.min(10));
    Delivery::Failed {
        error,
        next_try: now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
    }
}

/// The worker loop: every `retry.tick_interval` (or when woken) it runs due jobs and delivers
/// alerts, until shutdown. It starts after a random part of one interval, so that restarts of
/// many machines do not tick together.
pub async fn run_worker(kassa: Kassa, http: reqwest::Client, shutdown: CancellationToken) {
    let tick = kassa.config.retry.tick_interval;
    let start_delay = {
        let mut bytes = [0u8; 8];
        kassa.env.entropy.fill(&mut bytes);
        let tick_ms = u64::try_from(tick.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(u64::from_le_bytes(bytes) % tick_ms)
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
            tracing::error!(error = %error, "the retry worker could not run its jobs; it tries again next tick");
        }
        if let Err(error) = deliver_alerts(&kassa, &http).await {
            tracing::error!(error = %error, "alerts could not be delivered; trying again next tick");
        }
    }
}

//! The scheduler: cron schedules in Asia/Seoul that queue the daily jobs for the previous day.
//! It only enqueues; the worker runs the jobs at its own pace, with their retries.
//!
//! Each schedule remembers in the store the last fire time it was queued for, written in the
//! same transaction as the jobs. A tick queues every fire time after that mark (at most
//! `CATCH_UP_FIRES_MAX`, oldest first), so runs missed while kassa was stopped happen at the
//! next start; a new installation queues only the latest. A day's job has a unique key, so it
//! is never queued twice, and the jobs are idempotent (a partner settlement recomputes only
//! REQUESTED rows, a sync skips what it settled).

use crate::domain::Job;
use crate::flows::{FlowError, Kassa, settlement};
use chrono::{DateTime, Days, Utc};
use chrono_tz::Asia::Seoul;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the scheduler looks at the clock.
pub const SCHEDULER_TICK: Duration = Duration::from_secs(30);

/// Parses a six-field cron expression (seconds first), as the config writes them.
pub fn parse(expression: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(expression)
        .map_err(|error| format!("{expression:?} is not a cron expression with seconds: {error}"))
}

/// The most recent fire time of `cron` at or before `now`, in KST.
pub fn last_fire(cron: &Cron, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_previous_occurrence(&now.with_timezone(&Seoul), true)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// What one tick queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub schedule: &'static str,
    pub date: chrono::NaiveDate,
}

/// Most missed fire times one tick catches up, oldest first (a month of daily runs).
pub const CATCH_UP_FIRES_MAX: usize = 31;

/// Queues the jobs of every schedule that is due, each on its own: one failing does not hold
/// up the other. Answers what was queued; the first error, if any, after both had their turn.
pub async fn tick(kassa: &Kassa) -> Result<Vec<Ran>, FlowError> {
    let now = kassa.env.now();
    let mut ran = Vec::new();
    let config = &kassa.config;
    let mut first_error = None;
    if config.partner_settlement.enabled
        && let Err(error) = partner_tick(kassa, now, &mut ran).await
    {
        tracing::error!(error = %error, "the partner settlement schedule failed; it is tried again next tick");
        first_error.get_or_insert(error);
    }
    if config.settlement_sync.enabled
        && let Err(error) = sync_tick(kassa, now, &mut ran).await
    {
        tracing::error!(error = %error, "the settlement sync schedule failed; it is tried again next tick");
        first_error.get_or_insert(error);
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(ran),
    }
}

/// The day a fire time settles: the KST day before it.
fn day_before(fire: DateTime<Utc>) -> chrono::NaiveDate {
    crate::domain::calendar::kst_date(fire)
        .checked_sub_days(Days::new(1))
        .unwrap_or_default()
}

/// Fire times after `mark` and not after `now`, oldest first: the last `CATCH_UP_FIRES_MAX` of
/// them, or only the latest when the schedule never ran (a new installation).
fn pending_fires(
    cron: &Cron,
    mark: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let Some(latest) = last_fire(cron, now) else {
        return Vec::new();
    };
    let Some(mark) = mark else {
        return vec![latest];
    };
    let mut fires = Vec::new();
    let mut cursor = mark.with_timezone(&Seoul);
    // Bounded: a month of daily fires is 31; a schedule firing more often keeps only the latest.
    for _ in 0..CATCH_UP_FIRES_MAX * 48 {
        let Ok(next) = cron.find_next_occurrence(&cursor, false) else {
            break;
        };
        if next.with_timezone(&Utc) > now {
            break;
        }
        fires.push(next.with_timezone(&Utc));
        cursor = next;
    }
    let skip = fires.len().saturating_sub(CATCH_UP_FIRES_MAX);
    fires.split_off(skip)
}

async fn partner_tick(
    kassa: &Kassa,
    now: DateTime<Utc>,
    ran: &mut Vec<Ran>,
) -> Result<(), FlowError> {
    let cron = &kassa.config.partner_settlement.schedule.cron;
    let mark = kassa.store.schedule_mark("partner_settlement").await?;
    for fire in pending_fires(cron, mark, now) {
        let date = day_before(fire);
        let jobs = vec![(
            kassa.env.new_uuid().as_u128(),
            Job::PartnerSettlement { date },
        )];
        kassa
            .store
            .enqueue_scheduled("partner_settlement", fire, jobs, now)
            .await?;
        ran.push(Ran {
            schedule: "partner_settlement",
            date,
        });
    }
    Ok(())
}

async fn sync_tick(kassa: &Kassa, now: DateTime<Utc>, ran: &mut Vec<Ran>) -> Result<(), FlowError> {
    let cron = &kassa.config.settlement_sync.schedule.cron;
    let mark = kassa.store.schedule_mark("settlement_sync").await?;
    for fire in pending_fires(cron, mark, now) {
        let date = day_before(fire);
        let jobs = settlement::SETTLING_PROVIDERS
            .into_iter()
            .filter(|provider| kassa.gateways.get(*provider).is_some())
            .map(|provider| {
                (
                    kassa.env.new_uuid().as_u128(),
                    Job::SettlementSync { provider, date },
                )
            })
            .collect();
        kassa
            .store
            .enqueue_scheduled("settlement_sync", fire, jobs, now)
            .await?;
        ran.push(Ran {
            schedule: "settlement_sync",
            date,
        });
    }
    Ok(())
}

/// The scheduler loop, until shutdown.
pub async fn run_scheduler(kassa: Kassa, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(SCHEDULER_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match tick(&kassa).await {
            Ok(ran) => {
                for run in &ran {
                    tracing::info!(schedule = run.schedule, date = %run.date, "scheduled run queued");
                }
                if !ran.is_empty() {
                    kassa.wake.notify_one();
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "a schedule could not queue its jobs; it is tried again next tick");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_oclock_is_eight_oclock_in_seoul() {
        let cron = parse("0 0 8 * * *").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-24T03:28:00+09:00")
            .unwrap()
            .with_timezone(&Utc);
        let fire = last_fire(&cron, now).unwrap();
        assert_eq!(
            fire.with_timezone(&Seoul).to_rfc3339(),
            "2026-11-23T08:00:00+09:00"
        );
        let after = DateTime::parse_from_rfc3339("2026-11-24T08:00:00+09:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(last_fire(&cron, after).unwrap(), after);
        assert!(
            parse("0 8 * * *").is_err(),
            "five fields are refused: the seconds are required"
        );
        assert!(parse("not cron").is_err());
    }
}

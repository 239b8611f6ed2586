//! The scheduler: cron schedules in Asia/Seoul that start the daily jobs for the previous day.
//!
//! Each schedule remembers in the store the last fire time it ran for. A tick runs every
//! schedule whose most recent fire time is later than that mark, so a run missed while kassa was
//! stopped happens at the next start (once, for the most recent fire). The jobs it starts are
//! idempotent (a partner settlement recomputes only REQUESTED rows), so a crash between a run
//! and its mark repeats the run harmlessly.

use crate::flows::{FlowError, Kassa, partners, settlement};
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

/// What one tick ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub schedule: &'static str,
    pub date: chrono::NaiveDate,
}

/// Runs every schedule that is due. Answers what ran.
pub async fn tick(kassa: &Kassa) -> Result<Vec<Ran>, FlowError> {
    let now = kassa.env.now();
    let mut ran = Vec::new();
    let config = &kassa.config;
    if config.partner_settlement.enabled {
        let cron = parse(&config.partner_settlement.schedule).map_err(|message| {
            FlowError::Unprocessable {
                code: "BAD_SCHEDULE",
                message,
            }
        })?;
        if let Some(fire) = due(kassa, "partner_settlement", &cron, now).await? {
            let date = crate::domain::calendar::kst_date(fire)
                .checked_sub_days(Days::new(1))
                .unwrap_or_default();
            partners::run(kassa, date).await?;
            kassa
                .store
                .set_schedule_mark("partner_settlement", fire)
                .await?;
            ran.push(Ran {
                schedule: "partner_settlement",
                date,
            });
        }
    }
    if config.settlement_sync.enabled {
        let cron = parse(&config.settlement_sync.schedule).map_err(|message| {
            FlowError::Unprocessable {
                code: "BAD_SCHEDULE",
                message,
            }
        })?;
        if let Some(fire) = due(kassa, "settlement_sync", &cron, now).await? {
            let date = crate::domain::calendar::kst_date(fire)
                .checked_sub_days(Days::new(1))
                .unwrap_or_default();
            for provider in settlement::SETTLING_PROVIDERS {
                if kassa.gateways.get(provider).is_none() {
                    continue;
                }
                match settlement::sync(kassa, provider, date).await {
                    Ok(_) => {}
                    // A manual run is on: it does the same work.
                    Err(FlowError::Conflict { .. }) => tracing::info!(
                        provider = provider.as_str(),
                        "settlement sync already running; the scheduled run skips it"
                    ),
                    Err(error) => return Err(error),
                }
            }
            kassa
                .store
                .set_schedule_mark("settlement_sync", fire)
                .await?;
            ran.push(Ran {
                schedule: "settlement_sync",
                date,
            });
        } else if let Some(fire) = last_fire(&cron, now) {
            // A run that stopped at max_pages_per_run goes on, one run per tick, until its day
            // is complete (or its cursor expires).
            let date = crate::domain::calendar::kst_date(fire)
                .checked_sub_days(Days::new(1))
                .unwrap_or_default();
            for provider in settlement::SETTLING_PROVIDERS {
                if kassa.gateways.get(provider).is_some()
                    && kassa
                        .store
                        .sync_cursor(provider.as_str(), date, now)
                        .await?
                        .is_some()
                {
                    match settlement::sync(kassa, provider, date).await {
                        Ok(_) | Err(FlowError::Conflict { .. }) => {}
                        Err(error) => return Err(error),
                    }
                    ran.push(Ran {
                        schedule: "settlement_sync",
                        date,
                    });
                }
            }
        }
    }
    Ok(ran)
}

async fn due(
    kassa: &Kassa,
    name: &str,
    cron: &Cron,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, FlowError> {
    let Some(fire) = last_fire(cron, now) else {
        return Ok(None);
    };
    let mark = kassa.store.schedule_mark(name).await?;
    Ok(mark.is_none_or(|mark| fire > mark).then_some(fire))
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
                for run in ran {
                    tracing::info!(schedule = run.schedule, date = %run.date, "scheduled run finished");
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "a scheduled run failed; it is tried again next tick");
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

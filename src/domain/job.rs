//! The kinds of background work, all carried by one durable queue: what a job is, how it is
//! named, which PG it talks to (for the circuit breaker), and its retry policy.
//!
//! Invariant: every job is idempotent. Running one twice (a crash between its work and its
//! completion) changes nothing the first run did not.

use super::retry::RetrySchedule;
use super::{CancelId, OrderId, PgTid, Provider};
use chrono::NaiveDate;
use std::time::Duration;

/// One piece of background work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// An attempt at a cancel intent (a merchant's cancel or a rollback).
    Cancel { cancel_id: CancelId },
    /// Ask the PG about one of its payments (named by a webhook, a settlement line, the
    /// sweep) and apply what the PG says: store it if kassa does not have it, import refunds
    /// made outside kassa if it does. `order_id` is what the hint claimed, checked, not trusted.
    Recheck {
        provider: Provider,
        pg_tid: PgTid,
        order_id: Option<OrderId>,
    },
    /// The re-check sweep: READY orders and recently active payments asked about again. It
    /// queues itself again every `recheck.interval_ms`.
    Sweep,
    /// Deliver an alert (log it once, and post it to Slack when configured).
    Alert { alert_id: u128 },
    /// The settlement sync of one PG for one KST day.
    SettlementSync { provider: Provider, date: NaiveDate },
    /// The partner settlement of one KST day.
    PartnerSettlement { date: NaiveDate },
}

/// The job kinds, for counts and for the per-kind policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    Cancel,
    Recheck,
    Sweep,
    Alert,
    SettlementSync,
    PartnerSettlement,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        JobKind::Cancel,
        JobKind::Recheck,
        JobKind::Sweep,
        JobKind::Alert,
        JobKind::SettlementSync,
        JobKind::PartnerSettlement,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Cancel => "cancel",
            JobKind::Recheck => "recheck",
            JobKind::Sweep => "sweep",
            JobKind::Alert => "alert",
            JobKind::SettlementSync => "settlement_sync",
            JobKind::PartnerSettlement => "partner_settlement",
        }
    }

    /// The retry policy of the kinds that do not take theirs from the config (cancels use
    /// `[retry]`).
    pub fn default_schedule(self) -> RetrySchedule {
        let seconds = |list: &[u64]| list.iter().copied().map(Duration::from_secs).collect();
        match self {
            // Cancels are given their schedule from the config; this is the same default.
            JobKind::Cancel => RetrySchedule::new(
                seconds(&[5, 30, 120, 600, 1_800, 3_600]),
                CANCEL_ATTEMPTS_DEFAULT,
            ),
            // A hint whose PG is down is asked again for about a day.
            JobKind::Recheck => RetrySchedule::new(seconds(&[30, 120, 600, 1_800, 3_600]), 28),
            // The sweep runs again at its interval whatever happened; a failed run only waits.
            JobKind::Sweep => RetrySchedule::new(seconds(&[60, 300]), u32::MAX),
            // One minute, then doubling to about an hour: eight tries over about four hours.
            JobKind::Alert => RetrySchedule::new(
                seconds(&[30, 60, 120, 240, 480, 960, 1_920, 3_600]),
                ALERT_ATTEMPTS_MAX,
            ),
            // A sync day goes on after a stop at max_pages_per_run or a PG outage, for a day.
            JobKind::SettlementSync => RetrySchedule::new(seconds(&[60, 300, 900, 3_600]), 48),
            JobKind::PartnerSettlement => RetrySchedule::new(seconds(&[60, 300, 900, 3_600]), 24),
        }
    }
}

/// Queued tries of a cancel before it becomes a dead letter, by default (about 12 hours).
pub const CANCEL_ATTEMPTS_DEFAULT: u32 = 16;
/// Tries to deliver one alert to Slack before kassa keeps it only in the log and on /admin.
pub const ALERT_ATTEMPTS_MAX: u32 = 8;

impl Job {
    pub fn kind(&self) -> JobKind {
        match self {
            Job::Cancel { .. } => JobKind::Cancel,
            Job::Recheck { .. } => JobKind::Recheck,
            Job::Sweep => JobKind::Sweep,
            Job::Alert { .. } => JobKind::Alert,
            Job::SettlementSync { .. } => JobKind::SettlementSync,
            Job::PartnerSettlement { .. } => JobKind::PartnerSettlement,
        }
    }

    /// What names the job uniquely among queued jobs, for jobs that must not be queued twice
    /// (a day's sync or partner run); `None` when the job id alone names it.
    pub fn unique_key(&self) -> Option<String> {
        match self {
            Job::SettlementSync { provider, date } => Some(format!(
                "settlement_sync:{}:{}",
                provider.as_str(),
                date.format("%Y%m%d")
            )),
            Job::PartnerSettlement { date } => {
                Some(format!("partner_settlement:{}", date.format("%Y%m%d")))
            }
            Job::Recheck {
                provider, pg_tid, ..
            } => Some(format!("recheck:{}:{}", provider.as_str(), pg_tid.as_str())),
            Job::Sweep => Some("sweep".to_owned()),
            Job::Cancel { .. } | Job::Alert { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cancel_horizon_outlives_a_maintenance_window() {
        let schedule = JobKind::Cancel.default_schedule();
        let total: Duration = (0..schedule.attempts_max())
            .map(|attempt| schedule.delay(attempt, 0))
            .sum();
        assert!(
            total > Duration::from_secs(11 * 3_600) && total < Duration::from_secs(13 * 3_600),
            "{total:?}"
        );
    }

    #[test]
    fn kinds_have_distinct_names() {
        let mut names: Vec<_> = JobKind::ALL.iter().map(|kind| kind.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), JobKind::ALL.len());
    }
}

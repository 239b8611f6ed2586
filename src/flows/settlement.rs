//! PG settlement sync: pages through the PG's settlement lines of a KST day and marks the
//! payments the PG has settled, under a lease lock, resuming where the last run stopped.
//!
//! Invariants: at most one run per PG at a time (a lease in the store, so a crashed run's lock
//! expires); at most `max_pages_per_run` pages per run, each applied with the cursor after it in
//! one transaction; a failing page stops the run and keeps the cursor.

use super::{FlowError, Kassa};
use crate::domain::Provider;
use crate::store::{SyncCounts, SyncReport};
use chrono::{Days, NaiveDate};

/// The PGs whose settlements kassa reconciles.
pub const SETTLING_PROVIDERS: [Provider; 2] = [Provider::Payple, Provider::Toss];

/// The KST day before today: what the morning run reconciles.
pub fn yesterday(kassa: &Kassa) -> NaiveDate {
    crate::domain::calendar::kst_date(kassa.env.now())
        .checked_sub_days(Days::new(1))
        .unwrap_or_default()
}

/// The PG a run uses when none is named: the first configured of Payple and Toss.
pub fn default_provider(kassa: &Kassa) -> Option<Provider> {
    SETTLING_PROVIDERS
        .into_iter()
        .find(|provider| kassa.gateways.get(*provider).is_some())
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Runs one sync of `provider`'s settlement for `date`.
#[expect(
    clippy::too_many_lines,
    reason = "one run from lock to report, read top to bottom"
)]
pub async fn sync(
    kassa: &Kassa,
    provider: Provider,
    date: NaiveDate,
) -> Result<SyncReport, FlowError> {
    if !SETTLING_PROVIDERS.contains(&provider) {
        return Err(FlowError::Unprocessable {
            code: "NO_SETTLEMENT_API",
            message: format!("{} settlements are not synced", provider.as_str()),
        });
    }
    let gateway = kassa
        .gateways
        .get(provider)
        .ok_or(FlowError::Unprocessable {
            code: "PROVIDER_NOT_AVAILABLE",
            message: format!("{} is not configured in this kassa", provider.as_str()),
        })?;
    let settings = &kassa.config.settlement_sync;
    let run_id = kassa.env.new_uuid().as_u128();
    let started = kassa.env.now();
    let lock_ttl_ms = millis(settings.lock_ttl);
    let outcome = kassa
        .store
        .take_sync_lock(provider.as_str(), run_id, started, lock_ttl_ms)
        .await?;
    if outcome == crate::store::LockOutcome::Busy {
        return Err(FlowError::Conflict {
            code: "SYNC_RUNNING",
            message: format!(
                "a {} settlement sync is running; try again when it ends",
                provider.as_str()
            ),
        });
    }
    let mut cursor = kassa
        .store
        .sync_cursor(provider.as_str(), date, started)
        .await?;
    let resumed = cursor.is_some();
    let mut counts = SyncCounts::default();
    let (mut pages, mut failed, mut complete) = (0_u32, 0_u64, false);
    while pages < settings.max_pages_per_run {
        let page = match gateway
            .settlement_page(date, cursor.as_deref(), settings.page_size)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                failed += 1;
                tracing::error!(provider = provider.as_str(), date = %date, error = %error, "a settlement page failed; the run stops and keeps its cursor");
                break;
            }
        };
        let applied = kassa
            .store
            .apply_settlement_page(
                provider.as_str(),
                date,
                page.records,
                page.next_cursor.clone(),
                kassa.env.now(),
                millis(settings.cursor_ttl),
                run_id,
                lock_ttl_ms,
            )
            .await;
        let applied = match applied {
            Ok(Some(applied)) => applied,
            Ok(None) => {
                failed += 1;
                tracing::error!(provider = provider.as_str(), date = %date, "the run lost its lock while it waited on the PG; it stops without applying the page");
                break;
            }
            Err(error) => {
                // The page's transaction did not commit; its cursor still points before it.
                failed += 1;
                tracing::error!(provider = provider.as_str(), date = %date, error = %error, "a settlement page could not be stored; the run stops");
                break;
            }
        };
        counts.add(applied);
        pages += 1;
        cursor = page.next_cursor;
        if cursor.is_none() {
            complete = true;
            break;
        }
    }
    let report = SyncReport {
        run_id,
        provider: provider.as_str().to_owned(),
        date,
        pages,
        complete,
        resumed,
        counts,
        failed,
        started_at_ms: started.timestamp_millis(),
        finished_at_ms: kassa.env.now().timestamp_millis(),
    };
    tracing::info!(
        provider = provider.as_str(),
        date = %date,
        pages,
        complete,
        resumed,
        updated = counts.updated,
        skipped = counts.skipped,
        missing = counts.missing,
        cancel_skipped = counts.cancel_skipped,
        discrepancy = counts.discrepancy,
        failed,
        "settlement sync finished"
    );
    kassa
        .store
        .finish_sync(
            report.clone(),
            kassa.env.new_uuid().as_u128(),
            kassa.env.now(),
            chrono::Duration::days(i64::from(settings.cancel_line_wait_days)),
        )
        .await?;
    Ok(report)
}

/// Most days one range sync covers: six months.
pub const SYNC_RANGE_DAYS_MAX: u64 = 184;
/// Most runs one day of a range gets (each up to `max_pages_per_run` pages) before the range
/// moves on; the day's cursor is kept, so running the range again goes on from it.
pub const RANGE_RUNS_PER_DAY_MAX: u32 = 20;
/// How long a range waits for another run's lock (the morning run) before a day, at most.
pub const RANGE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
const RANGE_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The days of a range sync, checked: past KST days only, `from <= to`, at most six months.
pub fn range_days(
    kassa: &Kassa,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<NaiveDate>, FlowError> {
    let invalid = |message: String| FlowError::Unprocessable {
        code: "INVALID_RANGE",
        message,
    };
    if from > to {
        return Err(invalid(format!("from ({from}) is after to ({to})")));
    }
    if to > yesterday(kassa) {
        return Err(invalid(format!(
            "to ({to}) must be a past day; today's settlement is not final yet"
        )));
    }
    let days = u64::try_from((to - from).num_days())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    if days > SYNC_RANGE_DAYS_MAX {
        return Err(invalid(format!(
            "a range holds at most {SYNC_RANGE_DAYS_MAX} days (six months); this one holds {days}"
        )));
    }
    Ok(from.iter_days().take_while(|day| *day <= to).collect())
}

/// Syncs every day of `from..=to`, oldest first, one report per day. It takes the sync lock one
/// day at a time, so the morning run waits at most one day's run; a lock held by another run
/// before a later day is waited for (at most `RANGE_LOCK_WAIT`). A day longer than one run goes
/// on from its cursor, up to `RANGE_RUNS_PER_DAY_MAX` runs. The first day's lock, when busy, is
/// answered as `SYNC_RUNNING`, like a one-day run.
pub async fn sync_range(
    kassa: &Kassa,
    provider: Provider,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<SyncReport>, FlowError> {
    let days = range_days(kassa, from, to)?;
    let mut reports = Vec::with_capacity(days.len());
    for (index, day) in days.into_iter().enumerate() {
        if kassa.shutdown.is_cancelled() {
            break;
        }
        let mut runs = 0;
        let mut waited = std::time::Duration::ZERO;
        loop {
            match sync(kassa, provider, day).await {
                Ok(report) => {
                    runs += 1;
                    let again = !report.complete
                        && report.failed == 0
                        && runs < RANGE_RUNS_PER_DAY_MAX
                        && !kassa.shutdown.is_cancelled();
                    reports.push(report);
                    if !again {
                        break;
                    }
                }
                Err(FlowError::Conflict { .. })
                    if (index > 0 || runs > 0) && waited < RANGE_LOCK_WAIT =>
                {
                    tokio::time::sleep(RANGE_LOCK_POLL).await;
                    waited += RANGE_LOCK_POLL;
                }
                Err(error) => return Err(error),
            }
        }
        if reports.last().is_some_and(|report| report.failed > 0) {
            tracing::warn!(provider = provider.as_str(), date = %day, "a day of the range failed; the range goes on with the next day");
        }
    }
    Ok(reports)
}

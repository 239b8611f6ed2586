//! The overview: today and yesterday, what waits for a person, the last syncs, open alerts,
//! and 30 days of paid and given back as a server-drawn chart.

use super::{Signed, seoul, won};
use crate::domain::calendar::kst_date;
use crate::http::error::PageError;
use crate::http::i18n::Lang;
use crate::http::state::AppState;
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Days;

/// Days the overview's chart shows.
pub const CHART_DAYS: u64 = 30;
/// Most dead letters counted on the overview; past it the figure reads "N+".
const DEAD_LETTERS_COUNTED_MAX: usize = 500;
const CHART_WIDTH: i64 = 600;
const CHART_HEIGHT: i64 = 160;

struct DayFigures {
    label: &'static str,
    date: String,
    count: u64,
    paid: String,
    cancelled: String,
    net: String,
}

struct Bar {
    x: i64,
    paid_y: i64,
    paid_h: i64,
    cancelled_x: i64,
    cancelled_y: i64,
    cancelled_h: i64,
    title: String,
}

struct SyncLine {
    provider: String,
    date: String,
    finished: String,
    complete: bool,
    discrepancy: u64,
    missing: u64,
}

struct AlertLine {
    level: &'static str,
    message: String,
    created: String,
    sent: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    l: Lang,
    csrf: String,
    nav: &'static str,
    days: Vec<DayFigures>,
    queue: Vec<(&'static str, usize)>,
    dead_letters: String,
    unknown: String,
    syncs: Vec<SyncLine>,
    alerts: Vec<AlertLine>,
    unsent_alerts: usize,
    bars: Vec<Bar>,
    chart_width: i64,
    chart_height: i64,
    chart_max: String,
    cut_short: bool,
}

#[expect(
    clippy::too_many_lines,
    reason = "one page, its figures gathered top to bottom"
)]
pub async fn overview(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let fail = |error: crate::store::StoreError| PageError::from_flow(lang, &error.into());
    let store = &state.kassa.store;
    let today = kst_date(state.kassa.env.now());
    let first = today
        .checked_sub_days(Days::new(CHART_DAYS - 1))
        .unwrap_or(today);
    let (totals, cut_short) = store.day_totals(first, today).await.map_err(fail)?;
    let figures = |label, total: Option<&crate::store::DayTotal>| {
        let total = total.copied().unwrap_or_default();
        DayFigures {
            label,
            date: total.date.map(|d| d.to_string()).unwrap_or_default(),
            count: total.count,
            paid: won(lang, total.paid),
            cancelled: won(lang, total.cancelled),
            net: won(lang, total.net()),
        }
    };
    let days = vec![
        figures(lang.t("오늘", "Today"), totals.last()),
        figures(
            lang.t("어제", "Yesterday"),
            totals.len().checked_sub(2).and_then(|i| totals.get(i)),
        ),
    ];
    let max = totals.iter().map(|day| day.paid).max().unwrap_or(0).max(1);
    let slot = CHART_WIDTH / i64::try_from(CHART_DAYS).unwrap_or(30);
    let height = |amount: i64| amount.saturating_mul(CHART_HEIGHT - 10) / max;
    let bars = totals
        .iter()
        .enumerate()
        .map(|(index, day)| {
            let x = i64::try_from(index).unwrap_or(0) * slot + 2;
            let (paid_h, cancelled_h) = (height(day.paid), height(day.cancelled));
            Bar {
                x,
                paid_y: CHART_HEIGHT - paid_h,
                paid_h,
                cancelled_x: x + slot / 2 - 1,
                cancelled_y: CHART_HEIGHT - cancelled_h,
                cancelled_h,
                title: format!(
                    "{}: {} {} / {} {}",
                    day.date.map(|d| d.to_string()).unwrap_or_default(),
                    lang.t("결제", "paid"),
                    won(lang, day.paid),
                    lang.t("취소", "cancelled"),
                    won(lang, day.cancelled)
                ),
            }
        })
        .collect();
    let queue = store
        .queue_depth()
        .await
        .map_err(fail)?
        .into_iter()
        .map(|(kind, depth)| (kind.as_str(), depth))
        .collect();
    let (letters, _) = store
        .dead_letters(DEAD_LETTERS_COUNTED_MAX, None, true)
        .await
        .map_err(fail)?;
    let count = |n: usize| {
        if n >= DEAD_LETTERS_COUNTED_MAX {
            format!("{n}+")
        } else {
            n.to_string()
        }
    };
    let unknown = letters
        .iter()
        .filter(|letter| letter.job == crate::store::UNKNOWN_OUTCOME_JOB)
        .count();
    let mut syncs: Vec<SyncLine> = Vec::new();
    for run in store.sync_runs(50).await.map_err(fail)? {
        if syncs.iter().any(|line| line.provider == run.provider) {
            continue;
        }
        syncs.push(SyncLine {
            provider: run.provider.clone(),
            date: run.date.to_string(),
            finished: chrono::DateTime::from_timestamp_millis(run.finished_at_ms)
                .map(seoul)
                .unwrap_or_default(),
            complete: run.complete,
            discrepancy: run.counts.discrepancy,
            missing: run.counts.missing,
        });
    }
    let recent = store.alerts(50).await.map_err(fail)?;
    let unsent_alerts = recent
        .iter()
        .filter(|alert| alert.sent_at.is_none())
        .count();
    let alerts = recent
        .iter()
        .take(5)
        .map(|alert| AlertLine {
            level: alert.level.as_str(),
            message: alert.message.clone(),
            created: seoul(alert.created_at),
            sent: alert.sent_at.is_some(),
        })
        .collect();
    Ok(OverviewPage {
        l: lang,
        csrf: signed.csrf,
        nav: "overview",
        days,
        queue,
        dead_letters: count(letters.len() - unknown),
        unknown: count(unknown),
        syncs,
        alerts,
        unsent_alerts,
        bars,
        chart_width: CHART_WIDTH,
        chart_height: CHART_HEIGHT,
        chart_max: won(lang, max),
        cut_short,
    }
    .into_response())
}

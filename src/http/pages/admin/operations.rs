//! What the merchant runs by hand: dead letters and unknown refunds (re-drive, resolve), the
//! settlement sync (runs, findings, run now), partner settlements, and the alert outbox.

use super::{Signed, notice, refused, seoul, won};
use crate::domain::Provider;
use crate::domain::settlement::PartnerSettlementStatus;
use crate::http::error::PageError;
use crate::http::i18n::Lang;
use crate::http::state::AppState;
use crate::store::{RedriveOutcome, Resolution};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use serde::Deserialize;

/// Dead letters one page shows.
pub const DEAD_LETTER_ROWS: usize = 100;
/// Sync runs the settlement page lists.
pub const SYNC_RUN_ROWS: usize = 50;
/// Alerts the alert page lists.
pub const ALERT_ROWS: usize = 200;

fn bad(lang: Lang) -> PageError {
    PageError::new(StatusCode::BAD_REQUEST, lang, lang.texts().bad_request)
}

fn store_error(lang: Lang) -> impl Fn(crate::store::StoreError) -> PageError {
    move |error| PageError::from_flow(lang, &error.into())
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    date: Option<String>,
}

fn page_query(query: Result<Query<PageQuery>, QueryRejection>) -> PageQuery {
    query.map(|Query(query)| query).unwrap_or_default()
}

struct LetterLine {
    id: String,
    payment_id: String,
    unknown: bool,
    payple: bool,
    job: String,
    attempts: u32,
    last_error: String,
    last_pg_answer: String,
    created: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/dead_letters.html")]
struct DeadLettersPage {
    l: Lang,
    csrf: String,
    nav: &'static str,
    notice: Option<&'static str>,
    letters: Vec<LetterLine>,
}

pub async fn dead_letters(
    State(state): State<AppState>,
    signed: Signed,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let (letters, _) = state
        .kassa
        .store
        .dead_letters(DEAD_LETTER_ROWS, None, true)
        .await
        .map_err(store_error(lang))?;
    let mut lines = Vec::with_capacity(letters.len());
    for letter in letters {
        let provider = state
            .kassa
            .store
            .payment(letter.payment_id)
            .await
            .map_err(store_error(lang))?
            .map(|view| view.payment.provider);
        lines.push(LetterLine {
            id: uuid::Uuid::from_u128(letter.id).to_string(),
            payment_id: letter.payment_id.to_string(),
            unknown: letter.job == crate::store::UNKNOWN_OUTCOME_JOB,
            payple: provider == Some(Provider::Payple),
            job: letter.job,
            attempts: letter.attempts,
            last_error: letter.last_error,
            last_pg_answer: letter.last_pg_answer,
            created: seoul(letter.created_at),
        });
    }
    Ok(DeadLettersPage {
        l: lang,
        csrf: signed.csrf,
        nav: "dead-letters",
        notice: notice(lang, page_query(query).done.as_deref()),
        letters: lines,
    }
    .into_response())
}

fn letter_id(lang: Lang, raw: &str) -> Result<u128, PageError> {
    uuid::Uuid::try_parse(raw)
        .map(|uuid| uuid.as_u128())
        .map_err(|_| PageError::not_found(lang))
}

fn outcome_refused(lang: Lang, outcome: &RedriveOutcome) -> Option<PageError> {
    let message = match outcome {
        RedriveOutcome::Redriven(_) | RedriveOutcome::Resolved(_) => return None,
        RedriveOutcome::NotFound => return Some(PageError::not_found(lang)),
        RedriveOutcome::AlreadyDone(_) => {
            lang.t("이미 환불된 취소입니다.", "This cancel was already carried out.")
        }
        RedriveOutcome::RefundAlreadyRecorded(_) => lang.t(
            "그 PG 환불은 이미 다른 취소로 기록되어 있습니다. 바뀐 것은 없습니다.",
            "That PG refund is already recorded for another cancel. Nothing was changed.",
        ),
        RedriveOutcome::ConsoleCheckRequired(_) => lang.t(
            "환불이 이미 되었을 수 있고 PG에 물어볼 수 없습니다. PG 관리자 화면에서 환불이 없는 것을 확인한 뒤 확인란에 표시하세요. 환불이 있다면 '환불했음'으로 처리하세요.",
            "The refund may have gone through and the PG cannot be asked. Look in the PG's console first; if it shows no refund, tick the box. If it does, resolve it as refunded.",
        ),
    };
    Some(PageError::new(StatusCode::CONFLICT, lang, message))
}

#[derive(Debug, Deserialize)]
pub struct RedriveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    console_checked: Option<String>,
    #[serde(default)]
    note: String,
}

pub async fn redrive(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    form: Result<Form<RedriveForm>, FormRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let form = signed.form(&state, form, |form| &form.csrf)?;
    let id = letter_id(lang, &id)?;
    let note = match form.note.trim() {
        "" => None,
        note => Some(crate::domain::parse_text("note", note, 500).map_err(|_| bad(lang))?),
    };
    let request = crate::store::Redrive {
        console_checked: form.console_checked.is_some(),
        note,
    };
    let outcome = crate::flows::cancel::redrive(&state.kassa, id, request)
        .await
        .map_err(|error| refused(lang, &error))?;
    if let Some(error) = outcome_refused(lang, &outcome) {
        return Err(error);
    }
    Ok(Redirect::to("/admin/dead-letters?done=redriven").into_response())
}

#[derive(Debug, Deserialize)]
pub struct ResolveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    pg_ref: String,
    #[serde(default)]
    note: String,
}

pub async fn resolve(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    form: Result<Form<ResolveForm>, FormRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let form = signed.form(&state, form, |form| &form.csrf)?;
    let id = letter_id(lang, &id)?;
    let note = crate::domain::parse_text("note", form.note.trim(), 500).map_err(|_| {
        PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang,
            lang.t(
                "무엇을 했는지 메모를 남겨 주세요.",
                "Write a note of what you did.",
            ),
        )
    })?;
    let resolution = match form.outcome.as_str() {
        "refunded" => Resolution::Refunded {
            at: None,
            pg_ref: match form.pg_ref.trim() {
                "" => None,
                pg_ref => {
                    Some(crate::domain::parse_text("pg_ref", pg_ref, 100).map_err(|_| bad(lang))?)
                }
            },
        },
        "not_refunded" => Resolution::NotRefunded,
        _ => return Err(bad(lang)),
    };
    let outcome = crate::flows::cancel::resolve(&state.kassa, id, resolution, note)
        .await
        .map_err(|error| refused(lang, &error))?;
    if let RedriveOutcome::Redriven(_) | RedriveOutcome::ConsoleCheckRequired(_) = outcome {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            lang,
            lang.t(
                "다시 보낸 취소가 진행 중입니다. 또 실패하면 그때 처리하세요.",
                "The cancel was re-driven and is running; resolve it if it fails again.",
            ),
        ));
    }
    if let Some(error) = outcome_refused(lang, &outcome) {
        return Err(error);
    }
    tracing::info!(outcome = %form.outcome, "dead letter resolved on the admin page");
    Ok(Redirect::to("/admin/dead-letters?done=resolved").into_response())
}

struct RunLine {
    provider: String,
    date: String,
    pages: u32,
    complete: bool,
    resumed: bool,
    updated: u64,
    skipped: u64,
    missing: u64,
    cancel_skipped: u64,
    discrepancy: u64,
    failed: u64,
    finished: String,
}

struct FindingLine {
    provider: String,
    order_id: String,
    payment_link: Option<String>,
    kind: String,
    expected: String,
    actual: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/settlement_sync.html")]
struct SyncPage {
    l: Lang,
    csrf: String,
    nav: &'static str,
    notice: Option<&'static str>,
    runs: Vec<RunLine>,
    date: String,
    findings: Vec<FindingLine>,
    providers: Vec<&'static str>,
    yesterday: String,
}

fn day_of(lang: Lang, raw: Option<&str>, default: NaiveDate) -> Result<NaiveDate, PageError> {
    match raw.map(str::trim).filter(|raw| !raw.is_empty()) {
        None => Ok(default),
        Some(raw) => NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| bad(lang)),
    }
}

pub async fn settlement_sync(
    State(state): State<AppState>,
    signed: Signed,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let query = page_query(query);
    let yesterday = crate::flows::settlement::yesterday(&state.kassa);
    let date = day_of(lang, query.date.as_deref(), yesterday)?;
    let store = &state.kassa.store;
    let runs = store
        .sync_runs(SYNC_RUN_ROWS)
        .await
        .map_err(store_error(lang))?
        .into_iter()
        .map(|run| RunLine {
            provider: run.provider,
            date: run.date.to_string(),
            pages: run.pages,
            complete: run.complete,
            resumed: run.resumed,
            updated: run.counts.updated,
            skipped: run.counts.skipped,
            missing: run.counts.missing,
            cancel_skipped: run.counts.cancel_skipped,
            discrepancy: run.counts.discrepancy,
            failed: run.failed,
            finished: chrono::DateTime::from_timestamp_millis(run.finished_at_ms)
                .map(seoul)
                .unwrap_or_default(),
        })
        .collect();
    let mut findings = Vec::new();
    for finding in store
        .settlement_findings(date)
        .await
        .map_err(store_error(lang))?
    {
        let payment_link = match crate::domain::OrderId::parse(&finding.order_id) {
            Ok(order_id) => store
                .payments_of_order(&order_id)
                .await
                .map_err(store_error(lang))?
                .first()
                .map(|view| format!("/admin/payments/{}", view.payment.id)),
            Err(_) => None,
        };
        findings.push(FindingLine {
            provider: finding.provider,
            order_id: finding.order_id,
            payment_link,
            kind: finding.kind,
            expected: finding
                .expected
                .map(|won_| won(lang, won_))
                .unwrap_or_default(),
            actual: won(lang, finding.actual),
        });
    }
    Ok(SyncPage {
        l: lang,
        csrf: signed.csrf,
        nav: "sync",
        notice: notice(lang, query.done.as_deref()),
        runs,
        date: date.to_string(),
        findings,
        providers: crate::flows::settlement::SETTLING_PROVIDERS
            .iter()
            .filter(|provider| state.kassa.gateways.get(**provider).is_some())
            .map(|provider| provider.as_str())
            .collect(),
        yesterday: yesterday.to_string(),
    }
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct SyncForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// "Run now": one day is run while the page waits; a range goes on in the background, one
/// report per day, and the page shows each as it finishes.
pub async fn settlement_sync_run(
    State(state): State<AppState>,
    signed: Signed,
    form: Result<Form<SyncForm>, FormRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let form = signed.form(&state, form, |form| &form.csrf)?;
    let provider = Provider::parse(&form.provider).map_err(|_| bad(lang))?;
    let yesterday = crate::flows::settlement::yesterday(&state.kassa);
    let from = day_of(lang, Some(&form.from), yesterday)?;
    let to = day_of(lang, Some(&form.to), from)?;
    crate::flows::settlement::range_days(&state.kassa, from, to)
        .map_err(|error| refused(lang, &error))?;
    let kassa = state.kassa.clone();
    if from == to {
        let run =
            tokio::spawn(
                async move { crate::flows::settlement::sync(&kassa, provider, from).await },
            );
        run.await
            .map_err(|_| {
                PageError::from_flow(lang, &crate::flows::FlowError::NotFound { what: "sync" })
            })?
            .map_err(|error| refused(lang, &error))?;
        return Ok(
            Redirect::to(&format!("/admin/settlement-sync?done=sync&date={from}")).into_response(),
        );
    }
    state.kassa.tasks.spawn(async move {
        if let Err(error) = crate::flows::settlement::sync_range(&kassa, provider, from, to).await {
            tracing::warn!(provider = provider.as_str(), from = %from, to = %to, error = %error, "a range sync from the admin page stopped");
        }
    });
    Ok(Redirect::to("/admin/settlement-sync?done=sync-started").into_response())
}

struct PartnerLine {
    id: String,
    partner_id: String,
    gross: String,
    cancelled: String,
    fee: String,
    net: String,
    payment_count: u64,
    status: &'static str,
    next: Option<&'static str>,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/partners.html")]
struct PartnersPage {
    l: Lang,
    csrf: String,
    nav: &'static str,
    notice: Option<&'static str>,
    date: String,
    rows: Vec<PartnerLine>,
}

pub async fn partner_settlements(
    State(state): State<AppState>,
    signed: Signed,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let query = page_query(query);
    let date = day_of(
        lang,
        query.date.as_deref(),
        crate::flows::settlement::yesterday(&state.kassa),
    )?;
    let rows = state
        .kassa
        .store
        .partner_settlements(date)
        .await
        .map_err(store_error(lang))?
        .iter()
        .map(|row| PartnerLine {
            id: row.id(),
            partner_id: row.partner_id.clone(),
            gross: won(lang, row.figures.gross),
            cancelled: won(lang, row.figures.cancelled),
            fee: won(lang, row.figures.fee),
            net: won(lang, row.figures.net),
            payment_count: row.figures.payment_count,
            status: row.status.as_str(),
            next: match row.status {
                PartnerSettlementStatus::Requested => Some("PROCESSING"),
                PartnerSettlementStatus::Processing => Some("COMPLETED"),
                PartnerSettlementStatus::Completed => None,
            },
        })
        .collect();
    Ok(PartnersPage {
        l: lang,
        csrf: signed.csrf,
        nav: "partners",
        notice: notice(lang, query.done.as_deref()),
        date: date.to_string(),
        rows,
    }
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct DateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    date: String,
}

pub async fn partner_settlements_run(
    State(state): State<AppState>,
    signed: Signed,
    form: Result<Form<DateForm>, FormRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let form = signed.form(&state, form, |form| &form.csrf)?;
    let date = day_of(
        lang,
        Some(&form.date),
        crate::flows::settlement::yesterday(&state.kassa),
    )?;
    crate::flows::partners::run(&state.kassa, date)
        .await
        .map_err(|error| refused(lang, &error))?;
    Ok(Redirect::to(&format!(
        "/admin/partner-settlements?date={date}&done=partners"
    ))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct StatusForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    status: String,
}

pub async fn partner_settlements_move(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    form: Result<Form<StatusForm>, FormRejection>,
) -> Result<Response, PageError> {
    let lang = signed.lang;
    let form = signed.form(&state, form, |form| &form.csrf)?;
    let row = crate::flows::partners::move_forward(&state.kassa, &id, &form.status)
        .await
        .map_err(|error| refused(lang, &error))?;
    Ok(Redirect::to(&format!(
        "/admin/partner-settlements?date={}&done=moved",
        row.date
    ))
    .into_response())
}

struct AlertRow {
    level: &'static str,
    kind: String,
    message: String,
    payment_id: Option<String>,
    created: String,
    sent: String,
    attempts: u32,
    last_error: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/alerts.html")]
struct AlertsPage {
    l: Lang,
    csrf: String,
    nav: &'static str,
    alerts: Vec<AlertRow>,
}

pub async fn alerts(State(state): State<AppState>, signed: Signed) -> Result<Response, PageError> {
    let lang = signed.lang;
    let alerts = state
        .kassa
        .store
        .alerts(ALERT_ROWS)
        .await
        .map_err(store_error(lang))?
        .into_iter()
        .map(|alert| AlertRow {
            level: alert.level.as_str(),
            kind: alert.kind,
            message: alert.message,
            payment_id: alert.payment_id.map(|id| id.to_string()),
            created: seoul(alert.created_at),
            sent: alert.sent_at.map(seoul).unwrap_or_default(),
            attempts: alert.attempts,
            last_error: alert.last_error.unwrap_or_default(),
        })
        .collect();
    Ok(AlertsPage {
        l: lang,
        csrf: signed.csrf,
        nav: "alerts",
        alerts,
    }
    .into_response())
}

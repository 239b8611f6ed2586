//! The merchant's pages under `/admin`: sign-in with the admin token, then the overview,
//! payments, dead letters, settlement sync, partner settlements and alerts.
//!
//! Invariants: every page but the sign-in form needs a session; every form carries the
//! session's CSRF token and is refused without it; sessions live in memory (a restart signs
//! everyone out) and are bounded; sign-in attempts are bounded per client.

mod operations;
mod overview;
mod payments;

pub use operations::{
    alerts, dead_letters, partner_settlements, partner_settlements_move, partner_settlements_run,
    redrive, resolve, settlement_sync, settlement_sync_run,
};
pub use overview::overview;
pub use payments::{cancel, payment, payments};

use crate::http::client::{Client, ClientLimiter};
use crate::http::cookie;
use crate::http::error::PageError;
use crate::http::i18n::Lang;
use crate::http::state::AppState;
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

pub const ADMIN_COOKIE: &str = "kassa_admin";
/// How long a sign-in lasts.
pub const ADMIN_SESSION_TTL: chrono::Duration = chrono::Duration::hours(12);
/// Most sessions held at once; signing in past it ends the oldest.
pub const ADMIN_SESSIONS_MAX: usize = 64;
/// Sign-in attempts one client may make per minute (all of them count, right or wrong).
pub const ADMIN_SIGNIN_ATTEMPTS_PER_MINUTE: u32 = 10;
/// Longest admin token a sign-in form may send.
const TOKEN_CHARS_MAX: usize = 512;

/// The signed-in sessions, in memory.
#[derive(Debug)]
pub struct AdminSessions {
    sessions: Mutex<HashMap<String, DateTime<Utc>>>,
    attempts: ClientLimiter,
}

impl Default for AdminSessions {
    fn default() -> AdminSessions {
        let per_minute = std::num::NonZeroU32::new(ADMIN_SIGNIN_ATTEMPTS_PER_MINUTE)
            .unwrap_or(std::num::NonZeroU32::MIN);
        AdminSessions {
            sessions: Mutex::new(HashMap::new()),
            attempts: crate::http::client::limiter(crate::config::RateLimit {
                per_minute,
                burst: per_minute,
            }),
        }
    }
}

impl AdminSessions {
    fn open(&self, id: String, now: DateTime<Utc>) {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.retain(|_, expires| *expires > now);
        while sessions.len() >= ADMIN_SESSIONS_MAX {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => sessions.remove(&oldest),
                None => break,
            };
        }
        sessions.insert(id, now + ADMIN_SESSION_TTL);
    }

    fn valid(&self, id: &str, now: DateTime<Utc>) -> bool {
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.get(id).is_some_and(|expires| *expires > now)
    }

    fn close(&self, id: &str) {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.remove(id);
    }
}

fn csrf_mac(key: &[u8; 32], session: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"admin-csrf:");
    mac.update(session.as_bytes());
    mac
}

/// A signed-in merchant: the session, its CSRF token, and the page language.
#[derive(Debug, Clone)]
pub struct Signed {
    session: String,
    pub csrf: String,
    pub lang: Lang,
}

impl Signed {
    /// A posted form of this session: a 400 page when it cannot be read, a 403 page unless
    /// `csrf` finds the session's token in it.
    fn form<T>(
        &self,
        state: &AppState,
        form: Result<Form<T>, FormRejection>,
        csrf: impl Fn(&T) -> &str,
    ) -> Result<T, PageError> {
        let Ok(Form(form)) = form else {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                self.lang,
                self.lang.texts().bad_request,
            ));
        };
        self.check(state, csrf(&form))?;
        Ok(form)
    }

    /// Whether a form's token is this session's (checked in constant time).
    fn check(&self, state: &AppState, token: &str) -> Result<(), PageError> {
        let valid = crate::hex::decode_32(token).is_some_and(|tag| {
            csrf_mac(state.cookie_key(), &self.session)
                .verify_slice(&tag)
                .is_ok()
        });
        if valid {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                self.lang,
                self.lang.t(
                    "이 양식은 만료되었습니다. 페이지를 새로 고친 뒤 다시 시도하세요.",
                    "This form has expired. Reload the page and try again.",
                ),
            ))
        }
    }
}

fn session_of(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let now = state.kassa.env.now();
    cookie::values(headers, ADMIN_COOKIE)
        .filter(|value| value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .find(|value| state.admin_sessions.valid(value, now))
        .map(str::to_owned)
}

/// Not signed in: a page is answered with the sign-in form's address.
#[derive(Debug)]
pub struct SignInFirst;

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to("/admin").into_response()
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = SignInFirst;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = session_of(state, &parts.headers).ok_or(SignInFirst)?;
        let csrf = crate::hex::encode(
            &csrf_mac(state.cookie_key(), &session)
                .finalize()
                .into_bytes(),
        );
        Ok(Signed {
            session,
            csrf,
            lang: Lang::from_headers(&parts.headers),
        })
    }
}

fn session_cookie(value: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{ADMIN_COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/signin.html")]
struct SignInPage {
    l: Lang,
    problem: Option<&'static str>,
}

/// `GET /admin`: the overview when signed in, else the sign-in form.
pub async fn home(
    state: State<AppState>,
    signed: Result<Signed, SignInFirst>,
    headers: HeaderMap,
) -> Response {
    match signed {
        Ok(signed) => overview(state, signed).await.into_response(),
        Err(SignInFirst) => SignInPage {
            l: Lang::from_headers(&headers),
            problem: None,
        }
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
}

/// `POST /admin/login` with the admin token: a session cookie and the overview.
pub async fn login(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let lang = Lang::from_headers(&headers);
    if state
        .admin_sessions
        .attempts
        .check_key(&client.bucket())
        .is_err()
    {
        tracing::warn!(client = ?client.ip, "admin sign-in attempts over the bound; refused");
        let page = SignInPage {
            l: lang,
            problem: Some(lang.t(
                "로그인 시도가 너무 많습니다. 1분 뒤에 다시 시도하세요.",
                "Too many sign-in attempts. Try again in a minute.",
            )),
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return response;
    }
    let presented = form.map(|Form(form)| form.token).unwrap_or_default();
    let presented = presented.trim();
    let expected = state.admin_token.expose().as_bytes();
    let right = presented.len() <= TOKEN_CHARS_MAX
        && !expected.is_empty()
        && bool::from(presented.as_bytes().ct_eq(expected));
    if !right {
        tracing::warn!(client = ?client.ip, "admin sign-in with a wrong token");
        let page = SignInPage {
            l: lang,
            problem: Some(lang.t(
                "관리자 토큰이 맞지 않습니다.",
                "That is not the admin token.",
            )),
        };
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let session = state.kassa.env.random_hex(16);
    state
        .admin_sessions
        .open(session.clone(), state.kassa.env.now());
    tracing::info!(client = ?client.ip, "admin signed in");
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            &session,
            ADMIN_SESSION_TTL.num_seconds(),
            state.secure_cookies(client),
        ),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /admin/logout`: ends the session here and in the browser.
pub async fn logout(
    State(state): State<AppState>,
    signed: Result<Signed, SignInFirst>,
    client: Client,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Ok(signed) = signed else {
        return Ok(Redirect::to("/admin").into_response());
    };
    let token = form.map(|Form(form)| form.csrf).unwrap_or_default();
    signed.check(&state, &token)?;
    state.admin_sessions.close(&signed.session);
    tracing::info!("admin signed out");
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, state.secure_cookies(client)),
    );
    Ok(response)
}

/// A short note at the top of a page after a form did something, chosen from a fixed list so
/// nothing from the address is echoed back.
fn notice(lang: Lang, code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "cancel" => lang.t("취소를 요청했습니다.", "The cancel was requested."),
        "redriven" => lang.t("다시 보냈습니다.", "It was sent again."),
        "resolved" => lang.t("처리 결과를 기록했습니다.", "The outcome was recorded."),
        "sync" => lang.t("정산 동기화를 마쳤습니다.", "The settlement sync ran."),
        "sync-started" => lang.t(
            "기간 동기화를 시작했습니다. 하루씩 끝날 때마다 아래에 나타납니다.",
            "The range sync started. Each day appears below as it finishes.",
        ),
        "partners" => lang.t(
            "파트너 정산을 계산했습니다.",
            "Partner settlements were computed.",
        ),
        "moved" => lang.t("상태를 바꿨습니다.", "The status was moved forward."),
        _ => return None,
    })
}

/// A flow's refusal on a page: what went wrong, in words, with the status it deserves.
fn refused(lang: Lang, error: &crate::flows::FlowError) -> PageError {
    use crate::flows::FlowError;
    match error {
        FlowError::Conflict { message, .. } | FlowError::Unprocessable { message, .. } => {
            PageError::new(StatusCode::CONFLICT, lang, message.clone())
        }
        FlowError::Invalid(error) => {
            PageError::new(StatusCode::UNPROCESSABLE_ENTITY, lang, error.to_string())
        }
        _ => PageError::from_flow(lang, error),
    }
}

fn won(lang: Lang, amount: i64) -> String {
    crate::http::i18n::format_won(lang, amount)
}

fn seoul(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono_tz::Asia::Seoul)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

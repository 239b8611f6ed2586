//! The sandbox PG: a fake PG on loopback that speaks the PGs' real wire formats, so kassa can be
//! tried and tested with no PG account. `serve` mounts it at `/sandbox-pg` in sandbox mode and
//! `kassa sandbox-pg` runs it alone.
//!
//! Invariant: kassa's core never calls into this module; it reaches the sandbox only over HTTP,
//! exactly as it reaches a real PG. The sandbox keeps its state in memory, bounded by
//! `PAYMENTS_MAX`, and its clock is the injected one, so tests can move its token expiry. Where
//! a real PG's published behaviour is known (PG-CONTRACTS §6), the sandbox does the same, so
//! kassa's tests hold kassa to the real PGs and not to a friendlier fake.

mod payple;
mod portone;
mod settlements;
#[cfg(test)]
mod tests;
mod toss;

use crate::clock::{Clock, Entropy};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use payple::{SANDBOX_CST_ID, SANDBOX_CUST_KEY, SANDBOX_REFUND_KEY};
pub use portone::{SANDBOX_IMP_KEY, SANDBOX_IMP_SECRET};
pub use toss::{SANDBOX_TOSS_CLIENT_KEY, SANDBOX_TOSS_SECRET_KEY};

/// Most payments the sandbox keeps; past it, new ones are refused.
pub const PAYMENTS_MAX: usize = 100_000;
/// Most faults queued per endpoint.
pub const FAULTS_PER_ENDPOINT_MAX: usize = 1_000;
/// Longest a `timeout` or `lost_response` fault holds a request.
pub const HOLD_MS_MAX: u64 = 120_000;
/// How long a fault holds a request when the test does not say.
pub const HOLD_MS_DEFAULT: u64 = 30_000;
/// The HTTP statuses an `error` fault may answer: the PGs' refusals and failures, never a success.
pub const REFUSAL_STATUS_MIN: u16 = 400;
pub const REFUSAL_STATUS_MAX: u16 = 599;
/// Longest error code an `error` fault may carry; real PG codes are far shorter.
pub const REFUSAL_CODE_LEN_MAX: usize = 64;
/// The code of an `error` fault that names none.
const REFUSAL_CODE_DEFAULT: &str = "INVALID_REQUEST";

/// A failure to inject into the next calls of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Answer 500 without doing anything.
    Status500,
    /// Answer 401 without doing anything.
    Status401,
    /// Hold the request without doing anything until the client gives up.
    Timeout,
    /// A slow PG: hold the request, then do the work and answer as usual.
    Delay,
    /// Do the work, then hold the answer until the client gives up.
    LostResponse,
    /// Answer the PG's own refusal for a chosen code and status, without doing anything.
    Error,
    /// Payple refund only: refund, but report the cash receipt's cancellation as failed.
    TaxsaveFail,
}

/// The refusal an `error` fault answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    /// The status the test asked for; `None` leaves it to the PG's habit: 400 for Toss, 200 for
    /// PortOne and Payple, which refuse inside a 200 body.
    status: Option<StatusCode>,
    code: String,
}

impl Refusal {
    fn status_or(&self, usual: StatusCode) -> StatusCode {
        self.status.unwrap_or(usual)
    }
}

#[derive(Debug, Clone)]
struct Fault {
    mode: FaultMode,
    hold: Duration,
    /// What an `error` fault answers; unused by the other modes.
    refusal: Refusal,
}

/// What a fault means for the call at hand.
#[derive(Debug, Clone)]
enum Injected {
    Nothing,
    /// Answer this status without doing anything.
    Fail(StatusCode),
    /// Do the work, then hold the answer this long.
    LoseAnswer(Duration),
    /// Answer the PG's own refusal without doing anything.
    Refuse(Refusal),
    /// Payple refund: do the work, but report the cash receipt's cancellation as failed.
    TaxsaveFail,
}

/// The sandbox's shared state.
#[derive(Debug)]
pub struct Sandbox {
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    shutdown: CancellationToken,
    /// Where the sandbox is mounted (`/sandbox-pg`, or empty when it runs alone), for the URLs
    /// it hands out.
    prefix: String,
    state: Mutex<SandboxState>,
}

#[derive(Debug, Default)]
struct SandboxState {
    portone: portone::PortOneState,
    toss: toss::TossState,
    payple: payple::PaypleState,
    settlements: settlements::Lines,
    faults: HashMap<String, VecDeque<Fault>>,
    calls: std::collections::BTreeMap<String, u64>,
    /// When each endpoint was last called, and the smallest gap seen between two calls.
    last_call: HashMap<String, std::time::Instant>,
    min_gap_ms: std::collections::BTreeMap<String, u128>,
}

impl Sandbox {
    /// A sandbox mounted at `prefix` (`/sandbox-pg`, or empty when it runs alone).
    pub fn new(
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        shutdown: CancellationToken,
        prefix: &str,
    ) -> Arc<Sandbox> {
        Arc::new(Sandbox {
            clock,
            entropy,
            shutdown,
            prefix: prefix.trim_end_matches('/').to_owned(),
            state: Mutex::new(SandboxState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SandboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call of `endpoint` and takes the next fault queued for it.
    fn take_fault(&self, endpoint: &str) -> Option<Fault> {
        let mut state = self.lock();
        *state.calls.entry(endpoint.to_owned()).or_default() += 1;
        // Real time on purpose: this measures how kassa paces its calls, not the injected clock.
        let now = std::time::Instant::now();
        if let Some(last) = state.last_call.insert(endpoint.to_owned(), now) {
            let gap = now.duration_since(last).as_millis();
            let smallest = state.min_gap_ms.entry(endpoint.to_owned()).or_insert(gap);
            *smallest = (*smallest).min(gap);
        }
        state.faults.get_mut(endpoint).and_then(VecDeque::pop_front)
    }

    /// Holds a request as a PG that stopped answering would, until the hold ends or the server
    /// shuts down.
    async fn hold(&self, hold: Duration) {
        tokio::select! {
            () = tokio::time::sleep(hold) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    /// What an injected fault does before an endpoint runs: answer with an error now (after
    /// holding, for `timeout`), let the work happen but lose the answer, or nothing.
    async fn before(&self, endpoint: &str) -> Injected {
        match self.take_fault(endpoint) {
            None => Injected::Nothing,
            Some(fault) => match fault.mode {
                FaultMode::Status500 => Injected::Fail(StatusCode::INTERNAL_SERVER_ERROR),
                FaultMode::Status401 => Injected::Fail(StatusCode::UNAUTHORIZED),
                FaultMode::Timeout => {
                    self.hold(fault.hold).await;
                    Injected::Fail(StatusCode::GATEWAY_TIMEOUT)
                }
                FaultMode::LostResponse => Injected::LoseAnswer(fault.hold),
                FaultMode::Delay => {
                    self.hold(fault.hold).await;
                    Injected::Nothing
                }
                FaultMode::Error => Injected::Refuse(fault.refusal),
                FaultMode::TaxsaveFail => Injected::TaxsaveFail,
            },
        }
    }

    /// After the work: a `lost_response` fault holds the answer until the client gave up.
    async fn after(&self, injected: &Injected, response: Response) -> Response {
        if let Injected::LoseAnswer(hold) = injected {
            self.hold(*hold).await;
        }
        response
    }

    /// The (order id, amount) of every payment `provider` approved on a KST day.
    fn approved_on(&self, provider: &str, date: chrono::NaiveDate) -> Vec<(String, i64)> {
        let state = self.lock();
        match provider {
            "toss" => state.toss.approved_on(date),
            "payple" => state.payple.approved_on(date),
            _ => Vec::new(),
        }
    }

    /// Every refund `provider` executed on a KST day, oldest first.
    fn refunded_on(&self, provider: &str, date: chrono::NaiveDate) -> Vec<settlements::Refund> {
        let state = self.lock();
        let mut refunds = match provider {
            "toss" => state.toss.refunded_on(date),
            "payple" => state.payple.refunded_on(date),
            _ => Vec::new(),
        };
        refunds.sort_by_key(|refund| refund.at);
        refunds
    }

    fn random_digits(&self, count: usize) -> String {
        let mut bytes = vec![0u8; count];
        self.entropy.fill(&mut bytes);
        bytes
            .iter()
            .map(|byte| char::from(b'0' + byte % 10))
            .collect()
    }
}

/// The sandbox's routes, relative to where it is mounted.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/portone/users/getToken", post(portone::get_token))
        .route("/portone/payments/cancel", post(portone::cancel))
        .route("/portone/payments/{imp_uid}", get(portone::get_payment))
        .route("/portone/payments/find/{merchant_uid}", get(portone::find))
        .route(
            "/portone/payments/find/{merchant_uid}/{payment_status}",
            get(portone::find_in_status),
        )
        .route(
            "/portone/payments/findAll/{merchant_uid}",
            get(portone::find_all),
        )
        .route(
            "/portone/payments/findAll/{merchant_uid}/{payment_status}",
            get(portone::find_all_in_status),
        )
        .route(
            "/portone/checkout",
            get(portone::checkout_page).post(portone::checkout_decide),
        )
        .route("/_control/portone/payments", post(portone::control_create))
        .route(
            "/_control/portone/payments/{imp_uid}",
            get(portone::control_get),
        )
        .route(
            "/_control/portone/payments/{imp_uid}/refund",
            post(portone::control_refund),
        )
        .route(
            "/_control/faults",
            post(control_fault).delete(control_clear_faults),
        )
        .route("/_control/stats", get(control_stats))
        .route("/toss/v1/payments/confirm", post(toss::confirm))
        .route(
            "/toss/v1/payments/orders/{order_id}",
            get(toss::get_by_order),
        )
        .route("/toss/v1/payments/{payment_key}", get(toss::get_payment))
        .route("/toss/v1/payments/{payment_key}/cancel", post(toss::cancel))
        .route(
            "/toss/checkout",
            get(toss::checkout_page).post(toss::checkout_decide),
        )
        .route("/_control/toss/payments", post(toss::control_create))
        .route("/_control/settlements", post(settlements::control_load))
        .route("/payple/php/auth.php", post(payple::auth))
        .route("/payple/php/PayChkAct.php", post(payple::check))
        .route("/payple/php/PayCancelAct.php", post(payple::cancel))
        .route("/payple/php/SettlementAct.php", post(payple::settlements))
        .route(
            "/payple/checkout",
            get(payple::checkout_page).post(payple::checkout_decide),
        )
        .route("/_control/payple/payments", post(payple::control_create))
        .route(
            "/_control/payple/payments/{order_id}",
            get(payple::control_get),
        )
        .route(
            "/_control/payple/payments/{order_id}/refund",
            post(payple::control_refund),
        )
        .route("/_control/payple/webhook", post(payple::control_webhook))
        .route("/_control/payple/auth-keys", get(payple::control_auth_keys))
        .route("/toss/v1/settlements", get(settlements::toss_settlements))
        .route(
            "/_control/toss/payments/{payment_key}",
            get(toss::control_get),
        )
        .route(
            "/_control/toss/payments/{payment_key}/refund",
            post(toss::control_refund),
        )
        .with_state(sandbox)
}

async fn index() -> impl IntoResponse {
    axum::response::Html(
        "<!doctype html><meta charset=utf-8><title>kassa sandbox PG</title>\
         <h1>kassa sandbox PG</h1><p>A fake PG for trying kassa: it speaks PortOne V1 under \
         <code>/portone</code> and Toss Payments under <code>/toss</code>, and has a control API under \
         <code>/_control</code>. No real money moves.</p>",
    )
}

#[derive(Deserialize)]
struct FaultRequest {
    endpoint: String,
    mode: FaultMode,
    #[serde(default = "one")]
    count: usize,
    #[serde(default)]
    hold_ms: Option<u64>,
    /// `error` only: the HTTP status to answer.
    #[serde(default)]
    status: Option<u16>,
    /// `error` only: the PG's error code to answer.
    #[serde(default)]
    code: Option<String>,
}

fn one() -> usize {
    1
}

/// The endpoints faults can be put on. `portone.payment` covers every PortOne lookup: by
/// `imp_uid` and by order (`find`, `findAll`), so a test's faults on lookups reach them all;
/// `toss.payment` likewise covers both Toss lookups. The control API takes no faults.
const FAULT_ENDPOINTS: [&str; 11] = [
    "portone.token",
    "portone.payment",
    "portone.cancel",
    "toss.confirm",
    "toss.payment",
    "toss.cancel",
    "toss.settlements",
    "payple.auth",
    "payple.payment",
    "payple.cancel",
    "payple.settlements",
];

async fn control_fault(
    State(sandbox): State<Arc<Sandbox>>,
    Json(request): Json<FaultRequest>,
) -> Response {
    if !FAULT_ENDPOINTS.contains(&request.endpoint.as_str()) {
        return control_error(
            StatusCode::BAD_REQUEST,
            &format!("endpoint must be one of {FAULT_ENDPOINTS:?}"),
        );
    }
    let refusal = match refusal_of(&request) {
        Ok(refusal) => refusal,
        Err(message) => return control_error(StatusCode::BAD_REQUEST, message),
    };
    let hold = Duration::from_millis(request.hold_ms.unwrap_or(HOLD_MS_DEFAULT).min(HOLD_MS_MAX));
    let mut state = sandbox.lock();
    let queue = state.faults.entry(request.endpoint.clone()).or_default();
    let room = FAULTS_PER_ENDPOINT_MAX.saturating_sub(queue.len());
    queue.extend(std::iter::repeat_n(
        Fault {
            mode: request.mode,
            hold,
            refusal,
        },
        request.count.min(room),
    ));
    let queued = queue.len();
    Json(serde_json::json!({ "endpoint": request.endpoint, "queued": queued })).into_response()
}

/// The refusal a fault request describes, checked: `status` and `code` belong to `error` faults
/// only, and `taxsave_fail` to Payple's refund only, so a mistyped test fails loudly.
fn refusal_of(request: &FaultRequest) -> Result<Refusal, &'static str> {
    if request.mode == FaultMode::TaxsaveFail && request.endpoint != "payple.cancel" {
        return Err("mode taxsave_fail is for endpoint payple.cancel only");
    }
    if request.mode != FaultMode::Error && (request.status.is_some() || request.code.is_some()) {
        return Err("status and code go with mode error only");
    }
    let status = match request.status {
        None => None,
        Some(status) if (REFUSAL_STATUS_MIN..=REFUSAL_STATUS_MAX).contains(&status) => {
            Some(StatusCode::from_u16(status).map_err(|_| "status must be a valid HTTP status")?)
        }
        Some(_) => return Err("status must be within 400..=599"),
    };
    let code = request.code.as_deref().unwrap_or(REFUSAL_CODE_DEFAULT);
    if code.is_empty() || code.len() > REFUSAL_CODE_LEN_MAX || !code.is_ascii() {
        return Err("code must be 1 to 64 ASCII characters");
    }
    Ok(Refusal {
        status,
        code: code.to_owned(),
    })
}

/// How many calls each endpoint has had, faults included.
async fn control_stats(State(sandbox): State<Arc<Sandbox>>) -> Json<serde_json::Value> {
    let state = sandbox.lock();
    Json(serde_json::json!({ "calls": state.calls, "min_gap_ms": state.min_gap_ms }))
}

async fn control_clear_faults(State(sandbox): State<Arc<Sandbox>>) -> StatusCode {
    sandbox.lock().faults.clear();
    StatusCode::NO_CONTENT
}

fn control_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "code": "SANDBOX_CONTROL", "message": message } })),
    )
        .into_response()
}

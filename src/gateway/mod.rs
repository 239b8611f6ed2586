//! Outbound adapters to the PGs: the only code that knows their wire formats.
//!
//! Each PG is a `PaymentGateway`: domain types in, domain types out, and every failure
//! classified so callers can decide without knowing the PG. A test double or the simulation
//! implements the same trait.
//!
//! Invariant: a failure whose outcome is unknown (a timeout or 5xx after the request was sent)
//! is reported as `UnknownOutcome`, never as a success or a refusal.

pub mod client;
pub mod inbound;
pub mod payple;
pub mod portone;
pub mod toss;

use crate::domain::{Amount, PgTid, Provider};
use chrono::{DateTime, NaiveDate, Utc};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// How a PG call failed, in the terms that decide what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The PG does not know this payment.
    #[error("the PG does not know this payment")]
    NotFound,
    /// Nothing happened at the PG (not connected, or a read failed): safe to try again.
    #[error("the PG could not be reached: {0}")]
    Transient(String),
    /// The PG may or may not have acted: ask it before trying again.
    #[error("the PG's answer was lost, its outcome is unknown: {0}")]
    UnknownOutcome(String),
    /// The PG refused; trying again will not help.
    #[error("the PG refused ({code}): {message}")]
    Refused { code: String, message: String },
    /// The PG answered a refusal that passes (busy, throttled): nothing was executed and a later
    /// try may succeed. A PG that keeps answers under the idempotency key (Toss) replays it for
    /// that key, so the later try needs a new key.
    #[error("the PG refused for now: {0}")]
    Throttled(String),
    /// The PG's refundable balance is not the one kassa sent (Toss `refundableAmount`): nothing
    /// was executed; the PG's record decides.
    #[error("the PG's refundable balance differs from kassa's: {0}")]
    BalanceMismatch(String),
    /// The PG says the payment is already cancelled: converge on its state.
    #[error("the PG says the payment is already cancelled")]
    AlreadyCancelled,
    /// kassa's keys for this PG were refused.
    #[error("the PG refused kassa's credentials: {0}")]
    Credentials(String),
    /// The PG answered something kassa cannot read.
    #[error("the PG's answer could not be read: {0}")]
    BadResponse(String),
}

impl GatewayError {
    /// True when the same call may simply be made again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GatewayError::Transient(_) | GatewayError::Throttled(_)
        )
    }

    /// True when the PG was unavailable (not reached, timed out, 5xx, throttled): what the
    /// circuit breaker counts.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            GatewayError::Transient(_)
                | GatewayError::UnknownOutcome(_)
                | GatewayError::Throttled(_)
        )
    }
}

/// A payment's state at the PG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgStatus {
    /// Not paid yet (or a virtual account waiting for the deposit).
    Ready,
    Paid,
    Cancelled,
    Failed,
    /// A status this kassa does not know; treated as "not paid".
    Other,
}

/// One refund the PG has carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgCancellation {
    pub pg_cancel_id: String,
    /// True when `pg_cancel_id` names this refund alone (Toss `transactionKey`, PortOne
    /// `cancellation_id`); false when it is shared by the payment's refunds (PortOne's `pg_tid`
    /// in older bodies), so only amount and time tell them apart.
    pub id_is_unique: bool,
    pub amount: Amount,
    pub at: DateTime<Utc>,
}

/// A payment as the PG reports it. `order_id` is the PG's text: it is checked against kassa's
/// orders, not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgPayment {
    pub pg_tid: PgTid,
    pub order_id: String,
    pub status: PgStatus,
    pub amount: Amount,
    pub cancelled_amount: Amount,
    pub currency: String,
    pub paid_at: Option<DateTime<Utc>>,
    pub cancellations: Vec<PgCancellation>,
}

impl PgPayment {
    /// What the PG still holds that can be refunded.
    pub fn balance(&self) -> Amount {
        self.amount
            .checked_sub(self.cancelled_amount)
            .unwrap_or(Amount::ZERO)
    }
}

/// A refund to ask of the PG.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    pub pg_tid: PgTid,
    pub order_id: String,
    pub amount: Amount,
    /// The refundable balance before this cancel, as kassa knows it; PGs that support it
    /// refuse the cancel when theirs differs, so a stale retry cannot refund twice.
    pub balance_before: Amount,
    pub reason: String,
    /// The key of the intent's current generation; every retry of a generation sends it.
    pub idempotency_key: String,
}

/// What the PG says it refunded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReceipt {
    pub pg_cancel_id: String,
    pub amount: Amount,
    pub at: DateTime<Utc>,
    /// Something that went wrong beside the refund (Payple: the cash receipt was not
    /// cancelled), for a person to know.
    pub warning: Option<String>,
}

/// One PG.
pub trait PaymentGateway: Send + Sync + std::fmt::Debug {
    fn provider(&self) -> Provider;

    /// The payment as the PG has it now.
    fn fetch_payment<'a>(&'a self, pg_tid: &'a PgTid) -> GatewayFuture<'a, PgPayment>;

    /// Asks the PG to refund `request.amount`.
    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> GatewayFuture<'a, CancelReceipt>;

    /// True when a repeated cancel cannot refund twice (an idempotency key or a balance check).
    /// When false, every retry asks the PG what happened before it sends anything.
    fn cancels_are_guarded(&self) -> bool {
        true
    }

    /// True when the PG keeps every answer, refusals too, under the idempotency key and replays
    /// it (Toss, for 15 days): after a refusal, only a new key can succeed.
    fn keeps_answers_under_key(&self) -> bool {
        false
    }

    /// Approves an authorised payment with the order's own amount, for PGs that need the
    /// merchant's confirmation (Toss). Others answer `Refused`.
    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> GatewayFuture<'a, PgPayment> {
        let _ = request;
        Box::pin(async {
            Err(GatewayError::Refused {
                code: "NOT_SUPPORTED".into(),
                message: "this PG has no confirm step".into(),
            })
        })
    }

    /// One page of the PG's settlement records for a KST day, from `cursor` (the start when
    /// `None`). PGs without a settlement API answer `Refused`.
    fn settlement_page<'a>(
        &'a self,
        date: NaiveDate,
        cursor: Option<&'a str>,
        page_size: u32,
    ) -> GatewayFuture<'a, SettlementPage> {
        let _ = (date, cursor, page_size);
        Box::pin(async {
            Err(GatewayError::Refused {
                code: "NOT_SUPPORTED".into(),
                message: "this PG has no settlement API".into(),
            })
        })
    }

    /// Every paid payment the PG holds for an order id (PortOne's `findAll`); PGs that cannot
    /// list them answer `Refused`.
    fn find_paid_by_order<'a>(&'a self, order_id: &'a str) -> GatewayFuture<'a, Vec<PgPayment>> {
        let _ = order_id;
        Box::pin(async {
            Err(GatewayError::Refused {
                code: "NOT_SUPPORTED".into(),
                message: "this PG cannot list payments by order".into(),
            })
        })
    }

    /// The payment the PG holds for an order id, for PGs that can look one up that way.
    fn fetch_by_order<'a>(&'a self, order_id: &'a str) -> GatewayFuture<'a, PgPayment> {
        let _ = order_id;
        Box::pin(async {
            Err(GatewayError::Refused {
                code: "NOT_SUPPORTED".into(),
                message: "this PG cannot look up by order".into(),
            })
        })
    }
}

pub use crate::domain::settlement::{SettlementKind, SettlementLine};

/// A page of settlement records and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementPage {
    pub records: Vec<SettlementLine>,
    pub next_cursor: Option<String>,
}

/// Keeps calls to one PG at least `interval` apart, and at most `burst` of them within any
/// `window`, for every caller sharing it (Payple: one a second and 20 in two minutes).
#[derive(Debug)]
pub struct Pacer {
    interval: std::time::Duration,
    burst: usize,
    window: std::time::Duration,
    recent: tokio::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
}

impl Pacer {
    pub fn new(interval: std::time::Duration) -> Pacer {
        Pacer::with_window(interval, usize::MAX, std::time::Duration::ZERO)
    }

    pub fn with_window(
        interval: std::time::Duration,
        burst: usize,
        window: std::time::Duration,
    ) -> Pacer {
        Pacer {
            interval,
            burst: burst.max(1),
            window,
            recent: tokio::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Waits until a call may be made, then counts it as made. Callers queue on the lock, so two
    /// callers never both pass within one interval.
    pub async fn wait_turn(&self) {
        let mut recent = self.recent.lock().await;
        if let Some(last) = recent.back() {
            tokio::time::sleep_until(*last + self.interval).await;
        }
        if recent.len() >= self.burst
            && let Some(oldest) = recent.front()
        {
            tokio::time::sleep_until(*oldest + self.window).await;
        }
        let now = tokio::time::Instant::now();
        while recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= self.window)
            || recent.len() >= self.burst.min(1_024)
        {
            recent.pop_front();
        }
        recent.push_back(now);
    }
}

/// A payment to confirm at the PG: the PG's key, and the order with its own amount.
#[derive(Debug, Clone)]
pub struct ConfirmRequest {
    pub pg_tid: PgTid,
    pub order_id: String,
    pub amount: Amount,
}

/// The PGs kassa is configured for.
#[derive(Debug, Clone, Default)]
pub struct Gateways {
    portone: Option<Arc<dyn PaymentGateway>>,
    toss: Option<Arc<dyn PaymentGateway>>,
    payple: Option<Arc<dyn PaymentGateway>>,
}

impl Gateways {
    #[must_use]
    pub fn with(mut self, gateway: Arc<dyn PaymentGateway>) -> Gateways {
        match gateway.provider() {
            Provider::PortOne => self.portone = Some(gateway),
            Provider::Toss => self.toss = Some(gateway),
            Provider::Payple => self.payple = Some(gateway),
        }
        self
    }

    /// Every configured PG, each passed through `wrap` (to measure its calls, say).
    #[must_use]
    pub fn map(
        self,
        wrap: impl Fn(Arc<dyn PaymentGateway>) -> Arc<dyn PaymentGateway>,
    ) -> Gateways {
        Gateways {
            portone: self.portone.map(&wrap),
            toss: self.toss.map(&wrap),
            payple: self.payple.map(&wrap),
        }
    }

    pub fn get(&self, provider: Provider) -> Option<&Arc<dyn PaymentGateway>> {
        match provider {
            Provider::PortOne => self.portone.as_ref(),
            Provider::Toss => self.toss.as_ref(),
            Provider::Payple => self.payple.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_calls_apart_and_within_the_window() {
        let pacer = Pacer::with_window(Duration::from_secs(1), 3, Duration::from_secs(10));
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..5 {
            pacer.wait_turn().await;
            times.push(start.elapsed().as_secs());
        }
        // One a second, and the fourth waits until the first has left the 10-second window.
        assert_eq!(times, [0, 1, 2, 10, 11]);
    }
}

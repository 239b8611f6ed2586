//! Payments and their status machine.
//!
//! Invariant: a payment's status only changes through `PaymentStatus::can_move_to`, and a
//! payment's `cancelled_amount` never exceeds its `amount`.

use super::{Amount, BuyerId, CancelId, DomainError, OrderId, PartnerId, PaymentId, PgTid};
use chrono::{DateTime, Utc};

/// The PGs kassa speaks to. The sandbox PG imitates each of them, so it is not a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    PortOne,
    Toss,
    Payple,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::PortOne, Provider::Toss, Provider::Payple];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::PortOne => "portone",
            Provider::Toss => "toss",
            Provider::Payple => "payple",
        }
    }

    pub fn parse(raw: &str) -> Result<Provider, DomainError> {
        Provider::ALL
            .into_iter()
            .find(|provider| provider.as_str() == raw)
            .ok_or_else(|| DomainError::UnknownProvider(raw.chars().take(32).collect()))
    }
}

/// Where a payment stands. The names are CONTRACT.md's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    Paid,
    CancelRequested,
    PartiallyCancelled,
    Cancelled,
    /// A refund whose outcome the PG cannot tell yet: never sent again blind.
    CancelUnknown,
    CancelFailed,
    RollbackPending,
    RollbackUnknown,
    RollbackRefunded,
    RollbackFailed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 10] = [
        PaymentStatus::Paid,
        PaymentStatus::CancelRequested,
        PaymentStatus::PartiallyCancelled,
        PaymentStatus::Cancelled,
        PaymentStatus::CancelUnknown,
        PaymentStatus::CancelFailed,
        PaymentStatus::RollbackPending,
        PaymentStatus::RollbackUnknown,
        PaymentStatus::RollbackRefunded,
        PaymentStatus::RollbackFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Paid => "PAID",
            PaymentStatus::CancelRequested => "CANCEL_REQUESTED",
            PaymentStatus::PartiallyCancelled => "PARTIALLY_CANCELLED",
            PaymentStatus::Cancelled => "CANCELLED",
            PaymentStatus::CancelUnknown => "CANCEL_UNKNOWN",
            PaymentStatus::CancelFailed => "CANCEL_FAILED",
            PaymentStatus::RollbackPending => "ROLLBACK_PENDING",
            PaymentStatus::RollbackUnknown => "ROLLBACK_UNKNOWN",
            PaymentStatus::RollbackRefunded => "ROLLBACK_REFUNDED",
            PaymentStatus::RollbackFailed => "ROLLBACK_FAILED",
        }
    }

    pub fn parse(raw: &str) -> Option<PaymentStatus> {
        PaymentStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == raw)
    }

    /// The statuses a payment can be created in: accepted, or taken by the PG but refused here.
    pub fn is_initial(self) -> bool {
        matches!(self, PaymentStatus::Paid | PaymentStatus::RollbackPending)
    }

    /// The legal moves. A cancel is requested from a paid or partly cancelled payment and ends
    /// refunded, failed (a dead letter) or unknown (the PG cannot tell yet); a failed or unknown
    /// one is re-driven or resolved by a human, or closed by evidence (a settlement line). A
    /// rollback ends refunded, failed or unknown, and the same humans and evidence close it.
    pub fn can_move_to(self, next: PaymentStatus) -> bool {
        use PaymentStatus as S;
        matches!(
            (self, next),
            (
                S::Paid | S::PartiallyCancelled | S::CancelFailed | S::CancelUnknown,
                S::CancelRequested
            ) | (
                S::CancelRequested,
                S::PartiallyCancelled | S::Cancelled | S::CancelFailed | S::CancelUnknown
            )
                // A refund made outside kassa (the PG's console), found in the PG's record.
                | (S::Paid, S::PartiallyCancelled | S::Cancelled)
                | (S::PartiallyCancelled, S::Cancelled)
                // A human resolved the failed or unknown cancel, or a settlement line closed it.
                | (
                    S::CancelFailed,
                    S::Paid | S::PartiallyCancelled | S::Cancelled | S::CancelUnknown
                )
                | (
                    S::CancelUnknown,
                    S::Paid | S::PartiallyCancelled | S::Cancelled | S::CancelFailed
                )
                | (
                    S::RollbackFailed,
                    S::RollbackPending | S::RollbackRefunded | S::RollbackUnknown
                )
                | (
                    S::RollbackPending,
                    S::RollbackRefunded | S::RollbackFailed | S::RollbackUnknown
                )
                | (
                    S::RollbackUnknown,
                    S::RollbackPending | S::RollbackRefunded | S::RollbackFailed
                )
        )
    }

    /// True for the statuses of a payment kassa refused and gives back.
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            PaymentStatus::RollbackPending
                | PaymentStatus::RollbackUnknown
                | PaymentStatus::RollbackRefunded
                | PaymentStatus::RollbackFailed
        )
    }

    /// True when no further change is possible without a human.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PaymentStatus::Cancelled | PaymentStatus::RollbackRefunded
        )
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a payment, in the order it happened; shown to the merchant as its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Paid,
    RollbackRequested,
    CancelAttempted,
    CancelFailed,
    Refunded,
    WebhookReceived,
    CancelRequested,
    RetryScheduled,
    DeadLettered,
    Redriven,
    Resolved,
    /// A refund's outcome is unknown and the PG cannot be asked: kassa waits for evidence.
    OutcomeUnknown,
    /// A new PG idempotency key, after the PG's record showed nothing refunded under the old.
    NewKeyGeneration,
}

impl EventKind {
    pub const ALL: [EventKind; 13] = [
        EventKind::Paid,
        EventKind::RollbackRequested,
        EventKind::CancelAttempted,
        EventKind::CancelFailed,
        EventKind::Refunded,
        EventKind::WebhookReceived,
        EventKind::CancelRequested,
        EventKind::RetryScheduled,
        EventKind::DeadLettered,
        EventKind::Redriven,
        EventKind::Resolved,
        EventKind::OutcomeUnknown,
        EventKind::NewKeyGeneration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Paid => "PAID",
            EventKind::RollbackRequested => "ROLLBACK_REQUESTED",
            EventKind::CancelAttempted => "CANCEL_ATTEMPTED",
            EventKind::CancelFailed => "CANCEL_ATTEMPT_FAILED",
            EventKind::Refunded => "REFUNDED",
            EventKind::WebhookReceived => "WEBHOOK_RECEIVED",
            EventKind::CancelRequested => "CANCEL_REQUESTED",
            EventKind::RetryScheduled => "RETRY_SCHEDULED",
            EventKind::DeadLettered => "DEAD_LETTERED",
            EventKind::Redriven => "REDRIVEN",
            EventKind::Resolved => "RESOLVED",
            EventKind::OutcomeUnknown => "REFUND_OUTCOME_UNKNOWN",
            EventKind::NewKeyGeneration => "NEW_KEY_GENERATION",
        }
    }

    pub fn parse(raw: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }
}

/// One line of a payment's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub detail: String,
}

/// A payment the PG has taken for an order. Fields with invariants are private.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub order_id: OrderId,
    pub provider: Provider,
    pub pg_tid: PgTid,
    pub amount: Amount,
    pub partner_id: Option<PartnerId>,
    pub buyer_id: Option<BuyerId>,
    pub paid_at: DateTime<Utc>,
    cancelled_amount: Amount,
    /// Held by cancel intents not yet carried out (open or dead-lettered).
    reserved_amount: Amount,
    status: PaymentStatus,
}

impl Payment {
    /// A payment as the PG reported it, in an initial status.
    pub fn new(
        id: PaymentId,
        order_id: OrderId,
        provider: Provider,
        pg_tid: PgTid,
        amount: Amount,
        paid_at: DateTime<Utc>,
        status: PaymentStatus,
    ) -> Result<Payment, DomainError> {
        if !status.is_initial() {
            return Err(DomainError::IllegalTransition {
                from: "(new)",
                to: status.as_str(),
            });
        }
        Ok(Payment {
            id,
            order_id,
            provider,
            pg_tid,
            amount,
            partner_id: None,
            buyer_id: None,
            paid_at,
            cancelled_amount: Amount::ZERO,
            reserved_amount: Amount::ZERO,
            status,
        })
    }

    /// Rebuilds a stored payment, re-checking what `Payment` promises.
    #[expect(clippy::too_many_arguments, reason = "one argument per stored field")]
    pub fn restore(
        id: PaymentId,
        order_id: OrderId,
        provider: Provider,
        pg_tid: PgTid,
        amount: Amount,
        paid_at: DateTime<Utc>,
        cancelled_amount: Amount,
        reserved_amount: Amount,
        status: PaymentStatus,
    ) -> Result<Payment, DomainError> {
        if cancelled_amount
            .checked_add(reserved_amount)
            .is_none_or(|held| held > amount)
        {
            return Err(DomainError::AmountOutOfRange {
                min: 0,
                max: amount.won(),
                got: cancelled_amount.won(),
            });
        }
        Ok(Payment {
            id,
            order_id,
            provider,
            pg_tid,
            amount,
            partner_id: None,
            buyer_id: None,
            paid_at,
            cancelled_amount,
            reserved_amount,
            status,
        })
    }

    pub fn status(&self) -> PaymentStatus {
        self.status
    }

    pub fn cancelled_amount(&self) -> Amount {
        self.cancelled_amount
    }

    pub fn reserved_amount(&self) -> Amount {
        self.reserved_amount
    }

    /// What the PG still holds for this payment, as far as kassa knows: paid minus refunded.
    pub fn balance(&self) -> Amount {
        self.amount
            .checked_sub(self.cancelled_amount)
            .unwrap_or(Amount::ZERO)
    }

    /// What a new cancel may still ask for: the balance minus what other intents hold.
    pub fn available(&self) -> Amount {
        self.balance()
            .checked_sub(self.reserved_amount)
            .unwrap_or(Amount::ZERO)
    }

    /// Holds `amount` for a new cancel intent, refusing more than is available.
    pub fn reserve(&mut self, amount: Amount) -> Result<(), DomainError> {
        let refused = DomainError::AmountOutOfRange {
            min: 1,
            max: self.available().won(),
            got: amount.won(),
        };
        if amount.is_zero() || amount > self.available() {
            return Err(refused);
        }
        self.reserved_amount = self.reserved_amount.checked_add(amount).ok_or(refused)?;
        Ok(())
    }

    /// Moves to `next`; staying where it is is always allowed and changes nothing.
    pub fn move_to(&mut self, next: PaymentStatus) -> Result<(), DomainError> {
        if next == self.status {
            return Ok(());
        }
        if !self.status.can_move_to(next) {
            return Err(DomainError::IllegalTransition {
                from: self.status.as_str(),
                to: next.as_str(),
            });
        }
        self.status = next;
        Ok(())
    }

    /// Gives back what a closed intent held.
    pub fn release(&mut self, amount: Amount) {
        self.reserved_amount = self
            .reserved_amount
            .checked_sub(amount)
            .unwrap_or(Amount::ZERO);
    }

    /// Records a refund the PG confirmed for an intent that held `refunded`, refusing one that
    /// would exceed the amount paid.
    pub fn record_refund(&mut self, refunded: Amount) -> Result<(), DomainError> {
        let total = self
            .cancelled_amount
            .checked_add(refunded)
            .filter(|total| *total <= self.amount)
            .ok_or(DomainError::AmountOutOfRange {
                min: 0,
                max: self.balance().won(),
                got: refunded.won(),
            })?;
        self.cancelled_amount = total;
        self.reserved_amount = self
            .reserved_amount
            .checked_sub(refunded)
            .unwrap_or(Amount::ZERO);
        Ok(())
    }

    /// The status that follows from the payment's intents: a refund whose outcome is unknown
    /// comes first (money may have moved), then one that needs a human, then one still running;
    /// otherwise the balance tells. A rollback a human closed without a refund stays failed:
    /// the PG kept money kassa refused.
    pub fn settle_status(
        &mut self,
        rollback: bool,
        intents: IntentCounts,
    ) -> Result<(), DomainError> {
        let next = if rollback {
            if intents.unknown > 0 {
                PaymentStatus::RollbackUnknown
            } else if intents.dead > 0 || intents.resolved_unrefunded > 0 {
                PaymentStatus::RollbackFailed
            } else if intents.open > 0 {
                PaymentStatus::RollbackPending
            } else {
                PaymentStatus::RollbackRefunded
            }
        } else if intents.unknown > 0 {
            PaymentStatus::CancelUnknown
        } else if intents.dead > 0 {
            PaymentStatus::CancelFailed
        } else if intents.open > 0 {
            PaymentStatus::CancelRequested
        } else if self.balance().is_zero() {
            PaymentStatus::Cancelled
        } else if self.cancelled_amount.is_zero() {
            PaymentStatus::Paid
        } else {
            PaymentStatus::PartiallyCancelled
        };
        self.move_to(next)
    }
}

/// How many of a payment's intents are in each state that decides its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntentCounts {
    pub open: usize,
    pub dead: usize,
    pub unknown: usize,
    /// Closed by a human who said nothing was refunded.
    pub resolved_unrefunded: usize,
}

/// Why money goes back: a merchant's cancel, or a rollback of a payment kassa cannot accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelKind {
    Cancel,
    RollbackAmountMismatch,
    RollbackAlreadyPaid,
}

impl CancelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelKind::Cancel => "CANCEL",
            CancelKind::RollbackAmountMismatch => "ROLLBACK_AMOUNT_MISMATCH",
            CancelKind::RollbackAlreadyPaid => "ROLLBACK_ALREADY_PAID",
        }
    }

    pub fn is_rollback(self) -> bool {
        !matches!(self, CancelKind::Cancel)
    }
}

/// The decision to give money back, stored before the PG is called. Its `pg_key` is the PG
/// idempotency key of this intent and every retry of it reuses the same key.
#[expect(
    clippy::struct_excessive_bools,
    reason = "each flag is a separate fact an attempt decides on; they are not a state machine"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelIntent {
    pub id: CancelId,
    pub payment_id: PaymentId,
    pub kind: CancelKind,
    pub amount: Amount,
    /// The refundable balance at the PG before this cancel (PortOne's `checksum`): a stale
    /// retry whose balance no longer matches is refused by the PG instead of applied twice.
    pub balance_before: Amount,
    pub reason: String,
    pub pg_key: String,
    pub created_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    /// Attempts of every kind (inline and from the queue).
    pub attempts: u32,
    /// Attempts from the retry queue since the intent was last (re)started.
    pub queue_attempts: u32,
    pub state: IntentState,
    /// The last attempt's outcome is unknown: the next one asks the PG before sending again.
    pub outcome_unknown: bool,
    pub pg_cancel_id: Option<String>,
    /// Which key the intent sends now (`pg_key_now`). A new generation is made only after the
    /// PG's record showed that nothing was refunded under the old key.
    pub key_generation: u32,
    /// The attempt that started and has no recorded outcome yet. Written in the claim's own
    /// transaction, before the PG hears of the attempt; an attempt that finds one here starts
    /// as an unknown outcome.
    pub in_flight: Option<AttemptMark>,
    /// When the first attempt that may have reached the PG started: a settlement line of a
    /// refund older than this is not this intent's.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// The PG answered a refusal that it keeps under the current key (Toss keeps error answers
    /// for the key's 15 days), or a human re-drove a dead letter: the next attempt asks the PG
    /// and, if nothing was refunded, sends under a new key generation.
    pub new_key_if_untouched: bool,
    /// A settlement CANCEL line was matched to this refund.
    pub cancel_line_seen: bool,
    /// An alert said no CANCEL line came for this refund within `cancel_line_wait_days`.
    pub missing_line_alerted: bool,
    /// Settlement syncs that came and went while this refund's outcome stayed unknown.
    pub unknown_syncs: u32,
    /// The last settlement day counted in `unknown_syncs`: a day synced again counts once.
    pub unknown_counted_through: Option<chrono::NaiveDate>,
}

/// An attempt at the PG that started: its number (1 = the first) and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptMark {
    pub number: u32,
    pub started_at: DateTime<Utc>,
}

/// Most characters of a PG idempotency key kassa makes (Toss allows 300).
pub const PG_KEY_CHARS_MAX: usize = 64;

/// How far apart the PG's and kassa's clocks may be when a refund's time in the PG's record is
/// compared with when kassa's attempt started.
pub const REFUND_CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl CancelIntent {
    /// Whether a refund of `amount` at `at` (when the PG says) that kassa does not know may be
    /// this intent's, so that it must not be recorded as made outside kassa:
    /// - an intent still to run, or whose outcome is in doubt, may account for any refund (it
    ///   asks the PG first);
    /// - a dead letter the PG refused may still be refunded by hand or by a late request under
    ///   an earlier key: a refund of its amount from its first attempt on (the PG's clock given
    ///   `REFUND_CLOCK_SLACK`), or without a time, is left to its re-drive or resolve;
    /// - an older refund, or one of another amount, is not a refused dead letter's: were it held
    ///   back, kassa's balance would stay above the PG's and every later cancel would be refused
    ///   for it (simulation seed 249 found this).
    pub fn may_explain_refund(&self, amount: Amount, at: Option<DateTime<Utc>>) -> bool {
        match self.state {
            IntentState::Open | IntentState::Unknown => true,
            IntentState::Dead if self.outcome_unknown || self.in_flight.is_some() => true,
            IntentState::Dead => {
                amount == self.amount
                    && match (at, self.first_attempt_at) {
                        (Some(at), Some(first)) => at >= first - REFUND_CLOCK_SLACK,
                        _ => true,
                    }
            }
            IntentState::Done | IntentState::Resolved => false,
        }
    }

    /// A new, open intent that has not been attempted, held against `amount` of the balance.
    pub fn new(
        id: CancelId,
        payment_id: PaymentId,
        kind: CancelKind,
        amount: Amount,
        reason: String,
        pg_key: String,
        now: DateTime<Utc>,
    ) -> CancelIntent {
        CancelIntent {
            id,
            payment_id,
            kind,
            amount,
            balance_before: amount,
            reason,
            pg_key,
            created_at: now,
            done_at: None,
            attempts: 0,
            queue_attempts: 0,
            state: IntentState::Open,
            outcome_unknown: false,
            pg_cancel_id: None,
            key_generation: 0,
            in_flight: None,
            first_attempt_at: None,
            new_key_if_untouched: false,
            cancel_line_seen: false,
            missing_line_alerted: false,
            unknown_syncs: 0,
            unknown_counted_through: None,
        }
    }

    /// The PG idempotency key of the current generation: the intent's own key, then the same key
    /// with the generation number after it.
    pub fn pg_key_now(&self) -> String {
        if self.key_generation == 0 {
            self.pg_key.clone()
        } else {
            format!("{}-g{}", self.pg_key, self.key_generation)
        }
    }
}

/// Where a cancel intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentState {
    /// Waiting for an attempt (inline or queued).
    Open,
    /// The PG refunded it.
    Done,
    /// Out of attempts or refused: a dead letter waits for a human.
    Dead,
    /// The PG may or may not have refunded it and cannot be asked (Payple): kassa waits for
    /// evidence (a refund answer, a settlement CANCEL line, or a person) and sends nothing.
    Unknown,
    /// Closed by a human who says nothing was refunded: its reservation is released.
    Resolved,
}

impl IntentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentState::Open => "OPEN",
            IntentState::Done => "DONE",
            IntentState::Dead => "DEAD",
            IntentState::Unknown => "UNKNOWN",
            IntentState::Resolved => "RESOLVED",
        }
    }

    pub fn parse(raw: &str) -> Option<IntentState> {
        [
            IntentState::Open,
            IntentState::Done,
            IntentState::Dead,
            IntentState::Unknown,
            IntentState::Resolved,
        ]
        .into_iter()
        .find(|state| state.as_str() == raw)
    }
}

/// A client's key for one cancel request: repeats with the same key are the same request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Longest idempotency key (Toss allows 300; kassa's own are shorter).
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<IdempotencyKey, DomainError> {
        let raw = raw.trim();
        if raw.is_empty()
            || raw.len() > IDEMPOTENCY_KEY_CHARS_MAX
            || !raw.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(DomainError::InvalidId {
                what: "Idempotency-Key",
                why: "it must be 1 to 255 printable ASCII characters",
            });
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payment(status: PaymentStatus) -> Payment {
        Payment::restore(
            PaymentId::from_u128(1),
            OrderId::parse("order-1").unwrap(),
            Provider::PortOne,
            PgTid::parse("imp_1").unwrap(),
            Amount::positive(10_000).unwrap(),
            DateTime::UNIX_EPOCH,
            Amount::ZERO,
            Amount::ZERO,
            status,
        )
        .unwrap()
    }

    #[test]
    fn the_legal_transitions_are_exactly_these() {
        use PaymentStatus as S;
        let legal = [
            (S::Paid, S::CancelRequested),
            (S::PartiallyCancelled, S::CancelRequested),
            (S::CancelFailed, S::CancelRequested),
            (S::CancelUnknown, S::CancelRequested),
            (S::Paid, S::PartiallyCancelled),
            (S::Paid, S::Cancelled),
            (S::PartiallyCancelled, S::Cancelled),
            (S::CancelRequested, S::PartiallyCancelled),
            (S::CancelRequested, S::Cancelled),
            (S::CancelRequested, S::CancelFailed),
            (S::CancelRequested, S::CancelUnknown),
            (S::CancelFailed, S::Paid),
            (S::CancelFailed, S::PartiallyCancelled),
            (S::CancelFailed, S::Cancelled),
            (S::CancelFailed, S::CancelUnknown),
            (S::CancelUnknown, S::Paid),
            (S::CancelUnknown, S::PartiallyCancelled),
            (S::CancelUnknown, S::Cancelled),
            (S::CancelUnknown, S::CancelFailed),
            (S::RollbackFailed, S::RollbackPending),
            (S::RollbackFailed, S::RollbackRefunded),
            (S::RollbackFailed, S::RollbackUnknown),
            (S::RollbackPending, S::RollbackRefunded),
            (S::RollbackPending, S::RollbackFailed),
            (S::RollbackPending, S::RollbackUnknown),
            (S::RollbackUnknown, S::RollbackPending),
            (S::RollbackUnknown, S::RollbackRefunded),
            (S::RollbackUnknown, S::RollbackFailed),
        ];
        for from in S::ALL {
            for to in S::ALL {
                assert_eq!(
                    from.can_move_to(to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn only_paid_and_rollback_pending_are_initial() {
        let now = DateTime::UNIX_EPOCH;
        for status in PaymentStatus::ALL {
            let created = Payment::new(
                PaymentId::from_u128(1),
                OrderId::parse("order-1").unwrap(),
                Provider::PortOne,
                PgTid::parse("imp_1").unwrap(),
                Amount::positive(1).unwrap(),
                now,
                status,
            );
            assert_eq!(created.is_ok(), status.is_initial(), "{status}");
        }
    }

    #[test]
    fn a_refunded_or_cancelled_payment_never_comes_back() {
        for status in [PaymentStatus::Cancelled, PaymentStatus::RollbackRefunded] {
            let mut done = payment(status);
            for next in PaymentStatus::ALL
                .into_iter()
                .filter(|next| *next != status)
            {
                assert!(done.move_to(next).is_err());
            }
            assert_eq!(done.status(), status);
        }
    }

    #[test]
    fn reservations_never_let_cancels_exceed_the_balance() {
        let mut paid = payment(PaymentStatus::Paid);
        paid.reserve(Amount::positive(6_000).unwrap()).unwrap();
        assert_eq!(paid.available().won(), 4_000);
        assert!(paid.reserve(Amount::positive(4_001).unwrap()).is_err());
        assert!(paid.reserve(Amount::ZERO).is_err());
        paid.reserve(Amount::positive(4_000).unwrap()).unwrap();
        assert!(paid.available().is_zero());
        paid.record_refund(Amount::positive(6_000).unwrap())
            .unwrap();
        assert_eq!(
            (paid.balance().won(), paid.reserved_amount().won()),
            (4_000, 4_000)
        );
    }

    #[test]
    fn the_status_follows_from_the_intents_and_the_balance() {
        let counts = |open, dead, unknown| IntentCounts {
            open,
            dead,
            unknown,
            resolved_unrefunded: 0,
        };
        let mut paid = payment(PaymentStatus::Paid);
        paid.settle_status(false, counts(1, 0, 0)).unwrap();
        assert_eq!(paid.status(), PaymentStatus::CancelRequested);
        paid.record_refund(Amount::positive(3_000).unwrap())
            .unwrap();
        paid.settle_status(false, counts(0, 0, 0)).unwrap();
        assert_eq!(paid.status(), PaymentStatus::PartiallyCancelled);
        paid.settle_status(false, counts(1, 0, 0)).unwrap();
        paid.settle_status(false, counts(0, 1, 0)).unwrap();
        assert_eq!(paid.status(), PaymentStatus::CancelFailed);
        paid.settle_status(false, counts(0, 1, 1)).unwrap();
        assert_eq!(
            paid.status(),
            PaymentStatus::CancelUnknown,
            "unknown comes first"
        );
        paid.settle_status(false, counts(1, 0, 0)).unwrap();
        paid.record_refund(Amount::positive(7_000).unwrap())
            .unwrap();
        paid.settle_status(false, counts(0, 0, 0)).unwrap();
        assert_eq!(paid.status(), PaymentStatus::Cancelled);
        let mut refused = payment(PaymentStatus::RollbackPending);
        refused.settle_status(true, counts(0, 1, 0)).unwrap();
        assert_eq!(refused.status(), PaymentStatus::RollbackFailed);
        refused.settle_status(true, counts(1, 0, 0)).unwrap();
        refused.settle_status(true, counts(0, 0, 1)).unwrap();
        assert_eq!(refused.status(), PaymentStatus::RollbackUnknown);
        refused.settle_status(true, counts(0, 0, 0)).unwrap();
        assert_eq!(refused.status(), PaymentStatus::RollbackRefunded);
        let mut kept = payment(PaymentStatus::RollbackPending);
        kept.settle_status(
            true,
            IntentCounts {
                resolved_unrefunded: 1,
                ..IntentCounts::default()
            },
        )
        .unwrap();
        assert_eq!(
            kept.status(),
            PaymentStatus::RollbackFailed,
            "a rollback closed without a refund is not refunded"
        );
    }

    #[test]
    fn names_round_trip() {
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        for provider in Provider::ALL {
            assert_eq!(Provider::parse(provider.as_str()), Ok(provider));
        }
    }

    proptest! {
        #[test]
        fn refunds_never_exceed_the_amount_paid(refunds in proptest::collection::vec(1i64..6_000, 0..10)) {
            let mut paid = payment(PaymentStatus::Paid);
            let mut accepted = 0;
            for won in refunds {
                let before = paid.cancelled_amount();
                match paid.record_refund(Amount::positive(won).unwrap()) {
                    Ok(()) => accepted += won,
                    Err(_) => prop_assert_eq!(paid.cancelled_amount(), before),
                }
                prop_assert!(paid.cancelled_amount() <= paid.amount);
                prop_assert_eq!(paid.cancelled_amount().won() + paid.balance().won(), paid.amount.won());
            }
            prop_assert_eq!(paid.cancelled_amount().won(), accepted);
        }

        #[test]
        fn any_walk_through_the_machine_only_takes_legal_steps(steps in proptest::collection::vec(0usize..10, 0..40)) {
            let mut current = payment(PaymentStatus::Paid);
            for step in steps {
                let next = PaymentStatus::ALL[step];
                let before = current.status();
                let moved = current.move_to(next);
                prop_assert_eq!(moved.is_ok(), before == next || before.can_move_to(next));
                prop_assert_eq!(current.status(), if moved.is_ok() { next } else { before });
            }
        }
    }
}

//! Pure payment rules: money, identifiers, orders and the payment status machine.
//!
//! Invariant: nothing here does I/O, async, or knows a wire format. Values are parsed once at
//! the boundary through fallible constructors, so a value of one of these types is valid.

pub mod calendar;
pub mod ids;
pub mod job;
pub mod money;
pub mod order;
pub mod payment;
pub mod retry;
pub mod settlement;

pub use ids::{BuyerId, CancelId, OrderId, PartnerId, PaymentId, PgTid};
pub use job::Job;
pub use money::Amount;
pub use order::{Admission, Order, OrderDraft, OrderStatus, admit};
pub use payment::{
    AttemptMark, CancelIntent, CancelKind, Event, EventKind, IdempotencyKey, IntentCounts,
    IntentState, Payment, PaymentStatus, Provider,
};

/// Why a value or a transition was refused. Each variant is a rule of the domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("amount must be between {min} and {max} won, got {got}")]
    AmountOutOfRange { min: i64, max: i64, got: i64 },
    #[error("{what} is invalid: {why}")]
    InvalidId {
        what: &'static str,
        why: &'static str,
    },
    #[error("{what} is invalid: {why}")]
    InvalidText {
        what: &'static str,
        why: &'static str,
    },
    #[error("a payment cannot move from {from} to {to}")]
    IllegalTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
}

/// Checks a free-text field: trimmed, non-empty, at most `chars_max` characters, no control
/// characters. Returns the trimmed text.
pub fn parse_text(what: &'static str, raw: &str, chars_max: usize) -> Result<String, DomainError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(DomainError::InvalidText {
            what,
            why: "it is empty",
        });
    }
    if text.chars().count() > chars_max {
        return Err(DomainError::InvalidText {
            what,
            why: "it is too long",
        });
    }
    if text.chars().any(char::is_control) {
        return Err(DomainError::InvalidText {
            what,
            why: "it contains control characters",
        });
    }
    Ok(text.to_owned())
}

//! A person's word on a dead letter or an unknown refund: a re-drive sends the intent again, a
//! resolve records what the person did in the PG's console.
//!
//! Invariants: only a DEAD or UNKNOWN intent is changed; anything else answers what it is. An
//! UNKNOWN refund is sent again only when the person says the PG's console shows no refund. A
//! re-driven dead letter asks the PG first and sends under a new key generation only if nothing
//! was refunded. "Refunded" records the refund exactly as a PG-confirmed one.

use super::cancels::{record_refund, settle};
use super::dead_letters::{DeadLetterRecord, NOTE_CHARS_MAX, letter, put_letter};
use super::intents::{StoredIntent, get_intent, put_intent};
use super::payments::{append_event, clip, get_payment, put_payment};
use super::queue::enqueue_cancel;
use super::tx::Tx;
use super::{Store, StoreError};
use crate::domain::{CancelId, CancelIntent, EventKind, IntentState};
use chrono::{DateTime, Utc};

/// What a person says about a dead letter they re-drive.
#[derive(Debug, Clone, Default)]
pub struct Redrive {
    /// The person looked in the PG's console and saw no refund for this cancel.
    pub console_checked: bool,
    pub note: Option<String>,
}

/// What a person says they did about a dead letter.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Refunded in the PG's console (with the PG's reference, if they have it, and when the PG
    /// made it, when its record says).
    Refunded {
        pg_ref: Option<String>,
        at: Option<DateTime<Utc>>,
    },
    /// Not refunded, and not to be: the hold on the balance is released.
    NotRefunded,
}

#[derive(Debug, Clone)]
pub enum RedriveOutcome {
    Redriven(CancelIntent),
    AlreadyDone(CancelIntent),
    /// Closed by a human: nothing runs.
    Resolved(CancelIntent),
    /// An unknown refund of a PG that cannot be asked: the person must say they checked the
    /// PG's console before it is sent again.
    ConsoleCheckRequired(CancelIntent),
    /// The PG refund named is already recorded for another cancel of the payment.
    RefundAlreadyRecorded(CancelIntent),
    NotFound,
}

/// A dead letter and the intent it names.
fn letter_and_intent(
    txn: &Tx<'_>,
    dead_id: u128,
) -> Result<Option<(DeadLetterRecord, StoredIntent)>, StoreError> {
    let Some(letter) = letter(txn, dead_id)? else {
        return Ok(None);
    };
    let Some(stored) = get_intent(txn, CancelId::from_u128(letter.cancel_id))? else {
        return Err(StoreError::Corrupt(
            "dead letter names a missing cancel".into(),
        ));
    };
    Ok(Some((letter, stored)))
}

fn redrive(
    txn: &Tx<'_>,
    dead_id: u128,
    request: &Redrive,
    now: DateTime<Utc>,
) -> Result<RedriveOutcome, StoreError> {
    let Some((mut letter, mut stored)) = letter_and_intent(txn, dead_id)? else {
        return Ok(RedriveOutcome::NotFound);
    };
    let unknown = match stored.intent.state {
        IntentState::Done => return Ok(RedriveOutcome::AlreadyDone(stored.intent)),
        // Already re-driven and not finished yet: the same job is on its way.
        IntentState::Open => return Ok(RedriveOutcome::Redriven(stored.intent)),
        IntentState::Resolved => return Ok(RedriveOutcome::Resolved(stored.intent)),
        IntentState::Unknown => true,
        IntentState::Dead => false,
    };
    if unknown && !request.console_checked {
        return Ok(RedriveOutcome::ConsoleCheckRequired(stored.intent));
    }
    let Some(mut payment) = get_payment(txn, stored.intent.payment_id)? else {
        return Err(StoreError::Corrupt(
            "cancel intent names a missing payment".into(),
        ));
    };
    let intent = &mut stored.intent;
    intent.state = IntentState::Open;
    intent.queue_attempts = 0;
    let note = request
        .note
        .as_deref()
        .map(|note| clip(note, NOTE_CHARS_MAX));
    let detail = if unknown {
        // The person's word replaces the evidence the PG cannot give: nothing was refunded, so
        // the next attempt is a first send, not a guess.
        intent.outcome_unknown = false;
        intent.in_flight = None;
        intent.first_attempt_at = None;
        format!(
            "re-driven by an operator who says the PG's console shows no refund; sent again{}",
            note.as_deref()
                .map(|note| format!(": {note}"))
                .unwrap_or_default()
        )
    } else {
        // The PG may have moved since (a refund in its console, a late execution): the next
        // attempt asks first, and a new key is used only if nothing was refunded.
        intent.new_key_if_untouched = true;
        format!(
            "re-driven by an operator: the PG is asked first, then the cancel runs again (key {}){}",
            intent.pg_key_now(),
            note.as_deref()
                .map(|note| format!(": {note}"))
                .unwrap_or_default()
        )
    };
    enqueue_cancel(txn, intent.id, payment.payment.provider, now)?;
    put_intent(txn, &stored)?;
    letter.redriven_at_ms = Some(now.timestamp_millis());
    if let Some(note) = &note {
        letter.resolution = Some(format!("re-driven: {note}"));
    }
    put_letter(txn, dead_id, &letter)?;
    settle(txn, &mut payment)?;
    put_payment(txn, &payment)?;
    append_event(txn, payment.payment.id, now, EventKind::Redriven, &detail)?;
    Ok(RedriveOutcome::Redriven(stored.intent))
}

fn resolve(
    txn: &Tx<'_>,
    dead_id: u128,
    resolution: &Resolution,
    note: &str,
    now: DateTime<Utc>,
) -> Result<RedriveOutcome, StoreError> {
    let Some((mut letter, mut stored)) = letter_and_intent(txn, dead_id)? else {
        return Ok(RedriveOutcome::NotFound);
    };
    match stored.intent.state {
        IntentState::Done => return Ok(RedriveOutcome::AlreadyDone(stored.intent)),
        IntentState::Resolved => return Ok(RedriveOutcome::Resolved(stored.intent)),
        // Re-driven and running: it must finish or die again before it can be resolved.
        IntentState::Open => return Ok(RedriveOutcome::Redriven(stored.intent)),
        IntentState::Dead | IntentState::Unknown => {}
    }
    let Some(mut payment) = get_payment(txn, stored.intent.payment_id)? else {
        return Err(StoreError::Corrupt(
            "cancel intent names a missing payment".into(),
        ));
    };
    let note = clip(note, NOTE_CHARS_MAX);
    let text = match resolution {
        Resolution::Refunded { pg_ref, at } => {
            let pg_ref = pg_ref.clone().unwrap_or_default();
            // Checked again here, in the write: two resolves at once must not both take one
            // refund of the PG's.
            if !pg_ref.is_empty() {
                let taken = super::intents::intents_of(txn, payment.payment.id)?
                    .iter()
                    .any(|other| {
                        other.intent.state == IntentState::Done
                            && other.intent.pg_cancel_id.as_deref() == Some(pg_ref.as_str())
                    });
                if taken {
                    return Ok(RedriveOutcome::RefundAlreadyRecorded(stored.intent));
                }
            }
            record_refund(
                txn,
                &mut stored,
                &mut payment,
                &pg_ref,
                at.unwrap_or(now),
                now,
                &format!("an operator says it was refunded in the PG's console: {note}"),
            )?;
            format!("refunded in the PG's console: {note}")
        }
        Resolution::NotRefunded => {
            stored.intent.state = IntentState::Resolved;
            stored.intent.in_flight = None;
            super::queue::remove_job(txn, stored.intent.id.as_u128())?;
            payment.payment.release(stored.intent.amount);
            let detail = format!(
                "{} resolved by an operator as not refunded; nothing is sent to the PG: {note}",
                stored.intent.amount
            );
            append_event(txn, payment.payment.id, now, EventKind::Resolved, &detail)?;
            format!("not refunded: {note}")
        }
    };
    put_intent(txn, &stored)?;
    letter.resolved_at_ms = Some(now.timestamp_millis());
    letter.resolution = Some(clip(&text, NOTE_CHARS_MAX));
    put_letter(txn, dead_id, &letter)?;
    settle(txn, &mut payment)?;
    put_payment(txn, &payment)?;
    Ok(RedriveOutcome::Resolved(stored.intent))
}

impl Store {
    /// Sends a dead letter's intent again (see the module's invariants).
    pub async fn redrive(
        &self,
        dead_id: u128,
        request: Redrive,
        now: DateTime<Utc>,
    ) -> Result<RedriveOutcome, StoreError> {
        self.write(move |txn| redrive(txn, dead_id, &request, now))
            .await
    }

    /// Records what a person did about a dead letter or an unknown refund.
    pub async fn resolve_dead_letter(
        &self,
        dead_id: u128,
        resolution: Resolution,
        note: String,
        now: DateTime<Utc>,
    ) -> Result<RedriveOutcome, StoreError> {
        self.write(move |txn| resolve(txn, dead_id, &resolution, &note, now))
            .await
    }
}

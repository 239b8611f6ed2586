//! Cancels and rollbacks: recording a cancel request, and carrying out cancel intents at the PG
//! exactly once, inline (in a task of their own that the request waits for) and then from the
//! queue.
//!
//! Invariants: the intent, its reservation and its job are durable before the PG is called, and
//! so is the mark that attempt n started; every attempt sends the key of the intent's current
//! generation and the balance kassa expects; when an outcome is unknown or the PG refuses,
//! kassa asks the PG and converges on its record before it sends again, and where the PG cannot
//! be asked (Payple) it sends nothing again and waits for evidence; a new key generation is
//! committed only after the PG's record showed nothing refunded under the old one; a call that
//! moves money starts only if its whole timeout fits in the attempt's lease; an attempt is
//! never cut off by its request going away.

use super::breaker::Health;
use super::{FlowError, Kassa};
use crate::domain::retry::RetrySchedule;
use crate::domain::{
    Amount, CancelId, CancelIntent, IdempotencyKey, IntentState, Payment, PaymentId, PaymentStatus,
    parse_text,
};
use crate::gateway::{CancelRequest, GatewayError, PgCancellation, PgPayment};
use crate::store::{
    AttemptResult, CancelRequestOutcome, Claim, Gate, KnownRefund, RedriveOutcome, Resolution,
};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Pause between inline attempts (times the attempt number).
pub const INLINE_BACKOFF: Duration = Duration::from_millis(200);
/// Longest an inline attempt waits for its turn behind other cancels of the same payment.
pub const INLINE_TURN_WAIT_MAX: Duration = Duration::from_secs(10);
/// Longest a request waits for its inline attempts; they go on without it after that.
pub const INLINE_WAIT_MAX: Duration = Duration::from_secs(60);
/// Longest reason kept with a cancel.
pub const REASON_CHARS_MAX: usize = 200;
/// Most PG calls one attempt makes, each bounded by `retry.pg_timeout_ms`: a token or partner
/// auth, a look at the PG's record, the cancel, a look after it, and Toss's gap between cancels.
pub const CALLS_PER_ATTEMPT_MAX: u32 = 5;
/// What a call that moves money needs left of its lease beyond its own timeout.
pub const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Where a cancel stands, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStatus {
    Cancelled,
    PartiallyCancelled,
    Pending,
    Failed,
    /// The PG may have refunded and cannot be asked; a person or a settlement line decides.
    Unknown,
    /// Closed by an operator without a refund by kassa.
    Resolved,
}

impl CancelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelStatus::Cancelled => "CANCELLED",
            CancelStatus::PartiallyCancelled => "PARTIALLY_CANCELLED",
            CancelStatus::Pending => "CANCEL_PENDING",
            CancelStatus::Failed => "CANCEL_FAILED",
            CancelStatus::Unknown => "CANCEL_UNKNOWN",
            CancelStatus::Resolved => "CANCEL_RESOLVED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CancelAnswer {
    pub cancel_id: CancelId,
    pub payment_id: PaymentId,
    pub amount: Amount,
    pub status: CancelStatus,
}

/// The lease an attempt holds: every call it may make, each bounded by the PG timeout, and a
/// margin. Also how long shutdown waits for attempts in flight.
pub fn lease(kassa: &Kassa) -> chrono::Duration {
    chrono::Duration::from_std(attempt_length(kassa)).unwrap_or(chrono::Duration::minutes(5))
}

/// The longest one attempt can take.
pub fn attempt_length(kassa: &Kassa) -> Duration {
    kassa.config.retry.pg_timeout * (CALLS_PER_ATTEMPT_MAX + 1) + Duration::from_secs(5)
}

fn schedule(kassa: &Kassa) -> RetrySchedule {
    RetrySchedule::new(
        kassa.config.retry.backoff.clone(),
        kassa.config.retry.queue_attempts_max,
    )
}

async fn answer(kassa: &Kassa, intent: &CancelIntent) -> Result<CancelAnswer, FlowError> {
    let intent = kassa
        .store
        .cancel_intent(intent.id)
        .await?
        .unwrap_or_else(|| intent.clone());
    let status = match intent.state {
        IntentState::Open => CancelStatus::Pending,
        IntentState::Dead => CancelStatus::Failed,
        IntentState::Unknown => CancelStatus::Unknown,
        IntentState::Resolved => CancelStatus::Resolved,
        IntentState::Done => {
            let view = kassa.store.payment(intent.payment_id).await?;
            let full = view.is_some_and(|view| view.payment.status() == PaymentStatus::Cancelled);
            if full {
                CancelStatus::Cancelled
            } else {
                CancelStatus::PartiallyCancelled
            }
        }
    };
    Ok(CancelAnswer {
        cancel_id: intent.id,
        payment_id: intent.payment_id,
        amount: intent.amount,
        status,
    })
}

/// The answer to a request that stopped waiting for its task: the cancel's state when it was
/// recorded, or "still running" (the key's request is in progress) when it is not yet.
async fn answer_created(
    kassa: &Kassa,
    mut created: tokio::sync::oneshot::Receiver<CancelIntent>,
) -> Result<CancelAnswer, FlowError> {
    match created.try_recv() {
        Ok(intent) => answer(kassa, &intent).await,
        Err(_) => Err(in_progress()),
    }
}

fn in_progress() -> FlowError {
    FlowError::Conflict {
        code: "IDEMPOTENCY_REQUEST_IN_PROGRESS",
        message: "the first request with this Idempotency-Key is still running; ask again shortly"
            .into(),
    }
}

/// True when an inline attempt at `provider` may start now: kassa is not shutting down (an
/// attempt started now could be cut off) and the circuit breaker does not pause the PG's jobs.
fn inline_may_start(kassa: &Kassa, provider: crate::domain::Provider) -> bool {
    !kassa.shutdown.is_cancelled()
        && !matches!(
            kassa.breakers.gate(provider, kassa.env.now()),
            Some(Gate::Paused(_))
        )
}

/// Records a cancel of `amount` (the whole available balance when `None`) of `payment`, as the
/// caller read it, and tries it inline. The same `key` again answers the same cancel; it never
/// cancels twice. Only the payment's id and PG are taken from `payment`: the request's
/// transaction reads the payment again.
pub async fn request(
    kassa: &Kassa,
    payment: &Payment,
    key: IdempotencyKey,
    amount: Option<i64>,
    reason: &str,
) -> Result<CancelAnswer, FlowError> {
    let (payment_id, provider) = (payment.id, Some(payment.provider));
    let amount = amount.map(Amount::positive).transpose()?;
    let reason = parse_text("reason", reason, REASON_CHARS_MAX)?;
    let cancel_uuid = kassa.env.new_uuid();
    // The first attempt is claimed in the request's own commit unless something holds it back
    // (no inline attempts configured, shutting down, the PG's jobs paused): one commit fewer,
    // and its mark is still durable before the PG hears of it.
    let claim_lease = (kassa.config.retry.inline_attempts > 0
        && provider.is_some_and(|provider| inline_may_start(kassa, provider)))
    .then(|| lease(kassa));
    let request = crate::store::CancelRequest {
        payment_id,
        key: key.clone(),
        amount,
        reason,
        cancel_id: CancelId::from_uuid(cancel_uuid),
        pg_key: cancel_uuid.simple().to_string(),
        now: kassa.env.now(),
        claim_lease,
    };
    // From the request's commit on, its claimed attempt must run whatever becomes of the
    // caller (a client that goes away drops this future): the request and its inline attempts
    // run in a task of their own, which the caller waits for at most `INLINE_WAIT_MAX`. The
    // request's key counts as answered once the inline attempts end, so a client that went
    // away and asks again with the key gets the cancel's state, not "still running".
    let (created_tx, created_rx) = tokio::sync::oneshot::channel();
    let task = {
        let kassa = kassa.clone();
        kassa.tasks.clone().spawn(async move {
            let outcome = kassa.store.request_cancel(request).await?;
            if let CancelRequestOutcome::Created(intent, claim) = &outcome {
                tracing::info!(payment_id = %payment_id, cancel_id = %intent.id, amount = intent.amount.won(), "cancel accepted");
                let _ = created_tx.send(intent.clone());
                inline_attempts_then(
                    &kassa,
                    intent,
                    provider,
                    claim.clone(),
                    Some((payment_id, key)),
                )
                .await?;
            }
            Ok::<_, FlowError>(outcome)
        })
    };
    let outcome = match tokio::time::timeout(INLINE_WAIT_MAX, task).await {
        Ok(Ok(outcome)) => outcome?,
        Ok(Err(join)) => {
            tracing::error!(payment_id = %payment_id, error = %join, "a cancel request's task stopped unexpectedly; the queue carries on");
            return answer_created(kassa, created_rx).await;
        }
        Err(_) => {
            tracing::info!(payment_id = %payment_id, "the inline attempts go on after the request stopped waiting");
            return answer_created(kassa, created_rx).await;
        }
    };
    match outcome {
        CancelRequestOutcome::Created(intent, _) | CancelRequestOutcome::Replay(intent) => {
            answer(kassa, &intent).await
        }
        CancelRequestOutcome::InProgress => Err(in_progress()),
        CancelRequestOutcome::KeyReused => Err(FlowError::Unprocessable {
            code: "IDEMPOTENCY_KEY_REUSED",
            message: "this Idempotency-Key was used with a different request".into(),
        }),
        CancelRequestOutcome::Exceeds { available } => Err(FlowError::Unprocessable {
            code: "CANCEL_EXCEEDS_BALANCE",
            message: format!("at most {available} of this payment can still be cancelled"),
        }),
        CancelRequestOutcome::NotCancellable(status) => Err(FlowError::Conflict {
            code: "PAYMENT_NOT_CANCELLABLE",
            message: format!("a payment in status {status} cannot be cancelled"),
        }),
        CancelRequestOutcome::TooMany => Err(FlowError::Conflict {
            code: "TOO_MANY_CANCELS",
            message: "this payment has as many cancels as one payment may have".into(),
        }),
        CancelRequestOutcome::PaymentNotFound => Err(FlowError::NotFound { what: "payment" }),
    }
}

/// Sends a dead-lettered cancel (or an unknown refund, once a person checked the PG's console)
/// to the PG again, and wakes the worker for it. The store decides whether it may go again.
pub async fn redrive(
    kassa: &Kassa,
    dead_id: u128,
    request: crate::store::Redrive,
) -> Result<RedriveOutcome, FlowError> {
    let console_checked = request.console_checked;
    let outcome = kassa
        .store
        .redrive(dead_id, request, kassa.env.now())
        .await?;
    if let RedriveOutcome::Redriven(intent) = &outcome {
        tracing::info!(cancel_id = %intent.id, payment_id = %intent.payment_id, console_checked, "dead letter re-driven");
        kassa.wake.notify_one();
    }
    Ok(outcome)
}

/// What a person says they did about a dead letter or an unknown refund. A refund they say
/// they made is checked against the PG's record where the PG can be asked: a record that does
/// not show it is a 409 with what the PG shows, and nothing changes.
pub async fn resolve(
    kassa: &Kassa,
    dead_id: u128,
    resolution: Resolution,
    note: String,
) -> Result<RedriveOutcome, FlowError> {
    let mut note = note;
    let resolution = match resolution {
        Resolution::Refunded { pg_ref, at } => {
            let (shown_id, shown_at) = check_refund_at_pg(kassa, dead_id).await?;
            // The PG's own id of the refund is what later looks at its record match on; the
            // person's reference is kept in the note.
            if let (Some(theirs), Some(_)) = (&pg_ref, &shown_id) {
                note = format!("{note} (their reference: {theirs})");
            }
            Resolution::Refunded {
                pg_ref: shown_id.or(pg_ref),
                at: shown_at.or(at),
            }
        }
        other @ Resolution::NotRefunded => other,
    };
    Ok(kassa
        .store
        .resolve_dead_letter(dead_id, resolution, note, kassa.env.now())
        .await?)
}

/// Asks the PG whether it shows the refund a person says they made; answers the PG's own id of
/// that refund and when it was made, where the record says.
async fn check_refund_at_pg(
    kassa: &Kassa,
    dead_id: u128,
) -> Result<(Option<String>, Option<DateTime<Utc>>), FlowError> {
    let unchecked = (None, None);
    let Some(letter) = kassa.store.dead_letter(dead_id).await? else {
        return Ok(unchecked);
    };
    let Some(intent) = kassa.store.cancel_intent(letter.cancel_id).await? else {
        return Ok(unchecked);
    };
    if !matches!(intent.state, IntentState::Dead | IntentState::Unknown) {
        // The store answers what it is (done, running, resolved).
        return Ok(unchecked);
    }
    let Some(view) = kassa.store.payment(intent.payment_id).await? else {
        return Ok(unchecked);
    };
    let Some(gateway) = kassa.gateways.get(view.payment.provider) else {
        return Ok(unchecked);
    };
    if !gateway.cancels_are_guarded() {
        // Payple cannot be asked: the person's word, from its console, is the evidence.
        return Ok(unchecked);
    }
    let pg = gateway
        .fetch_payment(&view.payment.pg_tid)
        .await
        .map_err(FlowError::Gateway)?;
    let intents = kassa.store.intents_of_payment(intent.payment_id).await?;
    let known = known_refunds(&intents);
    let shown = unknown_entries(&pg, &known)
        .into_iter()
        .find(|entry| entry.amount == intent.amount);
    match shown {
        Some(entry) => {
            // Only an id that names this refund alone is kept as its receipt id; PortOne's
            // shared `pg_tid` would make every later refund of the payment look recorded.
            let id = (entry.id_is_unique && !entry.pg_cancel_id.is_empty())
                .then(|| entry.pg_cancel_id.clone());
            let at = (entry.at != DateTime::UNIX_EPOCH).then_some(entry.at);
            Ok((id, at))
        }
        None => Err(FlowError::Conflict {
            code: "PG_RECORD_CONTRADICTS",
            message: format!(
                "the PG's record shows no refund of {} that kassa has not recorded already; nothing was changed. {}",
                intent.amount,
                describe(&pg)
            ),
        }),
    }
}

/// How an attempt was started, which decides what a failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inside the request; `last` hands the job to the queue on failure.
    Inline { last: bool },
    /// From the queue.
    Queue,
}

/// Makes the inline attempts of `retry.inline_attempts` in a task of their own and waits for
/// them at most `INLINE_WAIT_MAX`: if the caller goes away (a client disconnects, a request is
/// dropped), the attempts go on. Whatever is left is done by the queue.
pub async fn drive_inline(kassa: &Kassa, intent: &CancelIntent) -> Result<(), FlowError> {
    let task = {
        let kassa_for_task = kassa.clone();
        let intent = intent.clone();
        kassa.tasks.spawn(async move {
            let provider = kassa_for_task
                .store
                .payment(intent.payment_id)
                .await?
                .map(|view| view.payment.provider);
            inline_attempts_then(&kassa_for_task, &intent, provider, None, None).await
        })
    };
    match tokio::time::timeout(INLINE_WAIT_MAX, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => {
            tracing::error!(cancel_id = %intent.id, error = %join, "the inline attempts stopped unexpectedly; the queue carries on");
            Ok(())
        }
        Err(_) => {
            tracing::info!(cancel_id = %intent.id, "the inline attempts go on after the request stopped waiting");
            Ok(())
        }
    }
}

/// `inline_attempts`, then marks the cancel request's key `answered` unless the attempt that
/// ended them did so in its own transaction.
async fn inline_attempts_then(
    kassa: &Kassa,
    intent: &CancelIntent,
    provider: Option<crate::domain::Provider>,
    claimed: Option<Claim>,
    answered: Option<(PaymentId, IdempotencyKey)>,
) -> Result<(), FlowError> {
    let attempts = inline_attempts(kassa, intent, provider, claimed, answered.as_ref()).await;
    if let Some((payment_id, key)) = &answered
        && !matches!(attempts, Ok(Answered::Yes))
    {
        kassa
            .store
            .cancel_request_answered(*payment_id, key)
            .await?;
    }
    attempts.map(|_| ())
}

/// Whether the attempt that ended the inline attempts marked the request's key answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    Yes,
    No,
}

/// Up to `retry.inline_attempts` attempts, the first on `claimed` when the request's commit
/// claimed it. A claimed attempt always runs (its mark is durable: skipping it would leave an
/// outcome in doubt); any other waits for its turn and starts only if `inline_may_start`.
async fn inline_attempts(
    kassa: &Kassa,
    intent: &CancelIntent,
    provider: Option<crate::domain::Provider>,
    claimed: Option<Claim>,
    answered: Option<&(PaymentId, IdempotencyKey)>,
) -> Result<Answered, FlowError> {
    // A claimed attempt runs even were no inline attempts configured.
    let attempts = kassa
        .config
        .retry
        .inline_attempts
        .max(u32::from(claimed.is_some()));
    let turn_deadline = tokio::time::Instant::now() + INLINE_TURN_WAIT_MAX;
    let mut claimed = claimed;
    for attempt in 0..attempts {
        let claim = match claimed.take() {
            Some(claim) => claim,
            None => {
                let may_start = provider.map_or(!kassa.shutdown.is_cancelled(), |provider| {
                    inline_may_start(kassa, provider)
                });
                if !may_start {
                    tracing::info!(cancel_id = %intent.id, provider = ?provider, "no inline attempt now (shutting down, or the PG's jobs are paused by the circuit breaker); the queue carries the cancel");
                    return Ok(Answered::No);
                }
                let Some(claim) = wait_for_turn(kassa, intent.id, turn_deadline).await? else {
                    return Ok(Answered::No);
                };
                claim
            }
        };
        let last = attempt + 1 == attempts;
        let result = run_claim_answering(kassa, &claim, Mode::Inline { last }, answered).await?;
        let retried = matches!(result, AttemptResult::Retry { .. });
        if !retried || last {
            // `run_claim_answering` marked the key with this attempt's outcome.
            return Ok(if answered.is_some() {
                Answered::Yes
            } else {
                Answered::No
            });
        }
        tokio::time::sleep(INLINE_BACKOFF * (attempt + 1)).await;
    }
    Ok(Answered::No)
}

/// Claims `id` as soon as it is its turn, waking on every commit; `None` once it is no longer
/// open or the deadline passes (the queue then carries on).
async fn wait_for_turn(
    kassa: &Kassa,
    id: CancelId,
    deadline: tokio::time::Instant,
) -> Result<Option<Claim>, FlowError> {
    let mut changes = kassa.store.changes();
    loop {
        if kassa.shutdown.is_cancelled() {
            return Ok(None);
        }
        changes.borrow_and_update();
        // Look first (a read); claim (a write) only when it is our turn, so waiting does not
        // commit and wake every waiter, this one included.
        if kassa.store.cancel_turn(id, kassa.env.now()).await?
            && let Some(claim) = kassa
                .store
                .claim_cancel(id, kassa.env.now(), lease(kassa))
                .await?
        {
            return Ok(Some(claim));
        }
        let still_open = kassa
            .store
            .cancel_intent(id)
            .await?
            .is_some_and(|intent| intent.state == IntentState::Open);
        if !still_open || tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
            // An attempt of the same payment that finishes without a commit of its own (the
            // in-flight mark is memory) is seen here.
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Runs one claimed attempt and records its outcome. The attempt runs in a task of its own, so
/// a panic inside it is an attempt with an unknown outcome, logged and retried within its
/// bound. Answers what was recorded.
pub async fn run_claim(
    kassa: &Kassa,
    claim: &Claim,
    mode: Mode,
) -> Result<AttemptResult, FlowError> {
    run_claim_answering(kassa, claim, mode, None).await
}

/// `run_claim`; when the attempt ends the inline attempts (its outcome is not a retry, or it
/// is the last), the request's key `answered` is marked in the outcome's own transaction.
async fn run_claim_answering(
    kassa: &Kassa,
    claim: &Claim,
    mode: Mode,
    answered: Option<&(PaymentId, IdempotencyKey)>,
) -> Result<AttemptResult, FlowError> {
    let _running = kassa.store.in_flight().enter(claim.payment.id);
    let provider = claim.payment.provider;
    let task = {
        let kassa = kassa.clone();
        let claim = claim.clone();
        tokio::spawn(async move { attempt(&kassa, &claim, mode).await })
    };
    let (result, health) = match task.await {
        Ok(done) => done,
        Err(join) => {
            tracing::error!(payment_id = %claim.payment.id, cancel_id = %claim.intent.id, error = %join, "a refund attempt panicked; its outcome is unknown");
            let error =
                "the attempt stopped unexpectedly (a panic); its outcome is unknown".to_owned();
            (
                retry(kassa, claim, mode, error, RetryFlags::UNKNOWN),
                Health::NotAsked,
            )
        }
    };
    let now = kassa.env.now();
    kassa.breakers.record(provider, health, now);
    match &result {
        AttemptResult::Refunded { .. } => {
            tracing::info!(payment_id = %claim.payment.id, cancel_id = %claim.intent.id, amount = claim.intent.amount.won(), attempt = claim.attempt, "refund confirmed by the PG");
        }
        AttemptResult::Retry { error, due, .. } => {
            tracing::warn!(payment_id = %claim.payment.id, cancel_id = %claim.intent.id, attempt = claim.attempt, error = %error, next = %due.to_rfc3339(), "refund attempt failed; will retry");
        }
        AttemptResult::Dead { error, .. } => {
            tracing::error!(payment_id = %claim.payment.id, cancel_id = %claim.intent.id, attempt = claim.attempt, error = %error, "refund moved to the dead letters; a human must look at it");
        }
        AttemptResult::Unknown { error } => {
            tracing::error!(payment_id = %claim.payment.id, cancel_id = %claim.intent.id, attempt = claim.attempt, error = %error, "refund outcome unknown; nothing is sent again until a settlement line or a person says what happened");
        }
    }
    let record_id = kassa.env.new_uuid().as_u128();
    let ends_inline = match mode {
        Mode::Inline { last } => last || !matches!(result, AttemptResult::Retry { .. }),
        Mode::Queue => false,
    };
    let answered = answered.filter(|_| ends_inline).cloned();
    kassa
        .store
        .finish_attempt(claim, result.clone(), now, record_id, answered)
        .await?;
    Ok(result)
}

/// A short account of the PG's record, kept with a dead letter.
fn describe(pg: &PgPayment) -> String {
    format!(
        "PG payment {}: status {:?}, amount {}, cancelled {}, balance {}, {} cancellation(s)",
        pg.pg_tid,
        pg.status,
        pg.amount,
        pg.cancelled_amount,
        pg.balance(),
        pg.cancellations.len()
    )
}

/// What a retry carries forward to the next attempt.
#[derive(Debug, Clone, Copy)]
struct RetryFlags {
    outcome_unknown: bool,
    new_key_if_untouched: bool,
}

impl RetryFlags {
    /// Nothing was sent, or the PG's record was read since: the next attempt may send.
    const KNOWN: RetryFlags = RetryFlags {
        outcome_unknown: false,
        new_key_if_untouched: false,
    };

    /// As the intent was: nothing this attempt did changed what is known.
    fn unchanged(claim: &Claim) -> RetryFlags {
        RetryFlags {
            outcome_unknown: claim.intent.outcome_unknown,
            new_key_if_untouched: claim.intent.new_key_if_untouched,
        }
    }

    /// The attempt was cut off (a panic) after it may have sent: its key is in doubt, so it is
    /// kept, whatever the claim said before the attempt (it may have moved to a new one).
    const UNKNOWN: RetryFlags = RetryFlags {
        outcome_unknown: true,
        new_key_if_untouched: false,
    };
}

fn retry(
    kassa: &Kassa,
    claim: &Claim,
    mode: Mode,
    error: String,
    flags: RetryFlags,
) -> AttemptResult {
    let now = kassa.env.now();
    let schedule = schedule(kassa);
    let random = {
        let mut bytes = [0u8; 8];
        kassa.env.entropy.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    };
    let after = |delay: Duration| {
        now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero())
    };
    let (due, queued, alert) = match mode {
        Mode::Inline { last: false } => (now, false, false),
        Mode::Inline { last: true } => (after(schedule.delay(0, random)), false, true),
        Mode::Queue => {
            let made = claim.intent.queue_attempts.saturating_add(1);
            if schedule.exhausted(made) {
                let error = format!("{error} (after {made} queued attempts)");
                // Out of tries with the outcome unknown at a PG that cannot be asked: the refund
                // may have gone through, so it waits for evidence, never for a blind re-drive.
                if flags.outcome_unknown && !guarded(kassa, claim) {
                    return AttemptResult::Unknown { error };
                }
                return AttemptResult::Dead {
                    error,
                    pg_answer: String::new(),
                    outcome_unknown: flags.outcome_unknown,
                    new_key_if_untouched: flags.new_key_if_untouched,
                };
            }
            (after(schedule.delay(made, random)), true, true)
        }
    };
    AttemptResult::Retry {
        error,
        due,
        outcome_unknown: flags.outcome_unknown,
        new_key_if_untouched: flags.new_key_if_untouched,
        queued,
        alert,
    }
}

/// True when the payment's PG has a guard against a repeated cancel (a key or a balance check).
fn guarded(kassa: &Kassa, claim: &Claim) -> bool {
    kassa
        .gateways
        .get(claim.payment.provider)
        .is_none_or(|gateway| gateway.cancels_are_guarded())
}

/// The PG's balance is not the one this cancel was sent against. When it went down by exactly
/// this cancel's amount but no refund in the record can be taken for it (a refund kassa knows,
/// or one older than the cancel), and an earlier attempt's outcome is unknown, the dead letter
/// is in doubt: this cancel may be the one. When every attempt was answered, this cancel made no
/// refund: the balance moved by a refund made outside kassa (which the re-check imports).
fn balance_moved(intent: &CancelIntent, pg: &PgPayment) -> AttemptResult {
    let moved = intent
        .balance_before
        .checked_sub(intent.amount)
        .is_some_and(|after| pg.balance() == after);
    let in_doubt = moved && intent.outcome_unknown;
    let error = if in_doubt {
        "the PG's balance went down by this cancel's amount, but its record shows no refund kassa can take for it; a person must compare it with the PG's console".to_owned()
    } else if moved {
        "the PG's balance went down by this cancel's amount through a refund made outside kassa (every attempt of this cancel was answered); kassa records that refund from the PG's record".to_owned()
    } else {
        "the PG's balance matches neither before nor after this cancel".to_owned()
    };
    AttemptResult::Dead {
        error,
        pg_answer: describe(pg),
        outcome_unknown: intent.outcome_unknown,
        new_key_if_untouched: intent.new_key_if_untouched && !in_doubt,
    }
}

/// A dead letter whose outcome is known (the PG answered, or nothing was sent).
fn dead(error: String, pg_answer: String, new_key_if_untouched: bool) -> AttemptResult {
    AttemptResult::Dead {
        error,
        pg_answer,
        outcome_unknown: false,
        new_key_if_untouched,
    }
}

/// A retry that sent nothing and does not count: the attempt's lease had too little left for a
/// call that moves money.
fn not_sent(kassa: &Kassa, claim: &Claim) -> AttemptResult {
    AttemptResult::Retry {
        error: "not sent: too little of the attempt's lease was left for the PG's timeout".into(),
        due: kassa.env.now(),
        outcome_unknown: claim.intent.outcome_unknown,
        new_key_if_untouched: claim.intent.new_key_if_untouched,
        queued: false,
        alert: false,
    }
}

/// True when a call that moves money, with its whole timeout and a margin, ends before the
/// attempt's lease does. A call once started is never cut off at a deadline.
fn fits_in_lease(kassa: &Kassa, claim: &Claim) -> bool {
    let needed = chrono::Duration::from_std(kassa.config.retry.pg_timeout + LEASE_MARGIN)
        .unwrap_or(chrono::Duration::MAX);
    kassa.env.now() + needed <= claim.lease_until
}

fn health_of(error: &GatewayError) -> Health {
    if error.is_outage() {
        Health::Outage
    } else {
        Health::Answered
    }
}

/// One attempt. Without a guard against a repeated cancel (Payple: no key, and an inquiry that
/// shows no refunds), an attempt after an unknown outcome sends nothing; with one, it asks the
/// PG first, and after a refusal the PG keeps under the key it moves to a new key generation
/// only if the record shows nothing refunded. Then it sends, and classifies the answer.
#[expect(
    clippy::too_many_lines,
    reason = "one decision per PG answer, read top to bottom"
)]
async fn attempt(kassa: &Kassa, claim: &Claim, mode: Mode) -> (AttemptResult, Health) {
    let intent = &claim.intent;
    let payment = &claim.payment;
    let known = &claim.known_refunds;
    let Some(gateway) = kassa.gateways.get(payment.provider) else {
        let error = format!(
            "{} is not configured in this kassa",
            payment.provider.as_str()
        );
        let unknown = intent.outcome_unknown;
        let result = AttemptResult::Dead {
            error,
            pg_answer: String::new(),
            outcome_unknown: unknown,
            new_key_if_untouched: intent.new_key_if_untouched,
        };
        return (result, Health::NotAsked);
    };
    let keeps = gateway.keeps_answers_under_key();
    if !gateway.cancels_are_guarded() {
        if intent.outcome_unknown {
            let unknown = AttemptResult::Unknown {
                error: "an earlier attempt was cut off after it may have reached the PG, and this PG cannot be asked whether it refunded".into(),
            };
            return (unknown, Health::NotAsked);
        }
        if !fits_in_lease(kassa, claim) {
            return (not_sent(kassa, claim), Health::NotAsked);
        }
        let request = cancel_request(intent, payment);
        return match gateway.cancel(&request).await {
            Ok(receipt) => (refunded(receipt), Health::Answered),
            Err(error @ (GatewayError::Transient(_) | GatewayError::Throttled(_))) => (
                retry(kassa, claim, mode, error.to_string(), RetryFlags::KNOWN),
                Health::Outage,
            ),
            Err(error @ (GatewayError::Credentials(_) | GatewayError::NotFound)) => (
                dead(error.to_string(), String::new(), false),
                Health::Answered,
            ),
            Err(error) => {
                let health = health_of(&error);
                (
                    AttemptResult::Unknown {
                        error: error.to_string(),
                    },
                    health,
                )
            }
        };
    }
    let mut sending = intent.clone();
    if intent.outcome_unknown || intent.new_key_if_untouched {
        let pg = match gateway.fetch_payment(&payment.pg_tid).await {
            Ok(pg) => pg,
            Err(error) => {
                let health = health_of(&error);
                let error = format!("asking the PG first failed: {error}");
                return (
                    retry(kassa, claim, mode, error, RetryFlags::unchanged(claim)),
                    health,
                );
            }
        };
        if let Some(done) = converge(intent, &pg, known, kassa.env.now()) {
            return (done, Health::Answered);
        }
        if pg.balance() != intent.balance_before {
            return (balance_moved(intent, &pg), Health::Answered);
        }
        if intent.new_key_if_untouched && keeps {
            if let Some(unknown) = unknown_refund(&pg, known) {
                let error = format!(
                    "the PG's record shows a refund kassa does not know ({unknown}); a new key could refund twice"
                );
                return (dead(error, describe(&pg), true), Health::Answered);
            }
            let why = format!(
                "the PG kept a refusal under key {}; its record shows the balance kassa expects ({}) and only the refunds kassa knows",
                intent.pg_key_now(),
                pg.balance()
            );
            match kassa
                .store
                .new_key_generation(claim, why, kassa.env.now())
                .await
            {
                Ok(Some(updated)) => sending = updated,
                Ok(None) => {
                    // Another attempt holds the intent now; this one sends nothing.
                    return (not_sent(kassa, claim), Health::Answered);
                }
                Err(error) => {
                    let error = format!("the new key generation could not be stored: {error}");
                    return (
                        retry(kassa, claim, mode, error, RetryFlags::unchanged(claim)),
                        Health::Answered,
                    );
                }
            }
        }
    }
    if !fits_in_lease(kassa, claim) {
        return (not_sent(kassa, claim), Health::NotAsked);
    }
    // Sent under a key whose earlier request may still be carried out: what the PG answers to
    // this one cannot say that request will not go through.
    let key_in_doubt = sending.outcome_unknown;
    let request = cancel_request(&sending, payment);
    match gateway.cancel(&request).await {
        Ok(receipt) => (refunded(receipt), Health::Answered),
        Err(error @ GatewayError::Transient(_)) => {
            let flags = RetryFlags {
                outcome_unknown: key_in_doubt,
                new_key_if_untouched: false,
            };
            (
                retry(kassa, claim, mode, error.to_string(), flags),
                Health::Outage,
            )
        }
        Err(error @ GatewayError::Throttled(_)) => {
            // A refusal kept under the key needs a new one, unless the key's earlier request may
            // still run: then the key stays and stays in doubt.
            let flags = RetryFlags {
                outcome_unknown: key_in_doubt,
                new_key_if_untouched: keeps && !key_in_doubt,
            };
            (
                retry(kassa, claim, mode, error.to_string(), flags),
                Health::Outage,
            )
        }
        Err(error @ (GatewayError::NotFound | GatewayError::Credentials(_))) => (
            AttemptResult::Dead {
                error: error.to_string(),
                pg_answer: String::new(),
                outcome_unknown: key_in_doubt,
                new_key_if_untouched: keeps && !key_in_doubt,
            },
            Health::Answered,
        ),
        Err(error) => {
            // Unknown, refused, "already cancelled", another balance or unreadable: the PG's
            // record decides.
            let unknown = matches!(
                error,
                GatewayError::UnknownOutcome(_) | GatewayError::BadResponse(_)
            );
            let health = health_of(&error);
            // A refusal the PG keeps under the key: the next try needs a new one, unless the
            // key's earlier request may still run.
            let new_key = keeps && !unknown && !key_in_doubt;
            match gateway.fetch_payment(&payment.pg_tid).await {
                Ok(pg) => {
                    if let Some(done) = converge(intent, &pg, known, kassa.env.now()) {
                        return (done, Health::Answered);
                    }
                    if unknown && pg.balance() == intent.balance_before {
                        // Nothing happened at the PG yet. The same key goes again: the PG may
                        // still carry out the first request, and only the key stops a double.
                        let flags = RetryFlags {
                            outcome_unknown: true,
                            new_key_if_untouched: false,
                        };
                        return (retry(kassa, claim, mode, error.to_string(), flags), health);
                    }
                    let moved = intent
                        .balance_before
                        .checked_sub(intent.amount)
                        .is_some_and(|after| pg.balance() == after);
                    // The balance went down by this cancel's amount and no refund in the record
                    // can be taken for it: whether it was this cancel is not known if this
                    // answer or an earlier one left the outcome open. Otherwise the PG refused
                    // every try, and the refund was made outside kassa.
                    let in_doubt = unknown || key_in_doubt;
                    let result = AttemptResult::Dead {
                        error: error.to_string(),
                        pg_answer: describe(&pg),
                        outcome_unknown: in_doubt,
                        new_key_if_untouched: new_key && !(moved && in_doubt),
                    };
                    (result, Health::Answered)
                }
                Err(query_error) => {
                    let flags = RetryFlags {
                        outcome_unknown: unknown || key_in_doubt,
                        new_key_if_untouched: new_key,
                    };
                    let error = format!("{error}; and asking the PG failed: {query_error}");
                    (retry(kassa, claim, mode, error, flags), health)
                }
            }
        }
    }
}

fn cancel_request(intent: &CancelIntent, payment: &crate::domain::Payment) -> CancelRequest {
    CancelRequest {
        pg_tid: payment.pg_tid.clone(),
        order_id: payment.order_id.as_str().to_owned(),
        amount: intent.amount,
        balance_before: intent.balance_before,
        reason: intent.reason.clone(),
        idempotency_key: intent.pg_key_now(),
    }
}

fn refunded(receipt: crate::gateway::CancelReceipt) -> AttemptResult {
    AttemptResult::Refunded {
        pg_cancel_id: receipt.pg_cancel_id,
        at: receipt.at,
        warning: receipt.warning,
    }
}

/// How far apart the PG's and kassa's clocks may be when a refund's time in the PG's record is
/// compared with when kassa's attempt started.
pub const PG_CLOCK_SLACK: chrono::TimeDelta = crate::domain::payment::REFUND_CLOCK_SLACK;

/// True when `entry` in the PG's record is the refund kassa recorded as `known`: the same PG
/// cancel id (or none given), amount, and time within a second when both have one.
fn is_known(entry: &PgCancellation, known: &KnownRefund) -> bool {
    if known.amount != entry.amount {
        return false;
    }
    // An id that names this refund alone decides, whatever the times say (a person's resolve
    // records when they resolved, not when the PG refunded).
    if entry.id_is_unique && !known.pg_cancel_id.is_empty() {
        return known.pg_cancel_id == entry.pg_cancel_id;
    }
    let same_id = known.pg_cancel_id.is_empty() || known.pg_cancel_id == entry.pg_cancel_id;
    let same_time = entry.at == DateTime::UNIX_EPOCH
        || known
            .at
            .is_none_or(|at| (at - entry.at).num_seconds().abs() <= 1);
    same_id && same_time
}

/// The refunds kassa recorded among `intents`, as the PG's record would show them.
pub fn known_refunds(intents: &[CancelIntent]) -> Vec<KnownRefund> {
    intents
        .iter()
        .filter(|intent| intent.state == IntentState::Done)
        .map(|intent| KnownRefund {
            pg_cancel_id: intent.pg_cancel_id.clone().unwrap_or_default(),
            amount: intent.amount,
            at: intent.done_at,
        })
        .collect()
}

/// The refunds in the PG's record that are none of the refunds kassa knows.
pub fn unknown_entries<'a>(pg: &'a PgPayment, known: &[KnownRefund]) -> Vec<&'a PgCancellation> {
    let mut unmatched: Vec<&KnownRefund> = known.iter().collect();
    let mut unknown = Vec::new();
    for entry in &pg.cancellations {
        match unmatched.iter().position(|known| is_known(entry, known)) {
            Some(index) => {
                unmatched.remove(index);
            }
            None => unknown.push(entry),
        }
    }
    unknown
}

/// A refund in the PG's record that is none of the refunds kassa knows, if there is one.
fn unknown_refund(pg: &PgPayment, known: &[KnownRefund]) -> Option<String> {
    unknown_entries(pg, known)
        .first()
        .map(|entry| format!("{} ({})", entry.amount, entry.pg_cancel_id))
}

/// Decides from the PG's record whether `intent` is already carried out: its balance went down
/// by exactly the intent's amount from the balance the intent was sent against, and, where the
/// PG lists its refunds, one of them is a refund of this amount that kassa does not know and
/// that was made no earlier than this intent's first attempt. A full cancel is done once the
/// balance is gone, whoever emptied it.
fn converge(
    intent: &CancelIntent,
    pg: &PgPayment,
    known: &[KnownRefund],
    now: DateTime<Utc>,
) -> Option<AttemptResult> {
    let expected_after = intent.balance_before.checked_sub(intent.amount)?;
    if pg.balance() != expected_after {
        return None;
    }
    let started = intent.first_attempt_at.map(|at| at - PG_CLOCK_SLACK);
    let fresh = unknown_entries(pg, known).into_iter().rev().find(|entry| {
        entry.amount == intent.amount
            && (entry.at == DateTime::UNIX_EPOCH || started.is_none_or(|start| entry.at >= start))
    });
    let (pg_cancel_id, at) = match fresh {
        Some(entry) => (entry.pg_cancel_id.clone(), entry.at),
        None if pg.cancellations.is_empty() || expected_after.is_zero() => (String::new(), now),
        None => return None,
    };
    let at = if at == DateTime::UNIX_EPOCH { now } else { at };
    Some(AttemptResult::Refunded {
        pg_cancel_id,
        at,
        warning: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CancelKind, PgTid};
    use crate::gateway::{PgCancellation, PgStatus};

    fn won(value: i64) -> Amount {
        Amount::non_negative(value).unwrap()
    }

    fn intent(amount: i64, balance_before: i64) -> CancelIntent {
        let mut intent = CancelIntent::new(
            CancelId::from_u128(1),
            PaymentId::from_u128(2),
            CancelKind::Cancel,
            won(amount),
            String::new(),
            "k".into(),
            DateTime::UNIX_EPOCH,
        );
        intent.balance_before = won(balance_before);
        intent
    }

    fn pg(amount: i64, cancelled: i64) -> PgPayment {
        PgPayment {
            pg_tid: PgTid::parse("imp_1").unwrap(),
            order_id: "order-1".into(),
            status: PgStatus::Paid,
            amount: won(amount),
            cancelled_amount: won(cancelled),
            currency: "KRW".into(),
            paid_at: None,
            cancellations: vec![PgCancellation {
                pg_cancel_id: "c1".into(),
                id_is_unique: true,
                amount: won(cancelled),
                at: DateTime::UNIX_EPOCH,
            }],
        }
    }

    fn known(id: &str, amount: i64) -> KnownRefund {
        KnownRefund {
            pg_cancel_id: id.into(),
            amount: won(amount),
            at: Some(DateTime::UNIX_EPOCH),
        }
    }

    #[test]
    fn a_refund_counts_as_done_only_when_the_pg_balance_moved_by_exactly_its_amount() {
        let now = DateTime::UNIX_EPOCH;
        assert!(matches!(
            converge(&intent(100, 100), &pg(100, 100), &[], now),
            Some(AttemptResult::Refunded { .. })
        ));
        assert!(converge(&intent(100, 100), &pg(100, 0), &[], now).is_none());
        assert!(matches!(
            converge(&intent(30, 100), &pg(100, 30), &[], now),
            Some(AttemptResult::Refunded { .. })
        ));
        assert!(converge(&intent(30, 100), &pg(100, 60), &[], now).is_none());
    }

    #[test]
    fn a_refund_kassa_already_recorded_is_never_taken_for_another_intents() {
        let now = DateTime::UNIX_EPOCH;
        // 30 of 100 are refunded at the PG, and kassa recorded exactly that refund (c1) for
        // another intent: a second intent of 30 sent against 100 is not done by it.
        assert!(converge(&intent(30, 100), &pg(100, 30), &[known("c1", 30)], now).is_none());
        assert!(converge(&intent(30, 100), &pg(100, 30), &[known("c9", 30)], now).is_some());
        // A refund older than this intent's first attempt (a console refund) is not its.
        let mut record = pg(100, 30);
        record.cancellations[0].at = DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(1);
        let mut late = intent(30, 100);
        late.first_attempt_at = Some(DateTime::UNIX_EPOCH + chrono::TimeDelta::hours(1));
        assert!(converge(&late, &record, &[], now).is_none());
        late.first_attempt_at = Some(DateTime::UNIX_EPOCH);
        assert!(converge(&late, &record, &[], now).is_some());
    }

    #[test]
    fn a_refund_kassa_does_not_know_blocks_a_new_key() {
        let record = pg(100, 30);
        assert_eq!(unknown_refund(&record, &[known("c1", 30)]), None);
        assert_eq!(unknown_refund(&record, &[known("", 30)]), None);
        assert!(unknown_refund(&record, &[]).is_some());
        assert!(unknown_refund(&record, &[known("other", 30)]).is_some());
    }
}

//! Nothing missed: kassa asks the PGs itself. A webhook, a settlement line or the sweep names a
//! PG payment; the re-check fetches it and stores it when kassa does not have it, or imports
//! the refunds made outside kassa (the PG's console) when it does. The sweep re-asks about READY
//! orders (expiring those nobody paid) and re-reads recently active payments.
//!
//! Invariants: only what kassa fetched from the PG itself is applied, never what a notice says;
//! a refund the PG's record lists is recorded once (by its PG id, or amount and time), and only
//! when no cancel of the payment is running, dead or in doubt (those account for their own
//! refunds); every step is bounded (`SWEEP_ORDERS_MAX`, `SWEEP_PAYMENTS_MAX`).

use super::cancel::{known_refunds, unknown_entries};
use super::payments::{Source, complete, store_fetched};
use super::{FlowError, Kassa};
use crate::domain::{CancelId, IntentState, OrderId, OrderStatus, PaymentStatus, PgTid, Provider};
use crate::gateway::{GatewayError, PgStatus};
use crate::store::{OutsideOutcome, OutsideRefund, PaymentFilter, PaymentView};

/// Most READY orders one sweep asks about.
pub const SWEEP_ORDERS_MAX: usize = 50;
/// Most stored payments one sweep re-reads.
pub const SWEEP_PAYMENTS_MAX: usize = 50;
/// Longest one sweep asks the PGs: well within a job's lease, so the queue moves on.
pub const SWEEP_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(120);
/// How soon a day is synced again after a payment of it was found.
const RESYNC_DELAY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);
const ORDERS_CURSOR: &str = "sweep:orders";
const PAYMENTS_CURSOR: &str = "sweep:payments";

/// Takes a hint (a webhook names a payment): one write queues its re-check, which asks the PG.
/// Nothing the hint says is applied. An error only when that write failed.
pub async fn hint(
    kassa: &Kassa,
    provider: Provider,
    pg_tid: PgTid,
    order_id: Option<OrderId>,
) -> Result<(), FlowError> {
    let job = crate::domain::Job::Recheck {
        provider,
        pg_tid,
        order_id,
    };
    kassa
        .store
        .enqueue(
            kassa.env.new_uuid().as_u128(),
            job,
            Some(provider),
            kassa.env.now(),
        )
        .await?;
    kassa.wake.notify_one();
    Ok(())
}

/// Asks the PG about payment `pg_tid` (a webhook, a settlement line) and applies what it says.
/// `Ok` when there is nothing more to do; an error when the PG should be asked again later.
pub async fn recheck(
    kassa: &Kassa,
    provider: Provider,
    pg_tid: &PgTid,
    claimed_order: Option<&OrderId>,
) -> Result<(), FlowError> {
    if let Some(view) = kassa.store.payment_by_pg(provider, pg_tid).await? {
        import_refunds(kassa, &view, "the PG's record").await?;
        return Ok(());
    }
    let before: Vec<crate::domain::PaymentId> = match claimed_order {
        Some(order) => kassa
            .store
            .payments_of_order(order)
            .await?
            .iter()
            .map(|view| view.payment.id)
            .collect(),
        None => Vec::new(),
    };
    match complete(kassa, provider, pg_tid, claimed_order, Source::Recheck).await {
        Ok(completion) => {
            let view = completion.view();
            tracing::info!(provider = provider.as_str(), pg_tid = %pg_tid, payment_id = %view.payment.id, status = %view.payment.status(), "re-check: the PG's payment is stored");
            // Only a payment stored just now has a day to sync again and refunds to import.
            if before.contains(&view.payment.id) {
                return Ok(());
            }
            after_found(kassa, view).await
        }
        // The PG or the store is not available: ask again later.
        Err(error @ (FlowError::Gateway(_) | FlowError::Store(_))) => Err(error),
        // Nothing to store (not paid, not found, another order, refused): the hint is done.
        Err(error) => {
            tracing::info!(provider = provider.as_str(), pg_tid = %pg_tid, error = %error, "re-check: nothing to store");
            Ok(())
        }
    }
}

/// A payment kassa has just found (a webhook, the sweep, a settlement line): the refunds its
/// record lists are imported, and a settled day of a PG with settlement lines is synced again,
/// so that a CANCEL line seen before kassa had the payment (a refund made in the console the
/// same day) is recorded now.
async fn after_found(kassa: &Kassa, view: &PaymentView) -> Result<(), FlowError> {
    import_refunds(kassa, view, "the PG's record").await?;
    let provider = view.payment.provider;
    let day = crate::domain::calendar::kst_date(view.payment.paid_at);
    let today = crate::domain::calendar::kst_date(kassa.env.now());
    if super::settlement::SETTLING_PROVIDERS.contains(&provider) && day < today {
        let job = crate::domain::Job::SettlementSync {
            provider,
            date: day,
        };
        kassa
            .store
            .enqueue(
                kassa.env.new_uuid().as_u128(),
                job,
                Some(provider),
                kassa.env.now() + RESYNC_DELAY,
            )
            .await?;
    }
    Ok(())
}

/// Imports the refunds the PG's record lists that kassa does not know (made in the PG's
/// console, say). Answers how many were recorded.
pub async fn import_refunds(
    kassa: &Kassa,
    view: &PaymentView,
    source: &str,
) -> Result<usize, FlowError> {
    let payment = &view.payment;
    let Some(gateway) = kassa.gateways.get(payment.provider) else {
        return Ok(0);
    };
    // Payple's inquiry shows no refunds: its refunds come from the settlement lines.
    if !gateway.cancels_are_guarded() || payment.status().is_rollback() {
        return Ok(0);
    }
    let intents = kassa.store.intents_of_payment(payment.id).await?;
    // A cancel still to run or in doubt accounts for whatever refund it made when it next asks
    // the PG: nothing is imported beside it.
    if intents.iter().any(|intent| {
        intent.state != IntentState::Dead && intent.may_explain_refund(intent.amount, None)
    }) {
        return Ok(0);
    }
    let pg = gateway
        .fetch_payment(&payment.pg_tid)
        .await
        .map_err(FlowError::Gateway)?;
    let known = known_refunds(&intents);
    let mut recorded = 0;
    for entry in unknown_entries(&pg, &known) {
        // A refund a dead letter may still be (a refund by hand, a late request under an older
        // key): its re-drive or resolve decides, not the import.
        let at = (entry.at != chrono::DateTime::UNIX_EPOCH).then_some(entry.at);
        if intents
            .iter()
            .any(|intent| intent.may_explain_refund(entry.amount, at))
        {
            continue;
        }
        let refund = OutsideRefund {
            pg_cancel_id: entry.pg_cancel_id.clone(),
            id_is_unique: entry.id_is_unique,
            from_line: false,
            amount: entry.amount,
            at: if entry.at == chrono::DateTime::UNIX_EPOCH {
                kassa.env.now()
            } else {
                entry.at
            },
            source: source.to_owned(),
        };
        let outcome = kassa
            .store
            .record_outside_refund(
                payment.id,
                refund,
                CancelId::from_uuid(kassa.env.new_uuid()),
                kassa.env.new_uuid().as_u128(),
                kassa.env.now(),
            )
            .await?;
        match outcome {
            OutsideOutcome::Recorded => {
                recorded += 1;
                tracing::warn!(payment_id = %payment.id, amount = entry.amount.won(), pg_cancel_id = %entry.pg_cancel_id, "a refund made outside kassa was recorded from the PG's record");
            }
            OutsideOutcome::Known | OutsideOutcome::Busy | OutsideOutcome::NotFound => {}
            OutsideOutcome::TooMuch => break,
        }
    }
    Ok(recorded)
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub orders_asked: usize,
    pub payments_found: usize,
    pub expired: usize,
    pub payments_reread: usize,
    pub refunds_imported: usize,
}

/// One sweep: the next READY orders and the next recently active payments, each set bounded,
/// each continuing where the last sweep stopped.
pub async fn sweep(kassa: &Kassa) -> Result<SweepReport, FlowError> {
    let mut report = SweepReport::default();
    let mut pass = Pass {
        deadline: tokio::time::Instant::now() + SWEEP_TIME_MAX,
        down: Vec::new(),
    };
    sweep_orders(kassa, &mut report, &mut pass).await?;
    sweep_payments(kassa, &mut report, &mut pass).await?;
    if report != SweepReport::default() {
        tracing::info!(
            orders_asked = report.orders_asked,
            payments_found = report.payments_found,
            expired = report.expired,
            payments_reread = report.payments_reread,
            refunds_imported = report.refunds_imported,
            "re-check sweep"
        );
    }
    Ok(report)
}

/// What one sweep keeps between its steps: when it must stop, and the PGs that failed it (or
/// whose circuit breaker is open), which it asks nothing more this time.
struct Pass {
    deadline: tokio::time::Instant,
    down: Vec<Provider>,
}

impl Pass {
    /// True when `provider` may be asked now.
    fn may_ask(&self, kassa: &Kassa, provider: Provider) -> bool {
        tokio::time::Instant::now() < self.deadline
            && !self.down.contains(&provider)
            && !matches!(
                kassa.breakers.gate(provider, kassa.env.now()),
                Some(crate::store::Gate::Paused(_))
            )
    }

    /// A question to `provider` failed: an outage makes the rest of this sweep leave it alone
    /// (and counts for its breaker); anything else was this one item's.
    fn failed(&mut self, kassa: &Kassa, provider: Provider, error: &FlowError) {
        if let FlowError::Gateway(error) = error
            && error.is_outage()
        {
            kassa
                .breakers
                .record(provider, super::breaker::Health::Outage, kassa.env.now());
            self.down.push(provider);
        }
    }

    /// `provider` answered.
    fn answered(kassa: &Kassa, provider: Provider) {
        kassa
            .breakers
            .record(provider, super::breaker::Health::Answered, kassa.env.now());
    }
}

async fn sweep_orders(
    kassa: &Kassa,
    report: &mut SweepReport,
    pass: &mut Pass,
) -> Result<(), FlowError> {
    let now = kassa.env.now();
    let cursor = kassa.store.meta_text(ORDERS_CURSOR).await?.and_then(|raw| {
        let (ms, id) = raw.split_once(':')?;
        Some((ms.parse().ok()?, id.to_owned()))
    });
    let orders = kassa.store.ready_orders(cursor, SWEEP_ORDERS_MAX).await?;
    let next = (orders.len() == SWEEP_ORDERS_MAX)
        .then(|| orders.last())
        .flatten()
        .map(|order| format!("{}:{}", order.created_at.timestamp_millis(), order.id()));
    let max_age = chrono::Duration::from_std(kassa.config.recheck.ready_order_max_age)
        .unwrap_or(chrono::Duration::hours(72));
    for order in orders {
        if order.status() != OrderStatus::Ready {
            continue;
        }
        let provider = order.draft.provider;
        if !pass.may_ask(kassa, provider) {
            continue;
        }
        let past_age = now - order.created_at > max_age;
        let found = match ask_about_order(kassa, provider, &order, past_age).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(order_id = %order.id(), provider = provider.as_str(), error = %error, "re-check sweep: the PG could not be asked about an order; it is left alone until the next sweep");
                pass.failed(kassa, provider, &error);
                continue;
            }
        };
        Pass::answered(kassa, provider);
        report.orders_asked += 1;
        report.payments_found += found.paid;
        if found.paid == 0 && !found.pending && past_age {
            // Asked once more past the limit and the PG has nothing: nobody paid it.
            if let Some(order) = kassa.store.expire_order(order.id()).await?
                && order.status() == OrderStatus::Expired
            {
                report.expired += 1;
                tracing::info!(order_id = %order.id(), "order EXPIRED: READY past recheck.ready_order_max_age_h and the PG has no payment for it");
            }
        }
    }
    kassa.store.set_meta_text(ORDERS_CURSOR, next).await?;
    Ok(())
}

/// What the PG has for an order.
struct Found {
    /// Payments paid (or paid and refunded since).
    paid: usize,
    /// A payment still waiting (a virtual account before its deposit): not to be expired.
    pending: bool,
}

/// Asks `provider` about an order and stores each payment the PG has taken for it (verified,
/// as always). `last_look`: the order is past its age, and this is the ask before it expires.
async fn ask_about_order(
    kassa: &Kassa,
    provider: Provider,
    order: &crate::domain::Order,
    last_look: bool,
) -> Result<Found, FlowError> {
    let order_id = order.id();
    let Some(gateway) = kassa.gateways.get(provider) else {
        return Ok(Found {
            paid: 0,
            pending: false,
        });
    };
    let mut pending = false;
    let found = match provider {
        // PortOne's `ready` is any unpaid try (a closed window too), so it keeps nothing open:
        // a virtual account deposited after the order expired still arrives by its webhook,
        // and an EXPIRED order is paid by it like a READY one.
        Provider::PortOne => gateway
            .find_paid_by_order(order_id.as_str())
            .await
            .map_err(FlowError::Gateway)?,
        // Toss by order id; a payment the buyer authorised but nobody confirmed is left alone:
        // the sweep never confirms, and Toss expires it.
        Provider::Toss => match gateway.fetch_by_order(order_id.as_str()).await {
            Ok(pg) if pg.status == PgStatus::Paid || pg.status == PgStatus::Cancelled => vec![pg],
            Ok(pg) => {
                pending = pg.status == PgStatus::Ready;
                Vec::new()
            }
            Err(GatewayError::NotFound) => Vec::new(),
            Err(error) => return Err(FlowError::Gateway(error)),
        },
        // Payple asks that its inquiry be used only for missed results, and it needs the
        // payment's day: its missed payments come from the settlement lines. Only the ask
        // before the order expires uses the inquiry, for the day the order was made.
        Provider::Payple if last_look => {
            let day = crate::domain::calendar::kst_date(order.created_at);
            let mut found = Vec::new();
            for pay_type in ["card", "transfer"] {
                let Ok(reference) =
                    crate::gateway::payple::payment_ref(pay_type, day, order_id.as_str())
                else {
                    continue;
                };
                match gateway.fetch_payment(&reference).await {
                    Ok(pg) => {
                        found.push(pg);
                        break;
                    }
                    Err(GatewayError::NotFound) => {}
                    Err(error) => return Err(FlowError::Gateway(error)),
                }
            }
            found
        }
        Provider::Payple => Vec::new(),
    };
    let paid = found.len();
    // Every payment first (a second paid payment of an order is rolled back), then what follows
    // from each: a failure there must not keep another payment from being stored.
    let mut stored = Vec::new();
    for pg in found {
        let pg_tid = pg.pg_tid.clone();
        match store_fetched(
            kassa,
            provider,
            &pg_tid,
            &pg,
            Some(order_id),
            Source::Recheck,
        )
        .await
        {
            Ok(completion) => {
                tracing::info!(order_id = %order_id, payment_id = %completion.view().payment.id, "re-check sweep stored a payment kassa had not heard of");
                stored.push(completion.view().clone());
            }
            Err(error) => {
                tracing::info!(order_id = %order_id, pg_tid = %pg_tid, error = %error, "re-check sweep: a PG payment was not stored");
            }
        }
    }
    for view in &stored {
        if let Err(error) = after_found(kassa, view).await {
            tracing::warn!(payment_id = %view.payment.id, error = %error, "re-check sweep: the refunds of a payment just found could not be read; the next sweep reads them");
        }
    }
    Ok(Found { paid, pending })
}

async fn sweep_payments(
    kassa: &Kassa,
    report: &mut SweepReport,
    pass: &mut Pass,
) -> Result<(), FlowError> {
    let now = kassa.env.now();
    let active = chrono::Duration::from_std(kassa.config.recheck.active)
        .unwrap_or(chrono::Duration::days(7));
    let cursor = kassa
        .store
        .meta_text(PAYMENTS_CURSOR)
        .await?
        .and_then(|raw| crate::domain::PaymentId::parse(&raw).ok());
    let filter = PaymentFilter {
        from: Some(crate::domain::calendar::kst_date(now - active)),
        ..PaymentFilter::default()
    };
    let page = kassa
        .store
        .list_payments(filter, SWEEP_PAYMENTS_MAX, cursor)
        .await?;
    for view in &page.items {
        // A payment whose cancel the PG refused (`CANCEL_FAILED`) is re-read too: a refund
        // made outside kassa is often why it was refused.
        if !matches!(
            view.payment.status(),
            PaymentStatus::Paid | PaymentStatus::PartiallyCancelled | PaymentStatus::CancelFailed
        ) {
            continue;
        }
        let provider = view.payment.provider;
        if !pass.may_ask(kassa, provider) {
            continue;
        }
        report.payments_reread += 1;
        match import_refunds(kassa, view, "the PG's record (re-check sweep)").await {
            Ok(count) => {
                Pass::answered(kassa, provider);
                report.refunds_imported += count;
            }
            Err(error) => {
                tracing::warn!(payment_id = %view.payment.id, error = %error, "re-check sweep: a payment could not be re-read; it is left alone until the next sweep");
                pass.failed(kassa, provider, &error);
            }
        }
    }
    let next = page.next_cursor.map(|id| id.to_string());
    kassa.store.set_meta_text(PAYMENTS_CURSOR, next).await?;
    Ok(())
}

//! Completing a payment: from the browser's completion call, the PG's redirect or its webhook.
//! All of them converge here, fetch the payment from the PG and store it once.

use super::{FlowError, Kassa, cancel};
use crate::domain::{Admission, CancelId, OrderId, PaymentId, PaymentStatus, PgTid, Provider};
use crate::gateway::{ConfirmRequest, GatewayError, PgStatus};
use crate::store::{NewPgPayment, PaymentView, RecordOutcome};

/// Where a completion left the payment.
#[derive(Debug, Clone)]
pub enum Completion {
    /// The payment is stored (now or before); its status says where it stands.
    Stored(PaymentView),
    /// The PG took money kassa refused, and the rollback was started.
    RolledBack {
        view: PaymentView,
        admission: Admission,
    },
}

impl Completion {
    pub fn view(&self) -> &PaymentView {
        match self {
            Completion::Stored(view) | Completion::RolledBack { view, .. } => view,
        }
    }
}

/// Where the hint came from, for the payment's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Browser,
    Redirect,
    Webhook,
    /// kassa asked the PG itself: the re-check sweep, or a settlement line.
    Recheck,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Browser => "browser completion",
            Source::Redirect => "checkout redirect",
            Source::Webhook => "webhook",
            Source::Recheck => "re-check",
        }
    }
}

/// Verifies PG payment `pg_tid` with the PG and stores it against its order, once.
///
/// `claimed_order` is what the caller says the payment is for; the PG's own order id decides,
/// and a different claim is refused. A payment already stored answers as stored without asking
/// the PG again, so duplicate and late hints change nothing.
pub async fn complete(
    kassa: &Kassa,
    provider: Provider,
    pg_tid: &PgTid,
    claimed_order: Option<&OrderId>,
    source: Source,
) -> Result<Completion, FlowError> {
    if let Some(view) = kassa.store.payment_by_pg(provider, pg_tid).await? {
        check_claim(&view.payment.order_id, claimed_order)?;
        return known(kassa, view).await;
    }
    if provider == Provider::Payple
        && let Some(order_id) = claimed_order
    {
        // A Payple payment is identified by its order (PCD_PAY_OID): a second post for the same
        // order, whatever type or date it claims, is the same payment, never a second one.
        let stored = kassa.store.payments_of_order(order_id).await?;
        if let Some(view) = stored
            .into_iter()
            .find(|view| view.payment.provider == Provider::Payple)
        {
            return known(kassa, view).await;
        }
    }
    let gateway = gateway_of(kassa, provider)?;
    let pg = gateway
        .fetch_payment(pg_tid)
        .await
        .map_err(|error| match error {
            GatewayError::NotFound => FlowError::NotFound { what: "PG payment" },
            other => FlowError::Gateway(other),
        })?;
    store_fetched(kassa, provider, pg_tid, &pg, claimed_order, source).await
}

fn gateway_of(
    kassa: &Kassa,
    provider: Provider,
) -> Result<&std::sync::Arc<dyn crate::gateway::PaymentGateway>, FlowError> {
    kassa
        .gateways
        .get(provider)
        .ok_or(FlowError::Unprocessable {
            code: "PROVIDER_NOT_AVAILABLE",
            message: format!("{} is not configured in this kassa", provider.as_str()),
        })
}

/// Confirms an authorised Toss payment with the order's own amount, then stores it as any
/// verified payment. The amount the browser brought back is never sent: if the buyer changed
/// it, Toss refuses the confirm and nothing is taken. A second payment for a paid order is not
/// confirmed at all, so no money needs to go back.
pub async fn confirm_toss(
    kassa: &Kassa,
    payment_key: &PgTid,
    order_id: &OrderId,
    claimed_amount: Option<i64>,
    source: Source,
) -> Result<Completion, FlowError> {
    if let Some(view) = kassa
        .store
        .payment_by_pg(Provider::Toss, payment_key)
        .await?
    {
        check_claim(&view.payment.order_id, Some(order_id))?;
        return known(kassa, view).await;
    }
    let order = kassa
        .store
        .order(order_id)
        .await?
        .ok_or(FlowError::NotFound { what: "order" })?;
    if order.draft.provider != Provider::Toss {
        return Err(FlowError::Unprocessable {
            code: "PROVIDER_MISMATCH",
            message: "this order is not paid through Toss".into(),
        });
    }
    if order.paid_payment_id().is_some() {
        return Err(FlowError::Conflict {
            code: "ORDER_ALREADY_PAID",
            message: "this order is already paid; the second payment was not confirmed, so nothing was taken".into(),
        });
    }
    let tampered = claimed_amount.is_some_and(|amount| amount != order.draft.amount.won());
    if tampered {
        tracing::warn!(order_id = %order_id, claimed = ?claimed_amount, expected = order.draft.amount.won(), "the amount brought back from Toss differs from the order; confirming with the order's own");
    }
    let gateway = gateway_of(kassa, Provider::Toss)?;
    let request = ConfirmRequest {
        pg_tid: payment_key.clone(),
        order_id: order_id.as_str().to_owned(),
        amount: order.draft.amount,
    };
    let pg = match gateway.confirm(&request).await {
        Ok(pg) => pg,
        Err(GatewayError::NotFound) => return Err(FlowError::NotFound { what: "PG payment" }),
        Err(GatewayError::Refused { code, message }) if code != "ALREADY_PROCESSED_PAYMENT" => {
            if tampered {
                return Err(FlowError::Unprocessable {
                    code: "AMOUNT_MISMATCH",
                    message: format!(
                        "the amount paid differs from the order's {}; Toss refused the confirm and nothing was taken",
                        order.draft.amount
                    ),
                });
            }
            return Err(FlowError::Unprocessable {
                code: "PAYMENT_NOT_CONFIRMED",
                message: format!("Toss refused the confirm ({code}): {message}"),
            });
        }
        Err(error) => {
            // Already processed, lost, or unreadable: what Toss holds now decides.
            let pg = gateway
                .fetch_payment(payment_key)
                .await
                .map_err(|_| FlowError::Gateway(error.clone()))?;
            if pg.status != PgStatus::Paid {
                return Err(FlowError::Gateway(error));
            }
            pg
        }
    };
    store_fetched(
        kassa,
        Provider::Toss,
        payment_key,
        &pg,
        Some(order_id),
        source,
    )
    .await
}

/// Stores a payment fetched from (or confirmed by) the PG, once, against its order.
pub(super) async fn store_fetched(
    kassa: &Kassa,
    provider: Provider,
    pg_tid: &PgTid,
    pg: &crate::gateway::PgPayment,
    claimed_order: Option<&OrderId>,
    source: Source,
) -> Result<Completion, FlowError> {
    // A Payple payment is its order's: the inquiry's answer names its type and day, which may
    // not be what the hint guessed (a settlement line's `easypay`, say); the order must agree.
    let same_payment = pg.pg_tid == *pg_tid
        || (provider == Provider::Payple
            && claimed_order.is_some_and(|order| order.as_str() == pg.order_id));
    if !same_payment {
        return Err(FlowError::Gateway(GatewayError::BadResponse(
            "the PG answered for another payment".into(),
        )));
    }
    let pg_tid = &pg.pg_tid;
    let order_id =
        OrderId::parse(&pg.order_id).map_err(|_| FlowError::NotFound { what: "order" })?;
    check_claim(&order_id, claimed_order)?;
    match pg.status {
        PgStatus::Paid => {}
        PgStatus::Ready | PgStatus::Other => {
            return Err(FlowError::Conflict {
                code: "PAYMENT_NOT_PAID",
                message: "the PG has not completed this payment".into(),
            });
        }
        PgStatus::Failed => {
            return Err(FlowError::Unprocessable {
                code: "PAYMENT_FAILED",
                message: "the PG reports this payment failed".into(),
            });
        }
        // Found by kassa itself after it was refunded outside kassa (the PG's console): it is
        // stored as paid, and its refunds are imported from the same record next.
        PgStatus::Cancelled if source == Source::Recheck => {
            // A refunded payment of an order that another payment pays needs nothing given back:
            // it is not stored (a rollback of nothing would follow).
            let paid_by_other = kassa
                .store
                .order(&order_id)
                .await?
                .is_some_and(|order| order.paid_payment_id().is_some());
            if paid_by_other {
                return Err(FlowError::Conflict {
                    code: "PAYMENT_CANCELLED",
                    message: "the PG reports this payment refunded, and its order is paid".into(),
                });
            }
        }
        PgStatus::Cancelled => {
            return Err(FlowError::Conflict {
                code: "PAYMENT_CANCELLED",
                message: "the PG reports this payment cancelled".into(),
            });
        }
    }
    let pg_key = kassa.env.new_uuid();
    let new = NewPgPayment {
        payment_id: PaymentId::from_uuid(kassa.env.new_uuid()),
        cancel_id: CancelId::from_uuid(pg_key),
        pg_key: pg_key.simple().to_string(),
        provider,
        pg_tid: pg_tid.clone(),
        order_id: order_id.clone(),
        amount: pg.amount,
        // A payment in another currency is never the order's amount: it is rolled back too.
        currency_ok: pg.currency.eq_ignore_ascii_case("KRW"),
        pg_balance: pg.balance(),
        paid_at: pg.paid_at.unwrap_or_else(|| kassa.env.now()),
        now: kassa.env.now(),
        source: source.as_str(),
    };
    if new.amount.is_zero() {
        return Err(FlowError::Gateway(GatewayError::BadResponse(
            "the PG reports a paid payment of 0 won".into(),
        )));
    }
    match kassa.store.record_pg_payment(new).await? {
        RecordOutcome::OrderNotFound => {
            tracing::warn!(provider = provider.as_str(), pg_tid = %pg_tid, order_id = %order_id, "the PG has a paid payment for an order kassa does not know; nothing stored");
            Err(FlowError::NotFound { what: "order" })
        }
        RecordOutcome::Known(view) => known(kassa, view).await,
        RecordOutcome::Paid(view) => {
            tracing::info!(payment_id = %view.payment.id, order_id = %order_id, amount = view.payment.amount.won(), "payment stored as PAID");
            Ok(Completion::Stored(view))
        }
        RecordOutcome::Rollback {
            view,
            intent,
            admission,
        } => {
            tracing::warn!(payment_id = %view.payment.id, order_id = %order_id, reason = %intent.reason, "payment refused; rolling it back at the PG");
            cancel::drive_inline(kassa, &intent).await?;
            let view = kassa.store.payment(view.payment.id).await?.unwrap_or(view);
            Ok(Completion::RolledBack { view, admission })
        }
    }
}

fn check_claim(actual: &OrderId, claimed: Option<&OrderId>) -> Result<(), FlowError> {
    match claimed {
        Some(claimed) if claimed != actual => Err(FlowError::Unprocessable {
            code: "MERCHANT_UID_MISMATCH",
            message: "the PG's payment belongs to another order".into(),
        }),
        _ => Ok(()),
    }
}

/// A payment stored before: answer as stored, telling a rollback apart again.
async fn known(kassa: &Kassa, view: PaymentView) -> Result<Completion, FlowError> {
    if !matches!(
        view.payment.status(),
        PaymentStatus::RollbackPending
            | PaymentStatus::RollbackRefunded
            | PaymentStatus::RollbackFailed
    ) {
        return Ok(Completion::Stored(view));
    }
    let order = kassa
        .store
        .order(&view.payment.order_id)
        .await?
        .ok_or(FlowError::NotFound { what: "order" })?;
    let admission = match order.paid_payment_id() {
        Some(paid_by)
            if paid_by != view.payment.id && view.payment.amount == order.draft.amount =>
        {
            Admission::RollbackAlreadyPaid { paid_by }
        }
        _ => Admission::RollbackAmountMismatch {
            expected: order.draft.amount,
            actual: view.payment.amount,
        },
    };
    Ok(Completion::RolledBack { view, admission })
}

/// Who looks at a payment: the merchant, or a buyer known by their signed cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Admin,
    Buyer(crate::domain::BuyerId),
}

/// The payment `id` as `viewer` may see it: any for the merchant, their own for a buyer.
/// Another buyer's payment is answered as not found, so ids cannot be probed.
pub async fn visible(
    kassa: &Kassa,
    viewer: Viewer,
    id: PaymentId,
) -> Result<PaymentView, FlowError> {
    let not_found = FlowError::NotFound { what: "payment" };
    let view = kassa.store.payment(id).await?.ok_or(not_found)?;
    match viewer {
        Viewer::Admin => Ok(view),
        Viewer::Buyer(buyer) if view.payment.buyer_id == Some(buyer) => Ok(view),
        Viewer::Buyer(_) => Err(FlowError::NotFound { what: "payment" }),
    }
}

/// Most characters of a payment search.
pub const SEARCH_CHARS_MAX: usize = 200;

/// Payments the merchant looks for: `q` is a payment id, an order id, a PG's payment id or a
/// buyer e-mail (an e-mail scans the filtered range, the others are exact lookups); without
/// `q`, the filtered list, newest first.
pub async fn search(
    kassa: &Kassa,
    q: &str,
    filter: crate::store::PaymentFilter,
    limit: usize,
    cursor: Option<PaymentId>,
) -> Result<crate::store::PaymentPage, FlowError> {
    let q = q.trim();
    let page = |items: Vec<PaymentView>| crate::store::PaymentPage {
        items,
        next_cursor: None,
    };
    if q.is_empty() {
        return Ok(kassa.store.list_payments(filter, limit, cursor).await?);
    }
    if q.chars().count() > SEARCH_CHARS_MAX {
        return Err(FlowError::Unprocessable {
            code: "INVALID_QUERY",
            message: format!("a search has at most {SEARCH_CHARS_MAX} characters"),
        });
    }
    if q.contains('@') {
        let filter = crate::store::PaymentFilter {
            buyer_email: Some(q.to_owned()),
            ..filter
        };
        return Ok(kassa.store.list_payments(filter, limit, cursor).await?);
    }
    let keep = |view: &PaymentView| {
        filter
            .status
            .is_none_or(|status| view.payment.status() == status)
            && filter
                .provider
                .is_none_or(|provider| view.payment.provider == provider)
    };
    if let Ok(id) = PaymentId::parse(q) {
        let found = kassa.store.payment(id).await?;
        return Ok(page(found.into_iter().filter(keep).collect()));
    }
    let mut found = Vec::new();
    if let Ok(order_id) = OrderId::parse(q) {
        found.extend(kassa.store.payments_of_order(&order_id).await?);
    }
    if let Ok(pg_tid) = PgTid::parse(q) {
        for provider in Provider::ALL {
            if let Some(view) = kassa.store.payment_by_pg(provider, &pg_tid).await?
                && !found
                    .iter()
                    .any(|seen: &PaymentView| seen.payment.id == view.payment.id)
            {
                found.push(view);
            }
        }
    }
    found.retain(keep);
    found.sort_by_key(|view| std::cmp::Reverse(view.payment.id));
    found.truncate(limit);
    Ok(page(found))
}

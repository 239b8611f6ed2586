//! Carrying out a cancel intent at the PG, once.
//!
//! Invariant: the intent is stored before this runs, and every attempt sends the intent's own
//! key and balance; when the outcome is unknown or the PG says "already cancelled", kassa asks
//! the PG what happened and converges on its answer instead of guessing.

use super::{FlowError, Kassa};
use crate::domain::CancelIntent;
use crate::gateway::{CancelRequest, GatewayError, PgPayment};
use crate::store::{AttemptOutcome, PaymentView};

/// Makes one attempt at `intent` and records its outcome. Answers the payment as it is after
/// the attempt, or `None` if the intent is unknown.
pub async fn attempt(
    kassa: &Kassa,
    intent: &CancelIntent,
) -> Result<Option<PaymentView>, FlowError> {
    let Some(view) = kassa.store.payment(intent.payment_id).await? else {
        return Ok(None);
    };
    let payment = &view.payment;
    let Some(gateway) = kassa.gateways.get(payment.provider) else {
        let outcome = AttemptOutcome::Failed {
            error: format!("{} is not configured", payment.provider.as_str()),
        };
        return Ok(kassa
            .store
            .finish_cancel_attempt(intent.id, outcome, kassa.env.now())
            .await?);
    };
    let request = CancelRequest {
        pg_tid: payment.pg_tid.clone(),
        order_id: payment.order_id.as_str().to_owned(),
        amount: intent.amount,
        balance_before: intent.balance_before,
        reason: intent.reason.clone(),
        idempotency_key: intent.pg_key.clone(),
    };
    let outcome = match gateway.cancel(&request).await {
        Ok(receipt) => AttemptOutcome::Refunded {
            pg_cancel_id: receipt.pg_cancel_id,
            amount: intent.amount,
            at: receipt.at,
        },
        Err(
            error @ (GatewayError::UnknownOutcome(_)
            | GatewayError::AlreadyCancelled
            | GatewayError::Refused { .. }),
        ) => {
            // The PG may have refunded already (a lost answer, or an earlier attempt whose
            // answer was lost): its own record decides.
            match gateway.fetch_payment(&payment.pg_tid).await {
                Ok(pg) => converge(intent, &pg).unwrap_or(AttemptOutcome::Failed {
                    error: error.to_string(),
                }),
                Err(query_error) => AttemptOutcome::Failed {
                    error: format!("{error}; and the re-query failed: {query_error}"),
                },
            }
        }
        Err(error) => AttemptOutcome::Failed {
            error: error.to_string(),
        },
    };
    match &outcome {
        AttemptOutcome::Refunded { amount, .. } => {
            tracing::info!(payment_id = %payment.id, cancel_id = %intent.id, amount = amount.won(), "refund confirmed by the PG");
        }
        AttemptOutcome::Failed { error } => {
            tracing::warn!(payment_id = %payment.id, cancel_id = %intent.id, error = %error, "refund attempt failed; the intent stays open");
        }
    }
    Ok(kassa
        .store
        .finish_cancel_attempt(intent.id, outcome, kassa.env.now())
        .await?)
}

/// Decides from the PG's record whether `intent` is already carried out: its balance went down by
/// exactly the intent's amount from the balance the intent was made against.
fn converge(intent: &CancelIntent, pg: &PgPayment) -> Option<AttemptOutcome> {
    let expected_after = intent.balance_before.checked_sub(intent.amount)?;
    if pg.balance() != expected_after {
        return None;
    }
    let last = pg
        .cancellations
        .iter()
        .rev()
        .find(|entry| entry.amount == intent.amount);
    Some(AttemptOutcome::Refunded {
        pg_cancel_id: last
            .map(|entry| entry.pg_cancel_id.clone())
            .unwrap_or_default(),
        amount: intent.amount,
        at: last.map_or(intent.created_at, |entry| entry.at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, CancelId, CancelKind, PaymentId, PgTid};
    use crate::gateway::{PgCancellation, PgStatus};
    use chrono::DateTime;

    fn won(value: i64) -> Amount {
        Amount::non_negative(value).unwrap()
    }

    fn intent(amount: i64, balance_before: i64) -> CancelIntent {
        CancelIntent {
            id: CancelId::from_u128(1),
            payment_id: PaymentId::from_u128(2),
            kind: CancelKind::RollbackAmountMismatch,
            amount: won(amount),
            balance_before: won(balance_before),
            reason: String::new(),
            pg_key: "k".into(),
            created_at: DateTime::UNIX_EPOCH,
            done_at: None,
            attempts: 0,
        }
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
                amount: won(cancelled),
                at: DateTime::UNIX_EPOCH,
            }],
        }
    }

    #[test]
    fn a_refund_counts_as_done_only_when_the_pg_balance_moved_by_exactly_its_amount() {
        assert!(matches!(
            converge(&intent(100, 100), &pg(100, 100)),
            Some(AttemptOutcome::Refunded { .. })
        ));
        assert!(converge(&intent(100, 100), &pg(100, 0)).is_none());
        assert!(matches!(
            converge(&intent(30, 100), &pg(100, 30)),
            Some(AttemptOutcome::Refunded { .. })
        ));
        assert!(converge(&intent(30, 100), &pg(100, 60)).is_none());
    }
}

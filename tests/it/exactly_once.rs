//! Every refund exactly once, the hard cases: an attempt taken over after its lease whose late
//! answer still counts once, a PG down for hours, and a data file of part 3 whose claimed
//! Payple refund nobody can vouch for.

use crate::support::{Logs, TestApp};
use kassa::domain::job::JobKind;
use kassa::store::{AttemptResult, Claimed};
use serde_json::json;
use std::collections::HashMap;

/// The settlement rows of `tests/fixtures/part5.redb`: one for each payment it accepted.
const PART_5_SETTLEMENT_ROWS: usize = 4;

/// How many cancels and lookups PortOne has been asked for.
async fn calls(app: &TestApp) -> u64 {
    app.pg_calls("portone.cancel").await + app.pg_calls("portone.payment").await
}

fn leases(lease: chrono::Duration) -> HashMap<JobKind, chrono::Duration> {
    HashMap::from([(JobKind::Cancel, lease)])
}

#[tokio::test]
async fn a_late_refund_answer_of_an_attempt_that_was_taken_over_is_recorded_once() {
    let app = TestApp::spawn().await;
    let (payment_id, _) = app.paid("order-late-1", 15_000).await;
    let store = &app.kassa.store;
    let now = app.kassa.env.now();
    let intent = app.store_cancel(&payment_id, "late-key").await;
    let lease = chrono::Duration::seconds(30);
    let first = store
        .claim_cancel(intent.id, now, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt, 1);
    assert!(!first.intent.outcome_unknown);

    // Attempt 1 hangs past its lease (its process froze); the queue takes the intent over.
    let later = now + chrono::Duration::seconds(31);
    let claims = store
        .claim_due(later, 8, leases(lease), HashMap::new())
        .await
        .unwrap();
    let Some(Claimed::Cancel(second)) = claims.into_iter().next() else {
        panic!("the job is due again once its lease ran out");
    };
    assert_eq!(second.attempt, 2);
    assert!(
        second.intent.outcome_unknown,
        "its predecessor left its mark and no outcome: attempt 2 asks the PG first"
    );

    // Attempt 1's answer arrives after all: the PG refunded.
    let refunded = AttemptResult::Refunded {
        pg_cancel_id: "cancel-late".into(),
        at: later,
        warning: None,
    };
    store
        .finish_attempt(&first, refunded.clone(), later, 1, None)
        .await
        .unwrap();
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCELLED", "{payment}");
    assert_eq!(payment["cancelled_amount"], 15_000);

    // Attempt 2's own outcome, and the same late answer once more, change nothing.
    let retry = AttemptResult::Retry {
        error: "the PG timed out".into(),
        due: later,
        outcome_unknown: true,
        new_key_if_untouched: false,
        queued: true,
        alert: false,
    };
    store
        .finish_attempt(&second, retry, later, 2, None)
        .await
        .unwrap();
    store
        .finish_attempt(&first, refunded, later, 3, None)
        .await
        .unwrap();
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCELLED");
    assert_eq!(payment["cancelled_amount"], 15_000);
    let refunds = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "REFUNDED")
        .count();
    assert_eq!(refunds, 1, "{payment}");
    let queued = store.queue_depth().await.unwrap();
    assert!(
        queued
            .iter()
            .any(|(kind, count)| *kind == JobKind::Cancel && *count == 0),
        "{queued:?}"
    );
}

#[tokio::test]
async fn a_pg_down_for_two_hours_dead_letters_nothing_and_every_cancel_is_done_when_it_returns() {
    let logs = Logs::capture();
    let app = TestApp::spawn().await;
    let mut payments = Vec::new();
    for n in 0..8 {
        payments.push(app.paid(&format!("order-down-{n}"), 10_000).await);
    }
    // A maintenance window: PortOne answers every cancel and every lookup with a 500.
    app.fault("portone.cancel", "status500", 1_000).await;
    app.fault("portone.payment", "status500", 1_000).await;
    for (n, (payment_id, _)) in payments.iter().enumerate() {
        let (_, body) = app
            .cancel(
                payment_id,
                &format!("down-{n}"),
                &json!({ "reason": "refund" }),
            )
            .await;
        assert_eq!(body["status"], "CANCEL_PENDING", "{body}");
    }
    let before = calls(&app).await;

    for _ in 0..24 {
        app.advance_ms(5 * 60_000);
        app.run_jobs().await;
    }

    let during = calls(&app).await - before;
    assert!(
        during <= 14,
        "the circuit breaker paused eight cancels' jobs instead of spending their tries: {during} calls in two hours"
    );
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    assert!(letters["items"].as_array().unwrap().is_empty(), "{letters}");
    let text = logs.text();
    assert!(text.contains("circuit breaker open"), "{text}");

    app.clear_faults().await;
    for _ in 0..20 {
        let mut done = 0;
        for (payment_id, _) in &payments {
            if app.payment(payment_id).await["status"] == "CANCELLED" {
                done += 1;
            }
        }
        if done == payments.len() {
            break;
        }
        app.advance_ms(10 * 60_000);
        app.run_jobs().await;
    }
    for (payment_id, imp_uid) in &payments {
        assert_eq!(app.payment(payment_id).await["status"], "CANCELLED");
        assert_eq!(app.pg_state(imp_uid).await["refunds_executed"], 1);
    }
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    assert!(letters["items"].as_array().unwrap().is_empty());
    assert!(logs.text().contains("circuit breaker closed"));
}

#[tokio::test]
async fn a_part_3_data_file_opens_with_its_claimed_payple_refund_as_unknown() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/part3.redb");
    let app = TestApp::spawn_on_copy_of(&fixture).await;

    let payple = app.payments_of("order-fx-payple").await;
    assert_eq!(payple.len(), 1);
    let payple_id = payple[0]["payment_id"].as_str().unwrap().to_owned();
    let payment = app.payment(&payple_id).await;
    assert_eq!(payment["status"], "CANCEL_UNKNOWN", "{payment}");
    assert!(
        payment["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["kind"] == "REFUND_OUTCOME_UNKNOWN"),
        "{payment}"
    );
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let letters = letters["items"].as_array().unwrap().clone();
    assert!(
        letters
            .iter()
            .any(|letter| letter["payment_id"] == payple_id.as_str()
                && letter["job"] == "unknown_outcome"),
        "{letters:?}"
    );
    let dead = app.payments_of("order-fx-dead").await;
    assert!(
        letters.iter().any(
            |letter| letter["payment_id"] == dead[0]["payment_id"] && letter["job"] == "CANCEL"
        ),
        "the part-3 dead letter carried over: {letters:?}"
    );
    let queued: HashMap<JobKind, usize> = app
        .kassa
        .store
        .queue_depth()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        queued[&JobKind::Cancel],
        1,
        "the queued PortOne cancel carried over"
    );
    assert!(queued[&JobKind::Alert] > 0, "undelivered alerts are queued");
    let portone = app.payments_of("order-fx-portone").await;
    assert_eq!(portone[0]["status"], "CANCEL_REQUESTED");

    // Nothing sends the Payple refund again, however long kassa runs.
    for _ in 0..3 {
        app.advance_ms(3_600_000);
        app.run_all_jobs().await;
    }
    assert_eq!(app.pg_calls("payple.cancel").await, 0);
    assert_eq!(app.payment(&payple_id).await["status"], "CANCEL_UNKNOWN");
    // The migrated file opens again as it is.
    let app = app.restart().await;
    assert_eq!(app.payment(&payple_id).await["status"], "CANCEL_UNKNOWN");
}

/// The data file of parts 4 and 5 (schema 2): every order, payment, refund and event is there.
#[tokio::test]
async fn a_part_5_data_file_opens_with_every_payment_and_refund() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/part5.redb");
    let app = TestApp::spawn_on_copy_of(&fixture).await;
    // Schema 4 indexes each order's settlement row: the upgrade built it from the rows.
    assert_eq!(
        app.kassa.store.check_settlement_index().await.unwrap(),
        Ok(PART_5_SETTLEMENT_ROWS)
    );
    for (order_id, status, cancelled) in [
        ("order-fix-0001", "CANCELLED", 15_000),
        ("order-fix-0002", "PARTIALLY_CANCELLED", 2_000),
        ("order-fix-0003", "PAID", 0),
        ("order-fix-0004", "PAID", 0),
    ] {
        let payments = app.payments_of(order_id).await;
        assert_eq!(payments.len(), 1, "{order_id}");
        let payment = app
            .payment(payments[0]["payment_id"].as_str().unwrap())
            .await;
        assert_eq!(payment["status"], status, "{payment}");
        assert_eq!(payment["cancelled_amount"], cancelled, "{payment}");
        assert!(!payment["events"].as_array().unwrap().is_empty());
    }
    let (status, order) = app.admin_get("/api/orders/order-fix-0005").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{order}");
    assert_eq!(order["status"], "READY");
    // A new payment and a cancel go on from where the file was.
    let (payment_id, _) = app.paid("order-fix-0006", 3_000).await;
    let (status, _) = app
        .cancel(
            &payment_id,
            "fix-key-9",
            &json!({ "reason": "after the upgrade" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    assert_eq!(
        app.kassa.store.check_settlement_index().await.unwrap(),
        Ok(PART_5_SETTLEMENT_ROWS + 1)
    );
}

/// A cancel request claims its first attempt in its own transaction: the attempt's mark is
/// durable with the request, the worker cannot take the job while the lease holds, a second
/// cancel of the same payment is recorded but not claimed (it is not its turn), and the outcome
/// of the attempt marks the request's key answered in its own transaction.
#[tokio::test]
async fn a_cancel_request_claims_its_first_attempt_in_its_own_commit() {
    use kassa::domain::{IdempotencyKey, IntentState, PaymentId};
    use kassa::store::{CancelRequest, CancelRequestOutcome};

    let app = TestApp::spawn().await;
    let (payment_id, _) = app.paid("order-claimed-1", 15_000).await;
    let store = &app.kassa.store;
    let now = app.kassa.env.now();
    let lease = chrono::Duration::seconds(30);
    let id = PaymentId::parse(&payment_id).unwrap();
    let request = |key: &str| CancelRequest {
        payment_id: id,
        key: IdempotencyKey::parse(key).unwrap(),
        amount: Some(kassa::domain::Amount::positive(5_000).unwrap()),
        reason: "part".into(),
        cancel_id: kassa::domain::CancelId::from_uuid(app.kassa.env.new_uuid()),
        pg_key: format!("{key}-pg"),
        now,
        claim_lease: Some(lease),
    };

    let CancelRequestOutcome::Created(intent, Some(claim)) =
        store.request_cancel(request("claimed-a")).await.unwrap()
    else {
        panic!("the first cancel of a payment is claimed with its request");
    };
    assert_eq!(claim.attempt, 1);
    assert_eq!(claim.lease_until, now + lease);
    let stored = store.cancel_intent(intent.id).await.unwrap().unwrap();
    assert_eq!(
        stored.in_flight.map(|mark| mark.number),
        Some(1),
        "the attempt's mark is committed with the request, before the PG hears of it"
    );
    let claims = store
        .claim_due(now, 8, leases(lease), HashMap::new())
        .await
        .unwrap();
    assert!(claims.is_empty(), "the worker cannot take a leased job");

    let CancelRequestOutcome::Created(second, None) =
        store.request_cancel(request("claimed-b")).await.unwrap()
    else {
        panic!("a second cancel of the payment is recorded and waits for its turn");
    };
    assert_eq!(
        store
            .cancel_intent(second.id)
            .await
            .unwrap()
            .unwrap()
            .in_flight,
        None
    );
    assert!(matches!(
        store.request_cancel(request("claimed-a")).await.unwrap(),
        CancelRequestOutcome::InProgress
    ));

    let refunded = AttemptResult::Refunded {
        pg_cancel_id: "cancel-claimed".into(),
        at: now,
        warning: None,
    };
    store
        .finish_attempt(
            &claim,
            refunded,
            now,
            1,
            Some((id, IdempotencyKey::parse("claimed-a").unwrap())),
        )
        .await
        .unwrap();
    match store.request_cancel(request("claimed-a")).await.unwrap() {
        CancelRequestOutcome::Replay(replayed) => {
            assert_eq!(replayed.id, intent.id);
            assert_eq!(replayed.state, IntentState::Done);
        }
        other => panic!("the answered key replays its cancel: {other:?}"),
    }
    let view = app.payment(&payment_id).await;
    assert_eq!(view["cancelled_amount"], 5_000, "{view}");
}

/// A cancel requested while the PG's circuit breaker pauses its jobs is recorded with no claim:
/// no inline attempt reaches the PG, and no attempt mark is left that would make a later
/// attempt start as an unknown outcome.
#[tokio::test]
async fn a_cancel_requested_while_the_breaker_pauses_its_pg_is_not_claimed() {
    let logs = Logs::capture();
    let app = TestApp::spawn().await;
    let mut payments = Vec::new();
    for n in 0..4 {
        payments.push(app.paid(&format!("order-paused-{n}"), 10_000).await);
    }
    app.fault("portone.cancel", "status500", 1_000).await;
    // Three cancels of two inline attempts each: six outages in a row open the breaker.
    for (n, (payment_id, _)) in payments.iter().take(3).enumerate() {
        let (_, body) = app
            .cancel(
                payment_id,
                &format!("paused-{n}"),
                &json!({ "reason": "refund" }),
            )
            .await;
        assert_eq!(body["status"], "CANCEL_PENDING", "{body}");
    }
    let before = app.pg_calls("portone.cancel").await;
    let (payment_id, _) = &payments[3];
    let (_, body) = app
        .cancel(payment_id, "paused-3", &json!({ "reason": "refund" }))
        .await;
    assert_eq!(body["status"], "CANCEL_PENDING", "{body}");
    assert!(logs.text().contains("circuit breaker open"));
    assert_eq!(
        app.pg_calls("portone.cancel").await,
        before,
        "no inline attempt reaches a PG whose jobs are paused"
    );
    let id = kassa::domain::CancelId::parse(body["cancel_id"].as_str().unwrap()).unwrap();
    let intent = app.kassa.store.cancel_intent(id).await.unwrap().unwrap();
    assert_eq!(intent.in_flight, None, "the request claimed nothing");
    assert_eq!(intent.attempts, 0);
}

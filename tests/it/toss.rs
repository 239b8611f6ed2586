//! Toss Payments through the sandbox: confirm with the order's own amount, refunds exactly once,
//! convergence on "already cancelled", the webhook, and the sandbox's idempotent replay.

use crate::support::TestApp;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn basic() -> String {
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:", kassa::sandbox::SANDBOX_TOSS_SECRET_KEY));
    format!("Basic {encoded}")
}

#[tokio::test]
async fn a_toss_payment_is_confirmed_with_the_orders_amount_and_stored_paid() {
    let app = TestApp::spawn().await;
    let order = app.create_toss_order("order-toss-1", 15_000).await;
    assert_eq!(order["provider"], "toss");
    let key = app
        .toss_payment("order-toss-1", 15_000, "IN_PROGRESS")
        .await;

    let (status, paid) = app.toss_confirm(&key, "order-toss-1", 15_000).await;

    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "PAID");
    assert_eq!(paid["provider"], "toss");
    assert_eq!(paid["pg_tid"], key.as_str());
    assert_eq!(app.toss_state(&key).await["status"], "DONE");
    // The redirect arriving again changes nothing.
    let (status, again) = app.toss_confirm(&key, "order-toss-1", 15_000).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["payment_id"], paid["payment_id"]);
    assert_eq!(app.payments_of("order-toss-1").await.len(), 1);
}

#[tokio::test]
async fn a_tampered_toss_amount_is_never_confirmed_so_nothing_is_taken() {
    let app = TestApp::spawn().await;
    app.create_toss_order("order-toss-2", 15_000).await;
    // The buyer changed the amount before the Toss window opened.
    let key = app.toss_payment("order-toss-2", 100, "IN_PROGRESS").await;

    let (status, body) = app.toss_confirm(&key, "order-toss-2", 100).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "AMOUNT_MISMATCH");
    assert_eq!(
        app.toss_state(&key).await["status"],
        "IN_PROGRESS",
        "never confirmed, so never charged"
    );
    assert!(app.payments_of("order-toss-2").await.is_empty());
}

#[tokio::test]
async fn a_second_toss_payment_for_a_paid_order_is_not_confirmed() {
    let app = TestApp::spawn().await;
    app.create_toss_order("order-toss-3", 15_000).await;
    let first = app
        .toss_payment("order-toss-3", 15_000, "IN_PROGRESS")
        .await;
    let second = app
        .toss_payment("order-toss-3", 15_000, "IN_PROGRESS")
        .await;
    assert_eq!(
        app.toss_confirm(&first, "order-toss-3", 15_000).await.0,
        StatusCode::OK
    );

    let (status, body) = app.toss_confirm(&second, "order-toss-3", 15_000).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "ORDER_ALREADY_PAID");
    assert_eq!(app.toss_state(&second).await["status"], "IN_PROGRESS");
    assert_eq!(app.payments_of("order-toss-3").await.len(), 1);
}

#[tokio::test]
async fn a_toss_confirm_whose_answer_is_lost_is_resolved_by_asking_toss() {
    let app = TestApp::spawn().await;
    app.create_toss_order("order-toss-4", 15_000).await;
    let key = app
        .toss_payment("order-toss-4", 15_000, "IN_PROGRESS")
        .await;
    app.fault("toss.confirm", "lost_response", 1).await;

    let (status, paid) = app.toss_confirm(&key, "order-toss-4", 15_000).await;

    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "PAID");
}

#[tokio::test]
async fn a_toss_refund_whose_answer_is_lost_is_executed_once() {
    let app = TestApp::spawn().await;
    app.create_toss_order("order-toss-5", 15_000).await;
    let key = app
        .toss_payment("order-toss-5", 15_000, "IN_PROGRESS")
        .await;
    let (_, paid) = app.toss_confirm(&key, "order-toss-5", 15_000).await;
    let payment_id = paid["payment_id"].as_str().unwrap();
    // Toss refunds, the answer is lost, and asking Toss fails once too: the next attempt asks first.
    app.fault("toss.cancel", "lost_response", 1).await;
    app.fault("toss.payment", "status500", 1).await;

    let (status, body) = app
        .cancel(payment_id, "toss-key-1", &json!({ "reason": "refund" }))
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    let state = app.toss_state(&key).await;
    assert_eq!(state["refundsExecuted"], 1, "{state}");
    assert_eq!(state["status"], "CANCELED");
    assert_eq!(app.payment(payment_id).await["status"], "CANCELLED");
}

#[tokio::test]
async fn toss_retries_with_the_same_key_and_a_dead_letter_redrive_refunds_once() {
    let app = TestApp::spawn_with_short_retries().await;
    app.create_toss_order("order-toss-6", 20_000).await;
    let key = app
        .toss_payment("order-toss-6", 20_000, "IN_PROGRESS")
        .await;
    let (_, paid) = app.toss_confirm(&key, "order-toss-6", 20_000).await;
    let payment_id = paid["payment_id"].as_str().unwrap();
    app.fault("toss.cancel", "status500", 5).await;

    let (_, body) = app
        .cancel(
            payment_id,
            "toss-key-2",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "CANCEL_PENDING");
    for delay_ms in [6_000, 35_000, 140_000] {
        app.advance_ms(delay_ms);
        assert_eq!(app.run_jobs().await, 1);
    }
    assert_eq!(app.payment(payment_id).await["status"], "CANCEL_FAILED");
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Five failures in a row opened the PG's circuit breaker: the re-drive waits for its probe.
    app.advance_ms(61_000);
    assert_eq!(app.run_jobs().await, 1);

    let payment = app.payment(payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED");
    assert_eq!(payment["cancelled_amount"], 5_000);
    let state = app.toss_state(&key).await;
    assert_eq!(state["refundsExecuted"], 1);
    assert_eq!(state["balanceAmount"], 15_000);
    let keys: Vec<&str> = state["cancelKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key.as_str().unwrap())
        .collect();
    assert_eq!(
        keys.len(),
        6,
        "two inline attempts, three queued, one re-driven"
    );
    assert!(
        !keys[0].is_empty() && keys[..5].iter().all(|key| *key == keys[0]),
        "while the outcome is unknown (5xx), every try sends the same key: {keys:?}"
    );
    assert_eq!(
        keys[5],
        format!("{}-g1", keys[0]),
        "the re-drive asked Toss, saw nothing refunded, and sent under a new key generation"
    );
    let events = payment["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|event| event["kind"] == "NEW_KEY_GENERATION"),
        "{events:?}"
    );
    // A second, separate cancel of the same amount is a new intent with a new key.
    let (_, body) = app
        .cancel(
            payment_id,
            "toss-key-2b",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "PARTIALLY_CANCELLED");
    let state = app.toss_state(&key).await;
    assert_eq!(state["refundsExecuted"], 2);
    assert_ne!(state["cancelKeys"][6], state["cancelKeys"][0]);
}

#[tokio::test]
async fn a_payment_cancelled_at_toss_already_converges_without_a_second_refund() {
    let app = TestApp::spawn().await;
    app.create_toss_order("order-toss-7", 15_000).await;
    let key = app
        .toss_payment("order-toss-7", 15_000, "IN_PROGRESS")
        .await;
    let (_, paid) = app.toss_confirm(&key, "order-toss-7", 15_000).await;
    // Someone cancels it in Toss's console, outside kassa.
    let outside = app
        .http
        .post(app.url(&format!("/sandbox-pg/toss/v1/payments/{key}/cancel")))
        .header("authorization", basic())
        .json(&json!({ "cancelReason": "console" }))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), StatusCode::OK);

    let (status, body) = app
        .cancel(
            paid["payment_id"].as_str().unwrap(),
            "toss-key-3",
            &json!({ "reason": "refund" }),
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(
        app.toss_state(&key).await["refundsExecuted"],
        1,
        "only the console's refund"
    );
}

#[tokio::test]
async fn a_toss_webhook_stores_a_payment_the_shop_never_heard_back_about() {
    let app = TestApp::spawn().await;
    app.create_toss_order("order-toss-8", 15_000).await;
    let key = app.toss_payment("order-toss-8", 15_000, "DONE").await;
    let hook = json!({
        "eventType": "PAYMENT_STATUS_CHANGED",
        "createdAt": "2026-11-23T12:00:00.000",
        "data": { "paymentKey": key, "orderId": "order-toss-8", "status": "DONE" }
    });

    for _ in 0..3 {
        let response = app
            .http
            .post(app.url("/api/webhooks/toss"))
            .json(&hook)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    app.run_all_jobs().await;

    let payments = app.payments_of("order-toss-8").await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "PAID");
    let other = json!({ "eventType": "PAYOUT_STATUS_CHANGED", "data": {} });
    let response = app
        .http
        .post(app.url("/api/webhooks/toss"))
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_sandbox_replays_a_repeated_idempotency_key_without_refunding_again() {
    let app = TestApp::spawn().await;
    let key = app.toss_payment("order-toss-9", 9_000, "DONE").await;
    let url = app.url(&format!("/sandbox-pg/toss/v1/payments/{key}/cancel"));
    let send = |amount: i64, idempotency: &'static str| {
        app.http
            .post(&url)
            .header("authorization", basic())
            .header("idempotency-key", idempotency)
            .json(&json!({ "cancelReason": "r", "cancelAmount": amount }))
            .send()
    };

    let first: Value = send(1_000, "same").await.unwrap().json().await.unwrap();
    let replay: Value = send(1_000, "same").await.unwrap().json().await.unwrap();
    // Toss processes two cancels of one payment within a second once: the other is refused.
    let soon = send(1_000, "soon").await.unwrap();
    assert_eq!(soon.status(), StatusCode::FORBIDDEN);
    let soon: Value = soon.json().await.unwrap();
    assert_eq!(soon["code"], "FORBIDDEN_CONSECUTIVE_REQUEST");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let other: Value = send(1_000, "other").await.unwrap().json().await.unwrap();

    assert_eq!(first, replay);
    assert_eq!(first["balanceAmount"], 8_000);
    assert_eq!(other["balanceAmount"], 7_000);
    assert_eq!(app.toss_state(&key).await["refundsExecuted"], 2);
    // A refusal is kept under its key like any answer: the same key is refused again.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let soon_again: Value = send(1_000, "soon").await.unwrap().json().await.unwrap();
    assert_eq!(soon_again["code"], "FORBIDDEN_CONSECUTIVE_REQUEST");
    assert_eq!(app.toss_state(&key).await["refundsExecuted"], 2);
    let unauthorised = app
        .http
        .post(&url)
        .json(&json!({ "cancelReason": "r" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let full = send(7_000, "rest").await.unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // Partial cancels that add up to the whole stay PARTIAL_CANCELED with nothing left, and one
    // more is NOT_CANCELABLE_AMOUNT, as Toss answers it.
    let state = app.toss_state(&key).await;
    assert_eq!(state["status"], "PARTIAL_CANCELED");
    assert_eq!(state["balanceAmount"], 0);
    let again = send(1, "after").await.unwrap();
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["code"], "NOT_CANCELABLE_AMOUNT");
}

/// A confirmed Toss payment of `amount`; answers (payment id, paymentKey).
async fn toss_paid(app: &TestApp, order_id: &str, amount: i64) -> (String, String) {
    app.create_toss_order(order_id, amount).await;
    let key = app.toss_payment(order_id, amount, "IN_PROGRESS").await;
    let (status, paid) = app.toss_confirm(&key, order_id, amount).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    (paid["payment_id"].as_str().unwrap().to_owned(), key)
}

fn cancel_keys(state: &Value) -> Vec<String> {
    state["cancelKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_toss_refusal_kept_under_its_key_is_redriven_under_a_new_key_generation_once_the_cause_is_gone()
 {
    let app = TestApp::spawn().await;
    let (payment_id, key) = toss_paid(&app, "order-toss-gen-1", 20_000).await;
    // Toss refuses (say the card company is not taking cancels right now) and keeps the
    // refusal under the key for 15 days.
    app.fault_error("toss.cancel", 403, "NOT_CANCELABLE_PAYMENT", 1)
        .await;

    let (_, body) = app
        .cancel(&payment_id, "toss-gen-1", &json!({ "reason": "refund" }))
        .await;
    assert_eq!(body["status"], "CANCEL_FAILED", "{body}");
    let first_key = cancel_keys(&app.toss_state(&key).await)[0].clone();
    // The refusal is replayed to anyone who tries the same key again.
    let replayed = app
        .http
        .post(app.url(&format!("/sandbox-pg/toss/v1/payments/{key}/cancel")))
        .header("authorization", basic())
        .header("idempotency-key", &first_key)
        .json(&json!({ "cancelReason": "refund" }))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::FORBIDDEN);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.run_jobs().await, 1);

    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCELLED", "{payment}");
    let state = app.toss_state(&key).await;
    assert_eq!(state["refundsExecuted"], 1);
    let keys = cancel_keys(&state);
    assert_eq!(keys.last().unwrap(), &format!("{first_key}-g1"), "{keys:?}");
    let generation = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "NEW_KEY_GENERATION")
        .unwrap_or_else(|| panic!("{payment}"));
    assert!(generation["detail"].as_str().unwrap().contains("-g1"));
}

#[tokio::test]
async fn a_consecutive_request_refusal_is_followed_by_success_under_a_new_key_generation() {
    let app = TestApp::spawn().await;
    let (payment_id, key) = toss_paid(&app, "order-toss-gen-2", 20_000).await;
    app.fault_error("toss.cancel", 403, "FORBIDDEN_CONSECUTIVE_REQUEST", 1)
        .await;

    let (_, body) = app
        .cancel(
            &payment_id,
            "toss-gen-2",
            &json!({ "amount": 4_000, "reason": "partial" }),
        )
        .await;

    assert_eq!(body["status"], "PARTIALLY_CANCELLED", "{body}");
    let state = app.toss_state(&key).await;
    assert_eq!(state["refundsExecuted"], 1);
    assert_eq!(state["balanceAmount"], 16_000);
    let keys = cancel_keys(&state);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[1], format!("{}-g1", keys[0]));
}

#[tokio::test]
async fn five_toss_5xx_answers_keep_one_key_until_the_refund_goes_through() {
    let app = TestApp::spawn().await;
    let (payment_id, key) = toss_paid(&app, "order-toss-5xx", 20_000).await;
    app.fault("toss.cancel", "status500", 5).await;

    let (_, body) = app
        .cancel(&payment_id, "toss-5xx", &json!({ "reason": "refund" }))
        .await;
    assert_eq!(body["status"], "CANCEL_PENDING");
    for _ in 0..10 {
        if app.payment(&payment_id).await["status"] == "CANCELLED" {
            break;
        }
        app.advance_ms(11 * 60_000);
        app.run_jobs().await;
    }

    assert_eq!(app.payment(&payment_id).await["status"], "CANCELLED");
    let state = app.toss_state(&key).await;
    assert_eq!(state["refundsExecuted"], 1);
    let keys = cancel_keys(&state);
    assert_eq!(keys.len(), 6, "five 5xx answers, then the refund: {keys:?}");
    assert!(keys.iter().all(|other| *other == keys[0]), "{keys:?}");
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    assert!(letters["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn toss_partial_cancels_to_zero_with_the_last_answer_lost_end_cancelled() {
    let app = TestApp::spawn().await;
    let (payment_id, key) = toss_paid(&app, "order-toss-zero", 20_000).await;
    let (_, body) = app
        .cancel(
            &payment_id,
            "toss-zero-1",
            &json!({ "amount": 5_000, "reason": "first part" }),
        )
        .await;
    assert_eq!(body["status"], "PARTIALLY_CANCELLED");
    app.fault("toss.cancel", "lost_response", 1).await;

    let (_, body) = app
        .cancel(
            &payment_id,
            "toss-zero-2",
            &json!({ "amount": 15_000, "reason": "the rest" }),
        )
        .await;

    assert_eq!(body["status"], "CANCELLED", "{body}");
    let state = app.toss_state(&key).await;
    assert_eq!(state["status"], "PARTIAL_CANCELED", "as Toss leaves it");
    assert_eq!(state["balanceAmount"], 0);
    assert_eq!(state["refundsExecuted"], 2);
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCELLED");
    assert_eq!(payment["cancelled_amount"], 20_000);
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    assert!(letters["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn every_toss_cancel_says_the_balance_kassa_expects() {
    let app = TestApp::spawn().await;
    let (payment_id, key) = toss_paid(&app, "order-toss-ra", 20_000).await;
    // Someone refunds 1,000 in Toss's console: kassa's expected balance is now wrong.
    let outside = app
        .http
        .post(app.url(&format!("/sandbox-pg/toss/v1/payments/{key}/cancel")))
        .header("authorization", basic())
        .header("idempotency-key", "console-1")
        .json(&json!({ "cancelReason": "console", "cancelAmount": 1_000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    let (_, body) = app
        .cancel(
            &payment_id,
            "toss-ra",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;

    assert_eq!(body["status"], "CANCEL_FAILED", "{body}");
    assert_eq!(
        app.toss_state(&key).await["refundsExecuted"],
        1,
        "Toss refused a cancel against another balance"
    );
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    assert!(
        letters["items"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("NOT_MATCHES_REFUNDABLE_AMOUNT"),
        "{letters}"
    );
}

#[tokio::test]
async fn a_redriven_cancel_never_takes_a_later_cancels_refund_for_its_own() {
    let app = TestApp::spawn().await;
    let (payment_id, key) = toss_paid(&app, "order-toss-two", 20_000).await;
    // Cancel A is refused with kassa's keys and becomes a dead letter; nothing was refunded.
    app.fault_error("toss.cancel", 401, "UNAUTHORIZED_KEY", 1)
        .await;
    let (_, a) = app
        .cancel(
            &payment_id,
            "toss-two-a",
            &json!({ "amount": 5_000, "reason": "first" }),
        )
        .await;
    assert_eq!(a["status"], "CANCEL_FAILED", "{a}");
    // Cancel B of the same amount is carried out, but its answer is lost and Toss cannot be
    // asked for a while: its outcome is unknown.
    app.fault("toss.cancel", "lost_response", 1).await;
    app.fault("toss.payment", "status500", 4).await;
    let (_, b) = app
        .cancel(
            &payment_id,
            "toss-two-b",
            &json!({ "amount": 5_000, "reason": "second" }),
        )
        .await;
    assert_eq!(b["status"], "CANCEL_PENDING", "{b}");
    assert_eq!(app.toss_state(&key).await["refundsExecuted"], 1);

    // A is re-driven while B is still in doubt: B is settled first, from Toss's record, and
    // only then does A run against the balance that is really left.
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.clear_faults().await;
    for _ in 0..10 {
        if app.payment(&payment_id).await["cancelled_amount"] == 10_000 {
            break;
        }
        app.advance_ms(11 * 60_000);
        app.run_jobs().await;
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    }

    let state = app.toss_state(&key).await;
    assert_eq!(state["refundsExecuted"], 2, "{state}");
    assert_eq!(state["balanceAmount"], 10_000);
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(
        payment["cancelled_amount"], 10_000,
        "kassa's books are the PG's: each cancel is its own refund"
    );
}

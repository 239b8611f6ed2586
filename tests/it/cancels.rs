//! Cancels and refunds: never lost, never doubled. Retries on an injected clock, dead letters,
//! re-drives, concurrency and idempotency.

use crate::support::{ADMIN_TOKEN, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn kinds(payment: &Value) -> Vec<String> {
    payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_full_cancel_is_refunded_at_the_pg_once() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-cancel-1", 15_000).await;

    let (status, body) = app
        .cancel(
            &payment_id,
            "key-1",
            &json!({ "reason": "buyer changed their mind" }),
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(body["amount"], 15_000);
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCELLED");
    assert_eq!(payment["cancelled_amount"], 15_000);
    assert_eq!(kinds(&payment), ["PAID", "CANCEL_REQUESTED", "REFUNDED"]);
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
    let (_, result) = app.admin_get("/api/payments/result/order-cancel-1").await;
    assert_eq!(result["result"], "CANCELLED");
}

#[tokio::test]
async fn a_lost_answer_is_resolved_by_asking_the_pg_and_refunds_once() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-lost-1", 15_000).await;
    // The PG refunds but its answer never arrives, and the first re-query fails too.
    app.fault("portone.cancel", "lost_response", 1).await;
    app.fault("portone.payment", "status500", 1).await;

    let (status, body) = app
        .cancel(
            &payment_id,
            "key-lost",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["status"], "PARTIALLY_CANCELLED",
        "the second inline attempt asked the PG first"
    );
    let pg = app.pg_state(&imp_uid).await;
    assert_eq!(pg["refunds_executed"], 1, "{pg}");
    assert_eq!(pg["cancel_amount"], 5_000);
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED");
    assert_eq!(payment["cancelled_amount"], 5_000);
    assert_eq!(
        kinds(&payment),
        [
            "PAID",
            "CANCEL_REQUESTED",
            "CANCEL_ATTEMPT_FAILED",
            "REFUNDED"
        ]
    );
    assert_eq!(app.run_jobs().await, 0, "nothing is left in the queue");
}

#[tokio::test]
async fn a_pg_failing_five_times_ends_in_a_dead_letter_and_a_redrive_refunds_once() {
    let app = TestApp::spawn_with_short_retries().await;
    let (payment_id, imp_uid) = app.paid("order-dead-1", 15_000).await;
    app.fault("portone.cancel", "status500", 5).await;

    let (status, body) = app
        .cancel(&payment_id, "key-dead", &json!({ "reason": "refund" }))
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["status"], "CANCEL_PENDING",
        "both inline attempts failed"
    );
    assert_eq!(app.payment(&payment_id).await["status"], "CANCEL_REQUESTED");
    // The queue follows retry.backoff_ms = [5000, 30000, 120000] plus at most 10 % jitter.
    for (step, delay_ms) in [5_000, 30_000, 120_000].into_iter().enumerate() {
        assert_eq!(
            app.run_jobs().await,
            0,
            "step {step}: nothing is due before its delay"
        );
        app.advance_ms(delay_ms * 9 / 10);
        assert_eq!(app.run_jobs().await, 0, "step {step}: still not due");
        app.advance_ms(delay_ms * 2 / 10 + 1);
        assert_eq!(app.run_jobs().await, 1, "step {step}: due after its delay");
    }
    assert_eq!(app.pg_calls("portone.cancel").await, 5);

    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCEL_FAILED", "{payment}");
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 0);
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let letters = letters["items"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["payment_id"], payment_id.as_str());
    assert_eq!(letters[0]["attempts"], 5);
    assert_eq!(letters[0]["job"], "CANCEL");
    assert!(
        letters[0]["last_error"].as_str().unwrap().contains("500"),
        "{}",
        letters[0]
    );
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    let alerts = alerts["items"].as_array().unwrap().clone();
    assert!(
        alerts
            .iter()
            .any(|alert| alert["level"] == "URGENT" && alert["kind"] == "DEAD_LETTER"),
        "{alerts:?}"
    );
    assert_eq!(
        alerts
            .iter()
            .filter(|alert| alert["level"] == "WARNING")
            .count(),
        3,
        "one warning per scheduled retry"
    );
    let (_, result) = app.admin_get("/api/payments/result/order-dead-1").await;
    assert_eq!(result["result"], "CANCEL_FAILED");

    // The PG heals; an operator re-drives the same cancel.
    let id = letters[0]["id"].as_str().unwrap();
    let (status, body) = app
        .admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.payment(&payment_id).await["status"], "CANCEL_REQUESTED");
    // Five failures in a row opened the PG's circuit breaker: the re-drive waits for its probe.
    app.advance_ms(61_000);
    assert_eq!(app.run_jobs().await, 1);

    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCELLED");
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
    let (status, _) = app
        .admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a done cancel is not sent again"
    );
    let (_, letters) = app.admin_get("/api/admin/dead-letters?pending=true").await;
    assert!(letters["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_permanent_refusal_goes_to_the_dead_letters_without_retries() {
    let app = TestApp::spawn().await;
    let (payment_id, _) = app.paid("order-perm-1", 15_000).await;
    // A 401 answered again after a fresh token: kassa's credentials are refused.
    app.fault("portone.cancel", "status401", 2).await;

    let (status, body) = app
        .cancel(&payment_id, "key-perm", &json!({ "reason": "refund" }))
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "CANCEL_FAILED");
    assert_eq!(
        app.pg_calls("portone.cancel").await,
        2,
        "one attempt: the call and its retry with a fresh token"
    );
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    assert_eq!(letters["items"][0]["attempts"], 1);
    assert!(
        letters["items"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("credentials")
    );
    app.advance_ms(3_600_000);
    assert_eq!(app.run_jobs().await, 0, "nothing was queued");
    assert_eq!(app.payment(&payment_id).await["status"], "CANCEL_FAILED");
}

#[tokio::test]
async fn twenty_concurrent_partial_cancels_never_exceed_the_balance() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-many-1", 10_000).await;

    let requests = (0..20).map(|n| {
        let key = format!("key-many-{n}");
        let payment_id = payment_id.clone();
        let app = &app;
        async move {
            app.cancel(
                &payment_id,
                &key,
                &json!({ "amount": 700, "reason": "partial" }),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(requests).await;

    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .map(|(_, body)| body)
        .collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::UNPROCESSABLE_ENTITY)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(accepted.len() + refused.len(), 20, "{answers:?}");
    assert_eq!(accepted.len(), 14, "10,000 holds fourteen cancels of 700");
    assert!(
        refused
            .iter()
            .all(|body| body["error"]["code"] == "CANCEL_EXCEEDS_BALANCE")
    );
    for _ in 0..5 {
        app.advance_ms(200_000);
        app.run_jobs().await;
    }
    let pg = app.pg_state(&imp_uid).await;
    assert_eq!(pg["refunds_executed"], 14, "{pg}");
    assert_eq!(pg["cancel_amount"], 9_800);
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["cancelled_amount"], 9_800);
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED");
    let (status, body) = app
        .cancel(&payment_id, "key-rest", &json!({ "reason": "the rest" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["amount"], 200);
    assert_eq!(app.payment(&payment_id).await["status"], "CANCELLED");
    let (status, body) = app
        .cancel(
            &payment_id,
            "key-more",
            &json!({ "reason": "nothing left" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "CANCEL_EXCEEDS_BALANCE");
}

#[tokio::test]
async fn the_same_idempotency_key_ten_times_at_once_cancels_once() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-key-1", 15_000).await;

    let body = json!({ "amount": 1_000, "reason": "once" });
    let requests = (0..10).map(|_| app.cancel(&payment_id, "one-key", &body));
    let answers = futures_util::future::join_all(requests).await;

    for (status, body) in &answers {
        assert!(
            *status == StatusCode::ACCEPTED
                || (*status == StatusCode::CONFLICT
                    && body["error"]["code"] == "IDEMPOTENCY_REQUEST_IN_PROGRESS"),
            "{status} {body}"
        );
    }
    let cancel_ids: std::collections::BTreeSet<&str> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .map(|(_, body)| body["cancel_id"].as_str().unwrap())
        .collect();
    assert_eq!(cancel_ids.len(), 1, "{answers:?}");
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
    let (status, body) = app
        .cancel(
            &payment_id,
            "one-key",
            &json!({ "amount": 1_000, "reason": "once" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["status"], "PARTIALLY_CANCELLED");
    assert_eq!(
        body["cancel_id"].as_str().unwrap(),
        *cancel_ids.iter().next().unwrap()
    );
    let (status, body) = app
        .cancel(
            &payment_id,
            "one-key",
            &json!({ "amount": 2_000, "reason": "once" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.payment(&payment_id).await["cancelled_amount"], 1_000);
}

#[tokio::test]
async fn cancel_requests_are_checked_before_anything_is_stored() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-check-1", 15_000).await;
    let before = app.snapshot(&["order-check-1"]).await;
    let url = app.url(&format!("/api/payments/{payment_id}/cancel"));
    let cases: Vec<(Option<&str>, Value, StatusCode, &str)> = vec![
        (
            None,
            json!({ "reason": "x" }),
            StatusCode::BAD_REQUEST,
            "IDEMPOTENCY_KEY_REQUIRED",
        ),
        (
            Some(""),
            json!({ "reason": "x" }),
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            Some("k1"),
            json!({ "amount": 0, "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_AMOUNT",
        ),
        (
            Some("k2"),
            json!({ "amount": -1, "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_AMOUNT",
        ),
        (
            Some("k3"),
            json!({ "amount": 15_001, "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "CANCEL_EXCEEDS_BALANCE",
        ),
        (
            Some("k4"),
            json!({ "amount": "100", "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FIELD",
        ),
        (
            Some("k5"),
            json!({ "amount": 100 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FIELD",
        ),
        (
            Some("k6"),
            json!({ "amount": 100, "reason": "" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FIELD",
        ),
    ];
    for (key, body, expected, code) in cases {
        let mut request = app.http.post(&url).bearer_auth(ADMIN_TOKEN).json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            (status, answer["error"]["code"].as_str().unwrap()),
            (expected, code),
            "{body} {answer}"
        );
    }
    let unknown = app
        .cancel(
            "01900000-0000-7000-8000-000000000000",
            "k7",
            &json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);
    let anonymous = app
        .http
        .post(&url)
        .header("idempotency-key", "k8")
        .json(&json!({ "reason": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.snapshot(&["order-check-1"]).await, before);
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 0);
}

#[tokio::test]
async fn a_rollback_the_pg_keeps_refusing_is_retried_then_dead_lettered() {
    let app = TestApp::spawn_with_short_retries().await;
    app.create_order("order-rb-1", 15_000).await;
    let imp_uid = app.pg_payment("order-rb-1", 10).await;
    app.fault("portone.cancel", "status500", 5).await;

    let (status, body) = app.complete(&imp_uid, "order-rb-1").await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let payment_id = body["error"]["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(app.payment(&payment_id).await["status"], "ROLLBACK_PENDING");
    for delay_ms in [6_000, 35_000, 140_000] {
        app.advance_ms(delay_ms);
        assert_eq!(app.run_jobs().await, 1);
    }
    assert_eq!(app.payment(&payment_id).await["status"], "ROLLBACK_FAILED");
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    assert_eq!(letters["items"][0]["job"], "ROLLBACK_AMOUNT_MISMATCH");
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();
    app.admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    // Five failures in a row opened the PG's circuit breaker: the re-drive waits for its probe.
    app.advance_ms(61_000);
    assert_eq!(app.run_jobs().await, 1);
    assert_eq!(
        app.payment(&payment_id).await["status"],
        "ROLLBACK_REFUNDED"
    );
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
}

#[tokio::test]
async fn a_waiting_result_request_answers_within_100_ms_of_the_outcome() {
    let app = TestApp::spawn().await;
    let (payment_id, _) = app.paid("order-poll-1", 15_000).await;
    app.fault("portone.cancel", "status500", 2).await;
    let (_, body) = app
        .cancel(&payment_id, "key-poll", &json!({ "reason": "refund" }))
        .await;
    assert_eq!(body["status"], "CANCEL_PENDING");

    let waiter = {
        let http = app.http.clone();
        let url = app.url("/api/payments/result/order-poll-1?wait_s=60");
        tokio::spawn(async move {
            let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            (body, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "CANCEL_PENDING is not final: the request waits"
    );
    app.advance_ms(6_000);
    assert_eq!(app.run_jobs().await, 1);
    let done = Instant::now();
    let (body, answered) = waiter.await.unwrap();

    assert_eq!(body["result"], "CANCELLED");
    let lag = answered.saturating_duration_since(done);
    assert!(
        lag < Duration::from_millis(100),
        "answered {lag:?} after the outcome"
    );
}

#[tokio::test]
async fn alerts_reach_slack_and_a_failed_delivery_is_retried_later() {
    // A stand-in for Slack's incoming webhook that fails its first call.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slack = {
        let (received, calls) = (received.clone(), calls.clone());
        axum::Router::new().route(
            "/services/T000/B000/secret",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let (received, calls) = (received.clone(), calls.clone());
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    received
                        .lock()
                        .unwrap()
                        .push(body["text"].as_str().unwrap_or_default().to_owned());
                    StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slack_url = format!(
        "http://{}/services/T000/B000/secret",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, slack).await.unwrap() });
    let app = TestApp::spawn_with(vec![("KASSA_ALERTS__SLACK_WEBHOOK_URL", slack_url)]).await;
    let (payment_id, _) = app.paid("order-slack-1", 15_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    app.cancel(&payment_id, "key-slack", &json!({ "reason": "refund" }))
        .await;

    assert_eq!(app.run_all_jobs().await.others, 1);
    assert!(
        received.lock().unwrap().is_empty(),
        "Slack failed the first call"
    );
    assert_eq!(app.run_all_jobs().await.others, 0, "the retry waits");
    // The second try waits a minute, plus up to 10 % jitter.
    app.advance_ms(70_000);
    assert_eq!(app.run_all_jobs().await.others, 1);

    let texts = received.lock().unwrap().clone();
    assert_eq!(texts.len(), 1);
    assert!(
        texts[0].contains("URGENT") && texts[0].contains(&payment_id),
        "{texts:?}"
    );
    assert_eq!(app.run_all_jobs().await.others, 0, "sent once");
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    assert!(alerts["items"][0]["sent_at"].is_string());
    assert_eq!(alerts["items"][0]["attempts"], 2);
}

/// Refunds `amount` directly at the sandbox PG, as an operator would in PortOne's console.
async fn refund_by_hand(app: &TestApp, imp_uid: &str, amount: i64) {
    let token: Value = app
        .http
        .post(app.url("/sandbox-pg/portone/users/getToken"))
        .json(&json!({ "imp_key": kassa::sandbox::SANDBOX_IMP_KEY, "imp_secret": kassa::sandbox::SANDBOX_IMP_SECRET }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["response"]["access_token"].as_str().unwrap();
    let answer: Value = app
        .http
        .post(app.url("/sandbox-pg/portone/payments/cancel"))
        .bearer_auth(access)
        .json(&json!({ "imp_uid": imp_uid, "amount": amount, "reason": "console" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["code"], 0, "{answer}");
}

async fn dead_letter_of(app: &TestApp, payment_id: &str) -> String {
    let (_, letters) = app.admin_get("/api/admin/dead-letters?pending=true").await;
    let letter = letters["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|letter| letter["payment_id"] == payment_id)
        .cloned();
    letter.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_redrive_after_a_refund_by_hand_asks_the_pg_first_and_refunds_nothing_more() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-hand-1", 15_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    let (_, body) = app
        .cancel(
            &payment_id,
            "key-hand",
            &json!({ "amount": 4_000, "reason": "refund" }),
        )
        .await;
    assert_eq!(body["status"], "CANCEL_FAILED");
    // The operator refunds it in the PG's console, then re-drives the dead letter. A re-check
    // of the payment in between (a webhook, the sweep) must leave that refund to the dead
    // letter: were it imported as made outside kassa, the re-drive would refund again.
    refund_by_hand(&app, &imp_uid, 4_000).await;
    assert_eq!(app.webhook(&imp_uid, "order-hand-1").await, StatusCode::OK);
    app.run_jobs().await;
    assert_eq!(app.payment(&payment_id).await["cancelled_amount"], 0);
    let id = dead_letter_of(&app, &payment_id).await;

    let (status, _) = app
        .admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.run_jobs().await, 1);

    let pg = app.pg_state(&imp_uid).await;
    assert_eq!(pg["refunds_executed"], 1, "only the refund by hand: {pg}");
    assert_eq!(pg["cancel_amount"], 4_000);
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED");
    assert_eq!(payment["cancelled_amount"], 4_000);
}

#[tokio::test]
async fn a_resolved_dead_letter_releases_its_hold_without_calling_the_pg() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-resolve-1", 15_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    let (_, body) = app
        .cancel(&payment_id, "key-resolve", &json!({ "reason": "refund" }))
        .await;
    assert_eq!(body["status"], "CANCEL_FAILED");
    let (status, _) = app
        .cancel(
            &payment_id,
            "key-resolve-2",
            &json!({ "amount": 1, "reason": "held" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the dead cancel still holds the whole balance"
    );
    let id = dead_letter_of(&app, &payment_id).await;
    let calls = app.pg_calls("portone.cancel").await;

    let (status, body) = app
        .admin_post(
            &format!("/api/admin/dead-letters/{id}/resolve"),
            &json!({ "outcome": "not_refunded", "note": "the buyer keeps the goods" }),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CANCEL_RESOLVED");
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PAID");
    assert_eq!(
        payment["events"].as_array().unwrap().last().unwrap()["kind"],
        "RESOLVED"
    );
    assert_eq!(
        app.pg_calls("portone.cancel").await,
        calls,
        "nothing was sent to the PG"
    );
    let (status, _) = app
        .admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a resolved cancel does not run again"
    );
    let (_, letters) = app.admin_get("/api/admin/dead-letters?pending=true").await;
    assert!(letters["items"].as_array().unwrap().is_empty());
    let (status, body) = app
        .cancel(
            &payment_id,
            "key-resolve-3",
            &json!({ "amount": 1_000, "reason": "later" }),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("PARTIALLY_CANCELLED"))
    );
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
}

#[tokio::test]
async fn an_intent_the_worker_holds_cannot_be_claimed_again_until_its_lease_ends() {
    let app = TestApp::spawn().await;
    let (payment_id, _) = app.paid("order-lease-1", 15_000).await;
    let store = &app.kassa.store;
    let now = app.kassa.env.now();
    let intent = app.store_cancel(&payment_id, "lease-key").await;
    let lease = chrono::Duration::seconds(30);

    // The worker claims the job first.
    let claims = store
        .claim_due(now, 8, leases(lease), std::collections::HashMap::new())
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);

    assert!(
        !store.cancel_turn(intent.id, now).await.unwrap(),
        "it is not the request's turn"
    );
    assert!(
        store
            .claim_cancel(intent.id, now, lease)
            .await
            .unwrap()
            .is_none(),
        "no second attempt at once"
    );
    assert!(
        store
            .claim_due(now, 8, leases(lease), std::collections::HashMap::new())
            .await
            .unwrap()
            .is_empty()
    );
    // A worker that died: once its lease ends, the job can be claimed again.
    let later = now + chrono::Duration::seconds(31);
    assert!(store.cancel_turn(intent.id, later).await.unwrap());
    assert_eq!(
        store
            .claim_due(later, 8, leases(lease), std::collections::HashMap::new())
            .await
            .unwrap()
            .len(),
        1
    );
}

fn leases(
    lease: chrono::Duration,
) -> std::collections::HashMap<kassa::domain::job::JobKind, chrono::Duration> {
    std::collections::HashMap::from([(kassa::domain::job::JobKind::Cancel, lease)])
}

/// A cancel whose caller goes away while its attempt is at the PG (a client that disconnects
/// drops the handler's future) is still carried out and recorded by its own task, before any
/// worker runs, and refunded once; a repeat of its key answers the cancel.
#[tokio::test]
async fn a_cancel_whose_caller_went_away_is_carried_out_by_its_own_task() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-gone-1", 15_000).await;
    app.fault_held("portone.cancel", "delay", 1, 300).await;
    let caller = {
        let kassa = app.kassa.clone();
        let id = kassa::domain::PaymentId::parse(&payment_id).unwrap();
        let key = kassa::domain::IdempotencyKey::parse("gone-key").unwrap();
        tokio::spawn(async move {
            let view = kassa.store.payment(id).await.unwrap().unwrap();
            kassa::flows::cancel::request(&kassa, &view.payment, key, None, "gone").await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.pg_calls("portone.cancel").await == 0 {
        assert!(Instant::now() < deadline, "the cancel never reached the PG");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    loop {
        if app.payment(&payment_id).await["status"] == "CANCELLED" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attempt of a request whose caller went away did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
    let (status, body) = app
        .cancel(&payment_id, "gone-key", &json!({ "reason": "gone" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "CANCELLED", "{body}");
    assert_eq!(app.run_jobs().await, 0, "nothing was left for the worker");
}

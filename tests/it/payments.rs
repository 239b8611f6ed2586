//! Taking a payment: completion, webhooks, races, tampering, PG faults and restarts.

use crate::support::TestApp;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_payment_through_the_api_and_the_sandbox_ends_paid_with_its_events() {
    let app = TestApp::spawn().await;
    let order = app.create_order("order-paid-1", 15_000).await;
    assert_eq!(order["status"], "READY");
    assert_eq!(order["provider"], "portone");
    assert_eq!(order["pay_url"], app.url("/payment/order-paid-1"));
    let imp_uid = app.pg_payment("order-paid-1", 15_000).await;

    let (status, paid) = app.complete(&imp_uid, "order-paid-1").await;

    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "PAID");
    assert_eq!(paid["amount"], 15_000);
    assert_eq!(paid["pg_tid"], imp_uid.as_str());
    assert_eq!(paid["settlement_status"], "Pending");
    let stored = app.payment(paid["payment_id"].as_str().unwrap()).await;
    assert_eq!(stored["status"], "PAID");
    assert_eq!(stored["events"][0]["kind"], "PAID");
    assert!(stored["paid_at"].as_str().unwrap().ends_with("+09:00"));
    let (_, order) = app.admin_get("/api/orders/order-paid-1").await;
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["payment_id"], paid["payment_id"]);
}

#[tokio::test]
async fn the_same_order_request_twice_answers_the_first_and_a_different_one_conflicts() {
    let app = TestApp::spawn().await;
    let first = app.create_order("order-twice-1", 9_900).await;
    let again = app.create_order("order-twice-1", 9_900).await;
    assert_eq!(first, again);
    let (status, body) = app
        .admin_post(
            "/api/orders",
            &json!({ "order_id": "order-twice-1", "amount": 1, "name": "원두 1kg" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "ORDER_CONFLICT");
    let (_, stored) = app.admin_get("/api/orders/order-twice-1").await;
    assert_eq!(stored["amount"], 9_900);
}

#[tokio::test]
async fn a_tampered_amount_is_refused_and_refunded_at_the_pg() {
    let app = TestApp::spawn().await;
    app.create_order("order-tamper-1", 15_000).await;
    let imp_uid = app.pg_payment("order-tamper-1", 100).await;

    let (status, body) = app.complete(&imp_uid, "order-tamper-1").await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "AMOUNT_MISMATCH");
    let payment = app
        .payment(body["error"]["payment_id"].as_str().unwrap())
        .await;
    assert!(
        payment["status"].as_str().unwrap().starts_with("ROLLBACK_"),
        "{payment}"
    );
    assert_eq!(payment["status"], "ROLLBACK_REFUNDED");
    assert_eq!(payment["cancelled_amount"], 100);
    let kinds: Vec<&str> = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["PAID", "ROLLBACK_REQUESTED", "REFUNDED"]);
    let pg = app.pg_state(&imp_uid).await;
    assert_eq!(pg["refunds_executed"], 1, "{pg}");
    assert_eq!(pg["status"], "cancelled");
    let (_, order) = app.admin_get("/api/orders/order-tamper-1").await;
    assert_eq!(order["status"], "READY");
    // Asking again changes nothing and refunds nothing more.
    let (status, _) = app.complete(&imp_uid, "order-tamper-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
}

#[tokio::test]
async fn a_rollback_whose_cancel_fails_stays_pending_with_its_intent_stored() {
    let app = TestApp::spawn().await;
    app.create_order("order-tamper-2", 15_000).await;
    let imp_uid = app.pg_payment("order-tamper-2", 100).await;
    app.fault("portone.payment", "status500", 1).await;
    app.fault("portone.cancel", "status500", 2).await;

    let (status, body) = app.complete(&imp_uid, "order-tamper-2").await;

    // The lookup before storing fails first, so the completion answers "PG unavailable".
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body) = app.complete(&imp_uid, "order-tamper-2").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let payment = app
        .payment(body["error"]["payment_id"].as_str().unwrap())
        .await;
    assert_eq!(payment["status"], "ROLLBACK_PENDING", "{payment}");
    let kinds: Vec<&str> = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "PAID",
            "ROLLBACK_REQUESTED",
            "CANCEL_ATTEMPT_FAILED",
            "CANCEL_ATTEMPT_FAILED"
        ]
    );
    let open = app.kassa.store.open_cancel_intents(10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].amount.won(), 100);
    assert_eq!(open[0].attempts, 2);
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 0);
    // The intent waits in the retry queue for its first delay.
    assert_eq!(app.run_jobs().await, 0);
    app.advance_ms(5_600);
    assert_eq!(app.run_jobs().await, 1);
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
}

#[tokio::test]
async fn a_rollback_whose_answer_is_lost_converges_on_the_pg_and_refunds_once() {
    let app = TestApp::spawn().await;
    app.create_order("order-tamper-3", 15_000).await;
    let imp_uid = app.pg_payment("order-tamper-3", 500).await;
    app.fault("portone.cancel", "lost_response", 1).await;

    let (status, body) = app.complete(&imp_uid, "order-tamper-3").await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let payment = app
        .payment(body["error"]["payment_id"].as_str().unwrap())
        .await;
    assert_eq!(payment["status"], "ROLLBACK_REFUNDED", "{payment}");
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
}

#[tokio::test]
async fn a_second_payment_for_a_paid_order_is_rolled_back() {
    let app = TestApp::spawn().await;
    app.create_order("order-double-1", 12_000).await;
    let first = app.pg_payment("order-double-1", 12_000).await;
    let second = app.pg_payment("order-double-1", 12_000).await;
    let (status, paid) = app.complete(&first, "order-double-1").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = app.complete(&second, "order-double-1").await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "ORDER_ALREADY_PAID");
    assert_eq!(app.pg_state(&second).await["refunds_executed"], 1);
    assert_eq!(app.pg_state(&first).await["refunds_executed"], 0);
    assert_eq!(
        app.payment(paid["payment_id"].as_str().unwrap()).await["status"],
        "PAID"
    );
    let payments = app.payments_of("order-double-1").await;
    assert_eq!(payments.len(), 2);
    let (_, order) = app.admin_get("/api/orders/order-double-1").await;
    assert_eq!(order["payment_id"], paid["payment_id"]);
}

#[tokio::test]
async fn the_same_webhook_five_times_stores_one_payment() {
    let app = TestApp::spawn().await;
    app.create_order("order-hook-1", 15_000).await;
    let imp_uid = app.pg_payment("order-hook-1", 15_000).await;

    let mut hooks = Vec::new();
    for _ in 0..5 {
        hooks.push(app.webhook(&imp_uid, "order-hook-1"));
    }
    for status in futures_util::future::join_all(hooks).await {
        assert_eq!(status, StatusCode::OK);
    }
    // The webhooks only queued a re-check (one: they name the same payment); it asks PortOne.
    assert_eq!(app.payments_of("order-hook-1").await.len(), 0);
    assert_eq!(
        app.run_all_jobs().await.others,
        1,
        "duplicates queue one re-check"
    );

    let payments = app.payments_of("order-hook-1").await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["status"], "PAID");
    let payment = app
        .payment(payments[0]["payment_id"].as_str().unwrap())
        .await;
    assert_eq!(payment["events"].as_array().unwrap().len(), 1);
    let again = app.webhook(&imp_uid, "order-hook-1").await;
    assert_eq!(again, StatusCode::OK);
    app.run_all_jobs().await;
    assert_eq!(
        app.payment(payments[0]["payment_id"].as_str().unwrap())
            .await,
        payment
    );
}

#[tokio::test]
async fn the_completion_call_racing_the_webhook_stores_one_payment() {
    let app = TestApp::spawn().await;
    for round in 0..10 {
        let order_id = format!("order-race-{round}");
        app.create_order(&order_id, 15_000).await;
        let imp_uid = app.pg_payment(&order_id, 15_000).await;
        let (completion, webhook) = tokio::join!(
            app.complete(&imp_uid, &order_id),
            app.webhook(&imp_uid, &order_id)
        );
        assert_eq!(completion.0, StatusCode::OK, "{}", completion.1);
        assert_eq!(webhook, StatusCode::OK);
        app.run_all_jobs().await;
        let payments = app.payments_of(&order_id).await;
        assert_eq!(payments.len(), 1, "round {round}: {payments:?}");
        assert_eq!(payments[0]["payment_id"], completion.1["payment_id"]);
    }
}

#[tokio::test]
async fn a_webhook_for_an_unknown_payment_is_answered_200_and_stores_nothing() {
    let app = TestApp::spawn().await;
    app.create_order("order-ghost-1", 15_000).await;
    let before = app.snapshot(&["order-ghost-1"]).await;

    let status = app.webhook("imp_000000000000", "order-ghost-1").await;
    app.run_all_jobs().await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.snapshot(&["order-ghost-1"]).await, before);
    assert_eq!(app.payments_of("order-ghost-1").await.len(), 0);
}

#[tokio::test]
async fn a_401_from_the_pg_refreshes_the_token_once_and_goes_on() {
    let app = TestApp::spawn().await;
    app.create_order("order-token-1", 15_000).await;
    let imp_uid = app.pg_payment("order-token-1", 15_000).await;
    app.fault("portone.payment", "status401", 1).await;

    let (status, body) = app.complete(&imp_uid, "order-token-1").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "PAID");
    assert_eq!(
        app.pg_calls("portone.token").await,
        2,
        "one token, then one refresh"
    );
    assert_eq!(app.pg_calls("portone.payment").await, 2);
}

#[tokio::test]
async fn the_token_is_reused_until_its_expiry_nears_then_renewed() {
    let app = TestApp::spawn().await;
    for (round, minutes) in [(0, 0), (1, 10), (2, 15)] {
        app.clock.advance(chrono::Duration::minutes(minutes));
        let order_id = format!("order-tok-{round}");
        app.create_order(&order_id, 1_000).await;
        let imp_uid = app.pg_payment(&order_id, 1_000).await;
        assert_eq!(app.complete(&imp_uid, &order_id).await.0, StatusCode::OK);
    }
    assert_eq!(
        app.pg_calls("portone.token").await,
        1,
        "30 minutes of use need one token"
    );
    app.clock.advance(chrono::Duration::minutes(15));
    app.create_order("order-tok-3", 1_000).await;
    let imp_uid = app.pg_payment("order-tok-3", 1_000).await;
    assert_eq!(
        app.complete(&imp_uid, "order-tok-3").await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.pg_calls("portone.token").await,
        2,
        "an expired token is renewed before use"
    );
}

#[tokio::test]
async fn a_pg_that_is_down_leaves_nothing_paid_and_a_later_webhook_completes_it() {
    let app = TestApp::spawn().await;
    app.create_order("order-down-1", 15_000).await;
    let imp_uid = app.pg_payment("order-down-1", 15_000).await;
    app.fault("portone.payment", "status500", 3).await;

    let (status, body) = app.complete(&imp_uid, "order-down-1").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "PG_UNAVAILABLE");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored")
    );
    assert_eq!(app.payments_of("order-down-1").await.len(), 0);
    let (_, order) = app.admin_get("/api/orders/order-down-1").await;
    assert_eq!(order["status"], "READY");
    // Two more failures are still queued: the webhook's re-check meets them and waits.
    assert_eq!(app.webhook(&imp_uid, "order-down-1").await, StatusCode::OK);
    app.run_all_jobs().await;
    assert_eq!(app.payments_of("order-down-1").await.len(), 0);

    // The re-check goes on until the PG answers, and stores the payment then.
    for _ in 0..6 {
        if !app.payments_of("order-down-1").await.is_empty() {
            break;
        }
        app.advance_ms(15 * 60_000);
        app.run_all_jobs().await;
    }

    let payments = app.payments_of("order-down-1").await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "PAID");
    assert_eq!(
        app.pg_calls("portone.payment").await,
        5,
        "three failures, the answer, and one look at the refunds of the payment just found"
    );
}

#[tokio::test]
async fn a_pg_that_times_out_gives_a_clear_error_and_a_later_webhook_completes_it() {
    let app = TestApp::spawn().await;
    app.create_order("order-slow-1", 15_000).await;
    let imp_uid = app.pg_payment("order-slow-1", 15_000).await;
    app.fault("portone.payment", "timeout", 1).await;

    let started = Instant::now();
    let (status, body) = app.complete(&imp_uid, "order-slow-1").await;

    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "PG_TIMEOUT");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "kassa gave up at its own PG timeout"
    );
    assert_eq!(app.payments_of("order-slow-1").await.len(), 0);
    assert_eq!(app.webhook(&imp_uid, "order-slow-1").await, StatusCode::OK);
    app.run_all_jobs().await;
    assert_eq!(app.payments_of("order-slow-1").await[0]["status"], "PAID");
}

#[tokio::test]
async fn a_payment_the_pg_reports_failed_or_unpaid_is_not_stored() {
    let app = TestApp::spawn().await;
    app.create_order("order-failed-1", 15_000).await;
    let failed = app
        .pg_payment_with(
            json!({ "merchant_uid": "order-failed-1", "amount": 15_000, "status": "failed" }),
        )
        .await;
    let ready = app
        .pg_payment_with(
            json!({ "merchant_uid": "order-failed-1", "amount": 15_000, "status": "ready" }),
        )
        .await;

    let (status, body) = app.complete(&failed, "order-failed-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "PAYMENT_FAILED");
    let (status, body) = app.complete(&ready, "order-failed-1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "PAYMENT_NOT_PAID");
    assert_eq!(app.payments_of("order-failed-1").await.len(), 0);
}

#[tokio::test]
async fn a_completion_naming_another_order_is_refused() {
    let app = TestApp::spawn().await;
    app.create_order("order-mine-1", 15_000).await;
    app.create_order("order-other-1", 15_000).await;
    let imp_uid = app.pg_payment("order-mine-1", 15_000).await;

    let (status, body) = app.complete(&imp_uid, "order-other-1").await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "MERCHANT_UID_MISMATCH");
    assert_eq!(app.payments_of("order-other-1").await.len(), 0);
    assert_eq!(app.payments_of("order-mine-1").await.len(), 0);
}

#[tokio::test]
async fn everything_stored_is_still_there_after_a_restart() {
    let app = TestApp::spawn().await;
    app.create_order("order-keep-1", 15_000).await;
    let imp_uid = app.pg_payment("order-keep-1", 15_000).await;
    let (_, paid) = app.complete(&imp_uid, "order-keep-1").await;
    app.create_order("order-keep-2", 15_000).await;
    let tampered = app.pg_payment("order-keep-2", 10).await;
    app.complete(&tampered, "order-keep-2").await;
    let before = app.snapshot(&["order-keep-1", "order-keep-2"]).await;

    let app = app.restart().await;

    assert_eq!(
        app.snapshot(&["order-keep-1", "order-keep-2"]).await,
        before
    );
    assert_eq!(
        app.payment(paid["payment_id"].as_str().unwrap()).await["status"],
        "PAID"
    );
}

#[tokio::test]
async fn the_result_long_poll_wakes_when_the_payment_lands_and_unknown_orders_answer_at_once() {
    let app = TestApp::spawn().await;
    app.create_order("order-wait-1", 15_000).await;
    let imp_uid = app.pg_payment("order-wait-1", 15_000).await;
    let (status, body) = app
        .post_json("/api/payments/result/order-wait-1", &json!({}))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");

    let waiter = {
        let http = app.http.clone();
        let url = app.url("/api/payments/result/order-wait-1?wait_s=30");
        tokio::spawn(async move {
            let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            (body, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "a pending order waits");
    app.complete(&imp_uid, "order-wait-1").await;
    let completed = Instant::now();
    let (body, answered) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(body["result"], "PAID");
    assert!(answered.duration_since(completed) < Duration::from_secs(2));
    let started = Instant::now();
    let (status, body) = app
        .admin_get("/api/payments/result/order-nobody-1?wait_s=30")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn walking_the_pages_of_any_size_lists_every_payment_once_newest_first() {
    let app = TestApp::spawn().await;
    let mut paid = Vec::new();
    for n in 0..23 {
        let order_id = format!("order-page-{n:02}");
        let (payment_id, _) = app.paid(&order_id, 1_000 + n).await;
        paid.push(payment_id);
        app.advance_ms(1_000);
    }
    let newest_first: Vec<String> = paid.iter().rev().cloned().collect();
    for limit in [1, 2, 3, 5, 7, 22, 23, 24, 500] {
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..=23 {
            let path = match &cursor {
                None => format!("/api/payments?limit={limit}"),
                Some(cursor) => format!("/api/payments?limit={limit}&cursor={cursor}"),
            };
            let (status, page) = app.admin_get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= limit, "limit {limit}: {} items", items.len());
            seen.extend(
                items
                    .iter()
                    .map(|item| item["payment_id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, newest_first, "limit {limit}");
    }
}

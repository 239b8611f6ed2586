//! Payple through the sandbox: the result post verified by the result inquiry, rollbacks and
//! refunds without an idempotency key, the AuthKey cache, and the settlement sync at Payple's
//! pace.

use crate::support::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn payple_order(app: &TestApp, order_id: &str, amount: i64) {
    let body =
        json!({ "order_id": order_id, "amount": amount, "name": "원두", "provider": "payple" });
    let (status, body) = app.admin_post("/api/orders", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A payment the buyer made in Payple's window; answers the sandbox's view of it.
async fn payple_paid(app: &TestApp, order_id: &str, amount: i64) -> Value {
    let body = json!({ "order_id": order_id, "amount": amount, "goods": "원두" });
    let response = app
        .http
        .post(app.url("/sandbox-pg/_control/payple/payments"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn payple_state(app: &TestApp, order_id: &str) -> Value {
    let url = app.url(&format!("/sandbox-pg/_control/payple/payments/{order_id}"));
    app.http
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Posts Payple's result fields as the window would, claiming `claimed_total`.
async fn result_post(app: &TestApp, paid: &Value, claimed_total: i64) -> (StatusCode, Value) {
    let form = [
        ("PCD_PAY_RST", "success".to_owned()),
        ("PCD_PAY_CODE", "PAYN0000".to_owned()),
        (
            "PCD_PAY_OID",
            paid["PCD_PAY_OID"].as_str().unwrap().to_owned(),
        ),
        ("PCD_PAY_TYPE", "card".to_owned()),
        (
            "PCD_PAY_TIME",
            paid["PCD_PAY_TIME"].as_str().unwrap().to_owned(),
        ),
        ("PCD_PAY_TOTAL", claimed_total.to_string()),
        ("PCD_PAY_CARDNUM", "1234-****-****-5678".to_owned()),
    ];
    let response = app
        .http
        .post(app.url("/api/payment/payple/result"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_payple_result_post_is_verified_with_the_result_inquiry_and_stored_paid() {
    let app = TestApp::spawn().await;
    payple_order(&app, "order-pp-1", 15_000).await;
    let paid = payple_paid(&app, "order-pp-1", 15_000).await;

    let (status, payment) = result_post(&app, &paid, 15_000).await;

    assert_eq!(status, StatusCode::OK, "{payment}");
    assert_eq!(payment["status"], "PAID");
    assert_eq!(payment["provider"], "payple");
    assert_eq!(payment["pg_tid"], paid["pg_tid"]);
    let (status, again) = result_post(&app, &paid, 15_000).await;
    assert_eq!(
        (status, &again["payment_id"]),
        (StatusCode::OK, &payment["payment_id"])
    );
    // A result post for a payment Payple does not have stores nothing.
    let ghost = json!({ "PCD_PAY_OID": "order-pp-1", "PCD_PAY_TIME": "20200101120000" });
    let (status, _) = result_post(&app, &ghost, 15_000).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.payments_of("order-pp-1").await.len(), 1);
}

#[tokio::test]
async fn a_tampered_payple_payment_is_refunded_through_payple() {
    let app = TestApp::spawn().await;
    payple_order(&app, "order-pp-2", 15_000).await;
    let paid = payple_paid(&app, "order-pp-2", 100).await;

    // The browser claims the right amount; the inquiry tells the truth.
    let (status, body) = result_post(&app, &paid, 15_000).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "AMOUNT_MISMATCH");
    let payment = app
        .payment(body["error"]["payment_id"].as_str().unwrap())
        .await;
    assert_eq!(payment["status"], "ROLLBACK_REFUNDED");
    let state = payple_state(&app, "order-pp-2").await;
    assert_eq!(
        (
            state["refunds_executed"].as_u64(),
            state["PCD_REFUND_TOTAL"].as_str()
        ),
        (Some(1), Some("100"))
    );
}

#[tokio::test]
async fn payple_refunds_without_a_key_ask_payple_before_every_retry_and_refund_once() {
    let app = TestApp::spawn().await;
    payple_order(&app, "order-pp-3", 20_000).await;
    let paid = payple_paid(&app, "order-pp-3", 20_000).await;
    let (_, payment) = result_post(&app, &paid, 20_000).await;
    let payment_id = payment["payment_id"].as_str().unwrap();
    // The refund is made but its answer is lost; then the PG fails once more.
    app.fault("payple.cancel", "lost_response", 1).await;
    app.fault("payple.payment", "status500", 1).await;
    let inquiries = app.pg_calls("payple.payment").await;

    let (status, body) = app
        .cancel(
            payment_id,
            "pp-key-1",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "PARTIALLY_CANCELLED");
    let state = payple_state(&app, "order-pp-3").await;
    assert_eq!(state["refunds_executed"], 1, "{state}");
    assert_eq!(
        app.pg_calls("payple.cancel").await,
        1,
        "the second attempt found the refund by asking"
    );
    assert!(app.pg_calls("payple.payment").await >= inquiries + 2);

    // A plain failure is retried, and the retry asks Payple first.
    app.fault("payple.cancel", "status500", 1).await;
    let (_, body) = app
        .cancel(
            payment_id,
            "pp-key-2",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "PARTIALLY_CANCELLED");
    assert_eq!(
        payple_state(&app, "order-pp-3").await["refunds_executed"],
        2
    );
    assert_eq!(app.payment(payment_id).await["cancelled_amount"], 10_000);
}

#[tokio::test]
async fn the_authkey_is_reused_for_fifteen_minutes_per_purpose() {
    let app = TestApp::spawn().await;
    payple_order(&app, "order-pp-4", 1_000).await;
    let paid = payple_paid(&app, "order-pp-4", 1_000).await;
    result_post(&app, &paid, 1_000).await;
    payple_order(&app, "order-pp-5", 1_000).await;
    let second = payple_paid(&app, "order-pp-5", 1_000).await;
    app.advance_ms(14 * 60_000);
    result_post(&app, &second, 1_000).await;
    assert_eq!(
        app.pg_calls("payple.auth").await,
        1,
        "two inquiries, one auth"
    );

    app.advance_ms(2 * 60_000);
    payple_order(&app, "order-pp-6", 1_000).await;
    let third = payple_paid(&app, "order-pp-6", 1_000).await;
    let (status, _) = result_post(&app, &third, 1_000).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.pg_calls("payple.auth").await,
        2,
        "a new auth after 15 minutes"
    );
    let (_, body) = app
        .cancel(
            app.payments_of("order-pp-6").await[0]["payment_id"]
                .as_str()
                .unwrap(),
            "pp-key-4",
            &json!({ "reason": "r" }),
        )
        .await;
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(
        app.pg_calls("payple.auth").await,
        3,
        "refunds authenticate for their own purpose"
    );
}

#[tokio::test]
async fn a_payple_day_of_250_lines_syncs_over_two_runs_at_payples_pace() {
    let app = TestApp::spawn_with(vec![
        ("KASSA_SETTLEMENT_SYNC__PAGE_SIZE", "100".into()),
        ("PAYPLE_SETTLEMENT_SYNC_MAX_PAGES_PER_RUN", "2".into()),
    ])
    .await;
    let mut records = Vec::new();
    for n in 0..250 {
        let order_id = format!("order-ppsync-{n:04}");
        payple_order(&app, &order_id, 2_000).await;
        let paid = payple_paid(&app, &order_id, 2_000).await;
        assert_eq!(result_post(&app, &paid, 2_000).await.0, StatusCode::OK);
        records.push(json!({ "order_id": order_id, "amount": 2_000 }));
    }
    let date = crate::support::start_time()
        .with_timezone(&chrono_tz::Asia::Seoul)
        .date_naive()
        .to_string();
    let load = json!({ "provider": "payple", "date": date, "records": records });
    let response = app
        .http
        .post(app.url("/sandbox-pg/_control/settlements"))
        .json(&load)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json!({ "provider": "payple", "date": date });
    let run = || app.admin_post("/api/admin/settlement-sync/run", &body);

    let (status, first) = run().await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, second) = run().await;
    let (_, third) = run().await;

    assert_eq!(
        (
            first["pages"].as_u64(),
            first["complete"].as_bool(),
            first["updated"].as_u64()
        ),
        (Some(2), Some(false), Some(200))
    );
    assert_eq!(
        (
            second["resumed"].as_bool(),
            second["complete"].as_bool(),
            second["updated"].as_u64()
        ),
        (Some(true), Some(true), Some(50))
    );
    assert_eq!(third["updated"], 0);
    for report in [&first, &second, &third] {
        assert_eq!(
            report["failed"], 0,
            "Payple never refused a call as too fast: {report}"
        );
    }
    let stats: Value = app
        .http
        .get(app.url("/sandbox-pg/_control/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gap = stats["min_gap_ms"]["payple.settlements"].as_u64().unwrap();
    assert!(gap >= 1_000, "two settlement calls {gap} ms apart");
}

#[tokio::test]
async fn a_settlement_line_kassa_cannot_read_is_a_discrepancy_and_the_day_goes_on() {
    let app = TestApp::spawn_with(vec![("KASSA_SETTLEMENT_SYNC__PAGE_SIZE", "1".into())]).await;
    for order_id in ["order-ppbad-1", "order-ppbad-2"] {
        payple_order(&app, order_id, 12_000).await;
        let paid = payple_paid(&app, order_id, 12_000).await;
        assert_eq!(result_post(&app, &paid, 12_000).await.0, StatusCode::OK);
    }
    let date = crate::support::start_time()
        .with_timezone(&chrono_tz::Asia::Seoul)
        .date_naive()
        .to_string();
    let load = json!({ "provider": "payple", "date": date, "records": [
        { "order_id": "order-ppbad-1", "amount": 12_000, "raw_amount": "12,000원" },
        { "order_id": "order-ppbad-2", "amount": 12_000 },
    ]});
    let response = app
        .http
        .post(app.url("/sandbox-pg/_control/settlements"))
        .json(&load)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let (status, report) = app
        .admin_post(
            "/api/admin/settlement-sync/run",
            &json!({ "provider": "payple", "date": date }),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["discrepancy"].as_u64(), report["updated"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(
        (report["failed"].as_u64(), report["complete"].as_bool()),
        (Some(0), Some(true))
    );
    let (_, findings) = app
        .admin_get(&format!("/api/admin/settlement-findings?date={date}"))
        .await;
    assert_eq!(findings["items"][0]["order_id"], "order-ppbad-1");
    assert_eq!(findings["items"][0]["kind"], "DISCREPANCY");
}

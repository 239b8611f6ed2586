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
    // A payment is its order's: a re-post that names another day is the same payment.
    let other_day = json!({ "PCD_PAY_OID": "order-pp-1", "PCD_PAY_TIME": "20200101120000" });
    let (status, same) = result_post(&app, &other_day, 15_000).await;
    assert_eq!(
        (status, &same["payment_id"]),
        (StatusCode::OK, &payment["payment_id"])
    );
    assert_eq!(app.payments_of("order-pp-1").await.len(), 1);
    // A result post for a payment Payple does not have stores nothing.
    payple_order(&app, "order-pp-1b", 15_000).await;
    let ghost = json!({ "PCD_PAY_OID": "order-pp-1b", "PCD_PAY_TIME": "20261123120000" });
    let (status, _) = result_post(&app, &ghost, 15_000).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.payments_of("order-pp-1b").await.len(), 0);
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

/// A paid Payple payment of `amount` for a new order; answers its payment id.
pub(crate) async fn payple_payment(app: &TestApp, order_id: &str, amount: i64) -> String {
    payple_order(app, order_id, amount).await;
    let paid = payple_paid(app, order_id, amount).await;
    let (status, payment) = result_post(app, &paid, amount).await;
    assert_eq!(status, StatusCode::OK, "{payment}");
    payment["payment_id"].as_str().unwrap().to_owned()
}

/// Loads the sandbox's settlement lines of `date` (an APPROVAL line per payment and a CANCEL
/// line per refund it made that day) and runs kassa's Payple sync of that day.
async fn payple_sync(app: &TestApp, date: &str) -> Value {
    let response = app
        .http
        .post(app.url("/sandbox-pg/_control/settlements"))
        .json(&json!({ "provider": "payple", "date": date, "from_payments": true }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let (status, report) = app
        .admin_post(
            "/api/admin/settlement-sync/run",
            &json!({ "provider": "payple", "date": date }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

pub(crate) async fn letter_of(app: &TestApp, payment_id: &str) -> Value {
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    letters["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|letter| letter["payment_id"] == payment_id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_payple_refund_whose_answer_is_lost_is_never_sent_again_and_its_settlement_line_closes_it()
 {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-3", 20_000).await;
    // Payple carries the refund out, and its answer never reaches kassa.
    app.fault("payple.cancel", "lost_response", 1).await;

    let (status, body) = app
        .cancel(
            &payment_id,
            "pp-key-1",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "CANCEL_UNKNOWN");
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCEL_UNKNOWN", "{payment}");
    assert_eq!(
        payment["cancelled_amount"], 0,
        "not recorded without evidence"
    );
    assert_eq!(
        payple_state(&app, "order-pp-3").await["refunds_executed"],
        1
    );
    let letter = letter_of(&app, &payment_id).await;
    assert_eq!(letter["job"], "unknown_outcome", "{letter}");
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    assert!(
        alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|alert| alert["level"] == "URGENT" && alert["kind"] == "REFUND_OUTCOME_UNKNOWN"),
        "{alerts}"
    );

    // Hours go by: nothing sends the refund again, and a re-drive needs the console checked.
    for _ in 0..6 {
        app.advance_ms(3_600_000);
        app.run_jobs().await;
    }
    let id = letter["id"].as_str().unwrap();
    let (status, refused) = app
        .admin_post(&format!("/api/admin/dead-letters/{id}/redrive"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "CONSOLE_CHECK_REQUIRED");
    assert_eq!(app.pg_calls("payple.cancel").await, 1, "never sent again");
    let (status, _) = app
        .cancel(
            &payment_id,
            "pp-key-1b",
            &json!({ "amount": 15_001, "reason": "too much" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the unknown refund still holds its amount"
    );

    // The next morning's settlement shows Payple's CANCEL line: that is the evidence.
    let report = payple_sync(&app, "2026-11-23").await;
    assert_eq!(report["cancel_skipped"], 1, "{report}");
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(payment["cancelled_amount"], 5_000);
    let refunded = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "REFUNDED")
        .unwrap();
    assert!(
        refunded["detail"].as_str().unwrap().contains("settlement"),
        "{refunded}"
    );
    assert!(letter_of(&app, &payment_id).await["resolved_at"].is_string());
    // A re-run of the same day uses the line once.
    payple_sync(&app, "2026-11-23").await;
    assert_eq!(app.payment(&payment_id).await["cancelled_amount"], 5_000);
    assert_eq!(
        payple_state(&app, "order-pp-3").await["refunds_executed"],
        1
    );
}

#[tokio::test]
async fn a_payple_refund_goes_on_when_the_client_drops_the_request() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-drop", 20_000).await;
    // Payple answers after 300 ms (within kassa's 400 ms PG timeout); the client gives up first.
    app.fault_held("payple.cancel", "lost_response", 1, 300)
        .await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();

    let dropped = impatient
        .post(app.url(&format!("/api/payments/{payment_id}/cancel")))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header("idempotency-key", "pp-drop")
        .json(&json!({ "amount": 5_000, "reason": "partial" }))
        .send()
        .await;
    assert!(dropped.is_err(), "the client went away mid-attempt");

    let mut payment = app.payment(&payment_id).await;
    for _ in 0..50 {
        if payment["status"] != "CANCEL_REQUESTED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        payment = app.payment(&payment_id).await;
    }
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(payment["cancelled_amount"], 5_000);
    assert_eq!(
        payple_state(&app, "order-pp-drop").await["refunds_executed"],
        1
    );
    assert_eq!(app.run_jobs().await, 0, "nothing left to do");
    // The client asks again with its key: the cancel's state, not "still running" (found by
    // the simulation), and nothing cancelled twice.
    let (status, again) = app
        .cancel(
            &payment_id,
            "pp-drop",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["status"], "PARTIALLY_CANCELLED");
    assert_eq!(
        payple_state(&app, "order-pp-drop").await["refunds_executed"],
        1
    );
}

#[tokio::test]
async fn a_payple_attempt_slower_than_its_lease_is_the_only_attempt_and_its_answer_counts_once() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-slow", 20_000).await;
    app.fault_held("payple.cancel", "lost_response", 1, 300)
        .await;

    let request = {
        let http = app.http.clone();
        let url = app.url(&format!("/api/payments/{payment_id}/cancel"));
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(crate::support::ADMIN_TOKEN)
                .header("idempotency-key", "pp-slow")
                .json(&json!({ "amount": 5_000, "reason": "partial" }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // While Payple holds the refund's answer, the attempt's lease runs out.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    app.advance_ms(30 * 60_000);
    assert_eq!(
        app.run_jobs().await,
        0,
        "no second attempt while the first is still talking to Payple"
    );

    let body = request.await.unwrap();
    assert_eq!(body["status"], "PARTIALLY_CANCELLED", "{body}");
    app.advance_ms(30 * 60_000);
    assert_eq!(app.run_jobs().await, 0);
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["cancelled_amount"], 5_000);
    assert_eq!(app.pg_calls("payple.cancel").await, 1);
    assert_eq!(
        payple_state(&app, "order-pp-slow").await["refunds_executed"],
        1
    );
}

#[tokio::test]
async fn an_unknown_payple_refund_is_sent_again_only_after_the_console_is_checked() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-check", 20_000).await;
    // The PG never saw it this time: the request timed out before Payple acted.
    app.fault("payple.cancel", "timeout", 1).await;
    let (_, body) = app
        .cancel(&payment_id, "pp-check", &json!({ "reason": "full" }))
        .await;
    assert_eq!(body["status"], "CANCEL_UNKNOWN", "{body}");
    assert_eq!(
        payple_state(&app, "order-pp-check").await["refunds_executed"],
        0
    );
    let id = letter_of(&app, &payment_id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = app
        .admin_post(
            &format!("/api/admin/dead-letters/{id}/redrive"),
            &json!({ "console_checked": true, "note": "no refund in Payple's console" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.run_jobs().await, 1);

    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "CANCELLED", "{payment}");
    assert_eq!(
        payple_state(&app, "order-pp-check").await["refunds_executed"],
        1
    );
    let redriven = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "REDRIVEN")
        .unwrap();
    assert!(
        redriven["detail"]
            .as_str()
            .unwrap()
            .contains("no refund in Payple's console"),
        "{redriven}"
    );
}

#[tokio::test]
async fn an_unknown_payple_refund_resolved_as_refunded_counts_like_a_confirmed_one() {
    let app = TestApp::spawn().await;
    let body = json!({ "order_id": "order-pp-res", "amount": 20_000, "name": "원두", "provider": "payple", "partner_id": "p-coffee" });
    let (status, body) = app.admin_post("/api/orders", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let paid = payple_paid(&app, "order-pp-res", 20_000).await;
    let (_, payment) = result_post(&app, &paid, 20_000).await;
    let payment_id = payment["payment_id"].as_str().unwrap().to_owned();
    app.fault("payple.cancel", "lost_response", 1).await;
    app.cancel(
        &payment_id,
        "pp-res",
        &json!({ "amount": 8_000, "reason": "partial" }),
    )
    .await;
    let id = letter_of(&app, &payment_id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = app
        .admin_post(
            &format!("/api/admin/dead-letters/{id}/resolve"),
            &json!({ "outcome": "refunded", "pg_ref": "rf_console_1", "note": "seen in Payple's console" }),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CANCEL_REFUNDED");
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED");
    assert_eq!(payment["cancelled_amount"], 8_000);
    let (_, ledger) = app
        .admin_post(
            "/api/admin/partner-settlements/run",
            &json!({ "date": "2026-11-23" }),
        )
        .await;
    let cancelled: i64 = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["cancelled"].as_i64().unwrap())
        .sum();
    assert_eq!(
        cancelled, 8_000,
        "the refund reaches the partner ledger: {ledger}"
    );
    assert_eq!(app.pg_calls("payple.cancel").await, 1);
}

#[tokio::test]
async fn a_payple_refund_whose_cash_receipt_was_not_cancelled_is_a_refund_and_a_warning() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-tax", 20_000).await;
    app.fault("payple.cancel", "taxsave_fail", 1).await;

    let (_, body) = app
        .cancel(&payment_id, "pp-tax", &json!({ "reason": "full" }))
        .await;

    assert_eq!(body["status"], "CANCELLED", "{body}");
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    assert!(
        alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|alert| alert["level"] == "WARNING"
                && alert["kind"] == "REFUND_WARNING"
                && alert["message"].as_str().unwrap().contains("cash receipt")),
        "{alerts}"
    );
}

#[tokio::test]
async fn payple_follow_ups_echo_the_credentials_the_auth_answer_returned() {
    let app = TestApp::spawn().await;
    // The sandbox refuses a follow-up with the partner's own cst_id/custKey, as Payple does.
    let payment_id = payple_payment(&app, "order-pp-echo", 3_000).await;
    let (_, body) = app
        .cancel(&payment_id, "pp-echo", &json!({ "reason": "full" }))
        .await;
    assert_eq!(body["status"], "CANCELLED", "{body}");
    let auth: Value = app
        .http
        .post(app.url("/sandbox-pg/payple/php/auth.php"))
        .header("referer", "https://shop.example")
        .json(&json!({ "cst_id": kassa::sandbox::SANDBOX_CST_ID, "custKey": kassa::sandbox::SANDBOX_CUST_KEY, "PCD_PAYCHK_FLAG": "Y" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(auth["cst_id"], kassa::sandbox::SANDBOX_CST_ID);
    let configured: Value = app
        .http
        .post(auth["return_url"].as_str().unwrap())
        .json(&json!({
            "PCD_CST_ID": kassa::sandbox::SANDBOX_CST_ID,
            "PCD_CUST_KEY": kassa::sandbox::SANDBOX_CUST_KEY,
            "PCD_AUTH_KEY": auth["AuthKey"],
            "PCD_PAYCHK_FLAG": "Y",
            "PCD_PAY_TYPE": "card",
            "PCD_PAY_OID": "order-pp-echo",
            "PCD_PAY_DATE": "20261123",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(configured["PCD_PAY_RST"], "error", "{configured}");
    let echoed: Value = app
        .http
        .post(auth["return_url"].as_str().unwrap())
        .json(&json!({
            "PCD_CST_ID": auth["cst_id"],
            "PCD_CUST_KEY": auth["custKey"],
            "PCD_AUTH_KEY": auth["AuthKey"],
            "PCD_PAYCHK_FLAG": "Y",
            "PCD_PAY_TYPE": "card",
            "PCD_PAY_OID": "order-pp-echo",
            "PCD_PAY_DATE": "20261123",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["PCD_PAY_RST"], "success", "{echoed}");
    assert!(
        echoed.get("PCD_REFUND_TOTAL").is_none(),
        "Payple's inquiry shows no refunds: {echoed}"
    );
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

#[tokio::test]
async fn a_cancel_line_of_a_refund_made_in_paybles_console_is_recorded_once_with_an_alert() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-stray", 20_000).await;
    // Payple's settlement shows a refund kassa never asked for (made in Payple's console).
    let response = app
        .http
        .post(app.url("/sandbox-pg/_control/settlements"))
        .json(&json!({ "provider": "payple", "date": "2026-11-23", "records": [
            { "order_id": "order-pp-stray", "kind": "CANCEL", "amount": -3_000, "fee": 0, "settle_amount": -3_000,
              "cancel_time": "2026-11-23T13:00:00+09:00" },
        ]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    for _ in 0..2 {
        let (status, report) = app
            .admin_post(
                "/api/admin/settlement-sync/run",
                &json!({ "provider": "payple", "date": "2026-11-23" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    }

    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(
        payment["cancelled_amount"], 3_000,
        "recorded once, from the line"
    );
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    let outside = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["kind"] == "OUTSIDE_REFUND")
        .count();
    assert_eq!(outside, 1, "{alerts}");
    assert_eq!(
        payple_state(&app, "order-pp-stray").await["refunds_executed"],
        0
    );
}

#[tokio::test]
async fn a_payple_payment_whose_result_post_never_came_is_imported_from_its_settlement_line() {
    let app = TestApp::spawn().await;
    payple_order(&app, "order-pp-lost", 12_000).await;
    // The buyer paid in Payple's window; the result post never reached kassa.
    payple_paid(&app, "order-pp-lost", 12_000).await;
    assert!(app.payments_of("order-pp-lost").await.is_empty());

    let report = payple_sync(&app, "2026-11-23").await;
    assert_eq!(report["missing"], 1, "{report}");
    app.run_all_jobs().await;

    let payments = app.payments_of("order-pp-lost").await;
    assert_eq!(
        payments.len(),
        1,
        "verified with the result inquiry, then stored"
    );
    assert_eq!(payments[0]["status"], "PAID");
    assert_eq!(payments[0]["amount"], 12_000);
    let (_, order) = app.admin_get("/api/orders/order-pp-lost").await;
    assert_eq!(order["status"], "PAID");
    // The next sync settles it like any payment.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let report = payple_sync(&app, "2026-11-23").await;
    assert_eq!(report["updated"], 1, "{report}");
}

#[tokio::test]
async fn a_payple_webhook_notice_is_verified_with_the_inquiry_and_stored_once() {
    let app = TestApp::spawn().await;
    payple_order(&app, "order-pp-hook", 8_000).await;
    payple_paid(&app, "order-pp-hook", 8_000).await;
    let head = app
        .http
        .head(app.url("/api/webhooks/payple"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.status(),
        StatusCode::OK,
        "Payple checks the URL with HEAD"
    );

    for _ in 0..2 {
        let sent: Value = app
            .http
            .post(app.url("/sandbox-pg/_control/payple/webhook"))
            .json(&json!({ "order_id": "order-pp-hook", "url": app.url("/api/webhooks/payple") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (sent["head_status"].as_u64(), sent["post_status"].as_u64()),
            (Some(200), Some(200)),
            "{sent}"
        );
    }
    assert!(
        app.payments_of("order-pp-hook").await.is_empty(),
        "only a re-check is queued"
    );
    app.run_all_jobs().await;

    let payments = app.payments_of("order-pp-hook").await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "PAID");
    // A cancel notice claims a refund; a notice alone never records one.
    let sent: Value = app
        .http
        .post(app.url("/sandbox-pg/_control/payple/webhook"))
        .json(&json!({ "order_id": "order-pp-hook", "url": app.url("/api/webhooks/payple"), "kind": "cancel" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["post_status"], 200);
    app.run_all_jobs().await;
    let payment = app
        .payment(payments[0]["payment_id"].as_str().unwrap())
        .await;
    assert_eq!(payment["status"], "PAID", "{payment}");
    assert_eq!(payment["cancelled_amount"], 0);
}

#[tokio::test]
async fn a_payple_re_post_with_another_type_or_day_stores_nothing_new() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-repost", 15_000).await;
    let paid = payple_state(&app, "order-pp-repost").await;
    for (pay_type, pay_time) in [
        (
            "transfer",
            paid["PCD_PAY_TIME"].as_str().unwrap().to_owned(),
        ),
        ("card", "20261120090000".to_owned()),
    ] {
        let form = [
            ("PCD_PAY_RST", "success".to_owned()),
            ("PCD_PAY_OID", "order-pp-repost".to_owned()),
            ("PCD_PAY_TYPE", pay_type.to_owned()),
            ("PCD_PAY_TIME", pay_time),
            ("PCD_PAY_TOTAL", "15000".to_owned()),
        ];
        let response = app
            .http
            .post(app.url("/api/payment/payple/result"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(answer["payment_id"], payment_id.as_str(), "{answer}");
    }
    let payments = app.payments_of("order-pp-repost").await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["status"], "PAID");
}

#[tokio::test]
async fn a_console_refund_and_kassas_own_refund_of_one_amount_are_both_recorded_from_the_lines() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-both", 20_000).await;
    // First a refund in Payple's console, then kassa's own refund of the same amount.
    let console = app
        .http
        .post(app.url("/sandbox-pg/_control/payple/payments/order-pp-both/refund"))
        .json(&json!({ "amount": 3_000 }))
        .send()
        .await
        .unwrap();
    assert!(console.status().is_success());
    app.advance_ms(60_000);
    let (_, body) = app
        .cancel(
            &payment_id,
            "pp-both",
            &json!({ "amount": 3_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "PARTIALLY_CANCELLED", "{body}");

    payple_sync(&app, "2026-11-23").await;

    let payment = app.payment(&payment_id).await;
    assert_eq!(
        payment["cancelled_amount"], 6_000,
        "kassa's line is kassa's refund, the console's is recorded beside it: {payment}"
    );
    assert_eq!(payple_state(&app, "order-pp-both").await["refunded"], 6_000);
}

#[tokio::test]
async fn a_missed_payple_payment_refunded_the_same_day_gets_its_refund_from_a_second_sync() {
    let app = TestApp::spawn().await;
    payple_order(&app, "order-pp-late", 20_000).await;
    payple_paid(&app, "order-pp-late", 20_000).await;
    // The result post was lost; the merchant refunded part of it in Payple's console that day.
    let console = app
        .http
        .post(app.url("/sandbox-pg/_control/payple/payments/order-pp-late/refund"))
        .json(&json!({ "amount": 5_000 }))
        .send()
        .await
        .unwrap();
    assert!(console.status().is_success());
    // The next morning's sync finds both lines before kassa has the payment.
    app.advance_ms(20 * 3_600_000);
    payple_sync(&app, "2026-11-23").await;
    app.run_all_jobs().await;
    let payments = app.payments_of("order-pp-late").await;
    assert_eq!(payments.len(), 1, "the APPROVAL line's re-check stored it");
    let payment_id = payments[0]["payment_id"].as_str().unwrap().to_owned();

    // Storing it queued that day's sync again, which records the CANCEL line now.
    app.advance_ms(61_000);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    app.run_all_jobs().await;

    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(payment["cancelled_amount"], 5_000);
}

#[tokio::test]
async fn two_console_refunds_of_one_amount_in_one_second_are_two_cancel_lines_and_two_refunds() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-twins", 6_000).await;
    // Found by the simulation: two lines alike in order, amount and time were one refund.
    for _ in 0..2 {
        let console = app
            .http
            .post(app.url("/sandbox-pg/_control/payple/payments/order-pp-twins/refund"))
            .json(&json!({ "amount": 1_000 }))
            .send()
            .await
            .unwrap();
        assert!(console.status().is_success());
    }

    payple_sync(&app, "2026-11-23").await;
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["cancelled_amount"], 2_000, "{payment}");
    // Two refunds of their own: two recorded refunds and two alerts, not one written twice.
    let refunded = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "REFUNDED")
        .count();
    assert_eq!(refunded, 2, "{payment}");
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    let outside = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["kind"] == "OUTSIDE_REFUND")
        .count();
    assert_eq!(outside, 2, "{alerts}");
    // The day again (its lines as they were): nothing counted twice.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, _) = app
        .admin_post(
            "/api/admin/settlement-sync/run",
            &json!({ "provider": "payple", "date": "2026-11-23" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.payment(&payment_id).await["cancelled_amount"], 2_000);
}

#[tokio::test]
async fn kassas_own_refund_is_its_line_when_payples_clock_runs_seconds_behind() {
    let app = TestApp::spawn().await;
    let payment_id = payple_payment(&app, "order-pp-skew", 10_000).await;
    app.advance_ms(60_000);
    let (_, body) = app
        .cancel(
            &payment_id,
            "pp-skew",
            &json!({ "amount": 3_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "PARTIALLY_CANCELLED", "{body}");
    // Payple's clock is five seconds behind kassa's: its line shows the refund before kassa
    // started the attempt. It is still kassa's refund's line, not a console refund.
    let load = json!({ "provider": "payple", "date": "2026-11-23", "records": [
        { "order_id": "order-pp-skew", "kind": "CANCEL", "amount": -3_000, "cancel_time": "2026-11-23T12:00:55+09:00" },
    ]});
    let loaded = app
        .http
        .post(app.url("/sandbox-pg/_control/settlements"))
        .json(&load)
        .send()
        .await
        .unwrap();
    assert!(loaded.status().is_success());
    let (status, report) = app
        .admin_post(
            "/api/admin/settlement-sync/run",
            &json!({ "provider": "payple", "date": "2026-11-23" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["cancelled_amount"], 3_000, "{payment}");
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    assert!(
        !alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|alert| alert["kind"] == "OUTSIDE_REFUND"),
        "{alerts}"
    );
}

//! Nothing missed: the webhook inbox, the re-check sweep (payments nobody reported, refunds made
//! in a PG's console, orders nobody paid), settlement in both directions, and honest resolves.

use crate::support::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The sweep every minute, as by default.
fn sweeping() -> Vec<(&'static str, String)> {
    vec![("KASSA_RECHECK__INTERVAL_MS", "60000".into())]
}

/// Lets the sweep run once.
async fn sweep(app: &TestApp) {
    app.advance_ms(61_000);
    app.run_all_jobs().await;
}

async fn control(app: &TestApp, path: &str, body: &Value) -> Value {
    let response = app
        .http
        .post(app.url(&format!("/sandbox-pg/_control{path}")))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_portone_payment_nobody_reported_is_stored_by_the_sweep_and_a_console_refund_is_imported_once()
 {
    let app = TestApp::spawn_with(sweeping()).await;
    let body = json!({ "order_id": "order-miss-1", "amount": 15_000, "name": "원두", "partner_id": "p-coffee" });
    let (status, _) = app.admin_post("/api/orders", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    // The buyer paid and closed the window; the one webhook met a PG error and was lost.
    let imp_uid = app.pg_payment("order-miss-1", 15_000).await;
    assert!(app.payments_of("order-miss-1").await.is_empty());

    sweep(&app).await;

    let payments = app.payments_of("order-miss-1").await;
    assert_eq!(payments.len(), 1, "the sweep asked PortOne by order");
    assert_eq!(payments[0]["status"], "PAID");
    let payment_id = payments[0]["payment_id"].as_str().unwrap().to_owned();
    let (_, order) = app.admin_get("/api/orders/order-miss-1").await;
    assert_eq!(order["status"], "PAID");

    // Someone refunds 5,000 in PortOne's console, behind kassa's back.
    control(
        &app,
        &format!("/portone/payments/{imp_uid}/refund"),
        &json!({ "amount": 5_000 }),
    )
    .await;
    sweep(&app).await;
    sweep(&app).await;

    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(
        payment["cancelled_amount"], 5_000,
        "imported once: {payment}"
    );
    assert!(
        payment["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["kind"] == "REFUNDED"
                && event["detail"].as_str().unwrap().contains("outside kassa")),
        "{payment}"
    );
    let (_, ledger) = app
        .admin_post(
            "/api/admin/partner-settlements/run",
            &json!({ "date": "2026-11-23" }),
        )
        .await;
    let coffee = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["partner_id"] == "p-coffee")
        .unwrap()
        .clone();
    assert_eq!(
        (coffee["gross"].as_i64(), coffee["cancelled"].as_i64()),
        (Some(15_000), Some(5_000))
    );
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    assert!(
        alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|alert| alert["kind"] == "OUTSIDE_REFUND"),
        "{alerts}"
    );
}

#[tokio::test]
async fn a_ready_order_nobody_paid_expires_after_its_limit_and_a_late_payment_still_counts() {
    let app = TestApp::spawn_with(sweeping()).await;
    app.create_order("order-exp-1", 9_000).await;
    sweep(&app).await;
    let (_, order) = app.admin_get("/api/orders/order-exp-1").await;
    assert_eq!(order["status"], "READY", "young orders wait");

    app.advance_ms(73 * 3_600_000);
    sweep(&app).await;

    let (_, order) = app.admin_get("/api/orders/order-exp-1").await;
    assert_eq!(order["status"], "EXPIRED", "{order}");
    let (_, result) = app.admin_get("/api/payments/result/order-exp-1").await;
    assert_eq!(result["result"], "EXPIRED", "{result}");
    // The buyer paid after all (a late deposit): the PG's payment is stored and pays it.
    let imp_uid = app.pg_payment("order-exp-1", 9_000).await;
    let (status, paid) = app.complete(&imp_uid, "order-exp-1").await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let (_, order) = app.admin_get("/api/orders/order-exp-1").await;
    assert_eq!(order["status"], "PAID");
}

#[tokio::test]
async fn a_resolve_as_refunded_is_checked_with_the_pg_and_recorded_like_a_confirmed_refund() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-res-1", 15_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    let (_, body) = app
        .cancel(
            &payment_id,
            "res-1",
            &json!({ "amount": 6_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "CANCEL_FAILED", "{body}");
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();
    let resolve =
        |outcome: &'static str| json!({ "outcome": outcome, "note": "checked the console" });

    // Nothing was refunded at PortOne yet: "refunded" is contradicted and changes nothing.
    let (status, refused) = app
        .admin_post(
            &format!("/api/admin/dead-letters/{id}/resolve"),
            &resolve("refunded"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "PG_RECORD_CONTRADICTS");
    assert_eq!(app.payment(&payment_id).await["status"], "CANCEL_FAILED");

    // The operator refunds it in the console, then says so.
    control(
        &app,
        &format!("/portone/payments/{imp_uid}/refund"),
        &json!({ "amount": 6_000 }),
    )
    .await;
    let (status, body) = app
        .admin_post(
            &format!("/api/admin/dead-letters/{id}/resolve"),
            &resolve("refunded"),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CANCEL_REFUNDED");
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(payment["cancelled_amount"], 6_000);
    let refunded = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "REFUNDED")
        .unwrap();
    assert!(
        refunded["detail"]
            .as_str()
            .unwrap()
            .contains("PG cancel id"),
        "the PG's receipt is kept: {refunded}"
    );
}

#[tokio::test]
async fn a_rollback_resolved_as_not_refunded_stays_failed() {
    let app = TestApp::spawn().await;
    app.create_order("order-res-2", 15_000).await;
    let imp_uid = app.pg_payment("order-res-2", 100).await;
    app.fault("portone.cancel", "status401", 2).await;
    let (status, body) = app.complete(&imp_uid, "order-res-2").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let payment_id = body["error"]["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(app.payment(&payment_id).await["status"], "ROLLBACK_FAILED");
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();

    let (status, body) = app
        .admin_post(
            &format!("/api/admin/dead-letters/{id}/resolve"),
            &json!({ "outcome": "not_refunded", "note": "the buyer keeps it as store credit" }),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let payment = app.payment(&payment_id).await;
    assert_eq!(
        payment["status"], "ROLLBACK_FAILED",
        "nothing was refunded: {payment}"
    );
    assert_eq!(payment["cancelled_amount"], 0);
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 0);
}

#[tokio::test]
async fn a_resolve_without_an_outcome_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (payment_id, _) = app.paid("order-res-3", 15_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    app.cancel(&payment_id, "res-3", &json!({ "reason": "full" }))
        .await;
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();
    let before = app.payment(&payment_id).await;
    for body in [
        json!({ "note": "no outcome" }),
        json!({ "outcome": "maybe", "note": "x" }),
        json!({ "outcome": "refunded" }),
    ] {
        let (status, answer) = app
            .admin_post(&format!("/api/admin/dead-letters/{id}/resolve"), &body)
            .await;
        assert!(status.is_client_error(), "{body}: {status} {answer}");
    }
    assert_eq!(app.payment(&payment_id).await, before);
}

#[tokio::test]
async fn two_console_refunds_of_one_amount_on_a_legacy_portone_body_are_both_imported() {
    let app = TestApp::spawn_with(sweeping()).await;
    app.create_order("order-legacy-1", 30_000).await;
    // PortOne bodies of 2018–2022 have no cancellation_id: refunds share the payment's pg_tid.
    let imp_uid = app
        .pg_payment_with(
            json!({ "merchant_uid": "order-legacy-1", "amount": 30_000, "legacy": true }),
        )
        .await;
    let (status, paid) = app.complete(&imp_uid, "order-legacy-1").await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let payment_id = paid["payment_id"].as_str().unwrap().to_owned();
    for minute in 0..2 {
        control(
            &app,
            &format!("/portone/payments/{imp_uid}/refund"),
            &json!({ "amount": 10_000 }),
        )
        .await;
        app.advance_ms(60_000 + minute);
        sweep(&app).await;
    }
    sweep(&app).await;

    let payment = app.payment(&payment_id).await;
    assert_eq!(
        payment["cancelled_amount"], 20_000,
        "both, once each: {payment}"
    );
    assert_eq!(app.pg_state(&imp_uid).await["cancel_amount"], 20_000);
}

#[tokio::test]
async fn a_refund_resolved_with_the_operators_own_reference_is_not_imported_again() {
    let app = TestApp::spawn_with(sweeping()).await;
    let (payment_id, imp_uid) = app.paid("order-res-ref", 10_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    app.cancel(
        &payment_id,
        "res-ref",
        &json!({ "amount": 3_000, "reason": "partial" }),
    )
    .await;
    control(
        &app,
        &format!("/portone/payments/{imp_uid}/refund"),
        &json!({ "amount": 3_000 }),
    )
    .await;
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .admin_post(
            &format!("/api/admin/dead-letters/{id}/resolve"),
            &json!({ "outcome": "refunded", "pg_ref": "R-123", "note": "done in the console" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    sweep(&app).await;
    sweep(&app).await;

    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["cancelled_amount"], 3_000, "{payment}");
    let resolved = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "REFUNDED")
        .unwrap();
    assert!(
        resolved["detail"].as_str().unwrap().contains("R-123"),
        "{resolved}"
    );
}

#[tokio::test]
async fn a_refund_resolved_on_a_legacy_portone_body_is_recorded_beside_an_earlier_one() {
    let app = TestApp::spawn().await;
    app.create_order("order-legacy-2", 30_000).await;
    let imp_uid = app
        .pg_payment_with(
            json!({ "merchant_uid": "order-legacy-2", "amount": 30_000, "legacy": true }),
        )
        .await;
    let (_, paid) = app.complete(&imp_uid, "order-legacy-2").await;
    let payment_id = paid["payment_id"].as_str().unwrap().to_owned();
    // A first refund goes through kassa; its entry has only the payment's shared pg_tid.
    let (_, first) = app
        .cancel(
            &payment_id,
            "legacy-2a",
            &json!({ "amount": 10_000, "reason": "first" }),
        )
        .await;
    assert_eq!(first["status"], "PARTIALLY_CANCELLED", "{first}");
    // A second one dies; the operator refunds it in the console and says so.
    app.fault("portone.cancel", "status401", 2).await;
    let (_, second) = app
        .cancel(
            &payment_id,
            "legacy-2b",
            &json!({ "amount": 5_000, "reason": "second" }),
        )
        .await;
    assert_eq!(second["status"], "CANCEL_FAILED", "{second}");
    app.advance_ms(2_000);
    control(
        &app,
        &format!("/portone/payments/{imp_uid}/refund"),
        &json!({ "amount": 5_000 }),
    )
    .await;
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    let id = letters["items"][0]["id"].as_str().unwrap().to_owned();

    let (status, body) = app
        .admin_post(
            &format!("/api/admin/dead-letters/{id}/resolve"),
            &json!({ "outcome": "refunded", "note": "console" }),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["cancelled_amount"], 15_000, "{payment}");
}

#[tokio::test]
async fn the_sweep_stores_both_payments_of_an_order_paid_twice_and_gives_one_back() {
    let app = TestApp::spawn_with(sweeping()).await;
    app.create_order("order-twice-1", 7_000).await;
    let first = app.pg_payment("order-twice-1", 7_000).await;
    let second = app.pg_payment("order-twice-1", 7_000).await;

    sweep(&app).await;
    app.advance_ms(10_000);
    app.run_all_jobs().await;

    let payments = app.payments_of("order-twice-1").await;
    assert_eq!(payments.len(), 2, "{payments:?}");
    let refunds = app.pg_state(&first).await["refunds_executed"]
        .as_u64()
        .unwrap()
        + app.pg_state(&second).await["refunds_executed"]
            .as_u64()
            .unwrap();
    assert_eq!(refunds, 1, "one of the two is rolled back");
}

/// Simulation seed 249: a console refund made the PG's balance lower than kassa's, so the next
/// cancel was refused (PortOne's checksum) and dead-lettered; that dead letter held back the
/// import of the console refund, so kassa's balance stayed wrong and every later cancel was
/// refused too. A refused cancel made no refund: the console refund is imported beside it.
#[tokio::test]
async fn a_console_refund_is_imported_beside_a_cancel_the_pg_refused() {
    let app = TestApp::spawn_with(sweeping()).await;
    let (payment_id, imp_uid) = app.paid("order-refused-1", 17_000).await;
    control(
        &app,
        &format!("/portone/payments/{imp_uid}/refund"),
        &json!({ "amount": 1_000 }),
    )
    .await;
    // Well before kassa's cancel: the console's refund cannot be that cancel's.
    app.advance_ms(10 * 60 * 1_000);
    let (status, _) = app
        .cancel(
            &payment_id,
            "refused-1",
            &json!({ "amount": 1_000, "reason": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.run_all_jobs().await;
    let (_, letters) = app.admin_get("/api/admin/dead-letters").await;
    assert!(
        letters["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|letter| letter["payment_id"] == payment_id.as_str()),
        "the checksum refusal is a dead letter: {letters}"
    );
    sweep(&app).await;
    sweep(&app).await;
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["cancelled_amount"], 1_000, "{payment}");
    // With kassa's balance the PG's again, the next cancel goes through.
    let (status, _) = app
        .cancel(
            &payment_id,
            "refused-2",
            &json!({ "amount": 2_000, "reason": "y" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.run_all_jobs().await;
    assert_eq!(app.payment(&payment_id).await["cancelled_amount"], 3_000);
    assert_eq!(app.pg_state(&imp_uid).await["cancel_amount"], 3_000);
}

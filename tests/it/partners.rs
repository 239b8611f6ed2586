//! Daily partner settlement: sums, fee rounding, late cancels, recompute-only-while-REQUESTED,
//! forward-only status changes, KST day boundaries and the schedule.

use crate::support::TestApp;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn kst(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// A paid payment for `partner` at the clock's current time; answers its payment id.
async fn sale(app: &TestApp, order_id: &str, amount: i64, partner: &str) -> String {
    let body =
        json!({ "order_id": order_id, "amount": amount, "name": "상품", "partner_id": partner });
    let (status, created) = app.admin_post("/api/orders", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let imp_uid = app.pg_payment(order_id, amount).await;
    let (status, paid) = app.complete(&imp_uid, order_id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    paid["payment_id"].as_str().unwrap().to_owned()
}

async fn run(app: &TestApp, date: &str) -> Vec<Value> {
    let (status, body) = app
        .admin_post(
            "/api/admin/partner-settlements/run",
            &json!({ "date": date }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [Value], partner: &str) -> &'a Value {
    rows.iter()
        .find(|row| row["partner_id"] == partner)
        .unwrap_or_else(|| panic!("no row for {partner}: {rows:?}"))
}

fn figures(row: &Value) -> (i64, i64, i64, i64, i64) {
    let field = |name: &str| row[name].as_i64().unwrap();
    (
        field("gross"),
        field("cancelled"),
        field("fee"),
        field("net"),
        field("payment_count"),
    )
}

#[tokio::test]
async fn a_day_is_settled_per_partner_with_the_fee_rounded_down() {
    let app = TestApp::spawn().await;
    app.clock.set(kst("2026-11-23T12:00:00+09:00"));
    sale(&app, "order-ps-1", 15_000, "p-coffee").await;
    sale(&app, "order-ps-2", 9_900, "p-coffee").await;
    sale(&app, "order-ps-3", 12_000, "p-tea").await;
    app.create_order("order-ps-4", 5_000).await; // no partner
    let imp_uid = app.pg_payment("order-ps-4", 5_000).await;
    app.complete(&imp_uid, "order-ps-4").await;

    let rows = run(&app, "2026-11-23").await;

    assert_eq!(rows.len(), 2, "one row per configured partner");
    // 3.30 % of 24,900 is 821.7: rounded down to 821.
    assert_eq!(figures(row(&rows, "p-coffee")), (24_900, 0, 821, 24_079, 2));
    assert_eq!(figures(row(&rows, "p-tea")), (12_000, 0, 300, 11_700, 1));
    assert_eq!(row(&rows, "p-coffee")["status"], "REQUESTED");
    assert_eq!(row(&rows, "p-coffee")["id"], "2026-11-23:p-coffee");
    for row in &rows {
        let (gross, cancelled, fee, net, _) = figures(row);
        assert_eq!(fee + net, gross - cancelled);
    }
    let (_, listed) = app
        .admin_get("/api/admin/partner-settlements?date=2026-11-23")
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let (_, empty) = app
        .admin_get("/api/admin/partner-settlements?date=2026-11-22")
        .await;
    assert!(empty["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_late_cancel_lowers_the_day_it_happens() {
    let app = TestApp::spawn().await;
    app.clock.set(kst("2026-11-23T12:00:00+09:00"));
    let payment = sale(&app, "order-ps-10", 15_000, "p-coffee").await;
    app.clock.set(kst("2026-11-24T09:00:00+09:00"));
    let (status, _) = app
        .cancel(&payment, "late-1", &json!({ "reason": "late" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let sale_day = run(&app, "2026-11-23").await;
    let cancel_day = run(&app, "2026-11-24").await;

    assert_eq!(
        figures(row(&sale_day, "p-coffee")),
        (15_000, 0, 495, 14_505, 1)
    );
    assert_eq!(
        figures(row(&cancel_day, "p-coffee")),
        (0, 15_000, -495, -14_505, 0)
    );
}

#[tokio::test]
async fn a_day_is_recomputed_only_while_requested_and_later_changes_land_later() {
    let app = TestApp::spawn().await;
    app.clock.set(kst("2026-11-23T10:00:00+09:00"));
    sale(&app, "order-ps-20", 10_000, "p-coffee").await;
    sale(&app, "order-ps-21", 10_000, "p-tea").await;
    run(&app, "2026-11-23").await;
    app.clock.set(kst("2026-11-23T11:00:00+09:00"));
    sale(&app, "order-ps-22", 5_000, "p-coffee").await;
    let rows = run(&app, "2026-11-23").await;
    assert_eq!(
        figures(row(&rows, "p-coffee")).0,
        15_000,
        "still REQUESTED: recomputed"
    );

    let (status, moved) = app
        .admin_post(
            "/api/admin/partner-settlements/2026-11-23:p-coffee/status",
            &json!({ "status": "PROCESSING" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["status"], "PROCESSING");
    // A payment of the same day arriving now cannot change a settlement being paid out.
    app.clock.set(kst("2026-11-23T15:00:00+09:00"));
    sale(&app, "order-ps-23", 7_000, "p-coffee").await;
    sale(&app, "order-ps-24", 3_000, "p-tea").await;
    let rows = run(&app, "2026-11-23").await;

    assert_eq!(
        figures(row(&rows, "p-coffee")).0,
        15_000,
        "PROCESSING is never touched"
    );
    assert_eq!(row(&rows, "p-coffee")["status"], "PROCESSING");
    assert_eq!(
        figures(row(&rows, "p-tea")).0,
        13_000,
        "p-tea is still REQUESTED"
    );
    let next_day = run(&app, "2026-11-24").await;
    assert_eq!(
        figures(row(&next_day, "p-coffee")),
        (7_000, 0, 231, 6_769, 1),
        "the late payment lands on the next open day"
    );
    assert_eq!(figures(row(&next_day, "p-tea")).0, 0);
}

#[tokio::test]
async fn a_payment_recorded_after_the_run_is_in_the_row_when_it_leaves_requested() {
    let app = TestApp::spawn().await;
    app.clock.set(kst("2026-11-23T10:00:00+09:00"));
    sale(&app, "order-ps-60", 10_000, "p-coffee").await;
    run(&app, "2026-11-23").await;
    // A late webhook records a payment of the same day; nobody re-runs the day.
    app.clock.set(kst("2026-11-23T22:00:00+09:00"));
    sale(&app, "order-ps-61", 5_000, "p-coffee").await;

    let (status, moved) = app
        .admin_post(
            "/api/admin/partner-settlements/2026-11-23:p-coffee/status",
            &json!({ "status": "PROCESSING" }),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        figures(&moved),
        (15_000, 0, 495, 14_505, 2),
        "frozen with everything recorded for the day"
    );
}

#[tokio::test]
async fn a_settlement_only_moves_forward() {
    let app = TestApp::spawn().await;
    app.clock.set(kst("2026-11-23T10:00:00+09:00"));
    sale(&app, "order-ps-30", 10_000, "p-coffee").await;
    run(&app, "2026-11-23").await;
    let url = "/api/admin/partner-settlements/2026-11-23:p-coffee/status";
    let app = &app;
    let step = |status: &'static str| async move {
        app.admin_post(url, &json!({ "status": status })).await
    };

    assert_eq!(
        step("COMPLETED").await.0,
        StatusCode::CONFLICT,
        "no skipping"
    );
    assert_eq!(step("REQUESTED").await.0, StatusCode::CONFLICT);
    assert_eq!(step("PROCESSING").await.0, StatusCode::OK);
    assert_eq!(step("PROCESSING").await.0, StatusCode::CONFLICT);
    assert_eq!(
        step("REQUESTED").await.0,
        StatusCode::CONFLICT,
        "never backwards"
    );
    assert_eq!(step("COMPLETED").await.0, StatusCode::OK);
    assert_eq!(step("PROCESSING").await.0, StatusCode::CONFLICT);
    let (status, body) = step("DONE").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("INVALID_STATUS"))
    );
    let (status, _) = app
        .admin_post(
            "/api/admin/partner-settlements/2026-11-23:nobody/status",
            &json!({ "status": "PROCESSING" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let rows = run(app, "2026-11-23").await;
    assert_eq!(row(&rows, "p-coffee")["status"], "COMPLETED");
}

#[tokio::test]
async fn payments_a_second_apart_across_kst_midnight_land_on_two_days() {
    let app = TestApp::spawn().await;
    app.clock.set(kst("2026-11-23T23:59:59+09:00"));
    sale(&app, "order-ps-40", 1_000, "p-tea").await;
    app.clock.set(kst("2026-11-24T00:00:00+09:00"));
    sale(&app, "order-ps-41", 2_000, "p-tea").await;

    let first = run(&app, "2026-11-23").await;
    let second = run(&app, "2026-11-24").await;

    assert_eq!(figures(row(&first, "p-tea")).0, 1_000);
    assert_eq!(figures(row(&second, "p-tea")).0, 2_000);
    let (_, listed) = app
        .admin_get("/api/payments?from=2026-11-24&to=2026-11-24")
        .await;
    let orders: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(orders, ["order-ps-41"]);
}

/// One scheduler tick and the worker's step after it; answers the partner settlement runs the
/// tick queued.
async fn partner_runs(app: &TestApp) -> Vec<kassa::scheduler::Ran> {
    let ran = kassa::scheduler::tick(&app.kassa).await.unwrap();
    app.run_all_jobs().await;
    ran.into_iter()
        .filter(|run| run.schedule == "partner_settlement")
        .collect()
}

#[tokio::test]
async fn the_schedule_settles_yesterday_once_and_catches_up_after_downtime() {
    let app = TestApp::spawn().await;
    app.clock.set(kst("2026-11-23T12:00:00+09:00"));
    sale(&app, "order-ps-50", 10_000, "p-coffee").await;
    app.clock.set(kst("2026-11-24T00:29:59+09:00"));
    let ran = partner_runs(&app).await;
    assert_eq!(
        ran.len(),
        1,
        "the first tick catches up the last fire (2026-11-23 00:30)"
    );
    assert_eq!(ran[0].date.to_string(), "2026-11-22");

    app.clock.set(kst("2026-11-24T00:30:00+09:00"));
    let ran = partner_runs(&app).await;

    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].date.to_string(), "2026-11-23");
    assert!(
        kassa::scheduler::tick(&app.kassa).await.unwrap().is_empty(),
        "once per fire"
    );
    let (_, listed) = app
        .admin_get("/api/admin/partner-settlements?date=2026-11-23")
        .await;
    assert_eq!(
        figures(row(listed["items"].as_array().unwrap(), "p-coffee")).0,
        10_000
    );
    // Three days later (kassa was down): every missed day is settled, oldest first.
    app.clock.set(kst("2026-11-27T09:00:00+09:00"));
    let ran = partner_runs(&app).await;
    assert_eq!(
        ran.iter()
            .map(|run| run.date.to_string())
            .collect::<Vec<_>>(),
        ["2026-11-24", "2026-11-25", "2026-11-26"]
    );
}

#[tokio::test]
async fn the_daily_totals_the_run_reads_are_the_ledgers_and_a_schema_2_file_gets_them() {
    let app = TestApp::spawn().await;
    sale(&app, "order-totals-1", 10_000, "p-coffee").await;
    let payment = sale(&app, "order-totals-2", 5_000, "p-coffee").await;
    let (status, _) = app
        .cancel(
            &payment,
            "totals-cancel",
            &json!({ "amount": 2_000, "reason": "part" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        app.kassa.store.check_partner_totals().await.unwrap(),
        Ok(())
    );
    let row = run(&app, "2026-11-23")
        .await
        .into_iter()
        .find(|row| row["partner_id"] == "p-coffee")
        .unwrap();
    assert_eq!(
        (row["gross"].as_i64(), row["cancelled"].as_i64()),
        (Some(15_000), Some(2_000))
    );
    assert_eq!(row["payment_count"], 2);

    // A data file of schema 2 had no totals: opening it builds them from its ledger.
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/part5.redb");
    let old = TestApp::spawn_on_copy_of(&fixture).await;
    assert_eq!(
        old.kassa.store.check_partner_totals().await.unwrap(),
        Ok(())
    );
}

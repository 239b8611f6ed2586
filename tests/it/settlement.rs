//! PG settlement sync against the sandbox's Toss settlements: paging and resuming, counters,
//! the lock, page failures, pacing and the morning schedule.

use crate::support::TestApp;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DAY: &str = "2026-11-23";

fn kst(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn fast_sync(max_pages: u32) -> Vec<(&'static str, String)> {
    vec![
        ("KASSA_SETTLEMENT_SYNC__PAGE_INTERVAL_MS", "0".into()),
        ("KASSA_SETTLEMENT_SYNC__PAGE_SIZE", "100".into()),
        (
            "KASSA_SETTLEMENT_SYNC__MAX_PAGES_PER_RUN",
            max_pages.to_string(),
        ),
    ]
}

/// `count` Toss payments paid on DAY; answers their order ids.
async fn toss_sales(app: &TestApp, prefix: &str, count: usize, amount: i64) -> Vec<String> {
    app.clock.set(kst("2026-11-23T12:00:00+09:00"));
    let mut orders = Vec::with_capacity(count);
    for n in 0..count {
        let order_id = format!("{prefix}-{n:04}");
        app.create_toss_order(&order_id, amount).await;
        let key = app.toss_payment(&order_id, amount, "IN_PROGRESS").await;
        let (status, body) = app.toss_confirm(&key, &order_id, amount).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        orders.push(order_id);
    }
    orders
}

async fn load(app: &TestApp, body: Value) {
    let response = app
        .http
        .post(app.url("/sandbox-pg/_control/settlements"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap()
    );
}

async fn sync(app: &TestApp) -> (StatusCode, Value) {
    app.admin_post(
        "/api/admin/settlement-sync/run",
        &json!({ "provider": "toss", "date": DAY }),
    )
    .await
}

fn counts(report: &Value) -> [u64; 5] {
    [
        "updated",
        "skipped",
        "missing",
        "cancel_skipped",
        "discrepancy",
    ]
    .map(|name| report[name].as_u64().unwrap())
}

async fn rows(app: &TestApp, status: &str) -> Vec<Value> {
    let (_, body) = app
        .admin_get(&format!(
            "/api/admin/settlements?date={DAY}&status={status}"
        ))
        .await;
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_long_day_is_synced_over_runs_that_resume_and_then_change_nothing() {
    let app = TestApp::spawn_with(fast_sync(2)).await;
    toss_sales(&app, "order-sync", 250, 1_000).await;
    load(
        &app,
        json!({ "provider": "toss", "date": DAY, "from_payments": true }),
    )
    .await;
    assert_eq!(rows(&app, "Pending").await.len(), 250);

    let (status, first) = sync(&app).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (
            first["pages"].as_u64(),
            first["complete"].as_bool(),
            first["resumed"].as_bool()
        ),
        (Some(2), Some(false), Some(false))
    );
    assert_eq!(counts(&first), [200, 0, 0, 0, 0]);

    let (_, second) = sync(&app).await;
    assert_eq!(
        (
            second["pages"].as_u64(),
            second["complete"].as_bool(),
            second["resumed"].as_bool()
        ),
        (Some(1), Some(true), Some(true))
    );
    assert_eq!(counts(&second), [50, 0, 0, 0, 0]);
    assert_eq!(
        counts(&first)[0] + counts(&second)[0],
        250,
        "the counts add up to the records"
    );
    let settled = rows(&app, "Succeed").await;
    assert_eq!(settled.len(), 250);
    assert!(rows(&app, "Pending").await.is_empty());
    assert_eq!(settled[0]["fee"], 33);
    assert_eq!(settled[0]["settle_amount"], 967);

    let (_, third) = sync(&app).await;
    assert_eq!(third["resumed"], false, "a complete day starts over");
    assert_eq!(third["updated"], 0, "a third run changes nothing");
    assert_eq!(third["skipped"], 200, "two pages of rows already settled");
    let (_, runs) = app.admin_get("/api/admin/settlement-sync/runs").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 3);
    assert_eq!(runs["items"][0]["run_id"], third["run_id"]);
}

#[tokio::test]
async fn cancels_differing_amounts_and_unknown_orders_are_counted_and_change_no_row() {
    let app = TestApp::spawn_with(fast_sync(10)).await;
    let orders = toss_sales(&app, "order-mix", 4, 10_000).await;
    load(
        &app,
        json!({ "provider": "toss", "date": DAY, "records": [
            { "order_id": orders[0], "amount": 10_000 },
            { "order_id": orders[1], "amount": 9_000 },
            { "order_id": orders[2], "amount": 10_000, "fee": 330, "settle_amount": 9_000 },
            { "order_id": orders[3], "kind": "CANCEL", "amount": 10_000 },
            { "order_id": orders[3], "kind": "CANCEL", "amount": 4_000 },
            { "order_id": "order-never-seen", "amount": 5_000 },
        ]}),
    )
    .await;

    let (_, report) = sync(&app).await;

    assert_eq!(counts(&report), [1, 0, 1, 2, 2], "{report}");
    assert_eq!(report["failed"], 0);
    let settled: Vec<String> = rows(&app, "Succeed")
        .await
        .iter()
        .map(|row| row["order_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        settled,
        [orders[0].clone()],
        "only the matching line settles a row"
    );
    assert_eq!(rows(&app, "Pending").await.len(), 3);
    let (_, findings) = app
        .admin_get(&format!("/api/admin/settlement-findings?date={DAY}"))
        .await;
    let findings = findings["items"].as_array().unwrap().clone();
    let find = |order: &str, kind: &str| {
        findings
            .iter()
            .find(|finding| finding["order_id"] == order && finding["kind"] == kind)
            .cloned()
    };
    let differing = find(&orders[1], "DISCREPANCY").expect("the differing amount is kept");
    assert_eq!(
        (differing["expected"].as_i64(), differing["actual"].as_i64()),
        (Some(10_000), Some(9_000))
    );
    assert!(
        find(&orders[2], "DISCREPANCY").is_some(),
        "a line whose fee and payout do not add up"
    );
    let cancels = findings
        .iter()
        .filter(|finding| finding["order_id"] == orders[3].as_str() && finding["kind"] == "CANCEL")
        .count();
    assert_eq!(cancels, 2, "both cancel lines of the order are kept");
    assert!(find("order-never-seen", "MISSING").is_some());
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    assert!(
        alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|alert| alert["kind"] == "SETTLEMENT_MISMATCH" && alert["level"] == "URGENT")
    );
    // A re-run finds the same lines again and keeps them once.
    let (_, again) = sync(&app).await;
    assert_eq!(counts(&again), [0, 1, 1, 2, 2]);
    let (_, after) = app
        .admin_get(&format!("/api/admin/settlement-findings?date={DAY}"))
        .await;
    assert_eq!(after["items"].as_array().unwrap().len(), findings.len());
}

#[tokio::test]
async fn a_second_run_while_one_holds_the_lock_is_refused_and_a_dead_runs_lock_expires() {
    let app = TestApp::spawn_with(vec![
        ("KASSA_SETTLEMENT_SYNC__PAGE_INTERVAL_MS", "400".into()),
        ("KASSA_SETTLEMENT_SYNC__PAGE_SIZE", "1".into()),
    ])
    .await;
    toss_sales(&app, "order-lock", 3, 1_000).await;
    load(
        &app,
        json!({ "provider": "toss", "date": DAY, "from_payments": true }),
    )
    .await;

    let (first, second) = tokio::join!(sync(&app), async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        sync(&app).await
    });

    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first.1["updated"], 3);
    assert_eq!(second.0, StatusCode::CONFLICT, "{}", second.1);
    assert_eq!(second.1["error"]["code"], "SYNC_RUNNING");
    // A run that died holding the lock: its lease (lock_ttl_s = 600) runs out.
    let dead = kassa::store::LockOutcome::Acquired;
    let taken = app
        .kassa
        .store
        .take_sync_lock("toss", 42, app.kassa.env.now(), 600_000)
        .await
        .unwrap();
    assert_eq!(taken, dead);
    assert_eq!(sync(&app).await.0, StatusCode::CONFLICT);
    app.advance_ms(600_001);
    assert_eq!(sync(&app).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failing_page_stops_the_run_and_the_next_run_resumes_from_it() {
    let app2 = TestApp::spawn_with(vec![
        ("KASSA_SETTLEMENT_SYNC__PAGE_INTERVAL_MS", "0".into()),
        ("KASSA_SETTLEMENT_SYNC__PAGE_SIZE", "2".into()),
        ("KASSA_SETTLEMENT_SYNC__MAX_PAGES_PER_RUN", "1".into()),
    ])
    .await;
    toss_sales(&app2, "order-fail2", 5, 1_000).await;
    load(
        &app2,
        json!({ "provider": "toss", "date": DAY, "from_payments": true }),
    )
    .await;
    let (_, one) = sync(&app2).await;
    assert_eq!(
        (
            one["pages"].as_u64(),
            one["updated"].as_u64(),
            one["complete"].as_bool()
        ),
        (Some(1), Some(2), Some(false))
    );
    app2.fault("toss.settlements", "status500", 1).await;

    let (_, failed) = sync(&app2).await;

    assert_eq!(
        (
            failed["failed"].as_u64(),
            failed["pages"].as_u64(),
            failed["resumed"].as_bool()
        ),
        (Some(1), Some(0), Some(true))
    );
    let (_, resumed) = sync(&app2).await;
    assert_eq!(
        (resumed["resumed"].as_bool(), resumed["updated"].as_u64()),
        (Some(true), Some(2)),
        "the cursor survived the failure"
    );
    let (_, last) = sync(&app2).await;
    assert_eq!(
        (last["updated"].as_u64(), last["complete"].as_bool()),
        (Some(1), Some(true))
    );
}

#[tokio::test]
async fn settlement_pages_are_never_asked_for_faster_than_the_interval() {
    let app = TestApp::spawn_with(vec![
        ("KASSA_SETTLEMENT_SYNC__PAGE_INTERVAL_MS", "1100".into()),
        ("KASSA_SETTLEMENT_SYNC__PAGE_SIZE", "1".into()),
    ])
    .await;
    toss_sales(&app, "order-pace", 2, 1_000).await;
    load(
        &app,
        json!({ "provider": "toss", "date": DAY, "from_payments": true }),
    )
    .await;

    let (_, report) = sync(&app).await;

    assert_eq!(report["pages"], 3, "two full pages and an empty last one");
    let stats: Value = app
        .http
        .get(app.url("/sandbox-pg/_control/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gap = stats["min_gap_ms"]["toss.settlements"].as_u64().unwrap();
    assert!(gap >= 1_000, "two settlement calls {gap} ms apart");
}

#[tokio::test]
async fn the_morning_schedule_syncs_yesterday() {
    let app = TestApp::spawn_with(fast_sync(10)).await;
    toss_sales(&app, "order-morning", 3, 1_000).await;
    load(
        &app,
        json!({ "provider": "toss", "date": DAY, "from_payments": true }),
    )
    .await;
    app.clock.set(kst("2026-11-24T07:59:59+09:00"));
    kassa::scheduler::tick(&app.kassa).await.unwrap();
    app.clock.set(kst("2026-11-24T08:00:00+09:00"));

    let ran = kassa::scheduler::tick(&app.kassa).await.unwrap();
    assert_eq!(
        rows(&app, "Succeed").await.len(),
        0,
        "the scheduler only queues"
    );
    // Two days are queued (the catch-up fire and today's); one sync of a PG runs at a time.
    for _ in 0..3 {
        app.run_all_jobs().await;
        app.advance_ms(10_000);
    }

    assert!(
        ran.iter()
            .any(|run| run.schedule == "settlement_sync" && run.date.to_string() == DAY),
        "{ran:?}"
    );
    assert_eq!(rows(&app, "Succeed").await.len(), 3);
    let payments = app.payments_of("order-morning-0000").await;
    let payment = app
        .payment(payments[0]["payment_id"].as_str().unwrap())
        .await;
    assert_eq!(payment["settlement_status"], "Succeed");
}

#[tokio::test]
async fn a_run_that_lost_its_lock_applies_no_page() {
    let app = TestApp::spawn_with(fast_sync(10)).await;
    let orders = toss_sales(&app, "order-lost-lock", 1, 1_000).await;
    let store = &app.kassa.store;
    let date = chrono::NaiveDate::parse_from_str(DAY, "%Y-%m-%d").unwrap();
    let now = app.kassa.env.now();
    let line = kassa::domain::settlement::SettlementLine {
        kind: kassa::domain::settlement::SettlementKind::Approval,
        order_id: orders[0].clone(),
        amount: 1_000,
        fee: 33,
        settle_amount: 967,
        cancel_at: None,
        pg_ref: None,
        pg_cancel_id: None,
        occurrence: 0,
    };
    // Run 1's lease ran out and run 2 took the lock.
    assert_eq!(
        store.take_sync_lock("toss", 1, now, 1_000).await.unwrap(),
        kassa::store::LockOutcome::Acquired
    );
    let later = now + chrono::Duration::seconds(2);
    assert_eq!(
        store
            .take_sync_lock("toss", 2, later, 600_000)
            .await
            .unwrap(),
        kassa::store::LockOutcome::Acquired
    );

    let stale = store
        .apply_settlement_page(
            "toss",
            date,
            vec![line.clone()],
            Some("2:1".into()),
            later,
            60_000,
            1,
            600_000,
        )
        .await
        .unwrap();

    assert!(stale.is_none(), "the run without the lock applies nothing");
    assert!(rows(&app, "Succeed").await.is_empty());
    assert!(
        store
            .sync_cursor("toss", date, later)
            .await
            .unwrap()
            .is_none(),
        "and moves no cursor"
    );
    let holder = store
        .apply_settlement_page("toss", date, vec![line], None, later, 60_000, 2, 600_000)
        .await
        .unwrap();
    assert_eq!(holder.map(|counts| counts.updated), Some(1));
}

#[tokio::test]
async fn toss_settlement_lines_in_the_docs_shape_and_cancel_lines_fail_nothing() {
    let app = TestApp::spawn_with(fast_sync(10)).await;
    let orders = toss_sales(&app, "order-shape", 3, 10_000).await;
    // One sale is partly refunded in Toss's console; its CANCEL line comes with the day.
    let payments = app.payments_of(&orders[0]).await;
    let key = payments[0]["pg_tid"].as_str().unwrap().to_owned();
    let response = app
        .http
        .post(app.url(&format!("/sandbox-pg/_control/toss/payments/{key}/refund")))
        .json(&json!({ "amount": 2_000 }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    load(
        &app,
        json!({ "provider": "toss", "date": DAY, "from_payments": true, "toss_shape": "docs" }),
    )
    .await;

    let (status, report) = sync(&app).await;

    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(
        report["discrepancy"], 0,
        "string fees in fees[] add up: {report}"
    );
    assert_eq!(report["updated"], 3, "{report}");
    assert_eq!(report["cancel_skipped"], 1, "{report}");
    assert_eq!(rows(&app, "Succeed").await.len(), 3);
    let payment = app
        .payment(payments[0]["payment_id"].as_str().unwrap())
        .await;
    assert_eq!(
        payment["cancelled_amount"], 2_000,
        "the console refund's CANCEL line is recorded: {payment}"
    );
}

#[tokio::test]
async fn a_refund_with_no_cancel_line_after_the_wait_raises_one_warning() {
    let app = TestApp::spawn_with(fast_sync(10)).await;
    let orders = toss_sales(&app, "order-noline", 1, 10_000).await;
    let payments = app.payments_of(&orders[0]).await;
    let payment_id = payments[0]["payment_id"].as_str().unwrap().to_owned();
    let (_, body) = app
        .cancel(
            &payment_id,
            "noline-1",
            &json!({ "amount": 4_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "PARTIALLY_CANCELLED", "{body}");
    // Six days on, the settlement of a later day comes with no CANCEL line for that refund.
    app.clock.set(kst("2026-11-29T09:00:00+09:00"));
    for _ in 0..2 {
        let (status, report) = app
            .admin_post(
                "/api/admin/settlement-sync/run",
                &json!({ "provider": "toss", "date": "2026-11-28" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["complete"], true, "{report}");
    }

    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    let missing: Vec<&Value> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["kind"] == "CANCEL_LINE_MISSING")
        .collect();
    assert_eq!(missing.len(), 1, "once, however many syncs: {alerts}");
    assert_eq!(missing[0]["payment_id"], payment_id.as_str());
}

#[tokio::test]
async fn the_cancel_line_of_a_refund_kassa_made_is_matched_to_it_and_recorded_nowhere_else() {
    let app = TestApp::spawn_with(fast_sync(10)).await;
    let orders = toss_sales(&app, "order-ownline", 1, 10_000).await;
    let payments = app.payments_of(&orders[0]).await;
    let payment_id = payments[0]["payment_id"].as_str().unwrap().to_owned();
    let (_, body) = app
        .cancel(
            &payment_id,
            "ownline-1",
            &json!({ "amount": 3_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "PARTIALLY_CANCELLED", "{body}");
    load(
        &app,
        json!({ "provider": "toss", "date": DAY, "from_payments": true }),
    )
    .await;

    let (status, report) = sync(&app).await;

    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["cancel_skipped"], 1, "{report}");
    assert_eq!(app.payment(&payment_id).await["cancelled_amount"], 3_000);
    let (_, alerts) = app.admin_get("/api/admin/alerts").await;
    assert!(
        !alerts["items"].as_array().unwrap().iter().any(|alert| {
            alert["kind"] == "OUTSIDE_REFUND" || alert["kind"] == "SETTLEMENT_CANCEL_LINE"
        }),
        "{alerts}"
    );
}

//! The merchant's cockpit over HTTP: sign-in, the pages, the cancel form, the CSV export,
//! `/metrics` and the settlement sync over a range. The browser tests drive the same pages.

use crate::support::{ADMIN_TOKEN, TestApp};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in and answers the session cookie (`kassa_admin=...`).
pub async fn sign_in(app: &TestApp) -> String {
    let response = no_redirects()
        .post(app.url("/admin/login"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(serde_urlencoded::to_string([("token", ADMIN_TOKEN)]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = no_redirects()
        .get(app.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_owned()
}

fn value_of(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker).expect("the field") + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_admin_signs_in_with_the_token_and_out_again() {
    let app = TestApp::spawn().await;
    // Not signed in: the sign-in form, and every page sends there.
    let (status, html) = page(&app, "", "/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("type=\"password\""), "{html}");
    let (status, _) = page(&app, "", "/admin/payments").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let wrong = no_redirects()
        .post(app.url("/admin/login"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(serde_urlencoded::to_string([("token", "not-the-token")]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let cookie = sign_in(&app).await;
    for path in [
        "/admin",
        "/admin/payments",
        "/admin/dead-letters",
        "/admin/settlement-sync",
        "/admin/partner-settlements",
        "/admin/alerts",
    ] {
        let response = no_redirects()
            .get(app.url(path))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(response.headers()["x-frame-options"], "DENY", "{path}");
        let html = response.text().await.unwrap();
        assert!(
            html.contains("action=\"/admin/logout\""),
            "{path} has no sign-out"
        );
    }
    let (_, html) = page(&app, &cookie, "/admin").await;
    // Sign-out needs the form's token; without it the session stays.
    let refused = no_redirects()
        .post(app.url("/admin/logout"))
        .header(COOKIE, &cookie)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(serde_urlencoded::to_string([("csrf", "0".repeat(64))]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        page(&app, &cookie, "/admin/payments").await.0,
        StatusCode::OK
    );
    let out = no_redirects()
        .post(app.url("/admin/logout"))
        .header(COOKIE, &cookie)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(serde_urlencoded::to_string([("csrf", csrf_of(&html))]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The old cookie is worth nothing now, even if the browser kept it.
    assert_eq!(
        page(&app, &cookie, "/admin/payments").await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn sign_in_attempts_are_bounded_per_client() {
    let app = TestApp::spawn().await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response = no_redirects()
            .post(app.url("/admin/login"))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(serde_urlencoded::to_string([("token", "guess")]).unwrap())
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert!(
        statuses[..10]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
    // Past the bound even the right token waits.
    let right = no_redirects()
        .post(app.url("/admin/login"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(serde_urlencoded::to_string([("token", ADMIN_TOKEN)]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_admin_finds_a_payment_and_cancels_part_of_it_once() {
    let app = TestApp::spawn().await;
    let order = app
        .admin_post(
            "/api/orders",
            &json!({ "order_id": "order-admin-find", "amount": 30_000, "name": "원두 1kg", "buyer_email": "kim@example.com" }),
        )
        .await;
    assert_eq!(order.0, StatusCode::CREATED, "{}", order.1);
    let imp_uid = app.pg_payment("order-admin-find", 30_000).await;
    let (status, body) = app.complete(&imp_uid, "order-admin-find").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let payment_id = body["payment_id"].as_str().unwrap().to_owned();
    app.paid("order-admin-other", 5_000).await;

    let cookie = sign_in(&app).await;
    for query in ["order-admin-find", imp_uid.as_str(), "KIM@example.com"] {
        let (status, html) = page(&app, &cookie, &format!("/admin/payments?q={query}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(&format!("/admin/payments/{payment_id}")),
            "{query}"
        );
        assert!(html.contains("원두 1kg"), "{query}");
        assert!(
            !html.contains("order-admin-other"),
            "{query} found too much"
        );
    }
    let (_, html) = page(
        &app,
        &cookie,
        "/admin/payments?status=PAID&provider=portone",
    )
    .await;
    assert!(html.contains("order-admin-other") && html.contains("order-admin-find"));

    let path = format!("/admin/payments/{payment_id}");
    let (status, html) = page(&app, &cookie, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("kim@example.com"));
    let (csrf, key) = (csrf_of(&html), value_of(&html, "key"));
    let form = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("amount", "10,000"),
        ("reason", "부분 환불"),
    ];
    // Without the token nothing is cancelled.
    let forged = no_redirects()
        .post(app.url(&format!("{path}/cancel")))
        .header(COOKIE, &cookie)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(
            serde_urlencoded::to_string([
                ("csrf", "f".repeat(64).as_str()),
                ("key", key.as_str()),
                ("amount", "10000"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.payment(&payment_id).await["cancelled_amount"], 0);
    // The same form sent twice is one cancel.
    for _ in 0..2 {
        let sent = no_redirects()
            .post(app.url(&format!("{path}/cancel")))
            .header(COOKIE, &cookie)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), StatusCode::SEE_OTHER);
        assert_eq!(sent.headers()[LOCATION], format!("{path}?done=cancel"));
    }
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(payment["cancelled_amount"], 10_000);
    assert_eq!(app.pg_state(&imp_uid).await["cancel_amount"], 10_000);
    let (_, html) = page(&app, &cookie, &format!("{path}?done=cancel")).await;
    assert!(html.contains("id=\"notice\""));
    assert!(html.contains("20,000원"), "the balance is shown");
    assert!(html.contains("class=\"refund\""), "the refund is listed");
}

#[tokio::test]
async fn the_payment_export_is_csv_with_a_bom_one_payment_a_row() {
    let app = TestApp::spawn().await;
    app.admin_post(
        "/api/orders",
        &json!({ "order_id": "order-csv-1", "amount": 15_000, "name": "=HYPERLINK(\"x\")", "buyer_email": "a@example.com" }),
    )
    .await;
    let imp_uid = app.pg_payment("order-csv-1", 15_000).await;
    assert_eq!(
        app.complete(&imp_uid, "order-csv-1").await.0,
        StatusCode::OK
    );
    app.paid("order-csv-2", 7_000).await;
    let unauthorised = app
        .http
        .get(app.url("/api/admin/export/payments.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    let today = kassa::domain::calendar::kst_date(app.kassa.env.now());
    let response = app
        .http
        .get(app.url(&format!(
            "/api/admin/export/payments.csv?from={today}&to={today}"
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "no BOM");
    let mut reader = csv::Reader::from_reader(&bytes[3..]);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[0], "payment_id");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][column("order_id")], "order-csv-1");
    assert_eq!(&rows[0][column("amount")], "15000");
    assert_eq!(&rows[0][column("buyer_email")], "a@example.com");
    // A name a spreadsheet would run as a formula is written as text.
    assert_eq!(&rows[0][column("product")], "'=HYPERLINK(\"x\")");
    assert_eq!(&rows[1][column("order_id")], "order-csv-2");
    // Another day holds nothing but the header.
    let tomorrow = today.succ_opt().unwrap();
    let empty = app
        .http
        .get(app.url(&format!("/api/admin/export/payments.csv?from={tomorrow}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(csv::Reader::from_reader(&empty[3..]).records().count(), 0);
    let bad = app
        .http
        .get(app.url("/api/admin/export/payments.csv?from=yesterday"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_payments_queues_and_latency() {
    let app = TestApp::spawn().await;
    app.paid("order-metrics-1", 15_000).await;
    let (payment_id, _) = app.paid("order-metrics-2", 9_000).await;
    let (status, _) = app
        .cancel(&payment_id, "metrics-cancel", &json!({ "reason": "test" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|sample| {
                sample.metric == name
                    && labels
                        .iter()
                        .all(|(key, value)| sample.labels.get(key) == Some(*value))
            })
            .map(|sample| match sample.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "kassa_payments",
            &[("provider", "portone"), ("status", "PAID")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "kassa_payments",
            &[("provider", "portone"), ("status", "CANCELLED")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "kassa_cancels",
            &[("provider", "portone"), ("state", "DONE")]
        ),
        Some(1.0)
    );
    assert_eq!(value("kassa_queue_depth", &[("kind", "cancel")]), Some(0.0));
    assert_eq!(value("kassa_dead_letters", &[]), Some(0.0));
    assert_eq!(value("kassa_unknown_refunds", &[]), Some(0.0));
    let counted = |name: &str, labels: &[(&str, &str)]| {
        scrape.samples.iter().any(|sample| {
            sample.metric == name
                && labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
                && matches!(&sample.value, prometheus_parse::Value::Histogram(buckets) if buckets.iter().any(|b| b.count > 0.0))
        })
    };
    assert!(
        counted(
            "kassa_http_request_duration_seconds",
            &[("route", "/api/payment/portone"), ("method", "POST")]
        ),
        "{text}"
    );
    assert!(
        counted(
            "kassa_pg_call_duration_seconds",
            &[("provider", "portone"), ("operation", "cancel")]
        ),
        "{text}"
    );
    // From elsewhere (a forwarded request) it needs the admin token.
    let forwarded = app
        .http
        .get(app.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), StatusCode::UNAUTHORIZED);
    let with_token = app
        .http
        .get(app.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
}

#[tokio::test]
async fn errors_carry_the_request_id() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/api/payments/not-a-payment"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "trace-abc-123", "{body}");
    let made = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(made.headers()["x-request-id"].len(), 32);
}

#[tokio::test]
async fn a_range_of_days_syncs_one_report_per_day() {
    let app = TestApp::spawn().await;
    let today = kassa::domain::calendar::kst_date(app.kassa.env.now());
    let from = today - chrono::Days::new(3);
    let to = today - chrono::Days::new(1);
    let (status, body) = app
        .admin_post(
            "/api/admin/settlement-sync/run",
            &json!({ "provider": "toss", "from": from.to_string(), "to": to.to_string() }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let days: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|report| report["date"].as_str().unwrap())
        .collect();
    let wanted: Vec<String> = from.iter_days().take(3).map(|d| d.to_string()).collect();
    assert_eq!(days, wanted);
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["complete"] == true),
        "{body}"
    );
    for (range, code) in [
        (
            json!({ "provider": "toss", "from": to.to_string(), "to": from.to_string() }),
            "INVALID_RANGE",
        ),
        (
            json!({ "provider": "toss", "from": from.to_string(), "to": today.to_string() }),
            "INVALID_RANGE",
        ),
        (
            json!({ "provider": "toss", "from": (today - chrono::Days::new(200)).to_string(), "to": to.to_string() }),
            "INVALID_RANGE",
        ),
        (
            json!({ "provider": "toss", "from": from.to_string() }),
            "INVALID_FIELD",
        ),
    ] {
        let (status, body) = app
            .admin_post("/api/admin/settlement-sync/run", &range)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{range} {body}");
        assert_eq!(body["error"]["code"], code, "{range}");
    }
}

async fn post_form(
    app: &TestApp,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let response = no_redirects()
        .post(app.url(path))
        .header(COOKIE, cookie)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, response.text().await.unwrap())
}

#[tokio::test]
async fn a_dead_letter_is_re_driven_from_its_page_and_refunds_once() {
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-admin-dead", 15_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    let (status, body) = app
        .cancel(
            &payment_id,
            "admin-dead-key",
            &json!({ "reason": "refund" }),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("CANCEL_FAILED"))
    );
    let cookie = sign_in(&app).await;
    let (_, html) = page(&app, &cookie, "/admin/dead-letters").await;
    assert!(
        html.contains(&format!("data-payment=\"{payment_id}\"")),
        "{html}"
    );
    assert!(html.contains("credentials"), "the reason is shown");
    assert!(
        !html.contains("name=\"console_checked\""),
        "a refused PortOne cancel needs no console check"
    );
    let id = crate::payple::letter_of(&app, &payment_id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let csrf = csrf_of(&html);
    // Without the form's token nothing is sent.
    let (status, _, _) = post_form(
        &app,
        &cookie,
        &format!("/admin/dead-letters/{id}/redrive"),
        &[("csrf", "")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, location, _) = post_form(
        &app,
        &cookie,
        &format!("/admin/dead-letters/{id}/redrive"),
        &[("csrf", &csrf), ("note", "credentials fixed")],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/admin/dead-letters?done=redriven")
    );
    app.advance_ms(61_000);
    app.run_jobs().await;
    assert_eq!(app.payment(&payment_id).await["status"], "CANCELLED");
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
    // Sent again, the form is refused with a reason, and nothing more is refunded.
    let (status, _, html) = post_form(
        &app,
        &cookie,
        &format!("/admin/dead-letters/{id}/redrive"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(html.contains("이미 환불된"), "{html}");
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);
    let (_, html) = page(&app, &cookie, "/admin/dead-letters").await;
    assert!(html.contains("id=\"no-letters\""), "{html}");
}

#[tokio::test]
async fn an_unknown_payple_refund_needs_the_console_check_and_is_resolved_with_a_note() {
    let app = TestApp::spawn().await;
    let payment_id = crate::payple::payple_payment(&app, "order-admin-pp", 20_000).await;
    app.fault("payple.cancel", "lost_response", 1).await;
    let (_, body) = app
        .cancel(
            &payment_id,
            "admin-pp-key",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "CANCEL_UNKNOWN");
    let cookie = sign_in(&app).await;
    let (_, html) = page(&app, &cookie, "/admin/dead-letters").await;
    assert!(html.contains("data-job=\"unknown_outcome\""), "{html}");
    assert!(
        html.contains("name=\"console_checked\""),
        "the console check is asked for"
    );
    let (_, html_overview) = page(&app, &cookie, "/admin").await;
    assert!(
        html_overview.contains("id=\"unknown-count\">1<"),
        "{html_overview}"
    );
    let id = crate::payple::letter_of(&app, &payment_id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let csrf = csrf_of(&html);
    // Without the tick a re-drive is refused, and Payple hears nothing.
    let (status, _, text) = post_form(
        &app,
        &cookie,
        &format!("/admin/dead-letters/{id}/redrive"),
        &[("csrf", &csrf), ("note", "retry")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(text.contains("PG 관리자 화면"), "{text}");
    assert_eq!(app.pg_calls("payple.cancel").await, 1);
    // A resolve needs a note.
    let (status, _, _) = post_form(
        &app,
        &cookie,
        &format!("/admin/dead-letters/{id}/resolve"),
        &[("csrf", &csrf), ("outcome", "refunded"), ("note", "")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, location, _) = post_form(
        &app,
        &cookie,
        &format!("/admin/dead-letters/{id}/resolve"),
        &[
            ("csrf", &csrf),
            ("outcome", "refunded"),
            ("pg_ref", ""),
            ("note", "Payple 관리자 화면에서 환불 확인"),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/admin/dead-letters?done=resolved")
    );
    let payment = app.payment(&payment_id).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(payment["cancelled_amount"], 5_000);
    assert_eq!(app.pg_calls("payple.cancel").await, 1, "never sent again");
}

#[tokio::test]
async fn the_sync_and_partner_pages_run_and_move_forward() {
    let app = TestApp::spawn().await;
    let order = json!({ "order_id": "order-admin-partner", "amount": 10_000, "name": "상품", "partner_id": "p-coffee" });
    assert_eq!(
        app.admin_post("/api/orders", &order).await.0,
        StatusCode::CREATED
    );
    let imp_uid = app.pg_payment("order-admin-partner", 10_000).await;
    assert_eq!(
        app.complete(&imp_uid, "order-admin-partner").await.0,
        StatusCode::OK
    );
    let cookie = sign_in(&app).await;

    let (_, html) = page(&app, &cookie, "/admin/settlement-sync").await;
    let csrf = csrf_of(&html);
    assert!(html.contains("id=\"sync-form\""), "{html}");
    let (status, location, _) = post_form(
        &app,
        &cookie,
        "/admin/settlement-sync/run",
        &[
            ("csrf", &csrf),
            ("provider", "toss"),
            ("from", "2026-11-22"),
            ("to", "2026-11-22"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/admin/settlement-sync?done=sync&date=2026-11-22");
    let (_, html) = page(&app, &cookie, &location).await;
    assert!(
        html.contains("data-provider=\"toss\" data-date=\"2026-11-22\" data-complete=\"true\""),
        "{html}"
    );
    // Today is not a past day.
    let (status, _, _) = post_form(
        &app,
        &cookie,
        "/admin/settlement-sync/run",
        &[
            ("csrf", &csrf),
            ("provider", "toss"),
            ("from", "2026-11-23"),
            ("to", "2026-11-23"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, location, _) = post_form(
        &app,
        &cookie,
        "/admin/partner-settlements/run",
        &[("csrf", &csrf), ("date", "2026-11-23")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page(&app, &cookie, &location).await;
    assert!(
        html.contains("data-partner=\"p-coffee\" data-status=\"REQUESTED\""),
        "{html}"
    );
    assert!(html.contains("10,000원"), "{html}");
    let (status, location, _) = post_form(
        &app,
        &cookie,
        "/admin/partner-settlements/2026-11-23:p-coffee/status",
        &[("csrf", &csrf), ("status", "PROCESSING")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page(&app, &cookie, &location).await;
    assert!(
        html.contains("data-partner=\"p-coffee\" data-status=\"PROCESSING\""),
        "{html}"
    );
    // Backwards is refused.
    let (status, _, _) = post_form(
        &app,
        &cookie,
        "/admin/partner-settlements/2026-11-23:p-coffee/status",
        &[("csrf", &csrf), ("status", "REQUESTED")],
    )
    .await;
    assert!(status.is_client_error(), "{status}");
}

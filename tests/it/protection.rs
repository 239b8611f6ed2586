//! What faces the internet: slow clients, the per-client rate limit, trusted proxies, webhook
//! sources, open orders per client, CSRF on the mypage form, the e-mail on the order page,
//! private files, and the sandbox kept to itself.

use crate::support::{ADMIN_TOKEN, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; answers what it sent, or `None` if it kept the
/// connection open for `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(seen),
            Ok(Ok(read)) => seen.extend_from_slice(&buffer[..read]),
        }
    }
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected_and_so_is_an_idle_one() {
    let app = TestApp::spawn_with(vec![("KASSA_HTTP__HEADER_READ_TIMEOUT_MS", "300".into())]).await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: kassa\r\nX-Slow: 1")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a half-sent header kept its connection");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // A keep-alive connection that answered a request and then idles is closed by the same timer.
    let mut idle = TcpStream::connect(addr(&app)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: kassa\r\n\r\n")
        .await
        .unwrap();
    let sent = Instant::now();
    let answered = read_until_closed(&mut idle, Duration::from_secs(5))
        .await
        .expect("the idle keep-alive connection was kept open");
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "the connection was closed at once, not after idling"
    );
}

/// Open files this process may have.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(u64::MAX)
}

#[tokio::test]
async fn two_thousand_slow_clients_do_not_delay_healthz() {
    const SLOW_CLIENTS: usize = 2_000;
    // Both ends of every connection are in this process.
    let needed = 2 * SLOW_CLIENTS as u64 + 500;
    assert!(
        open_files_limit() >= needed,
        "this test needs `ulimit -n` of at least {needed}"
    );
    let app = TestApp::spawn().await;
    let mut slow = Vec::with_capacity(SLOW_CLIENTS);
    for n in 0..SLOW_CLIENTS {
        let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
        stream
            .write_all(
                format!("POST /api/orders HTTP/1.1\r\nHost: kassa\r\nX-Slow: {n}").as_bytes(),
            )
            .await
            .unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    let (status, body) = app.healthz().await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        took < Duration::from_secs(1),
        "/healthz took {took:?} beside {SLOW_CLIENTS} slow clients"
    );
    drop(slow);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_with_a_4xx() {
    let app = TestApp::spawn_with(vec![("KASSA_HTTP__BODY_READ_TIMEOUT_MS", "300".into())]).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream
        .write_all(
            b"POST /api/payment/portone HTTP/1.1\r\nHost: kassa\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"imp_uid\":",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("a body that never came held the request open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
}

async fn complete_call(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/api/payment/portone"))
        .json(&json!({ "imp_uid": "imp_000000000000", "merchant_uid": "order-none" }));
    if let Some(client) = forwarded_for {
        request = request.header("X-Forwarded-For", client);
    }
    request.send().await.unwrap()
}

fn limited(settings: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut all = vec![
        // One more request every 10 s: a slow machine does not refill it within a test.
        ("KASSA_HTTP__RATE_LIMIT_PER_MINUTE", "6".to_owned()),
        ("KASSA_HTTP__RATE_LIMIT_BURST", "3".to_owned()),
    ];
    all.extend(
        settings
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    all
}

#[tokio::test]
async fn public_endpoints_answer_429_with_retry_after_past_a_clients_allowance() {
    let app = TestApp::spawn_with(limited(&[])).await;
    for _ in 0..3 {
        let response = complete_call(&app, None).await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let refused = complete_call(&app, None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // A forged X-Forwarded-For from a peer that is no trusted proxy changes nothing.
    let forged = complete_call(&app, Some("198.51.100.7")).await;
    assert_eq!(forged.status(), StatusCode::TOO_MANY_REQUESTS);
    // The long-poll and the pages count too; the page answers a page.
    let page = app
        .http
        .get(app.url("/payment/toss/success?paymentKey=x&orderId=y&amount=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(page.text().await.unwrap().contains("<html"));
    // What is not a public payment endpoint is not limited: health, webhooks, the admin API.
    assert_eq!(app.healthz().await.0, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(
            app.webhook("imp_000000000001", "order-none").await,
            StatusCode::OK
        );
    }
    let (status, _) = app.admin_get("/api/admin/alerts").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance() {
    let app = TestApp::spawn_with(limited(&[
        ("KASSA_HTTP__TRUSTED_PROXIES", r#"["127.0.0.1/32", "::1"]"#),
        // The sandbox refuses to run behind a proxy unless told so.
        ("KASSA_GATEWAY__SANDBOX_PUBLIC", "true"),
    ]))
    .await;
    for _ in 0..3 {
        complete_call(&app, Some("198.51.100.7")).await;
    }
    let first = complete_call(&app, Some("198.51.100.7")).await;
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    // The client writes the leftmost hop; the proxy appends the address it saw.
    let other = complete_call(&app, Some("198.51.100.7, 203.0.113.20")).await;
    assert_ne!(other.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn webhooks_are_taken_only_from_the_configured_networks() {
    let closed = TestApp::spawn_with(vec![(
        "KASSA_HTTP__WEBHOOK_NETWORKS",
        r#"["10.0.0.0/8"]"#.into(),
    )])
    .await;
    let queued_before = closed.kassa.store.queue_depth().await.unwrap();
    let refused = closed
        .http
        .post(closed.url("/api/webhooks/portone"))
        .json(&json!({ "imp_uid": "imp_1", "merchant_uid": "order-1", "status": "paid" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "WEBHOOK_SOURCE_REFUSED");
    assert_eq!(
        closed.kassa.store.queue_depth().await.unwrap(),
        queued_before
    );
    let open = TestApp::spawn_with(vec![(
        "KASSA_HTTP__WEBHOOK_NETWORKS",
        r#"["127.0.0.0/8"]"#.into(),
    )])
    .await;
    assert_eq!(open.webhook("imp_1", "order-1").await, StatusCode::OK);
}

/// A form post as a browser sends it, with the buyer cookie if there is one.
async fn post_form(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap());
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn checkout(app: &TestApp) -> reqwest::Response {
    post_form(
        app,
        "/payment/checkout",
        &[("product_id", "beans-1kg")],
        None,
    )
    .await
}

#[tokio::test]
async fn one_client_holds_a_bounded_number_of_open_orders_within_an_hour() {
    let app = TestApp::spawn_with(vec![("KASSA_HTTP__OPEN_ORDERS_PER_CLIENT", "2".into())]).await;
    // A new cookie (or none) is no way around it: the client is counted, not the buyer.
    for _ in 0..2 {
        assert_eq!(checkout(&app).await.status(), StatusCode::SEE_OTHER);
    }
    let refused = checkout(&app).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.text().await.unwrap().contains("<html"));
    // The admin API is not bounded by it.
    assert_eq!(
        app.create_order("order-admin-0001", 1_000).await["status"],
        "READY"
    );
    // Orders made more than an hour ago no longer count.
    app.advance_ms(61 * 60 * 1_000);
    assert_eq!(checkout(&app).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_mypage_cancel_form_needs_its_csrf_token() {
    let app = TestApp::spawn().await;
    let to_order = checkout(&app).await;
    let cookie = to_order.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let order_path = to_order.headers()["location"].to_str().unwrap().to_owned();
    let order_id = order_path.trim_start_matches("/payment/").to_owned();
    let imp_uid = app.pg_payment(&order_id, 15_000).await;
    let (status, paid) = app.complete(&imp_uid, &order_id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let payment_id = paid["payment_id"].as_str().unwrap().to_owned();
    let page = app
        .http
        .get(app.url("/payment/mypage"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let field = |name: &str| -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = page.find(&marker).unwrap() + marker.len();
        page[start..start + page[start..].find('"').unwrap()].to_owned()
    };
    let (key, csrf) = (field("key"), field("csrf"));
    for (form_key, token) in [
        (key.as_str(), ""),
        (key.as_str(), "0".repeat(64).as_str()),
        ("another-key-000000", csrf.as_str()),
    ] {
        let forged = post_form(
            &app,
            "/payment/mypage/cancel",
            &[
                ("payment_id", payment_id.as_str()),
                ("key", form_key),
                ("csrf", token),
            ],
            Some(&cookie),
        )
        .await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(app.payment(&payment_id).await["status"], "PAID");
    let cancelled = post_form(
        &app,
        "/payment/mypage/cancel",
        &[
            ("payment_id", payment_id.as_str()),
            ("key", key.as_str()),
            ("csrf", csrf.as_str()),
        ],
        Some(&cookie),
    )
    .await;
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    assert_ne!(app.payment(&payment_id).await["status"], "PAID");
}

#[tokio::test]
async fn the_order_page_shows_no_e_mail_address_to_whoever_has_the_link() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .admin_post(
            "/api/orders",
            &json!({ "order_id": "order-mail-0001", "amount": 1_000, "name": "x", "buyer_email": "kim@example.com" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let page = app
        .http
        .get(app.url("/payment/order-mail-0001"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("order-mail-0001"), "{page}");
    assert!(!page.contains("kim@example.com"), "{page}");
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("new").join("kassa-data");
    let store = kassa::store::Store::open(&data_dir, || [7u8; 32]).unwrap();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join("kassa.redb")), 0o600);
    drop(store);
    // A data file left readable by others is made private again when kassa opens it.
    std::fs::set_permissions(
        data_dir.join("kassa.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let store = crate::storage::reopen(&data_dir).await;
    assert_eq!(mode(&data_dir.join("kassa.redb")), 0o600);
    drop(store);
}

#[tokio::test]
async fn in_real_mode_nothing_of_the_sandbox_is_reachable() {
    let app = TestApp::spawn_with(vec![
        ("KASSA_GATEWAY__DEFAULT", "portone".into()),
        (
            "KASSA_GATEWAY__PORTONE__BASE_URL",
            "http://127.0.0.1:9".into(),
        ),
        ("KASSA_GATEWAY__PORTONE__IMP_KEY", "imp-key-0000".into()),
        (
            "KASSA_GATEWAY__PORTONE__IMP_SECRET",
            "imp-secret-0000".into(),
        ),
        ("KASSA_GATEWAY__PORTONE__IMP_CODE", "imp00000000".into()),
    ])
    .await;
    for path in [
        "/sandbox-pg/_control/portone/payments",
        "/sandbox-pg/portone/checkout",
        "/sandbox-pg/payple/checkout",
    ] {
        let response = app
            .http
            .post(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "merchant_uid": "x", "amount": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn the_webhook_inbox_is_bounded_for_all_pgs_together_not_per_client() {
    let app = TestApp::spawn_with(vec![("KASSA_HTTP__WEBHOOKS_PER_SECOND", "1".into())]).await;
    // Ten seconds' worth at once, then the PG is asked to send again later.
    for n in 0..10 {
        let status = app
            .webhook(&format!("imp_{n:012}"), &format!("order-inbox-{n}"))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // (A token comes back every second: a slow machine may let one or two more through.)
    let mut refused = None;
    for _ in 0..5 {
        let answer = app
            .http
            .post(app.url("/api/webhooks/toss"))
            .json(&json!({ "eventType": "PAYMENT_STATUS_CHANGED", "data": { "paymentKey": "tgen_1" } }))
            .send()
            .await
            .unwrap();
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("the inbox took more than its bound");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "INBOX_FULL");
    // The inbox's bound is not the buyers': their endpoints are not slowed by it.
    assert_ne!(
        complete_call(&app, None).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn past_the_connection_cap_a_new_client_waits_until_one_leaves() {
    let app = TestApp::spawn_with(vec![("KASSA_HTTP__CONNECTIONS_MAX", "16".into())]).await;
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // Let the server take all sixteen before the seventeenth comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut waiting = TcpStream::connect(addr(&app)).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: kassa\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut first)).await;
    assert!(
        early.is_err(),
        "a seventeenth connection was served past the cap"
    );
    drop(held.pop());
    let answer = read_until_closed(&mut waiting, Duration::from_secs(5))
        .await
        .expect("the waiting client was served once a connection left");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

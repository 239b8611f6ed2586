//! Bad input for every endpoint: a clear 4xx JSON error, never a 5xx or a panic, and nothing
//! stored changes.

use crate::support::{ADMIN_TOKEN, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::Value;

struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    admin: bool,
}

fn case(
    method: Method,
    path: &str,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    admin: bool,
) -> Case {
    Case {
        method,
        path: path.to_owned(),
        content_type,
        body: body.into(),
        admin,
    }
}

const JSON: Option<&str> = Some("application/json");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

#[expect(clippy::too_many_lines, reason = "a table of cases")]
fn cases(imp_uid: &str) -> Vec<Case> {
    let huge = format!(
        "{{\"amount\": 1000, \"name\": \"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let long = "가".repeat(10_000);
    let mut cases = vec![
        // POST /api/orders
        case(Method::POST, "/api/orders", JSON, "{", true),
        case(Method::POST, "/api/orders", JSON, "[]", true),
        case(Method::POST, "/api/orders", JSON, "{}", true),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": "15000", "name": "a"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 15000}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 0, "name": "a"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": -5, "name": "a"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1.5, "name": "a"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1e30, "name": "a"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 99999999999999999999999, "name": "a"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 10000000001, "name": "a"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1000, "name": ""}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            format!(r#"{{"amount": 1000, "name": "{long}"}}"#),
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1000, "name": "a", "order_id": "a/b/c/d"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            format!(
                r#"{{"amount": 1000, "name": "a", "order_id": "{}"}}"#,
                "o".repeat(65)
            ),
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1000, "name": "a", "partner_id": "nobody"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1000, "name": "a", "provider": "paypal"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1000, "name": "a", "buyer_email": "not-an-email"}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1000, "name": "a", "surprise": 1}"#,
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1000, "name": "a\u0000b"}"#,
            true,
        ),
        case(Method::POST, "/api/orders", JSON, huge.clone(), true),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            vec![b'{', 0xff, 0xfe, b'}'],
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            FORM,
            "amount=1000&name=a",
            true,
        ),
        case(
            Method::POST,
            "/api/orders",
            JSON,
            r#"{"amount": 1000, "name": "a"}"#,
            false,
        ),
        // GET /api/orders/{id}
        case(Method::GET, "/api/orders/order-unknown-1", None, "", true),
        case(
            Method::GET,
            &format!("/api/orders/{}", "x".repeat(5000)),
            None,
            "",
            true,
        ),
        case(Method::GET, "/api/orders/%FF%FE%FD", None, "", true),
        case(Method::GET, "/api/orders/order-unknown-1", None, "", false),
        // POST /api/payment/portone
        case(Method::POST, "/api/payment/portone", JSON, "{", false),
        case(Method::POST, "/api/payment/portone", JSON, "{}", false),
        case(
            Method::POST,
            "/api/payment/portone",
            JSON,
            r#"{"imp_uid": 5, "merchant_uid": "order-bad-1"}"#,
            false,
        ),
        case(
            Method::POST,
            "/api/payment/portone",
            JSON,
            r#"{"imp_uid": "imp_000000000001", "merchant_uid": "order-bad-1"}"#,
            false,
        ),
        case(
            Method::POST,
            "/api/payment/portone",
            JSON,
            format!(r#"{{"imp_uid": "{imp_uid}", "merchant_uid": "order-unknown-9"}}"#),
            false,
        ),
        case(
            Method::POST,
            "/api/payment/portone",
            JSON,
            format!(
                r#"{{"imp_uid": "{}", "merchant_uid": "order-bad-1"}}"#,
                "i".repeat(5000)
            ),
            false,
        ),
        case(
            Method::POST,
            "/api/payment/portone",
            JSON,
            r#"{"imp_uid": "../../users/getToken", "merchant_uid": "order-bad-1"}"#,
            false,
        ),
        case(
            Method::POST,
            "/api/payment/portone",
            JSON,
            vec![0xc3, 0x28, 0xa0, 0xa1],
            false,
        ),
        case(
            Method::POST,
            "/api/payment/portone",
            JSON,
            huge.clone(),
            false,
        ),
        case(
            Method::POST,
            "/api/payment/portone",
            None,
            r#"{"imp_uid": "x", "merchant_uid": "order-bad-1"}"#,
            false,
        ),
        // POST /api/webhooks/portone
        case(Method::POST, "/api/webhooks/portone", JSON, "{", false),
        case(Method::POST, "/api/webhooks/portone", JSON, "{}", false),
        case(
            Method::POST,
            "/api/webhooks/portone",
            JSON,
            r#"{"imp_uid": ["a"]}"#,
            false,
        ),
        case(
            Method::POST,
            "/api/webhooks/portone",
            FORM,
            "merchant_uid=order-bad-1",
            false,
        ),
        case(
            Method::POST,
            "/api/webhooks/portone",
            FORM,
            "imp_uid=a%2Fb",
            false,
        ),
        case(
            Method::POST,
            "/api/webhooks/portone",
            JSON,
            vec![0xff; 64],
            false,
        ),
        case(
            Method::POST,
            "/api/webhooks/portone",
            JSON,
            huge.clone(),
            false,
        ),
        // GET /api/payments/{id} and lists
        case(Method::GET, "/api/payments/not-a-uuid", None, "", true),
        case(
            Method::GET,
            "/api/payments/01900000-0000-7000-8000-000000000000",
            None,
            "",
            true,
        ),
        case(
            Method::GET,
            "/api/payments/01900000-0000-7000-8000-000000000000",
            None,
            "",
            false,
        ),
        case(Method::GET, "/api/payments?limit=0", None, "", true),
        case(Method::GET, "/api/payments?limit=501", None, "", true),
        case(Method::GET, "/api/payments?limit=abc", None, "", true),
        case(Method::GET, "/api/payments?status=DONE", None, "", true),
        case(Method::GET, "/api/payments?from=2026-13-45", None, "", true),
        case(Method::GET, "/api/payments?to=yesterday", None, "", true),
        case(Method::GET, "/api/payments?cursor=zzz", None, "", true),
        case(Method::GET, "/api/payments?order_id=a/b", None, "", true),
        case(Method::GET, "/api/payments", None, "", false),
        case(Method::GET, "/api/payment/list?limit=-1", None, "", false),
        // GET /api/payments/result/{order}
        case(
            Method::GET,
            "/api/payments/result/order-unknown-1",
            None,
            "",
            false,
        ),
        case(
            Method::GET,
            "/api/payments/result/order-bad-1?wait_s=181",
            None,
            "",
            false,
        ),
        case(
            Method::GET,
            "/api/payments/result/order-bad-1?wait_s=abc",
            None,
            "",
            false,
        ),
        case(Method::GET, "/api/payments/result/%FF", None, "", false),
        // Unknown endpoints and methods
        case(Method::GET, "/api/nothing-here", None, "", false),
        case(Method::DELETE, "/api/orders", None, "", true),
        case(Method::PUT, "/api/payment/portone", JSON, "{}", false),
    ];
    cases.shrink_to_fit();
    cases
}

#[tokio::test]
async fn every_endpoint_answers_bad_input_with_a_4xx_json_error_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.create_order("order-bad-1", 15_000).await;
    let paid_uid = app.pg_payment("order-bad-1", 15_000).await;
    assert_eq!(
        app.complete(&paid_uid, "order-bad-1").await.0,
        StatusCode::OK
    );
    let before = app.snapshot(&["order-bad-1"]).await;

    for case in cases(&paid_uid) {
        let mut request = app
            .http
            .request(case.method.clone(), app.url(&case.path))
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if case.admin {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let label = format!(
            "{} {} ({} bytes)",
            case.method,
            &case.path[..case.path.len().min(60)],
            case.body.len()
        );
        assert!(status.is_client_error(), "{label}: {status} {text}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{label}: {text}"
        );
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{label}: not JSON: {text}"));
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: no code: {text}"));
        assert!(
            code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{label}: {code}"
        );
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{label}"
        );
    }

    assert_eq!(
        app.snapshot(&["order-bad-1"]).await,
        before,
        "bad input changed what is stored"
    );
    assert_eq!(app.pg_state(&paid_uid).await["refunds_executed"], 0);
}

#[tokio::test]
async fn pages_answer_bad_input_with_a_friendly_page() {
    let app = TestApp::spawn().await;
    for (method, path, body) in [
        (Method::GET, "/payment/order-unknown-1", ""),
        (Method::GET, "/payment/a", ""),
        (Method::GET, "/payment/result/order-unknown-1", ""),
        (Method::GET, "/payment/portone/return", ""),
        (Method::GET, "/payment/portone/return?merchant_uid=%FF", ""),
        (Method::POST, "/payment/checkout", "product_id=nothing"),
        (Method::POST, "/payment/checkout", "%%%"),
        (Method::GET, "/no/such/page", ""),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let text = response.text().await.unwrap();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        assert!(
            content_type.starts_with("text/html"),
            "{method} {path}: {content_type}"
        );
        assert!(
            text.contains("id=\"error-message\""),
            "{method} {path}: {text}"
        );
    }
}

/// Creates an order through the admin API with `provider`; answers the status and body.
async fn order_for(app: &TestApp, order_id: &str, provider: &str) -> (StatusCode, Value) {
    let body = serde_json::json!({
        "order_id": order_id, "amount": 15000, "name": "원두 1kg", "provider": provider,
    });
    app.admin_post("/api/orders", &body).await
}

#[tokio::test]
async fn a_short_merchant_order_number_is_taken_for_portone_and_refused_for_toss_with_the_limit() {
    let app = TestApp::spawn().await;
    let (status, body) = order_for(&app, "1042", "portone").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["order_id"], "1042");
    // It is paid like any other order: its id reaches the PG's URLs and comes back.
    let imp_uid = app.pg_payment("1042", 15000).await;
    let (status, body) = app.complete(&imp_uid, "1042").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "PAID");

    let (status, body) = order_for(&app, "1043", "toss").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_FIELD");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Toss order ids are 6 to 64 characters of letters, digits, - and _"),
        "{message}"
    );
    let (status, _) = app.admin_get("/api/orders/1043").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = order_for(&app, "1043", "payple").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = order_for(&app, &"o".repeat(41), "portone").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("PortOne") && message.contains("1 to 40"),
        "{message}"
    );
    let (status, body) = order_for(&app, &"o".repeat(41), "toss").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

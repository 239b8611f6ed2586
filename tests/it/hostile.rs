//! Hostile input to every endpoint and page: malformed and deeply nested JSON, huge, negative
//! and fractional amounts, wrong content types, 10 MB bodies, path traversal, forged cookies,
//! tokens and CSRF fields, markup and SQL-looking strings. Never a 5xx, never a panic, markup
//! never shown back unescaped, and nothing stored changes (the whole store's digest is equal).
//! Slow headers and bodies are in `protection.rs`.

use crate::support::{ADMIN_TOKEN, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// What an attacker hopes to see echoed into a page.
const MARKUP: &str = "<script>alert(1)</script>";
const MARKUP_URL: &str = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
const SQL: &str = "%27%20OR%201%3D1%20--";

struct Hostile {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    admin: bool,
}

fn hostile(method: Method, path: impl Into<String>) -> Hostile {
    Hostile {
        method,
        path: path.into(),
        content_type: None,
        body: Vec::new(),
        headers: Vec::new(),
        admin: false,
    }
}

impl Hostile {
    fn json(mut self, body: impl Into<Vec<u8>>) -> Hostile {
        self.content_type = Some("application/json");
        self.body = body.into();
        self
    }

    fn form(mut self, body: impl Into<Vec<u8>>) -> Hostile {
        self.content_type = Some("application/x-www-form-urlencoded");
        self.body = body.into();
        self
    }

    fn typed(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Hostile {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Hostile {
        self.headers.push((name, value.into()));
        self
    }

    fn admin(mut self) -> Hostile {
        self.admin = true;
        self
    }
}

#[expect(clippy::too_many_lines, reason = "a table of cases")]
fn cases(payment_id: &str) -> Vec<Hostile> {
    let nested_arrays = "[".repeat(100_000);
    let nested_objects = "{\"a\":".repeat(50_000);
    let ten_mb = format!(
        "{{\"amount\": 1000, \"name\": \"{}\"}}",
        "가".repeat(10 * 1024 * 1024 / 3)
    );
    let cancel = format!("/api/payments/{payment_id}/cancel");
    let json_endpoints = [
        ("/api/orders", true),
        ("/api/payment/portone", false),
        ("/api/payment/toss/confirm", false),
        ("/api/webhooks/portone", false),
        ("/api/webhooks/toss", false),
        (cancel.as_str(), true),
        ("/api/admin/settlement-sync/run", true),
        ("/api/admin/partner-settlements/run", true),
    ];
    let mut cases = Vec::new();
    for (path, admin) in json_endpoints {
        let with = |case: Hostile| {
            let case = case.header("Idempotency-Key", "hostile-key-0001");
            if admin { case.admin() } else { case }
        };
        cases.push(with(
            hostile(Method::POST, path).json(nested_arrays.clone()),
        ));
        cases.push(with(
            hostile(Method::POST, path).json(nested_objects.clone()),
        ));
        cases.push(with(hostile(Method::POST, path).json(ten_mb.clone())));
        cases.push(with(
            hostile(Method::POST, path).typed("text/plain", r#"{"amount": 1000}"#),
        ));
        cases.push(with(
            hostile(Method::POST, path).json(vec![0xff, 0xfe, 0x00, 0x7b]),
        ));
    }
    let amounts = [
        "1e400",
        "99999999999999999999999",
        "-1000",
        "1000.5",
        "\"NaN\"",
        "null",
        "9223372036854775807",
        "-9223372036854775808",
    ];
    for amount in amounts {
        cases.push(
            hostile(Method::POST, "/api/orders")
                .json(format!(r#"{{"amount": {amount}, "name": "{MARKUP}"}}"#))
                .admin(),
        );
        // (`"amount": null` is a whole cancel, which a request may ask for.)
        if amount == "null" {
            continue;
        }
        cases.push(
            hostile(Method::POST, cancel.clone())
                .json(format!(r#"{{"amount": {amount}, "reason": "{MARKUP}"}}"#))
                .header("Idempotency-Key", "hostile-key-0002")
                .admin(),
        );
        cases.push(
            hostile(Method::POST, "/api/payment/toss/confirm").json(format!(
                r#"{{"paymentKey": "{MARKUP}", "orderId": "' OR 1=1 --", "amount": {amount}}}"#
            )),
        );
    }
    cases.extend([
        // Keys and tokens that are not what they claim.
        hostile(Method::POST, cancel.clone())
            .json(r#"{"reason": "x"}"#)
            .header("Idempotency-Key", "k".repeat(10_000))
            .admin(),
        hostile(Method::POST, cancel.clone())
            .json(r#"{"reason": "x"}"#)
            .header("Idempotency-Key", "<script> alert(1)")
            .admin(),
        hostile(Method::POST, cancel.clone())
            .json(r#"{"reason": "x"}"#)
            .header("Idempotency-Key", "hostile-key-0003")
            .header("Authorization", format!("Bearer {MARKUP}")),
        hostile(Method::GET, "/api/admin/alerts").header("Authorization", "Basic YWRtaW46YWRtaW4="),
        hostile(Method::GET, "/api/admin/alerts")
            .header("Authorization", format!("Bearer {}", "t".repeat(7_000))),
        hostile(Method::POST, "/api/admin/dead-letters/%2e%2e/redrive")
            .json(r#"{"console_checked": true, "note": "x"}"#)
            .admin(),
        hostile(
            Method::POST,
            "/api/admin/dead-letters/00000000-0000-7000-8000-000000000000/resolve",
        )
        .json(format!(r#"{{"outcome": "{MARKUP}", "note": "x"}}"#))
        .admin(),
        hostile(Method::POST, "/api/admin/partner-settlements/x%27--/status")
            .json(r#"{"status": "COMPLETED"}"#)
            .admin(),
        // Queries.
        hostile(Method::GET, format!("/api/payments?order_id={SQL}")).admin(),
        hostile(Method::GET, "/api/payments?limit=99999999999999999999").admin(),
        hostile(Method::GET, format!("/api/payments?cursor={MARKUP_URL}")).admin(),
        hostile(Method::GET, "/api/payments?from=0000-00-00&to=9999-99-99").admin(),
        hostile(
            Method::GET,
            "/api/admin/settlements?date=2026-02-30&status=Pending",
        )
        .admin(),
        hostile(
            Method::GET,
            format!("/api/payments/result/{MARKUP_URL}?wait_s=1"),
        ),
        hostile(Method::GET, "/api/payments/result/order-x?wait_s=1e9"),
        hostile(Method::GET, "/api/payments/result/order-x?wait_s=-1"),
        // Forged buyer cookies.
        hostile(Method::GET, "/api/payment/list").header(
            "Cookie",
            format!("kassa_buyer={MARKUP}; kassa_buyer=../../etc"),
        ),
        hostile(Method::GET, format!("/api/payments/{payment_id}")).header(
            "Cookie",
            "kassa_buyer=0190aaaa-0000-7000-8000-000000000000.00",
        ),
        hostile(Method::GET, "/payment/mypage").header("Cookie", "kassa_buyer=x".repeat(1_000)),
        hostile(Method::POST, "/payment/mypage/cancel")
            .form(format!(
                "payment_id={payment_id}&key=hostile-key-0004&csrf={MARKUP_URL}"
            ))
            .header(
                "Cookie",
                "kassa_buyer=0190aaaa-0000-7000-8000-000000000000.00",
            ),
        // The PG's posts and return pages with markup and SQL in every field.
        hostile(Method::POST, "/api/payment/payple/result").form(format!(
            "PCD_PAY_RST=success&PCD_PAY_OID={MARKUP_URL}&PCD_PAY_TYPE={SQL}&PCD_PAY_TIME=x"
        )),
        hostile(Method::POST, "/api/payment/payple/result").form("%%%&&=="),
        hostile(Method::POST, "/api/webhooks/payple").form("%%%&&=="),
        hostile(Method::POST, "/api/webhooks/payple").form(vec![0xff; 1_000]),
        hostile(
            Method::GET,
            format!(
                "/payment/toss/fail?code={MARKUP_URL}&message={MARKUP_URL}&orderId={MARKUP_URL}"
            ),
        ),
        hostile(
            Method::GET,
            format!("/payment/toss/success?paymentKey={MARKUP_URL}&orderId={SQL}&amount=-1"),
        ),
        hostile(
            Method::GET,
            format!(
                "/payment/portone/return?imp_uid={MARKUP_URL}&merchant_uid={SQL}&imp_success=true"
            ),
        ),
        hostile(Method::POST, "/payment/checkout").form(format!("product_id={MARKUP_URL}")),
        hostile(Method::POST, "/payment/checkout")
            .form(format!("product_id=beans-1kg&provider={MARKUP_URL}")),
        hostile(Method::POST, "/payment/checkout").form(ten_mb.clone()),
        hostile(Method::POST, "/payment/checkout").json(r#"{"product_id": "beans-1kg"}"#),
        hostile(Method::GET, format!("/payment/{MARKUP_URL}")),
        hostile(Method::GET, format!("/payment/result/{MARKUP_URL}")),
        hostile(Method::GET, "/payment/mypage").header("Accept-Language", MARKUP),
        // Paths that try to leave the embedded files.
        hostile(Method::GET, "/static/../Cargo.toml"),
        hostile(Method::GET, "/static/..%2F..%2FCargo.toml"),
        hostile(Method::GET, "/static/%2e%2e/%2e%2e/etc/passwd"),
        hostile(Method::GET, "/static/result.js%00.html"),
        hostile(Method::GET, "/static/"),
        hostile(Method::GET, "/%2e%2e/%2e%2e/etc/passwd"),
        // The rest of the admin API and the pages, with markup where they take a value.
        hostile(Method::GET, format!("/api/orders/{MARKUP_URL}")).admin(),
        hostile(
            Method::GET,
            format!("/api/admin/dead-letters?cursor={MARKUP_URL}"),
        )
        .admin(),
        hostile(
            Method::GET,
            format!("/api/admin/settlement-findings?date={SQL}"),
        )
        .admin(),
        hostile(Method::GET, "/api/admin/settlement-sync/runs?limit=-5").admin(),
        hostile(
            Method::GET,
            format!("/api/admin/partner-settlements?date={MARKUP_URL}"),
        )
        .admin(),
        hostile(Method::HEAD, format!("/api/webhooks/payple?x={MARKUP_URL}")),
        hostile(Method::GET, format!("/healthz?{MARKUP_URL}")),
        hostile(Method::GET, format!("/payment?lang={MARKUP_URL}")),
        hostile(Method::GET, format!("/?{SQL}")),
        // Methods nobody uses.
        hostile(Method::DELETE, format!("/api/payments/{payment_id}")).admin(),
        hostile(Method::PATCH, "/payment/checkout").form("product_id=beans-1kg"),
        hostile(Method::OPTIONS, "/api/orders"),
        hostile(Method::from_bytes(b"TRACE").unwrap(), "/"),
    ]);
    cases
}

#[tokio::test]
async fn hostile_requests_never_get_a_5xx_never_see_markup_echoed_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .admin_post(
            "/api/orders",
            &json!({ "order_id": "order-hostile-01", "amount": 15_000, "name": MARKUP }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let imp_uid = app.pg_payment("order-hostile-01", 15_000).await;
    let (status, paid) = app.complete(&imp_uid, "order-hostile-01").await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let payment_id = paid["payment_id"].as_str().unwrap().to_owned();
    let before = app.kassa.store.digest().await.unwrap();

    let cases = cases(&payment_id);
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for case in cases {
        let label = format!(
            "{} {} ({} bytes)",
            case.method,
            &case.path[..case.path.len().min(80)],
            case.body.len()
        );
        let mut request = app
            .http
            .request(case.method.clone(), app.url(&case.path))
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        if case.admin {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let response = match request.send().await {
            Ok(response) => response,
            // kassa may answer a 10 MB body with 413 and close before it was all sent.
            Err(error) if case.body.len() > 1024 * 1024 => {
                assert!(!error.is_timeout(), "{label}: {error}");
                continue;
            }
            Err(error) => panic!("{label}: {error}"),
        };
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap_or_default();
        assert!(!status.is_server_error(), "{label}: {status} {text}");
        assert!(!text.contains(MARKUP), "{label}: markup shown back: {text}");
        assert!(!text.contains("[package]"), "{label}: {text}");
        assert!(!text.contains("root:"), "{label}: {text}");
        let now = app.kassa.store.digest().await.unwrap();
        assert_eq!(now, before, "{label} changed what is stored");
        if case.path.starts_with("/api/") && status != StatusCode::OK {
            assert!(
                content_type.starts_with("application/json"),
                "{label}: {status} {content_type}"
            );
        }
    }

    // Markup stored by the admin is shown escaped on the pages that show it.
    let page = app
        .http
        .get(app.url("/payment/order-hostile-01"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(MARKUP), "{page}");
    assert!(
        page.contains("&lt;script&gt;") || page.contains("&#60;script&#62;"),
        "{page}"
    );
    assert_eq!(
        app.kassa.store.digest().await.unwrap(),
        before,
        "hostile input changed what is stored"
    );
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 0);
}

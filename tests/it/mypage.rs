//! Buyers: checkout from the product list, pay in the sandbox window, and see only their own
//! payments.

use crate::support::TestApp;
use reqwest::StatusCode;
use serde_json::Value;

/// A browser without JavaScript: it keeps the buyer cookie and follows redirects by hand.
struct Buyer<'a> {
    app: &'a TestApp,
    cookie: Option<String>,
}

impl Buyer<'_> {
    async fn get(&self, path_or_url: &str) -> reqwest::Response {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            self.app.url(path_or_url)
        };
        let mut request = self.app.http.get(url);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .app
            .http
            .post(self.app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            self.cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_owned());
        }
        response
    }

    /// Buys a product and pays for it in the sandbox window; answers the order id.
    async fn buy(&mut self, product_id: &str) -> String {
        let response = self
            .post_form("/payment/checkout", &[("product_id", product_id)])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let order_path = response.headers()["location"].to_str().unwrap().to_owned();
        let order_id = order_path.trim_start_matches("/payment/").to_owned();
        let page = self.get(&order_path).await.text().await.unwrap();
        assert!(page.contains("/sandbox-pg/portone/checkout"), "{page}");
        let amount = self
            .app
            .kassa
            .config
            .product(product_id)
            .unwrap()
            .price
            .won()
            .to_string();
        let decision = self
            .post_form(
                "/sandbox-pg/portone/checkout",
                &[
                    ("merchant_uid", order_id.as_str()),
                    ("amount", amount.as_str()),
                    ("name", "item"),
                    ("redirect_url", "/payment/portone/return"),
                    ("decision", "approve"),
                ],
            )
            .await;
        assert_eq!(decision.status(), StatusCode::SEE_OTHER);
        let back = decision.headers()["location"].to_str().unwrap().to_owned();
        let returned = self.get(&back).await;
        assert_eq!(returned.status(), StatusCode::SEE_OTHER);
        let result_path = returned.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            result_path.starts_with(&format!("/payment/result/{order_id}")),
            "{result_path}"
        );
        let result = self.get(&result_path).await.text().await.unwrap();
        assert!(result.contains("data-result=\"PAID\""), "{result}");
        order_id
    }
}

#[tokio::test]
async fn the_mypage_of_one_buyer_never_shows_another_buyers_payment() {
    let app = TestApp::spawn().await;
    let mut alice = Buyer {
        app: &app,
        cookie: None,
    };
    let mut bob = Buyer {
        app: &app,
        cookie: None,
    };
    let alice_order = alice.buy("beans-1kg").await;
    let bob_order = bob.buy("green-tea").await;
    assert_ne!(alice.cookie, bob.cookie);

    let alice_page = alice.get("/payment/mypage").await.text().await.unwrap();
    let bob_page = bob.get("/payment/mypage").await.text().await.unwrap();
    let stranger_page = Buyer {
        app: &app,
        cookie: None,
    }
    .get("/payment/mypage")
    .await
    .text()
    .await
    .unwrap();
    let forged = Buyer {
        app: &app,
        cookie: Some(format!("kassa_buyer={}", "0".repeat(100))),
    };

    assert!(alice_page.contains(&alice_order) && !alice_page.contains(&bob_order));
    assert!(bob_page.contains(&bob_order) && !bob_page.contains(&alice_order));
    assert!(!stranger_page.contains(&alice_order) && !stranger_page.contains(&bob_order));
    assert!(stranger_page.contains("id=\"no-payments\""));
    let forged_page = forged.get("/payment/mypage").await.text().await.unwrap();
    assert!(!forged_page.contains(&alice_order) && !forged_page.contains(&bob_order));

    let alice_list: Value = alice.get("/api/payment/list").await.json().await.unwrap();
    let items = alice_list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["order_id"], alice_order.as_str());
    let bob_payment = app.payments_of(&bob_order).await[0]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let peek = alice.get(&format!("/api/payments/{bob_payment}")).await;
    assert_eq!(peek.status(), StatusCode::NOT_FOUND);
    let own = bob.get(&format!("/api/payments/{bob_payment}")).await;
    assert_eq!(own.status(), StatusCode::OK);
    let anonymous = Buyer {
        app: &app,
        cookie: None,
    }
    .get(&format!("/api/payments/{bob_payment}"))
    .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_buyer_who_declines_in_the_pg_window_is_sent_back_to_pay_again() {
    let app = TestApp::spawn().await;
    let mut buyer = Buyer {
        app: &app,
        cookie: None,
    };
    let response = buyer
        .post_form("/payment/checkout", &[("product_id", "drip-bags")])
        .await;
    let order_id = response.headers()["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/payment/")
        .to_owned();
    let decision = buyer
        .post_form(
            "/sandbox-pg/portone/checkout",
            &[
                ("merchant_uid", order_id.as_str()),
                ("amount", "9900"),
                ("name", "item"),
                ("redirect_url", "/payment/portone/return"),
                ("decision", "decline"),
            ],
        )
        .await;
    let back = decision.headers()["location"].to_str().unwrap().to_owned();
    let returned = buyer.get(&back).await;
    assert_eq!(
        returned.headers()["location"].to_str().unwrap(),
        format!("/payment/{order_id}?failed=cancelled")
    );
    let page = buyer
        .get(&format!("/payment/{order_id}?failed=cancelled"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"pay-failed\"") && page.contains("id=\"pay\""));
    assert!(page.contains("결제를 취소하셨습니다"), "{page}");
    assert!(page.contains("id=\"back-to-shop\""), "a way back");
    assert!(app.payments_of(&order_id).await.is_empty());

    // A card the card company refuses says so, with a way to pay again.
    let declined = buyer
        .post_form(
            "/sandbox-pg/portone/checkout",
            &[
                ("merchant_uid", order_id.as_str()),
                ("amount", "9900"),
                ("name", "item"),
                ("redirect_url", "/payment/portone/return"),
                ("decision", "card_declined"),
            ],
        )
        .await;
    let back = declined.headers()["location"].to_str().unwrap().to_owned();
    let returned = buyer.get(&back).await;
    let order_page = returned.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(order_page, format!("/payment/{order_id}?failed=declined"));
    let page = buyer.get(&order_page).await.text().await.unwrap();
    assert!(page.contains("카드사에서 결제를 거절했습니다"), "{page}");
    assert!(page.contains("id=\"pay\""));
    // Whatever the address says, only kassa's own words are shown.
    let forged = buyer
        .get(&format!(
            "/payment/{order_id}?failed=%3Cb%3Ecall%20us%3C%2Fb%3E"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(!forged.contains("call us") && forged.contains("id=\"pay-failed\""));
    assert!(app.payments_of(&order_id).await.is_empty());
}

#[tokio::test]
async fn pages_speak_korean_unless_the_browser_prefers_english() {
    let app = TestApp::spawn().await;
    let korean = app
        .http
        .get(app.url("/payment"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let english = app
        .http
        .get(app.url("/payment"))
        .header("accept-language", "en-US,en;q=0.9")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(korean.contains("lang=\"ko\"") && korean.contains("구매하기"));
    assert!(english.contains("lang=\"en\"") && english.contains(">Buy · PortOne<"));
    let css = app
        .http
        .get(app.url("/static/kassa.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css");
}

#[tokio::test]
async fn toss_and_payple_say_whether_the_buyer_cancelled_or_the_card_was_refused() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (code, end) in [
        ("REJECT_CARD_COMPANY", "declined"),
        ("PAY_PROCESS_CANCELED", "cancelled"),
        ("PAY_PROCESS_ABORTED", "failed"),
    ] {
        let response = client
            .get(app.url(&format!(
                "/payment/toss/fail?code={code}&message=x&orderId=order-toss-fail"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["location"],
            format!("/payment/order-toss-fail?failed={end}")
        );
    }
    let response = client
        .post(app.url("/api/payment/payple/result"))
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("PCD_PAY_RST", "error"),
                ("PCD_PAY_OID", "order-payple-fail"),
                ("PCD_PAY_MSG", "카드사 승인 거절 (한도초과)"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["location"],
        "/payment/order-payple-fail?failed=declined"
    );
}

//! The pages in a real headless Chromium, driven over the `DevTools` protocol: a buyer buys,
//! pays in the sandbox window, watches the result page update itself, and finds the payment on
//! "my payments".
//!
//! Chromium is found at `KASSA_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
//! Without it these tests fail and say how to install it; `KASSA_SKIP_BROWSER_TESTS=1` skips
//! them on purpose.

use crate::support::TestApp;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Longest wait for the page to reach an expected state.
const WAIT: Duration = Duration::from_secs(15);

fn chromium_path() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("KASSA_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|candidate| candidate.is_file())
}

struct Browser {
    process: tokio::process::Child,
    _profile: tempfile::TempDir,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium, or answers `None` when the tests are skipped on purpose.
    async fn launch() -> Option<Browser> {
        if std::env::var("KASSA_SKIP_BROWSER_TESTS").is_ok_and(|value| value == "1") {
            eprintln!("browser tests skipped: KASSA_SKIP_BROWSER_TESTS=1");
            return None;
        }
        let binary = chromium_path()
            .expect("Chromium is needed for the page tests: `apt-get install chromium`, or set KASSA_CHROMIUM");
        let profile = tempfile::tempdir().unwrap();
        let process = tokio::process::Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=412,915",
                "--lang=ko-KR",
                "--accept-lang=ko-KR,ko",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("Chromium starts");
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(port) = text.lines().next().filter(|line| !line.is_empty())
            {
                break port.to_owned();
            }
            assert!(
                started.elapsed() < WAIT,
                "Chromium did not open its debugging port"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|target| target["type"] == "page")
            .expect("Chromium has a page");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut browser = Browser {
            process,
            _profile: profile,
            socket,
            next_id: 0,
        };
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        Some(browser)
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let reply = self.send(method, params).await;
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Sends one DevTools command and answers its whole reply, error or not.
    async fn send(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(message)).await.unwrap();
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("Chromium answers")
                .unwrap()
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).unwrap();
            if reply["id"] == id {
                return reply;
            }
        }
    }

    /// Evaluates `expression` in the page. While the page navigates, Chromium may answer that
    /// the context is gone; that reads as `null` (the page is not there yet), and callers poll.
    async fn eval(&mut self, expression: &str) -> Value {
        let reply = self
            .send(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        reply["result"]["result"]["value"].clone()
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// Waits until `expression` is true in the page, re-evaluating it as pages load.
    async fn wait_for(&mut self, expression: &str) {
        let started = Instant::now();
        loop {
            let value = self.eval(&format!("(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()")).await;
            if value == json!(true) {
                return;
            }
            if started.elapsed() > WAIT {
                let html = self.eval("document.documentElement.outerHTML").await;
                panic!(
                    "timed out waiting for {expression}; page is {}",
                    html.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&mut self, selector: &str) {
        self.wait_for(&format!("document.querySelector('{selector}')"))
            .await;
        self.eval(&format!("document.querySelector('{selector}').click()"))
            .await;
    }

    /// Saves a screenshot when `KASSA_SCREENSHOT_DIR` is set, for a person to look at.
    async fn screenshot(&mut self, name: &str) {
        let Ok(dir) = std::env::var("KASSA_SCREENSHOT_DIR") else {
            return;
        };
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = shot["data"].as_str().unwrap();
        let bytes = decode_base64(data);
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|byte| *byte != b'=') {
        let value = u32::try_from(
            ALPHABET
                .iter()
                .position(|candidate| *candidate == byte)
                .unwrap(),
        )
        .unwrap();
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn a_buyer_pays_in_the_browser_and_sees_the_result_and_their_payment() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;

    browser.goto(&app.url("/payment")).await;
    browser
        .wait_for("document.querySelector('#buy-beans-1kg')")
        .await;
    browser.screenshot("1-products").await;
    browser.click("#buy-beans-1kg").await;
    browser
        .wait_for("location.pathname.startsWith('/payment/ord_') && document.querySelector('#pay')")
        .await;
    let amount = browser
        .eval("document.querySelector('#order-amount').textContent")
        .await;
    assert_eq!(amount, "15,000원");
    browser.screenshot("2-order").await;
    browser.click("#pay").await;
    browser.wait_for("location.pathname === '/sandbox-pg/portone/checkout' && document.querySelector('#approve')").await;
    browser.screenshot("3-sandbox-window").await;
    browser.click("#approve").await;
    browser
        .wait_for("location.pathname.startsWith('/payment/result/')")
        .await;
    browser
        .wait_for("document.querySelector('#result-code').textContent === 'PAID'")
        .await;
    browser.screenshot("4-result").await;
    let text = browser
        .eval("document.querySelector('#result-text').textContent")
        .await;
    assert_eq!(text, "결제가 완료되었습니다.");
    let order_id = browser
        .eval("document.querySelector('#result').dataset.order")
        .await;
    let order_id = order_id.as_str().unwrap().to_owned();

    let payments = app.payments_of(&order_id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "PAID");

    browser.goto(&app.url("/payment/mypage")).await;
    browser
        .wait_for(&format!(
            "document.querySelector('.payment[data-order=\"{order_id}\"][data-status=\"PAID\"]')"
        ))
        .await;
    let name = browser
        .eval(&format!(
            "document.querySelector('.payment[data-order=\"{order_id}\"] .name').textContent"
        ))
        .await;
    assert_eq!(name, json!("원두 1kg"), "my payments names the product");
    browser.screenshot("5-mypage").await;
}

#[tokio::test]
async fn the_result_page_updates_itself_when_the_payment_lands() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;
    app.create_order("order-live-1", 15_000).await;
    let imp_uid = app.pg_payment("order-live-1", 15_000).await;
    // The first verification the page asks for finds the PG down, as if the return had failed.
    app.fault("portone.payment", "status500", 1).await;

    browser
        .goto(&app.url(&format!("/payment/result/order-live-1?imp_uid={imp_uid}")))
        .await;

    // The page asks kassa to verify again while the outcome is pending, and the long-poll
    // delivers PAID without a reload.
    browser
        .wait_for("document.querySelector('#result-code').textContent === 'PAID'")
        .await;
    assert_eq!(app.payments_of("order-live-1").await.len(), 1);
    let navigations = browser
        .eval("performance.getEntriesByType('navigation').length")
        .await;
    assert_eq!(navigations, 1, "the page was not reloaded");
}

#[tokio::test]
async fn a_tampered_payment_shows_its_refund_in_the_browser() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;
    app.create_order("order-tamper-9", 15_000).await;

    // The buyer edits the amount on its way to the PG window.
    let checkout = "/sandbox-pg/portone/checkout?merchant_uid=order-tamper-9&amount=100&name=x&redirect_url=/payment/portone/return".to_string();
    browser.goto(&app.url(&checkout)).await;
    browser.click("#approve").await;

    browser.wait_for("document.querySelector('#result-code') && document.querySelector('#result-code').textContent === 'ROLLBACK_REFUNDED'").await;
    let (_, order) = app.admin_get("/api/orders/order-tamper-9").await;
    assert_eq!(order["status"], "READY");
}

#[tokio::test]
async fn a_buyer_pays_with_toss_and_cancels_from_my_payments() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;

    browser.goto(&app.url("/payment")).await;
    browser.click("#buy-green-tea-toss").await;
    browser
        .wait_for("location.pathname.startsWith('/payment/ord_') && document.querySelector('#pay')")
        .await;
    browser.click("#pay").await;
    browser.wait_for("location.pathname === '/sandbox-pg/toss/checkout' && document.querySelector('#approve')").await;
    browser.click("#approve").await;
    browser.wait_for("document.querySelector('#result-code') && document.querySelector('#result-code').textContent === 'PAID'").await;
    let order_id = browser
        .eval("document.querySelector('#result').dataset.order")
        .await;
    let order_id = order_id.as_str().unwrap().to_owned();
    let payments = app.payments_of(&order_id).await;
    assert_eq!(payments[0]["provider"], "toss");

    browser.goto(&app.url("/payment/mypage")).await;
    browser
        .click(&format!("button.cancel[data-order=\"{order_id}\"]"))
        .await;
    browser
        .wait_for(&format!("document.querySelector('.payment[data-order=\"{order_id}\"][data-status=\"CANCELLED\"]')"))
        .await;
    browser.screenshot("6-mypage-cancelled").await;
    let key = payments[0]["pg_tid"].as_str().unwrap();
    assert_eq!(app.toss_state(key).await["refundsExecuted"], 1);
    let still_cancellable = browser
        .eval("document.querySelectorAll('button.cancel').length")
        .await;
    assert_eq!(still_cancellable, 0);
}

#[tokio::test]
async fn a_buyer_pays_with_payple_and_the_posted_result_is_verified() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;

    browser.goto(&app.url("/payment")).await;
    browser.click("#buy-drip-bags-payple").await;
    browser
        .wait_for("location.pathname.startsWith('/payment/ord_') && document.querySelector('#pay')")
        .await;
    browser.click("#pay").await;
    browser.wait_for("location.pathname === '/sandbox-pg/payple/checkout' && document.querySelector('#approve')").await;
    browser.click("#approve").await;

    browser.wait_for("document.querySelector('#result-code') && document.querySelector('#result-code').textContent === 'PAID'").await;
    let order_id = browser
        .eval("document.querySelector('#result').dataset.order")
        .await;
    let payments = app.payments_of(order_id.as_str().unwrap()).await;
    assert_eq!(
        (payments.len(), payments[0]["provider"].as_str()),
        (1, Some("payple"))
    );
}

#[tokio::test]
async fn a_payple_result_page_asks_again_when_payple_was_down() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (status, _) = app
        .admin_post("/api/orders", &json!({ "order_id": "order-ppl-live", "amount": 9_900, "name": "드립백", "provider": "payple" }))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let paid: Value = app
        .http
        .post(app.url("/sandbox-pg/_control/payple/payments"))
        .json(&json!({ "order_id": "order-ppl-live", "amount": 9_900 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.fault("payple.payment", "status500", 1).await;

    let reference = paid["pg_tid"].as_str().unwrap();
    browser
        .goto(&app.url(&format!(
            "/payment/result/order-ppl-live?payple_ref={reference}"
        )))
        .await;

    browser
        .wait_for("document.querySelector('#result-code').textContent === 'PAID'")
        .await;
    assert_eq!(app.payments_of("order-ppl-live").await.len(), 1);
}

impl Browser {
    /// Signs in on `/admin` with the admin token and waits for the overview.
    async fn sign_in_as_admin(&mut self, app: &TestApp) {
        self.goto(&app.url("/admin")).await;
        self.wait_for("document.querySelector('#token')").await;
        self.eval(&format!(
            "document.querySelector('#token').value = '{}'",
            crate::support::ADMIN_TOKEN
        ))
        .await;
        self.click("#sign-in").await;
        self.wait_for("document.querySelector('#dead-letter-count')")
            .await;
    }
}

#[tokio::test]
async fn the_admin_signs_in_finds_a_payment_and_cancels_part_of_it_on_a_phone() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (payment_id, imp_uid) = app.paid("order-admin-browser", 30_000).await;
    // A phone-sized window.
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
        )
        .await;
    browser.sign_in_as_admin(&app).await;
    let paid_today = browser
        .eval("document.querySelector('.day .paid').textContent")
        .await;
    assert_eq!(paid_today, json!("30,000원"));
    let wide = "document.documentElement.scrollWidth > window.innerWidth";
    browser.wait_for("document.readyState === 'complete'").await;
    assert_eq!(
        browser.eval(wide).await,
        json!(false),
        "the overview scrolls sideways"
    );
    browser.screenshot("7-admin-overview").await;

    browser
        .click(".admin-nav a[href=\"/admin/payments\"]")
        .await;
    browser.wait_for("document.querySelector('#q')").await;
    browser
        .eval("document.querySelector('#q').value = 'order-admin-browser'")
        .await;
    browser.click("#search").await;
    // The unfiltered list shows the payment too: wait for the search's own page.
    browser
        .wait_for("location.search.includes('q=order-admin-browser') && document.readyState === 'complete' && document.querySelector('.payment[data-order=\"order-admin-browser\"] a')")
        .await;
    browser.wait_for("document.readyState === 'complete'").await;
    assert_eq!(
        browser.eval(wide).await,
        json!(false),
        "the list scrolls sideways"
    );
    browser
        .click(".payment[data-order=\"order-admin-browser\"] a")
        .await;
    browser
        .wait_for("document.querySelector('#cancel-form')")
        .await;
    browser
        .eval("document.querySelector('#amount').value = '12000'")
        .await;
    browser.click("#cancel").await;
    browser
        .wait_for("document.querySelector('#notice') && document.querySelector('#payment').dataset.status === 'PARTIALLY_CANCELLED'")
        .await;
    let balance = browser
        .eval("document.querySelector('#balance').textContent")
        .await;
    assert_eq!(balance, json!("18,000원"));
    browser.wait_for("document.readyState === 'complete'").await;
    assert_eq!(
        browser.eval(wide).await,
        json!(false),
        "the payment scrolls sideways"
    );
    assert_eq!(app.pg_state(&imp_uid).await["cancel_amount"], 12_000);
    assert_eq!(app.payment(&payment_id).await["cancelled_amount"], 12_000);

    browser.click("#sign-out").await;
    browser.wait_for("document.querySelector('#token')").await;
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one merchant's session, step by step"
)]
async fn the_admin_re_drives_resolves_syncs_and_moves_a_partner_settlement_in_the_browser() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;
    // A PortOne cancel the PG refused, a Payple refund whose answer was lost, a partner's sale.
    let (dead_payment, imp_uid) = app.paid("order-browser-dead", 15_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    let (_, body) = app
        .cancel(
            &dead_payment,
            "browser-dead-key",
            &json!({ "reason": "refund" }),
        )
        .await;
    assert_eq!(body["status"], "CANCEL_FAILED");
    let unknown_payment = crate::payple::payple_payment(&app, "order-browser-pp", 20_000).await;
    app.fault("payple.cancel", "lost_response", 1).await;
    let (_, body) = app
        .cancel(
            &unknown_payment,
            "browser-pp-key",
            &json!({ "amount": 5_000, "reason": "partial" }),
        )
        .await;
    assert_eq!(body["status"], "CANCEL_UNKNOWN");
    let order = json!({ "order_id": "order-browser-partner", "amount": 10_000, "name": "상품", "partner_id": "p-coffee" });
    assert_eq!(
        app.admin_post("/api/orders", &order).await.0,
        reqwest::StatusCode::CREATED
    );
    let partner_uid = app.pg_payment("order-browser-partner", 10_000).await;
    assert_eq!(
        app.complete(&partner_uid, "order-browser-partner").await.0,
        reqwest::StatusCode::OK
    );

    browser.sign_in_as_admin(&app).await;
    assert_eq!(
        browser
            .eval("document.querySelector('#dead-letter-count').textContent")
            .await,
        json!("1")
    );
    assert_eq!(
        browser
            .eval("document.querySelector('#unknown-count').textContent")
            .await,
        json!("1")
    );

    // Re-drive the refused cancel.
    browser.goto(&app.url("/admin/dead-letters")).await;
    let dead = format!(".letter[data-payment=\"{dead_payment}\"]");
    browser
        .wait_for(&format!("document.querySelector('{dead}')"))
        .await;
    browser.screenshot("8-admin-dead-letters").await;
    browser.click(&format!("{dead} form.redrive button")).await;
    browser.wait_for("document.querySelector('#notice')").await;
    app.advance_ms(61_000);
    app.run_jobs().await;
    assert_eq!(app.payment(&dead_payment).await["status"], "CANCELLED");
    assert_eq!(app.pg_state(&imp_uid).await["refunds_executed"], 1);

    // Resolve the unknown Payple refund: the person saw it in Payple's console.
    let unknown = format!(".letter[data-payment=\"{unknown_payment}\"]");
    browser
        .wait_for(&format!(
            "document.querySelector('{unknown} input[name=console_checked]')"
        ))
        .await;
    browser
        .eval(&format!(
            "document.querySelector('{unknown} form.resolve input[value=refunded]').checked = true"
        ))
        .await;
    browser
        .eval(&format!("document.querySelector('{unknown} form.resolve input[name=note]').value = '콘솔에서 환불 확인'"))
        .await;
    browser
        .click(&format!("{unknown} form.resolve button"))
        .await;
    browser
        .wait_for("document.querySelector('#no-letters')")
        .await;
    let payment = app.payment(&unknown_payment).await;
    assert_eq!(payment["status"], "PARTIALLY_CANCELLED", "{payment}");
    assert_eq!(payment["cancelled_amount"], 5_000);
    assert_eq!(app.pg_calls("payple.cancel").await, 1, "never sent again");

    // Run the settlement sync of one past day.
    browser.goto(&app.url("/admin/settlement-sync")).await;
    browser
        .wait_for("document.querySelector('#sync-form')")
        .await;
    browser
        .eval("document.querySelector('#sync-provider').value = 'toss'; document.querySelector('#sync-from').value = '2026-11-22'; document.querySelector('#sync-to').value = '2026-11-22'")
        .await;
    browser.click("#sync-run").await;
    browser
        .wait_for("document.querySelector('.run[data-provider=\"toss\"][data-date=\"2026-11-22\"][data-complete=\"true\"]')")
        .await;

    // Compute the partner settlement of today and move it forward.
    browser
        .goto(&app.url("/admin/partner-settlements?date=2026-11-23"))
        .await;
    browser.click("#partners-run").await;
    browser
        .wait_for("document.querySelector('.partner[data-partner=\"p-coffee\"][data-status=\"REQUESTED\"]')")
        .await;
    browser
        .click(".partner[data-partner=\"p-coffee\"] button.move")
        .await;
    browser
        .wait_for("document.querySelector('.partner[data-partner=\"p-coffee\"][data-status=\"PROCESSING\"]')")
        .await;
    let (_, rows) = app
        .admin_get("/api/admin/partner-settlements?date=2026-11-23")
        .await;
    let row = rows["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["partner_id"] == "p-coffee")
        .cloned()
        .unwrap();
    assert_eq!(row["status"], "PROCESSING");
    assert_eq!(row["gross"], 10_000);
}

#[tokio::test]
async fn a_declined_card_shows_why_and_the_buyer_pays_again() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let app = TestApp::spawn().await;
    browser.goto(&app.url("/payment")).await;
    browser.click("#buy-beans-1kg").await;
    browser
        .wait_for("location.pathname.startsWith('/payment/ord_') && document.querySelector('#pay')")
        .await;
    browser.click("#pay").await;
    browser
        .wait_for("document.querySelector('#card-declined')")
        .await;
    browser.click("#card-declined").await;
    browser
        .wait_for("document.querySelector('#pay-failed')")
        .await;
    let message = browser
        .eval("document.querySelector('#pay-failed').textContent")
        .await;
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("카드사에서 결제를 거절했습니다"),
        "{message}"
    );
    assert_eq!(
        browser
            .eval("!!document.querySelector('#back-to-shop')")
            .await,
        json!(true)
    );
    // The same order can be paid now.
    browser.click("#pay").await;
    browser.wait_for("document.querySelector('#approve')").await;
    browser.click("#approve").await;
    browser
        .wait_for("document.querySelector('#result-code') && document.querySelector('#result-code').textContent === 'PAID'")
        .await;
}

//! `pages`: a buyer's "my payments" and the admin overview.

use super::{AMOUNT, Server, TOKEN, failed, figure, stop};
use crate::bench::Options;
use crate::bench::driver::drive;
use serde_json::{Value, json};
use std::sync::Arc;

/// Payments of the one buyer the pages scenario reads.
const PAGES_BUYER_PAYMENTS: usize = 50;

/// `GET /payment/mypage` of a buyer with 50 payments, and the admin overview, half each.
#[expect(
    clippy::too_many_lines,
    reason = "the setup, the drive and the checks of one scenario"
)]
pub async fn pages(options: &Options) -> Result<Value, String> {
    let (n, concurrency) = (options.n(4_000, 100), options.concurrency(16));
    let server = Arc::new(Server::start(concurrency).await?);
    // One buyer pays 50 times through the checkout page (their cookie names them).
    let mut buyer_cookie: Option<String> = None;
    for i in 0..PAGES_BUYER_PAYMENTS {
        let mut request = server
            .http
            .post(server.url("/payment/checkout"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("product_id=beans-1kg");
        if let Some(cookie) = &buyer_cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.map_err(|error| error.to_string())?;
        if let Some(set) = response.headers().get("set-cookie") {
            let value = set.to_str().map_err(|error| error.to_string())?;
            buyer_cookie = value.split(';').next().map(str::to_owned);
        }
        let order_id = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .and_then(|path| path.strip_prefix("/payment/"))
            .map(str::to_owned)
            .ok_or_else(|| format!("checkout {i} sent the buyer nowhere"))?;
        let price = server
            .kassa
            .config
            .product("beans-1kg")
            .map_or(AMOUNT, |product| product.price.won());
        let (status, side) = server
            .post(
                "/sandbox-pg/_control/portone/payments",
                &json!({ "merchant_uid": order_id, "amount": price }),
                false,
            )
            .await?;
        if status != 201 {
            return Err(format!("the sandbox made no payment: {status}"));
        }
        let body = json!({ "imp_uid": side["imp_uid"], "merchant_uid": order_id });
        let (status, _) = server.post("/api/payment/portone", &body, false).await?;
        if status != 200 {
            return Err(format!("payment {i} was not completed: {status}"));
        }
    }
    let buyer_cookie = buyer_cookie.ok_or("the checkout gave no buyer cookie")?;
    let login = server
        .http
        .post(server.url("/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let admin_cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::to_owned)
        .ok_or("the admin sign-in gave no session")?;
    let cookies = Arc::new((buyer_cookie, admin_cookie));
    let rows_max = crate::http::pages::MYPAGE_ROWS_MAX;
    let driven = drive("pages", n, concurrency, {
        let (server, cookies) = (Arc::clone(&server), Arc::clone(&cookies));
        move |i| {
            let (server, cookies) = (Arc::clone(&server), Arc::clone(&cookies));
            async move {
                let (path, cookie, marker) = if i % 2 == 0 {
                    ("/payment/mypage", &cookies.0, "class=\"payment\"")
                } else {
                    ("/admin", &cookies.1, "id=\"dead-letter-count\"")
                };
                let response = server
                    .http
                    .get(server.url(path))
                    .header("cookie", cookie)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status().as_u16();
                let html = response.text().await.map_err(|error| error.to_string())?;
                let expected = if i % 2 == 0 { rows_max } else { 1 };
                let found = html.matches(marker).count();
                if status == 200 && found == expected {
                    Ok(())
                } else {
                    Err(format!("{path}: {status}, {found} of {expected} marks"))
                }
            }
        }
    })
    .await;
    let verified = failed(&driven).is_ok();
    let out = figure(
        "pages",
        n,
        concurrency,
        verified,
        &json!({
            "requests_per_s": driven.rate(n),
            "p50_ms": driven.latencies.ms(0.5),
            "p99_ms": driven.latencies.ms(0.99),
        }),
    );
    stop(server).await;
    Ok(out)
}

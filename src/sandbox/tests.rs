//! The sandbox held to the PGs' published behaviours (PG-CONTRACTS §6), through its own router,
//! as kassa reaches it: over HTTP requests, with the control API to set up and look.

use super::{Sandbox, router};
use crate::clock::{ManualClock, SeededEntropy};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Noon in Seoul on 2026-11-23.
fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00+09:00")
        .unwrap()
        .with_timezone(&Utc)
}

#[derive(Clone)]
struct Pg {
    router: Router,
    clock: Arc<ManualClock>,
}

fn pg() -> Pg {
    let clock = Arc::new(ManualClock::new(start()));
    let sandbox = Sandbox::new(
        clock.clone(),
        Arc::new(SeededEntropy::new(7)),
        CancellationToken::new(),
        "",
    );
    Pg {
        router: router(sandbox),
        clock,
    }
}

fn toss_auth() -> String {
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:", super::SANDBOX_TOSS_SECRET_KEY));
    format!("Basic {encoded}")
}

impl Pg {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn fault(&self, fault: &Value) -> StatusCode {
        self.call("POST", "/_control/faults", &[], Some(fault))
            .await
            .0
    }

    /// A Toss payment in `DONE`; answers its payment key.
    async fn toss_done(&self, order_id: &str, amount: i64) -> String {
        let body = json!({ "orderId": order_id, "amount": amount, "status": "DONE" });
        let (status, payment) = self
            .call("POST", "/_control/toss/payments", &[], Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        payment["paymentKey"].as_str().unwrap().to_owned()
    }

    async fn toss_cancel(
        &self,
        key: &str,
        idempotency: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let auth = toss_auth();
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(idempotency) = idempotency {
            headers.push(("idempotency-key", idempotency));
        }
        self.call(
            "POST",
            &format!("/toss/v1/payments/{key}/cancel"),
            &headers,
            Some(&body),
        )
        .await
    }

    async fn toss_state(&self, key: &str) -> Value {
        self.call("GET", &format!("/_control/toss/payments/{key}"), &[], None)
            .await
            .1
    }

    /// Payple's partner authentication for `flag`; answers the whole auth answer.
    async fn payple_auth(&self, flag: &str) -> Value {
        let body = json!({
            "cst_id": super::SANDBOX_CST_ID,
            "custKey": super::SANDBOX_CUST_KEY,
            flag: "Y",
        });
        let (status, answer) = self
            .call(
                "POST",
                "/payple/php/auth.php",
                &[("referer", "https://shop.example")],
                Some(&body),
            )
            .await;
        assert_eq!(
            (status, &answer["result"]),
            (StatusCode::OK, &json!("success"))
        );
        answer
    }

    async fn payple_paid(&self, order_id: &str, amount: i64) -> Value {
        let body = json!({ "order_id": order_id, "amount": amount });
        let (status, paid) = self
            .call("POST", "/_control/payple/payments", &[], Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        paid
    }

    /// A Payple refund of `amount` with the credentials of `auth`.
    async fn payple_refund(&self, auth: &Value, paid: &Value, amount: i64) -> Value {
        let body = json!({
            "PCD_CST_ID": auth["cst_id"],
            "PCD_CUST_KEY": auth["custKey"],
            "PCD_AUTH_KEY": auth["AuthKey"],
            "PCD_REFUND_KEY": super::SANDBOX_REFUND_KEY,
            "PCD_PAYCANCEL_FLAG": "Y",
            "PCD_PAY_OID": paid["PCD_PAY_OID"],
            "PCD_PAY_DATE": paid["PCD_PAY_TIME"].as_str().unwrap()[..8],
            "PCD_REFUND_TOTAL": amount.to_string(),
        });
        self.call("POST", "/payple/php/PayCancelAct.php", &[], Some(&body))
            .await
            .1
    }
}

/// Waits out Toss's consecutive-cancel gap, which is real time.
async fn past_consecutive_gap() {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

#[tokio::test]
async fn partial_cancels_adding_up_to_the_whole_stay_partial_and_the_next_is_not_cancelable() {
    let pg = pg();
    let key = pg.toss_done("order-1", 10_000).await;

    let (status, first) = pg
        .toss_cancel(
            &key,
            Some("k1"),
            json!({ "cancelReason": "r", "cancelAmount": 4_000 }),
        )
        .await;
    assert_eq!(
        (status, &first["status"]),
        (StatusCode::OK, &json!("PARTIAL_CANCELED"))
    );
    past_consecutive_gap().await;
    let (status, rest) = pg
        .toss_cancel(
            &key,
            Some("k2"),
            json!({ "cancelReason": "r", "cancelAmount": 6_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(
        (&rest["status"], &rest["balanceAmount"]),
        (&json!("PARTIAL_CANCELED"), &json!(0))
    );
    assert_eq!(rest["cancels"].as_array().unwrap().len(), 2);
    past_consecutive_gap().await;

    let (status, again) = pg
        .toss_cancel(&key, Some("k3"), json!({ "cancelReason": "r" }))
        .await;

    assert_eq!(
        (status, &again["code"]),
        (StatusCode::FORBIDDEN, &json!("NOT_CANCELABLE_AMOUNT"))
    );
    assert_eq!(pg.toss_state(&key).await["refundsExecuted"], 2);
}

#[tokio::test]
async fn only_a_full_cancel_makes_a_payment_canceled_and_then_it_is_already_canceled() {
    let pg = pg();
    let whole = pg.toss_done("order-2", 10_000).await;
    let (_, body) = pg
        .toss_cancel(
            &whole,
            None,
            json!({ "cancelReason": "r", "cancelAmount": 10_000 }),
        )
        .await;
    assert_eq!(
        (&body["status"], &body["balanceAmount"]),
        (&json!("CANCELED"), &json!(0))
    );
    past_consecutive_gap().await;
    let (status, again) = pg
        .toss_cancel(&whole, None, json!({ "cancelReason": "r" }))
        .await;
    assert_eq!(
        (status, &again["code"]),
        (StatusCode::BAD_REQUEST, &json!("ALREADY_CANCELED_PAYMENT"))
    );

    // No amount cancels the rest of a partly cancelled payment, and that is a full cancel.
    let rest = pg.toss_done("order-3", 10_000).await;
    pg.toss_cancel(
        &rest,
        None,
        json!({ "cancelReason": "r", "cancelAmount": 1_000 }),
    )
    .await;
    past_consecutive_gap().await;
    let (_, body) = pg
        .toss_cancel(&rest, None, json!({ "cancelReason": "r" }))
        .await;
    assert_eq!(
        (&body["status"], &body["balanceAmount"]),
        (&json!("CANCELED"), &json!(0))
    );
}

#[tokio::test]
async fn a_refundable_amount_that_differs_is_refused_and_changes_nothing() {
    let pg = pg();
    let key = pg.toss_done("order-4", 10_000).await;

    let (status, body) = pg
        .toss_cancel(
            &key,
            Some("guard"),
            json!({ "cancelReason": "r", "cancelAmount": 1_000, "refundableAmount": 9_000 }),
        )
        .await;

    assert_eq!(
        (status, &body["code"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("NOT_MATCHES_REFUNDABLE_AMOUNT")
        )
    );
    let state = pg.toss_state(&key).await;
    assert_eq!(
        (&state["balanceAmount"], &state["refundsExecuted"]),
        (&json!(10_000), &json!(0))
    );
    // The refusal is kept under its key; a new key with the right balance goes through.
    past_consecutive_gap().await;
    let (status, replay) = pg
        .toss_cancel(
            &key,
            Some("guard"),
            json!({ "cancelReason": "r", "cancelAmount": 1_000, "refundableAmount": 10_000 }),
        )
        .await;
    assert_eq!((status, &replay), (StatusCode::BAD_REQUEST, &body));
    let (status, done) = pg
        .toss_cancel(
            &key,
            Some("guard-2"),
            json!({ "cancelReason": "r", "cancelAmount": 1_000, "refundableAmount": 10_000 }),
        )
        .await;
    assert_eq!(
        (status, &done["balanceAmount"]),
        (StatusCode::OK, &json!(9_000))
    );
}

#[tokio::test]
async fn four_hundreds_are_kept_under_the_key_and_five_hundreds_are_not() {
    let pg = pg();
    let key = pg.toss_done("order-5", 10_000).await;
    let body = json!({ "cancelReason": "r", "cancelAmount": 1_000 });

    // An injected 500 is not kept: the retry with the same key is carried out.
    assert_eq!(
        pg.fault(&json!({ "endpoint": "toss.cancel", "mode": "status500" }))
            .await,
        StatusCode::OK
    );
    let (status, _) = pg.toss_cancel(&key, Some("a"), body.clone()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, done) = pg.toss_cancel(&key, Some("a"), body.clone()).await;
    assert_eq!(
        (status, &done["balanceAmount"]),
        (StatusCode::OK, &json!(9_000))
    );

    // An injected 403 is kept like Toss's own: the same key gets it replayed, and nothing is done.
    let refusal = json!({ "endpoint": "toss.cancel", "mode": "error", "status": 403, "code": "FORBIDDEN_CONSECUTIVE_REQUEST", "count": 1 });
    assert_eq!(pg.fault(&refusal).await, StatusCode::OK);
    past_consecutive_gap().await;
    let (status, refused) = pg.toss_cancel(&key, Some("b"), body.clone()).await;
    assert_eq!(
        (status, &refused["code"]),
        (
            StatusCode::FORBIDDEN,
            &json!("FORBIDDEN_CONSECUTIVE_REQUEST")
        )
    );
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty())
    );
    let (status, replayed) = pg.toss_cancel(&key, Some("b"), body.clone()).await;
    assert_eq!((status, &replayed), (StatusCode::FORBIDDEN, &refused));

    // An injected 5xx error is not kept.
    let failure = json!({ "endpoint": "toss.cancel", "mode": "error", "status": 500, "code": "FAILED_REFUND_PROCESS" });
    assert_eq!(pg.fault(&failure).await, StatusCode::OK);
    let (status, failed) = pg.toss_cancel(&key, Some("c"), body.clone()).await;
    assert_eq!(
        (status, &failed["code"]),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!("FAILED_REFUND_PROCESS")
        )
    );
    let (status, done) = pg.toss_cancel(&key, Some("c"), body.clone()).await;
    assert_eq!(
        (status, &done["balanceAmount"]),
        (StatusCode::OK, &json!(8_000))
    );

    let state = pg.toss_state(&key).await;
    assert_eq!(state["refundsExecuted"], 2);
    assert_eq!(state["cancelKeys"], json!(["a", "a", "b", "b", "c", "c"]));
}

#[tokio::test]
async fn a_repeat_while_the_first_is_held_is_processing_and_not_kept() {
    let pg = pg();
    let key = pg.toss_done("order-6", 10_000).await;
    let lost = json!({ "endpoint": "toss.cancel", "mode": "lost_response", "hold_ms": 1_500 });
    assert_eq!(pg.fault(&lost).await, StatusCode::OK);
    let body = json!({ "cancelReason": "r", "cancelAmount": 1_000 });
    let first = {
        let (pg, key, body) = (pg.clone(), key.clone(), body.clone());
        tokio::spawn(async move { pg.toss_cancel(&key, Some("held"), body).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, busy) = pg.toss_cancel(&key, Some("held"), body.clone()).await;

    assert_eq!(
        (status, &busy["code"]),
        (
            StatusCode::CONFLICT,
            &json!("IDEMPOTENT_REQUEST_PROCESSING")
        )
    );
    let (status, original) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, replay) = pg.toss_cancel(&key, Some("held"), body).await;
    assert_eq!((status, &replay), (StatusCode::OK, &original));
    assert_eq!(pg.toss_state(&key).await["refundsExecuted"], 1);
}

#[tokio::test]
async fn two_cancels_within_a_second_refuse_the_second_and_keep_the_refusal() {
    let pg = pg();
    let key = pg.toss_done("order-7", 10_000).await;
    let body = json!({ "cancelReason": "r", "cancelAmount": 1_000 });
    let (status, _) = pg.toss_cancel(&key, Some("one"), body.clone()).await;
    assert_eq!(status, StatusCode::OK);

    let (status, second) = pg.toss_cancel(&key, Some("two"), body.clone()).await;

    assert_eq!(
        (status, &second["code"]),
        (
            StatusCode::FORBIDDEN,
            &json!("FORBIDDEN_CONSECUTIVE_REQUEST")
        )
    );
    past_consecutive_gap().await;
    let (status, replay) = pg.toss_cancel(&key, Some("two"), body.clone()).await;
    assert_eq!(
        (status, &replay),
        (StatusCode::FORBIDDEN, &second),
        "a 4xx is kept"
    );
    let (status, _) = pg.toss_cancel(&key, Some("three"), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pg.toss_state(&key).await["refundsExecuted"], 2);
}

#[tokio::test]
async fn an_error_fault_is_checked_and_answers_in_each_pgs_own_shape() {
    let pg = pg();
    for bad in [
        json!({ "endpoint": "toss.cancel", "mode": "error", "status": 399 }),
        json!({ "endpoint": "toss.cancel", "mode": "error", "status": 600 }),
        json!({ "endpoint": "toss.cancel", "mode": "error", "code": "X".repeat(65) }),
        json!({ "endpoint": "toss.cancel", "mode": "error", "code": "한글" }),
        json!({ "endpoint": "toss.cancel", "mode": "status500", "status": 500 }),
        json!({ "endpoint": "toss.cancel", "mode": "taxsave_fail" }),
    ] {
        assert_eq!(pg.fault(&bad).await, StatusCode::BAD_REQUEST, "{bad}");
    }

    // PortOne: its envelope over HTTP 200.
    assert_eq!(
        pg.fault(&json!({ "endpoint": "portone.token", "mode": "error", "code": "NOPE" }))
            .await,
        StatusCode::OK
    );
    let token =
        json!({ "imp_key": super::SANDBOX_IMP_KEY, "imp_secret": super::SANDBOX_IMP_SECRET });
    let (status, body) = pg
        .call("POST", "/portone/users/getToken", &[], Some(&token))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({ "code": 1, "message": "NOPE", "response": null })
        )
    );

    // Toss: 400 and INVALID_REQUEST by default.
    assert_eq!(
        pg.fault(&json!({ "endpoint": "toss.payment", "mode": "error" }))
            .await,
        StatusCode::OK
    );
    let auth = toss_auth();
    let (status, body) = pg
        .call(
            "GET",
            "/toss/v1/payments/none",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_REQUEST"))
    );

    // Payple: `PCD_*` fields.
    assert_eq!(
        pg.fault(&json!({ "endpoint": "payple.payment", "mode": "error", "code": "PAYN0500" }))
            .await,
        StatusCode::OK
    );
    let (status, body) = pg
        .call("POST", "/payple/php/PayChkAct.php", &[], Some(&json!({})))
        .await;
    assert_eq!(
        (status, &body["PCD_PAY_RST"], &body["PCD_PAY_CODE"]),
        (StatusCode::OK, &json!("error"), &json!("PAYN0500"))
    );
}

#[tokio::test]
async fn payple_follow_ups_must_echo_the_values_issued_with_their_authkey() {
    let pg = pg();
    let paid = pg.payple_paid("order-pp-1", 5_000).await;
    let check = pg.payple_auth("PCD_PAYCHK_FLAG").await;
    let other = pg.payple_auth("PCD_PAYCHK_FLAG").await;
    assert_ne!(check["cst_id"], json!(super::SANDBOX_CST_ID));
    let inquiry = |cst_id: &Value, cust_key: &Value| {
        json!({
            "PCD_CST_ID": cst_id, "PCD_CUST_KEY": cust_key, "PCD_AUTH_KEY": check["AuthKey"],
            "PCD_PAYCHK_FLAG": "Y", "PCD_PAY_TYPE": "card", "PCD_PAY_OID": "order-pp-1",
            "PCD_PAY_DATE": paid["PCD_PAY_TIME"].as_str().unwrap()[..8],
        })
    };
    let pg = &pg;
    let ask = |body: Value| async move {
        pg.call("POST", "/payple/php/PayChkAct.php", &[], Some(&body))
            .await
            .1
    };

    let configured = ask(inquiry(
        &json!(super::SANDBOX_CST_ID),
        &json!(super::SANDBOX_CUST_KEY),
    ))
    .await;
    let another = ask(inquiry(&other["cst_id"], &other["custKey"])).await;
    let echoed = ask(inquiry(&check["cst_id"], &check["custKey"])).await;

    assert_eq!(configured["PCD_PAY_CODE"], "AUTH0003");
    assert_eq!(another["PCD_PAY_CODE"], "AUTH0003");
    assert_eq!(echoed["PCD_PAY_RST"], "success", "{echoed}");
    assert!(
        echoed.get("PCD_REFUND_TOTAL").is_none(),
        "the inquiry says nothing of refunds"
    );
}

#[tokio::test]
async fn a_payple_refund_can_succeed_while_its_cash_receipt_cancellation_fails() {
    let pg = pg();
    let paid = pg.payple_paid("order-pp-2", 5_000).await;
    let auth = pg.payple_auth("PCD_PAYCANCEL_FLAG").await;
    let normal = pg.payple_refund(&auth, &paid, 1_000).await;
    assert_eq!(normal["PCD_PAY_CODE"], "PAYC0000");
    assert!(normal.get("PCD_TAXSAVE_RST").is_none());
    assert_eq!(
        pg.fault(&json!({ "endpoint": "payple.cancel", "mode": "taxsave_fail" }))
            .await,
        StatusCode::OK
    );
    pg.clock.advance(chrono::Duration::minutes(5));

    let failed_receipt = pg.payple_refund(&auth, &paid, 2_000).await;

    assert_eq!(
        (
            &failed_receipt["PCD_PAY_RST"],
            &failed_receipt["PCD_PAY_CODE"],
            &failed_receipt["PCD_TAXSAVE_RST"]
        ),
        (&json!("success"), &json!("PAYC0000"), &json!("N"))
    );
    let (_, state) = pg
        .call("GET", "/_control/payple/payments/order-pp-2", &[], None)
        .await;
    assert_eq!(
        (&state["refunds_executed"], &state["refunded"]),
        (&json!(2), &json!(3_000))
    );
    assert_eq!(state["refunds"][1]["amount"], 2_000);
    assert_eq!(state["refunds"][1]["at"], "2026-11-23T12:05:00+09:00");
}

#[tokio::test]
async fn settlement_lines_from_payments_carry_a_cancel_line_per_refund_of_the_day() {
    let pg = pg();
    // Toss: one payment refunded in part.
    let key = pg.toss_done("order-st-1", 10_000).await;
    pg.clock.advance(chrono::Duration::hours(1));
    pg.toss_cancel(
        &key,
        None,
        json!({ "cancelReason": "r", "cancelAmount": 3_000 }),
    )
    .await;
    let load = json!({ "provider": "toss", "date": "2026-11-23", "from_payments": true });
    // Loaded twice: the day as the PG has it, each payment and refund once.
    for _ in 0..2 {
        assert_eq!(
            pg.call("POST", "/_control/settlements", &[], Some(&load))
                .await
                .0,
            StatusCode::OK
        );
    }
    let auth = toss_auth();
    let (_, lines) = pg
        .call(
            "GET",
            "/toss/v1/settlements?startDate=2026-11-23&endDate=2026-11-23",
            &[("authorization", &auth)],
            None,
        )
        .await;
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0]["cancel"].is_null());
    assert_eq!(
        (
            &lines[1]["amount"],
            &lines[1]["fee"],
            &lines[1]["payOutAmount"]
        ),
        (&json!(-3_000), &json!(0), &json!(-3_000))
    );
    assert_eq!(
        lines[1]["cancel"],
        json!({ "cancelAmount": 3_000, "canceledAt": "2026-11-23T13:00:00+09:00" })
    );

    // Payple: one payment refunded in part, and a CANCEL line loaded by hand with its time.
    let paid = pg.payple_paid("order-st-2", 8_000).await;
    let cancel_auth = pg.payple_auth("PCD_PAYCANCEL_FLAG").await;
    pg.clock.advance(chrono::Duration::minutes(20));
    let refunded = pg.payple_refund(&cancel_auth, &paid, 5_000).await;
    assert_eq!(refunded["PCD_PAY_CODE"], "PAYC0000", "{refunded}");
    let load = json!({ "provider": "payple", "date": "2026-11-23", "from_payments": true, "records": [
        { "order_id": "order-hand", "kind": "CANCEL", "amount": -700, "cancel_time": "2026-11-23T09:15:00+09:00" },
    ]});
    assert_eq!(
        pg.call("POST", "/_control/settlements", &[], Some(&load))
            .await
            .0,
        StatusCode::OK
    );
    let settle = pg.payple_auth("PCD_SETTLEMENT_FLAG").await;
    let ask = json!({
        "PCD_CST_ID": settle["cst_id"], "PCD_CUST_KEY": settle["custKey"], "PCD_AUTH_KEY": settle["AuthKey"],
        "PCD_SETTLEMENT_FLAG": "Y", "PCD_START_DATE": "20261123", "PCD_END_DATE": "20261123",
    });
    let (_, answer) = pg
        .call("POST", "/payple/php/SettlementAct.php", &[], Some(&ask))
        .await;
    let content = answer["PCD_DATA"]["PCD_CONTENT"].as_array().unwrap();
    assert_eq!(content.len(), 3, "{answer}");
    assert_eq!(content[0]["PCD_PAY_CANCEL_TIME"], "20261123091500");
    assert_eq!(content[1]["PCD_TXN_TYPE"], "APPROVAL");
    assert!(content[1].get("PCD_PAY_CANCEL_TIME").is_none());
    let cancel = &content[2];
    assert_eq!(
        [
            &cancel["PCD_TXN_TYPE"],
            &cancel["PCD_PAY_OID"],
            &cancel["PCD_PAY_AMOUNT"],
            &cancel["PCD_FEE_TOTAL"],
            &cancel["PCD_SETTLE_AMOUNT"],
            &cancel["PCD_PAY_CANCEL_TIME"]
        ],
        [
            &json!("CANCEL"),
            &json!("order-st-2"),
            &json!("-5000"),
            &json!("0"),
            &json!("-5000"),
            &json!("20261123132000")
        ]
    );
}

impl Pg {
    /// A call answered as raw text, to see how a body is written and not only what it says.
    async fn raw(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// A PortOne access token, as `Bearer …`.
    async fn portone_bearer(&self) -> String {
        let body =
            json!({ "imp_key": super::SANDBOX_IMP_KEY, "imp_secret": super::SANDBOX_IMP_SECRET });
        let (status, answer) = self
            .call("POST", "/portone/users/getToken", &[], Some(&body))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        format!(
            "Bearer {}",
            answer["response"]["access_token"].as_str().unwrap()
        )
    }

    /// A PortOne payment made through the control API; answers its control view.
    async fn portone_made(&self, body: Value) -> Value {
        let (status, made) = self
            .call("POST", "/_control/portone/payments", &[], Some(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        made
    }

    async fn portone_get(&self, bearer: &str, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, &[("authorization", bearer)], None)
            .await
    }

    async fn console_refund(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, &[], Some(&body)).await
    }

    async fn load_settlements(&self, load: Value) -> (StatusCode, Value) {
        self.call("POST", "/_control/settlements", &[], Some(&load))
            .await
    }

    async fn toss_lines(&self, day: &str) -> Vec<Value> {
        let auth = toss_auth();
        let (status, lines) = self
            .call(
                "GET",
                &format!("/toss/v1/settlements?startDate={day}&endDate={day}"),
                &[("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{lines}");
        lines.as_array().unwrap().clone()
    }

    /// One day of Payple's settlement lines.
    async fn payple_lines(&self, day: &str) -> Vec<Value> {
        let settle = self.payple_auth("PCD_SETTLEMENT_FLAG").await;
        let ask = json!({
            "PCD_CST_ID": settle["cst_id"], "PCD_CUST_KEY": settle["custKey"],
            "PCD_AUTH_KEY": settle["AuthKey"], "PCD_SETTLEMENT_FLAG": "Y",
            "PCD_START_DATE": day, "PCD_END_DATE": day,
        });
        let (_, answer) = self
            .call("POST", "/payple/php/SettlementAct.php", &[], Some(&ask))
            .await;
        answer["PCD_DATA"]["PCD_CONTENT"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .clone()
    }
}

#[tokio::test]
async fn portone_find_answers_the_latest_payment_of_an_order_and_find_all_every_one() {
    let pg = pg();
    let bearer = pg.portone_bearer().await;
    let paid = pg
        .portone_made(json!({ "merchant_uid": "order-f1", "amount": 1_000 }))
        .await;
    pg.clock.advance(chrono::Duration::seconds(30));
    // A later failed try of the same order hides the paid one from a find without status.
    let failed = pg
        .portone_made(json!({ "merchant_uid": "order-f1", "amount": 1_000, "status": "failed" }))
        .await;
    pg.portone_made(json!({ "merchant_uid": "order-other", "amount": 1_000 }))
        .await;

    let (status, latest) = pg
        .portone_get(&bearer, "/portone/payments/find/order-f1")
        .await;
    assert_eq!(
        (status, &latest["code"], &latest["response"]["imp_uid"]),
        (StatusCode::OK, &json!(0), &failed["imp_uid"])
    );
    let (_, in_paid) = pg
        .portone_get(&bearer, "/portone/payments/find/order-f1/paid")
        .await;
    assert_eq!(in_paid["response"]["imp_uid"], paid["imp_uid"]);
    assert_eq!(in_paid["response"]["started_at"], paid["started_at"]);

    let (status, all) = pg
        .portone_get(&bearer, "/portone/payments/findAll/order-f1")
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = all["response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|payment| &payment["imp_uid"])
        .collect();
    assert_eq!(ids, [&failed["imp_uid"], &paid["imp_uid"]], "latest first");
    let (_, only_paid) = pg
        .portone_get(&bearer, "/portone/payments/findAll/order-f1/paid")
        .await;
    assert_eq!(only_paid["response"].as_array().unwrap().len(), 1);
    let (status, none) = pg
        .portone_get(&bearer, "/portone/payments/findAll/order-f1/cancelled")
        .await;
    assert_eq!((status, &none["response"]), (StatusCode::OK, &json!([])));

    // Nothing in that status: 404 in the envelope, as an unknown `imp_uid` gets.
    let (status, missing) = pg
        .portone_get(&bearer, "/portone/payments/find/order-f1/cancelled")
        .await;
    let (unknown_status, unknown) = pg.portone_get(&bearer, "/portone/payments/imp_nope").await;
    assert_eq!((status, &missing), (unknown_status, &unknown));
    assert_eq!(
        (status, &missing["code"]),
        (StatusCode::NOT_FOUND, &json!(-1))
    );
    let (status, _) = pg
        .portone_get(&bearer, "/portone/payments/find/order-f1/refunded")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = pg
        .call("GET", "/portone/payments/find/order-f1", &[], None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Faults on `portone.payment` reach the lookups by order too.
    assert_eq!(
        pg.fault(&json!({ "endpoint": "portone.payment", "mode": "status500", "count": 2 }))
            .await,
        StatusCode::OK
    );
    for path in [
        "/portone/payments/find/order-f1/paid",
        "/portone/payments/findAll/order-f1",
    ] {
        let (status, body) = pg.portone_get(&bearer, path).await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::INTERNAL_SERVER_ERROR, &json!(-1))
        );
    }
    let (_, stats) = pg.call("GET", "/_control/stats", &[], None).await;
    assert_eq!(stats["calls"]["portone.payment"], 11, "every lookup counts");
}

#[tokio::test]
async fn a_legacy_portone_payment_answers_in_the_old_apis_shape() {
    let pg = pg();
    let bearer = pg.portone_bearer().await;
    let made = pg
        .portone_made(json!({ "merchant_uid": "order-old", "amount": 5_000, "name": "옛 상품", "legacy": true }))
        .await;
    let imp_uid = made["imp_uid"].as_str().unwrap().to_owned();
    assert!(imp_uid.starts_with("imps_"), "{imp_uid}");
    let (status, _) = pg
        .console_refund(
            &format!("/_control/portone/payments/{imp_uid}/refund"),
            json!({ "amount": 2_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, text) = pg
        .raw(
            "GET",
            &format!("/portone/payments/{imp_uid}"),
            &[("authorization", &bearer)],
        )
        .await;

    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(r"https:\/\/"), "{text}");
    assert!(text.contains(r"\uc61b"), "{text}");
    assert!(text.is_ascii());
    let body: Value = serde_json::from_str(&text).unwrap();
    let payment = &body["response"];
    assert_eq!(payment["name"], "옛 상품");
    for absent in ["sandbox", "channel", "pg_id", "started_at"] {
        assert!(payment.get(absent).is_none(), "{absent} in {payment}");
    }
    assert_eq!(payment["card_type"], 0);
    assert!(payment.get("emb_pg_provider").is_some_and(Value::is_null));
    let entry = payment["cancel_history"][0].as_object().unwrap();
    let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["amount", "cancelled_at", "pg_tid", "reason", "receipt_url"]
    );

    // The lookups by order answer it the same way; a current payment keeps every field.
    let (_, text) = pg
        .raw(
            "GET",
            "/portone/payments/findAll/order-old",
            &[("authorization", &bearer)],
        )
        .await;
    assert!(
        text.contains(r"\/") && !text.contains("cancellation_id"),
        "{text}"
    );
    let current = pg
        .portone_made(json!({ "merchant_uid": "order-new", "amount": 5_000 }))
        .await;
    assert!(current["imp_uid"].as_str().unwrap().starts_with("imp_"));
    for present in ["sandbox", "channel", "pg_id", "started_at"] {
        assert!(current.get(present).is_some(), "{present} missing");
    }
}

#[tokio::test]
async fn a_portone_console_refund_is_a_cancel_kassa_never_asked_for() {
    let pg = pg();
    let bearer = pg.portone_bearer().await;
    let made = pg
        .portone_made(json!({ "merchant_uid": "order-c1", "amount": 10_000 }))
        .await;
    let imp_uid = made["imp_uid"].as_str().unwrap();
    let path = format!("/_control/portone/payments/{imp_uid}/refund");
    for bad in [0, -1, 10_001] {
        let (status, _) = pg.console_refund(&path, json!({ "amount": bad })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    let (status, part) = pg.console_refund(&path, json!({ "amount": 3_000 })).await;

    assert_eq!(status, StatusCode::OK, "{part}");
    assert_eq!(
        (
            &part["status"],
            &part["cancel_amount"],
            &part["console_refunds"]
        ),
        (&json!("paid"), &json!(3_000), &json!(1))
    );
    assert!(part["cancel_history"][0]["cancellation_id"].is_string());
    // What kassa sees: the refund is on the payment, with nothing on kassa's side asked.
    let (_, seen) = pg
        .portone_get(&bearer, &format!("/portone/payments/{imp_uid}"))
        .await;
    assert_eq!(seen["response"]["cancel_amount"], 3_000);
    assert_eq!(seen["response"]["cancel_history"][0]["amount"], 3_000);

    let (_, rest) = pg.console_refund(&path, json!({})).await;
    assert_eq!(
        (
            &rest["status"],
            &rest["cancel_amount"],
            &rest["refunds_executed"],
            &rest["console_refunds"]
        ),
        (&json!("cancelled"), &json!(10_000), &json!(2), &json!(2))
    );
    let (status, _) = pg.console_refund(&path, json!({ "amount": 1 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "nothing is left");
    let (_, gone) = pg
        .portone_get(&bearer, "/portone/payments/find/order-c1/cancelled")
        .await;
    assert_eq!(gone["response"]["imp_uid"], json!(imp_uid));

    let failed = pg
        .portone_made(json!({ "merchant_uid": "order-c2", "amount": 1_000, "status": "failed" }))
        .await;
    let (status, _) = pg
        .console_refund(
            &format!(
                "/_control/portone/payments/{}/refund",
                failed["imp_uid"].as_str().unwrap()
            ),
            json!({ "amount": 1_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = pg
        .console_refund("/_control/portone/payments/imp_nope/refund", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_toss_console_refund_follows_the_cancel_rule_and_shows_in_the_settlement() {
    let pg = pg();
    let key = pg.toss_done("order-tc-1", 10_000).await;
    let (status, _) = pg
        .toss_cancel(
            &key,
            Some("api"),
            json!({ "cancelReason": "r", "cancelAmount": 1_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/_control/toss/payments/{key}/refund");
    for bad in [0, 9_001] {
        let (status, _) = pg.console_refund(&path, json!({ "amount": bad })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    pg.clock.advance(chrono::Duration::minutes(10));

    // Right after an API cancel: the console knows no consecutive-cancel gap.
    let (status, part) = pg.console_refund(&path, json!({ "amount": 4_000 })).await;

    assert_eq!(status, StatusCode::OK, "{part}");
    assert_eq!(
        (
            &part["status"],
            &part["balanceAmount"],
            &part["consoleRefunds"]
        ),
        (&json!("PARTIAL_CANCELED"), &json!(5_000), &json!(1))
    );
    let cancels = part["cancels"].as_array().unwrap();
    assert_eq!(cancels.len(), 2);
    assert_ne!(cancels[0]["transactionKey"], cancels[1]["transactionKey"]);
    assert_eq!(
        (&cancels[1]["cancelAmount"], &cancels[1]["refundableAmount"]),
        (&json!(4_000), &json!(5_000))
    );
    let (_, rest) = pg.console_refund(&path, json!({})).await;
    assert_eq!(
        (&rest["status"], &rest["balanceAmount"]),
        (&json!("CANCELED"), &json!(0))
    );
    assert_eq!(
        (
            &rest["refundsExecuted"],
            &rest["consoleRefunds"],
            &rest["console_refunds"]
        ),
        (&json!(3), &json!(2), &json!(2))
    );
    let (status, _) = pg.console_refund(&path, json!({ "amount": 1 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "nothing is left");

    // Partial console refunds that add up to the whole stay PARTIAL_CANCELED, as API ones do.
    let whole = pg.toss_done("order-tc-2", 2_000).await;
    let path = format!("/_control/toss/payments/{whole}/refund");
    pg.console_refund(&path, json!({ "amount": 500 })).await;
    let (_, zero) = pg.console_refund(&path, json!({ "amount": 1_500 })).await;
    assert_eq!(
        (&zero["status"], &zero["balanceAmount"]),
        (&json!("PARTIAL_CANCELED"), &json!(0))
    );
    let waiting = pg
        .call(
            "POST",
            "/_control/toss/payments",
            &[],
            Some(&json!({ "orderId": "order-tc-3", "amount": 1_000 })),
        )
        .await
        .1;
    let (status, _) = pg
        .console_refund(
            &format!(
                "/_control/toss/payments/{}/refund",
                waiting["paymentKey"].as_str().unwrap()
            ),
            json!({ "amount": 1_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not confirmed yet");

    let (status, _) = pg
        .load_settlements(
            json!({ "provider": "toss", "date": "2026-11-23", "from_payments": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines = pg.toss_lines("2026-11-23").await;
    let keys: Vec<&Value> = lines
        .iter()
        .filter(|line| line["orderId"] == "order-tc-1" && !line["cancel"].is_null())
        .map(|line| &line["transactionKey"])
        .collect();
    let expected: Vec<&Value> = rest["cancels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cancel| &cancel["transactionKey"])
        .collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn a_payple_console_refund_counts_and_becomes_a_cancel_line_but_not_an_inquiry_field() {
    let pg = pg();
    let paid = pg.payple_paid("order-pc-1", 9_000).await;
    let path = "/_control/payple/payments/order-pc-1/refund";
    for bad in [0, 9_001] {
        let (status, _) = pg.console_refund(path, json!({ "amount": bad })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    pg.clock.advance(chrono::Duration::minutes(30));

    let (status, view) = pg.console_refund(path, json!({ "amount": 2_000 })).await;

    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(
        (
            &view["refunds_executed"],
            &view["console_refunds"],
            &view["refunded"]
        ),
        (&json!(1), &json!(1), &json!(2_000))
    );
    assert_eq!(
        view["refunds"],
        json!([{ "amount": 2_000, "at": "2026-11-23T12:30:00+09:00" }])
    );
    // A refund kassa asks for afterwards sees only what is left.
    let auth = pg.payple_auth("PCD_PAYCANCEL_FLAG").await;
    let too_much = pg.payple_refund(&auth, &paid, 8_000).await;
    assert_eq!(too_much["PCD_PAY_CODE"], "PAYC0003");
    let check = pg.payple_auth("PCD_PAYCHK_FLAG").await;
    let inquiry = json!({
        "PCD_CST_ID": check["cst_id"], "PCD_CUST_KEY": check["custKey"], "PCD_AUTH_KEY": check["AuthKey"],
        "PCD_PAYCHK_FLAG": "Y", "PCD_PAY_TYPE": "card", "PCD_PAY_OID": "order-pc-1",
        "PCD_PAY_DATE": "20261123",
    });
    let (_, answer) = pg
        .call("POST", "/payple/php/PayChkAct.php", &[], Some(&inquiry))
        .await;
    assert_eq!(answer["PCD_PAY_RST"], "success");
    assert!(answer.get("PCD_REFUND_TOTAL").is_none(), "{answer}");

    let (status, _) = pg
        .load_settlements(
            json!({ "provider": "payple", "date": "2026-11-23", "from_payments": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines = pg.payple_lines("20261123").await;
    let cancel = lines
        .iter()
        .find(|line| line["PCD_TXN_TYPE"] == "CANCEL")
        .unwrap();
    assert_eq!(
        (
            &cancel["PCD_PAY_OID"],
            &cancel["PCD_PAY_AMOUNT"],
            &cancel["PCD_PAY_CANCEL_TIME"]
        ),
        (
            &json!("order-pc-1"),
            &json!("-2000"),
            &json!("20261123123000")
        )
    );
    let (status, _) = pg
        .console_refund("/_control/payple/payments/order-none/refund", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// What a webhook receiver on loopback was sent: (method, content type, body) per request.
type Received = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// A webhook receiver on a free loopback port that answers `post_status` to a POST; answers its
/// URL and what it received.
async fn webhook_receiver(post_status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let app = Router::new().route(
        "/hook",
        axum::routing::any(move |request: Request<Body>| {
            let seen = seen.clone();
            async move {
                let method = request.method().to_string();
                let content_type = request
                    .headers()
                    .get("content-type")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let status = if method == "POST" {
                    post_status
                } else {
                    StatusCode::OK
                };
                seen.lock().unwrap().push((
                    method,
                    content_type,
                    String::from_utf8(bytes.to_vec()).unwrap(),
                ));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/hook"), received)
}

fn form_of(body: &str) -> std::collections::BTreeMap<String, String> {
    serde_urlencoded::from_str(body).unwrap()
}

#[tokio::test]
async fn a_payple_webhook_notice_is_a_head_then_a_form_post_of_the_result_fields() {
    let pg = pg();
    pg.payple_paid("order-wh-1", 7_000).await;
    let (url, received) = webhook_receiver(StatusCode::OK).await;

    let (status, answer) = pg
        .call(
            "POST",
            "/_control/payple/webhook",
            &[],
            Some(&json!({ "order_id": "order-wh-1", "url": url })),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["head_status"], &answer["post_status"]),
        (&json!(200), &json!(200))
    );
    let requests = received.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].0, "HEAD");
    let (method, content_type, body) = &requests[1];
    assert_eq!(
        (method.as_str(), content_type.as_str()),
        ("POST", "application/x-www-form-urlencoded")
    );
    let form = form_of(body);
    for (field, value) in [
        ("PCD_PAY_RST", "success"),
        ("PCD_PAY_CODE", "PAYN0000"),
        ("PCD_PAY_OID", "order-wh-1"),
        ("PCD_PAY_TYPE", "card"),
        ("PCD_PAY_TIME", "20261123120000"),
        ("PCD_PAY_TOTAL", "7000"),
    ] {
        assert_eq!(form.get(field).map(String::as_str), Some(value), "{field}");
    }
    assert!(form.contains_key("PCD_PAY_CARDNAME") && form.contains_key("PCD_PAY_GOODS"));
    assert!(!form.contains_key("PCD_REFUND_TOTAL"));
    assert_eq!(answer["sent"]["PCD_PAY_OID"], "order-wh-1");
}

#[tokio::test]
async fn a_payple_cancel_notice_claims_the_latest_refund_and_reports_what_the_url_answered() {
    let pg = pg();
    pg.payple_paid("order-wh-2", 7_000).await;
    pg.payple_paid("order-wh-3", 3_000).await;
    pg.clock.advance(chrono::Duration::minutes(5));
    pg.console_refund(
        "/_control/payple/payments/order-wh-2/refund",
        json!({ "amount": 1_500 }),
    )
    .await;
    let (url, received) = webhook_receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let notice = |order_id: &str| json!({ "order_id": order_id, "url": url.replace("127.0.0.1", "localhost"), "kind": "cancel" });

    let (status, answer) = pg
        .call(
            "POST",
            "/_control/payple/webhook",
            &[],
            Some(&notice("order-wh-2")),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["head_status"], &answer["post_status"]),
        (&json!(200), &json!(500))
    );
    let form = form_of(&received.lock().unwrap()[1].2);
    assert_eq!(
        (
            form["PCD_PAY_OID"].as_str(),
            form["PCD_REFUND_TOTAL"].as_str(),
            form["PCD_PAY_CANCEL_TIME"].as_str()
        ),
        ("order-wh-2", "1500", "20261123120500")
    );
    // A cancel notice for a payment never refunded claims all of it: a claim with nothing behind.
    let (_, unfounded) = pg
        .call(
            "POST",
            "/_control/payple/webhook",
            &[],
            Some(&notice("order-wh-3")),
        )
        .await;
    assert_eq!(unfounded["sent"]["PCD_REFUND_TOTAL"], "3000");
    // `fields` forge the claim further.
    let mut forged = notice("order-wh-3");
    forged["fields"] = json!({ "PCD_PAY_TOTAL": "1", "PCD_EXTRA": "x" });
    let (_, forged) = pg
        .call("POST", "/_control/payple/webhook", &[], Some(&forged))
        .await;
    assert_eq!(
        (
            &forged["sent"]["PCD_PAY_TOTAL"],
            &forged["sent"]["PCD_EXTRA"]
        ),
        (&json!("1"), &json!("x"))
    );
}

#[tokio::test]
async fn a_payple_webhook_goes_to_loopback_only() {
    let pg = pg();
    pg.payple_paid("order-wh-4", 1_000).await;
    for url in [
        "http://example.com/hook",
        "http://127.0.0.1.example.com/hook",
        "http://10.0.0.1/hook",
        "ftp://127.0.0.1/hook",
        "not a url",
    ] {
        let (status, _) = pg
            .call(
                "POST",
                "/_control/payple/webhook",
                &[],
                Some(&json!({ "order_id": "order-wh-4", "url": url })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}");
    }
    let (status, _) = pg
        .call(
            "POST",
            "/_control/payple/webhook",
            &[],
            Some(&json!({ "order_id": "order-none", "url": "http://127.0.0.1:9/hook" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nobody listening: no statuses, and the reason.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let (status, answer) = pg
        .call(
            "POST",
            "/_control/payple/webhook",
            &[],
            Some(&json!({ "order_id": "order-wh-4", "url": format!("http://[::1]:{}/hook", closed.port()) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answer["head_status"].is_null() && answer["post_status"].is_null(),
        "{answer}"
    );
    assert!(answer["post_error"].is_string());
}

#[tokio::test]
async fn toss_settlement_lines_come_in_the_api_and_the_docs_shape() {
    let pg = pg();
    let records = json!([
        { "order_id": "order-sh-1", "amount": 10_000, "fee": 330 },
        { "order_id": "order-sh-2", "kind": "CANCEL", "amount": -4_000, "fee": -132, "cancel_time": "2026-11-23T15:00:00+09:00" },
    ]);
    let (status, _) = pg
        .load_settlements(json!({ "provider": "toss", "date": "2026-11-23", "records": records }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = pg
        .load_settlements(json!({ "provider": "toss", "date": "2026-11-24", "toss_shape": "docs", "records": records }))
        .await;
    assert_eq!(status, StatusCode::OK);

    let api = pg.toss_lines("2026-11-23").await;
    let docs = pg.toss_lines("2026-11-24").await;

    assert_eq!(
        (&api[0]["fee"], &api[0]["amount"]),
        (&json!(330), &json!(10_000))
    );
    assert!(api[0].get("fees").is_none());
    assert!(docs[0].get("fee").is_none(), "{}", docs[0]);
    assert_eq!(
        docs[0]["fees"],
        json!([{ "type": "BASE", "fee": "330" }, { "type": "ETC", "fee": "0" }])
    );
    assert_eq!(docs[0]["amount"], 10_000);
    for (cancel, fee) in [(&api[1], json!(-132)), (&docs[1], json!(null))] {
        assert_eq!(
            (&cancel["amount"], &cancel["payOutAmount"], &cancel["fee"]),
            (&json!(-4_000), &json!(-3_868), &fee)
        );
        assert_eq!(
            (&cancel["supplyAmount"], &cancel["vat"]),
            (&json!(-120), &json!(-12))
        );
        assert_eq!(
            cancel["cancel"],
            json!({ "cancelAmount": 4_000, "canceledAt": "2026-11-23T15:00:00+09:00" })
        );
    }
    assert_eq!(docs[1]["fees"][0]["fee"], "-132");
}

#[tokio::test]
async fn raw_fees_and_amounts_are_sent_verbatim_and_toss_shape_is_for_toss_only() {
    let pg = pg();
    let (status, _) = pg
        .load_settlements(
            json!({ "provider": "toss", "date": "2026-11-23", "records": [
                { "order_id": "order-raw-1", "amount": 10_000, "raw_fee": "330" },
                { "order_id": "order-raw-2", "amount": 10_000, "raw_fee": "삼백원" },
                { "order_id": "order-raw-3", "amount": 10_000, "raw_amount": "10000" },
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = pg
        .load_settlements(
            json!({ "provider": "toss", "date": "2026-11-24", "toss_shape": "docs", "records": [
                { "order_id": "order-raw-4", "amount": 10_000, "raw_fee": "n/a" },
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let lines = pg.toss_lines("2026-11-23").await;
    assert_eq!(
        [&lines[0]["fee"], &lines[1]["fee"], &lines[2]["amount"]],
        [&json!("330"), &json!("삼백원"), &json!("10000")]
    );
    assert_eq!(
        pg.toss_lines("2026-11-24").await[0]["fees"][0]["fee"],
        "n/a"
    );

    let (status, _) = pg
        .load_settlements(
            json!({ "provider": "payple", "date": "2026-11-23", "toss_shape": "docs" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = pg
        .load_settlements(
            json!({ "provider": "payple", "date": "2026-11-23", "records": [
                { "order_id": "order-raw-5", "amount": 10_000, "raw_fee": "3.3%" },
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        pg.payple_lines("20261123").await[0]["PCD_FEE_TOTAL"],
        "3.3%"
    );
}

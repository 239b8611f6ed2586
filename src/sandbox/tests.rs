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
    assert_eq!(
        pg.call("POST", "/_control/settlements", &[], Some(&load))
            .await
            .0,
        StatusCode::OK
    );
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

use super::*;

fn gateway() -> Result<TossGateway, String> {
    Ok(TossGateway::new(
        super::super::client::build(std::time::Duration::from_secs(1))?,
        "http://127.0.0.1:9",
        &Secret::new("test_sk".to_owned()),
        Arc::new(crate::clock::SystemClock),
        std::time::Duration::ZERO,
    ))
}

#[tokio::test(start_paused = true)]
async fn a_second_cancel_of_one_payment_waits_the_gap_and_holds_up_no_other_payment()
-> Result<(), String> {
    let toss = Arc::new(gateway()?);
    let start = tokio::time::Instant::now();
    toss.keep_apart("pay_a").await;
    assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    let (a_again, a_third) = {
        let (first, second) = (Arc::clone(&toss), Arc::clone(&toss));
        (
            tokio::spawn(async move {
                first.keep_apart("pay_a").await;
                tokio::time::Instant::now()
            }),
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                second.keep_apart("pay_a").await;
                tokio::time::Instant::now()
            }),
        )
    };
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    // Another payment's cancel goes at once, while the two of `pay_a` wait.
    toss.keep_apart("pay_b").await;
    assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    let (second, third) = (a_again.await.ok(), a_third.await.ok());
    assert_eq!(second.map(|at| at - start), Some(CANCEL_GAP));
    assert_eq!(third.map(|at| at - start), Some(CANCEL_GAP * 2));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_cancel_dropped_while_it_waits_the_gap_holds_up_no_later_one() -> Result<(), String> {
    let toss = Arc::new(gateway()?);
    let start = tokio::time::Instant::now();
    toss.keep_apart("pay_a").await;
    let waiting = {
        let toss = Arc::clone(&toss);
        tokio::spawn(async move { toss.keep_apart("pay_a").await })
    };
    tokio::time::sleep(CANCEL_GAP / 2).await;
    waiting.abort();
    let _ = waiting.await;
    // The next one waits out the gap after the cancel that was sent, no longer.
    toss.keep_apart("pay_a").await;
    assert_eq!(start.elapsed(), CANCEL_GAP);
    Ok(())
}

#[test]
fn toss_error_codes_fall_into_kassas_classes() {
    let body = |code: &str| format!(r#"{{"code":"{code}","message":"m"}}"#).into_bytes();
    let bad = reqwest::StatusCode::BAD_REQUEST;
    assert_eq!(
        classify(bad, &body("ALREADY_CANCELED_PAYMENT"), CallKind::Mutation),
        GatewayError::AlreadyCancelled
    );
    assert!(matches!(
        classify(bad, &body("PROVIDER_ERROR"), CallKind::Mutation),
        GatewayError::Throttled(_)
    ));
    assert!(matches!(
        classify(
            reqwest::StatusCode::FORBIDDEN,
            &body("FORBIDDEN_CONSECUTIVE_REQUEST"),
            CallKind::Mutation
        ),
        GatewayError::Throttled(_)
    ));
    assert!(matches!(
        classify(
            reqwest::StatusCode::CONFLICT,
            &body("IDEMPOTENT_REQUEST_PROCESSING"),
            CallKind::Mutation
        ),
        GatewayError::UnknownOutcome(_)
    ));
    assert!(matches!(
        classify(
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            &body("PROVIDER_ERROR"),
            CallKind::Mutation
        ),
        GatewayError::UnknownOutcome(_)
    ));
    assert_eq!(
        classify(
            reqwest::StatusCode::FORBIDDEN,
            &body("NOT_CANCELABLE_AMOUNT"),
            CallKind::Mutation
        ),
        GatewayError::AlreadyCancelled
    );
    assert!(matches!(
        classify(
            bad,
            &body("NOT_MATCHES_REFUNDABLE_AMOUNT"),
            CallKind::Mutation
        ),
        GatewayError::BalanceMismatch(_)
    ));
    assert!(matches!(
        classify(
            reqwest::StatusCode::FORBIDDEN,
            &body("NOT_CANCELABLE_PAYMENT"),
            CallKind::Mutation
        ),
        GatewayError::Refused { .. }
    ));
    assert!(matches!(
        classify(
            reqwest::StatusCode::UNAUTHORIZED,
            &body("UNAUTHORIZED_KEY"),
            CallKind::Mutation
        ),
        GatewayError::Credentials(_)
    ));
    assert_eq!(
        classify(
            reqwest::StatusCode::NOT_FOUND,
            &body("NOT_FOUND_PAYMENT"),
            CallKind::Query
        ),
        GatewayError::NotFound
    );
    let internal = reqwest::StatusCode::INTERNAL_SERVER_ERROR;
    assert!(matches!(
        classify(
            internal,
            &body("FAILED_INTERNAL_SYSTEM_PROCESSING"),
            CallKind::Mutation
        ),
        GatewayError::UnknownOutcome(_)
    ));
    assert!(
        classify(
            internal,
            &body("FAILED_INTERNAL_SYSTEM_PROCESSING"),
            CallKind::Query
        )
        .is_transient()
    );
    assert!(matches!(
        classify(bad, b"not json", CallKind::Mutation),
        GatewayError::Refused { .. }
    ));
}

#[test]
fn settlement_lines_in_every_published_shape_are_read() {
    let lines: Vec<serde_json::Value> = serde_json::from_str(
        r#"[
          {"orderId":"o-1","paymentKey":"k1","amount":15000,"fee":495,"payOutAmount":14505},
          {"orderId":"o-2","amount":15000,"fees":[{"type":"BASE","fee":"450"},{"type":"ETC","fee":"45"}],"payOutAmount":14505},
          {"orderId":"o-3","amount":-5000,"fee":0,"payOutAmount":-5000,"cancel":{"cancelAmount":5000,"canceledAt":"2026-11-23T13:00:00+09:00"}},
          {"orderId":"o-4","amount":"15,000","fee":"x","payOutAmount":null}
        ]"#,
    )
    .unwrap();
    let read: Vec<SettlementLine> = lines.iter().map(settlement_line).collect();
    assert_eq!((read[0].fee, read[0].pg_ref.as_deref()), (495, Some("k1")));
    assert!(read[0].is_consistent());
    assert_eq!(read[1].fee, 495, "the sum of fees[] given as strings");
    assert!(read[1].is_consistent());
    assert_eq!(read[2].kind, SettlementKind::Cancel);
    assert_eq!(read[2].amount, -5_000);
    assert_eq!(
        read[2].cancel_at.unwrap().to_rfc3339(),
        "2026-11-23T04:00:00+00:00"
    );
    assert_eq!(
        read[3].amount, UNREADABLE,
        "an unreadable line is kept, not fatal"
    );
    assert!(!read[3].is_consistent());
}

#[test]
fn a_partly_cancelled_toss_payment_reads_as_paid_with_its_balance() {
    let wire: PaymentWire = serde_json::from_str(
        r#"{"paymentKey":"tpk_1","orderId":"order-1","status":"PARTIAL_CANCELED","totalAmount":15000,
            "balanceAmount":10000,"approvedAt":"2026-11-23T12:00:00+09:00","unknownField":1,
            "cancels":[{"transactionKey":"tx1","cancelAmount":5000,"canceledAt":"2026-11-23T13:00:00+09:00"}]}"#,
    )
    .unwrap();
    let payment = to_payment(wire).unwrap();
    assert_eq!(payment.status, PgStatus::Paid);
    assert_eq!(payment.balance().won(), 10_000);
    assert_eq!(payment.cancellations[0].pg_cancel_id, "tx1");
    assert_eq!(
        payment.paid_at.unwrap().to_rfc3339(),
        "2026-11-23T03:00:00+00:00"
    );
}

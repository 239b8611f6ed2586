//! The fuzz targets' bodies: every parser of outside input, driven by arbitrary bytes. `fuzz/`
//! (cargo fuzz, nightly) calls these for hours; `tests/it/fuzz_corpora.rs` replays every file of
//! `fuzz/seeds/` through them on stable, so what a fuzzer found once stays fixed.
//!
//! Each function must not panic on any input, and checks what must hold of what it parsed.

use crate::domain::{Amount, BuyerId};
use crate::gateway::client::CallKind;
use crate::gateway::{GatewayError, inbound, payple, portone, toss};
use chrono::{DateTime, Utc};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name of their seed folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("portone_answer", portone_answer),
    ("toss_answer", toss_answer),
    ("payple_answer", payple_answer),
    ("webhook", webhook),
    ("payple_result", payple_result),
    ("config", config),
    ("cookie", cookie),
];

/// The first two bytes as an HTTP status (100–599), and the rest: `00 64` is 200, `01 2c` 400,
/// `01 2f` 403, `01 35` 409, `01 90` 500.
fn status_and_body(data: &[u8]) -> (u16, &[u8]) {
    match data {
        [high, low, rest @ ..] => (100 + u16::from_be_bytes([*high, *low]) % 500, rest),
        _ => (200, data),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

fn amount() -> Amount {
    Amount::positive(1_000).unwrap_or(Amount::ZERO)
}

fn check_payment(payment: &crate::gateway::PgPayment) {
    assert!(payment.amount.won() >= 0);
    assert!(payment.cancelled_amount.won() >= 0);
    for cancellation in &payment.cancellations {
        assert!(cancellation.amount.won() >= 0);
    }
}

/// A refund answer that is unreadable must never read as a refusal (nothing happened) when it
/// answered a money call: its outcome is unknown.
fn check_refund_error(error: &GatewayError) {
    assert!(!matches!(error, GatewayError::NotFound), "{error}");
}

/// PortOne V1 answers: a lookup, a list, and a cancel's answer (status from the first bytes).
pub fn portone_answer(data: &[u8]) {
    if let Ok(payment) = portone::read_payment(data) {
        check_payment(&payment);
    }
    if let Ok(list) = portone::read_paid_list(data) {
        assert!(list.len() <= portone::FOUND_PER_ORDER_MAX);
        list.iter().for_each(check_payment);
    }
    let (status, body) = status_and_body(data);
    match portone::read_cancel(status, body, amount(), now()) {
        Ok(receipt) => assert_eq!(receipt.amount, amount()),
        Err(error) => {
            check_refund_error(&error);
            if status >= 500 {
                assert!(matches!(error, GatewayError::UnknownOutcome(_)), "{error}");
            }
        }
    }
}

/// Toss answers: a payment (lookup, confirm or cancel) and a settlement page.
pub fn toss_answer(data: &[u8]) {
    let (status, body) = status_and_body(data);
    for kind in [CallKind::Query, CallKind::Mutation] {
        match toss::read_payment(status, body, kind) {
            Ok(payment) => check_payment(&payment),
            Err(GatewayError::UnknownOutcome(_)) => assert!(kind == CallKind::Mutation),
            Err(_) => {}
        }
    }
    if let Ok(page) = toss::read_settlements(status, body, 1, 100) {
        assert!(page.next_cursor.is_none() || page.records.len() >= 100);
    }
}

/// Payple answers: the JSON of any answer, then the result inquiry, a refund and a settlement
/// page read from it.
pub fn payple_answer(data: &[u8]) {
    let (status, body) = status_and_body(data);
    for kind in [CallKind::Query, CallKind::Mutation] {
        if let Err(GatewayError::UnknownOutcome(_)) = payple::read_answer(status, body, kind) {
            assert!(kind == CallKind::Mutation);
        }
    }
    let Ok(answer) = payple::read_answer(200, body, CallKind::Query) else {
        return;
    };
    if let Ok(payment) = payple::read_inquiry(&answer, "order-1") {
        check_payment(&payment);
        assert_eq!(
            payment.cancelled_amount,
            Amount::ZERO,
            "the inquiry shows no refunds"
        );
    }
    match payple::read_refund(&answer, amount(), now()) {
        Ok(receipt) => assert_eq!(receipt.amount, amount()),
        // Payple cannot be asked what happened: a refusal it does not document is unknown.
        Err(error) => assert!(
            matches!(
                error,
                GatewayError::UnknownOutcome(_) | GatewayError::Transient(_)
            ),
            "{error}"
        ),
    }
    if let Ok(page) = payple::read_settlement_page(&answer) {
        assert!(page.next_cursor.as_deref() != Some(""));
    }
}

/// The webhook bodies of all three PGs, as JSON and as forms.
pub fn webhook(data: &[u8]) {
    for is_json in [true, false] {
        let _ = inbound::portone_webhook(data, is_json);
        if let Ok(hint) = inbound::payple_notice(data, is_json) {
            assert!(hint.order_id.is_some());
        }
    }
    let _ = inbound::toss_webhook(data);
}

/// Payple's result post from the buyer's browser.
pub fn payple_result(data: &[u8]) {
    if let Ok(inbound::PaypleResult::Paid(hint)) = inbound::payple_result(data) {
        assert!(hint.order_id.is_some());
    }
}

/// The config file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = crate::config::Config::from_toml(text) {
        // What validates is usable: the printed form hides every secret and parses again.
        let printed = config.to_redacted_toml();
        assert!(!printed.is_empty());
    }
}

/// The buyer cookie and the mypage form's CSRF token.
pub fn cookie(data: &[u8]) {
    use crate::http::cookie;
    let key = [7u8; 32];
    let text = String::from_utf8_lossy(data);
    if let Some(buyer) = cookie::verify(&key, &text) {
        // Only a value this key signed names a buyer: signing that buyer again verifies too.
        assert_eq!(
            cookie::verify(&key, &cookie::sign(&key, buyer)),
            Some(buyer)
        );
    }
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(value) = axum::http::HeaderValue::from_bytes(data) {
        headers.insert(axum::http::header::COOKIE, value);
        let _ = cookie::buyer_of(&key, &headers);
    }
    let buyer = BuyerId::from_u128(u128::from_le_bytes(
        data.iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(16)
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap_or([0; 16]),
    ));
    let signed = cookie::sign(&key, buyer);
    assert_eq!(cookie::verify(&key, &signed), Some(buyer));
    let token = cookie::csrf_token(&key, buyer, &text);
    assert!(cookie::csrf_valid(&key, buyer, &text, &token));
    assert!(!cookie::csrf_valid(&key, buyer, &text, &text));
}

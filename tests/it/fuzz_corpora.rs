//! Every file of `fuzz/seeds/` (the PGs' published shapes, and every input a fuzzer found that
//! once failed, kept under a name) goes through its fuzz target's body on stable, as an ordinary
//! test. The fuzzer's own working corpus (`fuzz/corpus/`) is not committed.

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_goes_through_its_fuzz_target_without_a_panic() {
    for (target, body) in kassa::fuzzing::TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "fuzz/seeds/{target} is empty");
        for (name, data) in files {
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(
                outcome.is_ok(),
                "fuzz/seeds/{target}/{name} fails its target"
            );
        }
    }
}

/// The seeds are the PGs' real shapes: they must read as what they are, or the fuzzer starts
/// from nothing.
#[test]
fn the_seeds_read_as_the_pg_answers_they_are() {
    use kassa::gateway::client::CallKind;
    use kassa::gateway::{GatewayError, inbound, payple, portone, toss};
    let seed = |target: &str, name: &str| {
        corpus(target)
            .into_iter()
            .find(|(file, _)| file == name)
            .unwrap_or_else(|| panic!("no seed {target}/{name}"))
            .1
    };
    let kcp = portone::read_payment(&seed("portone_answer", "kcp_cancelled_2022")).unwrap();
    assert_eq!(kcp.cancellations.len(), 1);
    assert!(!kcp.cancellations[0].id_is_unique);
    assert_eq!(
        portone::read_payment(&seed("portone_answer", "already_cancelled")).unwrap_err(),
        GatewayError::Refused {
            code: "-1".into(),
            message: "이미 전액취소된 주문입니다.".into()
        }
    );
    let toss_answer = |name: &str, kind| {
        let data = seed("toss_answer", name);
        toss::read_payment(
            u16::from_be_bytes([data[0], data[1]]) + 100,
            &data[2..],
            kind,
        )
    };
    let partial = toss_answer("partial_canceled_balance_0", CallKind::Query).unwrap();
    assert_eq!(partial.cancelled_amount, partial.amount);
    assert_eq!(
        toss_answer("not_cancelable_amount", CallKind::Mutation).unwrap_err(),
        GatewayError::AlreadyCancelled
    );
    assert!(matches!(
        toss_answer("idempotent_processing", CallKind::Mutation),
        Err(GatewayError::UnknownOutcome(_))
    ));
    let payple_json = |name: &str| {
        let data = seed("payple_answer", name);
        payple::read_answer(200, &data[2..], CallKind::Query).unwrap()
    };
    assert_eq!(
        payple::read_inquiry(&payple_json("inquiry_numbers"), "order-1")
            .unwrap()
            .amount
            .won(),
        1_000
    );
    assert!(
        payple::read_refund(
            &payple_json("refund_ok_taxsave_failed"),
            kassa::domain::Amount::positive(1_000).unwrap(),
            chrono::DateTime::UNIX_EPOCH
        )
        .unwrap()
        .warning
        .is_some()
    );
    assert!(matches!(
        payple::read_refund(
            &payple_json("refund_error"),
            kassa::domain::Amount::positive(1_000).unwrap(),
            chrono::DateTime::UNIX_EPOCH
        ),
        Err(GatewayError::UnknownOutcome(_))
    ));
    let page = payple::read_settlement_page(&payple_json("settlement_page")).unwrap();
    assert_eq!(
        (page.records.len(), page.next_cursor.as_deref()),
        (2, Some("k-100"))
    );
    assert!(matches!(
        inbound::toss_webhook(&seed("webhook", "toss_deposit_callback")),
        Ok(inbound::TossEvent::Ignored(_))
    ));
    assert!(inbound::payple_notice(&seed("webhook", "payple_notice_json"), true).is_ok());
    assert!(matches!(
        inbound::payple_result(&seed("payple_result", "success")),
        Ok(inbound::PaypleResult::Paid(_))
    ));
    kassa::config::Config::from_toml(std::str::from_utf8(&seed("config", "example")).unwrap())
        .unwrap();
}

//! The real binary: restarts, a second process on the same data, bad configs, `check-config`.

use crate::support::ADMIN_TOKEN;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const KASSA: &str = env!("CARGO_BIN_EXE_kassa");

pub fn kassa(data_dir: &Path) -> Command {
    let mut command = Command::new(KASSA);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("KASSA_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .env_remove("KASSA_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts kassa and waits for its startup line; answers the child and its base URL.
async fn start(data_dir: &Path) -> (Child, String) {
    spawn_listening(kassa(data_dir)).await
}

/// Spawns a command that logs `listen=ADDR` once it is serving; answers it and its base URL.
pub async fn spawn_listening(mut command: Command) -> (Child, String) {
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listen=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("kassa exited before it was running");
    })
    .await
    .expect("kassa starts within 20 s");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{address}"))
}

async fn terminate(child: &mut Child) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("kassa stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn a_restarted_process_still_has_every_payment_and_a_second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, base) = start(dir.path()).await;
    let http = crate::support::http_client();
    let order = http
        .post(format!("{base}/api/orders"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "order_id": "order-proc-1", "amount": 15000, "name": "원두" }))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), StatusCode::CREATED);
    let pg: Value = http
        .post(format!("{base}/sandbox-pg/_control/portone/payments"))
        .json(&json!({ "merchant_uid": "order-proc-1", "amount": 15000 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paid: Value = http
        .post(format!("{base}/api/payment/portone"))
        .json(&json!({ "imp_uid": pg["imp_uid"], "merchant_uid": "order-proc-1" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["status"], "PAID", "{paid}");

    let second = kassa(dir.path()).output().await.unwrap();
    assert!(!second.status.success());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(
        message.contains("locked by another kassa process"),
        "{message}"
    );

    terminate(&mut first).await;
    let (mut again, base) = start(dir.path()).await;
    let stored: Value = http
        .get(format!(
            "{base}/api/payments/{}",
            paid["payment_id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored, paid);

    // A backup is refused while kassa holds the file, and taken once it stopped.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("kassa.redb");
    let backup = || {
        Command::new(KASSA)
            .args(["backup", "--out"])
            .arg(&copy)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
    };
    let nowhere = Command::new(KASSA)
        .args(["backup", "--out"])
        .arg(&copy)
        .arg("--data-dir")
        .arg(copy_dir.path().join("typo"))
        .output()
        .await
        .unwrap();
    assert!(!nowhere.status.success());
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("there is no data file"));
    assert!(
        !copy_dir.path().join("typo").exists(),
        "a mistyped directory is not created"
    );
    let refused = backup().await.unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("locked by another kassa process"));
    terminate(&mut again).await;
    let taken = backup().await.unwrap();
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let (_restored, base) = start(copy_dir.path()).await;
    let restored: Value = http
        .get(format!(
            "{base}/api/payments/{}",
            paid["payment_id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(restored, paid, "the copy holds the payment");
}

#[tokio::test]
async fn a_bad_config_or_a_busy_port_stops_kassa_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kassa.toml");
    std::fs::write(&config, "[gateway]\ndefault = \"portone\"\n").unwrap();
    let bad = Command::new(KASSA)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("gateway.portone.imp_key"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let busy = Command::new(KASSA)
        .args(["--listen", &port, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("KASSA_ADMIN__TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("cannot listen on"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
}

#[tokio::test]
async fn check_config_prints_the_effective_config_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kassa.toml");
    std::fs::write(
        &config,
        "[gateway]\nsandbox_public = true\n[gateway.portone]\nimp_secret = \"super-secret-value\"\n",
    )
    .unwrap();
    let output = Command::new(KASSA)
        .args(["check-config", "--config"])
        .arg(&config)
        .env("KASSA_RETRY__INLINE_ATTEMPTS", "5")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("inline_attempts = 5"), "{printed}");
    assert!(printed.contains("imp_secret = \"[REDACTED]\""), "{printed}");
    assert!(!printed.contains("super-secret-value"));
}

#[tokio::test]
async fn a_first_start_without_a_token_makes_one_readable_only_by_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = kassa(dir.path());
    command.env_remove("KASSA_ADMIN__TOKEN");
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut printed = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("listen=") {
                break;
            }
        }
    })
    .await
    .unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    assert!(token.trim().len() >= 32);
    assert!(
        printed.contains(token.trim()),
        "the new token is printed once"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    child.kill().await.unwrap();
}

/// The sandbox PG as a process of its own, so that it outlives a killed kassa.
pub async fn spawn_sandbox() -> (Child, String) {
    let mut sandbox = Command::new(KASSA);
    sandbox
        .args(["sandbox-pg", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    spawn_listening(sandbox).await
}

/// kassa pointed at a separate sandbox PG process, as at a real PortOne, with fast retries.
fn kassa_with_pg(data_dir: &Path, pg_base: &str) -> Command {
    let mut command = kassa(data_dir);
    command
        .env("KASSA_GATEWAY__DEFAULT", "portone")
        .env(
            "KASSA_GATEWAY__PORTONE__BASE_URL",
            format!("{pg_base}/portone"),
        )
        .env("KASSA_GATEWAY__PORTONE__IMP_KEY", "sandbox_imp_key")
        .env("KASSA_GATEWAY__PORTONE__IMP_SECRET", "sandbox_imp_secret")
        .env("KASSA_GATEWAY__PORTONE__IMP_CODE", "imp_sandbox")
        .env("KASSA_RETRY__INLINE_ATTEMPTS", "0")
        .env("KASSA_RETRY__TICK_INTERVAL_MS", "100")
        .env("KASSA_RETRY__BACKOFF_MS", "[200, 200, 400]")
        .env("KASSA_RETRY__QUEUE_ATTEMPTS_MAX", "100")
        .env("KASSA_RETRY__PG_TIMEOUT_MS", "1000");
    command
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario from start to finish")]
async fn cancels_accepted_before_a_sigkill_all_finish_after_the_restart_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, pg) = spawn_sandbox().await;
    let (mut first, base) = spawn_listening(kassa_with_pg(dir.path(), &pg)).await;
    let http = crate::support::http_client();

    let mut payments = Vec::new();
    for n in 0..5 {
        let order_id = format!("order-crash-{n}");
        let created = http
            .post(format!("{base}/api/orders"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "order_id": order_id, "amount": 10_000, "name": "원두" }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let pg_payment: Value = http
            .post(format!("{pg}/_control/portone/payments"))
            .json(&json!({ "merchant_uid": order_id, "amount": 10_000 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let imp_uid = pg_payment["imp_uid"].as_str().unwrap().to_owned();
        let paid: Value = http
            .post(format!("{base}/api/payment/portone"))
            .json(&json!({ "imp_uid": imp_uid, "merchant_uid": order_id }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(paid["status"], "PAID", "{paid}");
        payments.push((paid["payment_id"].as_str().unwrap().to_owned(), imp_uid));
    }
    // The first cancel the PG sees is carried out but its answer never comes back; every other
    // one fails with a 500 until the PG heals.
    for (mode, count) in [("lost_response", 1), ("status500", 1_000)] {
        let fault = json!({ "endpoint": "portone.cancel", "mode": mode, "count": count, "hold_ms": 60_000 });
        let response = http
            .post(format!("{pg}/_control/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    for (n, (payment_id, _)) in payments.iter().enumerate() {
        let body = if n % 2 == 0 {
            json!({ "reason": "full" })
        } else {
            json!({ "amount": 4_000, "reason": "partial" })
        };
        let response = http
            .post(format!("{base}/api/payments/{payment_id}/cancel"))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", format!("crash-{n}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["status"], "CANCEL_PENDING", "{answer}");
    }
    // Let the worker make attempts against the failing PG, then kill kassa without warning.
    tokio::time::sleep(Duration::from_millis(800)).await;
    first.kill().await.unwrap();
    first.wait().await.unwrap();
    let executed_before: u64 = {
        let mut total = 0;
        for (_, imp_uid) in &payments {
            let state: Value = http
                .get(format!("{pg}/_control/portone/payments/{imp_uid}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            total += state["refunds_executed"].as_u64().unwrap();
        }
        total
    };
    assert_eq!(
        executed_before, 1,
        "exactly the lost refund happened before the crash"
    );
    let healed = http
        .delete(format!("{pg}/_control/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(healed.status(), StatusCode::NO_CONTENT);

    let (_second, base) = spawn_listening(kassa_with_pg(dir.path(), &pg)).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let mut done = 0;
        for (payment_id, _) in &payments {
            let payment: Value = http
                .get(format!("{base}/api/payments/{payment_id}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if matches!(
                payment["status"].as_str(),
                Some("CANCELLED" | "PARTIALLY_CANCELLED")
            ) {
                done += 1;
            }
        }
        if done == payments.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of {} cancels finished after the restart",
            payments.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (n, (payment_id, imp_uid)) in payments.iter().enumerate() {
        let state: Value = http
            .get(format!("{pg}/_control/portone/payments/{imp_uid}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            state["refunds_executed"], 1,
            "payment {payment_id}: {state}"
        );
        let expected = if n % 2 == 0 { 10_000 } else { 4_000 };
        assert_eq!(
            state["cancel_amount"], expected,
            "payment {payment_id}: {state}"
        );
    }
}

/// Collects everything a child writes to stderr.
fn collect_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

async fn wait_for_listen(log: &std::sync::Arc<std::sync::Mutex<String>>) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(address) = log
            .lock()
            .unwrap()
            .split("listen=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            return format!("http://{address}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no startup line in:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kassa_with_payple(data_dir: &Path, pg: &str, cust_key: &str) -> Command {
    let mut command = kassa(data_dir);
    command
        .env("RUST_LOG", "debug")
        .env("KASSA_GATEWAY__DEFAULT", "payple")
        .env("KASSA_GATEWAY__PAYPLE__BASE_URL", format!("{pg}/payple"))
        .env(
            "KASSA_GATEWAY__PAYPLE__CST_ID",
            kassa::sandbox::SANDBOX_CST_ID,
        )
        .env("KASSA_GATEWAY__PAYPLE__CUST_KEY", cust_key)
        .env(
            "KASSA_GATEWAY__PAYPLE__REFUND_KEY",
            kassa::sandbox::SANDBOX_REFUND_KEY,
        )
        .env("KASSA_GATEWAY__PAYPLE__REFERER", "https://shop.example")
        .env(
            "KASSA_GATEWAY__TOSS__SECRET_KEY",
            "live_sk_never_logged_4242",
        )
        .env(
            "KASSA_GATEWAY__PORTONE__IMP_SECRET",
            "imp_secret_never_logged_4242",
        )
        .env("KASSA_SETTLEMENT_SYNC__PAGE_SIZE", "1")
        .env("KASSA_SETTLEMENT_SYNC__ENABLED", "false")
        .env("KASSA_PARTNER_SETTLEMENT__ENABLED", "false");
    command
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario from start to finish")]
async fn no_secret_or_payer_data_reaches_a_log_line_in_a_full_sync_or_a_failed_auth() {
    let dir = tempfile::tempdir().unwrap();
    let mut sandbox = Command::new(KASSA);
    sandbox
        .args(["sandbox-pg", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut sandbox = sandbox.spawn().unwrap();
    let sandbox_log = collect_stderr(&mut sandbox);
    let pg = wait_for_listen(&sandbox_log).await;
    let mut good = kassa_with_payple(dir.path(), &pg, kassa::sandbox::SANDBOX_CUST_KEY)
        .spawn()
        .unwrap();
    let good_log = collect_stderr(&mut good);
    let base = wait_for_listen(&good_log).await;
    let http = crate::support::http_client();

    // A payment, a refund, and a day's settlement sync of two pages.
    let order = json!({ "order_id": "order-redact-1", "amount": 15000, "name": "원두" });
    let created = http
        .post(format!("{base}/api/orders"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let paid: Value = http
        .post(format!("{pg}/_control/payple/payments"))
        .json(&json!({ "order_id": "order-redact-1", "amount": 15000 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let form = [
        ("PCD_PAY_RST", "success"),
        ("PCD_PAY_OID", "order-redact-1"),
        ("PCD_PAY_TYPE", "card"),
        ("PCD_PAY_TIME", paid["PCD_PAY_TIME"].as_str().unwrap()),
        ("PCD_PAYER_NAME", "홍길동"),
        ("PCD_PAY_CARDNUM", "1234-****-****-5678"),
    ];
    let stored: Value = http
        .post(format!("{base}/api/payment/payple/result"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["status"], "PAID", "{stored}");
    let cancel: Value = http
        .post(format!(
            "{base}/api/payments/{}/cancel",
            stored["payment_id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "redact-1")
        .json(&json!({ "amount": 5000, "reason": "partial" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancel["status"], "PARTIALLY_CANCELLED", "{cancel}");
    let date = paid["PCD_PAY_TIME"].as_str().unwrap()[..8].to_owned();
    let date = format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..]);
    let lines = json!({ "provider": "payple", "date": date, "records": [
        { "order_id": "order-redact-1", "amount": 15000 },
        { "order_id": "order-nobody-9", "amount": 700 },
    ]});
    http.post(format!("{pg}/_control/settlements"))
        .json(&lines)
        .send()
        .await
        .unwrap();
    let report: Value = http
        .post(format!("{base}/api/admin/settlement-sync/run"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "provider": "payple", "date": date }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            report["updated"].as_u64(),
            report["missing"].as_u64(),
            report["complete"].as_bool()
        ),
        (Some(1), Some(1), Some(true)),
        "{report}"
    );

    // A second kassa with a wrong partner key: its auth fails.
    let other = tempfile::tempdir().unwrap();
    let mut bad = kassa_with_payple(other.path(), &pg, "wrong_cust_key_never_logged_77")
        .spawn()
        .unwrap();
    let bad_log = collect_stderr(&mut bad);
    let bad_base = wait_for_listen(&bad_log).await;
    let failed: Value = http
        .post(format!("{bad_base}/api/admin/settlement-sync/run"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "provider": "payple", "date": date }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(failed["failed"], 1, "{failed}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let auth_keys: Value = http
        .get(format!("{pg}/_control/payple/auth-keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut secrets: Vec<String> = auth_keys["auth_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key.as_str().unwrap().to_owned())
        .collect();
    assert!(
        secrets.len() >= 3,
        "check, cancel and settlement keys were issued"
    );
    secrets.extend(
        [
            kassa::sandbox::SANDBOX_CST_ID,
            kassa::sandbox::SANDBOX_CUST_KEY,
            kassa::sandbox::SANDBOX_REFUND_KEY,
            "wrong_cust_key_never_logged_77",
            "live_sk_never_logged_4242",
            "imp_secret_never_logged_4242",
            ADMIN_TOKEN,
            "홍길동",
            "1234-****-****-5678",
            "lk_1",
        ]
        .map(str::to_owned),
    );
    let logs = format!("{}\n{}", good_log.lock().unwrap(), bad_log.lock().unwrap());
    assert!(
        logs.contains("settlement sync finished"),
        "the summary line is there:\n{logs}"
    );
    assert!(
        logs.contains("partner authentication"),
        "the failed auth is logged:\n{logs}"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret} appears in the logs:\n{logs}"
        );
    }
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario from start to finish")]
async fn a_payple_refund_cut_off_by_sigkill_is_never_sent_again_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, pg) = spawn_sandbox().await;
    let with_payple = |data_dir: &Path| {
        let mut command = kassa_with_payple(data_dir, &pg, kassa::sandbox::SANDBOX_CUST_KEY);
        command
            .env("RUST_LOG", "info")
            .env("KASSA_RETRY__INLINE_ATTEMPTS", "1")
            .env("KASSA_RETRY__TICK_INTERVAL_MS", "100")
            .env("KASSA_RETRY__PG_TIMEOUT_MS", "5000");
        command
    };
    let (mut first, base) = spawn_listening(with_payple(dir.path())).await;
    let http = crate::support::http_client();
    let created = http
        .post(format!("{base}/api/orders"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "order_id": "order-kill-pp", "amount": 20_000, "name": "원두", "provider": "payple" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let paid: Value = http
        .post(format!("{pg}/_control/payple/payments"))
        .json(&json!({ "order_id": "order-kill-pp", "amount": 20_000, "goods": "원두" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let form = [
        ("PCD_PAY_RST", "success".to_owned()),
        ("PCD_PAY_CODE", "PAYN0000".to_owned()),
        ("PCD_PAY_OID", "order-kill-pp".to_owned()),
        ("PCD_PAY_TYPE", "card".to_owned()),
        (
            "PCD_PAY_TIME",
            paid["PCD_PAY_TIME"].as_str().unwrap().to_owned(),
        ),
        ("PCD_PAY_TOTAL", "20000".to_owned()),
    ];
    let payment: Value = http
        .post(format!("{base}/api/payment/payple/result"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payment_id = payment["payment_id"].as_str().unwrap().to_owned();
    // Payple carries the refund out and holds its answer; kassa is killed while it waits.
    let fault = json!({ "endpoint": "payple.cancel", "mode": "lost_response", "count": 1, "hold_ms": 60_000 });
    let response = http
        .post(format!("{pg}/_control/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cancel = {
        let http = http.clone();
        let url = format!("{base}/api/payments/{payment_id}/cancel");
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(ADMIN_TOKEN)
                .header("idempotency-key", "kill-pp")
                .json(&json!({ "amount": 5_000, "reason": "partial" }))
                .send()
                .await
        })
    };
    let refunded = |http: reqwest::Client, pg: String| async move {
        let state: Value = http
            .get(format!("{pg}/_control/payple/payments/order-kill-pp"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state["refunds_executed"].as_u64().unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refunded(http.clone(), pg.clone()).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the refund reached Payple"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await.unwrap();
    first.wait().await.unwrap();
    assert!(
        cancel.await.unwrap().is_err(),
        "the request died with kassa"
    );

    let (_second, base) = spawn_listening(with_payple(dir.path())).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let payment: Value = http
            .get(format!("{base}/api/payments/{payment_id}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = payment["status"].as_str().unwrap().to_owned();
        if status != "CANCEL_REQUESTED" {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted kassa took the cut-off attempt up: {payment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status, "CANCEL_UNKNOWN",
        "the mark of the cut-off attempt makes the next one wait for evidence"
    );
    // However long it runs, the refund is not sent again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(refunded(http.clone(), pg.clone()).await, 1);
    let stats: Value = http
        .get(format!("{pg}/_control/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["calls"]["payple.cancel"], 1, "{stats}");
}

#[tokio::test]
async fn kassa_backup_copies_a_running_server_through_its_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start(dir.path()).await;
    let http = crate::support::http_client();
    let created = http
        .post(format!("{base}/api/orders"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "order_id": "order-online-backup", "amount": 1_000, "name": "원두" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("kassa.redb");
    let copied = Command::new(KASSA)
        .args(["backup", "--out"])
        .arg(&file)
        .args(["--url", &base, "--token", ADMIN_TOKEN])
        .output()
        .await
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(String::from_utf8_lossy(&copied.stdout).contains("copied"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let restored = kassa::store::Store::open(out.path(), || [0; 32]).unwrap();
    let order = restored
        .order(&kassa::domain::OrderId::parse("order-online-backup").unwrap())
        .await
        .unwrap();
    assert!(order.is_some());
    // A wrong token is refused with the server's answer, and nothing is written.
    let refused = Command::new(KASSA)
        .args(["backup", "--out"])
        .arg(out.path().join("other.redb"))
        .args(["--url", &base, "--token", "not-the-token-0000000"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    assert!(!out.path().join("other.redb").exists());
    child.kill().await.unwrap();
}

#[tokio::test]
async fn kassa_sync_runs_a_range_of_days_through_the_running_server_one_report_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start(dir.path()).await;
    let today = kassa::domain::calendar::kst_date(kassa::clock::Env::system().now());
    let (from, to) = (today - chrono::Days::new(3), today - chrono::Days::new(1));
    let output = Command::new(KASSA)
        .args(["sync", "--provider", "toss", "--from"])
        .arg(from.to_string())
        .arg("--to")
        .arg(to.to_string())
        .args(["--url", &base, "--token", ADMIN_TOKEN])
        .env_remove("KASSA_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let days: Vec<String> = reports
        .iter()
        .map(|report| report["date"].as_str().unwrap().to_owned())
        .collect();
    let wanted: Vec<String> = from.iter_days().take(3).map(|d| d.to_string()).collect();
    assert_eq!(days, wanted);
    assert!(reports.iter().all(|report| report["complete"] == true));
    // A wrong token is a clear failure, not a hang.
    let refused = Command::new(KASSA)
        .args(["sync", "--provider", "toss", "--from"])
        .arg(from.to_string())
        .arg("--to")
        .arg(from.to_string())
        .args(["--url", &base, "--token", "not-the-token-at-all"])
        .env_remove("KASSA_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    terminate(&mut child).await;
}

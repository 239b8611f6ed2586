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

fn kassa(data_dir: &Path) -> Command {
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
    let mut child = kassa(data_dir).spawn().unwrap();
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
    let http = reqwest::Client::new();
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
    let (_again, base) = start(dir.path()).await;
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
        "[gateway.portone]\nimp_secret = \"super-secret-value\"\n",
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

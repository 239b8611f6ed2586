//! `startup`: from exec to `/healthz`, and the idle resident memory.

use super::{TOKEN, figure, private_tempdir};
use crate::bench::Options;
use crate::bench::driver::rss_of;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Most time `startup` waits for `/healthz`.
const STARTUP_WAIT: Duration = Duration::from_secs(20);

/// From exec to `/healthz` answering, and the resident memory once idle, over `n` starts of
/// the `kassa` binary on a new data directory each.
pub async fn startup(options: &Options) -> Result<Value, String> {
    let n = options.n(5, 2);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|error| error.to_string())?;
    let mut starts = Vec::with_capacity(n);
    let mut idle = Vec::with_capacity(n);
    let mut verified = true;
    for _ in 0..n {
        let dir = private_tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| error.to_string())?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let began = Instant::now();
        let mut child = tokio::process::Command::new(&options.exe)
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(dir.path())
            .env("KASSA_ADMIN__TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", options.exe.display()))?;
        let url = format!("http://{listen}/healthz");
        let mut healthy = false;
        while began.elapsed() < STARTUP_WAIT {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let startup = began.elapsed();
        verified &= healthy;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(pid) = child.id() {
            idle.push(rss_of(pid));
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        verified &= matches!(exit, Ok(Ok(status)) if status.success());
        starts.push(startup.as_secs_f64() * 1000.0);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(figure(
        "startup",
        n,
        1,
        verified,
        &json!({
            "startup_ms": (median(&mut starts) * 10.0).round() / 10.0,
            "idle_rss_mb": median(&mut idle),
        }),
    ))
}

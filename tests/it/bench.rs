//! `kassa bench all --quick`: every scenario runs through the real paths and verifies. The
//! figures are printed, not checked (performance is measured by `kassa bench`, not by tests).

use serde_json::Value;

#[tokio::test]
async fn every_bench_scenario_runs_and_verifies() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
        .args(["bench", "all", "--quick", "--json"])
        .env_remove("KASSA_CONFIG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let fields = [
        (
            "orders",
            &["orders_per_s", "p50_ms", "p99_ms", "p999_ms"][..],
        ),
        ("ingest", &["payments_per_s", "p50_ms", "p99_ms"][..]),
        ("cancel", &["cancels_per_s", "p99_ms"][..]),
        ("queue", &["jobs_per_s"][..]),
        ("reconcile", &["lines_per_s", "peak_rss_mb"][..]),
        ("partner", &["seconds", "peak_rss_mb"][..]),
        ("pages", &["requests_per_s"][..]),
        ("startup", &["startup_ms", "idle_rss_mb"][..]),
    ];
    assert_eq!(figures.len(), fields.len(), "{stdout}");
    for ((scenario, names), figure) in fields.iter().zip(&figures) {
        assert_eq!(figure["scenario"], *scenario, "{figure}");
        assert_eq!(figure["verified"], true, "{figure}");
        for name in *names {
            assert!(
                figure[*name].as_f64().is_some_and(|value| value > 0.0),
                "{scenario} has no {name}: {figure}"
            );
        }
    }
}

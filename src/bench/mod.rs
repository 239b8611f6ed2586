//! `kassa bench`: each scenario starts kassa in this process on a temporary data directory with
//! the sandbox PG (mounted on the same loopback server, so every PG call is real HTTP), drives
//! the real paths, checks the result, and answers one JSON object of figures.
//!
//! Invariant: a figure is measured, never estimated, and a scenario whose result does not check
//! out says `"verified": false` (and `kassa bench` exits non-zero).

mod driver;
mod scenarios;

pub use driver::{Latencies, peak_rss_mb, reset_peak};

use serde_json::Value;

/// The scenarios, in the order `all` runs them.
pub const SCENARIOS: [&str; 8] = [
    "orders",
    "ingest",
    "cancel",
    "queue",
    "reconcile",
    "partner",
    "pages",
    "startup",
];

/// What the command line asks of a run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Items per scenario; each scenario has its own default.
    pub n: Option<usize>,
    /// Clients at once; each scenario has its own default.
    pub concurrency: Option<usize>,
    /// Small sizes: proves every scenario runs and verifies, in seconds.
    pub quick: bool,
    /// The `kassa` executable, for `startup`.
    pub exe: std::path::PathBuf,
}

impl Options {
    fn n(&self, full: usize, quick: usize) -> usize {
        self.n
            .unwrap_or(if self.quick { quick } else { full })
            .max(1)
    }

    fn concurrency(&self, default: usize) -> usize {
        self.concurrency.unwrap_or(default).clamp(1, 4_096)
    }
}

/// Runs one scenario (or `all`), answering one figures object per scenario run.
pub async fn run(scenario: &str, options: &Options) -> Result<Vec<Value>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let names: Vec<&str> = if scenario == "all" {
        SCENARIOS.to_vec()
    } else if SCENARIOS.contains(&scenario) {
        vec![scenario]
    } else {
        return Err(format!(
            "unknown scenario {scenario:?}; one of {} or all",
            SCENARIOS.join(", ")
        ));
    };
    let mut figures = Vec::with_capacity(names.len());
    for name in names {
        let figure = match name {
            "orders" => scenarios::orders(options).await?,
            "ingest" => scenarios::ingest(options).await?,
            "cancel" => scenarios::cancel(options).await?,
            "queue" => scenarios::queue(options).await?,
            "reconcile" => scenarios::reconcile(options).await?,
            "partner" => scenarios::partner(options).await?,
            "pages" => scenarios::pages(options).await?,
            _ => scenarios::startup(options).await?,
        };
        figures.push(figure);
    }
    Ok(figures)
}

/// One line for a person: the scenario's main figures.
pub fn summary(figure: &Value) -> String {
    let name = figure["scenario"].as_str().unwrap_or("?");
    let mut parts = Vec::new();
    if let Some(object) = figure.as_object() {
        for (key, value) in object {
            if matches!(
                key.as_str(),
                "scenario" | "verified" | "pg" | "n" | "concurrency" | "notes"
            ) {
                continue;
            }
            parts.push(format!("{key} {value}"));
        }
    }
    let verified = if figure["verified"] == Value::Bool(true) {
        "verified"
    } else {
        "NOT VERIFIED"
    };
    format!(
        "{name}: {} (n {}, concurrency {}) {verified}",
        parts.join(", "),
        figure["n"],
        figure["concurrency"]
    )
}

/// The machine a run is on, for the results file: kernel, cores and CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(
        |_| std::env::consts::OS.to_owned(),
        |text| text.trim().to_owned(),
    );
    format!("{cores} cores, {model}, Linux {kernel}")
}

/// Appends a run to the results file (Markdown): a heading with the date, the commit and the
/// machine, then one row per scenario with its figures.
pub fn append_results(
    path: &std::path::Path,
    figures: &[Value],
    quick: bool,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |output| String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        );
    let date = crate::clock::Env::system()
        .now()
        .format("%Y-%m-%d %H:%M UTC");
    let mut text = format!(
        "\n### {date} · commit {commit}{} · {}\n\n| scenario | n | concurrency | figures | verified |\n|---|---|---|---|---|\n",
        if quick { " · quick" } else { "" },
        machine()
    );
    for figure in figures {
        let mut shown = serde_json::Map::new();
        if let Some(object) = figure.as_object() {
            for (key, value) in object {
                if !matches!(
                    key.as_str(),
                    "scenario" | "n" | "concurrency" | "verified" | "pg"
                ) {
                    shown.insert(key.clone(), value.clone());
                }
            }
        }
        let _ = writeln!(
            text,
            "| {} | {} | {} | `{}` | {} |",
            figure["scenario"].as_str().unwrap_or("?"),
            figure["n"],
            figure["concurrency"],
            Value::Object(shown),
            figure["verified"]
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

//! The load driver of the benchmarks: a fixed number of clients pulling work items until all
//! are done, each item timed; latency percentiles; the process's peak memory.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Latencies of the items of one run, in microseconds, sorted.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    micros: Vec<u64>,
}

impl Latencies {
    pub fn from_micros(mut micros: Vec<u64>) -> Latencies {
        micros.sort_unstable();
        Latencies { micros }
    }

    /// The `q` quantile (0..=1) in milliseconds, rounded to hundredths.
    pub fn ms(&self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        let last = self.micros.len() - 1;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into the sorted latencies"
        )]
        let index = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
        #[expect(clippy::cast_precision_loss, reason = "a latency in milliseconds")]
        let ms = self.micros[index.min(last)] as f64 / 1_000.0;
        (ms * 100.0).round() / 100.0
    }
}

/// What a driven run measured.
#[derive(Debug)]
pub struct Driven {
    pub elapsed: Duration,
    pub latencies: Latencies,
    pub failures: usize,
    pub first_failure: Option<String>,
}

impl Driven {
    /// Items per second over the whole run, rounded.
    pub fn rate(&self, items: usize) -> f64 {
        rate(items, self.elapsed)
    }
}

/// `items` per second over `elapsed`, rounded to a whole number.
pub fn rate(items: usize, elapsed: Duration) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let per_second = items as f64 / elapsed.as_secs_f64().max(1e-9);
    per_second.round()
}

/// Runs `work(i)` for every `i < n` on `concurrency` clients at once, timing each item. A
/// progress bar is drawn on a terminal (and nowhere else).
pub async fn drive<F, Fut>(label: &str, n: usize, concurrency: usize, work: F) -> Driven
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let bar = progress(label, n);
    let started = Instant::now();
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.min(n.max(1)) {
        let (work, next, bar) = (Arc::clone(&work), Arc::clone(&next), bar.clone());
        clients.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            let mut failures = 0;
            let mut first_failure = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let began = Instant::now();
                let outcome = work(i).await;
                micros.push(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
                if let Err(error) = outcome {
                    failures += 1;
                    first_failure.get_or_insert(error);
                }
                bar.inc(1);
            }
            (micros, failures, first_failure)
        }));
    }
    let mut micros = Vec::with_capacity(n);
    let mut failures = 0;
    let mut first_failure = None;
    for client in clients {
        match client.await {
            Ok((mut some, failed, first)) => {
                micros.append(&mut some);
                failures += failed;
                if first_failure.is_none() {
                    first_failure = first;
                }
            }
            Err(error) => {
                failures += 1;
                first_failure.get_or_insert(format!("a client task failed: {error}"));
            }
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Driven {
        elapsed,
        latencies: Latencies::from_micros(micros),
        failures,
        first_failure,
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub fn progress(label: &str, n: usize) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(u64::try_from(n).unwrap_or(u64::MAX));
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len} {per_sec}")
    {
        bar.set_style(style);
    }
    bar.set_message(label.to_owned());
    bar
}

/// A `/proc/self/status` figure in MiB (Linux): `VmHWM:` is the peak, `VmRSS:` the current.
pub fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    (kib / 1024.0 * 10.0).round() / 10.0
}

/// The peak resident memory since the last `reset_peak`, in MiB.
pub fn peak_rss_mb() -> f64 {
    status_mib("VmHWM:")
}

/// Starts a new peak measurement (Linux: writing 5 to `clear_refs` resets `VmHWM`).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The resident memory of process `pid` in MiB (Linux).
pub fn rss_of(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    (kib / 1024.0 * 10.0).round() / 10.0
}

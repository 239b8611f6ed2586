//! Logging: human-readable lines on stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Invariant: secrets never reach a log line; they are `Secret`s, which print `[REDACTED]`.

use tracing_subscriber::EnvFilter;

/// Starts logging: `json` writes one JSON object a line (with the request's span and its id),
/// else text for people.
pub fn init(json: bool) {
    init_at(json, "info");
}

/// `init` with the level used when `RUST_LOG` says nothing (`kassa bench` keeps to warnings).
pub fn init_at(json: bool, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

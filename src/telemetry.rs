//! Logging: human-readable lines on stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Invariant: secrets never reach a log line; they are `Secret`s, which print `[REDACTED]`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

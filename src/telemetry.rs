//! Logging: human-readable lines on stderr, filtered by `RUST_LOG` (default `info`).
//!
//! `RUST_LOG` takes comma-separated `level` and `target=level` directives (`warn,kassa=debug`);
//! one that does not parse leaves the default. The filter matches targets by prefix, without
//! regular expressions, so nothing is compiled when kassa starts.
//!
//! Invariant: secrets never reach a log line; they are `Secret`s, which print `[REDACTED]`.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Starts logging: `json` writes one JSON object a line (with the request's span and its id),
/// else text for people.
pub fn init(json: bool) {
    init_at(json, "info");
}

/// The filter `RUST_LOG` asks for, or `default_level` when it is unset, empty or unreadable.
fn filter(rust_log: Option<&str>, default_level: &str) -> Targets {
    rust_log
        .map(str::trim)
        .filter(|raw| !raw.is_empty())
        .and_then(|raw| raw.parse().ok())
        .or_else(|| default_level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

/// `init` with the level used when `RUST_LOG` says nothing (`kassa bench` keeps to warnings).
pub fn init_at(json: bool, default_level: &str) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), default_level);
    if json {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr);
        let _ = tracing_subscriber::registry()
            .with(layer)
            .with(filter)
            .try_init();
        return;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::filter;
    use tracing::Level;

    #[test]
    fn rust_log_directives_set_levels_by_target_prefix() {
        let filter = filter(Some("warn,kassa=debug"), "info");
        assert!(filter.would_enable("kassa::app", &Level::DEBUG));
        assert!(!filter.would_enable("kassa::app", &Level::TRACE));
        assert!(filter.would_enable("hyper::proto", &Level::WARN));
        assert!(!filter.would_enable("hyper::proto", &Level::INFO));
    }

    #[test]
    fn an_unset_empty_or_unreadable_rust_log_leaves_the_default_level() {
        for rust_log in [
            None,
            Some(""),
            Some("  "),
            Some("kassa=loud"),
            Some("info,hyper=lots"),
        ] {
            let filter = filter(rust_log, "warn");
            assert!(
                filter.would_enable("kassa::app", &Level::WARN),
                "{rust_log:?}"
            );
            assert!(
                !filter.would_enable("kassa::app", &Level::INFO),
                "{rust_log:?}"
            );
        }
    }
}

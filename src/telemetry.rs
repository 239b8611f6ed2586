//! Logging: human-readable lines on stderr, filtered by `RUST_LOG` (default `info`).
//!
//! `RUST_LOG` takes comma-separated `level` and `target=level` directives (`warn,kassa=debug`),
//! a target matching by prefix; a value that does not parse leaves the default. The filter is
//! tracing's `Targets`: no span or field filters, so no matcher code in the binary or at start.
//!
//! Invariant: secrets never reach a log line; they are `Secret`s, which print `[REDACTED]`.

use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Starts logging: `json` writes one JSON object a line (with the request's span and its id),
/// else text for people.
pub fn init(json: bool) {
    init_at(json, "info");
}

/// `init` with the level used when `RUST_LOG` says nothing (`kassa bench` keeps to warnings).
pub fn init_at(json: bool, default_level: &str) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), default_level);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = subscriber(json, ansi, filter, std::io::stderr).try_init();
}

/// The filter `RUST_LOG` asks for, or `default_level` when it is unset, empty or unreadable.
/// Empty directives (`warn,`) are skipped; a span or field filter (`kassa[request]=debug`),
/// which `Targets` would take for a target name and so log nothing, counts as unreadable.
fn filter(rust_log: Option<&str>, default_level: &str) -> Targets {
    let directives = rust_log
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .collect::<Vec<_>>();
    let readable = !directives.is_empty()
        && directives
            .iter()
            .all(|directive| !directive.contains(['[', ']', '{', '}']));
    readable
        .then(|| directives.join(",").parse().ok())
        .flatten()
        .or_else(|| default_level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

/// The subscriber `init_at` installs, writing to `writer`.
fn subscriber<W>(
    json: bool,
    ansi: bool,
    filter: Targets,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    if json {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer);
        return Box::new(tracing_subscriber::registry().with(layer).with(filter));
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    Box::new(tracing_subscriber::registry().with(layer).with(filter))
}

#[cfg(test)]
mod tests {
    use super::{filter, subscriber};
    use std::sync::{Arc, Mutex};
    use tracing::Level;

    #[test]
    fn rust_log_directives_set_levels_by_target_prefix() {
        for rust_log in [
            "warn,kassa=debug",
            "warn,,kassa=debug,",
            " warn , kassa=debug ",
        ] {
            let filter = filter(Some(rust_log), "info");
            assert!(
                filter.would_enable("kassa::app", &Level::DEBUG),
                "{rust_log}"
            );
            assert!(
                !filter.would_enable("kassa::app", &Level::TRACE),
                "{rust_log}"
            );
            assert!(
                filter.would_enable("hyper::proto", &Level::WARN),
                "{rust_log}"
            );
            assert!(
                !filter.would_enable("hyper::proto", &Level::INFO),
                "{rust_log}"
            );
        }
    }

    #[test]
    fn an_unset_empty_or_unreadable_rust_log_leaves_the_default_level() {
        for rust_log in [
            None,
            Some(""),
            Some(" , "),
            Some("kassa=loud"),
            Some("info,hyper=lots"),
            Some("kassa[request]=debug"),
            Some("[{id=7}]=trace"),
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

    /// Lines written by a subscriber, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl tracing_subscriber::fmt::MakeWriter<'_> for Lines {
        type Writer = Lines;
        fn make_writer(&self) -> Lines {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_the_request_span_and_keep_to_the_filter() {
        let lines = Lines::default();
        let installed = subscriber(
            true,
            false,
            filter(Some("warn,kassa=info"), "info"),
            lines.clone(),
        );
        tracing::subscriber::with_default(installed, || {
            let span = tracing::info_span!(target: "kassa::http", "request", id = "req-7");
            let _entered = span.enter();
            tracing::info!(target: "kassa::flows", "kept");
            tracing::debug!(target: "kassa::flows", "below kassa's level");
            tracing::info!(target: "hyper::proto", "below the default level");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let logged: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(logged.len(), 1, "{text}");
        assert_eq!(logged[0]["fields"]["message"], "kept", "{text}");
        assert_eq!(logged[0]["span"]["id"], "req-7", "{text}");
        assert_eq!(logged[0]["span"]["name"], "request", "{text}");
    }
}

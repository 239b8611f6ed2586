//! The `kassa` command: parse the command line, load the config, and hand over to `app`.

use clap::{Parser, Subcommand};
use kassa::app;
use kassa::clock::Env;
use kassa::config::{Config, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of the system allocator: kassa's request path allocates from many threads at
/// once, and glibc's arenas contend under that load (`kassa bench orders` showed a tenth of its
/// time in their locks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kassa",
    version,
    about = "Card payments through Korean PGs, refunded exactly once, settled daily.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Plain `kassa` takes the flags of `kassa serve`.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything: the web server, the pages, the API and the sandbox PG (the default).
    Serve(ServeArgs),
    /// Run the sandbox PG alone.
    SandboxPg {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
    },
    /// Copy the database consistently while no server holds it.
    Backup {
        #[arg(long)]
        out: PathBuf,
        /// A running kassa to copy from (online backup; needs the admin API's backup endpoint).
        #[arg(long, requires = "token")]
        url: Option<String>,
        /// The admin token of the running kassa.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, env = "KASSA_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Sync the PG's settlement of past days through a running kassa, one day at a time.
    Sync {
        #[arg(long, value_parser = ["payple", "toss"])]
        provider: String,
        /// The first KST day, YYYY-MM-DD.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// The last KST day, YYYY-MM-DD.
        #[arg(long)]
        to: chrono::NaiveDate,
        /// The running kassa (default: the config's `listen`).
        #[arg(long)]
        url: Option<String>,
        /// Its admin token (default: the config's, or the one kept in the data folder).
        #[arg(long)]
        token: Option<String>,
        #[arg(long, env = "KASSA_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run a benchmark scenario in this process against the sandbox PG, verify it, and print
    /// its figures as one JSON line (`all` runs every scenario).
    Bench {
        /// orders, ingest, cancel, queue, reconcile, partner, pages, startup or all.
        scenario: String,
        /// Items in the scenario (each has its own default).
        #[arg(long)]
        n: Option<usize>,
        /// Clients at once (each scenario has its own default).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Small sizes: proves every scenario runs and verifies.
        #[arg(long)]
        quick: bool,
        /// Only the JSON lines on stdout; no summary on stderr.
        #[arg(long)]
        json: bool,
        /// Also append the figures to this results file (benches/RESULTS.md).
        #[arg(long)]
        append: Option<PathBuf>,
    },
    /// Validate the config and print it with secrets redacted.
    CheckConfig {
        #[arg(long, env = "KASSA_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// The TOML config file (also `KASSA_CONFIG`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The address to listen on, such as 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// The folder that holds kassa.redb.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How log lines are written: `text` for people, `json` (one object a line) for collectors.
    #[arg(long, env = "KASSA_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
}

/// The exit status when the data file refused writes after a storage fault: non-zero, so that
/// systemd (`Restart=on-failure`) starts kassa again, and apart from other failures (1) and a bad
/// config (2), so that an operator can tell them apart.
const EXIT_STORAGE_REFUSED: u8 = 3;

fn load(overrides: &Overrides) -> Result<Config, ExitCode> {
    Config::load(overrides).map_err(|error| {
        eprintln!("kassa: {error}");
        ExitCode::from(2)
    })
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per command, read top to bottom"
)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = match &cli.command {
        Some(Command::Serve(args)) => args.log_format.as_deref() == Some("json"),
        None => cli.serve.log_format.as_deref() == Some("json"),
        _ => std::env::var("KASSA_LOG_FORMAT").is_ok_and(|format| format == "json"),
    };
    let level = if matches!(cli.command, Some(Command::Bench { .. })) {
        "warn"
    } else {
        "info"
    };
    kassa::telemetry::init_at(json_logs, level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kassa: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => {
            let overrides = Overrides {
                config_file: args.config,
                listen: args.listen,
                data_dir: args.data_dir,
            };
            let config = match load(&overrides) {
                Ok(config) => config,
                Err(code) => return code,
            };
            runtime.block_on(app::serve(config, Env::system()))
        }
        Command::SandboxPg { listen } => {
            runtime.block_on(app::serve_sandbox(&listen, Env::system()))
        }
        Command::Backup {
            out,
            url,
            token,
            config,
            data_dir,
        } => {
            if let (Some(url), Some(token)) = (url, token) {
                let token = kassa::secret::Secret::new(token);
                return match runtime.block_on(app::backup_from_server(&url, &token, &out)) {
                    Ok(bytes) => {
                        println!("kassa: copied {bytes} bytes to {}", out.display());
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("kassa: {error}");
                        ExitCode::FAILURE
                    }
                };
            }
            let config = match load(&Overrides {
                config_file: config,
                listen: None,
                data_dir,
            }) {
                Ok(config) => config,
                Err(code) => return code,
            };
            runtime
                .block_on(app::backup_file(
                    &config.data_dir,
                    &out,
                    Env::system().now(),
                ))
                .map(|bytes| println!("kassa: copied {bytes} bytes to {}", out.display()))
        }
        Command::Sync {
            provider,
            from,
            to,
            url,
            token,
            config,
            data_dir,
        } => {
            let config = match load(&Overrides {
                config_file: config,
                listen: None,
                data_dir,
            }) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let (url, token) = match app::server_of(&config, url, token) {
                Ok(server) => server,
                Err(error) => {
                    eprintln!("kassa: {error}; give --token");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(app::sync_through_server(&url, &token, &provider, from, to)) {
                Ok(0) => Ok(()),
                Ok(failed) => {
                    eprintln!(
                        "kassa: {failed} day(s) had a page that failed; run the same command again to go on"
                    );
                    return ExitCode::FAILURE;
                }
                Err(error) => Err(error),
            }
        }
        Command::Bench {
            scenario,
            n,
            concurrency,
            quick,
            json,
            append,
        } => {
            return bench(
                &runtime,
                &scenario,
                n,
                concurrency,
                quick,
                json,
                append.as_deref(),
            );
        }
        Command::CheckConfig { config } => {
            let config = match load(&Overrides {
                config_file: config,
                ..Overrides::default()
            }) {
                Ok(config) => config,
                Err(code) => return code,
            };
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ app::AppError::StorageRefused { .. }) => {
            eprintln!("kassa: {error}");
            ExitCode::from(EXIT_STORAGE_REFUSED)
        }
        Err(error) => {
            eprintln!("kassa: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `kassa bench`: runs, prints one JSON line per scenario (and a summary on stderr), appends to
/// the results file when asked, and exits non-zero unless every scenario verified.
fn bench(
    runtime: &tokio::runtime::Runtime,
    scenario: &str,
    n: Option<usize>,
    concurrency: Option<usize>,
    quick: bool,
    json: bool,
    append: Option<&std::path::Path>,
) -> ExitCode {
    let options = kassa::bench::Options {
        n,
        concurrency,
        quick,
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kassa")),
    };
    let figures = match runtime.block_on(kassa::bench::run(scenario, &options)) {
        Ok(figures) => figures,
        Err(error) => {
            eprintln!("kassa: bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut all_verified = true;
    for figure in &figures {
        all_verified &= figure["verified"] == serde_json::Value::Bool(true);
        if !json {
            eprintln!("{}", kassa::bench::summary(figure));
        }
        println!("{figure}");
    }
    if let Some(path) = append
        && let Err(error) = kassa::bench::append_results(path, &figures, quick)
    {
        eprintln!("kassa: cannot append to {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    if all_verified {
        ExitCode::SUCCESS
    } else {
        eprintln!("kassa: a scenario did not verify");
        ExitCode::FAILURE
    }
}

//! Wiring: opens the store, binds the listener, builds the gateways and the router, and runs
//! them under one `CancellationToken` until shutdown.
//!
//! Invariant: kassa is a function of its config, its environment (clock, randomness) and a
//! listener; tests build it on port 0 exactly as `serve` does.

use crate::clock::Env;
use crate::config::{Config, GatewayMode};
use crate::flows::Kassa;
use crate::gateway::payple::PaypleGateway;
use crate::gateway::portone::PortOneGateway;
use crate::gateway::toss::TossGateway;
use crate::gateway::{Gateways, client};
use crate::http::state::AppState;
use crate::sandbox::{self, Sandbox};
use crate::secret::Secret;
use crate::store::{StorageFaults, Store, StoreError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Name of the file in `data_dir` that keeps a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source} (is another program using the port?)")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot keep the admin token in {path}: {source}")]
    AdminToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy the data file to {path}: {source}")]
    Backup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("there is no data file at {0}; check --data-dir")]
    NoDataFile(PathBuf),
    #[error("cannot build the PG client: {0}")]
    Client(String),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    /// The store refuses writes after a storage fault: kassa stopped so that it is restarted.
    #[error(
        "the data file refuses writes after a storage fault ({reason}); kassa stopped so that it can be restarted (every write it answered is on disk)"
    )]
    StorageRefused { reason: String },
}

/// A built, not yet running kassa.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    sandbox: Option<Arc<Sandbox>>,
    shutdown: CancellationToken,
    generated_token: Option<PathBuf>,
    /// Whether `run` starts the retry worker and the alert sender; tests step them by hand.
    background: bool,
}

/// The admin token: the configured one, else the one kept in `data_dir`, else a new one written
/// there with mode 0600. Returns the path when a new one was made, so it can be printed once.
fn admin_token(config: &Config, env: &Env) -> Result<(Secret, Option<PathBuf>), AppError> {
    if let Some(token) = &config.admin_token {
        return Ok((token.clone(), None));
    }
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    let error = |source| AppError::AdminToken {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((Secret::new(text.trim()), None)),
        Ok(_) => {}
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(error(source)),
    }
    let token = env.random_hex(24);
    write_private(&path, &token).map_err(error)?;
    Ok((Secret::new(token), Some(path)))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Opens the store of `config.data_dir` with the environment's clock (which stamps storage
/// faults) and randomness (which makes a new file's cookie key).
fn open_store(
    config: &Config,
    env: &Env,
    faults: Option<StorageFaults>,
) -> Result<Store, StoreError> {
    let entropy = env.entropy.clone();
    let new_key = move || {
        let mut key = [0u8; 32];
        entropy.fill(&mut key);
        key
    };
    let clock = env.clock.clone();
    match faults {
        None => Store::open_with_clock(&config.data_dir, clock, new_key),
        Some(faults) => Store::open_with_faults(&config.data_dir, clock, faults, new_key),
    }
}

/// The address a local client uses to reach a listener bound to `addr`.
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

impl App {
    pub async fn build(config: Config, env: Env) -> Result<App, AppError> {
        App::build_on(config, env, None).await
    }

    /// For tests of storage faults only: `build` on a store whose writes, syncs and commits fail
    /// when `faults` says so (`Store::open_with_faults`).
    pub async fn build_on_failing_storage(
        config: Config,
        env: Env,
        faults: StorageFaults,
    ) -> Result<App, AppError> {
        App::build_on(config, env, Some(faults)).await
    }

    #[expect(clippy::too_many_lines, reason = "the wiring reads top to bottom")]
    async fn build_on(
        config: Config,
        env: Env,
        faults: Option<StorageFaults>,
    ) -> Result<App, AppError> {
        let store = open_store(&config, &env, faults)?;
        let released = store.release_leases(env.now()).await?;
        if released > 0 {
            tracing::warn!(
                jobs = released,
                "jobs held by a kassa that stopped mid-attempt are due now; their attempt marks make the next attempts ask the PG first"
            );
        }
        let (admin_token, generated_token) = admin_token(&config, &env)?;
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| AppError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let reachable = loopback(local_addr);
        let public_base_url = config
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{reachable}"));
        let http = client::build(config.retry.pg_timeout).map_err(AppError::Client)?;
        let shutdown = CancellationToken::new();
        let (gateways, sandbox) = match config.gateway.mode {
            GatewayMode::Sandbox => {
                let portone = PortOneGateway::new(
                    http.clone(),
                    &format!("http://{reachable}/sandbox-pg/portone"),
                    Secret::new(sandbox::SANDBOX_IMP_KEY),
                    Secret::new(sandbox::SANDBOX_IMP_SECRET),
                    env.clock.clone(),
                );
                let toss = TossGateway::new(
                    http.clone(),
                    &format!("http://{reachable}/sandbox-pg/toss"),
                    &Secret::new(sandbox::SANDBOX_TOSS_SECRET_KEY),
                    env.clock.clone(),
                    config.settlement_sync.page_interval,
                );
                let sandbox = Sandbox::new(
                    env.clock.clone(),
                    env.entropy.clone(),
                    shutdown.clone(),
                    "/sandbox-pg",
                );
                let payple = PaypleGateway::new(
                    http.clone(),
                    &format!("http://{reachable}/sandbox-pg/payple"),
                    Secret::new(sandbox::SANDBOX_CST_ID),
                    Secret::new(sandbox::SANDBOX_CUST_KEY),
                    Secret::new(sandbox::SANDBOX_REFUND_KEY),
                    &public_base_url,
                    env.clock.clone(),
                    config.settlement_sync.page_interval,
                );
                (
                    Gateways::default()
                        .with(Arc::new(portone))
                        .with(Arc::new(toss))
                        .with(Arc::new(payple)),
                    Some(sandbox),
                )
            }
            GatewayMode::Real(_) => {
                let mut gateways = Gateways::default();
                let portone = &config.gateway.portone;
                if !portone.imp_key.is_empty() && !portone.imp_secret.is_empty() {
                    gateways = gateways.with(Arc::new(PortOneGateway::new(
                        http.clone(),
                        &portone.base_url,
                        portone.imp_key.clone(),
                        portone.imp_secret.clone(),
                        env.clock.clone(),
                    )));
                }
                let toss = &config.gateway.toss;
                if !toss.secret_key.is_empty() {
                    gateways = gateways.with(Arc::new(TossGateway::new(
                        http.clone(),
                        &toss.base_url,
                        &toss.secret_key,
                        env.clock.clone(),
                        config.settlement_sync.page_interval,
                    )));
                }
                let payple = &config.gateway.payple;
                if !payple.cst_id.is_empty() && !payple.cust_key.is_empty() {
                    gateways = gateways.with(Arc::new(PaypleGateway::new(
                        http.clone(),
                        &payple.base_url,
                        payple.cst_id.clone(),
                        payple.cust_key.clone(),
                        payple.refund_key.clone(),
                        &payple.referer,
                        env.clock.clone(),
                        config.settlement_sync.page_interval,
                    )));
                }
                (gateways, None)
            }
        };
        if gateways.get(crate::domain::Provider::Payple).is_some()
            && !config.settlement_sync.enabled
        {
            tracing::warn!(
                "the settlement sync is disabled: a Payple refund whose outcome is unknown can only be closed by hand (Payple cannot be asked, and its settlement lines are the only evidence kassa reads)"
            );
        }
        let config_rate_limit = config.http.rate_limit;
        let inbox_rate = config.http.webhooks_per_second;
        let mut kassa = Kassa::new(config, store, gateways, env, http.clone());
        kassa.shutdown = shutdown.clone();
        // The re-check sweep queues itself again after each run; this queues the first one
        // (a unique job: nothing changes when it is queued already).
        let first_sweep = kassa.env.now()
            + chrono::TimeDelta::from_std(kassa.config.recheck.interval)
                .unwrap_or(chrono::TimeDelta::minutes(1));
        kassa
            .store
            .enqueue(
                kassa.env.new_uuid().as_u128(),
                crate::domain::Job::Sweep,
                None,
                first_sweep,
            )
            .await?;
        let state = AppState::new(crate::http::state::Shared {
            sandbox: sandbox.is_some(),
            kassa,
            admin_token,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
            shutdown: shutdown.clone(),
            long_polls: Arc::new(tokio::sync::Semaphore::new(
                crate::http::state::LONG_POLL_WAITERS_MAX,
            )),
            limiter: config_rate_limit.map(crate::http::client::limiter),
            inbox: crate::http::client::inbox_limiter(inbox_rate),
            admin_sessions: Arc::default(),
        });
        Ok(App {
            listener,
            local_addr,
            state,
            sandbox,
            shutdown,
            generated_token,
            background: true,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn kassa(&self) -> &Kassa {
        &self.state.kassa
    }

    pub fn admin_token(&self) -> &Secret {
        &self.state.admin_token
    }

    pub fn public_base_url(&self) -> &str {
        &self.state.public_base_url
    }

    /// Cancelling this token shuts kassa down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Leaves the retry worker and the alert sender off, for tests that step them by hand.
    #[must_use]
    pub fn without_background_work(mut self) -> App {
        self.background = false;
        self
    }

    /// The path of an admin token made by this start, if one was.
    pub fn generated_token(&self) -> Option<&Path> {
        self.generated_token.as_deref()
    }

    /// Serves until the shutdown token is cancelled, then gives in-flight requests
    /// `SHUTDOWN_GRACE` to finish. If the store refuses writes first, shuts down the same way and
    /// answers `AppError::StorageRefused`, so that `kassa serve` exits non-zero and is restarted.
    pub async fn run(self) -> Result<(), AppError> {
        let router = crate::http::router(self.state.clone(), self.sandbox.map(sandbox::router));
        let shutdown = self.shutdown.clone();
        let scheduler = self.background.then(|| {
            tokio::spawn(crate::scheduler::run_scheduler(
                self.state.kassa.clone(),
                shutdown.clone(),
            ))
        });
        let worker = self.background.then(|| {
            tokio::spawn(crate::jobs::run_worker(
                self.state.kassa.clone(),
                shutdown.clone(),
            ))
        });
        if let Some(limiter) = self.state.limiter.clone() {
            tokio::spawn(crate::http::client::forget_idle_clients(
                limiter,
                shutdown.clone(),
            ));
        }
        let limits = self.state.kassa.config.http.clone();
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { crate::http::serve::serve(self.listener, router, &limits, shutdown).await }
        });
        let store = self.state.kassa.store.clone();
        let refused = tokio::select! {
            () = shutdown.cancelled() => None,
            fault = store.writes_refused() => Some(fault),
        };
        if let Some(fault) = &refused {
            // Nothing can be stored any more (redb fails every operation until it is reopened),
            // so kassa stops the ordered way; a restart reopens and repairs the file.
            tracing::error!(
                reason = %fault.reason,
                since = %fault.since,
                "the data file refuses writes; kassa is shutting down so that it is restarted"
            );
            shutdown.cancel();
        }
        // One deadline for the whole shutdown (the packaged unit's TimeoutStopSec is longer):
        // the attempts in flight get one attempt's length, everything else shares the grace.
        let attempt_length = crate::flows::cancel::attempt_length(&self.state.kassa);
        let deadline = tokio::time::Instant::now() + attempt_length + SHUTDOWN_GRACE;
        if let Some(scheduler) = scheduler {
            let _ = tokio::time::timeout_at(deadline, scheduler).await;
        }
        if let Some(worker) = worker {
            // The worker claims nothing more; the round it is in ends within one attempt.
            let _ = tokio::time::timeout_at(deadline, worker).await;
        }
        // Attempts and jobs in flight (the worker's and the requests' inline ones) finish: a PG
        // call is never dropped at a deadline shorter than its own timeout. What is still
        // running at the deadline is due again at the next start, and its attempt mark makes
        // the next attempt ask first.
        let tasks = self.state.kassa.tasks.clone();
        tasks.close();
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = tasks.len(),
                "attempts were still running at the shutdown deadline; their marks make the next attempt ask the PG first"
            );
        }
        // The server has had the whole time to finish its requests; a last moment more.
        let server_deadline = deadline.max(tokio::time::Instant::now() + SHUTDOWN_GRACE / 10);
        let served = match tokio::time::timeout_at(server_deadline, server).await {
            Ok(Ok(result)) => result.map_err(AppError::Serve),
            Ok(Err(join)) => Err(AppError::Serve(std::io::Error::other(join.to_string()))),
            Err(_) => {
                tracing::warn!(
                    "in-flight requests did not finish within the shutdown grace; stopping anyway"
                );
                Ok(())
            }
        };
        match refused {
            Some(fault) => {
                if let Err(error) = served {
                    tracing::error!(error = %error, "the server failed while shutting down");
                }
                Err(AppError::StorageRefused {
                    reason: fault.reason,
                })
            }
            None => served,
        }
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(error) => {
                        tracing::error!(error = %error, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        token.cancel();
    });
}

/// `kassa serve`: build, say where it runs, and serve until a signal.
pub async fn serve(config: Config, env: Env) -> Result<(), AppError> {
    let data_file = config.data_file();
    let app = App::build(config, env).await?;
    let mode = match app.kassa().config.gateway.mode {
        GatewayMode::Sandbox => "sandbox".to_owned(),
        GatewayMode::Real(provider) => provider.as_str().to_owned(),
    };
    if let Some(path) = app.generated_token() {
        // Printed once, to the terminal, never to the log: it is the key to the admin API.
        eprintln!(
            "kassa: a new admin token was made and kept in {}:\n  {}",
            path.display(),
            app.admin_token().expose()
        );
    }
    tracing::info!(
        listen = %app.local_addr(),
        url = %app.public_base_url(),
        data_file = %data_file.display(),
        gateway = %mode,
        "kassa is running; open {}/payment",
        app.public_base_url()
    );
    cancel_on_signals(app.shutdown_token());
    app.run().await?;
    tracing::info!("kassa stopped");
    Ok(())
}

/// `kassa sandbox-pg`: the sandbox PG alone, at the root of `listen`.
pub async fn serve_sandbox(listen: &str, env: Env) -> Result<(), AppError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: listen.to_owned(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AppError::Bind {
        addr: listen.to_owned(),
        source,
    })?;
    let shutdown = CancellationToken::new();
    let sandbox = Sandbox::new(env.clock.clone(), env.entropy.clone(), shutdown.clone(), "");
    tracing::info!(listen = %local, "sandbox PG is running; PortOne V1 base URL: http://{}/portone", loopback(local));
    cancel_on_signals(shutdown.clone());
    axum::serve(listener, sandbox::router(sandbox).into_make_service())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(AppError::Serve)
}

/// Longest an online backup may take to arrive.
const BACKUP_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3_600);

/// `kassa backup --url --token`: a consistent copy from a running kassa's admin API, written to
/// `out` (which must not exist, mode 0600), with its progress on standard error.
pub async fn backup_from_server(url: &str, token: &Secret, out: &Path) -> Result<u64, AppError> {
    use std::io::Write;
    let failed = |message: String| AppError::Backup {
        path: out.to_path_buf(),
        source: std::io::Error::other(message),
    };
    let http = client::build(BACKUP_DOWNLOAD_TIMEOUT).map_err(AppError::Client)?;
    let mut response = http
        .get(format!("{}/api/admin/backup", url.trim_end_matches('/')))
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|error| failed(format!("cannot reach {url}: {error}")))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(failed(format!(
            "the server answered {status}: {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    let total = response.content_length();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).map_err(|source| AppError::Backup {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written: u64 = 0;
    let mut shown: u64 = 0;
    // Tenths of a MiB, in whole numbers.
    let mib = |bytes: u64| {
        format!(
            "{}.{}",
            bytes / 1_048_576,
            bytes % 1_048_576 * 10 / 1_048_576
        )
    };
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|error| failed(format!("the download broke off: {error}")))?;
        let Some(chunk) = chunk else { break };
        file.write_all(&chunk).map_err(|source| AppError::Backup {
            path: out.to_path_buf(),
            source,
        })?;
        written += chunk.len() as u64;
        if written - shown >= 1_048_576 {
            shown = written;
            match total {
                Some(total) => eprintln!("kassa: {} of {} MiB", mib(written), mib(total)),
                None => eprintln!("kassa: {} MiB", mib(written)),
            }
        }
    }
    if total.is_some_and(|total| total != written) {
        return Err(failed(format!(
            "the download ended after {written} of {} bytes",
            total.unwrap_or(0)
        )));
    }
    file.sync_all().map_err(|source| AppError::Backup {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(written)
}

/// `kassa backup` without a server: a consistent copy of the data file, taken while holding it.
pub async fn backup_file(
    data_dir: &Path,
    out: &Path,
    taken_at: chrono::DateTime<chrono::Utc>,
) -> Result<u64, AppError> {
    // Opening would create an empty file where there is none: a mistyped directory is refused.
    let file = data_dir.join("kassa.redb");
    if !file.is_file() {
        return Err(AppError::NoDataFile(file));
    }
    let store = Store::open(data_dir, || [0u8; 32])?;
    // The same copy as the online backup: one snapshot, marked as a copy.
    store.backup_to(out, taken_at).await?;
    drop(store);
    std::fs::metadata(out)
        .map(|meta| meta.len())
        .map_err(|source| AppError::Backup {
            path: out.to_path_buf(),
            source,
        })
}

/// Longest one day's sync call may take through the admin API.
const SYNC_DAY_TIMEOUT: Duration = Duration::from_secs(600);
/// How often `kassa sync` asks again while another run holds the lock, and for how long.
const SYNC_BUSY_RETRY: Duration = Duration::from_secs(2);
const SYNC_BUSY_TRIES_MAX: u32 = 300;

/// The admin API's address and token for a command that talks to a running kassa: the ones
/// given, else the config's `listen` and its admin token (configured, or kept in `data_dir`).
pub fn server_of(
    config: &Config,
    url: Option<String>,
    token: Option<String>,
) -> Result<(String, Secret), AppError> {
    let url = url.unwrap_or_else(|| format!("http://{}", config.listen));
    if let Some(token) = token {
        return Ok((url, Secret::new(token)));
    }
    if let Some(token) = &config.admin_token {
        return Ok((url, token.clone()));
    }
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    let token =
        std::fs::read_to_string(&path).map_err(|source| AppError::AdminToken { path, source })?;
    Ok((url, Secret::new(token.trim())))
}

/// `kassa sync`: the settlement sync of every day of `from..=to` through a running kassa's
/// admin API, one day at a time, each report printed as one JSON line as it comes. A day that
/// stops at `max_pages_per_run` is asked again (it goes on from its cursor); another run's lock
/// is waited for. Running it again goes on where it stopped. Returns the days that failed.
pub async fn sync_through_server(
    url: &str,
    token: &Secret,
    provider: &str,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<u32, AppError> {
    let http = client::build(SYNC_DAY_TIMEOUT).map_err(AppError::Client)?;
    let failed = |message: String| AppError::Serve(std::io::Error::other(message));
    if from > to {
        return Err(failed(format!("--from {from} is after --to {to}")));
    }
    let endpoint = format!(
        "{}/api/admin/settlement-sync/run",
        url.trim_end_matches('/')
    );
    let days: Vec<chrono::NaiveDate> = from.iter_days().take_while(|day| *day <= to).collect();
    let total = days.len();
    let mut failed_days = 0;
    for (index, day) in days.into_iter().enumerate() {
        let mut busy = 0;
        let mut runs = 0;
        loop {
            let response = http
                .post(&endpoint)
                .bearer_auth(token.expose())
                .json(&serde_json::json!({ "provider": provider, "date": day.to_string() }))
                .send()
                .await
                .map_err(|error| failed(format!("cannot reach {url}: {error}")))?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            if status == reqwest::StatusCode::CONFLICT
                && body["error"]["code"] == "SYNC_RUNNING"
                && busy < SYNC_BUSY_TRIES_MAX
            {
                busy += 1;
                tokio::time::sleep(SYNC_BUSY_RETRY).await;
                continue;
            }
            if !status.is_success() {
                return Err(failed(format!(
                    "{day}: the server answered {status}: {body}"
                )));
            }
            println!("{body}");
            eprintln!("kassa: {}/{total} {day}", index + 1);
            runs += 1;
            let complete = body["complete"].as_bool().unwrap_or(false);
            let page_failed = body["failed"].as_u64().unwrap_or(0) > 0;
            if page_failed {
                failed_days += 1;
            }
            if complete || page_failed || runs >= crate::flows::settlement::RANGE_RUNS_PER_DAY_MAX {
                break;
            }
        }
    }
    Ok(failed_days)
}

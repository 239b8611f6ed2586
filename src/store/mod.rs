//! The store: the only module that imports redb.
//!
//! Every write goes through one writer thread. It takes every write that is waiting (up to
//! `WRITE_BATCH_MAX`), applies them in order in one redb transaction, commits it durably, and
//! only then answers each caller. A durable commit costs milliseconds, so grouping commits is
//! what lets many payments a second be acknowledged durably. Reads run against committed
//! snapshots: a read of a few keys on the calling task, a read that scans on the blocking pool.
//!
//! Invariants: an answered write is on disk; a write closure returns `Err` only for storage
//! faults (business outcomes are values), and a write that fails is taken out of its batch and
//! the rest re-applied, so one bad request never loses or half-applies another.
//!
//! Storage faults are loud. The writer records every redb error it meets (beginning a
//! transaction, a write, a commit) as the store's `StoreHealth`: `Failing`, with the reason and
//! since when, until a later commit succeeds and makes it `Ok` again. `/healthz` answers 503 while
//! it is not `Ok`, and the fault is logged at most once per `FAULT_LOG_INTERVAL`, not once per
//! failed write. The store *refuses further writes* (`Refused`, for good) when either
//!
//! - redb says so: `PreviousIo` or `DatabaseClosed` (redb 4.6 latches any failed write, sync,
//!   resize or read of the file, and then fails every operation until the database is reopened),
//!   or `LockPoisoned`; or
//! - `WRITE_FAILURES_MAX` write transactions failed in a row (their begin or their commit, with
//!   no commit between), for a refusal redb words otherwise: a failed commit that discarded the
//!   allocator state answers `Corrupted` to every later transaction.
//!
//! After a storage fault the writer begins and aborts one transaction at once (before it answers
//! the failed writes), so a latched fault is known without waiting for the next write. A refusing store answers every write with
//! `StoreError::Refused` without trying it, and `App::run` stops kassa with an error, so that it
//! exits non-zero and systemd restarts it (the reopen repairs the file). Nothing answered is lost
//! by this: a write is answered `Ok` only after its commit is durable, and every other write is
//! answered with an error.

mod admission;
mod alerts;
mod cancels;
mod codec;
mod dead_letters;
mod digest;
mod evidence;
mod intents;
mod migrate;
mod orders;
mod partners;
mod payments;
mod queue;
mod redrive;
mod reports;
#[cfg(test)]
mod roundtrip;
mod sync;
mod tables;
mod tx;

pub use admission::{NewPgPayment, RecordOutcome};
pub use alerts::{Alert, AlertLevel, Delivery};
pub use cancels::{
    AttemptResult, CancelRequest, CancelRequestOutcome, Claim, Claimed, KnownRefund,
    OutsideOutcome, OutsideRefund, UNKNOWN_SYNCS_ALERT,
};
pub use dead_letters::{DeadLetter, UNKNOWN_OUTCOME_JOB};
pub use intents::INTENTS_PER_PAYMENT_MAX;
pub use migrate::SCHEMA_VERSION;
pub use orders::CreateOrderOutcome;
pub use partners::{PartnerSettlement, StatusChange};
pub use payments::{PaymentFilter, PaymentPage, PaymentView, SettlementStatus};
pub use queue::{Gate, InFlight, InFlightGuard, JobClaim, JobOutcome, QueuedJob};
pub use redrive::{Redrive, RedriveOutcome, Resolution};
pub use reports::{
    DayTotal, EXPORT_CHUNK_ROWS, MetricsSnapshot, OrderDetails, TOTALS_SCAN_ROWS_MAX,
};
pub use sync::{Finding, LockOutcome, SettlementRow, SyncCounts, SyncReport};

use crate::clock::{Clock, SystemClock};
use chrono::{DateTime, TimeDelta, Utc};
use redb::{Database, ReadTransaction, ReadableDatabase};
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot, watch};
use tx::Tx;

/// Most writes one transaction commits together.
pub const WRITE_BATCH_MAX: usize = 1_024;
/// Most writes waiting for the writer before callers wait to queue more.
pub const WRITE_QUEUE_DEPTH: usize = 8_192;
/// Write transactions that may fail in a row (begin or commit, the writer's probe included, no
/// commit between) before the store refuses writes although redb did not say it does. redb 4.6
/// latches every I/O fault itself, so this catches only a refusal it words another way; a fault
/// that repeats this often with nothing committed between is not passing.
pub const WRITE_FAILURES_MAX: u32 = 8;
/// How often a storage fault that goes on is logged: once a minute, not once per failed write.
pub const FAULT_LOG_INTERVAL: TimeDelta = TimeDelta::minutes(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data file {0} is locked by another kassa process; stop it first or use another --data-dir"
    )]
    Locked(PathBuf),
    #[error(
        "the data file was written by a newer kassa (schema {found}, this kassa knows up to {supported}); upgrade kassa"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("the store is shut down")]
    Closed,
    /// The write's transaction did not commit (its begin or its commit failed); it was not applied.
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    /// The store refuses writes for good after a storage fault; the write was not tried.
    #[error(
        "the data file refuses writes after a storage fault ({0}); kassa is stopping so that it is restarted"
    )]
    Refused(String),
    #[error("internal error in a store operation: {0}")]
    Bug(String),
}

macro_rules! storage_from {
    ($($error:ty),*) => {
        $(impl From<$error> for StoreError {
            fn from(error: $error) -> StoreError {
                StoreError::Storage(error.into())
            }
        })*
    };
}
storage_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

type Applied = Box<dyn Any + Send>;
type Apply = Box<dyn FnMut(&Tx<'_>) -> Result<Applied, StoreError> + Send>;

struct WriteRequest {
    apply: Apply,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// A handle to the open database. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writes: mpsc::Sender<WriteRequest>,
    changes: watch::Receiver<u64>,
    cookie_key: Arc<[u8; 32]>,
    path: PathBuf,
    in_flight: InFlight,
    health: watch::Receiver<StoreHealth>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// redb's page cache unless told otherwise. redb's own default (1 GiB) lets a growing data file
/// take that much memory; a small merchant's working set is far smaller, and the soak run
/// (README) levels off at 52 MiB with this bound.
pub const CACHE_BYTES_DEFAULT: usize = 32 * 1024 * 1024;

impl Store {
    /// Opens (or creates) `data_dir/kassa.redb`, refusing a file another process holds or a
    /// newer kassa wrote. `new_key` makes the cookie signing key of a new file. Storage faults
    /// are stamped with the system clock.
    pub fn open(data_dir: &Path, new_key: impl FnOnce() -> [u8; 32]) -> Result<Store, StoreError> {
        Store::open_on(data_dir, None, Arc::new(SystemClock), None, new_key)
    }

    /// `open` with redb's page cache bounded to `cache_bytes` (`CACHE_BYTES_DEFAULT` when `None`).
    pub fn open_with_cache(
        data_dir: &Path,
        cache_bytes: Option<usize>,
        new_key: impl FnOnce() -> [u8; 32],
    ) -> Result<Store, StoreError> {
        Store::open_on(data_dir, cache_bytes, Arc::new(SystemClock), None, new_key)
    }

    /// `open` with the clock that stamps storage faults and paces their log lines.
    pub fn open_with_clock(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        new_key: impl FnOnce() -> [u8; 32],
    ) -> Result<Store, StoreError> {
        Store::open_on(data_dir, None, clock, None, new_key)
    }

    /// For tests of storage faults only: `open_with_clock` on redb's file backend wrapped so that
    /// `faults` can make its writes, syncs and commits fail. kassa itself never opens a store
    /// this way.
    pub fn open_with_faults(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        faults: StorageFaults,
        new_key: impl FnOnce() -> [u8; 32],
    ) -> Result<Store, StoreError> {
        Store::open_on(data_dir, None, clock, Some(faults), new_key)
    }

    fn open_on(
        data_dir: &Path,
        cache_bytes: Option<usize>,
        clock: Arc<dyn Clock>,
        faults: Option<StorageFaults>,
        new_key: impl FnOnce() -> [u8; 32],
    ) -> Result<Store, StoreError> {
        create_private_dir(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("kassa.redb");
        let mut builder = Database::builder();
        builder.set_cache_size(cache_bytes.unwrap_or(CACHE_BYTES_DEFAULT));
        let created = match &faults {
            None => open_private_file(&path)
                .map_err(redb::DatabaseError::from)
                .and_then(redb::backends::FileBackend::new)
                .and_then(|backend| builder.create_with_backend(backend)),
            Some(faults) => FaultyBackend::open(&path, faults.clone())
                .and_then(|backend| builder.create_with_backend(backend)),
        };
        let db = match created {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked(path)),
            Err(error) => return Err(error.into()),
        };
        let cookie_key = migrate::prepare(&db, new_key)?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let (changed, changes) = watch::channel(0);
        let (health_sender, health) = watch::channel(StoreHealth::Ok);
        let writer = Writer {
            db: Arc::clone(&db),
            changed,
            health: HealthMonitor {
                health: health_sender,
                clock,
                failures: 0,
                logged_at: None,
            },
            faults,
        };
        std::thread::Builder::new()
            .name("kassa-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|error| StoreError::Bug(format!("cannot start the writer thread: {error}")))?;
        Ok(Store {
            db,
            writes,
            changes,
            cookie_key: Arc::new(cookie_key),
            path,
            in_flight: InFlight::default(),
            health,
        })
    }

    /// Whether the store can write, as its writer last found out.
    pub fn health(&self) -> StoreHealth {
        self.health.borrow().clone()
    }

    /// Resolves once the store refuses writes for good; never while it can write.
    pub async fn writes_refused(&self) -> StoreFault {
        let mut health = self.health.clone();
        let refused = health
            .wait_for(|health| matches!(health, StoreHealth::Refused(_)))
            .await
            .ok()
            .and_then(|health| health.fault().cloned());
        match refused {
            Some(fault) => fault,
            // The writer is gone only when the last handle to the store is: nothing to report.
            None => std::future::pending().await,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key that signs buyer cookies; made once when the file was created.
    pub fn cookie_key(&self) -> &[u8; 32] {
        &self.cookie_key
    }

    /// A receiver that changes after every commit: long-polls wait on it instead of polling.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Runs `apply` in the writer's next transaction and answers after it is durable. `apply`
    /// may run more than once if another write in its batch fails, so it must not have effects
    /// outside the transaction.
    async fn write<T, F>(&self, mut apply: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            apply: Box::new(move |txn| apply(txn).map(|value| Box::new(value) as Applied)),
            reply,
        };
        self.writes
            .send(request)
            .await
            .map_err(|_| StoreError::Closed)?;
        let applied = answer.await.map_err(|_| StoreError::Closed)??;
        applied
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| StoreError::Bug("a write answered with the wrong type".into()))
    }

    /// Runs `read` against a snapshot of what is committed, for a read of a few keys (one
    /// record and what hangs off it, each list bounded): on the calling task, since it takes
    /// microseconds, less than a hand-off to the blocking pool and back (a thread wake-up each
    /// way). Scans go through `read`.
    #[expect(
        clippy::unused_async,
        reason = "reads stay awaited by their callers, whichever side of the pool they run on"
    )]
    async fn read_point<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    {
        let txn = self.db.begin_read()?;
        read(&txn)
    }

    /// Runs `read` against a snapshot of what is committed, on the blocking pool: for reads
    /// that scan (lists, reports, checks), so a long scan never holds up a runtime thread.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read()?;
            read(&txn)
        })
        .await
        .map_err(|error| StoreError::Bug(format!("a read task failed: {error}")))?
    }
}

/// Whether the store can write, as its writer last found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// The last write transaction committed, or none failed since the store opened.
    Ok,
    /// Writes failed since the last commit; the next commit that succeeds makes the store `Ok`.
    Failing(StoreFault),
    /// redb refuses further writes: only a restart, which reopens and repairs the file, helps.
    Refused(StoreFault),
}

impl StoreHealth {
    pub fn fault(&self) -> Option<&StoreFault> {
        match self {
            StoreHealth::Ok => None,
            StoreHealth::Failing(fault) | StoreHealth::Refused(fault) => Some(fault),
        }
    }
}

/// A storage fault as the writer recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    /// What failed last, in redb's words.
    pub reason: String,
    /// When the first failure since the last commit happened, by the store's clock.
    pub since: DateTime<Utc>,
    /// Write transactions that failed in a row.
    pub failures: u32,
}

/// Whether redb itself says that it refuses every later operation until it is reopened.
fn redb_refuses(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Storage(
            redb::Error::PreviousIo | redb::Error::DatabaseClosed | redb::Error::LockPoisoned(_)
        )
    )
}

/// Keeps the store's health, the count of failed transactions in a row, and when the fault was
/// last logged.
struct HealthMonitor {
    health: watch::Sender<StoreHealth>,
    clock: Arc<dyn Clock>,
    failures: u32,
    logged_at: Option<DateTime<Utc>>,
}

impl HealthMonitor {
    fn refused(&self) -> Option<StoreFault> {
        match &*self.health.borrow() {
            StoreHealth::Refused(fault) => Some(fault.clone()),
            StoreHealth::Ok | StoreHealth::Failing(_) => None,
        }
    }

    /// Records a storage fault met while `what`. `transaction` says that a whole write
    /// transaction failed (its begin or its commit), which counts toward `WRITE_FAILURES_MAX`;
    /// one write's own error does not, since the rest of its batch goes on. Answers whether it
    /// logged the fault.
    fn record(&mut self, what: &str, error: &StoreError, transaction: bool) -> bool {
        if self.refused().is_some() {
            return false;
        }
        let now = self.clock.now();
        if transaction {
            self.failures = self.failures.saturating_add(1);
        }
        // The borrow ends here: `send_replace` below needs the lock it holds.
        let since = self
            .health
            .borrow()
            .fault()
            .map_or(now, |fault| fault.since);
        let mut reason = format!("{what} failed: {error}");
        let refuses = redb_refuses(error);
        if !refuses && self.failures >= WRITE_FAILURES_MAX {
            reason = format!(
                "{} write transactions failed in a row; {reason}",
                self.failures
            );
        }
        let fault = StoreFault {
            reason,
            since,
            failures: self.failures,
        };
        if refuses || self.failures >= WRITE_FAILURES_MAX {
            // Logged always, and once: the store never leaves this state.
            tracing::error!(
                reason = %fault.reason,
                since = %fault.since,
                failures = fault.failures,
                "the data file refuses further writes; kassa stops so that it is restarted"
            );
            self.health.send_replace(StoreHealth::Refused(fault));
            return true;
        }
        let due = self
            .logged_at
            .is_none_or(|logged| now - logged >= FAULT_LOG_INTERVAL);
        if due {
            tracing::error!(
                reason = %fault.reason,
                since = %fault.since,
                failures = fault.failures,
                "a storage write failed; /healthz answers 503 until a commit succeeds (logged at most once a minute)"
            );
            self.logged_at = Some(now);
        }
        self.health.send_replace(StoreHealth::Failing(fault));
        due
    }

    /// A transaction committed: the store can write.
    fn committed(&mut self) {
        let failing = self.health.borrow().fault().cloned();
        if let Some(fault) = failing {
            tracing::warn!(
                since = %fault.since,
                failures = fault.failures,
                "storage writes succeed again; /healthz answers ok"
            );
            self.health.send_replace(StoreHealth::Ok);
        }
        self.failures = 0;
    }
}

/// The writer thread: the one place that begins write transactions.
struct Writer {
    db: Arc<Database>,
    changed: watch::Sender<u64>,
    health: HealthMonitor,
    /// Only a store opened by `Store::open_with_faults` has switches; kassa's own has `None`.
    faults: Option<StorageFaults>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        while let Some(first) = queue.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < WRITE_BATCH_MAX {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if self.commit_batch(batch) {
                self.changed
                    .send_modify(|generation| *generation = generation.wrapping_add(1));
            }
        }
    }

    /// Applies a batch in one transaction. A request that fails is answered with its error and
    /// removed, and the others are applied again in a fresh transaction; each round removes one
    /// request, so this ends after at most `batch.len()` rounds. Answers whether a transaction
    /// committed. A storage fault is recorded (and probed) before the failed writes are answered,
    /// so that a caller who saw its write fail sees the health that follows from it.
    fn commit_batch(&mut self, mut batch: Vec<WriteRequest>) -> bool {
        while !batch.is_empty() {
            if let Some(fault) = self.health.refused() {
                refuse_all(batch, &fault);
                return false;
            }
            let txn = match self.db.begin_write() {
                Ok(txn) => txn,
                Err(error) => {
                    let error = StoreError::from(error);
                    self.health
                        .record("beginning a write transaction", &error, true);
                    answer_all(batch, &error);
                    return false;
                }
            };
            // Every write of the batch uses the tables it opens, until the commit.
            let tx = Tx::new(&txn);
            let mut values = Vec::with_capacity(batch.len());
            let mut failed = None;
            for (index, request) in batch.iter_mut().enumerate() {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (request.apply)(&tx)))
                    .unwrap_or_else(|_| Err(StoreError::Bug("a write operation panicked".into())));
                match outcome {
                    Ok(value) => values.push(value),
                    Err(error) => {
                        failed = Some((index, error));
                        break;
                    }
                }
            }
            drop(tx);
            if let Some((index, error)) = failed {
                drop(txn);
                if matches!(error, StoreError::Storage(_)) {
                    self.health.record("a write", &error, false);
                    self.probe();
                }
                let request = batch.remove(index);
                let _ = request.reply.send(Err(error));
                continue;
            }
            let injected = self.faults.as_ref().and_then(StorageFaults::commit_error);
            let committed = match injected {
                Some(error) => {
                    // Dropped, the transaction is rolled back as after a failed commit; it must
                    // be gone before the probe begins the next one.
                    drop(txn);
                    Err(error)
                }
                None => txn.commit().map_err(StoreError::from),
            };
            match committed {
                Ok(()) => {
                    self.health.committed();
                    for (request, value) in batch.into_iter().zip(values) {
                        let _ = request.reply.send(Ok(value));
                    }
                    return true;
                }
                Err(error) => {
                    self.health.record("a commit", &error, true);
                    self.probe();
                    answer_all(batch, &error);
                    return false;
                }
            }
        }
        false
    }

    /// Begins and aborts one write transaction after a storage fault. redb latches a failed
    /// write or sync at once, so this tells whether it now refuses everything without waiting
    /// for a next write, which a quiet kassa may not make for a long time.
    fn probe(&mut self) {
        if self.health.refused().is_some() {
            return;
        }
        let error = match self.db.begin_write() {
            Ok(txn) => match txn.abort() {
                Ok(()) => return,
                Err(error) => StoreError::from(error),
            },
            Err(error) => StoreError::from(error),
        };
        self.health
            .record("beginning a write transaction", &error, true);
    }
}

fn answer_all(batch: Vec<WriteRequest>, error: &StoreError) {
    for request in batch {
        let _ = request
            .reply
            .send(Err(StoreError::NotCommitted(error.to_string())));
    }
}

fn refuse_all(batch: Vec<WriteRequest>, fault: &StoreFault) {
    for request in batch {
        let _ = request
            .reply
            .send(Err(StoreError::Refused(fault.reason.clone())));
    }
}

/// Switches that make a store's storage fail, for tests of storage faults: only a store opened
/// by `Store::open_with_faults` reads them. Clones share the switches.
#[derive(Debug, Clone, Default)]
pub struct StorageFaults(Arc<FaultSwitches>);

#[derive(Debug, Default)]
struct FaultSwitches {
    disk: AtomicBool,
    commits: AtomicBool,
}

impl StorageFaults {
    pub fn new() -> StorageFaults {
        StorageFaults::default()
    }

    /// While on, every write, sync and resize of the data file fails with an I/O error, as on a
    /// failing disk. redb latches the first such error and refuses everything after it, so the
    /// store ends `Refused`; switching this off does not heal a store that refuses.
    pub fn fail_disk(&self, failing: bool) {
        self.0.disk.store(failing, Ordering::SeqCst);
    }

    /// While on, every commit fails before it reaches the file and its transaction is rolled
    /// back. redb stays usable, so the store is `Failing` and heals at the first commit after
    /// this is switched off, unless `WRITE_FAILURES_MAX` commits failed first.
    pub fn fail_commits(&self, failing: bool) {
        self.0.commits.store(failing, Ordering::SeqCst);
    }

    fn disk_error(&self) -> std::io::Result<()> {
        if self.0.disk.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(
                "injected storage fault: the disk refuses writes",
            ));
        }
        Ok(())
    }

    fn commit_error(&self) -> Option<StoreError> {
        self.0.commits.load(Ordering::SeqCst).then(|| {
            StoreError::Storage(redb::Error::Io(std::io::Error::other(
                "injected storage fault: the commit did not reach the disk",
            )))
        })
    }
}

/// Creates `dir` (and its parents) readable by kassa's user only (0700). A directory that is
/// there already keeps its mode; a warning says when others can read it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory can be read by other users; chmod 700 it"
            );
        }
    }
    Ok(())
}

/// Opens (or creates) a file of the data directory readable and writable by kassa's user only
/// (0600), also when it was there with a wider mode.
pub fn open_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(file)
}

/// redb's file backend with `StorageFaults` in front of its writes, syncs and resizes; reads and
/// locks pass straight through, so the file is locked exactly as `Database::create` locks it.
#[derive(Debug)]
struct FaultyBackend {
    file: redb::backends::FileBackend,
    faults: StorageFaults,
}

impl FaultyBackend {
    /// Opens `path` as `Database::create` does.
    fn open(path: &Path, faults: StorageFaults) -> Result<FaultyBackend, redb::DatabaseError> {
        let file = open_private_file(path)?;
        Ok(FaultyBackend {
            file: redb::backends::FileBackend::new(file)?,
            faults,
        })
    }
}

impl redb::StorageBackend for FaultyBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.faults.disk_error()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.faults.disk_error()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.faults.disk_error()?;
        self.file.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(DateTime::UNIX_EPOCH))
    }

    fn failing_store(dir: &Path, clock: Arc<ManualClock>) -> (Store, StorageFaults) {
        let faults = StorageFaults::new();
        let store = Store::open_with_faults(dir, clock, faults.clone(), || [0; 32]).unwrap();
        (store, faults)
    }

    async fn put(store: &Store, key: &'static str) -> Result<(), StoreError> {
        store
            .write(move |txn| {
                txn.meta()?.insert(key, b"1".as_slice())?;
                Ok(())
            })
            .await
    }

    async fn has(store: &Store, key: &'static str) -> bool {
        store
            .read(move |txn| Ok(txn.open_table(tables::META)?.get(key)?.is_some()))
            .await
            .unwrap()
    }

    /// Opens `dir` again once the writer of a dropped store has let go of the file.
    async fn reopen(dir: &Path) -> Store {
        for _ in 0..100 {
            match Store::open(dir, || [0; 32]) {
                Ok(store) => return store,
                Err(StoreError::Locked(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(error) => panic!("the file does not open again: {error}"),
            }
        }
        panic!("the file stayed locked");
    }

    /// Writes queued behind one that holds the writer are applied in one batch, with one `Tx`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_panics_holding_a_table_is_taken_out_and_its_batch_commits_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), || [0; 32]).unwrap();
        let (entered, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let (entered, release_rx) = (
            std::sync::Mutex::new(entered),
            std::sync::Mutex::new(release_rx),
        );
        let gate = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(move |_| {
                        let _ = entered.lock().unwrap().send(());
                        let _ = release_rx
                            .lock()
                            .unwrap()
                            .recv_timeout(std::time::Duration::from_secs(10));
                        Ok(())
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        let a = tokio::spawn({
            let store = store.clone();
            async move { put(&store, "a").await }
        });
        let b = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(|txn| -> Result<(), StoreError> {
                        txn.meta()?.insert("b", b"1".as_slice())?;
                        let _held = txn.meta()?;
                        panic!("a write panics while it holds a table");
                    })
                    .await
            }
        });
        let c = tokio::spawn({
            let store = store.clone();
            async move { put(&store, "c").await }
        });
        // All three wait in the writer's queue before it is let go.
        while store.writes.max_capacity() - store.writes.capacity() < 3 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        gate.await.unwrap().unwrap();
        a.await.unwrap().unwrap();
        c.await.unwrap().unwrap();
        let error = b.await.unwrap().unwrap_err();
        assert!(matches!(error, StoreError::Bug(_)), "{error}");
        assert!(has(&store, "a").await);
        assert!(has(&store, "c").await);
        assert!(!has(&store, "b").await);
        assert_eq!(store.health(), StoreHealth::Ok);
    }

    #[tokio::test]
    async fn a_failed_commit_is_answered_with_an_error_and_the_next_commit_heals_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let (store, faults) = failing_store(dir.path(), clock.clone());
        assert_eq!(store.health(), StoreHealth::Ok);

        faults.fail_commits(true);
        let error = put(&store, "lost").await.unwrap_err();
        assert!(matches!(error, StoreError::NotCommitted(_)), "{error}");
        let StoreHealth::Failing(fault) = store.health() else {
            panic!("the store is not failing: {:?}", store.health());
        };
        assert!(fault.reason.contains("a commit failed"), "{}", fault.reason);
        assert_eq!(fault.since, clock.now());
        assert!(!has(&store, "lost").await);

        faults.fail_commits(false);
        put(&store, "kept").await.unwrap();
        assert_eq!(store.health(), StoreHealth::Ok);
        assert!(has(&store, "kept").await);
    }

    #[tokio::test]
    async fn a_failing_disk_makes_the_store_refuse_every_later_write_and_loses_nothing_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = failing_store(dir.path(), clock());
        put(&store, "before").await.unwrap();

        faults.fail_disk(true);
        assert!(put(&store, "during").await.is_err());
        // The writer's probe finds redb's latch at once, without another write.
        let StoreHealth::Refused(fault) = store.health() else {
            panic!("the store does not refuse writes: {:?}", store.health());
        };
        assert_eq!(store.writes_refused().await, fault);
        // Healing the disk does not heal redb: only a reopen does.
        faults.fail_disk(false);
        let error = put(&store, "after").await.unwrap_err();
        assert!(matches!(error, StoreError::Refused(_)), "{error}");

        drop(store);
        let store = reopen(dir.path()).await;
        assert!(has(&store, "before").await);
        assert!(!has(&store, "during").await);
        assert!(!has(&store, "after").await);
        put(&store, "again").await.unwrap();
    }

    #[tokio::test]
    async fn commits_that_keep_failing_make_the_store_refuse_writes_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = failing_store(dir.path(), clock());
        faults.fail_commits(true);
        let mut writes = 0;
        while !matches!(store.health(), StoreHealth::Refused(_)) {
            assert!(put(&store, "never").await.is_err());
            writes += 1;
            assert!(writes <= WRITE_FAILURES_MAX, "the store never gave up");
        }
        let fault = store.writes_refused().await;
        assert_eq!(fault.failures, WRITE_FAILURES_MAX);
        assert!(fault.reason.contains("in a row"), "{}", fault.reason);
    }

    #[test]
    fn a_fault_that_goes_on_is_logged_once_a_minute() {
        let clock = clock();
        let (sender, health) = watch::channel(StoreHealth::Ok);
        let mut monitor = HealthMonitor {
            health: sender,
            clock: clock.clone(),
            failures: 0,
            logged_at: None,
        };
        let error = StoreError::Storage(redb::Error::Io(std::io::Error::other("disk")));
        let mut logged = 0;
        for _ in 0..30 {
            logged += usize::from(monitor.record("a write", &error, false));
            clock.advance(TimeDelta::seconds(1));
        }
        assert_eq!(logged, 1);
        clock.advance(FAULT_LOG_INTERVAL);
        assert!(monitor.record("a write", &error, false));
        let since = health.borrow().fault().unwrap().since;
        assert_eq!(since, DateTime::UNIX_EPOCH);
        monitor.committed();
        assert_eq!(*health.borrow(), StoreHealth::Ok);
    }
}

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
mod faults;
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
mod writer;

pub use admission::{NewPgPayment, RecordOutcome};
pub use alerts::{Alert, AlertLevel, Delivery};
pub use cancels::{
    AttemptResult, CancelRequest, CancelRequestOutcome, Claim, Claimed, KnownRefund,
    OutsideOutcome, OutsideRefund, UNKNOWN_SYNCS_ALERT,
};
pub use dead_letters::{DeadLetter, UNKNOWN_OUTCOME_JOB};
pub use faults::StorageFaults;
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
pub use writer::{StoreFault, StoreHealth};

use crate::clock::{Clock, SystemClock};
use chrono::TimeDelta;
use faults::FaultyBackend;
use redb::{Database, ReadTransaction, ReadableDatabase};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tx::Tx;
use writer::{Applied, WriteRequest};

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
        let writer::Started {
            writes,
            changes,
            health,
        } = writer::start(Arc::clone(&db), clock, faults)?;
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

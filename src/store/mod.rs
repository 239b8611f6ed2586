//! The store: the only module that imports redb.
//!
//! Every write goes through one writer thread. It takes every write that is waiting (up to
//! `WRITE_BATCH_MAX`), applies them in order in one redb transaction, commits it durably, and
//! only then answers each caller. A durable commit costs milliseconds, so grouping commits is
//! what lets many payments a second be acknowledged durably. Reads run on the blocking pool
//! against committed snapshots.
//!
//! Invariants: an answered write is on disk; a write closure returns `Err` only for storage
//! faults (business outcomes are values), and a write that fails is taken out of its batch and
//! the rest re-applied, so one bad request never loses or half-applies another.

mod admission;
mod alerts;
mod cancels;
mod codec;
mod dead_letters;
mod evidence;
mod intents;
mod migrate;
mod orders;
mod partners;
mod payments;
mod queue;
mod redrive;
mod sync;
mod tables;

pub use admission::{NewPgPayment, RecordOutcome};
pub use alerts::{Alert, AlertLevel, Delivery};
pub use cancels::{
    AttemptResult, CancelRequest, CancelRequestOutcome, Claim, Claimed, KnownRefund,
    UNKNOWN_SYNCS_ALERT,
};
pub use dead_letters::{DeadLetter, UNKNOWN_OUTCOME_JOB};
pub use intents::INTENTS_PER_PAYMENT_MAX;
pub use migrate::SCHEMA_VERSION;
pub use orders::CreateOrderOutcome;
pub use partners::{PartnerSettlement, StatusChange};
pub use payments::{PaymentFilter, PaymentPage, PaymentView, SettlementStatus};
pub use queue::{Gate, InFlight, InFlightGuard, JobClaim, JobOutcome, QueuedJob};
pub use redrive::{Redrive, RedriveOutcome, Resolution};
pub use sync::{Finding, LockOutcome, SettlementRow, SyncCounts, SyncReport};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most writes one transaction commits together.
pub const WRITE_BATCH_MAX: usize = 1_024;
/// Most writes waiting for the writer before callers wait to queue more.
pub const WRITE_QUEUE_DEPTH: usize = 8_192;

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
type Apply = Box<dyn FnMut(&WriteTransaction) -> Result<Applied, StoreError> + Send>;

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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) `data_dir/kassa.redb`, refusing a file another process holds or a
    /// newer kassa wrote. `new_key` makes the cookie signing key of a new file.
    pub fn open(data_dir: &Path, new_key: impl FnOnce() -> [u8; 32]) -> Result<Store, StoreError> {
        Store::open_with_cache(data_dir, None, new_key)
    }

    /// `open` with redb's page cache bounded to `cache_bytes` (redb's default when `None`).
    pub fn open_with_cache(
        data_dir: &Path,
        cache_bytes: Option<usize>,
        new_key: impl FnOnce() -> [u8; 32],
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("kassa.redb");
        let mut builder = Database::builder();
        if let Some(bytes) = cache_bytes {
            builder.set_cache_size(bytes);
        }
        let db = match builder.create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked(path)),
            Err(error) => return Err(error.into()),
        };
        let cookie_key = migrate::prepare(&db, new_key)?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let (changed, changes) = watch::channel(0);
        let writer_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("kassa-store-writer".into())
            .spawn(move || run_writer(&writer_db, queue, &changed))
            .map_err(|error| StoreError::Bug(format!("cannot start the writer thread: {error}")))?;
        Ok(Store {
            db,
            writes,
            changes,
            cookie_key: Arc::new(cookie_key),
            path,
            in_flight: InFlight::default(),
        })
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
        F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
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

    /// Runs `read` against a snapshot of what is committed, on the blocking pool.
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

fn run_writer(
    db: &Database,
    mut queue: mpsc::Receiver<WriteRequest>,
    changed: &watch::Sender<u64>,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_MAX {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        commit_batch(db, batch);
        changed.send_modify(|generation| *generation = generation.wrapping_add(1));
    }
}

/// Applies a batch in one transaction. A request that fails is answered with its error and
/// removed, and the others are applied again in a fresh transaction; each round removes one
/// request, so this ends after at most `batch.len()` rounds.
fn commit_batch(db: &Database, mut batch: Vec<WriteRequest>) {
    while !batch.is_empty() {
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(error) => return answer_all(batch, &StoreError::from(error)),
        };
        let mut values = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (index, request) in batch.iter_mut().enumerate() {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (request.apply)(&txn)))
                .unwrap_or_else(|_| Err(StoreError::Bug("a write operation panicked".into())));
            match outcome {
                Ok(value) => values.push(value),
                Err(error) => {
                    failed = Some((index, error));
                    break;
                }
            }
        }
        if let Some((index, error)) = failed {
            drop(txn);
            let request = batch.remove(index);
            let _ = request.reply.send(Err(error));
            continue;
        }
        match txn.commit() {
            Ok(()) => {
                for (request, value) in batch.into_iter().zip(values) {
                    let _ = request.reply.send(Ok(value));
                }
            }
            Err(error) => answer_all(batch, &StoreError::from(error)),
        }
        return;
    }
}

fn answer_all(batch: Vec<WriteRequest>, error: &StoreError) {
    for request in batch {
        let _ = request.reply.send(Err(StoreError::Bug(format!(
            "the transaction failed: {error}"
        ))));
    }
}

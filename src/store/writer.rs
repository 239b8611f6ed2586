//! The writer thread: it applies every waiting write in one transaction, commits it durably,
//! then answers each caller; and it keeps the store's health (see the store's module for what
//! a storage fault leads to).

use super::faults::StorageFaults;
use super::tx::Tx;
use super::{
    FAULT_LOG_INTERVAL, StoreError, WRITE_BATCH_MAX, WRITE_FAILURES_MAX, WRITE_QUEUE_DEPTH,
};
use crate::clock::Clock;
use chrono::{DateTime, Utc};
use redb::Database;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// What a write answered, boxed for the trip through the writer and back.
pub(super) type Applied = Box<dyn Any + Send>;
type Apply = Box<dyn FnMut(&Tx<'_>) -> Result<Applied, StoreError> + Send>;

/// One caller's write and where its answer goes.
pub(super) struct WriteRequest {
    pub(super) apply: Apply,
    pub(super) reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// What a started writer thread gives the store.
pub(super) struct Started {
    /// Where writes go.
    pub(super) writes: mpsc::Sender<WriteRequest>,
    /// The commit generation, bumped after every commit.
    pub(super) changes: watch::Receiver<u64>,
    /// The store's health, as the writer last found out.
    pub(super) health: watch::Receiver<StoreHealth>,
}

/// Starts the writer thread of `db`.
pub(super) fn start(
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    faults: Option<StorageFaults>,
) -> Result<Started, StoreError> {
    let (writes, queue) = mpsc::channel(WRITE_QUEUE_DEPTH);
    let (changed, changes) = watch::channel(0);
    let (health_sender, health) = watch::channel(StoreHealth::Ok);
    let writer = Writer {
        db,
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
    Ok(Started {
        writes,
        changes,
        health,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{Store, tables};
    use chrono::TimeDelta;
    use std::path::Path;

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

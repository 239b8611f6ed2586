//! Storage faults on demand, for the tests of what the store does when its disk fails.

use super::{StoreError, open_private_file};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

    pub(super) fn commit_error(&self) -> Option<StoreError> {
        self.0.commits.load(Ordering::SeqCst).then(|| {
            StoreError::Storage(redb::Error::Io(std::io::Error::other(
                "injected storage fault: the commit did not reach the disk",
            )))
        })
    }
}

/// redb's file backend with `StorageFaults` in front of its writes, syncs and resizes; reads and
/// locks pass straight through, so the file is locked exactly as `Database::create` locks it.
#[derive(Debug)]
pub(super) struct FaultyBackend {
    file: redb::backends::FileBackend,
    faults: StorageFaults,
}

impl FaultyBackend {
    /// Opens `path` as `Database::create` does.
    pub(super) fn open(
        path: &Path,
        faults: StorageFaults,
    ) -> Result<FaultyBackend, redb::DatabaseError> {
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

//! Every table at once: a digest of everything stored (two equal digests mean nothing stored
//! changed; the hostile-input and backup tests compare them), and an online backup (every table
//! of one read snapshot copied into a new file while kassa goes on writing).

use super::{Store, StoreError, tables};
use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use sha2::{Digest, Sha256};

fn hash_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
    name: &str,
    hasher: &mut Sha256,
) -> Result<(), StoreError> {
    let table = match txn.open_table(table) {
        Ok(table) => table,
        // A table no write has made yet holds nothing.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    hasher.update(name.as_bytes());
    hasher.update(table.len()?.to_le_bytes());
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (key, value) = (key.value(), value.value());
        let (key, value) = (K::as_bytes(&key), V::as_bytes(&value));
        for bytes in [key.as_ref(), value.as_ref()] {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
    }
    Ok(())
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = match from.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let mut target = to.open_table(table)?;
    let mut copied = 0;
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
        copied += 1;
    }
    Ok(copied)
}

/// Every table of the store, in one place, for what must see them all.
macro_rules! each_table {
    ($apply:ident, $($arg:expr),*) => {
        $apply!($($arg),*;
            META, ORDERS, READY_ORDERS, OPEN_ORDERS_BY_CLIENT, OPEN_ORDERS_BY_TIME, PAYMENTS,
            PAYMENTS_BY_PG, PAYMENTS_BY_ORDER, PAYMENTS_BY_BUYER, PAYMENT_EVENTS, CANCEL_INTENTS,
            CANCELS_BY_PAYMENT, SETTLEMENTS, SETTLEMENT_OF_ORDER, JOBS_V1, QUEUE, QUEUE_DUE,
            QUEUE_KEYS, CANCEL_LINES_ALERTED, UNKNOWN_INTENTS, CANCEL_LINES_USED, DEAD_LETTERS,
            IDEMPOTENCY, ALERTS, ALERTS_UNSENT_V1, PARTNER_LEDGER, PARTNER_DAY_TOTALS,
            PARTNER_SETTLEMENTS, SYNC_LOCKS, SYNC_CURSORS, SYNC_RUNS, SETTLEMENT_FINDINGS)
    };
}

macro_rules! hash_tables {
    ($txn:expr, $hasher:expr; $($table:ident),* $(,)?) => {
        $( hash_table($txn, tables::$table, stringify!($table), $hasher)?; )*
    };
}

macro_rules! copy_tables {
    ($from:expr, $to:expr, $copied:expr; $($table:ident),* $(,)?) => {
        $( *$copied += copy_table($from, $to, tables::$table)?; )*
    };
}

impl Store {
    /// SHA-256 over every table, in hex. It reads the whole file: for tests and checks, not for
    /// requests.
    pub async fn digest(&self) -> Result<String, StoreError> {
        self.read(|txn| {
            let mut hasher = Sha256::new();
            each_table!(hash_tables, txn, &mut hasher);
            Ok(crate::hex::encode(&hasher.finalize()))
        })
        .await
    }

    /// Copies one read snapshot of every table into a new data file at `out` (which must not
    /// exist), while writes go on; answers how many entries it copied. The copy is a store as
    /// consistent as any committed state: it opens like the original, except that it knows it
    /// is a copy taken at `taken_at`, so a store opened on it treats its open cancels as unknown.
    pub async fn backup_to(
        &self,
        out: &std::path::Path,
        taken_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let out = out.to_path_buf();
        self.read(move |txn| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&out)
                .map_err(|source| StoreError::DataDir {
                    path: out.clone(),
                    source,
                })?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| StoreError::DataDir {
                        path: out.clone(),
                        source,
                    })?;
            }
            let copy = Database::builder()
                .set_cache_size(super::CACHE_BYTES_DEFAULT)
                .create_with_backend(redb::backends::FileBackend::new(file)?)?;
            let write = copy.begin_write()?;
            let mut copied = 0u64;
            each_table!(copy_tables, txn, &write, &mut copied);
            // The copy knows it is one: when it is opened, its open cancels count as unknown.
            let taken_ms = taken_at.timestamp_millis();
            write.open_table(tables::META)?.insert(
                super::migrate::RESTORED_KEY,
                taken_ms.to_le_bytes().as_slice(),
            )?;
            write.commit()?;
            Ok(copied)
        })
        .await
    }
}

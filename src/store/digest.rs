//! A digest of everything stored: every table's keys and values as redb stores them. Two equal
//! digests mean nothing stored changed (the hostile-input tests compare them; a backup can be
//! checked against its source the same way).

use super::{Store, StoreError, tables};
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition};
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

macro_rules! hash_tables {
    ($txn:expr, $hasher:expr, $($table:ident),* $(,)?) => {
        $( hash_table($txn, tables::$table, stringify!($table), $hasher)?; )*
    };
}

impl Store {
    /// SHA-256 over every table, in hex. It reads the whole file: for tests and checks, not for
    /// requests.
    pub async fn digest(&self) -> Result<String, StoreError> {
        self.read(|txn| {
            let mut hasher = Sha256::new();
            hash_tables!(
                txn,
                &mut hasher,
                META,
                ORDERS,
                READY_ORDERS,
                OPEN_ORDERS_BY_CLIENT,
                PAYMENTS,
                PAYMENTS_BY_PG,
                PAYMENTS_BY_ORDER,
                PAYMENTS_BY_BUYER,
                PAYMENT_EVENTS,
                CANCEL_INTENTS,
                CANCELS_BY_PAYMENT,
                SETTLEMENTS,
                JOBS_V1,
                QUEUE,
                QUEUE_DUE,
                QUEUE_KEYS,
                CANCEL_LINES_ALERTED,
                UNKNOWN_INTENTS,
                CANCEL_LINES_USED,
                DEAD_LETTERS,
                IDEMPOTENCY,
                ALERTS,
                ALERTS_UNSENT_V1,
                PARTNER_LEDGER,
                PARTNER_SETTLEMENTS,
                SYNC_LOCKS,
                SYNC_CURSORS,
                SYNC_RUNS,
                SETTLEMENT_FINDINGS,
                OPEN_ORDERS_BY_TIME,
            );
            let digest = hasher.finalize();
            Ok(digest
                .iter()
                .fold(String::with_capacity(64), |mut hex, byte| {
                    use std::fmt::Write;
                    let _ = write!(hex, "{byte:02x}");
                    hex
                }))
        })
        .await
    }
}

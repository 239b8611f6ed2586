//! A write transaction with its tables kept open: every write of one group commit shares one
//! `Tx`, so a table is opened once per batch instead of once per use.
//!
//! Opening a redb table looks it up in the table tree (checking its key and value types) and
//! records it among the transaction's open tables; closing it writes its root back. A cancel's
//! two writes used a table some fifty times, and profiles of the writer put `open_table` at a
//! fifth to a quarter of its time. A `Tx` opens each table the first time a write asks for it and
//! closes them all when it is dropped, just before the commit.
//!
//! A table is handed out as a `RefMut`: while one is held, asking for the same table again is a
//! `StoreError::Bug`, as redb's own "table already open" was. So a function that holds a table
//! must still let go of it before it calls one that opens it, exactly as with redb.

use super::{StoreError, tables};
use redb::{Table, TableDefinition, TableHandle, WriteTransaction};
use std::cell::{RefCell, RefMut};

/// One lazily opened table of a `Tx`.
type Slot<'t, K, V> = RefCell<Option<Table<'t, K, V>>>;

fn open<'a, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'t WriteTransaction,
    slot: &'a Slot<'t, K, V>,
    table: TableDefinition<'static, K, V>,
) -> Result<RefMut<'a, Table<'t, K, V>>, StoreError> {
    let mut held = slot.try_borrow_mut().map_err(|_| {
        StoreError::Bug(format!(
            "table {} was asked for while it was already in use",
            table.name()
        ))
    })?;
    if held.is_none() {
        *held = Some(txn.open_table(table)?);
    }
    RefMut::filter_map(held, Option::as_mut)
        .map_err(|_| StoreError::Bug(format!("table {} did not open", table.name())))
}

#[cfg(test)]
fn close<K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &Slot<'_, K, V>,
    table: TableDefinition<'static, K, V>,
) -> Result<(), StoreError> {
    let mut held = slot.try_borrow_mut().map_err(|_| {
        StoreError::Bug(format!(
            "table {} was closed while it was in use",
            table.name()
        ))
    })?;
    drop(held.take());
    Ok(())
}

macro_rules! batch_tables {
    ($($field:ident: $table:ident <$key:ty, $value:ty>),* $(,)?) => {
        /// A write transaction and the tables its writes opened so far (see the module).
        pub(super) struct Tx<'t> {
            txn: &'t WriteTransaction,
            $( $field: Slot<'t, $key, $value>, )*
        }

        impl<'t> Tx<'t> {
            pub(super) fn new(txn: &'t WriteTransaction) -> Tx<'t> {
                Tx {
                    txn,
                    $( $field: RefCell::new(None), )*
                }
            }

            $(
                #[doc = concat!("`tables::", stringify!($table), "`, opened once per transaction.")]
                pub(super) fn $field(&self) -> Result<RefMut<'_, Table<'t, $key, $value>>, StoreError> {
                    open(self.txn, &self.$field, tables::$table)
                }
            )*

            /// Closes every open table, so that the transaction itself may drop one.
            #[cfg(test)]
            pub(super) fn close_all(&self) -> Result<(), StoreError> {
                $( close(&self.$field, tables::$table)?; )*
                Ok(())
            }
        }
    };
}

batch_tables! {
    meta: META<&'static str, &'static [u8]>,
    orders: ORDERS<&'static str, &'static [u8]>,
    ready_orders: READY_ORDERS<(u64, &'static str), ()>,
    payments: PAYMENTS<u128, &'static [u8]>,
    payments_by_pg: PAYMENTS_BY_PG<&'static str, u128>,
    payments_by_order: PAYMENTS_BY_ORDER<(&'static str, u128), ()>,
    payments_by_buyer: PAYMENTS_BY_BUYER<(u128, u128), ()>,
    payment_events: PAYMENT_EVENTS<(u128, u32), &'static [u8]>,
    cancel_intents: CANCEL_INTENTS<u128, &'static [u8]>,
    cancels_by_payment: CANCELS_BY_PAYMENT<(u128, u128), ()>,
    settlements: SETTLEMENTS<(u32, u128), &'static [u8]>,
    settlement_of_order: SETTLEMENT_OF_ORDER<&'static str, (u32, u128)>,
    jobs_v1: JOBS_V1<(u64, u128), ()>,
    queue: QUEUE<u128, &'static [u8]>,
    queue_due: QUEUE_DUE<(u64, u128), ()>,
    queue_keys: QUEUE_KEYS<&'static str, u128>,
    cancel_lines_alerted: CANCEL_LINES_ALERTED<&'static str, ()>,
    unknown_intents: UNKNOWN_INTENTS<u128, ()>,
    cancel_lines_used: CANCEL_LINES_USED<&'static str, u128>,
    dead_letters: DEAD_LETTERS<u128, &'static [u8]>,
    idempotency: IDEMPOTENCY<&'static str, &'static [u8]>,
    alerts: ALERTS<u128, &'static [u8]>,
    alerts_unsent_v1: ALERTS_UNSENT_V1<u128, ()>,
    partner_ledger: PARTNER_LEDGER<(u32, &'static str, u128), &'static [u8]>,
    partner_day_totals: PARTNER_DAY_TOTALS<(u32, &'static str), &'static [u8]>,
    partner_settlements: PARTNER_SETTLEMENTS<(u32, &'static str), &'static [u8]>,
    sync_locks: SYNC_LOCKS<&'static str, &'static [u8]>,
    sync_cursors: SYNC_CURSORS<(&'static str, u32), &'static [u8]>,
    sync_runs: SYNC_RUNS<u128, &'static [u8]>,
    settlement_findings: SETTLEMENT_FINDINGS<(u32, &'static str, &'static str, &'static str), &'static [u8]>,
    open_orders_by_client: OPEN_ORDERS_BY_CLIENT<(&'static str, u64, &'static str), ()>,
    open_orders_by_time: OPEN_ORDERS_BY_TIME<(u64, &'static str, &'static str), ()>,
}

impl Tx<'_> {
    /// Deletes a table, after closing every open one.
    #[cfg(test)]
    pub(super) fn delete_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        self.close_all()?;
        self.txn.delete_table(table)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

    fn database() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("kassa.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn a_table_asked_for_while_it_is_held_is_refused_as_a_bug_and_given_again_once_let_go() {
        let (_dir, db) = database();
        let write = db.begin_write().unwrap();
        let tx = Tx::new(&write);
        let held = tx.meta().unwrap();
        match tx.meta() {
            Err(StoreError::Bug(reason)) => assert!(reason.contains("meta"), "{reason}"),
            Err(other) => panic!("expected a bug, got {other}"),
            Ok(_) => panic!("one table was handed out twice at once"),
        }
        // Another table is not held up by it.
        tx.orders().unwrap();
        drop(held);
        tx.meta().unwrap();
    }

    #[test]
    fn what_one_use_wrote_the_next_reads_and_the_commit_keeps_it() {
        let (_dir, db) = database();
        let write = db.begin_write().unwrap();
        let tx = Tx::new(&write);
        tx.meta().unwrap().insert("a", b"1".as_slice()).unwrap();
        let seen = tx
            .meta()
            .unwrap()
            .get("a")
            .unwrap()
            .map(|v| v.value().to_vec());
        assert_eq!(seen.as_deref(), Some(b"1".as_slice()));
        tx.meta().unwrap().insert("b", b"2".as_slice()).unwrap();
        drop(tx);
        write.commit().unwrap();
        let read = db.begin_read().unwrap();
        let meta = read.open_table(tables::META).unwrap();
        assert_eq!(meta.len().unwrap(), 2);
        assert_eq!(meta.get("b").unwrap().unwrap().value(), b"2");
    }

    #[test]
    fn a_table_is_deleted_even_after_a_use_left_it_open() {
        let (_dir, db) = database();
        let write = db.begin_write().unwrap();
        let tx = Tx::new(&write);
        tx.meta().unwrap().insert("a", b"1".as_slice()).unwrap();
        tx.delete_table(tables::META).unwrap();
        assert_eq!(tx.meta().unwrap().len().unwrap(), 0);
        let held = tx.orders().unwrap();
        assert!(matches!(
            tx.delete_table(tables::META),
            Err(StoreError::Bug(_))
        ));
        drop(held);
    }
}

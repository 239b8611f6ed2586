//! The schema version, recorded when a file is created and checked on every open.
//!
//! Invariant: kassa never opens a file written by a newer schema; an older one is upgraded
//! step by step in one transaction before anything else runs.

use super::{StoreError, tables};
use redb::{Database, ReadableTable};

/// The schema this build writes. Raise it with a step in `upgrade` when a table or record
/// changes shape.
pub const SCHEMA_VERSION: u32 = 1;

const VERSION_KEY: &str = "schema_version";
const COOKIE_KEY: &str = "cookie_key";

/// Records the version of a new file, checks that of an existing one, creates every table, and
/// returns the cookie signing key.
pub fn prepare(db: &Database, new_key: impl FnOnce() -> [u8; 32]) -> Result<[u8; 32], StoreError> {
    let txn = db.begin_write()?;
    let key = {
        let mut meta = txn.open_table(tables::META)?;
        let found = meta
            .get(VERSION_KEY)?
            .map(|value| {
                let bytes: [u8; 4] = value
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("schema version".into()))?;
                Ok::<u32, StoreError>(u32::from_le_bytes(bytes))
            })
            .transpose()?;
        match found {
            None => {
                meta.insert(VERSION_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) => upgrade(found)?,
        }
        let existing = meta.get(COOKIE_KEY)?.map(|value| value.value().to_vec());
        match existing {
            Some(bytes) => bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt("cookie key".into()))?,
            None => {
                let key = new_key();
                meta.insert(COOKIE_KEY, key.as_slice())?;
                key
            }
        }
    };
    txn.open_table(tables::ORDERS)?;
    txn.open_table(tables::PAYMENTS)?;
    txn.open_table(tables::PAYMENTS_BY_PG)?;
    txn.open_table(tables::PAYMENTS_BY_ORDER)?;
    txn.open_table(tables::PAYMENTS_BY_BUYER)?;
    txn.open_table(tables::PAYMENT_EVENTS)?;
    txn.open_table(tables::CANCEL_INTENTS)?;
    txn.open_table(tables::CANCELS_BY_PAYMENT)?;
    txn.open_table(tables::SETTLEMENTS)?;
    txn.open_table(tables::JOBS)?;
    txn.open_table(tables::DEAD_LETTERS)?;
    txn.open_table(tables::IDEMPOTENCY)?;
    txn.open_table(tables::ALERTS)?;
    txn.open_table(tables::ALERTS_UNSENT)?;
    txn.open_table(tables::PARTNER_LEDGER)?;
    txn.open_table(tables::PARTNER_SETTLEMENTS)?;
    txn.open_table(tables::SYNC_LOCKS)?;
    txn.open_table(tables::SYNC_CURSORS)?;
    txn.open_table(tables::SYNC_RUNS)?;
    txn.open_table(tables::SETTLEMENT_FINDINGS)?;
    txn.commit()?;
    Ok(key)
}

/// Upgrades a file from `found` to `SCHEMA_VERSION`. Version 1 is the first, so there is no
/// step yet; each future step goes here, in order.
fn upgrade(found: u32) -> Result<(), StoreError> {
    if found == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "schema version {found} is not one this kassa can upgrade"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_a_newer_kassa_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kassa.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::META)
                .unwrap()
                .insert(VERSION_KEY, (SCHEMA_VERSION + 1).to_le_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let error = crate::store::Store::open(dir.path(), || [0; 32]).unwrap_err();
        assert!(
            matches!(error, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{error}"
        );
    }

    #[test]
    fn the_cookie_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kassa.redb");
        let db = Database::create(&path).unwrap();
        let first = prepare(&db, || [7; 32]).unwrap();
        let second = prepare(&db, || [9; 32]).unwrap();
        assert_eq!(first, [7; 32]);
        assert_eq!(second, [7; 32]);
    }
}

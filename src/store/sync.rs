//! The settlement sync in redb: its lease lock, its resumable cursor, applying a page of PG
//! settlement lines to the settlement rows, findings, and run reports.
//!
//! Invariants: a page's effects and the cursor after it are committed together, so a run that
//! stops (or dies) resumes exactly after the last applied page; only `Pending` rows are moved to
//! `Succeed`, so a re-run changes nothing and counts them `skipped`; a line that does not match
//! changes no row and is kept as a finding.

use super::alerts::{AlertLevel, insert_alert};
use super::codec::{decode, encode};
use super::evidence::Evidence;
use super::orders::get_order;
use super::payments::{SETTLEMENT_RECORD, SettlementRecord};
use super::queue::enqueue;
use super::tx::Tx;
use super::{Store, StoreError, tables};
use crate::domain::calendar::date_key;
use crate::domain::settlement::{SettlementKind, SettlementLine};
use crate::domain::{Job, OrderId, PaymentId, PgTid, Provider};
use chrono::{DateTime, NaiveDate, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::cell::RefMut;

const LOCK_RECORD: u8 = 1;
const CURSOR_RECORD: u8 = 1;
const RUN_RECORD: u8 = 1;
const FINDING_RECORD: u8 = 1;
/// Most findings kept for one order and kind on one day.
pub const FINDINGS_PER_ORDER_MAX: usize = 20;
/// Most rows a settlement or findings list answers.
pub const SETTLEMENT_LIST_MAX: usize = 5_000;

#[derive(Serialize, Deserialize)]
struct LockRecord {
    run_id: u128,
    until_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct CursorRecord {
    cursor: String,
    expires_ms: i64,
}

/// What applying lines did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    pub updated: u64,
    pub skipped: u64,
    pub missing: u64,
    pub cancel_skipped: u64,
    pub discrepancy: u64,
}

impl SyncCounts {
    pub fn add(&mut self, other: SyncCounts) {
        self.updated += other.updated;
        self.skipped += other.skipped;
        self.missing += other.missing;
        self.cancel_skipped += other.cancel_skipped;
        self.discrepancy += other.discrepancy;
    }

    pub fn total(&self) -> u64 {
        self.updated + self.skipped + self.missing + self.cancel_skipped + self.discrepancy
    }
}

/// The report of one run, as CONTRACT.md names its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub run_id: u128,
    pub provider: String,
    pub date: NaiveDate,
    pub pages: u32,
    pub complete: bool,
    pub resumed: bool,
    pub counts: SyncCounts,
    pub failed: u64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

/// A settlement row as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRow {
    pub date: NaiveDate,
    pub payment_id: PaymentId,
    pub order_id: String,
    pub provider: String,
    pub amount: i64,
    pub status: String,
    pub fee: Option<i64>,
    pub settle_amount: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub date: NaiveDate,
    pub provider: String,
    pub order_id: String,
    /// `DISCREPANCY`, `MISSING` or `CANCEL`.
    pub kind: String,
    /// What kassa holds (the payment's gross), when it holds the payment.
    pub expected: Option<i64>,
    pub actual: i64,
    pub fee: i64,
    pub settle_amount: i64,
    pub found_at_ms: i64,
}

/// Why a lock could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired,
    Busy,
}

fn lock_key(provider: &str) -> String {
    provider.to_owned()
}

fn take_lock(
    txn: &Tx<'_>,
    provider: &str,
    run_id: u128,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<LockOutcome, StoreError> {
    let mut locks = txn.sync_locks()?;
    let key = lock_key(provider);
    let held = locks
        .get(key.as_str())?
        .map(|value| decode::<LockRecord>("sync lock", LOCK_RECORD, value.value()))
        .transpose()?;
    if held.is_some_and(|lock| lock.run_id != run_id && lock.until_ms > now_ms) {
        return Ok(LockOutcome::Busy);
    }
    let bytes = encode(
        LOCK_RECORD,
        &LockRecord {
            run_id,
            until_ms: now_ms.saturating_add(ttl_ms),
        },
    )?;
    locks.insert(key.as_str(), bytes.as_slice())?;
    Ok(LockOutcome::Acquired)
}

/// Keeps a finding under its (day, PG, order, kind): several lines of one order and kind (two
/// partial cancels, say) are all kept, and the same line found again by a re-run is not.
/// Answers whether it was new.
fn record_finding(txn: &Tx<'_>, finding: &Finding) -> Result<bool, StoreError> {
    let key = (
        date_key(finding.date),
        finding.provider.as_str(),
        finding.order_id.as_str(),
        finding.kind.as_str(),
    );
    let mut table = txn.settlement_findings()?;
    let mut kept: Vec<Finding> = match table.get(key)? {
        Some(value) => decode("findings", FINDING_RECORD, value.value())?,
        None => Vec::new(),
    };
    let same = |other: &Finding| {
        (other.expected, other.actual, other.fee, other.settle_amount)
            == (
                finding.expected,
                finding.actual,
                finding.fee,
                finding.settle_amount,
            )
    };
    if kept.iter().any(same) || kept.len() >= FINDINGS_PER_ORDER_MAX {
        return Ok(false);
    }
    kept.push(finding.clone());
    let bytes = encode(FINDING_RECORD, &kept)?;
    table.insert(key, bytes.as_slice())?;
    Ok(true)
}

/// An alert id for something found at `now_ms` about `what`: time-ordered like the others
/// (the top 48 bits are the time), and the same when a write is applied again.
fn found_alert_id(now_ms: i64, what: &str) -> u128 {
    // FNV-1a: a stable hash, so a re-applied write makes the same id.
    let hash = what.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (u128::from(u64::try_from(now_ms).unwrap_or(0)) << 80) | u128::from(hash)
}

/// A settlement row's key: (KST day, payment id).
type RowKey = (u32, u128);

/// The two tables a line of a payment reads and writes, held together while it is applied.
struct RowTables<'a, 't> {
    rows_of_orders: RefMut<'a, redb::Table<'t, &'static str, RowKey>>,
    settlements: RefMut<'a, redb::Table<'t, RowKey, &'static [u8]>>,
}

impl<'a, 't> RowTables<'a, 't> {
    fn open(txn: &'a Tx<'t>) -> Result<Self, StoreError> {
        Ok(Self {
            rows_of_orders: txn.settlement_of_order()?,
            settlements: txn.settlements()?,
        })
    }

    /// The settlement row of the payment that paid `order_id` through `provider`, with its key:
    /// an order has a row once a payment of it was accepted, and only that one.
    fn row_of_order(
        &self,
        provider: &str,
        order_id: &str,
    ) -> Result<Option<(RowKey, SettlementRecord)>, StoreError> {
        let Some(key) = self.rows_of_orders.get(order_id)? else {
            return Ok(None);
        };
        let key = key.value();
        let Some(row) = self.settlements.get(key)? else {
            tracing::error!(
                order_id,
                "the settlement index names a row that is not there; the line counts as missing"
            );
            return Ok(None);
        };
        let row = decode::<SettlementRecord>("settlement", SETTLEMENT_RECORD, row.value())?;
        if !is_row_of(&row, order_id) {
            return Ok(None);
        }
        if row.provider != provider {
            return Ok(None);
        }
        Ok(Some((key, row)))
    }

    /// The common case of a line of a payment: it matches its `Pending` row, which is settled
    /// (`updated`), or a row already settled (`skipped`). Anything else (no such row, a
    /// mismatch) is left as it was for `apply_line`, which reads it again: `None`.
    ///
    /// The row is written as this line settles it first, and the row it replaced is then
    /// compared with the `Pending` row the line settles, field by field; any other row is put
    /// back byte for byte before anything else reads it. So a line that settles its row reads
    /// and writes it once; any other line writes the row back as it was (a re-run of a settled
    /// day writes each row twice, with the same bytes).
    fn settle_matching(
        &mut self,
        provider: &str,
        line: &SettlementLine,
    ) -> Result<Option<SyncCounts>, StoreError> {
        if line.kind == SettlementKind::Cancel || !line.is_consistent() {
            return Ok(None);
        }
        let Some(key) = self.rows_of_orders.get(line.order_id.as_str())? else {
            return Ok(None);
        };
        let key = key.value();
        let mut row = SettlementRecord {
            payment_id: key.1,
            provider: provider.to_owned(),
            amount: line.amount,
            status: "Pending".into(),
            fee: None,
            settle_amount: None,
            order_id: line.order_id.clone(),
        };
        let pending = row.clone();
        mark_settled(&mut row, line);
        let settled = encode(SETTLEMENT_RECORD, &row)?;
        let replaced = {
            let replaced = self.settlements.insert(key, settled.as_slice())?;
            replaced
                .map(|replaced| {
                    let found = decode::<SettlementRecord>(
                        "settlement",
                        SETTLEMENT_RECORD,
                        replaced.value(),
                    )?;
                    let restore = (found != pending).then(|| replaced.value().to_vec());
                    Ok::<_, StoreError>((found, restore))
                })
                .transpose()?
        };
        let Some((found, restore)) = replaced else {
            // No row under the index's key: the row just written is removed again, and
            // `apply_line` finds none either.
            self.settlements.remove(key)?;
            return Ok(None);
        };
        let mut counts = SyncCounts::default();
        let Some(restore) = restore else {
            counts.updated = 1;
            return Ok(Some(counts));
        };
        self.settlements.insert(key, restore.as_slice())?;
        // A row of another order (a damaged index) is logged once, by `apply_line`'s lookup.
        if found.order_id != line.order_id
            || found.provider != provider
            || found.amount != line.amount
        {
            return Ok(None);
        }
        if found.status == "Pending" {
            // A `Pending` row unlike the one kassa writes: `apply_line` reads it again.
            return Ok(None);
        }
        counts.skipped = 1;
        Ok(Some(counts))
    }
}

/// Whether a row found through the index is of the order it was indexed under; a damaged index
/// is logged, and the line then counts as missing (as a line of an unknown order does).
fn is_row_of(row: &SettlementRecord, order_id: &str) -> bool {
    if row.order_id == order_id {
        return true;
    }
    tracing::error!(
        order_id,
        row_order_id = %row.order_id,
        "the settlement index names a row of another order; the line counts as missing"
    );
    false
}

/// A row as a matching line leaves it: `Succeed`, with the PG's fee and settled amount.
fn mark_settled(row: &mut SettlementRecord, line: &SettlementLine) {
    row.status = "Succeed".into();
    row.fee = Some(line.fee);
    row.settle_amount = Some(line.settle_amount);
}

/// Moves a `Pending` row to `Succeed` with the PG's fee and settled amount.
fn settle(
    settlements: &mut redb::Table<'_, RowKey, &'static [u8]>,
    key: RowKey,
    row: &mut SettlementRecord,
    line: &SettlementLine,
) -> Result<(), StoreError> {
    mark_settled(row, line);
    let bytes = encode(SETTLEMENT_RECORD, row)?;
    settlements.insert(key, bytes.as_slice())?;
    Ok(())
}

/// A CANCEL line that is no refund kassa knows: a refund made outside kassa (the PG's
/// console). It is recorded on the order's accepted payment when nothing else can account for
/// it (no cancel of the payment running, dead or in doubt; it fits what is left), with a
/// warning.
fn import_cancel_line(
    txn: &Tx<'_>,
    provider: &str,
    date: NaiveDate,
    line: &SettlementLine,
    now: DateTime<Utc>,
) -> Result<Imported, StoreError> {
    let (Some(at), Some(amount)) = (line.cancel_at, line.amount.checked_abs()) else {
        return Ok(Imported::Not);
    };
    let Ok(amount) = crate::domain::Amount::positive(amount) else {
        return Ok(Imported::Not);
    };
    let Some(payment_id) = accepted_payment_of(txn, provider, &line.order_id)? else {
        return Ok(Imported::Not);
    };
    // Lines alike are told apart by their place among each other: each is its own refund, with
    // its own cancel id, alert and partner ledger entry.
    let what = format!(
        "{provider}:{}:{}:{}:{}",
        line.order_id,
        at.timestamp_millis(),
        line.amount,
        line.occurrence
    );
    let refund = super::cancels::OutsideRefund {
        pg_cancel_id: line.pg_cancel_id.clone().unwrap_or_default(),
        id_is_unique: line.pg_cancel_id.is_some(),
        from_line: true,
        amount,
        at,
        source: format!("the {provider} settlement of {date} (a CANCEL line)"),
    };
    let now_ms = now.timestamp_millis();
    let cancel_id =
        crate::domain::CancelId::from_u128(found_alert_id(now_ms, &format!("cancel:{what}")));
    let outcome = super::cancels::record_outside_refund(
        txn,
        payment_id,
        &refund,
        cancel_id,
        found_alert_id(now_ms, &format!("alert:{what}")),
        now,
    )?;
    match outcome {
        super::cancels::OutsideOutcome::Recorded => {
            super::evidence::mark_line_used(txn, provider, line, at, amount.won(), cancel_id)?;
            Ok(Imported::Recorded)
        }
        super::cancels::OutsideOutcome::Known => Ok(Imported::Recorded),
        _ => Ok(Imported::Not),
    }
}

/// What a CANCEL line that matched no refund came to.
enum Imported {
    /// Recorded as a refund made outside kassa (or it was that refund already).
    Recorded,
    /// Not recorded (no payment to record it on, or a cancel of it runs); an alert says so.
    Not,
}

/// The payment that paid `order_id` through `provider`, if there is one.
fn accepted_payment_of(
    txn: &Tx<'_>,
    provider: &str,
    order_id: &str,
) -> Result<Option<PaymentId>, StoreError> {
    let Ok(order_id) = OrderId::parse(order_id) else {
        return Ok(None);
    };
    let Some(order) = get_order(&*txn.orders()?, &order_id)? else {
        return Ok(None);
    };
    Ok(order
        .paid_payment_id()
        .filter(|_| order.draft.provider.as_str() == provider))
}

/// The PG settled a payment of an order kassa still holds unpaid: the buyer paid and kassa
/// missed it (the result post or webhook was lost). Its re-check is queued with the page; it asks
/// the PG itself (for Payple, the result inquiry, which this case is for) and stores what the PG
/// confirms. Nothing is stored from the line.
fn queue_missed_payment(
    txn: &Tx<'_>,
    provider: &str,
    line: &SettlementLine,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (Ok(provider), Some(pg_ref), Ok(order_id)) = (
        Provider::parse(provider),
        line.pg_ref.as_deref(),
        OrderId::parse(&line.order_id),
    ) else {
        return Ok(());
    };
    let Ok(pg_tid) = PgTid::parse(pg_ref) else {
        return Ok(());
    };
    let order = get_order(&*txn.orders()?, &order_id)?;
    if order
        .is_none_or(|order| order.paid_payment_id().is_some() || order.draft.provider != provider)
    {
        return Ok(());
    }
    // A payment of the order kassa holds already (a rollback, or one whose reference differs
    // from the line's) is not missed: nothing to ask again.
    let held = txn
        .payments_by_order()?
        .range((order_id.as_str(), 0)..=(order_id.as_str(), u128::MAX))?
        .next()
        .is_some();
    if held {
        return Ok(());
    }
    let id = found_alert_id(now_ms, &format!("recheck:{provider:?}:{pg_ref}"));
    let job = Job::Recheck {
        provider,
        pg_tid,
        order_id: Some(order_id),
    };
    enqueue(
        txn,
        id,
        &job,
        Some(provider),
        super::orders::millis_to_time(now_ms)?,
    )?;
    tracing::info!(provider = provider.as_str(), order_id = %line.order_id, "a settled payment kassa missed is re-checked with the PG");
    Ok(())
}

/// The counts and finding of a CANCEL line matched in the exact pass.
fn cancel_line_counted(
    txn: &Tx<'_>,
    provider: &str,
    date: NaiveDate,
    line: &SettlementLine,
    now_ms: i64,
) -> Result<SyncCounts, StoreError> {
    let finding = Finding {
        date,
        provider: provider.to_owned(),
        order_id: line
            .order_id
            .chars()
            .take(crate::domain::ids::ORDER_ID_CHARS_MAX)
            .collect(),
        kind: "CANCEL".to_owned(),
        expected: None,
        actual: line.amount,
        fee: line.fee,
        settle_amount: line.settle_amount,
        found_at_ms: now_ms,
    };
    record_finding(txn, &finding)?;
    Ok(SyncCounts {
        cancel_skipped: 1,
        ..SyncCounts::default()
    })
}

fn apply_line(
    txn: &Tx<'_>,
    provider: &str,
    date: NaiveDate,
    line: &SettlementLine,
    now_ms: i64,
) -> Result<SyncCounts, StoreError> {
    let mut counts = SyncCounts::default();
    let finding = |kind: &str, expected: Option<i64>| Finding {
        date,
        provider: provider.to_owned(),
        order_id: line
            .order_id
            .chars()
            .take(crate::domain::ids::ORDER_ID_CHARS_MAX)
            .collect(),
        kind: kind.to_owned(),
        expected,
        actual: line.amount,
        fee: line.fee,
        settle_amount: line.settle_amount,
        found_at_ms: now_ms,
    };
    if line.kind == SettlementKind::Cancel {
        counts.cancel_skipped = 1;
        let now = super::orders::millis_to_time(now_ms)?;
        let evidence = super::evidence::apply_cancel_line(txn, provider, line, now, false)?;
        record_finding(txn, &finding("CANCEL", None))?;
        // A refund at the PG that kassa cannot put to one of its own is money a person must
        // account for: refunded twice, refunded in the console, or a wrong "not refunded".
        let evidence = if evidence == Evidence::Unexplained {
            match import_cancel_line(txn, provider, date, line, now)? {
                Imported::Recorded => return Ok(counts),
                Imported::Not => evidence,
            }
        } else {
            evidence
        };
        let (level, message) = match evidence {
            Evidence::Known | Evidence::Used | Evidence::ClosedUnknown | Evidence::NotExact => {
                return Ok(counts);
            }
            Evidence::Ambiguous => (
                AlertLevel::Urgent,
                format!(
                    "{provider} settlement of {date}: a CANCEL line of {} for order {} could be more than one refund's (one whose outcome is unknown, or one kassa recorded); compare with the PG's console and resolve it",
                    line.amount, line.order_id
                ),
            ),
            Evidence::Unexplained => (
                AlertLevel::Warning,
                format!(
                    "{provider} settlement of {date}: a CANCEL line of {} for order {} is no refund kassa knows (a refund in the PG's console?)",
                    line.amount, line.order_id
                ),
            ),
        };
        tracing::warn!(provider, order_id = %line.order_id, amount = line.amount, "{message}");
        // Once per line (its order, amount, time and PG id), however often its day is synced:
        // two lines alike but for their time are two refunds, and two alerts.
        let identity = format!(
            "{provider}:{date}:{}:{}:{}:{}:{}",
            line.order_id,
            line.amount,
            line.cancel_at.map_or(0, |at| at.timestamp_millis()),
            line.pg_cancel_id.as_deref().unwrap_or(""),
            line.occurrence
        );
        let mut alerted = txn.cancel_lines_alerted()?;
        if alerted.get(identity.as_str())?.is_none() {
            alerted.insert(identity.as_str(), ())?;
            drop(alerted);
            let id = found_alert_id(now_ms, &identity);
            insert_alert(
                txn,
                id,
                level,
                "SETTLEMENT_CANCEL_LINE",
                &message,
                None,
                now,
            )?;
        }
        return Ok(counts);
    }
    let found = RowTables::open(txn)?.row_of_order(provider, &line.order_id)?;
    let Some((key, mut row)) = found else {
        counts.missing = 1;
        tracing::warn!(provider, order_id = %line.order_id, amount = line.amount, "settlement line for a payment kassa does not hold");
        record_finding(txn, &finding("MISSING", None))?;
        queue_missed_payment(txn, provider, line, now_ms)?;
        return Ok(counts);
    };
    if row.amount != line.amount || !line.is_consistent() {
        counts.discrepancy = 1;
        tracing::error!(
            provider, order_id = %line.order_id, expected = row.amount, actual = line.amount, fee = line.fee,
            settle_amount = line.settle_amount, "settlement discrepancy: the PG's line does not match the payment"
        );
        record_finding(txn, &finding("DISCREPANCY", Some(row.amount)))?;
        return Ok(counts);
    }
    if row.status != "Pending" {
        counts.skipped = 1;
        return Ok(counts);
    }
    settle(&mut *txn.settlements()?, key, &mut row, line)?;
    counts.updated = 1;
    Ok(counts)
}

/// Builds the index of settlement rows by order from the rows (the upgrade to schema 4);
/// answers how many rows it read.
pub(super) fn rebuild_settlement_index(txn: &Tx<'_>) -> Result<u64, StoreError> {
    let rows = txn.settlements()?;
    let mut index = txn.settlement_of_order()?;
    let mut read = 0u64;
    for entry in rows.iter()? {
        let (key, value) = entry?;
        let record: SettlementRecord = decode("settlement", SETTLEMENT_RECORD, value.value())?;
        index.insert(record.order_id.as_str(), key.value())?;
        read += 1;
    }
    Ok(read)
}

impl Store {
    /// Whether the index of settlement rows by order names exactly the rows there are, each
    /// under its own order (how many, if so); the first difference otherwise. It reads both
    /// tables whole: for tests and checks, not for requests.
    pub async fn check_settlement_index(&self) -> Result<Result<usize, String>, StoreError> {
        self.read(|txn| {
            let mut rows = std::collections::BTreeMap::new();
            for entry in txn.open_table(tables::SETTLEMENTS)?.iter()? {
                let (key, value) = entry?;
                let record: SettlementRecord =
                    decode("settlement", SETTLEMENT_RECORD, value.value())?;
                if let Some(other) = rows.insert(record.order_id.clone(), key.value()) {
                    return Ok(Err(format!(
                        "order {} has two settlement rows: {other:?} and {:?}",
                        record.order_id,
                        key.value()
                    )));
                }
            }
            let mut indexed = std::collections::BTreeMap::new();
            for entry in txn.open_table(tables::SETTLEMENT_OF_ORDER)?.iter()? {
                let (order, key) = entry?;
                indexed.insert(order.value().to_owned(), key.value());
            }
            if rows == indexed {
                return Ok(Ok(rows.len()));
            }
            let first = rows
                .iter()
                .find(|(order, key)| indexed.get(*order) != Some(*key))
                .map(|(order, key)| {
                    format!(
                        "order {order}: row {key:?}, indexed {:?}",
                        indexed.get(order)
                    )
                })
                .or_else(|| {
                    indexed
                        .iter()
                        .find(|(order, _)| !rows.contains_key(*order))
                        .map(|(order, key)| format!("order {order}: indexed {key:?}, no row"))
                })
                .unwrap_or_default();
            Ok(Err(first))
        })
        .await
    }

    /// Takes the sync lock of `provider` for `run_id` for `ttl_ms`, unless another live run
    /// holds it. A lock whose lease ran out (a crashed run) is taken over.
    pub async fn take_sync_lock(
        &self,
        provider: &str,
        run_id: u128,
        now: DateTime<Utc>,
        ttl_ms: i64,
    ) -> Result<LockOutcome, StoreError> {
        let provider = provider.to_owned();
        self.write(move |txn| take_lock(txn, &provider, run_id, now.timestamp_millis(), ttl_ms))
            .await
    }

    /// Where the last unfinished sync of `date` stopped, if that is not older than its TTL.
    pub async fn sync_cursor(
        &self,
        provider: &str,
        date: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let provider = provider.to_owned();
        self.read(move |txn| {
            let table = txn.open_table(tables::SYNC_CURSORS)?;
            let Some(value) = table.get((provider.as_str(), date_key(date)))? else {
                return Ok(None);
            };
            let record: CursorRecord = decode("sync cursor", CURSOR_RECORD, value.value())?;
            Ok((record.expires_ms > now.timestamp_millis()).then_some(record.cursor))
        })
        .await
    }

    /// Applies one page of lines and stores the cursor after it (removed when the page was the
    /// last), renewing the run's lock, all in one transaction.
    #[expect(
        clippy::too_many_arguments,
        reason = "one page, its place, and the run's lease"
    )]
    pub async fn apply_settlement_page(
        &self,
        provider: &str,
        date: NaiveDate,
        lines: Vec<SettlementLine>,
        next_cursor: Option<String>,
        now: DateTime<Utc>,
        cursor_ttl_ms: i64,
        run_id: u128,
        lock_ttl_ms: i64,
    ) -> Result<Option<SyncCounts>, StoreError> {
        // Lines alike (order, amount, time) are told apart by their place among each other,
        // the same whenever the page is read again.
        let mut lines = lines;
        let mut seen: std::collections::HashMap<(String, i64, Option<i64>), u32> =
            std::collections::HashMap::new();
        for line in &mut lines {
            let alike = (
                line.order_id.clone(),
                line.amount,
                line.cancel_at.map(|at| at.timestamp_millis()),
            );
            let count = seen.entry(alike).or_default();
            line.occurrence = *count;
            *count += 1;
        }
        let provider = provider.to_owned();
        self.write(move |txn| {
            let now_ms = now.timestamp_millis();
            // The run must still hold its lock (renewed here): one whose lease ran out while
            // it waited on the PG applies nothing, so two runs never interleave their pages.
            if take_lock(txn, &provider, run_id, now_ms, lock_ttl_ms)? == LockOutcome::Busy {
                return Ok(None);
            }
            let mut counts = SyncCounts::default();
            // CANCEL lines that name their refund exactly (its PG id or its time) first: only
            // then may a line without an exact match be taken for a refund kassa recorded, so a
            // console refund's line never takes the place of kassa's own refund's line.
            let mut done = vec![false; lines.len()];
            for (index, line) in lines.iter().enumerate() {
                if line.kind == SettlementKind::Cancel {
                    let now = super::orders::millis_to_time(now_ms)?;
                    let evidence =
                        super::evidence::apply_cancel_line(txn, &provider, line, now, true)?;
                    if matches!(evidence, Evidence::Known | Evidence::Used) {
                        counts.add(cancel_line_counted(txn, &provider, date, line, now_ms)?);
                        done[index] = true;
                    }
                }
            }
            // The rest in order. Lines that match their payment's row (nearly all of them) are
            // settled through the index and the row; any other goes to `apply_line`, which
            // reads what it needs again.
            for (index, line) in lines.iter().enumerate() {
                if done[index] {
                    continue;
                }
                let matched = RowTables::open(txn)?.settle_matching(&provider, line)?;
                match matched {
                    Some(matched) => counts.add(matched),
                    None => counts.add(apply_line(txn, &provider, date, line, now_ms)?),
                }
            }
            let mut cursors = txn.sync_cursors()?;
            let key = (provider.as_str(), date_key(date));
            match &next_cursor {
                Some(cursor) => {
                    let record = CursorRecord {
                        cursor: cursor.clone(),
                        expires_ms: now_ms.saturating_add(cursor_ttl_ms),
                    };
                    let bytes = encode(CURSOR_RECORD, &record)?;
                    cursors.insert(key, bytes.as_slice())?;
                }
                None => {
                    cursors.remove(key)?;
                }
            }
            Ok(Some(counts))
        })
        .await
    }

    /// Stores a run's report and releases its lock; raises an alert when lines did not match.
    pub async fn finish_sync(
        &self,
        report: SyncReport,
        alert_id: u128,
        now: DateTime<Utc>,
        cancel_line_wait: chrono::Duration,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            let bytes = encode(RUN_RECORD, &report)?;
            txn.sync_runs()?.insert(report.run_id, bytes.as_slice())?;
            let mut locks = txn.sync_locks()?;
            let key = lock_key(&report.provider);
            let held = locks.get(key.as_str())?.map(|value| decode::<LockRecord>("sync lock", LOCK_RECORD, value.value())).transpose()?;
            if held.is_some_and(|lock| lock.run_id == report.run_id) {
                locks.remove(key.as_str())?;
            }
            drop(locks);
            if report.complete {
                super::evidence::count_sync(txn, &report.provider, report.date, alert_id.wrapping_add(2), now)?;
                super::evidence::alert_missing_lines(txn, &report.provider, cancel_line_wait, alert_id.wrapping_add(0x1_0000), now)?;
            }
            let counts = report.counts;
            if report.failed > 0 {
                let message = format!(
                    "{} settlement sync of {} stopped at a page the PG did not answer; it resumes at the next run",
                    report.provider, report.date
                );
                insert_alert(txn, alert_id.wrapping_add(1), AlertLevel::Warning, "SETTLEMENT_SYNC_FAILED", &message, None, now)?;
            }
            if counts.missing > 0 || counts.discrepancy > 0 {
                let level = if counts.discrepancy > 0 { AlertLevel::Urgent } else { AlertLevel::Warning };
                let message = format!(
                    "{} settlement of {}: {} discrepancies and {} lines for payments kassa does not hold; see /api/admin/settlement-findings?date={}",
                    report.provider, report.date, counts.discrepancy, counts.missing, report.date
                );
                // Once per day and findings: a day synced again with nothing new says nothing new.
                let key = format!("mismatch:{}:{}:{}:{}", report.provider, report.date, counts.discrepancy, counts.missing);
                let mut alerted = txn.cancel_lines_alerted()?;
                if alerted.get(key.as_str())?.is_none() {
                    alerted.insert(key.as_str(), ())?;
                    drop(alerted);
                    insert_alert(txn, alert_id, level, "SETTLEMENT_MISMATCH", &message, None, now)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Sync run reports, newest first.
    pub async fn sync_runs(&self, limit: usize) -> Result<Vec<SyncReport>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(tables::SYNC_RUNS)?;
            let mut runs = Vec::new();
            for entry in table.iter()?.rev().take(limit) {
                let (_, value) = entry?;
                runs.push(decode("sync run", RUN_RECORD, value.value())?);
            }
            Ok(runs)
        })
        .await
    }

    /// The settlement rows of payments paid on `date`, optionally of one status.
    pub async fn settlement_rows(
        &self,
        date: NaiveDate,
        status: Option<String>,
    ) -> Result<Vec<SettlementRow>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(tables::SETTLEMENTS)?;
            let day = date_key(date);
            let mut rows = Vec::new();
            for entry in table.range((day, 0)..=(day, u128::MAX))? {
                let (key, value) = entry?;
                let record: SettlementRecord =
                    decode("settlement", SETTLEMENT_RECORD, value.value())?;
                if status
                    .as_ref()
                    .is_some_and(|status| *status != record.status)
                {
                    continue;
                }
                rows.push(SettlementRow {
                    date,
                    payment_id: PaymentId::from_u128(key.value().1),
                    order_id: record.order_id,
                    provider: record.provider,
                    amount: record.amount,
                    status: record.status,
                    fee: record.fee,
                    settle_amount: record.settle_amount,
                });
                if rows.len() == SETTLEMENT_LIST_MAX {
                    break;
                }
            }
            Ok(rows)
        })
        .await
    }

    /// What the syncs of `date` could not simply accept.
    pub async fn settlement_findings(&self, date: NaiveDate) -> Result<Vec<Finding>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(tables::SETTLEMENT_FINDINGS)?;
            let day = date_key(date);
            let mut found = Vec::new();
            for entry in table
                .range((day, "", "", "")..(day.saturating_add(1), "", "", ""))?
                .take(SETTLEMENT_LIST_MAX)
            {
                let (_, value) = entry?;
                let kept: Vec<Finding> = decode("findings", FINDING_RECORD, value.value())?;
                found.extend(kept);
            }
            Ok(found)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::settlement::{SettlementKind, SettlementLine};

    fn line(order_id: &str) -> SettlementLine {
        SettlementLine {
            kind: SettlementKind::Approval,
            order_id: order_id.into(),
            amount: 1_000,
            fee: 33,
            settle_amount: 967,
            cancel_at: None,
            pg_ref: None,
            pg_cancel_id: None,
            occurrence: 0,
        }
    }

    /// A damaged index (a key with no row under it, or a row of another order) makes its line
    /// count as missing, as a line of an unknown order does: no row is written under the
    /// dangling key, and the other order's row is left as it was.
    #[tokio::test]
    async fn a_line_whose_index_entry_is_damaged_counts_as_missing_and_changes_no_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), || [1; 32]).expect("store");
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).expect("day");
        let now = DateTime::parse_from_rfc3339("2026-11-24T09:00:00+09:00")
            .expect("time")
            .with_timezone(&Utc);
        let row = SettlementRecord {
            payment_id: 2,
            provider: "toss".into(),
            amount: 1_000,
            status: "Pending".into(),
            fee: None,
            settle_amount: None,
            order_id: "order-b".into(),
        };
        let bytes = encode(SETTLEMENT_RECORD, &row).expect("encode");
        store
            .write(move |txn| {
                txn.settlements()?
                    .insert((date_key(day), 2), bytes.as_slice())?;
                let mut index = txn.settlement_of_order()?;
                index.insert("order-a", (date_key(day), 1))?;
                index.insert("order-c", (date_key(day), 2))?;
                Ok(())
            })
            .await
            .expect("write");
        let counts = store
            .apply_settlement_page(
                "toss",
                day,
                vec![line("order-a"), line("order-c")],
                None,
                now,
                60_000,
                1,
                60_000,
            )
            .await
            .expect("apply")
            .expect("the lock was free");
        assert_eq!((counts.missing, counts.updated), (2, 0), "{counts:?}");
        let rows = store.settlement_rows(day, None).await.expect("rows");
        assert_eq!(rows.len(), 1, "no row under the dangling key");
        assert_eq!(
            (
                rows[0].order_id.as_str(),
                rows[0].status.as_str(),
                rows[0].fee
            ),
            ("order-b", "Pending", None)
        );
    }
}

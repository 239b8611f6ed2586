//! Partner settlement in redb: the ledger of accepted payments and completed refunds per KST day
//! and partner, and the daily partner settlement rows computed from it.
//!
//! Invariants: a ledger entry is written in the same transaction as the payment or refund it
//! records, and so is its day's running total (`PARTNER_DAY_TOTALS`), which the run reads (the
//! simulation checks the totals against a scan of the ledger after every seed). An entry never
//! lands on a day whose settlement for that partner has moved past REQUESTED (it lands on the
//! next open day instead); a run recomputes only REQUESTED rows, and checks that each row's fee
//! and net add up to its gross less refunds before it commits.

use super::codec::{decode, encode};
use super::orders::millis_to_time;
use super::tx::Tx;
use super::{Store, StoreError, tables};
use crate::domain::calendar::{date_key, kst_date};
use crate::domain::settlement::{PartnerFigures, PartnerSettlementStatus, figures};
use crate::domain::{Amount, PartnerId, PaymentId};
use chrono::{DateTime, NaiveDate, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const LEDGER_RECORD: u8 = 1;
const TOTALS_RECORD: u8 = 1;
/// Most partner keys one day's totals may hold (the config allows 1,000 partners; refunds can
/// carry partners removed since). Past it the run fails loudly rather than leave one out.
const PARTNER_KEYS_PER_DAY_MAX: usize = 100_000;
const ROW_RECORD: u8 = 1;
/// How many days forward a late entry looks for a day still open for its partner.
const OPEN_DAY_SEARCH_MAX: u64 = 31;

#[derive(Serialize, Deserialize)]
struct LedgerRecord {
    /// `P` for a payment, `R` for a refund.
    kind: char,
    amount: i64,
    payment_id: u128,
}

#[derive(Serialize, Deserialize)]
struct RowRecord {
    gross: i64,
    cancelled: i64,
    fee: i64,
    net: i64,
    payment_count: u64,
    fee_rate_bps: u32,
    status: String,
    computed_at_ms: i64,
    updated_at_ms: i64,
}

/// The running sums of one partner's ledger entries of one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TotalsRecord {
    gross: i64,
    cancelled: i64,
    count: u64,
}

impl TotalsRecord {
    fn take(&mut self, record: &LedgerRecord) {
        if record.kind == 'R' {
            self.cancelled -= record.amount;
        } else {
            self.gross -= record.amount;
            self.count = self.count.saturating_sub(1);
        }
    }

    fn add(&mut self, record: &LedgerRecord) {
        if record.kind == 'R' {
            self.cancelled += record.amount;
        } else {
            self.gross += record.amount;
            self.count += 1;
        }
    }
}

fn read_totals(
    table: &impl ReadableTable<(u32, &'static str), &'static [u8]>,
    day: u32,
    partner: &str,
) -> Result<TotalsRecord, StoreError> {
    table
        .get((day, partner))?
        .map(|value| decode("partner day totals", TOTALS_RECORD, value.value()))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Adds a ledger entry to its day's running totals (same transaction as the entry), taking out
/// the entry it replaced, if any.
fn add_to_totals(
    txn: &Tx<'_>,
    day: u32,
    partner: &str,
    record: &LedgerRecord,
    replaced: Option<&LedgerRecord>,
) -> Result<(), StoreError> {
    let mut table = txn.partner_day_totals()?;
    let mut totals = read_totals(&*table, day, partner)?;
    if let Some(old) = replaced {
        totals.take(old);
    }
    totals.add(record);
    let bytes = encode(TOTALS_RECORD, &totals)?;
    table.insert((day, partner), bytes.as_slice())?;
    Ok(())
}

/// Builds every day's totals from the ledger: the upgrade of a file written before the totals
/// were kept. Answers how many entries it read.
pub(super) fn rebuild_totals(txn: &Tx<'_>) -> Result<u64, StoreError> {
    let mut sums: BTreeMap<(u32, String), TotalsRecord> = BTreeMap::new();
    let mut read = 0;
    {
        let ledger = txn.partner_ledger()?;
        for entry in ledger.iter()? {
            let (key, value) = entry?;
            let (day, partner, _) = key.value();
            let record: LedgerRecord = decode("ledger entry", LEDGER_RECORD, value.value())?;
            sums.entry((day, partner.to_owned()))
                .or_default()
                .add(&record);
            read += 1;
        }
    }
    let mut table = txn.partner_day_totals()?;
    for ((day, partner), totals) in sums {
        let bytes = encode(TOTALS_RECORD, &totals)?;
        table.insert((day, partner.as_str()), bytes.as_slice())?;
    }
    Ok(read)
}

/// One partner's settlement for one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerSettlement {
    pub date: NaiveDate,
    pub partner_id: String,
    pub figures: PartnerFigures,
    pub fee_rate_bps: u32,
    pub status: PartnerSettlementStatus,
    pub computed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PartnerSettlement {
    /// Its id in the API: `{date}:{partner}`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.date.format("%Y-%m-%d"), self.partner_id)
    }
}

#[derive(Debug, Clone)]
pub enum StatusChange {
    Changed(PartnerSettlement),
    Refused { from: PartnerSettlementStatus },
    NotFound,
}

fn date_of_key(key: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(
        i32::try_from(key / 10_000).ok()?,
        (key / 100) % 100,
        key % 100,
    )
}

fn decode_row(date: u32, partner: &str, bytes: &[u8]) -> Result<PartnerSettlement, StoreError> {
    let record: RowRecord = decode("partner settlement", ROW_RECORD, bytes)?;
    Ok(PartnerSettlement {
        date: date_of_key(date)
            .ok_or_else(|| StoreError::Corrupt(format!("settlement date {date}")))?,
        partner_id: partner.to_owned(),
        figures: PartnerFigures {
            gross: record.gross,
            cancelled: record.cancelled,
            fee: record.fee,
            net: record.net,
            payment_count: record.payment_count,
        },
        fee_rate_bps: record.fee_rate_bps,
        status: PartnerSettlementStatus::parse(&record.status)
            .ok_or_else(|| StoreError::Corrupt(format!("settlement status {}", record.status)))?,
        computed_at: millis_to_time(record.computed_at_ms)?,
        updated_at: millis_to_time(record.updated_at_ms)?,
    })
}

fn encode_row(row: &PartnerSettlement) -> Result<Vec<u8>, StoreError> {
    encode(
        ROW_RECORD,
        &RowRecord {
            gross: row.figures.gross,
            cancelled: row.figures.cancelled,
            fee: row.figures.fee,
            net: row.figures.net,
            payment_count: row.figures.payment_count,
            fee_rate_bps: row.fee_rate_bps,
            status: row.status.as_str().to_owned(),
            computed_at_ms: row.computed_at.timestamp_millis(),
            updated_at_ms: row.updated_at.timestamp_millis(),
        },
    )
}

/// True when the partner's settlement for `day` has left REQUESTED.
fn closed(txn: &Tx<'_>, day: u32, partner: &str) -> Result<bool, StoreError> {
    let table = txn.partner_settlements()?;
    let Some(value) = table.get((day, partner))? else {
        return Ok(false);
    };
    Ok(decode_row(day, partner, value.value())?.status != PartnerSettlementStatus::Requested)
}

/// One line of the partner ledger, before its day is decided.
pub(super) struct Entry<'a> {
    /// The day it belongs to: the sale's day, or the day a refund completed.
    pub natural: NaiveDate,
    /// Today, where it lands if `natural` is already past REQUESTED for its partner.
    pub today: NaiveDate,
    pub partner: Option<&'a PartnerId>,
    /// The payment's id for a sale, the cancel's id for a refund.
    pub id: u128,
    pub refund: bool,
    pub amount: Amount,
    pub payment_id: PaymentId,
}

/// Writes a ledger entry on its natural day, or on the first day from today still open for the
/// partner when the natural day is already past REQUESTED.
pub(super) fn record_entry(txn: &Tx<'_>, entry: &Entry<'_>) -> Result<(), StoreError> {
    let Entry {
        natural,
        today,
        partner,
        id: entry_id,
        refund,
        amount,
        payment_id,
    } = *entry;
    let partner = partner.map_or("", PartnerId::as_str);
    let mut day = natural;
    if closed(txn, date_key(day), partner)? {
        day = today.max(natural);
        for _ in 0..OPEN_DAY_SEARCH_MAX {
            if !closed(txn, date_key(day), partner)? {
                break;
            }
            day = day.succ_opt().unwrap_or(day);
        }
        if closed(txn, date_key(day), partner)? {
            // Settlements closed a month ahead cannot happen through kassa's own runs; if they
            // do, the entry is kept on that day and said loudly rather than lost silently.
            tracing::error!(partner, day = %day, "every day for a month ahead is closed for this partner; the entry is kept on a closed day");
        }
    }
    let record = LedgerRecord {
        kind: if refund { 'R' } else { 'P' },
        amount: amount.won(),
        payment_id: payment_id.as_u128(),
    };
    let bytes = encode(LEDGER_RECORD, &record)?;
    let replaced: Option<LedgerRecord> = txn
        .partner_ledger()?
        .insert((date_key(day), partner, entry_id), bytes.as_slice())?
        .map(|old| decode("ledger entry", LEDGER_RECORD, old.value()))
        .transpose()?;
    // An entry written again under its own key replaces itself in the totals too.
    add_to_totals(txn, date_key(day), partner, &record, replaced.as_ref())
}

/// One partner's sales, refunds and payment count in the ledger of a day, from the running
/// totals kept with each entry.
fn ledger_sums(txn: &Tx<'_>, day: u32, partner: &str) -> Result<(i64, i64, u64), StoreError> {
    let totals = read_totals(&*txn.partner_day_totals()?, day, partner)?;
    Ok((totals.gross, totals.cancelled, totals.count))
}

/// The day's totals per partner key ("" for payments without a partner).
#[derive(Default)]
struct Sums {
    gross: i64,
    cancelled: i64,
    count: u64,
}

fn run(
    txn: &Tx<'_>,
    date: NaiveDate,
    partners: &[(PartnerId, u32)],
    now: DateTime<Utc>,
) -> Result<Vec<PartnerSettlement>, StoreError> {
    let day = date_key(date);
    // The day's running totals per partner: a few rows, whatever the day holds.
    let mut per_partner: BTreeMap<String, Sums> = BTreeMap::new();
    {
        let totals = txn.partner_day_totals()?;
        for entry in totals.range((day, "")..(day.saturating_add(1), ""))? {
            if per_partner.len() == PARTNER_KEYS_PER_DAY_MAX {
                return Err(StoreError::Bug(format!(
                    "day {day} holds more than {PARTNER_KEYS_PER_DAY_MAX} partners"
                )));
            }
            let (key, value) = entry?;
            let record: TotalsRecord = decode("partner day totals", TOTALS_RECORD, value.value())?;
            per_partner.insert(
                key.value().1.to_owned(),
                Sums {
                    gross: record.gross,
                    cancelled: record.cancelled,
                    count: record.count,
                },
            );
        }
    }
    let mut rate: BTreeMap<String, u32> = partners
        .iter()
        .map(|(id, bps)| (id.as_str().to_owned(), *bps))
        .collect();
    for partner in per_partner.keys().filter(|partner| !partner.is_empty()) {
        rate.entry(partner.clone()).or_insert(0);
    }
    let mut rows = Vec::with_capacity(rate.len());
    let mut table = txn.partner_settlements()?;
    for (partner, bps) in rate {
        let existing = table
            .get((day, partner.as_str()))?
            .map(|value| decode_row(day, &partner, value.value()))
            .transpose()?;
        if let Some(existing) = existing
            .as_ref()
            .filter(|row| row.status != PartnerSettlementStatus::Requested)
        {
            rows.push(existing.clone());
            continue;
        }
        let sums = per_partner.get(&partner);
        let day_figures = figures(
            sums.map_or(0, |sums| sums.gross),
            sums.map_or(0, |sums| sums.cancelled),
            sums.map_or(0, |sums| sums.count),
            bps,
        );
        if day_figures.fee + day_figures.net != day_figures.gross - day_figures.cancelled {
            return Err(StoreError::Bug(format!(
                "partner {partner}: fee and net do not add up"
            )));
        }
        let row = PartnerSettlement {
            date,
            partner_id: partner.clone(),
            figures: day_figures,
            fee_rate_bps: bps,
            status: PartnerSettlementStatus::Requested,
            computed_at: existing.as_ref().map_or(now, |row| row.computed_at),
            updated_at: now,
        };
        let bytes = encode_row(&row)?;
        table.insert((day, partner.as_str()), bytes.as_slice())?;
        rows.push(row);
    }
    Ok(rows)
}

impl Store {
    /// Compares every day's partner totals with a scan of the ledger; answers the first
    /// difference. It reads the whole ledger: for tests and checks, not for requests.
    pub async fn check_partner_totals(&self) -> Result<Result<(), String>, StoreError> {
        self.read(|txn| {
            let mut scanned: BTreeMap<(u32, String), TotalsRecord> = BTreeMap::new();
            for entry in txn.open_table(tables::PARTNER_LEDGER)?.iter()? {
                let (key, value) = entry?;
                let (day, partner, _) = key.value();
                let record: LedgerRecord = decode("ledger entry", LEDGER_RECORD, value.value())?;
                scanned
                    .entry((day, partner.to_owned()))
                    .or_default()
                    .add(&record);
            }
            let mut kept: BTreeMap<(u32, String), TotalsRecord> = BTreeMap::new();
            for entry in txn.open_table(tables::PARTNER_DAY_TOTALS)?.iter()? {
                let (key, value) = entry?;
                let (day, partner) = key.value();
                let record: TotalsRecord =
                    decode("partner day totals", TOTALS_RECORD, value.value())?;
                if record != TotalsRecord::default() {
                    kept.insert((day, partner.to_owned()), record);
                }
            }
            scanned.retain(|_, totals| *totals != TotalsRecord::default());
            if scanned == kept {
                return Ok(Ok(()));
            }
            let first = scanned
                .iter()
                .find(|(key, totals)| kept.get(*key) != Some(*totals))
                .map(|(key, totals)| {
                    format!("{key:?}: ledger {totals:?}, totals {:?}", kept.get(key))
                })
                .or_else(|| {
                    kept.iter()
                        .find(|(key, _)| !scanned.contains_key(*key))
                        .map(|(key, totals)| {
                            format!("{key:?}: no ledger entries, totals {totals:?}")
                        })
                })
                .unwrap_or_default();
            Ok(Err(first))
        })
        .await
    }

    /// Computes (or recomputes, while REQUESTED) every partner's settlement for `date`.
    pub async fn run_partner_settlement(
        &self,
        date: NaiveDate,
        partners: Vec<(PartnerId, u32)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<PartnerSettlement>, StoreError> {
        self.write(move |txn| run(txn, date, &partners, now)).await
    }

    /// The partner settlements of `date`, by partner.
    pub async fn partner_settlements(
        &self,
        date: NaiveDate,
    ) -> Result<Vec<PartnerSettlement>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(tables::PARTNER_SETTLEMENTS)?;
            let day = date_key(date);
            let mut rows = Vec::new();
            for entry in table
                .range((day, "")..(day.saturating_add(1), ""))?
                .take(crate::config::PARTNERS_MAX + 1)
            {
                let (key, value) = entry?;
                rows.push(decode_row(day, key.value().1, value.value())?);
            }
            Ok(rows)
        })
        .await
    }

    /// Moves one partner settlement forward (REQUESTED → PROCESSING → COMPLETED).
    pub async fn move_partner_settlement(
        &self,
        date: NaiveDate,
        partner: String,
        next: PartnerSettlementStatus,
        now: DateTime<Utc>,
    ) -> Result<StatusChange, StoreError> {
        self.write(move |txn| {
            let day = date_key(date);
            let mut table = txn.partner_settlements()?;
            let existing = table
                .get((day, partner.as_str()))?
                .map(|value| decode_row(day, &partner, value.value()))
                .transpose()?;
            let Some(mut row) = existing else {
                return Ok(StatusChange::NotFound);
            };
            if !row.status.can_move_to(next) {
                return Ok(StatusChange::Refused { from: row.status });
            }
            if row.status == PartnerSettlementStatus::Requested {
                // Leaving REQUESTED freezes the row: recompute it from the ledger first, so an
                // entry recorded on this day after the last run is in it, not lost.
                let (gross, cancelled, count) = ledger_sums(txn, day, &partner)?;
                row.figures = figures(gross, cancelled, count, row.fee_rate_bps);
            }
            row.status = next;
            row.updated_at = now;
            let bytes = encode_row(&row)?;
            table.insert((day, partner.as_str()), bytes.as_slice())?;
            Ok(StatusChange::Changed(row))
        })
        .await
    }

    /// When the schedule `name` last ran (the fire time it ran for).
    pub async fn schedule_mark(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let key = format!("{}{name}", tables::SCHEDULE_MARK_PREFIX);
        self.read_point(move |txn| {
            let meta = txn.open_table(tables::META)?;
            let Some(value) = meta.get(key.as_str())? else {
                return Ok(None);
            };
            let bytes: [u8; 8] = value
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("schedule mark".into()))?;
            millis_to_time(i64::from_le_bytes(bytes)).map(Some)
        })
        .await
    }

    pub async fn set_schedule_mark(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let key = format!("{}{name}", tables::SCHEDULE_MARK_PREFIX);
        self.write(move |txn| {
            txn.meta()?
                .insert(key.as_str(), at.timestamp_millis().to_le_bytes().as_slice())?;
            Ok(())
        })
        .await
    }
}

/// The KST day an instant falls on, for ledger entries.
pub(super) fn today(now: DateTime<Utc>) -> NaiveDate {
    kst_date(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_days_totals_are_rebuilt_from_its_ledger() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), || [1; 32]).expect("store");
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).expect("day");
        let partner = PartnerId::parse("p-coffee").expect("partner");
        let read = store
            .write(move |txn| {
                let entry = |id: u128, refund: bool, won: i64| Entry {
                    natural: day,
                    today: day,
                    partner: Some(&partner),
                    id,
                    refund,
                    amount: Amount::positive(won).expect("amount"),
                    payment_id: PaymentId::from_u128(id),
                };
                record_entry(txn, &entry(1, false, 10_000))?;
                record_entry(txn, &entry(2, false, 5_000))?;
                record_entry(txn, &entry(3, true, 2_000))?;
                // The same sale written again is counted once.
                record_entry(txn, &entry(2, false, 5_000))?;
                txn.delete_table(tables::PARTNER_DAY_TOTALS)?;
                rebuild_totals(txn)
            })
            .await
            .expect("write");
        assert_eq!(read, 3);
        assert_eq!(store.check_partner_totals().await.expect("read"), Ok(()));
        let totals = store
            .read(move |txn| {
                read_totals(
                    &txn.open_table(tables::PARTNER_DAY_TOTALS)?,
                    date_key(day),
                    "p-coffee",
                )
            })
            .await
            .expect("totals");
        assert_eq!(
            totals,
            TotalsRecord {
                gross: 15_000,
                cancelled: 2_000,
                count: 2
            }
        );
    }
}

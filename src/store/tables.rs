//! Every redb table kassa has: the schema on one screen.
//!
//! Keys that are scanned by time begin with a UUIDv7 (whose top 48 bits are the creation time in
//! milliseconds) or with a KST date, so a day is one range scan, never an index lookup per row.
//! Values are `codec` records.
//!
//! A new table is also named in `tx.rs` (its slot in a write transaction, with the same key and
//! value types: the compiler checks them) and in `digest.rs` (the digest and the backup).

use redb::TableDefinition;

/// `schema_version` (u32, little endian) and `cookie_key` (32 random bytes).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Order id → order record.
pub const ORDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("orders");

/// (creation time in Unix ms, order id) → (): the orders still READY, oldest first, for the
/// re-check sweep. An order leaves it when it is paid or expires.
pub const READY_ORDERS: TableDefinition<(u64, &str), ()> = TableDefinition::new("ready_orders");

/// Payment id (UUIDv7, so by time) → payment record.
pub const PAYMENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("payments");

/// `"{provider}:{pg_tid}"` → payment id. One PG payment is stored once, whoever reports it.
pub const PAYMENTS_BY_PG: TableDefinition<&str, u128> = TableDefinition::new("payments_by_pg");

/// (order id, payment id) → (): every PG payment taken for an order, accepted or rolled back.
pub const PAYMENTS_BY_ORDER: TableDefinition<(&str, u128), ()> =
    TableDefinition::new("payments_by_order");

/// (buyer id, payment id) → (): what one buyer's "my payments" page lists.
pub const PAYMENTS_BY_BUYER: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("payments_by_buyer");

/// (payment id, sequence) → event record: a payment's history in order.
pub const PAYMENT_EVENTS: TableDefinition<(u128, u32), &[u8]> =
    TableDefinition::new("payment_events");

/// Cancel id (UUIDv7) → cancel intent record, written before the PG is called.
pub const CANCEL_INTENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("cancel_intents");

/// (payment id, cancel id) → (): a payment's cancel intents.
pub const CANCELS_BY_PAYMENT: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("cancels_by_payment");

/// (KST date as `yyyymmdd`, payment id) → settlement row: one per paid payment, scanned by day.
pub const SETTLEMENTS: TableDefinition<(u32, u128), &[u8]> = TableDefinition::new("settlements");

/// Order id → the key of its paid payment's settlement row (schema 4). A PG's settlement line
/// names the order, so the sync finds the row in one lookup instead of reading the order and
/// then the payment. Written with the row, in the same transaction; rows are never removed.
pub const SETTLEMENT_OF_ORDER: TableDefinition<&str, (u32, u128)> =
    TableDefinition::new("settlement_of_order");

/// Schema 1 only (read by the migration): (due time in Unix ms, cancel id) → (), the cancel
/// retry queue of parts 1–3.
pub const JOBS_V1: TableDefinition<(u64, u128), ()> = TableDefinition::new("jobs");

/// Job id → job record: the one durable queue of all background work (cancel attempts,
/// re-checks, alert deliveries, settlement-sync days, partner-settlement days).
pub const QUEUE: TableDefinition<u128, &[u8]> = TableDefinition::new("queue");

/// (due time in Unix ms, job id) → (): the queue in the order jobs are due. A claimed job moves
/// to its lease's expiry, so a job whose worker died is due again when the lease runs out.
pub const QUEUE_DUE: TableDefinition<(u64, u128), ()> = TableDefinition::new("queue_due");

/// A job's unique name (`settlement_sync:payple:20261122`) → its job id: a day is queued once.
pub const QUEUE_KEYS: TableDefinition<&str, u128> = TableDefinition::new("queue_keys");

/// What a settlement alert was raised for (a CANCEL line's identity; a day's mismatch counts)
/// → (): a re-run of the day raises none again.
pub const CANCEL_LINES_ALERTED: TableDefinition<&str, ()> =
    TableDefinition::new("cancel_lines_alerted");

/// Cancel id → (): intents whose refund outcome is unknown, waiting for evidence.
pub const UNKNOWN_INTENTS: TableDefinition<u128, ()> = TableDefinition::new("unknown_intents");

/// `"{provider}:{order id}:{cancel time ms}:{amount}"` → cancel id: a settlement CANCEL line
/// that was matched to a refund, so one line is never used twice.
pub const CANCEL_LINES_USED: TableDefinition<&str, u128> =
    TableDefinition::new("cancel_lines_used");

/// Dead-letter id (UUIDv7) → dead letter record: jobs that need a human.
pub const DEAD_LETTERS: TableDefinition<u128, &[u8]> = TableDefinition::new("dead_letters");

/// `"{payment id}:{Idempotency-Key}"` → idempotency record of a cancel request.
pub const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");

/// Alert id (UUIDv7) → alert record: the outbox of alerts, kept for the admin page.
pub const ALERTS: TableDefinition<u128, &[u8]> = TableDefinition::new("alerts");

/// Schema 1 only (read by the migration): alert id → (), alerts not yet delivered. Delivery is
/// a queued job now.
pub const ALERTS_UNSENT_V1: TableDefinition<u128, ()> = TableDefinition::new("alerts_unsent");

/// (KST day, partner id or "", payment or cancel id) → ledger entry: every accepted payment
/// and every completed refund, on the day it counts for partner settlement.
pub const PARTNER_LEDGER: TableDefinition<(u32, &str, u128), &[u8]> =
    TableDefinition::new("partner_ledger");

/// (KST day, partner id or "") → the running sums of that day's ledger entries for the partner
/// (sales, refunds, payment count), kept in the transaction of each entry: the daily partner
/// run reads these few rows instead of scanning the day's whole ledger.
pub const PARTNER_DAY_TOTALS: TableDefinition<(u32, &str), &[u8]> =
    TableDefinition::new("partner_day_totals");

/// (KST day, partner id) → that partner's settlement for the day.
pub const PARTNER_SETTLEMENTS: TableDefinition<(u32, &str), &[u8]> =
    TableDefinition::new("partner_settlements");

/// Scheduler marks live in `META` as `schedule:{name}` → the last fire time run (Unix ms, LE).
pub const SCHEDULE_MARK_PREFIX: &str = "schedule:";

/// Provider name → the settlement sync lock (run id, lease end).
pub const SYNC_LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_locks");

/// (provider, KST day) → where the last unfinished sync of that day stopped, until it expires.
pub const SYNC_CURSORS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("sync_cursors");

/// Run id (UUIDv7) → the report of one settlement sync run.
pub const SYNC_RUNS: TableDefinition<u128, &[u8]> = TableDefinition::new("sync_runs");

/// (KST day, provider, order id, kind) → a settlement line kassa could not simply accept:
/// a discrepancy, a missing payment, or a cancel kept for refund reconciliation.
pub const SETTLEMENT_FINDINGS: TableDefinition<(u32, &str, &str, &str), &[u8]> =
    TableDefinition::new("settlement_findings");

/// Orders made through the payment page, by client (a keyed hash of its address), creation ms
/// and order id: how many one client made lately and still holds open.
pub const OPEN_ORDERS_BY_CLIENT: TableDefinition<(&str, u64, &str), ()> =
    TableDefinition::new("open_orders_by_client");

/// The same entries by creation ms first, so that old ones are removed oldest first whoever
/// made them.
pub const OPEN_ORDERS_BY_TIME: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("open_orders_by_time");

//! Every limit of the state machine, in one place, with why it has its
//! value. Relations between limits (and with the record layouts they bound)
//! are checked at compile time at the end of this file.
//!
//! These values are part of the contract: a command beyond one is refused
//! with a stable result code, a query beyond one is clamped or refused. They
//! also bound what a snapshot may hold and decide how a log replays, so
//! changing one is treated like a format change.

// Batches and entries.

/// Most events in one command (one request): 8190 × 128-byte transfers plus
/// a 64-byte frame header fit in a 1 MiB protocol frame.
pub const BATCH_EVENTS_MAX: usize = 8190;

/// Most expiries (pending transfers, order deadlines, idempotency records)
/// swept in one log entry; the rest wait for the next entry, so one entry's
/// work stays bounded like one batch's.
pub const EXPIRIES_PER_ENTRY_MAX: usize = BATCH_EVENTS_MAX;

/// Largest envelope (fields plus the wrapped command): a full batch plus its
/// bounded strings, with room to spare.
pub const ENVELOPE_MAX: usize = 2 << 20;

/// Latest entry time the machine takes: 2^64 − 2^40 ns. A later log
/// timestamp (a bad clock, a damaged or hostile entry) is read as this, so
/// event timestamps (entry time plus one per event) keep 2^40 nanoseconds of
/// room and cannot overflow; a pending timeout that would reach past 2^64
/// is still `overflows_timeout`, as the spec (and the model test) define it.
pub const ENTRY_TIME_MAX: u64 = u64::MAX - (1 << 40);

/// Largest `last_timestamp` a snapshot may hold: `last_timestamp + 1` fits.
pub const LAST_TIMESTAMP_MAX: u64 = u64::MAX - 1;

// Ledger records.

/// The newest chunks of each arena that stay in memory when a snapshot
/// lets older ones go cold: the last one, which is still filling (only
/// full chunks go cold). Reads of recent records in the chunk before it go
/// through the block cache, where they stay while they are read.
pub const HOT_TAIL_CHUNKS: usize = 1;

/// RAM generations of an id index (`state::ids`): one starts at each
/// snapshot and drops out once stored tables cover it, so a few are held
/// while the tables keep up. At the limit the newest keeps growing rather
/// than make every lookup of a new id probe more of them.
pub const ID_GENERATIONS_MAX: usize = 8;

/// Stored list entries read per table query while scanning an account's
/// transfers or balances: a page of 100 results with a side filter rarely
/// needs a second read.
pub const LIST_SCAN_PAGE: usize = 256;

/// Size of the largest ledger record (accounts and transfers): what a
/// batch's bytes are computed from (`records.rs` asserts every record fits).
pub const RECORD_SIZE_MAX: usize = 128;

/// Longest asset code, in bytes (the packed field of a ledger record).
pub const ASSET_CODE_MAX: usize = 16;

/// Largest minor-unit scale: 10^38 is the largest power of ten below u128::MAX.
pub const SCALE_MAX: u8 = 38;

// Pages a read returns.

/// Most records a ledger query (list, lookup, account history) returns:
/// the same as a batch, so a page of ledger records fits in one frame.
pub const QUERY_PAGE_MAX: usize = BATCH_EVENTS_MAX;

/// Most events in one page of the change journal: as many as a batch.
pub const EVENTS_PAGE_MAX: usize = BATCH_EVENTS_MAX;

/// Most journal slots one page scans when a kind filter skips events, so a
/// read stays bounded; the page then ends early (`next_after` moves on).
pub const EVENTS_SCAN_MAX: usize = 1 << 20;

/// Most orders one read returns: as many as a batch.
pub const ORDER_PAGE_MAX: u32 = BATCH_EVENTS_MAX as u32;

/// Most audit records one read returns. A record is variable-sized, at most
/// about 500 bytes (its strings are bounded below), so a page stays around
/// half a MiB.
pub const AUDIT_PAGE_MAX: usize = 1000;

/// Most access-trail records one page returns.
pub const ACCESS_PAGE_MAX: usize = 1000;

/// Largest page of dead letters a read returns.
pub const DEAD_LETTERS_PAGE_MAX: usize = 10_000;

// Orders.

/// Most open (not yet final) orders the state machine holds in RAM; a
/// create beyond it is refused (`orders_limit_reached`). Final orders have
/// no limit: they move to disk (`orders::finals`).
pub const OPEN_ORDERS_MAX: usize = 16 << 20;

/// Most events kept per order. Transitions are always kept (an order has at
/// most a dozen); refusals and deferrals beyond the cap are only counted.
pub const TIMELINE_MAX: usize = 256;

/// Longest reason text on an order command (UTF-8 bytes).
pub const REASON_MAX: usize = 128;

/// Longest external reference (rail or bank reference, ASCII).
pub const REFERENCE_MAX: usize = 32;

// API keys.

/// Most keys (active and revoked) the engine keeps.
pub const KEYS_MAX: usize = 10_000;

/// Most ledgers one key may be restricted to.
pub const KEY_LEDGERS_MAX: usize = 32;

/// Longest key name, in bytes.
pub const KEY_NAME_MAX: usize = 64;

/// Largest per-key rate and burst, in requests (per second).
pub const RATE_LIMIT_MAX: u32 = 1_000_000;

// Audit and access trails (what an envelope carries).

/// Longest request id kept, in bytes.
pub const REQUEST_ID_MAX: usize = 64;

/// Longest route kept, in bytes.
pub const ROUTE_MAX: usize = 64;

/// Longest idempotency key kept, in bytes.
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Longest route the access trail keeps, in bytes (for example
/// `GET /v1/orders/{id}`).
pub const ACCESS_ROUTE_MAX: usize = 64;

// Webhooks.

/// Most live (not deleted) webhooks.
pub const WEBHOOKS_MAX: usize = 1000;

/// Most deleted webhooks kept for reads; the oldest is forgotten beyond it.
pub const TOMBSTONES_MAX: usize = 1000;

/// Most dead letters kept per webhook; the oldest is dropped (and counted).
pub const DEAD_LETTERS_MAX: usize = 100_000;

/// Longest webhook URL, in bytes.
pub const URL_MAX: usize = 2048;

// Cluster replay protection.

/// Replicas tracked. Node ids are bounded and a cluster has a handful;
/// only holders of the cluster key can add one.
pub const PROPOSERS_MAX: usize = 1024;

// Relations, checked when the crate compiles.

/// One sweep never does more work than one batch.
const _: () = assert!(EXPIRIES_PER_ENTRY_MAX <= BATCH_EVENTS_MAX);
/// A full batch of the largest ledger record and an envelope's strings
/// (plus its fixed fields) fit in one envelope.
const _: () = assert!(
    BATCH_EVENTS_MAX * RECORD_SIZE_MAX + REQUEST_ID_MAX + ROUTE_MAX + IDEMPOTENCY_KEY_MAX + 256 <= ENVELOPE_MAX
);
/// Request id and route carry a u8 length, the idempotency key a u16 one.
const _: () = assert!(REQUEST_ID_MAX <= u8::MAX as usize);
const _: () = assert!(ROUTE_MAX <= u8::MAX as usize);
const _: () = assert!(IDEMPOTENCY_KEY_MAX <= u16::MAX as usize);
const _: () = assert!(ACCESS_ROUTE_MAX <= u8::MAX as usize);
/// A key event renders its name length and ledger count as u8.
const _: () = assert!(KEY_NAME_MAX <= u8::MAX as usize);
const _: () = assert!(KEY_LEDGERS_MAX <= u8::MAX as usize);
/// No page is larger than a batch, so one read's work is bounded like one
/// write's.
const _: () = assert!(ORDER_PAGE_MAX as usize <= BATCH_EVENTS_MAX);
const _: () = assert!(EVENTS_PAGE_MAX <= BATCH_EVENTS_MAX);
const _: () = assert!(QUERY_PAGE_MAX <= BATCH_EVENTS_MAX);
const _: () = assert!(ACCESS_PAGE_MAX <= BATCH_EVENTS_MAX);
const _: () = assert!(AUDIT_PAGE_MAX <= BATCH_EVENTS_MAX);
/// A page scan covers at least one full page.
const _: () = assert!(EVENTS_PAGE_MAX <= EVENTS_SCAN_MAX);
/// Timeline positions are stored as u32 in journal references.
const _: () = assert!(TIMELINE_MAX <= u32::MAX as usize);
/// 10^SCALE_MAX fits in u128.
const _: () = assert!(10u128.checked_pow(SCALE_MAX as u32).is_some());
/// Entry time keeps room for a batch's per-event timestamps and a snapshot's
/// `last_timestamp + 1`.
const _: () = assert!(ENTRY_TIME_MAX + BATCH_EVENTS_MAX as u64 <= LAST_TIMESTAMP_MAX);

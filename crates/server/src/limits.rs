//! Every limit of a node's server side, in one place, with why it has its
//! value; relations with the core's, the log's and the protocol's limits are
//! checked at compile time below. Limits an operator sets (connections,
//! timeouts) are `NetLimits` in `net.rs`.

use bursar_core::limits::{ENVELOPE_MAX, IDEMPOTENCY_KEY_MAX, REQUEST_ID_MAX, ROUTE_MAX};

// The cache of cold state.

/// Default size of the block cache in front of cold state chunks
/// (`--cache-mib`): 256 MiB hold 2M transfers' worth of history blocks.
pub const CACHE_BYTES_DEFAULT: u64 = 256 << 20;
/// Smallest and largest `--cache-mib`: one MiB still works (every cold read
/// goes to disk); the largest is the store's own bound.
pub const CACHE_MIB_MIN: u64 = 1;
pub const CACHE_MIB_MAX: u64 = bursar_store::limits::CACHE_BYTES_MAX >> 20;
const _: () = assert!(CACHE_MIB_MIN << 20 >= bursar_store::limits::CACHE_BYTES_MIN);
const _: () = assert!(CACHE_BYTES_DEFAULT >= CACHE_MIB_MIN << 20 && CACHE_BYTES_DEFAULT <= CACHE_MIB_MAX << 20);

// Stored id tables.

/// Ids sorted and written as one table by the indexer: 2M (id, position)
/// pairs are 64 MiB to sort, and the table's filter needs ~25 B per key
/// while it is built.
pub const INDEX_RUN_ENTRIES_MAX: usize = 2 << 20;
/// Snapshot views waiting for the indexer: one; a newer view covers what
/// an older one would have.
pub const INDEXER_QUEUE_MAX: usize = 1;
/// The indexer thread's nice value: below the engine, which applies
/// entries while the indexer catches up.
pub const INDEXER_NICE: i32 = 10;

// Group commit.

/// Most requests folded into one log entry.
pub const GROUP_REQUESTS_MAX: usize = 64;

/// Most body bytes folded into one log entry (the log allows 64 MiB).
pub const GROUP_BYTES_MAX: usize = 16 << 20;

/// In cluster mode, where an entry is one message of the replicated log:
/// this plus one request (HTTP bodies are at most 4 MiB) stays under 8 MiB.
pub const CLUSTER_GROUP_BYTES_MAX: usize = 3 << 20;

// Cluster mode.

/// Boots of this process remembered to recognise its entries (a boot
/// changes only when the log shows a newer run of this node id).
pub const BOOTS_KEPT: usize = 64;

/// Most proposals awaiting their commit (the replicator bounds its queue
/// far below this; exceeding it means proposals leak).
pub const WAITING_PROPOSALS_MAX: usize = 1 << 16;

// Keys and sessions.

/// Shortest secret accepted from `BURSAR_ADMIN_KEY`.
pub const SUPPLIED_TOKEN_MIN: usize = 16;

/// Longest secret `keys::token_is_plausible` accepts (the binary
/// protocol's authenticate body has the same bound).
pub const TOKEN_MAX: usize = 256;

/// Failed authentications (or requests before one) a connection may make
/// before the server closes it.
pub const AUTH_FAILURES_MAX: u32 = 3;

// Snapshots.

/// Snapshots kept on disk (the newest ones).
pub const SNAPSHOTS_KEPT: usize = 2;

// Relations, checked when the crate compiles.

/// Most bytes of an envelope's prefix beyond its strings (fixed fields).
const ENVELOPE_FIXED_MAX: usize = 256;
/// A group closes after the request that reaches `GROUP_BYTES_MAX`, which
/// is at most an envelope; every request adds its command header and
/// envelope prefix. All of it fits in one log entry.
const _: () = assert!(
    GROUP_BYTES_MAX
        + ENVELOPE_MAX
        + GROUP_REQUESTS_MAX * (8 + ENVELOPE_FIXED_MAX + REQUEST_ID_MAX + ROUTE_MAX + IDEMPOTENCY_KEY_MAX)
        <= bursar_log::limits::ENTRY_BODY_MAX as usize
);
/// A cluster entry is smaller than a local one.
const _: () = assert!(CLUSTER_GROUP_BYTES_MAX < GROUP_BYTES_MAX);
/// Any key the server accepts can authenticate a binary connection.
const _: () = assert!(TOKEN_MAX <= bursar_proto::AUTH_TOKEN_MAX);
/// Generated keys (`bsk_` and 64 hex digits) are accepted keys.
const _: () = assert!(SUPPLIED_TOKEN_MIN <= 4 + 64);
const _: () = assert!(4 + 64 <= TOKEN_MAX);

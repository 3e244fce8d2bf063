//! Every size and count limit of the on-disk formats, in one place, with
//! the relations between them checked at compile time.

/// Bytes in a block, the unit of every read, write and checksum.
pub const BLOCK_SIZE: usize = 64 * 1024;
/// Bytes of a block's header (magic, kind, version, address, length, checksum).
pub const BLOCK_HEADER_SIZE: usize = 32;
/// Payload bytes one block can carry.
pub const BLOCK_PAYLOAD_MAX: usize = BLOCK_SIZE - BLOCK_HEADER_SIZE;

const _: () = assert!(BLOCK_SIZE.is_power_of_two());
const _: () = assert!(BLOCK_SIZE.is_multiple_of(4096), "blocks are whole pages, so a block never straddles a page");
const _: () = assert!(BLOCK_HEADER_SIZE.is_multiple_of(16), "payloads stay 16-byte aligned for u128 records");
const _: () = assert!(BLOCK_PAYLOAD_MAX >= 128 * 64, "a block holds at least 64 transfers");

/// Data files one checkpoint may consist of.
pub const MANIFEST_FILES_MAX: usize = 1 << 16;
/// Bytes of a data file's name in a manifest.
pub const MANIFEST_FILE_NAME_MAX: usize = 255;
/// Bytes of the caller's body in a manifest (its small in-memory sections).
pub const MANIFEST_BODY_MAX: usize = 1 << 30;
/// Checkpoints retained at most (each pins its files and the log after it).
pub const MANIFESTS_KEPT_MAX: usize = 16;

const _: () = assert!(MANIFEST_FILE_NAME_MAX <= u16::MAX as usize, "names are stored with a u16 length");
const _: () = assert!(MANIFEST_BODY_MAX <= u32::MAX as usize, "the body length is stored as a u32");
const _: () = assert!(MANIFEST_FILES_MAX <= u32::MAX as usize, "the file count is stored as a u32");

/// Entries one table may hold. Writing a table keeps 8 bytes of filter
/// scratch per entry and xorf's construction needs about 25 more, so the
/// largest table costs ~1 GiB of memory to write; an index that outgrows
/// this is several tables. xorf sizes its arrays with `u32`.
pub const TABLE_ENTRIES_MAX: u64 = 1 << 25;
/// Bytes of a table key. Ids and (account, position) pairs are 16.
pub const TABLE_KEY_SIZE_MAX: usize = 1024;
/// Bytes of a table value (0 makes a set). Positions are 8.
pub const TABLE_VALUE_SIZE_MAX: usize = 1024;
/// Tables one merge reads at once: each holds one data block in memory.
pub const TABLE_MERGE_INPUTS_MAX: usize = 64;
/// A table being written is synced every this many blocks (8 MiB), so a
/// merge writing a large table never leaves hundreds of MiB dirty for one
/// final fsync that would stall the log's own syncs behind it.
pub const TABLE_SYNC_EVERY_BLOCKS: u64 = 128;
const _: () = assert!(TABLE_SYNC_EVERY_BLOCKS >= 16, "syncs stay large enough to be cheap");

const _: () = assert!(
    BLOCK_PAYLOAD_MAX / (TABLE_KEY_SIZE_MAX + TABLE_VALUE_SIZE_MAX) >= 16,
    "a data block holds at least 16 entries, so the index in memory is at most 1/16 of the keys"
);
const _: () = assert!(BLOCK_PAYLOAD_MAX / TABLE_KEY_SIZE_MAX >= 2, "an index block holds at least two first keys");
const _: () = assert!(
    128 + 2 * TABLE_KEY_SIZE_MAX <= BLOCK_PAYLOAD_MAX,
    "a table's footer (fixed fields, min and max key) fits one block"
);
const _: () = assert!(
    TABLE_ENTRIES_MAX * 5 / 4 < u32::MAX as u64,
    "xorf's binary fuse arrays (about 1.125 slots per key) are sized with u32"
);
const _: () = assert!(TABLE_MERGE_INPUTS_MAX * BLOCK_SIZE <= 16 << 20, "a merge holds at most 16 MiB of blocks");
// Record files (`records.rs`) and the block cache (`cache.rs`).

/// Bytes of one record in a record file. Transfers are 128 bytes; 4 KiB
/// keeps at least 15 records per block, so a block read serves many.
pub const RECORD_SIZE_MAX: usize = 4096;
/// Bytes of the smallest record: a tail slot's 16-byte header then fits
/// beside the most records a tail holds (one fewer than a full block).
/// Change-journal references are 16 bytes.
pub const RECORD_SIZE_MIN: usize = 16;
/// Blocks in one record file: 2^24 blocks of 64 KiB is 1 TiB, over 8
/// billion transfers. A file that would grow past it is a caller's bug
/// (it rolls to a new file first).
pub const RECORD_FILE_BLOCKS_MAX: u64 = 1 << 24;
/// Records one `read_range` call may return: a page, not a whole file.
pub const READ_RANGE_RECORDS_MAX: usize = 1 << 16;
/// The smallest block cache: one block's bytes. It keeps nothing (an
/// entry is admitted only up to 97% of the capacity), so every read goes to
/// disk and is checked: the setting for tests and cold-read measurements.
/// Two blocks' bytes keep one block.
pub const CACHE_BYTES_MIN: u64 = BLOCK_SIZE as u64;
/// The largest block cache (`--cache-mib`): 1 TiB, far above any machine
/// this runs on; a larger value is a typo.
pub const CACHE_BYTES_MAX: u64 = 1 << 40;
/// Lock shards of the block cache: enough for a few query threads beside
/// the writer on small machines. Fixed, so that eviction does not depend on
/// the machine's core count (the cache merges shards when small).
pub const CACHE_SHARDS_MAX: usize = 8;

const _: () = assert!(RECORD_SIZE_MAX <= BLOCK_PAYLOAD_MAX / 8, "a block holds at least 8 of the largest records");
const _: () = assert!(RECORD_SIZE_MIN <= RECORD_SIZE_MAX);
const _: () = assert!(RECORD_SIZE_MAX.is_power_of_two(), "records of the largest size pack blocks without odd gaps");
const _: () = assert!(
    RECORD_FILE_BLOCKS_MAX.checked_mul(BLOCK_SIZE as u64).is_some(),
    "the largest record file's byte size fits a u64 offset"
);
const _: () = assert!(
    (READ_RANGE_RECORDS_MAX as u64) < RECORD_FILE_BLOCKS_MAX * (BLOCK_PAYLOAD_MAX / RECORD_SIZE_MAX) as u64,
    "a page is smaller than a full file of the largest records"
);
const _: () = assert!(CACHE_BYTES_MIN >= BLOCK_SIZE as u64, "no cache is smaller than what one read brings in");
const _: () = assert!(CACHE_BYTES_MIN < CACHE_BYTES_MAX);
const _: () = assert!(CACHE_SHARDS_MAX.is_power_of_two(), "the cache's shard count is a power of two");
// Tiers (`tiers/`): an index kept as a set of tables, merged in the background.

/// Bytes of memory writing a table costs per entry: 8 of filter scratch
/// (the keys' hashes, `table::TableWriter`) and about 25 in xorf's binary
/// fuse construction, which needs every key at once.
pub const TABLE_BUILD_BYTES_PER_ENTRY: u64 = 33;
/// Bytes of memory writing one tier table may cost (a run or a merge):
/// it happens beside a running node, so it must stay a small slice of RAM.
pub const TIERS_TABLE_BUILD_BYTES_MAX: u64 = 256 << 20;
/// Entries in one tier table: the most whose construction stays within
/// `TIERS_TABLE_BUILD_BYTES_MAX` (7 Mi entries, 231 MiB). A larger run is
/// written as several tables; merges stop growing a table at this size.
pub const TIERS_TABLE_ENTRIES_MAX: u64 = 7 << 20;
/// Entries one run (`Tiers::add_run`) may hand over: 128 full tables.
pub const TIERS_RUN_ENTRIES_MAX: u64 = TIERS_TABLE_ENTRIES_MAX * 128;
/// Tables live at once. Every `get` of a key inside a table's key range
/// probes its filter, so this bounds a lookup's cost; compaction keeps the
/// count near log4 of the history, so reaching it is a caller's bug (no
/// compaction running).
pub const TIERS_TABLES_MAX: usize = 1024;
/// Tables one compaction merges at most.
pub const TIERS_MERGE_INPUTS_MAX: usize = 8;
/// Tables one compaction merges at least, unless its output fills half a
/// table: merging fewer would rewrite each entry more often.
pub const TIERS_MERGE_INPUTS_MIN: usize = 4;
/// How many times larger than the smallest input a compaction input may be
/// (size-tiered: tables of similar size merge, so each entry is rewritten
/// about once per tier).
pub const TIERS_MERGE_SIZE_RATIO_MAX: u64 = 4;
/// Entries one `Tiers::range` call returns at most: a page.
pub const TIERS_RANGE_LIMIT_MAX: usize = 1 << 16;
/// Manifests a tier set keeps: the newest and one to fall back to. Each
/// keeps the tables it names on disk until a later commit prunes it.
pub const TIERS_MANIFESTS_KEPT_MAX: usize = 2;
/// Bytes of a tier set's name (the prefix of its table files).
pub const TIERS_NAME_MAX: usize = 64;

const _: () = assert!(
    TIERS_TABLE_ENTRIES_MAX * TABLE_BUILD_BYTES_PER_ENTRY <= TIERS_TABLE_BUILD_BYTES_MAX,
    "writing the largest tier table stays within its memory budget"
);
const _: () = assert!(TIERS_TABLE_ENTRIES_MAX <= TABLE_ENTRIES_MAX, "a tier table is a table");
const _: () = assert!(TIERS_RUN_ENTRIES_MAX / TIERS_TABLE_ENTRIES_MAX <= TIERS_TABLES_MAX as u64);
const _: () = assert!(TIERS_MERGE_INPUTS_MAX <= TABLE_MERGE_INPUTS_MAX, "a compaction is one table merge");
const _: () = assert!(2 <= TIERS_MERGE_INPUTS_MIN && TIERS_MERGE_INPUTS_MIN <= TIERS_MERGE_INPUTS_MAX);
const _: () = assert!(TIERS_MERGE_SIZE_RATIO_MAX >= 2);
const _: () = assert!(TIERS_TABLES_MAX <= MANIFEST_FILES_MAX, "one manifest names every live table");
const _: () =
    assert!(TIERS_TABLES_MAX * BLOCK_SIZE <= 64 << 20, "a range holds one data block of each table: at most 64 MiB");
const _: () = assert!(TIERS_RANGE_LIMIT_MAX <= READ_RANGE_RECORDS_MAX, "a range is a page");
const _: () = assert!(2 <= TIERS_MANIFESTS_KEPT_MAX && TIERS_MANIFESTS_KEPT_MAX <= MANIFESTS_KEPT_MAX);
const _: () = assert!(TIERS_NAME_MAX + 25 <= MANIFEST_FILE_NAME_MAX, "name, dash, 20 digits and .bst fit a file name");

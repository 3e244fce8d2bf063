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

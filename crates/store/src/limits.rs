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

//! Every size and count limit of the on-disk formats, in one place, with
//! the relations between them checked at compile time.

/// Bytes in a block, the unit of every read, write and checksum.
pub const BLOCK_SIZE: usize = 64 * 1024;
/// Bytes of a block's header (magic, kind, version, address, length, checksum).
pub const BLOCK_HEADER_SIZE: usize = 32;
/// Payload bytes one block can carry.
pub const BLOCK_PAYLOAD_MAX: usize = BLOCK_SIZE - BLOCK_HEADER_SIZE;

const _: () = assert!(BLOCK_SIZE.is_power_of_two());
const _: () = assert!(BLOCK_SIZE % 4096 == 0, "blocks are whole pages, so a block never straddles a page");
const _: () = assert!(BLOCK_HEADER_SIZE % 16 == 0, "payloads stay 16-byte aligned for u128 records");
const _: () = assert!(BLOCK_PAYLOAD_MAX >= 128 * 64, "a block holds at least 64 transfers");

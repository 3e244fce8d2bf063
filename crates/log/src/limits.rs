//! Every limit of the durable storage, in one place, with why it has its
//! value. Each bounds what is read from disk before a buffer is allocated
//! for it, so a damaged or hostile file is an error, never an allocation of
//! its choosing.

/// Largest entry body: 64 MiB (a full batch of transfers is 1 MiB, and the
/// engine groups at most 16 MiB of requests). Checked before any buffer is
/// allocated for a body read from disk.
pub const ENTRY_BODY_MAX: u32 = 64 << 20;

/// Largest snapshot chunk payload (the largest arena chunk is 8 MiB).
pub const CHUNK_PAYLOAD_MAX: u64 = 64 << 20;

/// Largest manifest read or written (about 6 million chunk references).
pub const MANIFEST_BYTES_MAX: u64 = 256 << 20;

/// More sections than any state has; bounds the parse of a bad count.
pub const SECTIONS_MAX: usize = 64;

/// Most directory entries `loose_modes` looks at, so a huge directory cannot
/// stall a start.
pub const MODE_SCAN_MAX: usize = 100_000;

/// A chunk may be as large as an entry body (a snapshot section is written
/// from state that entries built).
const _: () = assert!(ENTRY_BODY_MAX as u64 <= CHUNK_PAYLOAD_MAX);
/// A manifest can name at least one chunk of every section.
const _: () = assert!(SECTIONS_MAX as u64 * 40 <= MANIFEST_BYTES_MAX);

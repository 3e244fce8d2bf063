//! The block: `BLOCK_SIZE` bytes, a 32-byte header and a payload.
//!
//! ```text
//! 0   magic     u32  "BSBK"
//! 4   kind      u8   what the payload is (`BlockKind`)
//! 5   version   u8   1
//! 6   reserved  u16  0
//! 8   file_id   u64  the file the block belongs to
//! 16  index     u64  the block's index in that file
//! 24  len       u32  payload bytes used (the rest is zero)
//! 28  checksum  u32  CRC-32C of the whole block with this field zeroed
//! ```
//!
//! The checksum covers every byte, padding included, so any flipped bit is
//! caught. The address (file id and index) catches a block that is intact
//! but in the wrong place: a misdirected write, or a read of the wrong
//! file. CRC-32C rather than a cryptographic hash: it guards against
//! accidents, not adversaries (whoever can write the data directory can
//! write the log too), and the CPU computes it at memory speed.

use crate::limits::{BLOCK_HEADER_SIZE, BLOCK_PAYLOAD_MAX, BLOCK_SIZE};

const MAGIC: [u8; 4] = *b"BSBK";
const VERSION: u8 = 1;
const CHECKSUM_AT: usize = 28;

/// What a block's payload holds.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Fixed-size records of an append-only record file.
    Records = 1,
    /// Sorted entries of a table.
    TableData = 2,
    /// A table's sparse index (the first key of each data block).
    TableIndex = 3,
    /// A table's filter.
    TableFilter = 4,
    /// A table's footer: counts, key range, where the rest is.
    TableFooter = 5,
    /// A checkpoint's manifest.
    Manifest = 6,
    /// A piece of a snapshot chunk (an arena chunk of the state machine).
    SnapshotChunk = 7,
}

impl BlockKind {
    pub fn from_code(code: u8) -> Option<BlockKind> {
        [
            BlockKind::Records,
            BlockKind::TableData,
            BlockKind::TableIndex,
            BlockKind::TableFilter,
            BlockKind::TableFooter,
            BlockKind::Manifest,
            BlockKind::SnapshotChunk,
        ]
        .into_iter()
        .find(|k| *k as u8 == code)
    }
}

/// Where a block belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockAddress {
    pub file_id: u64,
    pub index: u64,
}

impl BlockAddress {
    /// The block's byte offset in its file.
    pub fn offset(&self) -> u64 {
        self.index * BLOCK_SIZE as u64
    }
}

/// Why a block was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockFault {
    #[error("checksum mismatch: the block is damaged")]
    Checksum,
    #[error("not a block (magic {found:02x?})")]
    Magic { found: [u8; 4] },
    #[error("block format version {found}, this build reads version {VERSION}")]
    Version { found: u8 },
    #[error("a {found:?} block where a {expected:?} block belongs")]
    Kind { expected: BlockKind, found: Option<BlockKind> },
    #[error("the block belongs at {found:?}, not at {expected:?}: a misdirected write or read")]
    Misplaced { expected: BlockAddress, found: BlockAddress },
    #[error("payload of {len} bytes exceeds a block's {BLOCK_PAYLOAD_MAX}")]
    Length { len: u32 },
    #[error("{len} bytes where a block of {BLOCK_SIZE} belongs")]
    Size { len: usize },
}

/// Writes a block holding `payload` into `out`.
///
/// Panics if `payload` exceeds `BLOCK_PAYLOAD_MAX`: the caller sized it.
pub fn seal(kind: BlockKind, at: BlockAddress, payload: &[u8], out: &mut [u8; BLOCK_SIZE]) {
    assert!(payload.len() <= BLOCK_PAYLOAD_MAX, "a {} byte payload does not fit a block", payload.len());
    out[..4].copy_from_slice(&MAGIC);
    out[4] = kind as u8;
    out[5] = VERSION;
    out[6..8].fill(0);
    out[8..16].copy_from_slice(&at.file_id.to_le_bytes());
    out[16..24].copy_from_slice(&at.index.to_le_bytes());
    out[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[CHECKSUM_AT..BLOCK_HEADER_SIZE].fill(0);
    out[BLOCK_HEADER_SIZE..BLOCK_HEADER_SIZE + payload.len()].copy_from_slice(payload);
    out[BLOCK_HEADER_SIZE + payload.len()..].fill(0);
    let sum = crc32c::crc32c(out.as_slice());
    out[CHECKSUM_AT..BLOCK_HEADER_SIZE].copy_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(open(kind, at, out.as_slice()).map(<[u8]>::len), Ok(payload.len()), "a sealed block opens");
}

/// Checks a block read from `at` and returns its payload.
pub fn open(kind: BlockKind, at: BlockAddress, block: &[u8]) -> Result<&[u8], BlockFault> {
    if block.len() != BLOCK_SIZE {
        return Err(BlockFault::Size { len: block.len() });
    }
    if checksum(block) != u32::from_le_bytes(field(block, CHECKSUM_AT)) {
        return Err(BlockFault::Checksum);
    }
    // The checksum matched: what follows catches intact blocks that do not
    // belong here, or that a newer format wrote.
    let magic: [u8; 4] = field(block, 0);
    if magic != MAGIC {
        return Err(BlockFault::Magic { found: magic });
    }
    if block[5] != VERSION {
        return Err(BlockFault::Version { found: block[5] });
    }
    let found_kind = BlockKind::from_code(block[4]);
    if found_kind != Some(kind) {
        return Err(BlockFault::Kind { expected: kind, found: found_kind });
    }
    let found =
        BlockAddress { file_id: u64::from_le_bytes(field(block, 8)), index: u64::from_le_bytes(field(block, 16)) };
    if found != at {
        return Err(BlockFault::Misplaced { expected: at, found });
    }
    let len = u32::from_le_bytes(field(block, 24));
    if len as usize > BLOCK_PAYLOAD_MAX {
        return Err(BlockFault::Length { len });
    }
    Ok(&block[BLOCK_HEADER_SIZE..BLOCK_HEADER_SIZE + len as usize])
}

/// CRC-32C of the block with its checksum field taken as zero.
fn checksum(block: &[u8]) -> u32 {
    let head = crc32c::crc32c(&block[..CHECKSUM_AT]);
    let head = crc32c::crc32c_append(head, &[0; BLOCK_HEADER_SIZE - CHECKSUM_AT]);
    crc32c::crc32c_append(head, &block[BLOCK_HEADER_SIZE..])
}

fn field<const N: usize>(block: &[u8], at: usize) -> [u8; N] {
    block[at..at + N].try_into().expect("the header is inside the block: its size was checked")
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: BlockAddress = BlockAddress { file_id: 7, index: 3 };

    fn sealed(payload: &[u8]) -> Box<[u8; BLOCK_SIZE]> {
        let mut b = Box::new([0u8; BLOCK_SIZE]);
        seal(BlockKind::Records, AT, payload, &mut b);
        b
    }

    #[test]
    fn a_sealed_block_opens_to_its_payload() {
        for len in [0, 1, 100, BLOCK_PAYLOAD_MAX] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            assert_eq!(open(BlockKind::Records, AT, sealed(&payload).as_slice()), Ok(payload.as_slice()));
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let block = sealed(b"seven transfers and a balance");
        let mut damaged = block.clone();
        for bit in 0..BLOCK_SIZE * 8 {
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open(BlockKind::Records, AT, damaged.as_slice()), Err(BlockFault::Checksum), "bit {bit}");
            damaged[bit / 8] ^= 1 << (bit % 8);
        }
        assert_eq!(damaged, block);
    }

    #[test]
    fn an_intact_block_in_the_wrong_place_is_refused() {
        let block = sealed(b"x");
        let elsewhere = BlockAddress { file_id: 7, index: 4 };
        assert_eq!(
            open(BlockKind::Records, elsewhere, block.as_slice()),
            Err(BlockFault::Misplaced { expected: elsewhere, found: AT })
        );
        let other_file = BlockAddress { file_id: 8, index: 3 };
        assert!(matches!(open(BlockKind::Records, other_file, block.as_slice()), Err(BlockFault::Misplaced { .. })));
        assert_eq!(
            open(BlockKind::TableData, AT, block.as_slice()),
            Err(BlockFault::Kind { expected: BlockKind::TableData, found: Some(BlockKind::Records) })
        );
    }

    #[test]
    fn short_and_zeroed_blocks_are_refused() {
        assert_eq!(open(BlockKind::Records, AT, &[0; 100]), Err(BlockFault::Size { len: 100 }));
        // A hole in a sparse file reads as zeros: never a valid block.
        assert_eq!(open(BlockKind::Records, AT, &[0; BLOCK_SIZE]), Err(BlockFault::Checksum));
    }

    #[test]
    fn every_kind_reads_back_from_its_code() {
        for code in 0..=u8::MAX {
            if let Some(kind) = BlockKind::from_code(code) {
                assert_eq!(kind as u8, code);
            }
        }
        assert_eq!(BlockKind::from_code(7), Some(BlockKind::SnapshotChunk));
        assert_eq!((1..=u8::MAX).filter(|c| BlockKind::from_code(*c).is_some()).count(), 7);
    }

    #[test]
    #[should_panic(expected = "does not fit a block")]
    fn an_oversized_payload_is_a_caller_bug() {
        sealed(&vec![0; BLOCK_PAYLOAD_MAX + 1]);
    }
}

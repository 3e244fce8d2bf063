//! Where everything sits in a table file, computed in one place for the
//! writer and the reader, and the footer's encoding.
//!
//! ```text
//! footer payload (little-endian)
//! 0   format             u32  TABLE_FORMAT
//! 4   key_size           u32
//! 8   value_size         u32
//! 12  entries_per_block  u32
//! 16  fingerprint_bits   u32  16
//! 20  hash               u32  1 = XXH3-64
//! 24  hash_seed          u64
//! 32  entries            u64
//! 40  data_blocks        u64
//! 48  index_blocks       u64
//! 56  filter_blocks      u64
//! 64  filter_len         u64  fingerprints
//! 72  blocks             u64  in the file, footer included
//! 80  filter seed        u64  \
//! 88  segment_length     u32   | xorf's binary fuse descriptor
//! 92  segment_mask       u32   |
//! 96  segment_count_len  u32  /
//! 100 reserved           u32  0
//! 104 min key, then max key (key_size bytes each)
//! ```

use crate::error::TableFault;
use crate::limits::{BLOCK_PAYLOAD_MAX, TABLE_ENTRIES_MAX};
use xorf::Descriptor;

pub(super) const TABLE_FORMAT: u32 = 1;
pub(super) const FINGERPRINT_BITS: u32 = 16;
pub(super) const FINGERPRINT_BYTES: u64 = FINGERPRINT_BITS as u64 / 8;
const HASH_XXH3: u32 = 1;
/// The filter hash's seed for every table this build writes ("bursar" + 2).
pub(super) const HASH_SEED: u64 = 0x6275_7273_6172_0002;
const FIXED: usize = 104;
/// xorf caps a binary fuse segment at this many slots.
const SEGMENT_LENGTH_MAX: u32 = 1 << 18;

const _: () =
    assert!((BLOCK_PAYLOAD_MAX as u64).is_multiple_of(FINGERPRINT_BYTES), "no fingerprint straddles two blocks");

/// The shape and counts of a table, from which every block position follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub key_size: usize,
    pub value_size: usize,
    pub entries: u64,
    /// Fingerprints in the filter.
    pub filter_len: u64,
}

impl Layout {
    pub fn entries_per_block(&self) -> u64 {
        (BLOCK_PAYLOAD_MAX / (self.key_size + self.value_size)) as u64
    }

    pub fn data_blocks(&self) -> u64 {
        self.entries.div_ceil(self.entries_per_block())
    }

    /// Entries in data block `block`: full blocks, then the rest.
    pub fn entries_in(&self, block: u64) -> u64 {
        assert!(block < self.data_blocks(), "data block {block} of {}", self.data_blocks());
        let before = block * self.entries_per_block();
        (self.entries - before).min(self.entries_per_block())
    }

    pub fn keys_per_index_block(&self) -> u64 {
        (BLOCK_PAYLOAD_MAX / self.key_size) as u64
    }

    pub fn index_blocks(&self) -> u64 {
        self.data_blocks().div_ceil(self.keys_per_index_block())
    }

    pub fn filter_bytes(&self) -> u64 {
        self.filter_len * FINGERPRINT_BYTES
    }

    pub fn filter_blocks(&self) -> u64 {
        self.filter_bytes().div_ceil(BLOCK_PAYLOAD_MAX as u64)
    }

    pub fn first_index_block(&self) -> u64 {
        self.data_blocks()
    }

    pub fn first_filter_block(&self) -> u64 {
        self.first_index_block() + self.index_blocks()
    }

    pub fn footer_block(&self) -> u64 {
        self.first_filter_block() + self.filter_blocks()
    }

    /// Blocks in the file, footer included.
    pub fn blocks(&self) -> u64 {
        self.footer_block() + 1
    }
}

/// What the footer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Footer {
    pub layout: Layout,
    pub hash_seed: u64,
    pub filter: Descriptor,
    pub min_key: Vec<u8>,
    pub max_key: Vec<u8>,
}

impl Footer {
    pub fn encode(&self) -> Vec<u8> {
        let l = &self.layout;
        assert!(self.min_key.len() == l.key_size && self.max_key.len() == l.key_size, "footer keys have the key size");
        let mut out = Vec::with_capacity(FIXED + 2 * l.key_size);
        for v in [TABLE_FORMAT, l.key_size as u32, l.value_size as u32, l.entries_per_block() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&FINGERPRINT_BITS.to_le_bytes());
        out.extend_from_slice(&HASH_XXH3.to_le_bytes());
        out.extend_from_slice(&self.hash_seed.to_le_bytes());
        for v in [l.entries, l.data_blocks(), l.index_blocks(), l.filter_blocks(), l.filter_len, l.blocks()] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.filter.seed.to_le_bytes());
        let d = &self.filter;
        for v in [d.segment_length, d.segment_length_mask, d.segment_count_length, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(out.len(), FIXED, "the footer's fixed fields are {FIXED} bytes");
        out.extend_from_slice(&self.min_key);
        out.extend_from_slice(&self.max_key);
        out
    }

    /// Decodes and checks a footer read from block `at` (the file's last)
    /// of a table read with keys and values of the given sizes.
    pub fn decode(p: &[u8], key_size: usize, value_size: usize, at: u64) -> Result<Footer, TableFault> {
        if p.len() < FIXED {
            return Err(TableFault::Footer("shorter than its fixed fields"));
        }
        let found = u32_at(p, 0);
        if found != TABLE_FORMAT {
            return Err(TableFault::Format { found, expected: TABLE_FORMAT });
        }
        let (k, v) = (u32_at(p, 4), u32_at(p, 8));
        if (k as usize, v as usize) != (key_size, value_size) {
            let (expected_key, expected_value) = (key_size as u32, value_size as u32);
            return Err(TableFault::Shape { key_size: k, value_size: v, expected_key, expected_value });
        }
        if p.len() != FIXED + 2 * key_size {
            return Err(TableFault::Footer("its length does not match the key size"));
        }
        let layout = Layout { key_size, value_size, entries: u64_at(p, 32), filter_len: u64_at(p, 64) };
        check_counts(p, &layout, at)?;
        let filter = Descriptor {
            seed: u64_at(p, 80),
            segment_length: u32_at(p, 88),
            segment_length_mask: u32_at(p, 92),
            segment_count_length: u32_at(p, 96),
        };
        check_filter(&filter, &layout)?;
        let (min_key, max_key) = (p[FIXED..FIXED + key_size].to_vec(), p[FIXED + key_size..].to_vec());
        Ok(Footer { layout, hash_seed: u64_at(p, 24), filter, min_key, max_key })
    }
}

/// Every count the footer states must be the one its layout implies.
fn check_counts(p: &[u8], l: &Layout, at: u64) -> Result<(), TableFault> {
    if !(1..=TABLE_ENTRIES_MAX).contains(&l.entries) {
        return Err(TableFault::Footer("entry count outside 1..=TABLE_ENTRIES_MAX"));
    }
    if u32_at(p, 12) as u64 != l.entries_per_block() {
        return Err(TableFault::Footer("entries per block differ from this build's layout"));
    }
    if u32_at(p, 16) != FINGERPRINT_BITS || u32_at(p, 20) != HASH_XXH3 || u32_at(p, 100) != 0 {
        return Err(TableFault::Footer("unknown filter kind or hash"));
    }
    // Bounds the filter before any count below is computed from it.
    if l.filter_len > 8 * l.entries + 3 * SEGMENT_LENGTH_MAX as u64 {
        return Err(TableFault::Footer("filter far larger than its entries need"));
    }
    let stated = [u64_at(p, 40), u64_at(p, 48), u64_at(p, 56), u64_at(p, 72)];
    if stated != [l.data_blocks(), l.index_blocks(), l.filter_blocks(), l.blocks()] {
        return Err(TableFault::Footer("block counts disagree with the entry count and filter length"));
    }
    if l.footer_block() != at {
        return Err(TableFault::Footer("the footer is not where its block counts put it"));
    }
    Ok(())
}

/// The descriptor must keep every probe inside the fingerprints: xorf
/// indexes them unchecked by these fields (it would panic, not err). A
/// table written for ranges only has no filter: no fingerprints and a
/// descriptor of zeros.
fn check_filter(d: &Descriptor, l: &Layout) -> Result<(), TableFault> {
    if l.filter_len == 0 {
        let none = d.seed == 0 && d.segment_length == 0 && d.segment_length_mask == 0 && d.segment_count_length == 0;
        return if none { Ok(()) } else { Err(TableFault::Footer("a descriptor without fingerprints")) };
    }
    let seg = d.segment_length;
    let sane = seg.is_power_of_two()
        && seg <= SEGMENT_LENGTH_MAX
        && d.segment_length_mask == seg - 1
        && d.segment_count_length >= seg
        && d.segment_count_length.is_multiple_of(seg)
        && d.segment_count_length as u64 + 2 * seg as u64 == l.filter_len;
    if sane { Ok(()) } else { Err(TableFault::Footer("filter descriptor does not fit the filter's length")) }
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().expect("inside the checked fixed fields"))
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().expect("inside the checked fixed fields"))
}

//! Immutable sorted tables of fixed-size keys and values, with a sparse
//! index and a filter kept in memory: the building block of the LSM
//! indexes (transfer id to position, account to its transfers' positions).
//!
//! ```text
//! blocks [0, D)        TableData:   entries (key bytes, value bytes), sorted,
//!                                   `entries_per_block` in each but the last
//! blocks [D, D+I)      TableIndex:  the first key of each data block
//! blocks [D+I, D+I+F)  TableFilter: a binary fuse filter's fingerprints
//! block  D+I+F         TableFooter: shape, counts, filter descriptor, min and max key
//! ```
//!
//! Why this shape:
//! - Fixed-size entries make a data block an array: a lookup is one binary
//!   search in the in-memory index, one block read and one binary search
//!   in the block, with no per-entry framing to parse or trust.
//! - Every count is derived from the footer's entry count and the entry
//!   size, and the reader recomputes and compares them all, so blocks that
//!   are intact but disagree (a writer bug, a file put together from two
//!   tables) are named, never used. Every block goes through `block::open`.
//! - The filter answers "absent" for almost every key a table does not hold
//!   without a disk read. The id index asks that for every new transfer (is
//!   the id unique?) and in every table of the tree, so false positives are
//!   what an absent lookup costs. Measured on 10M keys: a `BinaryFuse8`
//!   takes 9.0 bits per key at 0.39% false positives, a `BinaryFuse16` 18
//!   bits at 0.0015%. With ~8 tables probed per insert the 8-bit filter
//!   would send ~3% of inserts to the disk, the 16-bit one 0.01%, for 1.1
//!   more bytes of memory per key (against ~200 per transfer today): 16.
//! - Keys are hashed with XXH3 under a fixed seed recorded in the footer;
//!   XXH3 is a specified algorithm, so a filter written once reads the same
//!   under every later build. Filter construction is deterministic too
//!   (xorf's seeds come from a fixed sequence; no random fill), so a
//!   table's bytes depend on its entries alone.
//! - Keys compare by the caller's `Ord` on the decoded value, not as bytes,
//!   so any `Pod + Ord` type works (a `#[repr(C)]` pair of `u64`s with a
//!   derived `Ord` sorts by account, then position); no byte encoding that
//!   sorts right is needed. The filter hashes a key's bytes, so keys that
//!   `Ord` calls equal must have equal bytes: true of integers, arrays and
//!   derived orders on `Pod` structs, false of a hand-written `Ord` that
//!   ignores a field.
//! - A table is written once, front to back, and fsynced by `finish`; the
//!   caller makes it visible (manifest, directory fsync). A crash before
//!   that leaves a file without a footer, which `open` refuses.
//!
//! Data blocks are read through one function, `Table::data_block`: the
//! seam where the shared block cache plugs in.

mod format;
mod merge;
mod range;
mod range_rev;
mod read;
mod write;

pub use merge::{merge, merge_with};
pub use range::TableRange;
pub use range_rev::TableRangeRev;
pub use read::{Lookups, Table};
pub use write::{TableInfo, TableWriter};

use crate::limits::{TABLE_KEY_SIZE_MAX, TABLE_VALUE_SIZE_MAX};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::mem::size_of;

/// Checks, at compile time, that `K` and `V` fit a table.
const fn assert_shape<K, V>() {
    assert!(size_of::<K>() >= 1, "a table key has at least one byte");
    assert!(size_of::<K>() <= TABLE_KEY_SIZE_MAX, "a table key is at most TABLE_KEY_SIZE_MAX bytes");
    assert!(size_of::<V>() <= TABLE_VALUE_SIZE_MAX, "a table value is at most TABLE_VALUE_SIZE_MAX bytes");
}

/// The filter's hash of a key: XXH3-64 of its bytes under `seed`.
fn key_hash<K: Pod>(seed: u64, key: &K) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytemuck::bytes_of(key), seed)
}

/// A data block's payload seen as its sorted entries.
struct Entries<'a, K, V> {
    bytes: &'a [u8],
    shape: PhantomData<(K, V)>,
}

impl<'a, K: Pod + Ord, V: Pod> Entries<'a, K, V> {
    const KEY: usize = size_of::<K>();
    const ENTRY: usize = size_of::<K>() + size_of::<V>();

    /// Panics unless `bytes` is whole entries: callers checked the length.
    fn new(bytes: &'a [u8]) -> Self {
        assert!(bytes.len().is_multiple_of(Self::ENTRY), "a checked data block holds whole entries");
        Entries { bytes, shape: PhantomData }
    }

    fn len(&self) -> usize {
        self.bytes.len() / Self::ENTRY
    }

    fn key(&self, i: usize) -> K {
        let at = i * Self::ENTRY;
        bytemuck::pod_read_unaligned(&self.bytes[at..at + Self::KEY])
    }

    fn value(&self, i: usize) -> V {
        let at = i * Self::ENTRY + Self::KEY;
        bytemuck::pod_read_unaligned(&self.bytes[at..at + Self::ENTRY - Self::KEY])
    }

    /// The first position whose key is not below `key` (`inclusive`) or
    /// above it (not `inclusive`).
    fn seek(&self, key: &K, inclusive: bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = self.key(mid);
            if k < *key || (!inclusive && k == *key) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn find(&self, key: &K) -> Option<V> {
        let at = self.seek(key, true);
        (at < self.len() && self.key(at) == *key).then(|| self.value(at))
    }
}

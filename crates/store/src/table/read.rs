//! Opening a table (footer, index and filter checked and kept in memory)
//! and point lookups.

use super::format::{FINGERPRINT_BYTES, Footer, Layout};
use super::range::TableRange;
use super::range_rev::TableRangeRev;
use super::{Entries, assert_shape, key_hash};
use crate::block::{BlockAddress, BlockKind};
use crate::cache::{BlockCache, Payload, read_block};
use crate::error::{Fault, StoreError, TableFault};
use crate::limits::{BLOCK_PAYLOAD_MAX, BLOCK_SIZE};
use bytemuck::Pod;
use std::fs::File;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use xorf::{BinaryFuse16, Filter};

/// What a table is written and opened for. Only point lookups gain from a
/// filter, so a table read by ranges only (accounts' lists) is written
/// without one (building it was a third of the indexer's work) and opened
/// without reading it; a table written before that has one, left on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookups {
    /// `get` and ranges: the filter is read, checked and kept in memory.
    Points,
    /// Ranges: the filter is not read; a `get` still answers, reading the
    /// key's block whenever the key is within the table's key range.
    RangesOnly,
}

/// An open table: its file, and its index and filter in memory.
pub struct Table<K, V> {
    path: PathBuf,
    file: File,
    file_id: u64,
    layout: Layout,
    hash_seed: u64,
    min: K,
    max: K,
    /// The first key of each data block.
    index: Vec<K>,
    /// `None` when opened for `Lookups::RangesOnly`.
    filter: Option<BinaryFuse16>,
    data_block_reads: AtomicU64,
    /// Data blocks are read through the store's shared cache.
    cache: Arc<BlockCache>,
    shape: PhantomData<fn() -> V>,
}

impl<K: Pod + Ord, V: Pod> Table<K, V> {
    /// Opens the table at `path`, written as file `file_id`, checking its
    /// footer, index and filter. Damage anywhere there is `Corrupt`;
    /// damage in a data block is found by the read that touches it. Data
    /// blocks are read through `cache` (file ids are unique in a store and
    /// tables never change, so a cached block is always the file's).
    pub fn open(path: &Path, file_id: u64, cache: &Arc<BlockCache>) -> Result<Self, StoreError> {
        Self::open_for(path, file_id, cache, Lookups::Points)
    }

    /// `open`, for `lookups`: with `RangesOnly` the filter stays on disk
    /// (unread, so unchecked until a later `Points` open).
    pub fn open_for(path: &Path, file_id: u64, cache: &Arc<BlockCache>, lookups: Lookups) -> Result<Self, StoreError> {
        const { assert_shape::<K, V>() };
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        let bs = BLOCK_SIZE as u64;
        if len == 0 || len % bs != 0 {
            let expected = len.div_ceil(bs).max(1) * bs;
            return Err(StoreError::corrupt(path, len / bs * bs, Fault::Truncated { len, expected }));
        }
        let at = len / bs - 1;
        let payload = read_block(&file, path, BlockKind::TableFooter, BlockAddress { file_id, index: at })?;
        let footer = Footer::decode(&payload, size_of::<K>(), size_of::<V>(), at)
            .map_err(|f| StoreError::corrupt(path, at * bs, f))?;
        let min: K = bytemuck::pod_read_unaligned(&footer.min_key);
        let max: K = bytemuck::pod_read_unaligned(&footer.max_key);
        if min > max || (min == max) != (footer.layout.entries == 1) {
            return Err(StoreError::corrupt(
                path,
                at * bs,
                TableFault::Footer("min and max key disagree with the count"),
            ));
        }
        let layout = footer.layout;
        let index = read_index(&file, path, file_id, &layout, (&min, &max))?;
        let filter = match lookups {
            Lookups::Points if layout.filter_len == 0 => {
                let fault = TableFault::Filter("the table has no filter: it was written to be read by ranges only");
                return Err(StoreError::corrupt(path, at * bs, fault));
            }
            Lookups::Points => Some(read_filter(&file, path, file_id, &footer)?),
            Lookups::RangesOnly => None,
        };
        let table = Table {
            path: path.to_path_buf(),
            file,
            file_id,
            layout,
            hash_seed: footer.hash_seed,
            min,
            max,
            index,
            filter,
            data_block_reads: AtomicU64::new(0),
            cache: Arc::clone(cache),
            shape: PhantomData,
        };
        table.check_filter_holds_bounds(at)?;
        Ok(table)
    }

    /// The filter must answer yes for the table's own min and max key: a
    /// cheap check that filter and hash are the ones the keys were put in.
    fn check_filter_holds_bounds(&self, footer_at: u64) -> Result<(), StoreError> {
        if self.filter_holds(&self.min) && self.filter_holds(&self.max) {
            return Ok(());
        }
        let fault = TableFault::Filter("the filter does not hold the table's min and max key");
        Err(StoreError::corrupt(&self.path, footer_at * BLOCK_SIZE as u64, fault))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_id(&self) -> u64 {
        self.file_id
    }

    /// Entries in the table (at least one).
    /// Whether the file holds a filter (see `Lookups`).
    pub fn has_filter(&self) -> bool {
        self.layout.filter_len > 0
    }

    pub fn len(&self) -> u64 {
        self.layout.entries
    }

    /// Always false: a table holds at least one entry.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn min_key(&self) -> K {
        self.min
    }

    pub fn max_key(&self) -> K {
        self.max
    }

    pub fn data_blocks(&self) -> u64 {
        self.layout.data_blocks()
    }

    /// Bytes this open table keeps in memory: the index and the filter.
    pub fn memory_bytes(&self) -> u64 {
        let filter = if self.filter.is_some() { self.layout.filter_bytes() } else { 0 };
        (self.index.len() * size_of::<K>()) as u64 + filter + size_of::<Self>() as u64
    }

    /// Data blocks read from the file so far (cache misses).
    pub fn data_block_reads(&self) -> u64 {
        self.data_block_reads.load(Ordering::Relaxed)
    }

    fn filter_holds(&self, key: &K) -> bool {
        self.filter.as_ref().is_none_or(|f| f.contains(&key_hash(self.hash_seed, key)))
    }

    /// False if the table certainly does not hold `key`; true if it holds
    /// it or, rarely (about 1 in 65,000 absent keys), a false positive.
    pub fn may_contain(&self, key: &K) -> bool {
        // The range check first: two comparisons, against a hash and three
        // random memory reads.
        self.min <= *key && *key <= self.max && self.filter_holds(key)
    }

    /// The value stored under `key`. Reads at most one data block, and
    /// none if the filter rules the key out.
    pub fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        if !self.may_contain(key) {
            return Ok(None);
        }
        let block = self.block_of(key);
        let payload = self.data_block(block)?;
        Ok(Entries::<K, V>::new(&payload).find(key))
    }

    /// The entries with keys in `range`, in key order.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> TableRange<'_, K, V> {
        TableRange::new(self, range)
    }

    /// The entries with keys in `range`, in descending key order.
    pub fn range_rev<R: RangeBounds<K>>(&self, range: R) -> TableRangeRev<'_, K, V> {
        TableRangeRev::new(self, range)
    }

    /// The data block whose keys would include `key` (the first for keys
    /// below the table's min).
    pub(super) fn block_of(&self, key: &K) -> u64 {
        self.index.partition_point(|first| first <= key).saturating_sub(1) as u64
    }

    /// Data block `block`, checked: from the cache, or read from disk and
    /// checked once before the cache keeps it.
    pub(super) fn data_block(&self, block: u64) -> Result<Payload, StoreError> {
        assert!(block < self.layout.data_blocks(), "data block {block} of {}", self.layout.data_blocks());
        let at = BlockAddress { file_id: self.file_id, index: block };
        self.cache.get_or_load(at, || self.load_data_block(block))
    }

    /// Reads data block `block` from the file and checks it: the block's
    /// own checks, then `check_data`.
    fn load_data_block(&self, block: u64) -> Result<Payload, StoreError> {
        self.data_block_reads.fetch_add(1, Ordering::Relaxed);
        let at = BlockAddress { file_id: self.file_id, index: block };
        let payload = read_block(&self.file, &self.path, BlockKind::TableData, at)?;
        self.check_data(block, &payload).map_err(|f| StoreError::corrupt(&self.path, at.offset(), f))?;
        Ok(payload)
    }

    /// An intact data block must also be the one the footer and the index
    /// describe: its entry count, its first key, its bounds.
    fn check_data(&self, block: u64, payload: &[u8]) -> Result<(), TableFault> {
        let entry = size_of::<K>() + size_of::<V>();
        if payload.len() as u64 != self.layout.entries_in(block) * entry as u64 {
            return Err(TableFault::Data("its entry count differs from the footer's layout"));
        }
        let entries = Entries::<K, V>::new(payload);
        let last = entries.key(entries.len() - 1);
        if entries.key(0) != self.index[block as usize] {
            return Err(TableFault::Data("its first key differs from the index"));
        }
        let is_last = block + 1 == self.layout.data_blocks();
        if (is_last && last != self.max) || (!is_last && last >= self.index[block as usize + 1]) {
            return Err(TableFault::Data("its last key does not end where the next block or the table does"));
        }
        debug_assert!((1..entries.len()).all(|i| entries.key(i - 1) < entries.key(i)), "a block's keys increase");
        Ok(())
    }
}

/// Reads the index blocks: the first key of each data block, strictly
/// increasing from the table's min key, none above its max.
fn read_index<K: Pod + Ord>(
    file: &File,
    path: &Path,
    file_id: u64,
    l: &Layout,
    (min, max): (&K, &K),
) -> Result<Vec<K>, StoreError> {
    let mut index: Vec<K> = Vec::with_capacity(l.data_blocks() as usize);
    for i in 0..l.index_blocks() {
        let at = BlockAddress { file_id, index: l.first_index_block() + i };
        let payload = read_block(file, path, BlockKind::TableIndex, at)?;
        let keys = (l.data_blocks() - i * l.keys_per_index_block()).min(l.keys_per_index_block());
        let corrupt = |what| StoreError::corrupt(path, at.offset(), TableFault::Index(what));
        if payload.len() as u64 != keys * size_of::<K>() as u64 {
            return Err(corrupt("its key count differs from the footer's layout"));
        }
        for chunk in payload.chunks_exact(size_of::<K>()) {
            let key: K = bytemuck::pod_read_unaligned(chunk);
            let in_order = match index.last() {
                Some(before) => *before < key,
                None => key == *min,
            };
            if !in_order || key > *max {
                return Err(corrupt("keys do not increase from the table's min key up to its max"));
            }
            index.push(key);
        }
    }
    assert_eq!(index.len() as u64, l.data_blocks(), "one index key per data block");
    Ok(index)
}

/// Reads the filter blocks into a `BinaryFuse16` (the footer's descriptor
/// was checked against the filter's length).
fn read_filter(file: &File, path: &Path, file_id: u64, footer: &Footer) -> Result<BinaryFuse16, StoreError> {
    let l = &footer.layout;
    let mut fingerprints: Vec<u16> = Vec::with_capacity(l.filter_len as usize);
    for i in 0..l.filter_blocks() {
        let at = BlockAddress { file_id, index: l.first_filter_block() + i };
        let payload = read_block(file, path, BlockKind::TableFilter, at)?;
        let expected = (l.filter_bytes() - i * BLOCK_PAYLOAD_MAX as u64).min(BLOCK_PAYLOAD_MAX as u64);
        if payload.len() as u64 != expected {
            let fault = TableFault::Filter("a block's length differs from the footer's layout");
            return Err(StoreError::corrupt(path, at.offset(), fault));
        }
        fingerprints.extend(payload.chunks_exact(FINGERPRINT_BYTES as usize).map(|b| u16::from_le_bytes([b[0], b[1]])));
    }
    assert_eq!(fingerprints.len() as u64, l.filter_len, "the filter blocks hold the footer's fingerprints");
    Ok(BinaryFuse16 { descriptor: footer.filter.clone(), fingerprints: fingerprints.into_boxed_slice() })
}

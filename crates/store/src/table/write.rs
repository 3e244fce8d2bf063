//! Writing a table front to back: data blocks as they fill, then the
//! index, the filter and the footer, then an fsync. Memory while writing:
//! one block, the index (one key per data block) and 8 bytes of filter
//! scratch per entry.

use super::Lookups;
use super::format::{FINGERPRINT_BYTES, Footer, HASH_SEED, Layout};
use super::{assert_shape, key_hash};
use crate::block::{self, BlockAddress, BlockKind};
use crate::error::StoreError;
use crate::limits::{BLOCK_PAYLOAD_MAX, BLOCK_SIZE, TABLE_ENTRIES_MAX, TABLE_SYNC_EVERY_BLOCKS};
use bytemuck::Pod;
use std::fs::File;
use std::io::Write;
use std::marker::PhantomData;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use xorf::{BinaryFuse16, Descriptor};

/// What a finished table holds and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo<K> {
    pub file_id: u64,
    pub entries: u64,
    pub min_key: K,
    pub max_key: K,
    pub file_size: u64,
    /// Blocks in the file: data, index, filter and the footer.
    pub blocks: u64,
    pub data_blocks: u64,
    /// Bytes of the filter's fingerprints, which `Table::open` keeps in memory.
    pub filter_bytes: u64,
}

/// Writes one table. Keys must come strictly increasing.
///
/// Dropping a writer before `finish` leaves a file without a footer, which
/// `Table::open` refuses; the caller removes it.
pub struct TableWriter<K, V> {
    path: PathBuf,
    file: File,
    file_id: u64,
    expected: u64,
    /// The data block being filled (payload bytes).
    pending: Vec<u8>,
    written: u64,
    entries: u64,
    min: Option<K>,
    last: Option<K>,
    index: Vec<K>,
    /// The keys' hashes, for the filter (`None`: written without one).
    hashes: Option<Vec<u64>>,
    block: Box<[u8; BLOCK_SIZE]>,
    shape: PhantomData<fn(V)>,
}

impl<K: Pod + Ord, V: Pod> TableWriter<K, V> {
    const ENTRY: usize = size_of::<K>() + size_of::<V>();
    const PER_BLOCK: usize = BLOCK_PAYLOAD_MAX / Self::ENTRY;

    /// Creates the file at `path`, which must not exist: tables are
    /// immutable, a name is never reused. `expected_count` is the most
    /// entries the table will get (asserted by `push`).
    /// A table with a filter, for point lookups.
    pub fn new(path: &Path, file_id: u64, expected_count: u64) -> Result<Self, StoreError> {
        Self::new_for(path, file_id, expected_count, Lookups::Points)
    }

    /// A table for `lookups`: `RangesOnly` writes no filter (see `Lookups`).
    pub fn new_for(path: &Path, file_id: u64, expected_count: u64, lookups: Lookups) -> Result<Self, StoreError> {
        const { assert_shape::<K, V>() };
        assert!(
            (1..=TABLE_ENTRIES_MAX).contains(&expected_count),
            "a table holds 1..={TABLE_ENTRIES_MAX} entries, not {expected_count}"
        );
        let file = crate::files::create_new(path).map_err(|e| StoreError::io(path, e))?;
        Ok(TableWriter {
            path: path.to_path_buf(),
            file,
            file_id,
            expected: expected_count,
            pending: Vec::with_capacity(BLOCK_PAYLOAD_MAX),
            written: 0,
            entries: 0,
            min: None,
            last: None,
            index: Vec::new(),
            hashes: (lookups == Lookups::Points).then(|| Vec::with_capacity(expected_count as usize)),
            block: Box::new([0; BLOCK_SIZE]),
            shape: PhantomData,
        })
    }

    /// Entries pushed so far.
    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Appends an entry. Panics unless `key` is above every key before it
    /// and the table has room by `expected_count`.
    pub fn push(&mut self, key: K, value: V) -> Result<(), StoreError> {
        assert!(self.entries < self.expected, "more than the {} entries this table was created for", self.expected);
        if let Some(last) = &self.last {
            assert!(*last < key, "table keys are pushed strictly increasing");
        }
        if self.pending.is_empty() {
            self.index.push(key);
        }
        self.pending.extend_from_slice(bytemuck::bytes_of(&key));
        self.pending.extend_from_slice(bytemuck::bytes_of(&value));
        if let Some(hashes) = &mut self.hashes {
            hashes.push(key_hash(HASH_SEED, &key));
        }
        self.min.get_or_insert(key);
        self.last = Some(key);
        self.entries += 1;
        if self.pending.len() == Self::PER_BLOCK * Self::ENTRY {
            self.flush_data()?;
        }
        Ok(())
    }

    fn flush_data(&mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        assert!(self.written < self.index.len() as u64, "each data block has its index key");
        self.write_block(BlockKind::TableData, &pending)?;
        self.pending = pending;
        self.pending.clear();
        Ok(())
    }

    /// Writes the index, the filter and the footer, and fsyncs the file.
    /// Panics on an empty table: a table holds at least one entry.
    pub fn finish(mut self) -> Result<TableInfo<K>, StoreError> {
        let (Some(min), Some(max)) = (self.min, self.last) else { panic!("a table holds at least one entry") };
        if !self.pending.is_empty() {
            self.flush_data()?;
        }
        let data_blocks = self.written;
        let index = std::mem::take(&mut self.index);
        self.write_chunked(BlockKind::TableIndex, bytemuck::cast_slice(&index), size_of::<K>())?;
        let (filter_len, descriptor) = match self.hashes.take() {
            Some(hashes) => {
                let filter = build_filter(hashes);
                let fingerprints: Vec<u8> = filter.fingerprints.iter().flat_map(|f| f.to_le_bytes()).collect();
                self.write_chunked(BlockKind::TableFilter, &fingerprints, FINGERPRINT_BYTES as usize)?;
                (filter.fingerprints.len() as u64, filter.descriptor)
            }
            None => (0, Descriptor { seed: 0, segment_length: 0, segment_length_mask: 0, segment_count_length: 0 }),
        };
        let layout = Layout { key_size: size_of::<K>(), value_size: size_of::<V>(), entries: self.entries, filter_len };
        let footer = Footer {
            layout,
            hash_seed: HASH_SEED,
            filter: descriptor,
            min_key: bytemuck::bytes_of(&min).to_vec(),
            max_key: bytemuck::bytes_of(&max).to_vec(),
        };
        assert_eq!(self.written, layout.footer_block(), "the blocks written are the ones the layout places");
        assert_eq!(data_blocks, layout.data_blocks(), "data blocks follow from the entry count");
        self.write_block(BlockKind::TableFooter, &footer.encode())?;
        self.file.sync_all().map_err(|e| StoreError::io(&self.path, e))?;
        let blocks = self.written;
        let file_size = blocks * BLOCK_SIZE as u64;
        let (file_id, entries, filter_bytes) = (self.file_id, self.entries, layout.filter_bytes());
        Ok(TableInfo { file_id, entries, min_key: min, max_key: max, file_size, blocks, data_blocks, filter_bytes })
    }

    /// Writes `bytes` as blocks of `kind`, never splitting an item of
    /// `item` bytes across two blocks.
    fn write_chunked(&mut self, kind: BlockKind, bytes: &[u8], item: usize) -> Result<(), StoreError> {
        assert!(bytes.len().is_multiple_of(item), "whole items");
        for payload in bytes.chunks(BLOCK_PAYLOAD_MAX / item * item) {
            self.write_block(kind, payload)?;
        }
        Ok(())
    }

    fn write_block(&mut self, kind: BlockKind, payload: &[u8]) -> Result<(), StoreError> {
        let at = BlockAddress { file_id: self.file_id, index: self.written };
        block::seal(kind, at, payload, &mut self.block);
        self.file.write_all(self.block.as_slice()).map_err(|e| StoreError::io(&self.path, e))?;
        self.written += 1;
        if self.written.is_multiple_of(TABLE_SYNC_EVERY_BLOCKS) {
            self.file.sync_data().map_err(|e| StoreError::io(&self.path, e))?;
        }
        Ok(())
    }
}

/// The filter over the keys' hashes. xorf retries up to 1000 seeds from a
/// fixed sequence; for distinct hashes failing all is beyond astronomical.
fn build_filter(hashes: Vec<u64>) -> BinaryFuse16 {
    assert!(!hashes.is_empty(), "a filter over at least one key");
    let filter = BinaryFuse16::try_from(hashes.as_slice()).expect("binary fuse construction succeeds");
    assert!(filter.fingerprints.len() >= hashes.len(), "a binary fuse filter has a slot per key");
    filter
}

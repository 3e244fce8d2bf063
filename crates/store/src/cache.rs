//! The block cache: checked block payloads in memory, bounded by bytes,
//! shared by every file of the store.
//!
//! Why a cache of *checked payloads*: a block is verified (checksum, kind,
//! address, length) once, when it is read from disk; a hit returns the
//! payload without touching the checksum again. The cache holds only what
//! `block::open` (plus the owner's own checks, done in its loader) accepted,
//! so a hit can be trusted as much as a fresh read.
//!
//! Keys are (file id, block index): file ids are unique across the store,
//! whatever the file's kind, so one cache serves record files and tables
//! alike and one `--cache-mib` bounds them all. Only immutable blocks may be
//! cached: a block that can still change (a record file's partly filled
//! tail) is served by its owner from memory, and an owner that rolls a file
//! back (reopening it shorter after a crash) drops that file's blocks from
//! the rollback point with [`BlockCache::forget`].
//!
//! Built on `quick_cache` (weighted by bytes, scan-resistant S3-FIFO-like
//! eviction, sharded locks, one loader per missing key): safe to share
//! across query threads, it spawns no thread. Its hasher has a fixed seed
//! and its shard count is fixed, so with one thread the same reads evict
//! the same blocks on every run and every machine.

use crate::StoreError;
use crate::block::{self, BlockAddress, BlockKind};
use crate::error::Fault;
use crate::limits::{BLOCK_HEADER_SIZE, BLOCK_SIZE, CACHE_BYTES_MAX, CACHE_BYTES_MIN, CACHE_SHARDS_MAX};
use foldhash::fast::FixedState;
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A checked block payload, shared between the cache and its readers. It
/// keeps the whole block it was read into (no copy of the payload out of
/// it) and derefs to the payload bytes.
#[derive(Clone)]
pub struct Payload {
    bytes: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Payload {
    /// A payload of exactly `bytes`.
    pub fn new(bytes: Vec<u8>) -> Payload {
        let end = bytes.len();
        Payload { bytes: Arc::new(bytes), start: 0, end }
    }

    /// The payload of a block read into `block`, `open` having found it at
    /// `payload` (a sub-slice of `block`).
    fn of_block(block: Vec<u8>, payload: std::ops::Range<usize>) -> Payload {
        assert!(payload.start <= payload.end && payload.end <= block.len(), "the payload is inside its block");
        Payload { bytes: Arc::new(block), start: payload.start, end: payload.end }
    }

    /// Bytes of memory the payload keeps alive.
    fn held(&self) -> u64 {
        self.bytes.capacity() as u64
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

/// Bytes counted per cached block besides the memory its payload keeps
/// (key, `Arc` header, the cache's own entry): keeps empty payloads from
/// weighing nothing (a weightless entry is never evicted) and the bound
/// honest.
const ENTRY_OVERHEAD: u64 = 64;
/// The hasher's fixed seed: any constant will do, it must only never vary.
const HASH_SEED: u64 = 0x6273_746f_7265_2e63;

/// The cache's key: a block's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    file_id: u64,
    index: u64,
}

impl From<BlockAddress> for Key {
    fn from(at: BlockAddress) -> Key {
        Key { file_id: at.file_id, index: at.index }
    }
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Key, Payload> for ByBytes {
    fn weight(&self, _key: &Key, payload: &Payload) -> u64 {
        payload.held() + ENTRY_OVERHEAD
    }
}

/// Counts evictions for the metrics.
#[derive(Clone)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Key, Payload> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Key, _payload: Payload) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Blocks = quick_cache::sync::Cache<Key, Payload, ByBytes, FixedState, CountEvictions>;

/// What `/metrics` shows of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from memory.
    pub hits: u64,
    /// Reads that went to disk (and, if the block was intact, filled the cache).
    pub misses: u64,
    /// Blocks dropped to make room, or refused on arrival (a block heavier
    /// than the cache admits).
    pub evictions: u64,
    /// Blocks held now.
    pub blocks: u64,
    /// Bytes held now (payloads plus per-block bookkeeping).
    pub bytes: u64,
    /// The bound on `bytes`.
    pub capacity_bytes: u64,
}

/// A bounded cache of checked block payloads, keyed by (file id, block index).
pub struct BlockCache {
    blocks: Blocks,
    capacity_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of blocks.
    ///
    /// Panics outside `CACHE_BYTES_MIN..=CACHE_BYTES_MAX`: the caller checks
    /// the setting.
    pub fn new(capacity_bytes: u64) -> BlockCache {
        assert!(
            (CACHE_BYTES_MIN..=CACHE_BYTES_MAX).contains(&capacity_bytes),
            "a block cache of {capacity_bytes} bytes: the setting must be within {CACHE_BYTES_MIN}..={CACHE_BYTES_MAX}"
        );
        let options = OptionsBuilder::new()
            .shards(CACHE_SHARDS_MAX)
            .estimated_items_capacity((capacity_bytes / BLOCK_SIZE as u64).max(1) as usize)
            .weight_capacity(capacity_bytes)
            .build()
            .expect("every option is set");
        let evictions = Arc::new(AtomicU64::new(0));
        let lifecycle = CountEvictions(Arc::clone(&evictions));
        let blocks = Blocks::with_options(options, ByBytes, FixedState::with_seed(HASH_SEED), lifecycle);
        assert!(
            blocks.shard_capacity() >= BLOCK_SIZE as u64 + ENTRY_OVERHEAD || blocks.num_shards() == 1,
            "every shard holds at least one block"
        );
        BlockCache { blocks, capacity_bytes, hits: AtomicU64::new(0), misses: AtomicU64::new(0), evictions }
    }

    /// The payload of the block at `at`, from memory, or else from `load`
    /// (which reads and checks it), keeping it if `load` succeeds. A failed
    /// load is returned and not kept: a damaged block fails every read.
    ///
    /// Concurrent readers of the same missing block wait for one load.
    pub fn get_or_load(
        &self,
        at: BlockAddress,
        load: impl FnOnce() -> Result<Payload, StoreError>,
    ) -> Result<Payload, StoreError> {
        let mut missed = false;
        let payload = self.blocks.get_or_insert_with(&Key::from(at), || {
            missed = true;
            load()
        });
        let counter = if missed { &self.misses } else { &self.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        payload
    }

    /// The payload of block `at` of `file` (named `path` in errors), read
    /// and checked as a `kind` block on a miss. The one way a file of the
    /// store reads a block; `check` adds the owner's checks of the payload
    /// (run once, before the block is kept).
    pub fn read(
        &self,
        file: &File,
        path: &Path,
        kind: BlockKind,
        at: BlockAddress,
        check: impl FnOnce(&[u8]) -> Result<(), Fault>,
    ) -> Result<Payload, StoreError> {
        self.get_or_load(at, || {
            let payload = read_block(file, path, kind, at)?;
            check(&payload).map_err(|fault| StoreError::corrupt(path, at.offset(), fault))?;
            Ok(payload)
        })
    }

    /// Drops the blocks of `file_id` at index `from_index` and beyond: the
    /// owner rolled the file back or created it anew, and those addresses
    /// may now hold other bytes. Visits every cached block (rare: on open).
    pub fn forget(&self, file_id: u64, from_index: u64) {
        self.blocks.retain(|key, _| key.file_id != file_id || key.index < from_index);
        debug_assert!(!self.blocks.iter().any(|(k, _)| k.file_id == file_id && k.index >= from_index));
    }

    /// Counters and sizes, for the metrics.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            blocks: self.blocks.len() as u64,
            bytes: self.blocks.weight(),
            capacity_bytes: self.capacity_bytes,
        }
    }
}

/// Reads block `at` of `file` from disk and checks it (`block::open`). A
/// file that ends inside the block is `Truncated`; a damaged block names
/// its offset and fault.
pub fn read_block(file: &File, path: &Path, kind: BlockKind, at: BlockAddress) -> Result<Payload, StoreError> {
    let mut block = vec![0u8; BLOCK_SIZE];
    let offset = at.offset();
    if let Err(e) = file.read_exact_at(&mut block, offset) {
        if e.kind() != io::ErrorKind::UnexpectedEof {
            return Err(StoreError::io(path, e));
        }
        let len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        let expected = offset + BLOCK_SIZE as u64;
        return Err(StoreError::corrupt(path, len.min(offset), Fault::Truncated { len, expected }));
    }
    let len = block::open(kind, at, &block).map_err(|fault| StoreError::corrupt(path, offset, fault))?.len();
    Ok(Payload::of_block(block, BLOCK_HEADER_SIZE..BLOCK_HEADER_SIZE + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn at(file_id: u64, index: u64) -> BlockAddress {
        BlockAddress { file_id, index }
    }

    fn payload(fill: u8, len: usize) -> Payload {
        Payload::new(vec![fill; len])
    }

    #[test]
    fn a_hit_does_not_load_and_is_counted() {
        let cache = BlockCache::new(1 << 20);
        let loads = Cell::new(0);
        for _ in 0..3 {
            let got = cache.get_or_load(at(1, 2), || {
                loads.set(loads.get() + 1);
                Ok(payload(7, 100))
            });
            assert_eq!(&got.unwrap()[..], &[7; 100][..]);
        }
        assert_eq!(loads.get(), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions, stats.blocks), (2, 1, 0, 1));
        assert_eq!(stats.bytes, 100 + ENTRY_OVERHEAD);
    }

    #[test]
    fn a_failed_load_is_not_kept() {
        let cache = BlockCache::new(1 << 20);
        let truncated = || Err(StoreError::corrupt(Path::new("f"), 0, Fault::Truncated { len: 0, expected: 1 }));
        assert!(cache.get_or_load(at(1, 0), truncated).unwrap_err().is_corrupt());
        assert!(cache.get_or_load(at(1, 0), truncated).unwrap_err().is_corrupt());
        assert_eq!(cache.stats().misses, 2);
        assert_eq!(cache.stats().blocks, 0);
    }

    #[test]
    fn the_smallest_cache_keeps_nothing_so_every_read_misses() {
        let cache = BlockCache::new(CACHE_BYTES_MIN);
        let full = crate::limits::BLOCK_PAYLOAD_MAX;
        for _round in 0..2 {
            for index in 0..4u64 {
                let got = cache.get_or_load(at(9, index), || Ok(payload(index as u8, full))).unwrap();
                assert_eq!(got[0], index as u8);
            }
        }
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.blocks, stats.bytes), (0, 8, 0, 0));
        assert_eq!(stats.evictions, 8, "a block refused on arrival counts as evicted");
    }

    #[test]
    fn a_two_block_cache_keeps_one_block() {
        let cache = BlockCache::new(2 * CACHE_BYTES_MIN);
        let full = crate::limits::BLOCK_PAYLOAD_MAX;
        for index in [0, 0, 1, 1, 0] {
            cache.get_or_load(at(9, index), || Ok(payload(index as u8, full))).unwrap();
        }
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.blocks, stats.evictions), (2, 3, 1, 2));
    }

    #[test]
    fn the_bound_holds_under_many_blocks() {
        let capacity = 16 * BLOCK_SIZE as u64;
        let cache = BlockCache::new(capacity);
        let weight = 60_000 + ENTRY_OVERHEAD;
        for index in 0..1000 {
            cache.get_or_load(at(index % 3, index), || Ok(payload(1, 60_000))).unwrap();
            assert!(cache.stats().bytes <= capacity);
        }
        let stats = cache.stats();
        assert!(stats.blocks >= 8 && stats.blocks <= capacity / weight, "{stats:?}");
        assert_eq!(stats.bytes, stats.blocks * weight);
        assert_eq!(stats.evictions, 1000 - stats.blocks);
    }

    #[test]
    fn forget_drops_one_file_from_an_index_on() {
        let cache = BlockCache::new(1 << 22);
        for file_id in [1, 2] {
            for index in 0..5 {
                cache.get_or_load(at(file_id, index), || Ok(payload(file_id as u8, 10))).unwrap();
            }
        }
        cache.forget(1, 3);
        let reloaded = Cell::new(Vec::new());
        for file_id in [1, 2] {
            for index in 0..5 {
                cache
                    .get_or_load(at(file_id, index), || {
                        reloaded.set([reloaded.take(), vec![(file_id, index)]].concat());
                        Ok(payload(0, 10))
                    })
                    .unwrap();
            }
        }
        assert_eq!(reloaded.take(), vec![(1, 3), (1, 4)]);
    }

    #[test]
    fn the_cache_is_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<BlockCache>();
    }

    #[test]
    #[should_panic(expected = "must be within")]
    fn a_cache_smaller_than_a_block_is_a_caller_bug() {
        BlockCache::new(CACHE_BYTES_MIN - 1);
    }
}

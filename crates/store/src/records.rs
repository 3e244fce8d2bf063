//! Append-only files of fixed-size records, addressed by position.
//!
//! Transfers, balance records, change-journal slots and order events are
//! written once, in apply order, and read by position (0, 1, 2, …), so
//! their file needs no index: record `p` lives in block
//! `p / records_per_block`, at a fixed offset in its payload. Records never
//! straddle blocks; a block holds `BLOCK_PAYLOAD_MAX / size_of::<T>()`
//! records (511 transfers of 128 bytes) and the rest of its payload is
//! unused.
//!
//! ```text
//! block 0: records 0 .. R        (full, immutable once written)
//! block 1: records R .. 2R
//! …
//! block k: records kR .. len     (the tail: in memory, re-sealed and
//!                                 rewritten on every sync while it grows)
//! ```
//!
//! Durability is the caller's: `sync` returns the durable length, which the
//! caller records in its checkpoint manifest, and `open` takes that length
//! back. A file found longer (a crash after appending, before the manifest
//! recorded it) is cut back to it; a shorter one is corruption. Appends
//! stay in the in-memory tail until a block fills (then it is written
//! whole, one `pwrite`) or `sync` is called, so appending one record at a
//! time costs a memory copy, not a system call.
//!
//! Reads of full blocks go through the shared [`BlockCache`] and are checked
//! once, when they come from disk; reads inside the tail are served from
//! memory (the tail's on-disk copy may be older, and the cache holds only
//! blocks that never change again).
//!
//! A known weakness, left to the checkpoint design: re-sealing the tail in
//! place means a torn write during `sync` (power loss in the middle of a
//! 64 KiB write) can damage records that an older manifest counts as
//! durable. It is detected (`Corrupt`), never used; recovering from it
//! needs an older copy (for example two alternating tail slots) or a replay
//! of the log.
//!
//! After a failed write or sync the file's state is unknown (what reached
//! the disk, what the kernel dropped): the `RecordFile` refuses further use,
//! and the caller reopens it from the last durable length (crash-only).

use crate::StoreError;
use crate::block::{self, BlockAddress, BlockKind};
use crate::cache::{self, BlockCache};
use crate::error::Fault;
use crate::limits::{BLOCK_PAYLOAD_MAX, BLOCK_SIZE, READ_RANGE_RECORDS_MAX, RECORD_FILE_BLOCKS_MAX, RECORD_SIZE_MAX};
use bytemuck::Pod;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An append-only file of `T` records.
pub struct RecordFile<T: Pod> {
    path: PathBuf,
    file: File,
    file_id: u64,
    /// Records appended (durable or not).
    len: u64,
    /// Records made durable by the last `sync` (or given to `open`).
    durable_len: u64,
    /// Blocks before the tail: all full and written.
    full_blocks: u64,
    /// The tail block's payload: the records after the full blocks, fewer
    /// than a block holds.
    tail: Vec<u8>,
    /// The tail changed since it was last written.
    tail_dirty: bool,
    /// Where blocks are sealed before they are written.
    sealed: Box<[u8; BLOCK_SIZE]>,
    /// A write or sync failed: the file's state is unknown.
    failed: bool,
    records: PhantomData<T>,
}

impl<T: Pod> RecordFile<T> {
    /// Records in one block. Evaluating it rejects, at compile time, a
    /// record type that is empty or larger than `RECORD_SIZE_MAX`.
    pub const PER_BLOCK: u64 = {
        assert!(size_of::<T>() > 0, "a record has at least one byte");
        assert!(size_of::<T>() <= RECORD_SIZE_MAX, "a record is at most RECORD_SIZE_MAX bytes");
        (BLOCK_PAYLOAD_MAX / size_of::<T>()) as u64
    };
    /// Payload bytes of a full block.
    const BLOCK_BYTES: usize = Self::PER_BLOCK as usize * size_of::<T>();
    /// The most records one file holds.
    pub const RECORDS_MAX: u64 = RECORD_FILE_BLOCKS_MAX * Self::PER_BLOCK;

    /// Creates an empty record file at `path` (which must not exist) and
    /// makes its directory entry durable. Blocks of `file_id` still in
    /// `cache` (from an earlier file with the same id) are dropped.
    pub fn create(path: &Path, file_id: u64, cache: &BlockCache) -> Result<RecordFile<T>, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        sync_parent(path)?;
        cache.forget(file_id, 0);
        Ok(Self::with(path, file, file_id, 0, Vec::new()))
    }

    /// Opens the record file at `path` holding `durable_len` records (from
    /// the caller's checkpoint manifest). Bytes beyond them (appended after
    /// the manifest was written) are cut off; a file too short for them is
    /// `Corrupt` with `Fault::Truncated`. The tail block, if any, is read
    /// and checked now; full blocks when they are first read.
    pub fn open(path: &Path, file_id: u64, durable_len: u64, cache: &BlockCache) -> Result<RecordFile<T>, StoreError> {
        assert!(durable_len <= Self::RECORDS_MAX, "{durable_len} records exceed a record file's {}", Self::RECORDS_MAX);
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| StoreError::io(path, e))?;
        let full_blocks = durable_len / Self::PER_BLOCK;
        let tail_records = (durable_len % Self::PER_BLOCK) as usize;
        let blocks = full_blocks + u64::from(tail_records > 0);
        let expected = blocks * BLOCK_SIZE as u64;
        let size = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        if size < expected {
            return Err(StoreError::corrupt(path, size, Fault::Truncated { len: size, expected }));
        }
        if size > expected {
            file.set_len(expected).map_err(|e| StoreError::io(path, e))?;
            file.sync_all().map_err(|e| StoreError::io(path, e))?;
        }
        // Cached blocks from the tail on may predate the cut: drop them.
        cache.forget(file_id, full_blocks);
        let tail = if tail_records == 0 {
            Vec::new()
        } else {
            Self::read_tail(&file, path, BlockAddress { file_id, index: full_blocks }, tail_records)?
        };
        let opened = Self::with(path, file, file_id, durable_len, tail);
        assert_eq!(opened.full_blocks, full_blocks, "the tail's records follow the full blocks");
        Ok(opened)
    }

    fn with(path: &Path, file: File, file_id: u64, len: u64, tail: Vec<u8>) -> RecordFile<T> {
        let opened = RecordFile {
            path: path.to_path_buf(),
            file,
            file_id,
            len,
            durable_len: len,
            full_blocks: len / Self::PER_BLOCK,
            tail,
            tail_dirty: false,
            sealed: Box::new([0; BLOCK_SIZE]),
            failed: false,
            records: PhantomData,
        };
        opened.check_invariants();
        opened
    }

    /// Reads the partly filled last block: it holds at least `records`
    /// whole records (more if it was rewritten after the manifest).
    fn read_tail(file: &File, path: &Path, at: BlockAddress, records: usize) -> Result<Vec<u8>, StoreError> {
        let payload = cache::read_block(file, path, BlockKind::Records, at)?;
        let expected = records * size_of::<T>();
        if payload.len() < expected || payload.len() % size_of::<T>() != 0 || payload.len() > Self::BLOCK_BYTES {
            return Err(StoreError::corrupt(path, at.offset(), Self::payload_fault(payload.len(), expected)));
        }
        Ok(payload[..expected].to_vec())
    }

    fn payload_fault(len: usize, expected: usize) -> Fault {
        Fault::RecordPayload { len: len as u32, expected: expected as u32, record_size: size_of::<T>() as u32 }
    }

    /// Records appended, durable or not.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no record was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records made durable by the last `sync` (or given to `open`).
    pub fn durable_len(&self) -> u64 {
        self.durable_len
    }

    /// The file's path, as errors name it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` after the last one. Full blocks are written as
    /// they fill; the rest waits in memory for more records or `sync`.
    ///
    /// Panics past `RECORDS_MAX` records (the caller rolls to a new file
    /// first) or after an earlier failure.
    pub fn append(&mut self, records: &[T]) -> Result<(), StoreError> {
        self.assert_usable();
        let added = records.len() as u64;
        assert!(
            added <= Self::RECORDS_MAX - self.len,
            "appending {added} records to {} would pass a record file's {}",
            self.path.display(),
            Self::RECORDS_MAX
        );
        let mut bytes: &[u8] = bytemuck::cast_slice(records);
        while !bytes.is_empty() {
            let take = (Self::BLOCK_BYTES - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            self.tail_dirty = true;
            bytes = &bytes[take..];
            if self.tail.len() == Self::BLOCK_BYTES {
                self.write_tail()?;
                self.full_blocks += 1;
                self.tail.clear();
                self.tail_dirty = false;
            }
        }
        self.len += added;
        self.check_invariants();
        Ok(())
    }

    /// Makes every appended record durable: writes the tail block (if it
    /// changed) and syncs the file's data. Returns the durable length, for
    /// the caller's manifest.
    pub fn sync(&mut self) -> Result<u64, StoreError> {
        self.assert_usable();
        if self.tail_dirty {
            self.write_tail()?;
            self.tail_dirty = false;
        }
        if let Err(e) = self.file.sync_data() {
            self.failed = true;
            return Err(StoreError::io(&self.path, e));
        }
        self.durable_len = self.len;
        Ok(self.durable_len)
    }

    /// Seals the tail as block `full_blocks` and writes it in place.
    fn write_tail(&mut self) -> Result<(), StoreError> {
        let at = BlockAddress { file_id: self.file_id, index: self.full_blocks };
        assert!(at.index < RECORD_FILE_BLOCKS_MAX, "the block is inside a record file's limit");
        block::seal(BlockKind::Records, at, &self.tail, &mut self.sealed);
        if let Err(e) = self.file.write_all_at(self.sealed.as_slice(), at.offset()) {
            self.failed = true;
            return Err(StoreError::io(&self.path, e));
        }
        Ok(())
    }

    /// The record at `position`.
    ///
    /// Panics if `position >= len()`: the caller asked past the end.
    pub fn get(&self, position: u64, cache: &BlockCache) -> Result<T, StoreError> {
        assert!(position < self.len, "record {position} of {} holding {}", self.path.display(), self.len);
        let at = (position % Self::PER_BLOCK) as usize * size_of::<T>();
        let index = position / Self::PER_BLOCK;
        if index == self.full_blocks {
            return Ok(bytemuck::pod_read_unaligned(&self.tail[at..at + size_of::<T>()]));
        }
        let payload = self.full_block(index, cache)?;
        Ok(bytemuck::pod_read_unaligned(&payload[at..at + size_of::<T>()]))
    }

    /// Appends the `count` records from `first` to `out` (a page).
    ///
    /// Panics if the range passes `len()` or `count` exceeds
    /// `READ_RANGE_RECORDS_MAX`. On error, `out` is as it was.
    pub fn read_range(&self, first: u64, count: usize, cache: &BlockCache, out: &mut Vec<T>) -> Result<(), StoreError> {
        assert!(count <= READ_RANGE_RECORDS_MAX, "a page of {count} records exceeds {READ_RANGE_RECORDS_MAX}");
        assert!(
            first <= self.len && count as u64 <= self.len - first,
            "records {first}..+{count} of {} holding {}",
            self.path.display(),
            self.len
        );
        let start = out.len();
        out.resize(start + count, T::zeroed());
        let result = self.copy_range(first, bytemuck::cast_slice_mut(&mut out[start..]), cache);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Fills `dest` with the bytes of the records from `first` on, a block
    /// at a time.
    fn copy_range(&self, first: u64, mut dest: &mut [u8], cache: &BlockCache) -> Result<(), StoreError> {
        let mut position = first;
        while !dest.is_empty() {
            let index = position / Self::PER_BLOCK;
            let at = (position % Self::PER_BLOCK) as usize * size_of::<T>();
            let payload = if index == self.full_blocks { None } else { Some(self.full_block(index, cache)?) };
            let source = payload.as_deref().unwrap_or(&self.tail);
            let take = (source.len() - at).min(dest.len());
            dest[..take].copy_from_slice(&source[at..at + take]);
            dest = &mut dest[take..];
            position += (take / size_of::<T>()) as u64;
        }
        Ok(())
    }

    /// The payload of full block `index`, from the cache or checked from disk.
    fn full_block(&self, index: u64, cache: &BlockCache) -> Result<cache::Payload, StoreError> {
        assert!(index < self.full_blocks, "block {index} is full");
        let at = BlockAddress { file_id: self.file_id, index };
        let payload = cache.read(&self.file, &self.path, BlockKind::Records, at, |payload| {
            if payload.len() == Self::BLOCK_BYTES {
                Ok(())
            } else {
                Err(Self::payload_fault(payload.len(), Self::BLOCK_BYTES))
            }
        })?;
        assert_eq!(
            payload.len(),
            Self::BLOCK_BYTES,
            "the cache holds a block of another kind at {at:?}: two files share file id {}",
            self.file_id
        );
        Ok(payload)
    }

    fn assert_usable(&self) {
        assert!(
            !self.failed,
            "{}: a write or sync failed, so what the file holds is unknown; reopen it at its durable length",
            self.path.display()
        );
    }

    fn check_invariants(&self) {
        assert!(self.tail.len() < Self::BLOCK_BYTES, "a full tail is written and becomes a full block");
        assert_eq!(self.tail.len() % size_of::<T>(), 0, "the tail holds whole records");
        assert_eq!(
            self.len,
            self.full_blocks * Self::PER_BLOCK + (self.tail.len() / size_of::<T>()) as u64,
            "every record is in a full block or the tail"
        );
        assert!(self.durable_len <= self.len, "nothing is durable that was not appended");
    }
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent).and_then(|dir| dir.sync_all()).map_err(|e| StoreError::io(parent, e))
}

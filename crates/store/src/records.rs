//! Append-only files of fixed-size records, addressed by position.
//!
//! Transfers, balance records, change-journal slots and order events are
//! written once, in apply order, and read by position (0, 1, 2, …), so
//! their file needs no index: record `p` lives in full block
//! `p / records_per_block`, at a fixed offset in its payload. Records never
//! straddle blocks; a block holds `BLOCK_PAYLOAD_MAX / size_of::<T>()`
//! records (511 transfers of 128 bytes) and the rest of its payload is
//! unused.
//!
//! ```text
//! block 0, 1:  tail slots A and B: the partly filled last block, with its
//!              block number and a sequence number (16 bytes), then its
//!              records; written alternately, one per sync
//! block 2 + i: full block i: records iR .. (i+1)R, written once, whole
//! ```
//!
//! Why two tail slots rather than rewriting the last block in place: the
//! last block grows while it fills, so each sync rewrites it, and a write
//! torn by a crash (64 KiB is not written atomically) would destroy records
//! an earlier sync made durable. Each sync writes the slot *not* holding
//! the newest tail, so the previous tail survives any crash during the
//! write; on open, the slot with the highest sequence among those holding
//! the durable records wins (a sequence, not a count, because after a
//! crash a slot may hold a longer tail of records that were never durable
//! and since replaced).
//!
//! Durability is the caller's: `sync` returns the durable length, which the
//! caller records in its checkpoint manifest, and `open` takes that length
//! back. A file found longer (a crash after appending, before the manifest
//! recorded it) is cut back to it; a shorter one is corruption. Appends
//! stay in memory until a block fills (then it is written whole, one
//! `pwrite`) or `sync` is called, so appending one record at a time costs
//! a memory copy, not a system call.
//!
//! Reads of full blocks go through the shared [`BlockCache`] and are checked
//! once, when they come from disk; reads inside the tail are served from
//! memory. The cache holds only full blocks, which never change again.
//!
//! After a failed write or sync the file's state is unknown (what reached
//! the disk, what the kernel dropped): the `RecordFile` refuses further use,
//! and the caller reopens it from the last durable length (crash-only).

use crate::StoreError;
use crate::block::{self, BlockAddress, BlockKind};
use crate::cache::{self, BlockCache, Payload};
use crate::error::Fault;
use crate::limits::{
    BLOCK_PAYLOAD_MAX, BLOCK_SIZE, READ_RANGE_RECORDS_MAX, RECORD_FILE_BLOCKS_MAX, RECORD_SIZE_MAX, RECORD_SIZE_MIN,
};
use bytemuck::Pod;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Blocks before the first full block: the two tail slots.
const TAIL_SLOTS: u64 = 2;
/// Bytes before a tail slot's records: the block number, the sequence.
const SLOT_HEADER: usize = 16;

/// An append-only file of `T` records.
pub struct RecordFile<T: Pod> {
    path: PathBuf,
    file: File,
    file_id: u64,
    /// Records appended (durable or not).
    len: u64,
    /// Records made durable by the last `sync` (or given to `open`).
    durable_len: u64,
    /// Full blocks, all written: the records before the tail.
    full_blocks: u64,
    /// The tail's records (fewer than a block holds), after the full blocks.
    tail: Vec<u8>,
    /// The tail changed since it was last written.
    tail_dirty: bool,
    /// The slot holding the newest tail written (the next goes to the other).
    slot: u64,
    /// The newest tail's sequence number (the next is one more).
    sequence: u64,
    /// Where blocks are sealed before they are written.
    sealed: Box<[u8; BLOCK_SIZE]>,
    /// A write or sync failed: the file's state is unknown.
    failed: bool,
    records: PhantomData<T>,
}

/// A tail slot's contents.
struct Slot {
    block: u64,
    sequence: u64,
    payload: Payload,
}

impl Slot {
    fn records(&self) -> &[u8] {
        &self.payload[SLOT_HEADER..]
    }
}

/// The tail found on open, and the slot state to continue from.
struct Recovered {
    tail: Vec<u8>,
    slot: u64,
    sequence: u64,
    /// The tail came from a full block the file is about to lose: it must
    /// be written to a slot before the file is cut.
    rewrite: bool,
}

impl<T: Pod> RecordFile<T> {
    /// Records in one block. Evaluating it rejects, at compile time, a
    /// record type outside `RECORD_SIZE_MIN..=RECORD_SIZE_MAX`.
    pub const PER_BLOCK: u64 = {
        assert!(size_of::<T>() >= RECORD_SIZE_MIN, "a record is at least RECORD_SIZE_MIN bytes");
        assert!(size_of::<T>() <= RECORD_SIZE_MAX, "a record is at most RECORD_SIZE_MAX bytes");
        let per_block = BLOCK_PAYLOAD_MAX / size_of::<T>();
        assert!((per_block - 1) * size_of::<T>() + SLOT_HEADER <= BLOCK_PAYLOAD_MAX, "a tail fits a slot");
        per_block as u64
    };
    /// Payload bytes of a full block.
    const BLOCK_BYTES: usize = Self::PER_BLOCK as usize * size_of::<T>();
    /// The most records one file holds.
    pub const RECORDS_MAX: u64 = (RECORD_FILE_BLOCKS_MAX - TAIL_SLOTS) * Self::PER_BLOCK;

    /// Creates an empty record file at `path` (which must not exist), its
    /// two tail slots written and durable with its directory entry. Blocks
    /// of `file_id` still in `cache` (from an earlier file with the same
    /// id) are dropped.
    pub fn create(path: &Path, file_id: u64, cache: &BlockCache) -> Result<RecordFile<T>, StoreError> {
        let file = crate::files::create_new(path).map_err(|e| StoreError::io(path, e))?;
        cache.forget(file_id, 0);
        let mut created =
            Self::with(path, file, file_id, 0, Recovered { tail: Vec::new(), slot: 1, sequence: 0, rewrite: false });
        created.write_slot()?;
        created.write_slot()?;
        created.sync()?;
        sync_parent(path)?;
        assert_eq!(created.file_size()?, TAIL_SLOTS * BLOCK_SIZE as u64, "a new file is its two tail slots");
        Ok(created)
    }

    /// Opens the record file at `path` holding `durable_len` records (from
    /// the caller's checkpoint manifest). Bytes beyond them (appended after
    /// the manifest was written) are cut off; a file too short for them is
    /// `Corrupt` with `Fault::Truncated`, one without their tail is
    /// `Corrupt` with the slot's fault or `Fault::TailLost`. The tail slots
    /// are read and checked now; full blocks when they are first read.
    pub fn open(path: &Path, file_id: u64, durable_len: u64, cache: &BlockCache) -> Result<RecordFile<T>, StoreError> {
        assert!(durable_len <= Self::RECORDS_MAX, "{durable_len} records exceed a record file's {}", Self::RECORDS_MAX);
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| StoreError::io(path, e))?;
        let full_blocks = durable_len / Self::PER_BLOCK;
        let expected = (TAIL_SLOTS + full_blocks) * BLOCK_SIZE as u64;
        let size = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        if size < expected {
            return Err(StoreError::corrupt(path, size, Fault::Truncated { len: size, expected }));
        }
        let recovered = Self::recover_tail(&file, path, file_id, durable_len, size)?;
        let rewrite = recovered.rewrite;
        let mut opened = Self::with(path, file, file_id, durable_len, recovered);
        if rewrite {
            opened.tail_dirty = true;
            opened.sync()?;
        }
        if size > expected {
            opened.file.set_len(expected).map_err(|e| StoreError::io(path, e))?;
            opened.file.sync_all().map_err(|e| StoreError::io(path, e))?;
        }
        // Cached blocks from the cut on may hold other records: drop them.
        cache.forget(file_id, TAIL_SLOTS + full_blocks);
        assert_eq!(opened.full_blocks, full_blocks, "the tail's records follow the full blocks");
        Ok(opened)
    }

    fn with(path: &Path, file: File, file_id: u64, len: u64, recovered: Recovered) -> RecordFile<T> {
        let opened = RecordFile {
            path: path.to_path_buf(),
            file,
            file_id,
            len,
            durable_len: len,
            full_blocks: len / Self::PER_BLOCK,
            tail: recovered.tail,
            tail_dirty: false,
            slot: recovered.slot,
            sequence: recovered.sequence,
            sealed: Box::new([0; BLOCK_SIZE]),
            failed: false,
            records: PhantomData,
        };
        opened.check_invariants();
        opened
    }

    /// Finds the durable tail of a file holding `durable_len` records: in
    /// the newest slot holding enough of that block's records, or else in
    /// the full block written after the manifest (the file is `size` bytes).
    fn recover_tail(
        file: &File,
        path: &Path,
        file_id: u64,
        durable_len: u64,
        size: u64,
    ) -> Result<Recovered, StoreError> {
        let (block, records) = (durable_len / Self::PER_BLOCK, (durable_len % Self::PER_BLOCK) as usize);
        let bytes = records * size_of::<T>();
        let slots = [0, 1].map(|slot| Self::read_slot(file, path, file_id, slot));
        let valid = || (0..TAIL_SLOTS).zip(&slots).filter_map(|(i, s)| s.as_ref().ok().map(|s| (i, s)));
        let (slot, sequence) = valid().max_by_key(|(_, s)| s.sequence).map_or((1, 0), |(i, s)| (i, s.sequence));
        let mut recovered = Recovered { tail: Vec::new(), slot, sequence, rewrite: false };
        if records == 0 {
            return Ok(recovered);
        }
        let holding = valid().filter(|(_, s)| s.block == block && s.records().len() >= bytes);
        if let Some((slot, found)) = holding.max_by_key(|(_, s)| s.sequence) {
            recovered.tail = found.records()[..bytes].to_vec();
            recovered.slot = slot;
            return Ok(recovered);
        }
        if size >= (TAIL_SLOTS + block + 1) * BLOCK_SIZE as u64 {
            let at = BlockAddress { file_id, index: TAIL_SLOTS + block };
            let payload = cache::read_block(file, path, BlockKind::Records, at)?;
            if payload.len() != Self::BLOCK_BYTES {
                return Err(StoreError::corrupt(
                    path,
                    at.offset(),
                    Self::payload_fault(payload.len(), Self::BLOCK_BYTES),
                ));
            }
            recovered.tail = payload[..bytes].to_vec();
            recovered.rewrite = true;
            return Ok(recovered);
        }
        let [first, second] = slots;
        first?;
        second?;
        Err(StoreError::corrupt(path, 0, Fault::TailLost { block, records: records as u64 }))
    }

    /// Reads and checks tail slot `slot`.
    fn read_slot(file: &File, path: &Path, file_id: u64, slot: u64) -> Result<Slot, StoreError> {
        let at = BlockAddress { file_id, index: slot };
        let payload = cache::read_block(file, path, BlockKind::Records, at)?;
        let len = payload.len();
        if len < SLOT_HEADER
            || !(len - SLOT_HEADER).is_multiple_of(size_of::<T>())
            || len - SLOT_HEADER >= Self::BLOCK_BYTES
        {
            let expected = SLOT_HEADER + (len.saturating_sub(SLOT_HEADER) / size_of::<T>()) * size_of::<T>();
            return Err(StoreError::corrupt(path, at.offset(), Self::payload_fault(len, expected)));
        }
        let word = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
        Ok(Slot { block: word(0), sequence: word(8), payload })
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
                self.write_full()?;
            }
        }
        self.len += added;
        self.check_invariants();
        Ok(())
    }

    /// Makes every appended record durable: writes the tail to a slot (if
    /// it changed) and syncs the file's data. Returns the durable length,
    /// for the caller's manifest.
    pub fn sync(&mut self) -> Result<u64, StoreError> {
        self.assert_usable();
        if self.tail_dirty {
            self.write_slot()?;
        }
        if let Err(e) = self.file.sync_data() {
            self.failed = true;
            return Err(StoreError::io(&self.path, e));
        }
        self.durable_len = self.len;
        Ok(self.durable_len)
    }

    /// Writes the tail, now a full block, to its place after the full
    /// blocks, and starts an empty tail.
    fn write_full(&mut self) -> Result<(), StoreError> {
        assert_eq!(self.tail.len(), Self::BLOCK_BYTES, "only a full tail becomes a full block");
        let at = BlockAddress { file_id: self.file_id, index: TAIL_SLOTS + self.full_blocks };
        assert!(at.index < RECORD_FILE_BLOCKS_MAX, "the block is inside a record file's limit");
        block::seal(BlockKind::Records, at, &self.tail, &mut self.sealed);
        self.write_sealed(at)?;
        self.full_blocks += 1;
        self.tail.clear();
        self.tail_dirty = false;
        Ok(())
    }

    /// Writes the tail to the slot not holding the newest tail, with the
    /// next sequence number: the newest stays intact if this write tears.
    fn write_slot(&mut self) -> Result<(), StoreError> {
        let at = BlockAddress { file_id: self.file_id, index: 1 - self.slot };
        let sequence = self.sequence + 1;
        let mut payload = Vec::with_capacity(SLOT_HEADER + self.tail.len());
        payload.extend_from_slice(&self.full_blocks.to_le_bytes());
        payload.extend_from_slice(&sequence.to_le_bytes());
        payload.extend_from_slice(&self.tail);
        block::seal(BlockKind::Records, at, &payload, &mut self.sealed);
        self.write_sealed(at)?;
        (self.slot, self.sequence, self.tail_dirty) = (at.index, sequence, false);
        Ok(())
    }

    fn write_sealed(&mut self, at: BlockAddress) -> Result<(), StoreError> {
        if let Err(e) = self.file.write_all_at(self.sealed.as_slice(), at.offset()) {
            self.failed = true;
            return Err(StoreError::io(&self.path, e));
        }
        Ok(())
    }

    fn file_size(&self) -> Result<u64, StoreError> {
        Ok(self.file.metadata().map_err(|e| StoreError::io(&self.path, e))?.len())
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
    fn full_block(&self, index: u64, cache: &BlockCache) -> Result<Payload, StoreError> {
        assert!(index < self.full_blocks, "block {index} is full");
        let at = BlockAddress { file_id: self.file_id, index: TAIL_SLOTS + index };
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
        assert!(self.slot < TAIL_SLOTS, "the newest tail is in a slot");
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

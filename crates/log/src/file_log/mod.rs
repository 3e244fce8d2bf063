//! The durable, append-only file log: segmented files of checksummed,
//! hash-chained entries, group-committed with fdatasync.
//!
//! # Entry format
//!
//! An entry is a 96-byte header followed by the body. Little-endian.
//!
//! ```text
//! 0..4    magic u32 = 0x4C52_5542 ("BURL" as LE bytes)
//! 4..8    header_crc u32 = crc32c(header[8..96])
//! 8..10   version u16 = 1
//! 10..12  reserved u16 = 0
//! 12..16  body_len u32 (<= ENTRY_BODY_MAX = 64 MiB)
//! 16..24  position u64 (the first entry is 1; consecutive, no gaps)
//! 24..32  timestamp u64 (opaque to the log: chosen by the engine)
//! 32..64  prev_chain [u8; 32] (chain of the previous entry; zeros for position 1)
//! 64..96  body_hash [u8; 32] = blake3(body)
//! chain(entry) = blake3(header[8..96])
//! ```
//!
//! The body is opaque bytes (the engine's encoded commands); it may be empty.
//! The CRC catches a damaged header cheaply before its length is trusted;
//! the body hash catches a damaged body; the chain links every entry to all
//! before it, so a replica or a snapshot can name a whole history by one
//! hash, and a segment spliced from another log does not verify.
//!
//! # Files
//!
//! The log owns `<data dir>/log/`:
//! - `segment-<first position, 20 digits>.log`: entries back to back,
//!   nothing else. A new segment starts once the current one holds at least
//!   `segment_bytes`.
//! - `durable`: the durable marker (see `marker`): the highest position
//!   known to be fsynced, used by recovery to tell a torn tail from damage.
//! - `base` (only in a log seeded after a snapshot, see `open_after`, or
//!   one whose old segments were removed, see `remove_before`): the
//!   position and chain the log continues from (see `base`).
//! - `lock`: held with `flock` while a `FileLog` is open, so two writers
//!   cannot interleave entries.
//!
//! # Durability
//!
//! `append` writes into the page cache and returns the position; the entry
//! is durable (and may be acknowledged) once the `on_durable` callback has
//! reported a position at or above it. One fdatasync covers every append
//! made while the previous one ran (group commit). A failed fsync is never
//! retried: the log stops and the process is expected to restart. Opening a
//! log fdatasyncs what it recovered, so every entry present after `open` is
//! durable.
//!
//! # Recovery: torn tail or corruption
//!
//! `open` verifies every entry (magic, header CRC, version, reserved field,
//! body length bound, body hash, consecutive positions, chain links, also
//! across segments, and segment names).
//! - A segment other than the last was fdatasynced before its successor was
//!   created: it must be valid exactly to its end, or it is corrupt.
//! - In the last segment, the first incomplete or invalid entry would have
//!   position `p`. If `p` is at or below the durable marker it was
//!   acknowledged: corrupt. Otherwise it is a torn tail from a crash: the
//!   file is truncated there and the bytes are reported.
//! - The log must reach the durable marker, or acknowledged entries are
//!   missing: corrupt.
//!
//! Corruption is an error naming the file and offset; an open that fails
//! changes nothing.
//!
//! # Retention
//!
//! `remove_before(p)` unlinks whole sealed segments whose entries are all
//! below `p` (the engine passes the oldest retained snapshot + 1; the
//! active segment is never removed). The base is rewritten first, so a
//! crash at any step leaves a log that opens (see `prune`); `first_position`
//! moves up and `entries_from` below it is `OutOfRange`.

mod base;
mod format;
mod marker;
mod prune;
mod reader;
mod recovery;
mod scan;
mod syncer;

use crate::limits::ENTRY_BODY_MAX;
pub use format::{ENTRY_HEADER_SIZE, ENTRY_MAGIC, ENTRY_VERSION};
pub use reader::{Entry, EntryIter};
pub use scan::{ScanCallbackError, ScanError, ScanStop, scan};
pub use syncer::DurableCallback;

use crate::LogError;
use crate::fsutil::{create_dir_durable, lock_file, remove_temp_files, sync_dir, write_all_vectored};
use format::{Header, chain_of};
use marker::{MARKER_FILE, Marker};
use reader::{Segment, SegmentReader, Step};
use recovery::{Recovered, list_segments, recover, segment_name};
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use syncer::{ActiveFile, Shared};

/// The log's directory inside the data dir.
pub const LOG_DIR: &str = "log";
const LOCK_FILE: &str = "lock";
/// Default segment size: 256 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 256 << 20;

#[derive(Clone, Debug)]
pub struct FileLogOptions {
    /// The data dir; the log lives in `<dir>/log/`.
    pub dir: PathBuf,
    /// Start a new segment once the current one holds at least this many bytes.
    pub segment_bytes: u64,
}

impl FileLogOptions {
    pub fn new(dir: impl Into<PathBuf>) -> FileLogOptions {
        FileLogOptions { dir: dir.into(), segment_bytes: DEFAULT_SEGMENT_BYTES }
    }
}

/// What `open` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// Position of the last entry (0: the log is empty).
    pub last_position: u64,
    /// Chain of the last entry (zeros for an empty log).
    pub last_chain: [u8; 32],
    /// Position of the first entry kept (1 unless older segments were removed).
    pub first_position: u64,
    pub segments: usize,
    /// Bytes of torn tail removed (read-only: ignored but left in place).
    pub truncated_bytes: u64,
    /// The durable marker as found (0 if missing or damaged).
    pub durable_marker: u64,
}

/// What `remove_before` removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// Segment files unlinked (oldest first).
    pub segments: usize,
    /// Their total size.
    pub bytes: u64,
    /// The log's first position afterwards.
    pub first_position: u64,
}

/// The writing side; absent when the log was opened read-only.
struct Writer {
    active: Arc<ActiveFile>,
    active_len: u64,
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

pub struct FileLog {
    log_dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    last_position: u64,
    last_chain: [u8; 32],
    writer: Option<Writer>,
    _lock: Option<File>,
}

impl FileLog {
    /// Opens or creates the log, verifying every entry of every segment and
    /// removing a torn tail (see `recovery` for the rules). Any corruption is
    /// `LogError::Corrupt` naming the file and offset, and leaves the files
    /// untouched. Everything recovered is fdatasynced before this returns.
    pub fn open(opts: FileLogOptions) -> Result<(FileLog, OpenReport), LogError> {
        Self::open_seeded(opts, None)
    }

    /// Creates an empty log that continues after a snapshot at `position`
    /// whose chain is `chain`: its first entry will be `position + 1` and
    /// must link to `chain`. Later `open`s report `first_position =
    /// position + 1`. The log must not exist yet (no segment, no base).
    pub fn open_after(opts: FileLogOptions, position: u64, chain: [u8; 32]) -> Result<(FileLog, OpenReport), LogError> {
        if position == 0 {
            return Err(LogError::Invalid { reason: "a log seeded after position 0 is a new log: use open".into() });
        }
        Self::open_seeded(opts, Some(base::Base { position, chain }))
    }

    fn open_seeded(opts: FileLogOptions, seed: Option<base::Base>) -> Result<(FileLog, OpenReport), LogError> {
        let log_dir = opts.dir.join(LOG_DIR);
        create_dir_durable(&log_dir)?;
        let lock = lock_file(&log_dir.join(LOCK_FILE), true)?;
        if let Some(seed) = seed {
            Self::seed(&log_dir, seed)?;
        }
        let (mut recovered, marker) = Self::scan(&log_dir, true)?;
        remove_temp_files(&log_dir)?;
        prune::finish(&log_dir, std::mem::take(&mut recovered.stale))?;
        let truncated = recovered.truncated_bytes;
        let mut log = FileLog::from_recovered(log_dir, opts.segment_bytes, recovered, Some(lock));
        log.writer = Some(Writer::open(&log.log_dir, &mut log.segments, log.last_position, log.last_chain)?);
        metrics::gauge!("bursar_log_first_position").set(log.first_position() as f64);
        let report = log.report(marker, truncated);
        Ok((log, report))
    }

    /// Opens an existing log for reading only (for `verify`): the same
    /// checks, but nothing on disk changes. A torn tail is counted in the
    /// report and left in place; reads stop before it. Appends fail.
    pub fn open_read_only(opts: FileLogOptions) -> Result<(FileLog, OpenReport), LogError> {
        let log_dir = opts.dir.join(LOG_DIR);
        let lock_path = log_dir.join(LOCK_FILE);
        let lock = if lock_path.exists() { Some(lock_file(&lock_path, false)?) } else { None };
        let (recovered, marker) = Self::scan(&log_dir, false)?;
        let truncated = recovered.truncated_bytes;
        let log = FileLog::from_recovered(log_dir, opts.segment_bytes, recovered, lock);
        let report = log.report(marker, truncated);
        Ok((log, report))
    }

    /// Writes the base of a log that holds no entry. An empty segment (a
    /// start that stopped before its first entry) is removed: it is named
    /// for position 1, which the seeded log does not start at.
    fn seed(log_dir: &Path, seed: base::Base) -> Result<(), LogError> {
        let segments = list_segments(log_dir)?;
        let mut empty = true;
        for (_, path) in &segments {
            empty &= std::fs::metadata(path).map_err(|e| LogError::io(path, e))?.len() == 0;
        }
        if !empty || base::read(log_dir)?.is_some() {
            let reason = format!("{} already holds a log; it cannot be seeded after a snapshot", log_dir.display());
            return Err(LogError::Invalid { reason });
        }
        for (_, path) in &segments {
            std::fs::remove_file(path).map_err(|e| LogError::io(path, e))?;
        }
        base::write(log_dir, seed)
    }

    /// Lists, reads the marker and verifies; returns what was found and the marker.
    fn scan(log_dir: &Path, repair: bool) -> Result<(Recovered, u64), LogError> {
        let found = list_segments(log_dir)?;
        let marker_path = log_dir.join(MARKER_FILE);
        let marker = marker::read(&marker_path)?.unwrap_or_else(|| {
            if !found.is_empty() {
                tracing::warn!(file = %marker_path.display(), "durable marker is missing; treating it as 0");
            }
            0
        });
        Ok((recover(&found, marker, repair, base::read(log_dir)?)?, marker))
    }

    fn from_recovered(log_dir: PathBuf, segment_bytes: u64, r: Recovered, lock: Option<File>) -> FileLog {
        FileLog {
            log_dir,
            segment_bytes,
            segments: r.segments,
            last_position: r.last_position,
            last_chain: r.last_chain,
            writer: None,
            _lock: lock,
        }
    }

    /// What an open found; asserts what recovery promises about it.
    fn report(&self, durable_marker: u64, truncated_bytes: u64) -> OpenReport {
        assert!(
            self.last_position >= durable_marker,
            "invariant: recovery reaches the durable marker ({} < {durable_marker})",
            self.last_position
        );
        assert!(
            self.first_position() <= self.last_position + 1,
            "invariant: the log starts at {} but ends at {}",
            self.first_position(),
            self.last_position
        );
        let consecutive =
            self.segments.windows(2).all(|w| w[0].first < w[1].first && w[1].first <= self.last_position + 1);
        assert!(consecutive, "invariant: recovered segments are in order and none starts past the end");
        OpenReport {
            last_position: self.last_position,
            last_chain: self.last_chain,
            first_position: self.first_position(),
            segments: self.segments.len(),
            truncated_bytes,
            durable_marker,
        }
    }

    /// Position of the first entry kept (1 for a log that was never pruned
    /// nor seeded after a snapshot). A log without segments starts after
    /// its last position: 1 when new, the base's position + 1 when seeded.
    pub fn first_position(&self) -> u64 {
        self.segments.first().map_or(self.last_position + 1, |s| s.first)
    }

    pub fn last_position(&self) -> u64 {
        self.last_position
    }

    pub fn last_chain(&self) -> [u8; 32] {
        self.last_chain
    }

    /// Verified entries with position >= `from`, in order, read from disk,
    /// up to the last position at the time of the call. Stops after the
    /// first error. Asking for entries before `first_position` is an error,
    /// never a silent skip.
    pub fn entries_from(&self, from: u64) -> EntryIter {
        let from = from.max(1);
        let first = self.first_position();
        if from < first {
            return EntryIter::failed(self.out_of_range(from));
        }
        if from > self.last_position {
            return EntryIter::new(Vec::new(), from, self.last_position);
        }
        let i = self.segments.partition_point(|s| s.first <= from).saturating_sub(1);
        EntryIter::new(self.segments[i..].to_vec(), from, self.last_position)
    }

    /// The chain hash of the entry at `position`, read from disk (header
    /// checks and chain links only). `first_position - 1` gives the chain the
    /// first entry links to (zeros for a log starting at 1).
    pub fn chain_at(&self, position: u64) -> Result<[u8; 32], LogError> {
        if position == self.last_position {
            return Ok(self.last_chain);
        }
        if position > self.last_position || position + 1 < self.first_position() {
            return Err(self.out_of_range(position));
        }
        let next = position + 1;
        let i = self.segments.partition_point(|s| s.first <= next).saturating_sub(1);
        let seg = &self.segments[i];
        if seg.first == next {
            return Ok(seg.start_chain);
        }
        let mut reader = SegmentReader::open(&seg.path, seg.first, Some(seg.start_chain))?;
        loop {
            match reader.step(None)? {
                Step::Entry(v) if v.header.position == position => return Ok(v.chain),
                Step::Entry(_) => {}
                Step::Damaged(d) => return Err(reader.corrupt(d)),
                Step::End => {
                    let reason = format!("segment ends before entry {position}");
                    return Err(LogError::corrupt(&seg.path, reader.offset(), reason));
                }
            }
        }
    }

    fn out_of_range(&self, position: u64) -> LogError {
        LogError::OutOfRange { position, first: self.first_position(), last: self.last_position }
    }

    /// Starts the syncer thread. `on_durable` is called from it after each
    /// successful fdatasync with the highest position now durable
    /// (monotonic), or once with the error after which the log accepts no
    /// more appends (a failed fsync is never retried).
    ///
    /// # Panics
    /// If called twice.
    pub fn start(&mut self, on_durable: DurableCallback) {
        let Some(w) = self.writer.as_mut() else {
            return on_durable(Err(LogError::ReadOnly { path: self.log_dir.clone() }));
        };
        assert!(w.syncer.is_none(), "FileLog::start called twice");
        let shared = w.shared.clone();
        let spawned =
            std::thread::Builder::new().name("bursar-log-sync".into()).spawn(move || syncer::run(shared, on_durable));
        match spawned {
            Ok(handle) => w.syncer = Some(handle),
            Err(e) => w.shared.fail(format!("cannot start the syncer thread: {e}")),
        }
    }

    /// Appends an entry whose body is the concatenation of `parts` at
    /// position `last_position() + 1` and returns that position. Not durable
    /// until `on_durable` reports it. Fails after any earlier write or sync
    /// failure.
    pub fn append(&mut self, timestamp: u64, parts: &[&[u8]]) -> Result<u64, LogError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(LogError::ReadOnly { path: self.log_dir.clone() });
        };
        w.shared.check()?;
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len > u64::from(ENTRY_BODY_MAX) {
            return Err(LogError::BodyTooLarge { len, max: u64::from(ENTRY_BODY_MAX) });
        }
        let (position, prev_chain) = (self.last_position + 1, self.last_chain);
        if w.active_len > 0 && w.active_len >= self.segment_bytes {
            self.segments.push(w.roll(position, prev_chain)?);
        }
        let active = self.segments.last().expect("invariant: a writable log has an active segment");
        assert!(active.first <= position, "invariant: entry {position} goes to a segment starting at {}", active.first);
        let chain = w.write_entry(position, timestamp, prev_chain, parts, len as u32)?;
        assert_ne!(chain, prev_chain, "invariant: entry {position}'s chain hash must differ from the one it links to");
        self.last_chain = chain;
        self.last_position = position;
        Ok(position)
    }

    /// Stops the syncer after a final sync and returns the last position,
    /// which is then durable. Without `start`, syncs here.
    pub fn close(mut self) -> Result<u64, LogError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(self.last_position);
        };
        match w.syncer.take() {
            Some(handle) => {
                w.shared.stop();
                if handle.join().is_err() {
                    return Err(LogError::Failed { reason: "the log's syncer thread panicked".into() });
                }
            }
            None => {
                w.shared.sync_now()?;
            }
        }
        w.shared.check()?;
        debug_assert_eq!(w.shared.synced(), self.last_position);
        Ok(self.last_position)
    }
}

impl Writer {
    /// Opens the last segment (creating the first one, for entry 1 or the
    /// one after a seeded log's base, if there is none) for appending, makes
    /// everything recovered durable, and writes the marker.
    fn open(
        log_dir: &Path,
        segments: &mut Vec<Segment>,
        last_position: u64,
        last_chain: [u8; 32],
    ) -> Result<Writer, LogError> {
        if segments.is_empty() {
            let first = last_position + 1;
            let path = log_dir.join(segment_name(first));
            create_segment(&path)?;
            segments.push(Segment { first, path, start_chain: last_chain });
        }
        let path = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let io = |e| LogError::io(&path, e);
        let mut file = OpenOptions::new().read(true).write(true).open(&path).map_err(io)?;
        let active_len = file.seek(SeekFrom::End(0)).map_err(io)?;
        file.sync_data().map_err(io)?;
        let marker = Marker::open(log_dir.join(MARKER_FILE))?;
        sync_dir(log_dir)?;
        marker.write(last_position)?;
        let active = Arc::new(ActiveFile { file, path });
        let shared = Arc::new(Shared::new(active.clone(), last_position, marker));
        Ok(Writer { active, active_len, shared, syncer: None })
    }

    /// Starts the segment for entry `first`. The old segment is fdatasynced
    /// first (it is never synced again), and the new name is made durable
    /// before any entry in it can be acknowledged. Any failure stops the log.
    fn roll(&mut self, first: u64, start_chain: [u8; 32]) -> Result<Segment, LogError> {
        let log_dir = self.active.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = log_dir.join(segment_name(first));
        let result = self.try_roll(&log_dir, &path);
        if let Err(e) = &result {
            self.shared.fail(format!("segment roll-over failed: {e}"));
        }
        result.map(|()| Segment { first, path, start_chain })
    }

    fn try_roll(&mut self, log_dir: &Path, path: &Path) -> Result<(), LogError> {
        self.shared.sync_sealed(&self.active)?;
        let file = create_segment(path)?;
        sync_dir(log_dir)?;
        let active = Arc::new(ActiveFile { file, path: path.to_path_buf() });
        self.shared.set_active(active.clone());
        self.active = active;
        self.active_len = 0;
        Ok(())
    }

    /// Writes one entry with a vectored write (header + parts, no copy) and
    /// tells the syncer. A failed write may leave part of the entry in the
    /// file, so it stops the log; recovery removes the partial entry.
    fn write_entry(
        &mut self,
        position: u64,
        timestamp: u64,
        prev_chain: [u8; 32],
        parts: &[&[u8]],
        body_len: u32,
    ) -> Result<[u8; 32], LogError> {
        let mut hasher = blake3::Hasher::new();
        for p in parts {
            hasher.update(p);
        }
        let body_hash = *hasher.finalize().as_bytes();
        debug_assert_eq!(
            parts.iter().map(|p| p.len() as u64).sum::<u64>(),
            u64::from(body_len),
            "invariant: the header's body_len is the parts' total"
        );
        let header = Header { position, timestamp, body_len, prev_chain, body_hash }.encode();
        let mut slices = Vec::with_capacity(parts.len() + 1);
        slices.push(IoSlice::new(&header));
        slices.extend(parts.iter().map(|p| IoSlice::new(p)));
        if let Err(e) = write_all_vectored(&self.active.file, &mut slices) {
            let err = LogError::io(&self.active.path, e);
            self.shared.fail(format!("append failed: {err}"));
            return Err(err);
        }
        self.active_len += ENTRY_HEADER_SIZE as u64 + u64::from(body_len);
        debug_assert_eq!(
            self.active.file.metadata().map(|m| m.len()).ok(),
            Some(self.active_len),
            "invariant: the active segment holds exactly the entries written to it"
        );
        self.shared.appended(position);
        Ok(chain_of(&header))
    }
}

impl Drop for Writer {
    /// Stops the syncer (after a final sync) if `close` was not called.
    fn drop(&mut self) {
        if let Some(handle) = self.syncer.take() {
            self.shared.stop();
            let _ = handle.join();
        }
    }
}

fn create_segment(path: &Path) -> Result<File, LogError> {
    crate::fsutil::private_file().read(true).write(true).create_new(true).open(path).map_err(|e| LogError::io(path, e))
}

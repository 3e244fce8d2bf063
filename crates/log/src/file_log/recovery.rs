//! Opening a log: find the segments, verify every entry of every segment,
//! and tell a torn tail (an unacknowledged write cut short by a crash, which
//! is removed) from corruption (damage to anything that may have been
//! acknowledged, which stops the open).
//!
//! The rules:
//! - Every segment but the last was fdatasynced before the next one was
//!   created, so it must hold valid entries exactly to its end; anything
//!   else is corruption. Its name must be its first entry's position, and
//!   positions and chain links must continue across segment boundaries.
//! - In the last segment, the first entry that is incomplete or fails a
//!   check would have had position `p` = last valid + 1. If `p` is at or
//!   below the durable marker, that entry was acknowledged: corruption. If
//!   not, it was never acknowledged: the file is truncated there (the torn
//!   tail) and the bytes are counted in the report.
//! - After that, the log must reach the durable marker, or acknowledged
//!   entries are missing: corruption.
//!
//! - Segments at or below the base's position are left over from an
//!   interrupted `remove_before` (see `prune`): they are not read, and the
//!   first segment after them must start right after the base and link to
//!   its chain.
//!
//! Nothing is modified before every check has passed, so an open that fails
//! leaves the files exactly as it found them.

use super::base::Base;
use super::reader::{Damage, Segment, SegmentReader, Step};
use crate::LogError;
use crate::fsutil::{list_files, parse_numbered};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".log";

pub(crate) fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:020}{SEGMENT_SUFFIX}")
}

/// The segment files of `log_dir` by first position. A file that looks like
/// a segment but whose name does not parse is corruption: ignoring it could
/// hide entries.
pub(crate) fn list_segments(log_dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    for (name, path) in list_files(log_dir)? {
        if !(name.starts_with(SEGMENT_PREFIX) && name.ends_with(SEGMENT_SUFFIX)) {
            continue;
        }
        match parse_numbered(&name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
            Some(first) => out.push((first, path)),
            None => return Err(LogError::corrupt(&path, 0, "malformed segment file name")),
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

/// What recovery found.
pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub last_position: u64,
    pub last_chain: [u8; 32],
    /// Torn-tail bytes removed (or, read-only, ignored).
    pub truncated_bytes: u64,
    /// Segments below the base, left by an interrupted `remove_before`
    /// (oldest first): not read, not part of the log; a repairing open
    /// unlinks them.
    pub stale: Vec<PathBuf>,
}

/// Verifies `found` (sorted by first position) against the durable marker
/// and the base (where a log seeded after a snapshot starts, see `base`).
/// With `repair`, a torn tail is truncated; without, it is only skipped.
pub(crate) fn recover(
    found: &[(u64, PathBuf)],
    marker: u64,
    repair: bool,
    base: Option<Base>,
) -> Result<Recovered, LogError> {
    let stale_count = super::prune::split_stale(found, base);
    let (stale, found) = found.split_at(stale_count);
    if let (Some((_, path)), Some(b)) = (stale.last(), base)
        && found.is_empty()
    {
        let reason = format!("the log's base says it starts at position {} + 1, but no segment does", b.position);
        return Err(LogError::corrupt(path, 0, reason));
    }
    let start = base.unwrap_or(Base { position: 0, chain: [0; 32] });
    let mut scan = Scan {
        marker,
        repair,
        base,
        segments: Vec::with_capacity(found.len()),
        last_position: start.position,
        last_chain: start.chain,
        truncated_bytes: 0,
        body: Vec::new(),
    };
    let mut end = None;
    for (i, (first, path)) in found.iter().enumerate() {
        end = Some(scan.segment(*first, path, i + 1 == found.len())?);
    }
    if scan.last_position < marker {
        let (file, offset) = end.unwrap_or_default();
        let reason = format!(
            "log ends at position {} but position {marker} was acknowledged as durable: entries are missing",
            scan.last_position
        );
        return Err(LogError::Corrupt { file, offset, reason });
    }
    let Scan { segments, last_position, last_chain, truncated_bytes, .. } = scan;
    assert!(
        segments.last().is_none_or(|s| s.first <= last_position + 1),
        "invariant: the last segment starts at or before the next position"
    );
    let stale = stale.iter().map(|(_, path)| path.clone()).collect();
    Ok(Recovered { segments, last_position, last_chain, truncated_bytes, stale })
}

struct Scan {
    marker: u64,
    repair: bool,
    base: Option<Base>,
    segments: Vec<Segment>,
    last_position: u64,
    last_chain: [u8; 32],
    truncated_bytes: u64,
    /// Reused body buffer.
    body: Vec<u8>,
}

impl Scan {
    /// Verifies one segment; returns its path and the offset where its valid
    /// entries end.
    fn segment(&mut self, first: u64, path: &Path, is_last: bool) -> Result<(PathBuf, u64), LogError> {
        let prev = self.check_start(first, path)?;
        let mut reader = SegmentReader::open(path, first, prev)?;
        let mut start_chain = prev;
        loop {
            match reader.step(Some(&mut self.body))? {
                Step::End => break,
                Step::Entry(v) => {
                    assert_eq!(
                        v.header.position,
                        self.last_position + 1,
                        "invariant: recovery counts entries as the reader does"
                    );
                    start_chain.get_or_insert(v.header.prev_chain);
                    self.last_position = v.header.position;
                    self.last_chain = v.chain;
                }
                Step::Damaged(d) if is_last => {
                    self.torn_tail(&reader, d)?;
                    break;
                }
                Step::Damaged(d) => {
                    let reason = format!("sealed segment (not the last) is damaged: {}", d.reason);
                    return Err(LogError::corrupt(path, d.offset, reason));
                }
            }
        }
        if !is_last && reader.offset() == 0 {
            return Err(LogError::corrupt(path, 0, "sealed segment (not the last) holds no entries"));
        }
        let Some(start_chain) = start_chain else {
            let reason = format!("the log holds no entries but its first segment starts at position {first}");
            return Err(LogError::corrupt(path, 0, reason));
        };
        assert!(
            reader.offset() <= reader.len(),
            "invariant: {}'s recovered end {} is within its length {}",
            path.display(),
            reader.offset(),
            reader.len()
        );
        self.segments.push(Segment { first, path: path.to_path_buf(), start_chain });
        Ok((path.to_path_buf(), reader.offset()))
    }

    /// Checks that a segment starts where the log so far ends; returns the
    /// chain its first entry must link to (`None`: a first segment after
    /// removed older ones, whose link cannot be checked).
    fn check_start(&mut self, first: u64, path: &Path) -> Result<Option<[u8; 32]>, LogError> {
        if self.segments.is_empty() {
            if first == 0 {
                return Err(LogError::corrupt(path, 0, "segment named for position 0 (positions start at 1)"));
            }
            if let Some(base) = self.base {
                return Self::check_base(base, first, path);
            }
            self.last_position = first - 1;
            return Ok((first == 1).then_some([0; 32]));
        }
        if first != self.last_position + 1 {
            let reason =
                format!("segment starts at position {first} but the log before it ends at {}", self.last_position);
            return Err(LogError::corrupt(path, 0, reason));
        }
        Ok(Some(self.last_chain))
    }

    /// A log seeded after a snapshot must start right after it; its first
    /// entry links to the snapshot's chain (the scan starts from the base).
    fn check_base(base: Base, first: u64, path: &Path) -> Result<Option<[u8; 32]>, LogError> {
        if base.position.checked_add(1) != Some(first) {
            let reason = format!("the log's base says it starts at position {} + 1, not {first}", base.position);
            return Err(LogError::corrupt(path, 0, reason));
        }
        Ok(Some(base.chain))
    }

    /// Damage in the last segment: a torn tail if the entry was never
    /// acknowledged, corruption if it was.
    fn torn_tail(&mut self, reader: &SegmentReader, d: Damage) -> Result<(), LogError> {
        let position = self.last_position + 1;
        if position <= self.marker {
            let reason = format!(
                "entry {position} was acknowledged as durable (durable marker {}) but is damaged: {}",
                self.marker, d.reason
            );
            return Err(LogError::corrupt(reader.path(), d.offset, reason));
        }
        assert!(d.offset <= reader.len(), "invariant: damage is found inside the file");
        let bytes = reader.len() - d.offset;
        tracing::warn!(
            file = %reader.path().display(),
            offset = d.offset,
            bytes,
            position,
            reason = %d.reason,
            "removing the torn tail of the log (entries never acknowledged)"
        );
        if self.repair {
            truncate(reader.path(), d.offset)?;
        }
        self.truncated_bytes += bytes;
        Ok(())
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), LogError> {
    let file = OpenOptions::new().write(true).open(path).map_err(|e| LogError::io(path, e))?;
    file.set_len(len).and_then(|()| file.sync_all()).map_err(|e| LogError::io(path, e))
}

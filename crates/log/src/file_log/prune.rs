//! Log retention: removing whole sealed segments that lie below a position
//! the log is no longer needed for (the oldest retained snapshot).
//!
//! Crash safety rests on one ordering. The base (`base`: the position and
//! chain the log continues from) is rewritten durably to (first kept
//! position - 1, the first kept segment's start chain) BEFORE any segment
//! is unlinked; then the old segments are unlinked oldest first and the
//! directory is synced. So after a crash at any point:
//! - base not yet replaced: the log is the old one, whole;
//! - base replaced, some or all old segments still there: recovery sees
//!   segments at or below the base's position (`stale`), does not read
//!   them, and checks the first kept segment's link against the base's
//!   chain as for any log with a base. A repairing open finishes the
//!   removal; a read-only open only skips them.
//!
//! Unlinking oldest first keeps what remains a contiguous suffix of the log
//! even when unlinks are reordered by a crash without the directory sync.

use super::base::{self, Base};
use super::{FileLog, Removed};
use crate::LogError;
use crate::fsutil::sync_dir;
use std::path::{Path, PathBuf};

impl FileLog {
    /// Removes every sealed segment all of whose entries are below
    /// `position` (never the active, last one) and returns what was removed.
    /// Afterwards `first_position()` is the first kept segment's first
    /// position, and `entries_from` below it is `OutOfRange`. The base is
    /// written durably before anything is unlinked (see the module docs).
    /// An `EntryIter` made before the call that has not yet opened a removed
    /// segment fails with an I/O error when it gets to it.
    ///
    /// # Panics
    /// If `position` is past the log's next position (a caller bug: nothing
    /// beyond the log can be retained by a snapshot).
    pub fn remove_before(&mut self, position: u64) -> Result<Removed, LogError> {
        if self.writer.is_none() {
            return Err(LogError::ReadOnly { path: self.log_dir.clone() });
        }
        assert!(
            position <= self.last_position + 1,
            "remove_before({position}) is past the log's end ({}): a snapshot cannot retain what the log never held",
            self.last_position
        );
        let count = self.segments.windows(2).take_while(|w| w[1].first <= position).count();
        if count == 0 {
            return Ok(Removed { segments: 0, bytes: 0, first_position: self.first_position() });
        }
        assert!(count < self.segments.len(), "invariant: the active segment is never removed");
        let kept = &self.segments[count];
        base::write(&self.log_dir, Base { position: kept.first - 1, chain: kept.start_chain })?;
        let mut bytes = 0;
        for _ in 0..count {
            let seg = &self.segments[0];
            bytes += std::fs::metadata(&seg.path).map_err(|e| LogError::io(&seg.path, e))?.len();
            std::fs::remove_file(&seg.path).map_err(|e| LogError::io(&seg.path, e))?;
            self.segments.remove(0);
        }
        sync_dir(&self.log_dir)?;
        let first_position = self.first_position();
        assert!(
            first_position <= position && self.segments.get(1).is_none_or(|s| s.first > position),
            "invariant: exactly the segments below position {position}'s are removed (first kept: {first_position})"
        );
        metrics::counter!("bursar_log_segments_removed_total").increment(count as u64);
        metrics::gauge!("bursar_log_first_position").set(first_position as f64);
        tracing::info!(segments = count, bytes, first_position, "removed log segments below the oldest checkpoint");
        Ok(Removed { segments: count, bytes, first_position })
    }
}

/// The segments of `found` (sorted by first position) that a base at
/// `base` says were being removed: those starting at or below its position.
/// They are not read: their entries are all at or below the base.
pub(super) fn split_stale(found: &[(u64, PathBuf)], base: Option<Base>) -> usize {
    base.map_or(0, |b| found.partition_point(|(first, _)| *first <= b.position))
}

/// Finishes a removal a crash interrupted: unlinks the stale segments
/// recovery found (oldest first) and syncs the directory. Called only by a
/// repairing open, after every check has passed.
pub(super) fn finish(log_dir: &Path, stale: Vec<PathBuf>) -> Result<(), LogError> {
    if stale.is_empty() {
        return Ok(());
    }
    for path in &stale {
        tracing::warn!(file = %path.display(), "finishing an interrupted log segment removal");
        std::fs::remove_file(path).map_err(|e| LogError::io(path, e))?;
    }
    metrics::counter!("bursar_log_segments_removed_total").increment(stale.len() as u64);
    sync_dir(log_dir)
}

//! A forensic read: every verified entry in order, up to the first damaged
//! one, without opening (and so without recovering) the log. `bursar audit
//! verify` uses it to say which audit records a damaged entry held.

use super::reader::{SegmentReader, Step};
use super::recovery::list_segments;
use crate::{Entry, LogError};
use std::path::Path;

/// What a caller's callback returns to stop a scan: its own error, kept
/// whole (boxed, so a closure that only returns `Ok(())` still infers).
pub type ScanCallbackError = Box<dyn std::error::Error + Send + Sync>;

/// Where a scan stopped.
#[derive(Debug)]
pub struct ScanStop {
    /// The position the damaged entry has (or would have), or of the entry
    /// the callback refused.
    pub position: u64,
    pub error: ScanError,
}

/// Why a scan stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Damage, missing segments or an I/O error in the log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The callback returned an error for the entry at `ScanStop::position`.
    #[error("the scan's callback stopped it: {0}")]
    Callback(#[source] ScanCallbackError),
}

/// Calls `each` with every entry that verifies, oldest first. Returns the
/// last position read, or where and why the scan stopped early (damage,
/// missing segments, or an error from `each`).
pub fn scan(data_dir: &Path, mut each: impl FnMut(Entry) -> Result<(), ScanCallbackError>) -> Result<u64, ScanStop> {
    let stop = |position, error: LogError| ScanStop { position, error: ScanError::Log(error) };
    let segments = list_segments(&data_dir.join(super::LOG_DIR)).map_err(|error| stop(1, error))?;
    let mut prev_chain: Option<[u8; 32]> = None;
    let mut position = segments.first().map_or(1, |(first, _)| *first);
    let mut body = Vec::new();
    for (first, path) in &segments {
        if *first != position {
            let error = LogError::corrupt(path, 0, format!("segment starts at {first}, expected {position}"));
            return Err(stop(position, error));
        }
        let link = if *first == 1 { Some([0; 32]) } else { prev_chain };
        let mut reader = SegmentReader::open(path, *first, link).map_err(|error| stop(position, error))?;
        loop {
            match reader.step(Some(&mut body)).map_err(|error| stop(position, error))? {
                Step::End => break,
                Step::Damaged(d) => return Err(stop(position, reader.corrupt(d))),
                Step::Entry(v) => {
                    let entry = Entry {
                        position: v.header.position,
                        timestamp: v.header.timestamp,
                        chain: v.chain,
                        body: std::mem::take(&mut body),
                    };
                    each(entry).map_err(|e| ScanStop { position, error: ScanError::Callback(e) })?;
                    prev_chain = Some(v.chain);
                    position += 1;
                }
            }
        }
    }
    Ok(position - 1)
}

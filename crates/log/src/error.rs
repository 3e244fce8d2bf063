//! The one error type of this crate. Corruption always names the file and the
//! byte offset where it was found, so an operator can look at the damage.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system error on a file or directory.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Stored bytes failed a check. Never skipped, never repaired silently.
    /// `reason` is the rendered fault (`HeaderFault`, `EntryFault`,
    /// `FileFault` or a check's own text): it is matched by operators and
    /// tests, and recovery adds context around it.
    #[error("corruption in {} at offset {offset}: {reason}", file.display())]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    /// An entry body larger than `ENTRY_BODY_MAX`; nothing was written.
    #[error("entry body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge { len: u64, max: u64 },
    /// A write or sync failed earlier; the log accepts no more appends
    /// (restart the process: recovery from disk is always safe).
    #[error("the log stopped accepting appends after a failed write or sync: {reason}")]
    Failed { reason: String },
    /// A position that is not in the log.
    #[error("position {position} is not in the log, which holds positions {first} to {last}")]
    OutOfRange { position: u64, first: u64, last: u64 },
    /// Another process (or another open instance) holds the log.
    #[error("{} is locked: another process or instance has this log open", path.display())]
    Locked { path: PathBuf },
    /// A write was attempted on something opened read-only.
    #[error("{} was opened read-only", path.display())]
    ReadOnly { path: PathBuf },
    /// A snapshot bundle (one snapshot shipped as a single stream) failed a
    /// check on import; nothing of it became visible.
    #[error("malformed snapshot bundle at byte {offset}: {reason}")]
    BadBundle { offset: u64, reason: String },
    /// Input to a write exceeds a limit of the stored format.
    #[error("cannot store this: {reason}")]
    Invalid { reason: String },
}

impl LogError {
    pub(crate) fn io(path: &Path, source: io::Error) -> LogError {
        LogError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt { file: file.to_path_buf(), offset, reason: reason.into() }
    }

    /// True for `Corrupt`.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, LogError::Corrupt { .. })
    }
}

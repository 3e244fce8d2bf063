//! The one error type of this crate. Corruption always names the file and
//! the byte offset where it was found, and what exactly is wrong.

use crate::block::BlockFault;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system error on a file or directory.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Stored bytes failed a check. Never skipped, never repaired silently.
    #[error("corruption in {} at offset {offset}: {fault}", file.display())]
    Corrupt { file: PathBuf, offset: u64, fault: Fault },
}

/// What is wrong with stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// A block failed its own checks.
    #[error("{0}")]
    Block(#[from] BlockFault),
    /// A file a manifest names is not in its directory.
    #[error("the file is missing")]
    Missing,
    /// The file ends before the data its metadata promises.
    #[error("the file holds {len} bytes, {expected} expected")]
    Truncated { len: u64, expected: u64 },
    /// Checked blocks whose content does not parse.
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    /// A table's blocks are intact but disagree with each other or with the
    /// key and value types it is read as.
    #[error("{0}")]
    Table(#[from] TableFault),
    /// An intact record block whose payload is not the whole records its
    /// place promises: exactly `expected` bytes for a full block, at least
    /// `expected` (in whole records) for the last, partly filled one.
    #[error("a record block with a {len}-byte payload, {expected} bytes of {record_size}-byte records expected")]
    RecordPayload { len: u32, expected: u32, record_size: u32 },
    /// Neither tail slot of a record file (nor a full block written later)
    /// holds the durable records of its last, partly filled block.
    #[error("no tail slot holds the {records} durable records of block {block}, and the block is not in the file")]
    TailLost { block: u64, records: u64 },
}

impl StoreError {
    pub fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io { path: path.to_path_buf(), source }
    }

    pub fn corrupt(file: &Path, offset: u64, fault: impl Into<Fault>) -> StoreError {
        StoreError::Corrupt { file: file.to_path_buf(), offset, fault: fault.into() }
    }

    /// True for `Corrupt`.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}

/// How a table's intact blocks disagree with each other, or with the key
/// and value types the table is read as. Checked once at open (footer,
/// index, filter) and at every data block read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableFault {
    #[error("table format {found}, this build reads format {expected}")]
    Format { found: u32, expected: u32 },
    #[error("table of {key_size}-byte keys and {value_size}-byte values, read as {expected_key} and {expected_value}")]
    Shape { key_size: u32, value_size: u32, expected_key: u32, expected_value: u32 },
    #[error("table footer: {0}")]
    Footer(&'static str),
    #[error("table index: {0}")]
    Index(&'static str),
    #[error("table filter: {0}")]
    Filter(&'static str),
    #[error("table data block: {0}")]
    Data(&'static str),
}

//! Bursar's durable storage.
//!
//! - [`file_log`]: the append-only log the engine writes every command batch
//!   to before applying it. Entries are checksummed and hash-chained,
//!   appends are group-committed with fdatasync, and recovery tells a torn
//!   tail (never acknowledged, removed) from corruption (reported with file
//!   and offset, never skipped).
//! - [`snapshot_store`]: content-addressed snapshots of the state machine, so
//!   recovery replays only the log after the newest valid snapshot.
//!
//! Safety comes first: no acknowledged entry may be lost or silently
//! skipped, and nothing read from disk is trusted before it is checked.

pub mod error;
pub mod file_log;
mod fsutil;
pub mod limits;
pub use fsutil::{DIR_MODE, FILE_MODE, create_private_dir_all, loose_modes};
pub mod snapshot_store;

pub use error::LogError;
pub use file_log::{
    DurableCallback, Entry, EntryIter, FileLog, FileLogOptions, OpenReport, Removed, ScanCallbackError, ScanError,
    ScanStop, scan,
};
pub use snapshot_store::{BundleInfo, ColdChunks, LoadedSnapshot, Loading, SnapshotInfo, SnapshotStore};

#[cfg(test)]
mod tests {
    fn send<T: Send>() {}

    #[test]
    fn handles_can_move_to_other_threads() {
        send::<crate::FileLog>();
        send::<crate::EntryIter>();
        send::<crate::SnapshotStore>();
        send::<crate::ColdChunks>();
        send::<crate::LogError>();
    }
}

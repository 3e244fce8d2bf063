//! Why storing, listing, pruning or fetching a snapshot object failed. The
//! NATS call and the store step say what was being done (object name,
//! position, bucket, subject); the async-nats or store error is the source.

use async_nats::jetstream::context::{CreateObjectStoreError, GetStreamError, ObjectStoreError, RequestError};
use async_nats::jetstream::object_store::{DeleteError, GetError, InfoError, PutError};
use async_nats::jetstream::stream::{LastRawMessageError, PurgeError};
use bursar_log::LogError;
use std::fmt;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotObjectsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A NATS call did not finish within its limit.
    #[error("{call}: not done within {after:?}")]
    TimedOut { call: Call, after: Duration },
    /// A NATS call failed.
    #[error("{call}: {source}")]
    Failed {
        call: Call,
        #[source]
        source: CallError,
    },
    #[error("reading the snapshot at {position}: {source}")]
    ReadSnapshot {
        position: u64,
        #[source]
        source: LogError,
    },
    #[error("exporting the snapshot at {position}: {source}")]
    Export {
        position: u64,
        #[source]
        source: LogError,
    },
    /// The local store refused the downloaded bundle (damaged, cut short).
    #[error("importing {name}: {source}")]
    Import {
        name: String,
        #[source]
        source: LogError,
    },
    /// A step running in the blocking pool panicked or was cancelled.
    #[error("{task} did not finish: {source}")]
    Unfinished {
        task: Task,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("{name}: the upload ended before the export")]
    UploadCutShort { name: String },
    #[error("{name}: the object store took {stored} bytes of a {bundle}-byte bundle")]
    UploadIncomplete { name: String, stored: u64, bundle: u64 },
    #[error("{name}: the download ended before the import")]
    DownloadCutShort { name: String },
    #[error("{name}: read {read} bytes of {size}")]
    DownloadIncomplete { name: String, read: u64, size: u64 },
    #[error("{name} holds the snapshot at position {found}, not {expected}")]
    WrongPosition { name: String, found: u64, expected: u64 },
    #[error("prune keeps at least one snapshot: the log is purged up to the oldest kept one")]
    KeepNone,
    #[error("there is no bucket {bucket}")]
    NoBucket { bucket: String },
    /// The bucket's stream was there, the bucket no longer is.
    #[error("bucket {bucket} vanished")]
    BucketVanished { bucket: String },
    /// The downloaded snapshot is not authentic; it was removed again.
    #[error("refusing snapshot object {name}: {reason}")]
    Refused {
        name: String,
        #[source]
        reason: Refusal,
    },
    #[error("reading the imported snapshot {name}: {source}")]
    ReadImported {
        name: String,
        #[source]
        source: LogError,
    },
    /// A refused snapshot could not be removed from the local store.
    #[error("removing the refused snapshot {name} ({reason}): {source}")]
    RemoveRefused {
        name: String,
        reason: Refusal,
        #[source]
        source: LogError,
    },
}

/// A `SnapshotObjectsConfig` outside what the object store handles.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("chunk_bytes {chunk_bytes} is not in {min}..={max}")]
    ChunkBytes { chunk_bytes: usize, min: usize, max: usize },
    #[error("replicas {replicas} is not in 1..=5")]
    Replicas { replicas: usize },
    #[error("min_bytes_per_second is 0")]
    NoTransferRate,
}

/// The NATS call an error or a time-out happened in, with what it was on.
#[derive(Debug, Clone)]
pub enum Call {
    OpenStream { bucket: String },
    OpenBucket { bucket: String },
    CreateBucket { bucket: String, replicas: usize },
    ListSubjects { filter: String },
    Upload { name: String, size: u64 },
    OpenObject { name: String },
    Download { name: String, size: u64 },
    ReadInfo { name: String },
    Delete { name: String },
    PurgeTombstone { name: String },
    PurgeChunks { subject: String },
    ReadNewest { subject: String },
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::OpenStream { bucket } => write!(f, "opening stream OBJ_{bucket}"),
            Call::OpenBucket { bucket } => write!(f, "opening bucket {bucket}"),
            Call::CreateBucket { bucket, replicas } => write!(f, "creating bucket {bucket} with {replicas} replicas"),
            Call::ListSubjects { filter } => write!(f, "listing subjects {filter}"),
            Call::Upload { name, size } => write!(f, "uploading {name} ({size} bytes)"),
            Call::OpenObject { name } => write!(f, "opening {name}"),
            Call::Download { name, size } => write!(f, "downloading {name} ({size} bytes)"),
            Call::ReadInfo { name } => write!(f, "reading {name}"),
            Call::Delete { name } => write!(f, "deleting {name}"),
            Call::PurgeTombstone { name } => write!(f, "purging the tombstone of {name}"),
            Call::PurgeChunks { subject } => write!(f, "purging {subject}"),
            Call::ReadNewest { subject } => write!(f, "reading the newest message of {subject}"),
        }
    }
}

/// What a failed NATS call reported.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    GetStream(#[from] GetStreamError),
    #[error(transparent)]
    GetBucket(#[from] ObjectStoreError),
    #[error(transparent)]
    CreateBucket(#[from] CreateObjectStoreError),
    #[error(transparent)]
    StreamInfo(#[from] RequestError),
    #[error(transparent)]
    Put(#[from] PutError),
    #[error(transparent)]
    Get(#[from] GetError),
    #[error(transparent)]
    Info(#[from] InfoError),
    #[error(transparent)]
    Delete(#[from] DeleteError),
    #[error(transparent)]
    Purge(#[from] PurgeError),
    #[error(transparent)]
    LastMessage(#[from] LastRawMessageError),
    #[error(transparent)]
    Pump(#[from] PumpError),
}

/// Copying a downloading object into the import's pipe failed.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("reading the object: {0}")]
    Read(#[source] std::io::Error),
    #[error("the import stopped reading")]
    ImportStopped,
}

/// A step run in the blocking pool.
#[derive(Debug, Clone)]
pub enum Task {
    ReadSnapshot { position: u64 },
    Export { name: String },
    Import { name: String },
    CheckMac { name: String },
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::ReadSnapshot { position } => write!(f, "reading the snapshot at {position}"),
            Task::Export { name } => write!(f, "the export of {name}"),
            Task::Import { name } => write!(f, "the import of {name}"),
            Task::CheckMac { name } => write!(f, "checking the MAC of {name}"),
        }
    }
}

/// Why a downloaded snapshot is not taken as one a replica made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it carries no valid bursar-mac metadata")]
    NoMac,
    #[error("it is sealed under cluster key {key_id}, which this replica does not hold")]
    UnknownKey { key_id: u32 },
    #[error("its MAC does not match: no replica of this cluster made it")]
    Mismatch,
}

impl SnapshotObjectsError {
    pub(super) fn failed(call: Call, source: impl Into<CallError>) -> SnapshotObjectsError {
        SnapshotObjectsError::Failed { call, source: source.into() }
    }
}

//! Starting a replica whose data directory is empty: from the newest
//! snapshot in the object store plus the log after it, rather than from a
//! log that may have been purged (see `docs/cluster.md`).
//!
//! Runs before the node starts: the snapshot is downloaded into the data
//! dir's snapshot store, then the local log is seeded to continue after it
//! (`FileLog::open_after`). The normal start then restores the snapshot
//! (checking its digest and that the log continues its chain) and the
//! replicator consumes the stream from the snapshot's position + 1.

use crate::ClusterConfig;
use crate::log_stream;
use crate::replica::connect;
use crate::snapshot_objects;
use async_nats::jetstream;
use bursar_log::LogError;
use bursar_log::{FileLog, FileLogOptions, SnapshotStore};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bootstrapping an empty data directory failed; names the step and its facts.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("starting a runtime for the bootstrap: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("reading the local log in {}: {source}", dir.display())]
    ReadLog { dir: PathBuf, source: LogError },
    #[error("{0}")]
    SnapshotStore(#[source] LogError),
    #[error("listing local snapshots: {0}")]
    ListSnapshots(#[source] LogError),
    #[error(transparent)]
    Connect(#[from] crate::replica::ConnectError),
    /// Finding or downloading the newest snapshot object.
    #[error(transparent)]
    SnapshotObjects(#[from] crate::snapshot_objects::SnapshotObjectsError),
    #[error(transparent)]
    Stream(#[from] crate::log_stream::StreamError),
    #[error(
        "the cluster's log starts at position {first} (older entries were purged) and the object store holds \
         no snapshot to start from: this replica cannot be rebuilt until one is uploaded"
    )]
    NoSnapshot { first: u64 },
    #[error("reading the snapshot at {position}: {source}")]
    ReadSnapshot { position: u64, source: LogError },
    #[error("seeding the local log after position {position}: {source}")]
    Seed { position: u64, source: LogError },
}

/// What the data directory holds, as far as bootstrapping cares.
#[derive(Debug, PartialEq, Eq)]
enum Local {
    /// Log entries or a seeded log: start normally.
    Started,
    /// No log entries and no snapshot.
    Empty,
    /// No log entries, but a snapshot: a bootstrap that stopped after the
    /// download. The log is seeded after the newest one.
    SnapshotOnly(u64),
}

/// If `data_dir` holds no log entries, prepares it to start from the
/// cluster's newest snapshot; returns that snapshot's position (`None`:
/// nothing to do, or no snapshot and the log is whole from position 1).
/// Fails if the log's start was purged and no snapshot covers it.
pub fn bootstrap_if_empty(config: &ClusterConfig, data_dir: &Path) -> Result<Option<u64>, BootstrapError> {
    let position = match local_state(data_dir)? {
        Local::Started => return Ok(None),
        Local::SnapshotOnly(position) => position,
        Local::Empty => {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(BootstrapError::Runtime)?;
            match runtime.block_on(download_newest(config, data_dir))? {
                Some(position) => position,
                None => return Ok(None),
            }
        }
    };
    seed_log(data_dir, position)?;
    Ok(Some(position))
}

fn local_state(data_dir: &Path) -> Result<Local, BootstrapError> {
    if !data_dir.is_dir() {
        return Ok(Local::Empty);
    }
    if data_dir.join(bursar_log::file_log::LOG_DIR).is_dir() {
        let (log, open) = FileLog::open_read_only(FileLogOptions::new(data_dir))
            .map_err(|source| BootstrapError::ReadLog { dir: data_dir.to_path_buf(), source })?;
        drop(log);
        if open.last_position > 0 {
            return Ok(Local::Started);
        }
    }
    let store = SnapshotStore::open_read_only(data_dir).map_err(BootstrapError::SnapshotStore)?;
    let snapshots = store.list().map_err(BootstrapError::ListSnapshots)?;
    Ok(snapshots.last().map_or(Local::Empty, |p| Local::SnapshotOnly(*p)))
}

/// Downloads the newest snapshot object into the data dir's store, unless
/// there is none (then the log must still start at position 1).
async fn download_newest(config: &ClusterConfig, data_dir: &Path) -> Result<Option<u64>, BootstrapError> {
    tracing::info!(data_dir = %data_dir.display(), "the data directory is empty: bootstrapping from the cluster");
    let client = connect(config).await?;
    let js = jetstream::new(client);
    let state = log_stream::ensure_stream(&js, config).await?.state;
    let objects = config.snapshot_objects();
    let Some(position) = snapshot_objects::newest(&js, &objects).await? else {
        return no_snapshot(state.first_sequence, state.messages);
    };
    let started = Instant::now();
    snapshot_objects::download(&js, &objects, &config.keys, position, data_dir).await?;
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(position, ms, log_first = state.first_sequence, "bootstrapped from the cluster's snapshot");
    Ok(Some(position))
}

/// Without a snapshot a new replica replays the whole log, which it can
/// only if nothing was purged from it.
fn no_snapshot(first: u64, messages: u64) -> Result<Option<u64>, BootstrapError> {
    if messages > 0 && first > 1 {
        return Err(BootstrapError::NoSnapshot { first });
    }
    Ok(None)
}

/// Seeds the empty local log to continue after the snapshot at `position`.
fn seed_log(data_dir: &Path, position: u64) -> Result<(), BootstrapError> {
    let store = SnapshotStore::open_read_only(data_dir).map_err(BootstrapError::SnapshotStore)?;
    let chain = store.load(position).map_err(|source| BootstrapError::ReadSnapshot { position, source })?.chain;
    let (log, _) = FileLog::open_after(FileLogOptions::new(data_dir), position, chain)
        .map_err(|source| BootstrapError::Seed { position, source })?;
    log.close().map_err(|source| BootstrapError::Seed { position, source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_log_purged_without_a_snapshot_is_refused() {
        assert_eq!(no_snapshot(0, 0).unwrap(), None);
        assert_eq!(no_snapshot(1, 10).unwrap(), None);
        assert_eq!(no_snapshot(11, 0).unwrap(), None, "an emptied log holds nothing to replay");
        let refused = no_snapshot(11, 5).unwrap_err();
        assert!(matches!(refused, BootstrapError::NoSnapshot { first: 11 }));
        assert!(refused.to_string().contains("no snapshot"));
    }

    #[test]
    fn local_state_tells_empty_from_started_and_a_half_done_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(local_state(&dir.path().join("missing")).unwrap(), Local::Empty);
        assert_eq!(local_state(dir.path()).unwrap(), Local::Empty);
        FileLog::open(FileLogOptions::new(dir.path())).unwrap().0.close().unwrap();
        assert_eq!(local_state(dir.path()).unwrap(), Local::Empty, "a created log with no entry");

        // A downloaded snapshot without a seeded log: seed after it.
        let mut sm = bursar_core::machine::Machine::default();
        sm.apply_entry(1, 1, &[]);
        SnapshotStore::open(dir.path()).unwrap().write(&sm.snapshot(), [3; 32]).unwrap();
        assert_eq!(local_state(dir.path()).unwrap(), Local::SnapshotOnly(1));
        seed_log(dir.path(), 1).unwrap();
        assert_eq!(local_state(dir.path()).unwrap(), Local::Started);

        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = FileLog::open(FileLogOptions::new(dir.path())).unwrap();
        log.append(1, &[b"x"]).unwrap();
        log.close().unwrap();
        assert_eq!(local_state(dir.path()).unwrap(), Local::Started);

        let seeded = tempfile::tempdir().unwrap();
        FileLog::open_after(FileLogOptions::new(seeded.path()), 9, [1; 32]).unwrap().0.close().unwrap();
        assert_eq!(local_state(seeded.path()).unwrap(), Local::Started);
    }
}

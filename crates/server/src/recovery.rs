//! Recovery: the newest valid snapshot plus a replay of the log after it.
//! Every check that fails stops the start with a message naming what is
//! wrong; nothing is skipped.

use bursar_core::DecodeError;
use bursar_core::Limits;
use bursar_core::command::decode_entry;
use bursar_core::entry::RejectReason;
use bursar_core::machine::Machine;
use bursar_core::state::{ChunkReader, OnDisk, StoredIndexes};
use bursar_log::{ColdChunks, FileLog, LoadedSnapshot, Loading, LogError, OpenReport, SnapshotStore};
use std::sync::Arc;

/// Why recovery (or a replay) stopped; each names the position concerned.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("snapshot at position {position} is ahead of the log, which ends at {log_end}: log entries are missing")]
    SnapshotAhead { position: u64, log_end: u64 },
    #[error("snapshot at position {position} does not match the log's hash chain there")]
    ChainMismatch { position: u64 },
    #[error("snapshot at position {position} is inconsistent: {source}")]
    SnapshotInconsistent {
        position: u64,
        #[source]
        source: DecodeError,
    },
    #[error("snapshot at position {position} restores to a state with a different digest")]
    DigestMismatch { position: u64 },
    #[error("the log starts at position {first} and there is no snapshot to start from")]
    NoSnapshot { first: u64 },
    #[error("replay stopped at position {stopped} before the log's end at {until}")]
    ReplayStopped { stopped: u64, until: u64 },
    #[error("log entry {position} has a valid checksum but an invalid body: {source}")]
    InvalidBody {
        position: u64,
        #[source]
        source: DecodeError,
    },
}

pub struct Recovered {
    pub state: Machine,
    pub snapshot_position: Option<u64>,
    pub replayed_entries: u64,
    /// Whether the stored id tables given were installed; if not, they
    /// cover more than the state recovered from and must be rebuilt.
    pub ids_installed: bool,
}

/// What recovery may leave on disk.
#[derive(Default)]
pub struct Disk {
    /// Cold chunks: the snapshot is loaded lazily (the chunks that may go
    /// cold stay on disk, read through this) and later snapshots send
    /// stored chunks cold.
    pub cold: Option<Arc<ColdChunks>>,
    /// Stored id tables: ids below their coverage are not rebuilt in RAM.
    pub ids: Option<StoredIndexes>,
}

/// Recovers the state from the newest snapshot that verifies and the log.
pub fn recover(
    log: &FileLog,
    open: &OpenReport,
    store: &SnapshotStore,
    disk: Disk,
) -> Result<Recovered, RecoveryError> {
    let Disk { cold, mut ids } = disk;
    let wanted = ids.as_ref().map(StoredIndexes::covered);
    let loading = if cold.is_some() { Loading::Lazy } else { Loading::Whole };
    let reader = cold.map(|c| c as Arc<dyn ChunkReader>);
    let (mut sm, snapshot_position) = match store.load_latest_with(loading)? {
        Some(snapshot) => {
            let position = snapshot.position;
            if position > open.last_position {
                return Err(RecoveryError::SnapshotAhead { position, log_end: open.last_position });
            }
            // `first_position - 1` too: a log seeded after this snapshot
            // starts there, and its base chain must be the snapshot's.
            if position + 1 >= open.first_position {
                let chain = log.chain_at(position)?;
                if chain != snapshot.chain {
                    return Err(RecoveryError::ChainMismatch { position });
                }
            }
            let disk = OnDisk { chunks: reader.clone(), ids: ids.take() };
            let tried_ids = disk.ids.is_some();
            let sm = match restore_checked(snapshot, disk) {
                // Tables built from a newer snapshot that did not verify:
                // restore without them (they will be rebuilt).
                Err(RecoveryError::SnapshotInconsistent { source: DecodeError::StoredIdsAhead { .. }, .. })
                    if tried_ids =>
                {
                    tracing::warn!(position, "stored id tables are ahead of the snapshot; they will be rebuilt");
                    let again = store.load_with(position, loading)?;
                    restore_checked(again, OnDisk { chunks: reader.clone(), ids: None })?
                }
                restored => restored?,
            };
            (sm, Some(position))
        }
        None => {
            if open.last_position > 0 && open.first_position > 1 {
                return Err(RecoveryError::NoSnapshot { first: open.first_position });
            }
            (Machine::default(), None)
        }
    };
    let ids_installed = wanted.is_none_or(|w| sm.stored_covered() == w);
    if let Some(reader) = reader {
        sm.set_chunk_reader(reader);
    }
    let replayed = replay(log, &mut sm, open.last_position, |_| Ok::<(), RecoveryError>(()))?;
    Ok(Recovered { state: sm, snapshot_position, replayed_entries: replayed, ids_installed })
}

/// Restores a loaded snapshot and checks its digest.
fn restore_checked(snapshot: LoadedSnapshot, disk: OnDisk) -> Result<Machine, RecoveryError> {
    let position = snapshot.position;
    let digest = snapshot.digest;
    let sm = Machine::restore_with(Limits::default(), snapshot.chunks, disk)
        .map_err(|source| RecoveryError::SnapshotInconsistent { position, source })?;
    if sm.digest() != digest {
        return Err(RecoveryError::DigestMismatch { position });
    }
    Ok(sm)
}

/// Applies log entries after the state's position up to `until`. `after`
/// runs after each entry (verify uses it to compare snapshot digests); its
/// error type is the caller's, which holds every `RecoveryError`.
pub fn replay<E: From<RecoveryError>>(
    log: &FileLog,
    sm: &mut Machine,
    until: u64,
    mut after: impl FnMut(&Machine) -> Result<(), E>,
) -> Result<u64, E> {
    let mut count = 0;
    if sm.position() >= until {
        return Ok(0);
    }
    for entry in log.entries_from(sm.position() + 1) {
        let entry = entry.map_err(RecoveryError::from)?;
        if entry.position > until {
            break;
        }
        apply_logged(sm, entry.position, entry.timestamp, &entry.body)?;
        after(sm)?;
        count += 1;
    }
    if sm.position() != until {
        return Err(RecoveryError::ReplayStopped { stopped: sm.position(), until }.into());
    }
    Ok(count)
}

/// Applies one entry of the local log as the engine did: a cluster entry
/// the replicas refused is refused again (the same audit record), so the
/// state comes out the same. Returns the refusal's reason, if any.
///
/// A body that does not decode although its checksum is valid is an error
/// (it stops recovery): the local log only ever holds bodies this node
/// wrote or judged decodable, so such a body means a bug or tampering with
/// the files, and guessing past it could silently diverge from what was
/// acknowledged. The replicated log, which anyone with publish rights can
/// write to, is where refusing and going on is the rule (`bursar-cluster`).
pub fn apply_logged(
    sm: &mut Machine,
    position: u64,
    timestamp: u64,
    body: &[u8],
) -> Result<Option<RejectReason>, RecoveryError> {
    let entry = decode_entry(body).map_err(|source| RecoveryError::InvalidBody { position, source })?;
    match sm.apply_decoded(position, timestamp, &entry) {
        Ok(_) => Ok(None),
        Err(reason) => {
            tracing::warn!(position, reason = reason.name(), "replayed a refused cluster entry");
            Ok(Some(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bursar_log::FileLogOptions;

    /// A data dir holding a snapshot at 3 (chain `[5; 32]`) and a log
    /// seeded after position 3 with chain `seed`.
    fn seeded(seed: [u8; 32]) -> (tempfile::TempDir, FileLog, OpenReport, SnapshotStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = Machine::default();
        for position in 1..=3 {
            sm.apply_entry(position, 1_000 + position, &[]);
        }
        let mut store = SnapshotStore::open(dir.path()).unwrap();
        store.write(&sm.snapshot(), [5; 32]).unwrap();
        let (log, open) = FileLog::open_after(FileLogOptions::new(dir.path()), 3, seed).unwrap();
        (dir, log, open, store)
    }

    #[test]
    fn a_log_seeded_after_the_snapshot_recovers_from_it() {
        let (_dir, log, open, store) = seeded([5; 32]);
        let recovered = recover(&log, &open, &store, Disk::default()).unwrap();
        assert_eq!((recovered.snapshot_position, recovered.replayed_entries), (Some(3), 0));
        assert_eq!(recovered.state.position(), 3);
    }

    #[test]
    fn a_log_seeded_with_another_chain_is_refused() {
        let (_dir, log, open, store) = seeded([6; 32]);
        let err = recover(&log, &open, &store, Disk::default()).err().unwrap();
        assert!(err.to_string().contains("does not match the log's hash chain"), "{err}");
    }

    /// Stored tables that cover `covered` records and hold nothing.
    struct Empty(u64);

    impl bursar_core::state::StoredIds for Empty {
        fn covered(&self) -> u64 {
            self.0
        }
        fn find(&self, _: u128) -> Result<Option<u64>, bursar_core::state::ChunkReadError> {
            Ok(None)
        }
        fn memory_bytes(&self) -> u64 {
            0
        }
    }

    impl bursar_core::state::StoredLists for Empty {
        fn covered(&self) -> u64 {
            self.0
        }
        fn range(
            &self,
            _: u128,
            _: u64,
            _: u64,
            _: bool,
            _: usize,
        ) -> Result<Vec<(u64, u8)>, bursar_core::state::ChunkReadError> {
            Ok(Vec::new())
        }
        fn memory_bytes(&self) -> u64 {
            0
        }
    }

    fn tables(transfers: u64) -> Disk {
        let ids = StoredIndexes {
            transfers: Arc::new(Empty(transfers)),
            failed: Arc::new(Empty(0)),
            account_transfers: Arc::new(Empty(0)),
            account_history: Arc::new(Empty(0)),
            orders: Arc::new(bursar_core::orders::NoStoredOrders),
        };
        Disk { cold: None, ids: Some(ids) }
    }

    #[test]
    fn index_tables_ahead_of_the_snapshot_are_not_installed() {
        let (_dir, log, open, store) = seeded([5; 32]);
        // The snapshot holds no transfers; tables claiming 5 are ahead of it
        // (built from a newer snapshot that did not verify).
        let ahead = recover(&log, &open, &store, tables(5)).unwrap();
        assert!(!ahead.ids_installed, "the caller rebuilds them");
        assert_eq!(ahead.state.ledger().stored_covered(), [0; 4]);
        assert_eq!(ahead.state.position(), 3);
        let fitting = recover(&log, &open, &store, tables(0)).unwrap();
        assert!(fitting.ids_installed);
        assert_eq!(fitting.state.digest(), ahead.state.digest(), "tables never change the state");
    }
}

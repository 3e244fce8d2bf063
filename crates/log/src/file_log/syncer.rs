//! Group commit. `append` only writes into the page cache and bumps
//! `appended`; the syncer thread fdatasyncs the active segment and reports
//! the highest position that sync covered. Appends that arrive during one
//! fdatasync are all covered by the next one, so the fsync rate does not
//! limit the append rate.
//!
//! The syncer takes the (active file, appended position) pair under one lock,
//! so the position it reports is always inside the file it synced. Roll-over
//! fdatasyncs the old segment before publishing the new one, so older
//! segments never need the syncer again.
//!
//! After a failed fsync nothing is retried: the kernel may have dropped the
//! dirty pages and cleared the error, so a later "successful" fsync would
//! prove nothing. The log is marked failed, the callback gets the error, and
//! the engine is expected to crash and recover from disk.

use super::marker::Marker;
use crate::LogError;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// An fdatasync slower than this is logged: it delays every reply.
const SLOW_SYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// Called after each successful fdatasync with the highest durable position
/// (monotonic), or once with the error that stopped the log.
pub type DurableCallback = Box<dyn Fn(Result<u64, LogError>) + Send + Sync>;

/// The segment appends currently go to.
pub(crate) struct ActiveFile {
    pub file: File,
    pub path: PathBuf,
}

struct SyncState {
    active: Arc<ActiveFile>,
    appended: u64,
    synced: u64,
    failure: Option<String>,
    stop: bool,
}

/// State shared by the appending thread and the syncer.
pub(crate) struct Shared {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// Serializes fdatasyncs (syncer and roll-over) with the failure check:
    /// both share one file descriptor, and Linux reports a writeback error
    /// to only one fsync on it, so without this a roll-over's fsync could
    /// "succeed" right after the syncer's failed.
    sync_lock: Mutex<()>,
    marker: Marker,
}

enum Work {
    Sync,
    Failed(String),
    Stop,
}

impl Shared {
    /// `position` entries are already durable (recovery synced them).
    pub fn new(active: Arc<ActiveFile>, position: u64, marker: Marker) -> Shared {
        let state = SyncState { active, appended: position, synced: position, failure: None, stop: false };
        Shared { state: Mutex::new(state), wake: Condvar::new(), sync_lock: Mutex::new(()), marker }
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        // Nothing panics while holding the lock; a poisoned lock holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn check(&self) -> Result<(), LogError> {
        match &self.lock().failure {
            Some(reason) => Err(LogError::Failed { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Marks the log failed (first failure wins) and wakes the syncer so it
    /// reports it.
    pub fn fail(&self, reason: String) {
        let mut st = self.lock();
        st.failure.get_or_insert(reason);
        self.wake.notify_all();
    }

    pub fn appended(&self, position: u64) {
        let mut st = self.lock();
        assert_eq!(position, st.appended + 1, "invariant: the syncer learns of every entry, in order");
        st.appended = position;
        drop(st);
        self.wake.notify_one();
    }

    pub fn set_active(&self, active: Arc<ActiveFile>) {
        self.lock().active = active;
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    pub fn synced(&self) -> u64 {
        self.lock().synced
    }

    fn wait_for_work(&self) -> Work {
        let mut st = self.lock();
        loop {
            if let Some(reason) = &st.failure {
                return Work::Failed(reason.clone());
            }
            if st.appended > st.synced {
                return Work::Sync;
            }
            if st.stop {
                return Work::Stop;
            }
            st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// One synchronous group commit, for use when no syncer runs (close
    /// without start). Returns the durable position.
    pub fn sync_now(&self) -> Result<u64, LogError> {
        Ok(self.sync_once()?.unwrap_or_else(|| self.synced()))
    }

    /// Syncs if anything is unsynced; `Ok(None)` if there was nothing to do.
    /// Any failure marks the log failed.
    fn sync_once(&self) -> Result<Option<u64>, LogError> {
        let _serial = self.sync_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (active, target) = {
            let st = self.lock();
            if let Some(reason) = &st.failure {
                return Err(LogError::Failed { reason: reason.clone() });
            }
            if st.appended <= st.synced {
                return Ok(None);
            }
            (st.active.clone(), st.appended)
        };
        self.sync_file(&active)?;
        let mut st = self.lock();
        // Serialized by sync_lock, so nobody moved `synced` meanwhile: the
        // durable position only ever grows, as `on_durable` promises.
        assert!(target > st.synced, "invariant: durable position {target} does not pass {}", st.synced);
        assert!(target <= st.appended, "invariant: synced entries {target} were appended ({})", st.appended);
        st.synced = target;
        drop(st);
        if let Err(e) = self.marker.write(target) {
            self.fail(e.to_string());
            return Err(e);
        }
        Ok(Some(target))
    }

    /// fdatasyncs a segment that is about to be sealed (roll-over), unless
    /// the log already failed. A failure marks the log failed.
    pub fn sync_sealed(&self, segment: &ActiveFile) -> Result<(), LogError> {
        let _serial = self.sync_lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.check()?;
        self.sync_file(segment)
    }

    fn sync_file(&self, segment: &ActiveFile) -> Result<(), LogError> {
        let started = std::time::Instant::now();
        segment.file.sync_data().map_err(|e| {
            let err = LogError::io(&segment.path, e);
            self.fail(format!("fdatasync failed: {err}"));
            err
        })?;
        let took = started.elapsed();
        metrics::histogram!("bursar_log_fsync_seconds").record(took.as_secs_f64());
        if took > SLOW_SYNC {
            tracing::warn!(ms = took.as_millis() as u64, file = %segment.path.display(), "slow fdatasync");
        }
        Ok(())
    }
}

/// Marks the log failed if the syncer thread unwinds (say, the callback
/// panicked), so appends stop instead of waiting forever for durability.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("the log's syncer thread panicked".into());
        }
    }
}

/// The syncer thread's body.
pub(crate) fn run(shared: Arc<Shared>, on_durable: DurableCallback) {
    let _guard = PanicGuard(&shared);
    loop {
        match shared.wait_for_work() {
            Work::Stop => return,
            Work::Failed(reason) => return on_durable(Err(LogError::Failed { reason })),
            Work::Sync => {}
        }
        match shared.sync_once() {
            Ok(Some(position)) => on_durable(Ok(position)),
            Ok(None) => {}
            Err(e) => return on_durable(Err(e)),
        }
    }
}

//! Background snapshots. The engine hands over a frozen view (O(chunks) to
//! take) every `every_bytes` of log; this thread waits until the log is
//! durable up to the snapshot's position (a snapshot must never get ahead of
//! the log), writes it, and prunes old ones. A failed snapshot is logged,
//! not fatal: the log stays the source of truth.
//!
//! Log retention: after a snapshot is written and old ones pruned, this
//! thread publishes the oldest snapshot kept (`retained`). Entries at or
//! below it are never needed by recovery (which falls back at most to that
//! snapshot), so the engine thread, which owns the log, removes the
//! segments below it (`log_removable`), at its next pass (a tick at the
//! latest). At start the oldest snapshot already kept is published too.
//! With `--log-retain` nothing is published and the log keeps every
//! segment.
//!
//! Cold chunks: after a write, the written view and where each of its
//! chunks now is go back to the engine (`take_stored`), which lets the full
//! chunks the store now holds leave RAM (`Machine::release_stored`). The
//! view is handed back, not just the hashes, because holding it keeps the
//! chunks shared until then: the state copies a shared chunk before writing
//! it, so a chunk still being the view's allocation has the stored bytes.

use crate::gate::Gate;
use crate::limits::SNAPSHOTS_KEPT;
use crate::replication::SnapshotWritten;
use bursar_core::machine::{Machine, MachineSnapshot};
use bursar_core::state::StoredChunk;
use bursar_log::SnapshotStore;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

struct Job {
    snapshot: MachineSnapshot,
    chain: [u8; 32],
}

/// A written snapshot's view and where its chunks are, per section.
pub struct Stored {
    pub snapshot: MachineSnapshot,
    pub chunks: Vec<Vec<StoredChunk>>,
}

/// The newest written snapshot the engine has not taken yet.
type StoredSlot = Arc<Mutex<Option<Stored>>>;

pub struct SnapshotTrigger {
    every_bytes: Option<u64>,
    since_last: u64,
    last_position: u64,
    busy: Arc<AtomicBool>,
    /// The oldest snapshot kept, published by the snapshot thread (0: none
    /// yet); `None` when the log keeps every segment (`--log-retain`).
    retained: Option<Arc<AtomicU64>>,
    /// The `retained` value the engine last acted on.
    removed_up_to: u64,
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    stored: StoredSlot,
}

impl SnapshotTrigger {
    /// `every_bytes`: log bytes between snapshots; `None` only on shutdown.
    /// `written` runs after each snapshot is written (cluster mode uploads it).
    pub fn start(
        store: SnapshotStore,
        gate: Arc<Gate>,
        every_bytes: Option<u64>,
        last_position: u64,
        written: Option<SnapshotWritten>,
        log_retain: bool,
    ) -> SnapshotTrigger {
        let (tx, rx) = sync_channel(1);
        let busy = Arc::new(AtomicBool::new(false));
        let retained = (!log_retain).then(|| Arc::new(AtomicU64::new(0)));
        let (flag, oldest) = (busy.clone(), retained.clone());
        let stored = StoredSlot::default();
        let out = Outputs { busy: flag, written, retained: oldest, stored: stored.clone() };
        let thread = std::thread::Builder::new()
            .name("bursar-snapshot".into())
            .spawn(move || write_loop(store, gate, rx, out))
            .expect("spawning the snapshot thread");
        let tx = Some(tx);
        let thread = Some(thread);
        SnapshotTrigger {
            every_bytes,
            since_last: 0,
            last_position,
            busy,
            retained,
            removed_up_to: 0,
            tx,
            thread,
            stored,
        }
    }

    /// The newest snapshot written since the last call, with where its
    /// chunks are (see the module docs).
    pub fn take_stored(&mut self) -> Option<Stored> {
        self.stored.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// The position the log may drop the segments below (the oldest
    /// retained snapshot + 1), once each time the snapshot thread publishes
    /// a newer one; `None` otherwise or with `--log-retain`. One atomic load:
    /// cheap enough for every pass of the engine loop.
    pub fn log_removable(&mut self) -> Option<u64> {
        let oldest = self.retained.as_ref()?.load(Ordering::Acquire);
        if oldest <= self.removed_up_to {
            return None;
        }
        self.removed_up_to = oldest;
        Some(oldest + 1)
    }

    /// Counts log bytes written since the last snapshot.
    pub fn logged(&mut self, bytes: u64) {
        self.since_last += bytes;
    }

    /// Takes a snapshot if enough was logged and no snapshot is being written.
    pub fn maybe_take(&mut self, sm: &Machine, chain: impl FnOnce() -> [u8; 32]) {
        let due = self.every_bytes.is_some_and(|every| self.since_last >= every);
        if !due || self.busy.load(Ordering::Acquire) || sm.position() == self.last_position {
            return;
        }
        self.busy.store(true, Ordering::Release);
        self.send(Job { snapshot: sm.snapshot(), chain: chain() });
    }

    /// On shutdown: snapshot whatever is newer than the last snapshot.
    pub fn take_final(&mut self, sm: &Machine, chain: [u8; 32]) {
        if sm.position() > self.last_position {
            self.send(Job { snapshot: sm.snapshot(), chain });
        }
    }

    fn send(&mut self, job: Job) {
        self.last_position = bursar_core::state::Snapshot::position(&job.snapshot);
        self.since_last = 0;
        if let Some(tx) = &self.tx {
            // Blocks only if a final snapshot queues behind a running one.
            let _ = tx.send(job);
        }
    }

    /// Waits for queued snapshots to be written.
    pub fn join(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publishes the oldest snapshot the store keeps (after a prune). A listing
/// that fails publishes nothing: the log then keeps its segments.
fn publish_oldest(store: &SnapshotStore, retained: &AtomicU64) {
    match store.list() {
        Ok(positions) => {
            if let Some(oldest) = positions.first() {
                retained.fetch_max(*oldest, Ordering::AcqRel);
            }
        }
        Err(e) => tracing::warn!("listing snapshots failed; the log keeps its old segments: {e}"),
    }
}

/// What the snapshot thread reports back.
struct Outputs {
    busy: Arc<AtomicBool>,
    /// Runs after each write (cluster mode uploads the snapshot).
    written: Option<SnapshotWritten>,
    retained: Option<Arc<AtomicU64>>,
    stored: StoredSlot,
}

fn write_loop(mut store: SnapshotStore, gate: Arc<Gate>, rx: Receiver<Job>, out: Outputs) {
    let Outputs { busy, written, retained, stored } = out;
    // The snapshots kept from an earlier run count too: a restart removes
    // what that run's last removal did not get to.
    if let Some(retained) = &retained {
        publish_oldest(&store, retained);
    }
    for job in rx {
        let position = bursar_core::state::Snapshot::position(&job.snapshot);
        if !gate.wait_durable(position) {
            tracing::error!(position, "log failed; snapshot not written");
            return;
        }
        let started = std::time::Instant::now();
        match store.write(&job.snapshot, job.chain) {
            Ok(info) => {
                metrics::histogram!("bursar_snapshot_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("bursar_snapshot_bytes_total").increment(info.bytes_written);
                metrics::gauge!("bursar_snapshot_position").set(position as f64);
                tracing::info!(
                    position,
                    chunks_written = info.chunks_written,
                    chunks_reused = info.chunks_reused,
                    bytes_written = info.bytes_written,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot written"
                );
                if let Err(e) = store.prune(SNAPSHOTS_KEPT) {
                    tracing::warn!("pruning old snapshots failed: {e}");
                }
                if let Some(retained) = &retained {
                    publish_oldest(&store, retained);
                }
                if let Some(written) = &written {
                    written(position);
                }
                let view = Stored { snapshot: job.snapshot, chunks: info.stored };
                *stored.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(view);
            }
            Err(e) => {
                tracing::error!(position, "writing a snapshot failed (the log still has everything): {e}");
                drop(job);
            }
        }
        busy.store(false, Ordering::Release);
    }
}

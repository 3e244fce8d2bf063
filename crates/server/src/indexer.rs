//! Stored id tables: the indexer thread builds them from history that a
//! durable snapshot already holds and hands them to the engine.
//!
//! The state machine keeps ids in RAM generations (`core::state::ids`), one
//! started at each snapshot. After a snapshot is written, the engine passes
//! its view here; this thread reads the ids of the transfers and failed ids
//! the tables do not cover yet (cold chunks are read through the block
//! cache), sorts them in runs of at most `RUN_ENTRIES_MAX`, and adds each
//! run as a table (`store::tiers`), which also records how far the tables
//! now cover. It then merges tables of similar size, and publishes the new
//! coverage; the engine installs it (`Machine::install_stored_ids`) and
//! the generations the tables cover drop out of RAM.
//!
//! Nothing here is part of the state: answers are the same whichever part
//! holds an id, and a crash anywhere leaves the tables either before or
//! after a run (the tiers' manifest commit), which recovery installs as
//! they are. If the tables cover more than the snapshot recovery starts
//! from (a damaged newest snapshot), they are discarded and rebuilt.

use crate::limits::{INDEX_RUN_ENTRIES_MAX, INDEXER_QUEUE_MAX};
use bursar_core::machine::MachineSnapshot;
use bursar_core::state::{ChunkReadError, StateSnapshot, StoredIds, StoredIndexes};
use bursar_store::StoreError;
use bursar_store::cache::BlockCache;
use bursar_store::tiers::Tiers;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The indexes' directory inside the data dir.
pub const INDEX_DIR: &str = "index";
const TRANSFER_IDS: &str = "transfer-ids";
const FAILED_IDS: &str = "failed-ids";

/// Id → position tables of one kind of record.
type IdTables = Tiers<u128, u64>;

/// The stored ids the state reads: the tables, and the coverage they had
/// when handed over (the tables may cover more by the time they are read;
/// they hold the same answers for what they cover).
struct Installed {
    tables: Arc<IdTables>,
    covered: u64,
}

impl StoredIds for Installed {
    fn covered(&self) -> u64 {
        self.covered
    }

    fn find(&self, id: u128) -> Result<Option<u64>, ChunkReadError> {
        let found = self.tables.get(&id).map_err(|e| Box::new(e) as ChunkReadError)?;
        Ok(found.filter(|p| *p < self.covered))
    }

    fn memory_bytes(&self) -> u64 {
        self.tables.memory_bytes()
    }
}

/// The transfer-id and failed-id tables of a data directory.
#[derive(Clone)]
pub struct IdStores {
    transfers: Arc<IdTables>,
    failed: Arc<IdTables>,
    dir: PathBuf,
}

impl IdStores {
    /// Opens (or creates) the tables under `<data_dir>/index`.
    pub fn open(data_dir: &Path, cache: Arc<BlockCache>) -> Result<IdStores, StoreError> {
        let dir = data_dir.join(INDEX_DIR);
        let transfers = Arc::new(Tiers::open(&dir, TRANSFER_IDS, cache.clone())?);
        let failed = Arc::new(Tiers::open(&dir, FAILED_IDS, cache)?);
        Ok(IdStores { transfers, failed, dir })
    }

    /// Removes every table and opens the stores empty: the tables covered
    /// more than the state recovery started from.
    pub fn reset(self, cache: Arc<BlockCache>) -> Result<IdStores, StoreError> {
        let IdStores { transfers, failed, dir } = self;
        drop((transfers, failed));
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StoreError::io(&dir, e)),
            _ => {}
        }
        let data_dir = dir.parent().expect("invariant: the index dir is inside the data dir").to_path_buf();
        IdStores::open(&data_dir, cache)
    }

    /// What the state installs: the tables with their current coverage.
    pub fn installed(&self) -> StoredIndexes {
        let part = |t: &Arc<IdTables>| Arc::new(Installed { tables: t.clone(), covered: t.covered() });
        StoredIndexes { transfers: part(&self.transfers), failed: part(&self.failed) }
    }

    /// Adds runs for everything `view` holds beyond the tables' coverage,
    /// then merges tables. Returns whether anything was added.
    fn catch_up(&self, view: &StateSnapshot) -> Result<bool, StoreError> {
        let t = add_runs(&self.transfers, view.transfer_count(), |from| view.transfer_ids(from))?;
        let f = add_runs(&self.failed, view.failed_count(), |from| view.failed_ids(from))?;
        for tables in [&self.transfers, &self.failed] {
            while let Some(plan) = tables.compaction() {
                plan.run(tables)?;
            }
        }
        Ok(t || f)
    }
}

/// Adds sorted runs of at most `INDEX_RUN_ENTRIES_MAX` ids from the
/// tables' coverage up to `end`.
fn add_runs<I: Iterator<Item = (u128, u64)>>(
    tables: &IdTables,
    end: u64,
    ids_from: impl Fn(u64) -> I,
) -> Result<bool, StoreError> {
    let start = tables.covered();
    if start >= end {
        return Ok(false);
    }
    let mut ids = ids_from(start);
    let mut from = start;
    while from < end {
        let to = (from + INDEX_RUN_ENTRIES_MAX as u64).min(end);
        let mut run: Vec<(u128, u64)> = ids.by_ref().take((to - from) as usize).collect();
        assert_eq!(run.len() as u64, to - from, "invariant: the view holds every record below its count");
        run.sort_unstable_by_key(|(id, _)| *id);
        debug_assert!(run.windows(2).all(|w| w[0].0 < w[1].0), "invariant: ids are unique");
        let count = run.len() as u64;
        tables.add_run(run.into_iter(), count, to)?;
        from = to;
    }
    assert_eq!(tables.covered(), end, "invariant: the runs cover the view");
    Ok(true)
}

/// The indexer thread and its hand-over slot.
pub struct Indexer {
    tx: Option<SyncSender<MachineSnapshot>>,
    thread: Option<JoinHandle<()>>,
    ready: Arc<Mutex<Option<StoredIndexes>>>,
}

impl Indexer {
    pub fn start(stores: IdStores) -> std::io::Result<Indexer> {
        let (tx, rx) = sync_channel(INDEXER_QUEUE_MAX);
        let ready = Arc::new(Mutex::new(None));
        let out = ready.clone();
        let thread = std::thread::Builder::new().name("bursar-indexer".into()).spawn(move || run(stores, rx, out))?;
        Ok(Indexer { tx: Some(tx), thread: Some(thread), ready })
    }

    /// Hands over a written snapshot's view; dropped if the indexer is
    /// still busy (the next snapshot covers the same and more).
    pub fn offer(&self, view: MachineSnapshot) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Disconnected(_)) = tx.try_send(view)
        {
            tracing::warn!("the indexer stopped; ids stay in memory");
        }
    }

    /// Stored ids newer than the last taken, for the engine to install.
    pub fn take_ready(&self) -> Option<StoredIndexes> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Stops the thread after the view it is working on.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(stores: IdStores, rx: Receiver<MachineSnapshot>, ready: Arc<Mutex<Option<StoredIndexes>>>) {
    for view in rx {
        let started = std::time::Instant::now();
        match stores.catch_up(view.ledger()) {
            Ok(false) => {}
            Ok(true) => {
                metrics::histogram!("bursar_indexer_seconds").record(started.elapsed().as_secs_f64());
                *ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(stores.installed());
            }
            // The state keeps the ids in memory meanwhile: nothing is lost,
            // RAM grows until a later run succeeds.
            Err(e) => tracing::error!("building stored id tables failed; ids stay in memory: {e}"),
        }
    }
}

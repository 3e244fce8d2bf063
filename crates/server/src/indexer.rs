//! Stored index tables: the indexer thread builds them from history that a
//! durable snapshot already holds and hands them to the engine.
//!
//! The state machine keeps recent ids (`core::state::ids`) and recent
//! entries of accounts' lists (`core::state::lists`) in RAM. After a
//! snapshot is written, the engine passes its view here; this thread reads
//! the records the tables do not cover yet (cold chunks come through the
//! block cache), sorts their keys in runs of at most
//! `INDEX_RUN_ENTRIES_MAX`, and adds each run as a table (`store::tiers`),
//! which also records how far the tables now cover. Six sets of tables:
//! transfer id → position, failed id → position, (account id, transfer
//! position) → side, (account id, balance record position), and for final
//! orders (`core::orders::finals`) (0, id) → index and (state, id) →
//! index, in one set so that one coverage holds for both. It then merges
//! tables of similar size and publishes the new coverage; the engine
//! installs it (`Machine::install_stored_ids`) and what the tables cover
//! drops out of RAM.
//!
//! Nothing here is part of the state: answers are the same whichever part
//! holds an id, and a crash anywhere leaves the tables either before or
//! after a run (the tiers' manifest commit), which recovery installs as
//! they are. If the tables cover more than the snapshot recovery starts
//! from (a damaged newest snapshot), they are discarded and rebuilt.

use crate::limits::{INDEX_RUN_ENTRIES_MAX, INDEXER_NICE, INDEXER_QUEUE_MAX};
use bursar_core::machine::MachineSnapshot;
use bursar_core::orders::StoredOrders;
use bursar_core::state::{ChunkReadError, SIDE_CREDIT, SIDE_DEBIT, StoredIds, StoredIndexes, StoredLists};
use bursar_store::StoreError;
use bursar_store::cache::BlockCache;
use bursar_store::table::Lookups;
use bursar_store::tiers::Tiers;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The indexes' directory inside the data dir.
pub const INDEX_DIR: &str = "index";
const TRANSFER_IDS: &str = "transfer_ids";
const FAILED_IDS: &str = "failed_ids";
const TRANSFER_LISTS: &str = "transfer_lists";
const BALANCE_LISTS: &str = "balance_lists";
const FINAL_ORDERS: &str = "final_orders";

/// Id → position tables of one kind of record.
type IdTables = Tiers<u128, u64>;
/// (account id high, low, record position) → tag tables of one kind of
/// list (arrays of `u64` order lexicographically, as the tuple would).
type ListTables = Tiers<[u64; 3], u8>;

/// (state or 0, order id high, low) → final-order index tables: state 0
/// lists every final order by id, and answers lookups.
type OrderTables = Tiers<[u64; 3], u64>;

fn list_key(account: u128, position: u64) -> [u64; 3] {
    [(account >> 64) as u64, account as u64, position]
}

fn order_key(state: u8, id: u128) -> [u64; 3] {
    [u64::from(state), (id >> 64) as u64, id as u64]
}

/// The stored ids the state reads: the tables, and the coverage they had
/// when handed over (the tables may cover more by the time they are read;
/// they hold the same answers for what they cover).
struct Installed {
    tables: Arc<IdTables>,
    covered: u64,
    /// The key range of the tables when installed: an id outside it is not
    /// among the covered records, answered without touching the tables
    /// (new ids that grow with time all are).
    bounds: Option<(u128, u128)>,
}

impl StoredIds for Installed {
    fn covered(&self) -> u64 {
        self.covered
    }

    fn find(&self, id: u128) -> Result<Option<u64>, ChunkReadError> {
        if !self.bounds.is_some_and(|(min, max)| (min..=max).contains(&id)) {
            return Ok(None);
        }
        let found = self.tables.get(&id).map_err(|e| Box::new(e) as ChunkReadError)?;
        Ok(found.filter(|p| *p < self.covered))
    }

    fn memory_bytes(&self) -> u64 {
        self.tables.memory_bytes()
    }
}

/// Stored lists as the state reads them (see `Installed`).
struct InstalledLists {
    tables: Arc<ListTables>,
    covered: u64,
}

impl StoredLists for InstalledLists {
    fn covered(&self) -> u64 {
        self.covered
    }

    fn range(
        &self,
        account: u128,
        lo: u64,
        hi: u64,
        reversed: bool,
        limit: usize,
    ) -> Result<Vec<(u64, u8)>, ChunkReadError> {
        if lo >= hi.min(self.covered) {
            return Ok(Vec::new());
        }
        let (first, last) = (list_key(account, lo), list_key(account, hi.min(self.covered) - 1));
        let found = self.tables.range(first, last, reversed, limit).map_err(|e| Box::new(e) as ChunkReadError)?;
        Ok(found.into_iter().map(|(k, tag)| (k[2], tag)).collect())
    }

    fn memory_bytes(&self) -> u64 {
        self.tables.memory_bytes()
    }
}

/// Stored final orders as the state reads them (see `Installed`).
struct InstalledOrders {
    tables: Arc<OrderTables>,
    covered: u64,
}

impl StoredOrders for InstalledOrders {
    fn covered(&self) -> u64 {
        self.covered
    }

    fn find(&self, id: u128) -> Result<Option<u64>, ChunkReadError> {
        let found = self.tables.get(&order_key(0, id)).map_err(|e| Box::new(e) as ChunkReadError)?;
        Ok(found.filter(|i| *i < self.covered))
    }

    fn page(&self, state: u8, after: u128, limit: usize) -> Result<Vec<(u128, u64)>, ChunkReadError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let (lo, hi) = (order_key(state, first), order_key(state, u128::MAX));
        let rows = self.tables.range(lo, hi, false, limit).map_err(|e| Box::new(e) as ChunkReadError)?;
        Ok(rows.into_iter().map(|(k, index)| ((u128::from(k[1]) << 64) | u128::from(k[2]), index)).collect())
    }

    fn memory_bytes(&self) -> u64 {
        self.tables.memory_bytes()
    }
}

/// The index tables of a data directory.
#[derive(Clone)]
pub struct IdStores {
    transfers: Arc<IdTables>,
    failed: Arc<IdTables>,
    transfer_lists: Arc<ListTables>,
    balance_lists: Arc<ListTables>,
    final_orders: Arc<OrderTables>,
    dir: PathBuf,
    /// The tables were removed to be rebuilt.
    rebuilt: bool,
}

impl IdStores {
    /// Opens (or creates) the tables under `<data_dir>/index`. Tables that
    /// cannot be opened at all are removed and rebuilt: they are derived
    /// from the snapshots, never the only copy of anything.
    pub fn open(data_dir: &Path, cache: Arc<BlockCache>) -> Result<IdStores, StoreError> {
        let dir = data_dir.join(INDEX_DIR);
        match Self::open_in(&dir, &cache) {
            Ok(stores) => Ok(stores),
            Err(e) => {
                tracing::warn!("the index tables cannot be opened; they are rebuilt: {e}");
                remove_dir(&dir)?;
                Ok(IdStores { rebuilt: true, ..Self::open_in(&dir, &cache)? })
            }
        }
    }

    fn open_in(dir: &Path, cache: &Arc<BlockCache>) -> Result<IdStores, StoreError> {
        let ranges = Lookups::RangesOnly;
        Ok(IdStores {
            // One directory per set: each has its own manifests.
            transfers: Arc::new(Tiers::open(&dir.join(TRANSFER_IDS), TRANSFER_IDS, cache.clone())?),
            failed: Arc::new(Tiers::open(&dir.join(FAILED_IDS), FAILED_IDS, cache.clone())?),
            // Lists are only read by ranges: their filters stay on disk.
            transfer_lists: Arc::new(Tiers::open_for(
                &dir.join(TRANSFER_LISTS),
                TRANSFER_LISTS,
                cache.clone(),
                ranges,
            )?),
            balance_lists: Arc::new(Tiers::open_for(&dir.join(BALANCE_LISTS), BALANCE_LISTS, cache.clone(), ranges)?),
            final_orders: Arc::new(Tiers::open(&dir.join(FINAL_ORDERS), FINAL_ORDERS, cache.clone())?),
            dir: dir.to_path_buf(),
            rebuilt: false,
        })
    }

    /// Removes every table and opens the stores empty: the tables covered
    /// more than the state recovery started from.
    pub fn reset(self, cache: Arc<BlockCache>) -> Result<IdStores, StoreError> {
        let dir = self.dir.clone();
        drop(self);
        remove_dir(&dir)?;
        Ok(IdStores { rebuilt: true, ..Self::open_in(&dir, &cache)? })
    }

    /// Whether the tables were removed to be rebuilt.
    pub fn rebuilt(&self) -> bool {
        self.rebuilt
    }

    /// What the state installs: the tables with their current coverage.
    pub fn installed(&self) -> StoredIndexes {
        let ids = |t: &Arc<IdTables>| {
            // Coverage before bounds: a run added in between only widens
            // the bounds, never hides a covered id.
            let covered = t.covered();
            Arc::new(Installed { tables: t.clone(), covered, bounds: t.key_bounds() })
        };
        let orders = InstalledOrders { tables: self.final_orders.clone(), covered: self.final_orders.covered() };
        let lists = |t: &Arc<ListTables>| Arc::new(InstalledLists { tables: t.clone(), covered: t.covered() });
        StoredIndexes {
            transfers: ids(&self.transfers),
            failed: ids(&self.failed),
            account_transfers: lists(&self.transfer_lists),
            account_history: lists(&self.balance_lists),
            orders: Arc::new(orders),
        }
    }

    /// Adds runs for everything `view` holds beyond the tables' coverage,
    /// then merges tables. Returns whether anything was added.
    fn catch_up(&self, machine: &MachineSnapshot) -> Result<bool, StoreError> {
        let view = machine.ledger();
        let transfer_sides = |from| {
            view.transfers_from(from).flat_map(|(t, p)| {
                [(list_key(t.debit_account_id, p), SIDE_DEBIT), (list_key(t.credit_account_id, p), SIDE_CREDIT)]
            })
        };
        let added = [
            add_runs(&self.transfers, view.transfer_count(), 1, |from| view.transfer_ids(from))?,
            add_runs(&self.failed, view.failed_count(), 1, |from| view.failed_ids(from))?,
            add_runs(&self.transfer_lists, view.transfer_count(), 2, transfer_sides)?,
            add_runs(&self.balance_lists, view.balance_record_count(), 1, |from| {
                view.balance_records_from(from).map(|(r, p)| (list_key(r.account_id, p), 0u8))
            })?,
            add_runs(&self.final_orders, machine.final_order_count(), 2, |from| {
                machine
                    .final_orders_from(from)
                    .flat_map(|(r, i)| [(order_key(0, r.id), i), (order_key(r.state, r.id), i)])
            })?,
        ];
        compact(&self.transfers)?;
        compact(&self.failed)?;
        compact(&self.transfer_lists)?;
        compact(&self.balance_lists)?;
        compact(&self.final_orders)?;
        Ok(added.contains(&true))
    }
}

fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(dir, e)),
        _ => Ok(()),
    }
}

/// Merges tables of similar size until none are left to merge.
fn compact<K, V>(tables: &Tiers<K, V>) -> Result<(), StoreError>
where
    K: bytemuck::Pod + Ord + Send + Sync,
    V: bytemuck::Pod + Send + Sync,
{
    while let Some(plan) = tables.compaction() {
        if !plan.run(tables)? {
            break;
        }
    }
    Ok(())
}

/// Adds sorted runs from the tables' coverage up to `end` (record
/// positions); `per_record` keys per record, at most
/// `INDEX_RUN_ENTRIES_MAX` keys per run.
fn add_runs<K, V, I>(
    tables: &Tiers<K, V>,
    end: u64,
    per_record: u64,
    from: impl Fn(u64) -> I,
) -> Result<bool, StoreError>
where
    K: bytemuck::Pod + Ord + Send + Sync,
    V: bytemuck::Pod + Send + Sync,
    I: Iterator<Item = (K, V)>,
{
    let start = tables.covered();
    if start >= end {
        return Ok(false);
    }
    let mut entries = from(start);
    let records_per_run = (INDEX_RUN_ENTRIES_MAX as u64 / per_record).max(1);
    let mut at = start;
    while at < end {
        let to = (at + records_per_run).min(end);
        let want = ((to - at) * per_record) as usize;
        let mut run: Vec<(K, V)> = entries.by_ref().take(want).collect();
        assert_eq!(run.len(), want, "invariant: the view holds every record below its count");
        run.sort_unstable_by_key(|e| e.0);
        debug_assert!(run.windows(2).all(|w| w[0].0 < w[1].0), "invariant: keys are unique");
        tables.add_run(run, want as u64, to)?;
        at = to;
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

/// The indexer works behind the engine: on a machine with few cores it
/// takes what the engine leaves rather than delay entries. Failing to
/// lower it only costs speed.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority on this thread's own id take no
        // pointers and change only this thread's scheduling.
        let done = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, INDEXER_NICE)
        };
        if done != 0 {
            tracing::debug!("the indexer thread keeps its priority: {}", std::io::Error::last_os_error());
        }
    }
}

fn run(stores: IdStores, rx: Receiver<MachineSnapshot>, ready: Arc<Mutex<Option<StoredIndexes>>>) {
    lower_priority();
    for view in rx {
        let started = std::time::Instant::now();
        match stores.catch_up(&view) {
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

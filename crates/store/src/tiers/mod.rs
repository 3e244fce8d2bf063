//! Tiers: an index kept on disk as a set of immutable sorted tables, an
//! LSM tree without a memtable. The caller (the state machine's indexes:
//! transfer id to position, failed ids, account to its transfers) keeps
//! the recent part in RAM and hands over, at each checkpoint, a sorted run
//! of records that the log already holds; this module stores runs as
//! tables, answers reads across all of them and merges them in the
//! background, so that memory holds only the tables' sparse indexes and
//! filters (~2.3 bytes per key), not the history.
//!
//! Design:
//! - One directory per set: tables `<name>-<number>.bst` and the manifests
//!   (`manifest.rs`) that commit which tables are live, with `covered`, the
//!   caller's opaque mark of what the tables hold (records below a log
//!   position), as the manifest's position. Table numbers are never
//!   reused: the body records the next one, and open also skips past every
//!   table file it finds.
//! - Keys are unique across tables (the caller's contract: a run holds
//!   only keys no earlier run held). So no table shadows another, a `get`
//!   stops at the first table holding the key, and a merge never resolves
//!   two values (it asserts so).
//! - The live set is an `Arc` swapped under a lock held for a pointer copy:
//!   a reader takes the current set and reads it to the end with no lock,
//!   while `add_run` or a compaction writes a new table and commits; the
//!   swap comes after the commit, so readers see the old set until the
//!   new one is durable, then the new one. A replaced table stays readable
//!   for readers still holding it (an unlinked file stays open).
//! - Size-tiered compaction (`compaction`, `CompactionPlan::run`): up to
//!   `TIERS_MERGE_INPUTS_MAX` tables within a size factor of each other,
//!   the smallest such group first, merged with no lock held; the commit
//!   replaces exactly the inputs, or gives up if one is gone (a concurrent
//!   plan took it) and deletes its output. Each entry is rewritten about
//!   once per factor of 4 of growth; tables stop growing at
//!   `TIERS_TABLE_ENTRIES_MAX` (writing a table needs all its keys' hashes
//!   in memory for the filter).
//!
//! Crash safety: a commit is (1) write each new table and fsync it, (2)
//! fsync the directory, (3) write, fsync and rename the manifest, fsync
//! the directory (`Manifests::commit`), (4) delete files no retained
//! manifest names. A crash before the rename of (3) leaves the previous
//! manifest in charge and the new tables unnamed: garbage, deleted by the
//! next open. After it, the new manifest names only synced tables. The
//! deletions of (4) touch only files no retained manifest names (nor a
//! table being written now), so a crash among them leaves garbage the next
//! open deletes. The state after any crash is the one before or the one
//! after the operation, never a mix. Two manifests are kept: if the newest
//! is damaged, or a table it names is (or is missing), it is set aside
//! (`.damaged`), the previous one is used, and `recovery()` says so; its
//! `covered` is lower, and the caller adds again what it misses. With no
//! intact manifest left but damaged ones set aside, open refuses rather
//! than start empty: an empty index would accept duplicate ids.
//!
//! Cost of a read: `get` checks each table's key range (two comparisons),
//! then its filter (a hash and three memory reads, 1 in ~65,000 false
//! positives), newest table first, and reads one data block (through the
//! block cache) only from a table that may hold the key: a new id almost
//! never touches the disk, and one above every table's range (ids that
//! grow with time) not even a filter. `range` reads at most one data
//! block per table whose key range meets the bounds, opening a table only
//! once the merge reaches its key range, then one more each time a
//! table's block is used up: O(limit + tables) blocks, never a table's
//! size, and for tables of disjoint key ranges only the blocks returned.

mod catalog;
mod compact;
mod open;
mod read;
mod write;

pub use compact::CompactionPlan;

use crate::cache::BlockCache;
use crate::error::StoreError;
use crate::manifest::Manifests;
use crate::table::{Lookups, Table};
use bytemuck::Pod;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A durable set of tables answering as one sorted map. `Send + Sync`:
/// reads run on any thread beside `add_run` and a compaction.
pub struct Tiers<K, V> {
    dir: PathBuf,
    name: String,
    cache: Arc<BlockCache>,
    /// How its tables are opened (filters in RAM or not).
    lookups: Lookups,
    live: RwLock<Arc<Live<K, V>>>,
    writer: Mutex<Writer>,
    /// Held through a whole `add_run`: runs commit in the order they come.
    adding: Mutex<()>,
    recovery: Recovery,
    counters: Counters,
    hook: RwLock<Option<StepHook>>,
}

/// One live table and its number.
struct Tier<K, V> {
    number: u64,
    table: Table<K, V>,
}

/// The tables a reader sees: those the newest commit names, oldest first.
struct Live<K, V> {
    tables: Vec<Arc<Tier<K, V>>>,
    covered: u64,
}

/// What commits change, under one lock.
struct Writer {
    manifests: Manifests,
    next_number: u64,
    /// Numbers of tables being written: not garbage, though unnamed.
    in_flight: BTreeSet<u64>,
}

/// What `open` found and did, for the caller's log.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The sequence of the manifest in use (None: an empty set).
    pub manifest: Option<u64>,
    /// Damage found, newest first: manifests that failed their checks, or
    /// tables a manifest names that did (that manifest was then set aside
    /// and an older one used).
    pub damaged: Vec<StoreError>,
    /// Files deleted as garbage: tables no retained manifest names.
    pub removed: Vec<PathBuf>,
}

impl Recovery {
    /// True if open found damage: a manifest it set aside, or a table that
    /// made it use an older manifest than the newest.
    pub fn fell_back(&self) -> bool {
        !self.damaged.is_empty()
    }
}

/// Where an operation is, for crash tests: called after each step that
/// changes the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A table file was created (empty, or partly written).
    TableCreated,
    /// A table file was written in full and fsynced.
    TableWritten,
    /// The directory was fsynced after the tables were written.
    TablesSynced,
    /// The manifest naming the new set was committed.
    Committed,
    /// A garbage file was deleted.
    GarbageRemoved,
    /// An abandoned compaction's output was deleted.
    OutputRemoved,
}

/// A hook called at each `Step` (crash tests copy the directory there).
pub type StepHook = Arc<dyn Fn(Step) + Send + Sync>;

/// Counters for the gauges, summed over every `get`.
#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    range_skips: AtomicU64,
    filter_skips: AtomicU64,
    table_reads: AtomicU64,
    false_positives: AtomicU64,
}

/// What `stats` shows of the lookups so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TiersStats {
    pub gets: u64,
    /// Tables skipped because the key was outside their key range.
    pub range_skips: u64,
    /// Tables skipped because their filter ruled the key out.
    pub filter_skips: u64,
    /// Tables whose data block was looked at (from the cache or the disk).
    pub table_reads: u64,
    /// Of those, tables that did not hold the key: filter false positives.
    pub false_positives: u64,
}

impl<K: Pod + Ord + Send + Sync, V: Pod + Send + Sync> Tiers<K, V> {
    /// The caller's mark committed with the last run (0 when empty).
    pub fn covered(&self) -> u64 {
        self.live().covered
    }

    /// What open found: the manifest used, damage, garbage removed.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Live tables.
    pub fn tables(&self) -> usize {
        self.live().tables.len()
    }

    /// Entries in all live tables.
    pub fn entries(&self) -> u64 {
        self.live().tables.iter().map(|t| t.table.len()).sum()
    }

    /// Bytes the live tables keep in memory: sparse indexes and filters.
    pub fn memory_bytes(&self) -> u64 {
        self.live().tables.iter().map(|t| t.table.memory_bytes()).sum()
    }

    /// Entries of each live table, oldest first.
    pub fn table_sizes(&self) -> Vec<u64> {
        self.live().tables.iter().map(|t| t.table.len()).collect()
    }

    /// The directory of the set.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> TiersStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TiersStats {
            gets: load(&c.gets),
            range_skips: load(&c.range_skips),
            filter_skips: load(&c.filter_skips),
            table_reads: load(&c.table_reads),
            false_positives: load(&c.false_positives),
        }
    }

    /// Data blocks the live tables have read from disk (cache misses).
    pub fn data_block_reads(&self) -> u64 {
        self.live().tables.iter().map(|t| t.table.data_block_reads()).sum()
    }

    /// Sets (or clears) the hook called at each step that changes the
    /// directory: for crash tests.
    pub fn set_step_hook(&self, hook: Option<StepHook>) {
        *self.hook.write().expect("the hook lock is never poisoned") = hook;
    }

    fn step(&self, step: Step) {
        if let Some(hook) = self.hook.read().expect("the hook lock is never poisoned").as_ref() {
            hook(step);
        }
    }

    /// The current live set: a pointer copy under the lock.
    /// The smallest and largest key of the live tables (`None` if there
    /// are none). Runs and merges never change the set of keys a run
    /// added, so these bound every key added so far.
    pub fn key_bounds(&self) -> Option<(K, K)> {
        let live = self.live();
        let min = live.tables.iter().map(|t| t.table.min_key()).min()?;
        let max = live.tables.iter().map(|t| t.table.max_key()).max()?;
        Some((min, max))
    }

    fn live(&self) -> Arc<Live<K, V>> {
        Arc::clone(&self.live.read().expect("the live set lock is never poisoned"))
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().expect("a commit never panics halfway")
    }
}

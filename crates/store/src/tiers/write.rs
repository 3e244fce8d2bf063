//! Adding runs and committing: new tables are written and synced, then a
//! manifest naming the new live set commits them, then the read set is
//! swapped and the garbage deleted.

use super::catalog::{Body, file_id, table_file, table_number};
use super::{Live, Step, Tier, Tiers, Writer};
use crate::error::StoreError;
use crate::limits::{TIERS_RUN_ENTRIES_MAX, TIERS_TABLE_ENTRIES_MAX, TIERS_TABLES_MAX};
use crate::table::{Table, TableWriter};
use bytemuck::Pod;
use std::fs::{self, File};
use std::mem::size_of;
use std::path::PathBuf;
use std::sync::Arc;

impl<K: Pod + Ord + Send + Sync, V: Pod + Send + Sync> Tiers<K, V> {
    /// Stores a run: `entries` strictly ascending (asserted), at most
    /// `expected_count` of them, none held by an earlier run (the caller's
    /// contract), as one table or, beyond `TIERS_TABLE_ENTRIES_MAX`,
    /// several; then commits them with `covered` (never below the current
    /// one: asserted) and makes them visible. An empty run only advances
    /// `covered`. On an error nothing is committed and the files written
    /// are deleted; a failed commit leaves the outcome to the next open
    /// (crash-only callers exit).
    pub fn add_run(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
        expected_count: u64,
        covered: u64,
    ) -> Result<(), StoreError> {
        let _adding = self.adding.lock().expect("a run never panics halfway");
        let before = self.covered();
        assert!(covered >= before, "a run covering up to {covered} after one covering up to {before}");
        assert!(
            expected_count <= TIERS_RUN_ENTRIES_MAX,
            "a run of {expected_count} entries, more than {TIERS_RUN_ENTRIES_MAX}"
        );
        let mut numbers = Vec::new();
        let written = self.write_run(entries.into_iter(), expected_count, &mut numbers);
        // Once a commit is attempted its files are never deleted here: the
        // manifest may name them (the next open decides).
        let unwritten = written.is_err();
        let result = match written {
            Ok(new) if new.is_empty() && covered == before => Ok(()),
            Ok(new) => self.commit_run(new, covered),
            Err(e) => Err(e),
        };
        self.release(&numbers, unwritten);
        result
    }

    fn commit_run(&self, new: Vec<Arc<Tier<K, V>>>, covered: u64) -> Result<(), StoreError> {
        let mut w = self.writer();
        let mut tables = self.live().tables.clone();
        tables.extend(new);
        assert!(
            tables.len() <= TIERS_TABLES_MAX,
            "{} tables: more than {TIERS_TABLES_MAX} (is compaction running?)",
            tables.len()
        );
        self.commit(&mut w, tables, covered)
    }

    /// Writes `entries` as tables of at most `TIERS_TABLE_ENTRIES_MAX`,
    /// pushing each number it takes to `numbers` (so the caller releases
    /// them, and deletes the files on an error).
    fn write_run(
        &self,
        mut entries: impl Iterator<Item = (K, V)>,
        expected_count: u64,
        numbers: &mut Vec<u64>,
    ) -> Result<Vec<Arc<Tier<K, V>>>, StoreError> {
        let mut tables = Vec::new();
        let mut next = entries.next();
        let mut last: Option<K> = None;
        let mut pushed = 0u64;
        let earlier = self.live();
        while next.is_some() {
            let count = (expected_count - pushed).min(TIERS_TABLE_ENTRIES_MAX);
            assert!(count > 0, "a run of more than the {expected_count} entries expected");
            let number = self.take_number();
            numbers.push(number);
            let (path, mut writer) = self.create_table(number, count)?;
            while writer.len() < count {
                let Some((key, value)) = next else { break };
                assert!(last.is_none_or(|l| l < key), "a run's keys are strictly ascending");
                debug_assert!(!earlier.holds(&key)?, "a run's key is in an earlier run");
                writer.push(key, value)?;
                last = Some(key);
                next = entries.next();
            }
            pushed += writer.len();
            tables.push(self.finish_table(number, path, writer)?);
        }
        if !tables.is_empty() {
            self.sync_dir()?;
        }
        Ok(tables)
    }

    /// Creates table `number`'s file, for at most `count` entries. Its file
    /// id is dropped from the cache first: a number is never reused, but
    /// the cache must never serve another file's block, whatever happens.
    pub(super) fn create_table(&self, number: u64, count: u64) -> Result<(PathBuf, TableWriter<K, V>), StoreError> {
        let path = self.dir.join(table_file(&self.name, number));
        self.cache.forget(file_id(&self.name, number), 0);
        let writer = TableWriter::new_for(&path, file_id(&self.name, number), count, self.lookups)?;
        self.step(Step::TableCreated);
        Ok((path, writer))
    }

    /// Finishes (fsyncs) and opens table `number`.
    pub(super) fn finish_table(
        &self,
        number: u64,
        path: PathBuf,
        writer: TableWriter<K, V>,
    ) -> Result<Arc<Tier<K, V>>, StoreError> {
        let info = writer.finish()?;
        self.step(Step::TableWritten);
        let table = Table::open_for(&path, info.file_id, &self.cache, self.lookups)?;
        assert_eq!(table.len(), info.entries, "a table opens as written");
        Ok(Arc::new(Tier { number, table }))
    }

    pub(super) fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(&self.dir, e))?;
        self.step(Step::TablesSynced);
        Ok(())
    }

    /// A new table number, never handed out before; in flight until released.
    pub(super) fn take_number(&self) -> u64 {
        let mut w = self.writer();
        let number = w.next_number;
        w.next_number = number.checked_add(1).expect("table numbers never run out");
        w.in_flight.insert(number);
        number
    }

    /// Ends `numbers`' flight; with `delete`, their files (if any) go too.
    pub(super) fn release(&self, numbers: &[u64], delete: bool) {
        let mut w = self.writer();
        for number in numbers {
            w.in_flight.remove(number);
            if delete {
                // Best effort: a file left behind is garbage the next open deletes.
                let _ = fs::remove_file(self.dir.join(table_file(&self.name, *number)));
            }
        }
    }

    /// Commits `tables` (oldest first) with `covered`, swaps them in for
    /// readers, and deletes the files no retained manifest names.
    pub(super) fn commit(&self, w: &mut Writer, tables: Vec<Arc<Tier<K, V>>>, covered: u64) -> Result<(), StoreError> {
        let files = tables.iter().map(|t| table_file(&self.name, t.number)).collect();
        let body = Body {
            key_size: size_of::<K>() as u32,
            value_size: size_of::<V>() as u32,
            next_number: w.next_number,
            entries: tables.iter().map(|t| t.table.len()).collect(),
        };
        w.manifests.commit(covered, files, body.encode())?;
        self.step(Step::Committed);
        *self.live.write().expect("the live set lock is never poisoned") = Arc::new(Live { tables, covered });
        self.remove_garbage(w)?;
        Ok(())
    }

    /// Deletes this set's table files that no retained manifest names and
    /// no operation is writing. Returns what it deleted.
    pub(super) fn remove_garbage(&self, w: &Writer) -> Result<Vec<PathBuf>, StoreError> {
        let mut removed = Vec::new();
        for path in w.manifests.garbage()? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(number) = table_number(&self.name, name) else { continue };
            if w.in_flight.contains(&number) {
                continue;
            }
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            self.step(Step::GarbageRemoved);
            removed.push(path);
        }
        Ok(removed)
    }
}

//! Size-tiered compaction: choosing tables of similar size, merging them
//! with no lock held, and committing the result in their place.

use super::catalog::{file_id, table_file};
use super::{Step, Tier, Tiers};
use crate::error::StoreError;
use crate::limits::{
    TIERS_MERGE_INPUTS_MAX, TIERS_MERGE_INPUTS_MIN, TIERS_MERGE_SIZE_RATIO_MAX, TIERS_TABLE_ENTRIES_MAX,
};
use crate::table::{Table, merge_with};
use bytemuck::Pod;
use std::path::PathBuf;
use std::sync::Arc;

/// Tables chosen to be merged into one. Holds them open, so they stay
/// readable while it runs even if a concurrent plan replaced them.
pub struct CompactionPlan<K, V> {
    /// The directory of the set that made the plan: the one it runs on.
    dir: PathBuf,
    /// The inputs, oldest first (their order in the live set).
    inputs: Vec<Arc<Tier<K, V>>>,
}

impl<K: Pod + Ord + Send + Sync, V: Pod + Send + Sync> Tiers<K, V> {
    /// The next compaction worth doing, if any: the smallest group of
    /// 2..=`TIERS_MERGE_INPUTS_MAX` live tables whose sizes are within a
    /// factor `TIERS_MERGE_SIZE_RATIO_MAX` of the group's smallest and whose
    /// merge fits one table; a group of fewer than `TIERS_MERGE_INPUTS_MIN`
    /// only if its merge fills at least half a table. Deterministic: it
    /// depends on the tables' sizes and numbers alone.
    pub fn compaction(&self) -> Option<CompactionPlan<K, V>> {
        let live = self.live();
        let sizes: Vec<(u64, u64)> = live.tables.iter().map(|t| (t.table.len(), t.number)).collect();
        let chosen = choose(&sizes)?;
        let inputs = live.tables.iter().filter(|t| chosen.contains(&t.number)).cloned().collect();
        Some(CompactionPlan { dir: self.dir.clone(), inputs })
    }
}

/// The numbers of the tables to merge, from (entries, number) pairs.
fn choose(tables: &[(u64, u64)]) -> Option<Vec<u64>> {
    let mut by_size = tables.to_vec();
    by_size.sort_unstable();
    for start in 0..by_size.len() {
        let smallest = by_size[start].0;
        let mut sum = 0u64;
        let mut end = start;
        while end < by_size.len()
            && end - start < TIERS_MERGE_INPUTS_MAX
            && by_size[end].0 <= smallest.saturating_mul(TIERS_MERGE_SIZE_RATIO_MAX)
            && sum + by_size[end].0 <= TIERS_TABLE_ENTRIES_MAX
        {
            sum += by_size[end].0;
            end += 1;
        }
        let count = end - start;
        if count >= TIERS_MERGE_INPUTS_MIN || (count >= 2 && sum >= TIERS_TABLE_ENTRIES_MAX / 2) {
            return Some(by_size[start..end].iter().map(|&(_, number)| number).collect());
        }
    }
    None
}

impl<K: Pod + Ord + Send + Sync, V: Pod + Send + Sync> CompactionPlan<K, V> {
    /// Tables the plan merges.
    pub fn inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Entries the merged table will hold.
    pub fn entries(&self) -> u64 {
        self.inputs.iter().map(|t| t.table.len()).sum()
    }

    /// Merges the inputs into a new table (no lock held: reads and runs
    /// go on), then commits it in their place. Returns false, deleting the
    /// output, if an input is no longer live (a concurrent plan merged
    /// it). On an error before the commit nothing changes and the output
    /// is deleted; if the commit itself fails, the next open decides.
    pub fn run(self, tiers: &Tiers<K, V>) -> Result<bool, StoreError> {
        assert_eq!(self.dir, tiers.dir, "a compaction plan runs on the set that made it");
        let number = tiers.take_number();
        let output = match self.merge(tiers, number) {
            Ok(output) => output,
            Err(e) => {
                tiers.release(&[number], true);
                return Err(e);
            }
        };
        let mut w = tiers.writer();
        let live = tiers.live();
        let is_live = |input: &Arc<Tier<K, V>>| live.tables.iter().any(|t| t.number == input.number);
        if !self.inputs.iter().all(is_live) {
            drop(w);
            drop(output);
            tiers.release(&[number], true);
            tiers.step(Step::OutputRemoved);
            return Ok(false);
        }
        let tables = replaced(&live.tables, &self.inputs, output);
        let result = tiers.commit(&mut w, tables, live.covered);
        w.in_flight.remove(&number);
        result.map(|()| true)
    }

    /// Writes the merged table `number`, synced and open.
    fn merge(&self, tiers: &Tiers<K, V>, number: u64) -> Result<Arc<Tier<K, V>>, StoreError> {
        let path = tiers.dir.join(table_file(&tiers.name, number));
        let id = file_id(&tiers.name, number);
        tiers.cache.forget(id, 0);
        let newest_first: Vec<&Table<K, V>> = self.inputs.iter().rev().map(|t| &t.table).collect();
        let writer = merge_with(&newest_first, &path, id, |_, _, _| panic!("a key is in two tables of a tier set"));
        tiers.step(Step::TableCreated);
        let output = tiers.finish_table(number, path, writer?)?;
        tiers.sync_dir()?;
        assert_eq!(output.table.len(), self.entries(), "a merge of disjoint tables keeps every entry");
        Ok(output)
    }
}

/// `tables` with `inputs` replaced by `output`, which takes the place of
/// the oldest input.
fn replaced<K, V>(
    tables: &[Arc<Tier<K, V>>],
    inputs: &[Arc<Tier<K, V>>],
    output: Arc<Tier<K, V>>,
) -> Vec<Arc<Tier<K, V>>> {
    let mut out = Vec::with_capacity(tables.len() + 1 - inputs.len());
    let mut output = Some(output);
    for table in tables {
        if inputs.iter().any(|i| i.number == table.number) {
            out.extend(output.take());
        } else {
            out.push(Arc::clone(table));
        }
    }
    assert!(output.is_none(), "the inputs are live");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: u64 = TIERS_TABLE_ENTRIES_MAX;

    fn sizes(entries: &[u64]) -> Vec<(u64, u64)> {
        entries.iter().enumerate().map(|(number, &e)| (e, number as u64)).collect()
    }

    #[test]
    fn similar_small_tables_merge_first_and_few_wait() {
        assert_eq!(choose(&sizes(&[10, 10, 10])), None, "three are too few");
        assert_eq!(choose(&sizes(&[10, 12, 10, 11])), Some(vec![0, 2, 3, 1]));
        assert_eq!(choose(&sizes(&[1000, 10, 12, 10, 11, 1000, 1000, 1000])), Some(vec![1, 3, 4, 2]));
        assert_eq!(choose(&sizes(&[10, 50, 60, 70])), None, "10 is more than 4 times smaller");
        assert_eq!(choose(&sizes(&[10, 50, 60, 70, 80])), Some(vec![1, 2, 3, 4]));
        let nine: Vec<u64> = vec![5; 9];
        assert_eq!(choose(&sizes(&nine)).unwrap().len(), TIERS_MERGE_INPUTS_MAX);
    }

    #[test]
    fn merges_stop_at_a_full_table_and_two_halves_merge() {
        assert_eq!(choose(&sizes(&[FULL, FULL, FULL, FULL])), None);
        assert_eq!(choose(&sizes(&[FULL / 4, FULL / 4])), Some(vec![0, 1]), "they fill half a table");
        assert_eq!(choose(&sizes(&[FULL / 2, FULL / 2, FULL / 2])), Some(vec![0, 1]));
        assert_eq!(choose(&sizes(&[FULL / 3; 4])).map(|c| c.len()), Some(3));
        assert_eq!(choose(&sizes(&[FULL / 8, FULL / 8])), None);
    }
}

//! The cases the model test may miss: covered without entries, runs larger
//! than a table, the key-range check, the cost of a range, duplicates
//! found exactly after many merges.

use super::*;
use bursar_store::limits::TIERS_TABLE_ENTRIES_MAX;

#[test]
fn an_empty_set_and_an_empty_run() {
    let d = tempfile::tempdir().unwrap();
    let set = open(d.path());
    assert_eq!((set.covered(), set.tables(), set.entries(), set.memory_bytes()), (0, 0, 0, 0));
    assert_eq!(set.get(&7).unwrap(), None);
    assert!(set.range(0, u128::MAX, true, 10).unwrap().is_empty());
    assert!(set.compaction().is_none());
    set.add_run(std::iter::empty(), 0, 5).unwrap();
    assert_eq!((set.covered(), set.tables()), (5, 0));
    drop(set);
    let set = open(d.path());
    assert_eq!((set.covered(), set.tables()), (5, 0));
    assert_eq!(set.recovery().manifest, Some(1));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d.path()).unwrap().permissions());
    let sub = d.path().join("new");
    drop(Tiers::<u128, u64>::open(&sub, NAME, cache()).unwrap());
    let sub_mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sub).unwrap().permissions());
    assert_eq!(sub_mode & 0o777, 0o700, "(the temp dir's own mode: {mode:o})");
}

#[test]
#[should_panic(expected = "a run covering up to 3 after one covering up to 4")]
fn covered_never_goes_back() {
    let d = tempfile::tempdir().unwrap();
    let set = open(d.path());
    set.add_run([(1u128, 1u64)], 1, 4).unwrap();
    set.add_run([(2u128, 1u64)], 1, 3).unwrap();
}

#[test]
#[should_panic(expected = "strictly ascending")]
fn an_unsorted_run_is_a_caller_bug() {
    let d = tempfile::tempdir().unwrap();
    open(d.path()).add_run([(2u128, 1u64), (1, 1)], 2, 1).unwrap();
}

#[test]
fn a_run_larger_than_a_table_is_several_tables() {
    let d = tempfile::tempdir().unwrap();
    let set = Tiers::<u32, ()>::open(d.path(), "big", cache()).unwrap();
    let n = TIERS_TABLE_ENTRIES_MAX as u32 + 10;
    set.add_run((0..n).map(|k| (k * 2, ())), u64::from(n), 1).unwrap();
    assert_eq!(set.table_sizes(), vec![TIERS_TABLE_ENTRIES_MAX, 10]);
    assert_eq!(set.get(&(2 * (n - 1))).unwrap(), Some(()));
    assert_eq!(set.get(&(2 * (n - 1) + 1)).unwrap(), None);
    let across = TIERS_TABLE_ENTRIES_MAX as u32 * 2;
    let got = set.range(across - 4, across + 4, false, 100).unwrap();
    assert_eq!(
        got.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![across - 4, across - 2, across, across + 2, across + 4]
    );
    assert!(set.compaction().is_none(), "a full table and a small one are not similar");
}

/// Ids that grow with time: a new id above every table's range is answered
/// by the range check alone (not even a filter is probed).
#[test]
fn a_new_larger_id_reads_no_table() {
    let d = tempfile::tempdir().unwrap();
    let set = Tiers::<u128, u64>::open(d.path(), NAME, no_cache()).unwrap();
    for run in 0..6u64 {
        let ids = (run * 1000..(run + 1) * 1000).map(|i| (u128::from(i) << 64, i));
        set.add_run(ids, 1000, run + 1).unwrap();
    }
    let (reads, before) = (set.data_block_reads(), set.stats());
    for i in 6000..7000u64 {
        assert_eq!(set.get(&(u128::from(i) << 64)).unwrap(), None);
    }
    let after = set.stats();
    assert_eq!(set.data_block_reads(), reads, "no data block read");
    assert_eq!(after.range_skips - before.range_skips, 6 * 1000, "every table skipped by its key range");
    assert_eq!((after.filter_skips, after.table_reads), (before.filter_skips, before.table_reads));
    // An old id is found with one block read, in its own table only.
    assert_eq!(set.get(&(2500u128 << 64)).unwrap(), Some(2500));
    assert_eq!(set.data_block_reads(), reads + 1);
}

/// A range reads one data block per table it meets, then one per block
/// used up: O(limit + tables), not the tables' sizes.
#[test]
fn a_range_reads_blocks_for_its_limit_not_for_the_tables() {
    let d = tempfile::tempdir().unwrap();
    let set = Tiers::<u128, u64>::open(d.path(), NAME, no_cache()).unwrap();
    // 8 tables of 20,000 keys each, interleaved: every table meets every range.
    for t in 0..8u64 {
        let keys = (0..20_000u64).map(|i| (u128::from(i * 8 + t), i));
        set.add_run(keys, 20_000, t + 1).unwrap();
    }
    let per_block = (bursar_store::limits::BLOCK_PAYLOAD_MAX / 24) as u64;
    for reversed in [false, true] {
        let before = set.data_block_reads();
        let got = set.range(50_000, 150_000, reversed, 100).unwrap();
        assert_eq!(got.len(), 100);
        let first = if reversed { 150_000 } else { 50_000 };
        assert_eq!(got[0].0, first);
        let reads = set.data_block_reads() - before;
        assert!(reads <= 8 + 8 * (100 / 8 / per_block + 1), "{reads} block reads for 100 entries over 8 tables");
    }
}

/// Tables of disjoint key ranges (ids that grow with time) are opened
/// only when the merge reaches them: a page reads the blocks it comes from.
#[test]
fn a_range_over_ascending_ids_reads_only_the_blocks_it_returns() {
    let d = tempfile::tempdir().unwrap();
    let set = Tiers::<u128, u64>::open(d.path(), NAME, no_cache()).unwrap();
    for t in 0..8u64 {
        set.add_run((t * 5000..(t + 1) * 5000).map(|i| (u128::from(i), i)), 5000, t + 1).unwrap();
    }
    for (lo, reversed, first) in [(12_000, false, 12_000), (0, true, 39_999), (4990, false, 4990)] {
        let before = set.data_block_reads();
        let hi = if reversed { 39_999 } else { u128::MAX };
        let got = set.range(lo, hi, reversed, 100).unwrap();
        assert_eq!((got.len(), got[0].0), (100, first));
        assert!(set.data_block_reads() - before <= 3, "{} reads", set.data_block_reads() - before);
    }
}

/// Duplicate detection stays exact through many runs and merges: every
/// key added is found, none of 100,000 others is; filter false positives
/// (which cost one block read each) are counted.
#[test]
fn duplicates_are_found_exactly_after_many_merges() {
    let d = tempfile::tempdir().unwrap();
    let set = open(d.path());
    let (runs, per_run) = (500u64, 20u64);
    let mut compactions = 0;
    for run in 0..runs {
        let mut keys: Vec<(u128, u64)> = (0..per_run).map(|i| (key(run * per_run + i), run)).collect();
        keys.sort_unstable();
        set.add_run(keys, per_run, run + 1).unwrap();
        compactions += compact_all(&set);
    }
    assert!(compactions >= runs as usize / 4, "{compactions} compactions");
    for i in 0..runs * per_run {
        assert_eq!(set.get(&key(i)).unwrap(), Some(i / per_run), "key {i}");
    }
    let before = set.stats();
    for i in 0..100_000u64 {
        assert_eq!(set.get(&key(1 << 40 | i)).unwrap(), None);
    }
    let after = set.stats();
    let probes = after.filter_skips - before.filter_skips + after.table_reads - before.table_reads;
    let fp = after.false_positives - before.false_positives;
    eprintln!(
        "duplicates: {} keys in {} tables {:?} after {compactions} compactions; 100000 absent keys: {probes} filter probes, {fp} false positives read a block",
        runs * per_run,
        set.tables(),
        set.table_sizes()
    );
    assert!(fp * 10_000 < probes.max(1), "false positives {fp} of {probes} probes");
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "a run's key is in an earlier run")]
fn a_key_added_twice_is_a_caller_bug() {
    let d = tempfile::tempdir().unwrap();
    let set = open(d.path());
    set.add_run([(1u128, 1u64), (5, 1)], 2, 1).unwrap();
    set.add_run([(3u128, 1u64), (5, 2)], 2, 2).unwrap();
}

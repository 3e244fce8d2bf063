use super::*;
use bursar_store::limits::{BLOCK_PAYLOAD_MAX, BLOCK_SIZE};
use std::fs;

const PER_BLOCK: u64 = (BLOCK_PAYLOAD_MAX / 24) as u64;

/// An id-like key far from small integers, a position-like value.
fn id(i: u64) -> u128 {
    (i as u128) * 0x9e37_79b9 + (7u128 << 100)
}

fn ids(n: u64) -> impl Iterator<Item = (u128, u64)> {
    (0..n).map(|i| (id(i), i * 3))
}

#[test]
fn a_table_of_one_entry() {
    let d = dir();
    let (path, info) = write(d.path(), "t", 5, [(42u128, 7u64)]);
    assert_eq!((info.entries, info.min_key, info.max_key, info.data_blocks, info.blocks), (1, 42, 42, 1, 4));
    assert_eq!(info.file_size, 4 * BLOCK_SIZE as u64);
    assert_eq!(fs::metadata(&path).unwrap().len(), info.file_size);
    let t = Table::<u128, u64>::open(&path, 5, &cache()).unwrap();
    assert_eq!((t.len(), t.min_key(), t.max_key(), t.data_blocks()), (1, 42, 42, 1));
    assert_eq!(t.get(&42).unwrap(), Some(7));
    for absent in [0, 41, 43, u128::MAX] {
        assert_eq!(t.get(&absent).unwrap(), None);
        assert!(!t.may_contain(&absent), "outside the key range");
    }
    assert_eq!(all(&t).unwrap(), vec![(42, 7)]);
    assert_eq!(t.range(43..).count(), 0);
    assert_eq!(t.range(..42).count(), 0);
    assert_eq!(t.range(42..=42).map(Result::unwrap).collect::<Vec<_>>(), vec![(42, 7)]);
}

#[test]
fn exactly_one_full_block_then_one_more_entry() {
    let d = dir();
    let (path, info) = write(d.path(), "full", 1, ids(PER_BLOCK));
    assert_eq!((info.data_blocks, info.blocks), (1, 4));
    let t = Table::<u128, u64>::open(&path, 1, &cache()).unwrap();
    assert_eq!(all(&t).unwrap(), ids(PER_BLOCK).collect::<Vec<_>>());
    let (path, info) = write(d.path(), "over", 2, ids(PER_BLOCK + 1));
    assert_eq!((info.data_blocks, info.blocks), (2, 5));
    let t = Table::<u128, u64>::open(&path, 2, &cache()).unwrap();
    assert_eq!(t.get(&id(PER_BLOCK)).unwrap(), Some(PER_BLOCK * 3));
    assert_eq!(t.get(&id(PER_BLOCK - 1)).unwrap(), Some((PER_BLOCK - 1) * 3));
    assert_eq!(all(&t).unwrap(), ids(PER_BLOCK + 1).collect::<Vec<_>>());
}

#[test]
fn a_cached_block_is_read_once() {
    let d = dir();
    let (path, _) = write(d.path(), "t", 9, ids(PER_BLOCK * 3));
    let cache = cache();
    let t = Table::<u128, u64>::open(&path, 9, &cache).unwrap();
    assert_eq!(t.get(&id(1)).unwrap(), Some(3));
    assert_eq!(t.get(&id(2)).unwrap(), Some(6), "the same block");
    assert_eq!(t.get(&id(PER_BLOCK + 1)).unwrap(), Some((PER_BLOCK + 1) * 3));
    assert_eq!(t.data_block_reads(), 2, "each block once");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
}

#[test]
fn many_blocks_read_one_block_per_lookup() {
    let d = dir();
    let n = PER_BLOCK * 7 + 100;
    let (path, info) = write(d.path(), "t", 9, ids(n));
    assert_eq!(info.data_blocks, 8);
    // The smallest cache keeps nothing: every lookup goes to the file.
    let t = Table::<u128, u64>::open(&path, 9, &no_cache()).unwrap();
    assert_eq!(t.data_block_reads(), 0, "open reads footer, index and filter only");
    for i in (0..n).step_by(97).chain([0, n - 1, PER_BLOCK - 1, PER_BLOCK, PER_BLOCK * 3]) {
        let before = t.data_block_reads();
        assert_eq!(t.get(&id(i)).unwrap(), Some(i * 3), "key {i}");
        assert_eq!(t.data_block_reads(), before + 1);
    }
    // A range across block boundaries, with both kinds of bounds.
    let (from, to) = (PER_BLOCK - 5, PER_BLOCK * 3 + 5);
    let got: Vec<_> = t.range(id(from)..=id(to)).map(Result::unwrap).collect();
    assert_eq!(got, (from..=to).map(|i| (id(i), i * 3)).collect::<Vec<_>>());
    let got = t.range((std::ops::Bound::Excluded(id(from)), std::ops::Bound::Excluded(id(to)))).count();
    assert_eq!(got as u64, to - from - 1);
    // Ranges starting and ending at every block boundary.
    use std::ops::Bound::{Excluded, Included};
    for b in 1..info.data_blocks {
        let (last, first) = (b * PER_BLOCK - 1, b * PER_BLOCK);
        let next = |r: &mut dyn Iterator<Item = Result<(u128, u64), StoreError>>| r.next().unwrap().unwrap().0;
        assert_eq!(next(&mut t.range((Excluded(id(last)), Included(id(first))))), id(first));
        assert_eq!(next(&mut t.range(id(last)..)), id(last));
        assert_eq!(t.range((Excluded(id(last)), Excluded(id(first)))).count(), 0);
        assert_eq!(t.range(id(last)..id(first)).count(), 1);
        assert_eq!(t.range(..=id(first)).count() as u64, first + 1);
        // Descending, across the same boundary.
        assert_eq!(next(&mut t.range_rev((Included(id(last)), Excluded(id(first))))), id(last));
        assert_eq!(next(&mut t.range_rev(..=id(first))), id(first));
        assert_eq!(next(&mut t.range_rev(..id(first))), id(last));
        assert_eq!(t.range_rev((Excluded(id(last)), Excluded(id(first)))).count(), 0);
        assert_eq!(t.range_rev(id(first)..).count() as u64, n - first);
    }
    let down: Vec<_> = t.range_rev(..).map(|r| r.unwrap().0).collect();
    assert_eq!(down, (0..n).rev().map(id).collect::<Vec<_>>());
    // Bounds between keys.
    let got: Vec<_> = t.range(id(10) + 1..id(12) + 1).map(Result::unwrap).collect();
    assert_eq!(got, vec![(id(11), 33), (id(12), 36)]);
}

#[test]
fn an_absent_key_almost_never_reads_a_data_block() {
    let d = dir();
    let n = PER_BLOCK * 4;
    let (path, _) = write(d.path(), "t", 3, ids(n));
    let t = Table::<u128, u64>::open(&path, 3, &cache()).unwrap();
    // Absent keys inside the key range, so only the filter can rule them out.
    let probes = 200_000;
    let mut positives = 0;
    for i in 0..probes {
        let key = id(i % n) + 1 + (i / n) as u128;
        assert_eq!(t.get(&key).unwrap(), None);
        positives += t.may_contain(&key) as u64;
    }
    assert_eq!(t.data_block_reads(), positives, "only the filter's false positives read a block");
    // 16-bit fingerprints: about 1 in 65,536; 200,000 probes expect ~3.
    assert!(positives <= 20, "{positives} false positives in {probes} probes");
}

#[test]
fn several_index_blocks() {
    type Key = [u8; 1024];
    let key = |i: u64| {
        let mut k = [0u8; 1024];
        k[..8].copy_from_slice(&i.to_be_bytes());
        k[1023] = 1;
        k
    };
    let per_block = (BLOCK_PAYLOAD_MAX / 1025) as u64;
    let per_index = (BLOCK_PAYLOAD_MAX / 1024) as u64;
    let n = per_block * (per_index + 2) + 1;
    let d = dir();
    let (path, info) = write(d.path(), "wide", 4, (0..n).map(|i| (key(i), i as u8)));
    assert_eq!(info.data_blocks, per_index + 3, "more data blocks than one index block names");
    let t = Table::<Key, u8>::open(&path, 4, &cache()).unwrap();
    for i in [0, per_block * per_index, per_block * per_index + 1, n - 1] {
        assert_eq!(t.get(&key(i)).unwrap(), Some(i as u8));
    }
    assert_eq!(t.get(&key(n)).unwrap(), None);
    assert_eq!(all(&t).unwrap().len() as u64, n);
}

/// A `(account, position)` key: `Ord` derives field order, so one
/// account's entries are contiguous and sorted by position.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, bytemuck::Pod, bytemuck::Zeroable)]
struct AccountPosition {
    account: u64,
    position: u64,
}

#[test]
fn an_accounts_page_is_a_range() {
    let d = dir();
    let entries: Vec<_> = (0..20_000u64)
        .map(|i| (AccountPosition { account: i % 7, position: i }, ()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let (path, _) = write(d.path(), "acct", 11, entries);
    let t = Table::<AccountPosition, ()>::open(&path, 11, &cache()).unwrap();
    let page: Vec<u64> = t
        .range(AccountPosition { account: 3, position: 500 }..=AccountPosition { account: 3, position: u64::MAX })
        .take(5)
        .map(|e| e.unwrap().0.position)
        .collect();
    assert_eq!(page, vec![500, 507, 514, 521, 528]);
    let count =
        t.range(AccountPosition { account: 6, position: 0 }..AccountPosition { account: 7, position: 0 }).count();
    assert_eq!(count, (0..20_000).filter(|i| i % 7 == 6).count());
}

#[test]
fn the_same_entries_make_the_same_bytes() {
    let d = dir();
    let (a, _) = write(d.path(), "a", 1, ids(5000));
    let (b, _) = write(d.path(), "b", 1, ids(5000));
    assert!(fs::read(a).unwrap() == fs::read(b).unwrap(), "no clock, no randomness in a table");
}

#[test]
fn memory_is_the_index_and_the_filter() {
    let d = dir();
    let n = PER_BLOCK * 20;
    let (path, info) = write(d.path(), "t", 1, ids(n));
    let t = Table::<u128, u64>::open(&path, 1, &cache()).unwrap();
    let per_key = t.memory_bytes() as f64 / n as f64;
    assert!(info.filter_bytes as f64 / n as f64 <= 2.5, "16-bit fingerprints, ~1.13 slots per key");
    assert!(per_key < 2.6, "{per_key} bytes per key in memory");
}

#[test]
fn merge_keeps_the_newest_value_or_the_callers_choice() {
    let d = dir();
    let (old, _) = write(d.path(), "old", 1, (0..10_000u64).map(|i| (i * 2, i)));
    let (new, info) = write(d.path(), "new", 2, (0..10_000u64).map(|i| (i * 3, 1_000_000 + i)));
    assert_eq!(info.data_blocks, 3, "merges cross block boundaries");
    let (old, new) =
        (Table::<u64, u64>::open(&old, 1, &cache()).unwrap(), Table::<u64, u64>::open(&new, 2, &cache()).unwrap());
    let merged = bursar_store::table::merge(&[&new, &old], &d.path().join("m"), 3).unwrap();
    let info = merged.finish().unwrap();
    let m = Table::<u64, u64>::open(&d.path().join("m"), 3, &cache()).unwrap();
    assert_eq!(info.entries, m.len());
    assert_eq!(m.get(&6).unwrap(), Some(1_000_002), "the newest wins");
    assert_eq!(m.get(&4).unwrap(), Some(2));
    assert_eq!(m.get(&9).unwrap(), Some(1_000_003));
    assert_eq!(m.len(), 20_000 - 3334, "keys divisible by 6 below 20,000 are in both");
    assert_eq!(m.get(&29_997).unwrap(), Some(1_009_999));
    assert_eq!(m.get(&19_996).unwrap(), Some(9998));
    let sum = bursar_store::table::merge_with(&[&new, &old], &d.path().join("s"), 4, |_, a, b| a + b).unwrap();
    sum.finish().unwrap();
    let s = Table::<u64, u64>::open(&d.path().join("s"), 4, &cache()).unwrap();
    assert_eq!(s.get(&6).unwrap(), Some(1_000_002 + 3));
}

#[test]
fn a_table_name_is_never_reused() {
    let d = dir();
    let (path, _) = write(d.path(), "t", 1, [(1u64, 1u64)]);
    let err = TableWriter::<u64, u64>::new(&path, 2, 1).err().expect("the file exists");
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}

#[test]
#[should_panic(expected = "strictly increasing")]
fn keys_out_of_order_are_a_caller_bug() {
    let d = dir();
    let mut w = TableWriter::<u64, u64>::new(&d.path().join("t"), 1, 3).unwrap();
    w.push(2, 0).unwrap();
    let _ = w.push(2, 0);
}

#[test]
#[should_panic(expected = "entries this table was created for")]
fn more_entries_than_expected_are_a_caller_bug() {
    let d = dir();
    let mut w = TableWriter::<u64, u64>::new(&d.path().join("t"), 1, 1).unwrap();
    w.push(1, 0).unwrap();
    let _ = w.push(2, 0);
}

#[test]
#[should_panic(expected = "at least one entry")]
fn an_empty_table_is_a_caller_bug() {
    let d = dir();
    let w = TableWriter::<u64, u64>::new(&d.path().join("t"), 1, 1).unwrap();
    let _ = w.finish();
}

#[test]
fn a_table_opened_for_ranges_only_answers_the_same_without_its_filter_in_ram() {
    use bursar_store::table::Lookups;
    let d = dir();
    let (path, info) = write(d.path(), "t", 4, ids(PER_BLOCK * 2 + 5));
    let points = Table::<u128, u64>::open(&path, 4, &cache()).unwrap();
    let ranges = Table::<u128, u64>::open_for(&path, 4, &cache(), Lookups::RangesOnly).unwrap();
    assert_eq!(all(&ranges).unwrap(), all(&points).unwrap());
    assert_eq!(ranges.range_rev(..).collect::<Result<Vec<_>, _>>().unwrap().len(), PER_BLOCK as usize * 2 + 5);
    for i in [0, 1, PER_BLOCK, PER_BLOCK * 2 + 4] {
        assert_eq!(ranges.get(&id(i)).unwrap(), Some(i * 3));
    }
    // Absent keys inside the key range: without the filter, a block read.
    let absent = id(1) + 1;
    assert_eq!((points.get(&absent).unwrap(), ranges.get(&absent).unwrap()), (None, None));
    assert_eq!(points.memory_bytes() - ranges.memory_bytes(), info.filter_bytes, "only the filter left RAM");
}

#[test]
fn a_table_written_for_ranges_has_no_filter_and_refuses_point_opens() {
    use bursar_store::table::Lookups;
    let d = dir();
    let n = PER_BLOCK * 2 + 5;
    let (with_filter, filtered) = write(d.path(), "f", 5, ids(n));
    let path = d.path().join("r");
    let mut w = TableWriter::new_for(&path, 6, n, Lookups::RangesOnly).unwrap();
    for (k, v) in ids(n) {
        w.push(k, v).unwrap();
    }
    let info = w.finish().unwrap();
    assert_eq!(info.filter_bytes, 0);
    assert!(info.file_size < filtered.file_size, "no filter blocks");
    let ranges = Table::<u128, u64>::open_for(&path, 6, &cache(), Lookups::RangesOnly).unwrap();
    let points = Table::<u128, u64>::open(&with_filter, 5, &cache()).unwrap();
    assert!(!ranges.has_filter() && points.has_filter());
    assert_eq!(all(&ranges).unwrap(), all(&points).unwrap());
    assert_eq!(ranges.get(&id(PER_BLOCK)).unwrap(), Some(PER_BLOCK * 3));
    // A point open would lose every lookup's filter: refused, named.
    let err = Table::<u128, u64>::open(&path, 6, &cache()).err().unwrap();
    let (file, _, fault) = corrupt_at(err);
    assert_eq!(file, path);
    assert!(fault.to_string().contains("no filter"), "{fault}");
    // A merge keeps a filter if any input has one, and writes none otherwise.
    let merged = bursar_store::table::merge(&[&ranges, &ranges], &d.path().join("m1"), 7).unwrap().finish().unwrap();
    assert_eq!(merged.filter_bytes, 0);
    let merged = bursar_store::table::merge(&[&ranges, &points], &d.path().join("m2"), 8).unwrap().finish().unwrap();
    assert!(merged.filter_bytes > 0);
}

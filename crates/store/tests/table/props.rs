//! Tables against a `BTreeMap`: every lookup, range and merge answers as
//! the model does. Keys are drawn from a small space (so probes hit and
//! miss, and merged tables share keys) and from the full `u32` range.

use super::*;
use bursar_store::table::{merge, merge_with};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ops::Bound;

type Model = BTreeMap<u32, u64>;

fn model(max_key: u32, max_len: usize) -> impl Strategy<Value = Model> {
    prop::collection::btree_map(0..max_key, any::<u64>(), 1..max_len)
}

fn bound() -> impl Strategy<Value = Bound<u32>> {
    prop_oneof![
        Just(Bound::Unbounded),
        (0..12_000u32).prop_map(Bound::Included),
        (0..12_000u32).prop_map(Bound::Excluded)
    ]
}

fn open(dir: &Path, name: &str, file_id: u64, m: &Model) -> Table<u32, u64> {
    let (path, info) = write(dir, name, file_id, m.iter().map(|(k, v)| (*k, *v)));
    assert_eq!(
        (info.entries, info.min_key, info.max_key),
        (m.len() as u64, *m.keys().next().unwrap(), *m.keys().last().unwrap())
    );
    Table::open(&path, file_id, &cache()).unwrap()
}

/// `BTreeMap::range` panics on a start after the end; tables answer empty.
fn model_range(m: &Model, start: Bound<u32>, end: Bound<u32>) -> Vec<(u32, u64)> {
    let key = |b: &Bound<u32>| match b {
        Bound::Included(k) | Bound::Excluded(k) => Some(*k),
        Bound::Unbounded => None,
    };
    if let (Some(s), Some(e)) = (key(&start), key(&end)) {
        let both_included = matches!((start, end), (Bound::Included(_), Bound::Included(_)));
        if s > e || (s == e && !both_included) {
            return Vec::new();
        }
    }
    m.range((start, end)).map(|(k, v)| (*k, *v)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn lookups_and_ranges_match_the_model(
        m in prop_oneof![model(12_000, 12_000), model(u32::MAX, 300)],
        probes in prop::collection::vec(0..12_000u32, 200),
        ranges in prop::collection::vec((bound(), bound()), 8),
    ) {
        let d = dir();
        let t = open(d.path(), "t", 1, &m);
        for k in probes.iter().chain(m.keys().step_by(7)) {
            prop_assert_eq!(t.get(k).unwrap(), m.get(k).copied(), "key {}", k);
            if m.contains_key(k) {
                prop_assert!(t.may_contain(k));
            }
        }
        prop_assert_eq!(all(&t).unwrap(), m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        for (start, end) in ranges {
            let got: Vec<_> = t.range((start, end)).map(Result::unwrap).collect();
            let mut expected = model_range(&m, start, end);
            prop_assert_eq!(got, expected.clone(), "range {:?}..{:?}", start, end);
            let got_rev: Vec<_> = t.range_rev((start, end)).map(Result::unwrap).collect();
            expected.reverse();
            prop_assert_eq!(got_rev, expected, "reversed range {:?}..{:?}", start, end);
        }
    }

    #[test]
    fn merges_match_the_model(
        inputs in prop::collection::vec(model(6_000, 3_000), 1..5),
        add in any::<bool>(),
    ) {
        let d = dir();
        // Inputs newest first; the model applies them oldest first.
        let tables: Vec<_> = inputs.iter().enumerate().map(|(i, m)| open(d.path(), &format!("in{i}"), i as u64, m)).collect();
        let refs: Vec<_> = tables.iter().collect();
        let mut expected = Model::new();
        for m in inputs.iter().rev() {
            for (k, v) in m {
                let old = expected.get(k).copied();
                expected.insert(*k, match (add, old) {
                    (true, Some(old)) => v.wrapping_add(old),
                    _ => *v,
                });
            }
        }
        let path = d.path().join("merged");
        let writer = if add {
            merge_with(&refs, &path, 99, |_, newer: u64, older| newer.wrapping_add(older)).unwrap()
        } else {
            merge(&refs, &path, 99).unwrap()
        };
        prop_assert_eq!(writer.finish().unwrap().entries, expected.len() as u64);
        let merged = Table::<u32, u64>::open(&path, 99, &cache()).unwrap();
        prop_assert_eq!(all(&merged).unwrap(), expected.into_iter().collect::<Vec<_>>());
    }
}

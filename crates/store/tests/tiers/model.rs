//! A tier set against a `BTreeMap`: random runs (keys disjoint across
//! runs), compactions and reopens in any order; after every step each
//! lookup, each range in both directions and `covered` answer as the model.

use super::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// A run of these keys (those the model holds already are dropped),
    /// advancing `covered` by the second field.
    Add(Vec<(u128, u64)>, u64),
    Compact,
    Reopen,
}

fn small_key() -> impl Strategy<Value = u128> {
    prop_oneof![4 => 0..20_000u128, 1 => any::<u128>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((small_key(), any::<u64>()), 0..400), 0..3u64).prop_map(|(r, c)| Op::Add(r, c)),
        3 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn check(set: &Set, model: &Model, covered: u64, probes: &[u128], ranges: &[(u128, u128, bool, usize)]) {
    assert_eq!(set.covered(), covered);
    for k in probes.iter().chain(model.keys().step_by(13)) {
        assert_eq!(set.get(k).unwrap(), model.get(k).copied(), "key {k}");
    }
    for &(a, b, reversed, limit) in ranges {
        let got = set.range(a, b, reversed, limit).unwrap();
        let expected: Vec<(u128, u64)> = if a > b {
            Vec::new()
        } else if reversed {
            model.range(a..=b).rev().take(limit).map(|(k, v)| (*k, *v)).collect()
        } else {
            model.range(a..=b).take(limit).map(|(k, v)| (*k, *v)).collect()
        };
        assert_eq!(got, expected, "range {a}..={b} reversed {reversed} limit {limit}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_tier_set_answers_as_the_model(
        ops in prop::collection::vec(op(), 1..32),
        probes in prop::collection::vec(small_key(), 64),
        ranges in prop::collection::vec((small_key(), small_key(), any::<bool>(), 0..600usize), 12),
    ) {
        let d = tempfile::tempdir().unwrap();
        // One cache across reopens (as a process that reopens a set keeps
        // its cache), alternating with one that keeps nothing.
        let shared = cache();
        let mut reopens = 0;
        let mut set = open(d.path());
        let mut model = Model::new();
        let mut covered = 0;
        for op in ops {
            match op {
                Op::Add(run, advance) => {
                    let run: Model = run.into_iter().filter(|(k, _)| !model.contains_key(k)).collect();
                    covered += advance;
                    let run: Vec<_> = run.into_iter().collect();
                    add(&set, &mut model, &run, covered);
                }
                Op::Compact => {
                    if let Some(plan) = set.compaction() {
                        let (inputs, entries, tables) = (plan.inputs(), plan.entries(), set.tables());
                        prop_assert!(plan.run(&set).unwrap());
                        prop_assert_eq!(set.tables(), tables + 1 - inputs);
                        prop_assert!(set.table_sizes().contains(&entries));
                    }
                }
                Op::Reopen => {
                    drop(set);
                    reopens += 1;
                    let cache = if reopens % 2 == 0 { no_cache() } else { Arc::clone(&shared) };
                    set = Tiers::open(d.path(), NAME, cache).unwrap();
                    prop_assert!(!set.recovery().fell_back());
                }
            }
            check(&set, &model, covered, &probes, &ranges);
            prop_assert_eq!(set.entries(), model.len() as u64);
        }
        drop(set);
        let set = open(d.path());
        assert_same(&set, &model);
        prop_assert_eq!(set.covered(), covered);
    }
}

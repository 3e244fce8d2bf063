//! One thread reads continuously, asserting every answer, while another
//! adds runs and a third compacts: reads stay right at every moment.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

const RUNS: u64 = 120;
const PER_RUN: u64 = 50;

/// Run `r`'s entries: random keys, the run as the value.
fn run_entries(r: u64) -> Vec<(u128, u64)> {
    let mut out: Vec<(u128, u64)> = (0..PER_RUN).map(|i| (key(r * PER_RUN + i), r)).collect();
    out.sort_unstable();
    out
}

/// Which run holds `k`, if any (the test's keys are few enough to map).
fn owner(all: &Model, k: &u128) -> Option<u64> {
    all.get(k).copied()
}

#[test]
fn reads_stay_right_while_runs_and_compactions_go_on() {
    let d = tempfile::tempdir().unwrap();
    let set = open(d.path());
    let all: Model = (0..RUNS).flat_map(run_entries).collect();
    let added = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let (reads, compactions) = thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            let mut round = 0u64;
            while !done.load(Ordering::Acquire) {
                let committed = added.load(Ordering::Acquire);
                // Every key of a committed run is found, with its value.
                for r in [0, committed / 2, committed.saturating_sub(1)] {
                    if r < committed {
                        let (k, v) = run_entries(r)[(round % PER_RUN) as usize];
                        assert_eq!(set.get(&k).unwrap(), Some(v), "run {r} of {committed}");
                    }
                }
                // A key no run holds is never found.
                assert_eq!(set.get(&key(1 << 40 | round)).unwrap(), None);
                // A page holds, in order, every committed key in its bounds,
                // and nothing that is not some run's.
                let lo = key(round) & !(u128::MAX >> 8);
                let reversed = round % 2 == 1;
                let page = set.range(lo, lo | (u128::MAX >> 8), reversed, 1000).unwrap();
                let keys: Vec<u128> = page.iter().map(|e| e.0).collect();
                let mut sorted = keys.clone();
                sorted.sort_unstable();
                if reversed {
                    sorted.reverse();
                }
                assert_eq!(keys, sorted, "in order");
                for (k, v) in &page {
                    assert_eq!(owner(&all, k), Some(*v));
                }
                let expected = all.range(lo..=lo | (u128::MAX >> 8)).filter(|(_, r)| **r < committed).count();
                assert!(page.len() >= expected, "{} of {expected} committed keys", page.len());
                reads += 5;
                round += 1;
            }
            reads
        });
        let compactor = s.spawn(|| {
            let mut compactions = 0u64;
            while !done.load(Ordering::Acquire) {
                match set.compaction() {
                    Some(plan) => compactions += u64::from(plan.run(&set).unwrap()),
                    None => thread::yield_now(),
                }
            }
            compactions
        });
        for r in 0..RUNS {
            let entries = run_entries(r);
            set.add_run(entries.iter().copied(), PER_RUN, r + 1).unwrap();
            added.store(r + 1, Ordering::Release);
        }
        done.store(true, Ordering::Release);
        (reader.join().unwrap(), compactor.join().unwrap())
    });
    eprintln!("threads: {reads} reads and {compactions} compactions beside {RUNS} runs; {} tables", set.tables());
    assert!(compactions > 0 && reads > 0);
    assert_same(&set, &all);
    drop(set);
    assert_same(&open(d.path()), &all);
}

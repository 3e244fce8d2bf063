//! Tier sets: against a model, across crashes at every step, with damaged
//! files, and read from one thread while another writes and compacts.

mod basics;
mod crash;
mod faults;
mod model;
mod threads;

use bursar_store::cache::BlockCache;
use bursar_store::limits::TIERS_RANGE_LIMIT_MAX;
use bursar_store::tiers::Tiers;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type Set = Tiers<u128, u64>;
pub type Model = BTreeMap<u128, u64>;

pub const NAME: &str = "ids";

pub fn cache() -> Arc<BlockCache> {
    Arc::new(BlockCache::new(4 << 20))
}

/// The smallest cache, which keeps nothing: every data block read is counted.
pub fn no_cache() -> Arc<BlockCache> {
    Arc::new(BlockCache::new(bursar_store::limits::CACHE_BYTES_MIN))
}

pub fn open(dir: &Path) -> Set {
    Tiers::open(dir, NAME, cache()).unwrap()
}

/// A well-mixed 64-bit sequence (splitmix64): deterministic random keys.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A random 128-bit key from `i`.
pub fn key(i: u64) -> u128 {
    (u128::from(mix(i)) << 64) | u128::from(mix(i ^ 0x5555_5555_5555_5555))
}

/// Adds `run` (any order: sorted here) and mirrors it in `model`.
pub fn add(set: &Set, model: &mut Model, run: &[(u128, u64)], covered: u64) {
    let sorted: Model = run.iter().copied().collect();
    assert_eq!(sorted.len(), run.len(), "a run's keys are distinct");
    set.add_run(sorted.iter().map(|(k, v)| (*k, *v)), sorted.len() as u64, covered).unwrap();
    model.extend(sorted);
}

/// Runs compactions until none is left; returns how many committed.
pub fn compact_all(set: &Set) -> usize {
    let mut done = 0;
    while let Some(plan) = set.compaction() {
        assert!(plan.run(set).unwrap(), "a lone compaction never gives up");
        done += 1;
    }
    done
}

/// Every entry, paged through `range`.
pub fn dump(set: &Set) -> Vec<(u128, u64)> {
    let mut out: Vec<(u128, u64)> = Vec::new();
    let mut lo = 0u128;
    loop {
        let page = set.range(lo, u128::MAX, false, TIERS_RANGE_LIMIT_MAX).unwrap();
        let full = page.len() == TIERS_RANGE_LIMIT_MAX;
        out.extend(&page);
        match out.last() {
            Some((last, _)) if full && *last < u128::MAX => lo = last + 1,
            _ => return out,
        }
    }
}

/// The set answers as `model`: every entry, and `get` of each.
pub fn assert_same(set: &Set, model: &Model) {
    assert_eq!(dump(set), model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
    for (k, v) in model {
        assert_eq!(set.get(k).unwrap(), Some(*v), "key {k:#x}");
    }
    assert_eq!(set.entries(), model.len() as u64);
}

/// File names in `dir`, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// Paths of the set's table files in `dir`.
pub fn table_paths(dir: &Path) -> Vec<PathBuf> {
    files(dir).into_iter().filter(|n| n.ends_with(".bst")).map(|n| dir.join(n)).collect()
}

/// Copies the files of `from` into a new directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in files(from) {
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

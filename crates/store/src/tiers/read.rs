//! Reads across the live tables: point lookups newest first, and ranges
//! merged in key order (ascending or descending), each over one snapshot
//! of the live set taken when the read starts.

use super::{Live, Tiers};
use crate::error::StoreError;
use crate::limits::TIERS_RANGE_LIMIT_MAX;
use bytemuck::Pod;
use std::cmp::Ordering as Order;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

type Source<'t, K, V> = Box<dyn Iterator<Item = Result<(K, V), StoreError>> + 't>;

impl<K: Pod + Ord + Send + Sync, V: Pod + Send + Sync> Tiers<K, V> {
    /// The value under `key`. Tables are tried newest first; one whose key
    /// range excludes `key` costs two comparisons, one whose filter rules
    /// it out a hash, and only the rest read a data block.
    pub fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        let live = self.live();
        let (mut range_skips, mut filter_skips, mut reads, mut false_positives) = (0, 0, 0, 0);
        let mut found = None;
        for tier in live.tables.iter().rev() {
            let table = &tier.table;
            if *key < table.min_key() || *key > table.max_key() {
                range_skips += 1;
                continue;
            }
            if !table.may_contain(key) {
                filter_skips += 1;
                continue;
            }
            reads += 1;
            found = table.get(key)?;
            if found.is_some() {
                break;
            }
            false_positives += 1;
        }
        let c = &self.counters;
        // Shared counters, touched only when they change (readers on
        // several threads would otherwise fight over their cache lines).
        for (counter, n) in [
            (&c.gets, 1),
            (&c.range_skips, range_skips),
            (&c.filter_skips, filter_skips),
            (&c.table_reads, reads),
            (&c.false_positives, false_positives),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        Ok(found)
    }

    /// At most `limit` entries with keys in `lo..=hi`, ascending, or
    /// descending from `hi` if `reversed`. Reads one data block of each
    /// table whose key range meets the bounds, then one per block used up:
    /// O(limit + tables) block reads. Panics if `limit` exceeds
    /// `TIERS_RANGE_LIMIT_MAX`.
    pub fn range(&self, lo: K, hi: K, reversed: bool, limit: usize) -> Result<Vec<(K, V)>, StoreError> {
        assert!(limit <= TIERS_RANGE_LIMIT_MAX, "a range of {limit} entries, more than {TIERS_RANGE_LIMIT_MAX}");
        if lo > hi || limit == 0 {
            return Ok(Vec::new());
        }
        let live = self.live();
        let mut sources: Vec<Source<'_, K, V>> = Vec::new();
        for tier in &live.tables {
            let table = &tier.table;
            if table.max_key() < lo || table.min_key() > hi {
                continue;
            }
            sources.push(match reversed {
                false => Box::new(table.range(lo..=hi)),
                true => Box::new(table.range_rev(lo..=hi)),
            });
        }
        merge_sources(sources, reversed, limit)
    }
}

impl<K: Pod + Ord, V: Pod> Live<K, V> {
    /// Whether a table holds `key` (no counters: for checks).
    pub(super) fn holds(&self, key: &K) -> Result<bool, StoreError> {
        for tier in &self.tables {
            if tier.table.get(key)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A source's next key, ordered so that the heap's top is the next entry
/// to return: the smallest key ascending, the largest descending.
struct Head<K> {
    key: K,
    source: usize,
    reversed: bool,
}

impl<K: Ord> Ord for Head<K> {
    fn cmp(&self, other: &Self) -> Order {
        let order = self.key.cmp(&other.key).then(self.source.cmp(&other.source));
        if self.reversed { order } else { order.reverse() }
    }
}

impl<K: Ord> PartialOrd for Head<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl<K: Ord> PartialEq for Head<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Order::Equal
    }
}

impl<K: Ord> Eq for Head<K> {}

/// Merges sorted `sources` (each in the range's direction) into at most
/// `limit` entries. Keys are unique across tables (checked in debug builds).
fn merge_sources<K: Pod + Ord, V: Pod>(
    mut sources: Vec<Source<'_, K, V>>,
    reversed: bool,
    limit: usize,
) -> Result<Vec<(K, V)>, StoreError> {
    let mut values: Vec<Option<V>> = vec![None; sources.len()];
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (source, iter) in sources.iter_mut().enumerate() {
        if let Some(next) = iter.next() {
            let (key, value) = next?;
            values[source] = Some(value);
            heap.push(Head { key, source, reversed });
        }
    }
    let mut out: Vec<(K, V)> = Vec::with_capacity(limit.min(1024));
    while out.len() < limit {
        let Some(Head { key, source, .. }) = heap.pop() else { break };
        debug_assert!(out.last().is_none_or(|(k, _)| *k != key), "a key is in two tables");
        out.push((key, values[source].take().expect("a head has its value")));
        if out.len() == limit {
            break;
        }
        if let Some(next) = sources[source].next() {
            let (key, value) = next?;
            values[source] = Some(value);
            heap.push(Head { key, source, reversed });
        }
    }
    Ok(out)
}

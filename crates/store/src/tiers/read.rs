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
    /// descending from `hi` if `reversed`. A table is opened (its first
    /// data block in range read) only once the merge reaches its key
    /// range, then read one block at a time: O(limit + tables) block
    /// reads, and for tables of disjoint key ranges (ids that grow with
    /// time) only the blocks the answer comes from. Panics if `limit`
    /// exceeds `TIERS_RANGE_LIMIT_MAX`.
    pub fn range(&self, lo: K, hi: K, reversed: bool, limit: usize) -> Result<Vec<(K, V)>, StoreError> {
        assert!(limit <= TIERS_RANGE_LIMIT_MAX, "a range of {limit} entries, more than {TIERS_RANGE_LIMIT_MAX}");
        if lo > hi || limit == 0 {
            return Ok(Vec::new());
        }
        let live = self.live();
        let mut sources: Vec<(K, Source<'_, K, V>)> = Vec::new();
        for tier in &live.tables {
            let table = &tier.table;
            if table.max_key() < lo || table.min_key() > hi {
                continue;
            }
            sources.push(match reversed {
                false => (table.min_key().max(lo), Box::new(table.range(lo..=hi))),
                true => (table.max_key().min(hi), Box::new(table.range_rev(lo..=hi))),
            });
        }
        // In the order the merge reaches them (a stable sort: deterministic).
        sources.sort_by(|a, b| if reversed { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
        Merge::new(sources, reversed).take(limit)
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

/// A k-way merge of sorted sources (each in the range's direction),
/// opening each only when the merge reaches its first possible key.
struct Merge<'t, K, V> {
    /// Each source's first possible key, in the order they are reached.
    starts: Vec<K>,
    sources: Vec<Source<'t, K, V>>,
    opened: usize,
    values: Vec<Option<V>>,
    heap: BinaryHeap<Head<K>>,
    reversed: bool,
}

impl<'t, K: Pod + Ord, V: Pod> Merge<'t, K, V> {
    fn new(sources: Vec<(K, Source<'t, K, V>)>, reversed: bool) -> Self {
        let values = vec![None; sources.len()];
        let heap = BinaryHeap::with_capacity(sources.len());
        let (starts, sources) = sources.into_iter().unzip();
        Merge { starts, sources, opened: 0, values, heap, reversed }
    }

    /// The next `limit` entries. Keys are unique across tables (checked in
    /// debug builds).
    fn take(mut self, limit: usize) -> Result<Vec<(K, V)>, StoreError> {
        let mut out: Vec<(K, V)> = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            self.open_reached()?;
            let Some(Head { key, source, .. }) = self.heap.pop() else { break };
            debug_assert!(out.last().is_none_or(|(k, _)| *k != key), "a key is in two tables");
            out.push((key, self.values[source].take().expect("a head has its value")));
            if out.len() < limit {
                self.advance(source)?;
            }
        }
        Ok(out)
    }

    /// Opens every source whose first possible key is not beyond the next
    /// entry: an unopened source then holds only keys after it.
    fn open_reached(&mut self) -> Result<(), StoreError> {
        while self.opened < self.sources.len() {
            let start = &self.starts[self.opened];
            let reached = match self.heap.peek() {
                None => true,
                Some(top) if self.reversed => *start >= top.key,
                Some(top) => *start <= top.key,
            };
            if !reached {
                break;
            }
            self.opened += 1;
            self.advance(self.opened - 1)?;
        }
        Ok(())
    }

    fn advance(&mut self, source: usize) -> Result<(), StoreError> {
        if let Some(next) = self.sources[source].next() {
            let (key, value) = next?;
            self.values[source] = Some(value);
            self.heap.push(Head { key, source, reversed: self.reversed });
        }
        Ok(())
    }
}

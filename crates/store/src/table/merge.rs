//! Merging tables into one, for compaction: a k-way merge over their
//! ranges, one data block of each in memory, equal keys resolved newest
//! first.

use super::range::TableRange;
use super::read::{Lookups, Table};
use super::write::TableWriter;
use crate::error::StoreError;
use crate::limits::{TABLE_ENTRIES_MAX, TABLE_MERGE_INPUTS_MAX};
use bytemuck::Pod;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

/// Merges `inputs`, newest first, into a new table at `path`; where
/// several hold a key, the newest's value wins. Returns the writer with
/// every entry pushed: the caller finishes it.
pub fn merge<K: Pod + Ord, V: Pod>(
    inputs: &[&Table<K, V>],
    path: &Path,
    file_id: u64,
) -> Result<TableWriter<K, V>, StoreError> {
    merge_with(inputs, path, file_id, |_, newer, _| newer)
}

/// Like `merge`, with `resolve(key, newer, older)` choosing the value kept
/// where several inputs hold a key; it is folded from the newest input to
/// the oldest.
///
/// Panics unless there are 1..=`TABLE_MERGE_INPUTS_MAX` inputs holding at
/// most `TABLE_ENTRIES_MAX` entries together.
pub fn merge_with<K: Pod + Ord, V: Pod>(
    inputs: &[&Table<K, V>],
    path: &Path,
    file_id: u64,
    mut resolve: impl FnMut(&K, V, V) -> V,
) -> Result<TableWriter<K, V>, StoreError> {
    assert!(
        (1..=TABLE_MERGE_INPUTS_MAX).contains(&inputs.len()),
        "a merge reads 1..={TABLE_MERGE_INPUTS_MAX} tables, not {}",
        inputs.len()
    );
    let total: u64 = inputs.iter().map(|t| t.len()).sum();
    assert!(total <= TABLE_ENTRIES_MAX, "the inputs hold {total} entries, more than one table's {TABLE_ENTRIES_MAX}");
    // A filter if any input has one: a table for point lookups keeps it.
    let lookups = if inputs.iter().any(|t| t.has_filter()) { Lookups::Points } else { Lookups::RangesOnly };
    let mut writer = TableWriter::new_for(path, file_id, total, lookups)?;
    let mut heads = Heads::new(inputs)?;
    while let Some((key, source)) = heads.pop() {
        let mut value = heads.take(source)?;
        while let Some(older) = heads.pop_equal(&key) {
            let older_value = heads.take(older)?;
            value = resolve(&key, value, older_value);
        }
        writer.push(key, value)?;
    }
    Ok(writer)
}

/// The next entry of each input, ordered by (key, input): for equal keys
/// the newest input comes first. A heap, not a hash map, so the order is
/// deterministic.
struct Heads<'t, K, V> {
    ranges: Vec<TableRange<'t, K, V>>,
    values: Vec<Option<V>>,
    heap: BinaryHeap<Reverse<(K, usize)>>,
}

impl<'t, K: Pod + Ord, V: Pod> Heads<'t, K, V> {
    fn new(inputs: &[&'t Table<K, V>]) -> Result<Self, StoreError> {
        let ranges = inputs.iter().map(|t| t.range(..)).collect();
        let mut heads = Heads { ranges, values: vec![None; inputs.len()], heap: BinaryHeap::new() };
        for source in 0..inputs.len() {
            heads.advance(source)?;
        }
        Ok(heads)
    }

    fn advance(&mut self, source: usize) -> Result<(), StoreError> {
        assert!(self.values[source].is_none(), "an input's head is taken before it advances");
        if let Some(next) = self.ranges[source].next() {
            let (key, value) = next?;
            self.values[source] = Some(value);
            self.heap.push(Reverse((key, source)));
        }
        Ok(())
    }

    fn pop(&mut self) -> Option<(K, usize)> {
        self.heap.pop().map(|Reverse(head)| head)
    }

    /// The next input whose head is `key`, if any.
    fn pop_equal(&mut self, key: &K) -> Option<usize> {
        match self.heap.peek() {
            Some(Reverse((k, _))) if k == key => self.pop().map(|(_, source)| source),
            _ => None,
        }
    }

    /// The value of `source`'s head, moving that input on.
    fn take(&mut self, source: usize) -> Result<V, StoreError> {
        let value = self.values[source].take().expect("a popped head has its value");
        self.advance(source)?;
        Ok(value)
    }
}

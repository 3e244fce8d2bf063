//! Iterating a key range in descending order, one data block in memory at
//! a time: an account's newest transfers first.

use super::Entries;
use super::read::Table;
use crate::cache::Payload;
use crate::error::StoreError;
use bytemuck::Pod;
use std::ops::{Bound, RangeBounds};

/// The entries of a table in a key range, in descending key order. Yields
/// an error once, for the first damaged block it reaches, and nothing after.
pub struct TableRangeRev<'t, K, V> {
    table: &'t Table<K, V>,
    start: Bound<K>,
    end: Bound<K>,
    /// The data block holding, or next to hold, the next entry.
    block: u64,
    payload: Option<Payload>,
    /// Entries of `payload` still to yield: positions `0..at`, from `at - 1` down.
    at: usize,
    /// Whether the first block read still has entries after `end` to skip.
    seek: bool,
    done: bool,
}

impl<'t, K: Pod + Ord, V: Pod> TableRangeRev<'t, K, V> {
    pub(super) fn new<R: RangeBounds<K>>(table: &'t Table<K, V>, range: R) -> Self {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        let (min, max) = (table.min_key(), table.max_key());
        let done = match start {
            Bound::Included(k) => k > max,
            Bound::Excluded(k) => k >= max,
            Bound::Unbounded => false,
        } || match end {
            Bound::Included(k) => k < min,
            Bound::Excluded(k) => k <= min,
            Bound::Unbounded => false,
        };
        let block = match &end {
            Bound::Included(k) | Bound::Excluded(k) => table.block_of(k),
            Bound::Unbounded => table.data_blocks() - 1,
        };
        TableRangeRev { table, start, end, block, payload: None, at: 0, seek: true, done }
    }

    fn after_start(&self, key: &K) -> bool {
        match &self.start {
            Bound::Included(start) => key >= start,
            Bound::Excluded(start) => key > start,
            Bound::Unbounded => true,
        }
    }

    /// Loads the block at `self.block`, positioned after the last entry in range.
    fn load(&mut self) -> Result<(), StoreError> {
        let payload = self.table.data_block(self.block)?;
        let entries = Entries::<K, V>::new(&payload);
        self.at = match (&self.end, self.seek) {
            (Bound::Included(k), true) => entries.seek(k, false),
            (Bound::Excluded(k), true) => entries.seek(k, true),
            _ => entries.len(),
        };
        self.seek = false;
        self.payload = Some(payload);
        Ok(())
    }
}

impl<K: Pod + Ord, V: Pod> Iterator for TableRangeRev<'_, K, V> {
    type Item = Result<(K, V), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(payload) = &self.payload else {
                if let Err(e) = self.load() {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            };
            if self.at == 0 {
                self.payload = None;
                if self.block == 0 {
                    self.done = true;
                    return None;
                }
                self.block -= 1;
                continue;
            }
            let entries = Entries::<K, V>::new(payload);
            let key = entries.key(self.at - 1);
            if !self.after_start(&key) {
                self.done = true;
                return None;
            }
            let value = entries.value(self.at - 1);
            self.at -= 1;
            return Some(Ok((key, value)));
        }
        None
    }
}

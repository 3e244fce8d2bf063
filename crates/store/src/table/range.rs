//! Iterating a key range in order, one data block in memory at a time:
//! how an account's page of transfers is read.

use super::Entries;
use super::read::Table;
use crate::cache::Payload;
use crate::error::StoreError;
use bytemuck::Pod;
use std::ops::{Bound, RangeBounds};

/// The entries of a table in a key range, in key order. Yields an error
/// once, for the first damaged block it reaches, and nothing after it.
pub struct TableRange<'t, K, V> {
    table: &'t Table<K, V>,
    start: Bound<K>,
    end: Bound<K>,
    /// The data block holding, or next to hold, the next entry.
    block: u64,
    payload: Option<Payload>,
    at: usize,
    /// Whether the first block read still has entries before `start` to skip.
    seek: bool,
    done: bool,
}

impl<'t, K: Pod + Ord, V: Pod> TableRange<'t, K, V> {
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
        let block = match &start {
            Bound::Included(k) | Bound::Excluded(k) => table.block_of(k),
            Bound::Unbounded => 0,
        };
        TableRange { table, start, end, block, payload: None, at: 0, seek: true, done }
    }

    fn before_end(&self, key: &K) -> bool {
        match &self.end {
            Bound::Included(end) => key <= end,
            Bound::Excluded(end) => key < end,
            Bound::Unbounded => true,
        }
    }

    /// Loads the block at `self.block`, positioned at the first entry in range.
    fn load(&mut self) -> Result<(), StoreError> {
        let payload = self.table.data_block(self.block)?;
        let entries = Entries::<K, V>::new(&payload);
        self.at = match (&self.start, self.seek) {
            (Bound::Included(k), true) => entries.seek(k, true),
            (Bound::Excluded(k), true) => entries.seek(k, false),
            _ => 0,
        };
        self.seek = false;
        self.payload = Some(payload);
        Ok(())
    }
}

impl<K: Pod + Ord, V: Pod> Iterator for TableRange<'_, K, V> {
    type Item = Result<(K, V), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(payload) = &self.payload else {
                if self.block == self.table.data_blocks() {
                    self.done = true;
                    return None;
                }
                if let Err(e) = self.load() {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            };
            let entries = Entries::<K, V>::new(payload);
            if self.at == entries.len() {
                self.payload = None;
                self.block += 1;
                continue;
            }
            let key = entries.key(self.at);
            if !self.before_end(&key) {
                self.done = true;
                return None;
            }
            let value = entries.value(self.at);
            self.at += 1;
            return Some(Ok((key, value)));
        }
        None
    }
}

//! What the state holds in RAM, structure by structure, for the
//! `bursar_state_memory_bytes{structure}` gauges and the benchmarks: the
//! numbers that show where memory grows with history.
//!
//! Estimates, O(1) each (from lengths and capacities, never a walk), so the
//! engine can publish them every tick: arenas count whole chunks, hash
//! indexes their slots, trees their entries plus `TREE_ENTRY_OVERHEAD`.

use std::mem::size_of;

/// Bytes a balanced-tree entry costs beyond its key and value (node
/// headers, pointers, slack), averaged.
pub const TREE_ENTRY_OVERHEAD: u64 = 24;
/// Bytes of a `Vec`'s header.
pub const VEC_HEADER: u64 = size_of::<Vec<u8>>() as u64;

/// Bytes per structure, in a fixed order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse(pub Vec<(&'static str, u64)>);

impl MemoryUse {
    pub fn add(&mut self, structure: &'static str, bytes: u64) {
        self.0.push((structure, bytes));
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, b)| b).sum()
    }

    pub fn get(&self, structure: &str) -> Option<u64> {
        self.0.iter().find(|(s, _)| *s == structure).map(|(_, b)| *b)
    }
}

/// Estimated bytes of a tree (`BTreeMap`, `OrdMap`) of `len` entries.
pub fn tree_bytes<K, V>(len: usize) -> u64 {
    len as u64 * (size_of::<K>() as u64 + size_of::<V>() as u64 + TREE_ENTRY_OVERHEAD)
}

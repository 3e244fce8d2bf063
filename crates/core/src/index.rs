//! A hash index from 128-bit ids to positions in an arena.
//!
//! Each slot holds only the position and 32 bits of the id's hash (8 bytes),
//! not the id itself: 10 million transfers need ~150 MB of index instead of
//! ~540 MB. The id is compared through the arena, and the stored hash bits let
//! the table grow without touching the arena.

use hashbrown::HashTable;
use std::hash::BuildHasher;

#[derive(Clone, Copy)]
struct Slot {
    position: u32,
    tag: u32,
}

#[derive(Clone)]
pub struct IdIndex {
    table: HashTable<Slot>,
    hasher: foldhash::fast::RandomState,
}

impl Default for IdIndex {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl IdIndex {
    pub fn with_capacity(capacity: usize) -> Self {
        // Random seed: ids are chosen by clients, so a fixed hash would let one
        // craft collisions. Nothing observable depends on the table's order.
        IdIndex { table: HashTable::with_capacity(capacity), hasher: foldhash::fast::RandomState::default() }
    }

    #[inline]
    fn tag(&self, id: u128) -> u32 {
        (self.hasher.hash_one(id) >> 32) as u32
    }

    /// The table hash rebuilt from the stored tag: low bits pick the bucket,
    /// high bits are the control byte.
    #[inline]
    fn table_hash(tag: u32) -> u64 {
        (u64::from(tag) << 32) | u64::from(tag)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The position of `id`; `id_at` reads the id stored at a position.
    #[inline]
    pub fn find(&self, id: u128, id_at: impl Fn(u32) -> u128) -> Option<u32> {
        let tag = self.tag(id);
        self.table.find(Self::table_hash(tag), |s| s.tag == tag && id_at(s.position) == id).map(|s| s.position)
    }

    /// Adds `id` at `position`. The caller has checked that `id` is absent.
    #[inline]
    pub fn insert(&mut self, id: u128, position: u32) {
        let tag = self.tag(id);
        self.table.insert_unique(Self::table_hash(tag), Slot { position, tag }, |s| Self::table_hash(s.tag));
    }

    /// Removes `id`, which must be at `position` (undo of an insert).
    pub fn remove(&mut self, id: u128, position: u32) {
        let tag = self.tag(id);
        match self.table.find_entry(Self::table_hash(tag), |s| s.position == position) {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => panic!("invariant: id {id} is indexed at position {position}"),
        }
    }

    pub fn reserve(&mut self, additional: usize) {
        self.table.reserve(additional, |s| Self::table_hash(s.tag));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_insert_remove() {
        let ids: Vec<u128> = (0..10_000u128).map(|i| i * 7919 + (i << 100)).collect();
        let mut index = IdIndex::default();
        for (p, id) in ids.iter().enumerate() {
            assert_eq!(index.find(*id, |p| ids[p as usize]), None);
            index.insert(*id, p as u32);
        }
        assert_eq!(index.len(), ids.len());
        for (p, id) in ids.iter().enumerate() {
            assert_eq!(index.find(*id, |p| ids[p as usize]), Some(p as u32));
        }
        assert_eq!(index.find(12345678, |p| ids[p as usize]), None);
        index.remove(ids[42], 42);
        assert_eq!(index.find(ids[42], |p| ids[p as usize]), None);
        assert_eq!(index.find(ids[43], |p| ids[p as usize]), Some(43));
    }
}

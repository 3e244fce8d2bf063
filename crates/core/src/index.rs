//! A hash index from 128-bit ids to positions in an arena.
//!
//! - **Compact.** A slot holds the position and 32 bits of the id's hash
//!   (8 bytes), not the id: 10 million transfers need ~128 MiB of index
//!   rather than ~540 MiB. Ids are compared through the arena, and the
//!   stored hash bits decide a slot's bucket, so growing never reads the
//!   arena.
//! - **No stalls.** Growing allocates a table twice the size and moves the
//!   old one over a few buckets per insert, so no insert ever rehashes
//!   millions of entries at once (a hashbrown rehash at 8 M entries stalls a
//!   batch for ~0.5 s). Lookups check the new table, then the old one.
//! - **Prefetchable.** The engine prefetches the buckets of the next events
//!   of a batch, hiding the cache miss that dominates lookups in a large
//!   table.
//!
//! Linear probing at a load factor of at most 3/4. Removal (only for
//! rolling back a linked chain) shifts entries back in the current table and
//! leaves a tombstone in a table being drained.

use std::hash::BuildHasher;

/// Largest position the index can hold.
pub const POSITION_MAX: u32 = u32::MAX - 2;
/// Old buckets moved per insert while growing. A table grows at 3/4 full,
/// so it is drained after capacity/8 inserts; the new table is then at most
/// (3/4 + 1/8)/2 full.
const MIGRATE_PER_INSERT: usize = 8;
const CAPACITY_MIN: usize = 16;

/// A slot: the hash tag in the high 32 bits, position + 1 in the low 32.
/// All-zero is empty, so a new table is zeroed memory that the kernel maps
/// lazily: growing to 16 M slots costs no 128 MiB memset in one batch.
type Slot = u64;
const EMPTY: Slot = 0;
/// Low half of a slot whose entry was removed from a table being drained.
const TOMBSTONE: u32 = u32::MAX;

#[inline]
fn slot(tag: u32, position: u32) -> Slot {
    (u64::from(tag) << 32) | u64::from(position + 1)
}

#[inline]
fn tag_of(s: Slot) -> u32 {
    (s >> 32) as u32
}

#[inline]
fn low(s: Slot) -> u32 {
    s as u32
}

/// The position in a live slot (neither empty nor a tombstone).
#[inline]
fn position_of(s: Slot) -> u32 {
    low(s) - 1
}

#[inline]
fn is_live(s: Slot) -> bool {
    low(s) != 0 && low(s) != TOMBSTONE
}

struct Table {
    slots: Vec<Slot>,
    mask: usize,
    /// Live slots (tombstones excluded).
    len: usize,
}

impl Table {
    fn new(capacity: usize) -> Table {
        let capacity = capacity.max(CAPACITY_MIN).next_power_of_two();
        // vec![0; n] allocates zeroed memory without touching it.
        let slots = vec![EMPTY; capacity];
        crate::mem::advise_huge_pages(slots.as_ptr() as *const u8, capacity * std::mem::size_of::<Slot>());
        Table { slots, mask: capacity - 1, len: 0 }
    }

    #[inline]
    fn bucket(&self, tag: u32) -> usize {
        // Fibonacci hashing spreads the tag's bits over any table size.
        (u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    fn is_full(&self) -> bool {
        (self.len + 1) * 4 > self.slots.len() * 3
    }

    #[inline]
    fn find(&self, tag: u32, matches: impl Fn(u32) -> bool) -> Option<(usize, u32)> {
        let mut i = self.bucket(tag);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if tag_of(s) == tag && is_live(s) && matches(position_of(s)) {
                return Some((i, position_of(s)));
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    fn insert(&mut self, s: Slot) {
        let mut i = self.bucket(tag_of(s));
        while self.slots[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = s;
        self.len += 1;
    }

    /// Removes slot `i`, shifting later entries of its cluster back so that
    /// no lookup stops early.
    fn remove_shifting(&mut self, mut i: usize) {
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let home = self.bucket(tag_of(s));
            // Move s back to i unless its home lies cyclically in (i, j].
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = EMPTY;
    }

    #[inline]
    fn prefetch(&self, tag: u32) {
        crate::mem::prefetch(&self.slots[self.bucket(tag)] as *const Slot as *const u8);
    }
}

/// Writes a slot's own value back through a volatile write, which faults
/// its page in.
#[inline]
fn touch(slot: &mut Slot) {
    let v = *slot;
    // SAFETY: `slot` is a valid, aligned, exclusive reference.
    unsafe { std::ptr::write_volatile(slot, v) };
}

pub struct IdIndex {
    table: Table,
    /// The table `table` will grow into, allocated at 5/8 load and faulted
    /// in a few pages per insert: first-touching 128 MiB of fresh memory in
    /// one batch stalls it for ~0.3 s.
    next: Option<Table>,
    /// Next slot of `next` to touch.
    touched: usize,
    /// The table being drained into `table` while growing.
    old: Option<Table>,
    /// Next bucket of `old` to move.
    cursor: usize,
    hasher: foldhash::fast::RandomState,
}

impl Default for IdIndex {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl IdIndex {
    /// An index that holds `capacity` ids before it first grows.
    pub fn with_capacity(capacity: usize) -> Self {
        // Random seed: ids are chosen by clients, so a fixed hash would let
        // one craft collisions. Nothing observable depends on slot order.
        IdIndex {
            table: Table::new(capacity.saturating_mul(4) / 3 + 1),
            next: None,
            touched: 0,
            old: None,
            cursor: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    #[inline]
    fn tag(&self, id: u128) -> u32 {
        (self.hasher.hash_one(id) >> 32) as u32
    }

    /// Bytes of slots held (the table, and the next or old one while
    /// growing), for memory gauges.
    pub fn heap_bytes(&self) -> u64 {
        let slots = |t: &Option<Table>| t.as_ref().map_or(0, |t| t.slots.len());
        ((self.table.slots.len() + slots(&self.next) + slots(&self.old)) * std::mem::size_of::<Slot>()) as u64
    }

    pub fn len(&self) -> usize {
        self.table.len + self.old.as_ref().map_or(0, |t| t.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position of `id`; `id_at` reads the id stored at a position.
    #[inline]
    pub fn find(&self, id: u128, id_at: impl Fn(u32) -> u128) -> Option<u32> {
        let tag = self.tag(id);
        let matches = |p: u32| id_at(p) == id;
        if let Some((_, p)) = self.table.find(tag, matches) {
            return Some(p);
        }
        self.old.as_ref().and_then(|old| old.find(tag, matches)).map(|(_, p)| p)
    }

    /// Starts loading the bucket `id` would be in, ahead of a lookup.
    #[inline]
    pub fn prefetch(&self, id: u128) {
        let tag = self.tag(id);
        self.table.prefetch(tag);
        if let Some(old) = &self.old {
            old.prefetch(tag);
        }
    }

    /// Adds `id` at `position`. The caller has checked that `id` is absent.
    #[inline]
    pub fn insert(&mut self, id: u128, position: u32) {
        assert!(position <= POSITION_MAX, "position {position} exceeds the index's range");
        self.migrate_some();
        self.prepare_growth();
        if self.table.is_full() {
            self.grow();
        }
        let tag = self.tag(id);
        self.table.insert(slot(tag, position));
    }

    /// From 5/8 load on, allocates the next table and touches a little of
    /// it per insert, so that all of it is mapped by the time it is needed
    /// (at 3/4 load: capacity/8 inserts later).
    fn prepare_growth(&mut self) {
        if self.old.is_some() || self.table.len * 8 < self.table.slots.len() * 5 {
            return;
        }
        let capacity = self.table.slots.len() * 2;
        let next = self.next.get_or_insert_with(|| Table::new(capacity));
        // One touch per 32 slots per insert: the 2·capacity slots are all
        // touched within capacity/16 inserts, well before 3/4 load.
        if self.touched < next.slots.len() {
            touch(&mut next.slots[self.touched]);
            self.touched += 32;
        }
    }

    fn grow(&mut self) {
        assert!(self.old.is_none(), "invariant: a table is drained before it fills again");
        let capacity = self.table.slots.len() * 2;
        let bigger = match self.next.take() {
            Some(next) if next.slots.len() == capacity => next,
            _ => Table::new(capacity),
        };
        self.touched = 0;
        self.old = Some(std::mem::replace(&mut self.table, bigger));
        self.cursor = 0;
    }

    fn migrate_some(&mut self) {
        let Some(old) = &mut self.old else { return };
        let end = (self.cursor + MIGRATE_PER_INSERT).min(old.slots.len());
        for i in self.cursor..end {
            let s = old.slots[i];
            if is_live(s) {
                self.table.insert(s);
                // A tombstone, not EMPTY: lookups of entries not moved yet
                // must still probe past this slot, and a moved entry must
                // not be found here again after it is removed from `table`.
                old.slots[i] = (s & !u64::from(u32::MAX)) | u64::from(TOMBSTONE);
                old.len -= 1;
            }
        }
        self.cursor = end;
        if self.cursor == old.slots.len() {
            debug_assert_eq!(old.len, 0);
            self.old = None;
        }
    }

    /// Removes `id`, which must be at `position` (undo of an insert).
    pub fn remove(&mut self, id: u128, position: u32) {
        let tag = self.tag(id);
        let at = |p: u32| p == position;
        if let Some((i, _)) = self.table.find(tag, at) {
            self.table.remove_shifting(i);
            return;
        }
        let old = self.old.as_mut().unwrap_or_else(|| panic!("invariant: id {id} is indexed at {position}"));
        let (i, _) = old.find(tag, at).unwrap_or_else(|| panic!("invariant: id {id} is indexed at {position}"));
        // Shifting could move an entry behind the drain cursor: leave a
        // tombstone instead (the table is dropped once drained).
        old.slots[i] = (old.slots[i] & !u64::from(u32::MAX)) | u64::from(TOMBSTONE);
        old.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn find_insert_remove_across_growth() {
        let ids: Vec<u128> = (0..50_000u128).map(|i| i * 7919 + (i << 100)).collect();
        let mut index = IdIndex::default();
        for (p, id) in ids.iter().enumerate() {
            assert_eq!(index.find(*id, |p| ids[p as usize]), None);
            index.insert(*id, p as u32);
            assert_eq!(index.find(*id, |p| ids[p as usize]), Some(p as u32));
        }
        assert_eq!(index.len(), ids.len());
        for (p, id) in ids.iter().enumerate() {
            assert_eq!(index.find(*id, |p| ids[p as usize]), Some(p as u32), "id {id}");
        }
        assert_eq!(index.find(12345678, |p| ids[p as usize]), None);
        index.remove(ids[42], 42);
        assert_eq!(index.find(ids[42], |p| ids[p as usize]), None);
        assert_eq!(index.find(ids[43], |p| ids[p as usize]), Some(43));
    }

    /// Random inserts and removes, checked against a HashMap, with a tiny
    /// id space to force long clusters, tombstones and removals mid-growth.
    #[test]
    fn matches_a_hash_map_under_churn() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut index = IdIndex::default();
        let mut model: HashMap<u128, u32> = HashMap::new();
        // The arena: position -> id (positions are never reused here).
        let mut arena: Vec<u128> = Vec::new();
        let mut live: Vec<(u128, u32)> = Vec::new();
        for step in 0..200_000 {
            let id = u128::from(next() % 40_000) + 1;
            if next() % 4 != 0 || live.is_empty() {
                if model.contains_key(&id) {
                    continue;
                }
                let p = arena.len() as u32;
                arena.push(id);
                index.insert(id, p);
                model.insert(id, p);
                live.push((id, p));
            } else {
                let k = (next() as usize) % live.len();
                let (id, p) = live.swap_remove(k);
                index.remove(id, p);
                model.remove(&id);
            }
            if step % 1000 == 0 {
                for (id, p) in &model {
                    assert_eq!(index.find(*id, |q| arena[q as usize]), Some(*p), "step {step} id {id}");
                }
                assert_eq!(index.len(), model.len());
            }
            let probe = u128::from(next() % 40_000) + 1;
            assert_eq!(index.find(probe, |q| arena[q as usize]), model.get(&probe).copied(), "step {step}");
        }
    }
}

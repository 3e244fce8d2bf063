//! Id lookups over the whole history without an in-RAM index of every id.
//!
//! Records are appended at increasing positions and never move, so the ids
//! split by position. Those below `covered` are in stored tables
//! ([`StoredIds`]: built by the engine from history a durable snapshot
//! already holds, on disk behind key-range checks and filters, so a new id
//! almost never costs a read). The rest are in RAM *generations*: one hash
//! index per span of positions, the newest taking the inserts. Once stored
//! tables cover a generation's whole span, the generation is dropped, so
//! RAM holds the ids since the last stored run, not the history.
//!
//! Every answer is the same whichever part holds an id: lookups check the
//! generations newest first, then the tables, and the parts agree on every
//! id they both hold (a generation partly covered by a run keeps its ids;
//! they are the same positions). How history is split is therefore not part
//! of the state: replicas may split it differently and still agree.
//!
//! Positions are `u64`; each generation stores them relative to its base,
//! so an index slot stays 8 bytes.

use crate::arena::ChunkReadError;
use crate::index::{IdIndex, POSITION_MAX};
use crate::limits::ID_GENERATIONS_MAX;
use std::sync::Arc;

/// Ids of records below [`StoredIds::covered`], held on disk.
pub trait StoredIds: Send + Sync {
    /// Every record below this position is in the tables.
    fn covered(&self) -> u64;

    /// The position of `id` among the covered records.
    fn find(&self, id: u128) -> Result<Option<u64>, ChunkReadError>;

    /// Bytes of RAM the tables hold (filters, sparse indexes), for gauges.
    fn memory_bytes(&self) -> u64;
}

/// A span of positions from `base` on, indexed in RAM.
struct Generation {
    base: u64,
    index: IdIndex,
}

/// Position by id over every record (see the module docs).
pub struct Ids {
    /// Oldest first; never empty; bases strictly increase.
    generations: Vec<Generation>,
    stored: Option<Arc<dyn StoredIds>>,
}

impl Default for Ids {
    fn default() -> Self {
        Ids::with_capacity(0, 0)
    }
}

impl Ids {
    /// Ids of records from position `base` on, room for `capacity` of them
    /// before the index first grows.
    pub fn with_capacity(base: u64, capacity: usize) -> Ids {
        Ids { generations: vec![Generation { base, index: IdIndex::with_capacity(capacity) }], stored: None }
    }

    /// The position of `id`; `id_at` reads the id of the record at a
    /// position (a record the state holds). A stored table that cannot be
    /// read is a storage fault the state cannot apply around: it panics,
    /// naming the fault (see `arena` for the same rule on cold chunks).
    #[inline]
    pub fn find(&self, id: u128, id_at: impl Fn(u64) -> u128) -> Option<u64> {
        for g in self.generations.iter().rev() {
            if let Some(p) = g.index.find(id, |rel| id_at(g.base + u64::from(rel))) {
                return Some(g.base + u64::from(p));
            }
        }
        let stored = self.stored.as_ref()?;
        match stored.find(id) {
            Ok(found) => {
                debug_assert!(found.is_none_or(|p| p < stored.covered() && id_at(p) == id));
                found
            }
            Err(e) => panic!("storage fault: the stored index of ids cannot be read: {e}"),
        }
    }

    /// Starts loading the buckets `id` would be in, in every generation
    /// (a new id is looked up in all of them).
    #[inline]
    pub fn prefetch(&self, id: u128) {
        for g in &self.generations {
            g.index.prefetch(id);
        }
    }

    /// Adds `id` at `position`, past every position held. The caller has
    /// checked that `id` is absent.
    ///
    /// A generation spans at most `POSITION_MAX` positions; past that a new
    /// one starts whatever `ID_GENERATIONS_MAX` says, so history is never
    /// capped (only a state that never stores tables, such as a replay of
    /// billions of records in RAM, gets there).
    #[inline]
    pub fn insert(&mut self, id: u128, position: u64) {
        let base = self.newest().base;
        let rel = position.checked_sub(base).expect("invariant: a new record is past the newest generation's base");
        if rel > u64::from(POSITION_MAX) {
            self.generations.push(Generation { base: position, index: IdIndex::default() });
            return self.insert(id, position);
        }
        self.newest_mut().index.insert(id, rel as u32);
    }

    /// Removes `id`, which was inserted at `position` in this entry (undo).
    pub fn remove(&mut self, id: u128, position: u64) {
        let g = self.newest_mut();
        let rel = position.checked_sub(g.base).expect("invariant: undo removes what the newest generation took");
        g.index.remove(id, rel as u32);
    }

    /// Starts a new generation for records from `position` (the next one)
    /// on, so that the current one can be dropped once stored tables cover
    /// it. Nothing happens if the newest generation is empty, or if
    /// `ID_GENERATIONS_MAX` are held (the newest then keeps growing: the
    /// stored runs are behind, and lookups should not probe ever more
    /// generations).
    pub fn seal(&mut self, position: u64) {
        let newest = self.newest();
        assert!(position >= newest.base, "invariant: generations start in position order");
        if newest.index.is_empty() || self.generations.len() >= ID_GENERATIONS_MAX {
            return;
        }
        self.generations.push(Generation { base: position, index: IdIndex::default() });
    }

    /// Hands the ids below `stored.covered()` over to stored tables: the
    /// generations entirely below drop out of RAM. `covered` must not go
    /// back (the tables only grow) and must not pass `end`, the position
    /// of the next record.
    pub fn install(&mut self, stored: Arc<dyn StoredIds>, end: u64) {
        let covered = stored.covered();
        assert!(covered <= end, "invariant: stored ids cover only records that exist ({covered} > {end})");
        if let Some(old) = &self.stored {
            assert!(covered >= old.covered(), "invariant: stored ids never cover less than before");
        }
        // Generation i spans [base_i, base_{i+1}); the newest stays.
        let spans_covered = self.generations.windows(2).take_while(|w| w[1].base <= covered).count();
        self.generations.drain(..spans_covered);
        self.stored = Some(stored);
        assert!(!self.generations.is_empty(), "invariant: the newest generation stays");
    }

    /// Below this position, ids come from stored tables (0: none).
    pub fn covered(&self) -> u64 {
        self.stored.as_ref().map_or(0, |s| s.covered())
    }

    /// Ids held in RAM.
    pub fn len_in_memory(&self) -> usize {
        self.generations.iter().map(|g| g.index.len()).sum()
    }

    /// RAM generations held.
    pub fn generations(&self) -> usize {
        self.generations.len()
    }

    /// Bytes of RAM held: the generations' slots and the tables' filters.
    pub fn heap_bytes(&self) -> u64 {
        let stored = self.stored.as_ref().map_or(0, |s| s.memory_bytes());
        self.generations.iter().map(|g| g.index.heap_bytes()).sum::<u64>() + stored
    }

    fn newest(&self) -> &Generation {
        self.generations.last().expect("invariant: there is always a newest generation")
    }

    fn newest_mut(&mut self) -> &mut Generation {
        self.generations.last_mut().expect("invariant: there is always a newest generation")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Stored ids in memory: the first `covered` records of an arena.
    struct Table {
        by_id: BTreeMap<u128, u64>,
        covered: u64,
    }

    impl StoredIds for Table {
        fn covered(&self) -> u64 {
            self.covered
        }
        fn find(&self, id: u128) -> Result<Option<u64>, ChunkReadError> {
            Ok(self.by_id.get(&id).copied())
        }
        fn memory_bytes(&self) -> u64 {
            0
        }
    }

    fn table(arena: &[u128], covered: u64) -> Arc<Table> {
        let by_id = arena[..covered as usize].iter().enumerate().map(|(p, id)| (*id, p as u64)).collect();
        Arc::new(Table { by_id, covered })
    }

    #[test]
    fn lookups_agree_however_history_is_split() {
        let arena: Vec<u128> = (0..10_000u128).map(|i| (i * 0x9E37_79B9) ^ (i << 70)).collect();
        let mut ids = Ids::default();
        let mut end = 0u64;
        for (p, id) in arena.iter().enumerate() {
            ids.insert(*id, p as u64);
            end = p as u64 + 1;
            if p % 997 == 0 {
                ids.seal(end);
            }
            if p % 2_500 == 2_499 {
                // A run covering everything up to a point between seals.
                ids.install(table(&arena, end - 300), end);
            }
        }
        assert!(ids.generations() < ID_GENERATIONS_MAX);
        assert!(ids.len_in_memory() < arena.len(), "covered generations left RAM");
        for (p, id) in arena.iter().enumerate() {
            assert_eq!(ids.find(*id, |q| arena[q as usize]), Some(p as u64), "id {id}");
        }
        assert_eq!(ids.find(7, |q| arena[q as usize]), None);
        // Undo in the newest generation.
        let last = *arena.last().unwrap();
        ids.remove(last, end - 1);
        assert_eq!(ids.find(last, |q| arena[q as usize]), None);
    }

    #[test]
    fn seals_stop_at_the_limit_and_covered_never_goes_back() {
        let mut ids = Ids::default();
        for p in 0..(ID_GENERATIONS_MAX as u64 + 5) {
            ids.insert(u128::from(p) + 1, p);
            ids.seal(p + 1);
        }
        assert_eq!(ids.generations(), ID_GENERATIONS_MAX);
        let arena: Vec<u128> = (1..=ID_GENERATIONS_MAX as u128 + 5).collect();
        ids.install(table(&arena, 10), arena.len() as u64);
        assert_eq!(ids.covered(), 10);
        let back = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ids.install(table(&arena, 5), arena.len() as u64);
        }));
        assert!(back.is_err(), "covering less than before is a bug");
    }

    #[test]
    fn positions_beyond_a_generation_span_start_a_new_one() {
        let far = [0, 5, u64::from(POSITION_MAX), u64::from(POSITION_MAX) + 1, 3 << 33, (3 << 33) + 1, 1 << 50];
        let at = |q: u64| far.iter().position(|p| *p == q).map_or(0, |i| i as u128 + 100);
        let mut ids = Ids::default();
        for (i, p) in far.iter().enumerate() {
            ids.insert(i as u128 + 100, *p);
        }
        assert!(ids.generations() >= 3, "every jump past a span starts a generation");
        for (i, p) in far.iter().enumerate() {
            assert_eq!(ids.find(i as u128 + 100, at), Some(*p));
        }
        ids.remove(far.len() as u128 + 99, 1 << 50);
        assert_eq!(ids.find(far.len() as u128 + 99, at), None);
        assert_eq!(ids.find(100, at), Some(0));
    }
}

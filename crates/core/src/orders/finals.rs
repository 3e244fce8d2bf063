//! Final orders: history on disk, like the ledger's records.
//!
//! Once an order reaches a terminal state no command moves it again (its
//! money is settled), so in the same apply it leaves the open book and is
//! appended here: its encoded entry (order, then timeline) to `bytes`, and
//! a fixed-size [`FinalRef`] (id, state, change sequence, offset) to
//! `refs`. Both are arenas whose full chunks go cold after a durable
//! snapshot (`state::COLD_SECTIONS`), so RAM holds open orders and the
//! final orders since the last stored index run, not the history.
//!
//! A final order is frozen: a later command to it is refused as its state
//! refuses every command, and not recorded on its timeline (the refusal is
//! still in the reply and the audit trail). Otherwise a key could grow a
//! final order's record forever, and an append-only record would have to
//! be rewritten.
//!
//! Lookups by id and pages by (state, id) read stored tables built by the
//! engine's indexer ([`StoredOrders`], as `state::ids` does for transfers)
//! for final orders below their coverage, and RAM maps for the rest. The
//! change feed needs no index: an order's last change is the one that made
//! it final, so `refs` is already in change order and a binary search
//! finds where a page starts.

use super::book::{OrderEntry, TimelineEvent};
use super::records::{Order, OrderState};
use crate::arena::{ArenaView, ChunkData, ChunkReader, CowArena, StoredChunk};
use crate::error::DecodeError;
pub use crate::final_index::{NoStoredOrders, StoredOrders};
use crate::limits::TIMELINE_MAX;
use crate::state::chunk_shift;
use bytemuck::{Pod, Zeroable};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Where a final order's entry is, and what lists it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FinalRef {
    pub id: u128,
    /// Its last change sequence: strictly increasing along `refs`.
    pub seq: u64,
    /// Start of its entry in `bytes`.
    pub offset: u64,
    pub state: u8,
    pub reserved: [u8; 15],
}

const _: () = assert!(std::mem::size_of::<FinalRef>() == 48);

/// 384 KiB chunks (8 refs with `small-chunks`).
pub(crate) type FinalRefs = CowArena<FinalRef, { chunk_shift(13) }>;
/// 1 MiB chunks of encoded entries (8 bytes with `small-chunks`, so
/// entries span chunks).
pub(crate) type FinalBytes = CowArena<u8, { chunk_shift(20) }>;

/// The most bytes one encoded entry can take: the order, its dropped-event
/// count, and a full timeline of events with the longest reasons. Bounds
/// what a damaged offset can make a read allocate.
const ENTRY_BYTES_MAX: usize = Order::SIZE + 4 + 4 + (TIMELINE_MAX + 16) * (38 + 1 + u8::MAX as usize);

#[derive(Default)]
pub struct FinalOrders {
    refs: FinalRefs,
    bytes: FinalBytes,
    /// Final orders from `recent_from` on: id → index, and by (state, id).
    recent: BTreeMap<u128, u64>,
    recent_by_state: BTreeSet<(u8, u128)>,
    /// What the stored tables covered when installed (0: none).
    recent_from: u64,
    stored: Option<Arc<dyn StoredOrders>>,
}

impl FinalOrders {
    pub fn len(&self) -> u64 {
        self.refs.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// RAM held: hot chunks, the recent maps (estimated) and the tables'.
    pub fn heap_bytes(&self) -> u64 {
        let recent = crate::memory::tree_bytes::<u128, u64>(self.recent.len())
            + crate::memory::tree_bytes::<(u8, u128), ()>(self.recent_by_state.len());
        let stored = self.stored.as_ref().map_or(0, |s| s.memory_bytes());
        self.refs.heap_bytes() + self.bytes.heap_bytes() + recent + stored
    }

    pub fn cold_chunks(&self) -> usize {
        self.refs.cold_chunks() + self.bytes.cold_chunks()
    }

    /// Below this index, final orders are found through stored tables.
    pub fn covered(&self) -> u64 {
        self.recent_from
    }

    /// Final orders held in RAM maps (not yet covered by stored tables).
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// Appends `entry`, which just became final: its last change is the
    /// newest of all, and no final order has its id.
    pub fn push(&mut self, entry: &OrderEntry) {
        let o = &entry.order;
        assert!(o.state().is_terminal(), "invariant: only terminal orders are final");
        if let Some(last) = self.last_ref() {
            assert!(o.change_seq > last.seq, "invariant: orders become final in change order");
        }
        let index = self.len();
        let offset = self.bytes.len() as u64;
        let mut encoded = Vec::with_capacity(Order::SIZE + 8 + entry.timeline.len() * 48);
        encode_entry(entry, &mut encoded);
        self.bytes.extend_from_slice(&encoded);
        self.refs.push(FinalRef { id: o.id, seq: o.change_seq, offset, state: o.state, reserved: [0; 15] });
        assert!(self.recent.insert(o.id, index).is_none(), "invariant: an order becomes final once");
        self.recent_by_state.insert((o.state, o.id));
    }

    fn last_ref(&self) -> Option<FinalRef> {
        (!self.refs.is_empty()).then(|| self.refs.get(self.refs.len() - 1))
    }

    /// The newest final order's last change.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_ref().map(|r| r.seq)
    }

    /// The index of final order `id`. A stored table that cannot be read
    /// is a storage fault the state cannot apply around: it panics, naming
    /// it (the rule for cold chunks, see `arena`).
    pub fn find(&self, id: u128) -> Option<u64> {
        if let Some(index) = self.recent.get(&id) {
            return Some(*index);
        }
        let stored = self.stored.as_ref()?;
        match stored.find(id) {
            Ok(found) => {
                let found = found.filter(|i| *i < self.recent_from);
                debug_assert!(found.is_none_or(|i| self.refs.get(i as usize).id == id));
                found
            }
            Err(e) => panic!("storage fault: the stored index of final orders cannot be read: {e}"),
        }
    }

    /// Final order `id` with its timeline.
    pub fn get(&self, id: u128) -> Option<OrderEntry> {
        self.find(id).map(|i| self.entry(i))
    }

    /// The entry at `index`; the state wrote it, so it decodes.
    pub fn entry(&self, index: u64) -> OrderEntry {
        self.try_entry(index).unwrap_or_else(|e| panic!("invariant: final order {index} decodes: {e}"))
    }

    /// The order at `index` without its timeline (a page reads only this).
    pub fn order(&self, index: u64) -> Order {
        let r = self.refs.get(index as usize);
        let mut bytes = [0u8; Order::SIZE];
        self.bytes.copy_range(r.offset as usize, &mut bytes);
        bytemuck::pod_read_unaligned(&bytes)
    }

    /// The order at `index` as far as its ref knows it: id, state and last
    /// change; every other field zero. What a feed summary of a final
    /// order carries (see `OrderFilter::pii_states`), at a ref's read.
    pub fn order_from_ref(&self, index: u64) -> Order {
        let r = self.refs.get(index as usize);
        Order { id: r.id, state: r.state, change_seq: r.seq, ..Zeroable::zeroed() }
    }

    fn try_entry(&self, index: u64) -> Result<OrderEntry, DecodeError> {
        let (start, end) = self.bounds(index)?;
        let mut bytes = vec![0u8; end - start];
        self.bytes.copy_range(start, &mut bytes);
        let mut c = crate::cursor::Cursor::new(&bytes);
        let entry = decode_entry(&mut c)?;
        c.finish()?;
        let r = self.refs.get(index as usize);
        let o = &entry.order;
        if (o.id, o.state, o.change_seq) != (r.id, r.state, r.seq) || r.reserved != [0; 15] {
            return Err(DecodeError::InvalidOrStoredTwice { what: "final order", id: r.id });
        }
        Ok(entry)
    }

    /// Where entry `index` lies in `bytes`, checked against the arena.
    fn bounds(&self, index: u64) -> Result<(usize, usize), DecodeError> {
        let i = index as usize;
        let start = self.refs.get(i).offset;
        let end = if i + 1 < self.refs.len() { self.refs.get(i + 1).offset } else { self.bytes.len() as u64 };
        let id = self.refs.get(i).id;
        if start > end || end > self.bytes.len() as u64 || (end - start) as usize > ENTRY_BYTES_MAX {
            return Err(DecodeError::InvalidOrStoredTwice { what: "final order", id });
        }
        Ok((start as usize, end as usize))
    }

    /// (id, index) of final orders with ids above `after`, in `state` (0:
    /// any), ascending, at most `limit`: the RAM maps and the stored
    /// tables merged.
    pub fn page(&self, state: u8, after: u128, limit: usize) -> Vec<(u128, u64)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut found: BTreeMap<u128, u64> = if state == 0 {
            self.recent.range((Excluded(after), Unbounded)).take(limit).map(|(id, i)| (*id, *i)).collect()
        } else {
            self.recent_by_state
                .range((Excluded((state, after)), Unbounded))
                .take_while(|(s, _)| *s == state)
                .take(limit)
                .map(|(_, id)| (*id, self.recent[id]))
                .collect()
        };
        if let Some(stored) = &self.stored {
            match stored.page(state, after, limit) {
                // Entries past what was installed are also in the RAM maps.
                Ok(rows) => found.extend(rows.into_iter().filter(|(_, i)| *i < self.recent_from)),
                Err(e) => panic!("storage fault: the stored index of final orders cannot be read: {e}"),
            }
        }
        found.into_iter().take(limit).collect()
    }

    /// (seq, index) of final orders whose last change is after `after_seq`,
    /// in change order, at most `limit`.
    pub fn changes_after(&self, after_seq: u64, limit: usize) -> Vec<(u64, u64)> {
        let (mut lo, mut hi) = (0, self.refs.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.refs.get(mid).seq <= after_seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo..self.refs.len().min(lo.saturating_add(limit))).map(|i| (self.refs.get(i).seq, i as u64)).collect()
    }

    /// Hands the final orders below `stored.covered()` over to stored
    /// tables: they leave the RAM maps. Coverage never goes back and never
    /// passes what exists.
    pub fn install(&mut self, stored: Arc<dyn StoredOrders>) {
        let covered = stored.covered();
        assert!(covered <= self.len(), "invariant: stored final orders cover only what exists");
        assert!(covered >= self.recent_from, "invariant: stored final orders never cover less than before");
        for i in self.recent_from..covered {
            let r = self.refs.get(i as usize);
            self.recent.remove(&r.id);
            self.recent_by_state.remove(&(r.state, r.id));
        }
        self.recent_from = covered;
        self.stored = Some(stored);
    }

    pub(crate) fn views(&self) -> (ArenaView<FinalRef>, ArenaView<u8>) {
        (self.refs.view(), self.bytes.view())
    }

    pub(crate) fn set_reader(&mut self, reader: Arc<dyn ChunkReader>) {
        self.refs.set_reader(reader.clone());
        self.bytes.set_reader(reader);
    }

    /// Lets the chunks of a durable snapshot's view leave RAM; returns how
    /// many did.
    pub(crate) fn release_stored(
        &mut self,
        view: &(ArenaView<FinalRef>, ArenaView<u8>),
        stored_refs: &[StoredChunk],
        stored_bytes: &[StoredChunk],
    ) -> usize {
        crate::state::snapshot::release(&mut self.refs, &view.0, stored_refs)
            + crate::state::snapshot::release(&mut self.bytes, &view.1, stored_bytes)
    }

    /// Rebuilds the final orders from a snapshot's chunks; full stored
    /// chunks stay on disk where `reader` is given. The RAM maps are
    /// rebuilt for what `stored` does not cover; only the refs read for
    /// that, and the entries in hot chunks, are checked (cold chunks are
    /// named by the hash of bytes a checked state wrote; `verify` reads
    /// everything).
    pub(crate) fn restore(
        refs: Vec<ChunkData<FinalRef>>,
        bytes: Vec<ChunkData<u8>>,
        reader: Option<Arc<dyn ChunkReader>>,
        stored: Option<Arc<dyn StoredOrders>>,
    ) -> Result<FinalOrders, DecodeError> {
        let mut finals = FinalOrders {
            refs: CowArena::from_stored(refs, reader.clone())?,
            bytes: CowArena::from_stored(bytes, reader)?,
            ..Default::default()
        };
        let len = finals.len();
        let covered = stored.as_ref().map_or(0, |s| s.covered());
        if covered > len {
            return Err(DecodeError::StoredIdsAhead { what: "final order", covered, records: len });
        }
        let hot = finals.refs.hot_tail_start() as u64;
        let first_checked = covered.min(hot).saturating_sub(1);
        let hot_bytes = finals.bytes.hot_tail_start() as u64;
        let mut prev: Option<FinalRef> = None;
        for i in first_checked..len {
            let r = finals.refs.get(i as usize);
            finals.check_ref(i, &r, prev.as_ref())?;
            if r.offset >= hot_bytes {
                finals.try_entry(i)?;
            }
            if i >= covered && finals.recent.insert(r.id, i).is_some() {
                return Err(DecodeError::StoredTwice { what: "final order", id: r.id });
            }
            if i >= covered {
                finals.recent_by_state.insert((r.state, r.id));
            }
            prev = Some(r);
        }
        finals.recent_from = covered;
        finals.stored = stored;
        Ok(finals)
    }

    /// A ref's own fields, and its order after `prev`.
    fn check_ref(&self, index: u64, r: &FinalRef, prev: Option<&FinalRef>) -> Result<(), DecodeError> {
        let terminal = OrderState::from_code(r.state).is_some_and(|s| s.is_terminal());
        let ordered = prev.is_none_or(|p| r.seq > p.seq && r.offset >= p.offset);
        let first_at_zero = index != 0 || r.offset == 0;
        if !terminal || !ordered || !first_at_zero || r.id == 0 || r.reserved != [0; 15] {
            return Err(DecodeError::InvalidOrStoredTwice { what: "final order", id: r.id });
        }
        Ok(())
    }

    /// Reads every final order back: refs in order, entries decoding to
    /// what their refs say, and each found by its id (through the stored
    /// tables for the covered ones). For `bursar verify`: reads history.
    pub fn verify(&self) -> Result<(), DecodeError> {
        let mut prev: Option<FinalRef> = None;
        for i in 0..self.len() {
            let r = self.refs.get(i as usize);
            self.check_ref(i, &r, prev.as_ref())?;
            self.try_entry(i)?;
            if self.find(r.id) != Some(i) {
                return Err(DecodeError::InvalidOrStoredTwice { what: "final order", id: r.id });
            }
            prev = Some(r);
        }
        if self.recent.len() as u64 != self.len() - self.recent_from || self.recent_by_state.len() != self.recent.len()
        {
            return Err(DecodeError::InvalidOrStoredTwice { what: "final order", id: 0 });
        }
        Ok(())
    }
}

/// An entry as stored (snapshot section and final orders alike): the
/// order, its dropped-event count, then its timeline.
pub(crate) fn encode_entry(e: &OrderEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(bytemuck::bytes_of(&e.order));
    out.extend_from_slice(&e.dropped_events.to_le_bytes());
    out.extend_from_slice(&e.encode_timeline());
}

pub(crate) fn decode_entry(c: &mut crate::cursor::Cursor<'_>) -> Result<OrderEntry, DecodeError> {
    let order: Order = bytemuck::pod_read_unaligned(c.take(Order::SIZE)?);
    let dropped_events = c.u32()?;
    let events = c.u32()? as usize;
    if events > TIMELINE_MAX + 16 {
        return Err(DecodeError::InvalidOrStoredTwice { what: "order timeline", id: order.id });
    }
    let timeline = (0..events).map(|_| TimelineEvent::decode(c)).collect::<Result<Vec<_>, _>>()?;
    Ok(OrderEntry { order, timeline, dropped_events })
}

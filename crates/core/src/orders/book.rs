//! Where orders are kept. Open orders live in persistent (copy-on-write)
//! ordered maps, so a snapshot is an O(1) clone and iteration order never
//! depends on hashing; final orders move to `finals` (history on disk).

use super::finals::{FinalOrders, FinalRef, StoredOrders, decode_entry, encode_entry};
use super::records::{Order, OrderChange, OrderFilter, OrderState};
use crate::arena::{ArenaView, ChunkReader, StoredChunk};
use crate::error::{DecodeError, InvariantError};
use crate::limits::{ORDER_PAGE_MAX, TIMELINE_MAX};
use crate::memory::tree_bytes;
use imbl::{OrdMap, OrdSet};
use std::sync::Arc;

/// Timeline kind of the create event (commands use their `CommandKind` code).
pub const EVENT_CREATE: u8 = 0;
/// Timeline kind of a deadline that fired.
pub const EVENT_EXPIRE: u8 = 12;

/// One entry of an order's timeline: a command or timer and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEvent {
    pub timestamp: u64,
    /// The log entry that applied it.
    pub position: u64,
    /// The API key behind it (0 for the executor and timers).
    pub key_id: u64,
    pub kind: u8,
    pub actor: u8,
    pub from: u8,
    pub to: u8,
    /// 0 if applied, else the refusal code (`OrderCommandResult`).
    pub result: u32,
    /// The ledger transfers it made: sequences `first_transfer_seq..+transfers`.
    pub first_transfer_seq: u32,
    pub transfers: u8,
    pub reason: Box<str>,
}

impl TimelineEvent {
    const FIXED: usize = 8 * 3 + 4 + 4 + 4 + 1 + 1;

    /// Appends the wire and snapshot encoding: fixed fields, then the reason
    /// preceded by its u8 length.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.key_id.to_le_bytes());
        out.extend_from_slice(&[self.kind, self.actor, self.from, self.to]);
        out.extend_from_slice(&self.result.to_le_bytes());
        out.extend_from_slice(&self.first_transfer_seq.to_le_bytes());
        out.push(self.transfers);
        let reason = &self.reason.as_bytes()[..self.reason.len().min(u8::MAX as usize)];
        out.push(reason.len() as u8);
        out.extend_from_slice(reason);
    }

    pub(crate) fn decode(c: &mut crate::cursor::Cursor<'_>) -> Result<TimelineEvent, DecodeError> {
        let (timestamp, position, key_id) = (c.u64()?, c.u64()?, c.u64()?);
        let [kind, actor, from, to] = c.array::<4>()?;
        let (result, first_transfer_seq, transfers) = (c.u32()?, c.u32()?, c.u8()?);
        let len = c.u8()? as usize;
        let reason =
            std::str::from_utf8(c.take(len)?).map_err(|_| DecodeError::NotUtf8 { what: "an order event reason" })?;
        Ok(TimelineEvent {
            timestamp,
            position,
            key_id,
            kind,
            actor,
            from,
            to,
            result,
            first_transfer_seq,
            transfers,
            reason: reason.into(),
        })
    }

    /// Decodes a list of events as `GetOrderEvents` returns them.
    pub fn decode_list(bytes: &[u8]) -> Result<Vec<TimelineEvent>, DecodeError> {
        let mut c = crate::cursor::Cursor::new(bytes);
        let count = c.u32()? as usize;
        let mut out = Vec::with_capacity(count.min(TIMELINE_MAX + 16));
        for _ in 0..count {
            out.push(TimelineEvent::decode(&mut c)?);
        }
        c.finish()?;
        Ok(out)
    }
}

const _: () = assert!(TimelineEvent::FIXED == 38);

/// An order and its history.
#[derive(Clone, Debug)]
pub struct OrderEntry {
    pub order: Order,
    pub timeline: Vec<TimelineEvent>,
    /// Events not kept because the timeline was full.
    pub dropped_events: u32,
}

impl OrderEntry {
    /// Records an event; transitions are always kept, others up to the cap.
    pub fn record(&mut self, event: TimelineEvent) {
        if event.from != event.to || event.kind == EVENT_CREATE || self.timeline.len() < TIMELINE_MAX {
            self.timeline.push(event);
        } else {
            self.dropped_events = self.dropped_events.saturating_add(1);
        }
    }

    /// The API key that created the order (0: not created through the API).
    /// The create event is always the first and always kept, in snapshots too.
    pub fn creator_key_id(&self) -> u64 {
        self.timeline.first().filter(|e| e.kind == EVENT_CREATE).map_or(0, |e| e.key_id)
    }

    /// The timeline as `GetOrderEvents` returns it.
    pub fn encode_timeline(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.timeline.len() * 48);
        out.extend_from_slice(&(self.timeline.len() as u32).to_le_bytes());
        for e in &self.timeline {
            e.encode(&mut out);
        }
        out
    }
}

/// Orders not yet final, and their indexes.
#[derive(Clone, Default)]
pub struct OpenOrders {
    orders: OrdMap<u128, Arc<OrderEntry>>,
    by_state: OrdSet<(u8, u128)>,
    /// Orders waiting with a deadline (funds or review), by (deadline, id).
    deadlines: OrdSet<(u64, u128)>,
    /// The change feed: each order under its latest change sequence.
    changes: OrdMap<u64, u128>,
    last_change: u64,
}

impl OpenOrders {
    /// Estimated RAM held (see `crate::memory`): timelines are counted at
    /// `TIMELINE_TYPICAL` events each (counting them exactly takes a walk).
    pub fn heap_bytes(&self) -> u64 {
        const TIMELINE_TYPICAL: u64 = 8;
        let entry = (std::mem::size_of::<OrderEntry>()
            + std::mem::size_of::<TimelineEvent>() * TIMELINE_TYPICAL as usize) as u64;
        tree_bytes::<u128, Arc<OrderEntry>>(self.orders.len())
            + self.orders.len() as u64 * entry
            + tree_bytes::<(u8, u128), ()>(self.by_state.len())
            + tree_bytes::<(u64, u128), ()>(self.deadlines.len())
            + tree_bytes::<u64, u128>(self.changes.len())
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    pub fn get(&self, id: u128) -> Option<&OrderEntry> {
        self.orders.get(&id).map(|e| e.as_ref())
    }

    pub fn last_change(&self) -> u64 {
        self.last_change
    }

    /// The earliest deadline of a waiting order.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.get_min().map(|(t, _)| *t)
    }

    /// Orders whose deadline is at or before `now`, earliest first.
    pub fn due(&self, now: u64, max: usize) -> Vec<u128> {
        self.deadlines.iter().take_while(|(t, _)| *t <= now).take(max).map(|(_, id)| *id).collect()
    }

    /// Stores `entry`, keeping every index in step. With `changed`, the order
    /// moves to the end of the change feed.
    pub fn put(&mut self, mut entry: OrderEntry, changed: bool) {
        let id = entry.order.id;
        if changed {
            self.last_change += 1;
            entry.order.change_seq = self.last_change;
        }
        if let Some(old) = self.orders.get(&id) {
            let old = old.order;
            self.by_state.remove(&(old.state, id));
            self.deadlines.remove(&(old.deadline, id));
            self.changes.remove(&old.change_seq);
        }
        let o = &entry.order;
        self.by_state.insert((o.state, id));
        if o.deadline != 0 {
            self.deadlines.insert((o.deadline, id));
        }
        self.changes.insert(o.change_seq, id);
        self.orders.insert(id, Arc::new(entry));
    }

    /// Changes the stored entry of `id` in place and keeps every index in
    /// step; `f` returns whether the order moves to the end of the change
    /// feed. The entry is copied only while a snapshot still shares it, so a
    /// command does not copy the order's timeline. False if there is no such order.
    pub fn update(&mut self, id: u128, f: impl FnOnce(&mut OrderEntry) -> bool) -> bool {
        let Some(slot) = self.orders.get_mut(&id) else {
            return false;
        };
        let entry = Arc::make_mut(slot);
        let (old_state, old_deadline, old_seq) = (entry.order.state, entry.order.deadline, entry.order.change_seq);
        if f(entry) {
            self.last_change += 1;
            entry.order.change_seq = self.last_change;
            self.changes.remove(&old_seq);
            self.changes.insert(self.last_change, id);
        }
        let o = &entry.order;
        if o.state != old_state {
            self.by_state.remove(&(old_state, id));
            self.by_state.insert((o.state, id));
        }
        if o.deadline != old_deadline {
            if old_deadline != 0 {
                self.deadlines.remove(&(old_deadline, id));
            }
            if o.deadline != 0 {
                self.deadlines.insert((o.deadline, id));
            }
        }
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = &OrderEntry> + '_ {
        self.orders.values().map(|e| e.as_ref())
    }

    /// Checks that every index agrees with the orders.
    pub fn check_indexes(&self) -> Result<(), InvariantError> {
        if self.by_state.len() != self.orders.len() || self.changes.len() != self.orders.len() {
            return Err(InvariantError::OrderIndexSize);
        }
        let mut deadlines = 0;
        for e in self.iter() {
            let o = &e.order;
            let state =
                OrderState::from_code(o.state).ok_or(InvariantError::OrderState { order: o.id, state: o.state })?;
            if state.is_terminal() {
                return Err(InvariantError::TerminalOrderOpen { order: o.id });
            }
            if !self.by_state.contains(&(o.state, o.id)) || self.changes.get(&o.change_seq) != Some(&o.id) {
                return Err(InvariantError::OrderNotIndexed { order: o.id });
            }
            if o.change_seq > self.last_change {
                return Err(InvariantError::OrderAheadOfFeed { order: o.id });
            }
            if o.deadline != 0 {
                deadlines += 1;
                if !self.deadlines.contains(&(o.deadline, o.id)) {
                    return Err(InvariantError::OrderNoDeadline { order: o.id });
                }
            }
        }
        if deadlines != self.deadlines.len() {
            return Err(InvariantError::StaleDeadlines);
        }
        Ok(())
    }

    /// Takes `id` out with its index entries (it became final).
    fn remove(&mut self, id: u128) -> Option<Arc<OrderEntry>> {
        let entry = self.orders.remove(&id)?;
        let o = &entry.order;
        self.by_state.remove(&(o.state, id));
        self.deadlines.remove(&(o.deadline, id));
        self.changes.remove(&o.change_seq);
        Some(entry)
    }

    /// The snapshot encoding: last change, count, then each open order
    /// (`finals::encode_entry`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.orders.len() * (Order::SIZE + 512));
        out.extend_from_slice(&self.last_change.to_le_bytes());
        out.extend_from_slice(&(self.orders.len() as u64).to_le_bytes());
        for e in self.iter() {
            encode_entry(e, &mut out);
        }
        out
    }
}

/// Every order: open ones in RAM, final ones in `finals` (see there).
#[derive(Default)]
pub struct OrderBook {
    open: OpenOrders,
    finals: FinalOrders,
}

impl OrderBook {
    /// Estimated RAM held (see `crate::memory`).
    pub fn heap_bytes(&self) -> u64 {
        self.open.heap_bytes() + self.finals.heap_bytes()
    }

    /// Orders not final: what `OPEN_ORDERS_MAX` bounds.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    pub fn finals(&self) -> &FinalOrders {
        &self.finals
    }

    /// Open and final orders.
    pub fn len(&self) -> u64 {
        self.open.len() as u64 + self.finals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Order `id` with its timeline: shared if open, read back if final.
    pub fn get(&self, id: u128) -> Option<Arc<OrderEntry>> {
        match self.open.orders.get(&id) {
            Some(entry) => Some(entry.clone()),
            None => self.finals.get(id).map(Arc::new),
        }
    }

    /// Whether `id` is an open order (RAM only).
    pub fn is_open(&self, id: u128) -> bool {
        self.open.orders.contains_key(&id)
    }

    /// Final order `id`, if it is one.
    pub fn get_final(&self, id: u128) -> Option<OrderEntry> {
        self.finals.get(id)
    }

    pub fn last_change(&self) -> u64 {
        self.open.last_change
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.open.next_deadline()
    }

    pub fn due(&self, now: u64, max: usize) -> Vec<u128> {
        self.open.due(now, max)
    }

    /// Stores a new order (see `OpenOrders::put`); a terminal one goes
    /// straight to the final orders.
    pub fn put(&mut self, entry: OrderEntry, changed: bool) {
        let id = entry.order.id;
        self.open.put(entry, changed);
        self.finalize_if_terminal(id);
    }

    /// Changes open order `id` in place (see `OpenOrders::update`); if it
    /// ends terminal it moves to the final orders in the same step. False
    /// if no open order has that id.
    pub fn update(&mut self, id: u128, f: impl FnOnce(&mut OrderEntry) -> bool) -> bool {
        if !self.open.update(id, f) {
            return false;
        }
        self.finalize_if_terminal(id);
        true
    }

    fn finalize_if_terminal(&mut self, id: u128) {
        let terminal = self.open.get(id).is_some_and(|e| e.order.state().is_terminal());
        if terminal {
            let entry = self.open.remove(id).expect("invariant: the order was just read");
            self.finals.push(&entry);
        }
    }

    /// Open orders (final ones hold no money and no deadline).
    pub fn iter_open(&self) -> impl Iterator<Item = &OrderEntry> + '_ {
        self.open.iter()
    }

    /// Checks the open orders' indexes (the final orders are checked by
    /// `verify_finals`, which reads history).
    pub fn check_indexes(&self) -> Result<(), InvariantError> {
        self.open.check_indexes()
    }

    /// Reads every final order back (see `FinalOrders::verify`).
    pub fn verify_finals(&self) -> Result<(), InvariantError> {
        self.finals.verify().map_err(|e| InvariantError::FinalOrders(Box::new(e)))
    }

    /// A page of orders per `filter` (see `OrderFilter`); summaries are
    /// listed as the orders they summarize.
    pub fn list(&self, filter: &OrderFilter) -> Vec<Order> {
        self.page(filter)
    }

    /// A page per `filter` as a reply body: whole orders, or with `changes`
    /// = 2 summaries, each followed by the personal data the filter asks
    /// for. Returns the body and the number of records.
    pub fn encode_list(&self, filter: &OrderFilter) -> (Vec<u8>, usize) {
        let page = self.page(filter);
        let mut out = Vec::with_capacity(page.len() * Order::SIZE);
        for o in &page {
            if filter.changes == OrderFilter::CHANGES_SUMMARIES {
                let with_pii = o.state < 16 && filter.pii_states & (1 << o.state) != 0;
                let pii = if with_pii { o.pii() } else { &[] };
                let change = OrderChange::of(o, pii.len() as u16);
                out.extend_from_slice(bytemuck::bytes_of(&change));
                out.extend_from_slice(pii);
            } else {
                out.extend_from_slice(bytemuck::bytes_of(o));
            }
        }
        (out, page.len())
    }

    /// Open and final orders merged: by change sequence for the feed, by
    /// id otherwise. A state filter reads one side only: open orders are
    /// never terminal and final ones always are.
    fn page(&self, filter: &OrderFilter) -> Vec<Order> {
        use std::ops::Bound::{Excluded, Unbounded};
        let limit = filter.limit.clamp(1, ORDER_PAGE_MAX) as usize;
        let open = |id: &u128| self.open.orders[id].order;
        if filter.changes != 0 {
            let open_rows = self.open.changes.range((Excluded(filter.after_seq), Unbounded)).take(limit);
            let mut rows: Vec<(u64, Order)> = open_rows.map(|(seq, id)| (*seq, open(id))).collect();
            let summaries = filter.changes == OrderFilter::CHANGES_SUMMARIES;
            let final_order = |i| if summaries { self.finals.order_from_ref(i) } else { self.finals.order(i) };
            rows.extend(
                self.finals.changes_after(filter.after_seq, limit).into_iter().map(|(s, i)| (s, final_order(i))),
            );
            rows.sort_unstable_by_key(|(seq, _)| *seq);
            return rows.into_iter().take(limit).map(|(_, o)| o).collect();
        }
        let terminal = OrderState::from_code(filter.state).is_some_and(|s| s.is_terminal());
        let mut rows: Vec<(u128, Order)> = Vec::new();
        if filter.state == 0 {
            let open_rows = self.open.orders.range((Excluded(filter.after_id), Unbounded)).take(limit);
            rows.extend(open_rows.map(|(id, e)| (*id, e.order)));
        } else if !terminal {
            let start = (filter.state, filter.after_id);
            let ids = self.open.by_state.range(start..).skip_while(|k| **k == start);
            rows.extend(ids.take_while(|(s, _)| *s == filter.state).take(limit).map(|(_, id)| (*id, open(id))));
        }
        if filter.state == 0 || terminal {
            let finals = self.finals.page(filter.state, filter.after_id, limit);
            rows.extend(finals.into_iter().map(|(id, i)| (id, self.finals.order(i))));
        }
        rows.sort_unstable_by_key(|(id, _)| *id);
        rows.into_iter().take(limit).map(|(_, o)| o).collect()
    }

    /// Hands final orders below the tables' coverage over to them.
    pub fn install_stored(&mut self, stored: Arc<dyn StoredOrders>) {
        self.finals.install(stored);
    }

    pub(crate) fn open_view(&self) -> OpenOrders {
        self.open.clone()
    }

    pub(crate) fn final_views(&self) -> (ArenaView<FinalRef>, ArenaView<u8>) {
        self.finals.views()
    }

    pub(crate) fn set_reader(&mut self, reader: Arc<dyn ChunkReader>) {
        self.finals.set_reader(reader);
    }

    pub(crate) fn release_stored(
        &mut self,
        view: &(ArenaView<FinalRef>, ArenaView<u8>),
        refs: &[StoredChunk],
        bytes: &[StoredChunk],
    ) -> usize {
        self.finals.release_stored(view, refs, bytes)
    }

    pub fn cold_chunks(&self) -> usize {
        self.finals.cold_chunks()
    }

    /// Rebuilds the book from a snapshot's "orders" section (open orders)
    /// and its final orders. A snapshot from before final orders left the
    /// book holds them in the section: they move to the final orders, in
    /// change order, as they would have when they became final.
    pub(crate) fn restore(open: &[u8], finals: FinalOrders) -> Result<OrderBook, DecodeError> {
        let mut c = crate::cursor::Cursor::new(open);
        let last_change = c.u64()?;
        let count = c.u64()?;
        let mut book = OrderBook { open: OpenOrders::default(), finals };
        let mut terminal = Vec::new();
        for _ in 0..count {
            let entry = decode_entry(&mut c)?;
            let id = entry.order.id;
            let state = OrderState::from_code(entry.order.state)
                .ok_or(DecodeError::InvalidOrStoredTwice { what: "order", id })?;
            if book.open.orders.contains_key(&id) || book.finals.find(id).is_some() {
                return Err(DecodeError::StoredTwice { what: "order", id });
            }
            if state.is_terminal() {
                terminal.push(entry);
            } else {
                book.open.put(entry, false);
            }
        }
        c.finish()?;
        terminal.sort_unstable_by_key(|e| e.order.change_seq);
        for entry in terminal {
            let seq = entry.order.change_seq;
            if book.finals.last_seq().is_some_and(|s| seq <= s) || book.open.changes.contains_key(&seq) {
                return Err(DecodeError::InvalidOrStoredTwice { what: "order", id: entry.order.id });
            }
            book.finals.push(&entry);
        }
        if book.finals.last_seq().is_some_and(|s| s > last_change) {
            return Err(DecodeError::InvalidOrStoredTwice { what: "final order", id: 0 });
        }
        book.open.last_change = last_change;
        book.open.check_indexes()?;
        Ok(book)
    }
}

//! Where orders are kept: persistent (copy-on-write) ordered maps, so a
//! snapshot is an O(1) clone and iteration order never depends on hashing.

use super::records::{Order, OrderChange, OrderFilter, OrderState};
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

#[derive(Clone, Default)]
pub struct OrderBook {
    orders: OrdMap<u128, Arc<OrderEntry>>,
    by_state: OrdSet<(u8, u128)>,
    /// Orders waiting with a deadline (funds or review), by (deadline, id).
    deadlines: OrdSet<(u64, u128)>,
    /// The change feed: each order under its latest change sequence.
    changes: OrdMap<u64, u128>,
    last_change: u64,
}

impl OrderBook {
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

    /// A page of orders per `filter` (see `OrderFilter`); summaries are
    /// listed as the orders they summarize.
    pub fn list(&self, filter: &OrderFilter) -> Vec<Order> {
        let mut out = Vec::new();
        self.visit(filter, |o| out.push(*o));
        out
    }

    /// A page per `filter` as a reply body: whole orders, or with `changes`
    /// = 2 summaries, each followed by the personal data the filter asks
    /// for. Written straight into the body, without an intermediate list.
    /// Returns the body and the number of records.
    pub fn encode_list(&self, filter: &OrderFilter) -> (Vec<u8>, usize) {
        let (mut out, mut count) = (Vec::new(), 0);
        if filter.changes == OrderFilter::CHANGES_SUMMARIES {
            self.visit(filter, |o| {
                let with_pii = o.state < 16 && filter.pii_states & (1 << o.state) != 0;
                let pii = if with_pii { o.pii() } else { &[] };
                let change = OrderChange::of(o, pii.len() as u16);
                out.extend_from_slice(bytemuck::bytes_of(&change));
                out.extend_from_slice(pii);
                count += 1;
            });
        } else {
            self.visit(filter, |o| {
                out.extend_from_slice(bytemuck::bytes_of(o));
                count += 1;
            });
        }
        (out, count)
    }

    fn visit(&self, filter: &OrderFilter, mut f: impl FnMut(&Order)) {
        use std::ops::Bound::{Excluded, Unbounded};
        let limit = filter.limit.clamp(1, ORDER_PAGE_MAX) as usize;
        let order = |id: &u128| &self.orders[id].order;
        if filter.changes != 0 {
            self.changes.range((Excluded(filter.after_seq), Unbounded)).take(limit).for_each(|(_, id)| f(order(id)));
        } else if filter.state == 0 {
            self.orders.range((Excluded(filter.after_id), Unbounded)).take(limit).for_each(|(_, e)| f(&e.order));
        } else {
            let start = (filter.state, filter.after_id);
            self.by_state
                .range(start..)
                .skip_while(|k| **k == start)
                .take_while(|(s, _)| *s == filter.state)
                .take(limit)
                .for_each(|(_, id)| f(order(id)));
        }
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
            OrderState::from_code(o.state).ok_or(InvariantError::OrderState { order: o.id, state: o.state })?;
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

    /// The snapshot encoding: last change, count, then each order, its
    /// dropped-event count and its timeline.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.orders.len() * (Order::SIZE + 512));
        out.extend_from_slice(&self.last_change.to_le_bytes());
        out.extend_from_slice(&(self.orders.len() as u64).to_le_bytes());
        for e in self.iter() {
            out.extend_from_slice(bytemuck::bytes_of(&e.order));
            out.extend_from_slice(&e.dropped_events.to_le_bytes());
            out.extend_from_slice(&e.encode_timeline());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<OrderBook, DecodeError> {
        let mut c = crate::cursor::Cursor::new(bytes);
        let last_change = c.u64()?;
        let count = c.u64()?;
        let mut book = OrderBook::default();
        for _ in 0..count {
            let order: Order = bytemuck::pod_read_unaligned(c.take(Order::SIZE)?);
            let dropped_events = c.u32()?;
            let events = c.u32()? as usize;
            let timeline = (0..events).map(|_| TimelineEvent::decode(&mut c)).collect::<Result<Vec<_>, _>>()?;
            if book.orders.contains_key(&order.id) {
                return Err(DecodeError::StoredTwice { what: "order", id: order.id });
            }
            book.put(OrderEntry { order, timeline, dropped_events }, false);
        }
        c.finish()?;
        book.last_change = last_change;
        book.check_indexes()?;
        Ok(book)
    }
}

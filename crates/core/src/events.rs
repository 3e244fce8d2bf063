//! The change journal: every committed change appends one small reference,
//! in apply order, so event `seq` N is journal slot N-1. Sequences are
//! therefore gapless, increasing, and identical on every replica and replay
//! (the journal is part of the deterministic state and of snapshots).
//!
//! A reference only points at the record that already holds the data
//! (a transfer's arena slot, an order's timeline entry, an audit record), so
//! the journal costs 16 bytes per event. `Machine::events_page` renders
//! references into self-contained wire events (`query/events.rs`). Only immutable data is
//! rendered, so an event reads the same whenever it is read.

use bytemuck::{Pod, Zeroable};

/// Event kinds. Stable codes: they are part of the wire format and of the
/// JSON event types (`docs/events.md`).
pub mod kind {
    pub const LEDGER_CREATED: u8 = 1;
    pub const ACCOUNT_CREATED: u8 = 2;
    /// A single-phase transfer, or the post of a pending one.
    pub const TRANSFER_POSTED: u8 = 3;
    pub const TRANSFER_PENDING: u8 = 4;
    pub const TRANSFER_VOIDED: u8 = 5;
    pub const TRANSFER_EXPIRED: u8 = 6;
    /// An order was created or changed state.
    pub const ORDER: u8 = 7;
    pub const KEY_CREATED: u8 = 8;
    pub const KEY_REVOKED: u8 = 9;
    pub const AUDIT_RECORDED: u8 = 10;
    pub const MAX: u8 = 10;
}

/// One journal slot: what happened and where its data lives.
///
/// The slot it points at is 56 bits wide, split so that the layout of the
/// first format (a `u32` slot after 3 zero bytes) reads the same: history
/// is not capped at 2^32 transfers, and old snapshots need no rewrite.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EventRef {
    pub kind: u8,
    /// Bits 32..56 of the slot, little-endian.
    index_high: [u8; 3],
    /// Bits 0..32 of the slot.
    index_low: u32,
    /// Ledger id, key id, audit sequence, or an expiry's timestamp.
    pub aux: u64,
}

/// Largest slot an [`EventRef`] can point at.
pub const EVENT_INDEX_MAX: u64 = (1 << 56) - 1;

impl EventRef {
    /// A slot pointing at `index` (the arena slot of the account or
    /// transfer, or of the order reference).
    pub fn new(kind: u8, index: u64, aux: u64) -> EventRef {
        assert!(index <= EVENT_INDEX_MAX, "invariant: record positions stay below 2^56 ({index})");
        let high = (index >> 32).to_le_bytes();
        EventRef { kind, index_high: [high[0], high[1], high[2]], index_low: index as u32, aux }
    }

    /// The arena slot this event's data lives at.
    pub fn index(&self) -> u64 {
        let [a, b, c] = self.index_high;
        u64::from_le_bytes([a, b, c, 0, 0, 0, 0, 0]) << 32 | u64::from(self.index_low)
    }
}

/// Where an order event's timeline entry lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OrderEventRef {
    pub order_id: u128,
    pub timeline: u32,
    pub reserved: [u8; 12],
}

/// A page of events: those with `seq > after`, at most `limit`, optionally
/// only kinds whose bit (`1 << kind`) is set in `kinds` (0 = every kind).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EventFilter {
    pub after: u64,
    pub limit: u32,
    pub kinds: u32,
    pub reserved: [u8; 16],
}

impl EventFilter {
    pub const SIZE: usize = 32;
}

/// Size of the header before each event's payload on the wire.
pub const WIRE_HEADER: usize = 24;

const _: () = assert!(std::mem::size_of::<EventRef>() == 16);
const _: () = assert!(std::mem::size_of::<OrderEventRef>() == 32);
const _: () = assert!(std::mem::size_of::<EventFilter>() == EventFilter::SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_slots_are_56_bits_and_read_the_first_layout_unchanged() {
        for index in [0, 1, u64::from(u32::MAX), 1 << 32, (1 << 40) + 7, EVENT_INDEX_MAX] {
            assert_eq!(EventRef::new(kind::TRANSFER_POSTED, index, 9).index(), index);
        }
        // The first format: kind, 3 zero bytes, a u32 slot, aux.
        let mut old = [0u8; 16];
        old[0] = kind::TRANSFER_POSTED;
        old[4..8].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
        old[8..16].copy_from_slice(&5u64.to_le_bytes());
        let r: EventRef = bytemuck::cast(old);
        assert_eq!((r.kind, r.index(), r.aux), (kind::TRANSFER_POSTED, 0xdead_beef, 5));
        assert_eq!(bytemuck::cast::<EventRef, [u8; 16]>(EventRef::new(kind::TRANSFER_POSTED, 0xdead_beef, 5)), old);
    }

    #[test]
    #[should_panic(expected = "below 2^56")]
    fn a_slot_beyond_56_bits_is_refused() {
        EventRef::new(kind::TRANSFER_POSTED, EVENT_INDEX_MAX + 1, 0);
    }
}

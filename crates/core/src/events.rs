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
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EventRef {
    pub kind: u8,
    pub reserved: [u8; 3],
    /// Arena slot of the account or transfer, or of the order reference.
    pub index: u32,
    /// Ledger id, key id, audit sequence, or an expiry's timestamp.
    pub aux: u64,
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

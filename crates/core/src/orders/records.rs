//! The fixed-size records of payment orders: the create event, the command
//! event that moves an order along, the stored order, and the read filter.
//! Like the ledger's records they are `repr(C)`, padding-free and sent and
//! logged as their little-endian bytes.

use crate::limits::{REASON_MAX, REFERENCE_MAX};
use bytemuck::{Pod, Zeroable};

/// Bytes of encrypted personal data an order carries. The core never sees
/// plaintext: the API edge encrypts before the command reaches the log.
pub const PII_SLOT: usize = 384;

/// Where an order stands. Codes are stable.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderState {
    Created = 1,
    AwaitingFunds = 2,
    FundsReceived = 3,
    Screening = 4,
    OnHold = 5,
    Approved = 6,
    FxLocked = 7,
    PayoutSent = 8,
    Completed = 9,
    Cancelled = 10,
    Rejected = 11,
    Refunded = 12,
    Expired = 13,
    Failed = 14,
}

impl OrderState {
    pub const ALL: [OrderState; 14] = [
        OrderState::Created,
        OrderState::AwaitingFunds,
        OrderState::FundsReceived,
        OrderState::Screening,
        OrderState::OnHold,
        OrderState::Approved,
        OrderState::FxLocked,
        OrderState::PayoutSent,
        OrderState::Completed,
        OrderState::Cancelled,
        OrderState::Rejected,
        OrderState::Refunded,
        OrderState::Expired,
        OrderState::Failed,
    ];

    pub fn from_code(code: u8) -> Option<OrderState> {
        OrderState::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            OrderState::Created => "created",
            OrderState::AwaitingFunds => "awaiting_funds",
            OrderState::FundsReceived => "funds_received",
            OrderState::Screening => "screening",
            OrderState::OnHold => "on_hold",
            OrderState::Approved => "approved",
            OrderState::FxLocked => "fx_locked",
            OrderState::PayoutSent => "payout_sent",
            OrderState::Completed => "completed",
            OrderState::Cancelled => "cancelled",
            OrderState::Rejected => "rejected",
            OrderState::Refunded => "refunded",
            OrderState::Expired => "expired",
            OrderState::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<OrderState> {
        OrderState::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// No command moves a terminal order; its money is settled.
    pub fn is_terminal(self) -> bool {
        self >= OrderState::Completed
    }

    /// The sender's funds are held (a pending transfer into escrow).
    pub fn holds_funds(self) -> bool {
        matches!(self, OrderState::FundsReceived | OrderState::Screening | OrderState::OnHold | OrderState::Approved)
    }
}

/// What a command asks of an order. Codes are stable.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// The incoming-funds connector registered the expected payment.
    FundsAwaited = 1,
    /// The bank notified the payment (`amount` must equal the order's).
    FundsReceived = 2,
    /// The screening call is about to be made.
    StartScreening = 3,
    /// The screening connector answered (`verdict`).
    ScreeningResult = 4,
    /// A person decided an order on hold (`verdict`: pass approves).
    Review = 5,
    /// An FX quote was obtained (`rate_ppb`, `quote_id`, `time` = expiry).
    LockFx = 6,
    /// The payout is about to be sent: the payout amount is reserved.
    SendPayout = 7,
    /// The payout rail confirmed the payout.
    ConfirmPayout = 8,
    /// The payout rail reported a failure: everything is compensated.
    FailPayout = 9,
    /// Cancel the order, compensating what was done.
    Cancel = 10,
    /// An external step failed or its circuit is open: retry at `time`.
    Defer = 11,
}

impl CommandKind {
    pub const ALL: [CommandKind; 11] = [
        CommandKind::FundsAwaited,
        CommandKind::FundsReceived,
        CommandKind::StartScreening,
        CommandKind::ScreeningResult,
        CommandKind::Review,
        CommandKind::LockFx,
        CommandKind::SendPayout,
        CommandKind::ConfirmPayout,
        CommandKind::FailPayout,
        CommandKind::Cancel,
        CommandKind::Defer,
    ];

    pub fn from_code(code: u8) -> Option<CommandKind> {
        CommandKind::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            CommandKind::FundsAwaited => "funds_awaited",
            CommandKind::FundsReceived => "funds_received",
            CommandKind::StartScreening => "start_screening",
            CommandKind::ScreeningResult => "screening_result",
            CommandKind::Review => "review",
            CommandKind::LockFx => "lock_fx",
            CommandKind::SendPayout => "send_payout",
            CommandKind::ConfirmPayout => "confirm_payout",
            CommandKind::FailPayout => "fail_payout",
            CommandKind::Cancel => "cancel",
            CommandKind::Defer => "defer",
        }
    }
}

/// A screening or review decision.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass = 1,
    Review = 2,
    Reject = 3,
}

impl Verdict {
    pub fn from_code(code: u8) -> Option<Verdict> {
        match code {
            1 => Some(Verdict::Pass),
            2 => Some(Verdict::Review),
            3 => Some(Verdict::Reject),
            _ => None,
        }
    }
}

/// Who caused an order event. Codes are stable.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A person or system through the HTTP API (the key id says which).
    Api = 1,
    /// The workflow executor, after an external call.
    Executor = 2,
    /// A durable timer inside the state machine (deadlines).
    Timer = 3,
    /// The incoming-funds connector (a bank notification).
    Bank = 4,
}

impl Actor {
    pub fn from_code(code: u8) -> Option<Actor> {
        match code {
            1 => Some(Actor::Api),
            2 => Some(Actor::Executor),
            3 => Some(Actor::Timer),
            4 => Some(Actor::Bank),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Actor::Api => "api",
            Actor::Executor => "executor",
            Actor::Timer => "timer",
            Actor::Bank => "bank",
        }
    }
}

/// Flags of an order: the fee policy and the review rule chosen when it was created.
pub mod order_flags {
    /// Give the fee back when the payout fails.
    pub const REFUND_FEE_ON_FAILURE: u32 = 1 << 0;
    /// Give the fee back when the order is cancelled after FX was locked.
    pub const REFUND_FEE_ON_CANCEL: u32 = 1 << 1;
    /// Maker-checker: the API key that created the order may not review it.
    /// The HTTP edge sets it on every order; orders logged before it existed
    /// lack it, so replaying an old log keeps its old outcomes.
    pub const MAKER_CHECKER: u32 = 1 << 2;
    pub const ALL: u32 = REFUND_FEE_ON_FAILURE | REFUND_FEE_ON_CANCEL | MAKER_CHECKER;
}

/// Creates one order. The fee and the timeouts are resolved by the API edge
/// from its configuration and logged here, so replay never depends on
/// configuration that may have changed since.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct OrderCreate {
    pub id: u128,
    pub customer_id: u128,
    /// What the sender pays in, fee included, in source minor units.
    pub source_amount: u128,
    /// The fee, in source minor units; less than `source_amount`.
    pub fee_amount: u128,
    /// Earliest log time (ns) the payout may be sent; 0 = as soon as ready.
    pub payout_at: u64,
    pub source_ledger: u32,
    pub target_ledger: u32,
    /// Funds must arrive within this many seconds of creation.
    pub funds_timeout_seconds: u32,
    /// A manual review must happen within this many seconds of the hold.
    pub review_timeout_seconds: u32,
    pub flags: u32,
    /// Bytes of `pii` in use; the rest is zero.
    pub pii_len: u16,
    pub reserved0: u16,
    pub reserved: [u8; 32],
    /// Encrypted personal data (sender and recipient).
    pub pii: [u8; PII_SLOT],
}

impl OrderCreate {
    pub const SIZE: usize = 512;
}

impl Default for OrderCreate {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Moves one order along (see `CommandKind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct OrderCommand {
    pub order_id: u128,
    /// `FundsReceived`: the amount the bank reported.
    pub amount: u128,
    /// `LockFx`: target minor units per source minor unit × 10^9.
    pub rate_ppb: u128,
    /// `LockFx`: the provider's quote id.
    pub quote_id: u128,
    /// `LockFx`: the quote's expiry; `Defer`: when to retry (log time, ns).
    pub time: u64,
    pub kind: u8,
    /// Set by the machine for API commands; the executor says `Executor` or `Bank`.
    pub actor: u8,
    pub verdict: u8,
    pub reason_len: u8,
    pub reserved0: u32,
    /// External reference (bank or rail), ASCII, zero padded.
    pub reference: [u8; REFERENCE_MAX],
    /// Why (a review note, a screening rule, a rail error), UTF-8.
    pub reason: [u8; REASON_MAX],
    pub reserved: [u8; 16],
}

impl OrderCommand {
    pub const SIZE: usize = 256;

    pub fn new(order_id: u128, kind: CommandKind, actor: Actor) -> OrderCommand {
        OrderCommand { order_id, kind: kind as u8, actor: actor as u8, ..Zeroable::zeroed() }
    }

    /// Sets the reason, cut at `REASON_MAX` bytes on a character boundary.
    pub fn with_reason(mut self, reason: &str) -> OrderCommand {
        let text = truncate_utf8(reason, REASON_MAX);
        self.reason = [0; REASON_MAX];
        self.reason[..text.len()].copy_from_slice(text.as_bytes());
        self.reason_len = text.len() as u8;
        self
    }

    /// Sets the reference, cut at `REFERENCE_MAX` bytes of ASCII.
    pub fn with_reference(mut self, reference: &str) -> OrderCommand {
        self.reference = pack_reference(reference);
        self
    }

    pub fn reason_str(&self) -> Option<&str> {
        std::str::from_utf8(self.reason.get(..usize::from(self.reason_len))?).ok()
    }
}

impl Default for OrderCommand {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// An order as stored and returned by reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Order {
    pub id: u128,
    pub customer_id: u128,
    pub source_amount: u128,
    pub fee_amount: u128,
    /// What the recipient gets, in target minor units; set when FX locks.
    pub target_amount: u128,
    pub rate_ppb: u128,
    pub quote_id: u128,
    pub created_at: u64,
    pub updated_at: u64,
    /// When the current wait times out (funds or review); 0 = none.
    pub deadline: u64,
    pub payout_at: u64,
    /// When the executor retries a deferred step; 0 = now.
    pub retry_at: u64,
    /// Position in the change feed: increases with every change.
    pub change_seq: u64,
    pub source_ledger: u32,
    pub target_ledger: u32,
    pub funds_timeout_seconds: u32,
    pub review_timeout_seconds: u32,
    pub flags: u32,
    /// Ledger transfers made for this order so far (their ids derive from it).
    pub transfer_seq: u32,
    pub state: u8,
    pub reserved0: u8,
    /// Deferrals of the current step.
    pub attempts: u16,
    pub pii_len: u16,
    pub reserved1: u16,
    /// The bank's or the rail's reference, ASCII, zero padded.
    pub reference: [u8; REFERENCE_MAX],
    /// Transfer sequence of the funds hold (pending, customer → escrow).
    pub hold_seq: u32,
    /// Transfer sequence of the payout (pending, clearing → rail).
    pub payout_seq: u32,
    pub reserved: [u8; 24],
    pub pii: [u8; PII_SLOT],
}

impl Order {
    pub const SIZE: usize = 640;

    pub fn state(&self) -> OrderState {
        OrderState::from_code(self.state).expect("invariant: stored orders have a valid state")
    }

    pub fn pii(&self) -> &[u8] {
        &self.pii[..usize::from(self.pii_len).min(PII_SLOT)]
    }

    pub fn reference_str(&self) -> &str {
        reference_str(&self.reference)
    }
}

/// Lists orders: by id from `after_id`, optionally in one state, or (with
/// `changes` set) by change sequence from `after_seq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OrderFilter {
    pub after_id: u128,
    pub after_seq: u64,
    pub limit: u32,
    /// 0 = every state.
    pub state: u8,
    /// 1 = list by change sequence as whole `Order`s; 2 = the same as
    /// `OrderChange` summaries (the executor's feed).
    pub changes: u8,
    /// With `changes` = 2: the states (bit `1 << state`) whose summaries
    /// carry the order's personal data. Summaries of final orders carry
    /// only their id, state and change sequence (read from their refs, not
    /// their records: an executor acts on open orders only, and reading
    /// its feed from the start must not read every settled order back).
    pub pii_states: u16,
}

impl OrderFilter {
    pub const SIZE: usize = 32;
    /// `changes`: whole orders.
    pub const CHANGES_ORDERS: u8 = 1;
    /// `changes`: summaries.
    pub const CHANGES_SUMMARIES: u8 = 2;
}

/// An order in the summary change feed: what the executor's steps need,
/// without the fields they never read. A fifth of an `Order`, so a feed page
/// costs the engine and the executor far less to build, copy and hold.
/// In a reply each summary is followed by `pii_len` bytes of the order's
/// encrypted personal data (0 unless the filter asked for it in this state).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OrderChange {
    pub id: u128,
    pub customer_id: u128,
    pub source_amount: u128,
    pub fee_amount: u128,
    pub target_amount: u128,
    pub payout_at: u64,
    pub retry_at: u64,
    pub change_seq: u64,
    pub source_ledger: u32,
    pub target_ledger: u32,
    pub state: u8,
    pub reserved0: u8,
    pub attempts: u16,
    pub pii_len: u16,
    pub reserved: [u8; 10],
}

impl OrderChange {
    pub const SIZE: usize = 128;

    /// The summary of `o`, announcing `pii_len` bytes of personal data after it.
    pub fn of(o: &Order, pii_len: u16) -> OrderChange {
        OrderChange {
            id: o.id,
            customer_id: o.customer_id,
            source_amount: o.source_amount,
            fee_amount: o.fee_amount,
            target_amount: o.target_amount,
            payout_at: o.payout_at,
            retry_at: o.retry_at,
            change_seq: o.change_seq,
            source_ledger: o.source_ledger,
            target_ledger: o.target_ledger,
            state: o.state,
            attempts: o.attempts,
            pii_len,
            ..Zeroable::zeroed()
        }
    }

    /// The state; `None` only for a record that did not come from the core.
    pub fn state(&self) -> Option<OrderState> {
        OrderState::from_code(self.state)
    }

    /// Splits a summary feed reply into summaries and their personal data.
    pub fn decode_feed(mut bytes: &[u8]) -> Result<Vec<(OrderChange, &[u8])>, crate::error::DecodeError> {
        let mut out = Vec::with_capacity(bytes.len() / OrderChange::SIZE);
        while !bytes.is_empty() {
            let head =
                bytes.get(..OrderChange::SIZE).ok_or(crate::error::DecodeError::FeedCut { what: "a summary" })?;
            let change: OrderChange = bytemuck::pod_read_unaligned(head);
            let end = OrderChange::SIZE + usize::from(change.pii_len);
            let pii = bytes
                .get(OrderChange::SIZE..end)
                .ok_or(crate::error::DecodeError::FeedCut { what: "personal data" })?;
            out.push((change, pii));
            bytes = &bytes[end..];
        }
        Ok(out)
    }
}

pub fn pack_reference(reference: &str) -> [u8; REFERENCE_MAX] {
    let mut out = [0u8; REFERENCE_MAX];
    for (o, b) in out.iter_mut().zip(reference.bytes().filter(|b| b.is_ascii_graphic())) {
        *o = b;
    }
    out
}

pub fn reference_str(reference: &[u8; REFERENCE_MAX]) -> &str {
    let len = reference.iter().position(|&b| b == 0).unwrap_or(REFERENCE_MAX);
    std::str::from_utf8(&reference[..len]).unwrap_or("")
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

const _: () = {
    assert!(std::mem::size_of::<OrderCreate>() == OrderCreate::SIZE);
    assert!(std::mem::size_of::<OrderCommand>() == OrderCommand::SIZE);
    assert!(std::mem::size_of::<Order>() == Order::SIZE);
    assert!(std::mem::size_of::<OrderFilter>() == OrderFilter::SIZE);
    assert!(std::mem::size_of::<OrderChange>() == OrderChange::SIZE);
};

//! The deterministic state machine: ledgers, accounts, transfers.
//!
//! The engine feeds it log entries in order: `begin_entry`, then `execute`
//! for each command, then `end_entry`. It reads no clock, does no I/O, draws
//! no random numbers, and nothing it outputs depends on the order of a hash
//! table, so identical logs give identical states and results everywhere.
//! Time comes from the entry: every event gets a unique, strictly increasing
//! timestamp derived from the entry's timestamp.

mod accounts;
mod expiry;
pub(crate) mod ids;
mod invariants;
mod ledgers;
pub(crate) mod lists;
mod queries;
pub(crate) mod snapshot;
mod transfers;
mod undo;

pub use crate::arena::{ChunkReadError, ChunkReader, StoredChunk};
pub use ids::StoredIds;
pub use lists::{SIDE_CREDIT, SIDE_DEBIT, StoredLists};
pub use queries::{QueryError, QueryErrorKind};
pub use snapshot::{
    COLD_SECTIONS, ChunkBytes, OnDisk, SECTIONS, SectionChunk, Snapshot, SnapshotChunks, SnapshotSection,
    StateSnapshot, StoredIndexes, chunk_hash, digest_from_chunk_hashes,
};

use crate::arena::CowArena;
use crate::codes::EventResult;
use crate::codes::{CreateAccountResult, CreateTransferResult};
use crate::events::{EventRef, OrderEventRef};
use crate::index::IdIndex;
use crate::limits::ENTRY_TIME_MAX;
use crate::memory::{MemoryUse, tree_bytes};
use crate::records::{Account, BalanceRecord, FailedTransfer, Ledger, Transfer, decode_at};
use crate::wide::Sum256;
use bytemuck::Pod;
use ids::Ids;
use lists::AccountLists;
use std::collections::{BTreeMap, BTreeSet};
use undo::Undo;

/// Arena chunk sizes (log2 of elements per chunk): transfers 8 MiB chunks,
/// accounts 512 KiB, so copy-on-write after a snapshot copies little. The
/// `small-chunks` feature (tests only) makes every chunk 8 elements.
pub(crate) const fn chunk_shift(normal: u32) -> u32 {
    if cfg!(feature = "small-chunks") { 3 } else { normal }
}
pub(crate) type Accounts = CowArena<Account, { chunk_shift(12) }>;
pub(crate) type Transfers = CowArena<Transfer, { chunk_shift(16) }>;
pub(crate) type TransferStates = CowArena<u8, { chunk_shift(16) }>;
pub(crate) type History = CowArena<BalanceRecord, { chunk_shift(14) }>;
pub(crate) type Failed = CowArena<FailedTransfer, { chunk_shift(14) }>;
pub(crate) type Journal = CowArena<EventRef, { chunk_shift(16) }>;
pub(crate) type OrderEvents = CowArena<OrderEventRef, { chunk_shift(12) }>;

/// A batch of ledger events of one kind, as `execute_batch` runs them: the
/// bytes of whole records (a command's events).
#[derive(Clone, Copy, Debug)]
pub enum Batch<'a> {
    Ledgers(&'a [u8]),
    Accounts(&'a [u8]),
    Transfers(&'a [u8]),
}

/// Where a pending transfer stands. Stored as one byte per transfer.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingState {
    /// Not a pending transfer.
    None = 0,
    Pending = 1,
    Posted = 2,
    Voided = 3,
    Expired = 4,
}

impl PendingState {
    pub fn from_byte(b: u8) -> Option<PendingState> {
        Some(match b {
            0 => PendingState::None,
            1 => PendingState::Pending,
            2 => PendingState::Posted,
            3 => PendingState::Voided,
            4 => PendingState::Expired,
            _ => return None,
        })
    }
}

/// Sums over a ledger's accounts, kept up to date by every change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    pub debits_pending: Sum256,
    pub debits_posted: Sum256,
    pub credits_pending: Sum256,
    pub credits_posted: Sum256,
    pub accounts: u64,
}

/// Capacity limits; a create beyond them gets a `*_limit_reached` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub ledgers: usize,
    pub accounts: usize,
    pub transfers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Accounts are the working set, addressed by u32 (one slot kept
        // free); transfers are history, as far as a journal slot reaches.
        Limits {
            ledgers: 1 << 16,
            accounts: u32::MAX as usize - 1,
            transfers: usize::try_from(crate::events::EVENT_INDEX_MAX).unwrap_or(usize::MAX),
        }
    }
}

/// How many events ahead of the one being applied the index is prefetched.
const PREFETCH_AHEAD: usize = 8;

pub struct StateMachine {
    limits: Limits,
    /// Position of the last applied log entry.
    position: u64,
    /// The last timestamp handed out; strictly increasing.
    last_timestamp: u64,
    in_entry: bool,
    /// The open entry's time (`now` of docs/ledger.md).
    entry_time: u64,
    ledgers: BTreeMap<u32, Ledger>,
    totals: BTreeMap<u32, LedgerTotals>,
    accounts: Accounts,
    account_index: IdIndex,
    /// Per account (by position): its transfers' positions, oldest first.
    account_transfers: AccountLists,
    /// Per account (by position): its balance records' positions, oldest first.
    account_history: AccountLists,
    transfers: Transfers,
    transfer_index: Ids,
    transfer_states: TransferStates,
    /// Live pending transfers with a timeout, by (expires_at, position).
    expiries: BTreeSet<(u64, u64)>,
    /// Every live pending transfer, by position.
    live_pending: BTreeSet<u64>,
    history: History,
    failed: Failed,
    failed_index: Ids,
    /// The change journal (`crate::events`): one slot per committed change.
    journal: Journal,
    order_events: OrderEvents,
    /// Undo records of the open linked chain; empty outside chains.
    undo: Vec<Undo>,
    journaling: bool,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl StateMachine {
    pub fn new(limits: Limits) -> Self {
        StateMachine {
            limits,
            position: 0,
            last_timestamp: 0,
            in_entry: false,
            entry_time: 0,
            ledgers: BTreeMap::new(),
            totals: BTreeMap::new(),
            accounts: Accounts::new(),
            account_index: IdIndex::default(),
            account_transfers: AccountLists::default(),
            account_history: AccountLists::default(),
            transfers: Transfers::new(),
            transfer_index: Ids::default(),
            transfer_states: TransferStates::new(),
            expiries: BTreeSet::new(),
            live_pending: BTreeSet::new(),
            history: History::new(),
            failed: Failed::new(),
            failed_index: Ids::default(),
            journal: Journal::new(),
            order_events: OrderEvents::new(),
            undo: Vec::new(),
            journaling: false,
        }
    }

    /// The current entry's time: every event of the entry is at or after it.
    pub fn entry_time(&self) -> u64 {
        assert!(self.in_entry, "entry_time outside an entry");
        self.entry_time
    }

    /// The next unique timestamp, for events applied outside the ledger
    /// (API keys).
    pub fn next_timestamp(&mut self) -> u64 {
        assert!(self.in_entry, "timestamps are handed out inside an entry");
        self.tick()
    }

    /// Position of the last applied entry (0 before the first).
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    /// RAM held per structure (estimates, O(1); see `crate::memory`).
    pub fn memory(&self, out: &mut MemoryUse) {
        out.add("transfers", self.transfers.heap_bytes());
        out.add("transfer_index", self.transfer_index.heap_bytes());
        out.add("transfer_states", self.transfer_states.heap_bytes());
        out.add("accounts", self.accounts.heap_bytes());
        out.add("account_index", self.account_index.heap_bytes());
        out.add("account_lists", self.account_transfers.heap_bytes() + self.account_history.heap_bytes());
        out.add("balance_history", self.history.heap_bytes());
        out.add("failed", self.failed.heap_bytes() + self.failed_index.heap_bytes());
        out.add("journal", self.journal.heap_bytes() + self.order_events.heap_bytes());
        out.add(
            "pending",
            tree_bytes::<(u64, u64), ()>(self.expiries.len()) + tree_bytes::<u64, ()>(self.live_pending.len()),
        );
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn transfer_count(&self) -> usize {
        self.transfers.len()
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The account at an arena slot (a journal reference).
    pub fn account_at(&self, position: u32) -> Account {
        self.accounts.get(position as usize)
    }

    pub fn balance_record_count(&self) -> usize {
        self.history.len()
    }

    /// The balance record at an arena slot.
    pub fn balance_record_at(&self, position: u64) -> BalanceRecord {
        self.history.get(position as usize)
    }

    pub fn failed_count(&self) -> usize {
        self.failed.len()
    }

    /// The failed id record at an arena slot.
    pub fn failed_at(&self, position: u64) -> FailedTransfer {
        self.failed.get(position as usize)
    }

    /// The transfer at an arena slot (a journal reference).
    pub fn transfer_at(&self, position: u64) -> Transfer {
        self.transfers.get(position as usize)
    }

    pub fn order_event_at(&self, index: u64) -> OrderEventRef {
        self.order_events.get(index as usize)
    }

    /// Journals a committed change. Inside a linked chain the slot is
    /// undone with the chain.
    pub(crate) fn record_event(&mut self, kind: u8, index: u64, aux: u64) {
        debug_assert!(kind != 0 && kind <= crate::events::kind::MAX);
        self.journal.push(EventRef::new(kind, index, aux));
        if self.journaling {
            self.undo.push(Undo::EventRecorded);
        }
    }

    /// Journals an order's creation or transition (outside any chain: the
    /// order's money movements have committed by then).
    pub fn record_order_event(&mut self, order_id: u128, timeline: usize) {
        assert!(!self.journaling, "order events are journaled after their chain commits");
        let index = self.order_events.len() as u64;
        let timeline = u32::try_from(timeline).expect("invariant: timelines are capped");
        self.order_events.push(OrderEventRef { order_id, timeline, reserved: [0; 12] });
        self.record_event(crate::events::kind::ORDER, index, 0);
    }

    /// Journals a change outside the ledger (keys, audit records).
    pub fn record_service_event(&mut self, kind: u8, aux: u64) {
        assert!(!self.journaling, "service events are never part of a chain");
        self.record_event(kind, 0, aux);
    }

    pub fn ledger_count(&self) -> usize {
        self.ledgers.len()
    }

    pub fn ledger_totals(&self) -> impl Iterator<Item = (&Ledger, &LedgerTotals)> + '_ {
        self.ledgers.values().map(|l| (l, &self.totals[&l.id]))
    }

    /// The earliest expiry of a live pending transfer, so the engine knows
    /// when to log an entry that lets it expire.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Starts applying the entry at `position`, logged at `timestamp`
    /// (nanoseconds). Sweeps pending transfers that expired by then.
    pub fn begin_entry(&mut self, position: u64, timestamp: u64) {
        assert!(!self.in_entry, "begin_entry while entry {} is open", self.position + 1);
        assert_eq!(position, self.position + 1, "entries must be applied in order without gaps");
        self.in_entry = true;
        // Strictly monotonic even if the log's clock stepped back.
        let now = timestamp.min(ENTRY_TIME_MAX).max(self.last_timestamp + 1);
        self.last_timestamp = now - 1;
        self.entry_time = now;
        self.sweep_expired(now);
    }

    /// Runs one batch of ledger events, appending a result for every event
    /// that was not `ok`. The batch holds whole records (`Command::validate`).
    pub fn execute_batch(&mut self, batch: Batch<'_>, results: &mut Vec<EventResult>) {
        assert!(self.in_entry, "execute outside an entry");
        match batch {
            Batch::Ledgers(events) => {
                for i in 0..events.len() / Ledger::SIZE {
                    let ledger: Ledger = decode_at(events, i);
                    let timestamp = self.tick();
                    let code = self.create_ledger(&ledger, timestamp);
                    if code != crate::codes::CreateLedgerResult::Ok {
                        results.push(EventResult { index: i as u32, code: code.code() });
                    }
                }
            }
            Batch::Accounts(events) => self.execute_chained(
                events,
                results,
                |a: &Account| a.flags & crate::records::account_flags::LINKED != 0,
                |sm, a, ts| sm.create_account(a, ts).code(),
                |sm, id| sm.account_index.prefetch(id),
                CreateAccountResult::LinkedEventFailed.code(),
                CreateAccountResult::LinkedEventChainOpen.code(),
                |_, _, _, _| {},
            ),
            Batch::Transfers(events) => self.execute_chained(
                events,
                results,
                |t: &Transfer| t.flags & crate::records::transfer_flags::LINKED != 0,
                |sm, t, ts| sm.create_transfer(t, ts).code(),
                |sm, id| sm.transfer_index.prefetch(id),
                CreateTransferResult::LinkedEventFailed.code(),
                CreateTransferResult::LinkedEventChainOpen.code(),
                |sm, t, ts, code| sm.record_failed_transfer(t, ts, code),
            ),
        }
    }

    /// Runs events with linked-chain semantics: a chain is all-or-nothing, and
    /// when one event fails every other event of its chain reports
    /// `linked_failed`. `after_failure` runs once the chain is rolled back.
    #[allow(clippy::too_many_arguments)]
    fn execute_chained<T: Pod>(
        &mut self,
        events: &[u8],
        results: &mut Vec<EventResult>,
        is_linked: impl Fn(&T) -> bool,
        create: impl Fn(&mut Self, &T, u64) -> u32,
        prefetch: impl Fn(&Self, u128),
        linked_failed: u32,
        chain_open: u32,
        after_failure: impl Fn(&mut Self, &T, u64, u32),
    ) {
        let size = std::mem::size_of::<T>();
        let count = events.len() / size;
        let mut chain_start: Option<usize> = None;
        let mut chain_failed = false;
        for i in 0..count {
            if i + PREFETCH_AHEAD < count {
                // Every record starts with its id: load its index bucket now
                // so the lookup PREFETCH_AHEAD events later hits the cache.
                let at = (i + PREFETCH_AHEAD) * size;
                let id = u128::from_le_bytes(events[at..at + 16].try_into().expect("16-byte id"));
                prefetch(self, id);
            }
            let event: T = decode_at(events, i);
            let timestamp = self.tick();
            let linked = is_linked(&event);
            if linked && chain_start.is_none() {
                chain_start = Some(i);
                self.begin_chain();
            }
            let code = if chain_failed {
                linked_failed
            } else if linked && i + 1 == count {
                chain_open
            } else {
                create(self, &event, timestamp)
            };
            if code != 0 {
                if let Some(start) = chain_start
                    && !chain_failed
                {
                    chain_failed = true;
                    self.rollback_chain();
                    results.extend((start..i).map(|j| EventResult { index: j as u32, code: linked_failed }));
                }
                results.push(EventResult { index: i as u32, code });
                if code != linked_failed && code != chain_open {
                    after_failure(self, &event, timestamp, code);
                }
            }
            if chain_start.is_some() && !linked {
                if !chain_failed {
                    self.commit_chain();
                }
                chain_start = None;
                chain_failed = false;
            }
        }
        if chain_start.is_some() && !chain_failed {
            // Only reachable if the last event was linked, which failed above.
            unreachable!("an open chain at the end of a batch always fails");
        }
    }

    /// Ends the entry: checks the invariants that are cheap in every build
    /// and all of them in debug builds.
    pub fn end_entry(&mut self) {
        assert!(self.in_entry, "end_entry without begin_entry");
        assert!(self.undo.is_empty() && !self.journaling, "a linked chain was left open");
        self.in_entry = false;
        self.position += 1;
        self.assert_totals_balance();
        if cfg!(debug_assertions)
            && let Err(e) = self.check_invariants()
        {
            panic!("invariant broken after entry {}: {e}", self.position);
        }
    }

    fn tick(&mut self) -> u64 {
        self.last_timestamp =
            self.last_timestamp.checked_add(1).expect("invariant: nanosecond timestamps last until 2554");
        self.last_timestamp
    }

    #[inline]
    fn find_account(&self, id: u128) -> Option<u32> {
        self.account_index.find(id, |p| self.accounts.get(p as usize).id)
    }

    #[inline]
    fn find_transfer(&self, id: u128) -> Option<u64> {
        self.transfer_index.find(id, |p| self.transfers.get(p as usize).id)
    }

    fn find_failed(&self, id: u128) -> Option<u64> {
        self.failed_index.find(id, |p| self.failed.get(p as usize).id)
    }

    pub fn account(&self, id: u128) -> Option<&Account> {
        self.find_account(id).map(|p| self.accounts.get_hot(p as usize))
    }

    pub fn transfer(&self, id: u128) -> Option<Transfer> {
        self.find_transfer(id).map(|p| self.transfers.get(p as usize))
    }

    /// Where a pending transfer stands; `None` if no transfer has this id.
    pub fn pending_state(&self, id: u128) -> Option<PendingState> {
        self.find_transfer(id).map(|p| self.state_of(p))
    }

    /// The original rejection of a transfer id that can no longer be used.
    pub fn failed_transfer(&self, id: u128) -> Option<FailedTransfer> {
        self.find_failed(id).map(|p| self.failed.get(p as usize))
    }

    pub fn ledger(&self, id: u32) -> Option<&Ledger> {
        self.ledgers.get(&id)
    }

    fn state_of(&self, position: u64) -> PendingState {
        PendingState::from_byte(self.transfer_states.get(position as usize))
            .expect("invariant: stored pending states are valid")
    }

    /// Replaces an account, recording the old value for rollback.
    fn write_account(&mut self, position: u32, account: Account) {
        let slot = self.accounts.get_mut(position as usize);
        if self.journaling {
            self.undo.push(Undo::Account { position, before: *slot });
        }
        *slot = account;
    }

    fn set_transfer_state(&mut self, position: u64, state: PendingState) {
        let slot = self.transfer_states.get_mut(position as usize);
        if self.journaling {
            self.undo.push(Undo::TransferState { position, before: *slot });
        }
        *slot = state as u8;
    }

    fn totals_mut(&mut self, ledger: u32) -> &mut LedgerTotals {
        let totals = self.totals.get_mut(&ledger).expect("invariant: every account's ledger has totals");
        if self.journaling {
            self.undo.push(Undo::Totals { ledger, before: *totals });
        }
        totals
    }

    /// Records the balances of a history account after a change.
    fn record_history(&mut self, account_position: u32, timestamp: u64) {
        let a = self.accounts.get(account_position as usize);
        if !a.has(crate::records::account_flags::HISTORY) {
            return;
        }
        let record = BalanceRecord {
            account_id: a.id,
            debits_pending: a.debits_pending,
            debits_posted: a.debits_posted,
            credits_pending: a.credits_pending,
            credits_posted: a.credits_posted,
            timestamp,
            reserved: 0,
        };
        let position = self.history.push(record) as u64;
        self.account_history.push(account_position, position);
        if self.journaling {
            self.undo.push(Undo::HistoryAdded { account_position });
        }
    }
}

#[cfg(test)]
mod tests;

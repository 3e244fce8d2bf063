//! Snapshots of the state: a cheap frozen view for a background writer, a
//! digest for comparing replicas, and a rebuild from stored chunks.
//!
//! Only the records are stored (ledgers, accounts, transfers, pending states,
//! balance records, failed ids); every index is rebuilt on load.

use super::ids::{Ids, StoredIds};
use super::lists::{AccountLists, StoredLists};
use super::{
    Accounts, Failed, History, Journal, LedgerTotals, OrderEvents, PendingState, StateMachine, TransferStates,
    Transfers,
};
use crate::arena::{ArenaView, Chunk, ChunkData, ChunkReader, StoredChunk};
use crate::error::DecodeError;
use crate::events::{EventRef, OrderEventRef};
use crate::index::IdIndex;
use crate::records::{
    Account, BalanceRecord, FailedTransfer, Ledger, Transfer, account_flags as AF, transfer_flags as F,
};
use bytemuck::Pod;
use std::sync::{Arc, OnceLock};

/// Bytes of a chunk of records, as a snapshot hands them to a writer.
pub trait ChunkBytes: Send + Sync {
    /// The bytes. For a chunk already stored on disk (`stored` is some)
    /// this reads it back, once per view: writers and digests use the hash.
    fn bytes(&self) -> &[u8];

    /// Where the chunk is already stored: its hash (so its name) and length.
    fn stored(&self) -> Option<StoredChunk> {
        None
    }
}

/// The hash of a chunk's bytes: from the store if it is stored, else
/// computed.
pub fn chunk_hash(chunk: &dyn ChunkBytes) -> [u8; 32] {
    match chunk.stored() {
        Some(s) => s.hash,
        None => *blake3::hash(chunk.bytes()).as_bytes(),
    }
}

/// A cold chunk in a view: known by its hash, its bytes read back only if
/// someone asks for them.
struct ColdBytes {
    stored: StoredChunk,
    reader: Option<Arc<dyn ChunkReader>>,
    bytes: OnceLock<Vec<u8>>,
}

impl ChunkBytes for ColdBytes {
    fn bytes(&self) -> &[u8] {
        self.bytes.get_or_init(|| {
            let reader = self.reader.as_ref().expect("invariant: a view with cold chunks has the arena's reader");
            let mut out = vec![0u8; self.stored.len as usize];
            if let Err(e) = reader.read(&self.stored, 0, &mut out) {
                panic!("storage fault: a stored chunk cannot be read back for a snapshot: {e}");
            }
            out
        })
    }

    fn stored(&self) -> Option<StoredChunk> {
        Some(self.stored)
    }
}

/// A chunk of a stored snapshot as a store hands it back: its bytes, or
/// where it is on disk (a store that loads lazily; restore then needs a
/// reader).
#[derive(Clone, Debug)]
pub enum SectionChunk {
    Bytes(Vec<u8>),
    Stored(StoredChunk),
}

impl From<Vec<u8>> for SectionChunk {
    fn from(bytes: Vec<u8>) -> SectionChunk {
        SectionChunk::Bytes(bytes)
    }
}

impl SectionChunk {
    /// The bytes of a chunk held in memory (`None` for a stored one).
    pub fn bytes_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            SectionChunk::Bytes(b) => Some(b),
            SectionChunk::Stored(_) => None,
        }
    }

    /// The bytes, reading a stored chunk back through `reader`.
    pub fn into_bytes(self, reader: Option<&Arc<dyn ChunkReader>>) -> Result<Vec<u8>, DecodeError> {
        match self {
            SectionChunk::Bytes(b) => Ok(b),
            SectionChunk::Stored(s) => {
                let reader = reader.ok_or(DecodeError::StoredChunkWithoutReader)?;
                let mut out = vec![0u8; s.len as usize];
                reader
                    .read(&s, 0, &mut out)
                    .map_err(|e| DecodeError::StoredChunkUnreadable { reason: e.to_string() })?;
                Ok(out)
            }
        }
    }
}

impl<T: Pod + Send + Sync> ChunkBytes for Vec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
}

/// One kind of record in a snapshot, split into the arena's chunks. A chunk
/// that is the same `Arc` as in an earlier snapshot has not changed.
pub struct SnapshotSection {
    pub name: &'static str,
    pub chunks: Vec<Arc<dyn ChunkBytes>>,
}

/// Anything a snapshot store can write: a header and named sections of
/// chunks. The digest covers the header and every chunk's hash.
pub trait Snapshot: Send {
    fn position(&self) -> u64;
    fn header(&self) -> Vec<u8>;
    fn sections(&self) -> Vec<SnapshotSection>;

    /// A hash of the whole state: equal states have equal digests. Built
    /// from per-chunk hashes (see [`digest_from_chunk_hashes`]), so a store
    /// that already knows its chunks' hashes need not hash them again.
    fn digest(&self) -> [u8; 32] {
        let sections: Vec<(&str, Vec<[u8; 32]>)> = self
            .sections()
            .iter()
            .map(|s| (s.name, s.chunks.iter().map(|c| chunk_hash(c.as_ref())).collect()))
            .collect();
        let refs: Vec<(&str, &[[u8; 32]])> = sections.iter().map(|(n, h)| (*n, h.as_slice())).collect();
        digest_from_chunk_hashes(&self.header(), &refs)
    }
}

/// A frozen, consistent view of the state after `position`. Taking it costs
/// O(chunks); it shares memory with the live state until the state writes.
pub struct StateSnapshot {
    pub position: u64,
    pub last_timestamp: u64,
    ledgers: Vec<Ledger>,
    accounts: ArenaView<Account>,
    transfers: ArenaView<Transfer>,
    transfer_states: ArenaView<u8>,
    history: ArenaView<BalanceRecord>,
    failed: ArenaView<FailedTransfer>,
    journal: ArenaView<EventRef>,
    order_events: ArenaView<OrderEventRef>,
}

/// Section names, in the order they are stored and hashed.
pub const SECTIONS: [&str; 7] =
    ["accounts", "transfers", "transfer_states", "history", "failed", "journal", "order_events"];

/// What a restore may leave on disk: cold chunks (read through `chunks`)
/// and ids below the stored tables' coverage.
#[derive(Default)]
pub struct OnDisk {
    pub chunks: Option<Arc<dyn ChunkReader>>,
    pub ids: Option<StoredIndexes>,
}

/// Stored tables of old ids and list entries (see `state::ids` and
/// `state::lists`), to install or to restore with.
pub struct StoredIndexes {
    pub transfers: Arc<dyn StoredIds>,
    pub failed: Arc<dyn StoredIds>,
    /// Accounts' transfer lists, over transfer positions.
    pub account_transfers: Arc<dyn StoredLists>,
    /// Accounts' balance-record lists, over balance-record positions.
    pub account_history: Arc<dyn StoredLists>,
    /// Final orders by id and by (state, id), over final-order indexes.
    pub orders: Arc<dyn crate::final_index::StoredOrders>,
}

impl StoredIndexes {
    /// What each part covers: (transfer ids, failed ids, transfer lists,
    /// balance lists, final orders), as `Machine::stored_covered`.
    pub fn covered(&self) -> [u64; 5] {
        [
            self.transfers.covered(),
            self.failed.covered(),
            self.account_transfers.covered(),
            self.account_history.covered(),
            self.orders.covered(),
        ]
    }
}

/// Sections whose full chunks may leave RAM once a durable snapshot holds
/// them: records that rarely change once appended (a write to one reads
/// its chunk back: undo of a chain, or a pending transfer's state when it
/// is posted, voided or expires long after it was made). Accounts change
/// all the time and stay in memory. The last five are the machine's
/// service sections (`machine::SERVICE_SECTIONS`): the audit trail, the
/// access trail and the final orders, which are only ever appended to. One list for the state,
/// the machine and the snapshot store, which leaves these sections on disk
/// when it loads lazily.
pub const COLD_SECTIONS: [&str; 11] = [
    "transfers",
    "transfer_states",
    "history",
    "failed",
    "journal",
    "order_events",
    "audit_bytes",
    "audit_offsets",
    "access_records",
    "final_orders",
    "final_order_bytes",
];

/// The stored form of a snapshot, as read back: the header and, per section
/// in `SECTIONS` order, the chunks' bytes.
pub struct SnapshotChunks {
    pub header: Vec<u8>,
    pub sections: Vec<Vec<SectionChunk>>,
}

/// A view's chunks as a snapshot section: hot chunks by their `Arc` (so
/// writers can tell an unchanged chunk by its address), cold ones by hash.
pub(crate) fn view_chunks<T: Pod + Send + Sync>(view: &ArenaView<T>) -> Vec<Arc<dyn ChunkBytes>> {
    view.chunks
        .iter()
        .map(|c| match c {
            Chunk::Hot(items) => items.clone() as Arc<dyn ChunkBytes>,
            Chunk::Cold(stored) => {
                Arc::new(ColdBytes { stored: *stored, reader: view.reader().cloned(), bytes: OnceLock::new() })
                    as Arc<dyn ChunkBytes>
            }
        })
        .collect()
}

fn section<T: Pod + Send + Sync>(name: &'static str, view: &ArenaView<T>) -> SnapshotSection {
    SnapshotSection { name, chunks: view_chunks(view) }
}

impl StateSnapshot {
    /// Transfers in the view.
    pub fn transfer_count(&self) -> u64 {
        self.transfers.len as u64
    }

    /// Failed ids in the view.
    pub fn failed_count(&self) -> u64 {
        self.failed.len as u64
    }

    /// Balance records in the view.
    pub fn balance_record_count(&self) -> u64 {
        self.history.len as u64
    }

    /// The view's transfers from position `from` on, with their positions.
    pub fn transfers_from(&self, from: u64) -> impl Iterator<Item = (Transfer, u64)> + '_ {
        self.transfers.iter_from(from as usize).zip(from..)
    }

    /// The view's balance records from position `from` on, with positions.
    pub fn balance_records_from(&self, from: u64) -> impl Iterator<Item = (BalanceRecord, u64)> + '_ {
        self.history.iter_from(from as usize).zip(from..)
    }

    /// (id, position) of the view's transfers from position `from` on: what
    /// stored id tables are built from.
    pub fn transfer_ids(&self, from: u64) -> impl Iterator<Item = (u128, u64)> + '_ {
        self.transfers.iter_from(from as usize).zip(from..).map(|(t, p)| (t.id, p))
    }

    /// (id, position) of the view's failed ids from position `from` on.
    pub fn failed_ids(&self, from: u64) -> impl Iterator<Item = (u128, u64)> + '_ {
        self.failed.iter_from(from as usize).zip(from..).map(|(f, p)| (f.id, p))
    }

    /// Position, last timestamp and the ledgers.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.ledgers.len() * Ledger::SIZE);
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.last_timestamp.to_le_bytes());
        out.extend_from_slice(&(self.ledgers.len() as u64).to_le_bytes());
        out.extend_from_slice(bytemuck::cast_slice(&self.ledgers));
        out
    }

    pub fn sections(&self) -> Vec<SnapshotSection> {
        vec![
            section(SECTIONS[0], &self.accounts),
            section(SECTIONS[1], &self.transfers),
            section(SECTIONS[2], &self.transfer_states),
            section(SECTIONS[3], &self.history),
            section(SECTIONS[4], &self.failed),
            section(SECTIONS[5], &self.journal),
            section(SECTIONS[6], &self.order_events),
        ]
    }
}

impl Snapshot for StateSnapshot {
    fn position(&self) -> u64 {
        self.position
    }

    fn header(&self) -> Vec<u8> {
        StateSnapshot::header(self)
    }

    fn sections(&self) -> Vec<SnapshotSection> {
        StateSnapshot::sections(self)
    }
}

/// The state digest from the snapshot header and each section's chunk
/// hashes (blake3 of each chunk's bytes), in `SECTIONS` order.
pub fn digest_from_chunk_hashes(header: &[u8], sections: &[(&str, &[[u8; 32]])]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"bursar-state-digest-v1");
    h.update(&(header.len() as u64).to_le_bytes());
    h.update(header);
    for (name, chunks) in sections {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(chunks.len() as u64).to_le_bytes());
        for c in *chunks {
            h.update(c);
        }
    }
    *h.finalize().as_bytes()
}

impl StateMachine {
    /// A frozen view of the state between entries.
    pub fn snapshot(&self) -> StateSnapshot {
        assert!(!self.in_entry, "snapshots are taken between entries");
        StateSnapshot {
            position: self.position,
            last_timestamp: self.last_timestamp,
            ledgers: self.ledgers.values().copied().collect(),
            accounts: self.accounts.view(),
            transfers: self.transfers.view(),
            transfer_states: self.transfer_states.view(),
            history: self.history.view(),
            failed: self.failed.view(),
            journal: self.journal.view(),
            order_events: self.order_events.view(),
        }
    }

    /// Lets full chunks go cold from now on, read back through `reader`.
    pub fn set_chunk_reader(&mut self, reader: Arc<dyn ChunkReader>) {
        self.transfers.set_reader(reader.clone());
        self.transfer_states.set_reader(reader.clone());
        self.history.set_reader(reader.clone());
        self.failed.set_reader(reader.clone());
        self.journal.set_reader(reader.clone());
        self.order_events.set_reader(reader);
    }

    /// Lets the chunks of `view` that a durable snapshot stored leave RAM:
    /// `stored` holds, per section of `view` in `SECTIONS` order, where each
    /// chunk is on disk. Only full chunks of `COLD_SECTIONS` that are still
    /// the very allocations of `view` go cold, and the newest
    /// `HOT_TAIL_CHUNKS` of each arena stay (recent records are read most).
    /// Returns how many chunks went cold.
    pub fn release_stored(&mut self, view: &StateSnapshot, stored: &[Vec<StoredChunk>]) -> usize {
        assert!(stored.len() >= SECTIONS.len(), "invariant: every section of the view was stored");
        let released = release(&mut self.transfers, &view.transfers, &stored[1])
            + release(&mut self.transfer_states, &view.transfer_states, &stored[2])
            + release(&mut self.history, &view.history, &stored[3])
            + release(&mut self.failed, &view.failed, &stored[4])
            + release(&mut self.journal, &view.journal, &stored[5])
            + release(&mut self.order_events, &view.order_events, &stored[6]);
        // Ids from here on go to new RAM generations: the current ones
        // hold only records the store now has, which stored tables can be
        // built from and then replace.
        self.transfer_index.seal(self.transfers.len() as u64);
        self.failed_index.seal(self.failed.len() as u64);
        released
    }

    /// Hands the ids of transfers and of failed transfers below each
    /// table's `covered()` over to stored tables (see `state::ids`); the
    /// RAM generations they cover are dropped.
    pub fn install_stored_ids(&mut self, stored: StoredIndexes) {
        let (transfers, history) = (self.transfers.len() as u64, self.history.len() as u64);
        self.transfer_index.install(stored.transfers, transfers);
        self.failed_index.install(stored.failed, self.failed.len() as u64);
        self.account_transfers.install(stored.account_transfers, transfers);
        self.account_history.install(stored.account_history, history);
    }

    /// Positions below which each part comes from stored tables, in the
    /// order of `StoredIndexes::covered`: what the next runs start from.
    pub fn stored_covered(&self) -> [u64; 4] {
        [
            self.transfer_index.covered(),
            self.failed_index.covered(),
            self.account_transfers.covered(),
            self.account_history.covered(),
        ]
    }

    /// Entries held in RAM: transfer ids, failed ids, transfer-list and
    /// balance-list entries; and the id indexes' RAM generations.
    pub fn indexes_in_memory(&self) -> ([usize; 4], usize) {
        let held = [
            self.transfer_index.len_in_memory(),
            self.failed_index.len_in_memory(),
            self.account_transfers.len_in_memory(),
            self.account_history.len_in_memory(),
        ];
        (held, self.transfer_index.generations().max(self.failed_index.generations()))
    }

    /// Chunks held on disk only, over all arenas.
    pub fn cold_chunks(&self) -> usize {
        self.transfers.cold_chunks()
            + self.transfer_states.cold_chunks()
            + self.history.cold_chunks()
            + self.failed.cold_chunks()
            + self.journal.cold_chunks()
            + self.order_events.cold_chunks()
    }

    /// Shorthand for `snapshot().digest()`.
    pub fn digest(&self) -> [u8; 32] {
        Snapshot::digest(&self.snapshot())
    }

    /// Rebuilds a state from stored chunks, rebuilding every index and
    /// checking every invariant. Errors describe what is inconsistent.
    pub fn restore(limits: super::Limits, stored: SnapshotChunks) -> Result<StateMachine, DecodeError> {
        Self::restore_with(limits, stored, OnDisk::default())
    }

    /// `restore`, with a reader for chunks the store left on disk: full
    /// chunks of the sections that may go cold stay cold.
    pub fn restore_with(
        limits: super::Limits,
        stored: SnapshotChunks,
        disk: OnDisk,
    ) -> Result<StateMachine, DecodeError> {
        let OnDisk { chunks: reader, ids } = disk;
        let (position, last_timestamp, ledgers) = decode_header(&stored.header)?;
        let [accounts, transfers, states, history, failed, journal, order_events]: [Vec<SectionChunk>; 7] = stored
            .sections
            .try_into()
            .map_err(|s: Vec<_>| DecodeError::Sections { expected: SECTIONS.len(), found: s.len() })?;
        let mut sm = StateMachine::new(limits);
        sm.position = position;
        sm.last_timestamp = last_timestamp;
        for l in ledgers {
            if l.id == 0 || l.asset_str().is_none() || sm.ledgers.insert(l.id, l).is_some() {
                return Err(DecodeError::InvalidOrStoredTwice { what: "ledger", id: u128::from(l.id) });
            }
            sm.totals.insert(l.id, LedgerTotals::default());
        }
        let r = reader.as_ref();
        let cold = || reader.clone();
        sm.accounts = Accounts::from_chunks(decode_records(accounts, "accounts", r)?)?;
        sm.transfers = Transfers::from_stored(decode_chunks(transfers, "transfers", r)?, cold())?;
        sm.transfer_states = TransferStates::from_stored(decode_chunks(states, "transfer_states", r)?, cold())?;
        sm.history = History::from_stored(decode_chunks(history, "history", r)?, cold())?;
        sm.failed = Failed::from_stored(decode_chunks(failed, "failed", r)?, cold())?;
        sm.journal = Journal::from_stored(decode_chunks(journal, "journal", r)?, cold())?;
        sm.order_events = OrderEvents::from_stored(decode_chunks(order_events, "order_events", r)?, cold())?;
        if let Some(reader) = reader {
            sm.set_chunk_reader(reader);
        }
        sm.rebuild_accounts()?;
        let [ids_t, ids_f, lists_t, lists_h, _] = ids.as_ref().map_or([0; 5], StoredIndexes::covered);
        sm.rebuild_transfers(ids_t, lists_t)?;
        sm.rebuild_history(lists_h)?;
        sm.rebuild_failed(ids_f)?;
        if let Some(ids) = ids {
            sm.install_stored_ids(ids);
        }
        sm.check_journal()?;
        // History the stored tables cover was checked when it was first
        // restored or applied; only what follows is read again.
        sm.check_invariants()?;
        sm.check_transfers_from(ids_t.min(lists_t))?;
        Ok(sm)
    }

    fn rebuild_accounts(&mut self) -> Result<(), DecodeError> {
        self.account_index = IdIndex::with_capacity(self.accounts.len());
        for (p, a) in self.accounts.iter().enumerate() {
            if a.id == 0 || a.id == u128::MAX {
                return Err(DecodeError::InvalidId { what: "account", position: p as u64, id: a.id });
            }
            if self.account_index.find(a.id, |q| self.accounts.get(q as usize).id).is_some() {
                return Err(DecodeError::StoredTwice { what: "account", id: a.id });
            }
            self.account_index.insert(a.id, p as u32);
            let totals = self
                .totals
                .get_mut(&a.ledger)
                .ok_or(DecodeError::AccountOnUnknownLedger { account: a.id, ledger: a.ledger })?;
            totals.debits_pending = totals.debits_pending.plus(a.debits_pending);
            totals.debits_posted = totals.debits_posted.plus(a.debits_posted);
            totals.credits_pending = totals.credits_pending.plus(a.credits_pending);
            totals.credits_posted = totals.credits_posted.plus(a.credits_posted);
            totals.accounts += 1;
        }
        self.account_transfers = AccountLists::with_accounts(self.accounts.len());
        self.account_history = AccountLists::with_accounts(self.accounts.len());
        Ok(())
    }

    /// Rebuilds the id index for transfers from `covered` on (stored tables
    /// hold those below), the accounts' transfer lists and the pending set.
    fn rebuild_transfers(&mut self, covered: u64, lists_covered: u64) -> Result<(), DecodeError> {
        if self.transfer_states.len() != self.transfers.len() {
            return Err(DecodeError::PendingStates {
                states: self.transfer_states.len(),
                transfers: self.transfers.len(),
            });
        }
        let len = self.transfers.len() as u64;
        for (what, c) in [("transfer", covered), ("transfer list", lists_covered)] {
            if c > len {
                return Err(DecodeError::StoredIdsAhead { what, covered: c, records: len });
            }
        }
        self.transfer_index = Ids::with_capacity(covered, (len - covered) as usize);
        // By chunk, not by element: a cold chunk is read back once. What
        // the stored tables cover is not read at all.
        let start = covered.min(lists_covered);
        for (t, p) in self.transfers.iter_from(start as usize).zip(start..) {
            if p >= covered {
                if self.find_transfer(t.id).is_some() {
                    return Err(DecodeError::StoredTwice { what: "transfer", id: t.id });
                }
                self.transfer_index.insert(t.id, p);
            }
            if p >= lists_covered {
                // Apply never stores such a transfer; damaged bytes could,
                // and would list it twice on one account.
                if t.debit_account_id == t.credit_account_id {
                    return Err(DecodeError::TransferSameAccounts { transfer: t.id, account: t.debit_account_id });
                }
                for id in [t.debit_account_id, t.credit_account_id] {
                    let a = self
                        .find_account(id)
                        .ok_or(DecodeError::TransferUnknownAccount { transfer: t.id, account: id })?;
                    self.account_transfers.push(a, p);
                }
            }
        }
        self.rebuild_pending()
    }

    /// The live pending transfers and their expiries, from the pending
    /// states (one byte per transfer, read a chunk at a time, from disk
    /// where cold): only pending transfers themselves are read.
    fn rebuild_pending(&mut self) -> Result<(), DecodeError> {
        let mut pending = Vec::new();
        for (state, p) in self.transfer_states.iter().zip(0u64..) {
            match PendingState::from_byte(state) {
                None => return Err(DecodeError::InvalidPendingState { transfer: self.transfers.get(p as usize).id }),
                Some(PendingState::Pending) => pending.push(p),
                Some(_) => {}
            }
        }
        for p in pending {
            let t = self.transfers.get(p as usize);
            self.live_pending.insert(p);
            if t.timeout != 0 && t.has(F::PENDING) {
                self.expiries.insert((super::transfers::expiry_of(&t), p));
            }
        }
        Ok(())
    }

    fn rebuild_history(&mut self, covered: u64) -> Result<(), DecodeError> {
        let len = self.history.len() as u64;
        if covered > len {
            return Err(DecodeError::StoredIdsAhead { what: "balance list", covered, records: len });
        }
        for (r, p) in self.history.iter_from(covered as usize).zip(covered as usize..) {
            let a =
                self.find_account(r.account_id).ok_or(DecodeError::BalanceUnknownAccount { account: r.account_id })?;
            if !self.accounts.get(a as usize).has(AF::HISTORY) {
                return Err(DecodeError::BalanceWithoutHistory { account: r.account_id });
            }
            self.account_history.push(a, p as u64);
        }
        Ok(())
    }

    /// Every journal slot must point at a record that exists. Slots in
    /// cold chunks were checked when they were written or first restored,
    /// and records are never removed, so only the hot tail is read: a
    /// restore does not read the history's journal back.
    fn check_journal(&self) -> Result<(), DecodeError> {
        use crate::events::kind as K;
        let start = self.journal.hot_tail_start();
        for (r, seq) in self.journal.iter_from(start).zip(start..) {
            let ok = match r.kind {
                K::LEDGER_CREATED => self.ledgers.contains_key(&(r.aux as u32)),
                K::ACCOUNT_CREATED => r.index() < self.accounts.len() as u64,
                K::TRANSFER_POSTED | K::TRANSFER_PENDING | K::TRANSFER_VOIDED | K::TRANSFER_EXPIRED => {
                    r.index() < self.transfers.len() as u64
                }
                K::ORDER => r.index() < self.order_events.len() as u64,
                K::KEY_CREATED | K::KEY_REVOKED | K::AUDIT_RECORDED => true,
                _ => false,
            };
            if !ok {
                return Err(DecodeError::DanglingJournalSlot { slot: seq as u64, kind: r.kind });
            }
        }
        Ok(())
    }

    fn rebuild_failed(&mut self, covered: u64) -> Result<(), DecodeError> {
        let len = self.failed.len() as u64;
        if covered > len {
            return Err(DecodeError::StoredIdsAhead { what: "failed transfer", covered, records: len });
        }
        self.failed_index = Ids::with_capacity(covered, (len - covered) as usize);
        for (p, f) in self.failed.iter().enumerate().skip(covered as usize) {
            if self.find_failed(f.id).is_some() {
                return Err(DecodeError::StoredTwice { what: "failed transfer id", id: f.id });
            }
            self.failed_index.insert(f.id, p as u64);
        }
        Ok(())
    }
}

fn decode_header(header: &[u8]) -> Result<(u64, u64, Vec<Ledger>), DecodeError> {
    let word = |i: usize| -> Result<u64, DecodeError> {
        header
            .get(i * 8..i * 8 + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or(DecodeError::HeaderTooShort)
    };
    let (position, last_timestamp, count) = (word(0)?, word(1)?, word(2)?);
    let rest = &header[24..];
    if rest.len() as u64 != count.saturating_mul(Ledger::SIZE as u64) {
        return Err(DecodeError::LedgerCount { count, len: rest.len() });
    }
    let ledgers = crate::records::decode_all(rest).ok_or(DecodeError::ChunkMisaligned {
        what: "ledger",
        len: rest.len(),
        size: Ledger::SIZE,
    })?;
    Ok((position, last_timestamp, ledgers))
}

/// One arena's part of `release_stored`.
pub(crate) fn release<T: Pod, const SHIFT: u32>(
    arena: &mut crate::arena::CowArena<T, SHIFT>,
    view: &ArenaView<T>,
    stored: &[StoredChunk],
) -> usize {
    assert_eq!(view.chunks.len(), stored.len(), "invariant: one stored chunk per chunk of the view");
    let eligible = view.chunks.len().min(arena.chunk_count()).saturating_sub(crate::limits::HOT_TAIL_CHUNKS);
    (0..eligible).filter(|&i| arena.release(i, &view.chunks[i], stored[i])).count()
}

/// A section's chunks decoded into records in memory (stored chunks read
/// back through `reader`).
fn decode_records<T: Pod>(
    chunks: Vec<SectionChunk>,
    name: &'static str,
    reader: Option<&Arc<dyn ChunkReader>>,
) -> Result<Vec<Vec<T>>, DecodeError> {
    let bytes = chunks.into_iter().map(|c| c.into_bytes(reader).map(SectionChunk::Bytes)).collect::<Result<_, _>>()?;
    decode_chunks(bytes, name, None)?
        .into_iter()
        .map(|c| match c {
            ChunkData::Items(items) => Ok(items),
            ChunkData::Stored(_) => unreachable!("chunks read back into memory are not stored ones"),
        })
        .collect()
}

/// A section's chunks as arena chunks: bytes decoded into records; a
/// stored chunk stays on disk where the arena may keep it cold (`cold`
/// reader given), else it is read back.
pub(crate) fn decode_chunks<T: Pod>(
    chunks: Vec<SectionChunk>,
    name: &'static str,
    reader: Option<&Arc<dyn ChunkReader>>,
) -> Result<Vec<ChunkData<T>>, DecodeError> {
    chunks
        .into_iter()
        .map(|chunk| {
            let bytes = match chunk {
                SectionChunk::Stored(s) if reader.is_some() && s.len % std::mem::size_of::<T>() as u64 == 0 => {
                    return Ok(ChunkData::Stored(s));
                }
                other => other.into_bytes(reader)?,
            };
            if bytes.len() % std::mem::size_of::<T>() != 0 {
                return Err(DecodeError::ChunkMisaligned {
                    what: name,
                    len: bytes.len(),
                    size: std::mem::size_of::<T>(),
                });
            }
            Ok(ChunkData::Items(
                bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect(),
            ))
        })
        .collect()
}

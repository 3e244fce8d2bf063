//! Snapshots of the state: a cheap frozen view for a background writer, a
//! digest for comparing replicas, and a rebuild from stored chunks.
//!
//! Only the records are stored (ledgers, accounts, transfers, pending states,
//! balance records, failed ids); every index is rebuilt on load.

use super::{
    Accounts, Failed, History, Journal, LedgerTotals, OrderEvents, PendingState, StateMachine, TransferStates,
    Transfers,
};
use crate::arena::ArenaView;
use crate::error::DecodeError;
use crate::events::{EventRef, OrderEventRef};
use crate::index::IdIndex;
use crate::records::{
    Account, BalanceRecord, FailedTransfer, Ledger, Transfer, account_flags as AF, transfer_flags as F,
};
use bytemuck::Pod;
use std::sync::Arc;

/// Bytes of a stored chunk of records.
pub trait ChunkBytes: Send + Sync {
    fn bytes(&self) -> &[u8];
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
            .map(|s| (s.name, s.chunks.iter().map(|c| *blake3::hash(c.bytes()).as_bytes()).collect()))
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

/// The stored form of a snapshot, as read back: the header and, per section
/// in `SECTIONS` order, the chunks' bytes.
pub struct SnapshotChunks {
    pub header: Vec<u8>,
    pub sections: Vec<Vec<Vec<u8>>>,
}

fn section<T: Pod + Send + Sync>(name: &'static str, view: &ArenaView<T>) -> SnapshotSection {
    SnapshotSection { name, chunks: view.chunks.iter().map(|c| c.clone() as Arc<dyn ChunkBytes>).collect() }
}

impl StateSnapshot {
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

    /// Shorthand for `snapshot().digest()`.
    pub fn digest(&self) -> [u8; 32] {
        Snapshot::digest(&self.snapshot())
    }

    /// Rebuilds a state from stored chunks, rebuilding every index and
    /// checking every invariant. Errors describe what is inconsistent.
    pub fn restore(limits: super::Limits, stored: SnapshotChunks) -> Result<StateMachine, DecodeError> {
        let (position, last_timestamp, ledgers) = decode_header(&stored.header)?;
        let [accounts, transfers, states, history, failed, journal, order_events]: [Vec<Vec<u8>>; 7] = stored
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
        sm.accounts = Accounts::from_chunks(decode_chunks(accounts, "accounts")?)?;
        sm.transfers = Transfers::from_chunks(decode_chunks(transfers, "transfers")?)?;
        sm.transfer_states = TransferStates::from_chunks(states)?;
        sm.history = History::from_chunks(decode_chunks(history, "history")?)?;
        sm.failed = Failed::from_chunks(decode_chunks(failed, "failed")?)?;
        sm.journal = Journal::from_chunks(decode_chunks(journal, "journal")?)?;
        sm.order_events = OrderEvents::from_chunks(decode_chunks(order_events, "order_events")?)?;
        sm.rebuild_accounts()?;
        sm.rebuild_transfers()?;
        sm.rebuild_history()?;
        sm.rebuild_failed()?;
        sm.check_journal()?;
        sm.check_invariants_deep()?;
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
        self.account_transfers = vec![Vec::new(); self.accounts.len()];
        self.account_history = vec![Vec::new(); self.accounts.len()];
        Ok(())
    }

    fn rebuild_transfers(&mut self) -> Result<(), DecodeError> {
        if self.transfer_states.len() != self.transfers.len() {
            return Err(DecodeError::PendingStates {
                states: self.transfer_states.len(),
                transfers: self.transfers.len(),
            });
        }
        self.transfer_index = IdIndex::with_capacity(self.transfers.len());
        for p in 0..self.transfers.len() {
            let t = *self.transfers.get(p);
            if self.find_transfer(t.id).is_some() {
                return Err(DecodeError::StoredTwice { what: "transfer", id: t.id });
            }
            self.transfer_index.insert(t.id, p as u32);
            for id in [t.debit_account_id, t.credit_account_id] {
                let a =
                    self.find_account(id).ok_or(DecodeError::TransferUnknownAccount { transfer: t.id, account: id })?;
                self.account_transfers[a as usize].push(p as u32);
            }
            let state = PendingState::from_byte(*self.transfer_states.get(p))
                .ok_or(DecodeError::InvalidPendingState { transfer: t.id })?;
            if state == PendingState::Pending {
                self.live_pending.insert(p as u32);
                if t.timeout != 0 && t.has(F::PENDING) {
                    self.expiries.insert((super::transfers::expiry_of(&t), p as u32));
                }
            }
        }
        Ok(())
    }

    fn rebuild_history(&mut self) -> Result<(), DecodeError> {
        for p in 0..self.history.len() {
            let r = *self.history.get(p);
            let a =
                self.find_account(r.account_id).ok_or(DecodeError::BalanceUnknownAccount { account: r.account_id })?;
            if !self.accounts.get(a as usize).has(AF::HISTORY) {
                return Err(DecodeError::BalanceWithoutHistory { account: r.account_id });
            }
            self.account_history[a as usize].push(p as u32);
        }
        Ok(())
    }

    /// Every journal slot must point at a record that exists.
    fn check_journal(&self) -> Result<(), DecodeError> {
        use crate::events::kind as K;
        for seq in 0..self.journal.len() {
            let r = self.journal.get(seq);
            let ok = match r.kind {
                K::LEDGER_CREATED => self.ledgers.contains_key(&(r.aux as u32)),
                K::ACCOUNT_CREATED => (r.index as usize) < self.accounts.len(),
                K::TRANSFER_POSTED | K::TRANSFER_PENDING | K::TRANSFER_VOIDED | K::TRANSFER_EXPIRED => {
                    (r.index as usize) < self.transfers.len()
                }
                K::ORDER => (r.index as usize) < self.order_events.len(),
                K::KEY_CREATED | K::KEY_REVOKED | K::AUDIT_RECORDED => true,
                _ => false,
            };
            if !ok {
                return Err(DecodeError::DanglingJournalSlot { slot: seq as u64, kind: r.kind });
            }
        }
        Ok(())
    }

    fn rebuild_failed(&mut self) -> Result<(), DecodeError> {
        self.failed_index = IdIndex::with_capacity(self.failed.len());
        for p in 0..self.failed.len() {
            let f = *self.failed.get(p);
            if self.find_failed(f.id).is_some() {
                return Err(DecodeError::StoredTwice { what: "failed transfer id", id: f.id });
            }
            self.failed_index.insert(f.id, p as u32);
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

fn decode_chunks<T: Pod>(chunks: Vec<Vec<u8>>, name: &'static str) -> Result<Vec<Vec<T>>, DecodeError> {
    chunks
        .into_iter()
        .map(|bytes| {
            if bytes.len() % std::mem::size_of::<T>() != 0 {
                return Err(DecodeError::ChunkMisaligned {
                    what: name,
                    len: bytes.len(),
                    size: std::mem::size_of::<T>(),
                });
            }
            Ok(bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect())
        })
        .collect()
}

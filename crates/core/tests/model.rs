//! Property tests of the state machine against an independent reference model
//! (`tests/model/reference.rs`, written from `docs/ledger.md` alone).
//!
//! Random logs (`tests/model/strategies.rs`: ledgers, accounts, transfers;
//! linked chains that fail, stay open or repeat ids; pending transfers that
//! are posted, voided, expire or are due but not swept; clocks that jump
//! forward or step back; amounts near `u128::MAX`; small capacity limits; ids
//! spread over the whole id space) are applied to both. After every command
//! the sparse results must be identical, and after every entry every record,
//! pending state, failed id, balance history, query answer and ledger total
//! must be identical and the machine's invariants must hold.
//!
//! Further: fresh machines fed the same log (by `apply_entry` or by
//! `begin_entry`/`execute`/`end_entry`) reach the same digest; a snapshot
//! restored anywhere in the log and continued reaches the digest of a machine
//! that never restored; snapshots kept while the machine writes on do not
//! change. Deterministic tests cover the 8190-per-entry expiry sweep, expiry
//! order, the timeout overflow boundary, reopening of closed accounts, and
//! every arena's chunk boundary (with chains rolled back across it).
//!
//! `PROPTEST_CASES` overrides the number of random cases.

#[path = "model/reference.rs"]
mod reference;
#[path = "model/strategies.rs"]
mod strategies;

use bursar_core::codes::{CreateAccountResult as AR, CreateLedgerResult as LR, CreateTransferResult as TR};
use bursar_core::command::{Command, Operation};
use bursar_core::limits::{BATCH_EVENTS_MAX, EXPIRIES_PER_ENTRY_MAX, QUERY_PAGE_MAX};
use bursar_core::records::{account_flags as AF, encode_all, filter_flags as FF, transfer_flags as TF};
use bursar_core::state::Snapshot;
use bursar_core::state::{
    COLD_SECTIONS, ChunkBytes, ChunkReadError, ChunkReader, OnDisk, SIDE_CREDIT, SIDE_DEBIT, SectionChunk, StoredChunk,
    StoredIds, StoredIndexes, StoredLists,
};
use bursar_core::state::{SnapshotChunks, StateSnapshot};
use bursar_core::{
    Account, AccountFilter, EventResult, Ledger, LedgerFilter, Limits, PendingState, StateMachine, Transfer,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use reference::{Cmd, Model, ModelLimits};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use strategies::{
    AccountFault, AccountSpec, CaseSpec, CmdSpec, IdShape, PendingRef, QuerySpec, Resubmit, SettleAmount,
    TransferFault, TransferSpec, TsSel,
};

type Check = Result<(), TestCaseError>;
/// The sparse (index, code) results of each command of one entry.
type EntryResults = Vec<Vec<(u32, u32)>>;

// ------------------------------------------------------------------ harness

fn limits_of(limits: Option<(usize, usize, usize)>) -> (Limits, ModelLimits) {
    match limits {
        None => {
            let l = Limits::default();
            (l, ModelLimits { ledgers: l.ledgers, accounts: l.accounts, transfers: l.transfers })
        }
        Some((ledgers, accounts, transfers)) => {
            (Limits { ledgers, accounts, transfers }, ModelLimits { ledgers, accounts, transfers })
        }
    }
}

fn command_of(cmd: &Cmd) -> Command<'_> {
    let command = match cmd {
        Cmd::Ledgers(v) => Command { operation: Operation::CreateLedgers, events: encode_all(v) },
        Cmd::Accounts(v) => Command { operation: Operation::CreateAccounts, events: encode_all(v) },
        Cmd::Transfers(v) => Command { operation: Operation::CreateTransfers, events: encode_all(v) },
    };
    command.validate().expect("generated commands are well formed");
    command
}

/// Results as (index, code name), for readable failures.
fn named(cmd: &Cmd, results: &[(u32, u32)]) -> Vec<(u32, &'static str)> {
    results
        .iter()
        .map(|&(i, c)| {
            let name = match cmd {
                Cmd::Ledgers(_) => LR::from_code(c).map(LR::name),
                Cmd::Accounts(_) => AR::from_code(c).map(AR::name),
                Cmd::Transfers(_) => TR::from_code(c).map(TR::name),
            };
            (i, name.unwrap_or("<unknown code>"))
        })
        .collect()
}

fn pairs(results: &[EventResult]) -> Vec<(u32, u32)> {
    results.iter().map(|r| (r.index, r.code)).collect()
}

/// One entry as it was applied, with every symbolic reference resolved.
#[derive(Clone, Debug)]
struct LoggedEntry {
    timestamp: u64,
    commands: Vec<Cmd>,
}

/// Chunk files kept in memory, as the snapshot store would keep them on
/// disk: the harness stores a checkpoint after every entry and lets the
/// stored full chunks go cold, so every later read of them goes through
/// `read` (run with `--features small-chunks` for chunks of 8 records,
/// where almost every record is cold).
#[derive(Default)]
struct ChunkStore {
    chunks: Mutex<BTreeMap<[u8; 32], Vec<u8>>>,
    reads: AtomicU64,
}

impl ChunkReader for ChunkStore {
    fn read(&self, chunk: &StoredChunk, offset: u64, out: &mut [u8]) -> Result<(), ChunkReadError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let chunks = self.chunks.lock().unwrap();
        let bytes = chunks.get(&chunk.hash).ok_or("no such chunk")?;
        assert_eq!(bytes.len() as u64, chunk.len);
        out.copy_from_slice(&bytes[offset as usize..offset as usize + out.len()]);
        Ok(())
    }
}

impl ChunkStore {
    /// Stores the full chunks of the sections that may go cold and lets
    /// them go cold in `sm`.
    fn checkpoint(&self, sm: &mut StateMachine) -> usize {
        let snap = sm.snapshot();
        let stored: Vec<Vec<StoredChunk>> = snap
            .sections()
            .iter()
            .map(|s| s.chunks.iter().map(|c| self.store(COLD_SECTIONS.contains(&s.name), c.as_ref())).collect())
            .collect();
        sm.release_stored(&snap, &stored)
    }

    fn store(&self, may_go_cold: bool, chunk: &dyn ChunkBytes) -> StoredChunk {
        if let Some(stored) = chunk.stored() {
            return stored;
        }
        if !may_go_cold {
            return StoredChunk { hash: [0; 32], len: 0 };
        }
        let bytes = chunk.bytes();
        let hash = *blake3::hash(bytes).as_bytes();
        self.chunks.lock().unwrap().entry(hash).or_insert_with(|| bytes.to_vec());
        StoredChunk { hash, len: bytes.len() as u64 }
    }
}

/// Stored id tables in memory: the ids of the first `covered` records.
struct IdTable {
    by_id: BTreeMap<u128, u64>,
    covered: u64,
}

impl StoredIds for IdTable {
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

/// Stored list entries in memory: those of the first `covered` records.
struct ListTable {
    entries: BTreeMap<(u128, u64), u8>,
    covered: u64,
}

impl StoredLists for ListTable {
    fn covered(&self) -> u64 {
        self.covered
    }
    fn range(&self, a: u128, lo: u64, hi: u64, reversed: bool, limit: usize) -> Result<Vec<(u64, u8)>, ChunkReadError> {
        let r = self.entries.range((a, lo)..(a, hi)).map(|((_, p), t)| (*p, *t));
        Ok(if reversed { r.rev().take(limit).collect() } else { r.take(limit).collect() })
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
}

/// Hands all but the newest third of the ids and list entries over to
/// stored tables, as the engine does once runs are built, so that lookups
/// of old ids (duplicates, posts of old pending transfers) and pages of
/// accounts' old transfers and balances go to them.
fn store_old_ids(sm: &StateMachine) -> StoredIndexes {
    let covered = sm.stored_covered();
    let upto = |count: usize, i: usize| (count as u64 * 2 / 3).max(covered[i]);
    let (t_end, f_end) = (upto(sm.transfer_count(), 0), upto(sm.failed_count(), 1));
    let (tl_end, hl_end) = (upto(sm.transfer_count(), 2), upto(sm.balance_record_count(), 3));
    let transfers = (0..t_end).map(|p| (sm.transfer_at(p).id, p)).collect();
    let failed = (0..f_end).map(|p| (sm.failed_at(p).id, p)).collect();
    let mut transfer_lists = BTreeMap::new();
    for p in 0..tl_end {
        let t = sm.transfer_at(p);
        transfer_lists.insert((t.debit_account_id, p), SIDE_DEBIT);
        transfer_lists.insert((t.credit_account_id, p), SIDE_CREDIT);
    }
    let balance_lists = (0..hl_end).map(|p| ((sm.balance_record_at(p).account_id, p), 0)).collect();
    StoredIndexes {
        transfers: Arc::new(IdTable { by_id: transfers, covered: t_end }),
        failed: Arc::new(IdTable { by_id: failed, covered: f_end }),
        account_transfers: Arc::new(ListTable { entries: transfer_lists, covered: tl_end }),
        account_history: Arc::new(ListTable { entries: balance_lists, covered: hl_end }),
        orders: Arc::new(bursar_core::orders::NoStoredOrders),
    }
}

struct Harness {
    sm: StateMachine,
    cold: Arc<ChunkStore>,
    model: Model,
    shape: IdShape,
    position: u64,
    log: Vec<LoggedEntry>,
    /// Results of every command, entry by entry.
    results: Vec<EntryResults>,
}

impl Harness {
    fn new(limits: Option<(usize, usize, usize)>, shape: IdShape) -> Harness {
        let (limits, model_limits) = limits_of(limits);
        let cold = Arc::new(ChunkStore::default());
        let mut sm = StateMachine::new(limits);
        sm.set_chunk_reader(cold.clone());
        Harness { sm, cold, model: Model::new(model_limits), shape, position: 0, log: Vec::new(), results: Vec::new() }
    }

    /// Applies one entry to both sides, command by command (the machine
    /// through begin_entry / execute / end_entry), resolving each command
    /// against the model's state just before it runs.
    fn entry(&mut self, timestamp: u64, commands: &[CmdSpec]) -> Check {
        self.position += 1;
        self.sm.begin_entry(self.position, timestamp);
        self.model.begin_entry(timestamp);
        let mut logged = LoggedEntry { timestamp, commands: Vec::new() };
        let mut entry_results = Vec::new();
        for (c, spec) in commands.iter().enumerate() {
            let cmd = resolve(&self.model, self.shape, spec);
            let expected = self.model.execute(&cmd);
            let mut actual = Vec::new();
            self.sm.execute(&command_of(&cmd), &mut actual);
            let actual = pairs(&actual);
            prop_assert_eq!(
                named(&cmd, &actual),
                named(&cmd, &expected),
                "entry {} (timestamp {}) command {}: machine (left) vs model (right)\ncommand: {:#?}",
                self.position,
                timestamp,
                c,
                cmd
            );
            entry_results.push(actual);
            logged.commands.push(cmd);
        }
        self.sm.end_entry();
        self.cold.checkpoint(&mut self.sm);
        if self.position.is_multiple_of(4) {
            let stored = store_old_ids(&self.sm);
            self.sm.install_stored_ids(stored);
        }
        self.model.end_entry();
        self.log.push(logged);
        self.results.push(entry_results);
        Ok(())
    }

    fn setup(&mut self, case: &CaseSpec) -> Check {
        let accounts = case
            .setup_accounts
            .iter()
            .map(|&account| AccountSpec { account, resubmit: None, faults: vec![] })
            .collect();
        self.entry(case.start_clock, &[CmdSpec::Ledgers(case.setup_ledgers.clone()), CmdSpec::Accounts(accounts)])?;
        check_state(&self.sm, &self.model, self.shape)
    }

    /// Runs a whole case, checking state and queries after every entry.
    fn run(&mut self, case: &CaseSpec) -> Check {
        self.setup(case)?;
        let mut clock = case.start_clock;
        for e in &case.entries {
            let timestamp = e.step.apply(&mut clock, self.model.next_expiry());
            self.entry(timestamp, &e.commands)?;
            check_state(&self.sm, &self.model, self.shape)?;
            check_queries(&self.sm, &self.model, &e.queries)?;
        }
        Ok(())
    }
}

fn nth_recent<T: Copy>(list: &[T], k: u8) -> Option<T> {
    if list.is_empty() { None } else { Some(list[list.len() - 1 - (k as usize % list.len())]) }
}

fn resolve(model: &Model, shape: IdShape, spec: &CmdSpec) -> Cmd {
    match spec {
        CmdSpec::Ledgers(v) => Cmd::Ledgers(v.clone()),
        CmdSpec::Accounts(v) => Cmd::Accounts(resolve_accounts(model, shape, v)),
        CmdSpec::Transfers(v) => Cmd::Transfers(resolve_transfers(model, shape, v)),
    }
}

fn resolve_accounts(model: &Model, shape: IdShape, specs: &[AccountSpec]) -> Vec<Account> {
    let mut existing: Vec<Account> = model.accounts.values().copied().collect();
    existing.sort_by_key(|a| a.timestamp);
    let mut out: Vec<Account> = Vec::new();
    for s in specs {
        let base = match s.resubmit {
            Some(Resubmit::Existing(k, m)) => nth_recent(&existing, k).map(|e| (e, m)),
            Some(Resubmit::InBatch(k, m)) => nth_recent(&out, k).map(|e| (e, m)),
            None => None,
        };
        let account = match base {
            Some((e, m)) => {
                let mut a = Account {
                    debits_pending: 0,
                    debits_posted: 0,
                    credits_pending: 0,
                    credits_posted: 0,
                    timestamp: 0,
                    flags: (e.flags & !(AF::LINKED | AF::CLOSED)) | (s.account.flags & AF::LINKED),
                    ..e
                };
                match m {
                    1 => a.flags ^= AF::HISTORY,
                    2 => a.flags ^= AF::CLOSED,
                    3 => a.user_data_128 = a.user_data_128.wrapping_add(1),
                    4 => a.user_data_64 = a.user_data_64.wrapping_add(1),
                    5 => a.user_data_32 = a.user_data_32.wrapping_add(1),
                    6 => a.ledger = a.ledger.wrapping_add(1),
                    7 => a.code = a.code.wrapping_add(1),
                    8 => a.flags ^= AF::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    _ => {}
                }
                a
            }
            None => s.account,
        };
        let mut a = account;
        for fault in &s.faults {
            match *fault {
                AccountFault::Timestamp => a.timestamp = 5,
                AccountFault::Reserved => a.reserved = 1,
                AccountFault::ReservedFlag(bit) => a.flags |= 1 << bit,
                AccountFault::IdZero => a.id = 0,
                AccountFault::IdMax => a.id = u128::MAX,
                AccountFault::BothLimitFlags => {
                    a.flags |= AF::DEBITS_MUST_NOT_EXCEED_CREDITS | AF::CREDITS_MUST_NOT_EXCEED_DEBITS
                }
                AccountFault::Balance(0) => a.debits_pending = 1,
                AccountFault::Balance(1) => a.debits_posted = 1,
                AccountFault::Balance(2) => a.credits_pending = 1,
                AccountFault::Balance(_) => a.credits_posted = 1,
                AccountFault::LedgerZero => a.ledger = 0,
                AccountFault::CodeZero => a.code = 0,
                AccountFault::LedgerMissing => a.ledger = shape.ledger(9),
            }
        }
        out.push(a);
    }
    out
}

fn resolve_transfers(model: &Model, shape: IdShape, specs: &[TransferSpec]) -> Vec<Transfer> {
    let mut existing: Vec<Transfer> = model.transfers.values().copied().collect();
    existing.sort_by_key(|t| t.timestamp);
    let pendings: Vec<Transfer> = existing.iter().filter(|t| t.has(TF::PENDING)).copied().collect();
    let mut used: BTreeSet<u128> = model.transfers.keys().chain(model.failed.keys()).copied().collect();
    let mut out: Vec<Transfer> = Vec::new();
    for s in specs {
        let linked = s.transfer.flags & TF::LINKED;
        let base = match s.resubmit {
            Some(Resubmit::Existing(k, m)) => nth_recent(&existing, k).map(|e| (e, m)),
            Some(Resubmit::InBatch(k, m)) => nth_recent(&out, k).map(|e| (e, m)),
            None => None,
        };
        let mut t = match base {
            Some((e, m)) => {
                let mut t = Transfer { timestamp: 0, flags: (e.flags & !TF::LINKED) | linked, ..e };
                match m {
                    1 => t.flags ^= TF::BALANCING_DEBIT,
                    2 => t.pending_id = t.pending_id.wrapping_add(1),
                    3 => t.timeout = t.timeout.wrapping_add(1),
                    4 => t.debit_account_id = t.debit_account_id.wrapping_add(1),
                    5 => t.credit_account_id = t.credit_account_id.wrapping_add(1),
                    6 => t.amount = t.amount.wrapping_add(1),
                    7 => t.amount = u128::MAX,
                    8 => t.amount = 0,
                    9 => t.user_data_128 = t.user_data_128.wrapping_add(1),
                    10 => t.user_data_64 = t.user_data_64.wrapping_add(1),
                    11 => t.user_data_32 = t.user_data_32.wrapping_add(1),
                    12 => t.ledger = t.ledger.wrapping_add(1),
                    13 => t.code = t.code.wrapping_add(1),
                    14 => {
                        // What a post/void may leave to the pending transfer.
                        t.debit_account_id = 0;
                        t.credit_account_id = 0;
                        t.user_data_128 = 0;
                        t.user_data_64 = 0;
                        t.user_data_32 = 0;
                        t.ledger = 0;
                        t.code = 0;
                    }
                    15 => t.amount = t.amount.saturating_add(5),
                    _ => {}
                }
                t
            }
            None => resolve_new_transfer(model, shape, s, &pendings, &out, &used),
        };
        for fault in &s.faults {
            match *fault {
                TransferFault::Timestamp => t.timestamp = 3,
                TransferFault::ReservedFlag(bit) => t.flags |= 1 << bit,
                TransferFault::IdZero => t.id = 0,
                TransferFault::IdMax => t.id = u128::MAX,
                TransferFault::KindBits(bits) => t.flags |= (bits as u16) << 1,
                TransferFault::ExtraBits(bits) => t.flags |= (bits as u16) << 4,
                TransferFault::DebitZero => t.debit_account_id = 0,
                TransferFault::DebitMax => t.debit_account_id = u128::MAX,
                TransferFault::CreditZero => t.credit_account_id = 0,
                TransferFault::CreditMax => t.credit_account_id = u128::MAX,
                TransferFault::SameAccounts => t.credit_account_id = t.debit_account_id,
                TransferFault::PendingId(i) => t.pending_id = [0, u128::MAX, shape.id(1), shape.id(7)][i as usize],
                TransferFault::Timeout => t.timeout = t.timeout.max(1),
                TransferFault::LedgerZero => t.ledger = 0,
                TransferFault::CodeZero => t.code = 0,
                TransferFault::LedgerOther => {
                    t.ledger = if t.ledger == shape.ledger(1) { shape.ledger(2) } else { shape.ledger(1) }
                }
                TransferFault::PendingIdSelf => t.pending_id = t.id,
            }
        }
        used.insert(t.id);
        out.push(t);
    }
    out
}

/// A new transfer from its spec: a fresh id if asked, the ledger of its
/// debit account, and for post/void the pending transfer it names.
fn resolve_new_transfer(
    model: &Model,
    shape: IdShape,
    s: &TransferSpec,
    pendings: &[Transfer],
    batch: &[Transfer],
    used: &BTreeSet<u128>,
) -> Transfer {
    let mut t = s.transfer;
    if s.fresh_id {
        t.id = (1..).map(|n| shape.id(n)).find(|id| !used.contains(id)).unwrap();
    }
    if s.ledger_from_account
        && let Some(dr) = model.accounts.get(&t.debit_account_id)
    {
        t.ledger = dr.ledger;
    }
    if t.has(TF::POST_PENDING | TF::VOID_PENDING) {
        let in_batch: Vec<Transfer> = batch.iter().filter(|t| t.has(TF::PENDING)).copied().collect();
        let p = match s.pending {
            PendingRef::Raw => None,
            PendingRef::Recent(k) => nth_recent(pendings, k),
            PendingRef::InBatch(k) => nth_recent(&in_batch, k),
            PendingRef::NextToExpire => pendings
                .iter()
                .filter(|p| model.states[&p.id] == PendingState::Pending)
                .filter_map(|p| Some((Model::expiry_of(p)?, p.timestamp, *p)))
                .min_by_key(|&(at, ts, _)| (at, ts))
                .map(|(_, _, p)| p),
        };
        if let Some(p) = p {
            t.pending_id = p.id;
            if let SettleAmount::Pending(delta) = s.amount {
                t.amount = p.amount.saturating_add_signed(delta as i128);
            }
            if s.fill & 1 != 0 {
                t.debit_account_id = p.debit_account_id;
                t.credit_account_id = p.credit_account_id;
            }
            if s.fill & 2 != 0 {
                t.ledger = p.ledger;
                t.code = p.code;
            }
        }
    }
    t
}

// ------------------------------------------------------------------- checks

fn full_filter(account_id: u128, flags: u32) -> AccountFilter {
    AccountFilter { account_id, limit: QUERY_PAGE_MAX as u32, flags, ..Default::default() }
}

/// Compares everything observable about the state, and runs the deep
/// invariant check.
fn check_state(sm: &StateMachine, m: &Model, shape: IdShape) -> Check {
    prop_assert_eq!(sm.last_timestamp(), m.last_timestamp, "last_timestamp");
    prop_assert_eq!(sm.ledger_count(), m.ledgers.len(), "ledger_count");
    prop_assert_eq!(sm.account_count(), m.accounts.len(), "account_count");
    prop_assert_eq!(sm.transfer_count(), m.transfers.len(), "transfer_count");
    prop_assert_eq!(sm.next_expiry(), m.next_expiry(), "next_expiry");

    for id in (0..=8).map(|n| shape.ledger(n)).chain([1, u32::MAX]).chain(m.ledgers.keys().copied()) {
        prop_assert_eq!(sm.ledger(id).copied(), m.ledgers.get(&id).copied(), "ledger {}", id);
    }
    let probes = |n| (0..=n).map(move |n| shape.id(n)).chain([1, 2, u128::MAX, u128::MAX - 1]);
    for id in probes(16).chain(m.accounts.keys().copied()) {
        prop_assert_eq!(sm.account(id).copied(), m.accounts.get(&id).copied(), "account {}", id);
    }
    for id in probes(42).chain(m.transfers.keys().copied()).chain(m.failed.keys().copied()) {
        prop_assert_eq!(sm.transfer(id), m.transfers.get(&id).copied(), "transfer {}", id);
        prop_assert_eq!(sm.pending_state(id), m.states.get(&id).copied(), "pending state of {}", id);
        prop_assert_eq!(sm.failed_transfer(id), m.failed.get(&id).copied(), "failed id {}", id);
    }

    let totals: BTreeMap<u32, (u64, [[u8; 32]; 4])> = sm
        .ledger_totals()
        .map(|(l, t)| {
            let sums =
                [t.debits_pending, t.debits_posted, t.credits_pending, t.credits_posted].map(|s| s.to_le_bytes());
            (l.id, (t.accounts, sums))
        })
        .collect();
    prop_assert_eq!(totals, m.ledger_totals(), "ledger totals");

    for &id in m.accounts.keys() {
        for flags in [FF::DEBITS | FF::CREDITS, FF::DEBITS | FF::CREDITS | FF::REVERSED, FF::DEBITS, FF::CREDITS] {
            let f = full_filter(id, flags);
            prop_assert_eq!(sm.account_transfers(&f).ok(), m.account_transfers(&f), "transfers of {}", id);
        }
        let f = full_filter(id, 0);
        prop_assert_eq!(sm.account_balances(&f).ok(), m.account_balances(&f), "balances of {}", id);
    }

    let cheap = sm.check_invariants();
    prop_assert!(cheap.is_ok(), "check_invariants: {:?}", cheap);
    let deep = sm.check_invariants_deep();
    prop_assert!(deep.is_ok(), "check_invariants_deep: {:?}", deep);
    Ok(())
}

/// Runs the entry's random queries on both sides.
fn check_queries(sm: &StateMachine, m: &Model, queries: &[QuerySpec]) -> Check {
    let mut stamps: Vec<u64> = m.transfers.values().map(|t| t.timestamp).collect();
    stamps.extend(m.history.iter().map(|b| b.timestamp));
    stamps.sort();
    let pick = |sel: TsSel| match sel {
        TsSel::Zero => 0,
        TsSel::Max => u64::MAX,
        TsSel::Pick(i, offset) => match stamps.len() {
            0 => 0,
            n => stamps[i as usize % n].saturating_add_signed(offset as i64),
        },
    };
    for q in queries {
        let mut f = AccountFilter {
            account_id: q.account,
            timestamp_min: pick(q.min),
            timestamp_max: pick(q.max),
            limit: q.limit,
            flags: q.flags,
            reserved: [0; 24],
        };
        if q.reserved {
            f.reserved[7] = 1;
        }
        prop_assert_eq!(sm.account_transfers(&f).ok(), m.account_transfers(&f), "account_transfers {:?}", f);
        prop_assert_eq!(sm.account_balances(&f).ok(), m.account_balances(&f), "account_balances {:?}", f);

        let ids = [q.account, q.account.wrapping_add(1), 0, q.account.wrapping_sub(3), q.account];
        prop_assert_eq!(sm.lookup_accounts(ids), m.lookup_accounts(&ids), "lookup_accounts {:?}", ids);
        let ids = [q.account.wrapping_mul(3) % 45, q.account.wrapping_add(7), 0, 1, q.account.wrapping_mul(2)];
        prop_assert_eq!(sm.lookup_transfers(ids), m.lookup_transfers(&ids), "lookup_transfers {:?}", ids);
        let lf = LedgerFilter { after_id: (q.account % 5) as u32, limit: q.limit };
        prop_assert_eq!(sm.list_ledgers(&lf).ok(), m.list_ledgers(&lf), "list_ledgers {:?}", lf);
    }
    Ok(())
}

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    ProptestConfig { cases, max_shrink_iters: 10_000, ..ProptestConfig::default() }
}

/// The stored form of a snapshot, as a snapshot store would read it back.
fn stored(snap: &StateSnapshot) -> SnapshotChunks {
    SnapshotChunks {
        header: snap.header(),
        sections: snap
            .sections()
            .iter()
            .map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect())
            .collect(),
    }
}

/// The stored form of a snapshot as a lazily loading store hands it back:
/// cold chunks stay on disk (in `ChunkStore`), the rest as bytes.
fn stored_lazy(snap: &StateSnapshot) -> SnapshotChunks {
    let chunk = |c: &Arc<dyn ChunkBytes>| match c.stored() {
        Some(s) => SectionChunk::Stored(s),
        None => c.bytes().to_vec().into(),
    };
    SnapshotChunks {
        header: snap.header(),
        sections: snap.sections().iter().map(|s| s.chunks.iter().map(chunk).collect()).collect(),
    }
}

// --------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config(2048))]

    /// Random logs: the machine and the model agree on every result and on
    /// the whole state after every entry.
    #[test]
    fn machine_matches_model(case in strategies::case_spec(30)) {
        let mut h = Harness::new(case.limits, case.shape);
        h.run(&case)?;
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// The same log gives the same results and digest on fresh machines, by
    /// `apply_entry` or by `begin_entry`/`execute`/`end_entry`; and a machine
    /// restored from a snapshot taken anywhere in the log and then fed the
    /// rest ends with the same state and digest as one that never restored.
    #[test]
    fn replay_and_snapshot_restore_are_deterministic(
        case in strategies::case_spec(16),
        split in 0.0f64..=1.0,
    ) {
        let mut h = Harness::new(case.limits, case.shape);
        h.run(&case)?;
        let (limits, _) = limits_of(case.limits);
        let split = ((h.log.len() as f64) * split) as usize;

        let mut replay = StateMachine::new(limits);
        let mut restored = StateMachine::new(limits);
        let mut held = None;
        // Snapshots taken along the way and kept while the machine writes on.
        let mut kept = Vec::new();
        for (i, entry) in h.log.iter().enumerate() {
            let position = i as u64 + 1;
            let commands: Vec<Command<'_>> = entry.commands.iter().map(command_of).collect();
            if i % 3 == 1 {
                kept.push((i, replay.snapshot(), replay.digest()));
            }
            if i == split {
                let digest = restored.digest();
                prop_assert_eq!(replay.digest(), digest);
                let snap = restored.snapshot();
                prop_assert_eq!(snap.digest(), digest);
                held = Some((replay.snapshot(), digest, i));
                restored = StateMachine::restore(limits, stored(&snap)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(restored.digest(), digest, "restored digest at entry {}", position);
                prop_assert_eq!(restored.position(), position - 1);
                prop_assert_eq!(restored.last_timestamp(), replay.last_timestamp());
                prop_assert_eq!(restored.next_expiry(), replay.next_expiry());
            }
            let expected: &EntryResults = &h.results[i];
            let a: EntryResults =
                replay.apply_entry(position, entry.timestamp, &commands).iter().map(|r| pairs(r)).collect();
            let b: EntryResults =
                restored.apply_entry(position, entry.timestamp, &commands).iter().map(|r| pairs(r)).collect();
            prop_assert_eq!(&a, expected, "replay results of entry {}", position);
            prop_assert_eq!(&b, expected, "results after restore, entry {}", position);
        }
        for (i, snap, digest) in &kept {
            prop_assert_eq!(snap.digest(), *digest, "snapshot before entry {} changed under later writes", i + 1);
        }
        // A snapshot held while its machine kept writing still shows the state
        // it was taken at (copy-on-write); stored only now, like a background
        // writer would, it restores and replays to the same end.
        if let Some((snap, digest, from)) = held {
            prop_assert_eq!(snap.digest(), digest, "held snapshot changed under later writes");
            let mut late = StateMachine::restore(limits, stored(&snap)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(late.digest(), digest);
            for (i, entry) in h.log.iter().enumerate().skip(from) {
                let commands: Vec<Command<'_>> = entry.commands.iter().map(command_of).collect();
                let r: EntryResults =
                    late.apply_entry(i as u64 + 1, entry.timestamp, &commands).iter().map(|r| pairs(r)).collect();
                prop_assert_eq!(&r, &h.results[i], "results after a late restore, entry {}", i + 1);
            }
            prop_assert_eq!(late.digest(), h.sm.digest(), "digest after a late restore");
        }
        prop_assert_eq!(replay.digest(), h.sm.digest(), "replay digest");
        prop_assert_eq!(restored.digest(), h.sm.digest(), "digest after restore");
        prop_assert_eq!(replay.position(), h.sm.position());
        check_state(&restored, &h.model, h.shape)?;
        // A snapshot of the final state restores to the same digest too.
        let last = StateMachine::restore(limits, stored(&h.sm.snapshot())).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(last.digest(), h.sm.digest());
        check_state(&last, &h.model, h.shape)?;
        // And restored lazily, its cold chunks staying on "disk".
        let reader: Arc<dyn ChunkReader> = h.cold.clone();
        let lazy = StateMachine::restore_with(limits, stored_lazy(&h.sm.snapshot()), OnDisk { chunks: Some(reader), ids: Some(store_old_ids(&h.sm)) })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(lazy.cold_chunks(), h.sm.cold_chunks());
        prop_assert_eq!(lazy.digest(), h.sm.digest());
        check_state(&lazy, &h.model, h.shape)?;
    }
}

// ------------------------------------------------------ deterministic tests

fn usd() -> Ledger {
    Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() }
}

fn account(id: u128, flags: u16) -> Account {
    Account { id, ledger: 1, code: 1, flags, ..Default::default() }
}

fn transfer(id: u128, dr: u128, cr: u128, amount: u128, flags: u16) -> Transfer {
    Transfer {
        id,
        debit_account_id: dr,
        credit_account_id: cr,
        amount,
        ledger: 1,
        code: 1,
        flags,
        ..Default::default()
    }
}

fn accounts_spec(accounts: &[Account]) -> CmdSpec {
    CmdSpec::Accounts(accounts.iter().map(|&account| AccountSpec { account, resubmit: None, faults: vec![] }).collect())
}

fn transfers_spec(transfers: &[Transfer]) -> CmdSpec {
    CmdSpec::Transfers(
        transfers
            .iter()
            .map(|&transfer| TransferSpec {
                transfer,
                fresh_id: false,
                ledger_from_account: false,
                pending: PendingRef::Raw,
                amount: SettleAmount::Given,
                fill: 0,
                resubmit: None,
                faults: vec![],
            })
            .collect(),
    )
}

/// Runs fixed entries through the harness, checking everything after each;
/// returns each entry's results.
fn scripted(entries: &[(u64, Vec<CmdSpec>)]) -> Result<Vec<EntryResults>, TestCaseError> {
    let mut h = Harness::new(None, IdShape::Small);
    for (timestamp, commands) in entries {
        h.entry(*timestamp, commands)?;
        check_state(&h.sm, &h.model, h.shape)?;
    }
    Ok(h.results)
}

/// More pending transfers fall due at once than one entry sweeps: 8190 (`EXPIRIES_PER_ENTRY_MAX`) are
/// expired at the start of the entry, the rest are due but not swept, so a
/// post of one of them in that entry is `pending_transfer_expired`, and the
/// next entry sweeps them.
#[test]
fn sweep_is_bounded_per_entry_and_due_transfers_cannot_be_posted() {
    let n = EXPIRIES_PER_ENTRY_MAX + 3;
    let pending: Vec<Transfer> =
        (1..=n as u128).map(|id| Transfer { timeout: 1, ..transfer(id, 1, 2, 1, TF::PENDING) }).collect();
    let second = 1_000_000_000u64;
    let post = Transfer { pending_id: n as u128, ..transfer(100_000, 0, 0, 1, TF::POST_PENDING) };
    let results = scripted(&[
        (1_000, vec![CmdSpec::Ledgers(vec![usd()]), accounts_spec(&[account(1, AF::HISTORY), account(2, 0)])]),
        (2_000, vec![transfers_spec(&pending[..BATCH_EVENTS_MAX]), transfers_spec(&pending[BATCH_EVENTS_MAX..])]),
        (3_000 + 3 * second, vec![transfers_spec(&[post])]),
        (4_000 + 3 * second, vec![]),
    ])
    .unwrap();
    assert_eq!(results[2], vec![vec![(0, TR::PendingTransferExpired.code())]]);
}

/// The generator is not vacuous: over a fixed-seed run of cases every result
/// code of every operation occurs (and the machine agrees with the model on
/// all of them).
#[test]
fn generator_reaches_every_result_code() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen: [BTreeSet<u32>; 3] = Default::default();
    for _ in 0..256 {
        let case = strategies::case_spec(30).new_tree(&mut runner).unwrap().current();
        let mut h = Harness::new(case.limits, case.shape);
        h.run(&case).unwrap();
        for (entry, results) in h.log.iter().zip(&h.results) {
            for (cmd, results) in entry.commands.iter().zip(results) {
                let (op, events) = match cmd {
                    Cmd::Ledgers(v) => (0, v.len()),
                    Cmd::Accounts(v) => (1, v.len()),
                    Cmd::Transfers(v) => (2, v.len()),
                };
                if results.len() < events {
                    seen[op].insert(0);
                }
                seen[op].extend(results.iter().map(|r| r.1));
            }
        }
    }
    let missing = |op: usize, all: Vec<(u32, &'static str)>| -> Vec<&'static str> {
        all.into_iter().filter(|(c, _)| !seen[op].contains(c)).map(|(_, n)| n).collect()
    };
    let ledgers = missing(0, LR::ALL.iter().map(|c| (c.code(), c.name())).collect());
    let accounts = missing(1, AR::ALL.iter().map(|c| (c.code(), c.name())).collect());
    let transfers = missing(2, TR::ALL.iter().map(|c| (c.code(), c.name())).collect());
    assert!(
        ledgers.is_empty() && accounts.is_empty() && transfers.is_empty(),
        "never produced: ledgers {ledgers:?}, accounts {accounts:?}, transfers {transfers:?}"
    );
}

/// Expiries run earliest expiry first, ties oldest transfer first, and each
/// consumes one timestamp, which shows in the balance history.
#[test]
fn expiries_run_by_expiry_then_age() {
    let second = 1_000_000_000u64;
    let t0 = 1_000_000u64;
    let accounts: Vec<Account> = (1..=6).map(|id| account(id, AF::HISTORY)).collect();
    let pending = |id, dr, cr, timeout| Transfer { timeout, ..transfer(id, dr, cr, 5, TF::PENDING) };
    // p1 at t0 and p2 at t0 + 1 s expire together at t0 + 2 s: p1 is older.
    // p3, at t0 + 1 ns, is older than p2 but expires 1 ns later.
    scripted(&[
        (t0 - 100, vec![CmdSpec::Ledgers(vec![usd()]), accounts_spec(&accounts)]),
        (t0, vec![transfers_spec(&[pending(1, 1, 2, 2), pending(3, 5, 6, 2)])]),
        (t0 + second, vec![transfers_spec(&[pending(2, 3, 4, 1)])]),
        (t0 + 2 * second + 1, vec![]),
    ])
    .unwrap();
    // The same, checked by hand against the document.
    let mut sm = StateMachine::default();
    let ledgers = [usd()];
    let setup = [
        Command { operation: Operation::CreateLedgers, events: encode_all(&ledgers) },
        Command { operation: Operation::CreateAccounts, events: encode_all(&accounts) },
    ];
    sm.apply_entry(1, t0 - 100, &setup);
    let first = [pending(1, 1, 2, 2), pending(3, 5, 6, 2)];
    sm.apply_entry(2, t0, &[Command { operation: Operation::CreateTransfers, events: encode_all(&first) }]);
    let second_batch = [pending(2, 3, 4, 1)];
    sm.apply_entry(
        3,
        t0 + second,
        &[Command { operation: Operation::CreateTransfers, events: encode_all(&second_batch) }],
    );
    let now = t0 + 2 * second + 1;
    sm.apply_entry(4, now, &[]);
    let last_change = |id| sm.account_balances(&full_filter(id, FF::REVERSED)).unwrap()[0].timestamp;
    assert_eq!([last_change(1), last_change(3), last_change(5)], [now, now + 1, now + 2]);
    for id in 1..=3 {
        assert_eq!(sm.pending_state(id), Some(PendingState::Expired));
    }
}

/// Only the pending transfer that closed an account reopens it: voiding or
/// expiring another pending transfer on the closed account leaves it closed,
/// and posting the closing transfer keeps it closed.
#[test]
fn only_the_closing_transfer_reopens() {
    let second = 1_000_000_000u64;
    let pending = |id, flags, timeout| Transfer { timeout, ..transfer(id, 1, 2, 5, TF::PENDING | flags) };
    let void = |id, pending_id| Transfer { pending_id, ..transfer(id, 0, 0, 0, TF::VOID_PENDING) };
    let post = |id, pending_id| Transfer { pending_id, ..transfer(id, 0, 0, u128::MAX, TF::POST_PENDING) };
    let results = scripted(&[
        (1_000, vec![CmdSpec::Ledgers(vec![usd()]), accounts_spec(&[account(1, AF::HISTORY), account(2, 0)])]),
        (
            2_000,
            vec![transfers_spec(&[
                pending(1, 0, 0),
                pending(2, 0, 1),
                pending(3, TF::CLOSING_DEBIT | TF::CLOSING_CREDIT, 0),
                void(4, 1),
                pending(5, 0, 0),
            ])],
        ),
        (2_000 + 2 * second, vec![transfers_spec(&[pending(6, 0, 0), post(7, 3), transfer(8, 2, 1, 1, 0)])]),
    ])
    .unwrap();
    assert_eq!(results[1], vec![vec![(4, TR::DebitAccountClosed.code())]]);
    assert_eq!(
        results[2],
        vec![vec![(0, TR::DebitAccountClosed.code()), (2, TR::DebitAccountClosed.code())]],
        "transfer 2 expired and transfer 3 was posted: both accounts stay closed"
    );
}

/// `timestamp + timeout × 10^9` may reach 2^64 - 1 but not pass it.
#[test]
fn timeout_overflow_boundary() {
    let ts = u64::MAX - u32::MAX as u64 * 1_000_000_000;
    let pending = |id| Transfer { timeout: u32::MAX, ..transfer(id, 1, 2, 5, TF::PENDING) };
    let results = scripted(&[
        (ts - 100, vec![CmdSpec::Ledgers(vec![usd()]), accounts_spec(&[account(1, 0), account(2, 0)])]),
        (ts, vec![transfers_spec(&[pending(1), pending(2)])]),
    ])
    .unwrap();
    assert_eq!(results[1], vec![vec![(1, TR::OverflowsTimeout.code())]]);
}

/// The document defines `now = max(entry.timestamp, last_timestamp + 1)` but
/// not `last_timestamp` after an entry that consumes no timestamp. The machine
/// (and so the model) treats such an entry's `now` as reached: a later entry
/// stamped earlier still starts at that `now`.
#[test]
fn an_empty_entry_still_moves_the_clock() {
    let mut sm = StateMachine::default();
    let ledgers = [usd()];
    let accounts = [account(1, 0), account(2, 0)];
    let setup = [
        Command { operation: Operation::CreateLedgers, events: encode_all(&ledgers) },
        Command { operation: Operation::CreateAccounts, events: encode_all(&accounts) },
    ];
    sm.apply_entry(1, 1_000, &setup);
    assert_eq!(sm.last_timestamp(), 1_002);
    sm.apply_entry(2, 5_000, &[]);
    assert_eq!(sm.last_timestamp(), 4_999);
    let t = [transfer(1, 1, 2, 1, 0)];
    sm.apply_entry(3, 0, &[Command { operation: Operation::CreateTransfers, events: encode_all(&t) }]);
    assert_eq!(sm.transfer(1).unwrap().timestamp, 5_000);
}

// ------------------------------------------------------------- bulk tests

/// A small deterministic generator for the bulk test.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Compares every record of the model with the machine, without the
/// per-account queries of `check_state` (too slow for 100k records), plus
/// the queries of a sample of accounts.
fn check_bulk(sm: &StateMachine, m: &Model, sample: &[u128]) {
    assert_eq!(sm.last_timestamp(), m.last_timestamp);
    assert_eq!(sm.account_count(), m.accounts.len());
    assert_eq!(sm.transfer_count(), m.transfers.len());
    assert_eq!(sm.next_expiry(), m.next_expiry());
    for (id, a) in &m.accounts {
        assert_eq!(sm.account(*id), Some(a));
    }
    for (id, t) in &m.transfers {
        assert_eq!(sm.transfer(*id), Some(*t));
        assert_eq!(sm.pending_state(*id), m.states.get(id).copied());
    }
    for (id, f) in &m.failed {
        assert_eq!(sm.failed_transfer(*id), Some(*f));
    }
    for &id in sample {
        for flags in [FF::DEBITS | FF::CREDITS, FF::DEBITS | FF::CREDITS | FF::REVERSED] {
            let f = full_filter(id, flags);
            assert_eq!(sm.account_transfers(&f).ok(), m.account_transfers(&f), "transfers of {id}");
            assert_eq!(sm.account_balances(&f).ok(), m.account_balances(&f), "balances of {id}");
        }
    }
    sm.check_invariants_deep().unwrap();
}

/// Crosses the chunk boundaries of every arena (4096 accounts, 16384 balance
/// records, 16384 failed ids, 65536 transfers) with linked chains that fail
/// and roll back across the boundary and chains that succeed across it; takes
/// a snapshot in the middle, keeps writing (copy-on-write), and restores
/// both the mid and the final snapshot.
fn bulk_run(shape: IdShape, seed: u64) {
    const ACCOUNTS: u128 = 4300;
    let id = |n: u128| shape.id(n);
    let mut rng = XorShift(seed);
    let mut h = Harness::new(None, shape);
    let mut clock = 1_000_000u64;
    let mut next_transfer = 1u128;
    // Plain accounts have no limit flag; every third has history.
    let plain_account = |n: u128| !n.is_multiple_of(11) && !n.is_multiple_of(13);
    let history = |n: u128| n.is_multiple_of(3);
    let account_n = |n: u128| {
        let mut flags = 0;
        if history(n) {
            flags |= AF::HISTORY;
        }
        if n.is_multiple_of(11) {
            flags |= AF::DEBITS_MUST_NOT_EXCEED_CREDITS;
        } else if n.is_multiple_of(13) {
            flags |= AF::CREDITS_MUST_NOT_EXCEED_DEBITS;
        }
        Account { id: id(n), ledger: 1, code: 1, flags, ..Default::default() }
    };
    let mut entry = |h: &mut Harness, commands: Vec<CmdSpec>, step: u64| {
        clock += step;
        h.entry(clock, &commands).unwrap();
    };

    // Accounts, with a chain failing across the 4096 boundary.
    entry(&mut h, vec![CmdSpec::Ledgers(vec![Ledger { id: 1, ..usd() }])], 1_000);
    let first: Vec<Account> = (1..=4090).map(account_n).collect();
    entry(&mut h, vec![accounts_spec(&first)], 1_000);
    let mut chain: Vec<Account> = (4091..=4102).map(|n| Account { flags: AF::LINKED, ..account_n(n) }).collect();
    chain.last_mut().unwrap().ledger = 9;
    let mut good: Vec<Account> = (4091..=4102).map(|n| Account { flags: AF::LINKED, ..account_n(n) }).collect();
    good.last_mut().unwrap().flags &= !AF::LINKED;
    let rest: Vec<Account> = (4103..=ACCOUNTS).map(account_n).collect();
    entry(&mut h, vec![accounts_spec(&chain), accounts_spec(&good), accounts_spec(&rest)], 1_000);
    assert_eq!(h.model.accounts.len(), ACCOUNTS as usize);

    let pick = |rng: &mut XorShift, want_history: bool| loop {
        let n = 1 + rng.below(ACCOUNTS as u64) as u128;
        if plain_account(n) && history(n) == want_history {
            return n;
        }
    };
    // A transfer that succeeds: between two accounts without limits.
    let mut ok = |rng: &mut XorShift, histories: u8, linked: bool| {
        let dr = pick(rng, histories >= 1);
        let cr = loop {
            let cr = pick(rng, histories >= 2);
            if cr != dr {
                break cr;
            }
        };
        next_transfer += 1;
        let flags = if linked { TF::LINKED } else { 0 };
        transfer(id(next_transfer), id(dr), id(cr), 1 + rng.below(1000) as u128, flags)
    };
    let mut fail_id = 1_000_000u128;
    // A transfer that fails with a code that records its id.
    let mut failing = || {
        fail_id += 1;
        transfer(id(fail_id), id(ACCOUNTS + 7), id(1), 1, 0)
    };

    // Balance records up to just below 16384, then chains across it.
    loop {
        let missing = 16384 - 7 - h.model.history.len() as i64;
        if missing <= 0 {
            break;
        }
        let batch: Vec<Transfer> = (0..(missing / 2).clamp(1, BATCH_EVENTS_MAX as i64))
            .map(|_| ok(&mut rng, if missing == 1 { 1 } else { 2 }, false))
            .collect();
        entry(&mut h, vec![transfers_spec(&batch)], 1_000);
    }
    let mut across: Vec<Transfer> = (0..10).map(|_| ok(&mut rng, 2, true)).collect();
    across.push(failing());
    let after: Vec<Transfer> = (0..10).map(|i| ok(&mut rng, 2, i < 9)).collect();
    let before = h.model.history.len();
    entry(&mut h, vec![transfers_spec(&across), transfers_spec(&after)], 1_000);
    assert!(before < 16384 && h.model.history.len() > 16384);
    check_bulk(&h.sm, &h.model, &[]);

    // Failed ids up to just below 16384, then chains that fail across it.
    loop {
        let missing = 16384 - 3 - h.model.failed.len() as i64;
        if missing <= 0 {
            break;
        }
        let batch: Vec<Transfer> = (0..missing.min(BATCH_EVENTS_MAX as i64)).map(|_| failing()).collect();
        entry(&mut h, vec![transfers_spec(&batch)], 1_000);
    }
    let mut chains = Vec::new();
    for _ in 0..6 {
        chains.push(ok(&mut rng, 1, true));
        chains.push(ok(&mut rng, 0, true));
        chains.push(failing());
    }
    entry(&mut h, vec![transfers_spec(&chains)], 1_000);
    assert!(h.model.failed.len() > 16384);
    check_bulk(&h.sm, &h.model, &[]);

    // A snapshot in the middle; writes after it copy the chunks they touch.
    let mid_snapshot = h.sm.snapshot();
    let mid_digest = h.sm.digest();
    let mid_entries = h.log.len();

    // Transfers up to just below 65536 (with pending transfers that expire
    // and posts along the way), then chains across it.
    loop {
        let missing = 65536 - 5 - h.model.transfers.len() as i64;
        if missing <= 0 {
            break;
        }
        let mut batch: Vec<Transfer> = (0..missing.min(8000)).map(|_| ok(&mut rng, 0, false)).collect();
        if missing > 200 {
            // Replace some by pending transfers and posts; keep the count.
            for t in batch.iter_mut().take(100) {
                t.flags = TF::PENDING;
                t.timeout = 1 + rng.below(2) as u32;
            }
            let pending: Vec<u128> = h.model.transfers.values().filter(|t| t.has(TF::PENDING)).map(|t| t.id).collect();
            for t in batch.iter_mut().skip(100).take(100) {
                if let Some(&p) = pending.get(rng.below(pending.len().max(1) as u64) as usize) {
                    let amount = if rng.below(2) == 0 { u128::MAX } else { 1 };
                    *t = Transfer { pending_id: p, ..transfer(t.id, 0, 0, amount, TF::POST_PENDING) };
                }
            }
        }
        entry(&mut h, vec![transfers_spec(&batch)], 1_000_000_000);
    }
    let mut across: Vec<Transfer> = (0..10).map(|_| ok(&mut rng, 1, true)).collect();
    across.push(failing());
    let after: Vec<Transfer> = (0..10).map(|i| ok(&mut rng, 1, i < 9)).collect();
    let before = h.model.transfers.len();
    entry(&mut h, vec![transfers_spec(&across), transfers_spec(&after)], 1_000);
    assert!(before < 65536 && h.model.transfers.len() > 65536, "{before} {}", h.model.transfers.len());
    // Let the rest of the pending transfers expire.
    entry(&mut h, vec![], 5_000_000_000);
    let sample: Vec<u128> = (1..=40).map(|_| id(1 + rng.below(ACCOUNTS as u64) as u128)).collect();
    check_bulk(&h.sm, &h.model, &sample);

    // The mid snapshot did not change under the later writes; stored only
    // now, restored and fed the rest of the log, it reaches the same state.
    assert_eq!(mid_snapshot.digest(), mid_digest);
    let mut restored = StateMachine::restore(Limits::default(), stored(&mid_snapshot)).unwrap();
    assert_eq!(restored.digest(), mid_digest);
    for (i, e) in h.log.iter().enumerate().skip(mid_entries) {
        let commands: Vec<Command<'_>> = e.commands.iter().map(command_of).collect();
        let results: EntryResults =
            restored.apply_entry(i as u64 + 1, e.timestamp, &commands).iter().map(|r| pairs(r)).collect();
        assert_eq!(results, h.results[i]);
    }
    assert_eq!(restored.digest(), h.sm.digest());
    check_bulk(&restored, &h.model, &sample);
    let last = StateMachine::restore(Limits::default(), stored(&h.sm.snapshot())).unwrap();
    assert_eq!(last.digest(), h.sm.digest());
    check_bulk(&last, &h.model, &sample);
    // Every arena crossed a chunk boundary, and checkpoints sent the full
    // chunks of transfers, balance records, failed ids and the journal cold:
    // the checks above read them back from the chunk store.
    assert!(h.sm.cold_chunks() >= 4, "cold chunks: {}", h.sm.cold_chunks());
    assert!(h.cold.reads.load(Ordering::Relaxed) > 0);
    // Stored tables took over the older ids: RAM holds only the newest.
    let ([in_memory, _, list_entries, _], generations) = h.sm.indexes_in_memory();
    assert!(in_memory < h.model.transfers.len() / 2, "{in_memory} ids in RAM of {}", h.model.transfers.len());
    assert!(list_entries < h.model.transfers.len(), "{list_entries} list entries in RAM");
    assert!(generations <= bursar_core::limits::ID_GENERATIONS_MAX);
    let reader: Arc<dyn ChunkReader> = h.cold.clone();
    let lazy = StateMachine::restore_with(
        Limits::default(),
        stored_lazy(&h.sm.snapshot()),
        OnDisk { chunks: Some(reader), ids: Some(store_old_ids(&h.sm)) },
    )
    .unwrap();
    assert_eq!((lazy.cold_chunks(), lazy.digest()), (h.sm.cold_chunks(), h.sm.digest()));
    check_bulk(&lazy, &h.model, &sample);
}

#[test]
fn bulk_chunk_boundaries_small_ids() {
    bulk_run(IdShape::Small, 0x1234_5678_9ABC_DEF1);
}

#[test]
fn bulk_chunk_boundaries_scrambled_ids() {
    bulk_run(IdShape::Scrambled, 0x0FED_CBA9_8765_4321);
}

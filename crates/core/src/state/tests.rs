//! Scenario tests of the state machine; the property tests against a
//! reference model live in `tests/model.rs`.

use super::*;
use crate::codes::{CreateAccountResult as AR, CreateLedgerResult as LR, CreateTransferResult as TR};
use crate::command::{Command, Operation};
use crate::memory::MemoryUse;
use crate::records::{AccountFilter, account_flags as AF, encode_all, transfer_flags as TF};

struct Harness {
    sm: StateMachine,
    position: u64,
    clock: u64,
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness { sm: StateMachine::default(), position: 0, clock: 1_000 };
        let ledgers = [
            Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() },
            Ledger { id: 2, scale: 2, asset: Ledger::pack_asset("EUR").unwrap(), ..Default::default() },
        ];
        assert!(h.run(Operation::CreateLedgers, encode_all(&ledgers)).is_empty());
        h
    }

    fn run(&mut self, operation: Operation, events: &[u8]) -> Vec<EventResult> {
        self.position += 1;
        self.clock += 1_000;
        let cmd = Command { operation, events };
        cmd.validate().unwrap();
        self.sm.apply_entry(self.position, self.clock, &[cmd]).remove(0)
    }

    /// Advances log time by `seconds` with an empty entry.
    fn pass(&mut self, seconds: u64) {
        self.clock += seconds * crate::records::NANOS_PER_SECOND;
        self.position += 1;
        self.sm.apply_entry(self.position, self.clock, &[]);
    }

    fn accounts(&mut self, accounts: &[Account]) -> Vec<(u32, AR)> {
        self.run(Operation::CreateAccounts, encode_all(accounts))
            .iter()
            .map(|r| (r.index, AR::from_code(r.code).unwrap()))
            .collect()
    }

    fn transfers(&mut self, transfers: &[Transfer]) -> Vec<(u32, TR)> {
        self.run(Operation::CreateTransfers, encode_all(transfers))
            .iter()
            .map(|r| (r.index, TR::from_code(r.code).unwrap()))
            .collect()
    }

    fn one(&mut self, t: Transfer) -> TR {
        match self.transfers(&[t]).as_slice() {
            [] => TR::Ok,
            [(0, code)] => *code,
            other => panic!("unexpected results {other:?}"),
        }
    }

    fn balances(&self, id: u128) -> (u128, u128, u128, u128) {
        let a = self.sm.account(id).unwrap();
        (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
    }
}

fn account(id: u128, flags: u16) -> Account {
    Account { id, ledger: 1, code: 10, flags, ..Default::default() }
}

fn transfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id: dr, credit_account_id: cr, amount, ledger: 1, code: 1, ..Default::default() }
}

fn setup() -> Harness {
    let mut h = Harness::new();
    let r = h.accounts(&[
        account(1, 0),
        account(2, 0),
        account(3, AF::DEBITS_MUST_NOT_EXCEED_CREDITS | AF::HISTORY),
        account(4, AF::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ]);
    assert!(r.is_empty(), "{r:?}");
    h
}

#[test]
fn plain_transfer_moves_posted_balances_and_is_idempotent() {
    let mut h = setup();
    assert_eq!(h.one(transfer(10, 1, 2, 500)), TR::Ok);
    assert_eq!(h.balances(1), (0, 500, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 500));
    assert_eq!(h.one(transfer(10, 1, 2, 500)), TR::Exists);
    assert_eq!(h.one(transfer(10, 1, 2, 501)), TR::ExistsWithDifferentAmount);
    assert_eq!(h.one(Transfer { code: 9, ..transfer(10, 1, 2, 500) }), TR::ExistsWithDifferentCode);
    assert_eq!(h.balances(1), (0, 500, 0, 0), "re-submission applies nothing");
    assert_eq!(h.sm.transfer_count(), 1);
}

#[test]
fn ledger_creation_and_validation_order() {
    let mut h = Harness::new();
    let usd = Ledger::pack_asset("USD").unwrap();
    let r = h.run(
        Operation::CreateLedgers,
        encode_all(&[
            Ledger { id: 1, scale: 2, asset: usd, ..Default::default() },
            Ledger { id: 1, scale: 3, asset: usd, ..Default::default() },
            Ledger { id: 0, scale: 99, asset: [0; 16], ..Default::default() },
            Ledger { id: 7, scale: 39, asset: usd, ..Default::default() },
            Ledger { id: 8, scale: 2, asset: [0; 16], timestamp: 5, ..Default::default() },
        ]),
    );
    let codes: Vec<_> = r.iter().map(|r| (r.index, LR::from_code(r.code).unwrap())).collect();
    assert_eq!(
        codes,
        vec![
            (0, LR::Exists),
            (1, LR::ExistsWithDifferentScale),
            (2, LR::IdMustNotBeZero),
            (3, LR::ScaleInvalid),
            (4, LR::TimestampMustBeZero)
        ]
    );
}

#[test]
fn account_validation_and_exists() {
    let mut h = setup();
    let r = h.accounts(&[
        account(1, 0),
        Account { user_data_64: 3, ..account(1, 0) },
        account(0, 0),
        account(5, AF::DEBITS_MUST_NOT_EXCEED_CREDITS | AF::CREDITS_MUST_NOT_EXCEED_DEBITS),
        Account { ledger: 9, ..account(6, 0) },
        Account { credits_posted: 1, ..account(7, 0) },
        account(8, 1 << 15),
        Account { code: 0, ..account(9, 0) },
    ]);
    assert_eq!(
        r,
        vec![
            (0, AR::Exists),
            (1, AR::ExistsWithDifferentUserData64),
            (2, AR::IdMustNotBeZero),
            (3, AR::FlagsAreMutuallyExclusive),
            (4, AR::LedgerNotFound),
            (5, AR::CreditsPostedMustBeZero),
            (6, AR::ReservedFlag),
            (7, AR::CodeMustNotBeZero),
        ]
    );
}

#[test]
fn limits_are_enforced() {
    let mut h = setup();
    assert_eq!(h.one(transfer(1, 3, 1, 1)), TR::ExceedsCredits);
    assert_eq!(h.one(transfer(2, 1, 3, 100)), TR::Ok);
    assert_eq!(h.one(transfer(3, 3, 1, 101)), TR::ExceedsCredits);
    assert_eq!(h.one(transfer(4, 3, 1, 100)), TR::Ok);
    assert_eq!(h.one(transfer(5, 2, 4, 1)), TR::ExceedsDebits);
    assert_eq!(h.one(transfer(1, 1, 2, 1)), TR::IdAlreadyFailed, "a failed id is never reused");
    assert_eq!(h.sm.failed_transfer(1).unwrap().code, TR::ExceedsCredits.code());
    assert_eq!(h.one(transfer(5, 2, 4, 1)), TR::IdAlreadyFailed);
}

#[test]
fn linked_chain_is_all_or_nothing() {
    let mut h = setup();
    let chain = [
        Transfer { flags: TF::LINKED, ..transfer(1, 1, 2, 10) },
        Transfer { flags: TF::LINKED, ..transfer(2, 2, 1, 5) },
        transfer(3, 3, 1, 1), // exceeds credits: the whole chain fails
        transfer(4, 1, 2, 7),
    ];
    assert_eq!(
        h.transfers(&chain),
        vec![(0, TR::LinkedEventFailed), (1, TR::LinkedEventFailed), (2, TR::ExceedsCredits)]
    );
    assert_eq!(h.balances(1), (0, 7, 0, 0), "only the unlinked transfer applied");
    assert!(h.sm.transfer(1).is_none() && h.sm.transfer(2).is_none());
    // The rolled-back ids are free; the failing one is burned.
    assert_eq!(h.one(transfer(1, 1, 2, 10)), TR::Ok);
    assert_eq!(h.one(transfer(3, 1, 2, 1)), TR::IdAlreadyFailed);
    let open = [transfer(20, 1, 2, 1), Transfer { flags: TF::LINKED, ..transfer(21, 1, 2, 1) }];
    assert_eq!(h.transfers(&open), vec![(1, TR::LinkedEventChainOpen)]);
    let failed_later = [
        Transfer { flags: TF::LINKED, ..transfer(30, 1, 2, 1) },
        Transfer { flags: TF::LINKED, ..transfer(31, 1, 1, 1) },
        transfer(32, 1, 2, 1),
    ];
    assert_eq!(
        h.transfers(&failed_later),
        vec![(0, TR::LinkedEventFailed), (1, TR::AccountsMustBeDifferent), (2, TR::LinkedEventFailed)]
    );
    h.sm.check_invariants_deep().unwrap();
}

#[test]
fn pending_post_partial_and_void() {
    let mut h = setup();
    assert_eq!(h.one(Transfer { flags: TF::PENDING, ..transfer(1, 1, 2, 100) }), TR::Ok);
    assert_eq!(h.balances(1), (100, 0, 0, 0));
    assert_eq!(
        h.one(Transfer { flags: TF::POST_PENDING, pending_id: 1, ..transfer(2, 0, 0, 101) }),
        TR::ExceedsPendingTransferAmount
    );
    assert_eq!(
        h.one(Transfer { flags: TF::POST_PENDING, pending_id: 1, ledger: 0, code: 0, ..transfer(3, 0, 0, 60) }),
        TR::Ok
    );
    assert_eq!(h.balances(1), (0, 60, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 60));
    let post = h.sm.transfer(3).unwrap();
    assert_eq!(
        (post.debit_account_id, post.credit_account_id, post.ledger, post.code),
        (1, 2, 1, 1),
        "inherited from the pending transfer"
    );
    assert_eq!(
        h.one(Transfer { flags: TF::VOID_PENDING, pending_id: 1, ..transfer(4, 0, 0, 0) }),
        TR::PendingTransferAlreadyPosted
    );
    assert_eq!(
        h.one(Transfer { flags: TF::POST_PENDING, pending_id: 1, ledger: 0, code: 0, ..transfer(3, 0, 0, 60) }),
        TR::Exists
    );

    assert_eq!(h.one(Transfer { flags: TF::PENDING, ..transfer(10, 1, 2, 50) }), TR::Ok);
    assert_eq!(
        h.one(Transfer { flags: TF::VOID_PENDING, pending_id: 10, ..transfer(11, 0, 0, 49) }),
        TR::PendingTransferHasDifferentAmount
    );
    assert_eq!(h.one(Transfer { flags: TF::VOID_PENDING, pending_id: 10, ..transfer(12, 0, 0, 0) }), TR::Ok);
    assert_eq!(h.balances(1), (0, 60, 0, 0));
    assert_eq!(h.sm.pending_state(10), Some(PendingState::Voided));
    assert_eq!(
        h.one(Transfer { flags: TF::POST_PENDING, pending_id: 12, ..transfer(13, 0, 0, 1) }),
        TR::PendingTransferNotPending
    );
    assert_eq!(
        h.one(Transfer { flags: TF::POST_PENDING, pending_id: 99, ..transfer(14, 0, 0, 1) }),
        TR::PendingTransferNotFound
    );

    assert_eq!(h.one(Transfer { flags: TF::PENDING, ..transfer(20, 1, 2, 70) }), TR::Ok);
    assert_eq!(h.one(Transfer { flags: TF::POST_PENDING, pending_id: 20, ..transfer(21, 0, 0, u128::MAX) }), TR::Ok);
    assert_eq!(h.sm.transfer(21).unwrap().amount, 70, "u128::MAX posts the full amount");
    assert_eq!(
        h.one(Transfer { flags: TF::POST_PENDING, pending_id: 20, ..transfer(21, 0, 0, u128::MAX) }),
        TR::Exists
    );
    assert_eq!(
        h.one(Transfer { flags: TF::POST_PENDING, pending_id: 20, ..transfer(21, 0, 0, 69) }),
        TR::ExistsWithDifferentAmount
    );
    h.sm.check_invariants_deep().unwrap();
}

#[test]
fn pending_transfers_expire_by_log_time() {
    let mut h = setup();
    assert_eq!(h.one(Transfer { flags: TF::PENDING, timeout: 2, ..transfer(1, 1, 2, 40) }), TR::Ok);
    assert!(h.sm.next_expiry().is_some());
    h.pass(1);
    assert_eq!(h.balances(1), (40, 0, 0, 0));
    h.pass(2);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert_eq!(h.sm.pending_state(1), Some(PendingState::Expired));
    assert_eq!(
        h.one(Transfer { flags: TF::POST_PENDING, pending_id: 1, ..transfer(2, 0, 0, 1) }),
        TR::PendingTransferExpired
    );
    assert!(h.sm.next_expiry().is_none());
    assert_eq!(h.one(Transfer { timeout: 1, ..transfer(3, 1, 2, 1) }), TR::TimeoutReservedForPendingTransfer);
    let far = Transfer { flags: TF::PENDING, timeout: u32::MAX, ..transfer(4, 1, 2, 1) };
    h.clock = u64::MAX - 10 * crate::records::NANOS_PER_SECOND;
    assert_eq!(h.one(far), TR::OverflowsTimeout);
}

#[test]
fn balancing_and_closing() {
    let mut h = setup();
    assert_eq!(h.one(transfer(1, 1, 3, 30)), TR::Ok);
    assert_eq!(h.one(Transfer { flags: TF::BALANCING_DEBIT, ..transfer(2, 3, 1, 1000) }), TR::Ok);
    assert_eq!(h.sm.transfer(2).unwrap().amount, 30, "capped at the available credit");
    assert_eq!(h.one(Transfer { flags: TF::BALANCING_DEBIT, ..transfer(2, 3, 1, 1000) }), TR::Exists);
    assert_eq!(h.one(Transfer { flags: TF::BALANCING_DEBIT, ..transfer(2, 3, 1, 29) }), TR::ExistsWithDifferentAmount);

    assert_eq!(h.one(Transfer { flags: TF::CLOSING_DEBIT, ..transfer(5, 1, 2, 0) }), TR::ClosingTransferMustBePending);
    assert_eq!(h.one(Transfer { flags: TF::CLOSING_DEBIT | TF::PENDING, ..transfer(6, 1, 2, 0) }), TR::Ok);
    assert!(h.sm.account(1).unwrap().has(AF::CLOSED));
    assert_eq!(h.one(transfer(7, 1, 2, 5)), TR::DebitAccountClosed);
    assert_eq!(h.one(transfer(8, 2, 1, 5)), TR::CreditAccountClosed);
    assert_eq!(h.one(Transfer { flags: TF::VOID_PENDING, pending_id: 6, ..transfer(9, 0, 0, 0) }), TR::Ok);
    assert!(!h.sm.account(1).unwrap().has(AF::CLOSED), "voiding the closing transfer reopens");
    assert_eq!(h.one(transfer(10, 1, 2, 5)), TR::Ok);
}

#[test]
fn overflow_is_a_result_not_a_panic() {
    let mut h = setup();
    assert_eq!(h.one(transfer(1, 1, 2, u128::MAX)), TR::Ok);
    assert_eq!(h.one(transfer(2, 1, 2, 1)), TR::OverflowsDebitsPosted);
    assert_eq!(h.one(Transfer { flags: TF::PENDING, ..transfer(3, 1, 2, 1) }), TR::OverflowsDebits);
    assert_eq!(h.one(transfer(4, 2, 1, u128::MAX)), TR::Ok);
    assert_eq!(h.one(Transfer { flags: TF::PENDING, ..transfer(5, 2, 1, 1) }), TR::OverflowsDebits);
    let totals = h.sm.ledger_totals().find(|(l, _)| l.id == 1).unwrap().1;
    assert_eq!(totals.debits_posted.to_string(), "680564733841876926926749214863536422910");
    h.sm.check_invariants_deep().unwrap();
}

#[test]
fn queries_filter_by_side_time_and_order() {
    let mut h = setup();
    for i in 0..10u128 {
        let (dr, cr) = if i % 2 == 0 { (1, 3) } else { (3, 1) };
        assert_eq!(h.one(transfer(100 + i, dr, cr, 10)), TR::Ok, "transfer {i}");
    }
    let ts: Vec<u64> = (0..10u128).map(|i| h.sm.transfer(100 + i).unwrap().timestamp).collect();
    let f =
        AccountFilter { account_id: 1, limit: 100, flags: crate::records::filter_flags::DEBITS, ..Default::default() };
    let debits = h.sm.account_transfers(&f).unwrap();
    assert_eq!(debits.iter().map(|t| t.id).collect::<Vec<_>>(), vec![100, 102, 104, 106, 108]);
    let f = AccountFilter {
        flags: crate::records::filter_flags::ALL,
        limit: 3,
        timestamp_min: ts[2],
        timestamp_max: ts[7],
        ..f
    };
    let page = h.sm.account_transfers(&f).unwrap();
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), vec![107, 106, 105], "newest first within the range");
    let bad = AccountFilter { limit: 0, ..f };
    assert!(h.sm.account_transfers(&bad).is_err());
    let history = h.sm.account_balances(&AccountFilter { account_id: 3, limit: 100, ..Default::default() }).unwrap();
    assert_eq!(history.len(), 10);
    assert_eq!(history.last().unwrap().credits_posted, 50);
    assert_eq!(history.last().unwrap().debits_posted, 50);
    assert!(
        h.sm.account_balances(&AccountFilter { account_id: 1, limit: 100, ..Default::default() }).unwrap().is_empty(),
        "no history flag"
    );
}

#[test]
fn snapshot_restore_gives_the_same_state_and_digest() {
    let mut h = setup();
    for i in 0..50u128 {
        let flags = if i % 3 == 0 { TF::PENDING } else { 0 };
        let timeout = if i % 9 == 0 { 5 } else { 0 };
        h.one(Transfer { flags, timeout, ..transfer(1000 + i, 1 + i % 2, 3, 7) });
    }
    h.one(transfer(5000, 3, 1, 1_000_000));
    let snap = h.sm.snapshot();
    let digest = snap.digest();
    let stored = SnapshotChunks {
        header: snap.header(),
        sections: snap
            .sections()
            .iter()
            .map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect())
            .collect(),
    };
    let restored = StateMachine::restore(Limits::default(), stored).unwrap();
    assert_eq!(restored.digest(), digest);
    assert_eq!(restored.transfer_count(), h.sm.transfer_count());
    assert_eq!(restored.next_expiry(), h.sm.next_expiry());
    assert_eq!(restored.failed_transfer(5000).map(|f| f.code), Some(TR::ExceedsCredits.code()));
    // Writes after the snapshot do not change it (copy-on-write).
    h.one(transfer(6000, 1, 2, 1));
    assert_eq!(snap.digest(), digest);
    assert_ne!(h.sm.digest(), digest);
}

#[test]
fn restore_rejects_inconsistent_chunks() {
    let h = setup();
    let snap = h.sm.snapshot();
    let mut sections: Vec<Vec<Vec<u8>>> =
        snap.sections().iter().map(|s| s.chunks.iter().map(|c| c.bytes().to_vec()).collect()).collect();
    let stored = |sections: Vec<Vec<Vec<u8>>>| -> Vec<Vec<SectionChunk>> {
        sections.into_iter().map(|s| s.into_iter().map(SectionChunk::from).collect()).collect()
    };
    // Account 2 overwritten with account 1: a duplicate id.
    let (first, rest) = sections[0][0].split_at_mut(128);
    rest[..128].copy_from_slice(first);
    let err = StateMachine::restore(
        Limits::default(),
        SnapshotChunks { header: snap.header(), sections: stored(sections.clone()) },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("stored twice"), "{err}");
    sections[0][0].truncate(100);
    assert!(
        StateMachine::restore(Limits::default(), SnapshotChunks { header: snap.header(), sections: stored(sections) })
            .is_err()
    );
}

#[test]
fn limits_reached_are_results() {
    let mut h = Harness::new();
    h.sm.limits = Limits { ledgers: 2, accounts: 2, transfers: 1 };
    let r = h.run(
        Operation::CreateLedgers,
        encode_all(&[Ledger { id: 3, asset: Ledger::pack_asset("GBP").unwrap(), ..Default::default() }]),
    );
    assert_eq!(r, vec![EventResult { index: 0, code: LR::LedgersLimitReached.code() }]);
    assert_eq!(h.accounts(&[account(1, 0), account(2, 0), account(3, 0)]), vec![(2, AR::AccountsLimitReached)]);
    assert_eq!(h.transfers(&[transfer(1, 1, 2, 1), transfer(2, 1, 2, 1)]), vec![(1, TR::TransfersLimitReached)]);
}

#[test]
fn timestamps_are_strictly_increasing_even_if_the_clock_steps_back() {
    let mut h = setup();
    h.one(transfer(1, 1, 2, 1));
    h.clock = 0;
    h.one(transfer(2, 1, 2, 1));
    let (a, b) = (h.sm.transfer(1).unwrap().timestamp, h.sm.transfer(2).unwrap().timestamp);
    assert!(b > a);
}

#[test]
fn memory_follows_what_the_state_holds() {
    let mut h = setup();
    let mut before = MemoryUse::default();
    h.sm.memory(&mut before);
    let names: Vec<&str> = before.0.iter().map(|(n, _)| *n).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "each structure once: {names:?}");
    assert_eq!(before.get("transfers"), Some(0), "no transfer yet");

    let n = 70_000u128; // more than one transfer chunk (65,536)
    let batch: Vec<Transfer> = (0..n).map(|i| transfer(1_000 + i, 1, 2, 1)).collect();
    for chunk in batch.chunks(8_000) {
        assert!(h.transfers(chunk).is_empty());
    }
    let mut after = MemoryUse::default();
    h.sm.memory(&mut after);
    let per = |name: &str| after.get(name).expect("listed") as f64 / n as f64;
    assert!(per("transfers") >= 128.0, "whole chunks of 128-byte transfers: {after:?}");
    assert!(per("transfer_index") >= 8.0, "8-byte slots: {after:?}");
    assert!(per("account_lists") >= 8.0, "two 4-byte entries per transfer: {after:?}");
    assert_eq!(after.0.len(), before.0.len(), "the same structures, in the same order");
    assert!(after.total() > before.total() + 128 * n as u64);
}

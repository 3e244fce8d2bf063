//! Order flows through a real `Machine`: transitions, money at every step,
//! compensations, deadlines, refusals, and snapshots.

use super::money::{AccountKind, account_id};
use super::*;
use crate::codes::EventResult;
use crate::command::{Command, LogCommand, Operation};
use crate::machine::Machine;
use crate::records::{Ledger, NANOS_PER_SECOND, encode_all};
use crate::state::{Limits, Snapshot, SnapshotChunks};

const USD: u32 = 840;
const EUR: u32 = 978;
const SEC: u64 = NANOS_PER_SECOND;

struct H {
    m: Machine,
    position: u64,
    time: u64,
}

impl H {
    fn new() -> H {
        let mut h = H { m: Machine::default(), position: 0, time: 1_000 * SEC };
        let ledgers = [
            Ledger { id: USD, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() },
            Ledger { id: EUR, scale: 2, asset: Ledger::pack_asset("EUR").unwrap(), ..Default::default() },
        ];
        h.apply(Operation::CreateLedgers, encode_all(&ledgers));
        h
    }

    fn apply(&mut self, operation: Operation, events: &[u8]) -> Vec<EventResult> {
        self.position += 1;
        self.time += SEC;
        let c = Command { operation, events };
        let mut out = self.m.apply_entry(self.position, self.time, &[LogCommand::Plain(c)]);
        self.m.check_invariants_deep().unwrap();
        out.pop().unwrap().1
    }

    /// Advances log time with an empty entry (deadlines fire).
    fn tick(&mut self, seconds: u64) {
        self.position += 1;
        self.time += seconds * SEC;
        self.m.apply_entry(self.position, self.time, &[]);
        self.m.check_invariants_deep().unwrap();
    }

    fn create(&mut self, e: OrderCreate) -> u32 {
        self.apply(Operation::CreateOrders, encode_all(&[e])).first().map_or(0, |r| r.code)
    }

    fn cmd(&mut self, c: OrderCommand) -> OrderCommandResult {
        let r = self.apply(Operation::OrderCommands, encode_all(&[c]));
        OrderCommandResult::from_code(r.first().map_or(0, |r| r.code)).unwrap()
    }

    fn order(&self, id: u128) -> Order {
        self.m.orders().get(id).unwrap().order
    }

    fn balance(&self, kind: AccountKind, ledger: u32, customer: u128) -> (u128, u128, u128, u128) {
        let a = self.m.ledger().account(account_id(kind, ledger, customer)).unwrap();
        (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
    }
}

fn new_order(id: u128) -> OrderCreate {
    let mut e = OrderCreate {
        id,
        customer_id: 77,
        source_amount: 10_000,
        fee_amount: 150,
        source_ledger: USD,
        target_ledger: EUR,
        funds_timeout_seconds: 60,
        review_timeout_seconds: 600,
        flags: order_flags::REFUND_FEE_ON_FAILURE,
        pii_len: 3,
        ..Default::default()
    };
    e.pii[..3].copy_from_slice(b"xyz");
    e
}

fn exec(id: u128, kind: CommandKind) -> OrderCommand {
    OrderCommand::new(id, kind, Actor::Executor)
}

fn verdict(id: u128, kind: CommandKind, v: Verdict) -> OrderCommand {
    OrderCommand { verdict: v as u8, ..exec(id, kind) }
}

fn lock(h: &H, id: u128) -> OrderCommand {
    OrderCommand { rate_ppb: 920_000_000, quote_id: 5, time: h.time + 60 * SEC, ..exec(id, CommandKind::LockFx) }
}

fn funds(id: u128, amount: u128) -> OrderCommand {
    OrderCommand { amount, ..OrderCommand::new(id, CommandKind::FundsReceived, Actor::Bank) }.with_reference("BANK-1")
}

/// Drives an order to `approved`.
fn to_approved(h: &mut H, id: u128) {
    assert_eq!(h.create(new_order(id)), 0);
    assert_eq!(h.cmd(exec(id, CommandKind::FundsAwaited)), OrderCommandResult::Ok);
    assert_eq!(h.cmd(funds(id, 10_000)), OrderCommandResult::Ok);
    assert_eq!(h.cmd(exec(id, CommandKind::StartScreening)), OrderCommandResult::Ok);
    assert_eq!(h.cmd(verdict(id, CommandKind::ScreeningResult, Verdict::Pass)), OrderCommandResult::Ok);
}

#[test]
fn happy_path_moves_money_at_every_step() {
    let mut h = H::new();
    to_approved(&mut h, 1);
    assert_eq!(h.order(1).state(), OrderState::Approved);
    assert_eq!(h.balance(AccountKind::Escrow, USD, 0), (0, 0, 10_000, 0), "funds held, pending");
    assert_eq!(h.balance(AccountKind::Customer, USD, 77), (10_000, 0, 0, 10_000));
    let l = lock(&h, 1);
    assert_eq!(h.cmd(l), OrderCommandResult::Ok);
    let o = h.order(1);
    assert_eq!((o.state(), o.target_amount), (OrderState::FxLocked, 9_062), "floor(9_850 × 0.92)");
    assert_eq!(h.balance(AccountKind::Fees, USD, 0), (0, 0, 0, 150));
    assert_eq!(h.balance(AccountKind::Liquidity, USD, 0), (0, 0, 0, 9_850));
    assert_eq!(h.balance(AccountKind::Liquidity, EUR, 0), (0, 9_062, 0, 0));
    assert_eq!(h.cmd(exec(1, CommandKind::SendPayout)), OrderCommandResult::Ok);
    assert_eq!(h.balance(AccountKind::Rail, EUR, 0), (0, 0, 9_062, 0), "payout reserved");
    assert_eq!(h.cmd(exec(1, CommandKind::ConfirmPayout).with_reference("RAIL-9")), OrderCommandResult::Ok);
    let o = h.order(1);
    assert_eq!(o.state(), OrderState::Completed);
    assert_eq!(o.reference_str(), "RAIL-9");
    assert_eq!(h.balance(AccountKind::Rail, EUR, 0), (0, 0, 0, 9_062));
    assert_eq!(h.balance(AccountKind::PayoutClearing, EUR, 0), (0, 9_062, 0, 9_062));
    assert_eq!(h.balance(AccountKind::Escrow, USD, 0), (0, 10_000, 0, 10_000));
    let timeline = &h.m.orders().get(1).unwrap().timeline;
    let states: Vec<u8> = timeline.iter().map(|e| e.to).collect();
    assert_eq!(states, vec![1, 2, 3, 4, 6, 7, 8, 9]);
    assert!(timeline.iter().all(|e| e.result == 0));
    assert_eq!(timeline[2].transfers, 2, "funds in and hold");
}

#[test]
fn illegal_commands_name_the_state_and_change_nothing() {
    let mut h = H::new();
    assert_eq!(h.create(new_order(1)), 0);
    assert_eq!(h.cmd(exec(1, CommandKind::SendPayout)), OrderCommandResult::OrderIsCreated);
    assert_eq!(h.cmd(exec(2, CommandKind::SendPayout)), OrderCommandResult::OrderNotFound);
    assert_eq!(h.cmd(funds(1, 9_999)), OrderCommandResult::AmountMustEqualOrder);
    assert_eq!(h.cmd(OrderCommand::new(1, CommandKind::Cancel, Actor::Api)), OrderCommandResult::ActorInvalid);
    assert_eq!(h.cmd(OrderCommand { kind: 99, ..exec(1, CommandKind::Cancel) }), OrderCommandResult::KindInvalid);
    let seq = h.order(1).change_seq;
    assert_eq!(h.order(1).state(), OrderState::Created);
    assert_eq!(h.cmd(exec(1, CommandKind::Cancel)), OrderCommandResult::Ok);
    assert!(h.order(1).change_seq > seq);
    let t = h.m.orders().get(1).unwrap().timeline.clone();
    assert_eq!(t.iter().filter(|e| e.result != 0).count(), 2, "refusals of an open order are on its timeline");
    assert_eq!(h.cmd(funds(1, 10_000)), OrderCommandResult::OrderIsCancelled);
    assert_eq!(h.m.orders().get(1).unwrap().timeline, t, "a final order is frozen: refused, not recorded");
    assert_eq!(h.create(new_order(1)), CreateOrderResult::Exists.code());
    let other = OrderCreate { source_amount: 1, fee_amount: 0, ..new_order(1) };
    assert_eq!(h.create(other), CreateOrderResult::ExistsWithDifferentFields.code());
}

#[test]
fn create_checks_fields_in_order() {
    let mut h = H::new();
    let bad = |f: fn(&mut OrderCreate)| {
        let mut e = new_order(9);
        f(&mut e);
        e
    };
    assert_eq!(h.create(bad(|e| e.id = 0)), CreateOrderResult::IdMustNotBeZero.code());
    assert_eq!(h.create(bad(|e| e.fee_amount = 10_000)), CreateOrderResult::FeeMustBeLessThanAmount.code());
    assert_eq!(h.create(bad(|e| e.pii_len = 0)), CreateOrderResult::PiiLengthInvalid.code());
    assert_eq!(h.create(bad(|e| e.pii_len = 385)), CreateOrderResult::PiiLengthInvalid.code());
    assert_eq!(h.create(bad(|e| e.pii[300] = 1)), CreateOrderResult::PiiLengthInvalid.code());
    assert_eq!(h.create(bad(|e| e.target_ledger = 1)), CreateOrderResult::TargetLedgerNotFound.code());
    assert_eq!(h.create(bad(|e| e.flags = 1 << 9)), CreateOrderResult::FlagsAreInvalid.code());
    assert!(h.m.orders().is_empty());
}

#[test]
fn screening_reject_and_review_reject_release_the_hold_and_refund() {
    let mut h = H::new();
    for (id, review) in [(1, false), (2, true)] {
        assert_eq!(h.create(new_order(id)), 0);
        assert_eq!(h.cmd(funds(id, 10_000)), OrderCommandResult::Ok, "funds may arrive before funds_awaited");
        assert_eq!(h.cmd(exec(id, CommandKind::StartScreening)), OrderCommandResult::Ok);
        if review {
            assert_eq!(h.cmd(verdict(id, CommandKind::ScreeningResult, Verdict::Review)), OrderCommandResult::Ok);
            assert_eq!(h.order(id).state(), OrderState::OnHold);
            let review = OrderCommand::new(id, CommandKind::Review, Actor::Executor);
            assert_eq!(h.cmd(OrderCommand { verdict: 2, ..review }), OrderCommandResult::VerdictInvalid);
            assert_eq!(h.cmd(OrderCommand { verdict: 3, ..review }.with_reason("docs")), OrderCommandResult::Ok);
        } else {
            assert_eq!(h.cmd(verdict(id, CommandKind::ScreeningResult, Verdict::Reject)), OrderCommandResult::Ok);
        }
        assert_eq!(h.order(id).state(), OrderState::Rejected);
    }
    assert_eq!(h.balance(AccountKind::Escrow, USD, 0), (0, 0, 0, 0));
    assert_eq!(h.balance(AccountKind::BankOut, USD, 0), (0, 0, 0, 20_000), "both refunded in full");
    assert_eq!(h.balance(AccountKind::Customer, USD, 77), (0, 20_000, 0, 20_000));
}

#[test]
fn failed_payout_unwinds_everything_and_refunds_the_fee_per_policy() {
    let mut h = H::new();
    for (id, flags) in [(1, order_flags::REFUND_FEE_ON_FAILURE), (2, 0)] {
        let e = OrderCreate { flags, ..new_order(id) };
        assert_eq!(h.create(e), 0);
        assert_eq!(h.cmd(funds(id, 10_000)), OrderCommandResult::Ok);
        assert_eq!(h.cmd(exec(id, CommandKind::StartScreening)), OrderCommandResult::Ok);
        assert_eq!(h.cmd(verdict(id, CommandKind::ScreeningResult, Verdict::Pass)), OrderCommandResult::Ok);
        let l = lock(&h, id);
        assert_eq!(h.cmd(l), OrderCommandResult::Ok);
        assert_eq!(h.cmd(exec(id, CommandKind::SendPayout)), OrderCommandResult::Ok);
        assert_eq!(h.cmd(exec(id, CommandKind::Cancel)), OrderCommandResult::OrderIsPayoutSent);
        assert_eq!(h.cmd(exec(id, CommandKind::FailPayout).with_reason("account closed")), OrderCommandResult::Ok);
        assert_eq!(h.order(id).state(), OrderState::Failed);
    }
    assert_eq!(h.balance(AccountKind::BankOut, USD, 0).3, 10_000 + 9_850, "fee refunded only on order 1");
    assert_eq!(h.balance(AccountKind::Fees, USD, 0), (0, 150, 0, 300));
    let liq = h.balance(AccountKind::Liquidity, EUR, 0);
    assert_eq!((liq.1, liq.3), (2 * 9_062, 2 * 9_062), "FX reversed");
}

#[test]
fn cancel_after_fx_lock_refunds_net_of_the_fee_by_default() {
    let mut h = H::new();
    to_approved(&mut h, 1);
    let l = lock(&h, 1);
    assert_eq!(h.cmd(l), OrderCommandResult::Ok);
    assert_eq!(h.cmd(OrderCommand::new(1, CommandKind::Cancel, Actor::Executor)), OrderCommandResult::Ok);
    assert_eq!(h.order(1).state(), OrderState::Refunded);
    assert_eq!(h.balance(AccountKind::BankOut, USD, 0).3, 9_850);
    assert_eq!(h.balance(AccountKind::Customer, USD, 77), (0, 19_850, 0, 19_850));
}

#[test]
fn quotes_expire_and_payouts_wait_for_their_time() {
    let mut h = H::new();
    let e = OrderCreate { payout_at: h.time + 100 * SEC, ..new_order(1) };
    assert_eq!(h.create(e), 0);
    assert_eq!(h.cmd(funds(1, 10_000)), OrderCommandResult::Ok);
    assert_eq!(h.cmd(exec(1, CommandKind::StartScreening)), OrderCommandResult::Ok);
    assert_eq!(h.cmd(verdict(1, CommandKind::ScreeningResult, Verdict::Pass)), OrderCommandResult::Ok);
    let stale = OrderCommand { time: h.time, ..lock(&h, 1) };
    assert_eq!(h.cmd(stale), OrderCommandResult::QuoteExpired);
    let zero = OrderCommand { rate_ppb: 1, ..lock(&h, 1) };
    assert_eq!(h.cmd(zero), OrderCommandResult::TargetAmountMustNotBeZero);
    let l = lock(&h, 1);
    assert_eq!(h.cmd(l), OrderCommandResult::Ok);
    assert_eq!(h.cmd(exec(1, CommandKind::SendPayout)), OrderCommandResult::PayoutNotDue);
    h.tick(100);
    assert_eq!(h.cmd(exec(1, CommandKind::SendPayout)), OrderCommandResult::Ok);
}

#[test]
fn deadlines_expire_orders_once_and_release_holds() {
    let mut h = H::new();
    assert_eq!(h.create(new_order(1)), 0);
    assert_eq!(h.create(new_order(2)), 0);
    assert_eq!(h.cmd(funds(2, 10_000)), OrderCommandResult::Ok);
    assert_eq!(h.cmd(exec(2, CommandKind::StartScreening)), OrderCommandResult::Ok);
    assert_eq!(h.cmd(verdict(2, CommandKind::ScreeningResult, Verdict::Review)), OrderCommandResult::Ok);
    let due = h.m.next_expiry().unwrap();
    assert_eq!(due, h.order(1).deadline);
    h.tick(61);
    assert_eq!(h.order(1).state(), OrderState::Expired);
    assert_eq!(h.order(2).state(), OrderState::OnHold);
    h.tick(600);
    assert_eq!(h.order(2).state(), OrderState::Expired);
    assert_eq!(h.balance(AccountKind::Escrow, USD, 0), (0, 0, 0, 0), "the expired hold is released");
    assert_eq!(h.balance(AccountKind::BankOut, USD, 0).3, 10_000);
    h.tick(10_000);
    for id in [1, 2] {
        let t = &h.m.orders().get(id).unwrap().timeline;
        assert_eq!(t.iter().filter(|e| e.kind == book::EVENT_EXPIRE).count(), 1, "fires once");
    }
    assert_eq!(h.m.next_expiry(), None);
    assert_eq!(h.cmd(funds(1, 10_000)), OrderCommandResult::OrderIsExpired);
}

#[test]
fn a_rejected_ledger_step_burns_its_ids_and_a_retry_succeeds() {
    let mut h = H::new();
    to_approved(&mut h, 1);
    // Tamper: take the id the LockFx step would use next for a user transfer.
    let seq = h.order(1).transfer_seq;
    let squat = crate::records::Transfer {
        id: money::transfer_id(1, seq),
        debit_account_id: account_id(AccountKind::BankIn, USD, 0),
        credit_account_id: account_id(AccountKind::BankOut, USD, 0),
        amount: 1,
        ledger: USD,
        code: 1,
        ..Default::default()
    };
    assert!(h.apply(Operation::CreateTransfers, encode_all(&[squat])).is_empty());
    let l = lock(&h, 1);
    assert_eq!(h.cmd(l), OrderCommandResult::LedgerRejected);
    let o = h.order(1);
    assert_eq!(o.state(), OrderState::Approved);
    assert!(o.transfer_seq > seq);
    let last = h.m.orders().get(1).unwrap().timeline.last().unwrap().clone();
    assert!(last.reason.contains("transfer 0 of the step"), "{}", last.reason);
    let l = lock(&h, 1);
    assert_eq!(h.cmd(l), OrderCommandResult::Ok);
}

#[test]
fn orders_survive_a_snapshot_with_the_same_digest() {
    let mut h = H::new();
    to_approved(&mut h, 1);
    assert_eq!(h.create(new_order(2)), 0);
    let defer = OrderCommand { time: h.time + 5 * SEC, ..exec(2, CommandKind::Defer) };
    assert_eq!(h.cmd(defer), OrderCommandResult::Ok);
    assert_eq!(h.order(2).attempts, 1);
    let snap = h.m.snapshot();
    let stored = SnapshotChunks {
        header: snap.header(),
        sections: snap
            .sections()
            .iter()
            .map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect())
            .collect(),
    };
    let restored = Machine::restore(Limits::default(), stored).unwrap();
    assert_eq!(restored.digest(), h.m.digest());
    assert_eq!(restored.orders().get(1).unwrap().timeline, h.m.orders().get(1).unwrap().timeline);
    assert_eq!(restored.next_expiry(), h.m.next_expiry());
    restored.check_invariants_deep().unwrap();
}

#[test]
fn lists_by_state_and_by_change() {
    let mut h = H::new();
    for id in 1..=5 {
        assert_eq!(h.create(new_order(id)), 0);
    }
    assert_eq!(h.cmd(exec(3, CommandKind::FundsAwaited)), OrderCommandResult::Ok);
    let by_state =
        h.m.orders().list(&OrderFilter { state: OrderState::Created as u8, limit: 10, ..Default::default() });
    assert_eq!(by_state.iter().map(|o| o.id).collect::<Vec<_>>(), vec![1, 2, 4, 5]);
    let page = h.m.orders().list(&OrderFilter { state: 1, after_id: 2, limit: 1, ..Default::default() });
    assert_eq!(page[0].id, 4);
    let all = h.m.orders().list(&OrderFilter { limit: 3, after_id: 1, ..Default::default() });
    assert_eq!(all.iter().map(|o| o.id).collect::<Vec<_>>(), vec![2, 3, 4]);
    let feed = h.m.orders().list(&OrderFilter { changes: 1, after_seq: 4, limit: 10, ..Default::default() });
    assert_eq!(feed.iter().map(|o| o.id).collect::<Vec<_>>(), vec![5, 3], "3 changed last");
}

#[test]
fn creations_and_transitions_are_journaled_refusals_are_not() {
    use crate::events::{EventFilter, kind};
    let mut h = H::new();
    to_approved(&mut h, 1);
    // A refused command (payout before FX) changes nothing and is no event.
    assert_ne!(h.cmd(exec(1, CommandKind::SendPayout)), OrderCommandResult::Ok);
    let page = h.m.events_page(&EventFilter { limit: 1000, kinds: 1 << kind::ORDER, ..Default::default() });
    let mut rest = &page.body[8..];
    let mut states = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[20..24].try_into().unwrap()) as usize;
        let payload = &rest[24..24 + len];
        assert_eq!(u128::from_le_bytes(payload[..16].try_into().unwrap()), 1, "the order id leads");
        let timeline = TimelineEvent::decode_list(&[&1u32.to_le_bytes()[..], &payload[120..]].concat()).unwrap();
        states.push(OrderState::from_code(timeline[0].to).unwrap());
        rest = &rest[24 + len..];
    }
    use OrderState::*;
    assert_eq!(states, [Created, AwaitingFunds, FundsReceived, Screening, Approved]);
}

#[test]
fn the_summary_feed_carries_personal_data_only_in_the_states_asked_for() {
    let mut h = H::new();
    for id in 1..=3 {
        assert_eq!(h.create(new_order(id)), 0);
    }
    assert_eq!(h.cmd(exec(2, CommandKind::FundsAwaited)), OrderCommandResult::Ok);
    let filter = OrderFilter {
        changes: OrderFilter::CHANGES_SUMMARIES,
        after_seq: 1,
        limit: 10,
        pii_states: 1 << OrderState::AwaitingFunds as u8,
        ..Default::default()
    };
    let (body, count) = h.m.orders().encode_list(&filter);
    let feed = OrderChange::decode_feed(&body).unwrap();
    assert_eq!(count, feed.len());
    let ids: Vec<_> = feed.iter().map(|(c, pii)| (c.id, c.state().unwrap(), *pii)).collect();
    assert_eq!(ids, vec![(3, OrderState::Created, &b""[..]), (2, OrderState::AwaitingFunds, &b"xyz"[..])]);
    let (summary, order) = (feed[1].0, h.order(2));
    assert_eq!(summary, OrderChange::of(&order, 3));
    assert_eq!((summary.change_seq, summary.source_amount, summary.customer_id), (4, 10_000, 77));
    let (whole, count) =
        h.m.orders().encode_list(&OrderFilter { changes: OrderFilter::CHANGES_ORDERS, after_seq: 1, ..filter });
    assert_eq!((whole.len(), count), (2 * Order::SIZE, 2));
    assert_eq!(
        OrderChange::decode_feed(&body[..body.len() - 1]).unwrap_err().to_string(),
        "a feed reply ends inside personal data"
    );
}

#[test]
fn commands_change_orders_in_place_without_touching_an_earlier_snapshot() {
    let mut h = H::new();
    assert_eq!(h.create(new_order(1)), 0);
    let before = h.m.snapshot();
    let digest = before.digest();
    assert_eq!(h.cmd(exec(1, CommandKind::FundsAwaited)), OrderCommandResult::Ok);
    assert_eq!(h.cmd(exec(1, CommandKind::StartScreening)), OrderCommandResult::OrderIsAwaitingFunds);
    assert_eq!(before.digest(), digest, "the snapshot shares nothing that a command changed");
    assert_eq!(h.order(1).state(), OrderState::AwaitingFunds);
    assert_eq!(h.m.orders().get(1).unwrap().timeline.len(), 3, "a refusal is recorded too");
    h.tick(120);
    assert_eq!(h.order(1).state(), OrderState::Expired);
    assert_eq!(before.digest(), digest);
    h.m.orders().check_indexes().unwrap();
}

impl H {
    /// Applies one command as the HTTP edge does: enveloped with `key_id`.
    fn apply_as(&mut self, key_id: u64, operation: Operation, events: &[u8]) -> u32 {
        self.position += 1;
        self.time += SEC;
        let env = crate::command::Envelope {
            key_id,
            idempotency: None,
            retention_seconds: 60,
            idempotency_limit: 100,
            request_id: "r",
            route: "POST /v1/orders",
            idempotency_key: "",
        };
        let c = Command { operation, events };
        let mut out = self.m.apply_entry(self.position, self.time, &[LogCommand::Enveloped(env, c)]);
        self.m.check_invariants_deep().unwrap();
        out.pop().unwrap().1.first().map_or(0, |r| r.code)
    }

    fn review_as(&mut self, key_id: u64, id: u128, v: Verdict) -> OrderCommandResult {
        let c = OrderCommand { verdict: v as u8, ..OrderCommand::new(id, CommandKind::Review, Actor::Api) };
        OrderCommandResult::from_code(self.apply_as(key_id, Operation::OrderCommands, encode_all(&[c]))).unwrap()
    }

    /// Creates an order as `key_id` and drives it to `on_hold`.
    fn on_hold_created_by(&mut self, key_id: u64, e: OrderCreate) {
        assert_eq!(self.apply_as(key_id, Operation::CreateOrders, encode_all(&[e])), 0);
        assert_eq!(self.cmd(funds(e.id, 10_000)), OrderCommandResult::Ok);
        assert_eq!(self.cmd(exec(e.id, CommandKind::StartScreening)), OrderCommandResult::Ok);
        assert_eq!(self.cmd(verdict(e.id, CommandKind::ScreeningResult, Verdict::Review)), OrderCommandResult::Ok);
    }
}

#[test]
fn maker_checker_refuses_a_review_by_the_creating_key_in_apply() {
    let mut h = H::new();
    let checked = OrderCreate { flags: order_flags::MAKER_CHECKER, ..new_order(1) };
    h.on_hold_created_by(7, checked);
    assert_eq!(h.m.orders().get(1).unwrap().creator_key_id(), 7);
    for v in [Verdict::Pass, Verdict::Reject] {
        assert_eq!(h.review_as(7, 1, v), OrderCommandResult::MakerChecker);
    }
    let entry = h.m.orders().get(1).unwrap();
    assert_eq!(entry.order.state(), OrderState::OnHold, "a refused review moves nothing");
    let last = entry.timeline.last().unwrap();
    assert_eq!((last.key_id, last.result), (7, OrderCommandResult::MakerChecker.code()));
    // The creator survives a snapshot: a restored machine refuses the same.
    let snap = h.m.snapshot();
    let stored = SnapshotChunks {
        header: snap.header(),
        sections: snap
            .sections()
            .iter()
            .map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect())
            .collect(),
    };
    let mut restored =
        H { m: Machine::restore(Limits::default(), stored).unwrap(), position: h.position, time: h.time };
    assert_eq!(restored.review_as(7, 1, Verdict::Pass), OrderCommandResult::MakerChecker);
    assert_eq!(restored.review_as(8, 1, Verdict::Pass), OrderCommandResult::Ok, "another key may");
    assert_eq!(restored.order(1).state(), OrderState::Approved);
    // An order logged before the flag existed replays as it did then.
    h.on_hold_created_by(7, new_order(2));
    assert_eq!(h.review_as(7, 2, Verdict::Pass), OrderCommandResult::Ok);
}

#[path = "finals_tests.rs"]
mod finals_tests;

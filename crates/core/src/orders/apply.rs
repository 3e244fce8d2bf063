//! Applying order commands: the legal transitions, the money each one moves
//! through the ledger, and the compensations. Every transition and its
//! transfers happen in one step of one log entry: either both or neither.
//!
//! ```text
//! created ─funds_awaited→ awaiting_funds ─funds_received→ funds_received ─start_screening→ screening
//!   screening ─pass→ approved | ─review→ on_hold | ─reject→ rejected
//!   on_hold ─approve→ approved | ─reject→ rejected | deadline → expired
//!   approved ─lock_fx→ fx_locked ─send_payout→ payout_sent ─confirm→ completed | ─fail→ failed
//!   cancel: created, awaiting_funds → cancelled; funds_received … fx_locked → refunded
//!   deadline: created, awaiting_funds → expired
//! ```

use super::book::{EVENT_CREATE, EVENT_EXPIRE, OrderBook, OrderEntry, TimelineEvent};
use super::codes::{CreateOrderResult, OrderCommandResult};
use super::money::{self, AccountKind, Movement};
use super::records::{
    Actor, CommandKind, Order, OrderCommand, OrderCreate, OrderState, PII_SLOT, Verdict, order_flags,
};
use crate::codes::EventResult;
use crate::limits::REASON_MAX;
use crate::records::{Account, NANOS_PER_SECOND, Transfer, encode_all};
use crate::state::{Batch, StateMachine};
use bytemuck::Zeroable;

type C = OrderCommandResult;
type S = OrderState;

/// Who is applying, and when.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// The entry's time.
    pub now: u64,
    /// The entry's log position.
    pub position: u64,
    /// The API key of an HTTP command; 0 otherwise.
    pub key_id: u64,
    /// The command came through the HTTP API (an envelope).
    pub api: bool,
}

/// Creates one order (see `CreateOrderResult` for the checks, in order).
pub fn create(sm: &mut StateMachine, book: &mut OrderBook, e: &OrderCreate, ctx: &Ctx) -> CreateOrderResult {
    type R = CreateOrderResult;
    if let Err(code) = validate_create(e) {
        return code;
    }
    if let Some(existing) = book.get(e.id) {
        return if same_create(&existing.order, e) { R::Exists } else { R::ExistsWithDifferentFields };
    }
    if sm.ledger(e.source_ledger).is_none() {
        return R::SourceLedgerNotFound;
    }
    if sm.ledger(e.target_ledger).is_none() {
        return R::TargetLedgerNotFound;
    }
    if book.open_len() >= crate::limits::OPEN_ORDERS_MAX {
        return R::OrdersLimitReached;
    }
    if !ensure_accounts(sm, e.source_ledger, Some(e.customer_id)) || !ensure_accounts(sm, e.target_ledger, None) {
        return R::LedgerRejected;
    }
    let ts = sm.next_timestamp();
    let order = Order {
        id: e.id,
        customer_id: e.customer_id,
        source_amount: e.source_amount,
        fee_amount: e.fee_amount,
        created_at: ts,
        updated_at: ts,
        deadline: after_seconds(ctx.now, e.funds_timeout_seconds),
        payout_at: e.payout_at,
        source_ledger: e.source_ledger,
        target_ledger: e.target_ledger,
        funds_timeout_seconds: e.funds_timeout_seconds,
        review_timeout_seconds: e.review_timeout_seconds,
        flags: e.flags,
        state: S::Created as u8,
        pii_len: e.pii_len,
        pii: e.pii,
        ..Zeroable::zeroed()
    };
    let mut entry = OrderEntry { order, timeline: Vec::new(), dropped_events: 0 };
    entry.record(TimelineEvent {
        timestamp: ts,
        position: ctx.position,
        key_id: ctx.key_id,
        kind: EVENT_CREATE,
        actor: if ctx.api { Actor::Api } else { Actor::Executor } as u8,
        from: 0,
        to: S::Created as u8,
        result: 0,
        first_transfer_seq: 0,
        transfers: 0,
        reason: "".into(),
    });
    sm.record_order_event(entry.order.id, entry.timeline.len() - 1);
    book.put(entry, true);
    R::Ok
}

fn validate_create(e: &OrderCreate) -> Result<(), CreateOrderResult> {
    type R = CreateOrderResult;
    let pii_len = usize::from(e.pii_len);
    let checks = [
        (e.id == 0, R::IdMustNotBeZero),
        (e.id == u128::MAX, R::IdMustNotBeIntMax),
        (e.customer_id == 0, R::CustomerIdMustNotBeZero),
        (e.flags & !order_flags::ALL != 0, R::FlagsAreInvalid),
        (e.reserved0 != 0 || e.reserved != [0; 32], R::ReservedFieldMustBeZero),
        (e.source_amount == 0, R::SourceAmountMustNotBeZero),
        (e.fee_amount >= e.source_amount, R::FeeMustBeLessThanAmount),
        (e.funds_timeout_seconds == 0, R::FundsTimeoutMustNotBeZero),
        (e.review_timeout_seconds == 0, R::ReviewTimeoutMustNotBeZero),
        (
            pii_len == 0 || pii_len > PII_SLOT || e.pii[pii_len.min(PII_SLOT)..].iter().any(|&b| b != 0),
            R::PiiLengthInvalid,
        ),
    ];
    match checks.iter().find(|(failed, _)| *failed) {
        Some((_, code)) => Err(*code),
        None => Ok(()),
    }
}

/// Personal data is not compared: it is encrypted with a fresh nonce.
fn same_create(o: &Order, e: &OrderCreate) -> bool {
    o.customer_id == e.customer_id
        && o.source_amount == e.source_amount
        && o.fee_amount == e.fee_amount
        && o.payout_at == e.payout_at
        && o.source_ledger == e.source_ledger
        && o.target_ledger == e.target_ledger
        && o.funds_timeout_seconds == e.funds_timeout_seconds
        && o.review_timeout_seconds == e.review_timeout_seconds
        && o.flags == e.flags
}

/// Creates the order-flow accounts of `ledger` that do not exist yet.
fn ensure_accounts(sm: &mut StateMachine, ledger: u32, customer: Option<u128>) -> bool {
    let kinds = AccountKind::SYSTEM.iter().map(|k| (*k, 0)).chain(customer.map(|c| (AccountKind::Customer, c)));
    let missing: Vec<Account> =
        kinds.map(|(k, c)| money::account(k, ledger, c)).filter(|a| sm.account(a.id).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    let mut results = Vec::new();
    sm.execute_batch(Batch::Accounts(encode_all(&missing)), &mut results);
    results.is_empty()
}

fn after_seconds(now: u64, seconds: u32) -> u64 {
    now.saturating_add(u64::from(seconds).saturating_mul(NANOS_PER_SECOND))
}

/// Sets the order's fields after a legal step; the `Movement` is positioned
/// after the step's transfers (`next_seq() - 1` is the last one's sequence).
type Edit = fn(&mut Order, &OrderCommand, &Ctx, &Movement);

/// What a legal command does to an order.
struct Step {
    to: OrderState,
    movement: Option<Movement>,
    edit: Edit,
}

fn step(to: OrderState, movement: Option<Movement>, edit: Edit) -> Result<Step, OrderCommandResult> {
    Ok(Step { to, movement, edit })
}

/// Applies one order command (see `OrderCommandResult` for the checks).
pub fn command(sm: &mut StateMachine, book: &mut OrderBook, c: &OrderCommand, ctx: &Ctx) -> OrderCommandResult {
    if let Err(code) = validate_command(c, ctx) {
        return code;
    }
    let kind = CommandKind::from_code(c.kind).expect("validated");
    let actor = if ctx.api { Actor::Api } else { Actor::from_code(c.actor).expect("validated") };
    let reason = c.reason_str().expect("validated");
    // Open orders first: most commands are for them, and looking for a
    // final order may read the stored tables.
    if let Some(entry) = (!book.is_open(c.order_id)).then(|| book.get_final(c.order_id)).flatten() {
        // Frozen (see `finals`): refused as its terminal state refuses every
        // command, and not recorded on its timeline.
        let refused = plan(kind, &entry.order, c, ctx).err();
        debug_assert!(refused.is_some(), "invariant: no command moves a terminal order");
        return refused.unwrap_or(C::in_state(entry.order.state()));
    }
    let mut code = C::OrderNotFound;
    // In place: copying the entry would copy its whole timeline per command.
    book.update(c.order_id, |entry| {
        let planned = plan(kind, &entry.order, c, ctx).and_then(|step| maker_checker(kind, entry, ctx).map(|()| step));
        let result = match planned {
            Ok(step) => transition(sm, entry, step, c, ctx),
            Err(code) => Err((code, String::new())),
        };
        let from = entry.order.state;
        let (first, count) = result.as_ref().map(|(_, t)| *t).unwrap_or((0, 0));
        let (to, detail);
        (code, to, detail) = match result {
            Ok((to, _)) => (C::Ok, to as u8, String::new()),
            Err((refused, detail)) => (refused, from, detail),
        };
        let reason = if detail.is_empty() { reason.into() } else { detail.into_boxed_str() };
        let ts = sm.next_timestamp();
        entry.record(TimelineEvent {
            timestamp: ts,
            position: ctx.position,
            key_id: ctx.key_id,
            kind: c.kind,
            actor: actor as u8,
            from,
            to,
            result: code.code(),
            first_transfer_seq: first,
            transfers: count,
            reason,
        });
        if code == C::Ok {
            entry.order.state = to;
            entry.order.updated_at = ts;
        }
        if from != to {
            // Transitions are always kept on the timeline, so this is its slot.
            sm.record_order_event(entry.order.id, entry.timeline.len() - 1);
        }
        code == C::Ok
    });
    code
}

/// Maker-checker: on an order that asks for it, the API key that created it
/// may not review it. Key 0 (no API key) is never a maker: the executor and
/// the binary protocol do not review.
fn maker_checker(kind: CommandKind, entry: &OrderEntry, ctx: &Ctx) -> Result<(), OrderCommandResult> {
    let applies = kind == CommandKind::Review && entry.order.flags & order_flags::MAKER_CHECKER != 0;
    if applies && ctx.api && ctx.key_id != 0 && ctx.key_id == entry.creator_key_id() {
        return Err(C::MakerChecker);
    }
    Ok(())
}

fn validate_command(c: &OrderCommand, ctx: &Ctx) -> Result<(), OrderCommandResult> {
    let reason_len = usize::from(c.reason_len);
    let reason_ok = reason_len <= REASON_MAX
        && c.reason[reason_len.min(REASON_MAX)..].iter().all(|&b| b == 0)
        && c.reason_str().is_some();
    let actor_ok = if ctx.api {
        c.actor == 0 || c.actor == Actor::Api as u8
    } else {
        matches!(Actor::from_code(c.actor), Some(Actor::Executor | Actor::Bank))
    };
    let checks = [
        (c.order_id == 0, C::OrderIdMustNotBeZero),
        (CommandKind::from_code(c.kind).is_none(), C::KindInvalid),
        (c.reserved0 != 0 || c.reserved != [0; 16], C::ReservedFieldMustBeZero),
        (!reason_ok, C::ReasonInvalid),
        (!actor_ok, C::ActorInvalid),
    ];
    match checks.iter().find(|(failed, _)| *failed) {
        Some((_, code)) => Err(*code),
        None => Ok(()),
    }
}

/// Decides whether `kind` is legal for the order now, and what it does.
fn plan(kind: CommandKind, o: &Order, c: &OrderCommand, ctx: &Ctx) -> Result<Step, OrderCommandResult> {
    let state = o.state();
    let refuse = || Err(C::in_state(state));
    match kind {
        CommandKind::Defer if !state.is_terminal() => step(state, None, |o, c, _, _| {
            o.retry_at = c.time;
            o.attempts = o.attempts.saturating_add(1);
        }),
        CommandKind::FundsAwaited if state == S::Created => step(S::AwaitingFunds, None, set_reference),
        CommandKind::FundsReceived if matches!(state, S::Created | S::AwaitingFunds) => {
            if c.amount != o.source_amount {
                return Err(C::AmountMustEqualOrder);
            }
            step(S::FundsReceived, Some(receive_and_hold(o)), |o, c, ctx, m| {
                o.hold_seq = m.next_seq() - 1;
                o.deadline = 0;
                set_reference(o, c, ctx, m);
            })
        }
        CommandKind::StartScreening if state == S::FundsReceived => step(S::Screening, None, no_edit),
        CommandKind::ScreeningResult if state == S::Screening => match Verdict::from_code(c.verdict) {
            Some(Verdict::Pass) => step(S::Approved, None, no_edit),
            Some(Verdict::Review) => step(S::OnHold, None, |o, _, ctx, _| {
                o.deadline = after_seconds(ctx.now, o.review_timeout_seconds);
            }),
            Some(Verdict::Reject) => step(S::Rejected, Some(release_and_refund(o)), clear_deadline),
            None => Err(C::VerdictInvalid),
        },
        CommandKind::Review if state == S::OnHold => match Verdict::from_code(c.verdict) {
            Some(Verdict::Pass) => step(S::Approved, None, clear_deadline),
            Some(Verdict::Reject) => step(S::Rejected, Some(release_and_refund(o)), clear_deadline),
            _ => Err(C::VerdictInvalid),
        },
        CommandKind::LockFx if state == S::Approved => {
            let target = lock_quote(o, c, ctx)?;
            step(S::FxLocked, Some(exchange(o, target)), |o, c, _, _| {
                o.rate_ppb = c.rate_ppb;
                o.quote_id = c.quote_id;
                o.target_amount = money::convert(o.source_amount - o.fee_amount, c.rate_ppb)
                    .expect("invariant: checked by lock_quote in the same step");
            })
        }
        CommandKind::SendPayout if state == S::FxLocked => {
            if o.payout_at > ctx.now {
                return Err(C::PayoutNotDue);
            }
            step(S::PayoutSent, Some(reserve_payout(o)), |o, _, _, m| o.payout_seq = m.next_seq() - 1)
        }
        CommandKind::ConfirmPayout if state == S::PayoutSent => {
            let mut m = movement(o, kind);
            m.settle(o.payout_seq, true);
            step(S::Completed, Some(m), set_reference)
        }
        CommandKind::FailPayout if state == S::PayoutSent => {
            let refund_fee = o.flags & order_flags::REFUND_FEE_ON_FAILURE != 0;
            step(S::Failed, Some(unwind_payout(o, refund_fee)), no_edit)
        }
        CommandKind::Cancel => match state {
            S::Created | S::AwaitingFunds => step(S::Cancelled, None, clear_deadline),
            s if s.holds_funds() => step(S::Refunded, Some(release_and_refund(o)), clear_deadline),
            S::FxLocked => {
                let refund_fee = o.flags & order_flags::REFUND_FEE_ON_CANCEL != 0;
                step(S::Refunded, Some(unwind_exchange(o, movement(o, kind), refund_fee)), no_edit)
            }
            _ => refuse(),
        },
        _ => refuse(),
    }
}

fn no_edit(_: &mut Order, _: &OrderCommand, _: &Ctx, _: &Movement) {}

fn clear_deadline(o: &mut Order, _: &OrderCommand, _: &Ctx, _: &Movement) {
    o.deadline = 0;
}

fn set_reference(o: &mut Order, c: &OrderCommand, _: &Ctx, _: &Movement) {
    if c.reference != [0; crate::limits::REFERENCE_MAX] {
        o.reference = c.reference;
    }
}

/// The converted amount for a `LockFx`, or why the quote cannot be used.
fn lock_quote(o: &Order, c: &OrderCommand, ctx: &Ctx) -> Result<u128, OrderCommandResult> {
    if c.rate_ppb == 0 {
        return Err(C::RateMustNotBeZero);
    }
    if c.time <= ctx.now {
        return Err(C::QuoteExpired);
    }
    let target = money::convert(o.source_amount - o.fee_amount, c.rate_ppb).ok_or(C::TargetAmountOverflows)?;
    if target == 0 {
        return Err(C::TargetAmountMustNotBeZero);
    }
    Ok(target)
}

/// Applies a legal step: the transfers first (all or nothing), then the
/// order's fields. Returns the new state and the transfers made.
fn transition(
    sm: &mut StateMachine,
    entry: &mut OrderEntry,
    step: Step,
    c: &OrderCommand,
    ctx: &Ctx,
) -> Result<(OrderState, (u32, u8)), (OrderCommandResult, String)> {
    let o = &mut entry.order;
    let empty = Movement::new(o.id, o.transfer_seq, 0);
    let m = step.movement.unwrap_or(empty);
    let first = o.transfer_seq;
    let count = m.transfers.len();
    let after = m.next_seq();
    // Ids are burned even by a rejected attempt: a retry takes new ones.
    o.transfer_seq = after;
    let edit_view = Movement::new(o.id, after, 0);
    if count > 0 {
        let transfers = m.linked();
        if let Err(detail) = execute_transfers(sm, &transfers) {
            // The detail is stored as the timeline event's reason.
            return Err((C::LedgerRejected, detail.to_string()));
        }
    }
    if c.kind != CommandKind::Defer as u8 {
        o.retry_at = 0;
        o.attempts = 0;
    }
    (step.edit)(o, c, ctx, &edit_view);
    Ok((step.to, (first, count as u8)))
}

/// A transfer of an order step that the ledger refused.
#[derive(Debug, thiserror::Error)]
#[error("transfer {index} of the step: {code}")]
struct StepTransferFailed {
    index: u32,
    code: &'static str,
}

/// Runs one linked chain; on failure names the transfer that failed.
fn execute_transfers(sm: &mut StateMachine, transfers: &[Transfer]) -> Result<(), StepTransferFailed> {
    let mut results: Vec<EventResult> = Vec::new();
    sm.execute_batch(Batch::Transfers(encode_all(transfers)), &mut results);
    let linked_failed = crate::codes::CreateTransferResult::LinkedEventFailed.code();
    match results.iter().find(|r| r.code != linked_failed).or(results.first()) {
        None => Ok(()),
        Some(r) => {
            let code = crate::codes::CreateTransferResult::from_code(r.code).map(|c| c.name()).unwrap_or("unknown");
            Err(StepTransferFailed { index: r.index, code })
        }
    }
}

/// Transfer `code` of an order step: 9100 + the command kind (9112 expiry).
fn movement(o: &Order, kind: CommandKind) -> Movement {
    Movement::new(o.id, o.transfer_seq, 9100 + kind as u16)
}

fn acct(kind: AccountKind, ledger: u32) -> u128 {
    money::account_id(kind, ledger, 0)
}

fn customer(o: &Order) -> u128 {
    money::account_id(AccountKind::Customer, o.source_ledger, o.customer_id)
}

/// Funds arrive from the bank to the customer and are held in escrow.
fn receive_and_hold(o: &Order) -> Movement {
    let (s, a) = (o.source_ledger, o.source_amount);
    let mut m = movement(o, CommandKind::FundsReceived);
    m.transfer(s, acct(AccountKind::BankIn, s), customer(o), a, false);
    m.transfer(s, customer(o), acct(AccountKind::Escrow, s), a, true);
    m
}

/// Compensation before FX: void the hold, return the money to the bank.
fn release_and_refund(o: &Order) -> Movement {
    let s = o.source_ledger;
    let mut m = movement(o, CommandKind::Cancel);
    m.settle(o.hold_seq, false);
    m.transfer(s, customer(o), acct(AccountKind::BankOut, s), o.source_amount, false);
    m
}

/// FX at the locked rate: post the hold, take the fee, and move the net
/// through both liquidity accounts into payout clearing.
fn exchange(o: &Order, target: u128) -> Movement {
    let (s, t) = (o.source_ledger, o.target_ledger);
    let net = o.source_amount - o.fee_amount;
    let mut m = movement(o, CommandKind::LockFx);
    m.settle(o.hold_seq, true);
    if o.fee_amount > 0 {
        m.transfer(s, acct(AccountKind::Escrow, s), acct(AccountKind::Fees, s), o.fee_amount, false);
    }
    m.transfer(s, acct(AccountKind::Escrow, s), acct(AccountKind::Liquidity, s), net, false);
    m.transfer(t, acct(AccountKind::Liquidity, t), acct(AccountKind::PayoutClearing, t), target, false);
    m
}

fn reserve_payout(o: &Order) -> Movement {
    let t = o.target_ledger;
    let mut m = movement(o, CommandKind::SendPayout);
    m.transfer(t, acct(AccountKind::PayoutClearing, t), acct(AccountKind::Rail, t), o.target_amount, true);
    m
}

/// Compensation after a failed payout: void it, then undo the exchange.
fn unwind_payout(o: &Order, refund_fee: bool) -> Movement {
    let mut m = movement(o, CommandKind::FailPayout);
    m.settle(o.payout_seq, false);
    unwind_exchange(o, m, refund_fee)
}

/// Compensation of the exchange, in reverse order: converted money back to
/// liquidity, net (and the fee, per policy) back to escrow, then to the
/// customer, then back to the sender's bank.
fn unwind_exchange(o: &Order, mut m: Movement, refund_fee: bool) -> Movement {
    let (s, t) = (o.source_ledger, o.target_ledger);
    let net = o.source_amount - o.fee_amount;
    m.transfer(t, acct(AccountKind::PayoutClearing, t), acct(AccountKind::Liquidity, t), o.target_amount, false);
    m.transfer(s, acct(AccountKind::Liquidity, s), acct(AccountKind::Escrow, s), net, false);
    let mut refund = net;
    if refund_fee && o.fee_amount > 0 {
        m.transfer(s, acct(AccountKind::Fees, s), acct(AccountKind::Escrow, s), o.fee_amount, false);
        refund = o.source_amount;
    }
    m.transfer(s, acct(AccountKind::Escrow, s), customer(o), refund, false);
    m.transfer(s, customer(o), acct(AccountKind::BankOut, s), refund, false);
    m
}

/// Fires the deadlines due by `ctx.now` (at most `max`): orders still
/// waiting for funds expire; orders on hold expire and release their hold.
pub fn expire_due(sm: &mut StateMachine, book: &mut OrderBook, ctx: &Ctx, max: usize) {
    for id in book.due(ctx.now, max) {
        let updated = book.update(id, |entry| {
            let from = entry.order.state();
            let (movement, first) = match from {
                S::Created | S::AwaitingFunds => (None, entry.order.transfer_seq),
                S::OnHold => (Some(release_and_refund(&entry.order)), entry.order.transfer_seq),
                other => panic!("invariant: order {id} in state {} has a deadline", other.name()),
            };
            let mut count = 0;
            if let Some(m) = movement {
                entry.order.transfer_seq = m.next_seq();
                count = m.transfers.len();
                // Voiding our own hold and returning exactly what it held cannot
                // fail unless the order-flow accounts were tampered with.
                if let Err(e) = execute_transfers(sm, &m.linked()) {
                    panic!("invariant: releasing order {id}'s hold failed: {e}");
                }
            }
            let ts = sm.next_timestamp();
            let o = &mut entry.order;
            o.state = S::Expired as u8;
            o.deadline = 0;
            o.retry_at = 0;
            o.updated_at = ts;
            entry.record(TimelineEvent {
                timestamp: ts,
                position: ctx.position,
                key_id: 0,
                kind: EVENT_EXPIRE,
                actor: Actor::Timer as u8,
                from: from as u8,
                to: S::Expired as u8,
                result: 0,
                first_transfer_seq: first,
                transfers: count as u8,
                reason: if from == S::OnHold { "review deadline passed" } else { "funds deadline passed" }.into(),
            });
            sm.record_order_event(id, entry.timeline.len() - 1);
            true
        });
        assert!(updated, "invariant: the deadline index names stored orders");
    }
}

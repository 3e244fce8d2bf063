//! Cross-checks between orders and the ledger, run by `bursar verify` and
//! after every entry in debug builds: the order-flow accounts hold exactly
//! what the orders' states say they should.

use super::book::OrderBook;
use super::money::{AccountKind, account_id};
use super::records::OrderState;
use crate::error::InvariantError;
use crate::state::StateMachine;
use std::collections::BTreeMap;

#[derive(Default)]
struct Expected {
    /// Source ledger: funds held in escrow (pending).
    held: u128,
    /// Target ledger: converted money in payout clearing (posted, net).
    clearing: u128,
    /// Target ledger: payouts reserved from clearing (pending).
    paying: u128,
}

pub fn check(sm: &StateMachine, book: &OrderBook) -> Result<(), InvariantError> {
    book.check_indexes()?;
    let mut expected: BTreeMap<u32, Expected> = BTreeMap::new();
    // Final orders hold no money: only open ones are counted.
    for e in book.iter_open() {
        let o = &e.order;
        let state = o.state();
        if state.holds_funds() {
            add(&mut expected.entry(o.source_ledger).or_default().held, o.source_amount)?;
        }
        if matches!(state, OrderState::FxLocked | OrderState::PayoutSent) {
            add(&mut expected.entry(o.target_ledger).or_default().clearing, o.target_amount)?;
        }
        if state == OrderState::PayoutSent {
            add(&mut expected.entry(o.target_ledger).or_default().paying, o.target_amount)?;
        }
        if o.deadline != 0 && !matches!(state, OrderState::Created | OrderState::AwaitingFunds | OrderState::OnHold) {
            return Err(InvariantError::UnexpectedDeadline { order: o.id, state: state.name() });
        }
    }
    let ledgers: Vec<u32> = sm.ledger_totals().map(|(l, _)| l.id).collect();
    for ledger in ledgers {
        let want = expected.remove(&ledger).unwrap_or_default();
        let escrow = sm.account(account_id(AccountKind::Escrow, ledger, 0));
        let held = escrow.map_or(0, |a| a.credits_pending.wrapping_sub(a.debits_pending));
        if held != want.held {
            return Err(InvariantError::Escrow { ledger, held, expected: want.held });
        }
        let clearing = sm.account(account_id(AccountKind::PayoutClearing, ledger, 0));
        let net = clearing.map_or(0, |a| a.credits_posted.wrapping_sub(a.debits_posted));
        let paying = clearing.map_or(0, |a| a.debits_pending);
        if net != want.clearing || paying != want.paying {
            return Err(InvariantError::Clearing {
                ledger,
                net,
                paying,
                want_net: want.clearing,
                want_paying: want.paying,
            });
        }
    }
    if let Some(ledger) = expected.keys().next() {
        return Err(InvariantError::OrdersOnUnknownLedger { ledger: *ledger });
    }
    Ok(())
}

fn add(sum: &mut u128, v: u128) -> Result<(), InvariantError> {
    *sum = sum.checked_add(v).ok_or(InvariantError::OrderAmountsOverflow)?;
    Ok(())
}

//! The ledger's invariants. The cheap ones are asserted after every entry in
//! every build; `check_invariants` recomputes everything from the accounts
//! and transfers (after every entry in debug builds, and in `bursar verify`).

use super::{LedgerTotals, PendingState, StateMachine};
use crate::error::InvariantError as E;
use crate::records::{account_flags as AF, transfer_flags as F};
use std::collections::BTreeMap;

impl StateMachine {
    /// Double entry per ledger: total debits equal total credits, pending and
    /// posted separately. O(ledgers).
    pub(super) fn assert_totals_balance(&self) {
        for (ledger, t) in &self.totals {
            assert_eq!(t.debits_pending, t.credits_pending, "ledger {ledger}: pending debits and credits differ");
            assert_eq!(t.debits_posted, t.credits_posted, "ledger {ledger}: posted debits and credits differ");
        }
    }

    /// Recomputes every invariant from scratch. O(accounts + live pending
    /// transfers).
    pub fn check_invariants(&self) -> Result<(), E> {
        self.check_totals()?;
        self.check_accounts()?;
        self.check_pending()
    }

    /// Everything, including checks that scan every transfer.
    pub fn check_invariants_deep(&self) -> Result<(), E> {
        self.check_invariants()?;
        self.check_transfer_states()
    }

    fn check_totals(&self) -> Result<(), E> {
        let mut sums: BTreeMap<u32, LedgerTotals> =
            self.ledgers.keys().map(|id| (*id, LedgerTotals::default())).collect();
        for a in self.accounts.iter() {
            let s = sums.get_mut(&a.ledger).ok_or(E::AccountOnUnknownLedger { account: a.id, ledger: a.ledger })?;
            s.debits_pending = s.debits_pending.plus(a.debits_pending);
            s.debits_posted = s.debits_posted.plus(a.debits_posted);
            s.credits_pending = s.credits_pending.plus(a.credits_pending);
            s.credits_posted = s.credits_posted.plus(a.credits_posted);
            s.accounts += 1;
        }
        for (id, s) in &sums {
            let kept = self.totals.get(id).ok_or(E::NoTotals { ledger: *id })?;
            if s != kept {
                return Err(E::TotalsDiffer { ledger: *id, recomputed: format!("{s:?}"), kept: format!("{kept:?}") });
            }
            if s.debits_pending != s.credits_pending || s.debits_posted != s.credits_posted {
                return Err(E::Unbalanced { ledger: *id, totals: format!("{s:?}") });
            }
        }
        if self.totals.len() != sums.len() {
            return Err(E::TotalsWithoutLedger);
        }
        Ok(())
    }

    fn check_accounts(&self) -> Result<(), E> {
        for a in self.accounts.iter() {
            let debits = a.debits_pending.checked_add(a.debits_posted);
            let credits = a.credits_pending.checked_add(a.credits_posted);
            let (Some(debits), Some(credits)) = (debits, credits) else {
                return Err(E::AccountOverflows { account: a.id });
            };
            if a.has(AF::DEBITS_MUST_NOT_EXCEED_CREDITS) && debits > a.credits_posted {
                return Err(E::DebitsExceedCredits { account: a.id, debits, credits_posted: a.credits_posted });
            }
            if a.has(AF::CREDITS_MUST_NOT_EXCEED_DEBITS) && credits > a.debits_posted {
                return Err(E::CreditsExceedDebits { account: a.id, credits, debits_posted: a.debits_posted });
            }
        }
        if self.account_transfers.accounts() != self.accounts.len()
            || self.account_history.accounts() != self.accounts.len()
        {
            return Err(E::AccountIndexes);
        }
        Ok(())
    }

    /// Pending balances equal the sums of live pending transfers, and the
    /// expiry schedule matches them.
    fn check_pending(&self) -> Result<(), E> {
        let mut debits = vec![0u128; self.accounts.len()];
        let mut credits = vec![0u128; self.accounts.len()];
        let mut scheduled = 0;
        for &p in &self.live_pending {
            let t = self.transfers.get(p as usize);
            if self.state_of(p) != PendingState::Pending || !t.has(F::PENDING) {
                return Err(E::NotLivePending { transfer: t.id });
            }
            if t.timeout != 0 {
                scheduled += 1;
                if !self.expiries.contains(&(super::transfers::expiry_of(&t), p)) {
                    return Err(E::NotScheduled { transfer: t.id });
                }
            }
            let dr = self
                .find_account(t.debit_account_id)
                .ok_or(E::PendingUnknownAccount { transfer: t.id, side: "debit" })?;
            let cr = self
                .find_account(t.credit_account_id)
                .ok_or(E::PendingUnknownAccount { transfer: t.id, side: "credit" })?;
            debits[dr as usize] = debits[dr as usize].checked_add(t.amount).ok_or(E::PendingSumOverflows)?;
            credits[cr as usize] = credits[cr as usize].checked_add(t.amount).ok_or(E::PendingSumOverflows)?;
        }
        if scheduled != self.expiries.len() {
            return Err(E::Expiries { scheduled: self.expiries.len(), expected: scheduled });
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if a.debits_pending != debits[i] || a.credits_pending != credits[i] {
                return Err(E::PendingBalances {
                    account: a.id,
                    debits: a.debits_pending,
                    credits: a.credits_pending,
                    want_debits: debits[i],
                    want_credits: credits[i],
                });
            }
        }
        Ok(())
    }

    /// Every transfer agrees with its pending state, and the live pending
    /// set counts every pending state (one byte each, all of them).
    fn check_transfer_states(&self) -> Result<(), E> {
        self.check_transfers_from(0)?;
        let live = self.transfer_states.iter().filter(|s| *s == PendingState::Pending as u8).count();
        if live != self.live_pending.len() {
            return Err(E::LiveCount { live, listed: self.live_pending.len() });
        }
        Ok(())
    }

    /// Transfers from position `start` on are in time order and agree with
    /// their pending states. (A restore builds the live pending set from
    /// the states, so it needs no count.)
    pub(super) fn check_transfers_from(&self, start: u64) -> Result<(), E> {
        if self.transfer_states.len() != self.transfers.len() {
            return Err(E::PendingStates);
        }
        let mut last = if start == 0 { 0 } else { self.transfers.get(start as usize - 1).timestamp };
        for (t, p) in self.transfers.iter_from(start as usize).zip(start..) {
            if t.timestamp <= last {
                return Err(E::TimestampOrder { transfer: t.id, timestamp: t.timestamp, previous: last });
            }
            last = t.timestamp;
            let state = self.state_of(p);
            if (state == PendingState::None) == t.has(F::PENDING) {
                return Err(E::PendingFlag { transfer: t.id, state: format!("{state:?}") });
            }
        }
        Ok(())
    }
}

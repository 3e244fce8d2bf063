//! Creating transfers: plain, pending, post-pending and void-pending.

use super::undo::Undo;
use super::{PendingState, StateMachine};
use crate::codes::CreateTransferResult as R;
use crate::records::{Account, FailedTransfer, NANOS_PER_SECOND, Transfer, account_flags as AF, transfer_flags as F};

impl StateMachine {
    /// Checks in the order of `CreateTransferResult`.
    pub(super) fn create_transfer(&mut self, t: &Transfer, timestamp: u64) -> R {
        if let Err(code) = validate_transfer(t) {
            return code;
        }
        if let Some(position) = self.find_transfer(t.id) {
            return self.transfer_exists(t, &self.transfers.get(position as usize));
        }
        if self.find_failed(t.id).is_some() {
            return R::IdAlreadyFailed;
        }
        if t.has(F::POST_PENDING) || t.has(F::VOID_PENDING) {
            self.settle_pending(t, timestamp)
        } else {
            self.create_new(t, timestamp)
        }
    }

    /// A plain or pending transfer.
    fn create_new(&mut self, t: &Transfer, timestamp: u64) -> R {
        let Some(dr_pos) = self.find_account(t.debit_account_id) else {
            return R::DebitAccountNotFound;
        };
        let Some(cr_pos) = self.find_account(t.credit_account_id) else {
            return R::CreditAccountNotFound;
        };
        let dr = self.accounts.get(dr_pos as usize);
        let cr = self.accounts.get(cr_pos as usize);
        if dr.ledger != cr.ledger {
            return R::AccountsMustHaveTheSameLedger;
        }
        if t.ledger != dr.ledger {
            return R::TransferMustHaveTheSameLedgerAsAccounts;
        }
        if dr.has(AF::CLOSED) {
            return R::DebitAccountClosed;
        }
        if cr.has(AF::CLOSED) {
            return R::CreditAccountClosed;
        }
        let amount = balanced_amount(t, &dr, &cr);
        let pending = t.has(F::PENDING);
        if let Err(code) = check_new_balances(&dr, &cr, amount, pending) {
            return code;
        }
        let expires_at = match pending_expiry(t.timeout, timestamp, pending) {
            Ok(e) => e,
            Err(code) => return code,
        };
        if dr.has(AF::DEBITS_MUST_NOT_EXCEED_CREDITS) && total_debits(&dr) + amount > dr.credits_posted {
            return R::ExceedsCredits;
        }
        if cr.has(AF::CREDITS_MUST_NOT_EXCEED_DEBITS) && total_credits(&cr) + amount > cr.debits_posted {
            return R::ExceedsDebits;
        }
        if self.transfers.len() >= self.limits.transfers {
            return R::TransfersLimitReached;
        }

        let stored = Transfer { amount, timestamp, flags: t.flags & !F::LINKED, ..*t };
        let state = if pending { PendingState::Pending } else { PendingState::None };
        let position = self.push_transfer(stored, state, dr_pos, cr_pos);
        let (mut dr, mut cr) = (dr, cr);
        if pending {
            dr.debits_pending += amount;
            cr.credits_pending += amount;
            self.add_live_pending(position, expires_at);
            if t.has(F::CLOSING_DEBIT) {
                dr.flags |= AF::CLOSED;
            }
            if t.has(F::CLOSING_CREDIT) {
                cr.flags |= AF::CLOSED;
            }
        } else {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        }
        self.write_account(dr_pos, dr);
        self.write_account(cr_pos, cr);
        let totals = self.totals_mut(dr.ledger);
        if pending {
            totals.debits_pending = totals.debits_pending.plus(amount);
            totals.credits_pending = totals.credits_pending.plus(amount);
        } else {
            totals.debits_posted = totals.debits_posted.plus(amount);
            totals.credits_posted = totals.credits_posted.plus(amount);
        }
        self.record_history(dr_pos, timestamp);
        self.record_history(cr_pos, timestamp);
        R::Ok
    }

    /// Posts or voids a pending transfer.
    fn settle_pending(&mut self, t: &Transfer, timestamp: u64) -> R {
        let Some(p_pos) = self.find_transfer(t.pending_id) else {
            return R::PendingTransferNotFound;
        };
        let p = self.transfers.get(p_pos as usize);
        if !p.has(F::PENDING) {
            return R::PendingTransferNotPending;
        }
        let mismatches = [
            (
                t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id,
                R::PendingTransferHasDifferentDebitAccountId,
            ),
            (
                t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id,
                R::PendingTransferHasDifferentCreditAccountId,
            ),
            (t.ledger != 0 && t.ledger != p.ledger, R::PendingTransferHasDifferentLedger),
            (t.code != 0 && t.code != p.code, R::PendingTransferHasDifferentCode),
        ];
        if let Some((_, code)) = mismatches.iter().find(|(m, _)| *m) {
            return *code;
        }
        let post = t.has(F::POST_PENDING);
        let amount = if post {
            let amount = if t.amount == u128::MAX { p.amount } else { t.amount };
            if amount > p.amount {
                return R::ExceedsPendingTransferAmount;
            }
            amount
        } else {
            if t.amount != 0 && t.amount != u128::MAX && t.amount != p.amount {
                return R::PendingTransferHasDifferentAmount;
            }
            p.amount
        };
        match self.state_of(p_pos) {
            PendingState::Posted => return R::PendingTransferAlreadyPosted,
            PendingState::Voided => return R::PendingTransferAlreadyVoided,
            PendingState::Expired => return R::PendingTransferExpired,
            PendingState::Pending => {}
            PendingState::None => {
                unreachable!("invariant: a transfer with the pending flag has a pending state")
            }
        }
        if p.timeout != 0 && expiry_of(&p) <= timestamp {
            // Due but not swept yet (sweeps are bounded per entry).
            return R::PendingTransferExpired;
        }
        let (dr_pos, mut dr, cr_pos, mut cr) = self.accounts_of(&p);
        if post {
            if dr.debits_posted.checked_add(amount).is_none() {
                return R::OverflowsDebitsPosted;
            }
            if cr.credits_posted.checked_add(amount).is_none() {
                return R::OverflowsCreditsPosted;
            }
        }
        if self.transfers.len() >= self.limits.transfers {
            return R::TransfersLimitReached;
        }

        let stored = Transfer {
            id: t.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: t.pending_id,
            user_data_128: if t.user_data_128 != 0 { t.user_data_128 } else { p.user_data_128 },
            user_data_64: if t.user_data_64 != 0 { t.user_data_64 } else { p.user_data_64 },
            user_data_32: if t.user_data_32 != 0 { t.user_data_32 } else { p.user_data_32 },
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: t.flags & !F::LINKED,
            timestamp,
        };
        self.push_transfer(stored, PendingState::None, dr_pos, cr_pos);
        self.release_pending(
            p_pos,
            &p,
            &mut dr,
            &mut cr,
            if post { PendingState::Posted } else { PendingState::Voided },
        );
        if post {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
            let totals = self.totals_mut(p.ledger);
            totals.debits_posted = totals.debits_posted.plus(amount);
            totals.credits_posted = totals.credits_posted.plus(amount);
        }
        self.write_account(dr_pos, dr);
        self.write_account(cr_pos, cr);
        self.record_history(dr_pos, timestamp);
        self.record_history(cr_pos, timestamp);
        R::Ok
    }

    /// The positions and current records of a stored transfer's accounts.
    pub(super) fn accounts_of(&self, t: &Transfer) -> (u32, Account, u32, Account) {
        let dr = self.find_account(t.debit_account_id).expect("invariant: a stored transfer's debit account exists");
        let cr = self.find_account(t.credit_account_id).expect("invariant: a stored transfer's credit account exists");
        (dr, self.accounts.get(dr as usize), cr, self.accounts.get(cr as usize))
    }

    /// Takes a live pending transfer's amount out of the pending balances and
    /// ledger totals and marks it settled. Voiding or expiry of a closing
    /// transfer reopens the accounts it closed; posting keeps them closed.
    pub(super) fn release_pending(
        &mut self,
        p_pos: u64,
        p: &Transfer,
        dr: &mut Account,
        cr: &mut Account,
        outcome: PendingState,
    ) {
        dr.debits_pending = dr
            .debits_pending
            .checked_sub(p.amount)
            .expect("invariant: debits_pending covers every live pending transfer");
        cr.credits_pending = cr
            .credits_pending
            .checked_sub(p.amount)
            .expect("invariant: credits_pending covers every live pending transfer");
        if outcome != PendingState::Posted {
            if p.has(F::CLOSING_DEBIT) {
                dr.flags &= !AF::CLOSED;
            }
            if p.has(F::CLOSING_CREDIT) {
                cr.flags &= !AF::CLOSED;
            }
        }
        let totals = self.totals_mut(p.ledger);
        totals.debits_pending = totals.debits_pending.minus(p.amount);
        totals.credits_pending = totals.credits_pending.minus(p.amount);
        self.set_transfer_state(p_pos, outcome);
        self.remove_live_pending(p_pos, p);
    }

    fn push_transfer(&mut self, t: Transfer, state: PendingState, dr_pos: u32, cr_pos: u32) -> u64 {
        let position = self.transfers.push(t) as u64;
        self.transfer_states.push(state as u8);
        self.transfer_index.insert(t.id, position);
        self.account_transfers.push(dr_pos, position);
        self.account_transfers.push(cr_pos, position);
        if self.journaling {
            self.undo.push(Undo::TransferCreated);
        }
        let kind = if t.has(F::PENDING) {
            crate::events::kind::TRANSFER_PENDING
        } else if t.has(F::VOID_PENDING) {
            crate::events::kind::TRANSFER_VOIDED
        } else {
            crate::events::kind::TRANSFER_POSTED
        };
        self.record_event(kind, position, 0);
        position
    }

    fn add_live_pending(&mut self, position: u64, expires_at: Option<u64>) {
        self.live_pending.insert(position);
        if self.journaling {
            self.undo.push(Undo::LivePendingAdded { position });
        }
        if let Some(at) = expires_at {
            self.expiries.insert((at, position));
            if self.journaling {
                self.undo.push(Undo::ExpiryAdded { key: (at, position) });
            }
        }
    }

    fn remove_live_pending(&mut self, position: u64, p: &Transfer) {
        assert!(self.live_pending.remove(&position), "invariant: a settled transfer was live");
        if self.journaling {
            self.undo.push(Undo::LivePendingRemoved { position });
        }
        if p.timeout != 0 {
            let key = (expiry_of(p), position);
            assert!(self.expiries.remove(&key), "invariant: a live pending transfer with a timeout is scheduled");
            if self.journaling {
                self.undo.push(Undo::ExpiryRemoved { key });
            }
        }
    }

    /// Remembers a transfer id rejected for a state-dependent reason.
    pub(super) fn record_failed_transfer(&mut self, t: &Transfer, timestamp: u64, code: u32) {
        let result = R::from_code(code).expect("invariant: create_transfer returns known codes");
        if !result.burns_id() || self.find_failed(t.id).is_some() {
            return;
        }
        debug_assert!(!self.journaling, "failures are recorded after the chain rolled back");
        let position = self.failed.push(FailedTransfer { id: t.id, timestamp, code, reserved: 0 }) as u64;
        self.failed_index.insert(t.id, position);
    }

    /// Compares a re-submitted transfer with the stored one. For post and
    /// void, zero fields mean "as the pending transfer" and match.
    fn transfer_exists(&self, t: &Transfer, e: &Transfer) -> R {
        if t.flags & !F::LINKED != e.flags {
            return R::ExistsWithDifferentFlags;
        }
        if t.pending_id != e.pending_id {
            return R::ExistsWithDifferentPendingId;
        }
        if t.timeout != e.timeout {
            return R::ExistsWithDifferentTimeout;
        }
        let settle = t.has(F::POST_PENDING) || t.has(F::VOID_PENDING);
        let differs = |given: u128, stored: u128| {
            if settle { given != 0 && given != stored } else { given != stored }
        };
        if differs(t.debit_account_id, e.debit_account_id) {
            return R::ExistsWithDifferentDebitAccountId;
        }
        if differs(t.credit_account_id, e.credit_account_id) {
            return R::ExistsWithDifferentCreditAccountId;
        }
        if self.amount_differs(t, e) {
            return R::ExistsWithDifferentAmount;
        }
        let checks = [
            (differs(t.user_data_128, e.user_data_128), R::ExistsWithDifferentUserData128),
            (differs(t.user_data_64.into(), e.user_data_64.into()), R::ExistsWithDifferentUserData64),
            (differs(t.user_data_32.into(), e.user_data_32.into()), R::ExistsWithDifferentUserData32),
            (differs(t.ledger.into(), e.ledger.into()), R::ExistsWithDifferentLedger),
            (differs(t.code.into(), e.code.into()), R::ExistsWithDifferentCode),
        ];
        checks.iter().find(|(d, _)| *d).map_or(R::Exists, |(_, code)| *code)
    }

    /// The stored amount is what actually moved: the full pending amount for
    /// a full post or a void, the capped amount for a balancing transfer.
    fn amount_differs(&self, t: &Transfer, e: &Transfer) -> bool {
        if t.has(F::POST_PENDING) {
            if t.amount == u128::MAX {
                let p = self.transfer(e.pending_id).expect("invariant: a post's pending transfer exists");
                return e.amount != p.amount;
            }
            return t.amount != e.amount;
        }
        if t.has(F::VOID_PENDING) {
            return t.amount != 0 && t.amount != u128::MAX && t.amount != e.amount;
        }
        if t.has(F::BALANCING_DEBIT) || t.has(F::BALANCING_CREDIT) {
            // The original cap is not stored; any cap that could have
            // produced the stored amount matches.
            return t.amount < e.amount;
        }
        t.amount != e.amount
    }
}

/// The checks that need no state, in result-code order.
fn validate_transfer(t: &Transfer) -> Result<(), R> {
    if t.timestamp != 0 {
        return Err(R::TimestampMustBeZero);
    }
    if t.flags & !F::ALL != 0 {
        return Err(R::ReservedFlag);
    }
    if t.id == 0 {
        return Err(R::IdMustNotBeZero);
    }
    if t.id == u128::MAX {
        return Err(R::IdMustNotBeIntMax);
    }
    let kinds = [F::PENDING, F::POST_PENDING, F::VOID_PENDING].iter().filter(|f| t.has(**f)).count();
    let settle = t.has(F::POST_PENDING) || t.has(F::VOID_PENDING);
    let modifiers = F::BALANCING_DEBIT | F::BALANCING_CREDIT | F::CLOSING_DEBIT | F::CLOSING_CREDIT;
    if kinds > 1 || (settle && t.flags & modifiers != 0) {
        return Err(R::FlagsAreMutuallyExclusive);
    }
    let checks: &[(bool, R)] = if settle {
        &[
            (t.debit_account_id == u128::MAX, R::DebitAccountIdMustNotBeIntMax),
            (t.credit_account_id == u128::MAX, R::CreditAccountIdMustNotBeIntMax),
            (t.pending_id == 0, R::PendingIdMustNotBeZero),
            (t.pending_id == u128::MAX, R::PendingIdMustNotBeIntMax),
            (t.pending_id == t.id, R::PendingIdMustBeDifferent),
            (t.timeout != 0, R::TimeoutReservedForPendingTransfer),
        ]
    } else {
        &[
            (t.debit_account_id == 0, R::DebitAccountIdMustNotBeZero),
            (t.debit_account_id == u128::MAX, R::DebitAccountIdMustNotBeIntMax),
            (t.credit_account_id == 0, R::CreditAccountIdMustNotBeZero),
            (t.credit_account_id == u128::MAX, R::CreditAccountIdMustNotBeIntMax),
            (t.debit_account_id == t.credit_account_id, R::AccountsMustBeDifferent),
            (t.pending_id != 0, R::PendingIdMustBeZero),
            (t.timeout != 0 && !t.has(F::PENDING), R::TimeoutReservedForPendingTransfer),
            (
                t.flags & (F::CLOSING_DEBIT | F::CLOSING_CREDIT) != 0 && !t.has(F::PENDING),
                R::ClosingTransferMustBePending,
            ),
            (t.ledger == 0, R::LedgerMustNotBeZero),
            (t.code == 0, R::CodeMustNotBeZero),
        ]
    };
    match checks.iter().find(|(failed, _)| *failed) {
        Some((_, code)) => Err(*code),
        None => Ok(()),
    }
}

/// Pending plus posted debits; never overflows (checked on every change).
fn total_debits(a: &Account) -> u128 {
    a.debits_pending.checked_add(a.debits_posted).expect("invariant: debits_pending + debits_posted fits in u128")
}

fn total_credits(a: &Account) -> u128 {
    a.credits_pending.checked_add(a.credits_posted).expect("invariant: credits_pending + credits_posted fits in u128")
}

/// The amount after balancing caps: at most what the debit account can give
/// within its credits, and what the credit account can take within its debits.
fn balanced_amount(t: &Transfer, dr: &Account, cr: &Account) -> u128 {
    let mut amount = t.amount;
    if t.has(F::BALANCING_DEBIT) {
        amount = amount.min(dr.credits_posted.saturating_sub(total_debits(dr)));
    }
    if t.has(F::BALANCING_CREDIT) {
        amount = amount.min(cr.debits_posted.saturating_sub(total_credits(cr)));
    }
    amount
}

/// Overflow checks, in result-code order.
fn check_new_balances(dr: &Account, cr: &Account, amount: u128, pending: bool) -> Result<(), R> {
    if pending {
        if dr.debits_pending.checked_add(amount).is_none() {
            return Err(R::OverflowsDebitsPending);
        }
        if cr.credits_pending.checked_add(amount).is_none() {
            return Err(R::OverflowsCreditsPending);
        }
    } else {
        if dr.debits_posted.checked_add(amount).is_none() {
            return Err(R::OverflowsDebitsPosted);
        }
        if cr.credits_posted.checked_add(amount).is_none() {
            return Err(R::OverflowsCreditsPosted);
        }
    }
    if total_debits(dr).checked_add(amount).is_none() {
        return Err(R::OverflowsDebits);
    }
    if total_credits(cr).checked_add(amount).is_none() {
        return Err(R::OverflowsCredits);
    }
    Ok(())
}

/// When a pending transfer created at `timestamp` expires; `None` if never.
fn pending_expiry(timeout: u32, timestamp: u64, pending: bool) -> Result<Option<u64>, R> {
    if !pending || timeout == 0 {
        return Ok(None);
    }
    let span = u64::from(timeout) * NANOS_PER_SECOND;
    timestamp.checked_add(span).map(Some).ok_or(R::OverflowsTimeout)
}

/// The expiry of a stored pending transfer with a timeout.
pub(super) fn expiry_of(p: &Transfer) -> u64 {
    p.timestamp + u64::from(p.timeout) * NANOS_PER_SECOND
}

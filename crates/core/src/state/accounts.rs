//! Creating accounts.

use super::StateMachine;
use super::undo::Undo;
use crate::codes::CreateAccountResult as R;
use crate::records::{Account, account_flags as F};

impl StateMachine {
    /// Checks in the order of `CreateAccountResult`.
    pub(super) fn create_account(&mut self, a: &Account, timestamp: u64) -> R {
        if let Err(code) = validate_account(a) {
            return code;
        }
        if let Some(position) = self.find_account(a.id) {
            return account_exists(a, &self.accounts.get(position as usize));
        }
        if !self.ledgers.contains_key(&a.ledger) {
            return R::LedgerNotFound;
        }
        if self.accounts.len() >= self.limits.accounts {
            return R::AccountsLimitReached;
        }
        let position = self.accounts.push(Account { flags: a.flags & !F::LINKED, timestamp, ..*a }) as u32;
        self.account_index.insert(a.id, position);
        self.account_transfers.push_account();
        self.account_history.push_account();
        self.totals.get_mut(&a.ledger).expect("invariant: an existing ledger has totals").accounts += 1;
        if self.journaling {
            self.undo.push(Undo::AccountCreated);
        }
        self.record_event(crate::events::kind::ACCOUNT_CREATED, u64::from(position), 0);
        R::Ok
    }
}

/// The checks that need no state.
fn validate_account(a: &Account) -> Result<(), R> {
    let checks = [
        (a.timestamp != 0, R::TimestampMustBeZero),
        (a.reserved != 0, R::ReservedField),
        (a.flags & !F::ALL != 0, R::ReservedFlag),
        (a.id == 0, R::IdMustNotBeZero),
        (a.id == u128::MAX, R::IdMustNotBeIntMax),
        (
            a.has(F::DEBITS_MUST_NOT_EXCEED_CREDITS) && a.has(F::CREDITS_MUST_NOT_EXCEED_DEBITS),
            R::FlagsAreMutuallyExclusive,
        ),
        (a.debits_pending != 0, R::DebitsPendingMustBeZero),
        (a.debits_posted != 0, R::DebitsPostedMustBeZero),
        (a.credits_pending != 0, R::CreditsPendingMustBeZero),
        (a.credits_posted != 0, R::CreditsPostedMustBeZero),
        (a.ledger == 0, R::LedgerMustNotBeZero),
        (a.code == 0, R::CodeMustNotBeZero),
    ];
    match checks.iter().find(|(failed, _)| *failed) {
        Some((_, code)) => Err(*code),
        None => Ok(()),
    }
}

/// Compares a re-submitted account with the stored one. `linked` describes
/// the batch, and `closed` is set by closing transfers, so neither counts.
fn account_exists(a: &Account, e: &Account) -> R {
    let mask = !(F::LINKED | F::CLOSED);
    if a.flags & mask != e.flags & mask {
        R::ExistsWithDifferentFlags
    } else if a.user_data_128 != e.user_data_128 {
        R::ExistsWithDifferentUserData128
    } else if a.user_data_64 != e.user_data_64 {
        R::ExistsWithDifferentUserData64
    } else if a.user_data_32 != e.user_data_32 {
        R::ExistsWithDifferentUserData32
    } else if a.ledger != e.ledger {
        R::ExistsWithDifferentLedger
    } else if a.code != e.code {
        R::ExistsWithDifferentCode
    } else {
        R::Exists
    }
}

//! Rollback of a linked chain: while a chain is open every mutation records
//! how to reverse it, and a failure replays those records backwards.

use super::{LedgerTotals, StateMachine};
use crate::records::Account;

pub(super) enum Undo {
    /// The last account was created.
    AccountCreated,
    /// The last transfer was created.
    TransferCreated,
    Account {
        position: u32,
        before: Account,
    },
    TransferState {
        position: u64,
        before: u8,
    },
    Totals {
        ledger: u32,
        before: LedgerTotals,
    },
    ExpiryAdded {
        key: (u64, u64),
    },
    ExpiryRemoved {
        key: (u64, u64),
    },
    LivePendingAdded {
        position: u64,
    },
    LivePendingRemoved {
        position: u64,
    },
    /// The last journal slot was recorded.
    EventRecorded,
    /// The last balance record belongs to this account.
    HistoryAdded {
        account_position: u32,
    },
}

impl StateMachine {
    pub(super) fn begin_chain(&mut self) {
        debug_assert!(self.undo.is_empty() && !self.journaling);
        self.journaling = true;
    }

    pub(super) fn commit_chain(&mut self) {
        self.undo.clear();
        self.journaling = false;
    }

    pub(super) fn rollback_chain(&mut self) {
        self.journaling = false;
        while let Some(step) = self.undo.pop() {
            self.undo_one(step);
        }
    }

    fn undo_one(&mut self, step: Undo) {
        match step {
            Undo::AccountCreated => {
                let account = self.accounts.pop().expect("invariant: undo of a created account");
                let position = self.accounts.len() as u32;
                self.account_index.remove(account.id, position);
                self.account_transfers.pop_account();
                self.account_history.pop_account();
                let totals = self.totals.get_mut(&account.ledger).expect("invariant: ledger of a created account");
                totals.accounts -= 1;
            }
            Undo::TransferCreated => {
                let transfer = self.transfers.pop().expect("invariant: undo of a created transfer");
                self.transfer_states.pop();
                let position = self.transfers.len() as u64;
                self.transfer_index.remove(transfer.id, position);
                for account_id in [transfer.debit_account_id, transfer.credit_account_id] {
                    let account =
                        self.find_account(account_id).expect("invariant: accounts of a created transfer exist");
                    let popped = self.account_transfers.pop(account);
                    assert_eq!(popped, Some(position), "undo: the account's last transfer is the one undone");
                }
            }
            Undo::EventRecorded => {
                self.journal.pop().expect("invariant: undo of a journaled event");
            }
            Undo::Account { position, before } => *self.accounts.get_mut(position as usize) = before,
            Undo::TransferState { position, before } => *self.transfer_states.get_mut(position as usize) = before,
            Undo::Totals { ledger, before } => {
                *self.totals.get_mut(&ledger).expect("invariant: undo of existing totals") = before;
            }
            Undo::ExpiryAdded { key } => {
                assert!(self.expiries.remove(&key), "undo: expiry was added")
            }
            Undo::ExpiryRemoved { key } => {
                assert!(self.expiries.insert(key), "undo: expiry was removed")
            }
            Undo::LivePendingAdded { position } => {
                assert!(self.live_pending.remove(&position), "undo: pending was added")
            }
            Undo::LivePendingRemoved { position } => {
                assert!(self.live_pending.insert(position), "undo: pending was removed")
            }
            Undo::HistoryAdded { account_position } => {
                self.history.pop().expect("invariant: undo of a balance record");
                let popped = self.account_history.pop(account_position);
                assert_eq!(
                    popped,
                    Some(self.history.len() as u64),
                    "undo: the account's last balance record is the one undone"
                );
            }
        }
    }
}

//! Expiry of pending transfers by log time.

use super::{PendingState, StateMachine};
use crate::limits::EXPIRIES_PER_ENTRY_MAX;

impl StateMachine {
    /// Expires pending transfers due at or before `now`, oldest first, at most
    /// `EXPIRIES_PER_ENTRY_MAX` per entry. Each expiry takes its own timestamp.
    pub(super) fn sweep_expired(&mut self, now: u64) {
        for _ in 0..EXPIRIES_PER_ENTRY_MAX {
            match self.expiries.first() {
                Some(&(at, position)) if at <= now => self.expire(position),
                _ => break,
            }
        }
    }

    fn expire(&mut self, position: u64) {
        let p = self.transfers.get(position as usize);
        let (dr_pos, mut dr, cr_pos, mut cr) = self.accounts_of(&p);
        self.release_pending(position, &p, &mut dr, &mut cr, PendingState::Expired);
        self.write_account(dr_pos, dr);
        self.write_account(cr_pos, cr);
        let timestamp = self.tick();
        self.record_history(dr_pos, timestamp);
        self.record_history(cr_pos, timestamp);
        self.record_event(crate::events::kind::TRANSFER_EXPIRED, position, timestamp);
    }
}

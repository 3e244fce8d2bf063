//! Creating ledgers.

use super::{LedgerTotals, StateMachine};
use crate::codes::CreateLedgerResult as R;
use crate::limits::SCALE_MAX;
use crate::records::Ledger;

impl StateMachine {
    /// Checks in the order of `CreateLedgerResult`.
    pub(super) fn create_ledger(&mut self, l: &Ledger, timestamp: u64) -> R {
        if l.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if l.reserved != [0; 3] {
            return R::ReservedField;
        }
        if l.id == 0 {
            return R::IdMustNotBeZero;
        }
        if l.asset_str().is_none() {
            return R::AssetInvalid;
        }
        if l.scale > SCALE_MAX {
            return R::ScaleInvalid;
        }
        if let Some(e) = self.ledgers.get(&l.id) {
            return if e.asset != l.asset {
                R::ExistsWithDifferentAsset
            } else if e.scale != l.scale {
                R::ExistsWithDifferentScale
            } else {
                R::Exists
            };
        }
        if self.ledgers.len() >= self.limits.ledgers {
            return R::LedgersLimitReached;
        }
        self.ledgers.insert(l.id, Ledger { timestamp, ..*l });
        self.totals.insert(l.id, LedgerTotals::default());
        self.record_event(crate::events::kind::LEDGER_CREATED, 0, u64::from(l.id));
        R::Ok
    }
}

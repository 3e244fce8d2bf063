//! Read-only queries over the applied state.

use super::StateMachine;
use crate::limits::QUERY_PAGE_MAX;
use crate::records::{Account, AccountFilter, BalanceRecord, Ledger, LedgerFilter, Transfer, filter_flags as FF};

/// Why a query was refused. The kinds are stable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    pub kind: QueryErrorKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryErrorKind {
    /// The filter has an invalid field; the detail names it.
    InvalidFilter,
    /// A write was asked as a query (writes are applied through the log).
    NotARead,
}

impl QueryErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            QueryErrorKind::InvalidFilter => "invalid_filter",
            QueryErrorKind::NotARead => "not_a_read",
        }
    }
}

fn invalid(detail: &str) -> QueryError {
    QueryError { kind: QueryErrorKind::InvalidFilter, detail: detail.to_string() }
}

impl StateMachine {
    /// The accounts that exist among `ids`, in the order asked.
    pub fn lookup_accounts(&self, ids: impl IntoIterator<Item = u128>) -> Vec<Account> {
        ids.into_iter().filter_map(|id| self.account(id).copied()).collect()
    }

    /// The transfers that exist among `ids`, in the order asked.
    pub fn lookup_transfers(&self, ids: impl IntoIterator<Item = u128>) -> Vec<Transfer> {
        ids.into_iter().filter_map(|id| self.transfer(id)).collect()
    }

    /// Ledgers with ids after `filter.after_id`, ascending.
    pub fn list_ledgers(&self, filter: &LedgerFilter) -> Result<Vec<Ledger>, QueryError> {
        check_limit(filter.limit)?;
        let after = (std::ops::Bound::Excluded(filter.after_id), std::ops::Bound::Unbounded);
        Ok(self.ledgers.range(after).take(filter.limit as usize).map(|(_, l)| *l).collect())
    }

    /// An account's transfers within a time range, oldest first unless the
    /// filter says reversed. Unknown accounts have none.
    pub fn account_transfers(&self, filter: &AccountFilter) -> Result<Vec<Transfer>, QueryError> {
        check_filter(filter, true)?;
        let Some(account) = self.find_account(filter.account_id) else {
            return Ok(Vec::new());
        };
        let list = &self.account_transfers[account as usize];
        let timestamp = |p: &u32| self.transfers.get(*p as usize).timestamp;
        let selected = select_range(list, filter, timestamp);
        let want_debits = filter.flags & FF::DEBITS != 0;
        let want_credits = filter.flags & FF::CREDITS != 0;
        let keep = |t: &Transfer| {
            (want_debits && t.debit_account_id == filter.account_id)
                || (want_credits && t.credit_account_id == filter.account_id)
        };
        let transfers = selected.iter().map(|p| self.transfers.get(*p as usize));
        let limit = filter.limit as usize;
        Ok(if filter.flags & FF::REVERSED != 0 {
            transfers.rev().filter(keep).take(limit).collect()
        } else {
            transfers.filter(keep).take(limit).collect()
        })
    }

    /// An account's balances after each change within a time range, for
    /// accounts with the history flag (others have none).
    pub fn account_balances(&self, filter: &AccountFilter) -> Result<Vec<BalanceRecord>, QueryError> {
        check_filter(filter, false)?;
        let Some(account) = self.find_account(filter.account_id) else {
            return Ok(Vec::new());
        };
        let list = &self.account_history[account as usize];
        let selected = select_range(list, filter, |p| self.history.get(*p as usize).timestamp);
        let records = selected.iter().map(|p| self.history.get(*p as usize));
        let limit = filter.limit as usize;
        Ok(if filter.flags & FF::REVERSED != 0 {
            records.rev().take(limit).collect()
        } else {
            records.take(limit).collect()
        })
    }
}

fn check_limit(limit: u32) -> Result<(), QueryError> {
    if limit == 0 || limit as usize > QUERY_PAGE_MAX {
        return Err(invalid(&format!("limit must be between 1 and {QUERY_PAGE_MAX}")));
    }
    Ok(())
}

fn check_filter(f: &AccountFilter, sides_required: bool) -> Result<(), QueryError> {
    if f.account_id == 0 || f.account_id == u128::MAX {
        return Err(invalid("account_id must not be zero or 2^128 - 1"));
    }
    if f.timestamp_min == u64::MAX || f.timestamp_max == u64::MAX {
        return Err(invalid("timestamps must be below 2^64 - 1"));
    }
    if f.timestamp_max != 0 && f.timestamp_min > f.timestamp_max {
        return Err(invalid("timestamp_min must not be after timestamp_max"));
    }
    check_limit(f.limit)?;
    if f.flags & !FF::ALL != 0 {
        return Err(invalid("unknown filter flag"));
    }
    if sides_required && f.flags & (FF::DEBITS | FF::CREDITS) == 0 {
        return Err(invalid("flags must include debits, credits or both"));
    }
    if f.reserved != [0; 24] {
        return Err(invalid("reserved bytes must be zero"));
    }
    Ok(())
}

/// The part of a timestamp-ordered list within the filter's time range.
fn select_range<'a>(list: &'a [u32], f: &AccountFilter, timestamp: impl Fn(&u32) -> u64) -> &'a [u32] {
    let max = if f.timestamp_max == 0 { u64::MAX } else { f.timestamp_max };
    let start = list.partition_point(|p| timestamp(p) < f.timestamp_min);
    let end = list.partition_point(|p| timestamp(p) <= max);
    &list[start..end.max(start)]
}

//! Read-only queries over the applied state.

use super::StateMachine;
use super::lists::{SIDE_CREDIT, SIDE_DEBIT};
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
        let (lo, hi) = time_bounds(self.transfers.len(), filter, |p| self.transfers.get(p).timestamp);
        let want_debits = filter.flags & FF::DEBITS != 0;
        let want_credits = filter.flags & FF::CREDITS != 0;
        let limit = filter.limit as usize;
        let mut out = Vec::with_capacity(limit.min(PAGE_RESERVE));
        let reversed = filter.flags & FF::REVERSED != 0;
        self.account_transfers.scan((account, filter.account_id), (lo, hi), reversed, |p, side| {
            // A stored entry names its side: skip without reading it.
            let maybe = match side {
                Some(SIDE_DEBIT) => want_debits,
                Some(SIDE_CREDIT) => want_credits,
                _ => true,
            };
            if maybe {
                let t = self.transfers.get(p as usize);
                if (want_debits && t.debit_account_id == filter.account_id)
                    || (want_credits && t.credit_account_id == filter.account_id)
                {
                    out.push(t);
                }
            }
            out.len() < limit
        });
        Ok(out)
    }

    /// An account's balances after each change within a time range, for
    /// accounts with the history flag (others have none).
    pub fn account_balances(&self, filter: &AccountFilter) -> Result<Vec<BalanceRecord>, QueryError> {
        check_filter(filter, false)?;
        let Some(account) = self.find_account(filter.account_id) else {
            return Ok(Vec::new());
        };
        let (lo, hi) = time_bounds(self.history.len(), filter, |p| self.history.get(p).timestamp);
        let limit = filter.limit as usize;
        let mut out = Vec::with_capacity(limit.min(PAGE_RESERVE));
        let reversed = filter.flags & FF::REVERSED != 0;
        self.account_history.scan((account, filter.account_id), (lo, hi), reversed, |p, _| {
            out.push(self.history.get(p as usize));
            out.len() < limit
        });
        Ok(out)
    }
}

/// Results reserved up front for a page (a page may be up to 8190).
const PAGE_RESERVE: usize = 128;

/// The positions `[lo, hi)` of an arena of `len` records, in time order,
/// whose timestamps are within the filter's range (`timestamp` reads one
/// record's).
fn time_bounds(len: usize, f: &AccountFilter, timestamp: impl Fn(usize) -> u64) -> (u64, u64) {
    let max = if f.timestamp_max == 0 { u64::MAX } else { f.timestamp_max };
    let lo = if f.timestamp_min == 0 { 0 } else { partition(len, |p| timestamp(p) < f.timestamp_min) };
    let hi = if max == u64::MAX { len } else { partition(len, |p| timestamp(p) <= max) };
    (lo as u64, hi.max(lo) as u64)
}

/// The first position in `0..len` where `pred` is false (`pred` holds on a
/// prefix): a binary search that reads O(log len) records.
fn partition(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
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

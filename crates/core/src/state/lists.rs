//! Each account's transfers (or balance records) over the whole history,
//! without an in-RAM list of every one.
//!
//! Like ids (`state::ids`), list entries split by record position: those of
//! records below `covered` are in stored tables ([`StoredLists`], keyed by
//! (account id, position), built by the engine from durable history), the rest
//! in per-account vectors in RAM. Installing tables that cover more drops
//! the covered prefix of every account's vector. A scan reads the stored
//! part a page at a time, so a page of results costs a few table reads
//! whatever the history.
//!
//! Stored entries carry a small tag (for transfers: which side the account
//! is on), so a scan can skip entries without reading their records.
//!
//! RAM entries are 32-bit offsets from a base that moves up with the
//! tables, so the lists hold 4 bytes per entry without capping history at
//! 2^32 records: only the records not yet in tables (the working set) must
//! span fewer than 2^32 positions.

use crate::arena::ChunkReadError;
use crate::limits::LIST_SCAN_PAGE;
use std::sync::Arc;

/// Tag of a stored transfer-list entry: the account is the debit side.
pub const SIDE_DEBIT: u8 = 1;
/// Tag of a stored transfer-list entry: the account is the credit side.
pub const SIDE_CREDIT: u8 = 2;

/// List entries of records below [`StoredLists::covered`], held on disk.
pub trait StoredLists: Send + Sync {
    /// Every record below this position is in the tables.
    fn covered(&self) -> u64;

    /// The entries of the account with id `account` with positions in
    /// `[lo, hi)`, ascending (or descending if `reversed`), at most
    /// `limit`: (position, tag).
    fn range(
        &self,
        account: u128,
        lo: u64,
        hi: u64,
        reversed: bool,
        limit: usize,
    ) -> Result<Vec<(u64, u8)>, ChunkReadError>;

    /// Bytes of RAM the tables hold, for gauges.
    fn memory_bytes(&self) -> u64;
}

/// Per account, the positions of its records (see the module docs).
#[derive(Default)]
pub struct AccountLists {
    /// Per account position: positions at or above `covered()`, ascending,
    /// as offsets from `base`.
    recent: Vec<Vec<u32>>,
    /// Every RAM entry is `base + offset`; at most `covered()`.
    base: u64,
    /// `install` moves the base up once records span more than this past
    /// it (rarely: rewriting every offset costs a pass over RAM entries).
    rebase_after: u64,
    stored: Option<Arc<dyn StoredLists>>,
}

/// Default `rebase_after`: half the offsets' range, so pushes never run
/// out while tables keep up.
const REBASE_AFTER: u64 = 1 << 31;

impl AccountLists {
    /// Lists for `accounts` accounts, all empty.
    pub fn with_accounts(accounts: usize) -> AccountLists {
        AccountLists { recent: vec![Vec::new(); accounts], base: 0, rebase_after: REBASE_AFTER, stored: None }
    }

    /// Accounts with a list (every account has one).
    pub fn accounts(&self) -> usize {
        self.recent.len()
    }

    /// A list for a new account.
    pub fn push_account(&mut self) {
        self.recent.push(Vec::new());
    }

    /// Undo of `push_account`.
    pub fn pop_account(&mut self) {
        let list = self.recent.pop().expect("invariant: undo of a created account's list");
        assert!(list.is_empty(), "invariant: an account created in the undone chain has no entries");
    }

    /// Appends `position` (past every position held) to `account`'s list.
    /// Records not yet in stored tables span fewer than 2^32 positions (a
    /// working-set limit: 2^32 records is hundreds of GB of RAM).
    #[inline]
    pub fn push(&mut self, account: u32, position: u64) {
        let offset = position
            .checked_sub(self.base)
            .and_then(|o| u32::try_from(o).ok())
            .expect("invariant: records not yet in stored lists span fewer than 2^32 positions");
        let list = &mut self.recent[account as usize];
        debug_assert!(list.last().is_none_or(|last| *last < offset), "invariant: lists are in position order");
        list.push(offset);
    }

    /// Removes and returns `account`'s newest entry (undo within an entry).
    pub fn pop(&mut self, account: u32) -> Option<u64> {
        self.recent[account as usize].pop().map(|o| self.base + u64::from(o))
    }

    /// Hands entries of records below `stored.covered()` over to stored
    /// tables: every account's covered prefix leaves RAM. `covered` must
    /// not go back and must not pass `end`, the next record's position.
    pub fn install(&mut self, stored: Arc<dyn StoredLists>, end: u64) {
        let covered = stored.covered();
        assert!(covered <= end, "invariant: stored lists cover only records that exist ({covered} > {end})");
        if let Some(old) = &self.stored {
            assert!(covered >= old.covered(), "invariant: stored lists never cover less than before");
        }
        // The base moves up to `covered` when records outgrow half the
        // offsets' range: entries left are at or above it. A move of 2^32
        // or more leaves none (offsets are below 2^32).
        let base = if end - self.base > self.rebase_after { covered } else { self.base };
        let shift = u32::try_from(base - self.base).ok();
        for list in &mut self.recent {
            let cut = list.partition_point(|o| self.base + u64::from(*o) < covered);
            if cut > 0 {
                list.drain(..cut);
                if list.capacity() > 2 * list.len() + 8 {
                    list.shrink_to_fit();
                }
            }
            match shift {
                Some(0) => {}
                Some(shift) => list.iter_mut().for_each(|o| *o -= shift),
                None => assert!(list.is_empty(), "invariant: RAM entries are within 2^32 of the base"),
            }
        }
        self.base = base;
        self.stored = Some(stored);
    }

    /// Below this position, entries come from stored tables (0: none).
    pub fn covered(&self) -> u64 {
        self.stored.as_ref().map_or(0, |s| s.covered())
    }

    /// Entries held in RAM.
    pub fn len_in_memory(&self) -> usize {
        self.recent.iter().map(Vec::len).sum()
    }

    /// Entries of `account` held in RAM, oldest first, as offsets from
    /// `self.base`.
    fn recent(&self, account: u32) -> &[u32] {
        &self.recent[account as usize]
    }

    /// Bytes of RAM: the vectors' headers and capacity, and the tables'.
    pub fn heap_bytes(&self) -> u64 {
        let header = std::mem::size_of::<Vec<u32>>() as u64;
        let vectors: u64 = self.recent.iter().map(|l| header + l.capacity() as u64 * 4).sum();
        vectors + self.stored.as_ref().map_or(0, |s| s.memory_bytes())
    }

    /// Visits the entries of the account at `account` (its position; `id`
    /// its id) with positions in `[lo, hi)` in order (newest first if
    /// `reversed`) until `visit` returns false. Stored entries come with
    /// their tag, RAM ones without. A stored table that cannot be read is a
    /// storage fault: it panics, naming it.
    pub fn scan(
        &self,
        (account, id): (u32, u128),
        (lo, hi): (u64, u64),
        reversed: bool,
        mut visit: impl FnMut(u64, Option<u8>) -> bool,
    ) {
        let (covered, base) = (self.covered(), self.base);
        let recent = self.recent(account);
        let from = recent.partition_point(|o| base + u64::from(*o) < lo.max(covered));
        let to = recent.partition_point(|o| base + u64::from(*o) < hi);
        let recent = &recent[from..to.max(from)];
        if reversed {
            if recent.iter().rev().all(|o| visit(base + u64::from(*o), None)) {
                self.scan_stored(id, lo, hi.min(covered), true, &mut visit);
            }
        } else if self.scan_stored(id, lo, hi.min(covered), false, &mut visit) {
            recent.iter().all(|o| visit(base + u64::from(*o), None));
        }
    }

    /// The stored part of `scan`, a page at a time. Returns false once
    /// `visit` asked to stop.
    fn scan_stored(
        &self,
        account: u128,
        mut lo: u64,
        mut hi: u64,
        reversed: bool,
        visit: &mut impl FnMut(u64, Option<u8>) -> bool,
    ) -> bool {
        let Some(stored) = &self.stored else { return true };
        while lo < hi {
            let page = match stored.range(account, lo, hi, reversed, LIST_SCAN_PAGE) {
                Ok(page) => page,
                Err(e) => panic!("storage fault: the stored lists of account {account} cannot be read: {e}"),
            };
            let Some(&(last, _)) = page.last() else { return true };
            for (p, tag) in &page {
                debug_assert!((lo..hi).contains(p), "invariant: stored entries come from the range asked");
                if !visit(*p, Some(*tag)) {
                    return false;
                }
            }
            if page.len() < LIST_SCAN_PAGE {
                return true;
            }
            if reversed { hi = last } else { lo = last + 1 }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Stored lists in memory: entries of the first `covered` records.
    struct Table {
        entries: BTreeMap<(u128, u64), u8>,
        covered: u64,
    }

    impl StoredLists for Table {
        fn covered(&self) -> u64 {
            self.covered
        }
        fn range(
            &self,
            a: u128,
            lo: u64,
            hi: u64,
            reversed: bool,
            limit: usize,
        ) -> Result<Vec<(u64, u8)>, ChunkReadError> {
            let r = self.entries.range((a, lo)..(a, hi)).map(|((_, p), t)| (*p, *t));
            Ok(if reversed { r.rev().take(limit).collect() } else { r.take(limit).collect() })
        }
        fn memory_bytes(&self) -> u64 {
            0
        }
    }

    /// Account ids are not their positions.
    fn id_of(account: u32) -> u128 {
        (u128::from(account) << 90) | 77
    }

    #[test]
    fn scans_agree_however_history_is_split() {
        scans_agree_from(0);
    }

    #[test]
    fn positions_past_2_pow_32_are_held_as_offsets() {
        scans_agree_from(5 << 32);
    }

    #[test]
    fn offsets_survive_every_rebase() {
        scans_agree_with(0, 1);
        scans_agree_with(7 << 32, 500);
    }

    #[test]
    #[should_panic(expected = "fewer than 2^32 positions")]
    fn a_working_set_of_2_pow_32_positions_is_refused() {
        let mut lists = AccountLists::with_accounts(1);
        lists.push(0, 1 << 32);
    }

    /// Records `start..start + 3000`; tables first cover everything below
    /// `start` (none of these accounts' entries).
    fn scans_agree_from(start: u64) {
        scans_agree_with(start, REBASE_AFTER);
    }

    /// `scans_agree_from`, rebasing once records span `rebase_after`.
    fn scans_agree_with(start: u64, rebase_after: u64) {
        // 3 accounts; record p belongs to account p % 3 (and p % 7 == 0
        // also to account 0), so lists interleave.
        let owners = |p: u64| {
            let mut o = vec![(p % 3) as u32];
            if p.is_multiple_of(7) && !p.is_multiple_of(3) {
                o.push(0);
            }
            o
        };
        let records = start + 3_000;
        let mut lists = AccountLists::with_accounts(3);
        lists.rebase_after = rebase_after;
        let mut all: BTreeMap<(u128, u64), u8> = BTreeMap::new();
        if start > 0 {
            lists.install(Arc::new(Table { entries: BTreeMap::new(), covered: start }), start);
        }
        for p in start..records {
            for a in owners(p) {
                lists.push(a, p);
                all.insert((id_of(a), p), (p % 2) as u8 + 1);
            }
            if p % 700 == 699 {
                let covered = (p + 1 - 100).max(start);
                let entries = all.range(..).filter(|((_, q), _)| *q < covered).map(|(k, v)| (*k, *v)).collect();
                lists.install(Arc::new(Table { entries, covered }), p + 1);
            }
        }
        assert!(lists.len_in_memory() < all.len() / 4, "covered entries left RAM");
        for a in 0..3u32 {
            let windows = [(0, 3_000), (5, 2_000), (2_050, 2_150), (2_900, 3_000), (10, 10)];
            for (lo, hi) in windows.map(|(lo, hi)| (start + lo, start + hi)).into_iter().chain([(0, records)]) {
                let want: Vec<u64> = all.range((id_of(a), lo)..(id_of(a), hi)).map(|((_, p), _)| *p).collect();
                for reversed in [false, true] {
                    for stop_after in [1usize, 7, LIST_SCAN_PAGE + 3, usize::MAX] {
                        let mut got = Vec::new();
                        lists.scan((a, id_of(a)), (lo, hi), reversed, |p, tag| {
                            if let Some(t) = tag {
                                assert_eq!(all[&(id_of(a), p)], t);
                            }
                            got.push(p);
                            got.len() < stop_after
                        });
                        let mut expected = want.clone();
                        if reversed {
                            expected.reverse();
                        }
                        expected.truncate(stop_after);
                        assert_eq!(got, expected, "account {a} [{lo}, {hi}) reversed {reversed} stop {stop_after}");
                    }
                }
            }
        }
    }
}

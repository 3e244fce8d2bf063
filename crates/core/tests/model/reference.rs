//! A reference model of the ledger state machine, written from
//! `docs/ledger.md` alone. It is deliberately simple and slow: ordered maps,
//! linear scans, and a clone of the whole state to roll back a linked chain.
//! Every check is written in the order the document lists it, and each
//! create checks everything before it changes anything.

use bursar_core::codes::{CreateAccountResult as AR, CreateLedgerResult as LR, CreateTransferResult as TR};
use bursar_core::records::{account_flags as AF, filter_flags as FF, transfer_flags as TF};
use bursar_core::{
    Account, AccountFilter, BalanceRecord, FailedTransfer, Ledger, LedgerFilter, PendingState, Transfer,
};
use std::collections::BTreeMap;

/// Nanoseconds per second of a pending timeout.
const NANOS: u128 = 1_000_000_000;
/// Largest number of expiries swept at the start of one entry.
const SWEEP_MAX: usize = bursar_core::limits::EXPIRIES_PER_ENTRY_MAX;
/// Largest query limit.
const LIMIT_MAX: u32 = bursar_core::limits::QUERY_PAGE_MAX as u32;

/// Capacity limits (the same meaning as `bursar_core::Limits`).
#[derive(Clone, Copy, Debug)]
pub struct ModelLimits {
    pub ledgers: usize,
    pub accounts: usize,
    pub transfers: usize,
}

/// One write command with decoded events.
#[derive(Clone, Debug)]
pub enum Cmd {
    Ledgers(Vec<Ledger>),
    Accounts(Vec<Account>),
    Transfers(Vec<Transfer>),
}

#[derive(Clone, Debug)]
pub struct Model {
    pub limits: ModelLimits,
    /// The last timestamp consumed by an expiry or an event, or `now - 1` of
    /// the last entry if it consumed none (0 before any entry).
    pub last_timestamp: u64,
    /// The next timestamp to hand out within the current entry.
    clock: u64,
    pub ledgers: BTreeMap<u32, Ledger>,
    pub accounts: BTreeMap<u128, Account>,
    pub transfers: BTreeMap<u128, Transfer>,
    /// The pending state of every transfer (`None` for non-pending ones).
    pub states: BTreeMap<u128, PendingState>,
    pub failed: BTreeMap<u128, FailedTransfer>,
    /// Every balance record, in the order they were made.
    pub history: Vec<BalanceRecord>,
}

fn has(flags: u16, flag: u16) -> bool {
    flags & flag != 0
}

/// Asset codes: 1–16 bytes of `A-Z 0-9 _ - .`, the first a letter, zero padded.
pub fn asset_is_valid(asset: &[u8; 16]) -> bool {
    let len = asset.iter().position(|&b| b == 0).unwrap_or(16);
    if len == 0 {
        return false;
    }
    if !asset[0].is_ascii_uppercase() {
        return false;
    }
    for &b in &asset[..len] {
        let ok = b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.';
        if !ok {
            return false;
        }
    }
    asset[len..].iter().all(|&b| b == 0)
}

impl Model {
    pub fn new(limits: ModelLimits) -> Model {
        Model {
            limits,
            last_timestamp: 0,
            clock: 0,
            ledgers: BTreeMap::new(),
            accounts: BTreeMap::new(),
            transfers: BTreeMap::new(),
            states: BTreeMap::new(),
            failed: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    // ---------------------------------------------------------------- time

    /// When a live pending transfer expires, if it has a timeout.
    pub fn expiry_of(t: &Transfer) -> Option<u64> {
        if t.timeout == 0 {
            return None;
        }
        let at = t.timestamp as u128 + t.timeout as u128 * NANOS;
        Some(u64::try_from(at).expect("overflows_timeout rejected this transfer"))
    }

    /// (expiry, transfer timestamp, id) of every live pending transfer with a timeout.
    fn live_expiries(&self) -> Vec<(u64, u64, u128)> {
        let mut out = Vec::new();
        for (id, t) in &self.transfers {
            if self.states[id] == PendingState::Pending
                && let Some(at) = Model::expiry_of(t)
            {
                out.push((at, t.timestamp, *id));
            }
        }
        out.sort();
        out
    }

    pub fn next_expiry(&self) -> Option<u64> {
        self.live_expiries().first().map(|e| e.0)
    }

    fn take_timestamp(&mut self) -> u64 {
        let ts = self.clock;
        self.clock += 1;
        self.last_timestamp = ts;
        ts
    }

    /// Starts an entry: fixes `now` and sweeps what expired by then.
    pub fn begin_entry(&mut self, entry_timestamp: u64) {
        let now = entry_timestamp.max(self.last_timestamp + 1);
        self.clock = now;
        // The document leaves `last_timestamp` undefined for an entry that
        // consumes no timestamp. The machine counts the entry's `now` as
        // reached: `last_timestamp` becomes `now - 1` even if nothing follows,
        // so a later entry stamped earlier still starts at `now`.
        self.last_timestamp = now - 1;
        let mut due: Vec<(u64, u64, u128)> = self.live_expiries().into_iter().filter(|e| e.0 <= now).collect();
        due.truncate(SWEEP_MAX);
        for (_, _, id) in due {
            let ts = self.take_timestamp();
            self.expire(id, ts);
        }
    }

    pub fn end_entry(&mut self) {}

    pub fn execute(&mut self, command: &Cmd) -> Vec<(u32, u32)> {
        match command {
            Cmd::Ledgers(events) => {
                let mut out = Vec::new();
                for (i, l) in events.iter().enumerate() {
                    let ts = self.take_timestamp();
                    let code = self.create_ledger(l, ts);
                    if code != LR::Ok {
                        out.push((i as u32, code.code()));
                    }
                }
                out
            }
            Cmd::Accounts(events) => self.run_chains(
                events,
                |a| has(a.flags, AF::LINKED),
                |m, a, ts| m.create_account(a, ts).code(),
                |_, _, _, _| {},
            ),
            Cmd::Transfers(events) => self.run_chains(
                events,
                |t| has(t.flags, TF::LINKED),
                |m, t, ts| m.create_transfer(t, ts).code(),
                |m, t, code, ts| {
                    // Only state-dependent rejections (34–59) record the id.
                    if (34..=59).contains(&code) {
                        m.failed.insert(t.id, FailedTransfer { id: t.id, timestamp: ts, code, reserved: 0 });
                    }
                },
            ),
        }
    }

    /// Runs a batch as linked chains. `exec` checks and applies one event and
    /// returns its code (0 = ok); `on_fail` runs after a failed chain was
    /// rolled back, for the event that caused the failure.
    fn run_chains<E>(
        &mut self,
        events: &[E],
        linked: impl Fn(&E) -> bool,
        exec: impl Fn(&mut Model, &E, u64) -> u32,
        on_fail: impl Fn(&mut Model, &E, u32, u64),
    ) -> Vec<(u32, u32)> {
        const LINKED_EVENT_FAILED: u32 = 1;
        const LINKED_EVENT_CHAIN_OPEN: u32 = 2;
        let n = events.len();
        // Every event's timestamp, whatever happens to it.
        let timestamps: Vec<u64> = (0..n).map(|_| self.take_timestamp()).collect();
        let mut codes = vec![0u32; n];
        let mut start = 0;
        while start < n {
            // The chain is start..=last: it ends at the first event without
            // `linked`, or at the end of the batch (an open chain).
            let mut last = start;
            while last < n - 1 && linked(&events[last]) {
                last += 1;
            }
            let open = linked(&events[last]);
            // A chain of one event needs no snapshot: each create checks
            // everything before it changes anything.
            let before = if last > start { Some(self.clone()) } else { None };
            let mut failure = None;
            for k in start..=last {
                let code =
                    if open && k == last { LINKED_EVENT_CHAIN_OPEN } else { exec(self, &events[k], timestamps[k]) };
                if code != 0 {
                    failure = Some((k, code));
                    break;
                }
            }
            if let Some((k, code)) = failure {
                if let Some(before) = before {
                    let clock = self.clock;
                    let last_timestamp = self.last_timestamp;
                    *self = before;
                    // Timestamps are consumed whatever happens.
                    self.clock = clock;
                    self.last_timestamp = last_timestamp;
                }
                for (j, c) in codes.iter_mut().enumerate().take(last + 1).skip(start) {
                    *c = if j == k { code } else { LINKED_EVENT_FAILED };
                }
                on_fail(self, &events[k], code, timestamps[k]);
            }
            start = last + 1;
        }
        codes.iter().enumerate().filter(|(_, c)| **c != 0).map(|(i, c)| (i as u32, *c)).collect()
    }

    // ------------------------------------------------------------- ledgers

    fn create_ledger(&mut self, l: &Ledger, ts: u64) -> LR {
        if l.timestamp != 0 {
            return LR::TimestampMustBeZero;
        }
        if l.reserved != [0; 3] {
            return LR::ReservedField;
        }
        if l.id == 0 {
            return LR::IdMustNotBeZero;
        }
        if !asset_is_valid(&l.asset) {
            return LR::AssetInvalid;
        }
        if l.scale > 38 {
            return LR::ScaleInvalid;
        }
        if let Some(e) = self.ledgers.get(&l.id) {
            if e.asset != l.asset {
                return LR::ExistsWithDifferentAsset;
            }
            if e.scale != l.scale {
                return LR::ExistsWithDifferentScale;
            }
            return LR::Exists;
        }
        if self.ledgers.len() >= self.limits.ledgers {
            return LR::LedgersLimitReached;
        }
        self.ledgers.insert(l.id, Ledger { timestamp: ts, ..*l });
        LR::Ok
    }

    // ------------------------------------------------------------ accounts

    fn create_account(&mut self, a: &Account, ts: u64) -> AR {
        if a.timestamp != 0 {
            return AR::TimestampMustBeZero;
        }
        if a.reserved != 0 {
            return AR::ReservedField;
        }
        if a.flags & !0b1_1111 != 0 {
            return AR::ReservedFlag;
        }
        if a.id == 0 {
            return AR::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return AR::IdMustNotBeIntMax;
        }
        if has(a.flags, AF::DEBITS_MUST_NOT_EXCEED_CREDITS) && has(a.flags, AF::CREDITS_MUST_NOT_EXCEED_DEBITS) {
            return AR::FlagsAreMutuallyExclusive;
        }
        if a.debits_pending != 0 {
            return AR::DebitsPendingMustBeZero;
        }
        if a.debits_posted != 0 {
            return AR::DebitsPostedMustBeZero;
        }
        if a.credits_pending != 0 {
            return AR::CreditsPendingMustBeZero;
        }
        if a.credits_posted != 0 {
            return AR::CreditsPostedMustBeZero;
        }
        if a.ledger == 0 {
            return AR::LedgerMustNotBeZero;
        }
        if a.code == 0 {
            return AR::CodeMustNotBeZero;
        }
        if let Some(e) = self.accounts.get(&a.id) {
            let ignore = AF::LINKED | AF::CLOSED;
            if a.flags & !ignore != e.flags & !ignore {
                return AR::ExistsWithDifferentFlags;
            }
            if a.user_data_128 != e.user_data_128 {
                return AR::ExistsWithDifferentUserData128;
            }
            if a.user_data_64 != e.user_data_64 {
                return AR::ExistsWithDifferentUserData64;
            }
            if a.user_data_32 != e.user_data_32 {
                return AR::ExistsWithDifferentUserData32;
            }
            if a.ledger != e.ledger {
                return AR::ExistsWithDifferentLedger;
            }
            if a.code != e.code {
                return AR::ExistsWithDifferentCode;
            }
            return AR::Exists;
        }
        if !self.ledgers.contains_key(&a.ledger) {
            return AR::LedgerNotFound;
        }
        if self.accounts.len() >= self.limits.accounts {
            return AR::AccountsLimitReached;
        }
        self.accounts.insert(a.id, Account { flags: a.flags & !AF::LINKED, timestamp: ts, ..*a });
        AR::Ok
    }

    // ----------------------------------------------------------- transfers

    fn create_transfer(&mut self, t: &Transfer, ts: u64) -> TR {
        let f = t.flags;
        if t.timestamp != 0 {
            return TR::TimestampMustBeZero;
        }
        if f & !0xFF != 0 {
            return TR::ReservedFlag;
        }
        if t.id == 0 {
            return TR::IdMustNotBeZero;
        }
        if t.id == u128::MAX {
            return TR::IdMustNotBeIntMax;
        }
        let pending = has(f, TF::PENDING);
        let post = has(f, TF::POST_PENDING);
        let void = has(f, TF::VOID_PENDING);
        let kinds = pending as u32 + post as u32 + void as u32;
        let balancing_or_closing =
            has(f, TF::BALANCING_DEBIT | TF::BALANCING_CREDIT | TF::CLOSING_DEBIT | TF::CLOSING_CREDIT);
        if kinds > 1 || ((post || void) && balancing_or_closing) {
            return TR::FlagsAreMutuallyExclusive;
        }
        if post || void {
            if t.debit_account_id == u128::MAX {
                return TR::DebitAccountIdMustNotBeIntMax;
            }
            if t.credit_account_id == u128::MAX {
                return TR::CreditAccountIdMustNotBeIntMax;
            }
            if t.pending_id == 0 {
                return TR::PendingIdMustNotBeZero;
            }
            if t.pending_id == u128::MAX {
                return TR::PendingIdMustNotBeIntMax;
            }
            if t.pending_id == t.id {
                return TR::PendingIdMustBeDifferent;
            }
            if t.timeout != 0 {
                return TR::TimeoutReservedForPendingTransfer;
            }
        } else {
            if t.debit_account_id == 0 {
                return TR::DebitAccountIdMustNotBeZero;
            }
            if t.debit_account_id == u128::MAX {
                return TR::DebitAccountIdMustNotBeIntMax;
            }
            if t.credit_account_id == 0 {
                return TR::CreditAccountIdMustNotBeZero;
            }
            if t.credit_account_id == u128::MAX {
                return TR::CreditAccountIdMustNotBeIntMax;
            }
            if t.debit_account_id == t.credit_account_id {
                return TR::AccountsMustBeDifferent;
            }
            if t.pending_id != 0 {
                return TR::PendingIdMustBeZero;
            }
            if t.timeout != 0 && !pending {
                return TR::TimeoutReservedForPendingTransfer;
            }
            if has(f, TF::CLOSING_DEBIT | TF::CLOSING_CREDIT) && !pending {
                return TR::ClosingTransferMustBePending;
            }
            if t.ledger == 0 {
                return TR::LedgerMustNotBeZero;
            }
            if t.code == 0 {
                return TR::CodeMustNotBeZero;
            }
        }
        if let Some(e) = self.transfers.get(&t.id) {
            return self.compare_with_existing(t, e);
        }
        if self.failed.contains_key(&t.id) {
            return TR::IdAlreadyFailed;
        }
        if post || void { self.settle_pending(t, ts) } else { self.create_plain_or_pending(t, ts) }
    }

    /// Re-submission of an existing id: the first difference, else `exists`.
    fn compare_with_existing(&self, t: &Transfer, e: &Transfer) -> TR {
        let post = has(t.flags, TF::POST_PENDING);
        let void = has(t.flags, TF::VOID_PENDING);
        let settle = post || void;
        // For post and void a zero field means "as the pending transfer".
        let same = |given: u128, stored: u128| (settle && given == 0) || given == stored;
        if t.flags & !TF::LINKED != e.flags {
            return TR::ExistsWithDifferentFlags;
        }
        if t.pending_id != e.pending_id {
            return TR::ExistsWithDifferentPendingId;
        }
        if t.timeout != e.timeout {
            return TR::ExistsWithDifferentTimeout;
        }
        if !same(t.debit_account_id, e.debit_account_id) {
            return TR::ExistsWithDifferentDebitAccountId;
        }
        if !same(t.credit_account_id, e.credit_account_id) {
            return TR::ExistsWithDifferentCreditAccountId;
        }
        let amount_matches = if post {
            if t.amount == u128::MAX { e.amount == self.transfers[&e.pending_id].amount } else { t.amount == e.amount }
        } else if void {
            t.amount == 0 || t.amount == u128::MAX || t.amount == e.amount
        } else if has(t.flags, TF::BALANCING_DEBIT | TF::BALANCING_CREDIT) {
            t.amount >= e.amount
        } else {
            t.amount == e.amount
        };
        if !amount_matches {
            return TR::ExistsWithDifferentAmount;
        }
        if !same(t.user_data_128, e.user_data_128) {
            return TR::ExistsWithDifferentUserData128;
        }
        if !same(t.user_data_64 as u128, e.user_data_64 as u128) {
            return TR::ExistsWithDifferentUserData64;
        }
        if !same(t.user_data_32 as u128, e.user_data_32 as u128) {
            return TR::ExistsWithDifferentUserData32;
        }
        if !same(t.ledger as u128, e.ledger as u128) {
            return TR::ExistsWithDifferentLedger;
        }
        if !same(t.code as u128, e.code as u128) {
            return TR::ExistsWithDifferentCode;
        }
        TR::Exists
    }

    fn create_plain_or_pending(&mut self, t: &Transfer, ts: u64) -> TR {
        let pending = has(t.flags, TF::PENDING);
        let Some(dr) = self.accounts.get(&t.debit_account_id).copied() else {
            return TR::DebitAccountNotFound;
        };
        let Some(cr) = self.accounts.get(&t.credit_account_id).copied() else {
            return TR::CreditAccountNotFound;
        };
        if dr.ledger != cr.ledger {
            return TR::AccountsMustHaveTheSameLedger;
        }
        if t.ledger != dr.ledger {
            return TR::TransferMustHaveTheSameLedgerAsAccounts;
        }
        if has(dr.flags, AF::CLOSED) {
            return TR::DebitAccountClosed;
        }
        if has(cr.flags, AF::CLOSED) {
            return TR::CreditAccountClosed;
        }
        let mut amount = t.amount;
        if has(t.flags, TF::BALANCING_DEBIT) {
            // max(0, credits_posted - debits_pending - debits_posted)
            let cap = dr.credits_posted.saturating_sub(dr.debits_pending).saturating_sub(dr.debits_posted);
            amount = amount.min(cap);
        }
        if has(t.flags, TF::BALANCING_CREDIT) {
            let cap = cr.debits_posted.saturating_sub(cr.credits_pending).saturating_sub(cr.credits_posted);
            amount = amount.min(cap);
        }
        if pending {
            if dr.debits_pending.checked_add(amount).is_none() {
                return TR::OverflowsDebitsPending;
            }
            if cr.credits_pending.checked_add(amount).is_none() {
                return TR::OverflowsCreditsPending;
            }
        } else {
            if dr.debits_posted.checked_add(amount).is_none() {
                return TR::OverflowsDebitsPosted;
            }
            if cr.credits_posted.checked_add(amount).is_none() {
                return TR::OverflowsCreditsPosted;
            }
        }
        let Some(dr_debits) = dr.debits_pending.checked_add(dr.debits_posted).and_then(|s| s.checked_add(amount))
        else {
            return TR::OverflowsDebits;
        };
        let Some(cr_credits) = cr.credits_pending.checked_add(cr.credits_posted).and_then(|s| s.checked_add(amount))
        else {
            return TR::OverflowsCredits;
        };
        if pending && t.timeout > 0 && ts as u128 + t.timeout as u128 * NANOS > u64::MAX as u128 {
            return TR::OverflowsTimeout;
        }
        if has(dr.flags, AF::DEBITS_MUST_NOT_EXCEED_CREDITS) && dr_debits > dr.credits_posted {
            return TR::ExceedsCredits;
        }
        if has(cr.flags, AF::CREDITS_MUST_NOT_EXCEED_DEBITS) && cr_credits > cr.debits_posted {
            return TR::ExceedsDebits;
        }
        if self.transfers.len() >= self.limits.transfers {
            return TR::TransfersLimitReached;
        }

        // Apply.
        {
            let dr = self.accounts.get_mut(&t.debit_account_id).unwrap();
            if pending {
                dr.debits_pending += amount;
                if has(t.flags, TF::CLOSING_DEBIT) {
                    dr.flags |= AF::CLOSED;
                }
            } else {
                dr.debits_posted += amount;
            }
        }
        {
            let cr = self.accounts.get_mut(&t.credit_account_id).unwrap();
            if pending {
                cr.credits_pending += amount;
                if has(t.flags, TF::CLOSING_CREDIT) {
                    cr.flags |= AF::CLOSED;
                }
            } else {
                cr.credits_posted += amount;
            }
        }
        self.transfers.insert(t.id, Transfer { amount, flags: t.flags & !TF::LINKED, timestamp: ts, ..*t });
        self.states.insert(t.id, if pending { PendingState::Pending } else { PendingState::None });
        self.record_history(t.debit_account_id, ts);
        self.record_history(t.credit_account_id, ts);
        TR::Ok
    }

    fn settle_pending(&mut self, t: &Transfer, ts: u64) -> TR {
        let post = has(t.flags, TF::POST_PENDING);
        let Some(p) = self.transfers.get(&t.pending_id).copied() else {
            return TR::PendingTransferNotFound;
        };
        if !has(p.flags, TF::PENDING) {
            return TR::PendingTransferNotPending;
        }
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return TR::PendingTransferHasDifferentDebitAccountId;
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return TR::PendingTransferHasDifferentCreditAccountId;
        }
        if t.ledger != 0 && t.ledger != p.ledger {
            return TR::PendingTransferHasDifferentLedger;
        }
        if t.code != 0 && t.code != p.code {
            return TR::PendingTransferHasDifferentCode;
        }
        let amount = if post {
            let a = if t.amount == u128::MAX { p.amount } else { t.amount };
            if a > p.amount {
                return TR::ExceedsPendingTransferAmount;
            }
            a
        } else {
            if !(t.amount == 0 || t.amount == u128::MAX || t.amount == p.amount) {
                return TR::PendingTransferHasDifferentAmount;
            }
            p.amount
        };
        match self.states[&p.id] {
            PendingState::Posted => return TR::PendingTransferAlreadyPosted,
            PendingState::Voided => return TR::PendingTransferAlreadyVoided,
            PendingState::Expired => return TR::PendingTransferExpired,
            PendingState::Pending => {
                // Due but not swept yet.
                if Model::expiry_of(&p).is_some_and(|at| at <= ts) {
                    return TR::PendingTransferExpired;
                }
            }
            PendingState::None => unreachable!("a pending transfer always has a pending state"),
        }
        let dr = self.accounts[&p.debit_account_id];
        let cr = self.accounts[&p.credit_account_id];
        if post {
            if dr.debits_posted.checked_add(amount).is_none() {
                return TR::OverflowsDebitsPosted;
            }
            if cr.credits_posted.checked_add(amount).is_none() {
                return TR::OverflowsCreditsPosted;
            }
        }
        if self.transfers.len() >= self.limits.transfers {
            return TR::TransfersLimitReached;
        }

        // Apply.
        {
            let dr = self.accounts.get_mut(&p.debit_account_id).unwrap();
            dr.debits_pending -= p.amount;
            if post {
                dr.debits_posted += amount;
            } else if has(p.flags, TF::CLOSING_DEBIT) {
                dr.flags &= !AF::CLOSED;
            }
        }
        {
            let cr = self.accounts.get_mut(&p.credit_account_id).unwrap();
            cr.credits_pending -= p.amount;
            if post {
                cr.credits_posted += amount;
            } else if has(p.flags, TF::CLOSING_CREDIT) {
                cr.flags &= !AF::CLOSED;
            }
        }
        self.states.insert(p.id, if post { PendingState::Posted } else { PendingState::Voided });
        let pick = |given: u128, pending: u128| if given == 0 { pending } else { given };
        let stored = Transfer {
            id: t.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: t.pending_id,
            user_data_128: pick(t.user_data_128, p.user_data_128),
            user_data_64: pick(t.user_data_64 as u128, p.user_data_64 as u128) as u64,
            user_data_32: pick(t.user_data_32 as u128, p.user_data_32 as u128) as u32,
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: t.flags & !TF::LINKED,
            timestamp: ts,
        };
        self.transfers.insert(t.id, stored);
        self.states.insert(t.id, PendingState::None);
        self.record_history(p.debit_account_id, ts);
        self.record_history(p.credit_account_id, ts);
        TR::Ok
    }

    fn expire(&mut self, id: u128, ts: u64) {
        let p = self.transfers[&id];
        assert_eq!(self.states[&id], PendingState::Pending);
        {
            let dr = self.accounts.get_mut(&p.debit_account_id).unwrap();
            dr.debits_pending -= p.amount;
            if has(p.flags, TF::CLOSING_DEBIT) {
                dr.flags &= !AF::CLOSED;
            }
        }
        {
            let cr = self.accounts.get_mut(&p.credit_account_id).unwrap();
            cr.credits_pending -= p.amount;
            if has(p.flags, TF::CLOSING_CREDIT) {
                cr.flags &= !AF::CLOSED;
            }
        }
        self.states.insert(id, PendingState::Expired);
        self.record_history(p.debit_account_id, ts);
        self.record_history(p.credit_account_id, ts);
    }

    fn record_history(&mut self, account_id: u128, ts: u64) {
        let a = self.accounts[&account_id];
        if has(a.flags, AF::HISTORY) {
            self.history.push(BalanceRecord {
                account_id,
                debits_pending: a.debits_pending,
                debits_posted: a.debits_posted,
                credits_pending: a.credits_pending,
                credits_posted: a.credits_posted,
                timestamp: ts,
                reserved: 0,
            });
        }
    }

    // ------------------------------------------------------------- queries

    pub fn lookup_accounts(&self, ids: &[u128]) -> Vec<Account> {
        ids.iter().filter_map(|id| self.accounts.get(id).copied()).collect()
    }

    pub fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        ids.iter().filter_map(|id| self.transfers.get(id).copied()).collect()
    }

    pub fn list_ledgers(&self, f: &LedgerFilter) -> Option<Vec<Ledger>> {
        if f.limit == 0 || f.limit > LIMIT_MAX {
            return None;
        }
        Some(self.ledgers.values().filter(|l| l.id > f.after_id).take(f.limit as usize).copied().collect())
    }

    fn filter_is_valid(f: &AccountFilter, sides_required: bool) -> bool {
        !(f.account_id == 0
            || f.account_id == u128::MAX
            || f.limit == 0
            || f.limit > LIMIT_MAX
            || f.timestamp_min == u64::MAX
            || f.timestamp_max == u64::MAX
            || (f.timestamp_max != 0 && f.timestamp_min > f.timestamp_max)
            || f.flags & !FF::ALL != 0
            || f.reserved != [0; 24]
            || (sides_required && f.flags & (FF::DEBITS | FF::CREDITS) == 0))
    }

    fn in_range(f: &AccountFilter, ts: u64) -> bool {
        (f.timestamp_min == 0 || f.timestamp_min <= ts) && (f.timestamp_max == 0 || ts <= f.timestamp_max)
    }

    pub fn account_transfers(&self, f: &AccountFilter) -> Option<Vec<Transfer>> {
        if !Model::filter_is_valid(f, true) {
            return None;
        }
        let mut out: Vec<Transfer> = self
            .transfers
            .values()
            .filter(|t| {
                (has_filter(f, FF::DEBITS) && t.debit_account_id == f.account_id)
                    || (has_filter(f, FF::CREDITS) && t.credit_account_id == f.account_id)
            })
            .filter(|t| Model::in_range(f, t.timestamp))
            .copied()
            .collect();
        out.sort_by_key(|t| t.timestamp);
        if has_filter(f, FF::REVERSED) {
            out.reverse();
        }
        out.truncate(f.limit as usize);
        Some(out)
    }

    pub fn account_balances(&self, f: &AccountFilter) -> Option<Vec<BalanceRecord>> {
        if !Model::filter_is_valid(f, false) {
            return None;
        }
        let mut out: Vec<BalanceRecord> = self
            .history
            .iter()
            .filter(|b| b.account_id == f.account_id && Model::in_range(f, b.timestamp))
            .copied()
            .collect();
        out.sort_by_key(|b| b.timestamp);
        if has_filter(f, FF::REVERSED) {
            out.reverse();
        }
        out.truncate(f.limit as usize);
        Some(out)
    }

    /// Per ledger: (accounts, debits_pending, debits_posted, credits_pending,
    /// credits_posted) with the sums as 256-bit little-endian bytes.
    pub fn ledger_totals(&self) -> BTreeMap<u32, (u64, [[u8; 32]; 4])> {
        let mut out = BTreeMap::new();
        for id in self.ledgers.keys() {
            let mut count = 0u64;
            let mut sums = [(0u128, 0u128); 4];
            for a in self.accounts.values().filter(|a| a.ledger == *id) {
                count += 1;
                let values = [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted];
                for (sum, v) in sums.iter_mut().zip(values) {
                    let (lo, carry) = sum.1.overflowing_add(v);
                    sum.1 = lo;
                    sum.0 += carry as u128;
                }
            }
            let bytes = sums.map(|(hi, lo)| {
                let mut b = [0u8; 32];
                b[..16].copy_from_slice(&lo.to_le_bytes());
                b[16..].copy_from_slice(&hi.to_le_bytes());
                b
            });
            out.insert(*id, (count, bytes));
        }
        out
    }
}

fn has_filter(f: &AccountFilter, flag: u32) -> bool {
    f.flags & flag != 0
}

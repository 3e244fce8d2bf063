//! The fixed-size records of the ledger. Each is `repr(C)`, has no padding and
//! is stored, logged and sent on the wire as its little-endian bytes, so a
//! full batch of transfers (`limits::BATCH_EVENTS_MAX`) is one 1 MiB slice
//! that needs no parsing.

use crate::limits::ASSET_CODE_MAX;
use bytemuck::{Pod, Zeroable};

/// Old path, for the CLI until it imports `crate::limits` (i14 restructure).
pub use crate::limits::BATCH_EVENTS_MAX;

/// Nanoseconds in a second, for pending-transfer timeouts given in seconds.
pub const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A ledger: one asset and its minor-unit scale. Transfers move value only
/// within one ledger.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Ledger {
    pub id: u32,
    /// Digits after the decimal point of one minor unit (USD: 2, JPY: 0).
    pub scale: u8,
    pub reserved: [u8; 3],
    /// ASCII code, zero padded: ISO 4217 ("USD") or a custom one ("POINTS").
    pub asset: [u8; ASSET_CODE_MAX],
    /// Assigned by the engine; must be zero on create.
    pub timestamp: u64,
}

impl Ledger {
    pub const SIZE: usize = 32;

    /// The asset code as text, or `None` if it is not a valid code.
    pub fn asset_str(&self) -> Option<&str> {
        let len = self.asset.iter().position(|&b| b == 0).unwrap_or(ASSET_CODE_MAX);
        let code = &self.asset[..len];
        if !asset_code_is_valid(code) || self.asset[len..].iter().any(|&b| b != 0) {
            return None;
        }
        std::str::from_utf8(code).ok()
    }

    /// Packs an asset code into the fixed field; `None` if it is not valid.
    pub fn pack_asset(code: &str) -> Option<[u8; ASSET_CODE_MAX]> {
        if !asset_code_is_valid(code.as_bytes()) {
            return None;
        }
        let mut out = [0u8; ASSET_CODE_MAX];
        out[..code.len()].copy_from_slice(code.as_bytes());
        Some(out)
    }
}

/// 1 to 16 characters of A-Z, 0-9, '_', '-' or '.', starting with a letter.
fn asset_code_is_valid(code: &[u8]) -> bool {
    !code.is_empty()
        && code.len() <= ASSET_CODE_MAX
        && code[0].is_ascii_uppercase()
        && code.iter().all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'))
}

/// Flags of an account.
pub mod account_flags {
    /// Chains this event to the next one in the batch: all succeed or none.
    pub const LINKED: u16 = 1 << 0;
    /// Debits (pending + posted) may never exceed posted credits.
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: u16 = 1 << 1;
    /// Credits (pending + posted) may never exceed posted debits.
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: u16 = 1 << 2;
    /// Keep the balances after every change, for balance queries.
    pub const HISTORY: u16 = 1 << 3;
    /// No new transfers may touch the account.
    pub const CLOSED: u16 = 1 << 4;
    pub const ALL: u16 = LINKED | DEBITS_MUST_NOT_EXCEED_CREDITS | CREDITS_MUST_NOT_EXCEED_DEBITS | HISTORY | CLOSED;
}

/// Flags of a transfer.
pub mod transfer_flags {
    /// Chains this event to the next one in the batch: all succeed or none.
    pub const LINKED: u16 = 1 << 0;
    /// Reserve the amount (pending balances) until posted, voided or expired.
    pub const PENDING: u16 = 1 << 1;
    /// Post a pending transfer, fully or partially.
    pub const POST_PENDING: u16 = 1 << 2;
    /// Void a pending transfer.
    pub const VOID_PENDING: u16 = 1 << 3;
    /// Cap the amount at what the debit account can give within its limit.
    pub const BALANCING_DEBIT: u16 = 1 << 4;
    /// Cap the amount at what the credit account can take within its limit.
    pub const BALANCING_CREDIT: u16 = 1 << 5;
    /// Close the debit account (pending only; voiding or expiry reopens it).
    pub const CLOSING_DEBIT: u16 = 1 << 6;
    /// Close the credit account (pending only; voiding or expiry reopens it).
    pub const CLOSING_CREDIT: u16 = 1 << 7;
    pub const ALL: u16 = LINKED
        | PENDING
        | POST_PENDING
        | VOID_PENDING
        | BALANCING_DEBIT
        | BALANCING_CREDIT
        | CLOSING_DEBIT
        | CLOSING_CREDIT;
}

/// An account and its four balances. Accounts are never deleted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Account {
    pub id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub reserved: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    /// Assigned by the engine; must be zero on create.
    pub timestamp: u64,
}

impl Account {
    pub const SIZE: usize = 128;

    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    pub fn balances(&self) -> Balances {
        Balances {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }

    pub fn set_balances(&mut self, b: Balances) {
        self.debits_pending = b.debits_pending;
        self.debits_posted = b.debits_posted;
        self.credits_pending = b.credits_pending;
        self.credits_posted = b.credits_posted;
    }
}

/// The four balances of an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

/// A transfer of `amount` from the debit account to the credit account.
/// Transfers are immutable; corrections are new transfers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Transfer {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    /// For post-pending, `u128::MAX` means "the full pending amount".
    pub amount: u128,
    /// The pending transfer that a post or void settles.
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Seconds until a pending transfer expires; zero never expires.
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    /// Assigned by the engine; must be zero on create.
    pub timestamp: u64,
}

impl Transfer {
    pub const SIZE: usize = 128;

    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// An account's balances right after a change, kept for accounts with the
/// history flag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BalanceRecord {
    pub account_id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    /// The timestamp of the transfer (or expiry) that made the change.
    pub timestamp: u64,
    pub reserved: u64,
}

impl BalanceRecord {
    pub const SIZE: usize = 96;

    pub fn balances(&self) -> Balances {
        Balances {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }
}

/// A transfer id that was rejected for a reason that depends on state; it can
/// never be used again, so a retry can never succeed where the original failed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FailedTransfer {
    pub id: u128,
    pub timestamp: u64,
    /// The original `CreateTransferResult` code.
    pub code: u32,
    pub reserved: u32,
}

impl FailedTransfer {
    pub const SIZE: usize = 32;
}

/// Which of an account's transfers a query returns.
pub mod filter_flags {
    /// Transfers where the account is debited.
    pub const DEBITS: u32 = 1 << 0;
    /// Transfers where the account is credited.
    pub const CREDITS: u32 = 1 << 1;
    /// Newest first.
    pub const REVERSED: u32 = 1 << 2;
    pub const ALL: u32 = DEBITS | CREDITS | REVERSED;
}

/// A query for an account's transfers or balance history.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AccountFilter {
    pub account_id: u128,
    /// Inclusive; zero means no lower bound.
    pub timestamp_min: u64,
    /// Inclusive; zero means no upper bound.
    pub timestamp_max: u64,
    /// At most this many results, 1 to `BATCH_EVENTS_MAX`.
    pub limit: u32,
    pub flags: u32,
    pub reserved: [u8; 24],
}

impl AccountFilter {
    pub const SIZE: usize = 64;
}

/// A page of ledgers: ids strictly after `after_id`, at most `limit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LedgerFilter {
    pub after_id: u32,
    pub limit: u32,
}

impl LedgerFilter {
    pub const SIZE: usize = 8;
}

/// Batch sizes in `limits` are computed from the largest record.
const _: () = assert!(Ledger::SIZE <= crate::limits::RECORD_SIZE_MAX);
const _: () = assert!(Account::SIZE <= crate::limits::RECORD_SIZE_MAX);
const _: () = assert!(Transfer::SIZE <= crate::limits::RECORD_SIZE_MAX);

const _: () = {
    assert!(std::mem::size_of::<Ledger>() == Ledger::SIZE);
    assert!(std::mem::size_of::<Account>() == Account::SIZE);
    assert!(std::mem::size_of::<Transfer>() == Transfer::SIZE);
    assert!(std::mem::size_of::<BalanceRecord>() == BalanceRecord::SIZE);
    assert!(std::mem::size_of::<FailedTransfer>() == FailedTransfer::SIZE);
    assert!(std::mem::size_of::<AccountFilter>() == AccountFilter::SIZE);
    assert!(std::mem::size_of::<LedgerFilter>() == LedgerFilter::SIZE);
};

/// Decodes records from a byte slice whose length is a multiple of the record
/// size; `None` otherwise. Works for any alignment of `bytes`.
pub fn decode_all<T: Pod>(bytes: &[u8]) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    Some(bytes.chunks_exact(size).map(bytemuck::pod_read_unaligned).collect())
}

/// Reads record `index` from a slice of records; the caller checked the length.
#[inline]
pub fn decode_at<T: Pod>(bytes: &[u8], index: usize) -> T {
    let size = std::mem::size_of::<T>();
    bytemuck::pod_read_unaligned(&bytes[index * size..(index + 1) * size])
}

/// The little-endian bytes of a slice of records.
pub fn encode_all<T: Pod>(records: &[T]) -> &[u8] {
    bytemuck::cast_slice(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_codes() {
        assert!(Ledger::pack_asset("USD").is_some());
        assert!(Ledger::pack_asset("ACME_POINTS.V2").is_some());
        assert!(Ledger::pack_asset("").is_none());
        assert!(Ledger::pack_asset("usd").is_none());
        assert!(Ledger::pack_asset("1USD").is_none());
        assert!(Ledger::pack_asset("ABCDEFGHIJKLMNOPQ").is_none());
        let ledger = Ledger { asset: Ledger::pack_asset("EUR").unwrap(), ..Default::default() };
        assert_eq!(ledger.asset_str(), Some("EUR"));
        let mut bad = ledger;
        bad.asset[5] = b'X';
        assert_eq!(bad.asset_str(), None, "bytes after the terminator must be zero");
    }

    #[test]
    fn records_round_trip_through_bytes() {
        let t =
            Transfer { id: 7, amount: u128::MAX - 1, flags: transfer_flags::PENDING, timeout: 9, ..Default::default() };
        let bytes = encode_all(std::slice::from_ref(&t)).to_vec();
        assert_eq!(bytes.len(), Transfer::SIZE);
        assert_eq!(decode_all::<Transfer>(&bytes).unwrap(), vec![t]);
        assert!(decode_all::<Transfer>(&bytes[1..]).is_none());
        // Unaligned input decodes too.
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode_at::<Transfer>(&shifted[1..], 0), t);
    }
}

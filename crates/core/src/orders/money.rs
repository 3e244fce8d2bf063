//! How orders map onto the ledger: derived account and transfer ids, the fee
//! rule and the FX conversion. All integer arithmetic, all deterministic.
//!
//! Per ledger (asset) the order flow uses seven system accounts and one
//! account per customer, created on first use:
//!
//! | kind | role |
//! | --- | --- |
//! | bank_in | money arriving from senders' banks (debited by incoming funds) |
//! | bank_out | money returned to senders' banks (credited by refunds) |
//! | escrow | holds: the sender's funds are reserved here (pending) |
//! | fees | fees earned |
//! | liquidity | the house's FX position in this asset |
//! | payout_clearing | converted money waiting to be paid out |
//! | rail | money paid out to recipients through the payout rail |
//! | customer | the sender's balance (debits may not exceed credits) |

use crate::records::{Account, Transfer, account_flags};

/// The accounts of the order flow in one ledger.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    BankIn = 1,
    BankOut = 2,
    Escrow = 3,
    Fees = 4,
    Liquidity = 5,
    PayoutClearing = 6,
    Rail = 7,
    Customer = 8,
}

impl AccountKind {
    pub const SYSTEM: [AccountKind; 7] = [
        AccountKind::BankIn,
        AccountKind::BankOut,
        AccountKind::Escrow,
        AccountKind::Fees,
        AccountKind::Liquidity,
        AccountKind::PayoutClearing,
        AccountKind::Rail,
    ];

    /// The account `code` of accounts of this kind (9001..=9008).
    pub fn code(self) -> u16 {
        9000 + self as u16
    }
}

/// The id of an order-flow account: a hash of kind, ledger and (for
/// customer accounts) the customer, so every replica derives the same id.
pub fn account_id(kind: AccountKind, ledger: u32, customer_id: u128) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(b"bursar/order-account/v1");
    h.update(&[kind as u8]);
    h.update(&ledger.to_le_bytes());
    h.update(&customer_id.to_le_bytes());
    usable_id(h.finalize())
}

/// The id of the order's `seq`-th ledger transfer. Every attempt takes new
/// sequence numbers, so an id burned by a rejected attempt is never reused.
pub fn transfer_id(order_id: u128, seq: u32) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(b"bursar/order-transfer/v1");
    h.update(&order_id.to_le_bytes());
    h.update(&seq.to_le_bytes());
    usable_id(h.finalize())
}

fn usable_id(hash: blake3::Hash) -> u128 {
    let id = u128::from_le_bytes(hash.as_bytes()[..16].try_into().expect("a blake3 hash has 32 bytes"));
    id.clamp(1, u128::MAX - 1)
}

/// The account record the order flow creates for `kind` in `ledger`.
pub fn account(kind: AccountKind, ledger: u32, customer_id: u128) -> Account {
    let flags = if kind == AccountKind::Customer { account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS } else { 0 };
    Account {
        id: account_id(kind, ledger, customer_id),
        user_data_128: if kind == AccountKind::Customer { customer_id } else { 0 },
        ledger,
        code: kind.code(),
        flags,
        ..Default::default()
    }
}

/// A fee schedule: `fixed + ceil(amount × bps / 10_000)`, then clamped to
/// `[min, max]` (`max` 0 = no cap). Rounding is up, in minor units, so a fee
/// is never less than the advertised rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeeSchedule {
    pub fixed: u128,
    pub bps: u32,
    pub min: u128,
    pub max: u128,
}

impl FeeSchedule {
    /// The fee for `amount`; `None` if it overflows.
    pub fn fee(&self, amount: u128) -> Option<u128> {
        let proportional = mul_div(amount, u128::from(self.bps), 10_000, Rounding::Up)?;
        let fee = self.fixed.checked_add(proportional)?.max(self.min);
        Some(if self.max != 0 { fee.min(self.max) } else { fee })
    }
}

/// Scale of FX rates: `rate_ppb` is target minor units per source minor unit
/// times 10^9.
pub const RATE_SCALE: u128 = 1_000_000_000;

/// The target amount for `net` source minor units at `rate_ppb`, rounded
/// DOWN to a whole target minor unit: the recipient never gets more than
/// the quote pays, and the fraction stays in the house's liquidity account.
/// `None` if the result does not fit in 128 bits.
pub fn convert(net: u128, rate_ppb: u128) -> Option<u128> {
    mul_div(net, rate_ppb, RATE_SCALE, Rounding::Down)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    Down,
    Up,
}

/// `a × b / d` with a 256-bit intermediate; `None` if the quotient does not
/// fit in 128 bits. `d` must not be zero.
pub fn mul_div(a: u128, b: u128, d: u128, rounding: Rounding) -> Option<u128> {
    assert!(d != 0, "mul_div by zero");
    let (hi, lo) = mul_wide(a, b);
    if hi >= d {
        return None;
    }
    let (q, r) = div_wide(hi, lo, d);
    match rounding {
        Rounding::Down => Some(q),
        Rounding::Up if r == 0 => Some(q),
        Rounding::Up => q.checked_add(1),
    }
}

/// The full 256-bit product as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let lo = (p00 & MASK) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// Divides the 256-bit (hi, lo) by `d` (hi < d), bit by bit: quotient and
/// remainder. Only runs for FX and fees, so clarity beats speed here.
fn div_wide(hi: u128, lo: u128, d: u128) -> (u128, u128) {
    debug_assert!(hi < d);
    let mut r = hi;
    let mut q = 0u128;
    for i in (0..128).rev() {
        let carry = r >> 127;
        r = (r << 1) | ((lo >> i) & 1);
        q <<= 1;
        if carry == 1 || r >= d {
            r = r.wrapping_sub(d);
            q |= 1;
        }
    }
    (q, r)
}

/// Builds the transfers of one order step. Every transfer but the last is
/// linked, so the step's transfers apply together or not at all.
pub struct Movement {
    order_id: u128,
    code: u16,
    next_seq: u32,
    pub transfers: Vec<Transfer>,
}

impl Movement {
    pub fn new(order_id: u128, first_seq: u32, code: u16) -> Movement {
        Movement { order_id, code, next_seq: first_seq, transfers: Vec::new() }
    }

    fn take_id(&mut self) -> (u128, u32) {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).expect("invariant: an order makes far fewer than 2^32 transfers");
        (transfer_id(self.order_id, seq), seq)
    }

    /// A posted (or, with `pending`, reserved) transfer; returns its sequence.
    pub fn transfer(&mut self, ledger: u32, debit: u128, credit: u128, amount: u128, pending: bool) -> u32 {
        let (id, seq) = self.take_id();
        let flags = if pending { crate::records::transfer_flags::PENDING } else { 0 };
        self.transfers.push(Transfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
            user_data_128: self.order_id,
            ledger,
            code: self.code,
            flags,
            ..Default::default()
        });
        seq
    }

    /// Posts (fully) or voids the pending transfer with sequence `pending_seq`.
    pub fn settle(&mut self, pending_seq: u32, post: bool) {
        use crate::records::transfer_flags::{POST_PENDING, VOID_PENDING};
        let (id, _) = self.take_id();
        self.transfers.push(Transfer {
            id,
            pending_id: transfer_id(self.order_id, pending_seq),
            amount: if post { u128::MAX } else { 0 },
            flags: if post { POST_PENDING } else { VOID_PENDING },
            ..Default::default()
        });
    }

    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// The transfers, linked into one chain.
    pub fn linked(mut self) -> Vec<Transfer> {
        let n = self.transfers.len();
        for t in self.transfers.iter_mut().take(n.saturating_sub(1)) {
            t.flags |= crate::records::transfer_flags::LINKED;
        }
        self.transfers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_div_is_exact_and_rounds_as_documented() {
        assert_eq!(mul_div(10, 3, 4, Rounding::Down), Some(7));
        assert_eq!(mul_div(10, 3, 4, Rounding::Up), Some(8));
        assert_eq!(mul_div(12, 3, 4, Rounding::Up), Some(9));
        // The intermediate exceeds 128 bits but the quotient fits.
        assert_eq!(mul_div(u128::MAX, 1_000_000_000, 1_000_000_000, Rounding::Down), Some(u128::MAX));
        assert_eq!(mul_div(u128::MAX, 2, 1, Rounding::Down), None);
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX, Rounding::Up), Some(u128::MAX));
        assert_eq!(mul_div(u128::MAX - 1, u128::MAX, u128::MAX, Rounding::Down), Some(u128::MAX - 1));
    }

    #[test]
    fn fees_round_up_and_clamp() {
        let s = FeeSchedule { fixed: 30, bps: 150, min: 50, max: 1_000 };
        assert_eq!(s.fee(10_000), Some(180), "30 + 1.5% of 100.00");
        assert_eq!(s.fee(1), Some(50), "30 + ceil(0.015) = 31, raised to the minimum");
        assert_eq!(s.fee(10_000_000), Some(1_000), "capped");
        assert_eq!(FeeSchedule { bps: 1, ..Default::default() }.fee(1), Some(1), "any fraction rounds up");
    }

    #[test]
    fn conversion_rounds_down() {
        assert_eq!(convert(10_000, 920_000_000), Some(9_200));
        assert_eq!(convert(1, 920_000_000), Some(0), "0.92 of a cent rounds down to nothing");
        assert_eq!(convert(333, 1_500_000_001), Some(499));
        assert_eq!(convert(u128::MAX, 2 * RATE_SCALE), None);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(transfer_id(1, 0), transfer_id(1, 0));
        assert_ne!(transfer_id(1, 0), transfer_id(1, 1));
        assert_ne!(transfer_id(1, 0), transfer_id(2, 0));
        assert_ne!(account_id(AccountKind::Escrow, 1, 0), account_id(AccountKind::Escrow, 2, 0));
        assert_ne!(account_id(AccountKind::Customer, 1, 7), account_id(AccountKind::Customer, 1, 8));
    }
}

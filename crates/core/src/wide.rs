//! A 256-bit unsigned sum, for ledger totals: each account balance fits in a
//! u128, but the sum over many accounts may not.

use std::fmt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sum256 {
    hi: u128,
    lo: u128,
}

impl Sum256 {
    pub const ZERO: Sum256 = Sum256 { hi: 0, lo: 0 };

    pub fn from_u128(v: u128) -> Self {
        Sum256 { hi: 0, lo: v }
    }

    pub fn plus(self, v: u128) -> Self {
        let (lo, carry) = self.lo.overflowing_add(v);
        let hi =
            self.hi.checked_add(u128::from(carry)).expect("invariant: a 256-bit sum of u128 balances never overflows");
        Sum256 { hi, lo }
    }

    pub fn minus(self, v: u128) -> Self {
        let (lo, borrow) = self.lo.overflowing_sub(v);
        let hi = self.hi.checked_sub(u128::from(borrow)).expect("invariant: a ledger total never goes below zero");
        Sum256 { hi, lo }
    }

    pub fn to_le_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&self.lo.to_le_bytes());
        out[16..].copy_from_slice(&self.hi.to_le_bytes());
        out
    }

    /// Divides by a small divisor, returning quotient and remainder.
    fn div_rem_small(self, d: u64) -> (Sum256, u64) {
        // Long division over four 64-bit limbs, most significant first.
        let limbs = [(self.hi >> 64) as u64, self.hi as u64, (self.lo >> 64) as u64, self.lo as u64];
        let mut q = [0u64; 4];
        let mut rem: u128 = 0;
        for (i, limb) in limbs.iter().enumerate() {
            let cur = (rem << 64) | u128::from(*limb);
            q[i] = (cur / u128::from(d)) as u64;
            rem = cur % u128::from(d);
        }
        let hi = (u128::from(q[0]) << 64) | u128::from(q[1]);
        let lo = (u128::from(q[2]) << 64) | u128::from(q[3]);
        (Sum256 { hi, lo }, rem as u64)
    }
}

impl fmt::Display for Sum256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hi == 0 {
            return write!(f, "{}", self.lo);
        }
        const CHUNK: u64 = 10_000_000_000_000_000_000; // 10^19
        let mut parts = Vec::new();
        let mut v = *self;
        while v != Sum256::ZERO {
            let (q, r) = v.div_rem_small(CHUNK);
            parts.push(r);
            v = q;
        }
        let mut s = format!("{}", parts.pop().expect("a nonzero value has a leading part"));
        for p in parts.iter().rev() {
            s.push_str(&format!("{p:019}"));
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_and_prints() {
        let s = Sum256::from_u128(u128::MAX).plus(1);
        assert_eq!(s.to_string(), "340282366920938463463374607431768211456");
        assert_eq!(s.minus(1), Sum256::from_u128(u128::MAX));
        assert_eq!(Sum256::from_u128(42).to_string(), "42");
        let big = Sum256::from_u128(u128::MAX).plus(u128::MAX);
        assert_eq!(big.to_string(), "680564733841876926926749214863536422910");
    }
}

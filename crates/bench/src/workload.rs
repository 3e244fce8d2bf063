//! The benchmark's workload: which accounts each transfer moves money
//! between, and the benchmark's own tally of what the balances must be.

use bursar_core::{Account, EventResult, Ledger, Transfer};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution as _, Zipf};

/// The ledger the benchmark uses; creating it again is harmless.
pub const BENCH_LEDGER: u32 = 0xBE7C;
pub const BENCH_CODE: u16 = 1;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Every account equally likely.
    Uniform,
    /// A few hot accounts take most transfers (Zipf, exponent 1).
    Zipfian,
}

pub fn bench_ledger() -> Ledger {
    Ledger {
        id: BENCH_LEDGER,
        scale: 2,
        asset: Ledger::pack_asset("BENCH").expect("valid asset code"),
        ..Default::default()
    }
}

/// Ids of one run: a per-run prefix keeps runs against one server apart.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    pub run: u64,
}

impl Ids {
    pub fn account(&self, index: u64) -> u128 {
        (u128::from(self.run) << 64) | u128::from(index + 1)
    }

    pub fn account_index(&self, id: u128) -> usize {
        ((id & u128::from(u64::MAX)) - 1) as usize
    }

    pub fn transfer(&self, index: u64) -> u128 {
        (u128::from(self.run) << 64) | (1u128 << 63) | u128::from(index + 1)
    }
}

pub fn account(ids: &Ids, index: u64) -> Account {
    Account { id: ids.account(index), ledger: BENCH_LEDGER, code: BENCH_CODE, ..Default::default() }
}

/// Draws account pairs and amounts.
pub struct Generator {
    rng: SmallRng,
    accounts: u64,
    zipf: Option<Zipf<f64>>,
}

impl Generator {
    pub fn new(distribution: Distribution, accounts: u64, seed: u64) -> Generator {
        assert!(accounts >= 2, "transfers need two distinct accounts");
        let zipf = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipfian => Some(Zipf::new(accounts as f64, 1.0).expect("valid Zipf parameters")),
        };
        Generator { rng: SmallRng::seed_from_u64(seed), accounts, zipf }
    }

    fn pick(&mut self) -> u64 {
        match &self.zipf {
            // Zipf draws 1..=n; rank 1 is the hottest account.
            Some(z) => (z.sample(&mut self.rng) as u64).clamp(1, self.accounts) - 1,
            None => self.rng.random_range(0..self.accounts),
        }
    }

    /// Fills `batch` with transfers `first..first + count`.
    pub fn fill(&mut self, ids: &Ids, first: u64, count: usize, batch: &mut Vec<Transfer>) {
        batch.clear();
        for i in 0..count as u64 {
            let debit = self.pick();
            let mut credit = self.pick();
            if credit == debit {
                credit = (debit + 1 + self.rng.random_range(0..self.accounts - 1)) % self.accounts;
            }
            batch.push(Transfer {
                id: ids.transfer(first + i),
                debit_account_id: ids.account(debit),
                credit_account_id: ids.account(credit),
                amount: u128::from(self.rng.random_range(1..=1000u32)),
                ledger: BENCH_LEDGER,
                code: BENCH_CODE,
                ..Default::default()
            });
        }
    }
}

/// Expected posted balances, from acknowledged transfers only.
#[derive(Clone)]
pub struct Tally {
    pub debits: Vec<u128>,
    pub credits: Vec<u128>,
    pub applied: u64,
    pub rejected: u64,
    pub first_rejection: Option<(u128, u32)>,
}

impl Tally {
    pub fn new(accounts: u64) -> Tally {
        Tally {
            debits: vec![0; accounts as usize],
            credits: vec![0; accounts as usize],
            applied: 0,
            rejected: 0,
            first_rejection: None,
        }
    }

    /// Records an acknowledged batch: sparse results name the failures.
    pub fn record(&mut self, ids: &Ids, batch: &[Transfer], results: &[EventResult]) {
        let mut failed = results.iter().peekable();
        for (i, t) in batch.iter().enumerate() {
            if failed.peek().is_some_and(|r| r.index as usize == i) {
                let r = failed.next().expect("peeked");
                self.rejected += 1;
                self.first_rejection.get_or_insert((t.id, r.code));
                continue;
            }
            self.debits[ids.account_index(t.debit_account_id)] += t.amount;
            self.credits[ids.account_index(t.credit_account_id)] += t.amount;
            self.applied += 1;
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        for (a, b) in self.debits.iter_mut().zip(&other.debits) {
            *a += b;
        }
        for (a, b) in self.credits.iter_mut().zip(&other.credits) {
            *a += b;
        }
        self.applied += other.applied;
        self.rejected += other.rejected;
        if self.first_rejection.is_none() {
            self.first_rejection = other.first_rejection;
        }
    }

    /// Compares with the server's accounts; describes the first mismatch.
    pub fn check(&self, ids: &Ids, accounts: &[Account]) -> Result<(), String> {
        if accounts.len() != self.debits.len() {
            return Err(format!("expected {} accounts, the server has {}", self.debits.len(), accounts.len()));
        }
        for a in accounts {
            let i = ids.account_index(a.id);
            if a.debits_posted != self.debits[i] || a.credits_posted != self.credits[i] {
                return Err(format!(
                    "account {}: server has debits {} credits {}, the acknowledged transfers sum to debits {} credits {}",
                    a.id, a.debits_posted, a.credits_posted, self.debits[i], self.credits[i]
                ));
            }
            if a.debits_pending != 0 || a.credits_pending != 0 {
                return Err(format!("account {} has pending balances but the benchmark made none", a.id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_picks_distinct_accounts_in_range() {
        for dist in [Distribution::Uniform, Distribution::Zipfian] {
            let ids = Ids { run: 7 };
            let mut g = Generator::new(dist, 5, 1);
            let mut batch = Vec::new();
            g.fill(&ids, 0, 1000, &mut batch);
            assert_eq!(batch.len(), 1000);
            for t in &batch {
                assert_ne!(t.debit_account_id, t.credit_account_id);
                assert!(ids.account_index(t.debit_account_id) < 5 && ids.account_index(t.credit_account_id) < 5);
            }
        }
    }

    #[test]
    fn zipfian_is_skewed() {
        let ids = Ids { run: 1 };
        let mut g = Generator::new(Distribution::Zipfian, 1000, 3);
        let mut batch = Vec::new();
        g.fill(&ids, 0, 10_000, &mut batch);
        let hot = batch.iter().filter(|t| ids.account_index(t.debit_account_id) == 0).count();
        assert!(hot > 500, "account 0 should be hot, got {hot} of 10000");
    }

    #[test]
    fn tally_skips_rejected_transfers() {
        let ids = Ids { run: 1 };
        let mut g = Generator::new(Distribution::Uniform, 3, 1);
        let mut batch = Vec::new();
        g.fill(&ids, 0, 3, &mut batch);
        let mut tally = Tally::new(3);
        tally.record(&ids, &batch, &[EventResult { index: 1, code: 58 }]);
        assert_eq!(tally.applied, 2);
        assert_eq!(tally.rejected, 1);
        assert_eq!(tally.first_rejection, Some((batch[1].id, 58)));
        let total_debits: u128 = tally.debits.iter().sum();
        assert_eq!(total_debits, batch[0].amount + batch[2].amount);
    }
}

//! The bank workload: `accounts` accounts that may not overdraw, each
//! funded with [`FUNDS`] from a mint; clients move random small amounts
//! between them, one transfer per request, through random replicas, and
//! record each transfer's outcome as the client saw it. Every few
//! transfers a client reads all the accounts in one request: money must be
//! conserved in every read.

use super::Shared;
use anyhow::{Context, bail};
use bursar_client::{Client, ClientError, ClientOptions};
use bursar_core::records::account_flags;
use bursar_core::{
    Account, CreateAccountResult, CreateLedgerResult, CreateTransferResult, EventResult, Ledger, Transfer,
};
use bursar_proto::ProtocolError;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub const LEDGER: u32 = 1;
const CODE: u16 = 1;
/// Each account's opening balance.
pub const FUNDS: u128 = 1_000_000;
/// Bound on one request, above the replicas' 20 s proposal deadline so an
/// unconfirmed commit is reported by the server rather than by a timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A client reads all the accounts after every this many transfers.
const READ_EVERY: usize = 5;
const SETUP_ATTEMPTS: u32 = 5;

/// How a transfer ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    /// A definite refusal: a result code or a protocol error named here.
    Rejected(&'static str),
    /// No definite answer (outcome unknown, a broken connection, a
    /// timeout): it may or may not have been applied.
    Unknown,
}

/// One transfer a client sent, and what it learned.
#[derive(Clone, Debug)]
pub struct Op {
    pub id: u128,
    pub debit: u128,
    pub credit: u128,
    pub amount: u128,
    pub outcome: Outcome,
}

pub struct Bank {
    pub accounts: u64,
    pub addrs: Vec<String>,
    seed: u64,
}

impl Bank {
    pub fn new(accounts: u64, addrs: Vec<String>, seed: u64) -> Bank {
        Bank { accounts, addrs, seed }
    }

    /// The accounts money moves between: ids 1..=accounts.
    pub fn account_ids(&self) -> Vec<u128> {
        (1..=u128::from(self.accounts)).collect()
    }

    /// The account that funds the others (it may go negative).
    pub fn mint(&self) -> u128 {
        u128::from(self.accounts) + 1
    }

    /// Every account, the mint last.
    pub fn all_ids(&self) -> Vec<u128> {
        let mut ids = self.account_ids();
        ids.push(self.mint());
        ids
    }

    /// What the accounts hold together, always.
    pub fn total(&self) -> u128 {
        u128::from(self.accounts) * FUNDS
    }

    pub fn replica_name(i: usize) -> String {
        format!("r{}", i + 1)
    }

    /// Creates the ledger and the accounts and funds them through the first
    /// replica, then waits until every replica shows the funds. Returns the
    /// funding transfers (acknowledged, checked like the others at the end).
    pub fn setup(&self) -> anyhow::Result<Vec<Op>> {
        let ledger = Ledger {
            id: LEDGER,
            asset: Ledger::pack_asset("CHAOS").expect("a valid asset code"),
            ..Default::default()
        };
        self.create("the ledger", CreateLedgerResult::Exists.code(), |c| c.create_ledgers(&[ledger]))?;
        let accounts: Vec<Account> = self.all_ids().into_iter().map(|id| self.account(id)).collect();
        self.create("the accounts", CreateAccountResult::Exists.code(), |c| c.create_accounts(&accounts))?;
        let funding: Vec<Transfer> =
            self.account_ids().into_iter().map(|id| transfer(id, self.mint(), id, FUNDS)).collect();
        self.create("the funding transfers", CreateTransferResult::Exists.code(), |c| c.create_transfers(&funding))?;
        self.wait_funded()?;
        Ok(funding.iter().map(|t| op(t, Outcome::Acked)).collect())
    }

    fn account(&self, id: u128) -> Account {
        let flags = if id == self.mint() { 0 } else { account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS };
        Account { id, ledger: LEDGER, code: CODE, flags, ..Default::default() }
    }

    /// One setup request; retried (ids make that harmless) while its
    /// outcome is unknown. `exists` is the result code of a repeat.
    fn create(
        &self,
        what: &str,
        exists: u32,
        call: impl Fn(&mut Client) -> bursar_client::Result<Vec<EventResult>>,
    ) -> anyhow::Result<()> {
        let mut attempt = 1;
        loop {
            match connect(&self.addrs[0]).and_then(|mut c| call(&mut c)) {
                Ok(results) => {
                    if let Some(r) = results.iter().find(|r| r.code != exists) {
                        bail!("creating {what}: event {} failed with result code {}", r.index, r.code);
                    }
                    return Ok(());
                }
                Err(e) if e.is_indefinite() && attempt < SETUP_ATTEMPTS => {
                    eprintln!("chaos: creating {what}: {e}; retrying");
                    attempt += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e).with_context(|| format!("creating {what}")),
            }
        }
    }

    /// Waits until every replica applied the funding, so that every read
    /// from now on must find the total.
    fn wait_funded(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut waiting = Vec::new();
            for (i, addr) in self.addrs.iter().enumerate() {
                let accounts = connect(addr).and_then(|mut c| c.lookup_accounts(&self.account_ids()));
                match accounts.map_err(|e| e.to_string()).and_then(|a| self.conserved(&a)) {
                    Ok(()) => {}
                    Err(why) => waiting.push(format!("{}: {why}", Bank::replica_name(i))),
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the replicas did not all show the funding after 60 s: {}", waiting.join("; "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `accounts` (the non-mint ones, one read) hold the total.
    pub fn conserved(&self, accounts: &[Account]) -> Result<(), String> {
        if accounts.len() as u64 != self.accounts {
            return Err(format!("found {} of the {} accounts", accounts.len(), self.accounts));
        }
        let credits: u128 = accounts.iter().map(|a| a.credits_posted).sum();
        let debits: u128 = accounts.iter().map(|a| a.debits_posted).sum();
        let pending = accounts.iter().any(|a| a.debits_pending != 0 || a.credits_pending != 0);
        if credits.checked_sub(debits) == Some(self.total()) && !pending {
            return Ok(());
        }
        let balances: Vec<String> = accounts
            .iter()
            .map(|a| format!("{}: debits {} credits {}", a.id, a.debits_posted, a.credits_posted))
            .collect();
        Err(format!(
            "credits_posted - debits_posted sum to {credits} - {debits}, not {}{}; balances: {}",
            self.total(),
            if pending { " (and pending amounts are not zero)" } else { "" },
            balances.join(", ")
        ))
    }

    /// One client's loop until the run stops; returns what it sent.
    pub fn client(&self, client: u64, shared: &Shared) -> Vec<Op> {
        let seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(client + 1);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut conns: Vec<Option<Client>> = self.addrs.iter().map(|_| None).collect();
        let id_base = u128::from(client + 1) << 64;
        let mut ops = Vec::new();
        let mut counter = 0u128;
        while !shared.stopped() {
            counter += 1;
            let t = self.random_transfer(&mut rng, id_base | counter);
            let r = rng.random_range(0..self.addrs.len());
            let Some(conn) = connection(&mut conns[r], &self.addrs[r]) else {
                // Not sent (the replica is down): nothing to record.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let (outcome, usable) = classify(conn.create_transfers(&[t]));
            if !usable {
                conns[r] = None;
            }
            let counter = match outcome {
                Outcome::Acked => &shared.acked,
                Outcome::Rejected(_) => &shared.rejected,
                Outcome::Unknown => &shared.unknown,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            ops.push(op(&t, outcome));
            if ops.len() % READ_EVERY == 0 {
                let r = rng.random_range(0..self.addrs.len());
                self.read(&mut conns[r], r, shared);
            }
        }
        ops
    }

    fn random_transfer(&self, rng: &mut SmallRng, id: u128) -> Transfer {
        let debit = rng.random_range(0..self.accounts);
        let credit = (debit + 1 + rng.random_range(0..self.accounts - 1)) % self.accounts;
        let amount = rng.random_range(1..=100u32);
        transfer(id, u128::from(debit) + 1, u128::from(credit) + 1, u128::from(amount))
    }

    /// Reads every account in one request on replica `r`; money must be
    /// conserved. An unavailable replica is expected under faults.
    fn read(&self, conn: &mut Option<Client>, r: usize, shared: &Shared) {
        let Some(c) = connection(conn, &self.addrs[r]) else { return };
        match c.lookup_accounts(&self.account_ids()) {
            Ok(accounts) => {
                shared.reads.fetch_add(1, Ordering::Relaxed);
                if let Err(why) = self.conserved(&accounts) {
                    shared.read_violations.fetch_add(1, Ordering::Relaxed);
                    shared.anomaly(format_args!("a read on {}: {why}", Bank::replica_name(r)));
                }
            }
            Err(ClientError::Server { .. }) => {}
            Err(_) => *conn = None,
        }
    }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: LEDGER,
        code: CODE,
        ..Default::default()
    }
}

fn op(t: &Transfer, outcome: Outcome) -> Op {
    Op { id: t.id, debit: t.debit_account_id, credit: t.credit_account_id, amount: t.amount, outcome }
}

pub fn connect(addr: &str) -> bursar_client::Result<Client> {
    let key = Some(super::procs::ADMIN_KEY.to_string());
    Client::connect(addr, &ClientOptions { timeout: CLIENT_TIMEOUT, key, ..Default::default() })
}

/// The cached connection to a replica, connecting lazily; `None` while
/// the replica does not accept connections.
fn connection<'a>(slot: &'a mut Option<Client>, addr: &str) -> Option<&'a mut Client> {
    if slot.is_none() {
        *slot = connect(addr).ok();
    }
    slot.as_mut()
}

/// A transfer's outcome from the reply, and whether the connection can
/// still be used. Only what the server definitely refused is a rejection;
/// anything that may have been applied is unknown.
fn classify(result: bursar_client::Result<Vec<EventResult>>) -> (Outcome, bool) {
    match result {
        Ok(results) => match results.first() {
            None => (Outcome::Acked, true),
            Some(r) => {
                let name = CreateTransferResult::from_code(r.code).map_or("unknown_result_code", |c| c.name());
                (Outcome::Rejected(name), true)
            }
        },
        Err(e) => {
            let protocol = e.protocol_error();
            let usable = protocol.is_some_and(|p| !p.closes_connection());
            match protocol {
                _ if e.is_indefinite() => (Outcome::Unknown, usable),
                // The reply was lost when the server stopped: it may be applied.
                Some(ProtocolError::ShuttingDown) | None => (Outcome::Unknown, usable),
                Some(p) => (Outcome::Rejected(p.name()), usable),
            }
        }
    }
}

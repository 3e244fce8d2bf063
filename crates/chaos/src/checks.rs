//! The end of a run: wait until the healed replicas agree, then check the
//! history the clients recorded against every replica's state.

use super::Shared;
use super::bank::{Bank, Op, Outcome};
use super::nemesis::lock;
use super::procs::Procs;
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_core::{Account, Transfer};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound on the replicas agreeing after the faults are healed.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Problems printed per check; the rest are counted.
const EXAMPLES: usize = 5;

/// One replica's state as far as the run is concerned: every account and
/// every transfer of the history it holds.
pub struct View {
    pub replica: usize,
    pub accounts: Vec<Account>,
    pub transfers: HashMap<u128, Transfer>,
}

impl View {
    fn name(&self) -> String {
        Bank::replica_name(self.replica)
    }
}

/// Waits (bounded) until every replica answers with the same accounts
/// twice in a row and holds every acknowledged transfer; returns their
/// views. On timeout that is an anomaly, and the views of the replicas
/// that answer are returned for the checks.
pub fn converge(procs: &Mutex<Procs>, bank: &Bank, history: &[Op], shared: &Shared) -> Vec<View> {
    let started = Instant::now();
    let mut previous = None;
    loop {
        lock(procs).restart_crashed(shared);
        let why = match agreed(bank, history, &mut previous) {
            Ok(views) => {
                shared.say(format_args!("replicas converged after {:.1} s", started.elapsed().as_secs_f64()));
                return views;
            }
            Err(why) => why,
        };
        if started.elapsed() > CONVERGE_TIMEOUT {
            shared.anomaly(format_args!("the replicas did not converge within {CONVERGE_TIMEOUT:?}: {why}"));
            return (0..bank.addrs.len()).filter_map(|r| read_view(bank, r, history).ok()).collect();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One convergence round; `Err` says what is not agreed yet.
fn agreed(bank: &Bank, history: &[Op], previous: &mut Option<Vec<Account>>) -> Result<Vec<View>, String> {
    let mut accounts = Vec::new();
    for r in 0..bank.addrs.len() {
        accounts.push(read_accounts(bank, r)?);
    }
    if let Some(r) = (1..accounts.len()).find(|&r| accounts[r] != accounts[0]) {
        *previous = None;
        return Err(format!("{} and {} report different accounts", Bank::replica_name(0), Bank::replica_name(r)));
    }
    // Stable across a round too: a late commit may still be arriving.
    if previous.as_ref() != Some(&accounts[0]) {
        *previous = Some(accounts[0].clone());
        return Err("the balances changed since the last look".into());
    }
    let views: Vec<View> = (0..bank.addrs.len()).map(|r| read_view(bank, r, history)).collect::<Result<_, _>>()?;
    for v in &views {
        let missing =
            history.iter().filter(|o| o.outcome == Outcome::Acked && !v.transfers.contains_key(&o.id)).count();
        if missing > 0 {
            return Err(format!("{} lacks {missing} acknowledged transfers", v.name()));
        }
    }
    Ok(views)
}

fn read_accounts(bank: &Bank, r: usize) -> Result<Vec<Account>, String> {
    let reading = |e: bursar_client::ClientError| format!("reading {}: {e}", Bank::replica_name(r));
    let mut client = super::bank::connect(&bank.addrs[r]).map_err(reading)?;
    client.lookup_accounts(&bank.all_ids()).map_err(reading)
}

fn read_view(bank: &Bank, r: usize, history: &[Op]) -> Result<View, String> {
    let reading = |e: bursar_client::ClientError| format!("reading {}: {e}", Bank::replica_name(r));
    let accounts = read_accounts(bank, r)?;
    let mut client = super::bank::connect(&bank.addrs[r]).map_err(reading)?;
    let ids: Vec<u128> = history.iter().map(|o| o.id).collect();
    let mut transfers = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(BATCH_EVENTS_MAX) {
        transfers.extend(client.lookup_transfers(chunk).map_err(reading)?.into_iter().map(|t| (t.id, t)));
    }
    Ok(View { replica: r, accounts, transfers })
}

/// Runs every check, each problem an anomaly.
pub fn check_all(views: &[View], bank: &Bank, history: &[Op], shared: &Shared) {
    report(shared, "1 (every acknowledged transfer on every replica, as sent)", acked_everywhere(views, history));
    let (problems, committed, absent) = unknown_resolved(views, history);
    shared.say(format_args!("outcomes unknown to the clients: {committed} committed, {absent} not committed"));
    report(shared, "2 (every unknown outcome the same on every replica)", problems);
    report(shared, "2b (no rejected transfer on any replica)", rejected_nowhere(views, history));
    report(shared, "3 (balances = funding + transfers present: each applied once)", applied_once(views, bank, history));
    report(shared, "4 (every replica in the same state)", identical(views));
    let reads = shared.reads.load(std::sync::atomic::Ordering::Relaxed);
    let violations = shared.read_violations.load(std::sync::atomic::Ordering::Relaxed);
    let verdict = if violations == 0 { "ok" } else { "FAILED (reported above)" };
    shared.say(format_args!(
        "check 5 (money conserved in every read): {verdict}, {reads} reads, {violations} violations"
    ));
}

fn report(shared: &Shared, check: &str, problems: Vec<String>) {
    if problems.is_empty() {
        shared.say(format_args!("check {check}: ok"));
        return;
    }
    for p in problems.iter().take(EXAMPLES) {
        shared.anomaly(format_args!("check {check}: {p}"));
    }
    if problems.len() > EXAMPLES {
        shared.more_anomalies((problems.len() - EXAMPLES) as u64, format_args!("check {check}: and more like these"));
    }
}

/// Check 1: every acknowledged transfer is on every replica, unchanged.
fn acked_everywhere(views: &[View], history: &[Op]) -> Vec<String> {
    let mut problems = Vec::new();
    for o in history.iter().filter(|o| o.outcome == Outcome::Acked) {
        for v in views {
            match v.transfers.get(&o.id) {
                None => problems.push(format!("acknowledged transfer {} is missing on {}", describe(o), v.name())),
                Some(t) => problems.extend(differs(o, t).map(|d| format!("{} on {}: {d}", describe(o), v.name()))),
            }
        }
    }
    problems
}

/// Check 2: a transfer whose outcome the client did not learn is on every
/// replica or on none. Returns the problems and how many were committed
/// and how many not.
fn unknown_resolved(views: &[View], history: &[Op]) -> (Vec<String>, usize, usize) {
    let (mut problems, mut committed, mut absent) = (Vec::new(), 0, 0);
    for o in history.iter().filter(|o| o.outcome == Outcome::Unknown) {
        let holders: Vec<&View> = views.iter().filter(|v| v.transfers.contains_key(&o.id)).collect();
        if holders.is_empty() {
            absent += 1;
        } else if holders.len() == views.len() {
            committed += 1;
        } else {
            let names: Vec<String> = holders.iter().map(|v| v.name()).collect();
            problems.push(format!("transfer {} is only on {}", describe(o), names.join(", ")));
        }
        for v in holders {
            problems.extend(differs(o, &v.transfers[&o.id]).map(|d| format!("{} on {}: {d}", describe(o), v.name())));
        }
    }
    (problems, committed, absent)
}

/// Check 2b: what the server definitely refused was never applied.
fn rejected_nowhere(views: &[View], history: &[Op]) -> Vec<String> {
    let mut problems = Vec::new();
    for o in history {
        let Outcome::Rejected(why) = o.outcome else { continue };
        for v in views.iter().filter(|v| v.transfers.contains_key(&o.id)) {
            problems.push(format!("transfer {} was rejected ({why}) but is on {}", describe(o), v.name()));
        }
    }
    problems
}

/// Check 3: on each replica, each account's posted debits and credits are
/// exactly the sums of the history's transfers that replica holds; a
/// difference is a transfer applied twice, or applied and lost.
fn applied_once(views: &[View], bank: &Bank, history: &[Op]) -> Vec<String> {
    let mut problems = Vec::new();
    for v in views {
        let mut expected: HashMap<u128, (u128, u128)> = bank.all_ids().into_iter().map(|id| (id, (0, 0))).collect();
        for o in history.iter().filter(|o| v.transfers.contains_key(&o.id)) {
            expected.entry(o.debit).or_default().0 += o.amount;
            expected.entry(o.credit).or_default().1 += o.amount;
        }
        for id in bank.all_ids() {
            let (debits, credits) = expected[&id];
            match v.accounts.iter().find(|a| a.id == id) {
                None => problems.push(format!("account {id} is missing on {}", v.name())),
                Some(a) if (a.debits_posted, a.credits_posted) != (debits, credits) => problems.push(format!(
                    "account {id} on {} has debits_posted {} credits_posted {}, but the {} transfers it holds \
                     add up to debits {debits} credits {credits}",
                    v.name(),
                    a.debits_posted,
                    a.credits_posted,
                    v.transfers.len()
                )),
                Some(_) => {}
            }
        }
    }
    problems
}

/// Check 4: the replicas hold identical accounts and transfers (records
/// with the timestamps the log assigned, not just balances).
fn identical(views: &[View]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((first, others)) = views.split_first() else {
        return vec!["no replica could be read".into()];
    };
    for v in others {
        if v.accounts != first.accounts {
            let diff = first.accounts.iter().zip(&v.accounts).find(|(a, b)| a != b);
            problems.push(format!("{} and {} hold different accounts: {diff:?}", first.name(), v.name()));
        }
        let mut ids: Vec<&u128> = first.transfers.keys().chain(v.transfers.keys()).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let (a, b) = (first.transfers.get(id), v.transfers.get(id));
            if a != b {
                problems.push(format!("transfer {id}: {} holds {a:?}, {} holds {b:?}", first.name(), v.name()));
            }
        }
    }
    problems
}

fn describe(o: &Op) -> String {
    format!("{} ({} -> {}, {})", o.id, o.debit, o.credit, o.amount)
}

/// How a stored transfer differs from what its client sent, if it does.
fn differs(o: &Op, t: &Transfer) -> Option<String> {
    let sent = (o.debit, o.credit, o.amount, super::bank::LEDGER, 0u16);
    let stored = (t.debit_account_id, t.credit_account_id, t.amount, t.ledger, t.flags);
    (sent != stored).then(|| format!("stored as (debit, credit, amount, ledger, flags) {stored:?}, sent as {sent:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::FUNDS;

    fn op(id: u128, debit: u128, credit: u128, amount: u128, outcome: Outcome) -> Op {
        Op { id, debit, credit, amount, outcome }
    }

    /// Two accounts funded from the mint (3), then 1 -> 2 of 10 acked and
    /// 2 -> 1 of 5 unknown.
    fn history() -> Vec<Op> {
        vec![
            op(1, 3, 1, FUNDS, Outcome::Acked),
            op(2, 3, 2, FUNDS, Outcome::Acked),
            op(10, 1, 2, 10, Outcome::Acked),
            op(11, 2, 1, 5, Outcome::Unknown),
        ]
    }

    /// A replica holding `ids` of the history, with balances `(debits, credits)` per account.
    fn view(replica: usize, ids: &[u128], balances: [(u128, u128); 3]) -> View {
        let transfers = history()
            .iter()
            .filter(|o| ids.contains(&o.id))
            .map(|o| {
                let t = Transfer {
                    id: o.id,
                    debit_account_id: o.debit,
                    credit_account_id: o.credit,
                    amount: o.amount,
                    ledger: crate::bank::LEDGER,
                    code: 1,
                    ..Default::default()
                };
                (o.id, t)
            })
            .collect();
        let accounts = (1..=3u128)
            .zip(balances)
            .map(|(id, (d, c))| Account { id, debits_posted: d, credits_posted: c, ..Default::default() })
            .collect();
        View { replica, accounts, transfers }
    }

    const GOOD: [(u128, u128); 3] = [(10, FUNDS), (0, FUNDS + 10), (2 * FUNDS, 0)];

    #[test]
    fn a_consistent_history_passes_every_check() {
        let bank = Bank::new(2, Vec::new(), 1);
        let views = [view(0, &[1, 2, 10], GOOD), view(1, &[1, 2, 10], GOOD)];
        assert!(acked_everywhere(&views, &history()).is_empty());
        assert_eq!(unknown_resolved(&views, &history()), (Vec::new(), 0, 1));
        assert!(applied_once(&views, &bank, &history()).is_empty());
        assert!(identical(&views).is_empty());
    }

    #[test]
    fn each_check_names_what_went_wrong() {
        let bank = Bank::new(2, Vec::new(), 1);
        let lost = [view(0, &[1, 2, 10], GOOD), view(1, &[1, 2], GOOD)];
        assert!(acked_everywhere(&lost, &history())[0].contains("10 (1 -> 2, 10) is missing on r2"));
        let split = [view(0, &[1, 2, 10, 11], GOOD), view(1, &[1, 2, 10], GOOD)];
        assert!(unknown_resolved(&split, &history()).0[0].contains("is only on r1"));
        let twice = [view(0, &[1, 2, 10], [(20, FUNDS), (0, FUNDS + 20), (2 * FUNDS, 0)])];
        let problems = applied_once(&twice, &bank, &history());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("account 1 on r1 has debits_posted 20"));
        assert_eq!(identical(&split).len(), 1);
    }
}

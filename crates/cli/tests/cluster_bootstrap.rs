//! A replica that lost its disk bootstraps from the cluster's newest
//! snapshot plus the log after it: 3 `nats-server`s, 3 real `bursar`
//! replicas with small snapshots, enough transfers for the lease holder to
//! upload snapshots and purge the log; then replica 3 is killed, its data
//! directory deleted, more transfers written, and replica 3 started again
//! on the empty directory. It must say it bootstrapped, catch up, and hold
//! the same balances and (after clean stops) the same `bursar verify`
//! totals as the others, and the same state digest (`bursar verify
//! --until`) at the last position all three hold.
//!
//! Needs `nats-server` (fails, never skips, when it is missing).

mod cluster_common;
#[path = "../../http/tests/common/mod.rs"]
mod common;
mod process_common;

use bursar_client::Client;
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_core::{Account, Ledger, Transfer};
use bursar_testkit::nats_cluster::NatsCluster;
use cluster_common::{Replica, assert_same_state, connect, start, verify, wait_for};
use process_common::Proc;
use std::time::Duration;

const ADMIN: &str = "cluster-bootstrap-admin-key-0123";
const ACCOUNTS: u128 = 1000;
const BATCH: u64 = BATCH_EVENTS_MAX as u64;

fn setup(c: &mut Client) {
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    assert!(c.create_ledgers(&[usd]).unwrap().is_empty());
    let accounts: Vec<Account> =
        (1..=ACCOUNTS).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());
}

/// Writes `batches` full batches of transfers, ids from `*next`.
fn write(c: &mut Client, batches: u64, next: &mut u64) {
    for _ in 0..batches {
        let batch: Vec<Transfer> = (0..BATCH)
            .map(|i| {
                let id = *next + i;
                let dr = 1 + u128::from(id * 7919) % ACCOUNTS;
                let cr = 1 + (dr + u128::from(id % 997)) % ACCOUNTS;
                let cr = if cr == dr { 1 + dr % ACCOUNTS } else { cr };
                Transfer {
                    id: u128::from(id),
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount: u128::from(1 + id % 1000),
                    ledger: 1,
                    code: 1,
                    ..Default::default()
                }
            })
            .collect();
        let results = c.create_transfers(&batch).unwrap();
        assert!(results.is_empty(), "valid transfers were rejected: {:?}", &results[..results.len().min(3)]);
        *next += BATCH;
    }
}

/// Every account's balances, by id.
fn balances(c: &mut Client) -> Vec<[u128; 4]> {
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let accounts = c.lookup_accounts(&ids).unwrap();
    assert_eq!(accounts.len(), ACCOUNTS as usize);
    accounts.iter().map(|a| [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]).collect()
}

#[test]
fn an_empty_replica_bootstraps_from_the_newest_snapshot_and_the_log_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(&tmp.path().join("nats"), 3)
        .unwrap_or_else(|e| panic!("this test needs a real nats-server: {e}"));
    let urls = nats.urls();
    let replicas: Vec<Replica> = (1..=3).map(|node| Replica::new(tmp.path(), node, false)).collect();
    let start = |r: &Replica| start(r, &urls, ADMIN, &["--snapshot-every-mib", "1"]);
    let mut procs: Vec<Option<Proc>> = replicas.iter().map(|r| Some(start(r))).collect();
    let mut c1 = connect(&replicas[0].addr, ADMIN).unwrap();
    setup(&mut c1);
    let mut next = 1;
    write(&mut c1, 30, &mut next);
    let logs = || replicas.iter().map(|r| std::fs::read_to_string(&r.log).unwrap_or_default()).collect::<String>();
    wait_for("a snapshot uploaded and the log purged", Duration::from_secs(120), || {
        logs().contains("log purged up to the oldest kept snapshot")
    });

    procs[2].take().unwrap().kill_hard();
    std::fs::remove_dir_all(&replicas[2].dir).unwrap();
    write(&mut c1, 5, &mut next);
    procs[2] = Some(start(&replicas[2]));
    let text = std::fs::read_to_string(&replicas[2].log).unwrap();
    let line =
        text.lines().find(|l| l.starts_with("bursar: bootstrapped from the cluster's snapshot")).unwrap_or_else(|| {
            panic!("replica 3 did not bootstrap:\n{text}");
        });
    eprintln!("replica 3: {line}");
    write(&mut c1, 2, &mut next);

    let expected = balances(&mut c1);
    let mut c3 = connect(&replicas[2].addr, ADMIN).unwrap();
    wait_for("replica 3 has replica 1's balances", Duration::from_secs(60), || balances(&mut c3) == expected);
    let moved: u128 = expected.iter().map(|b| b[1]).sum();
    eprintln!("balances equal on replicas 1 and 3: {} accounts, {moved} debited, {} transfers", ACCOUNTS, next - 1);
    drop((c1, c3));

    for proc in procs.iter_mut() {
        proc.take().unwrap().stop_clean();
    }
    // A holder with no side effects configured still holds one epoch per
    // acquisition (it once spun, starting and stopping nothing).
    for r in &replicas {
        let text = std::fs::read_to_string(&r.log).unwrap();
        let epochs = text.matches("holds the lease").count();
        // Under heavy load a renewal may time out and the lease move: that
        // is an acquisition each time, logged by the lease itself.
        let acquisitions = text.matches("lease acquired").count();
        assert!(
            epochs <= acquisitions,
            "replica {} started side effects {epochs} times for {acquisitions} acquisitions:\n{}",
            r.node,
            &text[..text.len().min(4000)]
        );
    }
    let summaries: Vec<String> = replicas.iter().map(|r| verify(&r.dir, None)).collect();
    // Positions may differ by entries a replica applied before it stopped
    // (ticks), and so may the state digests there; the ledger must not.
    let ledger = |s: &String| {
        let differ = ["entries=", "position=", "digest="];
        s.split(' ').filter(|f| !differ.iter().any(|d| f.starts_with(d))).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(ledger(&summaries[0]), ledger(&summaries[2]), "replicas 1 and 3 differ after verify");
    assert_eq!(ledger(&summaries[0]), ledger(&summaries[1]), "replicas 1 and 2 differ after verify");
    assert!(summaries[0].contains(&format!("transfers={}", next - 1)), "{}", summaries[0]);

    // The whole state, hashed, at the last position every replica holds:
    // replica 3, bootstrapped from the cluster's snapshot into an empty
    // directory, must hold the very state the others do there.
    assert_same_state(&replicas);
}

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

#[path = "../../http/tests/common/mod.rs"]
mod common;
mod process_common;

use bursar_client::{Client, ClientOptions};
use bursar_core::{Account, Ledger, Transfer};
use bursar_relay::nats_cluster::NatsCluster;
use process_common::{Proc, append};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN: &str = "cluster-bootstrap-admin-key-0123";
const ACCOUNTS: u128 = 1000;
const BATCH: u64 = 8190;

struct Replica {
    node: u32,
    dir: PathBuf,
    addr: String,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn connect(addr: &str) -> Option<Client> {
    let key = Some(ADMIN.to_string());
    let mut c =
        Client::connect(addr, &ClientOptions { timeout: Duration::from_secs(60), key, ..Default::default() }).ok()?;
    c.ping().ok()?;
    Some(c)
}

/// Starts the replica until it serves. An early exit is retried for a while:
/// JetStream may still be electing its leaders.
fn start(r: &Replica, urls: &str) -> Proc {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let child = Command::new(env!("CARGO_BIN_EXE_bursar"))
            .args(["start", "--no-orders", "--no-webhooks", "--no-http", "--snapshot-every-mib", "1"])
            .args(["--cluster", urls, "--node-id", &r.node.to_string(), "--addr", &r.addr, "--data-dir"])
            .arg(&r.dir)
            .env("BURSAR_ADMIN_KEY", ADMIN)
            .env("BURSAR_LOG", "info")
            .stdout(append(&r.log))
            .stderr(append(&r.log))
            .spawn()
            .expect("the bursar binary starts");
        let mut proc = Proc { child, log: r.log.clone() };
        loop {
            if let Some(status) = proc.child.try_wait().unwrap() {
                assert!(Instant::now() < deadline, "replica {} exited with {status}:\n{}", r.node, proc.log_text());
                std::thread::sleep(Duration::from_millis(500));
                break;
            }
            if connect(&r.addr).is_some() {
                return proc;
            }
            assert!(Instant::now() < deadline, "replica {} not serving:\n{}", r.node, proc.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

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

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `bursar verify [--until P]`'s summary without what legitimately differs
/// between replicas (how many local snapshots it checked, torn tail bytes).
fn verify(dir: &Path, until: Option<u64>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bursar"));
    cmd.args(["verify", "--data-dir"]).arg(dir);
    if let Some(position) = until {
        cmd.args(["--until", &position.to_string()]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "verify --until {until:?} of {} failed: {text}", dir.display());
    eprintln!("{}: {text}", dir.display());
    let kept = text.split(' ').filter(|f| !f.starts_with("snapshots_checked=") && !f.starts_with("torn_tail_bytes="));
    kept.collect::<Vec<_>>().join(" ")
}

/// The value of `name=` in a verify summary.
fn field<'a>(summary: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    summary
        .split(' ')
        .find_map(|f| f.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name}= in {summary}"))
}

#[test]
fn an_empty_replica_bootstraps_from_the_newest_snapshot_and_the_log_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(&tmp.path().join("nats"), 3)
        .unwrap_or_else(|e| panic!("this test needs a real nats-server: {e}"));
    let urls = nats.urls();
    let replicas: Vec<Replica> = (1..=3)
        .map(|node| Replica {
            node,
            dir: tmp.path().join(format!("r{node}")),
            addr: format!("127.0.0.1:{}", free_port()),
            log: tmp.path().join(format!("r{node}.log")),
        })
        .collect();
    let mut procs: Vec<Option<Proc>> = replicas.iter().map(|r| Some(start(r, &urls))).collect();
    let mut c1 = connect(&replicas[0].addr).unwrap();
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
    procs[2] = Some(start(&replicas[2], &urls));
    let text = std::fs::read_to_string(&replicas[2].log).unwrap();
    let line =
        text.lines().find(|l| l.starts_with("bursar: bootstrapped from the cluster's snapshot")).unwrap_or_else(|| {
            panic!("replica 3 did not bootstrap:\n{text}");
        });
    eprintln!("replica 3: {line}");
    write(&mut c1, 2, &mut next);

    let expected = balances(&mut c1);
    let mut c3 = connect(&replicas[2].addr).unwrap();
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
    let common = summaries.iter().map(|s| field(s, "position").parse::<u64>().unwrap()).min().unwrap();
    let at: Vec<String> = replicas.iter().map(|r| verify(&r.dir, Some(common))).collect();
    for (r, s) in replicas.iter().zip(&at) {
        assert_eq!(field(s, "position"), common.to_string(), "replica {}: {s}", r.node);
        assert_eq!(field(s, "digest").len(), 64, "replica {}: {s}", r.node);
    }
    assert_eq!(field(&at[0], "digest"), field(&at[2], "digest"), "replicas 1 and 3 differ at position {common}");
    assert_eq!(field(&at[0], "digest"), field(&at[1], "digest"), "replicas 1 and 2 differ at position {common}");
    // So do their summaries there, but for how far each one's log goes.
    let state = |s: &String| s.split(' ').filter(|f| !f.starts_with("entries=")).collect::<Vec<_>>().join(" ");
    assert_eq!(state(&at[0]), state(&at[2]), "replicas 1 and 3 differ at position {common}");
    assert_eq!(state(&at[0]), state(&at[1]), "replicas 1 and 2 differ at position {common}");
    eprintln!("replicas 1, 2 and 3 hold the same state at position {common}: digest {}", field(&at[0], "digest"));
}

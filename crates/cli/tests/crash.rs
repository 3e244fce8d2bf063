//! Crash test with the real `bursar` binary: clients load a server process,
//! it is killed with SIGKILL at random moments and restarted, again and
//! again. After every restart: every acknowledged transfer is present
//! exactly once, every request whose reply was lost is all-or-nothing, the
//! balances equal the sum of what is present, re-submitting acknowledged
//! transfers applies nothing, and at the end `bursar verify` passes.
//!
//! History on disk: the server runs with a 1 MiB block cache and first gets
//! three arena chunks' worth of transfers, so snapshots send the older
//! chunks cold and the indexer hands their ids to stored tables (both
//! checked on `/metrics`); the kills then land while snapshots are written,
//! chunks leave memory and tables are built and merged; every restart loads
//! the snapshot lazily with the tables, and the checks (lookups, and
//! re-submissions that must come back `exists`) read old transfers and ids
//! back through the tiny cache.

#[path = "process_common/rng.rs"]
mod rng;

use bursar_client::{Client, ClientOptions};
use bursar_core::{Account, CreateTransferResult, Ledger, Transfer};
use rng::Rng;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCOUNTS: u128 = 40;
const CYCLES: usize = 6;
const CLIENTS: usize = 3;

enum Outcome {
    Acked,
    InDoubt,
}

/// Every batch sent, with what the client learned of it.
type Record = Arc<Mutex<Vec<(Vec<Transfer>, Outcome)>>>;

/// The first admin key of every server (it may also write over the binary protocol).
const ADMIN_KEY: &str = "crash-test-admin-key-0123456789abcdef";

/// Transfers written before the kills: three full chunks of the transfer
/// arena (65,536 each), so that two of them go cold.
const PRELOAD: u128 = 3 * 65_536 + 1_000;

struct Server {
    child: Child,
    addr: String,
    http: String,
}

/// A test that fails must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path, (port, http_port): (u16, u16), log: &Path) -> Server {
    let bin = env!("CARGO_BIN_EXE_bursar");
    let addr = format!("127.0.0.1:{port}");
    let http = format!("127.0.0.1:{http_port}");
    let child = Command::new(bin)
        .args(["start", "--snapshot-every-mib", "1", "--segment-mib", "1", "--cache-mib", "1", "--data-dir"])
        .arg(dir)
        .args(["--addr", &addr, "--http", &http])
        .env("BURSAR_ADMIN_KEY", ADMIN_KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .expect("the bursar binary starts");
    let mut server = Server { child, addr, http };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("server exited with {status}; its log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if connect(&server.addr).and_then(|mut c| c.ping().ok()).is_some() {
            return server;
        }
        assert!(Instant::now() < deadline, "server not ready in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect(addr: &str) -> Option<Client> {
    let key = Some(ADMIN_KEY.to_string());
    Client::connect(addr, &ClientOptions { timeout: Duration::from_secs(10), key, ..Default::default() }).ok()
}

/// Two distinct free ports (both held until both are chosen).
fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (bind(), bind());
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// The value of a gauge on the server's `/metrics` (0 if absent), over a
/// plain HTTP/1.1 request (the server speaks cleartext on loopback).
fn gauge(server: &Server, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut text = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(&server.http) {
        let request = format!(
            "GET /metrics HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {ADMIN_KEY}\r\nconnection: close\r\n\r\n",
            server.http
        );
        let _ = s.write_all(request.as_bytes()).and_then(|_| s.read_to_string(&mut text));
    }
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// Writes `PRELOAD` transfers in full batches and waits until snapshots
/// sent the older chunks cold; returns them.
fn preload(server: &Server, next_id: &AtomicU64) -> Vec<Transfer> {
    let mut c = connect(&server.addr).unwrap();
    let all: Vec<Transfer> = (0..PRELOAD)
        .map(|i| Transfer {
            id: u128::from(next_id.fetch_add(1, Ordering::Relaxed)),
            debit_account_id: 1 + i % ACCOUNTS,
            credit_account_id: 1 + (i + 1) % ACCOUNTS,
            amount: 1 + i % 997,
            ledger: 1,
            code: 1,
            ..Default::default()
        })
        .collect();
    for batch in all.chunks(bursar_core::limits::BATCH_EVENTS_MAX) {
        assert!(c.create_transfers(batch).unwrap().is_empty());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while gauge(server, "bursar_state_cold_chunks") < 2.0 || gauge(server, "bursar_state_ids_stored_below") < 65_536.0 {
        assert!(Instant::now() < deadline, "no chunk of history and no ids left memory in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    all
}

/// Looks up a spread of the preloaded transfers: every field as written.
fn check_preloaded(addr: &str, preloaded: &[Transfer], rng: &mut Rng) {
    let mut c = connect(addr).unwrap();
    let sample: Vec<Transfer> = (0..2_000).map(|_| preloaded[rng.below(preloaded.len() as u64) as usize]).collect();
    let ids: Vec<u128> = sample.iter().map(|t| t.id).collect();
    let found = c.lookup_transfers(&ids).unwrap();
    assert_eq!(found.len(), sample.len(), "old transfers are missing");
    for (t, f) in sample.iter().zip(&found) {
        assert_eq!(
            (t.id, t.debit_account_id, t.credit_account_id, t.amount),
            (f.id, f.debit_account_id, f.credit_account_id, f.amount)
        );
    }
}

/// Sends random batches until `stop`; records every batch and its outcome.
fn load(addr: String, seed: u64, next_id: Arc<AtomicU64>, stop: Arc<AtomicBool>, log: Record) {
    let mut rng = Rng(seed | 1);
    let Some(mut c) = connect(&addr) else { return };
    while !stop.load(Ordering::Relaxed) {
        let n = 1 + rng.below(300) as usize;
        let batch: Vec<Transfer> = (0..n)
            .map(|_| {
                let dr = 1 + rng.below(ACCOUNTS as u64) as u128;
                let cr = 1 + (dr + u128::from(rng.below(ACCOUNTS as u64 - 1))) % ACCOUNTS;
                Transfer {
                    id: u128::from(next_id.fetch_add(1, Ordering::Relaxed)),
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount: u128::from(1 + rng.below(1000)),
                    ledger: 1,
                    code: 1,
                    ..Default::default()
                }
            })
            .collect();
        match c.create_transfers(&batch) {
            Ok(results) => {
                assert!(results.is_empty(), "valid transfers were rejected: {results:?}");
                log.lock().unwrap().push((batch, Outcome::Acked));
            }
            Err(e) => {
                assert!(e.is_indefinite(), "unexpected error {e}");
                log.lock().unwrap().push((batch, Outcome::InDoubt));
                return;
            }
        }
    }
}

/// Checks the restarted server against the record; returns the transfers
/// now known to be applied.
fn check(addr: &str, record: Vec<(Vec<Transfer>, Outcome)>, applied: &mut Vec<Transfer>, rng: &mut Rng) {
    let mut c = connect(addr).unwrap();
    for (batch, outcome) in record {
        let ids: Vec<u128> = batch.iter().map(|t| t.id).collect();
        let found = c.lookup_transfers(&ids).unwrap();
        match outcome {
            Outcome::Acked => {
                assert_eq!(found.len(), batch.len(), "an acknowledged batch lost transfers");
            }
            Outcome::InDoubt => {
                assert!(
                    found.is_empty() || found.len() == batch.len(),
                    "a batch was half applied: {} of {}",
                    found.len(),
                    batch.len()
                );
            }
        }
        for (t, f) in batch.iter().zip(found.iter()) {
            assert_eq!(
                (t.id, t.debit_account_id, t.credit_account_id, t.amount),
                (f.id, f.debit_account_id, f.credit_account_id, f.amount)
            );
        }
        if !found.is_empty() {
            applied.extend(batch.iter().copied());
            if rng.below(4) == 0 {
                let again = c.create_transfers(&batch).unwrap();
                assert_eq!(again.len(), batch.len());
                assert!(
                    again.iter().all(|r| r.code == CreateTransferResult::Exists.code()),
                    "re-submission applied something"
                );
            }
        }
    }
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let accounts = c.lookup_accounts(&ids).unwrap();
    let mut debits = vec![0u128; ACCOUNTS as usize + 1];
    let mut credits = vec![0u128; ACCOUNTS as usize + 1];
    for t in applied.iter() {
        debits[t.debit_account_id as usize] += t.amount;
        credits[t.credit_account_id as usize] += t.amount;
    }
    for a in &accounts {
        assert_eq!(
            (a.debits_posted, a.credits_posted),
            (debits[a.id as usize], credits[a.id as usize]),
            "account {}",
            a.id
        );
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_1234u64);
    eprintln!("crash test seed {seed} (set CRASH_SEED to reproduce)");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let port = free_ports();
    let mut server = start_server(&dir, port, &log);
    {
        let mut c = connect(&server.addr).unwrap();
        let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
        assert!(c.create_ledgers(&[usd]).unwrap().is_empty());
        let accounts: Vec<Account> =
            (1..=ACCOUNTS).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
        assert!(c.create_accounts(&accounts).unwrap().is_empty());
    }
    let next_id = Arc::new(AtomicU64::new(1));
    let preloaded = preload(&server, &next_id);
    check_preloaded(&server.addr, &preloaded, &mut rng);
    let mut applied = preloaded.clone();
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (addr, ids, stop, record) = (server.addr.clone(), next_id.clone(), stop.clone(), record.clone());
                let s = rng.next() ^ i as u64;
                std::thread::spawn(move || load(addr, s, ids, stop, record))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + rng.below(700)));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client thread");
        }
        server = start_server(&dir, port, &log);
        let record = std::mem::take(&mut *record.lock().unwrap());
        let batches = record.len();
        check(&server.addr, record, &mut applied, &mut rng);
        check_preloaded(&server.addr, &preloaded, &mut rng);
        eprintln!("cycle {cycle}: {batches} batches, {} transfers applied in total", applied.len());
        assert!(batches > 0, "the clients sent nothing before the kill");
    }
    unsafe {
        libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(server.child.wait().unwrap().success(), "graceful stop");
    let out = Command::new(env!("CARGO_BIN_EXE_bursar")).args(["verify", "--data-dir"]).arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "verify failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("transfers={}", applied.len())), "{stdout}");
}

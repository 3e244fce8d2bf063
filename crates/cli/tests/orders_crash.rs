//! Orders resume after crashes, with the real `bursar` binary: the
//! connector simulators run in their own process (`bursar simulate`, which
//! outlives the server and logs every call with its idempotency key), the
//! server is killed with SIGKILL at random moments while orders are being
//! created, funded and paid out, and restarted on the same data directory
//! and ports each time. Afterwards every order must complete, each payout
//! must have been made exactly once and only ever asked for under the
//! order's one key (`order-{id}-payout`), the order-flow accounts must hold
//! exactly what the payouts moved, `bursar verify` must pass, and the
//! senders' names must never have reached the data directory in plaintext.
//!
//! `ORDERS_CRASH_SEED` reproduces a run's kill schedule.

#[path = "../../http/tests/common/mod.rs"]
mod common;
mod process_common;

use process_common::*;

use bursar_core::orders::money::{AccountKind, account_id};
use common::{ADMIN_KEY, Client};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const ORDERS: u64 = 300;
const FIRST_ID: u64 = 9_000_001;
const CUSTOMERS: u64 = 25;
const KILLS: usize = 4;
const USD: u32 = 840;
const EUR: u32 = 978;
/// States the executor moves an order out of (funds held, payout not settled).
const MID_FLOW: [&str; 6] = ["funds_received", "screening", "approved", "fx_locked", "payout_sent", "on_hold"];
/// In every order; must never be found in plaintext under the data directory.
const SENDER: &str = "Zebulon Quixote-Marchbanks";
const RECIPIENT: &str = "Philippa Vanderhoeven-Oyelaran";
const BANK_ACCOUNT: &str = "NL91ABNA0417164300";

// ------------------------------------------------------------- processes

struct Ports {
    addr: String,
    http: String,
    connectors: String,
}

/// `bursar start` on fixed ports; waits until the HTTP API is ready.
fn start_server(dir: &Path, ports: &Ports, log: &Path) -> Proc {
    let make = || {
        let mut c = bursar();
        c.args(["start", "--data-dir"])
            .arg(dir)
            .args(["--addr", &ports.addr, "--http", &ports.http, "--connectors-url", &ports.connectors])
            .env("BURSAR_ADMIN_KEY", ADMIN_KEY);
        c
    };
    start_until_ready(make, &ports.http, log)
}

/// `bursar verify`: must pass; returns its report line.
fn verify(dir: &Path) -> String {
    let out = bursar().args(["verify", "--data-dir"]).arg(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "verify failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("verify: ok "), "{stdout}");
    stdout
}

fn order_body(id: u64, amount: u64) -> Value {
    json!({
        "id": id.to_string(),
        "customer_id": (1 + id % CUSTOMERS).to_string(),
        "source_asset": "USD",
        "source_amount": amount.to_string(),
        "target_asset": "EUR",
        "sender": {"name": SENDER, "country": "GB"},
        "recipient": {"name": RECIPIENT, "bank_account": BANK_ACCOUNT},
    })
}

fn amount_of(id: u64) -> u64 {
    // Under the screening simulator's review threshold (10,000.00).
    1_000 + (id * 7919) % 500_000
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn orders_complete_exactly_once_across_kill_9() {
    let started = Instant::now();
    let seed = std::env::var("ORDERS_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xC4A5_0DE5u64);
    eprintln!("orders crash seed {seed} (set ORDERS_CRASH_SEED to reproduce)");
    let mut rng = Rng(seed | 1);

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let calls = tmp.path().join("calls.jsonl");
    let sim_port = free_port();
    let sim_log = tmp.path().join("simulator.log");
    let sim = start_simulator(sim_port, &calls, &sim_log, &["--sim-latency-ms", "5", "--sim-payout-confirm-ms", "50"]);
    let ports = Ports {
        addr: format!("127.0.0.1:{}", free_port()),
        http: format!("127.0.0.1:{}", free_port()),
        connectors: format!("http://127.0.0.1:{sim_port}"),
    };
    let mut server = start_server(&data, &ports, &log);
    let c = Client::new(&format!("http://{}", ports.http));
    let (_, op) = c.create_key("operator", &[]);

    // Orders are created (paced) and funded from two threads, each retrying
    // through the outages until its request is answered.
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let (created_n, funded_n) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (tx, rx) = mpsc::channel::<u64>();
    let creator = {
        let (c, op, failures, created_n) = (c.clone(), op.clone(), failures.clone(), created_n.clone());
        std::thread::spawn(move || {
            for id in FIRST_ID..FIRST_ID + ORDERS {
                let r =
                    post_until_answered(&c, &op, &format!("create-{id}"), "/v1/orders", &order_body(id, amount_of(id)));
                if r.status == 201 || r.status == 200 {
                    created_n.fetch_add(1, Ordering::Relaxed);
                    tx.send(id).unwrap();
                } else {
                    failures.lock().unwrap().push(format!("create {id}: {} {}", r.status, r.body));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let funder = {
        let (c, op, failures, funded_n) = (c.clone(), op.clone(), failures.clone(), funded_n.clone());
        std::thread::spawn(move || {
            for id in rx {
                match fund_order(&c, &op, id, amount_of(id)) {
                    Ok(()) => _ = funded_n.fetch_add(1, Ordering::Relaxed),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        })
    };

    // The crashes. Just before each, the states the orders are in (the
    // kill comes a moment later, so this is a close picture, not exact).
    let mut mid_flow_at_kills = 0;
    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(200 + rng.below(1_300)));
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for o in all_orders(&c).values() {
            *states.entry(s(o, "state")).or_default() += 1;
        }
        let (created, funded) = (created_n.load(Ordering::Relaxed), funded_n.load(Ordering::Relaxed));
        server.kill_hard();
        eprintln!(
            "kill -9 #{}: {created} orders created, {funded} funded, {states:?} ({:?})",
            k + 1,
            started.elapsed()
        );
        mid_flow_at_kills += MID_FLOW.iter().map(|st| states.get(*st).copied().unwrap_or(0)).sum::<usize>();
        server = start_server(&data, &ports, &log);
    }
    // Orders are created for 3 s or more and each waits at least half a
    // second for its payout to settle: the kills cannot all miss them.
    assert!(mid_flow_at_kills > 0, "no kill came while the executor had orders in flight");
    creator.join().expect("the creator thread");
    funder.join().expect("the funder thread");
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "requests refused:\n{}", failures.join("\n"));
    eprintln!("all {ORDERS} orders created and funded ({:?})", started.elapsed());

    // Every order completes.
    let ids: Vec<u64> = (FIRST_ID..FIRST_ID + ORDERS).collect();
    let orders = wait_terminal(&c, &ids, Duration::from_secs(180));
    eprintln!("all terminal ({:?})", started.elapsed());
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for o in orders.values() {
        *states.entry(s(o, "state")).or_default() += 1;
    }
    assert_eq!(states.get("completed").copied(), Some(ORDERS as usize), "every order completes: {states:?}");

    // The timelines: each step once, and the transfers they name.
    let mut event_transfers = 0usize;
    let (mut bank_in, mut fees, mut net_in, mut paid_out) = (0u128, 0u128, 0u128, 0u128);
    let mut deferrals = 0usize;
    for id in &ids {
        let o = &orders[id];
        assert_eq!(o["sender"]["name"], json!(SENDER), "the personal data decrypts after the crashes");
        let evs = events(&c, *id);
        let ok = |kind: &str| evs.iter().filter(|e| e["kind"] == json!(kind) && e["result"] == json!("ok")).count();
        for kind in
            ["funds_received", "start_screening", "screening_result", "lock_fx", "send_payout", "confirm_payout"]
        {
            assert_eq!(ok(kind), 1, "order {id}: {kind} applied {} times\n{}", ok(kind), timeline_text(&c, *id));
        }
        deferrals += evs.iter().filter(|e| e["kind"] == json!("defer")).count();
        event_transfers += evs.iter().map(|e| e["transfers"].as_array().unwrap().len()).sum::<usize>();
        let (src, fee) = (n(o, "source_amount"), n(o, "fee_amount"));
        assert_eq!(src, u128::from(amount_of(*id)));
        bank_in += src;
        fees += fee;
        net_in += src - fee;
        paid_out += n(o, "target_amount");
    }

    // The money: in from the banks, out through the rail, nothing left held.
    let system = |kind: AccountKind, ledger: u32| {
        let b = balances(&c, account_id(kind, ledger, 0));
        assert_eq!((b[0], b[2]), (0, 0), "{kind:?}@{ledger} has money pending: {b:?}");
        b
    };
    assert_eq!(system(AccountKind::BankIn, USD)[1], bank_in, "bank_in: what the banks sent");
    assert_eq!(system(AccountKind::BankOut, USD)[3], 0, "bank_out: nothing refunded");
    let b = system(AccountKind::Escrow, USD);
    assert_eq!(b[1], b[3], "escrow keeps nothing: {b:?}");
    assert_eq!(system(AccountKind::Fees, USD)[3], fees, "fees earned");
    assert_eq!(system(AccountKind::Liquidity, USD)[3], net_in, "USD bought by the house");
    assert_eq!(system(AccountKind::Liquidity, EUR)[1], paid_out, "EUR sold by the house");
    let b = system(AccountKind::PayoutClearing, EUR);
    assert_eq!(b[1], b[3], "payout clearing keeps nothing: {b:?}");
    assert_eq!(system(AccountKind::Rail, EUR)[3], paid_out, "rail: what the recipients got");
    for customer in 1..=CUSTOMERS {
        let b = balances(&c, account_id(AccountKind::Customer, USD, u128::from(customer)));
        assert_eq!((b[0], b[2]), (0, 0), "customer {customer} has money pending: {b:?}");
        assert_eq!(b[1], b[3], "customer {customer} keeps money: {b:?}");
    }

    // The simulator's call log: one payout per order, under one key.
    server.stop_clean();
    let calls = read_calls(&calls);
    drop(sim);
    let payout_sends = assert_effects_exactly_once(&calls, &ids);
    let most_sends = payout_sends.values().max().copied().unwrap_or(0);
    eprintln!(
        "call log: {} calls, {} payout sends (at most {most_sends} for one order), {deferrals} deferrals",
        calls.len(),
        payout_sends.values().sum::<usize>()
    );

    // A full replay.
    let report = verify(&data);
    assert!(
        report.contains(&format!(" transfers={event_transfers} ")),
        "the timelines name {event_transfers} transfers: {report}"
    );
    eprintln!("{}", report.trim_end());

    // The personal data never reached the data directory in plaintext.
    let mut files = Vec::new();
    files_under(&data, &mut files);
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(!files.is_empty() && bytes > 0, "an empty data directory");
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        for secret in [SENDER, RECIPIENT, BANK_ACCOUNT] {
            assert!(!contains(&raw, secret.as_bytes()), "{} holds {secret:?} in plaintext", f.display());
        }
    }
    let server_log = std::fs::read(&log).unwrap();
    for secret in [SENDER, RECIPIENT, BANK_ACCOUNT] {
        assert!(!contains(&server_log, secret.as_bytes()), "the server log holds {secret:?}");
    }
    eprintln!("{} files ({bytes} bytes) under the data directory hold no personal data in plaintext", files.len());
    eprintln!("orders crash: {:?} in all", started.elapsed());
}

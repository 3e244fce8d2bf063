//! Lease takeover while a connector call is in flight does not repeat it.
//!
//! Three `nats-server`s, three real `bursar start --cluster` replicas with
//! HTTP and orders on (the same admin key and personal-data key), all
//! calling one external `bursar simulate` (which outlives every replica
//! and logs each call with its idempotency key). Payouts settle slowly at
//! the simulated rail, so a sent payout stays pending, and is polled under
//! its key, for seconds. Orders are created and funded through a replica
//! that does not hold the lease; once several payouts are sent but not yet
//! settled, the lease holder is killed with SIGKILL. Another replica must
//! take the lease over and every order must complete. The call log must
//! show each payout made exactly once and only ever asked for under the
//! order's one key, and at least one payout that was sent before the kill
//! and unsettled at it must have been asked for again by the successor
//! (and answered without a second payout); otherwise the test proves
//! nothing. The surviving replicas must hold the same balances.
//!
//! Needs `nats-server` (fails, never skips, when it is missing).

#[path = "../../http/tests/common/mod.rs"]
mod common;
mod process_common;

use process_common::*;

use bursar_core::orders::money::{AccountKind, account_id};
use bursar_testkit::nats_cluster::NatsCluster;
use common::{ADMIN_KEY, Client};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ORDERS: u64 = 60;
const FIRST_ID: u64 = 8_100_001;
const CUSTOMERS: u64 = 12;
const USD: u32 = 840;
const EUR: u32 = 978;
/// Every connector call takes this long at the simulator (well under the
/// executor's 2 s attempt timeout).
const SIM_LATENCY_MS: u64 = 200;
/// A payout settles this long after its first send; until then the holder
/// polls it (a send under the same key) every half second.
const PAYOUT_CONFIRM_MS: u64 = 8_000;
/// The holder is killed once this many payouts were sent.
const SENT_BEFORE_KILL: usize = 8;
/// Every replica's personal-data key (all must share it).
const PII_KEYS: &str = "1:5eed5eed0123456789abcdef0123456789abcdef0123456789abcdef5eed5eed";
/// The replicas' shared cluster key (authenticates log entries).
const CLUSTER_KEY: &str = "3c2f8e1a9b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";
/// What a replica prints when it starts the side effects, and when it stops them.
const HOLDS: &str = "bursar: this replica holds the lease; starting orders, webhooks and relays";
const LOST: &str = "bursar: lease lost or node stopping";

struct Replica {
    node: usize,
    dir: PathBuf,
    addr: String,
    http: String,
    log: PathBuf,
}

impl Replica {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the replica's log says it holds the lease now (it printed
    /// more acquisitions than losses).
    fn holds_lease(&self) -> bool {
        let text = self.log_text();
        text.matches(HOLDS).count() > text.matches(LOST).count()
    }

    fn client(&self) -> Client {
        Client::new(&format!("http://{}", self.http))
    }
}

fn start(r: &Replica, urls: &str, connectors: &str) -> Proc {
    let make = || {
        let mut c = bursar();
        c.args(["start", "--cluster", urls, "--node-id", &r.node.to_string(), "--data-dir"])
            .arg(&r.dir)
            .args(["--addr", &r.addr, "--http", &r.http, "--connectors-url", connectors])
            .env("BURSAR_ADMIN_KEY", ADMIN_KEY)
            .env("BURSAR_CLUSTER_KEY", CLUSTER_KEY)
            .env("BURSAR_PII_KEYS", PII_KEYS)
            .env("BURSAR_LOG", "info");
        c
    };
    start_replica_until_ready(make, &r.http, &r.log)
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn amount_of(id: u64) -> u64 {
    // Under the screening simulator's review threshold (10,000.00).
    1_000 + (id * 7919) % 500_000
}

fn order_body(id: u64) -> Value {
    json!({
        "id": id.to_string(),
        "customer_id": (1 + id % CUSTOMERS).to_string(),
        "source_asset": "USD",
        "source_amount": amount_of(id).to_string(),
        "target_asset": "EUR",
        "sender": {"name": "Ada Sender", "country": "GB"},
        "recipient": {"name": "Rita Recipient", "bank_account": "NL91ABNA0417164300"},
    })
}

/// Balances of every account the orders move money through, as `c` sees them.
fn ledger_view(c: &Client) -> BTreeMap<String, [u128; 4]> {
    let mut out = BTreeMap::new();
    let kinds = [
        (AccountKind::BankIn, USD),
        (AccountKind::BankOut, USD),
        (AccountKind::Escrow, USD),
        (AccountKind::Fees, USD),
        (AccountKind::Liquidity, USD),
        (AccountKind::Liquidity, EUR),
        (AccountKind::PayoutClearing, EUR),
        (AccountKind::Rail, EUR),
    ];
    for (kind, ledger) in kinds {
        out.insert(format!("{kind:?}@{ledger}"), balances(c, account_id(kind, ledger, 0)));
    }
    for customer in 1..=CUSTOMERS {
        let id = account_id(AccountKind::Customer, USD, u128::from(customer));
        out.insert(format!("customer {customer}"), balances(c, id));
    }
    out
}

#[test]
fn lease_takeover_with_payouts_in_flight_repeats_no_payout() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(&tmp.path().join("nats"), 3)
        .unwrap_or_else(|e| panic!("this test needs a real nats-server: {e}"));
    let urls = nats.urls();
    let calls_path = tmp.path().join("calls.jsonl");
    let sim_port = free_port();
    let (latency, confirm) = (SIM_LATENCY_MS.to_string(), PAYOUT_CONFIRM_MS.to_string());
    let sim_args = ["--sim-latency-ms", latency.as_str(), "--sim-payout-confirm-ms", confirm.as_str()];
    let _sim = start_simulator(sim_port, &calls_path, &tmp.path().join("simulator.log"), &sim_args);
    let connectors = format!("http://127.0.0.1:{sim_port}");

    let replicas: Vec<Replica> = (1..=3)
        .map(|node| Replica {
            node,
            dir: tmp.path().join(format!("r{node}")),
            addr: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            log: tmp.path().join(format!("r{node}.log")),
        })
        .collect();
    let mut procs: Vec<Option<Proc>> = replicas.iter().map(|r| Some(start(r, &urls, &connectors))).collect();
    let holder = wait_for("a replica holds the lease", Duration::from_secs(30), || {
        let holders: Vec<usize> = (0..3).filter(|&i| replicas[i].holds_lease()).collect();
        (holders.len() == 1).then(|| holders[0])
    });
    let entry = (holder + 1) % 3;
    eprintln!(
        "replica {} holds the lease; orders go through replica {} ({:?})",
        replicas[holder].node,
        replicas[entry].node,
        started.elapsed()
    );
    let c = replicas[entry].client();
    let (_, op) = c.create_key("operator", &[]);

    // Orders are created (paced) and funded through the entry replica,
    // which the kill does not touch: creation goes on across it.
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let created_n = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<u64>();
    let creator = {
        let (c, op, failures, created_n) = (c.clone(), op.clone(), failures.clone(), created_n.clone());
        std::thread::spawn(move || {
            for id in FIRST_ID..FIRST_ID + ORDERS {
                let r = post_until_answered(&c, &op, &format!("create-{id}"), "/v1/orders", &order_body(id));
                if r.status == 201 || r.status == 200 {
                    created_n.fetch_add(1, Ordering::Relaxed);
                    tx.send(id).unwrap();
                } else {
                    failures.lock().unwrap().push(format!("create {id}: {} {}", r.status, r.body));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let funder = {
        let (c, op, failures) = (c.clone(), op.clone(), failures.clone());
        std::thread::spawn(move || {
            for id in rx {
                if let Err(e) = fund_order(&c, &op, id, amount_of(id)) {
                    failures.lock().unwrap().push(e);
                }
            }
        })
    };

    // Payouts in flight: sent to the rail, not settled (it takes seconds).
    wait_for("payouts sent", Duration::from_secs(90), || {
        let sent = read_calls(&calls_path).iter().filter(|c| c.connector == "payout" && c.effect).count();
        (sent >= SENT_BEFORE_KILL).then_some(())
    });
    assert!(replicas[holder].holds_lease(), "replica {} lost the lease before the kill", replicas[holder].node);
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for o in all_orders(&c).values() {
        *states.entry(s(o, "state")).or_default() += 1;
    }
    let kill_at = unix_nanos();
    let killed = Instant::now();
    procs[holder].take().unwrap().kill_hard();
    let sent_at_kill = read_calls(&calls_path).iter().filter(|c| c.connector == "payout" && c.effect).count();
    eprintln!(
        "kill -9 replica {} with {} orders created, {sent_at_kill} payouts sent, orders {states:?} ({:?})",
        replicas[holder].node,
        created_n.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(!states.contains_key("completed"), "orders completed before the kill: {states:?}");

    // Another replica takes over.
    let successor = wait_for("another replica takes the lease over", Duration::from_secs(30), || {
        (0..3).find(|&i| i != holder && replicas[i].holds_lease())
    });
    let takeover_seen = unix_nanos();
    eprintln!("replica {} took the lease over {:?} after the kill", replicas[successor].node, killed.elapsed());

    creator.join().expect("the creator thread");
    funder.join().expect("the funder thread");
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "requests refused:\n{}", failures.join("\n"));

    // Every order completes, each step once.
    let ids: Vec<u64> = (FIRST_ID..FIRST_ID + ORDERS).collect();
    let orders = wait_terminal(&c, &ids, Duration::from_secs(90));
    eprintln!("all {ORDERS} orders terminal {:?} after the kill", killed.elapsed());
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for o in orders.values() {
        *states.entry(s(o, "state")).or_default() += 1;
    }
    assert_eq!(states.get("completed").copied(), Some(ORDERS as usize), "every order completes: {states:?}");
    let (mut bank_in, mut paid_out) = (0u128, 0u128);
    for id in &ids {
        let evs = events(&c, *id);
        let ok = |kind: &str| evs.iter().filter(|e| e["kind"] == json!(kind) && e["result"] == json!("ok")).count();
        for kind in ["funds_received", "screening_result", "lock_fx", "send_payout", "confirm_payout"] {
            assert_eq!(ok(kind), 1, "order {id}: {kind} applied {} times\n{}", ok(kind), timeline_text(&c, *id));
        }
        bank_in += n(&orders[id], "source_amount");
        paid_out += n(&orders[id], "target_amount");
    }

    // The call log: one payout per order, only ever under its one key.
    let calls = read_calls(&calls_path);
    let payout_sends = assert_effects_exactly_once(&calls, &ids);
    // In flight at the kill: sent before it, unsettled at it (the rail
    // settles a payout PAYOUT_CONFIRM_MS after its first send), and asked
    // for again, under its key, by the successor, which only acts after
    // `takeover_seen` was noted.
    let confirm_nanos = PAYOUT_CONFIRM_MS * 1_000_000;
    let mut sent: HashMap<u64, u64> = HashMap::new();
    for c in calls.iter().filter(|c| c.connector == "payout" && c.effect) {
        sent.insert(c.order, c.at_unix_nanos);
    }
    let in_flight: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| sent.get(id).is_some_and(|&t| t < kill_at && t + confirm_nanos > kill_at))
        .filter(|id| calls.iter().any(|c| c.order == *id && c.connector == "payout" && c.at_unix_nanos > takeover_seen))
        .collect();
    eprintln!(
        "call log: {} calls, {} payout sends; {} payouts in flight at the kill and asked for again by the successor",
        calls.len(),
        payout_sends.values().sum::<usize>(),
        in_flight.len()
    );
    assert!(
        !in_flight.is_empty(),
        "no payout was in flight at the kill and resumed by the successor: the test proved nothing"
    );

    // The money, and the same balances on both surviving replicas.
    let view = ledger_view(&c);
    assert_eq!(view[&format!("{:?}@{USD}", AccountKind::BankIn)][1], bank_in, "what the banks sent");
    assert_eq!(view[&format!("{:?}@{EUR}", AccountKind::Rail)][3], paid_out, "what the recipients got");
    for (name, b) in &view {
        assert_eq!((b[0], b[2]), (0, 0), "{name} has money pending: {b:?}");
    }
    let other = (0..3).find(|&i| i != holder && i != entry).unwrap();
    let c_other = replicas[other].client();
    wait_for("the surviving replicas hold the same balances", Duration::from_secs(30), || {
        (ledger_view(&c_other) == view).then_some(())
    });
    let survivors = [entry, other].map(|i| replicas[i].node);
    eprintln!("replicas {survivors:?} hold the same balances; {:?} in all", started.elapsed());
    drop(procs);
    drop(nats);
}

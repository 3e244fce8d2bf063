//! Helpers shared by the tests that run `bursar` as a real process
//! (`orders_race.rs`, `orders_crash.rs`, `cluster_orders.rs`,
//! `relay_nats.rs`): a seeded generator, log files, child processes started
//! until ready, the `bursar simulate` connector process and its call log,
//! and reading orders, timelines and balances over the HTTP API.

#![allow(dead_code)]

use crate::common::{ADMIN_KEY, Client, Req, Resp};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const TERMINAL: [&str; 6] = ["completed", "cancelled", "rejected", "refunded", "expired", "failed"];

mod rng;

// Not every test that includes this module draws numbers.
#[allow(unused_imports)]
pub use rng::Rng;

pub fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap()
}

// ------------------------------------------------------------- processes

/// A TCP port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `bursar` binary under test.
pub fn bursar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bursar"))
}

/// A child process, killed (SIGKILL) and reaped when dropped, also on panic.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no final snapshot.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM: a clean stop (the server snapshots).
    pub fn stop_clean(mut self) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "a clean stop exits 0, not {status}; log:\n{}", self.log_text());
                return;
            }
            assert!(Instant::now() < deadline, "did not stop in 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Spawns `bursar start` (as `make` builds it, output appended to `log`)
/// until its HTTP API at `http` is ready. A fixed port that the killed
/// previous process still holds for a moment is retried.
pub fn start_until_ready(make: impl FnMut() -> Command, http: &str, log: &Path) -> Proc {
    start_until_ready_retrying(make, http, log, |text, attempt| {
        attempt < 20 && text.lines().rev().take(5).any(|l| l.contains("in use"))
    })
}

/// [`start_until_ready`] for a cluster replica: an early exit is retried
/// for up to a minute (JetStream may still be electing its leaders).
pub fn start_replica_until_ready(make: impl FnMut() -> Command, http: &str, log: &Path) -> Proc {
    let deadline = Instant::now() + Duration::from_secs(60);
    start_until_ready_retrying(make, http, log, |_, _| Instant::now() < deadline)
}

/// Spawns until ready; after an early exit, `retry(log text, attempt)` says
/// whether to try again (after 250 ms) or fail.
fn start_until_ready_retrying(
    mut make: impl FnMut() -> Command,
    http: &str,
    log: &Path,
    retry: impl Fn(&str, usize) -> bool,
) -> Proc {
    for attempt in 0.. {
        let child = make().stdout(append(log)).stderr(append(log)).spawn().expect("the bursar binary starts");
        let mut server = Proc { child, log: log.to_path_buf() };
        let client = Client::new(&format!("http://{http}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                let text = server.log_text();
                if retry(&text, attempt) {
                    std::thread::sleep(Duration::from_millis(250));
                    break;
                }
                panic!("server exited with {status}; its log:\n{text}");
            }
            if client.try_send(Req::new(reqwest::Method::GET, "/readyz")).is_ok_and(|r| r.status == 200) {
                return server;
            }
            assert!(Instant::now() < deadline, "server not ready in 60 s; its log:\n{}", server.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    unreachable!()
}

/// `bursar simulate` on `port` with `sim_args` (latency, payout delay),
/// logging every call to `calls`; returns once it listens.
pub fn start_simulator(port: u16, calls: &Path, log: &Path, sim_args: &[&str]) -> Proc {
    let child = bursar()
        .args(["simulate", "--listen", &format!("127.0.0.1:{port}"), "--sim-call-log"])
        .arg(calls)
        .args(sim_args)
        .stdout(append(log))
        .stderr(append(log))
        .spawn()
        .expect("the bursar binary starts");
    let mut sim = Proc { child, log: log.to_path_buf() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = sim.child.try_wait().unwrap() {
            panic!("the simulator exited with {status}; its log:\n{}", sim.log_text());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sim;
        }
        assert!(Instant::now() < deadline, "the simulator is not listening after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------- the call log

/// One line of the simulator's call log.
#[derive(Clone, Debug)]
pub struct Call {
    pub connector: String,
    pub operation: String,
    pub key: String,
    /// This call performed the side effect (the first with its key).
    pub effect: bool,
    /// When the simulator answered it (its wall clock).
    pub at_unix_nanos: u64,
    /// The order the key names (`order-{id}-...`).
    pub order: u64,
}

/// Every call in the simulator's call log (`--sim-call-log`) so far. A
/// line that is not a call, or a key that names no order, fails the test.
pub fn read_calls(path: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line still being written has no newline yet: skip it.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| {
            let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a bad call-log line ({e}): {line}"));
            let key = s(&r, "key");
            let order = key
                .strip_prefix("order-")
                .and_then(|k| k.split('-').next())
                .and_then(|k| k.parse().ok())
                .unwrap_or_else(|| panic!("a key that names no order: {line}"));
            Call {
                connector: s(&r, "connector"),
                operation: s(&r, "operation"),
                key,
                effect: r["effect"] == json!(true),
                at_unix_nanos: r["at_unix_nanos"].as_u64().unwrap_or_else(|| panic!("no time: {line}")),
                order,
            }
        })
        .collect()
}

/// The call log's verdict on side effects: every call is for one of
/// `ids`; each order was screened and paid out exactly once; every payout
/// call was a `send` under the order's one key (`order-{id}-payout`); no
/// side effect happened twice. Returns the payout sends per order.
pub fn assert_effects_exactly_once(calls: &[Call], ids: &[u64]) -> HashMap<u64, usize> {
    let mut effects: HashMap<(&str, &str), usize> = HashMap::new();
    let mut payout_sends: HashMap<u64, usize> = HashMap::new();
    for c in calls {
        assert!(ids.contains(&c.order), "a call for an unknown order: {c:?}");
        if c.connector == "payout" {
            assert_eq!(c.operation, "send", "{c:?}");
            assert_eq!(c.key, format!("order-{}-payout", c.order), "a payout under another key: {c:?}");
            *payout_sends.entry(c.order).or_default() += 1;
        }
        if c.effect {
            *effects.entry((&c.connector, &c.key)).or_default() += 1;
        }
    }
    for id in ids {
        let key = format!("order-{id}-payout");
        assert_eq!(effects.get(&("payout", key.as_str())), Some(&1), "payout {key}: not paid exactly once");
        let key = format!("order-{id}-screening");
        assert_eq!(effects.get(&("screening", key.as_str())), Some(&1), "{key}: not screened exactly once");
    }
    for ((connector, key), count) in &effects {
        assert_eq!(*count, 1, "{connector} performed {key} {count} times");
    }
    payout_sends
}

// ------------------------------------------------------------- HTTP helpers

/// Posts until the server gives an answer that is not "try again" (no
/// connection, 5xx, a request with this key still in flight).
pub fn post_until_answered(c: &Client, op: &str, key: &str, path: &str, body: &Value) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match c.try_send(Req::new(Method::POST, path).key(op).idem(key).json(body)) {
            Err(_) => {}
            Ok(r) if r.status >= 500 => {}
            Ok(r) if r.status == 409 && r.body.contains("idempotency_request_in_flight") => {}
            Ok(r) => return r,
        }
        assert!(Instant::now() < deadline, "POST {path} got no answer in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reports the funds of order `id` (`amount`, reference `IN-{id}`) until
/// answered. `Ok` also when the order already left the funds wait (an
/// earlier attempt's answer was lost); `Err` with the answer otherwise.
pub fn fund_order(c: &Client, op: &str, id: u64, amount: u64) -> Result<(), String> {
    let body = json!({"amount": amount.to_string(), "reference": format!("IN-{id}")});
    let r = post_until_answered(c, op, &format!("funds-{id}"), &format!("/v1/orders/{id}/funds"), &body);
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let code = v["code"].as_str().unwrap_or("");
    let moved_on = r.status == 409
        && code.starts_with("order_is_")
        && !matches!(code, "order_is_created" | "order_is_awaiting_funds" | "order_is_cancelled");
    if r.status == 200 || moved_on { Ok(()) } else { Err(format!("funds {id}: {} {}", r.status, r.body)) }
}

pub fn s(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_else(|| panic!("no string {field:?} in {v}")).to_string()
}

pub fn n(v: &Value, field: &str) -> u128 {
    s(v, field).parse().unwrap_or_else(|_| panic!("{field:?} is not a u128 in {v}"))
}

/// Every order, by id (admin; pages of 1000).
pub fn all_orders(c: &Client) -> BTreeMap<u64, Value> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cur) => format!("/v1/orders?limit=1000&cursor={cur}"),
            None => "/v1/orders?limit=1000".to_string(),
        };
        let r = c.get(ADMIN_KEY, &path);
        r.expect(200, None);
        let v = r.json();
        for o in v["data"].as_array().expect("a page") {
            out.insert(s(o, "id").parse().unwrap(), o.clone());
        }
        match v["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return out,
        }
    }
}

pub fn events(c: &Client, id: u64) -> Vec<Value> {
    let r = c.get(ADMIN_KEY, &format!("/v1/orders/{id}/events"));
    r.expect(200, None);
    r.json()["data"].as_array().expect("events").clone()
}

pub fn timeline_text(c: &Client, id: u64) -> String {
    events(c, id)
        .iter()
        .map(|e| {
            format!(
                "    {} {} by {}: {} -> {} = {} {:?}",
                s(e, "timestamp"),
                s(e, "kind"),
                s(e, "actor"),
                e["from"].as_str().unwrap_or("-"),
                s(e, "to"),
                s(e, "result"),
                s(e, "reason")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until each of `ids` is in a terminal state; on timeout names the
/// stuck orders with their timelines.
pub fn wait_terminal(c: &Client, ids: &[u64], timeout: Duration) -> BTreeMap<u64, Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = all_orders(c);
        let missing: Vec<u64> = ids.iter().copied().filter(|id| !all.contains_key(id)).collect();
        assert!(missing.is_empty(), "orders vanished: {missing:?}");
        let stuck: Vec<(u64, String)> = ids
            .iter()
            .map(|id| (*id, s(&all[id], "state")))
            .filter(|(_, state)| !TERMINAL.contains(&state.as_str()))
            .collect();
        if stuck.is_empty() {
            return all;
        }
        if Instant::now() > deadline {
            let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, st) in &stuck {
                *by_state.entry(st).or_default() += 1;
            }
            let detail: Vec<String> = stuck
                .iter()
                .take(5)
                .map(|(id, st)| format!("  order {id} stuck in {st}:\n{}\n  order: {}", timeline_text(c, *id), all[id]))
                .collect();
            panic!("{} orders not terminal after {timeout:?} ({by_state:?}):\n{}", stuck.len(), detail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// An account's (debits_pending, debits_posted, credits_pending, credits_posted).
pub fn balances(c: &Client, id: u128) -> [u128; 4] {
    let r = c.get(ADMIN_KEY, &format!("/v1/accounts/{id}"));
    r.expect(200, None);
    let v = r.json();
    [n(&v, "debits_pending"), n(&v, "debits_posted"), n(&v, "credits_pending"), n(&v, "credits_posted")]
}

//! Helpers shared by the tests that run `bursar` as a real process
//! (`orders_race.rs`, `orders_crash.rs`, `relay_nats.rs`): a seeded
//! generator, log files, child processes started until ready, and reading
//! orders, timelines and balances over the HTTP API.

#![allow(dead_code)]

use crate::common::{ADMIN_KEY, Client, Req};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const TERMINAL: [&str; 6] = ["completed", "cancelled", "rejected", "refunded", "expired", "failed"];

/// A small deterministic generator (the seed is printed).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap()
}

// ------------------------------------------------------------- processes

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
pub fn start_until_ready(mut make: impl FnMut() -> Command, http: &str, log: &Path) -> Proc {
    for attempt in 0.. {
        let child = make().stdout(append(log)).stderr(append(log)).spawn().expect("the bursar binary starts");
        let mut server = Proc { child, log: log.to_path_buf() };
        let client = Client::new(&format!("http://{http}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                let text = server.log_text();
                let busy = text.lines().rev().take(5).any(|l| l.contains("in use"));
                if busy && attempt < 20 {
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

// ------------------------------------------------------------- HTTP helpers

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

//! Helpers shared by the order process tests (`orders_race.rs`,
//! `orders_crash.rs`): a seeded generator, log files, and reading orders,
//! timelines and balances over the HTTP API.

#![allow(dead_code)]

use crate::common::{ADMIN_KEY, Client};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
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

//! Final orders on disk, through the HTTP API of a real node. With a
//! snapshot after every entry, final orders' records go cold and the
//! indexer builds their stored tables (by id and by state); a restart
//! restores with those tables, so lookups, timelines, pages by id and by
//! state of old final orders are answered from disk. Method: take every
//! answer while all is in RAM, then require the same answers after a
//! clean restart with the tables, and after every table file is damaged
//! (the tables are rebuilt from the snapshots).

mod common;

use bursar_core::orders::settings::OrdersConfig;
use bursar_crypto::pii::PiiKeyring;
use bursar_http::{HttpConfig, OrdersApi};
use bursar_server::{Node, NodeConfig};
use common::{ADMIN_KEY, Client};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ORDERS: u128 = 40;
const FIRST: u128 = 7_001;

/// A node on `dir` with the HTTP API and orders enabled.
fn start(dir: &Path, keyring: &Arc<PiiKeyring>) -> (Node, Client) {
    let mut config = NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.admin_key = Some(ADMIN_KEY.to_string());
    config.snapshot_every_bytes = 1;
    config.cache_bytes = 1 << 20;
    let node = Node::start(config).expect("the node starts");
    let orders = OrdersApi { config: OrdersConfig::default(), keyring: keyring.clone() };
    let http = HttpConfig { orders: Some(Arc::new(orders)), ..Default::default() };
    let server = bursar_http::start(&node.handle(), "127.0.0.1:0".parse().unwrap(), http, None).expect("HTTP starts");
    let client = Client::new(&format!("http://{}", server.local_addr()));
    (node, client)
}

/// Files of the final orders' stored tables.
fn table_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("index").join("final_orders"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Every read of the orders, with volatile fields left out.
fn answers(c: &Client) -> Vec<Value> {
    let mut out = Vec::new();
    let mut get = |path: String| {
        let r = c.get(ADMIN_KEY, &path);
        r.expect(200, None);
        out.push(r.json());
    };
    for id in [FIRST, FIRST + 1, FIRST + 5, FIRST + ORDERS - 1] {
        get(format!("/v1/orders/{id}"));
        get(format!("/v1/orders/{id}/events"));
    }
    for query in ["limit=7", "limit=1000", "state=cancelled&limit=9", "state=created", "state=expired"] {
        get(format!("/v1/orders?{query}"));
    }
    get(format!("/v1/orders?state=cancelled&limit=5&cursor={}", FIRST + 20));
    get(format!("/v1/orders?limit=5&cursor={}", FIRST + 30));
    out.into_iter().map(|v| without(v, "request_id")).collect()
}

fn without(mut v: Value, key: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
    v
}

/// Waits until the indexer has written tables of final orders.
fn wait_for_tables(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while table_files(dir).is_empty() {
        assert!(Instant::now() < deadline, "no tables of final orders were written in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn final_orders_answer_the_same_from_stored_tables_and_after_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let keyring = Arc::new(PiiKeyring::generate().expect("a keyring"));
    let (node, c) = start(tmp.path(), &keyring);
    for (id, asset) in [(840, "USD"), (978, "EUR")] {
        c.post_new(ADMIN_KEY, "/v1/ledgers", &json!({"id": id, "asset": asset, "scale": 2})).expect(201, None);
    }
    let (_, op) = c.create_key("operator", &[]);
    for id in FIRST..FIRST + ORDERS {
        c.post_new(&op, "/v1/orders", &common::order_body(id, "Ottoline Fairweather")).expect(201, None);
    }
    // Three in four become final; the rest stay open.
    for id in (FIRST..FIRST + ORDERS).filter(|id| id % 4 != 0) {
        c.post_new(&op, &format!("/v1/orders/{id}/cancel"), &json!({})).expect(200, None);
    }
    let first = answers(&c);
    let all = first[ORDERS_LISTED]["data"].as_array().unwrap();
    assert_eq!(all.len(), ORDERS as usize, "every order is listed, open and final");
    let cancelled = all.iter().filter(|o| o["state"] == "cancelled").count();
    assert_eq!(cancelled, (FIRST..FIRST + ORDERS).filter(|id| id % 4 != 0).count());
    // One more command makes an entry, so a snapshot holds every final order.
    c.post_new(&op, &format!("/v1/orders/{}/cancel", FIRST + 1), &json!({})).expect(409, Some("order_is_cancelled"));
    wait_for_tables(tmp.path());
    node.shutdown();

    // Restarted: old final orders are found through the stored tables.
    let (node, c) = start(tmp.path(), &keyring);
    assert!(!node.report().indexes_rebuilt);
    assert_eq!(answers(&c), first);
    node.shutdown();

    // Every table file damaged: the tables are rebuilt, answers unchanged.
    for f in table_files(tmp.path()) {
        let mut bytes = std::fs::read(&f).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&f, bytes).unwrap();
    }
    let (node, c) = start(tmp.path(), &keyring);
    assert!(node.report().indexes_rebuilt, "damaged tables are rebuilt");
    assert_eq!(answers(&c), first);
    node.shutdown();
}

/// Index in `answers` of the page of all orders (`limit=1000`).
const ORDERS_LISTED: usize = 9;

//! Roles, maker-checker and the access trail over HTTP (docs/api.md,
//! "Authentication and roles", "Maker-checker", "Access trail"): a
//! compliance key reviews orders but moves no money and manages no keys;
//! the key that created an order cannot review it; every read of decrypted
//! personal data and every 401/403 lands in `GET /v1/access-log` with the
//! key, the client, the route, the target and the log time.

mod common;

use bursar_core::Operation;
use bursar_core::orders::settings::OrdersConfig;
use bursar_core::orders::{Actor, CommandKind, OrderCommand, Verdict};
use bursar_crypto::pii::PiiKeyring;
use bursar_http::{HttpConfig, OrdersApi};
use bursar_proto::RequestOp;
use bursar_server::message::{EngineMsg, Request};
use common::{ADMIN_KEY, Req, TestNode, transfer_body};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECIPIENT: &str = "Bartholomew Ickenham";

fn node() -> TestNode {
    let keyring = PiiKeyring::generate().expect("a keyring");
    let orders = OrdersApi { config: OrdersConfig::default(), keyring: Arc::new(keyring) };
    let node = TestNode::with_config(HttpConfig { orders: Some(Arc::new(orders)), ..Default::default() });
    for (id, asset) in [(840, "USD"), (978, "EUR")] {
        let body = json!({"id": id, "asset": asset, "scale": 2});
        node.client.post_new(ADMIN_KEY, "/v1/ledgers", &body).expect(201, None);
    }
    node
}

fn order_body(id: u128) -> Value {
    common::order_body(id, "Quintessa Marlowe")
}

/// What the executor and the bank connector do in a running node: plain
/// order commands through the engine queue (no executor runs in these tests).
fn executor_command(node: &TestNode, c: OrderCommand) {
    let h = node.handle();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let body = bytemuck::bytes_of(&c).to_vec();
    let request =
        Request { op: RequestOp::Op(Operation::OrderCommands), request_id: 0, body, envelope: None, reply: tx };
    let response = h.runtime.block_on(async move {
        h.engine.send(EngineMsg::Request(request)).await.expect("the engine runs");
        rx.await.expect("the engine answers")
    });
    assert_eq!((response.status, response.body.len()), (0, 0), "the command applies");
}

/// Drives order `id` to `on_hold` the way the workflow would.
fn to_on_hold(node: &TestNode, id: u128) {
    let funds = OrderCommand { amount: 10_000, ..OrderCommand::new(id, CommandKind::FundsReceived, Actor::Bank) };
    executor_command(node, funds);
    executor_command(node, OrderCommand::new(id, CommandKind::StartScreening, Actor::Executor));
    let review = OrderCommand::new(id, CommandKind::ScreeningResult, Actor::Executor);
    executor_command(node, OrderCommand { verdict: Verdict::Review as u8, ..review });
}

/// The access log as `key` sees it, optionally of one kind.
fn access_log(node: &TestNode, key: &str, kind: Option<&str>) -> Vec<Value> {
    let path = match kind {
        Some(k) => format!("/v1/access-log?limit=1000&kind={k}"),
        None => "/v1/access-log?limit=1000".to_string(),
    };
    let r = node.client.get(key, &path);
    r.expect(200, None);
    r.json()["data"].as_array().expect("a page").clone()
}

/// Refusals are written once a second: waits (bounded) until `pred` holds.
fn wait_for_access(node: &TestNode, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = access_log(node, ADMIN_KEY, None);
        if pred(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "the access log never showed the records: {log:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn compliance_reviews_orders_but_moves_no_money_and_manages_no_keys() {
    let node = node();
    let c = &node.client;
    let (_, maker) = c.create_key("operator", &[]);
    let (checker_id, checker) = c.create_key("compliance", &[]);
    let created = c.post_new(&maker, "/v1/orders", &order_body(1));
    created.expect(201, None);
    assert!(created.json()["flags"].as_array().unwrap().contains(&json!("maker_checker")), "{}", created.body);
    to_on_hold(&node, 1);

    // Compliance may not move money or manage keys or ledgers.
    c.create_ledger(1);
    c.post_new(&checker, "/v1/transfers", &transfer_body(9, 1, 2, 1, 1)).expect(403, Some("forbidden"));
    c.post_new(&checker, "/v1/accounts", &json!({"id": "5", "ledger": 1, "code": 1})).expect(403, Some("forbidden"));
    c.post_new(&checker, "/v1/orders", &order_body(2)).expect(403, Some("forbidden"));
    c.post_new(&checker, "/v1/orders/1/cancel", &json!({})).expect(403, Some("forbidden"));
    c.post_new(&checker, "/v1/orders/1/funds", &json!({"amount": "10000"})).expect(403, Some("forbidden"));
    let key = json!({"role": "operator", "name": "x"});
    c.post_new(&checker, "/v1/keys", &key).expect(403, Some("forbidden"));
    c.post_new(&checker, "/v1/ledgers", &json!({"id": 3, "asset": "USD", "scale": 2})).expect(403, Some("forbidden"));
    // It reads orders (decrypted), their timeline and the audit trail.
    let read = c.get(&checker, "/v1/orders/1");
    read.expect(200, None);
    assert_eq!(read.json()["recipient"]["name"], RECIPIENT);
    c.get(&checker, "/v1/orders/1/events").expect(200, None);
    c.get(&checker, "/v1/audit").expect(200, None);

    // Maker-checker: the creating key is refused, with a clear code.
    let refused = c.post_new(&maker, "/v1/orders/1/review", &json!({"decision": "approve"}));
    refused.expect(403, Some("maker_checker"));
    assert!(refused.json()["detail"].as_str().unwrap().contains("created this order"), "{}", refused.body);
    assert_eq!(c.get(&checker, "/v1/orders/1").json()["state"], "on_hold", "the refusal changed nothing");
    // Another key may decide it.
    let approved = c.post_new(&checker, "/v1/orders/1/review", &json!({"decision": "approve"}));
    approved.expect(200, None);
    assert_eq!(approved.json()["state"], "approved");
    let events = c.get(&checker, "/v1/orders/1/events").json()["data"].as_array().unwrap().clone();
    let review = events.iter().find(|e| e["kind"] == "review").expect("the review is on the timeline");
    assert_eq!((review["key_id"].as_u64(), review["result"].as_str()), (Some(checker_id), Some("ok")));
}

#[test]
fn personal_data_reads_and_refusals_are_in_the_access_log() {
    let node = node();
    let c = &node.client;
    let (operator_id, operator) = c.create_key("operator", &[]);
    let (_, auditor) = c.create_key("auditor", &[]);
    c.post_new(&operator, "/v1/orders", &order_body(42)).expect(201, None);
    let before = access_log(&node, ADMIN_KEY, Some("pii_read")).len();

    // A decrypted read is recorded before it is answered; a masked one is not.
    c.get(&operator, "/v1/orders/42").expect(200, None);
    c.get(&auditor, "/v1/orders/42").expect(200, None);
    let reads = access_log(&node, &auditor, Some("pii_read"));
    assert_eq!(reads.len(), before + 1, "{reads:#?}");
    let r = reads.last().unwrap();
    assert_eq!(r["key_id"].as_u64(), Some(operator_id));
    assert_eq!((r["route"].as_str(), r["target"].as_str()), (Some("GET /v1/orders/{id}"), Some("42")));
    assert_eq!((r["status"].as_u64(), r["count"].as_u64()), (Some(200), Some(1)));
    assert!(r["timestamp"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(r["log_position"].as_u64().unwrap() > 0);

    // Six 401s from one client on one route become one record with a count;
    // a 403 names the key.
    c.send(Req::new(Method::GET, "/v1/orders/42")).expect(401, Some("unauthorized"));
    for _ in 0..5 {
        c.get("not-a-key-at-all-0123456789", "/v1/orders/42").expect(401, Some("unauthorized"));
    }
    c.get(&operator, "/v1/audit").expect(403, Some("forbidden"));
    let unauthorized = |log: &[Value]| {
        log.iter().filter(|r| r["kind"] == "unauthorized").map(|r| r["count"].as_u64().unwrap()).sum::<u64>()
    };
    let log = wait_for_access(&node, |log| unauthorized(log) >= 6 && log.iter().any(|r| r["kind"] == "forbidden"));
    assert_eq!(unauthorized(&log), 6, "{log:#?}");
    let u = log.iter().find(|r| r["kind"] == "unauthorized").unwrap();
    assert_eq!((u["key_id"].as_u64(), u["client"].as_str()), (None, Some("127.0.0.1")));
    assert_eq!(
        (u["route"].as_str(), u["target"].as_str(), u["status"].as_u64()),
        (Some("GET /v1/orders/{id}"), Some("42"), Some(401))
    );
    let f = log.iter().find(|r| r["kind"] == "forbidden").unwrap();
    assert_eq!(
        (f["key_id"].as_u64(), f["route"].as_str(), f["status"].as_u64()),
        (Some(operator_id), Some("GET /v1/audit"), Some(403))
    );
    assert!(f["timestamp"].as_str().unwrap().parse::<u64>().unwrap() > 0);

    // Operators may not read the access log (and that is recorded too).
    c.get(&operator, "/v1/access-log").expect(403, Some("forbidden"));
    c.get(&auditor, "/v1/access-log?kind=nope").expect(400, Some("invalid_query"));
}

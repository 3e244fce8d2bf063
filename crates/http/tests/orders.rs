//! Payment orders over HTTP (docs/api.md, "Orders"): create with the fee
//! and timeouts resolved at the edge and the personal data sealed before it
//! is logged, reads by role (decrypted for operators and admins, masked for
//! auditors), the commands an operator or a bank integration sends, the
//! timeline, the result codes as statuses, and that no plaintext personal
//! data ever reaches the data directory. No executor runs here: orders move
//! only by the API's commands.

mod common;

use bursar_core::orders::settings::OrdersConfig;
use bursar_crypto::pii::PiiKeyring;
use bursar_http::{HttpConfig, OrdersApi};
use common::{ADMIN_KEY, Client, Req, TestNode, fresh_key};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

const SENDER: &str = "Quintessa Marlowe-Vandersloot";
const RECIPIENT: &str = "Bartholomew Ickenham";
const IBAN: &str = "DE89370400440532013000";

fn orders_config(keyring: PiiKeyring) -> HttpConfig {
    let orders = OrdersApi { config: OrdersConfig::default(), keyring: Arc::new(keyring) };
    HttpConfig { orders: Some(Arc::new(orders)), ..Default::default() }
}

/// A node with orders enabled, ledgers 840 (USD) and 978 (EUR), and an
/// operator and an auditor key (id, secret).
struct Fixture {
    node: TestNode,
    operator: (u64, String),
    auditor: (u64, String),
}

impl Fixture {
    fn start() -> Fixture {
        let node = TestNode::with_config(orders_config(PiiKeyring::generate().expect("a keyring")));
        create_ledgers(&node.client);
        let operator = node.client.create_key("operator", &[]);
        let auditor = node.client.create_key("auditor", &[]);
        Fixture { node, operator, auditor }
    }

    fn client(&self) -> &Client {
        &self.node.client
    }

    fn op(&self) -> &str {
        &self.operator.1
    }

    fn create(&self, id: u128) -> Value {
        let r = self.client().post_new(self.op(), "/v1/orders", &order_body(id));
        r.expect(201, None);
        r.json()
    }

    fn command(&self, id: u128, what: &str, body: &Value) -> common::Resp {
        self.client().post_new(self.op(), &format!("/v1/orders/{id}/{what}"), body)
    }

    fn events(&self, id: u128) -> Vec<Value> {
        let r = self.client().get(&self.auditor.1, &format!("/v1/orders/{id}/events"));
        r.expect(200, None);
        r.json()["data"].as_array().expect("a list of events").clone()
    }
}

fn create_ledgers(client: &Client) {
    for (id, asset) in [(840, "USD"), (978, "EUR")] {
        client.post_new(ADMIN_KEY, "/v1/ledgers", &json!({"id": id, "asset": asset, "scale": 2})).expect(201, None);
    }
}

fn order_body(id: u128) -> Value {
    common::order_body(id, SENDER)
}

#[test]
fn every_order_route_answers_503_when_orders_are_disabled() {
    let node = TestNode::start();
    let c = &node.client;
    c.get(ADMIN_KEY, "/v1/orders").expect(503, Some("orders_disabled"));
    c.get(ADMIN_KEY, "/v1/orders/1").expect(503, Some("orders_disabled"));
    c.get(ADMIN_KEY, "/v1/orders/1/events").expect(503, Some("orders_disabled"));
    let (_, op) = c.create_key("operator", &[]);
    c.post_new(&op, "/v1/orders", &order_body(1)).expect(503, Some("orders_disabled"));
    for what in ["cancel", "review", "funds"] {
        let body = match what {
            "review" => json!({"decision": "approve"}),
            "funds" => json!({"amount": "1"}),
            _ => json!({}),
        };
        c.post_new(&op, &format!("/v1/orders/1/{what}"), &body).expect(503, Some("orders_disabled"));
    }
    // Still no key, no answer: authentication comes first.
    c.send(Req::new(Method::GET, "/v1/orders")).expect(401, Some("unauthorized"));
}

#[test]
fn create_resolves_the_fee_and_shows_personal_data_by_role() {
    let f = Fixture::start();
    let created = f.create(1001);
    assert_eq!(created["state"], "created");
    assert_eq!((created["id"].as_str(), created["customer_id"].as_str()), (Some("1001"), Some("77")));
    assert_eq!((created["source_asset"].as_str(), created["target_asset"].as_str()), (Some("USD"), Some("EUR")));
    assert_eq!((created["source_ledger"].as_u64(), created["target_ledger"].as_u64()), (Some(840), Some(978)));
    // Default settings: 0.5 % rounded up, at least one minor unit.
    assert_eq!((created["source_amount"].as_str(), created["fee_amount"].as_str()), (Some("10000"), Some("50")));
    assert_eq!(created["target_amount"], Value::Null);
    assert_eq!(created["rate_ppb"], Value::Null);
    assert_eq!(created["flags"], json!(["refund_fee_on_failure", "maker_checker"]));
    assert_eq!(
        (created["funds_timeout_seconds"].as_u64(), created["review_timeout_seconds"].as_u64()),
        (Some(24 * 3600), Some(72 * 3600))
    );
    let created_at: u64 = created["created_at"].as_str().unwrap().parse().unwrap();
    let deadline: u64 = created["deadline"].as_str().expect("a funds deadline").parse().unwrap();
    assert!(deadline >= created_at + 24 * 3600 * 1_000_000_000 - 1_000_000_000, "{created}");
    assert_eq!(created["sender"], json!({"name": SENDER, "country": "GB"}));
    assert_eq!(created["recipient"], json!({"name": RECIPIENT, "bank_account": IBAN}));

    for key in [ADMIN_KEY, f.op()] {
        let r = f.client().get(key, "/v1/orders/1001");
        r.expect(200, None);
        assert_eq!(r.json(), created);
    }
    let masked = f.client().get(&f.auditor.1, "/v1/orders/1001");
    masked.expect(200, None);
    let m = masked.json();
    assert_eq!(m["sender"], json!({"name": "Q***", "country": "GB"}));
    assert_eq!(m["recipient"], json!({"name": "B***", "bank_account": "***3000"}));
    assert!(!masked.body.contains("Marlowe") && !masked.body.contains(IBAN), "{}", masked.body);
    assert_eq!(m["fee_amount"], created["fee_amount"]);

    // UUIDs name the same ids.
    let uuid = "00000000-0000-0000-0000-0000000003e9"; // 1001
    assert_eq!(f.client().get(f.op(), &format!("/v1/orders/{uuid}")).json()["id"], "1001");
}

#[test]
fn creates_replay_by_idempotency_key_and_repeat_as_exists() {
    let f = Fixture::start();
    let c = f.client();
    let first = c.post(f.op(), "create-2001", "/v1/orders", &order_body(2001));
    first.expect(201, None);
    assert!(!first.replayed());

    let again = c.post(f.op(), "create-2001", "/v1/orders", &order_body(2001));
    again.expect(201, None);
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    // The personal data is not part of the fingerprint: it is sealed with a
    // fresh nonce each time and not even its hash is logged.
    let mut renamed = order_body(2001);
    renamed["sender"]["name"] = json!("Someone Else");
    let replay = c.post(f.op(), "create-2001", "/v1/orders", &renamed);
    assert!(replay.replayed());
    assert_eq!(replay.json()["sender"]["name"], SENDER);

    // A new key with the same fields: exists, the stored order.
    let exists = c.post_new(f.op(), "/v1/orders", &order_body(2001));
    exists.expect(200, None);
    assert!(!exists.replayed());
    assert_eq!(exists.json()["sender"]["name"], SENDER);
    let mut bigger = order_body(2001);
    bigger["source_amount"] = json!("10001");
    c.post_new(f.op(), "/v1/orders", &bigger).expect(409, Some("exists_with_different_fields"));
    c.post(f.op(), "create-2001", "/v1/orders", &bigger).expect(422, Some("idempotency_key_reused"));
    assert_eq!(c.audit_outcomes("create-2001"), ["executed", "replayed", "replayed", "conflict"]);
}

#[test]
fn create_rejects_bad_fields_with_the_field_named() {
    let f = Fixture::start();
    let c = f.client();
    let with = |path: &[&str], v: Value| {
        let mut b = order_body(3001);
        match path {
            [a] => b[*a] = v,
            [a, b2] => b[*a][*b2] = v,
            _ => unreachable!(),
        }
        b
    };
    let check = |body: Value, status: u16, code: &str, field: &str| {
        let r = c.post_new(f.op(), "/v1/orders", &body);
        r.expect(status, Some(code));
        assert_eq!(r.json()["field"], field, "{}", r.body);
        assert!(!r.body.contains(SENDER), "{}", r.body);
    };
    check(with(&["source_asset"], json!("XAU")), 422, "asset_unknown", "source_asset");
    check(with(&["target_asset"], json!("usd")), 422, "asset_unknown", "target_asset");
    check(with(&["sender", "country"], json!("gb")), 422, "pii_invalid", "sender.country");
    check(with(&["sender", "name"], json!("")), 422, "pii_invalid", "sender.name");
    check(with(&["recipient", "name"], json!("Bad\nName")), 422, "pii_invalid", "recipient.name");
    check(with(&["recipient", "bank_account"], json!("DE89/3704")), 422, "pii_invalid", "recipient.bank_account");
    check(with(&["source_amount"], json!("10.5")), 400, "invalid_field", "source_amount");
    check(with(&["source_amount"], json!("0")), 422, "source_amount_must_not_be_zero", "source_amount");
    check(with(&["source_amount"], json!("1")), 422, "fee_must_be_less_than_amount", "source_amount");
    check(with(&["customer_id"], json!("0")), 422, "customer_id_must_not_be_zero", "customer_id");
    check(with(&["id"], json!("x")), 400, "invalid_field", "id");
    check(with(&["payout_at"], json!("soon")), 400, "invalid_field", "payout_at");
    // GBP is in the settings, but its ledger (826) was never created.
    check(with(&["target_asset"], json!("GBP")), 422, "target_ledger_not_found", "target_asset");
    let mut extra = order_body(3001);
    extra["colour"] = json!("red");
    c.post_new(f.op(), "/v1/orders", &extra).expect(400, Some("invalid_json"));

    // Roles and ledgers: auditors and admins do not create; a key restricted
    // to USD may not create an order paying out in EUR.
    c.post_new(&f.auditor.1, "/v1/orders", &order_body(3001)).expect(403, Some("forbidden"));
    c.post_new(ADMIN_KEY, "/v1/orders", &order_body(3001)).expect(403, Some("forbidden"));
    let (_, usd_only) = c.create_key("operator", &[840]);
    c.post_new(&usd_only, "/v1/orders", &order_body(3001)).expect(403, Some("forbidden"));
    // Nothing was created by any of it.
    c.get(f.op(), "/v1/orders/3001").expect(404, Some("order_not_found"));
}

#[test]
fn unknown_orders_are_404() {
    let f = Fixture::start();
    let c = f.client();
    c.get(f.op(), "/v1/orders/4242").expect(404, Some("order_not_found"));
    c.get(f.op(), "/v1/orders/4242/events").expect(404, Some("order_not_found"));
    let r = f.command(4242, "cancel", &json!({}));
    r.expect(404, Some("order_not_found"));
    f.command(4242, "funds", &json!({"amount": "1"})).expect(404, Some("order_not_found"));
    c.get(f.op(), "/v1/orders/nope").expect(400, Some("invalid_field"));
}

#[test]
fn lists_page_by_id_and_filter_by_state() {
    let f = Fixture::start();
    let c = f.client();
    for id in 5001..=5005 {
        f.create(id);
    }
    for id in [5002, 5004] {
        f.command(id, "cancel", &json!({})).expect(200, None);
    }
    let ids = |v: &Value| -> Vec<String> {
        v["data"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
    };
    let page = c.get(f.op(), "/v1/orders?state=created&limit=2");
    page.expect(200, None);
    let p = page.json();
    assert_eq!((ids(&p), p["next_cursor"].as_str()), (vec!["5001".into(), "5003".into()], Some("5003")));
    let p = c.get(f.op(), "/v1/orders?state=created&limit=2&cursor=5003").json();
    assert_eq!(ids(&p), ["5005"]);
    assert_eq!(p["next_cursor"], Value::Null);
    let p = c.get(f.op(), "/v1/orders?state=cancelled").json();
    assert_eq!(ids(&p), ["5002", "5004"]);
    assert!(p["data"].as_array().unwrap().iter().all(|o| o["state"] == "cancelled"));
    let all = c.get(f.op(), "/v1/orders?limit=1000").json();
    assert_eq!(ids(&all).len(), 5);
    assert_eq!(all["data"][0]["sender"]["name"], SENDER);
    // Auditors list too, masked.
    let masked = c.get(&f.auditor.1, "/v1/orders");
    masked.expect(200, None);
    assert_eq!(masked.json()["data"][0]["sender"]["name"], "Q***");
    assert!(!masked.body.contains(SENDER));

    let bad = c.get(f.op(), "/v1/orders?state=sleeping");
    bad.expect(400, Some("invalid_query"));
    assert_eq!(bad.json()["field"], "state");
    c.get(f.op(), "/v1/orders?limit=0").expect(400, Some("invalid_query"));
    c.get(f.op(), "/v1/orders?cursor=x").expect(400, Some("invalid_query"));
    c.get(f.op(), "/v1/orders?after=1").expect(400, Some("invalid_query"));
}

#[test]
fn a_cancelled_order_refuses_funds_with_409() {
    let f = Fixture::start();
    f.create(6001);
    // The body is optional.
    let r = f.client().send(Req::new(Method::POST, "/v1/orders/6001/cancel").key(f.op()).idem("cancel-6001"));
    r.expect(200, None);
    let o = r.json();
    assert_eq!((o["state"].as_str(), o["deadline"].as_str()), (Some("cancelled"), None));
    let refused = f.command(6001, "funds", &json!({"amount": "10000"}));
    refused.expect(409, Some("order_is_cancelled"));
    assert!(refused.json()["detail"].as_str().unwrap().contains("cancelled"), "{}", refused.body);
    f.command(6001, "cancel", &Value::Null).expect(409, Some("order_is_cancelled"));
    let not_json = Req::new(Method::POST, "/v1/orders/6001/cancel").key(f.op()).idem("cancel-6001-text");
    f.client().send(not_json.raw_body("reason=x")).expect(400, Some("invalid_json"));
    // A final order is frozen: the refusals are answered, not added to its
    // timeline, and the order is unchanged.
    let events = f.events(6001);
    let results: Vec<&str> = events.iter().map(|e| e["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["ok", "ok"]);
    assert_eq!(f.client().get(f.op(), "/v1/orders/6001").json()["state"], "cancelled");
}

#[test]
fn funds_must_match_and_a_cancel_after_funds_refunds() {
    let f = Fixture::start();
    let c = f.client();
    f.create(7001);
    let wrong = f.command(7001, "funds", &json!({"amount": "9999", "reference": "BANK-1"}));
    wrong.expect(422, Some("amount_must_equal_order"));
    assert_eq!(wrong.json()["field"], "amount");

    let key = fresh_key("funds");
    let body = json!({"amount": "10000", "reference": "BANK-REF-7001"});
    let funded = c.post(f.op(), &key, "/v1/orders/7001/funds", &body);
    funded.expect(200, None);
    let o = funded.json();
    assert_eq!((o["state"].as_str(), o["reference"].as_str()), (Some("funds_received"), Some("BANK-REF-7001")));
    assert_eq!(o["deadline"], Value::Null);
    // The same notification again (a bank retry with the same key) replays.
    let replay = c.post(f.op(), &key, "/v1/orders/7001/funds", &body);
    replay.expect(200, None);
    assert!(replay.replayed());
    assert_eq!(replay.json()["state"], "funds_received");
    // A second notification under a new key is refused by the state.
    f.command(7001, "funds", &body).expect(409, Some("order_is_funds_received"));

    let refunded = f.command(7001, "cancel", &json!({"reason": "customer changed their mind"}));
    refunded.expect(200, None);
    assert_eq!(refunded.json()["state"], "refunded");
    f.command(7001, "review", &json!({"decision": "approve"})).expect(409, Some("order_is_refunded"));
}

#[test]
fn the_timeline_names_actor_key_and_transfers() {
    let f = Fixture::start();
    let c = f.client();
    f.create(8001);
    f.command(8001, "funds", &json!({"amount": "10000", "reference": "R-8001"})).expect(200, None);
    f.command(8001, "cancel", &json!({"reason": "fraud suspected"})).expect(200, None);
    let events = f.events(8001);
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "funds_received", "cancel"]);
    for e in &events {
        assert_eq!(e["actor"], "api", "{e}");
        assert_eq!(e["key_id"].as_u64(), Some(f.operator.0), "{e}");
        assert_eq!(e["result"], "ok", "{e}");
        assert!(e["timestamp"].as_str().unwrap().parse::<u64>().unwrap() > 0);
        assert!(e["log_position"].as_u64().unwrap() > 0);
    }
    let states = |e: &Value| (e["from"].clone(), e["to"].clone());
    assert_eq!(states(&events[0]), (Value::Null, json!("created")));
    assert_eq!(states(&events[1]), (json!("created"), json!("funds_received")));
    assert_eq!(states(&events[2]), (json!("funds_received"), json!("refunded")));
    assert_eq!(events[2]["reason"], "fraud suspected");
    assert!(events[0]["transfers"].as_array().unwrap().is_empty());

    // Funds: bank → customer, then customer → escrow held (pending).
    let funds: Vec<&str> = events[1]["transfers"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(funds.len(), 2);
    let hold = c.get(ADMIN_KEY, &format!("/v1/transfers/{}", funds[1]));
    hold.expect(200, None);
    let hold = hold.json();
    assert_eq!((hold["amount"].as_str(), hold["ledger"].as_u64()), (Some("10000"), Some(840)));
    assert!(hold["flags"].as_array().unwrap().contains(&json!("pending")), "{hold}");
    // Cancel: the hold is voided and the money returned; every id is a
    // transfer in the ledger.
    let refund = events[2]["transfers"].as_array().unwrap();
    assert!(!refund.is_empty());
    for t in refund {
        c.get(ADMIN_KEY, &format!("/v1/transfers/{}", t.as_str().unwrap())).expect(200, None);
    }
    let void = c.get(ADMIN_KEY, &format!("/v1/transfers/{}", refund[0].as_str().unwrap())).json();
    assert_eq!(void["pending_id"].as_str(), Some(funds[1]), "{void}");
}

#[test]
fn commands_check_state_reason_reference_and_decision() {
    let f = Fixture::start();
    f.create(9001);
    let r = f.command(9001, "review", &json!({"decision": "approve"}));
    r.expect(409, Some("order_is_created"));
    assert!(r.json()["detail"].as_str().unwrap().contains("created"));
    f.command(9001, "review", &json!({"decision": "maybe"})).expect(400, Some("invalid_field"));
    let long = f.command(9001, "cancel", &json!({"reason": "x".repeat(129)}));
    long.expect(422, Some("reason_invalid"));
    assert_eq!(long.json()["field"], "reason");
    let r = f.command(9001, "funds", &json!({"amount": "10000", "reference": "x".repeat(33)}));
    r.expect(422, Some("reference_invalid"));
    assert_eq!(r.json()["field"], "reference");
    f.command(9001, "funds", &json!({"amount": "10000", "reference": "two words"}))
        .expect(422, Some("reference_invalid"));
    f.command(9001, "funds", &json!({"amount": "-1"})).expect(400, Some("invalid_field"));
    // A reason of exactly 128 bytes (multi-byte characters) is fine.
    let r = f.command(9001, "cancel", &json!({"reason": "é".repeat(64)}));
    r.expect(200, None);
    assert_eq!(f.events(9001).last().unwrap()["reason"], "é".repeat(64));
    // Auditors do not send commands.
    f.client().post_new(&f.auditor.1, "/v1/orders/9001/cancel", &json!({})).expect(403, Some("forbidden"));
}

#[test]
fn personal_data_never_reaches_the_data_directory() {
    let mut f = Fixture::start();
    for id in 10_001..=10_003 {
        f.create(id);
    }
    f.command(10_001, "funds", &json!({"amount": "10000"})).expect(200, None);
    f.command(10_002, "cancel", &json!({})).expect(200, None);
    // Reads, list and a replay, so nothing is written only on a write path.
    f.client().get(f.op(), "/v1/orders").expect(200, None);
    f.client().post(f.op(), "pii-replay", "/v1/orders", &order_body(10_004)).expect(201, None);
    f.client().post(f.op(), "pii-replay", "/v1/orders", &order_body(10_004)).expect(201, None);
    f.node.stop();

    let mut files = 0;
    // A positive control: the Idempotency-Key is logged in the clear, so the
    // search does see the log.
    let mut control = false;
    let mut stack = vec![f.node.data_dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            files += 1;
            control |= bytes.windows(10).any(|w| w == b"pii-replay");
            for secret in [SENDER, RECIPIENT, IBAN, "Marlowe"] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds {secret:?} in plaintext",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0 && control, "the search saw no log ({files} files)");
}

#[test]
fn a_blob_no_configured_key_opens_is_a_500_naming_no_data() {
    // Two HTTP front ends on one node, each with its own keys: what one
    // sealed, the other cannot open.
    let dir = tempfile::tempdir().unwrap();
    let mut config = bursar_server::NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.admin_key = Some(ADMIN_KEY.to_string());
    let node = bursar_server::Node::start(config).expect("the node starts");
    let serve = |keyring: PiiKeyring| {
        let s = bursar_http::start(&node.handle(), "127.0.0.1:0".parse().unwrap(), orders_config(keyring), None)
            .expect("HTTP starts");
        Client::new(&format!("http://{}", s.local_addr()))
    };
    let a = serve(PiiKeyring::generate().unwrap());
    let b = serve(PiiKeyring::generate().unwrap());
    create_ledgers(&a);
    let (_, op) = a.create_key("operator", &[]);
    a.post_new(&op, "/v1/orders", &order_body(11_001)).expect(201, None);
    a.get(&op, "/v1/orders/11001").expect(200, None);
    let r = b.get(&op, "/v1/orders/11001");
    r.expect(500, Some("pii_undecryptable"));
    assert!(!r.body.contains(SENDER));
    b.get(&op, "/v1/orders").expect(500, Some("pii_undecryptable"));
    // The timeline holds no personal data: it still reads.
    b.get(&op, "/v1/orders/11001/events").expect(200, None);
    node.shutdown();
}

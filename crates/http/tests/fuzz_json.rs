//! Live fuzz target for JSON request bodies (issue 13, trust boundaries).
//!
//! `fuzz_json_bodies` runs a real node with the HTTP API (orders and
//! webhooks enabled, no delivery worker) and sends every route that takes
//! a JSON body a valid body mutated structurally (values replaced by any
//! type, boundary numbers and long strings; members removed or added with
//! known and unknown names; arrays where objects go), sometimes also edited
//! as raw bytes, and sometimes with a garbage path id. Every answer must be
//! a success or a 4xx problem+json with a code (never a 5xx, never a
//! dropped connection), and after the run the offline verifier replays the
//! log with every invariant. This covers DTO deserialisation, conversion to
//! commands (a problem or a valid command) and apply, end to end.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

mod common;

use bursar_core::orders::settings::OrdersConfig;
use bursar_crypto::pii::PiiKeyring;
use bursar_fuzz as fz;
use bursar_http::{HttpConfig, OrdersApi, WebhooksApi};
use bursar_outbound::webhooks::DestinationPolicy;
use common::{ADMIN_KEY, Req, TestNode, fresh_key};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

/// Member names the bodies use, so added members hit real fields.
const NAMES: &[&str] = &[
    "id",
    "ledger",
    "code",
    "flags",
    "asset",
    "scale",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "pending_id",
    "timeout",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "accounts",
    "transfers",
    "role",
    "ledgers",
    "name",
    "customer_id",
    "source_asset",
    "source_amount",
    "target_asset",
    "sender",
    "recipient",
    "country",
    "bank_account",
    "payout_at",
    "decision",
    "reason",
    "reference",
    "url",
    "types",
    "secret",
    "seqs",
];

fn order_body(id: u128) -> Value {
    common::order_body(id, "Quintessa Marlowe")
}

/// Every route that takes a JSON body, with a valid body.
fn seeds() -> Vec<(String, Value)> {
    let transfer =
        json!({"id": "7", "debit_account_id": "1", "credit_account_id": "2", "amount": "5", "ledger": 840, "code": 1});
    let pending = json!({"id": "8", "debit_account_id": "1", "credit_account_id": "2", "amount": "5", "ledger": 840, "code": 1, "flags": ["pending"], "timeout": 60});
    vec![
        ("/v1/ledgers".into(), json!({"id": 9, "asset": "GBP", "scale": 2})),
        (
            "/v1/accounts".into(),
            json!({"id": "50", "ledger": 840, "code": 1, "flags": ["history"], "user_data_128": "5"}),
        ),
        (
            "/v1/accounts/batch".into(),
            json!({"accounts": [{"id": "51", "ledger": 840, "code": 1}, {"id": "52", "ledger": 978, "code": 2}]}),
        ),
        ("/v1/transfers".into(), transfer.clone()),
        (
            "/v1/transfers/batch".into(),
            json!({"transfers": [pending, {"id": "9", "pending_id": "8", "flags": ["post_pending"]}]}),
        ),
        ("/v1/keys".into(), json!({"role": "operator", "ledgers": [840], "name": "fuzz"})),
        ("/v1/orders".into(), order_body(1)),
        ("/v1/orders/1/cancel".into(), json!({"reason": "changed mind"})),
        ("/v1/orders/1/review".into(), json!({"decision": "approve", "reason": "ok"})),
        ("/v1/orders/1/funds".into(), json!({"amount": "10000", "reference": "BANK-1"})),
        (
            "/v1/webhooks".into(),
            json!({"url": "http://127.0.0.1:9/hook", "types": ["transfer"], "secret": "s".repeat(32)}),
        ),
        ("/v1/webhooks/1/replay".into(), json!({"seqs": [1, 2]})),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    seed: Index,
    edits: Vec<fz::JsonMutation>,
    /// Raw byte edits of the serialised body (mostly none: valid JSON
    /// reaches the typed checks).
    bytes: Vec<fz::Mutation>,
    /// Replaces the path's id segment.
    path_id: Option<String>,
}

fn case() -> impl Strategy<Value = Case> {
    let bytes = prop_oneof![5 => Just(Vec::new()), 1 => fz::mutations(3)];
    let path_id = proptest::option::weighted(0.1, prop_oneof!["[0-9]{1,45}", ".{0,20}", Just("-1".to_string())]);
    (any::<Index>(), fz::json_mutations(NAMES, 4), bytes, path_id).prop_map(|(seed, edits, bytes, path_id)| Case {
        seed,
        edits,
        bytes,
        path_id,
    })
}

fn path_with_id(path: &str, id: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 4 {
        return path.to_string();
    }
    let id: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let mut parts: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
    parts[3] = id;
    parts.join("/")
}

fn node() -> TestNode {
    let keyring = Arc::new(PiiKeyring::generate().expect("a keyring"));
    let orders = OrdersApi { config: OrdersConfig::default(), keyring: keyring.clone() };
    let policy = Arc::new(DestinationPolicy::parse(&["127.0.0.0/8".to_string()]).expect("a policy"));
    let http = HttpConfig {
        orders: Some(Arc::new(orders)),
        webhooks: Some(Arc::new(WebhooksApi::new(keyring, policy))),
        ..Default::default()
    };
    TestNode::with_config(http)
}

#[test]
fn fuzz_json_bodies() {
    let mut node = node();
    let c = &node.client;
    for (id, asset) in [(840, "USD"), (978, "EUR")] {
        c.post_new(ADMIN_KEY, "/v1/ledgers", &json!({"id": id, "asset": asset, "scale": 2})).expect(201, None);
    }
    let (_, operator) = c.create_key("operator", &[]);
    // Ledgers, keys and webhooks are the admin's; the rest the operator's.
    let key_for = |path: &str| {
        if ["/v1/ledgers", "/v1/keys", "/v1/webhooks"].iter().any(|p| path.starts_with(p)) {
            ADMIN_KEY
        } else {
            operator.as_str()
        }
    };
    for id in 1..=3 {
        c.post_new(&operator, "/v1/accounts", &json!({"id": id.to_string(), "ledger": 840, "code": 1}))
            .expect(201, None);
    }
    let seeds = seeds();
    for (path, body) in &seeds {
        let r = c.post_new(key_for(path), path, body);
        assert!(r.status < 500, "seed {path}: {} {}", r.status, r.body);
    }

    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(fz::config(160));
    let result = runner.run(&case(), |case| {
        let (path, body) = &seeds[case.seed.index(seeds.len())];
        let doc = fz::json_mutated(body.clone(), &case.edits);
        let text = fz::mutated(serde_json::to_vec(&doc).expect("a value serialises"), &case.bytes);
        let path = case.path_id.as_deref().map_or(path.clone(), |id| path_with_id(path, id));
        let idem = fresh_key("fuzz");
        let req = Req::new(Method::POST, path.clone()).key(key_for(&path)).idem(&idem);
        let req = req.raw_body(String::from_utf8_lossy(&text).into_owned());
        let r = c.try_send(req).map_err(|e| TestCaseError::fail(format!("POST {path}: connection failed: {e}")))?;
        prop_assert!(r.status < 500, "POST {} answered {}: {}", path, r.status, r.body);
        if r.status < 300 {
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if r.status >= 400 {
            let ct = r.header("content-type").unwrap_or_default();
            prop_assert!(ct.starts_with("application/problem+json"), "POST {}: {} with {}", path, r.status, ct);
            prop_assert!(!r.code().is_empty(), "POST {}: a problem without a code: {}", path, r.body);
        }
        Ok(())
    });
    node.stop();
    result.unwrap();
    // Some mutated bodies must get through every check, or the target only
    // exercises the parser.
    assert!(accepted.into_inner() > 0, "no fuzzed request was accepted");
    let report = bursar_server::verify::verify(node.data_dir()).expect("the fuzzed log replays with every invariant");
    assert!(report.accounts >= 3);
}

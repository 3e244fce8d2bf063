//! Idempotency keys (docs/api.md, "Idempotency"), end to end over HTTP:
//! replays, conflicts, concurrent duplicates, header validation, scoping
//! per API key, key creation, retention and the store's limit. Every test
//! checks the effect (balances, transfer counts, the audit trail), not only
//! the responses.

mod common;

use bursar_http::HttpConfig;
use common::{ADMIN_KEY, Req, Resp, TestNode, fresh_key, transfer_body};
use reqwest::Method;
use serde_json::json;
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A node with ledger 1, an operator and accounts 1, 2 (plain) and 3
/// (debits must not exceed credits).
fn setup(config: HttpConfig) -> (TestNode, String) {
    let node = TestNode::with_config(config);
    let c = &node.client;
    c.create_ledger(1);
    let (_, op) = c.create_key("operator", &[]);
    let accounts = json!({"accounts": [
        {"id": "1", "ledger": 1, "code": 1},
        {"id": "2", "ledger": 1, "code": 1},
        {"id": "3", "ledger": 1, "code": 1, "flags": ["debits_must_not_exceed_credits"]},
    ]});
    c.post_new(&op, "/v1/accounts/batch", &accounts).expect(200, None);
    (node, op)
}

#[track_caller]
fn assert_replay_of(original: &Resp, replay: &Resp) {
    assert!(!original.replayed(), "the original is not marked replayed: {original:?}");
    assert!(replay.replayed(), "a replay carries Idempotent-Replayed: true: {replay:?}");
    assert_eq!(replay.status, original.status, "{}", replay.body);
    assert_eq!(replay.header("content-type"), original.header("content-type"));
}

#[test]
fn same_key_same_request_replays_the_original_and_applies_once() {
    let (node, op) = setup(HttpConfig::default());
    let c = &node.client;

    // A transfer: 201, then identical replays.
    let body = transfer_body(100, 1, 2, 25, 1);
    let first = c.post(&op, "tr-1", "/v1/transfers", &body);
    first.expect(201, None);
    for _ in 0..3 {
        let again = c.post(&op, "tr-1", "/v1/transfers", &body);
        assert_replay_of(&first, &again);
        assert_eq!(again.body, first.body, "a replayed success is byte-identical");
    }
    assert_eq!(c.balances(1), (0, 25, 0, 0));
    assert_eq!(c.balances(2), (0, 0, 0, 25));
    assert_eq!(c.account_transfers(1).len(), 1);
    assert_eq!(c.audit_outcomes("tr-1"), ["executed", "replayed", "replayed", "replayed"]);

    // An account, a ledger, a batch of accounts, a batch of transfers with
    // one failure, and a key revocation replay the same way.
    let cases = [
        ("/v1/accounts", json!({"id": "50", "ledger": 1, "code": 7}), 201),
        ("/v1/ledgers", json!({"id": 9, "asset": "EUR", "scale": 2}), 201),
        ("/v1/accounts/batch", json!({"accounts": [{"id": "51", "ledger": 1, "code": 1}]}), 200),
        (
            "/v1/transfers/batch",
            json!({"transfers": [transfer_body(101, 2, 1, 4, 1), transfer_body(102, 999, 1, 4, 1)]}),
            200,
        ),
    ];
    for (path, body, status) in cases {
        let key = fresh_key("case");
        let who = if path == "/v1/ledgers" { ADMIN_KEY } else { &op };
        let first = c.post(who, &key, path, &body);
        first.expect(status, None);
        let again = c.post(who, &key, path, &body);
        assert_replay_of(&first, &again);
        assert_eq!(again.body, first.body, "{path}");
        assert_eq!(c.audit_outcomes(&key), ["executed", "replayed"], "{path}");
    }
    let batch =
        c.post(&op, "tr-batch-check", "/v1/transfers/batch", &json!({"transfers": [transfer_body(103, 2, 1, 1, 1)]}));
    batch.expect(200, None);
    // 25 out, 4 back (101), 1 back (103); 102 failed.
    assert_eq!(c.balances(1), (0, 25, 0, 5));
    assert_eq!(c.get(ADMIN_KEY, "/v1/transfers/102").status, 404);

    // DELETE takes an optional Idempotency-Key and replays too.
    let (victim, _) = c.create_key("auditor", &[]);
    let del = |k: &str| c.send(Req::new(Method::DELETE, format!("/v1/keys/{victim}")).key(ADMIN_KEY).idem(k));
    let first = del("revoke-1");
    first.expect(200, None);
    let again = del("revoke-1");
    assert_replay_of(&first, &again);
    assert_eq!(again.body, first.body);
    assert_eq!(c.audit_outcomes("revoke-1"), ["executed", "replayed"]);
}

#[test]
fn a_failed_request_replays_its_failure_and_never_runs_again() {
    let (node, op) = setup(HttpConfig::default());
    let c = &node.client;

    // Account 3 has no credits: 10 would exceed them.
    let body = transfer_body(200, 3, 2, 10, 1);
    let first = c.post(&op, "fail-1", "/v1/transfers", &body);
    first.expect(422, Some("exceeds_credits"));
    assert_eq!(first.json()["field"], json!("amount"));
    let again = c.post(&op, "fail-1", "/v1/transfers", &body);
    assert_replay_of(&first, &again);
    again.expect(422, Some("exceeds_credits"));
    // The body is the original problem, byte for byte (the request id is
    // only in the X-Request-Id header).
    assert_eq!(again.body, first.body);
    assert!(again.json().get("request_id").is_none());

    // Fund account 3. The replay still answers the original failure: it
    // does not execute again (which would now succeed).
    c.transfer(&op, 201, 2, 3, 100, 1).expect(201, None);
    let rid: &[u8] = b"same-request-id-1";
    let send = |k: &str| {
        c.send(Req::new(Method::POST, "/v1/transfers").key(&op).idem(k).json(&body).header("x-request-id", rid))
    };
    let with_id = send("fail-1");
    assert_replay_of(&first, &with_id);
    with_id.expect(422, Some("exceeds_credits"));
    let with_id_again = send("fail-1");
    assert_eq!(with_id_again.body, with_id.body, "same request id: byte-identical");
    assert_eq!(c.balances(3), (0, 0, 0, 100));
    assert_eq!(c.get(ADMIN_KEY, "/v1/transfers/200").status, 404);
    // A new key with the same body executes, and the id is burnt by the
    // first failure.
    c.post(&op, "fail-1-new", "/v1/transfers", &body).expect(409, Some("id_already_failed"));
    assert_eq!(c.audit_outcomes("fail-1"), ["executed", "replayed", "replayed", "replayed"]);

    // debit_account_not_found, then the account appears: still a replay
    // of the 422.
    let body = transfer_body(210, 999, 2, 5, 1);
    let first = c.post(&op, "fail-2", "/v1/transfers", &body);
    first.expect(422, Some("debit_account_not_found"));
    assert_eq!(first.json()["field"], json!("debit_account_id"));
    c.create_account(&op, 999, 1, &[]);
    let again = c.post(&op, "fail-2", "/v1/transfers", &body);
    assert_replay_of(&first, &again);
    assert_eq!(again.json_without_request_id(), first.json_without_request_id());
    assert_eq!(c.balances(999), (0, 0, 0, 0));
}

#[test]
fn same_key_different_request_is_refused_and_formatting_does_not_matter() {
    let (node, op) = setup(HttpConfig::default());
    let c = &node.client;
    let body = transfer_body(300, 1, 2, 10, 1);
    let first = c.post(&op, "fp-1", "/v1/transfers", &body);
    first.expect(201, None);

    // Different amount, different id, different route, different method.
    for (path, other) in [
        ("/v1/transfers", transfer_body(300, 1, 2, 11, 1)),
        ("/v1/transfers", transfer_body(301, 1, 2, 10, 1)),
        ("/v1/transfers/batch", json!({"transfers": [transfer_body(300, 1, 2, 10, 1)]})),
        ("/v1/accounts", json!({"id": "302", "ledger": 1, "code": 1})),
    ] {
        let r = c.post(&op, "fp-1", path, &other);
        r.expect(422, Some("idempotency_key_reused"));
        assert!(!r.replayed());
    }
    assert_eq!(c.get(ADMIN_KEY, "/v1/transfers/301").status, 404);
    assert_eq!(c.get(ADMIN_KEY, "/v1/accounts/302").status, 404);
    assert_eq!(c.get(ADMIN_KEY, "/v1/transfers/300").json()["amount"], json!("10"));
    assert_eq!(c.balances(1), (0, 10, 0, 0));

    // The same request written differently: whitespace, field order,
    // defaults spelled out. It is the same request: a replay.
    let variants = [
        r#"{"id":"300","debit_account_id":"1","credit_account_id":"2","amount":"10","ledger":1,"code":1}"#,
        "{\n  \"code\" : 1 ,\n\t\"ledger\": 1,\r\n \"amount\":\"10\", \"credit_account_id\":\"2\",\n\"debit_account_id\" : \"1\", \"id\":\"300\"\n}\n",
        r#"{"amount":"10","id":"300","flags":[],"debit_account_id":"1","credit_account_id":"2","code":1,"ledger":1,"user_data_32":null}"#,
    ];
    for raw in variants {
        let r = c.send(Req::new(Method::POST, "/v1/transfers").key(&op).idem("fp-1").raw_body(raw));
        assert_replay_of(&first, &r);
        assert_eq!(r.body, first.body, "{raw}");
    }
    assert_eq!(c.balances(1), (0, 10, 0, 0));
    let outcomes = c.audit_outcomes("fp-1");
    assert_eq!(outcomes.iter().filter(|o| *o == "executed").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "conflict").count(), 4, "{outcomes:?}");
}

#[test]
fn concurrent_duplicates_execute_exactly_once() {
    const N: usize = 50;
    let (node, op) = setup(HttpConfig::default());
    let c = node.client.clone();
    // A batch body, so the one execution has some work to do.
    let transfers: Vec<_> = (0..200u128).map(|i| transfer_body(1000 + i, 1, 2, 1, 1)).collect();
    let body = Arc::new(json!({"transfers": transfers}));
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let (c, op, body, barrier) = (c.clone(), op.clone(), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                // Connect first, so the requests leave together.
                c.send(Req::new(Method::GET, "/healthz")).expect(200, None);
                barrier.wait();
                let first = c.post(&op, "concurrent-1", "/v1/transfers/batch", &body);
                // A client told "in flight" retries, and then gets the replay.
                let mut last = first.clone();
                for _ in 0..200 {
                    if last.status != 409 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(25));
                    last = c.post(&op, "concurrent-1", "/v1/transfers/batch", &body);
                }
                (first, last)
            })
        })
        .collect();
    let (responses, finals): (Vec<Resp>, Vec<Resp>) = threads.into_iter().map(|t| t.join().expect("no panic")).unzip();

    let originals: Vec<&Resp> = responses.iter().filter(|r| r.status == 200 && !r.replayed()).collect();
    assert_eq!(originals.len(), 1, "exactly one execution: {responses:#?}");
    let original = originals[0];
    assert_eq!(original.json(), json!({"accepted": 200, "results": []}));
    let (mut replays, mut in_flight) = (0, 0);
    for r in &responses {
        if std::ptr::eq(r, original) {
            continue;
        }
        if r.status == 409 {
            r.expect(409, Some("idempotency_request_in_flight"));
            let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
            assert!(retry >= 1);
            in_flight += 1;
        } else {
            assert_replay_of(original, r);
            assert_eq!(r.body, original.body);
            replays += 1;
        }
    }
    assert_eq!(replays + in_flight, N - 1);
    eprintln!("{N} concurrent duplicates: 1 executed, {replays} replayed, {in_flight} refused in flight");

    for r in &finals {
        if r.replayed() {
            assert_replay_of(original, r);
            assert_eq!(r.body, original.body);
        } else {
            assert_eq!((r.status, &r.body), (original.status, &original.body), "only the original is not a replay");
        }
    }
    assert_eq!(finals.iter().filter(|r| !r.replayed()).count(), 1, "after retries all but one are replays");

    // One effect: 200 transfers of 1, once.
    assert_eq!(c.balances(1), (0, 200, 0, 0));
    assert_eq!(c.balances(2), (0, 0, 0, 200));
    assert_eq!(c.account_transfers(1).len(), 200);
    let outcomes = c.audit_outcomes("concurrent-1");
    assert_eq!(outcomes.iter().filter(|o| *o == "executed").count(), 1, "{outcomes:?}");
    // Each client's first answer that was not "in flight" is in the log;
    // no in-flight refusal is.
    assert_eq!(outcomes.len(), N, "{outcomes:?}");
    // Afterwards the key replays.
    let late = c.post(&op, "concurrent-1", "/v1/transfers/batch", &body);
    assert_replay_of(original, &late);
    assert_eq!(late.body, original.body);
}

#[test]
fn missing_and_malformed_keys_are_rejected_and_store_nothing() {
    let (node, op) = setup(HttpConfig::default());
    let c = &node.client;
    let body = transfer_body(400, 1, 2, 5, 1);

    // Every POST needs a key.
    let posts = [
        (ADMIN_KEY, "/v1/ledgers", json!({"id": 5, "asset": "EUR", "scale": 2})),
        (ADMIN_KEY, "/v1/keys", json!({"role": "auditor", "name": "no-idem"})),
        (op.as_str(), "/v1/accounts", json!({"id": "401", "ledger": 1, "code": 1})),
        (op.as_str(), "/v1/accounts/batch", json!({"accounts": [{"id": "402", "ledger": 1, "code": 1}]})),
        (op.as_str(), "/v1/transfers", body.clone()),
        (op.as_str(), "/v1/transfers/batch", json!({"transfers": [transfer_body(403, 1, 2, 5, 1)]})),
    ];
    for (key, path, b) in &posts {
        let r = c.send(Req::new(Method::POST, *path).key(key).json(b));
        r.expect(400, Some("idempotency_key_missing"));
    }
    let malformed: [&[u8]; 5] = [b"", &[b'x'; 256], "schl\u{fc}ssel".as_bytes(), b"tab\there", b"\xff\xfe"];
    for k in malformed {
        let r = c.send(Req::new(Method::POST, "/v1/transfers").key(&op).idem_bytes(k).json(&body));
        r.expect(400, Some("idempotency_key_invalid"));
    }
    // Nothing ran.
    assert_eq!(c.get(ADMIN_KEY, "/v1/ledgers").json()["data"].as_array().unwrap().len(), 1);
    assert!(c.get(ADMIN_KEY, "/v1/keys").json()["data"].as_array().unwrap().iter().all(|k| k["name"] != "no-idem"));
    for path in ["/v1/accounts/401", "/v1/accounts/402", "/v1/transfers/400", "/v1/transfers/403"] {
        assert_eq!(c.get(ADMIN_KEY, path).status, 404, "{path}");
    }
    assert_eq!(c.balances(1), (0, 0, 0, 0));

    // The bounds: 1 and 255 printable ASCII characters (space included).
    let long = "k".repeat(255);
    for (i, k) in ["a", "with inner spaces", "~!@#$%^&*()_+{}|:<>?\"'", long.as_str()].into_iter().enumerate() {
        let b = transfer_body(410 + i as u128, 1, 2, 1, 1);
        let first = c.post(&op, k, "/v1/transfers", &b);
        first.expect(201, None);
        assert_replay_of(&first, &c.post(&op, k, "/v1/transfers", &b));
    }
    assert_eq!(c.balances(1), (0, 4, 0, 0));

    // DELETE: optional, but checked when present.
    let (victim, secret) = c.create_key("auditor", &[]);
    let r = c.send(Req::new(Method::DELETE, format!("/v1/keys/{victim}")).key(ADMIN_KEY).idem_bytes(b""));
    r.expect(400, Some("idempotency_key_invalid"));
    c.get(&secret, "/v1/ledgers").expect(200, None);
    c.delete(ADMIN_KEY, &format!("/v1/keys/{victim}")).expect(200, None);
    c.get(&secret, "/v1/ledgers").expect(401, Some("unauthorized"));

    // Requests refused before the engine (bad field, bad JSON, wrong
    // ledger for a scoped key) record nothing: the key is still free.
    let (_, op1) = c.create_key("operator", &[1]);
    c.post(&op, "free-1", "/v1/transfers", &json!({"id": "420", "amount": "x"})).expect(400, Some("invalid_field"));
    let bad_json = c.send(Req::new(Method::POST, "/v1/transfers").key(&op).idem("free-1").raw_body("{\"id\":"));
    bad_json.expect(400, Some("invalid_json"));
    c.post(&op1, "free-1", "/v1/transfers", &transfer_body(420, 1, 2, 1, 2)).expect(403, Some("forbidden"));
    c.post(&op, "free-1", "/v1/transfers", &transfer_body(420, 1, 2, 1, 1)).expect(201, None);
    c.post(&op1, "free-1", "/v1/transfers", &transfer_body(421, 1, 2, 1, 1)).expect(201, None);
    assert_eq!(c.balances(1), (0, 6, 0, 0));
    let outcomes = c.audit_outcomes("free-1");
    assert_eq!(outcomes, ["executed", "executed"], "only the two accepted requests reached the log");
}

#[test]
fn keys_are_scoped_per_api_key() {
    let (node, op_a) = setup(HttpConfig::default());
    let c = &node.client;
    let (_, op_b) = c.create_key("operator", &[]);

    // The same Idempotency-Key under two API keys: both execute.
    let a = c.post(&op_a, "shared", "/v1/transfers", &transfer_body(500, 1, 2, 3, 1));
    a.expect(201, None);
    let b = c.post(&op_b, "shared", "/v1/transfers", &transfer_body(501, 1, 2, 4, 1));
    b.expect(201, None);
    assert!(!b.replayed());
    assert_eq!(c.balances(1), (0, 7, 0, 0));
    // Each replays its own request, and conflicts with the other's.
    assert_replay_of(&a, &c.post(&op_a, "shared", "/v1/transfers", &transfer_body(500, 1, 2, 3, 1)));
    assert_replay_of(&b, &c.post(&op_b, "shared", "/v1/transfers", &transfer_body(501, 1, 2, 4, 1)));
    c.post(&op_a, "shared", "/v1/transfers", &transfer_body(501, 1, 2, 4, 1))
        .expect(422, Some("idempotency_key_reused"));

    // The same request under both: the second executes too (it is not a
    // replay), and the transfer id keeps the effect single: 200 exists.
    let body = transfer_body(502, 1, 2, 5, 1);
    c.post(&op_a, "same", "/v1/transfers", &body).expect(201, None);
    let second = c.post(&op_b, "same", "/v1/transfers", &body);
    second.expect(200, None);
    assert!(!second.replayed());
    assert_eq!(second.json()["id"], json!("502"));
    assert_eq!(c.balances(1), (0, 12, 0, 0));
    let outcomes = c.audit_outcomes("shared");
    assert_eq!(outcomes.iter().filter(|o| *o == "executed").count(), 2, "{outcomes:?}");
}

#[test]
fn key_creation_replays_the_same_key_without_its_secret() {
    let node = TestNode::start();
    let c = &node.client;
    c.create_ledger(1);
    let count = || c.get(ADMIN_KEY, "/v1/keys").json()["data"].as_array().unwrap().len();
    let before = count();
    let body = json!({"role": "operator", "ledgers": [1], "name": "replayed"});
    let first = c.post(ADMIN_KEY, "make-key", "/v1/keys", &body);
    first.expect(201, None);
    let secret = first.json()["secret"].as_str().expect("the secret, once").to_string();
    let again = c.post(ADMIN_KEY, "make-key", "/v1/keys", &body);
    assert_replay_of(&first, &again);
    assert!(again.json().get("secret").is_none(), "the secret is never shown again: {}", again.body);
    let mut without_secret = first.json();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(again.json(), without_secret);
    assert_eq!(count(), before + 1, "one key was created");
    // The secret of the original works; the key is what was asked for.
    c.get(&secret, "/v1/ledgers").expect(200, None);
    c.get(&secret, "/v1/keys").expect(403, Some("forbidden"));
    c.post(ADMIN_KEY, "make-key", "/v1/keys", &json!({"role": "auditor"})).expect(422, Some("idempotency_key_reused"));

    // Another admin with the same Idempotency-Key makes its own key.
    let (_, admin2) = c.create_key("admin", &[]);
    let other = c.post(&admin2, "make-key", "/v1/keys", &body);
    other.expect(201, None);
    assert!(!other.replayed());
    assert_ne!(other.json()["id"], first.json()["id"]);
    assert_eq!(count(), before + 3, "the original, admin2 and admin2's own");
}

#[test]
fn records_expire_after_the_retention() {
    let config = HttpConfig { idempotency_retention: Duration::from_secs(1), ..Default::default() };
    let (node, op) = setup(config);
    let c = &node.client;
    let first = c.post(&op, "expiring", "/v1/transfers", &transfer_body(600, 1, 2, 5, 1));
    first.expect(201, None);
    let other = transfer_body(601, 1, 2, 6, 1);
    c.post(&op, "expiring", "/v1/transfers", &other).expect(422, Some("idempotency_key_reused"));
    let key_body = json!({"role": "auditor", "name": "before"});
    let made = c.post(ADMIN_KEY, "expiring-key", "/v1/keys", &key_body);
    made.expect(201, None);

    // Log time moves with entries: wait, then write something unrelated.
    std::thread::sleep(Duration::from_millis(2500));
    c.create_account(&op, 650, 1, &[]);

    let r = c.post(&op, "expiring", "/v1/transfers", &other);
    r.expect(201, None);
    assert!(!r.replayed(), "the record expired: the request executes");
    assert_eq!(c.balances(1), (0, 11, 0, 0));
    // The new record replays from now on.
    assert_replay_of(&r, &c.post(&op, "expiring", "/v1/transfers", &other));
    assert_eq!(c.audit_outcomes("expiring"), ["executed", "conflict", "executed", "replayed"]);

    // The same holds for creating an API key: a new key, whose replay
    // names it (not the key made before the expiry).
    let after_body = json!({"role": "operator", "name": "after"});
    let r = c.post(ADMIN_KEY, "expiring-key", "/v1/keys", &after_body);
    r.expect(201, None);
    assert!(!r.replayed());
    assert_ne!(r.json()["id"], made.json()["id"]);
    let secret = r.json()["secret"].as_str().expect("a new secret").to_string();
    c.get(&secret, "/v1/ledgers").expect(200, None);
    let again = c.post(ADMIN_KEY, "expiring-key", "/v1/keys", &after_body);
    assert_replay_of(&r, &again);
    assert_eq!((&again.json()["id"], &again.json()["name"]), (&r.json()["id"], &json!("after")));
    assert!(again.json().get("secret").is_none());

    // And again after another expiry, with the very first body.
    std::thread::sleep(Duration::from_millis(2500));
    let third = c.post(ADMIN_KEY, "expiring-key", "/v1/keys", &key_body);
    third.expect(201, None);
    assert!(!third.replayed());
    let ids = [&made.json()["id"], &r.json()["id"], &third.json()["id"]];
    assert!(ids[2] != ids[0] && ids[2] != ids[1], "{ids:?}");
    let again = c.post(ADMIN_KEY, "expiring-key", "/v1/keys", &key_body);
    assert_replay_of(&third, &again);
    assert_eq!(&again.json()["id"], ids[2]);
    let listed = c.get(ADMIN_KEY, "/v1/keys").json();
    let names: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| **n == "before").count(), 2, "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "after").count(), 1, "{names:?}");
}

#[test]
fn a_full_store_refuses_new_keys_and_runs_nothing() {
    // Four records: the ledger, the operator key, the accounts, one transfer.
    let config = HttpConfig { idempotency_max_records: 4, ..Default::default() };
    let (node, op) = setup(config);
    let c = &node.client;
    let first = c.post(&op, "fits", "/v1/transfers", &transfer_body(700, 1, 2, 5, 1));
    first.expect(201, None);

    let r = c.post(&op, "too-many", "/v1/transfers", &transfer_body(701, 1, 2, 6, 1));
    r.expect(503, Some("idempotency_store_full"));
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!(retry >= 1);
    assert_eq!(c.get(ADMIN_KEY, "/v1/transfers/701").status, 404);
    assert_eq!(c.balances(1), (0, 5, 0, 0));
    // Every kind of write with a new key is refused; nothing is created.
    c.post(ADMIN_KEY, "too-many-2", "/v1/ledgers", &json!({"id": 2, "asset": "EUR", "scale": 0}))
        .expect(503, Some("idempotency_store_full"));
    c.post(&op, "too-many-3", "/v1/accounts", &json!({"id": "702", "ledger": 1, "code": 1}))
        .expect(503, Some("idempotency_store_full"));
    c.post(ADMIN_KEY, "too-many-4", "/v1/keys", &json!({"role": "auditor", "name": "nope"}))
        .expect(503, Some("idempotency_store_full"));
    assert_eq!(c.get(ADMIN_KEY, "/v1/ledgers").json()["data"].as_array().unwrap().len(), 1);
    assert_eq!(c.get(ADMIN_KEY, "/v1/accounts/702").status, 404);
    assert!(c.get(ADMIN_KEY, "/v1/keys").json()["data"].as_array().unwrap().iter().all(|k| k["name"] != "nope"));
    // A refusal is not recorded: retrying later still refuses, not conflicts.
    c.post(&op, "too-many", "/v1/transfers", &transfer_body(701, 1, 2, 6, 1))
        .expect(503, Some("idempotency_store_full"));
    assert_eq!(c.audit_outcomes("too-many"), ["refused", "refused"]);

    // Known keys still replay.
    let again = c.post(&op, "fits", "/v1/transfers", &transfer_body(700, 1, 2, 5, 1));
    assert_replay_of(&first, &again);
    assert_eq!(again.body, first.body);
    assert_eq!(c.balances(1), (0, 5, 0, 0));
}

#[test]
fn concurrent_key_creations_make_one_key() {
    const N: usize = 50;
    let node = TestNode::start();
    let c = node.client.clone();
    let count = || c.get(ADMIN_KEY, "/v1/keys").json()["data"].as_array().unwrap().len();
    let before = count();
    let body = Arc::new(json!({"role": "auditor", "name": "once"}));
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let (c, body, barrier) = (c.clone(), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                c.send(Req::new(Method::GET, "/healthz")).expect(200, None);
                barrier.wait();
                let mut r = c.post(ADMIN_KEY, "one-key", "/v1/keys", &body);
                for _ in 0..200 {
                    if r.status != 409 {
                        break;
                    }
                    r.expect(409, Some("idempotency_request_in_flight"));
                    std::thread::sleep(Duration::from_millis(25));
                    r = c.post(ADMIN_KEY, "one-key", "/v1/keys", &body);
                }
                r
            })
        })
        .collect();
    let responses: Vec<Resp> = threads.into_iter().map(|t| t.join().expect("no panic")).collect();
    let originals: Vec<&Resp> = responses.iter().filter(|r| !r.replayed()).collect();
    assert_eq!(originals.len(), 1, "{responses:#?}");
    let original = originals[0];
    original.expect(201, None);
    let secret = original.json()["secret"].as_str().expect("the secret").to_string();
    for r in responses.iter().filter(|r| r.replayed()) {
        assert_replay_of(original, r);
        assert_eq!(r.json()["id"], original.json()["id"]);
        assert!(r.json().get("secret").is_none(), "{}", r.body);
    }
    assert_eq!(count(), before + 1);
    c.get(&secret, "/v1/audit").expect(200, None);
}

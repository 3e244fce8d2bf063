//! Every endpoint against every kind of caller (docs/api.md, "Authentication
//! and roles"): admin, operator, auditor, an operator and an auditor
//! restricted to ledger 1 while the request targets ledger 2, and callers
//! without a valid key (missing, garbage, revoked). Each case checks the
//! status, the problem code, that refused requests see no data, and that
//! refused writes changed nothing while allowed ones took effect.

mod common;

use common::{ADMIN_KEY, Client, Req, Resp, TestNode, assert_bare_problem, fresh_key, transfer_body};
use reqwest::Method;
use serde_json::{Value, json};
use std::cell::Cell;

// Fixture records; distinctive ids, so a leak in a body would be visible.
const A1_DR: u128 = 1_111_000_000_001;
const A1_CR: u128 = 1_111_000_000_002;
const T1: u128 = 1_111_000_000_100;
const A2_DR: u128 = 2_222_000_000_001;
const A2_CR: u128 = 2_222_000_000_002;
const T2: u128 = 2_222_000_000_100;
const T2_AMOUNT: u128 = 7;

/// Who calls: the full Authorization header (None: no header).
#[derive(Clone, Debug)]
struct Caller {
    name: &'static str,
    kind: Kind,
    authorization: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Admin,
    Operator,
    Auditor,
    /// Operator restricted to ledger 1.
    Operator1,
    /// Auditor restricted to ledger 1.
    Auditor1,
    /// Missing, garbage or revoked: 401.
    Nobody,
}

#[derive(Clone, Copy, Debug)]
enum Ep {
    CreateKey,
    ListKeys,
    RevokeKey,
    CreateLedger,
    ListLedgers,
    CreateAccount,
    CreateAccountBatch,
    CreateTransfer,
    CreateTransferBatch,
    GetAccount,
    GetAccountTransfers,
    GetAccountBalances,
    GetTransfer,
    GetAudit,
}

const ENDPOINTS: [Ep; 14] = [
    Ep::CreateKey,
    Ep::ListKeys,
    Ep::RevokeKey,
    Ep::CreateLedger,
    Ep::ListLedgers,
    Ep::CreateAccount,
    Ep::CreateAccountBatch,
    Ep::CreateTransfer,
    Ep::CreateTransferBatch,
    Ep::GetAccount,
    Ep::GetAccountTransfers,
    Ep::GetAccountBalances,
    Ep::GetTransfer,
    Ep::GetAudit,
];

/// The role table of docs/api.md, for requests that target ledger 2:
/// the expected status for admin, operator, auditor, operator on ledger 1,
/// auditor on ledger 1. Callers without a valid key always get 401.
fn expected(ep: Ep, kind: Kind) -> u16 {
    let row: [u16; 5] = match ep {
        Ep::CreateKey => [201, 403, 403, 403, 403],
        Ep::ListKeys => [200, 403, 403, 403, 403],
        Ep::RevokeKey => [200, 403, 403, 403, 403],
        Ep::CreateLedger => [201, 403, 403, 403, 403],
        // Everybody may list; scoped keys see only their ledgers (checked below).
        Ep::ListLedgers => [200, 200, 200, 200, 200],
        Ep::CreateAccount => [403, 201, 403, 403, 403],
        Ep::CreateAccountBatch => [403, 200, 403, 403, 403],
        Ep::CreateTransfer => [403, 201, 403, 403, 403],
        Ep::CreateTransferBatch => [403, 200, 403, 403, 403],
        Ep::GetAccount | Ep::GetAccountTransfers | Ep::GetAccountBalances | Ep::GetTransfer => {
            [200, 200, 200, 403, 403]
        }
        Ep::GetAudit => [200, 403, 200, 403, 403],
    };
    match kind {
        Kind::Admin => row[0],
        Kind::Operator => row[1],
        Kind::Auditor => row[2],
        Kind::Operator1 => row[3],
        Kind::Auditor1 => row[4],
        Kind::Nobody => 401,
    }
}

struct Fixture {
    node: TestNode,
    callers: Vec<Caller>,
    /// Strings that must never appear in a refused response.
    secrets: Vec<String>,
    next: Cell<u64>,
}

impl Fixture {
    fn c(&self) -> &Client {
        &self.node.client
    }

    fn fresh(&self) -> u64 {
        let n = self.next.get();
        self.next.set(n + 1);
        n
    }

    fn send(&self, caller: &Caller, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let idem = fresh_key("roles");
        let mut r = Req::new(method.clone(), path);
        if method != Method::GET {
            r = r.idem(&idem);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        if let Some(a) = &caller.authorization {
            r = r.header("authorization", a.as_bytes());
        }
        self.c().send(r)
    }

    fn key_by_name(&self, name: &str) -> Option<Value> {
        let r = self.c().get(ADMIN_KEY, "/v1/keys");
        r.expect(200, None);
        r.json()["data"].as_array().unwrap().iter().find(|k| k["name"] == json!(name)).cloned()
    }

    fn ledger_ids(&self, key: &str) -> Vec<u64> {
        let r = self.c().get(key, "/v1/ledgers?limit=1000");
        r.expect(200, None);
        r.json()["data"].as_array().unwrap().iter().map(|l| l["id"].as_u64().unwrap()).collect()
    }

    fn exists(&self, path: &str) -> bool {
        let r = self.c().get(ADMIN_KEY, path);
        assert!(r.status == 200 || r.status == 404, "{path}: {}", r.body);
        r.status == 200
    }
}

fn bearer(k: &str) -> Option<String> {
    Some(format!("Bearer {k}"))
}

fn setup() -> Fixture {
    let node = TestNode::start();
    let c = &node.client;
    c.create_ledger(1);
    c.create_ledger(2);
    let (_, operator) = c.create_key("operator", &[]);
    let (_, auditor) = c.create_key("auditor", &[]);
    let (_, operator1) = c.create_key("operator", &[1]);
    let (_, auditor1) = c.create_key("auditor", &[1]);
    // Keys that worked, then were revoked (an admin one, so that a revoked
    // key honoured by mistake would show as 200/201, not 403).
    let (revoked_admin_id, revoked_admin) = c.create_key("admin", &[]);
    let (revoked_op_id, revoked_op) = c.create_key("operator", &[]);
    c.get(&revoked_admin, "/v1/keys").expect(200, None);
    c.get(&revoked_op, "/v1/ledgers").expect(200, None);
    c.delete(ADMIN_KEY, &format!("/v1/keys/{revoked_admin_id}")).expect(200, None);
    c.delete(ADMIN_KEY, &format!("/v1/keys/{revoked_op_id}")).expect(200, None);

    for (id, ledger) in [(A1_DR, 1), (A1_CR, 1), (A2_DR, 2), (A2_CR, 2)] {
        c.create_account(&operator, id, ledger, &["history"]);
    }
    c.transfer(&operator, T1, A1_DR, A1_CR, 5, 1).expect(201, None);
    c.transfer(&operator, T2, A2_DR, A2_CR, T2_AMOUNT, 2).expect(201, None);

    let unknown = "u".repeat(40);
    let callers = vec![
        Caller { name: "admin", kind: Kind::Admin, authorization: bearer(ADMIN_KEY) },
        Caller { name: "operator", kind: Kind::Operator, authorization: bearer(&operator) },
        Caller { name: "auditor", kind: Kind::Auditor, authorization: bearer(&auditor) },
        Caller { name: "operator on ledger 1", kind: Kind::Operator1, authorization: bearer(&operator1) },
        Caller { name: "auditor on ledger 1", kind: Kind::Auditor1, authorization: bearer(&auditor1) },
        Caller { name: "no Authorization", kind: Kind::Nobody, authorization: None },
        Caller { name: "empty bearer", kind: Kind::Nobody, authorization: Some("Bearer ".into()) },
        Caller { name: "short garbage", kind: Kind::Nobody, authorization: bearer("garbage") },
        Caller { name: "unknown plausible key", kind: Kind::Nobody, authorization: bearer(&unknown) },
        Caller { name: "near miss of admin key", kind: Kind::Nobody, authorization: bearer(&format!("{ADMIN_KEY}x")) },
        Caller { name: "admin key without scheme", kind: Kind::Nobody, authorization: Some(ADMIN_KEY.into()) },
        Caller { name: "admin key as Basic", kind: Kind::Nobody, authorization: Some(format!("Basic {ADMIN_KEY}")) },
        Caller { name: "revoked admin key", kind: Kind::Nobody, authorization: bearer(&revoked_admin) },
        Caller { name: "revoked operator key", kind: Kind::Nobody, authorization: bearer(&revoked_op) },
    ];
    let mut secrets: Vec<String> =
        [A1_DR, A1_CR, T1, A2_DR, A2_CR, T2].iter().map(|i| i.to_string()).collect::<Vec<_>>();
    secrets.extend([operator, auditor, operator1, auditor1, revoked_admin, revoked_op]);
    secrets.extend(["USD".to_string(), "debits_posted".to_string(), "bootstrap admin".to_string()]);
    Fixture { node, callers, secrets, next: Cell::new(1) }
}

/// Sends one endpoint's request as `caller` targeting ledger 2, checks the
/// status, and checks the effect (or its absence). Returns the number of
/// ledger-2 transfers of amount 1 that took effect.
fn check(f: &Fixture, ep: Ep, caller: &Caller) -> u128 {
    let want = expected(ep, caller.kind);
    let allowed = want < 300;
    let n = f.fresh();
    let ctx = format!("{ep:?} as {}", caller.name);
    let secrets: Vec<&str> = f.secrets.iter().map(String::as_str).collect();
    let check_refusal = |r: &Resp| {
        assert_eq!(r.status, want, "{ctx}: {}", r.body);
        if want == 401 {
            assert_bare_problem(r, 401, "unauthorized", &secrets);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{ctx}");
        } else if want == 403 {
            assert_bare_problem(r, 403, "forbidden", &secrets);
        }
    };
    let mut applied = 0;
    match ep {
        Ep::CreateKey => {
            let name = format!("made-{n}");
            let r = f.send(caller, Method::POST, "/v1/keys", Some(&json!({"role": "auditor", "name": name})));
            check_refusal(&r);
            let made = f.key_by_name(&name);
            if allowed {
                let secret = r.json()["secret"].as_str().expect("the secret is shown once").to_string();
                assert_eq!(made.expect("the key exists")["id"], r.json()["id"], "{ctx}");
                f.c().get(&secret, "/v1/ledgers").expect(200, None);
            } else {
                assert!(made.is_none(), "{ctx}: a refused request created a key");
            }
        }
        Ep::ListKeys => {
            let r = f.send(caller, Method::GET, "/v1/keys", None);
            check_refusal(&r);
            if allowed {
                let keys = r.json()["data"].as_array().unwrap().clone();
                assert!(keys.len() >= 7, "{ctx}: {}", r.body);
                assert!(keys.iter().all(|k| k.get("secret").is_none()), "{ctx}: a listed key shows its secret");
            }
        }
        Ep::RevokeKey => {
            let (victim, victim_secret) = f.c().create_key("operator", &[]);
            let r = f.send(caller, Method::DELETE, &format!("/v1/keys/{victim}"), None);
            check_refusal(&r);
            let after = f.c().get(&victim_secret, "/v1/ledgers");
            if allowed {
                assert_eq!((r.json()["id"].as_u64(), &r.json()["active"]), (Some(victim), &json!(false)), "{ctx}");
                after.expect(401, Some("unauthorized"));
            } else {
                after.expect(200, None);
            }
        }
        Ep::CreateLedger => {
            let id = 100 + n;
            let r = f.send(caller, Method::POST, "/v1/ledgers", Some(&json!({"id": id, "asset": "EUR", "scale": 2})));
            check_refusal(&r);
            assert_eq!(f.ledger_ids(ADMIN_KEY).contains(&id), allowed, "{ctx}");
            if allowed {
                assert_eq!(r.json()["id"], json!(id), "{ctx}");
            }
        }
        Ep::ListLedgers => {
            let r = f.send(caller, Method::GET, "/v1/ledgers?limit=1000", None);
            check_refusal(&r);
            if allowed {
                let ids: Vec<u64> =
                    r.json()["data"].as_array().unwrap().iter().map(|l| l["id"].as_u64().unwrap()).collect();
                if matches!(caller.kind, Kind::Operator1 | Kind::Auditor1) {
                    assert_eq!(ids, vec![1], "{ctx}: a scoped key sees only its ledgers");
                } else {
                    assert!(ids.starts_with(&[1, 2]), "{ctx}: {ids:?}");
                }
            }
        }
        Ep::CreateAccount => {
            let id = 3_000_000 + u128::from(n);
            let body = json!({"id": id.to_string(), "ledger": 2, "code": 1});
            let r = f.send(caller, Method::POST, "/v1/accounts", Some(&body));
            check_refusal(&r);
            assert_eq!(f.exists(&format!("/v1/accounts/{id}")), allowed, "{ctx}");
            if allowed {
                assert_eq!(r.json()["id"], json!(id.to_string()), "{ctx}");
            }
        }
        Ep::CreateAccountBatch => {
            let id = 4_000_000 + u128::from(n);
            let body = json!({"accounts": [{"id": id.to_string(), "ledger": 2, "code": 1}]});
            let r = f.send(caller, Method::POST, "/v1/accounts/batch", Some(&body));
            check_refusal(&r);
            assert_eq!(f.exists(&format!("/v1/accounts/{id}")), allowed, "{ctx}");
            if allowed {
                assert_eq!(r.json(), json!({"accepted": 1, "results": []}), "{ctx}");
            }
        }
        Ep::CreateTransfer => {
            let id = 5_000_000 + u128::from(n);
            let r = f.send(caller, Method::POST, "/v1/transfers", Some(&transfer_body(id, A2_DR, A2_CR, 1, 2)));
            check_refusal(&r);
            assert_eq!(f.exists(&format!("/v1/transfers/{id}")), allowed, "{ctx}");
            if allowed {
                assert_eq!(r.json()["id"], json!(id.to_string()), "{ctx}");
                applied += 1;
            }
        }
        Ep::CreateTransferBatch => {
            let id = 6_000_000 + u128::from(n);
            let body = json!({"transfers": [transfer_body(id, A2_DR, A2_CR, 1, 2)]});
            let r = f.send(caller, Method::POST, "/v1/transfers/batch", Some(&body));
            check_refusal(&r);
            assert_eq!(f.exists(&format!("/v1/transfers/{id}")), allowed, "{ctx}");
            if allowed {
                assert_eq!(r.json(), json!({"accepted": 1, "results": []}), "{ctx}");
                applied += 1;
            }
        }
        Ep::GetAccount => {
            let r = f.send(caller, Method::GET, &format!("/v1/accounts/{A2_DR}"), None);
            check_refusal(&r);
            if allowed {
                assert_eq!((&r.json()["id"], &r.json()["ledger"]), (&json!(A2_DR.to_string()), &json!(2)), "{ctx}");
            }
        }
        Ep::GetAccountTransfers => {
            let r = f.send(caller, Method::GET, &format!("/v1/accounts/{A2_DR}/transfers"), None);
            check_refusal(&r);
            if allowed {
                assert_eq!(r.json()["data"][0]["id"], json!(T2.to_string()), "{ctx}");
            }
        }
        Ep::GetAccountBalances => {
            let r = f.send(caller, Method::GET, &format!("/v1/accounts/{A2_DR}/balances"), None);
            check_refusal(&r);
            if allowed {
                assert_eq!(r.json()["data"][0]["debits_posted"], json!(T2_AMOUNT.to_string()), "{ctx}");
            }
        }
        Ep::GetTransfer => {
            let r = f.send(caller, Method::GET, &format!("/v1/transfers/{T2}"), None);
            check_refusal(&r);
            if allowed {
                assert_eq!((&r.json()["id"], &r.json()["ledger"]), (&json!(T2.to_string()), &json!(2)), "{ctx}");
            }
        }
        Ep::GetAudit => {
            let r = f.send(caller, Method::GET, "/v1/audit", None);
            check_refusal(&r);
            if allowed {
                let data = r.json()["data"].as_array().unwrap().clone();
                assert!(data.len() >= 10, "{ctx}: {}", r.body);
                assert_eq!(data[0]["route"], json!("BOOTSTRAP admin key"), "{ctx}");
            }
        }
    }
    applied
}

#[test]
fn every_endpoint_for_every_role() {
    let f = setup();
    let before = f.c().balances(A2_DR);
    assert_eq!(before, (0, T2_AMOUNT, 0, 0));
    let mut applied = 0;
    let mut cases = 0;
    for ep in ENDPOINTS {
        for caller in &f.callers {
            applied += check(&f, ep, caller);
            cases += 1;
        }
    }
    assert_eq!(cases, 14 * 14);
    // Exactly the two allowed transfer writes (operator: single and batch)
    // moved money on ledger 2.
    assert_eq!(applied, 2);
    assert_eq!(f.c().balances(A2_DR), (0, T2_AMOUNT + applied, 0, 0));
    assert_eq!(f.c().balances(A2_CR), (0, 0, 0, T2_AMOUNT + applied));
    assert_eq!(f.c().account_transfers(A2_DR).len(), 1 + applied as usize);
}

/// The restricted keys work on their own ledger (so their 403s above are
/// about the ledger, not the role), and the ledger-1 scope holds even
/// where the request names ledger 1 but the records are on ledger 2.
#[test]
fn scoped_keys_act_on_their_own_ledgers_only() {
    let node = TestNode::start();
    let c = &node.client;
    c.create_ledger(1);
    c.create_ledger(2);
    let (_, operator) = c.create_key("operator", &[]);
    let (_, op1) = c.create_key("operator", &[1]);
    let (_, aud1) = c.create_key("auditor", &[1]);
    for (id, ledger) in [(A1_DR, 1), (A2_DR, 2), (A2_CR, 2)] {
        c.create_account(&operator, id, ledger, &["history"]);
    }
    // The scoped operator creates on ledger 1: an account and a transfer.
    c.create_account(&op1, A1_CR, 1, &["history"]);
    c.transfer(&op1, T1, A1_DR, A1_CR, 5, 1).expect(201, None);
    c.post_new(&op1, "/v1/accounts/batch", &json!({"accounts": [{"id": "77", "ledger": 1, "code": 1}]}))
        .expect(200, None);
    c.post_new(&op1, "/v1/transfers/batch", &json!({"transfers": [transfer_body(78, A1_DR, A1_CR, 1, 1)]}))
        .expect(200, None);
    // Both scoped keys read ledger 1.
    for key in [&op1, &aud1] {
        c.get(key, &format!("/v1/accounts/{A1_DR}")).expect(200, None);
        c.get(key, &format!("/v1/accounts/{A1_DR}/transfers")).expect(200, None);
        let r = c.get(key, &format!("/v1/accounts/{A1_DR}/balances"));
        r.expect(200, None);
        assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
        c.get(key, &format!("/v1/transfers/{T1}")).expect(200, None);
    }
    // A scoped auditor may not read the audit trail, which spans all ledgers.
    c.get(&aud1, "/v1/audit").expect(403, Some("forbidden"));
    // So may it not read the change stream; an unrestricted auditor may.
    c.get(&aud1, "/v1/events").expect(403, Some("forbidden"));
    c.get(&aud1, "/v1/events/stream").expect(403, Some("forbidden"));
    c.get(&op1, "/v1/events").expect(403, Some("forbidden"));
    let (_, auditor) = c.create_key("auditor", &[]);
    c.get(&auditor, "/v1/events?limit=1").expect(200, None);

    // A pending transfer on ledger 1; a scoped key must name the ledger
    // even on post/void.
    let pending = json!({"id": "90", "debit_account_id": A1_DR.to_string(), "credit_account_id": A1_CR.to_string(),
        "amount": "3", "ledger": 1, "code": 1, "flags": ["pending"]});
    c.post_new(&op1, "/v1/transfers", &pending).expect(201, None);
    let post_without_ledger = json!({"id": "91", "pending_id": "90", "flags": ["post_pending"]});
    c.post_new(&op1, "/v1/transfers", &post_without_ledger).expect(403, Some("forbidden"));
    let post_on_2 = json!({"id": "91", "pending_id": "90", "ledger": 2, "flags": ["post_pending"]});
    c.post_new(&op1, "/v1/transfers", &post_on_2).expect(403, Some("forbidden"));
    assert!(c.get(ADMIN_KEY, "/v1/transfers/91").status == 404);
    let post = json!({"id": "91", "pending_id": "90", "ledger": 1, "flags": ["post_pending"]});
    c.post_new(&op1, "/v1/transfers", &post).expect(201, None);
    assert_eq!(c.balances(A1_DR), (0, 5 + 1 + 3, 0, 0));

    // Naming ledger 1 does not let a scoped key move money on ledger 2.
    let before = (c.balances(A2_DR), c.balances(A2_CR));
    let sneaky = transfer_body(95, A2_DR, A2_CR, 1, 1);
    let r = c.post_new(&op1, "/v1/transfers", &sneaky);
    assert!(r.status == 403 || r.status == 422, "{}", r.body);
    assert_eq!((c.balances(A2_DR), c.balances(A2_CR)), before);
    assert_eq!(c.get(ADMIN_KEY, "/v1/transfers/95").status, 404);
    // Nor open an account on ledger 2, nor mix ledgers in a batch.
    let mixed = json!({"accounts": [{"id": "96", "ledger": 1, "code": 1}, {"id": "97", "ledger": 2, "code": 1}]});
    c.post_new(&op1, "/v1/accounts/batch", &mixed).expect(403, Some("forbidden"));
    assert_eq!(c.get(ADMIN_KEY, "/v1/accounts/96").status, 404);
    assert_eq!(c.get(ADMIN_KEY, "/v1/accounts/97").status, 404);

    // Admin keys cannot be restricted.
    let r = c.post_new(ADMIN_KEY, "/v1/keys", &json!({"role": "admin", "ledgers": [1]}));
    r.expect(422, Some("ledgers_invalid"));
    assert!(r.json().get("secret").is_none());
}

#[test]
fn a_revoked_key_stops_working_immediately() {
    let node = TestNode::start();
    let c = &node.client;
    c.create_ledger(1);
    let (id, secret) = c.create_key("operator", &[]);
    c.create_account(&secret, 10, 1, &[]);
    c.get(&secret, "/v1/accounts/10").expect(200, None);

    let r = c.delete(ADMIN_KEY, &format!("/v1/keys/{id}"));
    r.expect(200, None);
    let v = r.json();
    assert_eq!((v["id"].as_u64(), &v["active"], v["revoked_at"].is_string()), (Some(id), &json!(false), true));
    assert!(v.get("secret").is_none());

    // The very next requests, reads and writes, are refused.
    let r = c.get(&secret, "/v1/accounts/10");
    assert_bare_problem(&r, 401, "unauthorized", &["\"10\"", "ledger"]);
    let r = c.post_new(&secret, "/v1/accounts", &json!({"id": "11", "ledger": 1, "code": 1}));
    assert_bare_problem(&r, 401, "unauthorized", &[]);
    assert_eq!(c.get(ADMIN_KEY, "/v1/accounts/11").status, 404);
    let r = c.get(&secret, "/v1/ledgers");
    assert_bare_problem(&r, 401, "unauthorized", &["USD"]);

    // The list shows it revoked; revoking again changes nothing.
    let listed = c.get(ADMIN_KEY, "/v1/keys").json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"].as_u64() == Some(id))
        .cloned()
        .expect("the revoked key is listed");
    assert_eq!(listed["active"], json!(false));
    let again = c.delete(ADMIN_KEY, &format!("/v1/keys/{id}"));
    again.expect(200, None);
    assert_eq!(again.json()["revoked_at"], v["revoked_at"]);
    // Unknown ids are 404; a non-numeric id is 400.
    c.delete(ADMIN_KEY, "/v1/keys/123456789").expect(404, Some("key_not_found"));
    c.delete(ADMIN_KEY, "/v1/keys/abc").expect(400, Some("invalid_field"));

    // The last active admin key cannot be revoked (it would lock everyone out).
    let keys = c.get(ADMIN_KEY, "/v1/keys").json();
    let admin = keys["data"].as_array().unwrap().iter().find(|k| k["role"] == json!("admin")).unwrap().clone();
    let r = c.delete(ADMIN_KEY, &format!("/v1/keys/{}", admin["id"]));
    r.expect(409, Some("last_admin_key"));
    c.get(ADMIN_KEY, "/v1/keys").expect(200, None);
}

/// Unauthenticated requests to every route, including unknown ids and bad
/// bodies, get the same bare 401 and never a hint of data.
#[test]
fn unauthenticated_requests_see_nothing() {
    let node = TestNode::start();
    let c = &node.client;
    c.create_ledger(1);
    let (_, op) = c.create_key("operator", &[]);
    c.create_account(&op, 424242, 1, &[]);
    let paths: [(Method, &str, Option<&str>); 18] = [
        (Method::GET, "/v1/accounts/424242", None),
        (Method::GET, "/v1/accounts/999", None),
        (Method::GET, "/v1/accounts/not-an-id", None),
        (Method::GET, "/v1/accounts/424242/transfers", None),
        (Method::GET, "/v1/accounts/424242/balances?limit=0", None),
        (Method::GET, "/v1/transfers/1", None),
        (Method::GET, "/v1/ledgers", None),
        (Method::GET, "/v1/keys", None),
        (Method::GET, "/v1/audit", None),
        (Method::GET, "/v1/events", None),
        (Method::GET, "/v1/events/stream", None),
        (Method::POST, "/v1/keys", Some(r#"{"role":"admin"}"#)),
        (Method::POST, "/v1/ledgers", Some(r#"{"id":9,"asset":"USD","scale":2}"#)),
        (Method::POST, "/v1/accounts", Some(r#"{"id":"5","ledger":1,"code":1}"#)),
        (Method::POST, "/v1/accounts/batch", Some("{not json")),
        (Method::POST, "/v1/transfers", Some(r#"{"id":"5"}"#)),
        (Method::POST, "/v1/transfers/batch", Some(r#"{"transfers":[]}"#)),
        (Method::DELETE, "/v1/keys/1", None),
    ];
    for (method, path, body) in paths {
        for with_idem in [false, true] {
            let mut r = Req::new(method.clone(), path);
            if with_idem {
                r = r.idem("unauth");
            }
            if let Some(b) = body {
                r = r.raw_body(b);
            }
            let resp = c.send(r);
            assert_bare_problem(&resp, 401, "unauthorized", &["424242", "USD", "bootstrap"]);
            assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{method} {path}");
        }
    }
    // Nothing was written.
    assert_eq!(c.get(ADMIN_KEY, "/v1/ledgers").json()["data"].as_array().unwrap().len(), 1);
    assert_eq!(c.get(ADMIN_KEY, "/v1/accounts/5").status, 404);
    assert_eq!(c.get(ADMIN_KEY, "/v1/keys").json()["data"].as_array().unwrap().len(), 2);
    // The unauthenticated endpoints stay open.
    for path in ["/healthz", "/readyz", "/v1/openapi.json"] {
        c.send(Req::new(Method::GET, path)).expect(200, None);
    }
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let node = TestNode::start();
    let c = &node.client;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {ADMIN_KEY}");
        let r = c.send(Req::new(Method::GET, "/v1/keys").header("authorization", auth.as_bytes()));
        r.expect(200, None);
    }
    let r = c.send(Req::new(Method::GET, "/v1/keys").header("authorization", format!("Basic {ADMIN_KEY}").as_bytes()));
    r.expect(401, Some("unauthorized"));
}

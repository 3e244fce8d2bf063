//! Shared helpers of the HTTP integration tests: an in-process node with
//! the HTTP API on free ports in a temporary directory, and a small blocking
//! client (reqwest) that keeps the raw body, so tests can compare replayed
//! responses byte for byte.

#![allow(dead_code)]

use bursar_http::HttpConfig;
use bursar_server::{Node, NodeConfig};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The first admin key of every test node.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";

/// Keys of a problem body: nothing else may be in a 401 or 403.
pub const PROBLEM_KEYS: [&str; 6] = ["type", "title", "status", "code", "detail", "field"];

/// A payment order of 100.00 USD to EUR from `sender` (to a German IBAN).
pub fn order_body(id: u128, sender: &str) -> Value {
    json!({
        "id": id.to_string(),
        "customer_id": "77",
        "source_asset": "USD",
        "source_amount": "10000",
        "target_asset": "EUR",
        "sender": {"name": sender, "country": "GB"},
        "recipient": {"name": "Bartholomew Ickenham", "bank_account": "DE89370400440532013000"},
    })
}

/// A node with its HTTP API, shut down cleanly when dropped.
pub struct TestNode {
    node: Option<Node>,
    pub base: String,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl TestNode {
    pub fn start() -> TestNode {
        TestNode::with_config(HttpConfig::default())
    }

    pub fn with_config(http: HttpConfig) -> TestNode {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        config.admin_key = Some(ADMIN_KEY.to_string());
        let node = Node::start(config).expect("the node starts");
        let server =
            bursar_http::start(&node.handle(), "127.0.0.1:0".parse().unwrap(), http, None).expect("HTTP starts");
        let base = format!("http://{}", server.local_addr());
        TestNode { node: Some(node), client: Client::new(&base), base, _dir: dir }
    }

    /// The running node's handle (its engine queue, as in-process workers use it).
    pub fn handle(&self) -> bursar_server::node::NodeHandle {
        self.node.as_ref().expect("the node is running").handle()
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Shuts the node down cleanly; the data directory stays until drop.
    pub fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
    }
}

/// A response with its raw body.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("an ASCII header"))
    }

    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// The problem code of an error response (checks the content type).
    pub fn code(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        self.json()["code"].as_str().unwrap_or_else(|| panic!("no code: {}", self.body)).to_string()
    }

    /// Asserts the status and, for errors, the problem code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Resp {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        if let Some(code) = code {
            assert_eq!(self.code(), code, "body: {}", self.body);
            assert_eq!(self.json()["status"], json!(status), "body: {}", self.body);
        }
        self
    }

    /// The body without the per-request `request_id` field.
    pub fn json_without_request_id(&self) -> Value {
        let mut v = self.json();
        if let Some(o) = v.as_object_mut() {
            o.remove("request_id");
        }
        v
    }
}

/// A request to send.
pub struct Req<'a> {
    pub method: Method,
    pub path: String,
    pub key: Option<&'a str>,
    pub idempotency_key: Option<&'a [u8]>,
    pub body: Option<String>,
    pub headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Req<'a> {
    pub fn new(method: Method, path: impl Into<String>) -> Req<'a> {
        Req { method, path: path.into(), key: None, idempotency_key: None, body: None, headers: Vec::new() }
    }
    pub fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }
    pub fn idem(mut self, key: &'a str) -> Self {
        self.idempotency_key = Some(key.as_bytes());
        self
    }
    pub fn idem_bytes(mut self, key: &'a [u8]) -> Self {
        self.idempotency_key = Some(key);
        self
    }
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string());
        self
    }
    pub fn raw_body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }
    pub fn header(mut self, name: &'a str, value: &'a [u8]) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Makes ring the process's rustls provider: reqwest is built without one
/// (`rustls-no-provider`, so that nothing pulls in aws-lc) and refuses to
/// build a client until one is installed.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A blocking HTTP client for one server. Cheap to clone (shared pool).
#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(base: &str) -> Client {
        install_crypto();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .expect("a client");
        Client { base: base.to_string(), http }
    }

    pub fn send(&self, r: Req<'_>) -> Resp {
        let what = format!("{} {}", r.method, r.path);
        self.try_send(r).unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Sends; connection errors are returned, not panics.
    pub fn try_send(&self, r: Req<'_>) -> Result<Resp, reqwest::Error> {
        let mut b = self.http.request(r.method.clone(), format!("{}{}", self.base, r.path));
        if let Some(k) = r.key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        if let Some(k) = r.idempotency_key {
            let v = reqwest::header::HeaderValue::from_bytes(k).expect("a header value the client can send");
            b = b.header("idempotency-key", v);
        }
        for (name, value) in r.headers {
            b = b.header(name, reqwest::header::HeaderValue::from_bytes(value).expect("a valid header value"));
        }
        if let Some(body) = r.body {
            b = b.header("content-type", "application/json").body(body);
        }
        let response = b.send()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text()?;
        Ok(Resp { status, headers, body })
    }

    pub fn get(&self, key: &str, path: &str) -> Resp {
        self.send(Req::new(Method::GET, path).key(key))
    }

    pub fn post(&self, key: &str, idem: &str, path: &str, body: &Value) -> Resp {
        self.send(Req::new(Method::POST, path).key(key).idem(idem).json(body))
    }

    /// POST with a fresh Idempotency-Key.
    pub fn post_new(&self, key: &str, path: &str, body: &Value) -> Resp {
        self.post(key, &fresh_key("k"), path, body)
    }

    pub fn delete(&self, key: &str, path: &str) -> Resp {
        self.send(Req::new(Method::DELETE, path).key(key))
    }

    // ---------------------------------------------------------- fixtures

    pub fn create_ledger(&self, id: u32) {
        self.post_new(ADMIN_KEY, "/v1/ledgers", &json!({"id": id, "asset": "USD", "scale": 2})).expect(201, None);
    }

    /// Creates a key; returns its id and secret.
    pub fn create_key(&self, role: &str, ledgers: &[u32]) -> (u64, String) {
        let r = self.post_new(ADMIN_KEY, "/v1/keys", &json!({"role": role, "ledgers": ledgers, "name": role}));
        r.expect(201, None);
        let v = r.json();
        (v["id"].as_u64().expect("an id"), v["secret"].as_str().expect("a secret").to_string())
    }

    pub fn create_account(&self, operator: &str, id: u128, ledger: u32, flags: &[&str]) {
        let body = json!({"id": id.to_string(), "ledger": ledger, "code": 1, "flags": flags});
        self.post_new(operator, "/v1/accounts", &body).expect(201, None);
    }

    pub fn transfer(&self, operator: &str, id: u128, dr: u128, cr: u128, amount: u128, ledger: u32) -> Resp {
        self.post_new(operator, "/v1/transfers", &transfer_body(id, dr, cr, amount, ledger))
    }

    /// The account's balances as admin sees them: (debits_pending,
    /// debits_posted, credits_pending, credits_posted).
    pub fn balances(&self, id: u128) -> (u128, u128, u128, u128) {
        let r = self.get(ADMIN_KEY, &format!("/v1/accounts/{id}"));
        r.expect(200, None);
        let v = r.json();
        let n = |f: &str| v[f].as_str().expect("a decimal string").parse::<u128>().expect("a u128");
        (n("debits_pending"), n("debits_posted"), n("credits_pending"), n("credits_posted"))
    }

    /// Every transfer of an account (admin), oldest first.
    pub fn account_transfers(&self, id: u128) -> Vec<Value> {
        let r = self.get(ADMIN_KEY, &format!("/v1/accounts/{id}/transfers?limit=1000"));
        r.expect(200, None);
        r.json()["data"].as_array().expect("a page").clone()
    }

    /// Every audit record (admin).
    pub fn audit(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/audit?limit=1000&cursor={c}"),
                None => "/v1/audit?limit=1000".to_string(),
            };
            let r = self.get(ADMIN_KEY, &path);
            r.expect(200, None);
            let v = r.json();
            out.extend(v["data"].as_array().expect("a page").iter().cloned());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// Audit outcomes recorded for one Idempotency-Key.
    pub fn audit_outcomes(&self, idempotency_key: &str) -> Vec<String> {
        self.audit()
            .iter()
            .filter(|r| r["idempotency_key"] == json!(idempotency_key))
            .map(|r| r["outcome"].as_str().expect("an outcome").to_string())
            .collect()
    }
}

pub fn transfer_body(id: u128, dr: u128, cr: u128, amount: u128, ledger: u32) -> Value {
    json!({
        "id": id.to_string(),
        "debit_account_id": dr.to_string(),
        "credit_account_id": cr.to_string(),
        "amount": amount.to_string(),
        "ledger": ledger,
        "code": 1,
    })
}

/// A process-wide unique Idempotency-Key.
pub fn fresh_key(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Asserts that an error body is a bare problem: no record, no data.
#[track_caller]
pub fn assert_bare_problem(r: &Resp, status: u16, code: &str, secrets: &[&str]) {
    r.expect(status, Some(code));
    let v = r.json();
    let o = v.as_object().expect("a problem object");
    for k in o.keys() {
        assert!(PROBLEM_KEYS.contains(&k.as_str()), "unexpected field {k:?} in {}", r.body);
    }
    for s in secrets {
        assert!(!r.body.contains(s), "the body leaks {s:?}: {}", r.body);
    }
}

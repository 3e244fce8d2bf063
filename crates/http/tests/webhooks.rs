//! Webhooks end to end: a node with the delivery workers POSTs to a real
//! HTTP receiver on loopback (allowed with `--webhook-allow`-style policy).

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bursar_crypto::pii::PiiKeyring;
use bursar_http::{HttpConfig, WebhooksApi};
use bursar_outbound::webhooks::DestinationPolicy;
use bursar_outbound::webhooks::delivery::DeliverySettings;
use bursar_server::{Node, NodeConfig};
use common::{ADMIN_KEY, Client};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ------------------------------------------------------------ the receiver

#[derive(Clone, Debug)]
struct Got {
    headers: HeaderMap,
    body: Vec<u8>,
    accepted: bool,
}

#[derive(Default)]
struct Shared {
    got: Mutex<Vec<Got>>,
    /// Answer this many requests with 500.
    fail_next: AtomicU32,
    /// Hang this many requests past the attempt timeout.
    hang_next: AtomicU32,
    /// Answer every request with 500.
    fail_all: AtomicBool,
}

struct Receiver {
    url: String,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let take = |n: &AtomicU32| n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok();
    let hang = take(&s.hang_next);
    let fail = !hang && (s.fail_all.load(Ordering::SeqCst) || take(&s.fail_next));
    let accepted = !hang && !fail;
    s.got.lock().unwrap().push(Got { headers, body: body.to_vec(), accepted });
    if hang {
        tokio::time::sleep(Duration::from_secs(5)).await;
        return StatusCode::OK;
    }
    if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT }
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(shared.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver { url, shared, _runtime: runtime }
    }

    fn got(&self) -> Vec<Got> {
        self.shared.got.lock().unwrap().clone()
    }

    /// Seqs of the accepted deliveries, in arrival order.
    fn accepted_seqs(&self) -> Vec<u64> {
        self.got().iter().filter(|g| g.accepted).map(seq_of).collect()
    }
}

fn seq_of(g: &Got) -> u64 {
    g.headers["bursar-event-id"].to_str().unwrap().parse().unwrap()
}

// ------------------------------------------------------------ the node

struct HookNode {
    node: Option<Node>,
    client: Client,
}

impl HookNode {
    fn start(dir: &Path, keyring: &Arc<PiiKeyring>, allow: &[&str], settings: DeliverySettings) -> HookNode {
        let mut config = NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
        config.admin_key = Some(ADMIN_KEY.to_string());
        let node = Node::start(config).expect("the node starts");
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let policy = Arc::new(DestinationPolicy::parse(&allow).unwrap());
        let api = Arc::new(WebhooksApi::new(keyring.clone(), policy.clone()));
        let http = HttpConfig { webhooks: Some(api), ..Default::default() };
        let server = bursar_http::start(&node.handle(), "127.0.0.1:0".parse().unwrap(), http, None).unwrap();
        bursar_outbound::webhooks::delivery::start(&node.handle(), keyring.clone(), policy, settings).unwrap();
        let client = Client::new(&format!("http://{}", server.local_addr()));
        HookNode { node: Some(node), client }
    }

    fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
    }
}

impl Drop for HookNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fast() -> DeliverySettings {
    DeliverySettings {
        retry_period: Duration::from_secs(120),
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        attempt_timeout: Duration::from_millis(500),
        poll: Duration::from_millis(100),
        ..Default::default()
    }
}

const SECRET: &str = "a-receiver-chosen-secret-0123456789";

fn create_hook(c: &Client, url: &str, types: &[&str]) -> Value {
    let r = c.post_new(ADMIN_KEY, "/v1/webhooks", &json!({"url": url, "types": types, "secret": SECRET}));
    r.expect(201, None);
    r.json()
}

/// Every event seq after `after` (admin read of the change stream).
fn event_seqs(c: &Client, after: u64) -> Vec<(u64, Value)> {
    let r = c.get(ADMIN_KEY, &format!("/v1/events?after={after}&limit=1000"));
    r.expect(200, None);
    r.json()["data"].as_array().unwrap().iter().map(|e| (e["seq"].as_u64().unwrap(), e.clone())).collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn make_transfers(c: &Client, first_id: u128, n: u128) {
    let (_, operator) = c.create_key("operator", &[]);
    for i in 0..n {
        let (dr, cr) = if i % 2 == 0 { (1, 2) } else { (2, 3) };
        c.transfer(&operator, first_id + i, dr, cr, 1 + i, 1).expect(201, None);
    }
}

fn setup_accounts(c: &Client) {
    c.create_ledger(1);
    let (_, operator) = c.create_key("operator", &[]);
    for id in 1..=3 {
        c.create_account(&operator, id, 1, &[]);
    }
}

fn verify_signature(g: &Got, secret: &str) {
    let sig = g.headers["bursar-signature"].to_str().unwrap();
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&g.body);
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "the signature verifies");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(t.parse::<u64>().unwrap()) < 300, "a fresh timestamp");
}

// ------------------------------------------------------------ tests

#[test]
fn deliveries_are_signed_and_in_order_through_failures_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Arc::new(PiiKeyring::generate().unwrap());
    let rx = Receiver::start();
    let node = HookNode::start(dir.path(), &keyring, &["127.0.0.1"], fast());
    let c = &node.client;
    setup_accounts(c);
    let hook = create_hook(c, &rx.url, &["transfer", "account"]);
    assert_eq!(hook["secret"], json!(SECRET), "the secret is returned once");
    let id = hook["id"].as_u64().unwrap();
    let start = hook["delivered_through"].as_u64().unwrap();
    let listed = c.get(ADMIN_KEY, "/v1/webhooks");
    assert!(listed.body.contains(&rx.url) && !listed.body.contains(SECRET), "never shown again: {}", listed.body);
    // The receiver fails for a while: 500s, then two attempts that hang.
    rx.shared.fail_next.store(5, Ordering::SeqCst);
    rx.shared.hang_next.store(2, Ordering::SeqCst);
    make_transfers(c, 100, 12);
    let expected: Vec<(u64, Value)> = event_seqs(c, start)
        .into_iter()
        .filter(|(_, e)| e["type"].as_str().unwrap().starts_with("transfer."))
        .collect();
    assert_eq!(expected.len(), 12);
    let last = expected.last().unwrap().0;
    wait_until("every transfer event", Duration::from_secs(60), || rx.accepted_seqs().contains(&last));
    let got = rx.got();
    assert!(got.iter().any(|g| !g.accepted), "the failures happened");
    let accepted = rx.accepted_seqs();
    for (seq, event) in &expected {
        let g = got.iter().find(|g| g.accepted && seq_of(g) == *seq).unwrap_or_else(|| panic!("seq {seq} lost"));
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(&body, event, "the body is the event as GET /v1/events serves it");
        assert_eq!(g.headers["bursar-event-type"], event["type"].as_str().unwrap());
        assert_eq!(g.headers["bursar-webhook-id"], id.to_string().as_str());
        verify_signature(g, SECRET);
    }
    // Strictly in seq order: every attempt (failed or not) is of the next
    // undelivered event, so the arrival sequence never goes back.
    let attempts: Vec<u64> = got.iter().map(seq_of).collect();
    assert!(attempts.windows(2).all(|w| w[0] <= w[1]), "in seq order: {attempts:?}");
    assert!(accepted.windows(2).all(|w| w[0] < w[1]), "each accepted once, in order: {accepted:?}");
    // Per account, the order of the ledger holds.
    for account in ["1", "2", "3"] {
        let of = |seqs: &[u64]| -> Vec<u64> {
            seqs.iter()
                .copied()
                .filter(|s| expected.iter().any(|(q, e)| q == s && e["accounts"].to_string().contains(account)))
                .collect()
        };
        let want: Vec<u64> = of(&expected.iter().map(|(s, _)| *s).collect::<Vec<_>>());
        assert_eq!(of(&accepted), want, "account {account}");
    }
    // Non-matching types were skipped, and the cursor is recorded.
    assert!(got.iter().all(|g| !g.headers["bursar-event-type"].to_str().unwrap().starts_with("key.")));
    wait_until("the cursor", Duration::from_secs(10), || {
        c.get(ADMIN_KEY, &format!("/v1/webhooks/{id}")).json()["delivered_through"].as_u64().unwrap() >= last
    });
}

#[test]
fn dead_letters_after_the_retry_period_and_replay_redelivers() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Arc::new(PiiKeyring::generate().unwrap());
    let rx = Receiver::start();
    let settings = DeliverySettings { retry_period: Duration::from_millis(600), ..fast() };
    let node = HookNode::start(dir.path(), &keyring, &["127.0.0.0/8"], settings);
    let c = &node.client;
    let hook = create_hook(c, &rx.url, &["ledger"]);
    let id = hook["id"].as_u64().unwrap();
    rx.shared.fail_all.store(true, Ordering::SeqCst);
    c.create_ledger(7);
    let seq = event_seqs(c, 0).iter().find(|(_, e)| e["type"] == "ledger.created").unwrap().0;
    let path = format!("/v1/webhooks/{id}/dead-letters");
    wait_until("a dead letter", Duration::from_secs(20), || {
        c.get(ADMIN_KEY, &path).json()["data"].as_array().is_some_and(|d| !d.is_empty())
    });
    let dead = c.get(ADMIN_KEY, &path).json()["data"][0].clone();
    assert_eq!(dead["seq"], json!(seq));
    assert_eq!((dead["last_status"].clone(), dead["last_error"].clone()), (json!(500), json!("status")));
    assert!(dead["attempts"].as_u64().unwrap() >= 2, "{dead}");
    // The stream moves on past the dead letter.
    c.create_ledger(8);
    rx.shared.fail_all.store(false, Ordering::SeqCst);
    wait_until("the next event", Duration::from_secs(20), || rx.accepted_seqs().iter().any(|s| *s > seq));
    assert!(!rx.accepted_seqs().contains(&seq));
    // Replay an unknown seq, then all.
    let r = c.post_new(ADMIN_KEY, &format!("/v1/webhooks/{id}/replay"), &json!({"seqs": [seq + 1000]}));
    r.expect(202, None);
    assert_eq!(r.json()["not_found"], json!([seq + 1000]));
    c.post_new(ADMIN_KEY, &format!("/v1/webhooks/{id}/replay"), &json!({})).expect(202, None);
    wait_until("the redelivery", Duration::from_secs(20), || rx.accepted_seqs().contains(&seq));
    let g = rx.got().into_iter().find(|g| g.accepted && seq_of(g) == seq).unwrap();
    verify_signature(&g, SECRET);
    wait_until("the dead letter to go", Duration::from_secs(10), || {
        let w = c.get(ADMIN_KEY, &format!("/v1/webhooks/{id}")).json();
        w["dead_letters"] == json!(0) && w["pending_redeliveries"] == json!(0)
    });
    // Deleting stops deliveries.
    c.delete(ADMIN_KEY, &format!("/v1/webhooks/{id}")).expect(200, None);
    c.delete(ADMIN_KEY, &format!("/v1/webhooks/{id}")).expect(404, Some("not_found"));
    let before = rx.got().len();
    c.create_ledger(9);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.got().len(), before, "nothing delivered after the delete");
}

#[test]
fn forbidden_destinations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Arc::new(PiiKeyring::generate().unwrap());
    let node = HookNode::start(dir.path(), &keyring, &[], fast());
    let c = &node.client;
    for url in ["http://10.0.0.1/hook", "http://127.0.0.1:9/hook", "http://[::1]/x", "http://169.254.169.254/"] {
        let r = c.post_new(ADMIN_KEY, "/v1/webhooks", &json!({"url": url}));
        r.expect(400, Some("destination_forbidden"));
        assert_eq!(r.json()["field"], json!("url"));
    }
    let r = c.post_new(ADMIN_KEY, "/v1/webhooks", &json!({"url": "ftp://example.com/"}));
    assert_eq!(r.json()["field"], json!("url"), "{}", r.body);
    let r = c.post_new(ADMIN_KEY, "/v1/webhooks", &json!({"url": "http://8.8.8.8/", "secret": "short"}));
    assert_eq!(r.json()["field"], json!("secret"), "{}", r.body);
    let r = c.post_new(ADMIN_KEY, "/v1/webhooks", &json!({"url": "http://8.8.8.8/", "types": ["nope"]}));
    assert_eq!(r.json()["field"], json!("types"), "{}", r.body);
    let long = format!("http://8.8.8.8/{}", "a".repeat(2048));
    let r = c.post_new(ADMIN_KEY, "/v1/webhooks", &json!({"url": long}));
    assert_eq!(r.json()["field"], json!("url"), "{}", r.body);
    assert_eq!(c.get(ADMIN_KEY, "/v1/webhooks").json()["data"], json!([]), "nothing was created");
    // A public destination is accepted; the generated secret is returned once.
    // (Subscribed to orders only, which this node never makes: no traffic.)
    let r = c.post_new(ADMIN_KEY, "/v1/webhooks", &json!({"url": "http://8.8.8.8:9/", "types": ["order"]}));
    r.expect(201, None);
    assert!(r.json()["secret"].as_str().unwrap().starts_with("whsec_"));
    // Only admins manage webhooks.
    let (_, operator) = c.create_key("operator", &[]);
    c.get(&operator, "/v1/webhooks").expect(403, None);
}

#[test]
fn a_restart_resumes_from_the_recorded_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Arc::new(PiiKeyring::generate().unwrap());
    let rx = Receiver::start();
    let mut node = HookNode::start(dir.path(), &keyring, &["127.0.0.1"], fast());
    let hook = create_hook(&node.client, &rx.url, &["ledger"]);
    let id = hook["id"].as_u64().unwrap();
    for l in 1..=3 {
        node.client.create_ledger(l);
    }
    let head = event_seqs(&node.client, 0).last().unwrap().0;
    wait_until("the cursor", Duration::from_secs(20), || {
        node.client.get(ADMIN_KEY, &format!("/v1/webhooks/{id}")).json()["delivered_through"].as_u64().unwrap() >= head
    });
    let before = rx.accepted_seqs();
    assert_eq!(before.len(), 3);
    node.stop();
    let node = HookNode::start(dir.path(), &keyring, &["127.0.0.1"], fast());
    for l in 4..=5 {
        node.client.create_ledger(l);
    }
    wait_until("the events after the restart", Duration::from_secs(20), || rx.accepted_seqs().len() >= 5);
    std::thread::sleep(Duration::from_millis(300));
    let after = rx.accepted_seqs();
    assert_eq!(after.len(), 5, "nothing before the recorded cursor is redelivered: {after:?}");
    assert!(after.windows(2).all(|w| w[0] < w[1]));
    for g in rx.got() {
        verify_signature(&g, SECRET);
    }
}

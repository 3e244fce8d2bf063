//! API key lifetime and request limits at the HTTP edge (issue 13): keys
//! that expire (decided by the edge's clock, which these tests control),
//! rotation, per-key token buckets (429 `rate_limited` with Retry-After),
//! and connection hygiene (a per-address connection cap, header-read and
//! idle timeouts).

mod common;

use bursar_http::HttpConfig;
use bursar_server::clock::Clock;
use bursar_server::rate_limit::RateLimit;
use common::{ADMIN_KEY, Client, Req, TestNode, fresh_key};
use reqwest::Method;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SECOND: u64 = 1_000_000_000;

/// A node whose HTTP edge reads `clock`, starting at the real time (the log
/// still stamps entries with the real time).
fn node_with_clock(config: HttpConfig) -> (TestNode, Arc<AtomicU64>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
    let clock = Arc::new(AtomicU64::new(u64::try_from(now).expect("before 2554")));
    let node = TestNode::with_config(HttpConfig { clock: Clock::manual(clock.clone()), ..config });
    (node, clock)
}

fn create_key(c: &Client, body: serde_json::Value) -> (u64, String) {
    let r = c.post_new(ADMIN_KEY, "/v1/keys", &body);
    r.expect(201, None);
    let v = r.json();
    (v["id"].as_u64().expect("an id"), v["secret"].as_str().expect("a secret").to_string())
}

#[test]
fn an_expired_key_is_refused_with_401() {
    let (node, clock) = node_with_clock(HttpConfig::default());
    let c = &node.client;
    let now = clock.load(Ordering::Relaxed);
    let past = json!({"role": "auditor", "expires_at": (now - SECOND).to_string()});
    c.post_new(ADMIN_KEY, "/v1/keys", &past).expect(400, Some("invalid_field"));
    let not_a_time = json!({"role": "auditor", "expires_at": "soon"});
    c.post_new(ADMIN_KEY, "/v1/keys", &not_a_time).expect(400, Some("invalid_field"));

    let expires_at = now + 60 * SECOND;
    let (id, secret) = create_key(c, json!({"role": "auditor", "expires_at": expires_at.to_string()}));
    c.get(&secret, "/v1/ledgers").expect(200, None);
    let listed = c.get(ADMIN_KEY, "/v1/keys").json();
    let key = listed["data"].as_array().unwrap().iter().find(|k| k["id"] == json!(id)).unwrap().clone();
    assert_eq!((key["expires_at"].clone(), key["active"].clone()), (json!(expires_at.to_string()), json!(true)));

    clock.store(expires_at - 1, Ordering::Relaxed);
    c.get(&secret, "/v1/ledgers").expect(200, None);
    clock.store(expires_at, Ordering::Relaxed);
    let r = c.get(&secret, "/v1/ledgers");
    common::assert_bare_problem(&r, 401, "unauthorized", &[&secret]);
    assert!(r.json()["detail"].as_str().unwrap().contains("expired"), "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // Keys without an expiry are unaffected by the clock.
    clock.store(u64::MAX - 1, Ordering::Relaxed);
    c.get(ADMIN_KEY, "/v1/ledgers").expect(200, None);
}

#[test]
fn rotation_gives_a_new_secret_and_retires_the_old_one_after_the_grace() {
    let (node, clock) = node_with_clock(HttpConfig::default());
    let c = &node.client;
    c.create_ledger(1);
    let limit = json!({"per_second": 100, "burst": 200});
    let (old_id, old) = create_key(c, json!({"role": "operator", "ledgers": [1], "name": "svc", "rate_limit": limit}));

    let idem = fresh_key("rotate");
    let path = format!("/v1/keys/{old_id}/rotate");
    let r = c.post(ADMIN_KEY, &idem, &path, &json!({"grace_seconds": 60}));
    r.expect(201, None);
    let new = r.json();
    let (new_id, secret) = (new["id"].as_u64().unwrap(), new["secret"].as_str().unwrap().to_string());
    assert_ne!(new_id, old_id);
    assert_eq!((&new["role"], &new["ledgers"], &new["name"]), (&json!("operator"), &json!([1]), &json!("svc")));
    assert_eq!(new["rate_limit"], limit);
    assert!(new.get("expires_at").is_none(), "the new key does not expire: {new}");
    // A replay names the same new key, without the secret.
    let replay = c.post(ADMIN_KEY, &idem, &path, &json!({"grace_seconds": 60}));
    replay.expect(201, None);
    assert!(replay.replayed());
    assert_eq!((replay.json()["id"].as_u64(), replay.json().get("secret")), (Some(new_id), None));

    // Both work during the grace period; the old one stops after it.
    c.get(&old, "/v1/ledgers").expect(200, None);
    c.get(&secret, "/v1/ledgers").expect(200, None);
    let listed = c.get(ADMIN_KEY, "/v1/keys").json();
    let old_key = listed["data"].as_array().unwrap().iter().find(|k| k["id"] == json!(old_id)).unwrap().clone();
    let old_expiry: u64 = old_key["expires_at"].as_str().expect("the old key now expires").parse().unwrap();
    clock.store(old_expiry, Ordering::Relaxed);
    c.get(&old, "/v1/ledgers").expect(401, Some("unauthorized"));
    c.get(&secret, "/v1/ledgers").expect(200, None);

    // No grace: the key stops at once (log time), and cannot be rotated again.
    let again = format!("/v1/keys/{new_id}/rotate");
    let r = c.post_new(ADMIN_KEY, &again, &json!({"grace_seconds": 0}));
    r.expect(201, None);
    let (third_id, third) = (r.json()["id"].as_u64().unwrap(), r.json()["secret"].as_str().unwrap().to_string());
    c.get(&secret, "/v1/ledgers").expect(401, Some("unauthorized"));
    c.get(&third, "/v1/ledgers").expect(200, None);
    c.post_new(ADMIN_KEY, &again, &json!({})).expect(409, Some("key_is_expired"));
    // Revoked and unknown keys cannot be rotated; only admins rotate.
    c.delete(ADMIN_KEY, &format!("/v1/keys/{third_id}")).expect(200, None);
    c.post_new(ADMIN_KEY, &format!("/v1/keys/{third_id}/rotate"), &json!({})).expect(409, Some("key_is_revoked"));
    c.post_new(ADMIN_KEY, "/v1/keys/12345/rotate", &json!({})).expect(404, Some("key_not_found"));
    let (_, operator) = create_key(c, json!({"role": "operator"}));
    c.post_new(&operator, "/v1/keys/12345/rotate", &json!({})).expect(403, Some("forbidden"));
    let too_long = json!({"grace_seconds": 31 * 24 * 3600});
    c.post_new(ADMIN_KEY, "/v1/keys/12345/rotate", &too_long).expect(400, Some("invalid_field"));

    // With no body: one hour's grace. The admin key rotates like any other.
    let admin_id = c.get(ADMIN_KEY, "/v1/keys").json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == json!("admin"))
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let r = c.send(Req::new(Method::POST, format!("/v1/keys/{admin_id}/rotate")).key(ADMIN_KEY).idem("no-body"));
    r.expect(201, None);
    let new_admin = r.json()["secret"].as_str().unwrap().to_string();
    let listed = c.get(&new_admin, "/v1/keys").json();
    let admin = listed["data"].as_array().unwrap().iter().find(|k| k["id"] == json!(admin_id)).unwrap().clone();
    let expiry: u64 = admin["expires_at"].as_str().unwrap().parse().unwrap();
    let created: u64 = r.json()["created_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expiry - created, 3600 * SECOND);
}

#[test]
fn a_key_over_its_rate_gets_429_with_retry_after() {
    let default = RateLimit { per_second: 2, burst: 4 };
    let (node, clock) = node_with_clock(HttpConfig { rate_limit_per_key: Some(default), ..Default::default() });
    let c = &node.client;
    let bad = json!({"role": "operator", "rate_limit": {"per_second": 0, "burst": 5}});
    c.post_new(ADMIN_KEY, "/v1/keys", &bad).expect(400, Some("invalid_field"));
    let (_, own) = create_key(c, json!({"role": "auditor", "rate_limit": {"per_second": 1, "burst": 3}}));
    let (_, plain) = create_key(c, json!({"role": "auditor"}));

    let refused = |key: &str| {
        let r = c.get(key, "/v1/ledgers");
        common::assert_bare_problem(&r, 429, "rate_limited", &[key]);
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
        assert!(retry >= 1, "{retry}");
        retry
    };
    for _ in 0..3 {
        c.get(&own, "/v1/ledgers").expect(200, None);
    }
    assert_eq!(refused(&own), 1);
    // The node's default applies to a key without its own limit.
    for _ in 0..4 {
        c.get(&plain, "/v1/ledgers").expect(200, None);
    }
    refused(&plain);
    // Buckets are per key, and unauthenticated probes are not counted.
    c.get(ADMIN_KEY, "/v1/ledgers").expect(200, None);
    c.send(Req::new(Method::GET, "/healthz")).expect(200, None);
    // Time refills at the key's rate.
    clock.fetch_add(SECOND, Ordering::Relaxed);
    c.get(&own, "/v1/ledgers").expect(200, None);
    refused(&own);
    c.get(&plain, "/v1/ledgers").expect(200, None);
    c.get(&plain, "/v1/ledgers").expect(200, None);
    refused(&plain);
}

/// Raises the open-file limit to what `n` more sockets need (the test opens
/// both ends of every connection in this process).
fn allow_open_files(n: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0, "getrlimit");
        if limit.rlim_cur < n {
            assert!(limit.rlim_max >= n, "this test needs {n} open files; the hard limit is {}", limit.rlim_max);
            limit.rlim_cur = n;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
        }
    }
}

/// Whether the server closed `s` (EOF or reset), waiting at most 30 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response (or 408) before the close
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return true,
            Err(_) => return false,
        }
    }
}

fn keep_alive_request(s: &mut TcpStream) {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").expect("a request");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("a response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
}

#[test]
fn one_client_holding_thousands_of_sockets_does_not_starve_another() {
    const HOGS: usize = 2000;
    const PER_IP: usize = 64;
    allow_open_files(3 * HOGS as u64 + 1024);
    // Long timeouts: only the per-address cap protects the second client.
    let config = HttpConfig {
        max_connections_per_ip: PER_IP,
        max_connections: 256,
        header_read_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let node = TestNode::with_config(config);
    let addr = node.base.trim_start_matches("http://").to_string();
    let mut hogs = Vec::with_capacity(HOGS);
    for i in 0..HOGS {
        let mut s = TcpStream::connect(&addr).expect("the kernel accepts the connection");
        // Some are keep-alive connections that made a request, the rest idle.
        if i < PER_IP / 2 {
            keep_alive_request(&mut s);
        }
        hogs.push(s);
    }

    common::install_crypto();
    let other = reqwest::blocking::Client::builder()
        .local_address(Some("127.0.0.2".parse().expect("an address")))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client");
    let get = |path: &str, key: Option<&str>| {
        let mut b = other.get(format!("{}{path}", node.base));
        if let Some(k) = key {
            b = b.bearer_auth(k);
        }
        b.send().expect("the second client is answered").status().as_u16()
    };
    assert_eq!(get("/healthz", None), 200);
    assert_eq!(get("/v1/ledgers", Some(ADMIN_KEY)), 200);

    // The first client kept its share; the server closed every socket beyond it.
    let held = hogs.iter_mut().skip(PER_IP).map(closed_by_server).filter(|closed| !closed).count();
    assert_eq!(held, 0, "connections beyond the per-address cap stay open");
    drop(hogs);
}

#[test]
fn idle_and_slow_header_sockets_are_closed_and_their_slots_given_back() {
    let config = HttpConfig {
        max_connections_per_ip: 3,
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let node = TestNode::with_config(config);
    let addr = node.base.trim_start_matches("http://").to_string();
    let mut silent = TcpStream::connect(&addr).expect("a connection");
    let mut slow = TcpStream::connect(&addr).expect("a connection");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te").expect("half a head");
    let mut kept = TcpStream::connect(&addr).expect("a connection");
    keep_alive_request(&mut kept);
    // The address holds its 3 connections: a 4th is closed unanswered.
    let mut fourth = TcpStream::connect(&addr).expect("the kernel accepts the connection");
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    fourth.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    let mut answer = Vec::new();
    match fourth.read_to_end(&mut answer) {
        Ok(_) => assert!(answer.is_empty(), "answered: {}", String::from_utf8_lossy(&answer)),
        Err(e) => assert!(matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted), "{e}"),
    }

    assert!(closed_by_server(&mut silent), "a connection that sends nothing is closed");
    assert!(closed_by_server(&mut slow), "a connection that never finishes its head is closed");
    assert!(closed_by_server(&mut kept), "an idle keep-alive connection is closed");
    // Their slots are free again (the server drops a slot right after the
    // close, so the first tries may still race it).
    let served = (0..100).any(|_| {
        let ok = node.client.try_send(Req::new(Method::GET, "/healthz")).is_ok_and(|r| r.status == 200);
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(served, "the address's slots were not given back");
}

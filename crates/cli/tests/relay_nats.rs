//! The NATS JetStream relay delivers every event exactly once and in order
//! through crashes: a real `nats-server -js` and the real `bursar` binary
//! (which runs the relay) are each killed with SIGKILL at random moments
//! while transfers are being written over HTTP, and restarted on the same
//! data. Afterwards the relay must catch up (lag 0), and the stream must
//! hold exactly the events `GET /v1/events` serves: one message per event,
//! in order, with the same JSON, the right subject and dedup id.
//!
//! Needs `nats-server` (fails, never skips, when it is missing).
//! `RELAY_NATS_SEED` reproduces a run's kill schedule.

#[path = "../../http/tests/common/mod.rs"]
mod common;
mod process_common;

use bursar_outbound::nats::{msg_id, read_stream};
use bursar_testkit::nats_server::{NatsServer, free_port};
use common::{ADMIN_KEY, Client, Req, Resp};
use process_common::{Proc, Rng, start_until_ready};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LEDGER: u32 = 7;
const ACCOUNTS: u128 = 20;
const KILLS: usize = 6;
const BATCH: u64 = 100;

struct Setup {
    dir: PathBuf,
    addr: String,
    http: String,
    nats_url: String,
    log: PathBuf,
}

/// `bursar start --relay-nats` on fixed ports; waits until the HTTP API is ready.
fn start_server(s: &Setup) -> Proc {
    let make = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bursar"));
        c.args(["start", "--no-orders", "--data-dir"])
            .arg(&s.dir)
            .args(["--addr", &s.addr, "--http", &s.http, "--relay-nats", &s.nats_url])
            .env("BURSAR_ADMIN_KEY", ADMIN_KEY)
            .env("BURSAR_LOG", "info");
        c
    };
    start_until_ready(make, &s.http, &s.log)
}

fn post_until_answered(c: &Client, key: &str, idem: &str, path: &str, body: &Value, stop: &AtomicBool) -> Option<Resp> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match c.try_send(Req::new(Method::POST, path).key(key).idem(idem).json(body)) {
            Err(_) => {}
            Ok(r) if r.status >= 500 => {}
            Ok(r) if r.status == 409 && r.body.contains("idempotency_request_in_flight") => {}
            Ok(r) => return Some(r),
        }
        if stop.load(Ordering::Acquire) {
            return None;
        }
        assert!(Instant::now() < deadline, "POST {path} got no answer in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every event `GET /v1/events` serves, in order.
fn all_events(c: &Client) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = "0".to_string();
    loop {
        let r = c.get(ADMIN_KEY, &format!("/v1/events?after={after}&limit=1000"));
        r.expect(200, None);
        let v = r.json();
        let page = v["data"].as_array().expect("a page").clone();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
        after = v["next_after"].as_str().expect("next_after").to_string();
    }
}

/// The value of a Prometheus sample line (`name{labels} value`).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[test]
fn relay_delivers_every_event_once_in_order_through_crashes() {
    let seed = std::env::var("RELAY_NATS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (bursar_server::engine::now_nanos() | 1) & 0xffff_ffff);
    eprintln!("RELAY_NATS_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let nats_dir = tmp.path().join("nats");
    std::fs::create_dir_all(&nats_dir).unwrap();
    let mut nats = NatsServer::start(&nats_dir, free_port().unwrap())
        .unwrap_or_else(|e| panic!("this test needs a real nats-server: {e}"));
    let s = Setup {
        dir: tmp.path().join("data"),
        addr: format!("127.0.0.1:{}", free_port().unwrap()),
        http: format!("127.0.0.1:{}", free_port().unwrap()),
        nats_url: nats.url(),
        log: tmp.path().join("server.log"),
    };
    let mut server = Some(start_server(&s));
    let c = Client::new(&format!("http://{}", s.http));
    c.create_ledger(LEDGER);
    let (_, operator) = c.create_key("operator", &[LEDGER]);
    for id in 1..=ACCOUNTS {
        c.create_account(&operator, id, LEDGER, &[]);
    }

    // Writers: batches of transfers, each under its own Idempotency-Key, retried until answered.
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicU64::new(0));
    let writer = {
        let (c, stop, batches, operator) = (c.clone(), stop.clone(), batches.clone(), operator.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let transfers: Vec<Value> = (0..BATCH)
                    .map(|i| {
                        let id = n * BATCH + i + 1;
                        let dr = u128::from(id) % ACCOUNTS + 1;
                        let cr = dr % ACCOUNTS + 1;
                        common::transfer_body(u128::from(id), dr, cr, 1 + u128::from(id % 97), LEDGER)
                    })
                    .collect();
                let body = json!({ "transfers": transfers });
                match post_until_answered(&c, &operator, &format!("relay-{n}"), "/v1/transfers/batch", &body, &stop) {
                    Some(r) => assert_eq!(r.status, 200, "batch {n}: {}", r.body),
                    None => return,
                }
                n += 1;
                batches.store(n, Ordering::Release);
            }
        })
    };

    // Chaos: SIGKILL the server, the broker or both at random moments; the first
    // two kills are one of each so both are always exercised.
    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        let which = match k {
            0 => 0,
            1 => 1,
            _ => rng.below(3),
        };
        let (kill_server, kill_nats) = (which != 1, which != 0);
        eprintln!("kill {k}: server={kill_server} nats={kill_nats} after {} batches", batches.load(Ordering::Acquire));
        if kill_server {
            drop(server.take());
        }
        if kill_nats {
            nats.kill();
        }
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        if kill_nats {
            nats.restart().unwrap_or_else(|e| panic!("restarting nats-server: {e}"));
        }
        if kill_server {
            server = Some(start_server(&s));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    writer.join().expect("the writer does not panic");
    let written = batches.load(Ordering::Acquire);
    assert!(written >= 5, "only {written} batches were written: the load did not run");

    // Catch up: the relay's last sequence reaches the newest event, lag 0.
    let events = all_events(&c);
    let head = events.len() as u64;
    assert_eq!(events.last().and_then(|e| e["seq"].as_u64()), Some(head), "events are gapless from 1");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = c.get(ADMIN_KEY, "/metrics").body;
        let last = metric(&text, "bursar_relay_last_seq{relay=\"nats\"}");
        let lag = metric(&text, "bursar_relay_lag_events{relay=\"nats\"}");
        if last == Some(head as f64) && lag == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay not caught up in 60 s: last_seq {last:?} lag {lag:?} of {head}; server log:\n{}\nnats log:\n{}",
            server.as_ref().map(Proc::log_text).unwrap_or_default(),
            nats.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The stream holds exactly the events, in order, each once, same JSON.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stored = runtime.block_on(read_stream(&nats.url(), "BURSAR_EVENTS", Duration::from_secs(60))).unwrap();
    assert_eq!(stored.len() as u64, head, "one message per event (seed {seed})");
    for (i, (m, e)) in stored.iter().zip(&events).enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(m.bursar_seq, Some(seq), "message {} out of order (seed {seed})", m.stream_seq);
        assert_eq!(m.msg_id.as_deref(), Some(msg_id(seq).as_str()));
        let body: Value = serde_json::from_slice(&m.body).expect("a message body is JSON");
        assert_eq!(&body, e, "event {seq} differs from GET /v1/events");
        assert_eq!(m.subject, format!("bursar.events.{}", e["type"].as_str().expect("a type")));
    }
    eprintln!("relayed {head} events through {KILLS} kills ({written} batches of {BATCH})");
}

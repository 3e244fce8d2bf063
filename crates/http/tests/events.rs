//! The change stream over HTTP: pages and cursors, type filters, the long
//! poll, and the SSE stream resuming from arbitrary sequences.

mod common;

use common::{ADMIN_KEY, Client, TestNode};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// Every event, paging with `after`/`next_after`.
fn all_events(c: &Client, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = "0".to_string();
    loop {
        let page = c.get(ADMIN_KEY, &format!("/v1/events?after={after}&limit=7{query}")).expect(200, None).json();
        let data = page["data"].as_array().unwrap().clone();
        after = page["next_after"].as_str().unwrap().to_string();
        if data.is_empty() {
            return out;
        }
        out.extend(data);
    }
}

/// A ledger, two accounts and `n` transfers of 1..=n between them.
fn load(node: &TestNode, n: u128) -> String {
    let c = &node.client;
    c.create_ledger(1);
    let (_, operator) = c.create_key("operator", &[]);
    c.create_account(&operator, 10, 1, &[]);
    c.create_account(&operator, 11, 1, &[]);
    for i in 1..=n {
        c.transfer(&operator, 100 + i, 10, 11, i, 1).expect(201, None);
    }
    operator
}

#[test]
fn pages_are_gapless_and_filters_advance_the_cursor() {
    let node = TestNode::start();
    let operator = load(&node, 5);
    let c = &node.client;
    let events = all_events(c, "");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless from 1");
    assert!(events.iter().all(|e| e["version"] == 1));
    let transfers = all_events(c, "&types=transfer.posted");
    assert_eq!(transfers.len(), 5);
    for (i, e) in transfers.iter().enumerate() {
        assert_eq!(e["type"], "transfer.posted");
        assert_eq!(e["data"]["amount"], (i + 1).to_string(), "amounts as strings, in commit order");
        assert_eq!(e["accounts"], serde_json::json!(["10", "11"]));
        assert!(e.get("pending_amount").is_none() && e["data"].get("pending_amount").is_none());
    }
    let accounts = all_events(c, "&types=account");
    assert_eq!(accounts.iter().map(|e| e["data"]["id"].as_str().unwrap()).collect::<Vec<_>>(), ["10", "11"]);
    assert_eq!(accounts[0]["data"]["credits_posted"], "0", "an account event shows it as created");
    // Bad input is a clear 400; operators may not read the stream.
    c.get(ADMIN_KEY, "/v1/events?types=nope").expect(400, Some("invalid_field"));
    c.get(ADMIN_KEY, "/v1/events?after=-1").expect(400, Some("invalid_field"));
    c.get(ADMIN_KEY, "/v1/events?wait_ms=30001").expect(400, Some("invalid_field"));
    c.get(&operator, "/v1/events").expect(403, Some("forbidden"));
}

#[test]
fn a_long_poll_returns_as_soon_as_an_event_commits() {
    let node = TestNode::start();
    let operator = load(&node, 1);
    let c = node.client.clone();
    let tail: u64 =
        c.get(ADMIN_KEY, "/v1/events?after=0&limit=1000").json()["next_after"].as_str().unwrap().parse().unwrap();
    let started = Instant::now();
    let poll = std::thread::spawn(move || {
        c.get(ADMIN_KEY, &format!("/v1/events?after={tail}&wait_ms=20000&types=transfer")).expect(200, None).json()
    });
    std::thread::sleep(Duration::from_millis(300));
    node.client.transfer(&operator, 999, 11, 10, 42, 1).expect(201, None);
    let page = poll.join().unwrap();
    assert_eq!(page["data"][0]["data"]["id"], "999");
    assert!(started.elapsed() < Duration::from_secs(20), "woke on the commit, not the timeout");
    // Nothing new: the poll ends empty at its deadline, cursor unchanged.
    let next = page["next_after"].as_str().unwrap();
    let empty = node.client.get(ADMIN_KEY, &format!("/v1/events?after={next}&wait_ms=200")).json();
    assert_eq!((empty["data"].as_array().unwrap().len(), empty["next_after"].as_str().unwrap()), (0, next));
}

/// Reads SSE events from `/v1/events/stream` until `until` is seen; returns
/// (id, type, data) of each.
fn read_stream(base: &str, query: &str, last_event_id: Option<u64>, until: u64) -> Vec<(u64, String, Value)> {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET /v1/events/stream{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n{resume}Accept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let (mut out, mut id, mut kind) = (Vec::new(), 0, String::new());
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("the stream ended early");
        }
        let l = line.trim_end();
        // Chunked transfer encoding: size lines are hex numbers; skip them.
        if let Some(v) = l.strip_prefix("id: ") {
            id = v.parse().unwrap();
        } else if let Some(v) = l.strip_prefix("event: ") {
            kind = v.to_string();
        } else if let Some(v) = l.strip_prefix("data: ") {
            out.push((id, kind.clone(), serde_json::from_str(v).unwrap()));
            if id >= until {
                return out;
            }
        }
    }
}

#[test]
fn the_stream_resumes_after_any_sequence_with_exactly_the_events_after_it() {
    let node = TestNode::start();
    load(&node, 6);
    let events = all_events(&node.client, "");
    let last = events.last().unwrap()["seq"].as_u64().unwrap();
    for resume in [0, 1, last / 2, last - 1] {
        let expected: Vec<&Value> = events.iter().filter(|e| e["seq"].as_u64().unwrap() > resume).collect();
        // By `after` and by `Last-Event-ID` (what reconnecting clients send).
        for got in [
            read_stream(&node.base, &format!("?after={resume}"), None, last),
            read_stream(&node.base, "", Some(resume), last),
        ] {
            assert_eq!(got.len(), expected.len(), "resume after {resume}");
            for ((id, kind, data), e) in got.iter().zip(&expected) {
                assert_eq!((*id, kind.as_str()), (e["seq"].as_u64().unwrap(), e["type"].as_str().unwrap()));
                assert_eq!(data, *e, "the same JSON as the pages");
            }
        }
    }
    // A live stream gets events committed after it opened.
    let base = node.base.clone();
    let live = std::thread::spawn(move || read_stream(&base, "?types=transfer", Some(last), last + 2));
    std::thread::sleep(Duration::from_millis(300));
    let (_, operator) = node.client.create_key("operator", &[]);
    node.client.transfer(&operator, 777, 10, 11, 5, 1).expect(201, None);
    let got = live.join().unwrap();
    assert_eq!(got.last().unwrap().2["data"]["id"], "777");
}

//! Idempotency across crashes, with the real `bursar` binary: a request is
//! answered, the server is killed with SIGKILL and restarted on the same
//! data directory, and the same request with the same Idempotency-Key gets
//! the original response (marked replayed) without running again, while a
//! different request with that key is refused. Then a clean stop (SIGTERM,
//! which snapshots) and a restart from the snapshot: still replayed.

#[path = "../../http/tests/common/mod.rs"]
mod common;

use common::{ADMIN_KEY, Client, Req, Resp, transfer_body};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    client: Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct free ports (both held until both are chosen).
fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (bind(), bind());
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

fn start_server(dir: &Path, log: &Path) -> Server {
    let (p, q) = free_ports();
    let (addr, http) = (format!("127.0.0.1:{p}"), format!("127.0.0.1:{q}"));
    let child = Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["start", "--data-dir"])
        .arg(dir)
        .args(["--addr", &addr, "--http", &http])
        .env("BURSAR_ADMIN_KEY", ADMIN_KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .expect("the bursar binary starts");
    let mut server = Server { child, client: Client::new(&format!("http://{http}")) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("server exited with {status}; its log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if server.client.try_send(Req::new(Method::GET, "/readyz")).is_ok_and(|r| r.status == 200) {
            return server;
        }
        assert!(Instant::now() < deadline, "server not ready in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL: no shutdown, no final snapshot.
fn kill_hard(mut server: Server) {
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
}

/// SIGTERM: a clean stop that snapshots.
fn stop_clean(mut server: Server) {
    let pid = i32::try_from(server.child.id()).expect("a pid");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "a clean stop exits 0, not {status}");
            return;
        }
        assert!(Instant::now() < deadline, "server did not stop in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn assert_replay(original: &Resp, replay: &Resp) {
    assert!(!original.replayed());
    assert!(replay.replayed(), "Idempotent-Replayed: true expected: {replay:?}");
    assert_eq!(replay.status, original.status, "{}", replay.body);
}

#[test]
fn idempotent_replay_survives_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");

    let s = start_server(&data, &log);
    let c = &s.client;
    c.create_ledger(1);
    let (_, op) = c.create_key("operator", &[1]);
    c.create_account(&op, 1, 1, &[]);
    c.create_account(&op, 2, 1, &[]);

    let body = transfer_body(100, 1, 2, 42, 1);
    let first = c.post(&op, "crash-1", "/v1/transfers", &body);
    first.expect(201, None);
    let failed_body = transfer_body(101, 999, 2, 1, 1);
    let failed = c.post(&op, "crash-fail", "/v1/transfers", &failed_body);
    failed.expect(422, Some("debit_account_not_found"));
    let key_body = json!({"role": "auditor", "name": "made-before-the-crash"});
    let made = c.post(ADMIN_KEY, "crash-key", "/v1/keys", &key_body);
    made.expect(201, None);
    let secret = made.json()["secret"].as_str().unwrap().to_string();
    kill_hard(s);

    let s = start_server(&data, &log);
    let c = &s.client;
    let again = c.post(&op, "crash-1", "/v1/transfers", &body);
    assert_replay(&first, &again);
    assert_eq!(again.body, first.body, "the replay is the original body");
    assert_eq!(c.balances(1), (0, 42, 0, 0));
    assert_eq!(c.balances(2), (0, 0, 0, 42));
    assert_eq!(c.account_transfers(1).len(), 1);

    // A different request with the key: refused, and nothing runs.
    let other = transfer_body(102, 1, 2, 43, 1);
    c.post(&op, "crash-1", "/v1/transfers", &other).expect(422, Some("idempotency_key_reused"));
    assert_eq!(c.get(ADMIN_KEY, "/v1/transfers/102").status, 404);
    assert_eq!(c.balances(1), (0, 42, 0, 0));

    // The failure replays as it was, even though account 999 exists now.
    c.create_account(&op, 999, 1, &[]);
    let failed_again = c.post(&op, "crash-fail", "/v1/transfers", &failed_body);
    assert_replay(&failed, &failed_again);
    assert_eq!(failed_again.json_without_request_id(), failed.json_without_request_id());
    assert_eq!(c.balances(999), (0, 0, 0, 0));

    // The key made before the crash: same id, no secret; the secret works.
    let made_again = c.post(ADMIN_KEY, "crash-key", "/v1/keys", &key_body);
    assert_replay(&made, &made_again);
    assert_eq!(made_again.json()["id"], made.json()["id"]);
    assert!(made_again.json().get("secret").is_none());
    c.get(&secret, "/v1/accounts/1").expect(200, None);

    // A clean stop snapshots the idempotency records; they come back.
    stop_clean(s);
    let s = start_server(&data, &log);
    let c = &s.client;
    let third = c.post(&op, "crash-1", "/v1/transfers", &body);
    assert_replay(&first, &third);
    assert_eq!(third.body, first.body);
    c.post(&op, "crash-1", "/v1/transfers", &other).expect(422, Some("idempotency_key_reused"));
    assert_eq!(c.balances(1), (0, 42, 0, 0));
    let outcomes = c.audit_outcomes("crash-1");
    assert_eq!(outcomes, ["executed", "replayed", "conflict", "replayed", "conflict"]);

    // Once more without a snapshot of the latest entries: kill and restart.
    c.post(&op, "after-snapshot", "/v1/transfers", &transfer_body(103, 2, 1, 2, 1)).expect(201, None);
    kill_hard(s);
    let s = start_server(&data, &log);
    let c = &s.client;
    let r = c.post(&op, "after-snapshot", "/v1/transfers", &transfer_body(103, 2, 1, 2, 1));
    r.expect(201, None);
    assert!(r.replayed());
    assert_eq!(c.balances(1), (0, 42, 0, 2));
    assert_eq!(c.send(Req::new(Method::GET, "/healthz")).status, 200);
    stop_clean(s);
    // stderr was a file, not a terminal: the log carries no colour codes.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" INFO "), "the server logs at info by default:\n{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a log written to a file:\n{text}");
}

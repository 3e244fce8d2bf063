//! The audit trail through the real binary: `bursar audit verify` passes on
//! a real log, and editing one byte of an audit entry on disk makes it fail
//! and name that entry.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "audit-test-admin-key-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request on its own connection; returns status and body.
fn http(port: u16, method: &str, path: &str, key: &str, idem: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let idem = idem.map(|k| format!("Idempotency-Key: {k}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n{idem}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn start(dir: &Path, http_port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args([
            "start",
            "--no-orders",
            "--addr",
            &format!("127.0.0.1:{}", free_port()),
            "--http",
            &format!("127.0.0.1:{http_port}"),
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("BURSAR_ADMIN_KEY", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_http(http_port);
    child
}

/// Waits until the server accepts connections on its HTTP port.
fn wait_for_http(http_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", http_port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child with a valid signal.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

fn audit_verify(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bursar")).args(["audit", "verify", "--data-dir"]).arg(dir).output().unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn audit_verify_passes_and_names_a_tampered_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let server = start(&dir, port);
    assert_eq!(http(port, "POST", "/v1/ledgers", ADMIN, Some("l1"), r#"{"id":1,"asset":"USD","scale":2}"#).0, 201);
    let (status, key) = http(port, "POST", "/v1/keys", ADMIN, Some("k1"), r#"{"role":"operator"}"#);
    assert_eq!(status, 201, "{key}");
    let secret = key.split("\"secret\":\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let accounts = r#"{"accounts":[{"id":"1","ledger":1,"code":1},{"id":"2","ledger":1,"code":1}]}"#;
    assert_eq!(http(port, "POST", "/v1/accounts/batch", &secret, Some("a1"), accounts).0, 200);
    let transfer = r#"{"id":"9","debit_account_id":"1","credit_account_id":"2","amount":"5","ledger":1,"code":1}"#;
    assert_eq!(http(port, "POST", "/v1/transfers", &secret, Some("tamper-me-please"), transfer).0, 201);
    assert_eq!(http(port, "POST", "/v1/transfers", &secret, Some("tamper-me-please"), transfer).0, 201, "replay");
    let (_, audit) = http(port, "GET", "/v1/audit?limit=100", ADMIN, None, "");
    stop(server);

    let out = audit_verify(&dir);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // Bootstrap key, ledger, key, accounts, transfer, its replay.
    assert!(text.starts_with("audit: ok records=6 head="), "{text}");
    assert!(audit.contains(r#""seq":5"#) && audit.contains("tamper-me-please"), "{audit}");

    // Flip one byte of the fifth audit entry's idempotency key on disk.
    let seg = segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(16).position(|w| w == b"tamper-me-please").expect("the key is in the log");
    bytes[at + 3] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let out = audit_verify(&dir);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.starts_with("audit: FAILED audit record 5 "), "{text}");
    assert!(text.contains("segment-") && text.contains("offset"), "names the file and offset: {text}");
}

/// Starts the binary without BURSAR_ADMIN_KEY, stdout captured.
fn start_without_admin_key(dir: &Path, http_port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["start", "--addr", &format!("127.0.0.1:{}", free_port()), "--http", &format!("127.0.0.1:{http_port}")])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("BURSAR_ADMIN_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_http(http_port);
    child
}

/// Stops a server started with captured stdout; returns what it printed.
fn stop_and_read(mut child: Child) -> String {
    // SAFETY: kill(2) on our own child with a valid signal.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    out
}

#[test]
fn a_first_start_without_bursar_admin_key_prints_a_working_key_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = stop_and_read(start_without_admin_key(&dir, free_port()));
    let key =
        first.lines().find(|l| l.starts_with("bsk_")).unwrap_or_else(|| panic!("no key printed: {first}")).to_string();
    assert_eq!(key.len(), 68);
    // The key works after a restart, and is not printed again.
    let port = free_port();
    let server = start_without_admin_key(&dir, port);
    assert_eq!(http(port, "GET", "/v1/keys", &key, None, "").0, 200);
    let wrong = format!("bsk_{}", "0".repeat(64));
    assert_eq!(http(port, "GET", "/v1/keys", &wrong, None, "").0, 401);
    let out = stop_and_read(server);
    assert!(!out.contains("bsk_"), "the key is printed only on the first start: {out}");
}

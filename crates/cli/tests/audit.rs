//! The audit trail through the real binary: `bursar audit verify` passes on
//! a real log, and editing one byte of an audit entry on disk makes it fail
//! and name that entry; and the trail's old chunks leave RAM like the
//! ledger's records and read back the same, before and after a restart.

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
    spawn(dir, http_port, &[]).0
}

/// `bursar start --no-orders` on `dir` with `extra` flags; returns the
/// child and its binary-protocol address once the HTTP API answers.
fn spawn(dir: &Path, http_port: u16, extra: &[&str]) -> (Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["start", "--no-orders"])
        .args(extra)
        .args(["--addr", &addr, "--http", &format!("127.0.0.1:{http_port}"), "--data-dir"])
        .arg(dir)
        .env("BURSAR_ADMIN_KEY", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_http(http_port);
    (child, addr)
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

/// Requests sent for the cold-trail test: one audit record each (about 140
/// bytes for a one-transfer binary request), so more than two full chunks
/// of the record bytes (1 MiB) and of their offsets (8,192 per chunk).
const COLD_REQUESTS: u64 = 18_000;
/// Concurrent clients sending them (group commit keeps this quick).
const COLD_CLIENTS: u64 = 8;

/// A server that snapshots every MiB of log through a 1 MiB block cache;
/// returns it with its binary address.
fn start_cold(dir: &Path, http_port: u16) -> (Child, String) {
    spawn(dir, http_port, &["--snapshot-every-mib", "1", "--segment-mib", "1", "--cache-mib", "1"])
}

fn client(addr: &str) -> bursar_client::Client {
    let options = bursar_client::ClientOptions {
        timeout: Duration::from_secs(30),
        key: Some(ADMIN.to_string()),
        ..Default::default()
    };
    bursar_client::Client::connect(addr, &options).unwrap()
}

/// The value of a gauge on `/metrics` (0 if absent).
fn gauge(port: u16, name: &str) -> f64 {
    let (_, text) = http(port, "GET", "/metrics", ADMIN, None, "");
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// One small transfer per request, from several clients at once.
fn send_small_requests(addr: &str) {
    use bursar_core::{Account, Ledger, Transfer};
    let mut c = client(addr);
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    assert!(c.create_ledgers(&[usd]).unwrap().is_empty());
    let accounts: Vec<Account> = (1..=2).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());
    let threads: Vec<_> = (0..COLD_CLIENTS)
        .map(|k| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut c = client(&addr);
                for i in (k..COLD_REQUESTS).step_by(COLD_CLIENTS as usize) {
                    let t = Transfer {
                        id: u128::from(i) + 1,
                        debit_account_id: 1,
                        credit_account_id: 2,
                        amount: 1,
                        ledger: 1,
                        code: 1,
                        ..Default::default()
                    };
                    assert!(c.create_transfers(&[t]).unwrap().is_empty());
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
}

/// The trail's RAM with every chunk in memory: its records take about
/// 2.6 MB, so three 1 MiB chunks of bytes and three 64 KiB chunks of
/// offsets (gauges count whole chunks).
const MIB: f64 = 1024.0 * 1024.0;
const AUDIT_RAM_ALL_HOT: f64 = 3.0 * MIB + 3.0 * 64.0 * 1024.0;
/// After a restart every full chunk stays on disk: only the last, partly
/// filled chunk of each arena is in RAM.
const AUDIT_RAM_RESTARTED: f64 = MIB + 64.0 * 1024.0;

/// Waits until at least `chunks` chunks are held on disk only and the
/// trail's memory gauge is at most `ram_max`; returns that gauge.
fn wait_for_cold(port: u16, chunks: f64, ram_max: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ram = gauge(port, r#"bursar_state_memory_bytes{structure="audit"}"#);
        if gauge(port, "bursar_state_cold_chunks") >= chunks && ram > 0.0 && ram <= ram_max {
            return ram;
        }
        assert!(Instant::now() < deadline, "the audit trail did not leave memory in 60 s (RAM {ram} bytes)");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn old_audit_records_go_cold_and_read_back_the_same_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let (server, addr) = start_cold(&dir, port);
    send_small_requests(&addr);
    // Fewer transfers than one chunk of the ledger's arenas (65,536), so
    // every cold chunk is the audit trail's: its record bytes and offsets.
    // The last snapshot leaves the newest full chunk of each arena hot.
    let ram = wait_for_cold(port, 2.0, AUDIT_RAM_ALL_HOT - MIB - 64.0 * 1024.0);
    println!("audit trail: records={} ram_bytes={ram} all_hot_bytes={AUDIT_RAM_ALL_HOT}", COLD_REQUESTS + 3);
    let first = http(port, "GET", "/v1/audit?limit=3", ADMIN, None, "");
    let middle = http(port, "GET", "/v1/audit?limit=3&cursor=9000", ADMIN, None, "");
    assert_eq!((first.0, middle.0), (200, 200), "{first:?} {middle:?}");
    assert!(first.1.contains(r#""seq":1"#) && middle.1.contains(r#""seq":9001"#), "{first:?} {middle:?}");
    stop(server);

    let out = audit_verify(&dir);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // Bootstrap key, ledger, accounts, one record per transfer request.
    assert!(text.starts_with(&format!("audit: ok records={} head=", COLD_REQUESTS + 3)), "{text}");

    // A restart restores the trail lazily: its old chunks stay on disk
    // and read back the same.
    let (server, _) = start_cold(&dir, port);
    let ram = wait_for_cold(port, 4.0, AUDIT_RAM_RESTARTED);
    println!("audit trail after restart: ram_bytes={ram}");
    assert_eq!(http(port, "GET", "/v1/audit?limit=3", ADMIN, None, ""), first);
    assert_eq!(http(port, "GET", "/v1/audit?limit=3&cursor=9000", ADMIN, None, ""), middle);
    stop(server);
}

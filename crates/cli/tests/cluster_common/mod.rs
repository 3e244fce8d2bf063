//! Shared by the tests that run 3 real `bursar start --cluster` replicas
//! on a real 3-node NATS cluster: starting replicas, clients, and
//! comparing `bursar verify` summaries.
#![allow(dead_code)]

use crate::process_common::{Proc, append, free_port};
use bursar_client::{Client, ClientOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The replicas' shared cluster key (authenticates log entries).
pub const CLUSTER_KEY: &str = "3c2f8e1a9b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";

pub struct Replica {
    pub node: u32,
    pub dir: PathBuf,
    /// The binary protocol's address.
    pub addr: String,
    /// The HTTP API's address, if it runs.
    pub http: Option<String>,
    pub log: PathBuf,
}

impl Replica {
    pub fn new(tmp: &Path, node: u32, http: bool) -> Replica {
        Replica {
            node,
            dir: tmp.join(format!("r{node}")),
            addr: format!("127.0.0.1:{}", free_port()),
            http: http.then(|| format!("127.0.0.1:{}", free_port())),
            log: tmp.join(format!("r{node}.log")),
        }
    }
}

/// A binary-protocol client authenticated with `key`, once the replica answers.
pub fn connect(addr: &str, key: &str) -> Option<Client> {
    let options = ClientOptions { timeout: Duration::from_secs(60), key: Some(key.to_string()), ..Default::default() };
    let mut c = Client::connect(addr, &options).ok()?;
    c.ping().ok()?;
    Some(c)
}

/// Starts the replica (no orders, no webhooks; `extra` arguments added)
/// until it serves. An early exit is retried for a while: JetStream may
/// still be electing its leaders.
pub fn start(r: &Replica, urls: &str, admin: &str, extra: &[&str]) -> Proc {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bursar"));
        command
            .args(["start", "--no-orders", "--no-webhooks"])
            .args(["--cluster", urls, "--node-id", &r.node.to_string(), "--addr", &r.addr, "--data-dir"])
            .arg(&r.dir)
            .args(extra)
            .env("BURSAR_ADMIN_KEY", admin)
            .env("BURSAR_CLUSTER_KEY", CLUSTER_KEY)
            .env("BURSAR_LOG", "info")
            .stdout(append(&r.log))
            .stderr(append(&r.log));
        match &r.http {
            Some(http) => command.args(["--http", http]),
            None => command.arg("--no-http"),
        };
        let child = command.spawn().expect("the bursar binary starts");
        let mut proc = Proc { child, log: r.log.clone() };
        loop {
            if let Some(status) = proc.child.try_wait().unwrap() {
                assert!(Instant::now() < deadline, "replica {} exited with {status}:\n{}", r.node, proc.log_text());
                std::thread::sleep(Duration::from_millis(500));
                break;
            }
            if connect(&r.addr, admin).is_some() {
                return proc;
            }
            assert!(Instant::now() < deadline, "replica {} not serving:\n{}", r.node, proc.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `bursar verify [--until P]`'s summary without what legitimately differs
/// between replicas (how many local snapshots it checked, torn tail bytes).
pub fn verify(dir: &Path, until: Option<u64>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bursar"));
    cmd.args(["verify", "--data-dir"]).arg(dir);
    if let Some(position) = until {
        cmd.args(["--until", &position.to_string()]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "verify --until {until:?} of {} failed: {text}", dir.display());
    eprintln!("{}: {text}", dir.display());
    let kept = text.split(' ').filter(|f| !f.starts_with("snapshots_checked=") && !f.starts_with("torn_tail_bytes="));
    kept.collect::<Vec<_>>().join(" ")
}

/// The value of `name=` in a verify summary.
pub fn field<'a>(summary: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    summary
        .split(' ')
        .find_map(|f| f.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name}= in {summary}"))
}

/// Verifies every replica at the last position all of them hold and
/// asserts their state digests (and summaries) are equal there; returns
/// that position and one summary.
pub fn assert_same_state(replicas: &[Replica]) -> (u64, String) {
    let summaries: Vec<String> = replicas.iter().map(|r| verify(&r.dir, None)).collect();
    let common = summaries.iter().map(|s| field(s, "position").parse::<u64>().unwrap()).min().unwrap();
    let at: Vec<String> = replicas.iter().map(|r| verify(&r.dir, Some(common))).collect();
    let state = |s: &String| s.split(' ').filter(|f| !f.starts_with("entries=")).collect::<Vec<_>>().join(" ");
    for (r, s) in replicas.iter().zip(&at) {
        assert_eq!(field(s, "position"), common.to_string(), "replica {}: {s}", r.node);
        assert_eq!(field(s, "digest").len(), 64, "replica {}: {s}", r.node);
        assert_eq!(state(s), state(&at[0]), "replicas {} and {} differ at position {common}", r.node, replicas[0].node);
    }
    eprintln!("the replicas hold the same state at position {common}: digest {}", field(&at[0], "digest"));
    (common, at[0].clone())
}

//! A local cluster of `nats-server` processes with clustered JetStream (R3
//! streams), each a child process with its own config, store and log in a
//! temp dir, on free loopback ports: for the cluster-mode tests and the
//! chaos harness. Nodes can be killed (SIGKILL), restarted on the same store,
//! paused (SIGSTOP) and resumed (SIGCONT).

use crate::HarnessError;
use crate::nats_server::{LISTEN_TIMEOUT, find_binary, free_port};
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Largest message the cluster accepts: a log entry of 8190 transfers is
/// about 1 MiB, with room for envelopes.
pub const PAYLOAD_MAX: &str = "8MB";

/// How long a new cluster may take to elect a JetStream meta leader that
/// knows every node (about a second when idle; much more on a loaded CI).
const JETSTREAM_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a SIGSTOPped node may take to show as stopped.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

struct Node {
    name: String,
    port: u16,
    /// The HTTP monitoring port (`/connz`: who is connected here).
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster; every node is SIGKILLed when it is dropped.
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `size` clustered JetStream servers under `dir` and waits until
    /// each accepts connections and JetStream can place a stream on all of
    /// them (see [`NatsCluster::wait_jetstream_ready`]).
    pub fn start(dir: &Path, size: usize) -> Result<NatsCluster, HarnessError> {
        NatsCluster::start_with(dir, size, "")
    }

    /// [`NatsCluster::start`] with `extra` appended to every node's
    /// configuration (accounts, users, a `tls { }` block for clients). A
    /// single node runs JetStream without a `cluster { }` block: alone, it
    /// could never elect a meta leader among routes.
    ///
    /// Ports are picked free and bound a moment later, so another process
    /// may take one in between: a node that could not bind is retried on
    /// new ports a few times.
    pub fn start_with(dir: &Path, size: usize, extra: &str) -> Result<NatsCluster, HarnessError> {
        const ATTEMPTS: usize = 5;
        let mut attempt = 1;
        loop {
            match NatsCluster::start_once(dir, size, extra) {
                Err(e) if attempt < ATTEMPTS && e.port_taken() => {
                    for i in 0..size {
                        let _ = std::fs::remove_dir_all(dir.join(format!("n{}", i + 1)));
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(dir: &Path, size: usize, extra: &str) -> Result<NatsCluster, HarnessError> {
        assert!(size >= 1, "a cluster has at least one node");
        let binary = find_binary()?;
        let ports: Vec<(u16, u16, u16)> =
            (0..size).map(|_| Ok((free_port()?, free_port()?, free_port()?))).collect::<Result<_, HarnessError>>()?;
        let mut nodes = Vec::with_capacity(size);
        for (i, (port, cluster_port, monitor_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let node_dir = dir.join(&name);
            std::fs::create_dir_all(&node_dir).map_err(HarnessError::io("creating", &node_dir))?;
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, c, _))| format!("\"nats-route://127.0.0.1:{c}\""))
                .collect();
            let mut conf = String::new();
            let _ = writeln!(conf, "server_name: {name}");
            let _ = writeln!(conf, "listen: 127.0.0.1:{port}");
            let _ = writeln!(conf, "http: 127.0.0.1:{monitor_port}");
            let _ = writeln!(conf, "max_payload: {PAYLOAD_MAX}");
            let _ = writeln!(conf, "jetstream {{ store_dir: {:?} }}", node_dir.join("store"));
            if size > 1 {
                let _ = writeln!(
                    conf,
                    "cluster {{ name: bursar, listen: 127.0.0.1:{cluster_port}, routes: [{}] }}",
                    routes.join(", ")
                );
            }
            conf.push_str(extra);
            let config = node_dir.join("nats.conf");
            std::fs::write(&config, conf).map_err(HarnessError::io("writing", &config))?;
            let log = node_dir.join("nats.log");
            nodes.push(Node { name, port: *port, monitor_port: *monitor_port, config, log, child: None });
        }
        let mut cluster = NatsCluster { binary, nodes };
        for i in 0..size {
            cluster.restart(i)?;
        }
        cluster.wait_jetstream_ready()?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Client port of node `i` (for URLs with credentials or `tls://`).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's client URL, comma-separated (what clients are given).
    pub fn urls(&self) -> String {
        (0..self.nodes.len()).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// The node a client named `client_name` is connected to (asked of
    /// each running node's `/connz`), if any node answers that it is.
    pub fn node_of_client(&self, client_name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            let port = self.nodes[i].monitor_port;
            let Some(body) = self.nodes[i].child.as_ref().and_then(|_| monitor_get(port, "/connz?limit=1024")) else {
                return false;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else { return false };
            let connections = json["connections"].as_array().map(Vec::as_slice).unwrap_or_default();
            connections.iter().any(|c| c["name"].as_str() == Some(client_name))
        })
    }

    /// Waits until JetStream could place a stream with one copy per node:
    /// a meta leader reports every other node by name, current and online
    /// (single node: JetStream is enabled). Tests then measure Bursar, not
    /// the cluster forming on a loaded machine; a cluster that never forms
    /// fails with every node's log.
    pub fn wait_jetstream_ready(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + JETSTREAM_READY_TIMEOUT;
        loop {
            let Some(state) = self.jetstream_missing() else { return Ok(()) };
            if Instant::now() > deadline {
                let logs = (0..self.nodes.len())
                    .map(|i| format!("--- {}\n{}", self.nodes[i].name, self.log_tail(i)))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(HarnessError::JetStreamNotReady {
                    size: self.nodes.len(),
                    waited: JETSTREAM_READY_TIMEOUT,
                    state,
                    logs,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What JetStream still lacks (`None`: ready).
    fn jetstream_missing(&self) -> Option<String> {
        let size = self.nodes.len();
        let mut missing = String::from("no node answered /jsz");
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Some(json) = monitor_get(node.monitor_port, "/jsz")
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            else {
                continue;
            };
            if json["disabled"].as_bool() == Some(true) {
                missing = format!("JetStream is disabled on {}", node.name);
                continue;
            }
            if size == 1 {
                return None;
            }
            let meta = &json["meta_cluster"];
            if meta["leader"].as_str() != Some(node.name.as_str()) {
                missing = format!("{} is not the meta leader ({})", node.name, meta["leader"]);
                continue;
            }
            let peers = meta["replicas"].as_array().map(Vec::as_slice).unwrap_or_default();
            let ready = peers.iter().filter(|p| {
                let known = self.nodes.iter().any(|n| p["name"].as_str() == Some(n.name.as_str()));
                known && p["current"].as_bool() == Some(true) && p["offline"].as_bool() != Some(true)
            });
            if ready.count() == size - 1 {
                return None;
            }
            missing = format!("meta leader {} sees its peers as {}", node.name, meta["replicas"]);
        }
        Some(missing)
    }

    /// SIGKILL node `i` (no-op if it is down).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its port and store.
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.kill(i);
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(HarnessError::io("opening", &node.log))?;
        let err = log.try_clone().map_err(HarnessError::io("opening", &node.log))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|source| HarnessError::Spawn { program: self.binary.display().to_string(), source })?;
        node.child = Some(child);
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let (name, port) = (self.nodes[i].name.clone(), self.nodes[i].port);
        loop {
            let exited = self.nodes[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.nodes[i].child = None;
                return Err(HarnessError::Exited { name, status, log: self.log_tail(i) });
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotListening { name, port, waited: LISTEN_TIMEOUT, log: self.log_tail(i) });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP node `i`: alive but silent (a pause, like a long GC or a VM
    /// stall), so peers must time it out. Returns once the kernel shows it
    /// stopped: the signal is delivered asynchronously, and a node still
    /// running for a moment could acknowledge what a test sends next.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        let Some(child) = &self.nodes[i].child else { return };
        let stat = format!("/proc/{}/stat", child.id());
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while Instant::now() < deadline {
            // The state is the field after the parenthesized command name.
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            let state = text.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            if matches!(state, Some("T" | "t")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("node {i} did not stop within {PAUSE_TIMEOUT:?} of SIGSTOP");
    }

    /// SIGCONT node `i` after [`NatsCluster::pause`].
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(child) = &self.nodes[i].child {
            let pid = libc::pid_t::try_from(child.id()).expect("invariant: child pids fit pid_t");
            // SAFETY: kill(2) on our own live child's pid; no memory is involved.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// The end of node `i`'s log, for error messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            // A paused node must be resumed to die promptly and be reaped.
            self.resume(i);
            self.kill(i);
        }
    }
}

/// `GET path` from a monitoring port (plain HTTP/1.0, bounded by
/// timeouts: a paused node must not hang the caller).
fn monitor_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(2);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.take(16 << 20).read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

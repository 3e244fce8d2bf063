//! The cluster under test: three `nats-server` nodes (the relay crate's
//! harness) and three `bursar start --cluster` replicas, each a child
//! process in the working dir. Every child is killed when [`Procs`] is
//! dropped, on every exit path. What the replicas run besides the ledger
//! (HTTP, orders, relays) is a [`ReplicaSetup`]; the chaos bank runs
//! the ledger alone.

use super::Shared;
use bursar_client::{Client, ClientOptions};
use bursar_testkit::nats_cluster::NatsCluster;
use bursar_testkit::nats_server::free_port;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `bursar` binary the replicas run: `BURSAR_BIN`, else the one next to
/// this program (`cargo build` puts them side by side).
pub fn bursar_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("BURSAR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().map_err(|e| format!("locating this program: {e}"))?;
    let exe = me.with_file_name("bursar");
    if !exe.is_file() {
        return Err(format!(
            "the bursar binary is not at {}: build it next to this program (cargo build --release -p bursar) or set BURSAR_BIN",
            exe.display()
        ));
    }
    Ok(exe)
}

/// Replicas in the cluster (and NATS nodes: one each).
pub const SIZE: usize = 3;
/// The one admin key every replica bootstraps with (cluster mode needs the
/// same key on all, so that replicas starting together create one key).
pub const ADMIN_KEY: &str = "chaos-bank-admin-key-0123456789ab";
/// How long a replica may take to serve after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How the replicas are started, besides cluster, node id, data dir and
/// binary-protocol address (which [`Procs`] gives each).
#[derive(Clone, Debug)]
pub struct ReplicaSetup {
    /// More `bursar start` arguments.
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
    /// Serve the HTTP API, each replica on a free port of its own
    /// ([`Replica::http`]); readiness then waits for `/readyz` too.
    pub http: bool,
}

impl ReplicaSetup {
    /// The ledger alone: no HTTP, orders or webhooks.
    pub fn ledger_only() -> ReplicaSetup {
        let args = ["--no-http", "--no-orders", "--no-webhooks"].map(String::from).to_vec();
        ReplicaSetup { args, env: Vec::new(), http: false }
    }
}

pub struct Replica {
    pub name: String,
    pub addr: String,
    /// The HTTP API's address, when the setup serves it.
    pub http: Option<String>,
    data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

pub struct Procs {
    exe: PathBuf,
    urls: String,
    /// The replicas' cluster key (random per harness, in their environment).
    cluster_key: String,
    setup: ReplicaSetup,
    pub replicas: Vec<Replica>,
    nats: NatsCluster,
    nats_down: Vec<bool>,
    nats_paused: Vec<bool>,
}

impl Procs {
    /// Starts the NATS cluster and the ledger-only replicas under `dir`;
    /// returns once every replica answers a ping.
    pub fn start(dir: &Path) -> Result<Procs, String> {
        Procs::start_with(dir, |_| ReplicaSetup::ledger_only())
    }

    /// Starts the NATS cluster and replicas set up by `setup`, given the
    /// NATS servers' URLs (comma-separated); returns once every replica
    /// is ready.
    pub fn start_with(dir: &Path, setup: impl FnOnce(&str) -> ReplicaSetup) -> Result<Procs, String> {
        let exe = bursar_binary()?;
        let nats = NatsCluster::start(dir, SIZE).map_err(|e| e.to_string())?;
        let urls = nats.urls();
        let setup = setup(&urls);
        let mut replicas = Vec::with_capacity(SIZE);
        for i in 0..SIZE {
            let name = format!("r{}", i + 1);
            replicas.push(Replica {
                addr: format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?),
                http: if setup.http {
                    Some(format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?))
                } else {
                    None
                },
                data_dir: dir.join(&name),
                log: dir.join(format!("{name}.log")),
                name,
                child: None,
                paused: false,
            });
        }
        let mut procs = Procs {
            exe,
            urls,
            cluster_key: random_cluster_key(),
            setup,
            replicas,
            nats,
            nats_down: vec![false; SIZE],
            nats_paused: vec![false; SIZE],
        };
        for i in 0..SIZE {
            procs.spawn(i)?;
        }
        for i in 0..SIZE {
            procs.wait_ready(i)?;
        }
        Ok(procs)
    }

    pub fn addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.addr.clone()).collect()
    }

    /// The NATS servers' URLs, comma-separated.
    pub fn nats_urls(&self) -> &str {
        &self.urls
    }

    /// NATS node `i`'s URL.
    pub fn nats_url(&self, i: usize) -> String {
        self.nats.url(i)
    }

    /// Starts replica `i` on its port and data dir (it must be down).
    pub fn spawn(&mut self, i: usize) -> Result<(), String> {
        let r = &mut self.replicas[i];
        let log = append(&r.log)?;
        let err = log.try_clone().map_err(|e| format!("opening {}: {e}", r.log.display()))?;
        let mut command = Command::new(&self.exe);
        command
            .arg("start")
            .args(["--cluster", &self.urls, "--node-id", &(i + 1).to_string(), "--data-dir"])
            .arg(&r.data_dir)
            .args(["--addr", &r.addr])
            .args(&self.setup.args)
            .env("BURSAR_ADMIN_KEY", ADMIN_KEY)
            .env(bursar_cluster::cluster_key::CLUSTER_KEY_ENV, &self.cluster_key)
            .envs(self.setup.env.iter().map(|(k, v)| (k, v)));
        if let Some(http) = &r.http {
            command.args(["--http", http]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting replica {} ({}): {e}", r.name, self.exe.display()))?;
        r.child = Some(child);
        r.paused = false;
        Ok(())
    }

    /// Waits until replica `i` answers a ping; fails if it exits first.
    pub fn wait_ready(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let options = ClientOptions { timeout: Duration::from_secs(5), ..Default::default() };
        loop {
            let r = &mut self.replicas[i];
            let Some(child) = r.child.as_mut() else { return Err(format!("replica {} is not running", r.name)) };
            if let Ok(Some(status)) = child.try_wait() {
                r.child = None;
                return Err(format!("replica {} exited with {status}; the end of its log:\n{}", r.name, r.log_tail()));
            }
            if Client::connect(r.addr.as_str(), &options).and_then(|mut c| c.ping()).is_ok()
                && r.http.as_deref().is_none_or(http_ready)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("replica {} not ready after {READY_TIMEOUT:?}:\n{}", r.name, r.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` replica `i` (also when paused: SIGKILL ends a stopped process).
    pub fn kill(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        if let Some(mut child) = r.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        r.paused = false;
    }

    /// `kill -9` replica `i` and delete its data dir: it must rebuild its
    /// state from the cluster's log alone.
    pub fn wipe(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        let dir = &self.replicas[i].data_dir;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("deleting {}: {e}", dir.display())),
        }
    }

    /// SIGSTOP replica `i`: alive, holding its connections, silent.
    pub fn pause(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        if let Some(child) = &r.child {
            signal(child, libc::SIGSTOP);
            r.paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        if let Some(child) = &r.child {
            signal(child, libc::SIGCONT);
        }
        r.paused = false;
    }

    /// The NATS node replica `i` is connected to, if it is (the replica's
    /// connection is named `bursar-replica-<node id>`).
    pub fn nats_node_of(&self, i: usize) -> Option<usize> {
        self.nats.node_of_client(&format!("bursar-replica-{}", i + 1))
    }

    pub fn kill_nats(&mut self, i: usize) {
        self.nats.kill(i);
        self.nats_down[i] = true;
        self.nats_paused[i] = false;
    }

    pub fn restart_nats(&mut self, i: usize) -> Result<(), String> {
        self.nats.restart(i).map_err(|e| format!("restarting NATS node n{}: {e}", i + 1))?;
        self.nats_down[i] = false;
        Ok(())
    }

    pub fn pause_nats(&mut self, i: usize) {
        self.nats.pause(i);
        self.nats_paused[i] = true;
    }

    pub fn resume_nats(&mut self, i: usize) {
        self.nats.resume(i);
        self.nats_paused[i] = false;
    }

    /// Replicas that exited although nobody stopped them are anomalies: each
    /// is reported with the end of its log and started again.
    pub fn restart_crashed(&mut self, shared: &Shared) {
        for i in 0..SIZE {
            let r = &mut self.replicas[i];
            let Some(child) = r.child.as_mut() else { continue };
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    shared.anomaly(format!("cannot check whether replica {} runs: {e}", r.name));
                    continue;
                }
            };
            r.child = None;
            shared.anomaly(format!(
                "replica {} exited on its own with {status}; the end of its log:\n{}",
                r.name,
                r.log_tail()
            ));
            self.note(i, "restarting after it exited on its own");
            if let Err(e) = self.spawn(i) {
                shared.anomaly(e);
            }
        }
    }

    /// Ends every fault: resumes what is paused, starts what is down.
    pub fn heal_all(&mut self) -> Result<(), String> {
        for i in 0..SIZE {
            if self.nats_paused[i] {
                self.resume_nats(i);
            }
            if self.nats_down[i] {
                self.restart_nats(i)?;
            }
        }
        for i in 0..SIZE {
            if self.replicas[i].paused {
                self.resume(i);
            }
            if self.replicas[i].child.is_none() {
                self.note(i, "starting to heal the cluster");
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// Writes a marker into replica `i`'s log, so the log tells which lines
    /// came after which fault.
    pub fn note(&self, i: usize, what: &str) {
        if let Ok(mut f) = append(&self.replicas[i].log) {
            let _ = writeln!(f, "=== chaos: {what}");
        }
    }
}

/// A fresh cluster key, as `openssl rand -hex 32` would give.
pub fn random_cluster_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..SIZE {
            self.kill(i);
        }
        // The NATS cluster kills its nodes in its own Drop, after this.
    }
}

impl Replica {
    /// Everything the replica wrote to its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the replica's log, for anomaly reports.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// `GET /readyz` answers 200.
fn http_ready(addr: &str) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    agent.get(format!("http://{addr}/readyz")).call().is_ok_and(|r| r.status() == 200)
}

fn append(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else { return };
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet (we
    // hold its `Child`), so the pid cannot name another process.
    unsafe { libc::kill(pid, signal) };
}

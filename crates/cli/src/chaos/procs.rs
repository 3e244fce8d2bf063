//! The cluster under test: three `nats-server` nodes (the relay crate's
//! harness) and three `bursar start --cluster` replicas, each a child
//! process in the working dir. Every child is killed when [`Procs`] is
//! dropped, on every exit path.

use super::Shared;
use bursar_client::{Client, ClientOptions};
use bursar_relay::nats_cluster::NatsCluster;
use bursar_relay::nats_server::free_port;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Replicas in the cluster (and NATS nodes: one each).
pub const SIZE: usize = 3;
/// The one admin key every replica bootstraps with (cluster mode needs the
/// same key on all, so that replicas starting together create one key).
const ADMIN_KEY: &str = "chaos-bank-admin-key-0123456789ab";
/// How long a replica may take to serve after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Replica {
    pub name: String,
    pub addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

pub struct Procs {
    exe: PathBuf,
    urls: String,
    pub replicas: Vec<Replica>,
    nats: NatsCluster,
    nats_down: Vec<bool>,
    nats_paused: Vec<bool>,
}

impl Procs {
    /// Starts the NATS cluster and the replicas under `dir`; returns once
    /// every replica answers a ping.
    pub fn start(dir: &Path) -> Result<Procs, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating the bursar binary: {e}"))?;
        let nats = NatsCluster::start(dir, SIZE)?;
        let urls = nats.urls();
        let mut replicas = Vec::with_capacity(SIZE);
        for i in 0..SIZE {
            let name = format!("r{}", i + 1);
            replicas.push(Replica {
                addr: format!("127.0.0.1:{}", free_port()?),
                data_dir: dir.join(&name),
                log: dir.join(format!("{name}.log")),
                name,
                child: None,
                paused: false,
            });
        }
        let mut procs =
            Procs { exe, urls, replicas, nats, nats_down: vec![false; SIZE], nats_paused: vec![false; SIZE] };
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

    /// Starts replica `i` on its port and data dir (it must be down).
    pub fn spawn(&mut self, i: usize) -> Result<(), String> {
        let r = &mut self.replicas[i];
        let log = append(&r.log)?;
        let err = log.try_clone().map_err(|e| format!("opening {}: {e}", r.log.display()))?;
        let child = Command::new(&self.exe)
            .arg("start")
            .args(["--cluster", &self.urls, "--node-id", &(i + 1).to_string(), "--data-dir"])
            .arg(&r.data_dir)
            .args(["--addr", &r.addr, "--no-http", "--no-orders", "--no-webhooks"])
            .env("BURSAR_ADMIN_KEY", ADMIN_KEY)
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
        let options = ClientOptions { timeout: Duration::from_secs(5) };
        loop {
            let r = &mut self.replicas[i];
            let Some(child) = r.child.as_mut() else { return Err(format!("replica {} is not running", r.name)) };
            if let Ok(Some(status)) = child.try_wait() {
                r.child = None;
                return Err(format!("replica {} exited with {status}; the end of its log:\n{}", r.name, r.log_tail()));
            }
            if Client::connect(r.addr.as_str(), &options).and_then(|mut c| c.ping()).is_ok() {
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

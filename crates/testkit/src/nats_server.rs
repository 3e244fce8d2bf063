//! A local `nats-server` with JetStream, as a child process: for the relay's
//! tests and `bursar bench relay-nats`. Never a silent no-op: when the binary
//! is missing, starting fails and says how to get it.

use crate::HarnessError;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a (re)started server to accept connections.
pub(crate) const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `nats-server -js`, SIGKILLed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    binary: PathBuf,
    store: PathBuf,
    port: u16,
    log: PathBuf,
}

/// The `nats-server` binary: `$NATS_SERVER`, else the first on `PATH`, else
/// `/usr/sbin/nats-server` (where Debian's package puts it).
pub fn find_binary() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(HarnessError::NotInstalled {
            program: "nats-server",
            searched: "on PATH, /usr/sbin or $NATS_SERVER",
            install: "install it, e.g. `apt-get install nats-server`",
        })
}

/// A TCP port free at the moment of asking.
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(HarnessError::FreePort)?;
    listener.local_addr().map(|a| a.port()).map_err(HarnessError::FreePort)
}

impl NatsServer {
    /// Starts `nats-server -js -sd <dir>/store -a 127.0.0.1 -p <port>` and
    /// waits until it accepts connections; its output goes to `<dir>/nats.log`.
    pub fn start(dir: &Path, port: u16) -> Result<NatsServer, HarnessError> {
        let mut server = NatsServer {
            child: None,
            binary: find_binary()?,
            store: dir.join("store"),
            port,
            log: dir.join("nats.log"),
        };
        server.restart()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: no shutdown, no flush beyond what the server already wrote.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store (after [`NatsServer::kill`]).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(HarnessError::io("opening", &self.log))?;
        let err = log.try_clone().map_err(HarnessError::io("opening", &self.log))?;
        let child = Command::new(&self.binary)
            .arg("-js")
            .arg("-sd")
            .arg(&self.store)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|source| HarnessError::Spawn { program: self.binary.display().to_string(), source })?;
        self.child = Some(child);
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let (name, log) = ("nats-server".to_string(), self.log_tail());
                return Err(HarnessError::Exited { name, status, log });
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let (name, port, log) = ("nats-server".to_string(), self.port, self.log_tail());
                return Err(HarnessError::NotListening { name, port, waited: LISTEN_TIMEOUT, log });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Why a harness (nats-server, a NATS cluster, PostgreSQL) did not start or
//! stop. Each names the program, path or port involved, and a process that
//! died or never listened comes with the end of its log.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The program is not where the kit looks; `install` says how to get it.
    #[error("{program} not found ({searched}): {install}")]
    NotInstalled { program: &'static str, searched: &'static str, install: &'static str },
    /// A directory named by an environment variable lacks the programs.
    #[error("{var}={} has no {missing}", dir.display())]
    BadBinDir { var: &'static str, dir: PathBuf, missing: &'static str },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating a temp dir: {0}")]
    TempDir(#[source] io::Error),
    #[error("finding a free port: {0}")]
    FreePort(#[source] io::Error),
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// A command that ran to its end and reported failure.
    #[error("{program} failed ({status}): {output}")]
    Failed { program: String, status: ExitStatus, output: String },
    #[error("{name} exited with {status}; its log:\n{log}")]
    Exited { name: String, status: ExitStatus, log: String },
    #[error("{name} not listening on port {port} after {waited:?}:\n{log}")]
    NotListening { name: String, port: u16, waited: Duration, log: String },
    /// The servers run, but JetStream never became able to place a
    /// replicated stream (no meta leader, or peers it has not heard from).
    #[error("JetStream on the {size}-node cluster not ready after {waited:?} ({state}); the nodes' logs:\n{logs}")]
    JetStreamNotReady { size: usize, waited: Duration, state: String, logs: String },
    #[error("cannot give {} to {user}", path.display())]
    Chown { path: PathBuf, user: &'static str },
    #[error(
        "running as root, but the temp dir cannot be given to the `postgres` user (initdb refuses root; create that user)"
    )]
    NoPostgresUser,
}

impl HarnessError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> HarnessError {
        let path = path.into();
        move |source| HarnessError::Io { action, path, source }
    }

    /// A server that could not bind its port, which another process took
    /// between picking it free and binding it: worth a retry on new ports.
    pub fn port_taken(&self) -> bool {
        match self {
            HarnessError::Exited { log, .. } | HarnessError::NotListening { log, .. } => {
                log.contains("address already in use")
            }
            _ => false,
        }
    }
}

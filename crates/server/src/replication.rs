//! What the engine needs from a replicated log (cluster mode).
//!
//! A replica cannot apply its own writes when it logs them: entries from
//! other replicas interleave. So the engine *proposes* each group of writes
//! and applies entries only as the replicated log commits them, in log
//! order, answering its own proposals' requests when they come by. The
//! local file log keeps a copy of every committed entry under the same
//! position (a cache for fast restarts and the snapshots' hash chain).

use crate::message::{EngineMsg, Proposal};
use tokio::sync::{mpsc, watch};

/// A replicated log: where proposals go and where committed entries come
/// from. Implemented on NATS JetStream by `bursar-cluster`.
pub trait Replicator: Send {
    /// Starts delivering committed entries after `after` to `engine`
    /// (as [`EngineMsg::Committed`], in order, with no gap) and publishing
    /// proposals. Returns the log's last position when it started: the
    /// replica catches up to it before it serves.
    fn start(
        &mut self,
        runtime: &tokio::runtime::Handle,
        after: u64,
        engine: mpsc::Sender<EngineMsg>,
    ) -> Result<ReplicaLink, ReplicatorError>;
}

/// A replicator could not start. The engine knows replicators only through
/// [`Replicator`], so the implementation's own typed error travels boxed as
/// the source (a caller that knows the implementation can downcast it), and
/// its message is this error's. An associated error type would have made
/// `Box<dyn Replicator>` name the implementation's error, and so the
/// cluster, in this crate.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct ReplicatorError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl ReplicatorError {
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> ReplicatorError {
        ReplicatorError { source: Box::new(source) }
    }

    /// The implementation's error.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }
}

/// The engine's side of a started replicator.
pub struct ReplicaLink {
    /// This replica's node id: the engine proposes as it, and recognises
    /// its own entries by it.
    pub node_id: u32,
    /// Where the engine sends proposals (bounded: a full queue holds the
    /// engine back, which holds clients back).
    pub proposals: mpsc::Sender<Proposal>,
    /// The log's last position at start.
    pub log_end: u64,
    /// True while this replica holds the lease: only then does it propose
    /// entries nobody asked for (timers: expiries and order deadlines).
    pub lease_held: watch::Receiver<bool>,
    /// Where views of the state go at every multiple of `every` positions,
    /// to be hashed and compared with the other replicas' (a bounded
    /// channel: the engine waits rather than skip a checkpoint).
    pub checkpoints: Option<Checkpoints>,
    /// Called (on the snapshot thread) after a local snapshot is written.
    pub snapshot_written: Option<SnapshotWritten>,
    /// Longest wait for a proposal to come back committed; its requests
    /// then learn the outcome is unknown. Longer than the replicator's own
    /// retries, so this fires only if a confirmed entry is never delivered.
    pub commit_wait_max: std::time::Duration,
}

pub struct Checkpoints {
    pub every: u64,
    pub views: std::sync::mpsc::SyncSender<bursar_core::machine::MachineSnapshot>,
}

pub type SnapshotWritten = Box<dyn Fn(u64) + Send>;

#[cfg(test)]
mod tests {
    use super::ReplicatorError;

    #[test]
    fn a_replicator_error_reads_as_its_cause_and_keeps_it() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no NATS server answered");
        let err = ReplicatorError::new(cause);
        assert_eq!(err.to_string(), "no NATS server answered");
        let kept = err.cause().downcast_ref::<std::io::Error>().expect("the cause is the io::Error");
        assert_eq!(kept.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(std::error::Error::source(&err).is_some());
    }
}

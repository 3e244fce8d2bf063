//! What the engine needs from a replicated log (cluster mode).
//!
//! A replica cannot apply its own writes when it logs them: entries from
//! other replicas interleave. So the engine *proposes* each group of writes
//! and applies entries only as the replicated log commits them, in log
//! order, answering its own proposals' requests when they come by. The
//! local file log keeps a copy of every committed entry under the same
//! position (a cache for fast restarts and the snapshots' hash chain).

use crate::engine::EngineMsg;
use bursar_core::entry::{EntryHeader, Origin};
use tokio::sync::{mpsc, watch};

/// A group of writes for the replicated log. Its origin (node, boot,
/// proposal number) is unique forever; the replicator fills in the key id
/// it seals the proposal with.
#[derive(Debug)]
pub struct Proposal {
    pub origin: Origin,
    /// The proposer's clock; the state machine keeps entry time monotonic.
    pub timestamp: u64,
    /// An entry body, exactly as the file log stores it.
    pub body: Vec<u8>,
}

/// An entry the replicated log committed, delivered in log order, as the
/// replicator judged it: authenticated (its origin, then its commands) or
/// rejected (no commands). The local log stores `header` then `body`.
#[derive(Debug)]
pub struct Committed {
    pub position: u64,
    pub timestamp: u64,
    pub header: EntryHeader,
    pub body: bytes::Bytes,
}

impl Committed {
    /// A committed entry as the replicator hands it over; asserts what the
    /// engine relies on when it copies the entry into the local log.
    pub fn new(position: u64, timestamp: u64, header: EntryHeader, body: bytes::Bytes) -> Committed {
        assert!(position >= 1, "invariant: replicated log positions start at 1");
        assert!(!matches!(header, EntryHeader::None), "invariant: a committed entry names an origin or a rejection");
        assert!(
            !matches!(header, EntryHeader::Rejected(_)) || body.is_empty(),
            "invariant: a rejected entry carries no commands"
        );
        Committed { position, timestamp, header, body }
    }
}

/// Why a proposal's requests get no result: its commit was not confirmed
/// in time, so it may still be applied (or already was).
#[derive(Debug)]
pub struct ProposalFailed {
    pub id: u64,
    pub reason: String,
}

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
    ) -> Result<ReplicaLink, String>;
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

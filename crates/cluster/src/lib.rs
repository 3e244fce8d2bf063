//! Cluster mode: every replica consumes one JetStream stream (the log) and
//! applies it; any replica accepts writes by proposing them to the stream.
//! Bursar writes no consensus code: JetStream supplies order, replication
//! and durability. See `docs/cluster.md`.

pub mod bootstrap;
mod bucket;
pub mod checkpoints;
pub mod cluster_key;
pub mod digest_guard;
pub mod lease;
pub mod log_stream;
pub mod replica;
pub mod seal;
pub mod snapshot_objects;

use bursar_nats::{NatsEndpoint, NatsSecurity};
use std::time::Duration;

pub use bootstrap::{BootstrapError, bootstrap_if_empty};
pub use bucket::BucketError;
pub use cluster_key::{ClusterKeys, KeyError};
pub use replica::{ClusterHandle, JetStreamReplicator};

/// How a replica reaches the cluster and names what it shares there.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The NATS servers (comma-separated URLs, credentials allowed) and
    /// the security options; its `Debug` never shows a secret.
    pub nats: NatsEndpoint,
    /// This replica's id, unique in the cluster (1, 2, 3, ...).
    pub node_id: u32,
    /// The cluster keys: log entries, shared snapshots and digest records
    /// are authenticated with them.
    pub keys: ClusterKeys,
    /// The log stream.
    pub stream: String,
    /// Copies JetStream keeps of the log, the lease and the snapshots.
    pub replicas: usize,
    /// How long a proposal is retried before its requests get "outcome
    /// unknown".
    pub proposal_deadline: Duration,
    /// The broker's duplicate window on the log; at least twice the
    /// proposal deadline so a retry is always recognised.
    pub duplicate_window: Duration,
    /// Bound on connecting to the cluster at start.
    pub connect_timeout: Duration,
    /// Replicas compare state digests at multiples of this position.
    pub checkpoint_every: u64,
}

impl ClusterConfig {
    pub fn new(urls: String, node_id: u32, keys: ClusterKeys) -> ClusterConfig {
        ClusterConfig {
            nats: NatsEndpoint::new(urls, NatsSecurity::default()),
            node_id,
            keys,
            stream: "BURSAR_LOG".into(),
            replicas: 3,
            proposal_deadline: Duration::from_secs(20),
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(30),
            checkpoint_every: 1000,
        }
    }

    /// Where snapshots are shared: the default bucket, with as many copies
    /// as the log.
    pub fn snapshot_objects(&self) -> snapshot_objects::SnapshotObjectsConfig {
        snapshot_objects::SnapshotObjectsConfig { replicas: self.replicas, ..Default::default() }
    }

    /// The one subject the log stream holds.
    pub fn log_subject(&self) -> String {
        format!("{}.entries", self.stream.to_ascii_lowercase())
    }
}

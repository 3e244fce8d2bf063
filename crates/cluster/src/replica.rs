//! A replica's connection to the cluster: the [`Replicator`] the engine
//! uses in cluster mode, and the handle the rest of the node uses (the
//! lease decides which replica runs side effects).

use crate::digest_guard::{self, DigestGuardConfig};
use crate::lease::{self, LeaseConfig};
use crate::log_stream::{self, PAYLOAD_MAX_MIN};
use crate::{ClusterConfig, checkpoints, snapshot_objects};
use async_nats::jetstream;
use bursar_server::message::EngineMsg;
use bursar_server::replication::{Checkpoints, ReplicaLink, Replicator, ReplicatorError, SnapshotWritten};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Proposals queued for the publisher before the engine waits.
const PROPOSALS_QUEUED: usize = 256;
/// Snapshot objects kept; the log is purged up to the oldest of them, so a
/// second one still covers the log if the newest proves unusable.
const SNAPSHOT_OBJECTS_KEPT: usize = 2;
/// How much longer than a publish's own retries a replica waits for its
/// proposal to come back committed: the proposal may first wait in the
/// publisher's queue, and delivery follows the commit.
const COMMIT_DELIVERY_SLACK: Duration = Duration::from_secs(30);
/// The oldest NATS server release cluster mode runs on (major, minor).
const SERVER_VERSION_MIN: (u64, u64) = (2, 10);
/// Bound on purging the log stream.
const PURGE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct JetStreamReplicator {
    config: ClusterConfig,
    lease_held: watch::Sender<bool>,
    lease_stop: watch::Receiver<bool>,
    connected: watch::Sender<Option<async_nats::Client>>,
    /// The data dir whose snapshots the lease holder shares (none: not shared).
    snapshots_dir: Option<PathBuf>,
}

/// What the node's other parts need from the cluster once it runs.
#[derive(Clone)]
pub struct ClusterHandle {
    /// True while this replica holds the lease.
    pub lease_held: watch::Receiver<bool>,
    /// The cluster connection, once the replica joined.
    pub client: watch::Receiver<Option<async_nats::Client>>,
    /// Keeps the lease task running; dropping the last handle releases it.
    _lease_stop: Arc<watch::Sender<bool>>,
}

impl JetStreamReplicator {
    pub fn new(config: ClusterConfig) -> (JetStreamReplicator, ClusterHandle) {
        let (connected, client) = watch::channel(None);
        let (lease_held, held) = watch::channel(false);
        let (stop, lease_stop) = watch::channel(false);
        let handle = ClusterHandle { lease_held: held, client, _lease_stop: Arc::new(stop) };
        (JetStreamReplicator { config, lease_held, lease_stop, connected, snapshots_dir: None }, handle)
    }

    /// Shares the snapshots written in `data_dir`: while this replica holds
    /// the lease, each is uploaded to the object store, old objects are
    /// pruned and the log stream is purged up to the oldest one kept.
    pub fn share_snapshots_from(mut self, data_dir: PathBuf) -> JetStreamReplicator {
        self.snapshots_dir = Some(data_dir);
        self
    }

    async fn join(
        &mut self,
        runtime: &tokio::runtime::Handle,
        after: u64,
        engine: mpsc::Sender<EngineMsg>,
    ) -> Result<ReplicaLink, JoinError> {
        let client = connect(&self.config).await?;
        let js = jetstream::new(client.clone());
        let state = log_stream::ensure_stream(&js, &self.config).await?.state;
        check_position(after, state.first_sequence, state.last_sequence, state.messages)?;
        let node = self.config.node_id.to_string();
        let (proposals, queued) = mpsc::channel(PROPOSALS_QUEUED);
        let config = self.config.clone();
        runtime.spawn(log_stream::publish_proposals(js.clone(), config.clone(), queued, engine.clone()));
        runtime.spawn(log_stream::follow(js.clone(), config.clone(), after, engine));
        self.follow_lease(js.clone(), node.clone());
        let snapshot_written = self.snapshot_sharer(runtime, js.clone());
        let checkpoints = guard_divergence(js, node, &config)?;
        self.connected.send_replace(Some(client));
        tracing::info!(
            node = self.config.node_id,
            position = after,
            log_end = state.last_sequence,
            "joined the cluster"
        );
        Ok(ReplicaLink {
            node_id: self.config.node_id,
            proposals,
            log_end: state.last_sequence,
            lease_held: self.lease_held.subscribe(),
            checkpoints: Some(checkpoints),
            snapshot_written,
            commit_wait_max: self.config.proposal_deadline + COMMIT_DELIVERY_SLACK,
        })
    }

    /// The hook the snapshot thread calls after each local snapshot. It
    /// blocks that thread during the upload, which also keeps the local
    /// store from pruning the snapshot being read. Failures are logged: the
    /// next snapshot tries again, and the log is only purged after a
    /// successful upload.
    fn snapshot_sharer(&self, runtime: &tokio::runtime::Handle, js: jetstream::Context) -> Option<SnapshotWritten> {
        let dir = self.snapshots_dir.clone()?;
        let lease = self.lease_held.subscribe();
        let runtime = runtime.clone();
        let config = self.config.clone();
        Some(Box::new(move |position| {
            if !*lease.borrow() {
                return;
            }
            if let Err(e) = runtime.block_on(share_snapshot(&js, &config, &dir, position)) {
                tracing::warn!(position, "sharing the snapshot with the cluster failed: {e}");
            }
        }))
    }

    /// Runs the lease and mirrors whether this replica holds it.
    fn follow_lease(&self, js: jetstream::Context, node: String) {
        let config = LeaseConfig { replicas: self.config.replicas, ..Default::default() };
        let mut state = lease::run(js, node, config, self.lease_stop.clone());
        let held = self.lease_held.clone();
        tokio::spawn(async move {
            loop {
                let now = *state.borrow_and_update();
                if held.send_replace(now.held) != now.held {
                    metrics::gauge!("bursar_cluster_lease_epoch").set(now.epoch as f64);
                    tracing::info!(held = now.held, epoch = now.epoch, "lease changed");
                }
                if state.changed().await.is_err() {
                    held.send_replace(false);
                    return;
                }
            }
        });
    }
}

/// Joining the cluster failed: the step that failed says why.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Stream(#[from] log_stream::StreamError),
    #[error(transparent)]
    Position(#[from] PositionError),
    #[error(transparent)]
    Guard(#[from] GuardError),
}

/// Sharing a snapshot with the cluster failed (logged; the next snapshot
/// tries again).
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Upload(snapshot_objects::SnapshotObjectsError),
    #[error(transparent)]
    Prune(snapshot_objects::SnapshotObjectsError),
    #[error(transparent)]
    Purge(#[from] PurgeError),
}

/// Uploads the local snapshot at `position`, prunes old objects, and purges
/// the log up to the oldest snapshot kept: a new replica starts from a
/// snapshot, so the entries it covers are no longer needed.
async fn share_snapshot(
    js: &jetstream::Context,
    config: &ClusterConfig,
    dir: &Path,
    position: u64,
) -> Result<(), ShareError> {
    let objects = config.snapshot_objects();
    snapshot_objects::upload(js, &objects, &config.keys, dir, position).await.map_err(ShareError::Upload)?;
    metrics::counter!("bursar_cluster_snapshot_uploads_total").increment(1);
    metrics::gauge!("bursar_cluster_snapshot_uploaded_position").set(position as f64);
    match snapshot_objects::prune(js, &objects, SNAPSHOT_OBJECTS_KEPT).await.map_err(ShareError::Prune)? {
        Some(oldest) => Ok(purge_log_through(js, config, oldest).await?),
        None => Ok(()),
    }
}

/// Purging the log up to a shared snapshot failed (logged; the next snapshot retries).
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("purging the log through {position}: {source}")]
    Open { position: u64, source: jetstream::context::GetStreamError },
    #[error("purging the log through {position}: {source}")]
    Purge { position: u64, source: jetstream::stream::PurgeError },
    #[error("purging the log through {position}: not done within {PURGE_TIMEOUT:?}")]
    TimedOut { position: u64 },
}

/// Removes the log entries at positions up to and including `position`.
async fn purge_log_through(js: &jetstream::Context, config: &ClusterConfig, position: u64) -> Result<(), PurgeError> {
    let purge = async {
        let stream = js.get_stream(&config.stream).await.map_err(|source| PurgeError::Open { position, source })?;
        // JetStream purges the messages below the given sequence.
        stream.purge().sequence(position + 1).await.map_err(|source| PurgeError::Purge { position, source })
    };
    let purged = tokio::time::timeout(PURGE_TIMEOUT, purge).await.map_err(|_| PurgeError::TimedOut { position })??;
    tracing::info!(through = position, purged = purged.purged, "log purged up to the oldest kept snapshot");
    Ok(())
}

/// Starting the divergence guard or the digest thread failed.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    NodeId(#[from] digest_guard::BadNodeId),
    #[error("starting the digest thread: {0}")]
    DigestThread(#[source] std::io::Error),
}

/// Starts the divergence guard and the digest thread feeding it; returns
/// where the engine sends its checkpoint views. A divergence stops the
/// process: this replica's state differs from the others' at a position.
fn guard_divergence(js: jetstream::Context, node: String, config: &ClusterConfig) -> Result<Checkpoints, GuardError> {
    let (digests_tx, digests) = mpsc::channel(checkpoints::QUEUED_MAX);
    let guard_config = DigestGuardConfig { replicas: config.replicas, ..Default::default() };
    let divergence = digest_guard::run(js, node, guard_config, config.keys.clone(), digests)?;
    tokio::spawn(async move {
        if let Ok(d) = divergence.await {
            tracing::error!("{d}; stopping this replica");
            eprintln!("bursar: fatal: {d}; stopping this replica");
            std::process::exit(76);
        }
    });
    let (views, views_rx) = std::sync::mpsc::sync_channel(checkpoints::QUEUED_MAX);
    checkpoints::spawn(views_rx, digests_tx).map_err(GuardError::DigestThread)?;
    Ok(Checkpoints { every: config.checkpoint_every, views })
}

impl Replicator for JetStreamReplicator {
    fn start(
        &mut self,
        runtime: &tokio::runtime::Handle,
        after: u64,
        engine: mpsc::Sender<EngineMsg>,
    ) -> Result<ReplicaLink, ReplicatorError> {
        let rt = runtime.clone();
        let _entered = runtime.enter();
        runtime.block_on(self.join(&rt, after, engine)).map_err(ReplicatorError::new)
    }
}

/// Connecting to the cluster's NATS servers failed, or they cannot serve it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection itself (credentials, TLS, reachability).
    #[error(transparent)]
    Nats(#[from] bursar_nats::NatsError),
    #[error(
        "the NATS servers allow messages of {found} bytes; cluster mode needs max_payload of at least \
         {PAYLOAD_MAX_MIN} (set `max_payload: 8MB` in every server's configuration)"
    )]
    SmallPayload { found: usize },
    #[error(
        "the NATS server is version {version}; cluster mode needs {}.{} or newer (2.9 servers were seen to \
         order a clustered stream differently on different nodes)",
        SERVER_VERSION_MIN.0,
        SERVER_VERSION_MIN.1
    )]
    OldServer { version: String },
}

/// This replica's state cannot continue the cluster's log.
#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    #[error(
        "this replica's state is at position {after} but the cluster's log ends at {last}: \
         the data directory belongs to another cluster, or the log was lost"
    )]
    AheadOfLog { after: u64, last: u64 },
    #[error(
        "the cluster's log starts at position {first} but this replica's state is at {after}: \
         the entries between were purged; start with an empty data directory to bootstrap from a snapshot"
    )]
    Purged { after: u64, first: u64 },
}

/// Connects to any of the cluster's servers and checks they accept entries
/// as large as the engine proposes. Credentials, TLS and client
/// certificates come from `config.nats`; a refusal says which was wrong.
pub async fn connect(config: &ClusterConfig) -> Result<async_nats::Client, ConnectError> {
    let node_id = config.node_id;
    let client = config
        .nats
        .connect(config.connect_timeout, |options| {
            options
                .name(format!("bursar-replica-{node_id}"))
                .connection_timeout(std::time::Duration::from_secs(5))
                // A paused or partitioned server must be noticed in seconds, not
                // the default minutes, so the replica moves to another one.
                .ping_interval(std::time::Duration::from_secs(1))
        })
        .await
        .map_err(ConnectError::Nats)?;
    let max_payload = client.server_info().max_payload;
    if max_payload < PAYLOAD_MAX_MIN {
        return Err(ConnectError::SmallPayload { found: max_payload });
    }
    check_server_version(&client.server_info().version)?;
    Ok(client)
}

/// Refuses NATS servers older than 2.10: under SIGSTOP faults a 2.9.10
/// cluster stored two concurrently published messages in different orders
/// on different stream replicas, so consumers on different nodes saw
/// different logs (caught by the divergence guard in a chaos soak).
fn check_server_version(version: &str) -> Result<(), ConnectError> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < SERVER_VERSION_MIN {
        return Err(ConnectError::OldServer { version: version.to_string() });
    }
    Ok(())
}

/// Refuses to join a log this replica's state cannot continue from.
fn check_position(after: u64, first: u64, last: u64, messages: u64) -> Result<(), PositionError> {
    if last < after {
        return Err(PositionError::AheadOfLog { after, last });
    }
    if messages > 0 && first > after + 1 {
        return Err(PositionError::Purged { after, first });
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn servers_older_than_2_10_are_refused() {
        assert!(super::check_server_version("2.9.10").is_err());
        assert!(super::check_server_version("v2.9.25").is_err());
        assert!(super::check_server_version("1.4.1").is_err());
        assert!(super::check_server_version("garbage").is_err());
        assert!(super::check_server_version("2.10.27").is_ok());
        assert!(super::check_server_version("2.11.0-beta.1").is_ok());
        assert!(super::check_server_version("3.0.0").is_ok());
    }

    use super::check_position;

    #[test]
    fn a_replica_joins_only_a_log_it_can_continue() {
        assert!(check_position(0, 0, 0, 0).is_ok());
        assert!(check_position(0, 1, 10, 10).is_ok());
        assert!(check_position(5, 1, 10, 10).is_ok());
        assert!(check_position(10, 1, 10, 10).is_ok());
        assert!(check_position(11, 1, 10, 10).unwrap_err().to_string().contains("another cluster"));
        assert!(check_position(4, 6, 10, 5).unwrap_err().to_string().contains("purged"));
        assert!(check_position(5, 6, 10, 5).is_ok());
    }
}

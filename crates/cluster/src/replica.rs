//! A replica's connection to the cluster: the [`Replicator`] the engine
//! uses in cluster mode, and the handle the rest of the node uses (the
//! lease decides which replica runs side effects).

use crate::ClusterConfig;
use crate::log_stream::{self, MAX_PAYLOAD_MIN};
use async_nats::jetstream;
use bursar_server::engine::EngineMsg;
use bursar_server::replication::{ReplicaLink, Replicator};
use tokio::sync::{mpsc, watch};

/// Proposals queued for the publisher before the engine waits.
const PROPOSALS_QUEUED: usize = 256;

pub struct JetStreamReplicator {
    config: ClusterConfig,
    lease_held: watch::Receiver<bool>,
    connected: watch::Sender<Option<async_nats::Client>>,
}

/// What the node's other parts need from the cluster once it runs.
#[derive(Clone)]
pub struct ClusterHandle {
    /// True while this replica holds the lease.
    pub lease_held: watch::Receiver<bool>,
    /// The cluster connection, once the replica joined.
    pub client: watch::Receiver<Option<async_nats::Client>>,
}

impl JetStreamReplicator {
    /// `lease_held` says when this replica may propose timer entries.
    pub fn new(config: ClusterConfig, lease_held: watch::Receiver<bool>) -> (JetStreamReplicator, ClusterHandle) {
        let (connected, client) = watch::channel(None);
        let handle = ClusterHandle { lease_held: lease_held.clone(), client };
        (JetStreamReplicator { config, lease_held, connected }, handle)
    }

    async fn join(
        &mut self,
        runtime: &tokio::runtime::Handle,
        after: u64,
        engine: mpsc::Sender<EngineMsg>,
    ) -> Result<ReplicaLink, String> {
        let client = connect(&self.config).await?;
        let js = jetstream::new(client.clone());
        let state = log_stream::ensure_stream(&js, &self.config).await?.state;
        check_position(after, state.first_sequence, state.last_sequence, state.messages)?;
        let id_prefix = format!("n{}-{}-", self.config.node_id, boot_nonce());
        let (proposals, queued) = mpsc::channel(PROPOSALS_QUEUED);
        let config = self.config.clone();
        runtime.spawn(log_stream::publish_proposals(
            js.clone(),
            config.clone(),
            id_prefix.clone(),
            queued,
            engine.clone(),
        ));
        runtime.spawn(log_stream::follow(js, config, id_prefix, after, engine));
        self.connected.send_replace(Some(client));
        tracing::info!(
            node = self.config.node_id,
            position = after,
            log_end = state.last_sequence,
            "joined the cluster"
        );
        Ok(ReplicaLink { proposals, log_end: state.last_sequence, lease_held: self.lease_held.clone() })
    }
}

impl Replicator for JetStreamReplicator {
    fn start(
        &mut self,
        runtime: &tokio::runtime::Handle,
        after: u64,
        engine: mpsc::Sender<EngineMsg>,
    ) -> Result<ReplicaLink, String> {
        let rt = runtime.clone();
        runtime.block_on(self.join(&rt, after, engine))
    }
}

/// Connects to any of the cluster's servers and checks they accept entries
/// as large as the engine proposes.
pub async fn connect(config: &ClusterConfig) -> Result<async_nats::Client, String> {
    let servers = bursar_relay::nats::parse_servers(&config.urls)?;
    let options = async_nats::ConnectOptions::new()
        .name(format!("bursar-replica-{}", config.node_id))
        .connection_timeout(std::time::Duration::from_secs(5))
        // A paused or partitioned server must be noticed in seconds, not
        // the default minutes, so the replica moves to another one.
        .ping_interval(std::time::Duration::from_secs(1));
    let client = tokio::time::timeout(config.connect_timeout, options.connect(servers))
        .await
        .map_err(|_| format!("no NATS server of {} answered within {:?}", config.urls, config.connect_timeout))?
        .map_err(|e| format!("connecting to {}: {e}", config.urls))?;
    let max_payload = client.server_info().max_payload;
    if max_payload < MAX_PAYLOAD_MIN {
        return Err(format!(
            "the NATS servers allow messages of {max_payload} bytes; cluster mode needs max_payload of at least \
             {MAX_PAYLOAD_MIN} (set `max_payload: 8MB` in every server's configuration)"
        ));
    }
    Ok(client)
}

/// Refuses to join a log this replica's state cannot continue from.
fn check_position(after: u64, first: u64, last: u64, messages: u64) -> Result<(), String> {
    if last < after {
        return Err(format!(
            "this replica's state is at position {after} but the cluster's log ends at {last}: \
             the data directory belongs to another cluster, or the log was lost"
        ));
    }
    if messages > 0 && first > after + 1 {
        return Err(format!(
            "the cluster's log starts at position {first} but this replica's state is at {after}: \
             the entries between were purged; start with an empty data directory to bootstrap from a snapshot"
        ));
    }
    Ok(())
}

/// A random tag for this run, so message ids never repeat across restarts.
fn boot_nonce() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::check_position;

    #[test]
    fn a_replica_joins_only_a_log_it_can_continue() {
        assert!(check_position(0, 0, 0, 0).is_ok());
        assert!(check_position(0, 1, 10, 10).is_ok());
        assert!(check_position(5, 1, 10, 10).is_ok());
        assert!(check_position(10, 1, 10, 10).is_ok());
        assert!(check_position(11, 1, 10, 10).unwrap_err().contains("another cluster"));
        assert!(check_position(4, 6, 10, 5).unwrap_err().contains("purged"));
        assert!(check_position(5, 6, 10, 5).is_ok());
    }
}

//! A running node, composed: recovery and the engine (`bursar-server`, with
//! a JetStream replicator in cluster mode), the HTTP API, and the side
//! effects (order workflows, webhook delivery, relays), which run for the
//! node's whole life on a single node and only on the lease holder in a
//! cluster (`side_effects`). Everything here is already-checked settings;
//! parsing flags and printing for people is the binary's job.

pub mod side_effects;

use bursar_outbound::nats::NatsRelayConfig;
use bursar_outbound::webhooks::delivery::DeliverySettings;
use bursar_server::node::NodeHandle;
use bursar_server::{Node, NodeConfig, StartReport};
use bursar_workflow::runtime::WorkflowSettings;
use side_effects::{SideEffectError, SideEffects};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// Everything a node runs, resolved from its configuration.
pub struct NodeSettings {
    pub data_dir: PathBuf,
    pub engine: NodeConfig,
    pub http: Option<HttpSettings>,
    pub workflows: Option<WorkflowSettings>,
    pub webhooks: Option<(Arc<bursar_http::WebhooksApi>, DeliverySettings)>,
    pub relay_nats: Option<NatsRelayConfig>,
    /// Cluster mode: replicate the log through NATS JetStream.
    pub cluster: Option<bursar_cluster::ClusterConfig>,
}

pub struct HttpSettings {
    pub listen: SocketAddr,
    pub config: bursar_http::HttpConfig,
    pub tls: Option<bursar_http::TlsFiles>,
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bootstrapping {dir} from the cluster: {source}")]
    Bootstrap {
        dir: String,
        #[source]
        source: Box<bursar_cluster::BootstrapError>,
    },
    #[error("starting with data directory {dir}: {source}")]
    Engine { dir: String, source: Box<bursar_server::NodeError> },
    #[error("starting the HTTP API: {0}")]
    Http(#[from] bursar_http::StartError),
    #[error("starting the side effects: {0}")]
    SideEffects(#[from] SideEffectError),
}

/// A started node; `run_until_signal` serves until SIGTERM/SIGINT.
pub struct RunningNode {
    node: Node,
    /// Resolves only if a supervision tree of the side effects gave up.
    escalated: Pin<Box<dyn Future<Output = String>>>,
    /// The HTTP API's address, when it is served.
    pub http_addr: Option<SocketAddr>,
    /// The snapshot position this replica bootstrapped from and how long
    /// that took, if it did.
    pub bootstrapped_from: Option<(u64, std::time::Duration)>,
    /// Cluster mode: the replica's handle. Held for the node's whole life:
    /// dropping it stops the lease task (and so every side effect).
    cluster: Option<bursar_cluster::ClusterHandle>,
}

impl RunningNode {
    pub fn report(&self) -> &StartReport {
        self.node.report()
    }

    /// The binary protocol's address (`None`: not served).
    pub fn binary_addr(&self) -> Option<SocketAddr> {
        self.node.binary_addr()
    }

    pub fn handle(&self) -> NodeHandle {
        self.node.handle()
    }

    /// Whether this node is a cluster replica.
    pub fn is_replica(&self) -> bool {
        self.cluster.is_some()
    }

    /// Serves until a signal, or until a side effect's supervisor gives up.
    pub fn run_until_signal(self) {
        let RunningNode { node, escalated, cluster, .. } = self;
        node.run_until_signal_or(escalated);
        drop(cluster);
    }
}

/// Starts a node: bootstrap from the cluster's snapshot when the data
/// directory is empty (cluster mode), recover, serve the HTTP API, and
/// start the side effects (after the HTTP API, which installs the metrics
/// recorder they report to).
pub fn start(settings: NodeSettings) -> Result<RunningNode, StartError> {
    let dir = settings.data_dir.display().to_string();
    let mut bootstrapped_from = None;
    let (replicator, cluster) = match settings.cluster {
        Some(config) => {
            let started = std::time::Instant::now();
            bootstrapped_from = bursar_cluster::bootstrap_if_empty(&config, &settings.data_dir)
                .map_err(|source| StartError::Bootstrap { dir: dir.clone(), source: Box::new(source) })?
                .map(|position| (position, started.elapsed()));
            let (replicator, handle) = bursar_cluster::JetStreamReplicator::new(config);
            let replicator = replicator.share_snapshots_from(settings.data_dir.clone());
            (Some(Box::new(replicator) as Box<dyn bursar_server::replication::Replicator>), Some(handle))
        }
        None => (None, None),
    };
    let node = Node::start_with(settings.engine, replicator)
        .map_err(|source| StartError::Engine { dir, source: Box::new(source) })?;
    let http_addr = match settings.http {
        None => None,
        Some(http) => {
            let server = bursar_http::start(&node.handle(), http.listen, http.config, http.tls.as_ref())
                .map_err(StartError::Http)?;
            Some(server.local_addr())
        }
    };
    let side_effects =
        SideEffects { workflows: settings.workflows, webhooks: settings.webhooks, relay_nats: settings.relay_nats };
    // The engine's signal loop takes the reason as text (it only prints it).
    let escalated: Pin<Box<dyn Future<Output = String>>> = match &cluster {
        None => {
            let escalated = side_effects.run_always(&node.handle())?;
            Box::pin(async move { escalated.await.to_string() })
        }
        Some(c) => {
            let escalated = side_effects.run_under_lease(node.handle(), c.lease_held.clone())?;
            Box::pin(async move { escalated.await.to_string() })
        }
    };
    Ok(RunningNode { node, escalated, http_addr, bootstrapped_from, cluster })
}

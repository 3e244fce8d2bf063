//! The cluster options of `bursar start`.

use bursar_cluster::{ClusterConfig, ClusterKeys};
use bursar_nats::NatsEndpoint;
use std::path::PathBuf;

pub use bursar_cluster::cluster_key::CLUSTER_KEY_ENV;

#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Run as a replica of a cluster whose log is on these NATS servers
    /// (comma-separated URLs of a JetStream cluster; `nats://user:password@host:4222`,
    /// `nats://token@host:4222` and `tls://host:4222` are understood).
    #[arg(long, value_name = "URL[,URL...]", requires = "node_id")]
    pub cluster: Option<String>,
    /// This replica's id, unique in the cluster.
    #[arg(long, requires = "cluster", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub node_id: Option<u32>,
    /// The JetStream stream holding the log.
    #[arg(long, default_value = "BURSAR_LOG", requires = "cluster")]
    pub cluster_stream: String,
    /// Copies JetStream keeps of the log, lease and snapshots (the NATS cluster's size, at most 5).
    #[arg(long, default_value_t = 3, requires = "cluster", value_parser = clap::value_parser!(u64).range(1..=5))]
    pub cluster_replicas: u64,
    /// Replicas compare state digests every this many log positions.
    #[arg(long, default_value_t = 1000, requires = "cluster", value_parser = clap::value_parser!(u64).range(1..))]
    pub cluster_checkpoint_every: u64,
    /// File with the cluster keys that authenticate log entries (`HEX`, or
    /// `ID:HEX` per line, the first signs; mode 0600). Instead of the
    /// environment variable BURSAR_CLUSTER_KEY (same format, comma-separated).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub security: crate::nats_args::ClusterNatsArgs,
}

impl ClusterArgs {
    /// The cluster configuration, its URLs, security files and keys
    /// checked (`None`: not in cluster mode).
    pub fn config(&self) -> anyhow::Result<Option<ClusterConfig>> {
        let (Some(urls), Some(node_id)) = (self.cluster.clone(), self.node_id) else { return Ok(None) };
        let keys = self.keys()?;
        tracing::info!(active = keys.active(), held = ?keys.ids(), "cluster keys loaded");
        let mut config = ClusterConfig::new(String::new(), node_id, keys);
        config.nats = NatsEndpoint::new(urls, self.security.security());
        crate::nats_args::check(&config.nats, "--cluster")?;
        config.stream = self.cluster_stream.clone();
        config.replicas = self.cluster_replicas as usize;
        config.checkpoint_every = self.cluster_checkpoint_every;
        Ok(Some(config))
    }

    fn keys(&self) -> anyhow::Result<ClusterKeys> {
        let from_env = std::env::var(CLUSTER_KEY_ENV).ok().filter(|v| !v.trim().is_empty());
        match (&self.cluster_key_file, from_env) {
            (Some(_), Some(_)) => {
                anyhow::bail!("give the cluster keys either in --cluster-key-file or in {CLUSTER_KEY_ENV}, not both")
            }
            (Some(path), None) => ClusterKeys::from_file(path).map_err(anyhow::Error::msg),
            (None, Some(text)) => ClusterKeys::parse(&text).map_err(|e| anyhow::anyhow!("{CLUSTER_KEY_ENV}: {e}")),
            (None, None) => anyhow::bail!(
                "cluster mode needs the cluster key, which authenticates every log entry: set {CLUSTER_KEY_ENV} \
                 to 64 hex digits (e.g. from `openssl rand -hex 32`), the same on every replica, or use \
                 --cluster-key-file"
            ),
        }
    }
}

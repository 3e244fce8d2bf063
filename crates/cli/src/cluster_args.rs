//! The cluster options of `bursar start`.

use bursar_cluster::ClusterConfig;
use bursar_nats::NatsEndpoint;

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
    #[command(flatten)]
    pub security: crate::nats_args::ClusterNatsArgs,
}

impl ClusterArgs {
    /// The cluster configuration, its URLs and security files checked
    /// (`None`: not in cluster mode).
    pub fn config(&self) -> anyhow::Result<Option<ClusterConfig>> {
        let (Some(urls), Some(node_id)) = (self.cluster.clone(), self.node_id) else { return Ok(None) };
        let mut config = ClusterConfig::new(String::new(), node_id);
        config.nats = NatsEndpoint::new(urls, self.security.security());
        crate::nats_args::check(&config.nats, "--cluster")?;
        config.stream = self.cluster_stream.clone();
        config.replicas = self.cluster_replicas as usize;
        config.checkpoint_every = self.cluster_checkpoint_every;
        Ok(Some(config))
    }
}

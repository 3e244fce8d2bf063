//! The cluster options of `bursar start`.

use bursar_cluster::ClusterConfig;

#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Run as a replica of a cluster whose log is on these NATS servers
    /// (comma-separated URLs of a JetStream cluster).
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
}

impl ClusterArgs {
    pub fn config(&self) -> Option<ClusterConfig> {
        let urls = self.cluster.clone()?;
        let node_id = self.node_id?;
        let mut config = ClusterConfig::new(urls, node_id);
        config.stream = self.cluster_stream.clone();
        config.replicas = self.cluster_replicas as usize;
        config.checkpoint_every = self.cluster_checkpoint_every;
        Some(config)
    }
}

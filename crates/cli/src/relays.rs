//! Change-stream relay options of `bursar start`.

use bursar_outbound::nats::NatsRelayConfig;

#[derive(clap::Args, Clone, Debug)]
pub struct RelayArgs {
    /// Relay every event to NATS JetStream at this URL (e.g. nats://127.0.0.1:4222; credentials as
    /// nats://user:password@host or nats://token@host, TLS as tls://host); off when absent.
    #[arg(long, env = "BURSAR_RELAY_NATS", hide_env_values = true)]
    pub relay_nats: Option<String>,
    /// The JetStream stream (created with file storage if missing).
    #[arg(long, default_value = "BURSAR_EVENTS", requires = "relay_nats")]
    pub relay_nats_stream: String,
    /// Subjects are `<prefix>.<type>`; the stream takes `<prefix>.>`.
    #[arg(long, default_value = "bursar.events", requires = "relay_nats")]
    pub relay_nats_prefix: String,
    #[command(flatten)]
    pub security: crate::nats_args::RelayNatsArgs,
}

impl RelayArgs {
    pub fn nats_config(&self) -> Option<NatsRelayConfig> {
        let mut config = NatsRelayConfig::new(self.relay_nats.clone()?);
        config.nats.security = self.security.security();
        config.stream = self.relay_nats_stream.clone();
        config.subject_prefix = self.relay_nats_prefix.trim_end_matches('.').to_string();
        Some(config)
    }

    /// Checks the relay's URLs and security files (before the node starts).
    pub fn check(&self) -> anyhow::Result<()> {
        match self.nats_config() {
            Some(config) => crate::nats_args::check(&config.nats, "--relay-nats"),
            None => Ok(()),
        }
    }
}

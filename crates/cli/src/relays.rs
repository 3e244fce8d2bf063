//! Change-stream relay options of `bursar start`.

use bursar_relay::nats::NatsRelayConfig;
use bursar_server::node::NodeHandle;

#[derive(clap::Args, Clone, Debug)]
pub struct RelayArgs {
    /// Relay every event to NATS JetStream at this URL (e.g. nats://127.0.0.1:4222); off when absent.
    #[arg(long, env = "BURSAR_RELAY_NATS")]
    pub relay_nats: Option<String>,
    /// The JetStream stream (created with file storage if missing).
    #[arg(long, default_value = "BURSAR_EVENTS", requires = "relay_nats")]
    pub relay_nats_stream: String,
    /// Subjects are `<prefix>.<type>`; the stream takes `<prefix>.>`.
    #[arg(long, default_value = "bursar.events", requires = "relay_nats")]
    pub relay_nats_prefix: String,
}

impl RelayArgs {
    pub fn nats_config(&self) -> Option<NatsRelayConfig> {
        let mut config = NatsRelayConfig::new(self.relay_nats.clone()?);
        config.stream = self.relay_nats_stream.clone();
        config.subject_prefix = self.relay_nats_prefix.trim_end_matches('.').to_string();
        Some(config)
    }

    /// Starts the configured relays (none: `None`).
    pub fn start(&self, node: &NodeHandle) -> Option<bursar_relay::Relays> {
        let nats = self.nats_config()?;
        println!("bursar: relaying events to NATS JetStream at {} (stream {})", nats.url, nats.stream);
        Some(bursar_relay::start(node, Some(nats)))
    }
}

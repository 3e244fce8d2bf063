//! The relays of the change stream (`docs/events.md`) to outside brokers. Each
//! runs inside the node, reads events in-process (`EventReader`, which only
//! reads: a relay that falls behind never slows the engine) and keeps its
//! place in the broker itself.

use crate::nats;
use bursar_runtime::supervisor::{Child, Escalation, Intensity, Restart, Strategy, Supervisor, SupervisorStats};
use bursar_server::node::NodeHandle;
use std::sync::Arc;
use std::time::Duration;

/// The running relays.
pub struct Relays {
    /// The NATS relay's progress, when configured.
    pub nats: Option<Arc<nats::RelayStatus>>,
    pub stats: Arc<SupervisorStats>,
    /// Ends when the supervision tree stops: `Err` if it gave up.
    pub done: tokio::task::JoinHandle<Result<(), Escalation>>,
}

/// Starts the configured relays under their own one-for-one supervisor on
/// the node's runtime. Broker outages are retried inside each relay with
/// backoff and never count as failures; a relay that panics or loses its
/// engine is restarted, and only a relay failing over and over (more than 5
/// times a minute) makes the supervisor give up.
pub fn start(node: &NodeHandle, nats_config: Option<nats::NatsRelayConfig>) -> Relays {
    let _guard = node.runtime.enter();
    let reader = crate::event_reader::EventReader::new(node);
    let intensity = Intensity { max_restarts: 5, within: Duration::from_secs(60) };
    let mut root = Supervisor::new("relays", Strategy::OneForOne, intensity);
    let mut nats_status = None;
    if let Some(config) = nats_config {
        let relay = nats::NatsRelay::new(config, reader);
        nats_status = Some(relay.status.clone());
        root = root.child(Child::worker("relay-nats", Restart::Permanent, move || relay.clone().run()));
    }
    let stats = root.stats();
    let done = node.runtime.spawn(bursar_runtime::supervisor::run_root(root, node.stop.clone()));
    Relays { nats: nats_status, stats, done }
}

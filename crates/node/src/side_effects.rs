//! The node's side effects: order executors (connector calls and timers),
//! webhook deliveries and relays. A single node runs them for its whole
//! life; in a cluster only the lease holder runs them, started when it
//! acquires the lease and stopped when it loses it. A successor resumes
//! from the log, and connector calls carry idempotency keys, so a call the
//! old holder had in flight is not repeated by the connector.

use bursar_outbound::webhooks::delivery::DeliveryError;
use bursar_runtime::supervisor::Escalation;
use bursar_server::node::NodeHandle;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Longest wait for side effects to stop after the lease is lost.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the side effects did not start, or stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum SideEffectError {
    #[error("starting the order workflows: {0}")]
    Workflows(#[source] bursar_workflow::runtime::StartError),
    #[error("starting the webhook workers: {0}")]
    Webhooks(#[source] DeliveryError),
    #[error("starting the lease thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A supervision tree gave up.
    #[error(transparent)]
    Escalated(#[from] Escalation),
    /// A supervision tree's task itself ended abnormally.
    #[error("the {tree} supervisor failed: {source}")]
    Supervisor {
        tree: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// Running them without the lease could repeat work a successor does.
    #[error("side effects did not stop within {0:?} of losing the lease")]
    StopOverdue(std::time::Duration),
}

/// What to run, as configured.
pub struct SideEffects {
    pub workflows: Option<bursar_workflow::runtime::WorkflowSettings>,
    pub webhooks: Option<(Arc<bursar_http::WebhooksApi>, bursar_outbound::webhooks::delivery::DeliverySettings)>,
    pub relay_nats: Option<bursar_outbound::nats::NatsRelayConfig>,
}

/// Supervision trees that end when their node handle's `stop` turns true.
struct Running {
    done: Vec<(&'static str, JoinHandle<Result<(), Escalation>>)>,
}

impl SideEffects {
    /// Starts everything configured on `node`.
    fn start(&self, node: &NodeHandle) -> Result<Running, SideEffectError> {
        let mut done = Vec::new();
        if let Some(settings) = &self.workflows {
            let w = bursar_workflow::runtime::start(node, settings.clone()).map_err(SideEffectError::Workflows)?;
            done.push(("order workflows", w.done));
        }
        if let Some((api, settings)) = &self.webhooks {
            let w = bursar_outbound::webhooks::delivery::start(
                node,
                api.keyring.clone(),
                api.policy.clone(),
                settings.clone(),
            )
            .map_err(SideEffectError::Webhooks)?;
            done.push(("webhooks", w.done));
        }
        if let Some(nats) = &self.relay_nats {
            println!("bursar: relaying events to NATS JetStream at {} (stream {})", nats.nats.redacted(), nats.stream);
            done.push(("relays", bursar_outbound::relays::start(node, Some(nats.clone())).done));
        }
        Ok(Running { done })
    }

    /// Single node: runs them until the node stops. The future resolves
    /// only if a supervision tree gave up (with why).
    pub fn run_always(
        &self,
        node: &NodeHandle,
    ) -> Result<impl Future<Output = SideEffectError> + use<>, SideEffectError> {
        let running = self.start(node)?;
        Ok(async move {
            match running.finished().await {
                Err(why) => why,
                Ok(()) => std::future::pending().await,
            }
        })
    }

    /// Cluster replica: runs them only while `lease_held` is true, on a
    /// thread of its own (starting them blocks on the engine). The future
    /// resolves only if a supervision tree gave up (with why).
    pub fn run_under_lease(
        self,
        node: NodeHandle,
        lease_held: watch::Receiver<bool>,
    ) -> Result<impl Future<Output = SideEffectError>, SideEffectError> {
        let (escalated_tx, escalated) = oneshot::channel();
        std::thread::Builder::new()
            .name("bursar-lease-effects".into())
            .spawn(move || {
                if let Err(why) = self.follow_lease(&node, lease_held) {
                    let _ = escalated_tx.send(why);
                }
            })
            .map_err(SideEffectError::Thread)?;
        Ok(async move {
            match escalated.await {
                Ok(why) => why,
                Err(_) => std::future::pending().await,
            }
        })
    }

    /// Starts on each acquisition, stops on each loss, until the node stops.
    fn follow_lease(&self, node: &NodeHandle, mut lease_held: watch::Receiver<bool>) -> Result<(), SideEffectError> {
        let mut node_stop = node.stop.clone();
        loop {
            let acquired = node.runtime.block_on(async {
                // A stopping node may still hold the lease: stopping wins.
                tokio::select! {
                    biased;
                    _ = node_stop.wait_for(|stop| *stop) => false,
                    held = lease_held.wait_for(|held| *held) => held.is_ok(),
                }
            });
            if !acquired {
                return Ok(());
            }
            println!("bursar: this replica holds the lease; starting orders, webhooks and relays");
            let (epoch_stop, epoch) = watch::channel(false);
            let scoped = NodeHandle { stop: epoch, ..node.clone() };
            let (mut lease, mut stop) = (lease_held.clone(), node.stop.clone());
            node.runtime.spawn(async move {
                tokio::select! {
                    _ = lease.wait_for(|held| !*held) => {}
                    _ = stop.wait_for(|stop| *stop) => {}
                }
                let _ = epoch_stop.send(true);
            });
            let running = self.start(&scoped)?;
            let (mut stopping, mut stopped) = (scoped.stop.clone(), scoped.stop.clone());
            node.runtime.block_on(async {
                let overdue = async {
                    let _ = stopping.wait_for(|stop| *stop).await;
                    tokio::time::sleep(STOP_TIMEOUT).await;
                };
                // With nothing configured `finished` is immediate: the
                // epoch still lasts until the lease is lost (no busy loop).
                let epoch = async {
                    running.finished().await?;
                    let _ = stopped.wait_for(|stop| *stop).await;
                    Ok(())
                };
                tokio::select! {
                    result = epoch => result,
                    // Running them without the lease could repeat work a
                    // successor does: stop the node instead.
                    _ = overdue => Err(SideEffectError::StopOverdue(STOP_TIMEOUT)),
                }
            })?;
            println!("bursar: lease lost or node stopping; orders, webhooks and relays stopped");
        }
    }
}

impl Running {
    /// `Err(why)` as soon as one tree escalates; `Ok` once all stopped.
    async fn finished(self) -> Result<(), SideEffectError> {
        let mut done: FuturesUnordered<_> =
            self.done.into_iter().map(|(name, handle)| async move { (name, handle.await) }).collect();
        while let Some((name, result)) = done.next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(escalation)) => return Err(escalation.into()),
                Err(source) => return Err(SideEffectError::Supervisor { tree: name, source }),
            }
        }
        Ok(())
    }
}

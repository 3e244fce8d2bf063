//! Shared by the cluster-mode tests: a real 3-node `nats-server` cluster
//! (fails, never skips, when the binary is missing) and connections to it.

use async_nats::jetstream;
use bursar_testkit::nats_cluster::NatsCluster;
use std::time::Duration;

/// Starts a 3-node cluster under `dir`, failing the test with the harness's message.
/// Logs go to the test's output (`RUST_LOG` filters them; warnings by default).
pub fn cluster(dir: &std::path::Path) -> NatsCluster {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    NatsCluster::start(dir, 3).unwrap_or_else(|e| panic!("{e}"))
}

/// A JetStream context on its own connection to exactly the servers in
/// `urls` (comma-separated): servers the cluster advertises are ignored, so a
/// connection to one node stays cut off when that node is paused.
pub async fn connect(urls: &str) -> jetstream::Context {
    bursar_testkit::jetstream::connect_pinned(urls, Duration::from_secs(2)).await
}

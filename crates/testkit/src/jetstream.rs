//! JetStream connections for tests, failing the test with the address when
//! a server is unreachable.

use async_nats::jetstream::{self, Context};
use std::time::Duration;

/// How long a test waits for the first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A JetStream context on the servers in `urls` (comma-separated) and those
/// the cluster advertises; each request waits at most `request_timeout`.
pub async fn connect(urls: &str, request_timeout: Duration) -> Context {
    context(urls, request_timeout, async_nats::ConnectOptions::new()).await
}

/// Like [`connect`], but on exactly the servers in `urls`: servers the
/// cluster advertises are ignored, so a connection to one node stays cut
/// off when that node is paused.
pub async fn connect_pinned(urls: &str, request_timeout: Duration) -> Context {
    context(urls, request_timeout, async_nats::ConnectOptions::new().ignore_discovered_servers()).await
}

async fn context(urls: &str, request_timeout: Duration, options: async_nats::ConnectOptions) -> Context {
    let servers: Vec<async_nats::ServerAddr> =
        urls.split(',').map(|u| u.parse().unwrap_or_else(|e| panic!("{u}: {e}"))).collect();
    let client = options
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(servers)
        .await
        .unwrap_or_else(|e| panic!("connecting to {urls}: {e}"));
    jetstream::ContextBuilder::new().timeout(request_timeout).build(client)
}

//! Bursar's HTTP/JSON API (see docs/api.md): API keys and roles,
//! Stripe-style idempotency keys recorded in the same log entry as the
//! effect, problem+json errors, an audit trail, OpenAPI, Prometheus metrics
//! and optional TLS. It runs on a node's runtime and talks to its engine.

pub mod access;
pub mod app;
pub mod engine_client;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod paths;
pub mod results;
pub mod router;
pub mod routes;
pub mod serve;

// The JSON shapes and problem+json live in `bursar-api` (shared with the
// relays and webhooks), the webhook policy and delivery in `bursar-outbound`;
// the routes name them through these paths.
pub use bursar_api::{dto, dto_events, dto_orders, problem};
pub use bursar_outbound::webhooks;

pub use app::{HttpConfig, OrdersApi, WebhooksApi};
pub use serve::TlsFiles;

use app::{App, AppState};
use bursar_server::node::NodeHandle;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// A running HTTP front end.
pub struct HttpServer {
    addr: SocketAddr,
}

impl HttpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The process-wide Prometheus recorder (one per process: several nodes in
/// one test process share it).
pub fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds =
                [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
            let batch_max = bursar_core::limits::BATCH_EVENTS_MAX as f64;
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0, 2048.0, batch_max, 65536.0];
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| {
                    b.set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_size".into()), &sizes)
                })
                .ok()
                .and_then(|b| b.install_recorder().ok())
        })
        .clone()
}

/// Why the HTTP API did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] serve::TlsError),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
    #[error("{0}")]
    LocalAddr(std::io::Error),
}

/// Binds `listen` and serves the API on the node's runtime.
pub fn start(
    node: &NodeHandle,
    listen: SocketAddr,
    config: HttpConfig,
    tls: Option<&TlsFiles>,
) -> Result<HttpServer, StartError> {
    let acceptor = tls.map(serve::tls_acceptor).transpose()?;
    let listener = node
        .runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|error| StartError::Listen { addr: listen, error })?;
    let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
    let access = {
        let _runtime = node.runtime.enter();
        access::AccessRecorder::start(node.engine_handle(), node.stop.clone())
    };
    let app: App = Arc::new(AppState {
        engine: node.engine_handle().with_waits(bursar_server::handle::Waits {
            queue: config.queue_timeout,
            reply: bursar_server::handle::REPLY_WAIT_DEFAULT,
        }),
        keys: node.keys.clone(),
        in_flight: Default::default(),
        metrics: metrics_handle(),
        in_progress: tokio::sync::Semaphore::new(config.max_in_progress),
        events_tail: node.events_tail.clone(),
        stop: node.stop.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(routes::events::STREAMS_MAX)),
        rate_limiter: bursar_server::rate_limit::RateLimiter::new(config.rate_limit_per_key),
        config: config.clone(),
        access,
    });
    let router = router::router(app);
    node.runtime.spawn(serve::accept_loop(listener, router, acceptor, config, node.stop.clone()));
    Ok(HttpServer { addr })
}

impl AppState {
    /// Gauges sampled when metrics are scraped.
    pub fn record_gauges(&self) {
        let queued = self.engine.queued();
        metrics::gauge!("bursar_engine_queue_depth").set(queued as f64);
        let in_flight = self.in_flight.lock().map(|s| s.len()).unwrap_or(0);
        metrics::gauge!("bursar_idempotency_in_flight").set(in_flight as f64);
        let busy = self.config.max_in_progress - self.in_progress.available_permits();
        metrics::gauge!("bursar_http_requests_in_progress").set(busy as f64);
    }
}

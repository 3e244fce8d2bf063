//! Shared state of the HTTP front end, and its configuration.

use bursar_server::engine::KeyTable;
use bursar_server::message::EngineMsg;
use bursar_workflow::config::OrdersConfig;
use bursar_workflow::pii::PiiKeyring;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// How long idempotency records are kept.
    pub idempotency_retention: Duration,
    /// Most idempotency records kept.
    pub idempotency_max_records: u32,
    /// Largest request body.
    pub body_limit: usize,
    /// Requests handled at once; more get 503 with Retry-After.
    pub max_in_progress: usize,
    /// How long a request may take end to end.
    pub request_timeout: Duration,
    /// How long a request may wait for room in the engine's queue.
    pub queue_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most, so one client
    /// cannot take every connection.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request head, counted from the
    /// connection's start or the end of the previous response (so it also
    /// bounds an idle keep-alive wait).
    pub header_read_timeout: Duration,
    /// A connection with no bytes read or written for this long is closed
    /// (gracefully: a request in progress still gets its response).
    pub idle_timeout: Duration,
    /// The request rate of keys without a limit of their own; `None`: such
    /// keys are not limited.
    pub rate_limit_per_key: Option<bursar_server::rate_limit::RateLimit>,
    /// Decides key expiry and refills rate limits (tests set it).
    pub clock: bursar_server::clock::Clock,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Payment orders: their settings and the personal-data keys. `None`:
    /// every order route answers 503 `orders_disabled`.
    pub orders: Option<Arc<OrdersApi>>,
    /// Webhooks: the keys that seal their secrets and where they may point.
    /// `None`: every webhook route answers 503 `webhooks_disabled`.
    pub webhooks: Option<Arc<WebhooksApi>>,
}

/// What the webhook routes need.
#[derive(Debug)]
pub struct WebhooksApi {
    pub keyring: Arc<PiiKeyring>,
    pub policy: Arc<crate::webhooks::DestinationPolicy>,
    /// Creates run one at a time (see `routes::webhooks::create`).
    pub create_lock: tokio::sync::Mutex<()>,
}

impl WebhooksApi {
    pub fn new(keyring: Arc<PiiKeyring>, policy: Arc<crate::webhooks::DestinationPolicy>) -> WebhooksApi {
        WebhooksApi { keyring, policy, create_lock: tokio::sync::Mutex::new(()) }
    }
}

/// What the order routes need: the settings resolved into each create
/// (assets, fee, timeouts, flags) and the keys that seal personal data.
#[derive(Debug)]
pub struct OrdersApi {
    pub config: OrdersConfig,
    pub keyring: Arc<PiiKeyring>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            idempotency_retention: Duration::from_secs(24 * 3600),
            idempotency_max_records: 10_000_000,
            body_limit: 4 << 20,
            max_in_progress: 4096,
            request_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(5),
            max_connections: 4096,
            max_connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            rate_limit_per_key: None,
            clock: bursar_server::clock::Clock::system(),
            max_header_bytes: 64 << 10,
            orders: None,
            webhooks: None,
        }
    }
}

pub struct AppState {
    pub engine: mpsc::Sender<EngineMsg>,
    pub keys: KeyTable,
    pub config: HttpConfig,
    /// Idempotency scopes of requests currently being executed.
    pub in_flight: Mutex<HashSet<[u8; 16]>>,
    /// Renders the Prometheus text for `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Permits for requests in progress.
    pub in_progress: tokio::sync::Semaphore,
    /// The newest event sequence (long polls and streams wait on it).
    pub events_tail: tokio::sync::watch::Receiver<u64>,
    /// Set when the node shuts down (streams end).
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Permits for open event streams.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Per-key token buckets.
    pub rate_limiter: bursar_server::rate_limit::RateLimiter,
    /// Personal-data reads and refusals, on their way to the log.
    pub access: crate::access::AccessRecorder,
}

pub type App = Arc<AppState>;

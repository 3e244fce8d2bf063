//! The delivery worker: one task per live webhook, under the supervision
//! tree. Each task POSTs its webhook's events strictly in `seq` order (so
//! the order per account holds), retries a failing event with exponential
//! backoff and jitter for the retry period, then dead-letters it and moves
//! on. Progress goes through the log in batches, so a restart resumes from
//! the recorded cursor: delivery is at-least-once (receivers dedupe by
//! `Bursar-Event-Id`).

use super::{DestinationError, DestinationPolicy, Target, secret_aad, signature};
use crate::event_reader::{EventReader, ReadError};
use bursar_api::dto_events::EventBody;
use bursar_core::Operation;
use bursar_core::service::webhooks::{
    DeadLetter, REDELIVERY, WebhookFilter, WebhookRecord, WebhookUpdate, WebhookUpdateResult,
};
use bursar_crypto::pii::{PiiError, PiiKeyring};
use bursar_runtime::resilience::Backoff;
use bursar_runtime::supervisor::{Child, Escalation, Intensity, Restart, Strategy, Supervisor, SupervisorStats};
use bursar_server::handle::{EngineError, EngineHandle};
use bursar_server::node::NodeHandle;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

/// Error kinds recorded on dead letters (stable; names in the API).
pub mod error_kind {
    pub const STATUS: u16 = 1;
    pub const TIMEOUT: u16 = 2;
    pub const CONNECTION: u16 = 3;
    pub const DESTINATION_FORBIDDEN: u16 = 4;
    pub const TLS: u16 = 5;
    pub const DNS: u16 = 6;

    pub fn name(kind: u16) -> &'static str {
        match kind {
            STATUS => "status",
            TIMEOUT => "timeout",
            CONNECTION => "connection",
            DESTINATION_FORBIDDEN => "destination_forbidden",
            TLS => "tls",
            DNS => "dns",
            _ => "unknown",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// How long one event is retried before it is dead-lettered.
    pub retry_period: Duration,
    /// The first wait between attempts; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// One attempt, connect to response head.
    pub attempt_timeout: Duration,
    /// Progress is logged after this many deliveries, or
    pub progress_every: u64,
    /// after this long, whichever comes first.
    pub progress_interval: Duration,
    /// Attempts in flight across all webhooks.
    pub in_flight: usize,
    /// How often an idle webhook and the set of webhooks are re-read.
    pub poll: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            retry_period: Duration::from_secs(86_400),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            attempt_timeout: Duration::from_secs(10),
            progress_every: 100,
            progress_interval: Duration::from_millis(200),
            in_flight: 64,
            poll: Duration::from_secs(1),
        }
    }
}

/// Events read per page.
const PAGE: u32 = 100;
/// Redeliveries read at once.
const REDELIVERY_PAGE: u32 = 1000;

/// Why delivery for a webhook (or the whole manager) stopped; the
/// supervisor or the manager restarts it.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The TLS client configuration could not be built.
    #[error("webhook TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("cannot open the secret of webhook {id}: {source}")]
    Secret {
        id: u64,
        #[source]
        source: PiiError,
    },
    #[error("webhook {id}: {source}")]
    Target {
        id: u64,
        #[source]
        source: DestinationError,
    },
    #[error("event {seq}: {source}")]
    Encode {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("the delivery permits closed")]
    PermitsClosed,
    /// The engine refused to record progress or a dead letter.
    #[error("{operation} for webhook {id} seq {seq}: {result:?}")]
    Update { operation: &'static str, id: u64, seq: u64, result: Option<WebhookUpdateResult> },
}

/// A `ListWebhooks` reply that does not decode (a bug, never user input).
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("short ListWebhooks reply")]
    Short,
    #[error("a ListWebhooks reply is not whole records")]
    NotWhole { len: usize },
}

/// The running workers.
pub struct WebhookWorkers {
    pub stats: Arc<SupervisorStats>,
    /// Ends when the tree stops: `Err` if it escalated.
    pub done: tokio::task::JoinHandle<Result<(), Escalation>>,
}

/// Starts the delivery workers on the node's runtime under their own
/// one-for-one supervisor.
pub fn start(
    node: &NodeHandle,
    keyring: Arc<PiiKeyring>,
    policy: Arc<DestinationPolicy>,
    settings: DeliverySettings,
) -> Result<WebhookWorkers, DeliveryError> {
    let _guard = node.runtime.enter();
    let deliverer = Deliverer::new(node, keyring, policy, settings)?;
    let manager = Child::worker("webhooks", Restart::Permanent, move || deliverer.clone().run());
    let intensity = Intensity { max_restarts: 10, within: Duration::from_secs(60) };
    let root = Supervisor::new("webhooks", Strategy::OneForOne, intensity).child(manager);
    let stats = root.stats();
    let done = node.runtime.spawn(bursar_runtime::supervisor::run_root(root, node.stop.clone()));
    Ok(WebhookWorkers { stats, done })
}

#[derive(Clone)]
struct Deliverer {
    inner: Arc<Inner>,
}

struct Inner {
    reader: EventReader,
    engine: EngineHandle,
    keyring: Arc<PiiKeyring>,
    policy: Arc<DestinationPolicy>,
    settings: DeliverySettings,
    permits: Semaphore,
    tls: tokio_rustls::TlsConnector,
}

enum Outcome {
    Delivered,
    Dead {
        attempts: u32,
        status: u16,
        error: u16,
    },
    /// The webhook was deleted meanwhile.
    Deleted,
}

struct Failure {
    status: u16,
    kind: u16,
}

impl Failure {
    fn kind(kind: u16) -> Failure {
        Failure { status: 0, kind }
    }
}

impl Deliverer {
    fn new(
        node: &NodeHandle,
        keyring: Arc<PiiKeyring>,
        policy: Arc<DestinationPolicy>,
        settings: DeliverySettings,
    ) -> Result<Deliverer, DeliveryError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(DeliveryError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let inner = Inner {
            reader: EventReader::new(node),
            engine: node.engine_handle(),
            keyring,
            policy,
            permits: Semaphore::new(settings.in_flight.max(1)),
            settings,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        };
        Ok(Deliverer { inner: Arc::new(inner) })
    }

    /// The manager: keeps one task per live webhook (at most
    /// `WEBHOOKS_MAX`), stops the tasks of deleted ones and restarts the
    /// ones that failed, on the next poll.
    async fn run(self) -> Result<(), DeliveryError> {
        // Dropping the set (a supervisor restart or shutdown) aborts every task.
        let mut set = tokio::task::JoinSet::new();
        let mut tasks: BTreeMap<u64, tokio::task::AbortHandle> = BTreeMap::new();
        loop {
            let live: Vec<u64> = self.records(0).await?.iter().filter(|r| r.is_live()).map(|r| r.id).collect();
            tasks.retain(|id, task| {
                let keep = live.contains(id) && !task.is_finished();
                if !keep {
                    task.abort();
                    metrics::gauge!("bursar_webhook_lag_events", "webhook" => id.to_string()).set(0.0);
                }
                keep
            });
            while set.try_join_next().is_some() {}
            for id in live {
                if let std::collections::btree_map::Entry::Vacant(slot) = tasks.entry(id) {
                    let me = self.clone();
                    slot.insert(set.spawn(async move { me.webhook_task(id).await }));
                }
            }
            tokio::time::sleep(self.inner.settings.poll).await;
        }
    }

    async fn webhook_task(self, id: u64) {
        if let Err(e) = self.webhook(id).await {
            // The manager restarts it on its next poll.
            tracing::warn!(webhook = id, error = %e, "webhook delivery stopped; restarting");
        }
    }

    async fn webhook(&self, id: u64) -> Result<(), DeliveryError> {
        let settings = &self.inner.settings;
        let Some(record) = self.record(id).await? else { return Ok(()) };
        let secret = self
            .inner
            .keyring
            .open(&secret_aad(id), record.sealed_secret())
            .map_err(|source| DeliveryError::Secret { id, source })?;
        let target = Target::parse(record.url_str()).map_err(|source| DeliveryError::Target { id, source })?;
        let lag = metrics::gauge!("bursar_webhook_lag_events", "webhook" => id.to_string());
        let mut cursor = record.cursor;
        let mut progress = Progress { reported: cursor, at: Instant::now() };
        loop {
            let Some(record) = self.record(id).await? else { return Ok(()) };
            if record.redeliveries > 0 {
                self.flush(id, &mut progress, cursor).await?;
                for seq in self.redeliveries(id).await? {
                    let outcome = match self.event(seq).await? {
                        Some(event) => self.deliver(id, &target, &secret, &event).await?,
                        None => Outcome::Dead { attempts: 0, status: 0, error: error_kind::STATUS },
                    };
                    match outcome {
                        Outcome::Delivered => {
                            self.update(Operation::WebhookProgress, id, seq, REDELIVERY, None).await?
                        }
                        Outcome::Dead { attempts, status, error } => {
                            let failure = Some((attempts, status, error));
                            self.update(Operation::WebhookDeadLetters, id, seq, REDELIVERY, failure).await?
                        }
                        Outcome::Deleted => return Ok(()),
                    }
                }
            }
            let page = self.inner.reader.page(cursor, PAGE, record.kinds).await?;
            lag.set(self.inner.reader.head().saturating_sub(cursor) as f64);
            if page.events.is_empty() {
                cursor = cursor.max(page.next_after);
                if cursor > progress.reported {
                    self.flush(id, &mut progress, cursor).await?;
                }
                lag.set(self.inner.reader.head().saturating_sub(cursor) as f64);
                let mut reader = self.inner.reader.clone();
                if let Ok(Err(e)) = tokio::time::timeout(settings.poll, reader.wait_beyond(cursor)).await {
                    return Err(e.into());
                }
                continue;
            }
            for event in &page.events {
                match self.deliver(id, &target, &secret, event).await? {
                    Outcome::Delivered => cursor = event.seq,
                    Outcome::Dead { attempts, status, error } => {
                        // The cursor recorded must never pass an event that
                        // was delivered but not yet reported: report first.
                        self.flush(id, &mut progress, cursor).await?;
                        let failure = Some((attempts, status, error));
                        self.update(Operation::WebhookDeadLetters, id, event.seq, 0, failure).await?;
                        cursor = event.seq;
                        progress.reported = cursor;
                    }
                    Outcome::Deleted => return Ok(()),
                }
                if cursor - progress.reported >= settings.progress_every
                    || progress.at.elapsed() >= settings.progress_interval
                {
                    self.flush(id, &mut progress, cursor).await?;
                }
                lag.set(self.inner.reader.head().saturating_sub(cursor) as f64);
            }
            cursor = cursor.max(page.next_after);
        }
    }

    /// Logs the cursor if it moved.
    async fn flush(&self, id: u64, progress: &mut Progress, cursor: u64) -> Result<(), DeliveryError> {
        if cursor > progress.reported {
            self.update(Operation::WebhookProgress, id, cursor, 0, None).await?;
            progress.reported = cursor;
        }
        progress.at = Instant::now();
        Ok(())
    }

    /// One event, retried until delivered or the retry period is over.
    async fn deliver(
        &self,
        id: u64,
        target: &Target,
        secret: &[u8],
        event: &EventBody,
    ) -> Result<Outcome, DeliveryError> {
        let settings = &self.inner.settings;
        let body =
            Bytes::from(serde_json::to_vec(event).map_err(|source| DeliveryError::Encode { seq: event.seq, source })?);
        let started = Instant::now();
        let mut backoff = Backoff::new(settings.first_backoff, settings.max_backoff);
        let mut attempts = 0u32;
        loop {
            attempts = attempts.saturating_add(1);
            let result = {
                let _permit = self.inner.permits.acquire().await.map_err(|_| DeliveryError::PermitsClosed)?;
                self.attempt(id, target, secret, event, body.clone()).await
            };
            let failure = match result {
                Ok(()) => {
                    metrics::counter!("bursar_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                    return Ok(Outcome::Delivered);
                }
                Err(f) => f,
            };
            metrics::counter!("bursar_webhook_deliveries_total", "outcome" => "failed").increment(1);
            let wait = backoff.next_wait();
            if started.elapsed() + wait > settings.retry_period {
                metrics::counter!("bursar_webhook_deliveries_total", "outcome" => "dead_lettered").increment(1);
                tracing::warn!(
                    webhook = id,
                    seq = event.seq,
                    attempts,
                    error = error_kind::name(failure.kind),
                    status = failure.status,
                    "webhook event dead-lettered"
                );
                return Ok(Outcome::Dead { attempts, status: failure.status, error: failure.kind });
            }
            tokio::time::sleep(wait).await;
            if self.record(id).await?.is_none() {
                return Ok(Outcome::Deleted);
            }
        }
    }

    async fn attempt(
        &self,
        id: u64,
        target: &Target,
        secret: &[u8],
        event: &EventBody,
        body: Bytes,
    ) -> Result<(), Failure> {
        let attempt = async {
            // Resolved and checked on every attempt, and the connection goes
            // to the address checked: DNS rebinding cannot redirect it.
            let addr = self.inner.policy.resolve(target).await.map_err(|e| match e {
                DestinationError::Forbidden(_) => Failure::kind(error_kind::DESTINATION_FORBIDDEN),
                _ => Failure::kind(error_kind::DNS),
            })?;
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|_| Failure::kind(error_kind::CONNECTION))?;
            let _ = tcp.set_nodelay(true);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let request = hyper::Request::post(target.path_and_query.as_str())
                .header(hyper::header::HOST, target.authority.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::USER_AGENT, "bursar-webhooks/1")
                .header(hyper::header::CONNECTION, "close")
                .header("bursar-event-id", event.seq.to_string())
                .header("bursar-event-type", event.event_type.as_str())
                .header("bursar-webhook-id", id.to_string())
                .header("bursar-signature", signature(secret, now, &body))
                .body(Full::new(body))
                .map_err(|_| Failure::kind(error_kind::CONNECTION))?;
            let status = if target.https {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|_| Failure::kind(error_kind::TLS))?;
                let tls = self.inner.tls.connect(name, tcp).await.map_err(|_| Failure::kind(error_kind::TLS))?;
                send(tls, request).await?
            } else {
                send(tcp, request).await?
            };
            if (200..300).contains(&status) { Ok(()) } else { Err(Failure { status, kind: error_kind::STATUS }) }
        };
        match tokio::time::timeout(self.inner.settings.attempt_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::kind(error_kind::TIMEOUT)),
        }
    }

    async fn records(&self, id: u64) -> Result<Vec<WebhookRecord>, DeliveryError> {
        let filter = WebhookFilter { id, ..Default::default() };
        let body = bytemuck::bytes_of(&filter).to_vec();
        let response = self.inner.engine.request(Operation::ListWebhooks, body).await?;
        Ok(decode_records(&response.body).map(|(_, records)| records)?)
    }

    /// The live webhook `id`, if any.
    async fn record(&self, id: u64) -> Result<Option<WebhookRecord>, DeliveryError> {
        Ok(self.records(id).await?.into_iter().find(|r| r.id == id && r.is_live()))
    }

    async fn redeliveries(&self, id: u64) -> Result<Vec<u64>, DeliveryError> {
        let filter = WebhookFilter { id, after: 0, limit: REDELIVERY_PAGE, redeliveries: 1 };
        let response =
            self.inner.engine.request(Operation::ListDeadLetters, bytemuck::bytes_of(&filter).to_vec()).await?;
        Ok(response
            .body
            .chunks_exact(DeadLetter::SIZE)
            .map(|c| bytemuck::pod_read_unaligned::<DeadLetter>(c).seq)
            .collect())
    }

    async fn event(&self, seq: u64) -> Result<Option<EventBody>, DeliveryError> {
        let page = self.inner.reader.page(seq.saturating_sub(1), 1, 0).await?;
        Ok(page.events.into_iter().find(|e| e.seq == seq))
    }

    async fn update(
        &self,
        op: Operation,
        id: u64,
        seq: u64,
        flags: u32,
        failure: Option<(u32, u16, u16)>,
    ) -> Result<(), DeliveryError> {
        let (attempts, status, error) = failure.unwrap_or_default();
        let e = WebhookUpdate { id, seq, attempts, status, error, flags, reserved: 0 };
        let response = self.inner.engine.request(op, bytemuck::bytes_of(&e).to_vec()).await?;
        let results: Vec<bursar_core::EventResult> =
            response.body.chunks_exact(bursar_core::EventResult::SIZE).map(bytemuck::pod_read_unaligned).collect();
        match results.first().and_then(|r| WebhookUpdateResult::from_code(r.code)) {
            None if results.is_empty() => Ok(()),
            // Deleted meanwhile: the task ends on its next read.
            Some(WebhookUpdateResult::WebhookNotFound) => Ok(()),
            other => Err(DeliveryError::Update { operation: op.name(), id, seq, result: other }),
        }
    }
}

struct Progress {
    reported: u64,
    at: Instant,
}

/// A `ListWebhooks` reply: the next id, then the records.
pub fn decode_records(body: &[u8]) -> Result<(u64, Vec<WebhookRecord>), RecordsError> {
    let head: [u8; 8] = body.get(..8).ok_or(RecordsError::Short)?.try_into().expect("8 bytes");
    let rest = &body[8..];
    if !rest.len().is_multiple_of(WebhookRecord::SIZE) {
        return Err(RecordsError::NotWhole { len: rest.len() });
    }
    Ok((u64::from_le_bytes(head), rest.chunks_exact(WebhookRecord::SIZE).map(bytemuck::pod_read_unaligned).collect()))
}

/// Sends one request over `io` and returns the response status; the body is
/// never read (nothing in it matters, and it is not bounded).
async fn send<S>(io: S, request: hyper::Request<Full<Bytes>>) -> Result<u16, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| Failure::kind(error_kind::CONNECTION))?;
    // The connection is driven here rather than spawned, so a timeout that
    // drops this future leaves nothing running.
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        r = &mut send => r,
        // With `Connection: close` the connection may finish in the same
        // poll that hands over the response: then the response is ready.
        ended = &mut conn => match ended {
            Ok(()) => send.await,
            Err(_) => return Err(Failure::kind(error_kind::CONNECTION)),
        },
    }
    .map_err(|_| Failure::kind(error_kind::CONNECTION))?;
    Ok(response.status().as_u16())
}

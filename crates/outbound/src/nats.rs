//! The NATS JetStream relay: every event of the change stream, in order and
//! exactly once, as one message on `<prefix>.<type>` in a JetStream stream.
//!
//! The stream itself is the durable record of how far the relay got: each
//! message carries `Bursar-Seq`, and a (re)starting session reads the
//! stream's last message and resumes after its `Bursar-Seq`. Nothing else
//! is stored, so there is no second record that could disagree with the
//! stream after a crash of the node, the relay or the broker.
//!
//! Exactly once and in order rests on two server-side checks, so that no
//! client-side race (a publish buffered across a reconnect, a stale session)
//! can put a gap, a duplicate or a reordering into the stream:
//! - `Nats-Msg-Id: bursar-<seq>`: a republished event is dropped as a
//!   duplicate (within the stream's short duplicate window; after it, the
//!   next check refuses it);
//! - an expectation on the stream's last message: the first publish of a
//!   session expects the stream's last stream sequence as read at resume
//!   (`Nats-Expected-Last-Sequence`, which the server keeps across restarts),
//!   every later one `Nats-Expected-Last-Msg-Id: bursar-<seq-1>`. A publish
//!   that does not extend the stream by exactly the next event is refused,
//!   and the session starts over from what the stream holds.
//!
//! Publishes are pipelined (up to `max_in_flight` unacknowledged) because a
//! round trip per event would cap the relay at a few thousand events/s; the
//! server handles one connection's publishes in order, so the expectations
//! hold along the pipeline.
//!
//! Only every `ACK_EVERY`-th message (and the last one available) asks for
//! an ack; the others are plain publishes. That is still exact: because
//! each message must directly follow its predecessor, the stream is always
//! a gapless prefix of the events, and a stored (acknowledged) message
//! proves every one before it is stored. A refused message refuses all
//! after it, so the next ack reports the break. Acks are half of the
//! broker's and the relay's work per message.

use crate::event_reader::{EventReader, ReadError};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::StorageType};
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_nats::{NatsEndpoint, NatsError, NatsSecurity};
use bursar_runtime::resilience::Backoff;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// The relay's label in metrics.
const RELAY: &str = "nats";
/// Header holding the event's `seq` (the relay's resume point).
pub const SEQ_HEADER: &str = "Bursar-Seq";
/// Events per page read from the engine (its maximum).
const PAGE: u32 = BATCH_EVENTS_MAX as u32;
/// Pages read ahead of the publisher.
const PAGES_AHEAD: usize = 4;
/// One message in this many asks the broker for an ack (see the module docs).
const ACK_EVERY: u64 = 1024;
/// How long the broker remembers message ids. Exactly-once rests on the
/// expected-last-message chain and on resuming from the stream's end, not
/// on this window: a retry it no longer remembers is refused by the chain
/// check and the session starts over from the stream. So it is short: at
/// 200k events/s the broker's id map (and its garbage collector's work)
/// grows with the window; 30 s instead of 2 s cost a fifth of the rate
/// on a 3M-event backlog.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct NatsRelayConfig {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://…`,
    /// credentials allowed), and the security options. Its `Debug` and
    /// `redacted()` never show a secret.
    pub nats: NatsEndpoint,
    pub stream: String,
    /// Subjects are `<prefix>.<type>`.
    pub subject_prefix: String,
    /// Most messages published but not yet confirmed by an ack.
    pub max_in_flight: usize,
    /// How long one ack (or a stream API call) may take before the session
    /// is considered broken.
    pub ack_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl NatsRelayConfig {
    pub fn new(url: impl Into<String>) -> NatsRelayConfig {
        NatsRelayConfig {
            nats: NatsEndpoint::new(url, NatsSecurity::default()),
            stream: "BURSAR_EVENTS".to_string(),
            subject_prefix: "bursar.events".to_string(),
            max_in_flight: 32_768,
            ack_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }

    pub fn subject(&self, event_type: &str) -> String {
        format!("{}.{event_type}", self.subject_prefix)
    }
}

/// What the relay has done, shared with whoever watches it (tests, bench).
#[derive(Debug, Default)]
pub struct RelayStatus {
    /// The last event the stream is known to hold (acknowledged, or found
    /// there at resume).
    pub last_acked: AtomicU64,
    /// Messages the broker stored (duplicates excluded).
    pub published: AtomicU64,
    /// Sessions started over after an error (broker down, refused publish).
    pub resets: AtomicU64,
}

impl RelayStatus {
    pub fn last_acked(&self) -> u64 {
        self.last_acked.load(Ordering::Acquire)
    }
}

/// One relay: run it with [`NatsRelay::run`] (under a supervisor).
#[derive(Clone)]
pub struct NatsRelay {
    pub config: Arc<NatsRelayConfig>,
    pub reader: EventReader,
    pub status: Arc<RelayStatus>,
}

/// One event ready to publish.
struct Outgoing {
    seq: u64,
    subject: String,
    body: Bytes,
}

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// Retry after a backoff (broker unreachable, publish refused, timeout).
    Retry(String),
    /// The node stopped, or its change stream broke: nothing left to relay.
    Stopped(RelayError),
}

/// Why the relay stopped for good (the supervisor decides what follows).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The engine went away while the relay waited for events.
    #[error(transparent)]
    Reader(#[from] ReadError),
    /// A page of the change stream did not continue where the last ended.
    #[error("the change stream skipped from {last} to {next}")]
    Skipped { last: u64, next: u64 },
}

/// Why a JetStream stream could not be set up or read. Async-nats errors
/// are kept as their source, boxed (one variant per step, not per type).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Connect(#[from] NatsError),
    #[error("opening stream {stream}: {source}")]
    Open { stream: String, source: BoxError },
    #[error("reading stream {stream}: {source}")]
    Info { stream: String, source: BoxError },
    /// Publishing would get "no responders" forever; this says why instead.
    #[error(
        "stream {stream} exists with subjects {subjects:?}, not {wanted:?}: fix the stream or pick another with --relay-nats-stream"
    )]
    Subjects { stream: String, subjects: Vec<String>, wanted: String },
    #[error("reading message {seq} of {stream}: {source}")]
    Message { stream: String, seq: u64, source: BoxError },
    #[error("the last message ({seq}) of stream {stream} has no {SEQ_HEADER} header")]
    NoSeqHeader { stream: String, seq: u64 },
    #[error("stream {stream}: {source}")]
    Get { stream: String, source: BoxError },
    #[error("creating a consumer: {0}")]
    Consumer(BoxError),
    #[error("consuming: {0}")]
    Consume(BoxError),
    #[error("message info: {0}")]
    MessageInfo(BoxError),
    #[error("the consumer ended")]
    ConsumerEnded,
    #[error("read {read} of {last} messages in {timeout:?}")]
    Timeout { read: usize, last: u64, timeout: Duration },
}

/// An async-nats error as a source.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl NatsRelay {
    pub fn new(config: NatsRelayConfig, reader: EventReader) -> NatsRelay {
        NatsRelay { config: Arc::new(config), reader, status: Arc::default() }
    }

    /// Relays until the node stops. Broker trouble never ends it: sessions
    /// are retried with capped, jittered exponential backoff. `Err` only when
    /// the engine went away (the supervisor decides what follows).
    pub async fn run(self) -> Result<(), RelayError> {
        let _lag = AbortOnDrop(tokio::spawn(report_lag(self.reader.clone(), self.status.clone())));
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            let acked_before = self.status.last_acked();
            let end = self.session().await;
            match end {
                SessionEnd::Stopped(why) => return Err(why),
                SessionEnd::Retry(why) => {
                    self.status.resets.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("bursar_relay_resets_total", "relay" => RELAY).increment(1);
                    if self.status.last_acked() > acked_before {
                        // It made progress: the trouble is new, start the backoff over.
                        backoff.reset();
                    }
                    let wait = backoff.next_wait();
                    tracing::warn!(relay = RELAY, error = %why, retry_in_ms = wait.as_millis() as u64, "relay session ended");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Connects, finds where the stream ends, and publishes from there
    /// until something goes wrong.
    async fn session(&self) -> SessionEnd {
        let disconnected = Arc::new(Notify::new());
        let client = match self.connect(disconnected.clone()).await {
            Ok(c) => c,
            // The error names the (redacted) servers and what to fix.
            Err(e) => return SessionEnd::Retry(e.to_string()),
        };
        let js = jetstream::context::ContextBuilder::new()
            .timeout(self.config.ack_timeout)
            // Our own bound is `max_in_flight`; the client's must not be the tighter one.
            .max_ack_inflight(self.config.max_in_flight + 64)
            .backpressure_on_inflight(true)
            .build(client);
        let (after, stream_last) = match resume_point(&js, &self.config).await {
            Ok(p) => p,
            Err(e) => return SessionEnd::Retry(e.to_string()),
        };
        if after > self.reader.head() {
            tracing::warn!(
                relay = RELAY,
                stream = %self.config.stream,
                stream_seq = after,
                head = self.reader.head(),
                "the stream is ahead of this node's change stream (another node's stream?): waiting for the node to catch up"
            );
        }
        self.status.last_acked.store(after, Ordering::Release);
        metrics::gauge!("bursar_relay_last_seq", "relay" => RELAY).set(after as f64);
        tracing::info!(relay = RELAY, stream = %self.config.stream, after, "relaying events");
        let (tx, rx) = mpsc::channel(PAGES_AHEAD);
        let _pages = AbortOnDrop(tokio::spawn(read_pages(self.reader.clone(), self.config.clone(), after, tx)));
        tokio::select! {
            end = self.pump(&js, rx, after, stream_last) => end,
            () = disconnected.notified() => SessionEnd::Retry("disconnected from the broker".to_string()),
        }
    }

    async fn connect(&self, disconnected: Arc<Notify>) -> Result<async_nats::Client, NatsError> {
        let attempt = self.config.ack_timeout.min(Duration::from_secs(5));
        self.config
            .nats
            .connect(self.config.ack_timeout.max(attempt), |options| {
                options
                    .name("bursar-relay")
                    .connection_timeout(attempt)
                    // Reconnecting is the session loop's job (it re-reads the stream's end); a
                    // connection that drops ends the session instead of replaying buffered publishes.
                    .max_reconnects(Some(1))
                    .event_callback(move |event| {
                        let disconnected = disconnected.clone();
                        async move {
                            if matches!(event, async_nats::Event::Disconnected | async_nats::Event::Closed) {
                                disconnected.notify_one();
                            }
                        }
                    })
            })
            .await
    }

    /// Publishes pages as they come, keeping up to `max_in_flight` acks
    /// outstanding; returns at the first error or refusal.
    async fn pump(
        &self,
        js: &jetstream::Context,
        mut pages: mpsc::Receiver<Result<Vec<Outgoing>, SessionEnd>>,
        after: u64,
        stream_last: u64,
    ) -> SessionEnd {
        let client = js.client();
        let mut in_flight = FuturesOrdered::new();
        let mut ready: VecDeque<Outgoing> = VecDeque::new();
        let mut next = after + 1;
        // The expectation for the next publish: the stream's last sequence for the
        // first one (when the stream has messages), the previous message id after.
        let mut first = stream_last > 0;
        let mut extends_stream = stream_last > 0;
        let max = self.config.max_in_flight.max(1) as u64;
        loop {
            while next - 1 - self.status.last_acked() < max
                && let Some(out) = ready.pop_front()
            {
                if out.seq != next {
                    return SessionEnd::Stopped(RelayError::Skipped { last: next - 1, next: out.seq });
                }
                let expect = if first {
                    Expect::StreamSeq(stream_last)
                } else if extends_stream && out.seq > 1 {
                    Expect::PreviousEvent
                } else {
                    Expect::Nothing
                };
                let headers = message_headers(out.seq, expect);
                (first, extends_stream) = (false, true);
                let seq = out.seq;
                let window_full = next - self.status.last_acked() >= max;
                if seq % ACK_EVERY == 0 || ready.is_empty() || window_full {
                    let ack = match js.publish_with_headers(out.subject, headers, out.body).await {
                        Ok(ack) => ack,
                        Err(e) => return SessionEnd::Retry(format!("publishing event {seq}: {e}")),
                    };
                    in_flight.push_back(async move { (seq, ack.await) });
                } else if let Err(e) = client.publish_with_headers(out.subject, headers, out.body).await {
                    return SessionEnd::Retry(format!("publishing event {seq}: {e}"));
                }
                next += 1;
            }
            tokio::select! {
                biased;
                Some((seq, ack)) = in_flight.next(), if !in_flight.is_empty() => match ack {
                    Ok(ack) => {
                        // Everything up to `seq` is stored (the stream is a prefix).
                        let newly = seq - self.status.last_acked();
                        if !ack.duplicate {
                            self.status.published.fetch_add(newly, Ordering::Relaxed);
                            metrics::counter!("bursar_relay_published_total", "relay" => RELAY).increment(newly);
                        }
                        self.status.last_acked.store(seq, Ordering::Release);
                        if in_flight.is_empty() || seq % 1024 == 0 {
                            metrics::gauge!("bursar_relay_last_seq", "relay" => RELAY).set(seq as f64);
                        }
                    }
                    Err(e) => return SessionEnd::Retry(format!("event {seq} was not stored: {e}")),
                },
                page = pages.recv(), if ready.is_empty() && next - 1 - self.status.last_acked() < max => match page {
                    Some(Ok(events)) => ready.extend(events),
                    Some(Err(end)) => return end,
                    None => return SessionEnd::Retry("the event reader ended".to_string()),
                },
            }
        }
    }
}

/// What a publish expects the stream to end with, checked by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No check: the first event into an empty stream.
    Nothing,
    /// The stream's last stream sequence (as read at resume); the server
    /// keeps it across restarts, unlike the last message id.
    StreamSeq(u64),
    /// The stream's last message is the previous event (`bursar-<seq-1>`).
    PreviousEvent,
}

/// The headers of event `seq`'s message.
pub fn message_headers(seq: u64, expect: Expect) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id(seq).as_str());
    headers.insert(SEQ_HEADER, seq.to_string().as_str());
    match expect {
        Expect::Nothing => {}
        Expect::StreamSeq(last) => headers.insert("Nats-Expected-Last-Sequence", last.to_string().as_str()),
        Expect::PreviousEvent => headers.insert("Nats-Expected-Last-Msg-Id", msg_id(seq - 1).as_str()),
    }
    headers
}

/// The message id of event `seq` (the broker deduplicates on it).
pub fn msg_id(seq: u64) -> String {
    format!("bursar-{seq}")
}

/// Where to resume: the `Bursar-Seq` of the stream's last message and the
/// stream's last sequence (0 and 0 for an empty stream). Creates the stream
/// when it is missing.
async fn resume_point(js: &jetstream::Context, config: &NatsRelayConfig) -> Result<(u64, u64), StreamError> {
    let name = || config.stream.clone();
    let wildcard = format!("{}.>", config.subject_prefix);
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![wildcard.clone()],
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| StreamError::Open { stream: name(), source: e.into() })?;
    let info = stream.info().await.map_err(|e| StreamError::Info { stream: name(), source: e.into() })?;
    if !info.config.subjects.contains(&wildcard) {
        return Err(StreamError::Subjects { stream: name(), subjects: info.config.subjects.clone(), wanted: wildcard });
    }
    let last = info.state.last_sequence;
    if info.state.messages == 0 {
        // Empty (new, or purged): there is no record of a relayed event to resume after.
        return Ok((0, last));
    }
    let message = stream.get_raw_message(last).await.map_err(|e| StreamError::Message {
        stream: name(),
        seq: last,
        source: e.into(),
    })?;
    let seq = message
        .headers
        .get(SEQ_HEADER)
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .ok_or_else(|| StreamError::NoSeqHeader { stream: name(), seq: last })?;
    Ok((seq, last))
}

/// Reads the change stream from `after` on, ahead of the publisher, and
/// renders each event's JSON. Bounded: at most `PAGES_AHEAD` pages wait.
async fn read_pages(
    mut reader: EventReader,
    config: Arc<NatsRelayConfig>,
    mut after: u64,
    tx: mpsc::Sender<Result<Vec<Outgoing>, SessionEnd>>,
) {
    loop {
        let (next_after, events) = match reader.json_page(after, PAGE, 0).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(SessionEnd::Retry(format!("reading events after {after}: {e}")))).await;
                return;
            }
        };
        if events.is_empty() {
            // Nothing durable after `after` yet. The tail moves when an event is
            // applied, a little before it is durable: poll briefly until then.
            if reader.head() > after {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else if let Err(e) = reader.wait_beyond(after).await {
                let _ = tx.send(Err(SessionEnd::Stopped(e.into()))).await;
                return;
            }
            continue;
        }
        after = next_after.max(after);
        let out: Vec<Outgoing> = events
            .into_iter()
            .map(|e| Outgoing { seq: e.seq, subject: config.subject(&e.event_type), body: Bytes::from(e.json) })
            .collect();
        if tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}

/// Keeps `bursar_relay_lag_events` current also while the broker is down
/// (when no ack moves it).
async fn report_lag(reader: EventReader, status: Arc<RelayStatus>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let acked = status.last_acked();
        metrics::gauge!("bursar_relay_lag_events", "relay" => RELAY).set(reader.head().saturating_sub(acked) as f64);
        metrics::gauge!("bursar_relay_last_seq", "relay" => RELAY).set(acked as f64);
    }
}

/// Aborts a helper task when its session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One message of the stream, as a reader of it sees it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub stream_seq: u64,
    pub subject: String,
    pub msg_id: Option<String>,
    pub bursar_seq: Option<u64>,
    pub body: Bytes,
}

/// Reads every message of `stream` in order with an ordered consumer (for
/// tests, the benchmark and audits of what the relay delivered).
pub async fn read_stream(url: &str, stream: &str, timeout: Duration) -> Result<Vec<StoredEvent>, StreamError> {
    read_stream_from(&NatsEndpoint::new(url, NatsSecurity::default()), stream, timeout).await
}

/// [`read_stream`] from servers that need credentials or TLS.
pub async fn read_stream_from(
    nats: &NatsEndpoint,
    stream: &str,
    timeout: Duration,
) -> Result<Vec<StoredEvent>, StreamError> {
    use jetstream::consumer::pull::OrderedConfig;
    let client = nats.connect(timeout, |options| options).await?;
    let js = jetstream::new(client);
    let name = stream;
    let mut stream =
        js.get_stream(name).await.map_err(|e| StreamError::Get { stream: name.to_string(), source: e.into() })?;
    let info = stream.info().await.map_err(|e| StreamError::Info { stream: name.to_string(), source: e.into() })?;
    let last = info.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| StreamError::Consumer(e.into()))?;
    let mut messages = consumer.messages().await.map_err(|e| StreamError::Consume(e.into()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, messages.next()).await.map_err(|_| StreamError::Timeout {
            read: out.len(),
            last,
            timeout,
        })?;
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(StreamError::Consume(e.into())),
            None => return Err(StreamError::ConsumerEnded),
        };
        let info = message.info().map_err(StreamError::MessageInfo)?;
        let stream_seq = info.stream_sequence;
        let headers = message.headers.as_ref();
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
        out.push(StoredEvent {
            stream_seq,
            subject: message.subject.to_string(),
            msg_id: header("Nats-Msg-Id"),
            bursar_seq: header(SEQ_HEADER).and_then(|s| s.parse().ok()),
            body: message.payload.clone(),
        });
        if stream_seq >= last {
            return Ok(out);
        }
    }
}

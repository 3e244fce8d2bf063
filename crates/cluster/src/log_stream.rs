//! The replicated log: one JetStream stream, one message per log entry.
//!
//! - **Position = stream sequence.** JetStream assigns it when the quorum
//!   has stored the message, so every replica sees the same entry at the
//!   same position, and a duplicate (same `Nats-Msg-Id`) is not stored, so
//!   positions stay gapless.
//! - **Proposals** are sealed (`seal.rs`: origin, time and body under a
//!   MAC of the cluster key) and published with `Nats-Msg-Id:
//!   n<node>-<boot>-<proposal>`. A publish whose ack is lost is retried
//!   with the same id and bytes, which the broker drops as a duplicate
//!   inside its window (longer than any retry). When no ack comes within
//!   the deadline, the requests get "outcome unknown": the entry may still
//!   commit and then applies like any other.
//! - **Committed entries** come from an ordered consumer starting after the
//!   replica's position, are judged (authentic and decodable, or rejected)
//!   and go to the engine in stream order. A rejected message becomes an
//!   entry that changes nothing but an audit record: anyone able to publish
//!   to the subject can add entries but never stop a replica. A gap still
//!   stops the replica (applying past it would diverge).

use crate::ClusterConfig;
use crate::cluster_key::ClusterKeys;
use crate::seal;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, stream::StorageType};
use bursar_core::entry::EntryHeader;
use bursar_runtime::resilience::Backoff;
use bursar_server::message::{Committed, EngineMsg, Proposal, ProposalFailed};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest entry the engine may propose. The servers' `max_payload` must be
/// at least [`PAYLOAD_MAX_MIN`]: a binary-protocol batch alone is 1 MiB.
pub const ENTRY_BYTES_MAX: usize = 7 << 20;
pub const PAYLOAD_MAX_MIN: usize = 8 << 20;
/// Proposals published and not yet acknowledged, at most.
const PUBLISHES_IN_FLIGHT: usize = 64;
/// Silence after which the follower checks whether its consumer is stuck.
const STALL_CHECK: Duration = Duration::from_secs(3);
/// Committed entries pulled ahead of the engine (each up to 8 MiB).
const PULL_BATCH: i64 = 32;
/// Longest one pull for committed entries waits. The ordered consumer
/// (a single copy, on one NATS node) gets idle heartbeats at half of it
/// and is recreated after two missed ones, so this bounds how long a
/// replica stops applying when the node holding its consumer dies. With
/// the client's default (30 s) that was about a minute, and every write
/// proposed through the replica hung meanwhile: its commit is acknowledged
/// but never delivered.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Opening or checking the log stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("opening the log stream {stream}: {source}")]
    Open { stream: String, source: jetstream::context::CreateStreamError },
    #[error("reading the log stream {stream}: {source}")]
    Read { stream: String, source: jetstream::stream::InfoError },
    #[error("{last} (retried for {retried:?})")]
    GaveUp { last: Box<StreamError>, retried: Duration },
    #[error("stream {stream} has subjects {found:?}, not [{expected:?}]: it is not this cluster's log")]
    NotOurs { stream: String, found: Vec<String>, expected: String },
    #[error(
        "stream {stream}'s duplicate window ({window:?}) must be at least twice the proposal deadline ({deadline:?})"
    )]
    ShortDuplicateWindow { stream: String, window: Duration, deadline: Duration },
}

/// Following the log stopped (the follower logs it and resumes).
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("opening the log stream: {0}")]
    OpenStream(#[source] jetstream::context::GetStreamError),
    #[error("reading the log stream: {0}")]
    ReadStream(#[source] jetstream::stream::InfoError),
    #[error("creating a consumer from position {next}: {source}")]
    Consumer { next: u64, source: jetstream::stream::ConsumerError },
    #[error("consuming: {0}")]
    Consume(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the consumer ended")]
    Ended,
    #[error("message info: {0}")]
    Info(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the consumer delivered nothing for {STALL_CHECK:?} while the log holds position {next}")]
    Stalled { next: u64 },
}

/// A proposal's commit was not confirmed within the proposal deadline; its
/// requests learn that the outcome is unknown (the entry may still commit).
#[derive(Debug, thiserror::Error)]
#[error("the replicated log did not confirm the write within {deadline:?}: {last}")]
pub struct PublishError {
    pub deadline: Duration,
    /// Why the last attempt failed.
    #[source]
    pub last: PublishAttemptError,
}

/// Why one attempt at publishing a proposal failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishAttemptError {
    /// The publish or its acknowledgement failed.
    #[error("{0}")]
    Nats(#[source] jetstream::context::PublishError),
    #[error("no acknowledgement before the deadline")]
    NoAck,
}

/// Creates the log stream if it is missing and checks an existing one;
/// returns its info.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<jetstream::stream::Info, StreamError> {
    let subject = config.log_subject();
    let info = open_stream(js, config).await?;
    if info.config.subjects != [subject.clone()] {
        return Err(StreamError::NotOurs {
            stream: config.stream.clone(),
            found: info.config.subjects,
            expected: subject,
        });
    }
    if info.config.duplicate_window < config.proposal_deadline * 2 {
        return Err(StreamError::ShortDuplicateWindow {
            stream: config.stream.clone(),
            window: info.config.duplicate_window,
            deadline: config.proposal_deadline,
        });
    }
    Ok(info)
}

/// Opens (or creates) the stream, retrying until the connect timeout:
/// JetStream answers nothing while it has no leader (a cluster that just
/// started, or one electing a new leader after losing a node), and a
/// replica started then must wait for it rather than exit.
async fn open_stream(js: &jetstream::Context, config: &ClusterConfig) -> Result<jetstream::stream::Info, StreamError> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let error = match try_open_stream(js, config).await {
            Ok(opened) => return Ok(opened),
            Err(e) => e,
        };
        let wait = backoff.next_wait();
        if tokio::time::Instant::now() + wait >= deadline {
            return Err(StreamError::GaveUp { last: Box::new(error), retried: config.connect_timeout });
        }
        tracing::warn!("the log stream is not available yet; retrying: {error}");
        tokio::time::sleep(wait).await;
    }
}

async fn try_open_stream(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<jetstream::stream::Info, StreamError> {
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.log_subject()],
            storage: StorageType::File,
            num_replicas: config.replicas,
            max_message_size: PAYLOAD_MAX_MIN as i32,
            duplicate_window: config.duplicate_window,
            deny_delete: true,
            ..Default::default()
        })
        .await
        .map_err(|source| StreamError::Open { stream: config.stream.clone(), source })?;
    let info = stream.info().await.map_err(|source| StreamError::Read { stream: config.stream.clone(), source })?;
    Ok(info.clone())
}

/// Publishes proposals until each is acknowledged or its deadline passes.
pub async fn publish_proposals(
    js: jetstream::Context,
    config: ClusterConfig,
    mut proposals: mpsc::Receiver<Proposal>,
    engine: mpsc::Sender<EngineMsg>,
) {
    let subject = config.log_subject();
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            p = proposals.recv(), if in_flight.len() < PUBLISHES_IN_FLIGHT => {
                let Some(p) = p else { break };
                let headers = proposal_headers(&p);
                let payload = seal::seal(&config.keys, &config.stream, p.origin, p.timestamp, &p.body);
                assert_eq!(payload.len(), seal::SEAL_BYTES + p.body.len(), "invariant: a seal adds exactly its header and MAC");
                let id = p.origin.proposal;
                in_flight.push(publish_until_acked(js.clone(), subject.clone(), headers, payload.into(), config.clone(), id));
            }
            Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = result {
                    metrics::counter!("bursar_cluster_proposals_unconfirmed_total").increment(1);
                    // The engine passes the reason on to clients as text.
                    let failed = ProposalFailed { id, reason: e.to_string() };
                    if engine.send(EngineMsg::ProposalFailed(failed)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// The headers of a proposal's message: only its id, for deduplication
/// (everything the state machine uses is inside the sealed payload).
pub fn proposal_headers(p: &Proposal) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", seal::message_id(&p.origin).as_str());
    headers
}

/// One proposal: the same message (same id) until acked or out of time.
async fn publish_until_acked(
    js: jetstream::Context,
    subject: String,
    headers: HeaderMap,
    body: bytes::Bytes,
    config: ClusterConfig,
    id: u64,
) -> (u64, Result<(), PublishError>) {
    let deadline = tokio::time::Instant::now() + config.proposal_deadline;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let attempt = async {
            let ack = js.publish_with_headers(subject.clone(), headers.clone(), body.clone()).await?;
            ack.await
        };
        let error = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(_)) => return (id, Ok(())),
            Ok(Err(e)) => PublishAttemptError::Nats(e),
            Err(_) => PublishAttemptError::NoAck,
        };
        let wait = backoff.next_wait();
        if tokio::time::Instant::now() + wait >= deadline {
            return (id, Err(PublishError { deadline: config.proposal_deadline, last: error }));
        }
        tracing::debug!(proposal = id, %error, "publish not acknowledged; retrying with the same message id");
        tokio::time::sleep(wait).await;
    }
}

/// Sends every committed entry after `after` to the engine, in order,
/// judged. Returns only when the engine is gone; a gap stops the process
/// (a replica must never apply past one).
pub async fn follow(js: jetstream::Context, config: ClusterConfig, after: u64, engine: mpsc::Sender<EngineMsg>) {
    let mut next = after + 1;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match follow_from(&js, &config, &mut next, &engine).await {
            Ok(()) => return,
            Err(e) => {
                metrics::counter!("bursar_cluster_consumer_restarts_total").increment(1);
                tracing::warn!(next, "following the log failed, resuming: {e}");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

async fn follow_from(
    js: &jetstream::Context,
    config: &ClusterConfig,
    next: &mut u64,
    engine: &mpsc::Sender<EngineMsg>,
) -> Result<(), FollowError> {
    let stream = js.get_stream(&config.stream).await.map_err(FollowError::OpenStream)?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: *next },
            max_batch: PULL_BATCH,
            max_expires: PULL_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|source| FollowError::Consumer { next: *next, source })?;
    let mut messages = consumer.messages().await.map_err(|e| FollowError::Consume(e.into()))?;
    loop {
        let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
            Ok(Some(message)) => message.map_err(|e| FollowError::Consume(e.into()))?,
            Ok(None) => return Err(FollowError::Ended),
            Err(_) => {
                check_not_stalled(js, config, *next).await?;
                continue;
            }
        };
        let info = message.info().map_err(FollowError::Info)?;
        let position = info.stream_sequence;
        if position < *next {
            continue; // redelivered after a consumer restart
        }
        if position > *next {
            stop(&format!(
                "the log jumps from position {} to {position}: entries are missing (purged before this replica read them?); \
                 restart this replica with an empty data directory to bootstrap from a snapshot",
                *next - 1
            ));
        }
        // Strictly one after the last entry sent: older ones were skipped and a gap stops the process.
        assert_eq!(position, *next, "invariant: committed entries go to the engine without gap or repeat");
        let committed = committed_entry(position, &message.payload, &config.keys, &config.stream);
        if engine.send(EngineMsg::Committed(committed)).await.is_err() {
            return Ok(());
        }
        *next += 1;
    }
}

/// Nothing arrived for a while: fine if the log has nothing newer, but if
/// it does, the consumer is stuck (its NATS node died, say; the client
/// library's own recreation can take tens of seconds), so start over.
async fn check_not_stalled(js: &jetstream::Context, config: &ClusterConfig, next: u64) -> Result<(), FollowError> {
    let mut stream = js.get_stream(&config.stream).await.map_err(FollowError::OpenStream)?;
    let last = stream.info().await.map_err(FollowError::ReadStream)?.state.last_sequence;
    if last >= next {
        metrics::counter!("bursar_cluster_consumer_stalls_total").increment(1);
        return Err(FollowError::Stalled { next });
    }
    Ok(())
}

/// A stream message as a committed entry for the engine: authenticated
/// and decodable, or a rejection (logged and counted here, recorded in the
/// state when applied).
pub fn committed_entry(position: u64, payload: &bytes::Bytes, keys: &ClusterKeys, stream: &str) -> Committed {
    let judged = seal::judge(keys, stream, payload);
    match &judged.header {
        EntryHeader::Origin(origin) => {
            metrics::counter!("bursar_cluster_entries_by_key_total", "key_id" => origin.key_id.to_string())
                .increment(1);
        }
        EntryHeader::Rejected(r) => {
            metrics::counter!("bursar_cluster_entries_rejected_total", "reason" => r.reason.name()).increment(1);
            tracing::error!(
                position,
                reason = r.reason.name(),
                claimed_node = r.claimed.node,
                claimed_key = r.claimed.key_id,
                bytes = payload.len(),
                "refused a committed log entry: {}",
                r.reason.description()
            );
        }
        EntryHeader::None => unreachable!("judging always names an origin or a rejection"),
    }
    assert!(judged.body.end <= payload.len(), "invariant: the judged body lies inside the payload");
    Committed::new(position, judged.timestamp, judged.header, payload.slice(judged.body))
}

/// Stops the process: continuing would make this replica diverge.
fn stop(message: &str) -> ! {
    tracing::error!("{message}");
    eprintln!("bursar: fatal: {message}");
    std::process::exit(75);
}

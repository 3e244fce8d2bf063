//! The access trail at the edge (docs/api.md, "Access trail"): reads of
//! decrypted personal data and 401/403 refusals become `RecordAccess`
//! commands through the log, so they are durable, replicated and timed by
//! the log like everything else.
//!
//! - A personal-data read waits for its record to be durable before the
//!   data leaves (fail closed: 503 `access_trail_unavailable` otherwise).
//!   Reads waiting at the same time share one command.
//! - Refusals cost the client nothing to cause, so they are aggregated:
//!   one record per (kind, key, client, route) per second, with a count; at
//!   most `REFUSALS_PER_SECOND_MAX` distinct records a second, the rest
//!   counted in one `dropped` record. A refusal storm adds at most that many
//!   records a second to the log.

use crate::problem::Problem;
use axum::http::StatusCode;
use bursar_core::Operation;
use bursar_core::limits::BATCH_EVENTS_MAX;
use bursar_core::service::access::{AccessEvent, AccessKind};
use bursar_server::handle::{EngineHandle, REPLY_WAIT_DEFAULT, Waits};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Distinct refusal records per second; more are only counted.
pub const REFUSALS_PER_SECOND_MAX: usize = 1024;
/// Messages waiting for the recorder; a refusal beyond it is only counted,
/// a personal-data read beyond it is refused (503).
const QUEUE_MAX: usize = 16_384;
/// How long a write of the trail may wait for room in the engine's queue.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

enum Msg {
    Reads(Vec<AccessEvent>, oneshot::Sender<bool>),
    Refusal(AccessEvent),
}

/// The handle the routes use; cheap to share.
#[derive(Clone)]
pub struct AccessRecorder {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// The client's address as 16 bytes (IPv4 mapped into IPv6).
pub fn client_bytes(addr: Option<SocketAddr>) -> [u8; 16] {
    match addr.map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(v6)) => v6.octets(),
        None => [0; 16],
    }
}

impl AccessRecorder {
    /// Starts the recorder task on the current runtime; it ends (after a
    /// last flush) when `stop` turns true or every handle is dropped.
    pub fn start(engine: EngineHandle, stop: watch::Receiver<bool>) -> AccessRecorder {
        let engine = engine.with_waits(Waits { queue: ENGINE_TIMEOUT, reply: REPLY_WAIT_DEFAULT });
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(engine, rx, stop, dropped.clone()));
        AccessRecorder { tx, dropped }
    }

    /// Records personal-data reads and waits until they are durable.
    pub async fn pii_reads(&self, events: Vec<AccessEvent>) -> Result<(), Problem> {
        if events.is_empty() {
            return Ok(());
        }
        let (reply, done) = oneshot::channel();
        let sent = self.tx.try_send(Msg::Reads(events, reply)).is_ok();
        if sent && done.await == Ok(true) {
            return Ok(());
        }
        metrics::counter!("bursar_access_trail_failures_total").increment(1);
        Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "access_trail_unavailable",
            "the read of personal data could not be recorded; nothing was returned",
        )
        .retry_after(1))
    }

    /// Records a refusal, best effort and aggregated; never waits.
    pub fn refusal(&self, event: AccessEvent) {
        if self.tx.try_send(Msg::Refusal(event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Refusals of the current second, by what identifies a record.
type RefusalKey = (u8, u64, [u8; 16], Vec<u8>);

#[derive(Default)]
struct Refusals {
    by_key: BTreeMap<RefusalKey, AccessEvent>,
}

impl Refusals {
    fn add(&mut self, e: AccessEvent, dropped: &AtomicU64) {
        let key = (e.kind, e.key_id, e.client, e.route[..usize::from(e.route_len)].to_vec());
        if let Some(seen) = self.by_key.get_mut(&key) {
            seen.count = seen.count.saturating_add(e.count);
        } else if self.by_key.len() < REFUSALS_PER_SECOND_MAX {
            self.by_key.insert(key, e);
        } else {
            dropped.fetch_add(u64::from(e.count), Ordering::Relaxed);
        }
    }

    /// This second's records, plus one `dropped` record if any were.
    fn take(&mut self, dropped: &AtomicU64) -> Vec<AccessEvent> {
        let mut out: Vec<AccessEvent> = std::mem::take(&mut self.by_key).into_values().collect();
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let count = u32::try_from(lost).unwrap_or(u32::MAX);
            out.push(AccessEvent { count, ..AccessEvent::new(AccessKind::Dropped, 0, "", 0, 0) });
        }
        out
    }
}

async fn run(
    engine: EngineHandle,
    mut rx: mpsc::Receiver<Msg>,
    mut stop: watch::Receiver<bool>,
    dropped: Arc<AtomicU64>,
) {
    let mut refusals = Refusals::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(first) => {
                    let mut reads = Vec::new();
                    let mut waiters = Vec::new();
                    accept(first, &mut reads, &mut waiters, &mut refusals, &dropped);
                    // Reads that arrived meanwhile share the command.
                    while reads.len() < BATCH_EVENTS_MAX / 2 {
                        let Ok(next) = rx.try_recv() else { break };
                        accept(next, &mut reads, &mut waiters, &mut refusals, &dropped);
                    }
                    if !reads.is_empty() {
                        let ok = write(&engine, &reads).await;
                        for w in waiters {
                            let _ = w.send(ok);
                        }
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(&engine, &mut refusals, &dropped).await,
            _ = stop.changed() => break,
        }
    }
    flush(&engine, &mut refusals, &dropped).await;
}

fn accept(
    msg: Msg,
    reads: &mut Vec<AccessEvent>,
    waiters: &mut Vec<oneshot::Sender<bool>>,
    refusals: &mut Refusals,
    dropped: &AtomicU64,
) {
    match msg {
        Msg::Reads(events, reply) if events.len() <= BATCH_EVENTS_MAX - reads.len() => {
            reads.extend(events);
            waiters.push(reply);
        }
        // Too many for one command (a caller cannot ask this much in one
        // page): refused, so its data is not returned.
        Msg::Reads(_, reply) => {
            let _ = reply.send(false);
        }
        Msg::Refusal(e) => refusals.add(e, dropped),
    }
}

async fn flush(engine: &EngineHandle, refusals: &mut Refusals, dropped: &AtomicU64) {
    let events = refusals.take(dropped);
    if !events.is_empty() && !write(engine, &events).await {
        tracing::warn!(records = events.len(), "refusals could not be written to the access trail");
    }
}

/// One `RecordAccess` command; true once it is durable and applied.
async fn write(engine: &EngineHandle, events: &[AccessEvent]) -> bool {
    let body = bytemuck::cast_slice(events).to_vec();
    match engine.request(Operation::RecordAccess, body).await {
        Ok(r) if r.body.is_empty() => {
            metrics::counter!("bursar_access_records_total").increment(events.len() as u64);
            true
        }
        Ok(r) => {
            tracing::error!(results = r.body.len(), "the engine refused access records");
            false
        }
        Err(e @ bursar_server::handle::EngineError::Refused { .. }) => {
            tracing::error!(error = %e, "the engine refused access records");
            false
        }
        Err(_) => false,
    }
}

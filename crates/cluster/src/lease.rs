//! The lease: at most one replica at a time runs side effects (payment-order
//! executors, timers, relays, webhooks).
//!
//! The lease is key [`KEY`] in a JetStream KV bucket whose `max_age` is the
//! TTL, holding the holder's node id. A replica takes it when the key is
//! absent (never written, deleted, or expired by `max_age`) and renews it
//! every `renew_every`; each write restarts the key's age, so the key
//! disappears one TTL after the holder's last write. A renewal that finds
//! someone else's write drops the lease at once. The sequence of the
//! acquiring write is the lease's epoch, a fencing token: sequences only
//! grow, so every acquisition has a larger epoch than all before it.
//!
//! Every write is a compare-and-set on the bucket's whole stream
//! (`Nats-Expected-Last-Sequence`: it lands only directly after the write we
//! read), so the bucket must hold nothing but the lease key. The KV API's
//! own compare-and-set (`create`, `update`) checks only the key's last
//! sequence, and a clustered 2.9 server checks that before replication
//! without counting writes in flight: two concurrent `create`s both succeed
//! (nats-server#4320; reproduced here on 2.9.10 in most of 100 tries, while
//! the stream-level check never let two through). Acquisitions also carry
//! the key's expected last sequence, so the server refuses one that raced
//! a write its stream-level check could not yet see.
//!
//! # Why two holders never overlap
//!
//! A holder counts itself the holder only until [`LeaseConfig::hold_for`]
//! (the TTL less a third) has passed since it *started* its last successful
//! acquire or renew, whether or not it can reach NATS. The write was stored
//! after that start, so the key lives at least one TTL past it and nobody
//! else can acquire it before then; the holder stops a third of a TTL
//! earlier. The third is the margin for the holder's consumers to notice
//! `held == false` and stop, and for clock differences.
//!
//! Clock assumptions: the holder measures with its monotonic clock, the
//! NATS servers expire messages by their wall clocks from the storing
//! leader's timestamp. So the clocks must run at the same rate, and the NATS
//! servers' wall clocks must agree (and not be stepped forward) to well
//! within the margin (1 s with the default 3 s TTL). NTP-synchronised hosts
//! satisfy this; a host whose clock jumps does not.
//!
//! An acquire or renew whose outcome is unknown (timed out) is not counted:
//! if it was in fact stored, the key expires by itself one TTL later.
//! Nobody adopts an existing key, not even one with its own node id: it may
//! belong to an earlier run of the same node that is still alive.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// The key holding the holder's node id.
pub const KEY: &str = "holder";

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// KV bucket name; created with `max_age` = `ttl` and history 1 if absent.
    /// It must hold nothing but the lease key (see the module docs).
    pub bucket: String,
    /// How long the key outlives the holder's last write.
    pub ttl: Duration,
    /// How often the holder renews and the others poll. Must be well below
    /// [`LeaseConfig::hold_for`] (it is lowered to half of it otherwise).
    pub renew_every: Duration,
    /// The bucket's replicas: 3 in a 3-node cluster, 1 on a single server.
    pub replicas: usize,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            bucket: "BURSAR_LEASE".to_string(),
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
            replicas: 3,
        }
    }
}

impl LeaseConfig {
    /// How long after starting a successful acquire or renew this node may
    /// act as the holder: the TTL less a third (see the module docs).
    pub fn hold_for(&self) -> Duration {
        self.ttl - self.ttl / 3
    }
}

/// What this node knows about the lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// This node holds the lease and may run side effects.
    pub held: bool,
    /// KV revision of this node's latest acquisition (0 before the first):
    /// strictly increasing across holders, a fencing token while `held`.
    pub epoch: u64,
}

/// Spawns the lease task on the current tokio runtime and returns its state.
/// It runs until `stop` becomes true (or its sender is dropped), then, if it
/// holds the lease, reports `held == false` and deletes the key if it is
/// still ours, so a successor need not wait for the TTL. Stop side effects
/// before setting `stop`: a successor may start as soon as the key is gone.
pub fn run(
    js: jetstream::Context,
    node_id: String,
    mut config: LeaseConfig,
    stop: watch::Receiver<bool>,
) -> watch::Receiver<LeaseState> {
    if config.renew_every >= config.hold_for() {
        let lowered = config.hold_for() / 2;
        tracing::warn!(renew_every = ?config.renew_every, ttl = ?config.ttl, ?lowered, "lease renewal too slow for its TTL");
        config.renew_every = lowered;
    }
    let (state, receiver) = watch::channel(LeaseState::default());
    metrics::gauge!("bursar_lease_held").set(0.0);
    let lease = Lease { js, value: Bytes::from(node_id.clone()), node_id, config, state, kv: None, holding: None };
    tokio::spawn(lease.run(stop));
    receiver
}

/// What a lease write puts in the key.
#[derive(Clone, Copy)]
enum Write {
    /// Our node id: acquire or renew.
    Hold,
    /// A KV delete marker: release.
    Release,
}

/// The lease as this node holds it.
struct Holding {
    epoch: u64,
    /// Our last write, the compare-and-set expectation of the next renew.
    revision: u64,
    /// When we stop counting ourselves the holder unless renewed.
    valid_until: Instant,
}

struct Lease {
    js: jetstream::Context,
    node_id: String,
    value: Bytes,
    config: LeaseConfig,
    state: watch::Sender<LeaseState>,
    kv: Option<kv::Store>,
    holding: Option<Holding>,
}

impl Lease {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.config.renew_every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let valid_until = self.holding.as_ref().map(|h| h.valid_until);
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = sleep_until(valid_until) => self.lapse("not renewed in time"),
                _ = ticks.tick() => {
                    // A stop cancels a NATS call in flight; its effect (if any) expires with the TTL.
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => break,
                        () = self.tick() => {}
                    }
                }
            }
        }
        self.release().await;
    }

    async fn tick(&mut self) {
        let Some(kv) = self.bucket().await else { return };
        if self.holding.is_some() {
            self.renew(&kv).await;
        } else {
            self.acquire(&kv).await;
        }
    }

    /// The bucket, opened on first use; `None` (logged) while unreachable.
    async fn bucket(&mut self) -> Option<kv::Store> {
        if self.kv.is_none() {
            let config = kv::Config {
                bucket: self.config.bucket.clone(),
                history: 1,
                max_age: self.config.ttl,
                num_replicas: self.config.replicas,
                ..Default::default()
            };
            match crate::bucket::open(&self.js, config, self.config.ttl)
                .await
                .map_err(LeaseError::from)
                .and_then(|kv| self.check(kv))
            {
                Ok(kv) => self.kv = Some(kv),
                Err(e) => tracing::warn!(node = %self.node_id, error = %e, "lease bucket unavailable"),
            }
        }
        self.kv.clone()
    }

    /// The safety argument needs the key to live at least one TTL.
    fn check(&self, kv: kv::Store) -> Result<kv::Store, LeaseError> {
        let max_age = kv.stream.cached_info().config.max_age;
        if max_age < self.config.ttl {
            return Err(LeaseError::ShortMaxAge { bucket: self.config.bucket.clone(), max_age, ttl: self.config.ttl });
        }
        Ok(kv)
    }

    async fn acquire(&mut self, kv: &kv::Store) {
        let started = Instant::now();
        // Past `hold_for` an acquisition would be worthless: bound it by that.
        match tokio::time::timeout(self.config.hold_for(), self.create(kv)).await {
            Ok(Ok(Some(revision))) => self.acquired(revision, started),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(node = %self.node_id, error = %e, "lease acquisition failed"),
            Err(_) => tracing::warn!(node = %self.node_id, "lease acquisition timed out"),
        }
    }

    /// Writes the key if it is free: `Some(revision)` if we did.
    async fn create(&self, kv: &kv::Store) -> Result<Option<u64>, LeaseError> {
        // The stream's end first, then the key: the key read is at least as new.
        let end = kv.stream.get_info().await.map_err(LeaseError::ReadStream)?.state.last_sequence;
        let key_end = match kv.entry(KEY).await.map_err(LeaseError::Read)? {
            None => 0,
            Some(entry) if entry.operation == kv::Operation::Put => {
                let holder = String::from_utf8_lossy(&entry.value);
                tracing::trace!(node = %self.node_id, %holder, "lease held");
                return Ok(None);
            }
            // A release marker that still ends the stream; otherwise it moved on since.
            Some(entry) if entry.revision == end => entry.revision,
            Some(_) => return Ok(None),
        };
        match self.write(kv, Write::Hold, end, key_end).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(LeaseError::Write(e)),
        }
    }

    /// Writes the key only if the stream still ends at `end` and the key's
    /// last write is `key_end` (0: none). Returns the write's sequence.
    async fn write(&self, kv: &kv::Store, write: Write, end: u64, key_end: u64) -> Result<u64, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_EXPECTED_LAST_SEQUENCE, HeaderValue::from(end));
        headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(key_end));
        let value = match write {
            Write::Hold => self.value.clone(),
            Write::Release => {
                headers.insert("KV-Operation", "DEL");
                Bytes::new()
            }
        };
        let ack = self.js.publish_with_headers(format!("{}{KEY}", kv.prefix), headers, value).await?.await?;
        Ok(ack.sequence)
    }

    fn acquired(&mut self, revision: u64, started: Instant) {
        let valid_until = started + self.config.hold_for();
        if Instant::now() >= valid_until {
            // Too slow to be of use; the key expires by itself.
            tracing::warn!(node = %self.node_id, epoch = revision, "lease acquired too late to use");
            return;
        }
        self.holding = Some(Holding { epoch: revision, revision, valid_until });
        self.state.send_replace(LeaseState { held: true, epoch: revision });
        metrics::counter!("bursar_lease_acquired_total").increment(1);
        metrics::gauge!("bursar_lease_held").set(1.0);
        tracing::info!(node = %self.node_id, epoch = revision, "lease acquired");
    }

    async fn renew(&mut self, kv: &kv::Store) {
        let Some(holding) = &self.holding else { return };
        let started = Instant::now();
        // Bounded by our validity: an answer after it could not extend it safely.
        let limit = holding.valid_until.saturating_duration_since(started);
        match tokio::time::timeout(limit, self.write(kv, Write::Hold, holding.revision, holding.revision)).await {
            Ok(Ok(revision)) => {
                let valid_until = started + self.config.hold_for();
                if let Some(holding) = &mut self.holding {
                    holding.revision = revision;
                    holding.valid_until = valid_until;
                }
            }
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                self.lapse("the key changed: someone else holds it");
            }
            Ok(Err(e)) => tracing::warn!(node = %self.node_id, error = %e, "lease renewal failed"),
            Err(_) => self.lapse("renewal did not finish in time"),
        }
    }

    fn lapse(&mut self, why: &str) {
        if let Some(holding) = self.holding.take() {
            self.state.send_replace(LeaseState { held: false, epoch: holding.epoch });
            metrics::gauge!("bursar_lease_held").set(0.0);
            tracing::warn!(node = %self.node_id, epoch = holding.epoch, reason = why, "lease lost");
        }
    }

    /// Hands the lease back: first `held == false`, then the key is deleted
    /// if our last write is still the latest.
    async fn release(&mut self) {
        let Some(holding) = self.holding.take() else { return };
        self.state.send_replace(LeaseState { held: false, epoch: holding.epoch });
        metrics::gauge!("bursar_lease_held").set(0.0);
        let Some(kv) = &self.kv else { return };
        let delete = self.write(kv, Write::Release, holding.revision, holding.revision);
        match tokio::time::timeout(self.config.renew_every, delete).await {
            Ok(Ok(_)) => tracing::info!(node = %self.node_id, epoch = holding.epoch, "lease released"),
            Ok(Err(e)) => {
                tracing::warn!(node = %self.node_id, error = %e, "lease release failed; it expires by itself")
            }
            Err(_) => tracing::warn!(node = %self.node_id, "lease release timed out; it expires by itself"),
        }
    }
}

/// Returns once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    _ = stop.wait_for(|stop| *stop).await;
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
/// A step of holding the lease failed (logged; the loop retries).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Bucket(#[from] crate::bucket::BucketError),
    #[error("bucket {bucket} has max_age {max_age:?} (0 = never), the lease needs at least the TTL {ttl:?}")]
    ShortMaxAge { bucket: String, max_age: Duration, ttl: Duration },
    #[error("reading the lease stream: {0}")]
    ReadStream(#[source] async_nats::jetstream::stream::InfoError),
    #[error("reading the lease: {0}")]
    Read(#[source] kv::EntryError),
    #[error("writing the lease: {0}")]
    Write(#[source] PublishError),
}

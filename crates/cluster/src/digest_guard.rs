//! The divergence guard: replicas compare state digests at equal log
//! positions, and a replica whose state differs stops loudly.
//!
//! Each replica records the digest it computed at a position (the caller
//! picks the positions, multiples of some N) as key `d.<position>.<node>`
//! (position zero-padded to 20 digits, so keys sort) in a JetStream KV
//! bucket, value the digest in hex. Every guard watches the bucket and
//! judges each position it has its own digest for with [`judge`]: the
//! digest a strict majority recorded is right; without a majority (two
//! replicas that differ, say) the earliest recorded digest is, so exactly
//! one of two stops; a later third digest can still outvote the earliest.
//!
//! Records are authenticated: the value is `<digest hex>:<key id>:<mac
//! hex>`, the MAC (the cluster key's digest-record subkey) covering the
//! bucket, the record's key and the digest. A record without a valid MAC
//! (written by someone with access to the bucket but no cluster key) is
//! ignored and counted, so it can neither stop a replica nor outvote one.
//!
//! Memory is bounded: only the latest `keep_positions` positions of our own
//! digests are judged, with at most [`NODES_MAX`] digests each. Others'
//! digests for positions we have not reached are not kept: when we record
//! a position, we read what the others already recorded for it.

use crate::cluster_key::{ClusterKeys, Purpose};
use async_nats::jetstream::{self, kv};
use bursar_runtime::resilience::Backoff;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most digests kept per position (a cluster has a handful of replicas).
pub const NODES_MAX: usize = 64;
/// Attempts at reading the others' digests at a position we recorded.
const FETCH_ATTEMPTS: usize = 3;

#[derive(Clone, Debug)]
pub struct DigestGuardConfig {
    /// KV bucket name; created with history 1 and `max_age` if absent.
    pub bucket: String,
    /// How long recorded digests are kept: longer than the slowest
    /// replica's lag behind the fastest.
    pub max_age: Duration,
    /// The bucket's replicas: 3 in a 3-node cluster, 1 on a single server.
    pub replicas: usize,
    /// How many of our latest positions are judged.
    pub keep_positions: usize,
    /// Time limit of each NATS call.
    pub call_timeout: Duration,
}

impl Default for DigestGuardConfig {
    fn default() -> Self {
        DigestGuardConfig {
            bucket: "BURSAR_DIGESTS".to_string(),
            max_age: Duration::from_secs(3600),
            replicas: 3,
            keep_positions: 64,
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// One replica's digest at a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub node: String,
    /// KV revision of the record: which of two came first.
    pub revision: u64,
    pub digest: [u8; 32],
}

/// This replica's state differs from the agreed one: it must stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub position: u64,
    /// This replica's node id.
    pub node: String,
    pub mine: [u8; 32],
    /// The digest judged right, and the node that recorded it first.
    pub other: [u8; 32],
    pub other_node: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "state diverged at position {}: this replica (node {}) has {}, node {} has {}",
            self.position,
            self.node,
            hex(&self.mine),
            self.other_node,
            hex(&self.other)
        )
    }
}

impl std::error::Error for Divergence {}

/// Judges the digests recorded at `position`: `Some` iff replica `me` is
/// divergent and must stop. The right digest is the one a strict majority
/// recorded, else the earliest recorded (lowest revision). A replica that
/// recorded nothing here is not judged.
pub fn judge(position: u64, records: &[Record], me: &str) -> Option<Divergence> {
    let mine = records.iter().find(|r| r.node == me)?.digest;
    let right = majority(records).or_else(|| earliest(records.iter()).map(|r| r.digest))?;
    if mine == right {
        return None;
    }
    let witness = earliest(records.iter().filter(|r| r.digest == right))?;
    Some(Divergence { position, node: me.to_string(), mine, other: right, other_node: witness.node.clone() })
}

/// The digest more than half of `records` agree on, if any.
fn majority(records: &[Record]) -> Option<[u8; 32]> {
    let votes = |digest: &[u8; 32]| records.iter().filter(|r| r.digest == *digest).count();
    records.iter().map(|r| r.digest).find(|d| 2 * votes(d) > records.len())
}

fn earliest<'a>(records: impl Iterator<Item = &'a Record>) -> Option<&'a Record> {
    records.min_by(|a, b| (a.revision, &a.node).cmp(&(b.revision, &b.node)))
}

/// A node id that cannot be a key token of the digest bucket.
#[derive(Debug, thiserror::Error)]
#[error("node id {node_id:?} must be non-empty, of letters, digits and -/_=")]
pub struct BadNodeId {
    pub node_id: String,
}

/// Spawns the guard on the current tokio runtime. It records every
/// `(position, digest)` received on `digests` and reports at most one
/// [`Divergence`] (the caller logs it and exits). It ends after a report,
/// when `digests` closes or when the receiver is dropped; ending without a
/// report closes the receiver. Errs if `node_id` cannot be a key token.
pub fn run(
    js: jetstream::Context,
    node_id: String,
    config: DigestGuardConfig,
    keys: ClusterKeys,
    digests: mpsc::Receiver<(u64, [u8; 32])>,
) -> Result<oneshot::Receiver<Divergence>, BadNodeId> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "-/_=".contains(c);
    if node_id.is_empty() || !node_id.chars().all(valid) {
        return Err(BadNodeId { node_id });
    }
    let (report, receiver) = oneshot::channel();
    tokio::spawn(guard(js, node_id, config, keys, digests, report));
    Ok(receiver)
}

/// Retry pacing of NATS calls.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

async fn guard(
    js: jetstream::Context,
    node: String,
    config: DigestGuardConfig,
    keys: ClusterKeys,
    mut digests: mpsc::Receiver<(u64, [u8; 32])>,
    report: oneshot::Sender<Divergence>,
) {
    let Some(kv) = open(&js, &config, &report).await else { return };
    let mut guard = Guard { node, config, keys, kv, window: BTreeMap::new(), report: Some(report) };
    let mut backoff = backoff();
    while guard.report.as_ref().is_some_and(|r| !r.is_closed()) {
        let error = match tokio::time::timeout(guard.config.call_timeout, guard.kv.watch("d.>")).await {
            Ok(Ok(watch)) => {
                backoff.reset();
                // Records stored while we were not watching.
                guard.refetch().await;
                match guard.follow(watch, &mut digests).await {
                    Some(error) => error,
                    None => return,
                }
            }
            Ok(Err(e)) => format!("watching the digests: {e}"),
            Err(_) => "watching the digests: timed out".to_string(),
        };
        let wait = backoff.next_wait();
        tracing::warn!(node = %guard.node, %error, retry_in_ms = wait.as_millis() as u64, "digest guard");
        tokio::time::sleep(wait).await;
    }
}

/// Opens the bucket, retrying until it succeeds or nobody listens.
async fn open(
    js: &jetstream::Context,
    config: &DigestGuardConfig,
    report: &oneshot::Sender<Divergence>,
) -> Option<kv::Store> {
    let kv_config = kv::Config {
        bucket: config.bucket.clone(),
        history: 1,
        max_age: config.max_age,
        num_replicas: config.replicas,
        ..Default::default()
    };
    let mut backoff = backoff();
    while !report.is_closed() {
        match crate::bucket::open(js, kv_config.clone(), config.call_timeout).await {
            Ok(kv) => return Some(kv),
            Err(e) => tracing::warn!(error = %e, "digest bucket unavailable"),
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
    None
}

struct Guard {
    node: String,
    config: DigestGuardConfig,
    keys: ClusterKeys,
    kv: kv::Store,
    /// Positions we recorded a digest for (the latest `keep_positions`):
    /// node -> (revision, digest), ours included.
    window: BTreeMap<u64, BTreeMap<String, (u64, [u8; 32])>>,
    /// Taken when a divergence is reported.
    report: Option<oneshot::Sender<Divergence>>,
}

impl Guard {
    /// Follows the watch and our digests: `None` when the guard is done,
    /// `Some(error)` when the watch must be made again.
    async fn follow(&mut self, mut watch: kv::Watch, digests: &mut mpsc::Receiver<(u64, [u8; 32])>) -> Option<String> {
        loop {
            let touched = tokio::select! {
                own = digests.recv() => match own {
                    Some((position, digest)) => self.record(position, digest).await,
                    None => return None,
                },
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => self.observe(&entry),
                    Some(Err(e)) => return Some(format!("watch failed: {e}")),
                    None => return Some("watch ended".to_string()),
                },
            };
            if let Some(position) = touched {
                self.check(position);
            }
            if self.report.as_ref().is_none_or(|r| r.is_closed()) {
                return None;
            }
        }
    }

    /// Records our digest (retrying until stored), then reads what the
    /// others recorded at that position before our watch could see it.
    async fn record(&mut self, position: u64, digest: [u8; 32]) -> Option<u64> {
        let key = format!("d.{position:020}.{}", self.node);
        let value = Bytes::from(seal_record(&self.keys, &self.config.bucket, &key, &digest));
        let mut backoff = backoff();
        let revision = loop {
            match tokio::time::timeout(self.config.call_timeout, self.kv.put(&key, value.clone())).await {
                Ok(Ok(revision)) => break revision,
                Ok(Err(e)) => tracing::warn!(node = %self.node, position, error = %e, "recording the digest failed"),
                Err(_) => tracing::warn!(node = %self.node, position, "recording the digest timed out"),
            }
            if self.report.as_ref().is_none_or(|r| r.is_closed()) {
                return None;
            }
            tokio::time::sleep(backoff.next_wait()).await;
        };
        self.window.entry(position).or_default().insert(self.node.clone(), (revision, digest));
        while self.window.len() > self.config.keep_positions.max(1) {
            self.window.pop_first();
        }
        self.fetch(position).await;
        Some(position)
    }

    /// Reads every digest recorded at `position` into the window, with a
    /// few bounded attempts; after those, only later records are compared.
    async fn fetch(&mut self, position: u64) {
        let mut backoff = backoff();
        for _ in 0..FETCH_ATTEMPTS {
            match tokio::time::timeout(self.config.call_timeout, self.read(position)).await {
                Ok(Ok(entries)) => {
                    entries.iter().for_each(|e| _ = self.observe(e));
                    return;
                }
                Ok(Err(e)) => tracing::warn!(node = %self.node, position, error = %e, "reading others' digests failed"),
                Err(_) => tracing::warn!(node = %self.node, position, "reading others' digests timed out"),
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }

    /// The records at `position` (ours among them, so there is at least one).
    async fn read(&self, position: u64) -> Result<Vec<kv::Entry>, async_nats::Error> {
        let mut records = self.kv.watch_with_history(format!("d.{position:020}.*")).await?;
        let mut entries = Vec::new();
        while let Some(entry) = records.next().await {
            let entry = entry?;
            let last = entry.delta == 0;
            entries.push(entry);
            if last || entries.len() >= NODES_MAX {
                break;
            }
        }
        Ok(entries)
    }

    /// Re-reads every position in the window (after the watch was remade).
    async fn refetch(&mut self) {
        let positions: Vec<u64> = self.window.keys().copied().collect();
        for position in positions {
            self.fetch(position).await;
        }
    }

    /// Takes another node's record into the window if we judge its
    /// position: `Some(position)` if the window changed.
    fn observe(&mut self, entry: &kv::Entry) -> Option<u64> {
        let (position, node) = parse_key(&entry.key)?;
        if node == self.node {
            return None; // ours come from `record`
        }
        let records = self.window.get_mut(&position)?;
        if entry.operation != kv::Operation::Put {
            return records.remove(node).map(|_| position);
        }
        let digest = match open_record(&self.keys, &self.config.bucket, &entry.key, &entry.value) {
            Ok(digest) => digest,
            Err(why) => {
                metrics::counter!("bursar_cluster_digest_records_refused_total").increment(1);
                tracing::warn!(key = %entry.key, "ignoring a digest record: {why}");
                return None;
            }
        };
        if records.len() >= NODES_MAX && !records.contains_key(node) {
            return None;
        }
        records.insert(node.to_string(), (entry.revision, digest));
        Some(position)
    }

    fn check(&mut self, position: u64) {
        let Some(records) = self.window.get(&position) else { return };
        let records: Vec<Record> =
            records.iter().map(|(node, &(revision, digest))| Record { node: node.clone(), revision, digest }).collect();
        if let Some(divergence) = judge(position, &records, &self.node) {
            tracing::error!(%divergence, "divergence guard");
            if let Some(report) = self.report.take() {
                _ = report.send(divergence);
            }
        }
    }
}

/// A record's value: the digest under the active key's MAC.
pub fn seal_record(keys: &ClusterKeys, bucket: &str, key: &str, digest: &[u8; 32]) -> String {
    let id = keys.active();
    let mac = keys
        .mac(id, Purpose::DigestRecord, &[bucket.as_bytes(), key.as_bytes(), digest])
        .expect("invariant: the active key is held");
    format!("{}:{id}:{}", hex(digest), hex(&mac))
}

/// The digest in a record's value, if its MAC verifies.
pub fn open_record(keys: &ClusterKeys, bucket: &str, key: &str, value: &[u8]) -> Result<[u8; 32], &'static str> {
    let mut parts = value.splitn(3, |b| *b == b':');
    let (Some(digest), Some(id), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not of the form digest:key:mac");
    };
    let digest = parse_hex(digest).ok_or("the digest is not 64 hex digits")?;
    let mac = parse_hex(mac).ok_or("the MAC is not 64 hex digits")?;
    let id = std::str::from_utf8(id).ok().and_then(|t| t.parse::<u32>().ok()).ok_or("the key id is not a number")?;
    match keys.verify(id, Purpose::DigestRecord, &[bucket.as_bytes(), key.as_bytes(), &digest], &mac) {
        Ok(()) => Ok(digest),
        Err(crate::cluster_key::MacError::UnknownKey) => Err("it names a cluster key this replica does not hold"),
        Err(crate::cluster_key::MacError::Mismatch) => Err("its MAC does not verify"),
    }
}

/// `d.<position>.<node>` -> (position, node).
fn parse_key(key: &str) -> Option<(u64, &str)> {
    let (position, node) = key.strip_prefix("d.")?.split_once('.')?;
    Some((position.parse().ok()?, node)).filter(|_| !node.is_empty())
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(node: &str, revision: u64, digest: u8) -> Record {
        Record { node: node.to_string(), revision, digest: [digest; 32] }
    }

    fn stops(records: &[Record], me: &str) -> bool {
        judge(7, records, me).is_some()
    }

    #[test]
    fn equal_digests_stop_nobody() {
        let records = [record("1", 5, 0xaa), record("2", 6, 0xaa), record("3", 9, 0xaa)];
        assert!(["1", "2", "3"].iter().all(|me| !stops(&records, me)));
        assert!(!stops(&records[..1], "1"), "alone there is nothing to compare");
    }

    #[test]
    fn a_replica_without_a_record_is_not_judged() {
        let records = [record("1", 5, 0xaa), record("2", 6, 0xbb)];
        assert!(!stops(&records, "3"));
        assert!(!stops(&[], "3"));
    }

    #[test]
    fn of_two_that_differ_the_later_stops() {
        let records = [record("2", 10, 0xbb), record("1", 4, 0xaa)];
        assert!(!stops(&records, "1"));
        let divergence = judge(7, &records, "2").expect("the later record is divergent");
        assert_eq!(
            divergence,
            Divergence { position: 7, node: "2".into(), mine: [0xbb; 32], other: [0xaa; 32], other_node: "1".into() }
        );
    }

    #[test]
    fn a_majority_outvotes_the_earliest() {
        // Node 3 recorded first but is alone: a later majority decides.
        let records = [record("3", 1, 0xcc), record("1", 2, 0xaa), record("2", 3, 0xaa)];
        assert!(!stops(&records, "1") && !stops(&records, "2"));
        let divergence = judge(7, &records, "3").expect("the minority is divergent");
        assert_eq!((divergence.other, divergence.other_node.as_str()), ([0xaa; 32], "1"));
        // With only the first two recorded, node 1 (later) would have stopped.
        assert!(stops(&records[..2], "1") && !stops(&records[..2], "3"));
    }

    #[test]
    fn a_minority_of_several_stops() {
        let records = [
            record("1", 1, 0xaa),
            record("2", 2, 0xbb),
            record("3", 3, 0xaa),
            record("4", 4, 0xbb),
            record("5", 5, 0xbb),
        ];
        assert_eq!(["1", "2", "3", "4", "5"].map(|me| stops(&records, me)), [true, false, true, false, false]);
        assert_eq!(judge(7, &records, "1").map(|d| d.other_node), Some("2".to_string()));
    }

    #[test]
    fn without_a_majority_all_but_the_earliest_digest_stop() {
        let all_differ = [record("1", 8, 0x01), record("2", 3, 0x02), record("3", 5, 0x03)];
        assert_eq!(["1", "2", "3"].map(|me| stops(&all_differ, me)), [true, false, true]);
        let tie = [record("1", 2, 0xaa), record("2", 1, 0xbb), record("3", 3, 0xaa), record("4", 4, 0xbb)];
        assert_eq!(["1", "2", "3", "4"].map(|me| stops(&tie, me)), [true, false, true, false]);
    }

    #[test]
    fn display_names_position_nodes_and_both_hashes() {
        let divergence = Divergence {
            position: 20000,
            node: "2".into(),
            mine: [0xab; 32],
            other: [0x01; 32],
            other_node: "1".into(),
        };
        assert_eq!(
            divergence.to_string(),
            format!(
                "state diverged at position 20000: this replica (node 2) has {}, node 1 has {}",
                "ab".repeat(32),
                "01".repeat(32)
            )
        );
    }

    #[test]
    fn records_verify_only_under_a_held_key_for_their_own_key() {
        let keys = ClusterKeys::parse(&format!("2:{}", "11".repeat(32))).unwrap();
        let value = seal_record(&keys, "B", "d.00000000000000000010.1", &[7; 32]);
        assert_eq!(open_record(&keys, "B", "d.00000000000000000010.1", value.as_bytes()), Ok([7; 32]));
        assert!(open_record(&keys, "B", "d.00000000000000000010.2", value.as_bytes()).is_err(), "moved");
        assert!(open_record(&keys, "C", "d.00000000000000000010.1", value.as_bytes()).is_err(), "other bucket");
        assert!(open_record(&keys, "B", "d.00000000000000000010.1", hex(&[7; 32]).as_bytes()).is_err(), "bare");
        let other = ClusterKeys::parse(&format!("2:{}", "22".repeat(32))).unwrap();
        assert!(open_record(&other, "B", "d.00000000000000000010.1", value.as_bytes()).is_err(), "forged");
        for garbage in [&b""[..], b"::", b"zz:1:zz", &[0xff; 200]] {
            assert!(open_record(&keys, "B", "d.1.1", garbage).is_err());
        }
    }

    #[test]
    fn keys_and_hex_round_trip() {
        assert_eq!(parse_key("d.00000000000000020000.node-2"), Some((20000, "node-2")));
        assert_eq!(parse_key("d.00000000000000020000."), None);
        assert_eq!(parse_key("x.1.n"), None);
        assert_eq!(parse_key("d.1x.n"), None);
        let digest: [u8; 32] = std::array::from_fn(|i| (i * 8) as u8);
        assert_eq!(parse_hex(hex(&digest).as_bytes()), Some(digest));
        assert_eq!(parse_hex(b"zz"), None);
        assert_eq!(parse_hex("g".repeat(64).as_bytes()), None);
    }
}

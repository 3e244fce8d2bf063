//! Snapshots in JetStream's object store on a real 3-node cluster with an R3
//! bucket: upload, newest, prune, download into an empty data dir, an
//! upload with one node down, and what a damaged object or a failed upload
//! leaves behind. Needs `nats-server` (fails, never skips, when missing).

use async_nats::jetstream;
use bursar_cluster::snapshot_objects::{
    SnapshotObjectsConfig, download, newest, object_name, positions, prune, upload,
};
use bursar_core::command::{Command, LogCommand, Operation};
use bursar_core::machine::Machine;
use bursar_core::records::encode_all;
use bursar_core::{Account, Ledger, Limits, Transfer};
use bursar_log::SnapshotStore;
use bursar_testkit::nats_cluster::NatsCluster;
use futures_util::TryStreamExt;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// The cluster key snapshot objects are sealed with.
fn keys() -> &'static bursar_cluster::ClusterKeys {
    static KEYS: std::sync::OnceLock<bursar_cluster::ClusterKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        bursar_cluster::ClusterKeys::parse("1:c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00")
            .unwrap()
    })
}

const ACCOUNTS: u128 = 5000;

async fn connect(urls: &str) -> jetstream::Context {
    bursar_testkit::jetstream::connect(urls, Duration::from_secs(5)).await
}

/// Retries `attempt` until it succeeds: only for waiting out leader
/// elections (cluster start, a killed node), never to hide a failure.
async fn eventually<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "{what}: still failing after 60 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A ledger with `ACCOUNTS` accounts (two arena chunks) taking transfers.
struct Bank {
    m: Machine,
    next_transfer: u128,
}

impl Bank {
    fn new() -> Bank {
        let mut bank = Bank { m: Machine::new(Limits::default()), next_transfer: 1 };
        let ledger = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
        bank.apply(Operation::CreateLedgers, encode_all(&[ledger]));
        let accounts: Vec<Account> =
            (1..=ACCOUNTS).map(|id| Account { id, ledger: 1, code: 10, ..Default::default() }).collect();
        bank.apply(Operation::CreateAccounts, encode_all(&accounts));
        bank
    }

    fn apply(&mut self, operation: Operation, events: &[u8]) {
        let position = self.m.position() + 1;
        let command = LogCommand::Plain(Command { operation, events });
        let out = self.m.apply_entry(position, position * 1_000_000, &[command]);
        assert!(out[0].1.is_empty(), "{:?}", out[0]);
    }

    fn transfers(&mut self, count: u128) {
        let transfers: Vec<Transfer> = (self.next_transfer..self.next_transfer + count)
            .map(|id| Transfer {
                id,
                debit_account_id: 1 + id % ACCOUNTS,
                credit_account_id: 1 + (id * 7 + 1) % ACCOUNTS,
                amount: id,
                ledger: 1,
                code: 1,
                ..Default::default()
            })
            .filter(|t| t.debit_account_id != t.credit_account_id)
            .collect();
        self.next_transfer += count;
        self.apply(Operation::CreateTransfers, encode_all(&transfers));
    }

    /// Writes a snapshot of the current state into the store in `dir`.
    fn snapshot_into(&self, dir: &Path) -> Stored {
        let chain = [self.m.position() as u8; 32];
        let info = SnapshotStore::open(dir).unwrap().write(&self.m.snapshot(), chain).unwrap();
        Stored { position: info.position, chain, digest: self.m.digest() }
    }
}

/// What identifies a snapshot.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    position: u64,
    chain: [u8; 32],
    digest: [u8; 32],
}

/// The newest snapshot in `dir`, checked by restoring it.
fn latest(dir: &Path) -> Stored {
    let s = SnapshotStore::open(dir).unwrap().load_latest().unwrap().expect("a snapshot");
    let stored = Stored { position: s.position, chain: s.chain, digest: s.digest };
    let restored = Machine::restore(Limits::default(), s.chunks).unwrap();
    assert_eq!((restored.position(), restored.digest()), (stored.position, stored.digest));
    stored
}

fn start_cluster(dir: &Path) -> NatsCluster {
    NatsCluster::start(dir, 3).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_round_trip_through_an_r3_bucket_and_upload_with_a_node_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(&dir.path().join("nats"));
    let js = connect(&cluster.urls()).await;
    // Small object-store messages, so every bundle spans many of them.
    let config = SnapshotObjectsConfig { replicas: 3, chunk_bytes: 64 << 10, ..Default::default() };
    let empty: Vec<u64> = eventually("listing a missing bucket", || positions(&js, &config)).await;
    assert_eq!(empty, Vec::<u64>::new());

    let local = tempfile::tempdir().unwrap();
    let mut bank = Bank::new();
    bank.transfers(500);
    let first = bank.snapshot_into(local.path());
    // The first upload creates the R3 bucket: retried while the new
    // cluster's meta leader learns its peers.
    let bytes = eventually("the first upload", || upload(&js, &config, keys(), local.path(), first.position)).await;
    let size = SnapshotStore::open_read_only(local.path()).unwrap().bundle_size(first.position).unwrap();
    assert_eq!(bytes, size);
    assert!(bytes > 8 * config.chunk_bytes as u64, "a snapshot of {ACCOUNTS} accounts is {bytes} bytes");
    assert_eq!(newest(&js, &config).await.unwrap(), Some(first.position));

    bank.transfers(500);
    let second = bank.snapshot_into(local.path());
    assert!(second.position > first.position);
    upload(&js, &config, keys(), local.path(), second.position).await.unwrap();
    assert_eq!(positions(&js, &config).await.unwrap(), vec![first.position, second.position]);
    assert_eq!(newest(&js, &config).await.unwrap(), Some(second.position));

    assert_eq!(prune(&js, &config, 1).await.unwrap(), Some(second.position));
    assert_eq!(positions(&js, &config).await.unwrap(), vec![second.position]);
    let fresh = tempfile::tempdir().unwrap();
    let err = download(&js, &config, keys(), first.position, fresh.path()).await.unwrap_err().to_string();
    assert!(err.contains(&object_name(first.position)), "{err}");
    // A replica holding other keys refuses the object and keeps nothing of it.
    let other = bursar_cluster::ClusterKeys::parse(&format!("1:{}", "ab".repeat(32))).unwrap();
    let err = download(&js, &config, &other, second.position, fresh.path()).await.unwrap_err().to_string();
    assert!(err.contains("MAC does not match"), "{err}");
    assert!(SnapshotStore::open(fresh.path()).unwrap().list().unwrap().is_empty(), "the refused snapshot is gone");
    download(&js, &config, keys(), second.position, fresh.path()).await.unwrap();
    assert_eq!(latest(fresh.path()), second);

    // One node down: the R3 bucket still has its quorum.
    cluster.kill(0);
    // Wait out the elections a lost node may cause (meta or stream leader).
    eventually("listing with a node down", || positions(&js, &config)).await;
    bank.transfers(500);
    let third = bank.snapshot_into(local.path());
    upload(&js, &config, keys(), local.path(), third.position).await.unwrap();
    assert_eq!(newest(&js, &config).await.unwrap(), Some(third.position));
    let fresh = tempfile::tempdir().unwrap();
    download(&js, &config, keys(), third.position, fresh.path()).await.unwrap();
    assert_eq!(latest(fresh.path()), third);
}

/// Chunk subjects of the bucket with their message counts.
async fn subjects(js: &jetstream::Context, filter: &str) -> Vec<(String, usize)> {
    let stream = js.get_stream("OBJ_BURSAR_SNAPSHOTS").await.unwrap();
    let mut out: Vec<(String, usize)> = stream.info_with_subjects(filter).await.unwrap().try_collect().await.unwrap();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_objects_are_refused_and_failed_uploads_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(&dir.path().join("nats"));
    let js = connect(&cluster.urls()).await;
    let config = SnapshotObjectsConfig { replicas: 3, ..Default::default() };
    let local = tempfile::tempdir().unwrap();
    let mut bank = Bank::new();
    bank.transfers(100);
    let good = bank.snapshot_into(local.path());
    eventually("the first upload", || upload(&js, &config, keys(), local.path(), good.position)).await;
    let bucket = js.get_object_store("BURSAR_SNAPSHOTS").await.unwrap();

    // Objects newer than the good one: garbage, and a real bundle cut short.
    let mut bundle = Vec::new();
    SnapshotStore::open_read_only(local.path()).unwrap().export_bundle(good.position, &mut bundle).unwrap();
    let damaged = [
        (good.position + 1, b"not a bundle".to_vec(), "not a snapshot bundle"),
        (good.position + 2, bundle[..bundle.len() / 2].to_vec(), "ends inside"),
    ];
    for (position, bytes, expected) in damaged {
        bucket.put(object_name(position).as_str(), &mut &bytes[..]).await.unwrap();
        assert_eq!(newest(&js, &config).await.unwrap(), Some(position));
        let fresh = tempfile::tempdir().unwrap();
        let err = download(&js, &config, keys(), position, fresh.path()).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        let store = SnapshotStore::open(fresh.path()).unwrap();
        assert!(store.list().unwrap().is_empty(), "a damaged object left a snapshot");
    }

    // An upload that failed after some chunks: chunks no object names.
    let orphan = "$O.BURSAR_SNAPSHOTS.C.orphanedupload";
    for _ in 0..3 {
        js.publish(orphan, vec![7u8; 1000].into()).await.unwrap().await.unwrap();
    }
    let chunks = "$O.BURSAR_SNAPSHOTS.C.>";
    assert_eq!(subjects(&js, chunks).await.len(), 4, "three objects and the orphan");
    // Young orphans may be an upload in progress: kept.
    assert_eq!(prune(&js, &config, 1).await.unwrap(), Some(good.position + 2));
    let left = subjects(&js, chunks).await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|(s, n)| s == orphan && *n == 3), "{left:?}");
    let swept = SnapshotObjectsConfig { orphan_min_age: Duration::ZERO, ..config.clone() };
    assert_eq!(prune(&js, &swept, 1).await.unwrap(), Some(good.position + 2));
    let left = subjects(&js, chunks).await;
    assert!(left.len() == 1 && left[0].0 != orphan, "{left:?}");
    // Deleted objects leave no tombstones behind.
    let meta = subjects(&js, "$O.BURSAR_SNAPSHOTS.M.>").await;
    assert_eq!(meta.len(), 1, "{meta:?}");
    assert_eq!(positions(&js, &config).await.unwrap(), vec![good.position + 2]);
    assert!(prune(&js, &config, 0).await.is_err(), "keeping nothing would strand the log");
}

//! The divergence guard against a real 3-node NATS cluster (bucket R3):
//! equal digests pass, and the one replica with a different digest is told
//! to stop, naming the position and both hashes, while the others are not.
//! Records written to the bucket without the cluster key (a plain digest, a
//! wrong MAC) are ignored: outvoting everybody with them stops nobody.

mod common;

use async_nats::jetstream::{self, kv};
use bursar_cluster::digest_guard::{self, DigestGuardConfig, Divergence};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const NODES: [&str; 3] = ["1", "2", "3"];

struct Replica {
    digests: mpsc::Sender<(u64, [u8; 32])>,
    verdict: oneshot::Receiver<Divergence>,
}

const KEY: &str = "1:a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn keys() -> bursar_cluster::ClusterKeys {
    bursar_cluster::ClusterKeys::parse(KEY).unwrap()
}

fn config() -> DigestGuardConfig {
    DigestGuardConfig { replicas: 3, ..DigestGuardConfig::default() }
}

async fn feed(replica: &Replica, position: u64, digest: [u8; 32]) {
    replica.digests.send((position, digest)).await.expect("invariant: the guard runs until its sender is dropped");
}

/// The test's own handle on the bucket, once a guard created it.
async fn bucket(js: &jetstream::Context) -> kv::Store {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match js.get_key_value(config().bucket).await {
            Ok(kv) => return kv,
            Err(e) => assert!(Instant::now() < deadline, "no digest bucket after 60 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `node` has recorded a digest at `position`.
async fn recorded(kv: &kv::Store, position: u64, node: &str) {
    let key = format!("d.{position:020}.{node}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(kv.get(&key).await, Ok(Some(_))) {
        assert!(Instant::now() < deadline, "{key} not recorded within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_quiet(replicas: &mut [Replica], nodes: &[usize]) {
    for &i in nodes {
        let verdict = replicas[i].verdict.try_recv();
        assert_eq!(verdict, Err(oneshot::error::TryRecvError::Empty), "node {} must not stop", NODES[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_with_a_different_digest_stops_and_the_others_do_not() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let cluster = common::cluster(dir.path());
    let mut replicas = Vec::new();
    for (i, node) in NODES.iter().enumerate() {
        let js = common::connect(&cluster.url(i)).await;
        let (digests, fed) = mpsc::channel(16);
        let verdict = digest_guard::run(js, node.to_string(), config(), keys(), fed).unwrap_or_else(|e| panic!("{e}"));
        replicas.push(Replica { digests, verdict });
    }
    let kv = bucket(&common::connect(&cluster.urls()).await).await;

    for position in [1000, 2000] {
        for replica in &replicas {
            feed(replica, position, [(position / 1000) as u8; 32]).await;
        }
    }
    for node in NODES {
        recorded(&kv, 2000, node).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_quiet(&mut replicas, &[0, 1, 2]);

    // Forged records at 2000 from nodes that do not exist, all agreeing on
    // another digest: a majority, were they believed.
    let forger = bursar_cluster::ClusterKeys::parse(&format!("1:{}", "ee".repeat(32))).unwrap();
    for node in ["7", "8", "9", "10"] {
        let key = format!("d.{:020}.{node}", 2000);
        let value = match node {
            "7" | "8" => "77".repeat(32),
            _ => digest_guard::seal_record(&forger, &config().bucket, &key, &[0x77; 32]),
        };
        kv.put(&key, value.into()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_quiet(&mut replicas, &[0, 1, 2]);

    // Nodes 1 and 2 record first: had node 3 recorded before one of them,
    // that one would have stopped while only two digests were in (the
    // earlier of two wins).
    let (right, wrong) = ([3; 32], [0x99; 32]);
    feed(&replicas[0], 3000, right).await;
    feed(&replicas[1], 3000, right).await;
    recorded(&kv, 3000, "1").await;
    recorded(&kv, 3000, "2").await;
    feed(&replicas[2], 3000, wrong).await;

    let divergence = tokio::time::timeout(Duration::from_secs(20), &mut replicas[2].verdict)
        .await
        .expect("node 3 is told to stop within 20 s")
        .expect("invariant: the guard reports before it ends");
    assert_eq!((divergence.position, divergence.node.as_str()), (3000, "3"));
    assert_eq!((divergence.mine, divergence.other), (wrong, right));
    assert!(["1", "2"].contains(&divergence.other_node.as_str()), "{divergence}");
    let message = divergence.to_string();
    for part in ["position 3000", "node 3", &"99".repeat(32), &"03".repeat(32)] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_quiet(&mut replicas, &[0, 1]);
}

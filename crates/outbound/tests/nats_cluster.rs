//! The 3-node NATS harness with a replicated (R3) JetStream stream, the
//! ground cluster mode stands on: acknowledged appends survive losing a
//! node, a retried append is deduplicated by its message id, nothing is
//! acknowledged without a quorum, and every node serves the same sequence.
//! Needs `nats-server` (fails, never skips, when it is missing).

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::StorageType};
use bursar_outbound::nats::read_stream;
use bursar_testkit::nats_cluster::NatsCluster;
use std::time::{Duration, Instant};

const STREAM: &str = "LOG";

async fn connect(urls: &str) -> jetstream::Context {
    bursar_testkit::jetstream::connect(urls, Duration::from_secs(3)).await
}

/// Creates the R3 stream, retrying while the cluster elects its leaders.
async fn create_stream(js: &jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let config = jetstream::stream::Config {
            name: STREAM.to_string(),
            subjects: vec!["log.>".to_string()],
            storage: StorageType::File,
            num_replicas: 3,
            ..Default::default()
        };
        match js.get_or_create_stream(config).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "no R3 stream after 60 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Appends entry `n` (message id `e-<n>`), retrying through leader
/// elections; returns whether the stream called it a duplicate.
async fn append(js: &jetstream::Context, n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("e-{n}").as_str());
        let attempt = async { js.publish_with_headers("log.entry", headers, n.to_string().into()).await?.await };
        match attempt.await {
            Ok(ack) => return ack.duplicate,
            Err(e) => assert!(Instant::now() < deadline, "entry {n} not appended in 60 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_appends_survive_a_node_need_a_quorum_and_deduplicate_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path(), 3).unwrap_or_else(|e| panic!("{e}"));
    let js = connect(&cluster.urls()).await;
    create_stream(&js).await;
    for n in 1..=100 {
        assert!(!append(&js, n).await, "entry {n} is new");
    }
    // A retry after a lost ack (same message id) is not stored again.
    assert!(append(&js, 100).await, "a retried append is a duplicate");

    // Lose a node: appends go on with the remaining two.
    cluster.kill(0);
    let js1 = connect(&cluster.url(1)).await;
    for n in 101..=200 {
        assert!(!append(&js1, n).await, "entry {n} is new");
    }

    // A second node paused: no quorum, so nothing is acknowledged.
    cluster.pause(2);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "e-201");
    let lonely = async { js1.publish_with_headers("log.entry", headers, "201".into()).await?.await };
    assert!(lonely.await.is_err(), "an append without a quorum must not be acknowledged");

    // Heal: the paused node resumes, the killed one restarts from its store.
    cluster.resume(2);
    cluster.restart(0).unwrap_or_else(|e| panic!("{e}"));
    // Entry 201 may or may not have been stored: a retry with its id is
    // harmless either way, which is the point of message ids.
    append(&js1, 201).await;
    for n in 202..=250 {
        assert!(!append(&js1, n).await, "entry {n} is new");
    }

    // Every node serves the same gapless sequence, once each, in order.
    let expected: Vec<String> = (1..=250).map(|n| n.to_string()).collect();
    for i in 0..cluster.len() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let read = read_stream(&cluster.url(i), STREAM, Duration::from_secs(10)).await;
            let bodies: Option<Vec<String>> =
                read.ok().map(|m| m.iter().map(|e| String::from_utf8_lossy(&e.body).into_owned()).collect());
            if bodies.as_ref() == Some(&expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} does not serve entries 1..=250 once each in order: {:?}",
                bodies.map(|b| (b.len(), b.first().cloned(), b.last().cloned()))
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

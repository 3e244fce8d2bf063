//! The replicated log on a real 3-node JetStream cluster: a proposal
//! published again after a lost acknowledgement (same message id) becomes
//! one entry, proposals come back in stream order to the follower with
//! their proposer's ids, and a proposal keeps being retried through a
//! node loss until the quorum stores it.

mod common;

use bursar_cluster::ClusterConfig;
use bursar_cluster::log_stream::{ensure_stream, follow, publish_proposals};
use bursar_server::engine::EngineMsg;
use bursar_server::replication::{Committed, Proposal};
use std::time::Duration;
use tokio::sync::mpsc;

const PREFIX: &str = "n1-test-";

fn proposal(id: u64) -> Proposal {
    Proposal { id, timestamp: 1_000 + id, body: format!("entry {id}").into_bytes() }
}

/// The next committed entry the follower delivers (failures reported as such).
async fn next_committed(rx: &mut mpsc::Receiver<EngineMsg>) -> Committed {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(EngineMsg::Committed(c))) => return c,
            Ok(Some(EngineMsg::ProposalFailed(f))) => panic!("proposal {} failed: {}", f.id, f.reason),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the follower stopped"),
            Err(_) => panic!("no committed entry within 60 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_proposal_is_one_entry_and_entries_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = common::cluster(dir.path());
    let mut config = ClusterConfig::new(nats.urls(), 1);
    config.proposal_deadline = Duration::from_secs(20);
    let js = common::connect(&nats.urls()).await;
    ensure_stream(&js, &config).await.unwrap();
    let mut stream = js.get_stream(&config.stream).await.unwrap();

    let (engine_tx, mut engine_rx) = mpsc::channel(64);
    let (proposals, queued) = mpsc::channel(16);
    tokio::spawn(publish_proposals(js.clone(), config.clone(), PREFIX.into(), queued, engine_tx.clone()));
    tokio::spawn(follow(js.clone(), config.clone(), PREFIX.into(), 0, engine_tx));

    proposals.send(proposal(1)).await.unwrap();
    let first = next_committed(&mut engine_rx).await;
    assert_eq!((first.position, first.mine, first.timestamp), (1, Some(1), 1_001));
    assert_eq!(&first.body[..], b"entry 1");

    // The acknowledgement of proposal 1 was "lost": the publisher sends it again.
    proposals.send(proposal(1)).await.unwrap();
    proposals.send(proposal(2)).await.unwrap();
    let second = next_committed(&mut engine_rx).await;
    assert_eq!((second.position, second.mine), (2, Some(2)), "the retried proposal 1 must not become an entry");

    // A proposal published while a NATS node is down still commits (quorum of 2).
    nats.kill(2);
    proposals.send(proposal(3)).await.unwrap();
    let third = next_committed(&mut engine_rx).await;
    assert_eq!((third.position, third.mine), (3, Some(3)));
    nats.restart(2).unwrap();

    let state = stream.info().await.unwrap().state.clone();
    assert_eq!((state.messages, state.first_sequence, state.last_sequence), (3, 1, 3));
    assert!(engine_rx.try_recv().is_err(), "no further entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_other_replicas_are_not_mine_and_a_follower_resumes_after_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let _nats = common::cluster(dir.path());
    let config = ClusterConfig::new(_nats.urls(), 2);
    let js = common::connect(&_nats.urls()).await;
    ensure_stream(&js, &config).await.unwrap();
    let (engine_tx, mut engine_rx) = mpsc::channel(64);
    let (proposals, queued) = mpsc::channel(16);
    tokio::spawn(publish_proposals(js.clone(), config.clone(), "n9-other-".into(), queued, engine_tx.clone()));
    for id in 1..=5 {
        proposals.send(proposal(id)).await.unwrap();
    }
    // A follower of replica "n2-…" starting after position 2 sees 3, 4, 5, none of them its own.
    let (follow_tx, mut follow_rx) = mpsc::channel(64);
    tokio::spawn(follow(js.clone(), config.clone(), PREFIX.into(), 2, follow_tx));
    for position in 3..=5 {
        let c = next_committed(&mut follow_rx).await;
        assert_eq!(c.position, position);
        assert_eq!(c.mine, None, "entry {position} was proposed by another replica");
    }
    drop(engine_rx.try_recv());
}

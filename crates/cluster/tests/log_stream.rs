//! The replicated log on a real 3-node JetStream cluster: a proposal
//! published again after a lost acknowledgement (same message id) becomes
//! one entry, proposals come back in stream order to the follower with
//! their proposer's authenticated origin, a proposal keeps being retried
//! through a node loss until the quorum stores it, and what an outsider
//! publishes to the log subject is delivered as a rejection.

mod common;

use bursar_cluster::log_stream::{ensure_stream, follow, publish_proposals};
use bursar_cluster::{ClusterConfig, ClusterKeys};
use bursar_core::command::{Command, Operation, encode_command};
use bursar_core::entry::{EntryHeader, Origin, RejectReason};
use bursar_core::records::{Ledger, encode_all};
use bursar_server::message::EngineMsg;
use bursar_server::message::{Committed, Proposal};
use std::time::Duration;
use tokio::sync::mpsc;

const KEY: &str = "7:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const BOOT: u64 = 1_000_000;

fn config(urls: String, node: u32) -> ClusterConfig {
    ClusterConfig::new(urls, node, ClusterKeys::parse(KEY).unwrap())
}

/// A body that creates ledger `id`: distinct per proposal, and decodable.
fn body(id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let ledgers = vec![Ledger { id: id as u32, ..Default::default() }];
    encode_command(&mut out, &Command { operation: Operation::CreateLedgers, events: encode_all(&ledgers) });
    out
}

fn proposal_from(node: u32, id: u64) -> Proposal {
    Proposal { origin: Origin { node, key_id: 0, boot: BOOT, proposal: id }, timestamp: 1_000 + id, body: body(id) }
}

fn proposal(id: u64) -> Proposal {
    proposal_from(1, id)
}

/// The proposal number of an admitted entry from `node`.
fn from(c: &Committed) -> Option<(u32, u64)> {
    match c.header {
        EntryHeader::Origin(o) => {
            assert_eq!((o.key_id, o.boot), (7, BOOT));
            Some((o.node, o.proposal))
        }
        _ => None,
    }
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
    let mut config = config(nats.urls(), 1);
    config.proposal_deadline = Duration::from_secs(20);
    let js = common::connect(&nats.urls()).await;
    ensure_stream(&js, &config).await.unwrap();
    let mut stream = js.get_stream(&config.stream).await.unwrap();

    let (engine_tx, mut engine_rx) = mpsc::channel(64);
    let (proposals, queued) = mpsc::channel(16);
    tokio::spawn(publish_proposals(js.clone(), config.clone(), queued, engine_tx.clone()));
    tokio::spawn(follow(js.clone(), config.clone(), 0, engine_tx));

    proposals.send(proposal(1)).await.unwrap();
    let first = next_committed(&mut engine_rx).await;
    assert_eq!((first.position, from(&first), first.timestamp), (1, Some((1, 1)), 1_001));
    assert_eq!(&first.body[..], &body(1)[..]);

    // The acknowledgement of proposal 1 was "lost": the publisher sends it again.
    proposals.send(proposal(1)).await.unwrap();
    proposals.send(proposal(2)).await.unwrap();
    let second = next_committed(&mut engine_rx).await;
    assert_eq!((second.position, from(&second)), (2, Some((1, 2))), "the retried proposal 1 must not become an entry");

    // A proposal published while a NATS node is down still commits (quorum of 2).
    nats.kill(2);
    proposals.send(proposal(3)).await.unwrap();
    let third = next_committed(&mut engine_rx).await;
    assert_eq!((third.position, from(&third)), (3, Some((1, 3))));
    nats.restart(2).unwrap();

    let state = stream.info().await.unwrap().state.clone();
    assert_eq!((state.messages, state.first_sequence, state.last_sequence), (3, 1, 3));
    assert!(engine_rx.try_recv().is_err(), "no further entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_other_replicas_are_not_mine_and_a_follower_resumes_after_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let _nats = common::cluster(dir.path());
    let config = config(_nats.urls(), 2);
    let js = common::connect(&_nats.urls()).await;
    ensure_stream(&js, &config).await.unwrap();
    let (engine_tx, mut engine_rx) = mpsc::channel(64);
    let (proposals, queued) = mpsc::channel(16);
    tokio::spawn(publish_proposals(js.clone(), config.clone(), queued, engine_tx.clone()));
    for id in 1..=5 {
        proposals.send(proposal_from(9, id)).await.unwrap();
    }
    // A follower of replica "n2-…" starting after position 2 sees 3, 4, 5, none of them its own.
    let (follow_tx, mut follow_rx) = mpsc::channel(64);
    tokio::spawn(follow(js.clone(), config.clone(), 2, follow_tx));
    for position in 3..=5 {
        let c = next_committed(&mut follow_rx).await;
        assert_eq!(c.position, position);
        assert_eq!(from(&c), Some((9, position)), "entry {position} was proposed by replica 9");
    }
    drop(engine_rx.try_recv());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_outsider_publishes_to_the_log_is_delivered_as_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let _nats = common::cluster(dir.path());
    let config = config(_nats.urls(), 1);
    let js = common::connect(&_nats.urls()).await;
    ensure_stream(&js, &config).await.unwrap();
    let subject = config.log_subject();
    // A raw command (the attack of issue 13), garbage, and a proposal sealed under another key.
    let other = ClusterConfig::new(_nats.urls(), 1, ClusterKeys::parse(&format!("7:{}", "ab".repeat(32))).unwrap());
    let forged = bursar_cluster::seal::seal(&other.keys, &config.stream, proposal(1).origin, 5, &body(1));
    for payload in [body(1), vec![0xff; 100], forged] {
        js.publish(subject.clone(), payload.into()).await.unwrap().await.unwrap();
    }
    let (follow_tx, mut follow_rx) = mpsc::channel(64);
    tokio::spawn(follow(js.clone(), config.clone(), 0, follow_tx));
    for (position, expect) in [(1, RejectReason::Malformed), (2, RejectReason::Malformed), (3, RejectReason::BadMac)] {
        let c = next_committed(&mut follow_rx).await;
        assert_eq!(c.position, position);
        match c.header {
            EntryHeader::Rejected(r) => assert_eq!(r.reason, expect, "entry {position}"),
            other => panic!("entry {position} was admitted: {other:?}"),
        }
        assert!(c.body.is_empty() && c.timestamp == 0, "a rejected entry carries nothing");
    }
}

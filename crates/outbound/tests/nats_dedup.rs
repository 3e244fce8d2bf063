//! The broker-side guarantees the relay rests on, with a real `nats-server`
//! and the relay's own headers: a retried publish of the same event is
//! dropped as a duplicate, and a publish that would leave a gap or reorder
//! the stream is refused. Needs `nats-server` (fails, never skips, without).

use async_nats::jetstream;
use bursar_outbound::nats::{Expect, message_headers};
use bursar_testkit::nats_server::{NatsServer, free_port};

async fn publish(js: &jetstream::Context, seq: u64, expect: Expect) -> Result<jetstream::publish::PublishAck, String> {
    let ack = js
        .publish_with_headers(
            format!("t.events.e{seq}"),
            message_headers(seq, expect),
            format!("{{\"seq\":{seq}}}").into(),
        )
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn retried_publish_is_deduplicated_and_gaps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(dir.path(), free_port().unwrap())
        .unwrap_or_else(|e| panic!("this test needs a real nats-server: {e}"));
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut stream = js
        .create_stream(jetstream::stream::Config {
            name: "T".into(),
            subjects: vec!["t.events.>".into()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();

    let first = publish(&js, 1, Expect::Nothing).await.unwrap();
    assert!(!first.duplicate);
    // The same event again, as a relay retrying after a lost ack would send it.
    let again = publish(&js, 1, Expect::Nothing).await.unwrap();
    assert!(again.duplicate, "a retried publish must be recognised as a duplicate");
    assert_eq!(again.sequence, first.sequence, "the duplicate points at the stored message");
    publish(&js, 2, Expect::PreviousEvent).await.unwrap();

    // A gap (event 4 after 2) and a reordering (expecting 2 after 3 is stored) are refused.
    let gap = publish(&js, 4, Expect::PreviousEvent).await;
    assert!(gap.is_err(), "a publish skipping event 3 must be refused, got {gap:?}");
    publish(&js, 3, Expect::PreviousEvent).await.unwrap();
    let stale = publish(&js, 3, Expect::StreamSeq(2)).await.unwrap();
    assert!(stale.duplicate, "dedup applies before the expectation");
    let wrong_seq = publish(&js, 4, Expect::StreamSeq(2)).await;
    assert!(wrong_seq.is_err(), "a stale expected stream sequence must be refused, got {wrong_seq:?}");
    assert_eq!(stream.info().await.unwrap().state.messages, 3);

    // After a broker crash the last message id may be forgotten (it is kept only for the
    // duplicate window), the stream sequence is not: a resuming session expects that.
    nats.kill();
    nats.restart().unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let resumed = publish(&js, 4, Expect::StreamSeq(3)).await.unwrap();
    assert_eq!(resumed.sequence, 4);
    let dup = publish(&js, 2, Expect::Nothing).await.unwrap();
    assert!(dup.duplicate, "dedup ids survive a broker restart (within the window)");
    let mut stream = js.get_stream("T").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 4);
}

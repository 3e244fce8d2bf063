//! The lease against a real 3-node NATS cluster (bucket R3): one holder at a
//! time, a prompt handover on release, and a partitioned holder that stops
//! counting itself the holder before anyone else can take over; and the
//! server property the lease rests on (a stream-level compare-and-set lets
//! exactly one of concurrent writers through).

mod common;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bursar_cluster::lease::{self, LeaseConfig, LeaseState};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One 3-node cluster at a time: three at once on a loaded 2-core machine
/// left JetStream without placement peers for a minute (nats-server 2.10).
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Contender {
    state: watch::Receiver<LeaseState>,
    stop: watch::Sender<bool>,
}

impl Contender {
    async fn start(urls: &str, node: &str) -> Contender {
        let (stop, stopped) = watch::channel(false);
        let state = lease::run(common::connect(urls).await, node.to_string(), config(), stopped);
        Contender { state, stop }
    }

    fn now(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// When this contender's `held` next equals `held` (a spawned observer,
    /// so the time is taken as the change happens); never if its task ends first.
    fn when_held_is(&self, held: bool) -> tokio::task::JoinHandle<(Instant, LeaseState)> {
        let mut state = self.state.clone();
        tokio::spawn(async move {
            let seen = state.wait_for(|s| s.held == held).await.map(|seen| *seen);
            match seen {
                Ok(seen) => (Instant::now(), seen),
                Err(_) => std::future::pending().await,
            }
        })
    }
}

fn config() -> LeaseConfig {
    LeaseConfig { replicas: 3, ..LeaseConfig::default() }
}

fn holders(contenders: &[&Contender]) -> Vec<usize> {
    (0..contenders.len()).filter(|&i| contenders[i].now().held).collect()
}

/// Samples every 10 ms for `period` (or until `until` is true): never two
/// holders at once. Returns the share of samples with exactly one holder.
async fn sample(contenders: &[&Contender], period: Duration, until: impl Fn() -> bool) -> f64 {
    let end = Instant::now() + period;
    let (mut samples, mut held) = (0u32, 0u32);
    while Instant::now() < end && !until() {
        let now = holders(contenders);
        assert!(now.len() <= 1, "two holders at once: {now:?}");
        samples += 1;
        held += u32::from(now.len() == 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f64::from(held) / f64::from(samples.max(1))
}

/// Waits (sampling) until someone holds the lease; returns who.
async fn first_holder(contenders: &[&Contender], within: Duration) -> usize {
    sample(contenders, within, || !holders(contenders).is_empty()).await;
    let now = holders(contenders);
    assert_eq!(now.len(), 1, "one holder within {within:?}");
    now[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_among_three_and_a_prompt_handover_on_release() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let cluster = common::cluster(dir.path());
    let mut contenders = Vec::new();
    for node in ["1", "2", "3"] {
        contenders.push(Contender::start(&cluster.urls(), node).await);
    }
    let all: Vec<&Contender> = contenders.iter().collect();
    // The cluster elects its JetStream leaders first, then someone acquires.
    let holder = first_holder(&all, Duration::from_secs(60)).await;
    let share = sample(&all, Duration::from_secs(5), || false).await;
    assert!(share > 0.95, "one holder only {:.0}% of the time", share * 100.0);
    assert_eq!(holders(&all), vec![holder], "the holder kept the lease while renewing");

    // The holder stops: it reports the loss and deletes the key, so another
    // takes over well within ttl + 2 * renew_every.
    let old = all[holder].now();
    let stopped = Instant::now();
    all[holder].stop.send_replace(true);
    let released = all[holder].when_held_is(false);
    tokio::time::timeout(Duration::from_secs(1), released).await.expect("a stopped holder drops at once").ok();
    let others: Vec<&Contender> = (0..3).filter(|&i| i != holder).map(|i| all[i]).collect();
    let limit = config().ttl + 2 * config().renew_every;
    let next = first_holder(&all, limit).await;
    assert_ne!(next, holder, "a stopped contender never holds again");
    assert!(stopped.elapsed() <= limit, "handover took {:?}", stopped.elapsed());
    assert!(!all[holder].now().held);
    assert!(all[next].now().epoch > old.epoch, "epochs grow: {:?} then {:?}", old, all[next].now());
    let share = sample(&others, Duration::from_secs(3), || false).await;
    assert!(share > 0.95, "one holder only {:.0}% of the time after the handover", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_holder_drops_the_lease_before_another_takes_it() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut cluster = common::cluster(dir.path());
    // The first holder talks to node 1 only; the others to nodes 2 and 3.
    let cut = Contender::start(&cluster.url(0), "1").await;
    first_holder(&[&cut], Duration::from_secs(60)).await;
    let rest = [Contender::start(&cluster.url(1), "2").await, Contender::start(&cluster.url(2), "3").await];
    let all = [&cut, &rest[0], &rest[1]];
    let share = sample(&all, Duration::from_secs(2), || false).await;
    assert!(share > 0.95 && cut.now().held, "the first holder keeps the lease while it can renew");

    let dropped = cut.when_held_is(false);
    let taken = [rest[0].when_held_is(true), rest[1].when_held_is(true)];
    let paused = Instant::now();
    cluster.pause(0);
    // Its last renewal started before the pause: it must stop within hold_for of it.
    let (dropped_at, last) = tokio::time::timeout(Duration::from_secs(10), dropped)
        .await
        .expect("the cut-off holder drops the lease")
        .expect("invariant: the observer does not panic");
    let slack = Duration::from_millis(500);
    assert!(
        dropped_at - paused <= config().hold_for() + slack,
        "dropped {:?} after the pause, allowed {:?}",
        dropped_at - paused,
        config().hold_for() + slack
    );
    // Another takes over once the key expires (after the survivors elect leaders).
    let (taken_at, next) = tokio::time::timeout(Duration::from_secs(40), async {
        let [a, b] = taken;
        let (first, _, _) = futures_util::future::select_all([a, b]).await;
        first.expect("invariant: the observer does not panic")
    })
    .await
    .expect("a survivor acquires the lease");
    assert!(dropped_at <= taken_at, "the new holder started {:?} before the old one stopped", dropped_at - taken_at);
    assert!(next.epoch > last.epoch, "epochs grow: {last:?} then {next:?}");

    // Healed, the old holder sees the key taken and stays out.
    cluster.resume(0);
    let share = sample(&all, Duration::from_secs(3), || false).await;
    assert!(share > 0.95 && !cut.now().held, "one holder only {:.0}% of the time after healing", share * 100.0);
}

/// Racing writers that all expect the same last stream sequence, through
/// all three nodes: exactly one lands, round after round. (The key-level
/// check, `Nats-Expected-Last-Subject-Sequence`, lets several through on a
/// clustered 2.9 server, which is why the lease does not rely on it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_expecting_the_same_stream_end_land_once() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let cluster = common::cluster(dir.path());
    let mut writers = Vec::new();
    for i in [0, 1, 2, 0, 1, 2] {
        writers.push(common::connect(&cluster.url(i)).await);
    }
    let config =
        stream::Config { name: "CAS".into(), subjects: vec!["cas".into()], num_replicas: 3, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Err(e) = writers[0].get_or_create_stream(config.clone()).await {
        assert!(Instant::now() < deadline, "no R3 stream after 120 s: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut end = 0;
    for round in 0..30 {
        let racers: Vec<_> = writers.iter().map(|js| tokio::spawn(write_after(js.clone(), end))).collect();
        let mut landed = Vec::new();
        for racer in racers {
            landed.extend(racer.await.expect("invariant: a racer does not panic"));
        }
        assert_eq!(landed.len(), 1, "round {round}: writes expecting end {end} landed at {landed:?}");
        end = landed[0];
    }
}

/// Publishes on the CAS stream expecting it to end at `end`: the sequence if it landed.
async fn write_after(js: jetstream::Context, end: u64) -> Option<u64> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Expected-Last-Sequence", end.to_string().as_str());
    let ack = js.publish_with_headers("cas", headers, "x".into()).await.ok()?.await.ok()?;
    Some(ack.sequence)
}

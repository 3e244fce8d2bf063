//! `bursar bench relay-nats`: how fast the NATS JetStream relay drains a
//! backlog of events into a local `nats-server`, and (with
//! `--outage-seconds`) that a broker killed mid-run loses and duplicates
//! nothing: every event is read back from the stream and checked.

use super::load::{self, LoadParams};
use super::workload::{Distribution, Ids};
use anyhow::{Context, bail};
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_outbound::event_reader::EventReader;
use bursar_outbound::nats::{NatsRelayConfig, RelayStatus, SEQ_HEADER, msg_id, read_stream};
use bursar_server::{Node, NodeConfig};
use bursar_testkit::nats_server::{NatsServer, free_port};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct RelayNatsArgs {
    /// Transfers written before the relay starts (one event each, plus one per account and the ledger).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    transfers: u64,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    accounts: u64,
    /// Messages published but not yet confirmed by an ack, at most.
    #[arg(long, default_value_t = 32_768, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_in_flight: u64,
    /// Kill nats-server (SIGKILL) halfway through, restart it after this many seconds.
    #[arg(long)]
    outage_seconds: Option<u64>,
    /// Give up if the relay has not caught up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
    /// Where the node's data and the broker's store go (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: RelayNatsArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("bursar-bench-relay-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(dir.join("nats"))?;
    let node = Node::start(NodeConfig::new(dir.join("node"), "127.0.0.1:0".parse()?))
        .with_context(|| format!("starting an embedded server in {}", dir.display()))?;
    let addr = node.local_addr().to_string();
    let params = LoadParams {
        accounts: args.accounts,
        transfers: args.transfers,
        batch: BATCH_EVENTS_MAX,
        distribution: Distribution::Uniform,
        clients: 1,
        inflight: 4,
        seed: 42,
        ids: Ids { run: bursar_server::engine::now_nanos() >> 10 },
        key: node.report().admin_key.as_ref().map(|(k, _)| k.clone()),
    };
    eprintln!("bench: writing {} transfers (node in {})", args.transfers, dir.display());
    load::setup(&addr, &params)?;
    let written = load::run(&addr, &params, false)?;
    if written.tally.rejected > 0 {
        bail!("{} transfers were rejected (first: {:?})", written.tally.rejected, written.tally.first_rejection);
    }
    let reader = EventReader::new(&node.handle());
    let head = reader.head();
    eprintln!("bench: {head} events written in {:.1} s; starting nats-server and the relay", written.seconds);

    let mut nats =
        NatsServer::start(&dir.join("nats"), free_port().map_err(anyhow::Error::msg)?).map_err(anyhow::Error::msg)?;
    let mut config = NatsRelayConfig::new(nats.url());
    config.max_in_flight = args.max_in_flight as usize;
    let stream_name = config.stream.clone();
    let started = Instant::now();
    let relays = bursar_outbound::relays::start(&node.handle(), Some(config));
    let status = relays.nats.clone().context("the relay started")?;
    let deadline = started + Duration::from_secs(args.timeout_seconds);

    let mut outage = None;
    if let Some(seconds) = args.outage_seconds {
        wait_until(&status, head / 2, deadline)?;
        nats.kill();
        let killed_at = status.last_acked();
        eprintln!("bench: killed nats-server at event {killed_at}; restarting it in {seconds} s");
        std::thread::sleep(Duration::from_secs(seconds));
        let lag_at_restart = head - status.last_acked();
        nats.restart().map_err(anyhow::Error::msg)?;
        let restarted = Instant::now();
        wait_until(&status, head, deadline)?;
        outage = Some((seconds, killed_at, lag_at_restart, restarted.elapsed().as_secs_f64()));
    }
    wait_until(&status, head, deadline)?;
    let seconds = started.elapsed().as_secs_f64();
    let resets = status.resets.load(std::sync::atomic::Ordering::Relaxed);

    // Read the whole stream back: every event once, in order, nothing else.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let read_started = Instant::now();
    let stored = runtime
        .block_on(read_stream(&nats.url(), &stream_name, Duration::from_secs(600)))
        .map_err(anyhow::Error::msg)?;
    let read_seconds = read_started.elapsed().as_secs_f64();
    for (i, m) in stored.iter().enumerate() {
        let want = i as u64 + 1;
        if m.bursar_seq != Some(want) || m.msg_id.as_deref() != Some(msg_id(want).as_str()) || m.stream_seq != want {
            bail!("stream message {} is {:?} (id {:?}), expected event {want}", m.stream_seq, m.bursar_seq, m.msg_id);
        }
    }
    if stored.len() as u64 != head {
        bail!("the stream holds {} messages, the node {head} events", stored.len());
    }
    let first = stored.first().and_then(|m| m.bursar_seq).unwrap_or(0);
    let last = stored.last().and_then(|m| m.bursar_seq).unwrap_or(0);
    drop(relays);
    node.shutdown();
    let outage_text = match outage {
        Some((s, killed_at, lag, recovery)) => {
            format!(" outage_s={s} killed_at_event={killed_at} lag_at_restart={lag} lag0_after_restart_s={recovery:.2}")
        }
        None => String::new(),
    };
    println!(
        "bench: relay=nats events={head} seconds={seconds:.2} events_per_s={} max_in_flight={} resets={resets}{outage_text} stream_messages={} first_seq={first} last_seq={last} gaps=0 duplicates=0 read_back_s={read_seconds:.1} {SEQ_HEADER}=ok rss_mb={}",
        (head as f64 / seconds) as u64,
        args.max_in_flight,
        stored.len(),
        super::peak_rss_mb(),
    );
    Ok(())
}

/// Waits until the relay has acknowledged event `seq` (progress on stderr every 5 s).
fn wait_until(status: &RelayStatus, seq: u64, deadline: Instant) -> anyhow::Result<()> {
    let mut report = Instant::now();
    while status.last_acked() < seq {
        if Instant::now() > deadline {
            bail!("the relay reached event {} of {seq} before the deadline", status.last_acked());
        }
        if report.elapsed() > Duration::from_secs(5) {
            eprintln!("bench: relayed {} of {seq}", status.last_acked());
            report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

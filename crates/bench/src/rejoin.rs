//! `bursar bench rejoin`: a replica whose disk was lost rejoins a cluster
//! that holds N transfers. The load runs through replica 1; once the lease
//! holder's snapshot uploads settle, `--tail` more transfers (part of the
//! N, on accounts of their own) are written after the newest snapshot, so
//! the rejoining replica must replay them from the log. Then replica 3 is
//! killed, its data dir deleted, and it is started again: the time
//! measured is from that start until it serves, which it does only after
//! catching up to the log's end (bootstrap from the object store's newest
//! snapshot, then the log tail). Its balances are then checked against
//! both loads' tallies.

use super::load::{self, LoadParams};
use super::workload::{Distribution, Ids};
use anyhow::{Context, bail};
use bursar_chaos::procs::Procs;
use bursar_core::records::BATCH_EVENTS_MAX;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The replica that loses its disk (not the one the load goes through).
const WIPED: usize = 2;
/// Uploads are over once none happened for this long.
const UPLOADS_QUIET: Duration = Duration::from_secs(20);
/// Longest wait for the uploads to settle.
const UPLOADS_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(clap::Args)]
pub struct RejoinBenchArgs {
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    accounts: u64,
    /// Transfers the cluster holds when the disk is lost.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000_000))]
    transfers: u64,
    /// Of those, how many are written after the snapshot uploads settled
    /// (a snapshot is taken per 256 MiB of log, about 2M transfers).
    #[arg(long, default_value_t = 1_500_000)]
    tail: u64,
    /// Requests kept in flight while loading.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    inflight: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Working dir for the NATS stores and replicas (default: temporary).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: RejoinBenchArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("bursar-bench-rejoin-").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    eprintln!("bench: starting 3 nats-servers and 3 replicas in {}", dir.display());
    let mut procs = Procs::start(&dir).map_err(|e| anyhow::anyhow!(e))?;
    let addrs = procs.addrs();
    if args.tail >= args.transfers {
        bail!("--tail must be below --transfers");
    }
    let p = LoadParams {
        accounts: args.accounts,
        transfers: args.transfers - args.tail,
        batch: BATCH_EVENTS_MAX - 1,
        distribution: Distribution::Uniform,
        clients: 1,
        inflight: args.inflight as usize,
        seed: args.seed,
        ids: Ids { run: args.seed },
        key: Some(bursar_chaos::procs::ADMIN_KEY.to_string()),
    };
    load::setup(&addrs[0], &p)?;
    let outcome = load::run(&addrs[0], &p, true)?;
    if outcome.tally.rejected > 0 {
        bail!("{} transfers were rejected (first: {:?})", outcome.tally.rejected, outcome.tally.first_rejection);
    }
    eprintln!(
        "bench: {} transfers loaded in {:.1} s; waiting for snapshot uploads to settle",
        p.transfers, outcome.seconds
    );
    let uploads = wait_for_uploads(&procs)?;
    let tail = LoadParams { transfers: args.tail, ids: Ids { run: args.seed + 1 }, ..p.clone() };
    let tail_outcome = match args.tail {
        0 => None,
        _ => {
            load::setup(&addrs[0], &tail)?;
            let o = load::run(&addrs[0], &tail, false)?;
            if o.tally.rejected > 0 {
                bail!("{} tail transfers were rejected (first: {:?})", o.tally.rejected, o.tally.first_rejection);
            }
            Some(o)
        }
    };

    procs.wipe(WIPED).map_err(|e| anyhow::anyhow!(e))?;
    let started = Instant::now();
    procs.spawn(WIPED).map_err(|e| anyhow::anyhow!(e))?;
    procs.wait_ready(WIPED).map_err(|e| anyhow::anyhow!(e))?;
    let seconds = started.elapsed().as_secs_f64();
    let log = procs.replicas[WIPED].log_text();
    let bootstrap = log
        .lines()
        .find(|l| l.starts_with("bursar: bootstrapped from the cluster's snapshot"))
        .context("the wiped replica serves but did not bootstrap from a snapshot")?;
    // "… transfers before catching up N entries from the cluster, …"
    let caught_up = log
        .rsplit("before catching up ")
        .next()
        .filter(|_| log.contains("before catching up "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("0");
    load::check_balances(&addrs[WIPED], &p, &outcome.tally).context("the rejoined replica's balances")?;
    if let Some(o) = &tail_outcome {
        load::check_balances(&addrs[WIPED], &tail, &o.tally).context("the rejoined replica's balances (tail)")?;
    }
    println!(
        "bench: rejoin transfers={} tail={} snapshots_uploaded={uploads} rejoin_s={seconds:.2} caught_up_entries={caught_up} balances=ok ({})",
        args.transfers,
        args.tail,
        bootstrap.trim_start_matches("bursar: "),
    );
    Ok(())
}

/// Waits until the replicas' logs show no new snapshot upload for
/// [`UPLOADS_QUIET`] (and at least one); returns how many there were.
fn wait_for_uploads(procs: &Procs) -> anyhow::Result<usize> {
    let count = || procs.replicas.iter().map(|r| r.log_text().matches("snapshot uploaded").count()).sum::<usize>();
    let deadline = Instant::now() + UPLOADS_TIMEOUT;
    let (mut last, mut since) = (count(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now > 0 && since.elapsed() >= UPLOADS_QUIET {
            return Ok(now);
        } else if since.elapsed() >= UPLOADS_QUIET * 3 {
            bail!("no snapshot was uploaded: too few transfers for a snapshot (one per 256 MiB of log)");
        }
        if Instant::now() > deadline {
            bail!("snapshot uploads did not settle within {UPLOADS_TIMEOUT:?} ({now} so far)");
        }
    }
}

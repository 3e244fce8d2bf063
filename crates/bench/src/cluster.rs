//! `bursar bench cluster`: the throughput workload through one replica's
//! binary protocol, on 3 `nats-server` nodes and 3 replicas all on this
//! machine (the setup issue 6 compares with a 3-replica TigerBeetle).

use super::load::{self, LoadParams};
use super::workload::{Distribution, Ids};
use anyhow::bail;
use bursar_chaos::procs::Procs;
use bursar_core::records::BATCH_EVENTS_MAX;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ClusterBenchArgs {
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    accounts: u64,
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    transfers: u64,
    /// Transfers per request (at most the server's 8190; by default one
    /// less, the reference batch of the design's cluster target).
    #[arg(long, default_value_t = BATCH_EVENTS_MAX as u64 - 1, value_parser = clap::value_parser!(u64).range(1..=BATCH_EVENTS_MAX as u64))]
    batch: u64,
    #[command(flatten)]
    clients: super::Clients,
    /// Working dir for the NATS stores and replicas (default: temporary).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: ClusterBenchArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("bursar-bench-cluster-").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    eprintln!("bench: starting 3 nats-servers and 3 replicas in {}", dir.display());
    let procs = Procs::start(&dir).map_err(|e| anyhow::anyhow!(e))?;
    let addr = procs.addrs()[0].clone();
    let p = LoadParams {
        accounts: args.accounts,
        transfers: args.transfers,
        batch: args.batch as usize,
        distribution: Distribution::Uniform,
        clients: args.clients.clients as usize,
        inflight: args.clients.inflight as usize,
        seed: args.clients.seed,
        ids: Ids { run: args.clients.seed },
        key: Some(bursar_chaos::procs::ADMIN_KEY.to_string()),
    };
    load::setup(&addr, &p)?;
    let outcome = load::run(&addr, &p, true)?;
    let check = load::check_balances(&addr, &p, &outcome.tally);
    let h = &outcome.latency_us;
    let total = outcome.tally.applied + outcome.tally.rejected;
    println!(
        "bench: cluster replicas=3 nats=3 transfers={total} batch={} seconds={:.2} tps={} batch_p50_ms={:.1} batch_p99_ms={:.1} batch_max_ms={:.1}",
        args.batch,
        outcome.seconds,
        (total as f64 / outcome.seconds) as u64,
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
    drop(procs);
    if outcome.tally.rejected > 0 {
        bail!("{} transfers were rejected (first: {:?})", outcome.tally.rejected, outcome.tally.first_rejection);
    }
    check
}

//! `bursar bench`: throughput and latency of durable transfers through the
//! client protocol, checked against the benchmark's own tally;
//! `bursar bench recovery`: time to serve again after `kill -9`; and
//! `bursar bench history`: reads of old history from a data directory.

mod cluster;
mod failover;
mod history;
mod http;
mod load;
mod orders;
mod project_postgres;
mod recovery;
mod rejoin;
mod relay_nats;
mod workload;

use anyhow::{Context, bail};
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_core::service::keys::Role;
use bursar_server::{Node, NodeConfig};
use load::LoadParams;
use std::path::PathBuf;
use workload::{Distribution, Ids};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(clap::Subcommand)]
enum BenchCommand {
    /// Load a server process, kill -9 it, and time the restart until it serves.
    Recovery(recovery::RecoveryArgs),
    /// Time lookups of old transfers and pages of accounts' old history in a data dir written earlier.
    History(history::HistoryArgs),
    /// Drive payment orders to completion through the simulators; verify the ledger.
    Orders(orders::OrdersArgs),
    /// Drain a backlog of events into a local nats-server through the JetStream relay; verify the stream.
    RelayNats(relay_nats::RelayNatsArgs),
    /// Replay N transfers' events into a throwaway PostgreSQL read model; verify it.
    ProjectPostgres(project_postgres::ProjectPostgresArgs),
    /// The throughput workload on 3 local nats-servers and 3 replicas (cluster mode).
    Cluster(cluster::ClusterBenchArgs),
    /// A cluster replica with a wiped disk rejoins a cluster holding N transfers; time until it serves.
    Rejoin(rejoin::RejoinBenchArgs),
    /// Kill -9 the lease holder of a 3-replica cluster running orders and a relay; time until they resume.
    Failover(failover::FailoverArgs),
}

#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// Target a running server instead of starting an embedded one.
    #[arg(long)]
    addr: Option<String>,
    /// Data directory of the embedded server (default: a temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    accounts: u64,
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    transfers: u64,
    /// Transfers per request (at most 8190).
    #[arg(long, default_value_t = BATCH_EVENTS_MAX as u64, value_parser = clap::value_parser!(u64).range(1..=BATCH_EVENTS_MAX as u64))]
    batch: u64,
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    #[command(flatten)]
    clients: Clients,
    /// Drive the HTTP/JSON API instead of the binary protocol (one
    /// Idempotency-Key per request); --addr is then the HTTP address.
    #[arg(long)]
    http: bool,
    /// With --addr: the API key. Binary protocol: an operator key (or an
    /// admin key, which may also create the bench ledger). With --http: an
    /// admin key (creates the ledger and an operator key).
    #[arg(long, env = "BURSAR_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Embedded server: take a snapshot after this many MiB of log.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    snapshot_every_mib: u64,
}

/// How many clients drive the load, and the seed of what they send.
#[derive(clap::Args, Clone)]
pub struct Clients {
    /// Concurrent client connections (in cluster mode spread over the
    /// replicas in turn).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    clients: u64,
    /// Requests each client keeps in flight (pipelining).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    inflight: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl LoadArgs {
    fn params(&self) -> LoadParams {
        // A per-run id prefix: runs against one server never collide.
        let run = (bursar_server::engine::now_nanos() >> 10) ^ self.clients.seed;
        LoadParams {
            accounts: self.accounts,
            transfers: self.transfers,
            batch: self.batch as usize,
            distribution: self.distribution,
            clients: self.clients.clients as usize,
            inflight: self.clients.inflight as usize,
            seed: self.clients.seed,
            ids: Ids { run },
            key: self.key.clone(),
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BenchCommand::Recovery(r)) => recovery::run(r),
        Some(BenchCommand::History(h)) => history::run(h),
        Some(BenchCommand::Orders(o)) => orders::run(o),
        Some(BenchCommand::RelayNats(r)) => relay_nats::run(r),
        Some(BenchCommand::ProjectPostgres(a)) => project_postgres::run(a),
        Some(BenchCommand::Cluster(a)) => cluster::run(a),
        Some(BenchCommand::Rejoin(a)) => rejoin::run(a),
        Some(BenchCommand::Failover(a)) => failover::run(a),
        None if args.load.http => http::run(&args.load),
        None => throughput(args.load),
    }
}

fn throughput(args: LoadArgs) -> anyhow::Result<()> {
    let temp;
    let mut p = args.params();
    let mut setup = p.clone();
    let (addr, node) = match &args.addr {
        Some(addr) => (addr.clone(), None),
        None => {
            let dir = match &args.data_dir {
                Some(d) => d.clone(),
                None => {
                    temp = tempfile::Builder::new().prefix("bursar-bench-").tempdir()?;
                    temp.path().to_path_buf()
                }
            };
            let mut config = NodeConfig::new(dir.clone(), "127.0.0.1:0".parse()?);
            config.snapshot_every_bytes = args.snapshot_every_mib << 20;
            let node =
                Node::start(config).with_context(|| format!("starting an embedded server in {}", dir.display()))?;
            eprintln!("bench: embedded server on {} (data dir {})", node.local_addr(), dir.display());
            // The admin key creates the ledger; transfers go as an operator,
            // as a production client would.
            setup.key = Some(node.create_key(Role::Admin, &[], "bench setup")?);
            p.key = Some(node.create_key(Role::Operator, &[], "bench")?);
            (node.local_addr().to_string(), Some(node))
        }
    };
    load::setup(&addr, &setup)?;
    let outcome = load::run(&addr, &p, true)?;
    let check = load::check_balances(&addr, &p, &outcome.tally);
    let rss_mb = peak_rss_mb();
    if let Some(node) = node {
        node.shutdown();
    }
    let h = &outcome.latency_us;
    println!(
        "bench: transfers={} seconds={:.2} tps={} batch_p50_ms={:.1} batch_p99_ms={:.1} batch_max_ms={:.1} rss_mb={} first_tenth_tps={} last_tenth_tps={}",
        outcome.tally.applied + outcome.tally.rejected,
        outcome.seconds,
        ((outcome.tally.applied + outcome.tally.rejected) as f64 / outcome.seconds) as u64,
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        rss_mb,
        outcome.first_tenth_tps,
        outcome.last_tenth_tps,
    );
    if outcome.tally.rejected > 0 {
        bail!("{} transfers were rejected (first: {:?})", outcome.tally.rejected, outcome.tally.first_rejection);
    }
    check?;
    Ok(())
}

/// Peak resident memory of this process (the embedded server included).
pub fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

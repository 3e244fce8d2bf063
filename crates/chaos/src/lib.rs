//! `bursar chaos`: Jepsen-style tests of cluster mode on a real cluster
//! (three `nats-server`, three `bursar start --cluster` replicas, all child
//! processes). `chaos bank`: clients move money at random among a fixed set
//! of accounts through random replicas while a seeded nemesis kills, pauses
//! and wipes replicas and NATS nodes; every read must conserve money. Once
//! every fault is healed, every replica must hold every acknowledged
//! transfer exactly once and the same balances. See `docs/cluster.md`.

mod bank;
mod checks;
mod nemesis;
pub mod procs;
pub mod tool;

use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum ChaosCommand {
    /// Random transfers on a 3-replica cluster under faults; checks that
    /// money is conserved and every acknowledged transfer is applied
    /// exactly once on every replica.
    Bank(BankArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct BankArgs {
    /// How long the clients run, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Seeds the clients and the nemesis (a run's faults and transfers).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Accounts money moves between (besides the mint that funds them).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=1000))]
    accounts: u64,
    /// Client threads, each with one transfer in flight.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Keep the working dir (NATS stores, replicas' data and logs) here;
    /// by default a temporary dir, removed after a run without anomalies.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run the workload and the checks without the nemesis.
    #[arg(long)]
    no_faults: bool,
}

/// What every thread of a run shares: the stop flag and the counters.
pub struct Shared {
    started: Instant,
    stop: AtomicBool,
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub unknown: AtomicU64,
    pub reads: AtomicU64,
    /// Reads that found money not conserved (each also an anomaly).
    pub read_violations: AtomicU64,
    pub faults: AtomicU64,
    anomalies: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            started: Instant::now(),
            stop: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            read_violations: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            anomalies: AtomicU64::new(0),
        }
    }

    /// Reports something the system under test must never do.
    pub fn anomaly(&self, what: impl std::fmt::Display) {
        self.anomalies.fetch_add(1, Ordering::Relaxed);
        println!("chaos: ANOMALY at t={:.1}s: {what}", self.seconds());
    }

    /// Counts `n` anomalies of one kind whose details were shown already.
    pub fn more_anomalies(&self, n: u64, what: impl std::fmt::Display) {
        self.anomalies.fetch_add(n, Ordering::Relaxed);
        println!("chaos: ANOMALY at t={:.1}s: {what} ({n} more)", self.seconds());
    }

    /// Prints one line of the run's story.
    pub fn say(&self, what: impl std::fmt::Display) {
        println!("chaos: t={:.1}s {what}", self.seconds());
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Sets the stop flag when dropped, also while unwinding, so the scoped
/// threads end and the scope can return (and the children be killed).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

pub fn run(command: ChaosCommand) -> anyhow::Result<()> {
    match command {
        ChaosCommand::Bank(args) => run_bank(args),
    }
}

fn run_bank(args: BankArgs) -> anyhow::Result<()> {
    let dir = working_dir(&args)?;
    println!(
        "chaos: bank seed={} duration={}s accounts={} clients={} faults={}",
        args.seed,
        args.duration,
        args.accounts,
        args.clients,
        if args.no_faults { "off" } else { "on" }
    );
    println!("chaos: working dir {}", dir.display());
    let shared = Shared::new();
    let seconds =
        run_in(&dir, &args, &shared).with_context(|| format!("the working dir is kept: {}", dir.display()))?;
    let anomalies = Shared::count(&shared.anomalies);
    println!(
        "chaos: seconds={seconds} acked={} faults={} anomalies={anomalies}",
        Shared::count(&shared.acked),
        Shared::count(&shared.faults)
    );
    if anomalies > 0 {
        bail!("{anomalies} anomalies; the working dir is kept: {}", dir.display());
    }
    if args.dir.is_none() {
        // Best effort: the run passed; a leftover temp dir is not a failure.
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("chaos: could not remove {}: {e}", dir.display());
        }
    }
    Ok(())
}

/// `--dir`, or a new temporary dir that is kept until the run passed (so
/// also after a panic).
fn working_dir(args: &BankArgs) -> anyhow::Result<PathBuf> {
    match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            // A previous run's stores would add its transfers to this run's balances.
            if std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))?.next().is_some() {
                bail!("{} is not empty: give a new or empty dir", d.display());
            }
            Ok(d.clone())
        }
        None => Ok(tempfile::Builder::new().prefix("bursar-chaos-").tempdir()?.keep()),
    }
}

/// Sets up the cluster and the accounts, runs the workload under the
/// nemesis, heals, and checks. Returns the workload's seconds; everything
/// found wrong after the setup is an anomaly, not an error.
fn run_in(dir: &Path, args: &BankArgs, shared: &Shared) -> anyhow::Result<u64> {
    let procs = procs::Procs::start(dir).map_err(|e| anyhow!(e)).context("starting the cluster")?;
    let bank = bank::Bank::new(args.accounts, procs.addrs(), args.seed);
    let funding = bank.setup().context("creating and funding the accounts")?;
    shared.say(format_args!("cluster up, {} accounts funded on every replica", args.accounts));
    let procs = Mutex::new(procs);
    let (mut history, seconds) = workload(&procs, &bank, args, shared)?;
    shared.say(format_args!(
        "workload stopped: acked={} rejected={} unknown={}; healing every fault",
        Shared::count(&shared.acked),
        Shared::count(&shared.rejected),
        Shared::count(&shared.unknown)
    ));
    if let Err(e) = nemesis::lock(&procs).heal_all() {
        shared.anomaly(format_args!("healing the cluster failed: {e}"));
    }
    history.extend(funding);
    let views = checks::converge(&procs, &bank, &history, shared);
    checks::check_all(&views, &bank, &history, shared);
    Ok(seconds)
}

/// Runs the clients and the nemesis for `--duration`, printing progress
/// every 10 s; returns every transfer the clients sent and the seconds run.
fn workload(
    procs: &Mutex<procs::Procs>,
    bank: &bank::Bank,
    args: &BankArgs,
    shared: &Shared,
) -> anyhow::Result<(Vec<bank::Op>, u64)> {
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&shared.stop);
        let started = Instant::now();
        let nemesis = s.spawn(|| nemesis::run(procs, shared, args.seed, !args.no_faults));
        let clients: Vec<_> = (0..args.clients).map(|c| s.spawn(move || bank.client(c, shared))).collect();
        let end = started + Duration::from_secs(args.duration);
        let mut next_report = started + Duration::from_secs(10);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            if Instant::now() >= next_report {
                report_progress(shared);
                next_report += Duration::from_secs(10);
            }
        }
        shared.stop.store(true, Ordering::Release);
        let seconds = started.elapsed().as_secs();
        let mut history = Vec::new();
        for c in clients {
            history.extend(c.join().map_err(|_| anyhow!("a client thread panicked"))?);
        }
        nemesis.join().map_err(|_| anyhow!("the nemesis thread panicked"))?;
        Ok((history, seconds))
    })
}

fn report_progress(shared: &Shared) {
    shared.say(format_args!(
        "acked={} rejected={} unknown={} reads={} faults={} anomalies={}",
        Shared::count(&shared.acked),
        Shared::count(&shared.rejected),
        Shared::count(&shared.unknown),
        Shared::count(&shared.reads),
        Shared::count(&shared.faults),
        Shared::count(&shared.anomalies)
    ));
}

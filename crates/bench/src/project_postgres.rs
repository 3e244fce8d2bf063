//! `bursar bench project-postgres`: throughput of the PostgreSQL read model.
//! An embedded node takes N transfers through the binary protocol, then the
//! projection (crates/projection) replays the whole change stream over HTTP
//! into a throwaway PostgreSQL; the read model is checked against the
//! acknowledged transfers and the engine. `--outage-seconds` stops
//! PostgreSQL (immediate, like a crash) mid-run and starts it again.

use super::load::{self, LoadParams};
use super::workload::{BENCH_LEDGER, Distribution, Ids, Tally};
use anyhow::{Context, bail};
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_projection::{Config, Control};
use bursar_server::{Node, NodeConfig};
use bursar_testkit::postgres::TempPostgres;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ProjectPostgresArgs {
    /// Transfers written before the projection starts (one event each).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    transfers: u64,
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    accounts: u64,
    /// Most events applied in one PostgreSQL transaction. A batch takes what
    /// has arrived, so this only matters while catching up, where large
    /// batches amortize the per-account work (10x the rate of 10,000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Stop PostgreSQL for this many seconds once a third of the events are applied.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3600))]
    outage_seconds: u64,
    /// Give up if the projection has not caught up within this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(args: ProjectPostgresArgs) -> anyhow::Result<()> {
    let pg = TempPostgres::start().map_err(anyhow::Error::msg).context("starting a temporary PostgreSQL")?;
    let dir = tempfile::Builder::new().prefix("bursar-bench-project-").tempdir()?;
    let admin = bursar_server::keys::generate_token();
    let mut node_config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse()?);
    node_config.admin_key = Some(admin.clone());
    let node = Node::start(node_config).context("starting an embedded server")?;
    let http = bursar_http::start(&node.handle(), "127.0.0.1:0".parse()?, Default::default(), None)
        .map_err(anyhow::Error::msg)?;
    let addr = node.local_addr().to_string();
    let run = (bursar_server::engine::now_nanos() >> 10) ^ args.seed;
    let p = LoadParams {
        accounts: args.accounts,
        transfers: args.transfers,
        batch: BATCH_EVENTS_MAX,
        distribution: Distribution::Uniform,
        clients: 2,
        inflight: 4,
        seed: args.seed,
        ids: Ids { run },
        key: Some(admin.clone()),
    };
    load::setup(&addr, &p)?;
    let outcome = load::run(&addr, &p, false)?;
    if outcome.tally.rejected > 0 {
        bail!("{} transfers were rejected (first: {:?})", outcome.tally.rejected, outcome.tally.first_rejection);
    }
    load::check_balances(&addr, &p, &outcome.tally)?;
    let last = *node.handle().events_tail.borrow();
    eprintln!(
        "bench: wrote {} transfers in {:.1} s; the stream ends at seq {last}; projecting into PostgreSQL on port {}",
        outcome.tally.applied,
        outcome.seconds,
        pg.port()
    );

    let mut config = Config::new(pg.url(), format!("http://{}", http.local_addr()), Some(admin));
    config.batch = args.batch as usize;
    let control = Arc::new(Control::default());
    let started = Instant::now();
    let worker = {
        let control = control.clone();
        std::thread::Builder::new()
            .name("projection".into())
            .spawn(move || bursar_projection::run(&config, &control))?
    };
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let mut outage_at = None;
    let caught_up = loop {
        let applied = control.applied.load(Ordering::Acquire);
        if applied >= last {
            break Ok(());
        }
        if args.outage_seconds > 0 && outage_at.is_none() && applied >= last / 3 {
            pg.stop_immediate().map_err(anyhow::Error::msg)?;
            eprintln!("bench: PostgreSQL stopped (immediate) at applied seq {applied} for {} s", args.outage_seconds);
            std::thread::sleep(Duration::from_secs(args.outage_seconds));
            pg.start_server().map_err(anyhow::Error::msg)?;
            eprintln!("bench: PostgreSQL started again");
            outage_at = Some(applied);
        }
        if worker.is_finished() || Instant::now() > deadline {
            let last_error = control.last_error.lock().ok().and_then(|e| e.clone()).unwrap_or_default();
            break Err(anyhow::anyhow!("the projection stopped at seq {applied} of {last} ({last_error})"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let seconds = started.elapsed().as_secs_f64();
    control.stop.store(true, Ordering::Release);
    match worker.join() {
        Ok(r) => r.map_err(anyhow::Error::msg)?,
        Err(_) => bail!("the projection thread panicked"),
    }
    caught_up?;
    verify(&pg.url(), &p, &outcome.tally, last)?;
    node.shutdown();
    if let Some(at) = outage_at {
        println!(
            "bench: outage of {} s at applied seq {at}: the projection caught up to seq {last}, balances match",
            args.outage_seconds
        );
    }
    println!(
        "bench: projection=postgres events={last} seconds={seconds:.2} events_per_s={} verified=ok",
        (last as f64 / seconds) as u64
    );
    Ok(())
}

/// The read model against the acknowledged transfers (which the engine
/// itself was checked against): every account's four balances, the
/// transfer count, the ledger's trial balance, the cursor, and the last
/// daily balance of each account.
fn verify(url: &str, p: &LoadParams, tally: &Tally, last: u64) -> anyhow::Result<()> {
    let mut db = postgres::Client::connect(url, postgres::NoTls)?;
    let state = db.query_one("SELECT last_seq FROM projection_state", &[])?;
    if state.get::<_, i64>(0) != last as i64 {
        bail!("the stored cursor is {}, not {last}", state.get::<_, i64>(0));
    }
    let rows = db.query(
        "SELECT id::text, debits_pending::text, debits_posted::text, credits_pending::text, credits_posted::text \
         FROM accounts WHERE ledger = $1",
        &[&i64::from(BENCH_LEDGER)],
    )?;
    if rows.len() as u64 != p.accounts {
        bail!("{} accounts in PostgreSQL, {} created", rows.len(), p.accounts);
    }
    for r in &rows {
        let n = |i: usize| r.get::<_, String>(i).parse::<u128>().context("a numeric(39,0) is a u128");
        let id = n(0)?;
        let i = p.ids.account_index(id);
        let (dp, dpo, cp, cpo) = (n(1)?, n(2)?, n(3)?, n(4)?);
        if dp != 0 || cp != 0 || dpo != tally.debits[i] || cpo != tally.credits[i] {
            bail!(
                "account {id}: PostgreSQL has debits {dpo} credits {cpo} (pending {dp}/{cp}); acknowledged: {} {}",
                tally.debits[i],
                tally.credits[i]
            );
        }
    }
    let transfers: i64 = db.query_one("SELECT count(*) FROM transfers", &[])?.get(0);
    if transfers as u64 != tally.applied {
        bail!("{transfers} transfers in PostgreSQL, {} acknowledged", tally.applied);
    }
    let trial = db.query_one(
        "SELECT (sum(debits_posted) = sum(credits_posted))::bool FROM accounts WHERE ledger = $1",
        &[&i64::from(BENCH_LEDGER)],
    )?;
    if !trial.get::<_, bool>(0) {
        bail!("the trial balance of the bench ledger does not balance");
    }
    let daily_mismatch: i64 = db
        .query_one(
            "SELECT count(*) FROM accounts a JOIN LATERAL (SELECT * FROM daily_balances d WHERE d.account_id = a.id \
             ORDER BY day DESC LIMIT 1) d ON true \
             WHERE (d.debits_posted, d.credits_posted, d.debits_pending, d.credits_pending) \
               <> (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)",
            &[],
        )?
        .get(0);
    if daily_mismatch != 0 {
        bail!("{daily_mismatch} accounts' last daily balance differs from their balance");
    }
    Ok(())
}

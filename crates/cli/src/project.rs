//! `bursar project postgres`: keeps a PostgreSQL read model of the server's
//! change stream (crates/projection, docs/projection.md).

use anyhow::{Context, bail};
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(clap::Subcommand)]
pub enum ProjectCommand {
    /// Follow the server's events into PostgreSQL tables, exactly once; runs until interrupted.
    Postgres(PostgresArgs),
}

#[derive(clap::Args)]
pub struct PostgresArgs {
    /// PostgreSQL connection: `postgresql://user@host:port/db` or `host=… port=… user=… dbname=…`.
    #[arg(long, env = "BURSAR_PG_URL", hide_env_values = true)]
    url: String,
    /// TLS to PostgreSQL: disable, prefer, require, verify-ca or verify-full
    /// (libpq's meanings; wins over `sslmode` in --url). verify-full checks
    /// the certificate's chain and host name.
    #[arg(long, value_parser = parse_sslmode)]
    pg_sslmode: Option<bursar_projection::pg_tls::SslMode>,
    /// A PEM CA certificate for the server's certificate (wins over
    /// `sslrootcert` in --url).
    #[arg(long)]
    pg_ca_file: Option<std::path::PathBuf>,
    /// Base URL of the server's HTTP API.
    #[arg(long, env = "BURSAR_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An API key that may read events (admin, or an auditor not restricted to ledgers).
    #[arg(long, env = "BURSAR_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Empty the read model and replay every event from the first.
    #[arg(long)]
    rebuild: bool,
    /// Most events applied in one PostgreSQL transaction. A batch takes what
    /// has arrived, so this only matters while catching up, where large
    /// batches amortize the per-account work (10x the rate of 10,000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Long poll of one events request, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=30_000))]
    wait_ms: u64,
}

pub fn run(command: ProjectCommand) -> anyhow::Result<()> {
    let ProjectCommand::Postgres(args) = command;
    if args.key.is_none() {
        bail!("an API key is needed to read events: set BURSAR_KEY (or --key)");
    }
    let mut config = bursar_projection::Config::new(args.url, args.server, args.key);
    config.pg_tls = bursar_projection::pg_tls::PgTlsOptions { mode: args.pg_sslmode, ca_file: args.pg_ca_file };
    config.batch = args.batch as usize;
    config.rebuild = args.rebuild;
    config.wait_ms = args.wait_ms;
    let control = Arc::new(bursar_projection::Control::default());
    // Ctrl-C and SIGTERM stop between two transactions; an interrupted
    // transaction would be rolled back anyway, so this only saves a replay.
    let stopper = control.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("project-signals".into()).spawn(move || {
        runtime.block_on(async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                // Without a SIGTERM handler the default action still ends the process.
                Err(_) => {
                    if tokio::signal::ctrl_c().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        });
        stopper.stop.store(true, Ordering::Release);
    })?;
    bursar_projection::run(&config, &control).map_err(anyhow::Error::msg).context("bursar project postgres")?;
    eprintln!("project: stopped after seq {}", control.applied.load(Ordering::Acquire));
    Ok(())
}

fn parse_sslmode(text: &str) -> Result<bursar_projection::pg_tls::SslMode, bursar_projection::pg_tls::SslModeError> {
    text.parse()
}

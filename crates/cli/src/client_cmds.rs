//! Small client commands over the binary protocol.

use anyhow::{Context, bail};
use bursar_client::{Client, ClientOptions, TlsOptions};
use bursar_core::{Account, Transfer};
use std::path::PathBuf;
use std::time::Duration;

/// Where and how to reach the binary protocol.
#[derive(clap::Args, Clone)]
pub struct ConnectArgs {
    #[arg(long, default_value = "127.0.0.1:3100", env = "BURSAR_ADDR")]
    pub addr: String,
    /// The API key to authenticate with (`ping` works without one).
    #[arg(long, env = "BURSAR_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Connect with TLS, trusting the CA certificates in this PEM file.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the server's certificate must carry
    /// (default: the host of --addr).
    #[arg(long, requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl ConnectArgs {
    pub fn options(&self, timeout: Duration) -> anyhow::Result<ClientOptions> {
        let tls = match &self.tls_ca {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let host = self.addr.rsplit_once(':').map_or(self.addr.as_str(), |(h, _)| h);
                let name = self.tls_server_name.as_deref().unwrap_or(host.trim_matches(['[', ']']));
                Some(TlsOptions::with_ca_pem(&pem, name).with_context(|| format!("--tls-ca {}", path.display()))?)
            }
            None => None,
        };
        Ok(ClientOptions { timeout, key: self.key.clone(), tls })
    }
}

#[derive(clap::Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Keep trying for this many seconds.
    #[arg(long, default_value_t = 0)]
    pub wait_seconds: u64,
}

pub fn ping(args: PingArgs) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_seconds);
    let options = args.connect.options(Duration::from_secs(5))?;
    let addr = &args.connect.addr;
    loop {
        match Client::connect(addr, &options).and_then(|mut c| c.ping()) {
            Ok(()) => {
                println!("ok {addr}");
                return Ok(());
            }
            Err(e) if std::time::Instant::now() >= deadline => bail!("{addr} is not ready: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum What {
    Account,
    Transfer,
}

#[derive(clap::Args)]
pub struct LookupArgs {
    pub what: What,
    /// Ids, decimal.
    #[arg(required = true)]
    pub ids: Vec<u128>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    if args.connect.key.is_none() {
        bail!("lookup needs an API key: --key or BURSAR_KEY");
    }
    let options = args.connect.options(Duration::from_secs(30))?;
    let mut client = Client::connect(&args.connect.addr, &options)
        .with_context(|| format!("connecting to {}", args.connect.addr))?;
    match args.what {
        What::Account => {
            let found = client.lookup_accounts(&args.ids)?;
            print_accounts(&found, args.json);
        }
        What::Transfer => {
            let found = client.lookup_transfers(&args.ids)?;
            print_transfers(&found, args.json);
        }
    }
    Ok(())
}

fn print_accounts(accounts: &[Account], json: bool) {
    if !json {
        println!(
            "{:>40} {:>6} {:>6} {:>40} {:>40} {:>40} {:>40}",
            "id", "ledger", "code", "debits_pending", "debits_posted", "credits_pending", "credits_posted"
        );
    }
    for a in accounts {
        if json {
            println!(
                r#"{{"id":"{}","ledger":{},"code":{},"flags":{},"debits_pending":"{}","debits_posted":"{}","credits_pending":"{}","credits_posted":"{}","timestamp":"{}"}}"#,
                a.id,
                a.ledger,
                a.code,
                a.flags,
                a.debits_pending,
                a.debits_posted,
                a.credits_pending,
                a.credits_posted,
                a.timestamp
            );
        } else {
            println!(
                "{:>40} {:>6} {:>6} {:>40} {:>40} {:>40} {:>40}",
                a.id, a.ledger, a.code, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
            );
        }
    }
}

fn print_transfers(transfers: &[Transfer], json: bool) {
    if !json {
        println!(
            "{:>40} {:>40} {:>40} {:>40} {:>6} {:>6}",
            "id", "debit_account_id", "credit_account_id", "amount", "ledger", "flags"
        );
    }
    for t in transfers {
        if json {
            println!(
                r#"{{"id":"{}","debit_account_id":"{}","credit_account_id":"{}","amount":"{}","pending_id":"{}","ledger":{},"code":{},"flags":{},"timeout":{},"timestamp":"{}"}}"#,
                t.id,
                t.debit_account_id,
                t.credit_account_id,
                t.amount,
                t.pending_id,
                t.ledger,
                t.code,
                t.flags,
                t.timeout,
                t.timestamp
            );
        } else {
            println!(
                "{:>40} {:>40} {:>40} {:>40} {:>6} {:>6}",
                t.id, t.debit_account_id, t.credit_account_id, t.amount, t.ledger, t.flags
            );
        }
    }
}

//! Small client commands over the binary protocol.

use anyhow::{Context, bail};
use bursar_client::{Client, ClientOptions};
use bursar_core::{Account, Transfer};
use std::time::Duration;

#[derive(clap::Args)]
pub struct PingArgs {
    #[arg(long, default_value = "127.0.0.1:3100", env = "BURSAR_ADDR")]
    pub addr: String,
    /// Keep trying for this many seconds.
    #[arg(long, default_value_t = 0)]
    pub wait_seconds: u64,
}

pub fn ping(args: PingArgs) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_seconds);
    loop {
        let options = ClientOptions { timeout: Duration::from_secs(5) };
        match Client::connect(&args.addr, &options).and_then(|mut c| c.ping()) {
            Ok(()) => {
                println!("ok {}", args.addr);
                return Ok(());
            }
            Err(e) if std::time::Instant::now() >= deadline => bail!("{} is not ready: {e}", args.addr),
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
    #[arg(long, default_value = "127.0.0.1:3100", env = "BURSAR_ADDR")]
    pub addr: String,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(&args.addr, &ClientOptions::default())
        .with_context(|| format!("connecting to {}", args.addr))?;
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

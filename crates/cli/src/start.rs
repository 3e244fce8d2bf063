//! `bursar start` and `bursar verify`.

use anyhow::{Context, bail};
use bursar_server::{Node, NodeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct StartArgs {
    /// Where the log and snapshots live.
    #[arg(long, default_value = "./bursar-data", env = "BURSAR_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address of the binary protocol (loopback by default).
    #[arg(long, default_value = "127.0.0.1:3100", env = "BURSAR_ADDR")]
    pub addr: SocketAddr,
    /// Take a snapshot after this many MiB of log.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub snapshot_every_mib: u64,
    /// Roll to a new log segment after this many MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub segment_mib: u64,
    /// Most concurrent client connections.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_connections: u64,
}

impl StartArgs {
    pub fn node_config(&self) -> NodeConfig {
        let mut config = NodeConfig::new(self.data_dir.clone(), self.addr);
        config.snapshot_every_bytes = self.snapshot_every_mib << 20;
        config.segment_bytes = self.segment_mib << 20;
        config.net.max_connections = self.max_connections as usize;
        config
    }
}

pub fn start(args: StartArgs) -> anyhow::Result<()> {
    let node = Node::start(args.node_config())
        .with_context(|| format!("starting with data directory {}", args.data_dir.display()))?;
    let r = node.report();
    println!(
        "bursar: serving on {} (data dir {}, position {}, {} accounts, {} transfers, snapshot {}, replayed {} entries, recovered in {} ms)",
        node.local_addr(),
        args.data_dir.display(),
        r.position,
        r.accounts,
        r.transfers,
        r.snapshot_position.map_or("none".to_string(), |p| p.to_string()),
        r.replayed_entries,
        r.recovery.as_millis()
    );
    node.run_until_signal();
    println!("bursar: stopped cleanly");
    Ok(())
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, default_value = "./bursar-data")]
    pub data_dir: PathBuf,
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    match bursar_server::verify::verify(&args.data_dir) {
        Ok(report) => {
            println!("{}", report.summary());
            Ok(())
        }
        Err(e) => {
            println!("verify: FAILED {e}");
            bail!("verification of {} failed", args.data_dir.display())
        }
    }
}

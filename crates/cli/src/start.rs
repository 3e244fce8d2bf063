//! `bursar start` and `bursar verify`.

use anyhow::bail;
use bursar_node::{HttpSettings, NodeSettings};
use bursar_server::NodeConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct StartArgs {
    /// Where the log and snapshots live.
    #[arg(long, default_value = "./bursar-data", env = "BURSAR_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address of the binary protocol (loopback by default), or `none` to
    /// serve no binary protocol.
    #[arg(long, default_value = "127.0.0.1:3100", env = "BURSAR_ADDR", value_parser = parse_addr)]
    pub addr: BinaryAddr,
    /// Serve the binary protocol over TLS with this PEM certificate chain
    /// (needs --addr-tls-key).
    #[arg(long, requires = "addr_tls_key")]
    pub addr_tls_cert: Option<PathBuf>,
    /// The PEM private key for --addr-tls-cert.
    #[arg(long, requires = "addr_tls_cert")]
    pub addr_tls_key: Option<PathBuf>,
    /// Most concurrent binary protocol connections from one IP address
    /// (IPv6: from one /64).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub addr_max_connections_per_ip: u64,
    /// Close a binary protocol connection that sends no whole frame header
    /// for this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub addr_idle_timeout_seconds: u64,
    /// Take a snapshot after this many MiB of log.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub snapshot_every_mib: u64,
    /// Roll to a new log segment after this many MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub segment_mib: u64,
    /// Keep every log segment, for audit and for `bursar verify` from
    /// position 1 (costs disk). By default, segments below the oldest
    /// retained snapshot are removed after each snapshot.
    #[arg(long)]
    pub log_retain: bool,
    /// MiB of RAM caching history that left memory (transfers, balance
    /// records, events older than the newest snapshot, read from the
    /// snapshot's files on disk). More makes old lookups faster; the working
    /// set (accounts, pending transfers, indexes) is in RAM regardless.
    #[arg(long, default_value_t = bursar_server::limits::CACHE_BYTES_DEFAULT >> 20,
          value_parser = clap::value_parser!(u64).range(bursar_server::limits::CACHE_MIB_MIN..=bursar_server::limits::CACHE_MIB_MAX))]
    pub cache_mib: u64,
    /// Most concurrent client connections.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_connections: u64,
    /// Address of the HTTP/JSON API.
    #[arg(long, default_value = "127.0.0.1:8080", env = "BURSAR_HTTP")]
    pub http: SocketAddr,
    /// Do not serve the HTTP API.
    #[arg(long)]
    pub no_http: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keep idempotency records this many hours.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub idempotency_retention_hours: u64,
    /// Most idempotency records kept; new keys beyond it get 503.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub idempotency_max_records: u32,
    /// HTTP: most open connections from one client address.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_connections_per_ip: u64,
    /// HTTP: seconds a client may take to send a request head (also the
    /// longest wait for the next request on a keep-alive connection).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_seconds: u64,
    /// HTTP: close a connection on which no byte moved for this many seconds
    /// (at least 20: event streams send a keep-alive every 15 s).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(20..=86_400))]
    pub http_idle_timeout_seconds: u64,
    /// HTTP: request rate of API keys without a limit of their own,
    /// `RPS[:BURST]` (BURST defaults to RPS). Absent: not limited.
    #[arg(long, value_name = "RPS[:BURST]", value_parser = parse_rate_limit)]
    pub rate_limit_per_key: Option<bursar_server::rate_limit::RateLimit>,
    /// The first admin key, used only when the data directory has no keys.
    #[arg(long, env = "BURSAR_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    #[command(flatten)]
    pub workflows: crate::workflows::WorkflowArgs,
    #[command(flatten)]
    pub relays: crate::relays::RelayArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub cluster: crate::cluster_args::ClusterArgs,
}

fn parse_rate_limit(
    s: &str,
) -> Result<bursar_server::rate_limit::RateLimit, bursar_server::rate_limit::RateLimitParseError> {
    bursar_server::rate_limit::RateLimit::parse(s)
}

/// Webhook options of `bursar start`.
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Do not deliver webhooks (the webhook routes answer 503).
    #[arg(long)]
    pub no_webhooks: bool,
    /// Also allow webhook destinations on this host name, IP or CIDR (by
    /// default only public addresses are). Repeatable.
    #[arg(long = "webhook-allow", value_name = "HOST|CIDR")]
    pub webhook_allow: Vec<String>,
    /// How long a failing event is retried before it is dead-lettered.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub webhook_retry_seconds: u64,
    /// Longest wait between two attempts of one event.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub webhook_max_backoff_seconds: u64,
    /// Longest one delivery attempt may take.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_seconds: u64,
}

impl WebhookArgs {
    pub fn settings(&self) -> bursar_outbound::webhooks::delivery::DeliverySettings {
        use std::time::Duration;
        bursar_outbound::webhooks::delivery::DeliverySettings {
            retry_period: Duration::from_secs(self.webhook_retry_seconds),
            max_backoff: Duration::from_secs(self.webhook_max_backoff_seconds),
            attempt_timeout: Duration::from_secs(self.webhook_timeout_seconds),
            ..Default::default()
        }
    }
}

/// `--addr`: an address, or `none`.
#[derive(Clone, Copy, Debug)]
pub struct BinaryAddr(pub Option<SocketAddr>);

fn parse_addr(s: &str) -> Result<BinaryAddr, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(BinaryAddr(None));
    }
    s.parse().map(|a| BinaryAddr(Some(a))).map_err(|e| format!("{e} (an address such as 127.0.0.1:3100, or none)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn addr_is_an_address_or_none() {
        assert_eq!(super::parse_addr("none").unwrap().0, None);
        assert_eq!(super::parse_addr("127.0.0.1:3100").unwrap().0, Some("127.0.0.1:3100".parse().unwrap()));
        assert!(super::parse_addr("nowhere").is_err());
    }
}

impl StartArgs {
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let mut config = NodeConfig::new(self.data_dir.clone(), "127.0.0.1:0".parse()?);
        config.listen = self.addr.0;
        config.snapshot_every_bytes = self.snapshot_every_mib << 20;
        config.segment_bytes = self.segment_mib << 20;
        config.log_retain = self.log_retain;
        config.cache_bytes = self.cache_mib << 20;
        config.net.max_connections = self.max_connections as usize;
        config.net.max_connections_per_ip = self.addr_max_connections_per_ip as usize;
        config.net.idle_timeout = std::time::Duration::from_secs(self.addr_idle_timeout_seconds);
        config.admin_key = self.admin_key.clone();
        if let (Some(cert), Some(key)) = (&self.addr_tls_cert, &self.addr_tls_key) {
            let files = bursar_http::TlsFiles { cert: cert.clone(), key: key.clone() };
            let acceptor = bursar_http::serve::tls_acceptor(&files).map_err(|e| anyhow::anyhow!("--addr-tls: {e}"))?;
            config.binary_tls = Some(bursar_server::net::Tls(acceptor));
        }
        Ok(config)
    }

    pub fn http_config(&self) -> bursar_http::HttpConfig {
        bursar_http::HttpConfig {
            idempotency_retention: std::time::Duration::from_secs(self.idempotency_retention_hours * 3600),
            idempotency_max_records: self.idempotency_max_records,
            max_connections_per_ip: self.max_connections_per_ip as usize,
            header_read_timeout: std::time::Duration::from_secs(self.http_header_timeout_seconds),
            idle_timeout: std::time::Duration::from_secs(self.http_idle_timeout_seconds),
            rate_limit_per_key: self.rate_limit_per_key,
            ..Default::default()
        }
    }

    pub fn tls(&self) -> Option<bursar_http::TlsFiles> {
        Some(bursar_http::TlsFiles { cert: self.tls_cert.clone()?, key: self.tls_key.clone()? })
    }
}

/// The node `args` describe, checked (files read, keys loaded) before
/// anything starts.
fn settings(args: &StartArgs) -> anyhow::Result<NodeSettings> {
    let workflows = if args.workflows.no_orders { None } else { Some(args.workflows.settings(&args.data_dir)?) };
    // Webhook secrets are sealed with the same keys as orders' personal data.
    let webhooks = if args.webhooks.no_webhooks {
        None
    } else {
        let keyring = match &workflows {
            Some(s) => s.keyring.clone(),
            None => args.workflows.keyring(&args.data_dir)?,
        };
        let policy = bursar_outbound::webhooks::DestinationPolicy::parse(&args.webhooks.webhook_allow)
            .map_err(|e| anyhow::anyhow!(e))?;
        Some(Arc::new(bursar_http::WebhooksApi::new(keyring, Arc::new(policy))))
    };
    args.relays.check()?;
    let http = (!args.no_http).then(|| {
        let mut config = args.http_config();
        config.webhooks = webhooks.clone();
        config.orders = workflows
            .as_ref()
            .map(|s| Arc::new(bursar_http::OrdersApi { config: (*s.orders).clone(), keyring: s.keyring.clone() }));
        HttpSettings { listen: args.http, config, tls: args.tls() }
    });
    Ok(NodeSettings {
        data_dir: args.data_dir.clone(),
        engine: args.node_config()?,
        http,
        webhooks: webhooks.map(|api| (api, args.webhooks.settings())),
        workflows,
        relay_nats: args.relays.nats_config(),
        cluster: args.cluster.config()?,
    })
}

pub fn start(args: StartArgs) -> anyhow::Result<()> {
    let node = bursar_node::start(settings(&args)?)?;
    if let Some((position, took)) = node.bootstrapped_from {
        println!("bursar: bootstrapped from the cluster's snapshot at position {position} in {} ms", took.as_millis());
    }
    let r = node.report();
    let binary = match node.binary_addr() {
        Some(a) if args.addr_tls_cert.is_some() => format!("{a} (TLS)"),
        Some(a) => a.to_string(),
        None => "(no binary protocol: --addr none)".to_string(),
    };
    println!(
        "bursar: serving on {} (data dir {}, position {}, {} accounts, {} transfers{}, snapshot {}, replayed {} entries, recovered in {} ms)",
        binary,
        args.data_dir.display(),
        r.position,
        r.accounts,
        r.transfers,
        match r.caught_up_entries {
            0 => String::new(),
            n => format!(" before catching up {n} entries from the cluster"),
        },
        r.snapshot_position.map_or("none".to_string(), |p| p.to_string()),
        r.replayed_entries,
        r.recovery.as_millis()
    );
    if let Some(addr) = node.http_addr {
        println!(
            "bursar: HTTP API on {}://{addr}/v1 (OpenAPI at /v1/openapi.json)",
            if args.tls_cert.is_some() { "https" } else { "http" }
        );
    }
    match &r.admin_key {
        Some((key, true)) => {
            println!("bursar: created the first admin key; it is shown only now, store it safely:\n{key}")
        }
        Some((_, false)) => println!("bursar: created the first admin key from BURSAR_ADMIN_KEY"),
        None => {}
    }
    if !args.workflows.no_orders {
        println!(
            "bursar: payment orders on (connectors: {}){}",
            args.workflows.connectors_url.as_deref().unwrap_or("built-in simulators"),
            if node.is_replica() { "; executors run on the lease holder" } else { "" }
        );
    }
    node.run_until_signal();
    println!("bursar: stopped cleanly");
    Ok(())
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, default_value = "./bursar-data")]
    pub data_dir: PathBuf,
    /// Stop the replay after the log entry at this position and summarize the state there.
    ///
    /// Its `digest=` is the one the cluster's divergence guard computes at
    /// that position. The replay starts where it does without --until: at
    /// position 1 if the log holds it, else from the oldest snapshot the log
    /// continues from (a replica bootstrapped from a snapshot holds no
    /// entries before it; older snapshots are pruned). POSITION must be at
    /// or after that start and at most the log's end, else verify fails.
    /// Every log entry is still checked; snapshots after POSITION are not.
    #[arg(long, value_name = "POSITION")]
    pub until: Option<u64>,
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    match bursar_server::verify::verify_until(&args.data_dir, args.until) {
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

#[derive(clap::Args)]
pub struct AuditVerifyArgs {
    #[arg(long, default_value = "./bursar-data")]
    pub data_dir: PathBuf,
}

pub fn audit_verify(args: AuditVerifyArgs) -> anyhow::Result<()> {
    match bursar_server::verify::verify_audit(&args.data_dir) {
        Ok(report) => {
            println!("{}", report.summary());
            Ok(())
        }
        Err(e) => {
            println!("audit: FAILED {e}");
            bail!("the audit trail in {} does not verify", args.data_dir.display())
        }
    }
}

//! Order workflow options of `bursar start`, and `bursar simulate` (the
//! connector simulators as an HTTP service, for tests and demos that need
//! connectors outliving a node).

use anyhow::{Context, bail};
use bursar_core::orders::settings::OrdersConfig;
use bursar_crypto::pii::PiiKeyring;
use bursar_workflow::connectors::{
    ConnectorAuth, HttpConnectorsConfig, SimConfig, SimServerOptions, Simulators, SimulatorsConfig, plaintext_warning,
};
use bursar_workflow::runtime::{ConnectorSource, WorkflowSettings};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct WorkflowArgs {
    /// Do not run payment orders (no executor, order routes answer 503).
    #[arg(long)]
    pub no_orders: bool,
    /// The personal-data encryption keys: a file holding `ID:HEX64,...`
    /// (first = active). Created with a fresh key if missing. Default:
    /// `<data-dir>.pii-keys`, beside (never inside) the data directory.
    #[arg(long, env = "BURSAR_PII_KEYS_FILE")]
    pub pii_keys_file: Option<PathBuf>,
    /// Order assets as CODE:LEDGER:SCALE,... (ledgers are created if missing).
    #[arg(long, default_value = "USD:840:2,EUR:978:2,GBP:826:2,JPY:392:0")]
    pub order_assets: String,
    /// Order fee: basis points of the source amount (rounded up).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub fee_bps: u32,
    /// Order fee: fixed part, in source minor units.
    #[arg(long, default_value_t = 0)]
    pub fee_fixed: u64,
    /// Seconds an order waits for funds before it expires.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(1..))]
    pub funds_timeout_seconds: u32,
    /// Seconds an order waits on hold for review before it expires.
    #[arg(long, default_value_t = 259_200, value_parser = clap::value_parser!(u32).range(1..))]
    pub review_timeout_seconds: u32,
    /// Use connectors over HTTP at this base URL (e.g. a `bursar simulate`)
    /// instead of the built-in simulators.
    #[arg(long)]
    pub connectors_url: Option<String>,
    /// A PEM CA certificate trusted for an https:// --connectors-url, besides
    /// the public roots (a bank's private CA).
    #[arg(long, requires = "connectors_url")]
    pub connectors_ca_file: Option<PathBuf>,
    /// A PEM certificate chain presented to the connectors (mutual TLS).
    #[arg(long, requires_all = ["connectors_url", "connectors_key_file"])]
    pub connectors_cert_file: Option<PathBuf>,
    /// The PEM private key of --connectors-cert-file.
    #[arg(long, requires = "connectors_cert_file")]
    pub connectors_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub auth: ConnectorAuthArgs,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// Credentials of connector requests: sent by `bursar start`, demanded by
/// `bursar simulate`.
#[derive(clap::Args, Clone)]
pub struct ConnectorAuthArgs {
    /// A bearer token for connector requests (16+ visible characters). Prefer
    /// the environment or --connectors-token-file: arguments show in `ps`.
    #[arg(long, env = "BURSAR_CONNECTORS_TOKEN", hide_env_values = true, conflicts_with = "connectors_token_file")]
    pub connectors_token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long)]
    pub connectors_token_file: Option<PathBuf>,
    /// A file holding an HMAC-SHA256 key in hex (32+ bytes): every connector
    /// request is signed (Bursar-Timestamp, Bursar-Signature).
    #[arg(long)]
    pub connectors_hmac_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for ConnectorAuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches a log.
        f.debug_struct("ConnectorAuthArgs")
            .field("connectors_token", &self.connectors_token.as_ref().map(|_| "<set>"))
            .field("connectors_token_file", &self.connectors_token_file)
            .field("connectors_hmac_key_file", &self.connectors_hmac_key_file)
            .finish()
    }
}

impl ConnectorAuthArgs {
    pub fn load(&self) -> anyhow::Result<ConnectorAuth> {
        ConnectorAuth::load(
            self.connectors_token_file.as_deref(),
            self.connectors_token.as_deref(),
            self.connectors_hmac_key_file.as_deref(),
        )
        .map_err(anyhow::Error::msg)
    }
}

/// Settings of the connector simulators.
#[derive(clap::Args, Clone, Debug)]
pub struct SimArgs {
    /// Simulated latency of every connector call, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub sim_latency_ms: u64,
    /// Probability that a simulated call fails with a 5xx (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub sim_failure_rate: f64,
    /// Probability that a simulated call hangs past every timeout (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub sim_timeout_rate: f64,
    /// The simulated bank pays every expected order this many ms after it is
    /// registered (off: funds arrive through `POST /v1/orders/{id}/funds`).
    #[arg(long)]
    pub sim_auto_pay_ms: Option<u64>,
    /// Payouts settle this many ms after they are sent (0: at once).
    #[arg(long, default_value_t = 0)]
    pub sim_payout_confirm_ms: u64,
    /// Append every simulated call (with its idempotency key) to this file as JSON lines.
    #[arg(long)]
    pub sim_call_log: Option<PathBuf>,
}

impl SimArgs {
    pub fn config(&self) -> anyhow::Result<SimulatorsConfig> {
        for (name, p) in [("--sim-failure-rate", self.sim_failure_rate), ("--sim-timeout-rate", self.sim_timeout_rate)]
        {
            if !(0.0..=1.0).contains(&p) {
                bail!("{name} must be between 0 and 1, not {p}");
            }
        }
        let sim = SimConfig {
            latency: Duration::from_millis(self.sim_latency_ms),
            failure_rate: self.sim_failure_rate,
            timeout_rate: self.sim_timeout_rate,
            seed: None,
        };
        let mut config = SimulatorsConfig {
            screening: sim.clone(),
            fx: sim.clone(),
            payout: sim.clone(),
            funds: sim,
            funds_auto_pay_after: self.sim_auto_pay_ms.map(Duration::from_millis),
            ..Default::default()
        };
        config.payout_settings.confirm_after = Duration::from_millis(self.sim_payout_confirm_ms);
        Ok(config)
    }
}

impl WorkflowArgs {
    pub fn orders_config(&self) -> anyhow::Result<OrdersConfig> {
        let mut config = OrdersConfig {
            assets: OrdersConfig::parse_assets(&self.order_assets)
                .map_err(|e| anyhow::anyhow!("--order-assets: {e}"))?,
            funds_timeout_seconds: self.funds_timeout_seconds,
            review_timeout_seconds: self.review_timeout_seconds,
            ..Default::default()
        };
        config.fee.bps = self.fee_bps;
        config.fee.fixed = u128::from(self.fee_fixed);
        Ok(config)
    }

    /// Loads (or creates) the personal-data keys.
    pub fn keyring(&self, data_dir: &Path) -> anyhow::Result<Arc<PiiKeyring>> {
        if let Ok(spec) = std::env::var("BURSAR_PII_KEYS") {
            return Ok(Arc::new(PiiKeyring::parse(&spec).context("BURSAR_PII_KEYS")?));
        }
        let path = self.pii_keys_file.clone().unwrap_or_else(|| beside(data_dir, "pii-keys"));
        // A data dir whose parent does not exist yet is created by the
        // server; the key file beside it needs that parent first.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {} for the personal-data keys", parent.display()))?;
        }
        let (keyring, created) =
            PiiKeyring::load_or_create(&path).with_context(|| format!("personal-data keys {}", path.display()))?;
        if created {
            eprintln!(
                "bursar: created a personal-data encryption key in {}; keep it apart from the data directory (a secrets manager) and back it up: without it, orders' personal data cannot be read",
                path.display()
            );
        }
        Ok(Arc::new(keyring))
    }

    pub fn settings(&self, data_dir: &Path) -> anyhow::Result<WorkflowSettings> {
        let mut settings = WorkflowSettings::new(self.orders_config()?, self.keyring(data_dir)?);
        settings.connectors = match &self.connectors_url {
            Some(url) => ConnectorSource::Http(self.http_connectors(url)?),
            None => ConnectorSource::Simulated(Box::new(self.sim.config()?)),
        };
        settings.sim_call_log = self.sim.sim_call_log.clone();
        Ok(settings)
    }
}

impl WorkflowArgs {
    /// Checks the URL, credentials and TLS files now, so a mistake stops the start.
    fn http_connectors(&self, url: &str) -> anyhow::Result<HttpConnectorsConfig> {
        let config = HttpConnectorsConfig {
            base_url: url.to_string(),
            auth: self.auth.load()?,
            ca_file: self.connectors_ca_file.clone(),
            client_identity: self.connectors_cert_file.clone().zip(self.connectors_key_file.clone()),
        };
        if let Some(warning) = plaintext_warning(url) {
            if !config.auth.is_none() {
                bail!("{warning} (refused: connector credentials are set)");
            }
            eprintln!("bursar: warning: {warning}");
        }
        config.endpoint().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// `<dir>.<suffix>` next to `dir`.
fn beside(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "bursar-data".into());
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Where to serve the simulators' HTTP API.
    #[arg(long, default_value = "127.0.0.1:3200")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The credentials every request must carry (refused with 401 otherwise).
    #[command(flatten)]
    pub auth: ConnectorAuthArgs,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// `bursar simulate`: serves the connector simulators until SIGINT/SIGTERM.
pub fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let config = args.sim.config()?;
    let mut options = SimServerOptions { auth: args.auth.load()?, ..Default::default() };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let identity = bursar_tls::Identity::load(cert, key, "--tls-cert/--tls-key").map_err(anyhow::Error::msg)?;
        options.tls = Some(Arc::new(bursar_tls::server_config(identity, None).map_err(anyhow::Error::msg)?));
    }
    let scheme = if options.tls.is_some() { "https" } else { "http" };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let mut controls = bursar_workflow::connectors::SimControls::default();
        if let Some(path) = &args.sim.sim_call_log {
            controls = controls.with_call_log_file(path).with_context(|| format!("call log {}", path.display()))?;
        }
        let sims = Simulators::with_controls(config, controls, None);
        let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
        println!("bursar: connector simulators on {scheme}://{}", listener.local_addr()?);
        tokio::select! {
            served = bursar_workflow::connectors::serve_simulators_with(sims, listener, options) => served.context("serving the simulators")?,
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}

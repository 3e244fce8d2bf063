//! Starting the workflows on a node: the order ledgers, the connectors
//! (simulated by default, HTTP when configured), and the executor under the
//! supervision tree.

use crate::connectors::EndpointError;
use crate::connectors::{
    HttpConnectorsConfig, HttpFxRates, HttpIncomingFunds, HttpPayoutRail, HttpScreening, Simulators, SimulatorsConfig,
};
use crate::engine_link::{EngineLink, LinkError};
use crate::executor::{Breakers, Connectors, Executor, ExecutorSettings};
use bursar_core::orders::settings::OrdersConfig;
use bursar_core::{Ledger, Operation};
use bursar_crypto::pii::PiiKeyring;
use bursar_runtime::resilience::{BreakerConfig, CircuitBreaker, RetryPolicy};
use bursar_runtime::supervisor::{Child, Escalation, Intensity, Restart, Strategy, Supervisor, SupervisorStats};
use bursar_server::node::NodeHandle;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

/// Where the connectors are.
#[derive(Clone, Debug)]
pub enum ConnectorSource {
    /// The built-in simulators (the default: no outside service).
    Simulated(Box<SimulatorsConfig>),
    /// Services speaking the simulators' HTTP protocol (docs/connectors.md), with credentials and TLS.
    Http(HttpConnectorsConfig),
}

#[derive(Clone)]
pub struct WorkflowSettings {
    pub connectors: ConnectorSource,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    pub executor: ExecutorSettings,
    pub orders: Arc<OrdersConfig>,
    pub keyring: Arc<PiiKeyring>,
    pub intensity: Intensity,
    /// Simulated connectors append every call to this file (JSON lines).
    pub sim_call_log: Option<std::path::PathBuf>,
}

impl WorkflowSettings {
    pub fn new(orders: OrdersConfig, keyring: Arc<PiiKeyring>) -> WorkflowSettings {
        WorkflowSettings {
            connectors: ConnectorSource::Simulated(Box::default()),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            executor: ExecutorSettings::default(),
            orders: Arc::new(orders),
            keyring,
            intensity: Intensity::default(),
            sim_call_log: None,
        }
    }
}

/// Why the workflows could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Creating the order ledgers got no answer from the engine.
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("a CreateLedgers reply is not whole results")]
    LedgerReply,
    /// A configured asset's ledger exists with another asset or scale
    /// (`result` is the CreateLedgers result's name).
    #[error("order asset {asset} needs ledger {ledger} with scale {scale}: {result}")]
    LedgerMismatch { asset: String, ledger: u32, scale: u8, result: &'static str },
    #[error("cannot open the call log {}: {source}", path.display())]
    CallLog {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

/// The running workflows.
pub struct Workflows {
    /// The simulators, when simulated (their call log and outage switches).
    pub simulators: Option<Simulators>,
    pub stats: Arc<SupervisorStats>,
    /// Ends when the supervision tree stops: `Err` if the root escalated.
    pub done: tokio::task::JoinHandle<Result<(), Escalation>>,
}

/// Creates the configured asset ledgers that are missing, then starts the
/// executor under a one-for-one root supervisor on the node's runtime.
pub fn start(node: &NodeHandle, settings: WorkflowSettings) -> Result<Workflows, StartError> {
    let link = EngineLink::new(&node.engine_handle());
    node.runtime.block_on(ensure_ledgers(&link, &settings.orders))?;
    let _guard = node.runtime.enter();
    let (funds_tx, funds_rx) = mpsc::channel(1 << 16);
    let (simulators, connectors) = connectors(&settings, funds_tx)?;
    let connectors = Arc::new(connectors);
    let funds = Some(Arc::new(Mutex::new(funds_rx)));
    let (order_changes, executor_settings) = (node.order_changes.clone(), settings.executor.clone());
    let executor = Child::worker("executor", Restart::Permanent, move || {
        let executor = Executor {
            link: link.clone(),
            connectors: connectors.clone(),
            settings: executor_settings.clone(),
            order_changes: order_changes.clone(),
            funds: funds.clone(),
        };
        executor.run()
    });
    let root = Supervisor::new("root", Strategy::OneForOne, settings.intensity).child(executor);
    let stats = root.stats();
    let done = node.runtime.spawn(bursar_runtime::supervisor::run_root(root, node.stop.clone()));
    Ok(Workflows { simulators, stats, done })
}

fn connectors(
    settings: &WorkflowSettings,
    funds_tx: mpsc::Sender<crate::connectors::FundsNotification>,
) -> Result<(Option<Simulators>, Connectors), StartError> {
    let breakers = Breakers::new(|name| CircuitBreaker::new(name, settings.breaker.clone()));
    let (sims, screening, fx, payout, funds): (Option<Simulators>, _, _, _, _) = match &settings.connectors {
        ConnectorSource::Simulated(config) => {
            let mut controls = crate::connectors::SimControls::default();
            if let Some(path) = &settings.sim_call_log {
                controls = controls
                    .with_call_log_file(path)
                    .map_err(|source| StartError::CallLog { path: path.clone(), source })?;
            }
            let sims = Simulators::with_controls((**config).clone(), controls, Some(funds_tx));
            let s = sims.clone();
            (Some(sims), s.screening, s.fx, s.payout, s.funds)
        }
        ConnectorSource::Http(config) => {
            let endpoint = config.endpoint()?;
            (
                None,
                Arc::new(HttpScreening::new(endpoint.clone())) as _,
                Arc::new(HttpFxRates::new(endpoint.clone())) as _,
                Arc::new(HttpPayoutRail::new(endpoint.clone())) as _,
                Arc::new(HttpIncomingFunds::new(endpoint)) as _,
            )
        }
    };
    let connectors = Connectors {
        screening,
        fx,
        payout,
        funds,
        retry: settings.retry.clone(),
        breakers,
        keyring: settings.keyring.clone(),
        config: settings.orders.clone(),
    };
    Ok((sims, connectors))
}

/// Creates each configured asset's ledger if it is missing. A ledger that
/// exists with another asset or scale is a configuration error.
async fn ensure_ledgers(link: &EngineLink, config: &OrdersConfig) -> Result<(), StartError> {
    let ledgers: Vec<Ledger> = config
        .assets
        .iter()
        .map(|a| Ledger {
            id: a.ledger,
            scale: a.scale,
            asset: Ledger::pack_asset(&a.code).expect("invariant: OrdersConfig::parse_assets checked the code"),
            ..Default::default()
        })
        .collect();
    let response = link.request(Operation::CreateLedgers, bytemuck::cast_slice(&ledgers).to_vec()).await?;
    let results: Vec<bursar_core::EventResult> =
        bursar_core::records::decode_all(&response.body).ok_or(StartError::LedgerReply)?;
    for r in results {
        let code = bursar_core::CreateLedgerResult::from_code(r.code);
        if code != Some(bursar_core::CreateLedgerResult::Exists) {
            let asset = &config.assets[r.index as usize];
            return Err(StartError::LedgerMismatch {
                asset: asset.code.clone(),
                ledger: asset.ledger,
                scale: asset.scale,
                result: code.map_or("unknown code", |c| c.name()),
            });
        }
    }
    Ok(())
}

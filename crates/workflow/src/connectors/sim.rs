//! What the four simulators share: injected latency, failures and timeouts,
//! the outage switch, the clock, the call log, and the [`Simulators`] bundle.
//!
//! Every simulated call goes through [`SimCore::call`]: latency first, then
//! the outage switch, then injected failures (before the side effect, so a
//! retry performs it exactly once), then the operation itself. Every call is
//! recorded in the call log, which tests use to count side effects.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    ConnectorError, Connectors, FundsNotification, FundsSimulator, FxRates, FxSimulator, IncomingFunds, PayoutRail,
    PayoutSettings, PayoutSimulator, Screening, ScreeningRules, ScreeningSimulator, default_fx_rates,
};

/// How long a simulated timeout hangs: far beyond any caller's timeout.
const SIMULATED_HANG: Duration = Duration::from_secs(3600);

/// The names connectors use in the call log and the control API.
pub(crate) const CONNECTOR_NAMES: [&str; 4] = ["screening", "fx", "payout", "funds"];

/// A connector name that is not one of `CONNECTOR_NAMES`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown connector {name:?}; expected one of {CONNECTOR_NAMES:?}")]
pub struct UnknownConnector {
    pub name: String,
}

/// Fault injection for one simulator. Rates are probabilities in `[0, 1]`
/// (values outside are clamped), not money.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// Delay before every call is answered.
    pub latency: Duration,
    /// Probability that a call fails with `Unavailable` (a simulated 5xx),
    /// before any side effect.
    pub failure_rate: f64,
    /// Probability that a call hangs for an hour (before any side effect),
    /// so the caller's timeout fires.
    pub timeout_rate: f64,
    /// Seed for the simulator's random choices; `None` seeds from the OS.
    pub seed: Option<u64>,
}

/// The simulators' notion of now. The system clock by default; a manual
/// clock lets tests cross day and month boundaries or payout delays.
#[derive(Clone)]
pub struct SimClock {
    manual: Option<Arc<AtomicU64>>,
}

impl fmt::Debug for SimClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("SimClock::System"),
            Some(now) => write!(f, "SimClock::Manual({})", now.load(Ordering::Relaxed)),
        }
    }
}

impl SimClock {
    /// Wall-clock time.
    pub fn system() -> Self {
        SimClock { manual: None }
    }

    /// A clock that stays at `start_unix_nanos` until advanced.
    pub fn manual(start_unix_nanos: u64) -> Self {
        SimClock { manual: Some(Arc::new(AtomicU64::new(start_unix_nanos))) }
    }

    /// Nanoseconds since the Unix epoch (0 if the system clock is before it).
    pub fn now_unix_nanos(&self) -> u64 {
        match &self.manual {
            Some(now) => now.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }

    /// Moves a manual clock forward; has no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.manual {
            now.fetch_add(duration_nanos(by), Ordering::SeqCst);
        }
    }
}

/// A duration in nanoseconds, saturating at u64::MAX (about 584 years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One simulated call, as recorded in the call log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// `screening`, `fx`, `payout` or `funds`.
    pub connector: String,
    /// `screen`, `quote`, `send`, `status` or `expect`.
    pub operation: String,
    /// The caller's idempotency key.
    pub key: String,
    /// `ok`, `unavailable`, `timeout` or `rejected`.
    pub outcome: String,
    /// True when this call performed the side effect for the first time.
    pub effect: bool,
    pub at_unix_nanos: u64,
}

/// Recent calls in memory (bounded) and, optionally, every call in a file.
struct CallLog {
    records: VecDeque<CallRecord>,
    capacity: usize,
    file: Option<File>,
}

struct ControlsInner {
    down: AtomicBool,
    down_connectors: Mutex<BTreeSet<String>>,
    log: Mutex<CallLog>,
    clock: SimClock,
}

/// Controls shared by a set of simulators: outage switches, clock, call log.
/// Cloning shares the same controls.
#[derive(Clone)]
pub struct SimControls {
    inner: Arc<ControlsInner>,
}

impl fmt::Debug for SimControls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimControls")
            .field("down", &self.inner.down.load(Ordering::Relaxed))
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

impl Default for SimControls {
    fn default() -> Self {
        SimControls::new(SimClock::system())
    }
}

impl SimControls {
    /// How many call records are kept in memory by default.
    pub const DEFAULT_CALL_LOG_CAPACITY: usize = 1_000_000;

    /// Controls with the given clock, everything up, an in-memory call log.
    pub fn new(clock: SimClock) -> Self {
        let log = CallLog { records: VecDeque::new(), capacity: Self::DEFAULT_CALL_LOG_CAPACITY, file: None };
        let inner = ControlsInner {
            down: AtomicBool::new(false),
            down_connectors: Mutex::new(BTreeSet::new()),
            log: Mutex::new(log),
            clock,
        };
        SimControls { inner: Arc::new(inner) }
    }

    /// Also appends every call, as one JSON line, to the file at `path`
    /// (created if missing, appended to otherwise). Lines are flushed as
    /// written, so they survive the process being killed.
    pub fn with_call_log_file(self, path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        lock(&self.inner.log).file = Some(file);
        Ok(self)
    }

    /// Keeps at most `capacity` records in memory (the file keeps all).
    pub fn with_call_log_capacity(self, capacity: usize) -> Self {
        let mut log = lock(&self.inner.log);
        log.capacity = capacity;
        trim(&mut log);
        drop(log);
        self
    }

    /// The clock the simulators read.
    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    /// Turns the outage of every connector on or off.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// Turns the outage of one connector (`screening`, `fx`, `payout`,
    /// `funds`) on or off, independently of [`SimControls::set_down`].
    pub fn set_connector_down(&self, connector: &str, down: bool) -> Result<(), UnknownConnector> {
        if !CONNECTOR_NAMES.contains(&connector) {
            return Err(UnknownConnector { name: connector.into() });
        }
        let mut set = lock(&self.inner.down_connectors);
        if down {
            set.insert(connector.to_string());
        } else {
            set.remove(connector);
        }
        Ok(())
    }

    /// Whether calls to `connector` currently fail with a simulated outage.
    pub fn is_down(&self, connector: &str) -> bool {
        self.inner.down.load(Ordering::SeqCst) || lock(&self.inner.down_connectors).contains(connector)
    }

    /// The recorded calls still in memory, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.inner.log).records.iter().cloned().collect()
    }

    /// Appends one record to memory and the file. A failing file write is
    /// reported and skipped: the call log must not change the call's result.
    pub(crate) fn record(&self, connector: &str, operation: &str, key: &str, outcome: &str, effect: bool) {
        let record = CallRecord {
            connector: connector.into(),
            operation: operation.into(),
            key: key.into(),
            outcome: outcome.into(),
            effect,
            at_unix_nanos: self.inner.clock.now_unix_nanos(),
        };
        let mut log = lock(&self.inner.log);
        if let Some(file) = log.file.as_mut()
            && let Err(e) = write_line(file, &record)
        {
            tracing::warn!(error = %e, "could not append to the simulator call log file");
        }
        log.records.push_back(record);
        trim(&mut log);
    }
}

fn write_line(file: &mut File, record: &CallRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record)?;
    line.push(b'\n');
    // One write per line: an appending file never interleaves partial lines.
    file.write_all(&line)?;
    file.flush()
}

fn trim(log: &mut CallLog) {
    while log.records.len() > log.capacity {
        log.records.pop_front();
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// data consistent (plain inserts and reads), so a panic elsewhere can't
/// leave it half-updated.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fault-injection wrapper every simulator runs its operations through.
pub(crate) struct SimCore {
    connector: &'static str,
    config: SimConfig,
    rng: Mutex<StdRng>,
    controls: SimControls,
}

impl SimCore {
    pub(crate) fn new(connector: &'static str, config: SimConfig, controls: SimControls) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        SimCore { connector, config, rng: Mutex::new(rng), controls }
    }

    pub(crate) fn now_unix_nanos(&self) -> u64 {
        self.controls.clock().now_unix_nanos()
    }

    /// True with probability `p`, clamped to `[0, 1]` (NaN counts as 0).
    pub(crate) fn chance(&self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        p >= 1.0 || lock(&self.rng).random_bool(p)
    }

    /// A random non-zero u128 (quote ids).
    pub(crate) fn random_nonzero_u128(&self) -> u128 {
        let mut rng = lock(&self.rng);
        loop {
            let value: u128 = rng.random();
            if value != 0 {
                return value;
            }
        }
    }

    /// Runs one simulated call: latency, outage, injected failure or hang,
    /// then `op`, which returns its result and whether it performed the side
    /// effect for the first time. Every call lands in the call log.
    pub(crate) async fn call<T>(
        &self,
        operation: &'static str,
        key: &str,
        op: impl FnOnce() -> Result<(T, bool), ConnectorError>,
    ) -> Result<T, ConnectorError> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        if let Err(e) = self.inject_faults(key) {
            self.log(operation, key, &Err::<(), _>(e.clone()), false);
            if e == ConnectorError::Timeout {
                tokio::time::sleep(SIMULATED_HANG).await;
            }
            return Err(e);
        }
        let (result, effect) = match op() {
            Ok((value, effect)) => (Ok(value), effect),
            Err(e) => (Err(e), false),
        };
        self.log(operation, key, &result, effect);
        result
    }

    /// The failures a call meets before reaching the operation.
    fn inject_faults(&self, key: &str) -> Result<(), ConnectorError> {
        if key.is_empty() {
            return Err(ConnectorError::Rejected("missing idempotency key".into()));
        }
        if self.controls.is_down(self.connector) {
            return Err(ConnectorError::Unavailable("simulated outage".into()));
        }
        if self.chance(self.config.failure_rate) {
            return Err(ConnectorError::Unavailable("simulated failure".into()));
        }
        if self.chance(self.config.timeout_rate) {
            return Err(ConnectorError::Timeout);
        }
        Ok(())
    }

    fn log<T>(&self, operation: &str, key: &str, result: &Result<T, ConnectorError>, effect: bool) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(ConnectorError::Timeout) => "timeout",
            Err(ConnectorError::Unavailable(_)) => "unavailable",
            Err(ConnectorError::Rejected(_)) => "rejected",
            Err(ConnectorError::Malformed(_)) => "malformed",
            Err(ConnectorError::Unauthorized(_)) => "unauthorized",
        };
        self.controls.record(self.connector, operation, key, outcome, effect);
    }
}

/// Settings for a full set of simulators. `Default` is what `bursar start`
/// uses: no latency, no injected faults, the default screening rules and FX
/// table, payouts confirmed immediately, no automatic incoming payments.
#[derive(Debug, Clone)]
pub struct SimulatorsConfig {
    pub screening: SimConfig,
    pub fx: SimConfig,
    pub payout: SimConfig,
    pub funds: SimConfig,
    pub screening_rules: ScreeningRules,
    /// `(source, target)` → rate in ppb; see [`FxQuote::rate_ppb`](super::FxQuote::rate_ppb).
    pub fx_rates: BTreeMap<(String, String), u128>,
    /// How long a quote stays valid.
    pub fx_quote_ttl: Duration,
    pub payout_settings: PayoutSettings,
    /// When set (and a notification channel is given), every expected
    /// incoming payment "arrives" this long after it is first registered.
    pub funds_auto_pay_after: Option<Duration>,
}

impl Default for SimulatorsConfig {
    fn default() -> Self {
        SimulatorsConfig {
            screening: SimConfig::default(),
            fx: SimConfig::default(),
            payout: SimConfig::default(),
            funds: SimConfig::default(),
            screening_rules: ScreeningRules::default(),
            fx_rates: default_fx_rates(),
            fx_quote_ttl: Duration::from_secs(30),
            payout_settings: PayoutSettings::default(),
            funds_auto_pay_after: None,
        }
    }
}

/// All four simulators with their shared controls. Cloning shares them.
#[derive(Clone)]
pub struct Simulators {
    pub screening: Arc<dyn Screening>,
    pub fx: Arc<dyn FxRates>,
    pub payout: Arc<dyn PayoutRail>,
    pub funds: Arc<dyn IncomingFunds>,
    controls: SimControls,
}

impl fmt::Debug for Simulators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulators").field("controls", &self.controls).finish_non_exhaustive()
    }
}

impl Default for Simulators {
    fn default() -> Self {
        Simulators::new(SimulatorsConfig::default(), None)
    }
}

impl Simulators {
    /// Simulators on the system clock with fresh controls. Auto-paid
    /// incoming funds are reported on `funds_notify`, if given.
    pub fn new(config: SimulatorsConfig, funds_notify: Option<mpsc::Sender<FundsNotification>>) -> Self {
        Self::with_controls(config, SimControls::default(), funds_notify)
    }

    /// Simulators sharing `controls` (for a manual clock or a call-log file).
    pub fn with_controls(
        config: SimulatorsConfig,
        controls: SimControls,
        funds_notify: Option<mpsc::Sender<FundsNotification>>,
    ) -> Self {
        let c = controls.clone();
        let mut funds = FundsSimulator::new(c.clone(), config.funds);
        if let (Some(after), Some(tx)) = (config.funds_auto_pay_after, funds_notify) {
            funds = funds.with_auto_pay(after, tx);
        }
        Simulators {
            screening: Arc::new(ScreeningSimulator::new(c.clone(), config.screening, config.screening_rules)),
            fx: Arc::new(FxSimulator::new(c.clone(), config.fx, config.fx_rates, config.fx_quote_ttl)),
            payout: Arc::new(PayoutSimulator::new(c, config.payout, config.payout_settings)),
            funds: Arc::new(funds),
            controls,
        }
    }

    /// The shared controls: outage switches, clock, call log.
    pub fn controls(&self) -> &SimControls {
        &self.controls
    }

    /// Turns the outage of every simulator on or off.
    pub fn set_down(&self, down: bool) {
        self.controls.set_down(down);
    }

    /// The recorded calls of all four simulators, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.controls.calls()
    }

    /// The simulators as the executor's connector set.
    pub fn connectors(&self) -> Connectors {
        Connectors {
            screening: self.screening.clone(),
            fx: self.fx.clone(),
            payout: self.payout.clone(),
            funds: self.funds.clone(),
        }
    }
}

//! The workflow executor: follows the order change feed and runs each
//! order's next external step, recording the outcome as an order command
//! through the log. It holds no state of its own that matters: after a
//! crash it reads the feed from the start and resumes every order at the
//! step its state names, with the same idempotency keys.
//!
//! Bounded: at most `max_in_flight` steps run at once (the rest queue in
//! feed order); every external call has a timeout, a retry limit and a
//! circuit breaker; a step that cannot proceed defers the order durably
//! (`Defer` with a retry time) instead of spinning or dropping it.

mod steps;

pub use steps::{PII_STATES, idempotency_key, is_actionable};

use crate::connectors::{FundsNotification, FxRates, IncomingFunds, PayoutRail, Screening};
use crate::engine_link::{CommandQueue, EngineLink, FeedOrder, LinkError};
use bursar_core::orders::settings::OrdersConfig;
use bursar_core::orders::{Actor, CommandKind, OrderChange, OrderCommand, OrderCommandResult, OrderState};
use bursar_crypto::pii::PiiKeyring;
use bursar_runtime::resilience::{CircuitBreaker, RetryPolicy};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use steps::StepOutcome;
use tokio::sync::{Mutex, Notify, mpsc};

/// One breaker per connector: an outage of one does not stop the others.
pub struct Breakers {
    pub screening: CircuitBreaker,
    pub fx: CircuitBreaker,
    pub payout: CircuitBreaker,
    pub funds: CircuitBreaker,
}

impl Breakers {
    pub fn new(make: impl Fn(&str) -> CircuitBreaker) -> Breakers {
        Breakers { screening: make("screening"), fx: make("fx"), payout: make("payout"), funds: make("funds") }
    }
}

/// Everything the steps call out to.
pub struct Connectors {
    pub screening: Arc<dyn Screening>,
    pub fx: Arc<dyn FxRates>,
    pub payout: Arc<dyn PayoutRail>,
    pub funds: Arc<dyn IncomingFunds>,
    pub retry: RetryPolicy,
    pub breakers: Breakers,
    pub keyring: Arc<PiiKeyring>,
    pub config: Arc<OrdersConfig>,
}

impl Connectors {
    fn asset(&self, ledger: u32) -> String {
        self.config.asset_of(ledger).map(str::to_string).unwrap_or_else(|| format!("LEDGER{ledger}"))
    }
}

#[derive(Clone, Debug)]
pub struct ExecutorSettings {
    /// Steps running at once.
    pub max_in_flight: usize,
    /// Longest wait between feed reads when nothing signals a change.
    pub idle_poll: Duration,
    /// How soon a payout the rail reports as pending is checked again.
    pub payout_poll: Duration,
    /// Deferral backoff: base and cap (doubling per deferral, with jitter).
    pub defer_base: Duration,
    pub defer_max: Duration,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            max_in_flight: 200_000,
            idle_poll: Duration::from_millis(200),
            payout_poll: Duration::from_millis(500),
            defer_base: Duration::from_millis(200),
            defer_max: Duration::from_secs(60),
        }
    }
}

/// Most orders read from the feed at once: a whole page.
const FEED_PAGE: u32 = bursar_core::limits::ORDER_PAGE_MAX;

pub struct Executor {
    pub link: EngineLink,
    pub connectors: Arc<Connectors>,
    pub settings: ExecutorSettings,
    pub order_changes: Arc<Notify>,
    /// Bank notifications from the incoming-funds simulator, if any. Shared
    /// so a restarted executor keeps the same channel.
    pub funds: Option<Arc<Mutex<mpsc::Receiver<FundsNotification>>>>,
}

/// SipHash was a measurable share of the executor's time; foldhash is
/// seeded per process, which is enough for these internal maps.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The executor's working memory, rebuilt from the feed after a restart.
struct Work {
    in_flight: HashSet<u128, foldhash::fast::RandomState>,
    /// A newer version of an order whose step is running: considered when it ends.
    newer: HashMap<u128, FeedOrder>,
    /// Orders waiting for a time (retry, scheduled payout, payout poll).
    timers: BTreeSet<(u64, u128)>,
    waiting: HashMap<u128, FeedOrder>,
    backlog: VecDeque<FeedOrder>,
}

/// Why the executor stopped (its supervisor restarts it).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// Reading the order feed failed: the engine went away or refused.
    #[error(transparent)]
    Feed(#[from] LinkError),
}

impl Executor {
    /// Runs until the engine goes away; an error ends this worker and its
    /// supervisor restarts it.
    pub async fn run(self) -> Result<(), ExecutorError> {
        let queue = CommandQueue::start(self.link.clone());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u128, Option<(Duration, FeedOrder)>)>();
        let mut work = Work {
            in_flight: HashSet::default(),
            newer: HashMap::default(),
            timers: BTreeSet::new(),
            waiting: HashMap::default(),
            backlog: VecDeque::new(),
        };
        let mut funds = match &self.funds {
            Some(rx) => Some(rx.clone().lock_owned().await),
            None => None,
        };
        let mut cursor = 0u64;
        // Read the feed at start (resume every order), when the engine
        // signals a change, and at least every `idle_poll`.
        let mut feed_dirty = true;
        loop {
            while feed_dirty {
                let page = self.link.feed(cursor, FEED_PAGE, PII_STATES).await?;
                feed_dirty = page.len() == FEED_PAGE as usize;
                for order in page {
                    cursor = order.change.change_seq;
                    self.consider(&mut work, order, &queue, &done_tx);
                }
            }
            let next_timer = work.timers.first().map(|(t, _)| *t);
            let sleep = next_timer.map_or(self.settings.idle_poll, |t| {
                Duration::from_nanos(t.saturating_sub(now_nanos())).min(self.settings.idle_poll)
            });
            tokio::select! {
                _ = self.order_changes.notified() => feed_dirty = true,
                Some((id, poll)) = done_rx.recv() => {
                    self.finished(&mut work, id, poll, &queue, &done_tx);
                    while let Ok((id, poll)) = done_rx.try_recv() {
                        self.finished(&mut work, id, poll, &queue, &done_tx);
                    }
                }
                Some(n) = recv_funds(&mut funds) => {
                    self.funds_arrived(n, &queue);
                    while let Some(n) = funds.as_mut().and_then(|rx| rx.try_recv().ok()) {
                        self.funds_arrived(n, &queue);
                    }
                }
                _ = tokio::time::sleep(sleep) => feed_dirty = next_timer.is_none_or(|t| t > now_nanos()),
            }
            self.fire_timers(&mut work, &queue, &done_tx);
        }
    }

    /// Decides what an order needs now.
    fn consider(&self, work: &mut Work, order: FeedOrder, queue: &CommandQueue, done: &Done) {
        let id = order.change.id;
        if work.in_flight.contains(&id) {
            work.newer.insert(id, order);
            return;
        }
        if let Some(old) = work.waiting.remove(&id) {
            work.timers.remove(&(wake_time(&old), id));
        }
        let state = order.state;
        if state.is_terminal() || !is_actionable(state) {
            return;
        }
        let wake = wake_time(&order);
        if wake != 0 && wake > now_nanos() {
            work.timers.insert((wake, id));
            work.waiting.insert(id, order);
            return;
        }
        if work.in_flight.len() >= self.settings.max_in_flight {
            work.backlog.push_back(order);
            return;
        }
        work.in_flight.insert(id);
        self.spawn_step(order, queue.clone(), done.clone());
    }

    fn finished(
        &self,
        work: &mut Work,
        id: u128,
        poll: Option<(Duration, FeedOrder)>,
        queue: &CommandQueue,
        done: &Done,
    ) {
        work.in_flight.remove(&id);
        if let Some(newer) = work.newer.remove(&id) {
            self.consider(work, newer, queue, done);
        } else if let Some((after, order)) = poll {
            // Still pending at the rail: ask again later (not logged; the
            // same key makes the rail answer with the payout's status).
            let at = now_nanos().saturating_add(after.as_nanos() as u64);
            work.timers.insert((at, id));
            work.waiting.insert(id, FeedOrder { change: OrderChange { retry_at: at, ..order.change }, ..order });
        }
        while work.in_flight.len() < self.settings.max_in_flight {
            let Some(order) = work.backlog.pop_front() else { break };
            self.consider(work, order, queue, done);
        }
    }

    fn fire_timers(&self, work: &mut Work, queue: &CommandQueue, done: &Done) {
        let now = now_nanos();
        while let Some(&(t, id)) = work.timers.first() {
            if t > now {
                break;
            }
            work.timers.pop_first();
            if let Some(order) = work.waiting.remove(&id) {
                let change = OrderChange { retry_at: 0, payout_at: 0, ..order.change };
                self.consider(work, FeedOrder { change, ..order }, queue, done);
            }
        }
    }

    fn spawn_step(&self, order: FeedOrder, queue: CommandQueue, done: Done) {
        let connectors = self.connectors.clone();
        let settings = self.settings.clone();
        tokio::spawn(async move {
            let id = order.change.id;
            let poll = run_step(&connectors, &settings, order, &queue).await;
            let _ = done.send((id, poll));
        });
    }

    fn funds_arrived(&self, n: FundsNotification, queue: &CommandQueue) {
        let command = Box::new(
            OrderCommand { amount: n.amount, ..OrderCommand::new(n.order_id, CommandKind::FundsReceived, Actor::Bank) }
                .with_reference(&n.reference),
        );
        let queue = queue.clone();
        tokio::spawn(async move {
            match queue.submit(command).await {
                Ok(code) if code != OrderCommandResult::Ok => {
                    tracing::info!(order = %n.order_id, code = %code, "funds notification not applied")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(order = %n.order_id, error = %e, "funds notification not recorded"),
            }
        });
    }
}

type Done = mpsc::UnboundedSender<(u128, Option<(Duration, FeedOrder)>)>;

async fn recv_funds(
    rx: &mut Option<tokio::sync::OwnedMutexGuard<mpsc::Receiver<FundsNotification>>>,
) -> Option<FundsNotification> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// When the order may next be acted on (0 = now).
fn wake_time(o: &FeedOrder) -> u64 {
    let scheduled = if o.state == OrderState::FxLocked { o.change.payout_at } else { 0 };
    o.change.retry_at.max(scheduled)
}

/// Runs one step and records its outcome. Returns a poll delay when the
/// payout is still pending at the rail.
async fn run_step(
    c: &Connectors,
    s: &ExecutorSettings,
    order: FeedOrder,
    queue: &CommandQueue,
) -> Option<(Duration, FeedOrder)> {
    let command = match steps::run(c, &order).await {
        StepOutcome::Command(command) => command,
        StepOutcome::Wait => return (order.state == OrderState::PayoutSent).then_some((s.payout_poll, order)),
        StepOutcome::Defer { retry_in, why } => {
            tracing::warn!(order = %order.change.id, state = order.state.name(), why, "step deferred");
            defer(s, &order.change, retry_in, &why, queue).await;
            return None;
        }
    };
    match queue.submit(command).await {
        Ok(OrderCommandResult::Ok) => {}
        Ok(code) if is_state_conflict(code) => {
            // Someone else moved the order on (a cancel, a bank, a reviewer):
            // the feed brings its new state.
        }
        Ok(code) => {
            tracing::warn!(order = %order.change.id, code = %code, "order step refused; deferring");
            defer(s, &order.change, Duration::ZERO, code.name(), queue).await;
        }
        Err(e) => {
            tracing::warn!(order = %order.change.id, error = %e, "order step not recorded; the feed will bring it back")
        }
    }
    None
}

fn is_state_conflict(code: OrderCommandResult) -> bool {
    (OrderCommandResult::OrderIsCreated.code()..=OrderCommandResult::OrderIsFailed.code()).contains(&code.code())
}

/// Defers the order durably with exponential backoff and jitter.
async fn defer(s: &ExecutorSettings, order: &OrderChange, at_least: Duration, why: &str, queue: &CommandQueue) {
    let exp = s.defer_base.saturating_mul(1u32 << u32::from(order.attempts).min(16)).min(s.defer_max);
    let jitter = Duration::from_nanos(rand::random_range(0..=exp.as_nanos().min(u64::MAX as u128) as u64 / 2 + 1));
    let delay = (exp / 2 + jitter).max(at_least);
    let time = now_nanos().saturating_add(delay.as_nanos() as u64);
    let command = Box::new(
        OrderCommand { time, ..OrderCommand::new(order.id, CommandKind::Defer, Actor::Executor) }.with_reason(why),
    );
    if let Err(e) = queue.submit(command).await {
        tracing::warn!(order = %order.id, error = %e, "deferral not recorded; the feed will bring the order back");
    }
}

pub fn now_nanos() -> u64 {
    bursar_server::engine::now_nanos()
}

impl bursar_runtime::resilience::Retryable for crate::connectors::ConnectorError {
    fn is_retryable(&self) -> bool {
        crate::connectors::ConnectorError::is_retryable(self)
    }
}

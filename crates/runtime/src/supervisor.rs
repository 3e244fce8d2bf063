//! An Erlang/OTP-style supervision tree for tokio tasks.
//!
//! Workers (executors, timers, relays) crash-restart instead of handling
//! every error in place: a supervisor starts its children in order, restarts
//! them by its [`Strategy`] when they fail, and gives up — stopping all of
//! them and escalating to its parent — when failures come faster than its
//! [`Intensity`] allows. A panic in a child is contained in its task; it is a
//! failure like an `Err`, never a process crash.
//!
//! The root's escalation is the end of the line: the binary runs the tree with
//! [`run_root`] and hands the result to [`exit_on_escalation`], which exits
//! with [`ESCALATION_EXIT_CODE`] so the service manager restarts the process
//! (crash-only: recovery from the log is always safe).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

/// Why a worker's run failed. Boxed so each worker keeps its own typed error
/// (and `?` on it): this crate is below every crate with workers and cannot
/// name their errors, and the supervisor only logs the reason and escalates
/// it as text.
pub type WorkerError = Box<dyn std::error::Error + Send + Sync>;

/// The future of one run of a worker: `Err` is a failure, `Ok` a normal exit.
pub type WorkerFuture = Pin<Box<dyn Future<Output = Result<(), WorkerError>> + Send>>;

/// Starts a fresh worker each time it is called (once per start or restart).
pub type WorkerFactory = Arc<dyn Fn() -> WorkerFuture + Send + Sync>;

/// How a child's task ended: its own result, or a panic or cancellation.
type ChildResult = Result<Result<(), WorkerError>, JoinError>;

/// Exit code of the process when the root supervisor escalates (`EX_SOFTWARE`).
pub const ESCALATION_EXIT_CODE: i32 = 70;

/// Which children restart when one fails (as in OTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only the failed child: for independent workers.
    OneForOne,
    /// Stop every other child and restart all: for workers that only make
    /// sense together.
    OneForAll,
    /// Restart the failed child and every child started after it: for
    /// workers that depend on the ones started before them.
    RestForOne,
}

/// Restart intensity: more than `max_restarts` restarts within the sliding
/// window `within` and the supervisor gives up, since restarting is evidently
/// not fixing the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub within: Duration,
}

impl Default for Intensity {
    /// OTP's default: 1 restart in 5 seconds.
    fn default() -> Self {
        Self { max_restarts: 1, within: Duration::from_secs(5) }
    }
}

/// When a child that exited is restarted (as in OTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, even after a normal exit: a worker that must run.
    Permanent,
    /// Restarted only after an error or a panic: a job that may finish.
    Transient,
    /// Never restarted, not even when a sibling's failure stops it.
    Temporary,
}

/// Why the supervisor gave up, reported to its parent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("supervisor `{supervisor}` gave up: {reason}")]
pub struct Escalation {
    /// The supervisor that gave up.
    pub supervisor: String,
    /// The child failure that exceeded the intensity.
    pub reason: String,
}

/// A child spec: what to start and when to restart it.
#[derive(Clone)]
pub struct Child {
    name: String,
    restart: Restart,
    kind: ChildKind,
}

#[derive(Clone)]
enum ChildKind {
    Worker(WorkerFactory),
    Supervisor(Arc<Supervisor>),
}

impl Child {
    /// A worker; `start` builds a fresh future for each (re)start. Its error
    /// is any error type (or a message): the supervisor boxes it.
    pub fn worker<F, Fut, E>(name: impl Into<String>, restart: Restart, start: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<WorkerError>,
    {
        let factory: WorkerFactory = Arc::new(move || {
            let run = start();
            Box::pin(async move { run.await.map_err(Into::into) })
        });
        Self { name: name.into(), restart, kind: ChildKind::Worker(factory) }
    }

    /// A nested supervisor, `Permanent`, named after it. Its escalation is a
    /// failure of this child; each restart runs a fresh copy of its spec.
    pub fn supervisor(sup: Supervisor) -> Self {
        Self { name: sup.name.clone(), restart: Restart::Permanent, kind: ChildKind::Supervisor(Arc::new(sup)) }
    }

    /// Overrides the restart policy (useful for nested supervisors).
    #[must_use]
    pub fn with_restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// The child's name (unique among its siblings).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn start(&self) -> Task {
        match &self.kind {
            ChildKind::Worker(factory) => Task { handle: tokio::spawn(factory()), stop: None },
            ChildKind::Supervisor(sup) => {
                let (stop, shutdown) = watch::channel(false);
                Task { handle: tokio::spawn(nested_run(Supervisor::clone(sup), shutdown)), stop: Some(stop) }
            }
        }
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChildKind::Worker(_) => "worker",
            ChildKind::Supervisor(_) => "supervisor",
        };
        f.debug_struct("Child").field("name", &self.name).field("restart", &self.restart).field("kind", &kind).finish()
    }
}

/// Runs a nested supervisor as a child task. A separate, non-async function
/// with a boxed result so the recursive `run` future has a nameable type.
fn nested_run(sup: Supervisor, shutdown: watch::Receiver<bool>) -> WorkerFuture {
    Box::pin(async move { sup.run(shutdown).await.map_err(WorkerError::from) })
}

/// Counters of one supervisor's children, for tests and diagnostics. Shared
/// by every copy of the supervisor (a nested one's counts survive restarts).
#[derive(Debug, Default)]
pub struct SupervisorStats {
    children: Mutex<BTreeMap<String, ChildCounts>>,
    escalations: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct ChildCounts {
    exits: u64,
    restarts: u64,
}

impl SupervisorStats {
    /// How many times `child` was restarted (not counting its first start).
    pub fn restarts(&self, child: &str) -> u64 {
        self.counts(child).restarts
    }

    /// How many times `child` terminated on its own (normally or not); stops
    /// by the supervisor are not counted. The restart decision for an exit is
    /// taken before the exit is counted here.
    pub fn exits(&self, child: &str) -> u64 {
        self.counts(child).exits
    }

    /// Restarts of all children.
    pub fn total_restarts(&self) -> u64 {
        self.lock().values().map(|c| c.restarts).sum()
    }

    /// How many times this supervisor gave up.
    pub fn escalations(&self) -> u64 {
        self.escalations.load(Ordering::Relaxed)
    }

    fn counts(&self, child: &str) -> ChildCounts {
        self.lock().get(child).copied().unwrap_or_default()
    }

    fn update(&self, child: &str, f: impl FnOnce(&mut ChildCounts)) {
        f(self.lock().entry(child.to_owned()).or_default());
    }

    /// Counters stay meaningful after a panic elsewhere, so poison is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChildCounts>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A supervisor spec; [`Supervisor::run`] starts it. Clones share the stats.
#[derive(Debug, Clone)]
pub struct Supervisor {
    name: String,
    strategy: Strategy,
    intensity: Intensity,
    children: Vec<Child>,
    stats: Arc<SupervisorStats>,
}

impl Supervisor {
    pub fn new(name: impl Into<String>, strategy: Strategy, intensity: Intensity) -> Self {
        Self { name: name.into(), strategy, intensity, children: Vec::new(), stats: Arc::default() }
    }

    /// Adds a child; children start in the order they are added and stop in
    /// reverse. Names should be unique: metrics and stats are keyed by them.
    #[must_use]
    pub fn child(mut self, child: Child) -> Self {
        self.children.push(child);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live counters of this supervisor (cheap to clone, shared).
    pub fn stats(&self) -> Arc<SupervisorStats> {
        Arc::clone(&self.stats)
    }

    /// Starts the children and supervises them until `shutdown` becomes true
    /// (or its sender is dropped): then stops them all and returns `Ok`.
    /// Returns [`Escalation`] after stopping them all when the intensity is
    /// exceeded. Dropping this future aborts the children too.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), Escalation> {
        if *shutdown.borrow_and_update() {
            return Ok(());
        }
        let mut running = Running { slots: self.children.iter().map(|c| Some(c.start())).collect() };
        let mut window = RestartWindow::new(self.intensity);
        loop {
            tokio::select! {
                biased;
                () = stop_requested(&mut shutdown) => break,
                (index, result) = poll_fn(|cx| running.poll_exit(cx)) => {
                    self.on_exit(&mut running, &mut window, index, result).await?;
                }
            }
        }
        tracing::info!(supervisor = %self.name, "shutting down");
        running.stop_all().await;
        Ok(())
    }

    /// Handles child `index` terminating on its own.
    async fn on_exit(
        &self,
        running: &mut Running,
        window: &mut RestartWindow,
        index: usize,
        result: ChildResult,
    ) -> Result<(), Escalation> {
        let child = &self.children[index];
        let exit = Exit::from_join(result);
        exit.log(&self.name, &child.name);
        if matches!(exit, Exit::Panicked(_)) {
            self.child_counter("bursar_supervisor_panics_total", child).increment(1);
        }
        let restart = match child.restart {
            Restart::Permanent => true,
            Restart::Transient => !matches!(exit, Exit::Normal),
            Restart::Temporary => false,
        };
        let handled = if !restart {
            Ok(())
        } else if window.admit(Instant::now()) {
            self.restart(running, index).await;
            Ok(())
        } else {
            Err(self.escalate(running, format!("child `{}` {exit}", child.name)).await)
        };
        self.stats.update(&child.name, |c| c.exits += 1);
        handled
    }

    /// Restarts the failed child `index` and, per the strategy, its siblings.
    async fn restart(&self, running: &mut Running, index: usize) {
        let affected = match self.strategy {
            Strategy::OneForOne => index..index + 1,
            Strategy::OneForAll => 0..self.children.len(),
            Strategy::RestForOne => index..self.children.len(),
        };
        for sibling in affected.clone().rev() {
            running.stop(sibling).await;
        }
        for i in affected {
            let child = &self.children[i];
            if child.restart == Restart::Temporary {
                continue;
            }
            tracing::info!(supervisor = %self.name, child = %child.name, "restarting child");
            self.child_counter("bursar_supervisor_restarts_total", child).increment(1);
            self.stats.update(&child.name, |c| c.restarts += 1);
            running.slots[i] = Some(child.start());
        }
    }

    fn child_counter(&self, name: &'static str, child: &Child) -> metrics::Counter {
        metrics::counter!(name, "supervisor" => self.name.clone(), "child" => child.name.clone())
    }

    /// Stops all children and builds the error for the parent.
    async fn escalate(&self, running: &mut Running, reason: String) -> Escalation {
        tracing::error!(supervisor = %self.name, %reason, "restart intensity exceeded, escalating");
        running.stop_all().await;
        metrics::counter!("bursar_supervisor_escalations_total", "supervisor" => self.name.clone()).increment(1);
        self.stats.escalations.fetch_add(1, Ordering::Relaxed);
        Escalation { supervisor: self.name.clone(), reason }
    }
}

/// Resolves when `shutdown` is true or its sender is gone. (The guard that
/// `wait_for` returns is not `Send`, so it must not live in `run`'s state.)
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs the root of the tree. The binary must pass the result to
/// [`exit_on_escalation`]: a root escalation means the process can not heal
/// itself, and it exits with [`ESCALATION_EXIT_CODE`] to be restarted.
pub async fn run_root(sup: Supervisor, shutdown: watch::Receiver<bool>) -> Result<(), Escalation> {
    let result = sup.run(shutdown).await;
    if let Err(escalation) = &result {
        tracing::error!(%escalation, "root supervisor escalated");
    }
    result
}

/// Exits the process with [`ESCALATION_EXIT_CODE`] if the root escalated.
/// For the binary only: library code and tests never exit the process.
pub fn exit_on_escalation(result: Result<(), Escalation>) {
    if let Err(escalation) = result {
        tracing::error!(%escalation, code = ESCALATION_EXIT_CODE, "exiting after root escalation");
        std::process::exit(ESCALATION_EXIT_CODE);
    }
}

/// A started child: its task, and for a nested supervisor its shutdown switch.
struct Task {
    handle: JoinHandle<Result<(), WorkerError>>,
    stop: Option<watch::Sender<bool>>,
}

/// The children's tasks by child index; `None` when not running. Aborts every
/// task when dropped, so a cancelled supervisor leaves nothing behind.
struct Running {
    slots: Vec<Option<Task>>,
}

impl Running {
    /// Ready when any child terminates; frees its slot. Pending while none
    /// runs (only shutdown ends the supervisor then).
    fn poll_exit(&mut self, cx: &mut Context<'_>) -> Poll<(usize, ChildResult)> {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(task) = slot else { continue };
            if let Poll::Ready(result) = Pin::new(&mut task.handle).poll(cx) {
                *slot = None;
                return Poll::Ready((index, result));
            }
        }
        Poll::Pending
    }

    /// Stops child `index` and waits for it: a nested supervisor is told to
    /// shut down (stopping its own children in order), a worker is aborted.
    async fn stop(&mut self, index: usize) {
        if let Some(task) = &mut self.slots[index] {
            match &task.stop {
                Some(stop) => {
                    stop.send_replace(true);
                }
                None => task.handle.abort(),
            }
            // The outcome of a child being stopped is of no interest.
            let _ = (&mut task.handle).await;
        }
        self.slots[index] = None;
    }

    /// Stops all children in reverse start order.
    async fn stop_all(&mut self) {
        for index in (0..self.slots.len()).rev() {
            self.stop(index).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in self.slots.iter().rev().flatten() {
            task.handle.abort();
        }
    }
}

/// Restart times within the intensity window.
struct RestartWindow {
    intensity: Intensity,
    restarts: VecDeque<Instant>,
}

impl RestartWindow {
    fn new(intensity: Intensity) -> Self {
        Self { intensity, restarts: VecDeque::new() }
    }

    /// Records a restart at `now`; false when it exceeds the intensity.
    fn admit(&mut self, now: Instant) -> bool {
        self.restarts.push_back(now);
        while self.restarts.front().is_some_and(|&t| now.duration_since(t) > self.intensity.within) {
            self.restarts.pop_front();
        }
        self.restarts.len() <= self.intensity.max_restarts as usize
    }
}

/// How a child terminated on its own.
enum Exit {
    Normal,
    Failed(String),
    Panicked(String),
    Cancelled,
}

impl Exit {
    fn from_join(result: ChildResult) -> Self {
        match result {
            Ok(Ok(())) => Self::Normal,
            Ok(Err(reason)) => Self::Failed(reason.to_string()),
            Err(err) => match err.try_into_panic() {
                Ok(payload) => Self::Panicked(panic_message(payload.as_ref())),
                Err(_) => Self::Cancelled,
            },
        }
    }

    fn log(&self, supervisor: &str, child: &str) {
        match self {
            Self::Normal => tracing::info!(supervisor, child, "child exited normally"),
            Self::Failed(reason) => tracing::warn!(supervisor, child, %reason, "child failed"),
            Self::Panicked(panic) => tracing::error!(supervisor, child, %panic, "child panicked"),
            Self::Cancelled => tracing::warn!(supervisor, child, "child task was cancelled"),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("exited normally"),
            Self::Failed(reason) => write!(f, "failed: {reason}"),
            Self::Panicked(panic) => write!(f, "panicked: {panic}"),
            Self::Cancelled => f.write_str("was cancelled"),
        }
    }
}

/// The message of a panic payload, when it is a string (as `panic!` makes it).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_admits_up_to_max_restarts() {
        let mut window = RestartWindow::new(Intensity { max_restarts: 2, within: Duration::from_secs(10) });
        let t0 = Instant::now();
        assert!(window.admit(t0));
        assert!(window.admit(t0 + Duration::from_secs(1)));
        assert!(!window.admit(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn window_forgets_restarts_older_than_within() {
        let mut window = RestartWindow::new(Intensity { max_restarts: 1, within: Duration::from_secs(10) });
        let t0 = Instant::now();
        assert!(window.admit(t0));
        assert!(window.admit(t0 + Duration::from_secs(11)));
        assert!(window.admit(t0 + Duration::from_secs(22)));
        assert!(!window.admit(t0 + Duration::from_secs(23)));
    }

    #[test]
    fn zero_intensity_escalates_on_first_restart() {
        let mut window = RestartWindow::new(Intensity { max_restarts: 0, within: Duration::from_secs(10) });
        assert!(!window.admit(Instant::now()));
    }

    #[test]
    fn panic_messages_are_extracted() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42_u32), "non-string panic payload");
    }
}

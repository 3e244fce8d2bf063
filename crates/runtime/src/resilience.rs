//! Retries, timeouts and circuit breakers for calls to external connectors.
//!
//! A connector call is retried a few times with jittered exponential backoff,
//! each attempt under a timeout. A circuit breaker per connector stops calling
//! a connector that keeps failing: an open breaker fails calls at once with
//! [`CallError::CircuitOpen`], and the workflow defers the step durably
//! instead of waiting in memory.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

/// A doubling backoff for loops that retry until something recovers
/// (relays, webhook deliveries): each wait is drawn from
/// `[current/2, current]` ("equal jitter"), so retriers do not move in
/// lockstep yet always wait at least half the step.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff { min, max, current: min }
    }

    /// The wait before the next attempt; the step after it doubles (capped).
    pub fn next_wait(&mut self) -> Duration {
        let half = self.current / 2;
        let spread = u64::try_from((self.current - half).as_nanos()).unwrap_or(u64::MAX);
        let wait = half + Duration::from_nanos(rand::rng().random_range(0..=spread));
        self.current = self.current.saturating_mul(2).min(self.max);
        wait
    }

    /// Starts over from the smallest step (after progress).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// How a connector call is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (0 is taken as 1).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubles with each retry.
    pub base: Duration,
    /// Upper bound of the backoff ceiling.
    pub max_backoff: Duration,
    /// Time limit of each attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

/// The largest delay before retry `retry` (1 for the first retry):
/// `min(max_backoff, base * 2^(retry-1))`, saturating.
pub fn backoff_ceiling(policy: &RetryPolicy, retry: u32) -> Duration {
    let factor = 1_u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
    policy.base.saturating_mul(factor).min(policy.max_backoff)
}

/// The delay before retry `retry` (1 for the first retry): uniformly random
/// in `[0, backoff_ceiling]` ("full jitter"), so clients that failed together
/// do not retry together.
pub fn backoff_delay<R: Rng + ?Sized>(policy: &RetryPolicy, retry: u32, rng: &mut R) -> Duration {
    let ceiling = u64::try_from(backoff_ceiling(policy, retry).as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=ceiling))
}

/// When a circuit breaker opens and how it recovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0 is taken as 1).
    pub failure_threshold: u32,
    /// How long the breaker stays open before letting probes through.
    pub open_for: Duration,
    /// Trial calls allowed at once while half-open (0 is taken as 1).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(30), half_open_probes: 1 }
    }
}

/// The externally visible state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// A few probe calls decide whether to close or re-open.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `bursar_connector_breaker_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// The breaker refused a call; try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open, retry after {retry_after:?}")]
pub struct BreakerOpen {
    pub retry_after: Duration,
}

/// How a call that held a [`Permit`] went, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The connector worked.
    Success,
    /// The connector failed in a way that may be its health (5xx, timeout).
    Failure,
    /// Says nothing about the connector's health (e.g. a 4xx business
    /// rejection, or a cancelled call); only frees a half-open probe slot.
    Ignored,
}

/// A circuit breaker for one connector. Thread-safe; the lock is never held
/// across an await. Methods ending in `_at` take the current time, so the
/// state machine can be tested without sleeping.
#[derive(Debug)]
pub struct CircuitBreaker {
    connector: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every state change: outcomes of calls admitted before the
    /// last change are stale and ignored.
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probes: u32 },
}

impl State {
    fn public(self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker for `connector` (the metrics label).
    pub fn new(connector: impl Into<String>, config: BreakerConfig) -> Self {
        let breaker = Self {
            connector: connector.into(),
            config,
            inner: Mutex::new(Inner { state: State::Closed { failures: 0 }, generation: 0 }),
        };
        breaker.set_gauge(BreakerState::Closed);
        breaker
    }

    pub fn connector(&self) -> &str {
        &self.connector
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    /// The state at `now` (an open breaker past its cool-down is half-open).
    pub fn state_at(&self, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        inner.state.public()
    }

    /// Asks to make a call; record its outcome on the returned permit.
    pub fn acquire(&self) -> Result<Permit<'_>, BreakerOpen> {
        self.acquire_at(Instant::now())
    }

    pub fn acquire_at(&self, now: Instant) -> Result<Permit<'_>, BreakerOpen> {
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        match inner.state {
            State::Closed { .. } => {}
            State::Open { until } => return Err(BreakerOpen { retry_after: until.saturating_duration_since(now) }),
            State::HalfOpen { probes } if probes < self.config.half_open_probes.max(1) => {
                inner.state = State::HalfOpen { probes: probes + 1 };
            }
            // A probe is deciding; its failure would mean a full cool-down.
            State::HalfOpen { .. } => return Err(BreakerOpen { retry_after: self.config.open_for }),
        }
        Ok(Permit { breaker: self, generation: inner.generation, recorded: false })
    }

    /// Ends the cool-down of an open breaker once `now` reaches it.
    fn refresh(&self, inner: &mut Inner, now: Instant) {
        if matches!(inner.state, State::Open { until } if now >= until) {
            self.transition(inner, State::HalfOpen { probes: 0 });
        }
    }

    fn record(&self, generation: u64, outcome: Outcome, now: Instant) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        match (inner.state, outcome) {
            (State::Closed { .. }, Outcome::Success) => inner.state = State::Closed { failures: 0 },
            (State::Closed { failures }, Outcome::Failure) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold.max(1) {
                    self.open(&mut inner, now);
                } else {
                    inner.state = State::Closed { failures };
                }
            }
            (State::HalfOpen { .. }, Outcome::Success) => self.transition(&mut inner, State::Closed { failures: 0 }),
            (State::HalfOpen { .. }, Outcome::Failure) => self.open(&mut inner, now),
            (State::HalfOpen { probes }, Outcome::Ignored) => {
                inner.state = State::HalfOpen { probes: probes.saturating_sub(1) };
            }
            // Permits are never handed out while open, so nothing is pending.
            (State::Closed { .. }, Outcome::Ignored) | (State::Open { .. }, _) => {}
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        self.transition(inner, State::Open { until: now + self.config.open_for });
        metrics::counter!("bursar_connector_breaker_opened_total", "connector" => self.connector.clone()).increment(1);
        tracing::warn!(connector = %self.connector, open_for = ?self.config.open_for, "circuit breaker opened");
    }

    fn transition(&self, inner: &mut Inner, state: State) {
        inner.state = state;
        inner.generation += 1;
        self.set_gauge(state.public());
        tracing::debug!(connector = %self.connector, state = ?state.public(), "circuit breaker state changed");
    }

    fn set_gauge(&self, state: BreakerState) {
        metrics::gauge!("bursar_connector_breaker_state", "connector" => self.connector.clone())
            .set(state.gauge_value());
    }

    /// The state is a plain value, consistent at every assignment, so a
    /// poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Leave to make one call. Dropping it unrecorded counts as
/// [`Outcome::Ignored`] (so a cancelled probe frees its slot).
#[derive(Debug)]
#[must_use = "record the call's outcome on the permit"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    recorded: bool,
}

impl Permit<'_> {
    pub fn success(self) {
        self.record_at(Outcome::Success, Instant::now());
    }

    pub fn failure(self) {
        self.record_at(Outcome::Failure, Instant::now());
    }

    pub fn ignore(self) {
        self.record_at(Outcome::Ignored, Instant::now());
    }

    pub fn record_at(mut self, outcome: Outcome, now: Instant) {
        self.recorded = true;
        self.breaker.record(self.generation, outcome, now);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(self.generation, Outcome::Ignored, Instant::now());
        }
    }
}

/// Whether an error is worth retrying (and counts against the breaker): a
/// network error, a 5xx or a 429 is; a 4xx business rejection is not.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

/// Why [`call_with_retry`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker is open: defer the work durably, retry after this long.
    #[error("circuit breaker open, retry after {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
    /// The last attempt timed out (its effect at the connector is unknown).
    #[error("timed out after {attempts} attempts")]
    Timeout { attempts: u32 },
    /// Every attempt failed with a retryable error; `last` is the last one.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: E },
    /// A non-retryable error, returned after the attempt that produced it.
    #[error("permanent error: {0}")]
    Permanent(E),
}

/// Calls `op(attempt)` (attempt 1, 2, ...) until it succeeds, fails
/// permanently, runs out of attempts or finds the breaker open.
///
/// Each attempt is admitted by `breaker` (open: [`CallError::CircuitOpen`] at
/// once, without sleeping, and `op` is not called), limited to
/// `policy.attempt_timeout`, and its outcome recorded on the breaker:
/// retryable errors and timeouts count as failures, permanent errors don't.
/// Retries wait [`backoff_delay`].
///
/// `op` must send the SAME idempotency key on every attempt: a timed-out or
/// failed attempt may still have taken effect at the connector, and only the
/// key makes the retry safe. This function knows nothing of keys.
pub async fn call_with_retry<T, E, F, Fut>(
    connector: &str,
    policy: &RetryPolicy,
    breaker: &CircuitBreaker,
    mut op: F,
) -> Result<T, CallError<E>>
where
    E: Retryable,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let failure = match attempt_once(connector, policy, breaker, &mut op, attempt).await {
            Step::Done(result) => return result,
            Step::Failed(failure) => failure,
        };
        if attempt >= max_attempts {
            tracing::warn!(connector, attempts = attempt, "connector call gave up");
            return Err(match failure {
                Failure::Error(last) => CallError::Exhausted { attempts: attempt, last },
                Failure::Timeout => CallError::Timeout { attempts: attempt },
            });
        }
        let delay = backoff_delay(policy, attempt, &mut rand::rng());
        tracing::debug!(connector, attempt, ?delay, "retrying connector call");
        tokio::time::sleep(delay).await;
        metrics::counter!("bursar_connector_retries_total", "connector" => connector.to_owned()).increment(1);
        attempt += 1;
    }
}

/// The result of one attempt.
enum Step<T, E> {
    /// The call is over, successfully or not.
    Done(Result<T, CallError<E>>),
    /// A retryable failure.
    Failed(Failure<E>),
}

enum Failure<E> {
    Error(E),
    Timeout,
}

async fn attempt_once<T, E, F, Fut>(
    connector: &str,
    policy: &RetryPolicy,
    breaker: &CircuitBreaker,
    op: &mut F,
    attempt: u32,
) -> Step<T, E>
where
    E: Retryable,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let permit = match breaker.acquire() {
        Ok(permit) => permit,
        Err(BreakerOpen { retry_after }) => {
            count_call(connector, "circuit_open");
            return Step::Done(Err(CallError::CircuitOpen { retry_after }));
        }
    };
    let started = Instant::now();
    let result = tokio::time::timeout(policy.attempt_timeout, op(attempt)).await;
    metrics::histogram!("bursar_connector_call_seconds", "connector" => connector.to_owned())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(Ok(value)) => {
            permit.success();
            count_call(connector, "ok");
            Step::Done(Ok(value))
        }
        Ok(Err(err)) if err.is_retryable() => {
            permit.failure();
            count_call(connector, "retryable_error");
            Step::Failed(Failure::Error(err))
        }
        Ok(Err(err)) => {
            permit.ignore();
            count_call(connector, "permanent_error");
            Step::Done(Err(CallError::Permanent(err)))
        }
        Err(_elapsed) => {
            permit.failure();
            count_call(connector, "timeout");
            Step::Failed(Failure::Timeout)
        }
    }
}

fn count_call(connector: &str, outcome: &'static str) {
    metrics::counter!("bursar_connector_calls_total", "connector" => connector.to_owned(), "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceiling_saturates_for_huge_attempts() {
        let policy = RetryPolicy { base: Duration::MAX, max_backoff: Duration::from_secs(5), ..RetryPolicy::default() };
        assert_eq!(backoff_ceiling(&policy, u32::MAX), Duration::from_secs(5));
        assert_eq!(backoff_ceiling(&policy, 0), Duration::from_secs(5));
    }

    #[test]
    fn backoff_waits_half_to_full_step_doubling_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        for step in [100, 200, 350, 350] {
            let wait = b.next_wait();
            assert!(wait >= ms(step / 2) && wait <= ms(step), "step {step} ms waited {wait:?}");
        }
        b.reset();
        assert!(b.next_wait() <= ms(100), "after a reset the first step again");
    }

    #[test]
    fn state_gauge_values() {
        assert_eq!(BreakerState::Closed.gauge_value(), 0.0);
        assert_eq!(BreakerState::Open.gauge_value(), 1.0);
        assert_eq!(BreakerState::HalfOpen.gauge_value(), 2.0);
    }
}

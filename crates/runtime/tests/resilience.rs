//! Backoff, the circuit breaker's state machine (on an injected clock), and
//! retrying connector calls.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bursar_runtime::resilience::{
    BreakerConfig, BreakerOpen, BreakerState, CallError, CircuitBreaker, Outcome, RetryPolicy, Retryable,
    backoff_ceiling, backoff_delay, call_with_retry,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

#[derive(Debug, PartialEq, Eq)]
enum TestError {
    Unavailable,
    Rejected,
}

impl Retryable for TestError {
    fn is_retryable(&self) -> bool {
        *self == TestError::Unavailable
    }
}

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

const MS: Duration = Duration::from_millis(1);

fn config(failure_threshold: u32) -> BreakerConfig {
    BreakerConfig { failure_threshold, open_for: Duration::from_secs(30), half_open_probes: 1 }
}

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, base: MS, max_backoff: 2 * MS, attempt_timeout: 20 * MS }
}

/// A breaker that never opens in these tests.
fn sturdy() -> CircuitBreaker {
    CircuitBreaker::new("test", config(1000))
}

// --- backoff ---

#[test]
fn backoff_ceiling_doubles_up_to_the_cap() {
    let policy = RetryPolicy { base: 50 * MS, max_backoff: 1000 * MS, ..RetryPolicy::default() };
    let ceilings: Vec<_> = (1..=7).map(|n| backoff_ceiling(&policy, n).as_millis()).collect();
    assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000, 1000]);
    assert_eq!(backoff_ceiling(&policy, u32::MAX), 1000 * MS);
}

#[test]
fn backoff_delay_stays_within_the_ceiling() {
    let policy = RetryPolicy { base: 50 * MS, max_backoff: 1000 * MS, ..RetryPolicy::default() };
    let mut rng = StdRng::seed_from_u64(7);
    for retry in 1..=40 {
        for _ in 0..200 {
            assert!(backoff_delay(&policy, retry, &mut rng) <= backoff_ceiling(&policy, retry));
        }
    }
}

#[test]
fn backoff_delay_grows_with_attempts() {
    let policy = RetryPolicy { base: 50 * MS, max_backoff: 5000 * MS, ..RetryPolicy::default() };
    let mut rng = StdRng::seed_from_u64(11);
    let max_of = |retry, rng: &mut StdRng| (0..500).map(|_| backoff_delay(&policy, retry, rng)).max();
    let first = max_of(1, &mut rng).unwrap_or_default();
    let fifth = max_of(5, &mut rng).unwrap_or_default();
    // Retry 5 may wait up to 800 ms; 500 samples all under 50 ms has
    // probability (1/16)^500.
    assert!(first <= 50 * MS && fifth > 50 * MS, "{first:?} {fifth:?}");
}

#[test]
fn zero_backoff_is_zero() {
    let policy = RetryPolicy { base: Duration::ZERO, ..RetryPolicy::default() };
    assert_eq!(backoff_delay(&policy, 3, &mut StdRng::seed_from_u64(1)), Duration::ZERO);
}

// --- circuit breaker ---

fn fail(breaker: &CircuitBreaker, now: Instant) {
    breaker.acquire_at(now).expect("closed breakers admit calls").record_at(Outcome::Failure, now);
}

#[test]
fn breaker_opens_after_consecutive_failures() {
    let breaker = CircuitBreaker::new("test", config(3));
    let now = Instant::now();
    fail(&breaker, now);
    fail(&breaker, now);
    breaker.acquire_at(now).expect("still closed").record_at(Outcome::Success, now);
    fail(&breaker, now);
    fail(&breaker, now);
    assert_eq!(breaker.state_at(now), BreakerState::Closed, "a success resets the count");
    fail(&breaker, now);
    assert_eq!(breaker.state_at(now), BreakerState::Open);
}

#[test]
fn open_breaker_rejects_until_the_cool_down_ends() {
    let breaker = CircuitBreaker::new("test", config(1));
    let t0 = Instant::now();
    fail(&breaker, t0);

    let refused = breaker.acquire_at(t0 + Duration::from_secs(10)).map(|_| ()).unwrap_err();
    assert_eq!(refused, BreakerOpen { retry_after: Duration::from_secs(20) });
    assert_eq!(breaker.state_at(t0 + Duration::from_secs(30)), BreakerState::HalfOpen);
}

#[test]
fn successful_probe_closes_the_breaker() {
    let breaker = CircuitBreaker::new("test", config(1));
    let t0 = Instant::now();
    fail(&breaker, t0);
    let t1 = t0 + Duration::from_secs(30);

    let probe = breaker.acquire_at(t1).expect("half-open admits a probe");
    assert!(breaker.acquire_at(t1).is_err(), "only one probe at a time");
    probe.record_at(Outcome::Success, t1);

    assert_eq!(breaker.state_at(t1), BreakerState::Closed);
    assert!(breaker.acquire_at(t1).is_ok());
}

#[test]
fn failed_probe_reopens_the_breaker() {
    let breaker = CircuitBreaker::new("test", config(1));
    let t0 = Instant::now();
    fail(&breaker, t0);
    let t1 = t0 + Duration::from_secs(30);

    fail(&breaker, t1);

    assert_eq!(breaker.state_at(t1), BreakerState::Open);
    let refused = breaker.acquire_at(t1 + Duration::from_secs(1)).map(|_| ()).unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_secs(29), "a full new cool-down");
}

#[test]
fn ignored_probe_frees_its_slot() {
    let breaker = CircuitBreaker::new("test", config(1));
    let t0 = Instant::now();
    fail(&breaker, t0);
    let t1 = t0 + Duration::from_secs(30);

    breaker.acquire_at(t1).expect("a probe").record_at(Outcome::Ignored, t1);
    assert_eq!(breaker.state_at(t1), BreakerState::HalfOpen);
    drop(breaker.acquire_at(t1).expect("the slot was freed"));
    assert!(breaker.acquire_at(t1).is_ok(), "a dropped permit frees its slot too");
}

#[test]
fn stale_outcomes_do_not_change_the_state() {
    let breaker = CircuitBreaker::new("test", config(1));
    let t0 = Instant::now();
    let slow = breaker.acquire_at(t0).expect("closed");
    fail(&breaker, t0);
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(breaker.state_at(t1), BreakerState::HalfOpen);

    slow.record_at(Outcome::Success, t1);

    assert_eq!(breaker.state_at(t1), BreakerState::HalfOpen, "a call from before the opening is no probe");
}

#[test]
fn breaker_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CircuitBreaker>();
}

// --- call_with_retry ---

#[tokio::test]
async fn flaky_call_is_retried_until_it_succeeds() {
    let calls = AtomicU32::new(0);
    let result = call_with_retry("test", &fast_policy(5), &sturdy(), |attempt| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { if attempt < 3 { Err(TestError::Unavailable) } else { Ok(attempt) } }
    })
    .await;

    assert_eq!(result.ok(), Some(3));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let calls = AtomicU32::new(0);
    let result: Result<(), _> = call_with_retry("test", &fast_policy(4), &sturdy(), |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err(TestError::Unavailable) }
    })
    .await;

    assert!(matches!(result, Err(CallError::Exhausted { attempts: 4, last: TestError::Unavailable })), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn permanent_error_is_returned_at_once_and_spares_the_breaker() {
    let calls = AtomicU32::new(0);
    let breaker = CircuitBreaker::new("test", config(1));
    let result: Result<(), _> = call_with_retry("test", &fast_policy(5), &breaker, |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err(TestError::Rejected) }
    })
    .await;

    assert!(matches!(result, Err(CallError::Permanent(TestError::Rejected))), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn hanging_attempts_time_out() {
    let calls = AtomicU32::new(0);
    let result: Result<(), CallError<TestError>> = call_with_retry("test", &fast_policy(2), &sturdy(), |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending()
    })
    .await;

    assert!(matches!(result, Err(CallError::Timeout { attempts: 2 })), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried() {
    let result = call_with_retry("test", &fast_policy(3), &sturdy(), |attempt| async move {
        if attempt == 1 {
            std::future::pending::<()>().await;
        }
        Ok::<_, TestError>(attempt)
    })
    .await;

    assert_eq!(result.ok(), Some(2));
}

#[tokio::test]
async fn open_breaker_fails_fast_without_calling() {
    let breaker = CircuitBreaker::new("test", config(1));
    breaker.acquire().expect("closed").failure();
    let calls = AtomicU32::new(0);

    let result: Result<(), CallError<TestError>> = call_with_retry("test", &fast_policy(5), &breaker, |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    })
    .await;

    assert!(matches!(result, Err(CallError::CircuitOpen { retry_after }) if retry_after > Duration::ZERO));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn breaker_opening_mid_call_stops_the_retries() {
    let breaker = CircuitBreaker::new("test", config(2));
    let calls = AtomicU32::new(0);

    let result: Result<(), _> = call_with_retry("test", &fast_policy(5), &breaker, |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err(TestError::Unavailable) }
    })
    .await;

    assert!(matches!(result, Err(CallError::CircuitOpen { .. })), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[test]
fn call_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let breaker = sturdy();
    let policy = fast_policy(1);
    let call = call_with_retry("test", &policy, &breaker, |_| async { Ok::<(), TestError>(()) });
    assert_send(&call);
}

//! Per-key request rate limits: a token bucket per API key, kept in memory
//! at the edge (never in apply). No HTTP types, so the binary protocol can
//! use it too.
//!
//! The bucket is kept as its "theoretical arrival time" (GCRA): one request
//! moves it forward by one interval (1 s / rate); a request is refused when
//! that would put it more than `burst` intervals ahead of now. This is a
//! token bucket of `burst` tokens refilled at `rate` per second, in integer
//! nanoseconds, with one number per key.

use bursar_core::limits::RATE_LIMIT_MAX;
use bursar_core::service::keys::{ApiKey, KeyRateLimit};
use std::collections::HashMap;
use std::sync::Mutex;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A rate and a burst, both 1 to `RATE_LIMIT_MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Parses `RPS[:BURST]` (BURST defaults to RPS).
    pub fn parse(s: &str) -> Result<RateLimit, RateLimitParseError> {
        let (rate, burst) = s.split_once(':').unwrap_or((s, s));
        let number = |v: &str| v.trim().parse::<u32>().ok().filter(|n| (1..=RATE_LIMIT_MAX).contains(n));
        let per_second = number(rate).ok_or_else(|| RateLimitParseError::BadRate { input: s.into() })?;
        let burst = number(burst).ok_or_else(|| RateLimitParseError::BadBurst { input: s.into() })?;
        Ok(RateLimit { per_second, burst })
    }

    /// A key's own limit, if it has one.
    pub fn of_key(limit: KeyRateLimit) -> Option<RateLimit> {
        (!limit.is_default() && limit.is_valid())
            .then_some(RateLimit { per_second: limit.per_second, burst: limit.burst })
    }

    fn interval(self) -> u64 {
        (NANOS_PER_SECOND / u64::from(self.per_second)).max(1)
    }
}

/// Why an `RPS[:BURST]` text was refused (`input` is the whole text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitParseError {
    #[error("the rate in {input:?} must be a whole number from 1 to {RATE_LIMIT_MAX}")]
    BadRate { input: String },
    #[error("the burst in {input:?} must be a whole number from 1 to {RATE_LIMIT_MAX}")]
    BadBurst { input: String },
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    limit: RateLimit,
    /// When the bucket is full again, in nanoseconds since the epoch.
    full_at: u64,
}

/// The buckets of every limited key that has made a request since the node
/// started. Only stored keys get one (callers check the key first), and keys
/// are never deleted, only revoked, so there are at most `KEYS_MAX`.
#[derive(Debug, Default)]
pub struct RateLimiter {
    default: Option<RateLimit>,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl RateLimiter {
    /// `default` applies to keys without a limit of their own; `None`: such
    /// keys are not limited.
    pub fn new(default: Option<RateLimit>) -> RateLimiter {
        RateLimiter { default, buckets: Mutex::new(HashMap::new()) }
    }

    /// The limit that applies to `key`.
    pub fn limit_of(&self, key: &ApiKey) -> Option<RateLimit> {
        RateLimit::of_key(key.rate_limit).or(self.default)
    }

    /// Takes a token of `key`'s bucket at `now` (nanoseconds, the edge's
    /// clock). `Err(seconds)`: refused; a token is free again after that
    /// many seconds (at least 1, for `Retry-After`).
    pub fn check(&self, key: &ApiKey, now: u64) -> Result<(), u32> {
        let Some(limit) = self.limit_of(key) else { return Ok(()) };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(key.id).or_insert(Bucket { limit, full_at: 0 });
        if bucket.limit != limit {
            *bucket = Bucket { limit, full_at: 0 };
        }
        take(bucket, now)
    }

    /// Keys with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn take(bucket: &mut Bucket, now: u64) -> Result<(), u32> {
    let interval = bucket.limit.interval();
    // A clock that stepped back does not refill the bucket.
    let start = bucket.full_at.max(now);
    let next = start.saturating_add(interval);
    let window = interval.saturating_mul(u64::from(bucket.limit.burst));
    if next - now > window {
        let wait = next - now - window;
        let seconds = wait.div_ceil(NANOS_PER_SECOND).max(1);
        return Err(u32::try_from(seconds).unwrap_or(u32::MAX));
    }
    bucket.full_at = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bursar_core::service::keys::Role;

    fn key(id: u64, per_second: u32, burst: u32) -> ApiKey {
        ApiKey {
            id,
            hash: [id as u8; 32],
            role: Role::Operator,
            ledgers: vec![],
            name: String::new(),
            created_at: 0,
            revoked_at: 0,
            expires_at: 0,
            rate_limit: KeyRateLimit { per_second, burst },
        }
    }

    #[test]
    fn parses_rate_and_burst() {
        assert_eq!(RateLimit::parse("10"), Ok(RateLimit { per_second: 10, burst: 10 }));
        assert_eq!(RateLimit::parse("10:50"), Ok(RateLimit { per_second: 10, burst: 50 }));
        for bad in ["", "0", "x", "10:", ":5", "10:0", "1:2:3", "1000001"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_refills() {
        let limiter = RateLimiter::new(None);
        let k = key(1, 2, 3); // 2 per second, burst 3
        let t = 1_000 * NANOS_PER_SECOND;
        for _ in 0..3 {
            assert_eq!(limiter.check(&k, t), Ok(()));
        }
        assert_eq!(limiter.check(&k, t), Err(1));
        // Half a second gives one token back.
        assert_eq!(limiter.check(&k, t + NANOS_PER_SECOND / 2), Ok(()));
        assert_eq!(limiter.check(&k, t + NANOS_PER_SECOND / 2), Err(1));
        // Long idle refills to the burst, not beyond.
        let later = t + 60 * NANOS_PER_SECOND;
        for _ in 0..3 {
            assert_eq!(limiter.check(&k, later), Ok(()));
        }
        assert_eq!(limiter.check(&k, later), Err(1));
        // A clock that steps back refills nothing.
        assert_eq!(limiter.check(&k, t), Err(61));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let limiter = RateLimiter::new(None);
        let k = key(1, 1, 1);
        assert_eq!(limiter.check(&k, 0), Ok(()));
        assert_eq!(limiter.check(&k, 1), Err(1));
        let slow = RateLimiter::new(Some(RateLimit { per_second: 1, burst: 1 }));
        let unlimited = key(2, 0, 0);
        assert_eq!(slow.check(&unlimited, 5 * NANOS_PER_SECOND), Ok(()));
        assert_eq!(slow.check(&unlimited, 5 * NANOS_PER_SECOND), Err(1));
    }

    #[test]
    fn keys_have_their_own_buckets_and_the_default_applies_to_the_rest() {
        let none = RateLimiter::new(None);
        for _ in 0..1000 {
            assert_eq!(none.check(&key(1, 0, 0), 0), Ok(()));
        }
        assert!(none.is_empty(), "unlimited keys keep no bucket");
        let limiter = RateLimiter::new(Some(RateLimit { per_second: 1, burst: 2 }));
        let (a, b, own) = (key(1, 0, 0), key(2, 0, 0), key(3, 100, 100));
        assert_eq!((limiter.check(&a, 0), limiter.check(&a, 0), limiter.check(&a, 0)), (Ok(()), Ok(()), Err(1)));
        assert_eq!(limiter.check(&b, 0), Ok(()), "another key is not affected");
        assert!((0..100).all(|_| limiter.check(&own, 0).is_ok()));
        assert_eq!(limiter.check(&own, 0), Err(1));
        assert_eq!(limiter.len(), 3);
    }
}

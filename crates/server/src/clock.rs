//! The wall clock of a front end (HTTP, binary protocol), replaceable in
//! tests. It decides key expiry and refills rate-limit buckets at the edge;
//! the state machine never reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Nanoseconds since the Unix epoch: the system clock, or a value a test
/// sets.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that reads `now` (tests move it with `store`).
    pub fn manual(now: Arc<AtomicU64>) -> Clock {
        Clock { manual: Some(now) }
    }

    pub fn now_nanos(&self) -> u64 {
        match &self.manual {
            Some(now) => now.load(Ordering::Relaxed),
            // A clock before 1970 reads as 0; one past 2554 saturates.
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.manual.is_some() { "Clock::manual" } else { "Clock::system" })
    }
}

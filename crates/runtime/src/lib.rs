//! Runtime building blocks for the long-running tasks of a node: retries
//! with exponential backoff and jitter, circuit breakers (`resilience`), and
//! a supervision tree that restarts failed tasks within an intensity limit
//! (`supervisor`), and the process's logger (`logging`). Nothing here knows about ledgers, orders or events.

pub mod logging;
pub mod resilience;
pub mod supervisor;

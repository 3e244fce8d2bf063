//! Payment-order workflows around the deterministic core: the executor that
//! drives each order's external steps, the connectors it calls (with
//! simulators), retries and circuit breakers, the supervision tree, and the
//! encryption of personal data before it reaches the log.

pub mod config;
pub mod connectors;
pub mod engine_link;
pub mod executor;
pub mod pii;
pub mod resilience;
pub mod runtime;
pub mod signing;
pub mod supervisor;

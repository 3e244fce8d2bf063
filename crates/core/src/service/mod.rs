//! Service state beside the ledger: API keys, idempotency records, the
//! audit trail, webhooks and the cluster's replay protection. Like the ledger, it changes only by applying log entries.

pub mod access;
pub mod audit;
pub mod idempotency;
pub mod keys;
pub mod proposers;
pub mod webhooks;

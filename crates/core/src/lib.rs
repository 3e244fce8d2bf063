//! Bursar's core: the deterministic double-entry state machine.
//!
//! No I/O, no clock, no randomness that affects output: everything here is a
//! pure function of the log entries applied, so every replica and every
//! replay reaches the same state.

#[cfg(not(target_endian = "little"))]
compile_error!("records are stored as little-endian bytes; big-endian targets are not supported");

pub mod arena;
pub mod codes;
pub mod command;
pub(crate) mod cursor;
pub mod entry;
pub mod error;
pub mod events;
pub mod final_index;
pub mod index;
pub mod limits;
pub mod machine;
pub mod mem;
pub mod memory;
pub mod orders;
pub mod query;
pub mod records;
pub mod service;
pub mod state;
pub mod wide;

pub use codes::{CreateAccountResult, CreateLedgerResult, CreateTransferResult, EventResult};
pub use command::{Command, Operation};
pub use error::{AuditFault, CommandError, DecodeError, InvariantError};
pub use records::{Account, AccountFilter, BalanceRecord, Balances, FailedTransfer, Ledger, LedgerFilter, Transfer};
pub use state::{LedgerTotals, Limits, PendingState, StateMachine};

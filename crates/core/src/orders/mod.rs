//! Payment orders inside the deterministic core: each order is an entity
//! whose commands apply one at a time in log order (actor semantics), and
//! whose every transition moves money through the ledger in the same step.
//! External calls happen outside (the workflow executor); only their
//! outcomes come back here, as commands through the log.

pub mod apply;
pub mod book;
pub mod codes;
pub mod finals;
pub mod invariants;
pub mod money;
pub mod records;
pub mod settings;

pub use apply::Ctx;
pub use book::{OrderBook, OrderEntry, TimelineEvent};
pub use codes::{CreateOrderResult, OrderCommandResult};
pub use finals::{FinalRef, NoStoredOrders, StoredOrders};
pub use records::{
    Actor, CommandKind, Order, OrderChange, OrderCommand, OrderCreate, OrderFilter, OrderState, PII_SLOT, Verdict,
    order_flags,
};

#[cfg(test)]
mod tests;

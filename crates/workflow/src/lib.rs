//! Payment-order workflows around the deterministic core: the executor that
//! drives each order's external steps, the connectors it calls (with
//! simulators, their HTTP clients and server), the line to the engine, and
//! the start of it all on a node.

pub mod connectors;
pub mod engine_link;
pub mod executor;
pub mod new_order;
pub mod runtime;

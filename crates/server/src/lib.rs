//! Bursar's server: recovery, the engine pipeline, background snapshots and
//! the binary protocol listener, for one embedded node.

pub mod admission;
pub mod clock;
pub mod engine;
pub mod gate;
pub mod handle;
pub mod indexer;
pub mod keys;
pub mod limits;
pub mod message;
pub mod net;
pub mod node;
pub mod rate_limit;
pub mod recovery;
pub mod replication;
pub mod session;
pub mod snapshotter;
pub mod verify;

pub use node::{Node, NodeConfig, NodeError, StartReport};

//! NATS connections for every part of Bursar that talks to NATS (cluster
//! replicas, snapshot bootstrap, the change-stream relay, the benches):
//! server URLs and security options become one checked set of connect
//! options (`connect.rs`), so credentials, TLS and mutual TLS work the same
//! everywhere, and a refused connection says which option to fix without
//! ever showing a secret. See `docs/cluster.md`, "Securing NATS".

pub mod connect;
pub mod error;
mod files;
pub mod servers;

pub use connect::{NatsEndpoint, NatsSecurity, NatsTarget};
pub use error::{NatsError, NatsErrorKind};
pub use servers::{parse_servers, redact};

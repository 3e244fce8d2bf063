//! Harnesses for tests and benchmarks, never for the shipped binary (the
//! tidy test checks that `bursar` does not depend on this crate): real
//! outside components started on free loopback ports in temp dirs, which
//! fail with a clear message when their binary is missing (they never skip).
//!
//! - `nats_server`: one nats-server with JetStream.
//! - `jetstream`: connections to those servers.
//! - `nats_cluster`: a 3-node JetStream cluster that can be paused, killed
//!   and restarted node by node.
//! - `postgres`: a throwaway PostgreSQL server.
//! - `pki`: a private CA and certificates for TLS tests.
//!
//! The harnesses fail with [`HarnessError`], the PKI with [`pki::PkiError`].

pub mod error;
pub mod jetstream;
pub mod nats_cluster;
pub mod nats_server;
pub mod pki;
pub mod postgres;

pub use error::HarnessError;

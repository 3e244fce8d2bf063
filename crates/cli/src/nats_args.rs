//! NATS security options of `bursar start`: one set for cluster mode
//! (`--nats-*`) and one for the change-stream relay (`--relay-nats-*`), so
//! the relay can connect as a user of its own, with its own permissions.
//! Credentials in URLs (`nats://user:password@host`, `nats://token@host`)
//! need no option.

use bursar_nats::{NatsEndpoint, NatsSecurity};
use std::path::PathBuf;

/// Security options of the cluster's NATS connections.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClusterNatsArgs {
    /// NATS credentials file (user JWT and nkey seed) for cluster mode.
    #[arg(long, value_name = "FILE", requires = "cluster", conflicts_with = "nats_nkey_file")]
    pub nats_creds_file: Option<PathBuf>,
    /// File holding a NATS user nkey seed (SU...) for cluster mode.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub nats_nkey_file: Option<PathBuf>,
    /// PEM CA(s) that signed the NATS servers' certificates; turns TLS on (default roots: the system's).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub nats_ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS with NATS (needs --nats-key-file).
    #[arg(long, value_name = "FILE", requires_all = ["cluster", "nats_key_file"])]
    pub nats_cert_file: Option<PathBuf>,
    /// PEM private key of --nats-cert-file.
    #[arg(long, value_name = "FILE", requires_all = ["cluster", "nats_cert_file"])]
    pub nats_key_file: Option<PathBuf>,
}

impl ClusterNatsArgs {
    pub fn security(&self) -> NatsSecurity {
        NatsSecurity {
            creds_file: self.nats_creds_file.clone(),
            nkey_file: self.nats_nkey_file.clone(),
            ca_file: self.nats_ca_file.clone(),
            cert_file: self.nats_cert_file.clone(),
            key_file: self.nats_key_file.clone(),
        }
    }
}

/// Security options of the relay's NATS connection.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RelayNatsArgs {
    /// NATS credentials file (user JWT and nkey seed) for the relay.
    #[arg(long, value_name = "FILE", requires = "relay_nats", conflicts_with = "relay_nats_nkey_file")]
    pub relay_nats_creds_file: Option<PathBuf>,
    /// File holding a NATS user nkey seed (SU...) for the relay.
    #[arg(long, value_name = "FILE", requires = "relay_nats")]
    pub relay_nats_nkey_file: Option<PathBuf>,
    /// PEM CA(s) that signed the relay's NATS servers' certificates; turns TLS on.
    #[arg(long, value_name = "FILE", requires = "relay_nats")]
    pub relay_nats_ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS (needs --relay-nats-key-file).
    #[arg(long, value_name = "FILE", requires_all = ["relay_nats", "relay_nats_key_file"])]
    pub relay_nats_cert_file: Option<PathBuf>,
    /// PEM private key of --relay-nats-cert-file.
    #[arg(long, value_name = "FILE", requires_all = ["relay_nats", "relay_nats_cert_file"])]
    pub relay_nats_key_file: Option<PathBuf>,
}

impl RelayNatsArgs {
    pub fn security(&self) -> NatsSecurity {
        NatsSecurity {
            creds_file: self.relay_nats_creds_file.clone(),
            nkey_file: self.relay_nats_nkey_file.clone(),
            ca_file: self.relay_nats_ca_file.clone(),
            cert_file: self.relay_nats_cert_file.clone(),
            key_file: self.relay_nats_key_file.clone(),
        }
    }
}

/// Checks URLs and security files before anything starts, so a typo or
/// an unreadable file stops `bursar start` with the option's name (never
/// a secret) instead of surfacing later as a failed connection.
pub fn check(endpoint: &NatsEndpoint, what: &str) -> anyhow::Result<()> {
    endpoint.prepare().map(drop).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

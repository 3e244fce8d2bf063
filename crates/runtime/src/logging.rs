//! Logging for Bursar's processes: to stderr, filtered by `BURSAR_LOG`
//! (tracing's filter syntax, e.g. `info` or `bursar_cluster=debug,warn`;
//! default `info`), with colours only when stderr is a terminal, so a log
//! written to a file carries no escape codes.

use std::io::IsTerminal;

/// The environment variable holding the log filter.
pub const LOG_FILTER_VAR: &str = "BURSAR_LOG";

/// Installs the process's logger; call once, first thing in `main`.
pub fn init_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_FILTER_VAR)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
}

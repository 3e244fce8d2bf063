//! The process around a developer tool (`bursar-chaos`, `bursar-bench`):
//! logging to stderr and the exit status. The bench depends on this crate
//! already, so the two binaries share it without a crate of its own.

use std::process::ExitCode;

/// Logs to stderr at `BURSAR_LOG` (default `info`), runs the tool and turns
/// its outcome into the exit status, with the error on stderr.
pub fn main(name: &str, run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BURSAR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

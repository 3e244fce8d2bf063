//! The process around a developer tool (`bursar-chaos`, `bursar-bench`):
//! logging to stderr and the exit status. The bench depends on this crate
//! already, so the two binaries share it without a crate of its own.

use std::process::ExitCode;

/// Logs to stderr at `BURSAR_LOG` (default `info`), runs the tool and turns
/// its outcome into the exit status, with the error on stderr.
pub fn main(name: &str, run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    bursar_runtime::logging::init_stderr();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `bursar bench` and `bursar chaos`: the benchmarks and the fault-injection
//! harness are separate binaries (`bursar-bench`, `bursar-chaos`, built by
//! `cargo build --release` beside `bursar`), so the binary that is deployed
//! does not link their load generators, histograms and process harnesses.
//! These subcommands run the tool found next to this binary with the same
//! arguments, the way `git` runs `git-<name>`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Everything after `bench` or `chaos`, passed on untouched (`--help` too).
#[derive(clap::Args, Debug)]
pub struct ToolArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

/// Replaces this process with `tool` (so signals and the exit status are
/// the tool's own); returns only when it cannot be started.
pub fn run(tool: &str, args: ToolArgs) -> ExitCode {
    let path = match tool_path(tool) {
        Ok(path) => path,
        Err(why) => {
            eprintln!("bursar: error: {why}");
            return ExitCode::from(2);
        }
    };
    let err = Command::new(&path).args(&args.args).exec();
    eprintln!("bursar: error: cannot run {}: {err}", path.display());
    ExitCode::from(2)
}

fn tool_path(tool: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    let path = me.with_file_name(tool);
    if !path.is_file() {
        return Err(format!(
            "{tool} is not installed next to this binary ({}): it is a developer tool; build it with \
             `cargo build --release -p {tool}` (or `cargo build --release` for everything)",
            path.display()
        ));
    }
    Ok(path)
}

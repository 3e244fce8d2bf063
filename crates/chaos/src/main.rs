//! `bursar-chaos`, run as `bursar chaos ...`: fault-injection tests of
//! cluster mode, in their own binary so the deployed `bursar` does not
//! carry them.

use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bursar chaos",
    bin_name = "bursar chaos",
    version,
    about = "Fault-injection tests of cluster mode on a real local cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: bursar_chaos::ChaosCommand,
}

fn main() -> ExitCode {
    bursar_chaos::tool::main("bursar chaos", || bursar_chaos::run(Cli::parse().command))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}

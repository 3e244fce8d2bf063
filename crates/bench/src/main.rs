//! `bursar-bench`, run as `bursar bench ...`: the benchmarks, in their own
//! binary so the `bursar` that is deployed does not carry them.

use clap::Parser;
use std::process::ExitCode;

/// The same allocator as `bursar`: the embedded benchmarks measure the
/// server as it is deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bursar bench",
    bin_name = "bursar bench",
    version,
    about = "Benchmark: load a server with transfers and check the balances"
)]
struct Cli {
    #[command(flatten)]
    args: bursar_bench::BenchArgs,
}

fn main() -> ExitCode {
    bursar_chaos::tool::main("bursar bench", || bursar_bench::run(Cli::parse().args))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}

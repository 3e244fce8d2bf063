//! `bursar`: the one binary users deploy. Runs the server, the offline
//! verifier and the client commands; `bench` and `chaos` run the developer
//! tools `bursar-bench` and `bursar-chaos` found next to it.

mod client_cmds;
mod cluster_args;
mod dev_tools;
mod http_cli;
mod nats_args;
mod project;
mod relays;
mod start;
mod workflows;

use clap::{Parser, Subcommand};

/// mimalloc: the engine, the HTTP front end and the snapshot thread allocate
/// from several threads at once, where glibc's allocator spent ~13 % of all
/// CPU time in the one-transfer-per-request HTTP benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bursar", version, about = "Bursar: a fault-tolerant double-entry ledger and money-movement system")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an embedded single node (no outside service needed).
    Start(Box<start::StartArgs>),
    /// Check a data directory offline: every entry, a full replay, every invariant; print the state digest.
    Verify(start::VerifyArgs),
    /// Benchmark: load a server with transfers and check the balances (runs `bursar-bench`).
    #[command(disable_help_flag = true)]
    Bench(dev_tools::ToolArgs),
    /// Check that a server is up and ready.
    Ping(client_cmds::PingArgs),
    /// Look up accounts or transfers by id.
    Lookup(client_cmds::LookupArgs),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Ledgers over the HTTP API: create, list.
    #[command(subcommand)]
    Ledger(http_cli::LedgerCommand),
    /// Accounts over the HTTP API: create, get, transfers, balances.
    #[command(subcommand)]
    Account(http_cli::AccountCommand),
    /// Transfers over the HTTP API: create, get.
    #[command(subcommand)]
    Transfer(http_cli::TransferCommand),
    /// Payment orders over the HTTP API: create, get, list, cancel, review, funds, events.
    #[command(subcommand)]
    Order(http_cli::OrderCommand),
    /// API keys over the HTTP API (admin): create, list, revoke.
    #[command(subcommand)]
    Keys(http_cli::KeysCommand),
    /// Webhooks over the HTTP API (admin): create, list, delete, dead-letters, replay.
    #[command(subcommand)]
    Webhooks(http_cli::WebhooksCommand),
    /// Import transfers from a CSV file over the HTTP API: batched, resumable, idempotent.
    Import(http_cli::import::ImportArgs),
    /// Read models fed by the change stream: `project postgres`.
    #[command(subcommand)]
    Project(project::ProjectCommand),
    /// Fault-injection tests of cluster mode on a real local cluster: `chaos bank` (runs `bursar-chaos`).
    #[command(disable_help_flag = true)]
    Chaos(dev_tools::ToolArgs),
    /// Serve the order connector simulators over HTTP (for `start --connectors-url`).
    Simulate(workflows::SimulateArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the audit trail's hash chain from the log; name the first broken record.
    Verify(start::AuditVerifyArgs),
}

fn main() -> ExitCode {
    bursar_runtime::logging::init_stderr();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Start(args) => start::start(*args),
        Command::Simulate(args) => workflows::simulate(args),
        Command::Project(c) => project::run(c),
        Command::Verify(args) => start::verify(args),
        Command::Bench(args) => return dev_tools::run("bursar-bench", args),
        Command::Chaos(args) => return dev_tools::run("bursar-chaos", args),
        Command::Ping(args) => client_cmds::ping(args),
        Command::Lookup(args) => client_cmds::lookup(args),
        Command::Audit(AuditCommand::Verify(args)) => start::audit_verify(args),
        Command::Ledger(c) => return http_cli::run(http_cli::Http::Ledger(c)),
        Command::Account(c) => return http_cli::run(http_cli::Http::Account(c)),
        Command::Transfer(c) => return http_cli::run(http_cli::Http::Transfer(c)),
        Command::Order(c) => return http_cli::run(http_cli::Http::Order(c)),
        Command::Keys(c) => return http_cli::run(http_cli::Http::Keys(c)),
        Command::Webhooks(c) => return http_cli::run(http_cli::Http::Webhooks(c)),
        Command::Import(args) => return http_cli::run(http_cli::Http::Import(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bursar: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Clap checks its definitions only when a command is parsed; check them
    /// all here (two `--url` in one subcommand would panic at run time).
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}

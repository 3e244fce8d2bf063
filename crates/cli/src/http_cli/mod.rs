//! The command-line client of the HTTP/JSON API (docs/api.md): ledgers,
//! accounts, transfers, payment orders, API keys, and a resumable,
//! idempotent bulk import of transfers from CSV.
//!
//! Errors are printed as `error: <code>: <detail> (field <f>)` and every
//! failure exits non-zero.

pub mod account;
pub mod client;
pub mod import;
pub mod keys;
pub mod ledger;
pub mod order;
pub mod output;
pub mod transfer;
pub mod webhooks;

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How to reach the server; shared by every HTTP command.
#[derive(clap::Args, Clone, Debug)]
pub struct Conn {
    /// Base URL of the HTTP API.
    #[arg(long, env = "BURSAR_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key, sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "BURSAR_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Trust this PEM certificate (a self-signed server's, or a private CA's)
    /// instead of the built-in web roots.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Retries after connection errors, 503s and in-flight conflicts (each
    /// with the same Idempotency-Key), with backoff.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub retries: u32,
}

/// [`Conn`] and the time bound of one HTTP request.
#[derive(clap::Args, Clone, Debug)]
pub struct Global {
    #[command(flatten)]
    pub conn: Conn,
    /// Seconds one HTTP request may take (each try).
    #[arg(long = "timeout", visible_alias = "request-timeout", default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
}

impl Global {
    pub fn api(&self) -> Result<client::Api, CliError> {
        client::Api::new(&self.conn, Duration::from_secs(self.timeout))
    }

    /// GETs `path`: `None` once `--json` printed the body as sent, else the
    /// parsed body.
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>, CliError> {
        self.api()?.get(path, &[])?.parsed(self.conn.json)
    }
}

/// A command on one record named by its id.
#[derive(clap::Args)]
pub struct IdArgs {
    /// Decimal or UUID.
    pub id: String,
    #[command(flatten)]
    pub global: Global,
}

/// The three free-form fields accounts and transfers carry for the caller.
#[derive(clap::Args)]
pub struct UserDataArgs {
    /// Decimal.
    #[arg(long)]
    pub user_data_128: Option<String>,
    /// Decimal.
    #[arg(long)]
    pub user_data_64: Option<String>,
    #[arg(long)]
    pub user_data_32: Option<u32>,
}

/// `--flags a, b,,c` as the API wants them: trimmed, empty ones dropped.
pub fn flag_names(flags: &[String]) -> Vec<String> {
    flags.iter().map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect()
}

/// The options of a write: its Idempotency-Key and [`Global`].
#[derive(clap::Args, Clone, Debug)]
pub struct WriteOpts {
    /// Idempotency-Key to send (default: a fresh UUID).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub global: Global,
}

impl WriteOpts {
    /// The client, and the key to send: the one given (checked) or a fresh one.
    pub fn open(&self) -> Result<(client::Api, String), CliError> {
        let api = self.global.api()?;
        Ok((api, idempotency_key(&self.idempotency_key)?))
    }
}

/// A problem+json error of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub code: String,
    pub detail: String,
    pub field: Option<String>,
    pub request_id: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)?;
        if let Some(field) = &self.field {
            write!(f, " (field {field})")?;
        }
        Ok(())
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The server answered with a problem.
    Api(Problem),
    /// The server could not be reached (after the retries).
    Transport(String),
    /// Bad arguments the parser could not catch.
    Usage(String),
    /// Anything else, already phrased for the user.
    Other(String),
    /// Already reported on stderr; just exit non-zero.
    Reported,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Api(p) => p.fmt(f),
            CliError::Transport(m) | CliError::Usage(m) | CliError::Other(m) => f.write_str(m),
            CliError::Reported => f.write_str("failed"),
        }
    }
}

/// Ledgers (admin creates; every role lists).
#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Create a ledger: `bursar ledger create --id 1 --asset USD --scale 2`.
    Create(ledger::CreateArgs),
    /// List the ledgers the key may see.
    List(ledger::ListArgs),
}

/// Accounts (operator creates; every role reads).
#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an account.
    Create(account::CreateArgs),
    /// Show an account with its balances.
    Get(IdArgs),
    /// An account's transfers, a page at a time (or --all).
    Transfers(account::HistoryArgs),
    /// An account's balance after each change (accounts with the history flag).
    Balances(account::HistoryArgs),
}

/// Transfers (operator creates; every role reads).
#[derive(Subcommand)]
pub enum TransferCommand {
    /// Create a transfer (plain, pending, post or void).
    Create(Box<transfer::CreateArgs>),
    /// Show a transfer.
    Get(IdArgs),
}

/// Payment orders (operator creates and sends commands; every role reads,
/// auditors with personal data masked).
#[derive(Subcommand)]
pub enum OrderCommand {
    /// Create a payment order; the server resolves the fee and timeouts.
    Create(Box<order::CreateArgs>),
    /// Show an order.
    Get(IdArgs),
    /// List orders by id, optionally in one state.
    List(order::ListArgs),
    /// Cancel an order (refunds held funds).
    Cancel(order::CancelArgs),
    /// Approve or reject an order on hold.
    Review(order::ReviewArgs),
    /// Notify incoming funds for an order (what a bank integration sends).
    Funds(order::FundsArgs),
    /// An order's timeline.
    Events(IdArgs),
}

/// API keys (admin only).
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed once.
    Create(keys::CreateArgs),
    /// List the API keys (never their secrets).
    List(keys::ListArgs),
    /// Revoke an API key.
    Revoke(keys::RevokeArgs),
    /// Give a key a successor with a new secret; the old one expires after a grace period.
    Rotate(keys::RotateArgs),
}

/// Webhooks (admin only).
#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Subscribe a URL to events; the signing secret is printed once.
    Create(webhooks::CreateArgs),
    /// List the webhooks (never their secrets).
    List(webhooks::ListArgs),
    /// Delete a webhook: deliveries stop.
    Delete(webhooks::DeleteArgs),
    /// A webhook's dead letters: events given up on after the retry period.
    DeadLetters(webhooks::DeadLettersArgs),
    /// Redeliver a webhook's dead letters (all, or --seq S).
    Replay(webhooks::ReplayArgs),
}

/// Every HTTP command.
pub enum Http {
    Ledger(LedgerCommand),
    Account(AccountCommand),
    Transfer(TransferCommand),
    Order(OrderCommand),
    Keys(KeysCommand),
    Webhooks(WebhooksCommand),
    Import(import::ImportArgs),
}

/// Runs one command; prints its error and picks the exit code.
pub fn run(command: Http) -> ExitCode {
    let result = match command {
        Http::Ledger(LedgerCommand::Create(a)) => ledger::create(a),
        Http::Ledger(LedgerCommand::List(a)) => ledger::list(a),
        Http::Account(AccountCommand::Create(a)) => account::create(a),
        Http::Account(AccountCommand::Get(a)) => account::get(a),
        Http::Account(AccountCommand::Transfers(a)) => account::transfers(a),
        Http::Account(AccountCommand::Balances(a)) => account::balances(a),
        Http::Transfer(TransferCommand::Create(a)) => transfer::create(*a),
        Http::Transfer(TransferCommand::Get(a)) => transfer::get(a),
        Http::Order(OrderCommand::Create(a)) => order::create(*a),
        Http::Order(OrderCommand::Get(a)) => order::get(a),
        Http::Order(OrderCommand::List(a)) => order::list(a),
        Http::Order(OrderCommand::Cancel(a)) => order::cancel(a),
        Http::Order(OrderCommand::Review(a)) => order::review(a),
        Http::Order(OrderCommand::Funds(a)) => order::funds(a),
        Http::Order(OrderCommand::Events(a)) => order::events(a),
        Http::Keys(KeysCommand::Create(a)) => keys::create(a),
        Http::Keys(KeysCommand::List(a)) => keys::list(a),
        Http::Keys(KeysCommand::Revoke(a)) => keys::revoke(a),
        Http::Keys(KeysCommand::Rotate(a)) => keys::rotate(a),
        Http::Webhooks(WebhooksCommand::Create(a)) => webhooks::create(a),
        Http::Webhooks(WebhooksCommand::List(a)) => webhooks::list(a),
        Http::Webhooks(WebhooksCommand::Delete(a)) => webhooks::delete(a),
        Http::Webhooks(WebhooksCommand::DeadLetters(a)) => webhooks::dead_letters(a),
        Http::Webhooks(WebhooksCommand::Replay(a)) => webhooks::replay(a),
        Http::Import(a) => import::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Reported) => ExitCode::FAILURE,
        Err(e) => {
            output::err_line(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The Idempotency-Key of a POST: the given one, or a fresh UUID v4.
pub fn idempotency_key(given: &Option<String>) -> Result<String, CliError> {
    match given {
        Some(k) => {
            client::check_idempotency_key(k)?;
            Ok(k.clone())
        }
        None => client::new_idempotency_key(),
    }
}

/// Serializes a request body.
pub fn to_body<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(v).map_err(|e| CliError::Other(format!("encoding the request: {e}")))
}

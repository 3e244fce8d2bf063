//! `bursar transfer create|get`.

use super::client::encode;
use super::output::{self, Table};
use super::{CliError, Conn, IdArgs, UserDataArgs, flag_names, idempotency_key, to_body};
use bursar_http::dto::{TransferBody, TransferRequest};
use std::time::Duration;

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The transfer's id: decimal or UUID. Unique forever.
    #[arg(long)]
    pub id: String,
    /// Debit account id (may be omitted for post_pending/void_pending).
    #[arg(long)]
    pub debit: Option<String>,
    /// Credit account id (may be omitted for post_pending/void_pending).
    #[arg(long)]
    pub credit: Option<String>,
    /// Minor units, decimal (omit on post_pending to post the full amount).
    #[arg(long)]
    pub amount: Option<String>,
    #[arg(long)]
    pub ledger: Option<u32>,
    #[arg(long)]
    pub code: Option<u16>,
    /// Comma-separated: linked, pending, post_pending, void_pending,
    /// balancing_debit, balancing_credit, closing_debit, closing_credit.
    #[arg(long, value_delimiter = ',')]
    pub flags: Vec<String>,
    /// The pending transfer to post or void.
    #[arg(long)]
    pub pending_id: Option<String>,
    /// Seconds until a pending transfer expires. (The HTTP request's own
    /// time bound is --request-timeout here.)
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    #[command(flatten)]
    pub user_data: UserDataArgs,
    /// Idempotency-Key to send (default: a fresh UUID).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
    /// Seconds the HTTP request may take (each try).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub request_timeout: u64,
}

pub fn create(a: CreateArgs) -> Result<(), CliError> {
    let api = super::client::Api::new(&a.conn, Duration::from_secs(a.request_timeout))?;
    let key = idempotency_key(&a.idempotency_key)?;
    let req = TransferRequest {
        id: a.id.clone(),
        debit_account_id: a.debit.clone(),
        credit_account_id: a.credit.clone(),
        amount: a.amount.clone(),
        ledger: a.ledger,
        code: a.code,
        flags: flag_names(&a.flags),
        pending_id: a.pending_id.clone(),
        timeout: a.timeout,
        user_data_128: a.user_data.user_data_128.clone(),
        user_data_64: a.user_data.user_data_64.clone(),
        user_data_32: a.user_data.user_data_32,
    };
    let reply = api.post("/v1/transfers", &to_body(&req)?, &key)?;
    let Some(t) = reply.parsed::<TransferBody>(a.conn.json)? else { return Ok(()) };
    let id = t.id.clone();
    print_record(t);
    if reply.status == 200 {
        output::err_line(&format!("note: transfer {id} already existed with these fields; nothing was applied"));
    }
    Ok(())
}

pub fn get(a: IdArgs) -> Result<(), CliError> {
    if let Some(r) = a.global.get(&format!("/v1/transfers/{}", encode(&a.id)))? {
        print_record(r);
    }
    Ok(())
}

fn print_record(t: TransferBody) {
    output::record(&[
        ("id", t.id),
        ("debit_account_id", t.debit_account_id),
        ("credit_account_id", t.credit_account_id),
        ("amount", t.amount),
        ("pending_id", t.pending_id),
        ("ledger", t.ledger.to_string()),
        ("code", t.code.to_string()),
        ("flags", output::flags(&t.flags)),
        ("timeout", t.timeout.to_string()),
        ("user_data_128", t.user_data_128),
        ("user_data_64", t.user_data_64),
        ("user_data_32", t.user_data_32.to_string()),
        ("timestamp", t.timestamp),
    ]);
}

/// Transfers as a table.
pub fn print_table(rows: &[TransferBody]) {
    let mut t =
        Table::new(&["id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags", "timestamp"]);
    for r in rows {
        t.row(vec![
            r.id.clone(),
            r.debit_account_id.clone(),
            r.credit_account_id.clone(),
            r.amount.clone(),
            r.ledger.to_string(),
            r.code.to_string(),
            output::flags(&r.flags),
            r.timestamp.clone(),
        ]);
    }
    t.print();
}

//! `bursar account create|get|transfers|balances`.

use super::client::{Api, encode};
use super::output::{self, Table};
use super::{CliError, Global, IdArgs, UserDataArgs, WriteOpts, flag_names, to_body};
use bursar_http::dto::{AccountBody, AccountCreated, AccountRequest, BalanceBody, Page, TransferBody};

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The account's id: decimal or UUID.
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub ledger: u32,
    /// Account code (chart of accounts), nonzero.
    #[arg(long)]
    pub code: u16,
    /// Comma-separated: linked, debits_must_not_exceed_credits,
    /// credits_must_not_exceed_debits, history.
    #[arg(long, value_delimiter = ',')]
    pub flags: Vec<String>,
    #[command(flatten)]
    pub user_data: UserDataArgs,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn create(a: CreateArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let req = AccountRequest {
        id: a.id.clone(),
        ledger: a.ledger,
        code: a.code,
        flags: flag_names(&a.flags),
        user_data_128: a.user_data.user_data_128.clone(),
        user_data_64: a.user_data.user_data_64.clone(),
        user_data_32: a.user_data.user_data_32,
    };
    let reply = api.post("/v1/accounts", &to_body(&req)?, &key)?;
    let Some(c) = reply.parsed::<AccountCreated>(a.write.global.conn.json)? else { return Ok(()) };
    output::record(&[
        ("id", c.id.clone()),
        ("ledger", c.ledger.to_string()),
        ("code", c.code.to_string()),
        ("flags", output::flags(&c.flags)),
        ("user_data_128", c.user_data_128),
        ("user_data_64", c.user_data_64),
        ("user_data_32", c.user_data_32.to_string()),
        ("timestamp", c.timestamp),
    ]);
    if reply.status == 200 {
        output::err_line(&format!("note: account {} already existed with these fields", c.id));
    }
    Ok(())
}

pub fn get(a: IdArgs) -> Result<(), CliError> {
    let Some(b) = a.global.get::<AccountBody>(&format!("/v1/accounts/{}", encode(&a.id)))? else { return Ok(()) };
    output::record(&[
        ("id", b.id),
        ("ledger", b.ledger.to_string()),
        ("code", b.code.to_string()),
        ("flags", output::flags(&b.flags)),
        ("debits_pending", b.debits_pending),
        ("debits_posted", b.debits_posted),
        ("credits_pending", b.credits_pending),
        ("credits_posted", b.credits_posted),
        ("user_data_128", b.user_data_128),
        ("user_data_64", b.user_data_64),
        ("user_data_32", b.user_data_32.to_string()),
        ("timestamp", b.timestamp),
    ]);
    Ok(())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Side {
    Debits,
    Credits,
    Both,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Order {
    Asc,
    Desc,
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Decimal or UUID.
    pub id: String,
    /// Rows per page (1-1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Transfers only: where the account is debited, credited or both.
    #[arg(long, value_enum)]
    pub side: Option<Side>,
    /// Oldest first (asc, the default) or newest first.
    #[arg(long, value_enum)]
    pub order: Option<Order>,
    /// Inclusive lower bound, nanoseconds since the epoch.
    #[arg(long)]
    pub timestamp_min: Option<u64>,
    /// Inclusive upper bound, nanoseconds since the epoch.
    #[arg(long)]
    pub timestamp_max: Option<u64>,
    /// Start at this page (`next_cursor` of the previous one).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow `next_cursor` to the last page.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub global: Global,
}

/// What [`pages`] fetched.
struct Fetched<T> {
    rows: Vec<T>,
    /// The body of the page, when only one was asked for.
    raw: Option<String>,
    /// The cursor of the page after.
    next: Option<String>,
}

/// Fetches one page, or all of them with `--all`.
fn pages<T: serde::de::DeserializeOwned>(
    api: &Api,
    a: &HistoryArgs,
    what: &str,
    side: bool,
) -> Result<Fetched<T>, CliError> {
    let path = format!("/v1/accounts/{}/{what}", encode(&a.id));
    let mut q = vec![("limit", a.limit.to_string())];
    if let Some(s) = a.side.filter(|_| side) {
        q.push(("side", format!("{s:?}").to_lowercase()));
    }
    if let Some(o) = a.order {
        q.push(("order", format!("{o:?}").to_lowercase()));
    }
    if let Some(t) = a.timestamp_min {
        q.push(("timestamp_min", t.to_string()));
    }
    if let Some(t) = a.timestamp_max {
        q.push(("timestamp_max", t.to_string()));
    }
    let mut rows = Vec::new();
    let mut cursor = a.cursor.clone();
    loop {
        let mut query = q.clone();
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let reply = api.get(&path, &query)?;
        let page: Page<T> = reply.json()?;
        rows.extend(page.data);
        if !a.all {
            return Ok(Fetched { rows, raw: Some(reply.body), next: page.next_cursor });
        }
        match page.next_cursor {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => return Ok(Fetched { rows, raw: None, next: None }),
        }
    }
}

fn more_hint(next: &Option<String>) {
    if let Some(c) = next {
        output::err_line(&format!("more: add --cursor {c} for the next page, or --all"));
    }
}

pub fn transfers(a: HistoryArgs) -> Result<(), CliError> {
    let api = a.global.api()?;
    let Fetched { rows, raw, next } = pages::<TransferBody>(&api, &a, "transfers", true)?;
    if a.global.conn.json {
        match raw {
            Some(body) => output::json_body(&body)?,
            None => output::json_value(&serde_json::json!({ "data": rows, "next_cursor": null })),
        }
        return Ok(());
    }
    super::transfer::print_table(&rows);
    more_hint(&next);
    Ok(())
}

pub fn balances(a: HistoryArgs) -> Result<(), CliError> {
    if a.side.is_some() {
        return Err(CliError::Usage("--side applies to `account transfers` only".into()));
    }
    let api = a.global.api()?;
    let Fetched { rows, raw, next } = pages::<BalanceBody>(&api, &a, "balances", false)?;
    if a.global.conn.json {
        match raw {
            Some(body) => output::json_body(&body)?,
            None => output::json_value(&serde_json::json!({ "data": rows, "next_cursor": null })),
        }
        return Ok(());
    }
    let mut t = Table::new(&["timestamp", "debits_pending", "debits_posted", "credits_pending", "credits_posted"]);
    for b in rows {
        t.row(vec![b.timestamp, b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted]);
    }
    t.print();
    more_hint(&next);
    Ok(())
}

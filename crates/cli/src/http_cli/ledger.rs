//! `bursar ledger create|list`.

use super::output::{self, Table};
use super::{CliError, Global, WriteOpts, to_body};
use bursar_http::dto::{LedgerBody, LedgerRequest, Page};

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The ledger's id (1 to 2^32 - 1).
    #[arg(long)]
    pub id: u32,
    /// Asset code: 1-16 of A-Z 0-9 _ - . starting with a letter (USD, EUR, POINTS).
    #[arg(long)]
    pub asset: String,
    /// Digits of one minor unit (0-38): 2 for cents.
    #[arg(long)]
    pub scale: u8,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn create(a: CreateArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let body = to_body(&LedgerRequest { id: a.id, asset: a.asset.clone(), scale: a.scale })?;
    let reply = api.post("/v1/ledgers", &body, &key)?;
    let Some(l) = reply.parsed::<LedgerBody>(a.write.global.conn.json)? else { return Ok(()) };
    print_table(std::slice::from_ref(&l));
    if reply.status == 200 {
        output::err_line(&format!("note: ledger {} already existed with this asset and scale", l.id));
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Ledgers per request (1-1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[command(flatten)]
    pub global: Global,
}

/// Lists every ledger the key may see, following the pages.
pub fn list(a: ListArgs) -> Result<(), CliError> {
    let api = a.global.api()?;
    let mut all: Vec<LedgerBody> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", a.limit.to_string())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page: Page<LedgerBody> = api.get("/v1/ledgers", &q)?.json()?;
        all.extend(page.data);
        match page.next_cursor {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    if a.global.conn.json {
        let page = Page { data: all, next_cursor: None };
        output::json_value(&serde_json::to_value(&page).unwrap_or_default());
        return Ok(());
    }
    print_table(&all);
    Ok(())
}

fn print_table(ledgers: &[LedgerBody]) {
    let mut t = Table::new(&["id", "asset", "scale", "timestamp"]);
    for l in ledgers {
        t.row(vec![l.id.to_string(), l.asset.clone(), l.scale.to_string(), l.timestamp.clone()]);
    }
    t.print();
}

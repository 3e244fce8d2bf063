//! `bursar order create|get|list|cancel|review|funds|events`.

use super::client::{Api, encode};
use super::output::{self, Table};
use super::{CliError, Global, IdArgs, WriteOpts, idempotency_key, to_body};
use bursar_api::dto::Page;
use bursar_api::dto_orders::{
    CancelRequest, FundsRequest, OrderBody, OrderEventList, OrderRequest, RecipientRequest, ReviewRequest,
    SenderRequest,
};

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The order's id: decimal or UUID. Unique forever.
    #[arg(long)]
    pub id: String,
    /// The sender's customer id: decimal or UUID.
    #[arg(long)]
    pub customer: String,
    /// Asset the sender pays in (as the server's order settings name it: USD, EUR, ...).
    #[arg(long)]
    pub source_asset: String,
    /// What the sender pays, fee included, in source minor units (decimal).
    #[arg(long)]
    pub amount: String,
    /// Asset the recipient is paid in.
    #[arg(long)]
    pub target_asset: String,
    #[arg(long)]
    pub sender_name: String,
    /// ISO 3166-1 alpha-2 (GB, US, ...).
    #[arg(long)]
    pub sender_country: String,
    #[arg(long)]
    pub recipient_name: String,
    /// IBAN or account number.
    #[arg(long)]
    pub recipient_account: String,
    /// Earliest payout time, nanoseconds since the Unix epoch.
    #[arg(long, value_name = "NANOS")]
    pub payout_at: Option<String>,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn create(a: CreateArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let req = OrderRequest {
        id: a.id.clone(),
        customer_id: a.customer.clone(),
        source_asset: a.source_asset.clone(),
        source_amount: a.amount.clone(),
        target_asset: a.target_asset.clone(),
        sender: SenderRequest { name: a.sender_name.clone(), country: a.sender_country.clone() },
        recipient: RecipientRequest { name: a.recipient_name.clone(), bank_account: a.recipient_account.clone() },
        payout_at: a.payout_at.clone(),
    };
    let reply = api.post("/v1/orders", &to_body(&req)?, &key)?;
    let Some(o) = reply.parsed::<OrderBody>(a.write.global.conn.json)? else { return Ok(()) };
    let id = o.id.clone();
    print_record(o);
    if reply.status == 200 {
        output::err_line(&format!("note: order {id} already existed with these fields; nothing was applied"));
    }
    Ok(())
}

pub fn get(a: IdArgs) -> Result<(), CliError> {
    if let Some(r) = a.global.get(&format!("/v1/orders/{}", encode(&a.id)))? {
        print_record(r);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only orders in this state (created, awaiting_funds, funds_received,
    /// screening, on_hold, approved, fx_locked, payout_sent, completed,
    /// cancelled, rejected, refunded, expired, failed).
    #[arg(long)]
    pub state: Option<String>,
    /// Orders per page (1-1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Start after this order id (`next_cursor` of the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow `next_cursor` to the last page.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub global: Global,
}

pub fn list(a: ListArgs) -> Result<(), CliError> {
    let api = a.global.api()?;
    let mut rows: Vec<OrderBody> = Vec::new();
    let mut cursor = a.cursor.clone();
    loop {
        let mut q = vec![("limit", a.limit.to_string())];
        if let Some(s) = &a.state {
            q.push(("state", s.clone()));
        }
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let reply = api.get("/v1/orders", &q)?;
        let page: Page<OrderBody> = reply.json()?;
        rows.extend(page.data);
        if !a.all {
            if a.global.conn.json {
                return output::json_body(&reply.body);
            }
            print_table(&rows);
            if let Some(c) = page.next_cursor {
                output::err_line(&format!("more: add --cursor {c} for the next page, or --all"));
            }
            return Ok(());
        }
        match page.next_cursor {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    if a.global.conn.json {
        output::json_value(&serde_json::json!({ "data": rows, "next_cursor": null }));
        return Ok(());
    }
    print_table(&rows);
    Ok(())
}

#[derive(clap::Args)]
pub struct CancelArgs {
    /// Decimal or UUID.
    pub id: String,
    /// Why (at most 128 bytes).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn cancel(a: CancelArgs) -> Result<(), CliError> {
    let body = to_body(&CancelRequest { reason: a.reason.clone() })?;
    send_command(&a.write.global, &a.id, "cancel", &body, &a.write.idempotency_key)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Decision {
    Approve,
    Reject,
}

#[derive(clap::Args)]
pub struct ReviewArgs {
    /// Decimal or UUID.
    pub id: String,
    #[arg(long, value_enum)]
    pub decision: Decision,
    /// Why (at most 128 bytes).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn review(a: ReviewArgs) -> Result<(), CliError> {
    let decision = format!("{:?}", a.decision).to_lowercase();
    let body = to_body(&ReviewRequest { decision, reason: a.reason.clone() })?;
    send_command(&a.write.global, &a.id, "review", &body, &a.write.idempotency_key)
}

#[derive(clap::Args)]
pub struct FundsArgs {
    /// Decimal or UUID.
    pub id: String,
    /// The amount received, in source minor units (must equal the order's).
    #[arg(long)]
    pub amount: String,
    /// The bank's reference (1-32 printable ASCII characters, no spaces).
    #[arg(long)]
    pub reference: Option<String>,
    /// Idempotency-Key to send (default: a fresh UUID). A bank integration
    /// should derive it from its own notification id.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub global: Global,
}

pub fn funds(a: FundsArgs) -> Result<(), CliError> {
    let body = to_body(&FundsRequest { amount: a.amount.clone(), reference: a.reference.clone() })?;
    send_command(&a.global, &a.id, "funds", &body, &a.idempotency_key)
}

fn send_command(global: &Global, id: &str, what: &str, body: &[u8], key: &Option<String>) -> Result<(), CliError> {
    let api: Api = global.api()?;
    let key = idempotency_key(key)?;
    let reply = api.post(&format!("/v1/orders/{}/{what}", encode(id)), body, &key)?;
    if let Some(r) = reply.parsed(global.conn.json)? {
        print_record(r);
    }
    Ok(())
}

pub fn events(a: IdArgs) -> Result<(), CliError> {
    let Some(list) = a.global.get::<OrderEventList>(&format!("/v1/orders/{}/events", encode(&a.id)))? else {
        return Ok(());
    };
    let mut t = Table::new(&["timestamp", "kind", "actor", "key_id", "from", "to", "result", "transfers", "reason"]);
    for e in list.data {
        t.row(vec![
            e.timestamp,
            e.kind,
            e.actor,
            e.key_id.map(|k| k.to_string()).unwrap_or_default(),
            e.from.unwrap_or_else(|| "-".into()),
            e.to,
            e.result,
            e.transfers.len().to_string(),
            e.reason,
        ]);
    }
    t.print();
    Ok(())
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

fn print_record(o: OrderBody) {
    output::record(&[
        ("id", o.id),
        ("customer_id", o.customer_id),
        ("state", o.state),
        ("source", format!("{} {}", o.source_amount, or_dash(o.source_asset))),
        ("fee", o.fee_amount),
        ("target", format!("{} {}", or_dash(o.target_amount), or_dash(o.target_asset))),
        ("rate_ppb", or_dash(o.rate_ppb)),
        ("quote_id", or_dash(o.quote_id)),
        ("flags", output::flags(&o.flags)),
        ("sender", format!("{} ({})", o.sender.name, o.sender.country)),
        ("recipient", format!("{} ({})", o.recipient.name, o.recipient.bank_account)),
        ("reference", or_dash(o.reference)),
        ("created_at", o.created_at),
        ("updated_at", o.updated_at),
        ("deadline", or_dash(o.deadline)),
        ("payout_at", or_dash(o.payout_at)),
        ("retry_at", or_dash(o.retry_at)),
        ("attempts", o.attempts.to_string()),
    ]);
}

fn print_table(rows: &[OrderBody]) {
    let mut t = Table::new(&["id", "state", "source_amount", "source", "fee", "target_amount", "target", "updated_at"]);
    for o in rows {
        t.row(vec![
            o.id.clone(),
            o.state.clone(),
            o.source_amount.clone(),
            o.source_asset.clone().unwrap_or_default(),
            o.fee_amount.clone(),
            o.target_amount.clone().unwrap_or_default(),
            o.target_asset.clone().unwrap_or_default(),
            o.updated_at.clone(),
        ]);
    }
    t.print();
}

//! `bursar webhooks list|create|delete|dead-letters|replay` (admin).

use super::output::{self, Table};
use super::{CliError, Global, WriteOpts, to_body};
use bursar_http::dto::Page;
use bursar_http::routes::webhooks::{
    DeadLetterBody, ReplayBody, ReplayRequest, WebhookBody, WebhookList, WebhookRequest,
};

#[derive(clap::Args)]
pub struct CreateArgs {
    /// Where events are POSTed (http or https). Positional: `--url` is the
    /// server's base URL.
    #[arg(value_name = "URL")]
    pub destination: String,
    /// Event types or families to deliver, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// The signing secret (24 to 128 characters; default: generated and
    /// printed once).
    #[arg(long, env = "BURSAR_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[command(flatten)]
    pub write: WriteOpts,
}

fn record(w: &WebhookBody) -> Vec<(&'static str, String)> {
    vec![
        ("id", w.id.to_string()),
        ("url", w.url.clone()),
        ("types", if w.types.is_empty() { "all".into() } else { w.types.join(",") }),
        ("created_at", w.created_at.clone()),
        ("deleted_at", w.deleted_at.clone().unwrap_or_else(|| "-".into())),
        ("delivered_through", w.delivered_through.to_string()),
        ("dead_letters", w.dead_letters.to_string()),
        ("pending_redeliveries", w.pending_redeliveries.to_string()),
    ]
}

pub fn create(a: CreateArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let req = WebhookRequest { url: a.destination.clone(), types: a.types.clone(), secret: a.secret.clone() };
    let reply = api.post("/v1/webhooks", &to_body(&req)?, &key)?;
    let Some(w) = reply.parsed::<WebhookBody>(a.write.global.conn.json)? else { return Ok(()) };
    let mut pairs = record(&w);
    if let Some(s) = &w.secret {
        pairs.push(("secret", s.clone()));
    }
    output::record(&pairs);
    if w.secret.is_some() {
        output::err_line("note: the signing secret above is shown only this once; give it to the receiver now");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub global: Global,
}

pub fn list(a: ListArgs) -> Result<(), CliError> {
    let Some(list) = a.global.get::<WebhookList>("/v1/webhooks")? else { return Ok(()) };
    let mut t = Table::new(&["id", "url", "types", "delivered_through", "dead_letters", "deleted_at"]);
    for w in list.data {
        t.row(vec![
            w.id.to_string(),
            w.url,
            if w.types.is_empty() { "all".into() } else { w.types.join(",") },
            w.delivered_through.to_string(),
            w.dead_letters.to_string(),
            w.deleted_at.unwrap_or_else(|| "-".into()),
        ]);
    }
    t.print();
    Ok(())
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The webhook's id.
    #[arg(long)]
    pub id: u64,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn delete(a: DeleteArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let reply = api.delete(&format!("/v1/webhooks/{}", a.id), &key)?;
    if a.write.global.conn.json {
        return output::json_body(&reply.body);
    }
    output::record(&record(&reply.json()?));
    Ok(())
}

#[derive(clap::Args)]
pub struct DeadLettersArgs {
    /// The webhook's id.
    #[arg(long)]
    pub id: u64,
    /// Dead letters after this seq.
    #[arg(long)]
    pub after: Option<u64>,
    /// 1 to 1000.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[command(flatten)]
    pub global: Global,
}

pub fn dead_letters(a: DeadLettersArgs) -> Result<(), CliError> {
    let api = a.global.api()?;
    let mut query = vec![("limit", a.limit.to_string())];
    if let Some(after) = a.after {
        query.push(("cursor", after.to_string()));
    }
    let reply = api.get(&format!("/v1/webhooks/{}/dead-letters", a.id), &query)?;
    let Some(page) = reply.parsed::<Page<DeadLetterBody>>(a.global.conn.json)? else { return Ok(()) };
    let mut t = Table::new(&["seq", "dead_at", "attempts", "last_status", "last_error"]);
    for d in page.data {
        t.row(vec![
            d.seq.to_string(),
            d.dead_at,
            d.attempts.to_string(),
            d.last_status.map_or("-".into(), |s| s.to_string()),
            d.last_error,
        ]);
    }
    t.print();
    if let Some(next) = page.next_cursor {
        output::err_line(&format!("more: --after {next}"));
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The webhook's id.
    #[arg(long)]
    pub id: u64,
    /// Redeliver only these dead letters (repeatable or comma-separated;
    /// default: all of them).
    #[arg(long = "seq", value_delimiter = ',')]
    pub seqs: Vec<u64>,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn replay(a: ReplayArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let req = ReplayRequest { seqs: (!a.seqs.is_empty()).then(|| a.seqs.clone()) };
    let reply = api.post(&format!("/v1/webhooks/{}/replay", a.id), &to_body(&req)?, &key)?;
    let Some(r) = reply.parsed::<ReplayBody>(a.write.global.conn.json)? else { return Ok(()) };
    let missing = r.not_found.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    output::record(&[
        ("queued", r.queued.to_string()),
        ("not_found", if missing.is_empty() { "-".into() } else { missing }),
    ]);
    Ok(())
}

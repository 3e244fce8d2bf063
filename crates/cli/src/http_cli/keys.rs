//! `bursar keys create|list|revoke|rotate` (admin).

use super::output::{self, Table};
use super::{CliError, Global, WriteOpts, to_body};
use bursar_http::dto::{KeyBody, KeyList, KeyRequest, RateLimitBody, RotateRequest};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Admin,
    Operator,
    Auditor,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Restrict the key to these ledgers, comma-separated (operator and auditor).
    #[arg(long, value_delimiter = ',')]
    pub ledgers: Vec<u32>,
    /// A label for people.
    #[arg(long)]
    pub name: Option<String>,
    /// When the key stops working: nanoseconds since the Unix epoch.
    #[arg(long, value_name = "NANOS")]
    pub expires_at: Option<u64>,
    /// The key's own request rate, RPS[:BURST] (default: the server's).
    #[arg(long, value_name = "RPS[:BURST]", value_parser = bursar_server::rate_limit::RateLimit::parse)]
    pub rate_limit: Option<bursar_server::rate_limit::RateLimit>,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn create(a: CreateArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let role = format!("{:?}", a.role).to_lowercase();
    let req = KeyRequest {
        role,
        ledgers: a.ledgers.clone(),
        name: a.name.clone(),
        expires_at: a.expires_at.map(|t| t.to_string()),
        rate_limit: a.rate_limit.map(|r| RateLimitBody { per_second: r.per_second, burst: r.burst }),
    };
    let reply = api.post("/v1/keys", &to_body(&req)?, &key)?;
    print_new_key(&a.write.global, &reply)
}

fn print_new_key(global: &Global, reply: &super::client::Reply) -> Result<(), CliError> {
    if global.conn.json {
        output::json_body(&reply.body)?;
    } else {
        let k: KeyBody = reply.json()?;
        let mut pairs = vec![
            ("id", k.id.to_string()),
            ("role", k.role.clone()),
            ("ledgers", ledgers(&k.ledgers)),
            ("name", k.name.clone()),
            ("created_at", k.created_at.clone()),
        ];
        if let Some(t) = &k.expires_at {
            pairs.push(("expires_at", t.clone()));
        }
        if let Some(s) = &k.secret {
            pairs.push(("secret", s.clone()));
        }
        output::record(&pairs);
    }
    if reply.replayed {
        output::err_line(
            "note: this Idempotency-Key was used before: the key above was created then, and its secret was \
             shown only in that first response",
        );
    } else {
        output::err_line(
            "note: the secret above is shown only this once and is not stored by the server; save it now \
             (use it as --key or BURSAR_KEY)",
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub global: Global,
}

pub fn list(a: ListArgs) -> Result<(), CliError> {
    let Some(keys) = a.global.get::<KeyList>("/v1/keys")? else { return Ok(()) };
    let mut t = Table::new(&["id", "role", "ledgers", "name", "active", "created_at", "revoked_at"]);
    for k in keys.data {
        t.row(vec![
            k.id.to_string(),
            k.role,
            ledgers(&k.ledgers),
            if k.name.is_empty() { "-".into() } else { k.name },
            if k.active { "yes".into() } else { "no".into() },
            k.created_at,
            k.revoked_at.unwrap_or_else(|| "-".into()),
        ]);
    }
    t.print();
    Ok(())
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    /// The key's id (from `bursar keys list`).
    pub id: u64,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn revoke(a: RevokeArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let reply = api.delete(&format!("/v1/keys/{}", a.id), &key)?;
    let Some(k) = reply.parsed::<KeyBody>(a.write.global.conn.json)? else { return Ok(()) };
    output::record(&[
        ("id", k.id.to_string()),
        ("role", k.role),
        ("name", k.name),
        ("active", if k.active { "yes".into() } else { "no".into() }),
        ("revoked_at", k.revoked_at.unwrap_or_else(|| "-".into())),
    ]);
    Ok(())
}

#[derive(clap::Args)]
pub struct RotateArgs {
    /// The key's id (from `bursar keys list`).
    pub id: u64,
    /// How long the old secret keeps working, in seconds (server default: 3600).
    #[arg(long)]
    pub grace_seconds: Option<u64>,
    /// When the new key expires: nanoseconds since the Unix epoch.
    #[arg(long, value_name = "NANOS")]
    pub expires_at: Option<u64>,
    #[command(flatten)]
    pub write: WriteOpts,
}

pub fn rotate(a: RotateArgs) -> Result<(), CliError> {
    let (api, key) = a.write.open()?;
    let req = RotateRequest { grace_seconds: a.grace_seconds, expires_at: a.expires_at.map(|t| t.to_string()) };
    let reply = api.post(&format!("/v1/keys/{}/rotate", a.id), &to_body(&req)?, &key)?;
    print_new_key(&a.write.global, &reply)
}

fn ledgers(l: &[u32]) -> String {
    if l.is_empty() { "all".into() } else { l.iter().map(u32::to_string).collect::<Vec<_>>().join(",") }
}

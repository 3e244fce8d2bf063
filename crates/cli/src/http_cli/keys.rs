//! `bursar keys create|list|revoke` (admin).

use super::output::{self, Table};
use super::{CliError, Global, idempotency_key, to_body};
use bursar_http::dto::{KeyBody, KeyList, KeyRequest};

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
    /// Idempotency-Key to send (default: a fresh UUID).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub global: Global,
}

pub fn create(a: CreateArgs) -> Result<(), CliError> {
    let api = a.global.api()?;
    let key = idempotency_key(&a.idempotency_key)?;
    let role = format!("{:?}", a.role).to_lowercase();
    let req = KeyRequest { role, ledgers: a.ledgers.clone(), name: a.name.clone() };
    let reply = api.post("/v1/keys", &to_body(&req)?, &key)?;
    if a.global.conn.json {
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
    let api = a.global.api()?;
    let reply = api.get("/v1/keys", &[])?;
    if a.global.conn.json {
        return output::json_body(&reply.body);
    }
    let keys: KeyList = reply.json()?;
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
    /// Idempotency-Key to send (default: a fresh UUID).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub global: Global,
}

pub fn revoke(a: RevokeArgs) -> Result<(), CliError> {
    let api = a.global.api()?;
    let key = idempotency_key(&a.idempotency_key)?;
    let reply = api.delete(&format!("/v1/keys/{}", a.id), &key)?;
    if a.global.conn.json {
        return output::json_body(&reply.body);
    }
    let k: KeyBody = reply.json()?;
    output::record(&[
        ("id", k.id.to_string()),
        ("role", k.role),
        ("name", k.name),
        ("active", if k.active { "yes".into() } else { "no".into() }),
        ("revoked_at", k.revoked_at.unwrap_or_else(|| "-".into())),
    ]);
    Ok(())
}

fn ledgers(l: &[u32]) -> String {
    if l.is_empty() { "all".into() } else { l.iter().map(u32::to_string).collect::<Vec<_>>().join(",") }
}

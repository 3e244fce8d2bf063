//! API keys (admin only): create (the secret is shown once), list, revoke,
//! rotate (a successor with a new secret; the old one expires after a grace
//! period).

use super::mark_replayed;
use super::paths;
use crate::app::App;
use crate::dto::{
    IdempotencyKeyHeader, KeyBody, KeyList, KeyRequest, OptionalIdempotencyKeyHeader, RotateRequest, parse_expiry,
};
use crate::engine_client::WriteContext;
use crate::extract::{IdempotencyKey, JsonBody, MaybeIdempotencyKey, OptionalJsonBody, PathId, Principal, Writer};
use crate::problem::{self, ApiResult, Problem};
use crate::results::{Single, single};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bursar_core::Operation;
use bursar_core::limits::{KEY_LEDGERS_MAX, KEY_NAME_MAX};
use bursar_core::service::keys::{KeyEvent, RevokeEvent, RevokeKeyResult, Role, RotateEvent};

/// The `n`th candidate key id of an idempotency scope: nonzero, below 2^53.
/// Each execution under a scope takes the first candidate not yet used, so
/// the scope can be reused once its idempotency record has expired, and a
/// replay finds the key of the last execution as the last candidate used.
fn key_id_for(scope: &[u8; 16], n: u32) -> u64 {
    let bytes: [u8; 8] = if n == 0 {
        scope[..8].try_into().expect("8 bytes")
    } else {
        let mut h = blake3::Hasher::new();
        h.update(b"bursar-key-id");
        h.update(scope);
        h.update(&n.to_le_bytes());
        h.finalize().as_bytes()[..8].try_into().expect("8 bytes")
    };
    (u64::from_le_bytes(bytes) >> 11).max(1)
}

/// How many candidate ids of the scope are taken (keys are never removed).
fn candidates_used(app: &App, scope: &[u8; 16]) -> u32 {
    let keys = app.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
    (0u32..).take_while(|n| keys.get(key_id_for(scope, *n)).is_some()).count() as u32
}

fn current(app: &App, id: u64) -> Option<KeyBody> {
    let keys = app.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
    keys.get(id).map(KeyBody::from)
}

/// Create an API key (admin). The secret is in this response only.
#[utoipa::path(post, path = paths::CREATE_KEY.path, operation_id = "create_key", tag = "keys", request_body = KeyRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created; the secret is shown only here (not on a replay)", body = KeyBody),
        problem::CreateProblems,
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    Writer { principal, ctx, key }: Writer,
    JsonBody(req): JsonBody<KeyRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    let role = Role::from_name(&req.role)
        .ok_or_else(|| Problem::invalid_field("role", "role must be admin, operator, auditor or compliance"))?;
    let name = req.name.clone().unwrap_or_default();
    if name.len() > KEY_NAME_MAX || name.chars().any(char::is_control) {
        return Err(Problem::invalid_field(
            "name",
            format!("name must be at most {KEY_NAME_MAX} bytes of printable text"),
        ));
    }
    if req.ledgers.len() > KEY_LEDGERS_MAX {
        return Err(Problem::invalid_field("ledgers", format!("at most {KEY_LEDGERS_MAX} ledgers")));
    }
    let expires_at = parse_expiry("expires_at", req.expires_at.as_deref(), app.config.clock.now_nanos())?;
    let rate_limit = req.rate_limit.map(|r| r.to_key()).transpose()?.unwrap_or_default();
    let token = bursar_server::keys::generate_token();
    let new = NewKey::for_request(&app, &principal, &key);
    let event = KeyEvent::new(new.id, bursar_server::keys::token_hash(&token), role, &req.ledgers, &name)
        .expect("invariant: bounds checked above")
        .expiring(expires_at)
        .limited(rate_limit);
    let w = WriteContext::new(&principal, &ctx, paths::CREATE_KEY, Some(&key));
    let canonical = serde_json::to_vec(&req).expect("a key request serializes");
    let written = app.write(&w, Operation::CreateKeys, bytemuck::bytes_of(&event).to_vec(), Some(&canonical)).await?;
    new.respond(&app, Operation::CreateKeys, written, token)
}

/// The id of a key a write creates, and the response naming it.
struct NewKey {
    scope: [u8; 16],
    id: u64,
}

impl NewKey {
    /// The id follows from the idempotency scope, so a replay can name the
    /// key the original request created: the last candidate in use.
    fn for_request(app: &App, principal: &Principal, key: &IdempotencyKey) -> NewKey {
        let scope = crate::engine_client::scope(principal.key.id, &key.0);
        NewKey { scope, id: key_id_for(&scope, candidates_used(app, &scope)) }
    }

    /// 201 with the new key (and its secret unless replayed), or the
    /// result's problem.
    fn respond(
        &self,
        app: &App,
        op: Operation,
        written: crate::engine_client::Written,
        token: String,
    ) -> ApiResult<Response> {
        let response = match single(op, &written.results) {
            Single::Created | Single::Exists => {
                // A replay answers with the key the original request
                // created, without the secret: it was shown once and never
                // stored. The key table is current as of this write's entry.
                let created = if written.replayed {
                    candidates_used(app, &self.scope).checked_sub(1).map(|n| key_id_for(&self.scope, n))
                } else {
                    Some(self.id)
                };
                let Some(mut body) = created.and_then(|id| current(app, id)) else {
                    return Err(Problem::internal("the created key is missing from the key table"));
                };
                if !written.replayed {
                    body.secret = Some(token);
                }
                (StatusCode::CREATED, axum::Json(body)).into_response()
            }
            Single::Failed(problem) => problem.into_response(),
        };
        Ok(mark_replayed(response, written.replayed))
    }
}

/// Longest grace period of a rotation: 30 days.
pub const ROTATE_GRACE_MAX: u64 = 30 * 24 * 3600;
/// Grace period of a rotation that names none: one hour.
pub const ROTATE_GRACE_DEFAULT: u64 = 3600;

/// Rotate an API key (admin): a new key with the same role, ledgers, name
/// and rate limit, and a new secret (shown only here). The old key keeps
/// working for `grace_seconds` (log time), never longer than it would have.
#[utoipa::path(post, path = paths::ROTATE_KEY.path, operation_id = "rotate_key", tag = "keys",
    request_body = Option<RotateRequest>,
    params(("id" = u64, Path, description = "The key to replace", example = 1), IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The new key; the secret is shown only here (not on a replay)", body = KeyBody),
        problem::CommandProblems,
    ),
    security(("bearer" = [])))]
pub async fn rotate(
    State(app): State<App>,
    Writer { principal, ctx, key }: Writer,
    PathId(id): PathId,
    OptionalJsonBody(req): OptionalJsonBody<RotateRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    let id: u64 = id.parse().map_err(|_| Problem::invalid_field("id", "a key id is a decimal number"))?;
    let grace_seconds = req.grace_seconds.unwrap_or(ROTATE_GRACE_DEFAULT);
    if grace_seconds > ROTATE_GRACE_MAX {
        return Err(Problem::invalid_field("grace_seconds", format!("grace_seconds is at most {ROTATE_GRACE_MAX}")));
    }
    let expires_at = parse_expiry("expires_at", req.expires_at.as_deref(), app.config.clock.now_nanos())?;
    let token = bursar_server::keys::generate_token();
    let new = NewKey::for_request(&app, &principal, &key);
    let event = RotateEvent {
        id,
        new_id: new.id,
        hash: bursar_server::keys::token_hash(&token),
        grace_seconds,
        expires_at,
        reserved: [0; 16],
    };
    let w = WriteContext::new(&principal, &ctx, paths::ROTATE_KEY, Some(&key));
    let canonical = serde_json::to_vec(&(id, &req)).expect("a rotate request serializes");
    let written = app.write(&w, Operation::RotateKeys, bytemuck::bytes_of(&event).to_vec(), Some(&canonical)).await?;
    new.respond(&app, Operation::RotateKeys, written, token)
}

/// List API keys (admin); secrets are never shown.
#[utoipa::path(get, path = paths::LIST_KEYS.path, operation_id = "list_keys", tag = "keys",
    responses(
        (status = 200, description = "Every key", body = KeyList),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden),
        (status = 503, response = problem::Unavailable),
    ),
    security(("bearer" = [])))]
pub async fn list(State(app): State<App>, principal: Principal) -> ApiResult<axum::Json<KeyList>> {
    principal.require(&[Role::Admin])?;
    let keys = app.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(axum::Json(KeyList { data: keys.iter().map(KeyBody::from).collect() }))
}

/// Revoke an API key (admin). Revoking a revoked key changes nothing.
#[utoipa::path(delete, path = paths::REVOKE_KEY.path, operation_id = "revoke_key", tag = "keys",
    params(("id" = u64, Path, description = "The key's id", example = 1), OptionalIdempotencyKeyHeader),
    responses(
        (status = 200, description = "The revoked key", body = KeyBody),
        problem::LookupProblems,
        (status = 409, response = problem::Conflict),
        (status = 422, response = problem::Unprocessable),
    ),
    security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<App>,
    Writer { principal, ctx, key: MaybeIdempotencyKey(key) }: Writer<MaybeIdempotencyKey>,
    PathId(id): PathId,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    let id: u64 = id.parse().map_err(|_| Problem::invalid_field("id", "a key id is a decimal number"))?;
    let event = RevokeEvent { id, reserved: 0 };
    let route = paths::REVOKE_KEY;
    let w = WriteContext::new(&principal, &ctx, route, key.as_ref());
    let written = app.write(&w, Operation::RevokeKeys, bytemuck::bytes_of(&event).to_vec(), None).await?;
    let already = written.results.first().is_some_and(|r| r.code == RevokeKeyResult::AlreadyRevoked.code());
    let response = match single(Operation::RevokeKeys, &written.results) {
        _ if already || written.results.is_empty() => match current(&app, id) {
            Some(body) => (StatusCode::OK, axum::Json(body)).into_response(),
            None => Problem::not_found(format!("no key has id {id}")).into_response(),
        },
        Single::Failed(problem) => problem.into_response(),
        Single::Created | Single::Exists => unreachable!("handled by the first arm"),
    };
    Ok(mark_replayed(response, written.replayed))
}

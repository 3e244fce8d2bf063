//! API keys (admin only): create (the secret is shown once), list, revoke.

use super::mark_replayed;
use crate::app::App;
use crate::dto::{IdempotencyKeyHeader, KeyBody, KeyList, KeyRequest, OptionalIdempotencyKeyHeader};
use crate::engine_client::WriteContext;
use crate::extract::{IdempotencyKey, JsonBody, MaybeIdempotencyKey, PathId, Principal, RequestContext};
use crate::problem::{self, ApiResult, Problem};
use crate::results::{Single, single};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bursar_core::Operation;
use bursar_core::service::keys::{KEY_LEDGERS_MAX, KEY_NAME_MAX, KeyEvent, RevokeEvent, RevokeKeyResult, Role};

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
#[utoipa::path(post, path = "/v1/keys", operation_id = "create_key", tag = "keys", request_body = KeyRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created; the secret is shown only here (not on a replay)", body = KeyBody),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden),
        (status = 409, response = problem::Conflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
        (status = 500, response = problem::InternalError),
        (status = 503, response = problem::Unavailable),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    principal: Principal,
    ctx: RequestContext,
    key: IdempotencyKey,
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
    let token = bursar_server::keys::generate_token();
    // The id follows from the idempotency scope, so a replay can name the
    // key the original request created: the last candidate in use.
    let scope = crate::engine_client::scope(principal.key.id, &key.0);
    let id = key_id_for(&scope, candidates_used(&app, &scope));
    let event = KeyEvent::new(id, bursar_server::keys::token_hash(&token), role, &req.ledgers, &name)
        .expect("invariant: bounds checked above");
    let w = WriteContext::new(&principal, &ctx, "POST /v1/keys", Some(&key));
    let canonical = serde_json::to_vec(&req).expect("a key request serializes");
    let written = app.write(&w, Operation::CreateKeys, bytemuck::bytes_of(&event).to_vec(), Some(&canonical)).await?;
    let response = match single(Operation::CreateKeys, &written.results) {
        Single::Created | Single::Exists => {
            // A replay answers with the key the original request created,
            // without the secret: it was shown once and never stored.
            // The key table is current as of this write's entry.
            let created = if written.replayed {
                candidates_used(&app, &scope).checked_sub(1).map(|n| key_id_for(&scope, n))
            } else {
                Some(id)
            };
            let Some(mut body) = created.and_then(|id| current(&app, id)) else {
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

/// List API keys (admin); secrets are never shown.
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "keys",
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
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "keys",
    params(("id" = u64, Path, description = "The key's id", example = 1), OptionalIdempotencyKeyHeader),
    responses(
        (status = 200, description = "The revoked key", body = KeyBody),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden),
        (status = 404, response = problem::NotFound),
        (status = 409, response = problem::Conflict),
        (status = 422, response = problem::Unprocessable),
        (status = 500, response = problem::InternalError),
        (status = 503, response = problem::Unavailable),
    ),
    security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<App>,
    principal: Principal,
    ctx: RequestContext,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    PathId(id): PathId,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    let id: u64 = id.parse().map_err(|_| Problem::invalid_field("id", "a key id is a decimal number"))?;
    let event = RevokeEvent { id, reserved: 0 };
    let route = "DELETE /v1/keys/{id}";
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

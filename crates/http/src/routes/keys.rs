//! API keys (admin only): create (the secret is shown once), list, revoke.

use super::mark_replayed;
use crate::app::App;
use crate::dto::{KeyBody, KeyList, KeyRequest};
use crate::engine_client::WriteContext;
use crate::extract::{IdempotencyKey, JsonBody, MaybeIdempotencyKey, Principal, RequestContext};
use crate::problem::{ApiResult, Problem, ProblemBody};
use crate::results::{Single, single};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bursar_core::Operation;
use bursar_core::service::keys::{KEY_LEDGERS_MAX, KEY_NAME_MAX, KeyEvent, RevokeEvent, RevokeKeyResult, Role};

/// A nonzero key id below 2^53 derived from the idempotency scope.
fn key_id_for(scope: &[u8; 16]) -> u64 {
    let id = u64::from_le_bytes(scope[..8].try_into().expect("8 bytes")) >> 11;
    id.max(1)
}

fn current(app: &App, id: u64) -> Option<KeyBody> {
    let keys = app.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
    keys.get(id).map(KeyBody::from)
}

/// Create an API key (admin). The secret is in this response only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = KeyRequest,
    params(("Idempotency-Key" = String, Header, description = "1-255 printable ASCII characters")),
    responses((status = 201, body = KeyBody),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
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
        .ok_or_else(|| Problem::invalid_field("role", "role must be admin, operator or auditor"))?;
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
    // key the original request created.
    let id = key_id_for(&crate::engine_client::scope(principal.key.id, &key.0));
    let event = KeyEvent::new(id, bursar_server::keys::token_hash(&token), role, &req.ledgers, &name)
        .expect("invariant: bounds checked above");
    let w = WriteContext {
        principal: &principal,
        request_id: &ctx.request_id,
        route: "POST /v1/keys",
        idempotency_key: Some(&key),
    };
    let written = app.write(&w, Operation::CreateKeys, bytemuck::bytes_of(&event).to_vec(), &req).await?;
    let response = match single(Operation::CreateKeys, &written.results) {
        Single::Created | Single::Exists => {
            // A replay answers with the key the original request created,
            // without the secret: it was shown once and never stored.
            let Some(mut body) = current(&app, id) else {
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
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = KeyList),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list(State(app): State<App>, principal: Principal) -> ApiResult<axum::Json<KeyList>> {
    principal.require(&[Role::Admin])?;
    let keys = app.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(axum::Json(KeyList { data: keys.iter().map(KeyBody::from).collect() }))
}

/// Revoke an API key (admin). Revoking a revoked key changes nothing.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = u64, Path, description = "the key's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "optional")),
    responses((status = 200, body = KeyBody),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<App>,
    principal: Principal,
    ctx: RequestContext,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    let id: u64 = id.parse().map_err(|_| Problem::invalid_field("id", "a key id is a decimal number"))?;
    let event = RevokeEvent { id, reserved: 0 };
    let route = "DELETE /v1/keys/{id}";
    let w = WriteContext { principal: &principal, request_id: &ctx.request_id, route, idempotency_key: key.as_ref() };
    let written = app.write(&w, Operation::RevokeKeys, bytemuck::bytes_of(&event).to_vec(), &id).await?;
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

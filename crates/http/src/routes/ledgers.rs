//! Ledgers: created by admins, listed by every role (scoped keys see their
//! own ledgers only).

use super::paths;
use super::{page_limit, write_one};
use crate::app::App;
use crate::dto::{IdempotencyKeyHeader, LedgerBody, LedgerRequest, Page};
use crate::engine_client::WriteContext;
use crate::extract::{JsonBody, Principal, QueryParams, Writer};
use crate::problem::{self, ApiResult};
use axum::extract::State;
use axum::response::Response;
use bursar_core::service::keys::Role;
use bursar_core::{Ledger, LedgerFilter, Operation};
use serde::Deserialize;
use utoipa::IntoParams;

/// Create a ledger (admin).
#[utoipa::path(post, path = paths::CREATE_LEDGER.path, operation_id = "create_ledger", tag = "ledgers", request_body = LedgerRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created", body = LedgerBody),
        (status = 200, description = "The ledger exists with the same fields", body = LedgerBody),
        problem::CreateProblems,
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    Writer { principal, ctx, key }: Writer,
    JsonBody(req): JsonBody<LedgerRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    let ledger = req.to_record()?;
    let w = WriteContext::new(&principal, &ctx, paths::CREATE_LEDGER, Some(&key));
    write_one(&app, &w, Operation::CreateLedgers, &ledger, |l| LedgerBody::from(l)).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// 1 to 1000, default 100.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page (the last ledger id seen).
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,10}$")]
    pub cursor: Option<String>,
}

/// List ledgers by id.
#[utoipa::path(get, path = paths::LIST_LEDGERS.path, operation_id = "list_ledgers", tag = "ledgers",
    params(LedgerQuery),
    responses(
        (status = 200, description = "A page of ledgers", body = Page<LedgerBody>),
        problem::ListProblems,
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    principal: Principal,
    QueryParams(q): QueryParams<LedgerQuery>,
) -> ApiResult<axum::Json<Page<LedgerBody>>> {
    let limit = page_limit(q.limit)?;
    let after_id = super::cursor::<u32>(q.cursor.as_deref())?;
    let filter = LedgerFilter { after_id, limit };
    let response = app.read(Operation::ListLedgers, bytemuck::bytes_of(&filter).to_vec()).await?;
    let ledgers: Vec<Ledger> = super::records::<Ledger>(&response.body);
    let next_cursor = (ledgers.len() == limit as usize).then(|| ledgers.last().map(|l| l.id.to_string())).flatten();
    let data = ledgers.iter().filter(|l| principal.key.allows_ledger(l.id)).map(LedgerBody::from).collect();
    Ok(axum::Json(Page { data, next_cursor }))
}

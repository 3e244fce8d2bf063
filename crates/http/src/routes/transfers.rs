//! Transfers: created by operators (singly or in batches with every flag:
//! linked, pending, post, void, balancing, closing), read by every role.

use super::paths;
use super::{batch_records, write_batch, write_one};
use crate::app::App;
use crate::dto::{
    BatchResult, Id, IdempotencyKeyHeader, TransferBatchRequest, TransferBody, TransferRequest, parse_id,
};
use crate::engine_client::WriteContext;
use crate::extract::{JsonBody, PathId, Principal, Writer};
use crate::problem::{self, ApiResult, Problem};
use axum::extract::State;
use axum::response::Response;
use bursar_core::service::keys::Role;
use bursar_core::{Operation, Transfer};

/// A scoped key must name an allowed ledger on every transfer.
fn check_scope(principal: &Principal, t: &Transfer) -> Result<(), Problem> {
    if principal.is_scoped() && t.ledger == 0 {
        return Err(Problem::forbidden("a key restricted to ledgers must name the ledger of every transfer"));
    }
    if t.ledger != 0 { principal.require_ledger(t.ledger) } else { Ok(()) }
}

/// Create a transfer (operator).
#[utoipa::path(post, path = paths::CREATE_TRANSFER.path, operation_id = "create_transfer", tag = "transfers", request_body = TransferRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created", body = TransferBody),
        (status = 200, description = "The transfer exists with the same fields", body = TransferBody),
        problem::CreateProblems,
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    Writer { principal, ctx, key }: Writer,
    JsonBody(req): JsonBody<TransferRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    let t = req.to_record()?;
    check_scope(&principal, &t)?;
    let w = WriteContext::new(&principal, &ctx, paths::CREATE_TRANSFER, Some(&key));
    write_one(&app, &w, Operation::CreateTransfers, &t, |t| TransferBody::from(t)).await
}

/// Create up to 8190 transfers in one atomic log entry (operator).
#[utoipa::path(post, path = paths::CREATE_TRANSFERS.path, operation_id = "create_transfers", tag = "transfers", request_body = TransferBatchRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 200, description = "Applied; the events that were not ok", body = BatchResult),
        problem::CreateProblems,
    ),
    security(("bearer" = [])))]
pub async fn create_batch(
    State(app): State<App>,
    Writer { principal, ctx, key }: Writer,
    JsonBody(req): JsonBody<TransferBatchRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    let records =
        batch_records("transfers", &req.transfers, TransferRequest::to_record, |t| check_scope(&principal, t))?;
    let w = WriteContext::new(&principal, &ctx, paths::CREATE_TRANSFERS, Some(&key));
    write_batch(&app, &w, Operation::CreateTransfers, &records).await
}

/// Look a transfer up.
#[utoipa::path(get, path = paths::GET_TRANSFER.path, operation_id = "get_transfer", tag = "transfers",
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1")),
    responses(
        (status = 200, description = "The transfer", body = TransferBody),
        problem::LookupProblems,
    ),
    security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<App>,
    principal: Principal,
    PathId(id): PathId,
) -> ApiResult<axum::Json<TransferBody>> {
    let id = parse_id("id", &id)?;
    let response = app.read(Operation::LookupTransfers, id.to_le_bytes().to_vec()).await?;
    let t: Transfer = super::records::<Transfer>(&response.body)
        .into_iter()
        .next()
        .ok_or_else(|| Problem::not_found(format!("no transfer has id {id}")))?;
    principal.require_ledger(t.ledger)?;
    Ok(axum::Json(TransferBody::from(&t)))
}

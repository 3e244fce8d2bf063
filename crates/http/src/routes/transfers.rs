//! Transfers: created by operators (singly or in batches with every flag:
//! linked, pending, post, void, balancing, closing), read by every role.

use super::{batch_response, check_batch_size, record, single_response};
use crate::app::App;
use crate::dto::{BatchResult, TransferBatchRequest, TransferBody, TransferRequest, parse_id};
use crate::engine_client::WriteContext;
use crate::extract::{IdempotencyKey, JsonBody, Principal, RequestContext};
use crate::problem::{ApiResult, Problem, ProblemBody};
use axum::extract::{Path, State};
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
#[utoipa::path(post, path = "/v1/transfers", tag = "transfers", request_body = TransferRequest,
    params(("Idempotency-Key" = String, Header, description = "1-255 printable ASCII characters")),
    responses((status = 201, body = TransferBody), (status = 200, description = "exists", body = TransferBody),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    principal: Principal,
    ctx: RequestContext,
    key: IdempotencyKey,
    JsonBody(req): JsonBody<TransferRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    let t = req.to_record()?;
    check_scope(&principal, &t)?;
    let w = WriteContext {
        principal: &principal,
        request_id: &ctx.request_id,
        route: "POST /v1/transfers",
        idempotency_key: Some(&key),
    };
    let written = app.write(&w, Operation::CreateTransfers, bytemuck::bytes_of(&t).to_vec(), &req).await?;
    Ok(single_response(Operation::CreateTransfers, &written, |r| TransferBody::from(&record::<Transfer>(r))))
}

/// Create up to 8190 transfers in one atomic log entry (operator).
#[utoipa::path(post, path = "/v1/transfers/batch", tag = "transfers", request_body = TransferBatchRequest,
    params(("Idempotency-Key" = String, Header, description = "1-255 printable ASCII characters")),
    responses((status = 200, body = BatchResult),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_batch(
    State(app): State<App>,
    principal: Principal,
    ctx: RequestContext,
    key: IdempotencyKey,
    JsonBody(req): JsonBody<TransferBatchRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    check_batch_size(req.transfers.len(), "transfers")?;
    let mut records = Vec::with_capacity(req.transfers.len());
    for (i, t) in req.transfers.iter().enumerate() {
        let r = t.to_record().map_err(|p| prefix_field(p, "transfers", i))?;
        check_scope(&principal, &r)?;
        records.push(r);
    }
    let w = WriteContext {
        principal: &principal,
        request_id: &ctx.request_id,
        route: "POST /v1/transfers/batch",
        idempotency_key: Some(&key),
    };
    let body = bytemuck::cast_slice(&records).to_vec();
    let written = app.write(&w, Operation::CreateTransfers, body, &req).await?;
    Ok(batch_response(Operation::CreateTransfers, records.len(), &written))
}

/// Names the item of a batch a field problem is in: `transfers[3].amount`.
pub(crate) fn prefix_field(mut p: Problem, list: &str, index: usize) -> Problem {
    p.field = Some(match p.field {
        Some(f) => format!("{list}[{index}].{f}"),
        None => format!("{list}[{index}]"),
    });
    p
}

/// Look a transfer up.
#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "decimal or UUID")),
    responses((status = 200, body = TransferBody),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<App>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TransferBody>> {
    let id = parse_id("id", &id)?;
    let response = app.read(Operation::LookupTransfers, id.to_le_bytes().to_vec()).await?;
    let t: Transfer = response
        .body
        .chunks_exact(Transfer::SIZE)
        .map(bytemuck::pod_read_unaligned)
        .next()
        .ok_or_else(|| Problem::not_found(format!("no transfer has id {id}")))?;
    principal.require_ledger(t.ledger)?;
    Ok(axum::Json(TransferBody::from(&t)))
}

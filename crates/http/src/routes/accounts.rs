//! Accounts: created by operators, read by every role; an account's
//! transfers and balance history, paginated by timestamp.

use super::transfers::prefix_field;
use super::{batch_response, check_batch_size, page_limit, record, single_response};
use crate::app::App;
use crate::dto::{
    AccountBatchRequest, AccountBody, AccountCreated, AccountRequest, BalanceBody, BatchResult, Page, TransferBody,
    parse_id,
};
use crate::engine_client::WriteContext;
use crate::extract::{IdempotencyKey, JsonBody, Principal, QueryParams, RequestContext};
use crate::problem::{ApiResult, Problem, ProblemBody};
use axum::extract::{Path, State};
use axum::response::Response;
use bursar_core::records::filter_flags as FF;
use bursar_core::service::keys::Role;
use bursar_core::{Account, AccountFilter, BalanceRecord, Operation, Transfer};
use serde::Deserialize;
use utoipa::IntoParams;

/// Create an account (operator).
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = AccountRequest,
    params(("Idempotency-Key" = String, Header, description = "1-255 printable ASCII characters")),
    responses((status = 201, body = AccountCreated), (status = 200, description = "exists", body = AccountCreated),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    principal: Principal,
    ctx: RequestContext,
    key: IdempotencyKey,
    JsonBody(req): JsonBody<AccountRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    let a = req.to_record()?;
    principal.require_ledger(a.ledger)?;
    let w = WriteContext {
        principal: &principal,
        request_id: &ctx.request_id,
        route: "POST /v1/accounts",
        idempotency_key: Some(&key),
    };
    let written = app.write(&w, Operation::CreateAccounts, bytemuck::bytes_of(&a).to_vec(), &req).await?;
    Ok(single_response(Operation::CreateAccounts, &written, |r| AccountCreated::from(&record::<Account>(r))))
}

/// Create up to 8190 accounts in one atomic log entry (operator).
#[utoipa::path(post, path = "/v1/accounts/batch", tag = "accounts", request_body = AccountBatchRequest,
    params(("Idempotency-Key" = String, Header, description = "1-255 printable ASCII characters")),
    responses((status = 200, body = BatchResult),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_batch(
    State(app): State<App>,
    principal: Principal,
    ctx: RequestContext,
    key: IdempotencyKey,
    JsonBody(req): JsonBody<AccountBatchRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    check_batch_size(req.accounts.len(), "accounts")?;
    let mut records = Vec::with_capacity(req.accounts.len());
    for (i, a) in req.accounts.iter().enumerate() {
        let r = a.to_record().map_err(|p| prefix_field(p, "accounts", i))?;
        principal.require_ledger(r.ledger)?;
        records.push(r);
    }
    let w = WriteContext {
        principal: &principal,
        request_id: &ctx.request_id,
        route: "POST /v1/accounts/batch",
        idempotency_key: Some(&key),
    };
    let written = app.write(&w, Operation::CreateAccounts, bytemuck::cast_slice(&records).to_vec(), &req).await?;
    Ok(batch_response(Operation::CreateAccounts, records.len(), &written))
}

/// The account, checked against the key's ledgers.
async fn account(app: &App, principal: &Principal, id: &str) -> ApiResult<Account> {
    let id = parse_id("id", id)?;
    let response = app.read(Operation::LookupAccounts, id.to_le_bytes().to_vec()).await?;
    let a: Account = response
        .body
        .chunks_exact(Account::SIZE)
        .map(bytemuck::pod_read_unaligned)
        .next()
        .ok_or_else(|| Problem::not_found(format!("no account has id {id}")))?;
    principal.require_ledger(a.ledger)?;
    Ok(a)
}

/// Look an account up, with its balances.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "decimal or UUID")),
    responses((status = 200, body = AccountBody),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<App>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<AccountBody>> {
    let a = account(&app, &principal, &id).await?;
    Ok(axum::Json(AccountBody::from(&a)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Inclusive, nanoseconds.
    pub timestamp_min: Option<u64>,
    /// Inclusive, nanoseconds.
    pub timestamp_max: Option<u64>,
    /// debits, credits or both (default); transfers only.
    pub side: Option<String>,
    /// asc (default) or desc.
    pub order: Option<String>,
}

/// Builds the engine filter for one page, and the cursor for the next.
fn filter(id: u128, q: &HistoryQuery, transfers: bool) -> ApiResult<AccountFilter> {
    let limit = page_limit(q.limit)?;
    let reversed = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(Problem::bad_request("invalid_query", "order must be asc or desc").field("order")),
    };
    let sides = match (transfers, q.side.as_deref()) {
        (true, None | Some("both")) => FF::DEBITS | FF::CREDITS,
        (true, Some("debits")) => FF::DEBITS,
        (true, Some("credits")) => FF::CREDITS,
        (false, None) => 0,
        _ => return Err(Problem::bad_request("invalid_query", "side must be debits, credits or both").field("side")),
    };
    let mut min = q.timestamp_min.unwrap_or(0);
    let mut max = q.timestamp_max.unwrap_or(0);
    if let Some(cursor) = q.cursor.as_deref() {
        let bad = || Problem::bad_request("invalid_query", "invalid cursor").field("cursor");
        let (dir, ts) = cursor.split_once(':').ok_or_else(bad)?;
        let ts: u64 = ts.parse().map_err(|_| bad())?;
        match (dir, reversed) {
            ("a", false) => min = min.max(ts.checked_add(1).ok_or_else(bad)?),
            ("d", true) => {
                let below = ts.checked_sub(1).filter(|t| *t > 0).ok_or_else(bad)?;
                max = if max == 0 { below } else { max.min(below) };
            }
            _ => return Err(bad()),
        }
    }
    if max != 0 && min > max {
        return Err(
            Problem::bad_request("invalid_query", "timestamp_min is after timestamp_max").field("timestamp_min")
        );
    }
    let flags = sides | if reversed { FF::REVERSED } else { 0 };
    Ok(AccountFilter { account_id: id, timestamp_min: min, timestamp_max: max, limit, flags, reserved: [0; 24] })
}

fn next_cursor(f: &AccountFilter, count: usize, last_timestamp: Option<u64>) -> Option<String> {
    let dir = if f.flags & FF::REVERSED != 0 { "d" } else { "a" };
    (count == f.limit as usize).then(|| last_timestamp.map(|t| format!("{dir}:{t}"))).flatten()
}

/// An account's transfers, oldest first unless order=desc.
#[utoipa::path(get, path = "/v1/accounts/{id}/transfers", tag = "accounts",
    params(("id" = String, Path, description = "decimal or UUID"), HistoryQuery),
    responses((status = 200, body = Page<TransferBody>),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn transfers(
    State(app): State<App>,
    principal: Principal,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<axum::Json<Page<TransferBody>>> {
    let a = account(&app, &principal, &id).await?;
    let f = filter(a.id, &q, true)?;
    let response = app.read(Operation::GetAccountTransfers, bytemuck::bytes_of(&f).to_vec()).await?;
    let rows: Vec<Transfer> = response.body.chunks_exact(Transfer::SIZE).map(bytemuck::pod_read_unaligned).collect();
    let next_cursor = next_cursor(&f, rows.len(), rows.last().map(|t| t.timestamp));
    Ok(axum::Json(Page { data: rows.iter().map(TransferBody::from).collect(), next_cursor }))
}

/// An account's balances after each change (accounts with the history flag).
#[utoipa::path(get, path = "/v1/accounts/{id}/balances", tag = "accounts",
    params(("id" = String, Path, description = "decimal or UUID"), HistoryQuery),
    responses((status = 200, body = Page<BalanceBody>),
        (status = "4XX", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn balances(
    State(app): State<App>,
    principal: Principal,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<axum::Json<Page<BalanceBody>>> {
    let a = account(&app, &principal, &id).await?;
    let f = filter(a.id, &q, false)?;
    let response = app.read(Operation::GetAccountBalances, bytemuck::bytes_of(&f).to_vec()).await?;
    let rows: Vec<BalanceRecord> =
        response.body.chunks_exact(BalanceRecord::SIZE).map(bytemuck::pod_read_unaligned).collect();
    let next_cursor = next_cursor(&f, rows.len(), rows.last().map(|b| b.timestamp));
    Ok(axum::Json(Page { data: rows.iter().map(BalanceBody::from).collect(), next_cursor }))
}

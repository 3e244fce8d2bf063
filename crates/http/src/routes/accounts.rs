//! Accounts: created by operators, read by every role; an account's
//! transfers and balance history, paginated by timestamp.

use super::paths;
use super::{batch_records, page_limit, write_batch, write_one};
use crate::app::App;
use crate::dto::{
    AccountBatchRequest, AccountBody, AccountCreated, AccountRequest, BalanceBody, BatchResult, Id,
    IdempotencyKeyHeader, Page, TransferBody, parse_id,
};
use crate::engine_client::WriteContext;
use crate::extract::{JsonBody, PathId, Principal, QueryParams, Writer};
use crate::problem::{self, ApiResult, Problem};
use axum::extract::State;
use axum::response::Response;
use bursar_core::records::filter_flags as FF;
use bursar_core::service::keys::Role;
use bursar_core::{Account, AccountFilter, BalanceRecord, Operation, Transfer};
use serde::Deserialize;
use utoipa::IntoParams;

/// Create an account (operator).
#[utoipa::path(post, path = paths::CREATE_ACCOUNT.path, operation_id = "create_account", tag = "accounts", request_body = AccountRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created", body = AccountCreated),
        (status = 200, description = "The account exists with the same fields", body = AccountCreated),
        problem::CreateProblems,
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    Writer { principal, ctx, key }: Writer,
    JsonBody(req): JsonBody<AccountRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    let a = req.to_record()?;
    principal.require_ledger(a.ledger)?;
    let w = WriteContext::new(&principal, &ctx, paths::CREATE_ACCOUNT, Some(&key));
    write_one(&app, &w, Operation::CreateAccounts, &a, |a| AccountCreated::from(a)).await
}

/// Create up to 8190 accounts in one atomic log entry (operator).
#[utoipa::path(post, path = paths::CREATE_ACCOUNTS.path, operation_id = "create_accounts", tag = "accounts", request_body = AccountBatchRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 200, description = "Applied; the events that were not ok", body = BatchResult),
        problem::CreateProblems,
    ),
    security(("bearer" = [])))]
pub async fn create_batch(
    State(app): State<App>,
    Writer { principal, ctx, key }: Writer,
    JsonBody(req): JsonBody<AccountBatchRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    let records =
        batch_records("accounts", &req.accounts, AccountRequest::to_record, |a| principal.require_ledger(a.ledger))?;
    let w = WriteContext::new(&principal, &ctx, paths::CREATE_ACCOUNTS, Some(&key));
    write_batch(&app, &w, Operation::CreateAccounts, &records).await
}

/// The account, checked against the key's ledgers.
async fn account(app: &App, principal: &Principal, id: &str) -> ApiResult<Account> {
    let id = parse_id("id", id)?;
    let response = app.read(Operation::LookupAccounts, id.to_le_bytes().to_vec()).await?;
    let a: Account = super::records::<Account>(&response.body)
        .into_iter()
        .next()
        .ok_or_else(|| Problem::not_found(format!("no account has id {id}")))?;
    principal.require_ledger(a.ledger)?;
    Ok(a)
}

/// Look an account up, with its balances.
#[utoipa::path(get, path = paths::GET_ACCOUNT.path, operation_id = "get_account", tag = "accounts",
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1")),
    responses(
        (status = 200, description = "The account", body = AccountBody),
        problem::LookupProblems,
    ),
    security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<App>,
    principal: Principal,
    PathId(id): PathId,
) -> ApiResult<axum::Json<AccountBody>> {
    let a = account(&app, &principal, &id).await?;
    Ok(axum::Json(AccountBody::from(&a)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1 to 1000, default 100.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    #[param(value_type = String, required = false, pattern = "^[ad]:[0-9]{1,20}$")]
    pub cursor: Option<String>,
    /// Inclusive, nanoseconds.
    #[param(value_type = u64, required = false)]
    pub timestamp_min: Option<u64>,
    /// Inclusive, nanoseconds; 0 is no bound.
    #[param(value_type = u64, required = false)]
    pub timestamp_max: Option<u64>,
    /// debits, credits or both (default).
    #[param(value_type = String, required = false, pattern = "^(debits|credits|both)$")]
    pub side: Option<String>,
    /// asc (default) or desc.
    #[param(value_type = String, required = false, pattern = "^(asc|desc)$")]
    pub order: Option<String>,
}

/// The query of an account's balances, for the OpenAPI document: a
/// [`HistoryQuery`] without `side`, which balances reject.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalancesQuery {
    /// 1 to 1000, default 100.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    #[param(value_type = String, required = false, pattern = "^[ad]:[0-9]{1,20}$")]
    pub cursor: Option<String>,
    /// Inclusive, nanoseconds.
    #[param(value_type = u64, required = false)]
    pub timestamp_min: Option<u64>,
    /// Inclusive, nanoseconds; 0 is no bound.
    #[param(value_type = u64, required = false)]
    pub timestamp_max: Option<u64>,
    /// asc (default) or desc.
    #[param(value_type = String, required = false, pattern = "^(asc|desc)$")]
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

/// One page of an account's history (`GetAccountTransfers` or
/// `GetAccountBalances`), and the cursor of the next.
async fn history<R: bytemuck::Pod>(
    app: &App,
    principal: &Principal,
    id: &str,
    q: &HistoryQuery,
    op: Operation,
    timestamp: impl Fn(&R) -> u64,
) -> ApiResult<Page<R>> {
    let a = account(app, principal, id).await?;
    let f = filter(a.id, q, op == Operation::GetAccountTransfers)?;
    let response = app.read(op, bytemuck::bytes_of(&f).to_vec()).await?;
    let rows: Vec<R> = super::records::<R>(&response.body);
    let next_cursor = next_cursor(&f, rows.len(), rows.last().map(timestamp));
    Ok(Page { data: rows, next_cursor })
}

/// An account's transfers, oldest first unless order=desc.
#[utoipa::path(get, path = paths::GET_ACCOUNT_TRANSFERS.path, operation_id = "get_account_transfers", tag = "accounts",
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1"), HistoryQuery),
    responses(
        (status = 200, description = "A page of the account's transfers", body = Page<TransferBody>),
        problem::LookupProblems,
    ),
    security(("bearer" = [])))]
pub async fn transfers(
    State(app): State<App>,
    principal: Principal,
    PathId(id): PathId,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<axum::Json<Page<TransferBody>>> {
    let page = history(&app, &principal, &id, &q, Operation::GetAccountTransfers, |t: &Transfer| t.timestamp).await?;
    Ok(axum::Json(page.map(TransferBody::from)))
}

/// An account's balances after each change (accounts with the history flag).
#[utoipa::path(get, path = paths::GET_ACCOUNT_BALANCES.path, operation_id = "get_account_balances", tag = "accounts",
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1"), BalancesQuery),
    responses(
        (status = 200, description = "A page of the account's balances", body = Page<BalanceBody>),
        problem::LookupProblems,
    ),
    security(("bearer" = [])))]
pub async fn balances(
    State(app): State<App>,
    principal: Principal,
    PathId(id): PathId,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<axum::Json<Page<BalanceBody>>> {
    let page =
        history(&app, &principal, &id, &q, Operation::GetAccountBalances, |b: &BalanceRecord| b.timestamp).await?;
    Ok(axum::Json(page.map(BalanceBody::from)))
}

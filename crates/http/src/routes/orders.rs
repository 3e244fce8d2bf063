//! Payment orders (docs/api.md, "Orders"): operators create them and move
//! them along (cancel, review, incoming funds); compliance keys review them
//! too; every role reads them and their timeline. Admins, operators and
//! compliance see the personal data decrypted (each such read is recorded in
//! the access trail before the data leaves), auditors masked. The key that
//! created an order may not review it (maker-checker). Without order
//! settings every route answers 503 `orders_disabled`.

use super::paths;
use super::{mark_replayed, page_limit};
use crate::app::{App, OrdersApi};
use crate::dto::{Id, IdempotencyKeyHeader, Page, parse_id};
use crate::dto_orders::{
    CancelRequest, FundsRequest, OrderBody, OrderEventBody, OrderEventList, OrderRequest, OrderStateName, PiiView,
    ReviewRequest, pii_problem,
};
use crate::engine_client::WriteContext;
use crate::extract::{JsonBody, OptionalJsonBody, PathId, Principal, QueryParams, Writer};
use crate::problem::{self, ApiResult, Problem};
use crate::results::{Single, single};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bursar_core::Operation;
use bursar_core::orders::{Order, OrderCommand, OrderFilter, OrderState, TimelineEvent, order_flags};
use bursar_core::service::access::{AccessEvent, AccessKind};
use bursar_core::service::keys::Role;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

/// The order settings, or 503 when orders are not enabled.
fn enabled(app: &App) -> ApiResult<Arc<OrdersApi>> {
    app.config.orders.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "orders_disabled",
            "payment orders are not enabled on this server",
        )
    })
}

fn not_found(id: u128) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "order_not_found", format!("no order has id {id}"))
}

/// A scoped key must be allowed both of an order's ledgers.
fn check_scope(principal: &Principal, o: &Order) -> ApiResult<()> {
    principal.require_ledger(o.source_ledger)?;
    principal.require_ledger(o.target_ledger)
}

/// The order for the caller: personal data decrypted, or masked for
/// auditors. A blob no configured key opens is logged by order id only.
fn render(orders: &OrdersApi, principal: &Principal, o: &Order) -> ApiResult<OrderBody> {
    if o.id == 0 {
        return Err(Problem::internal("the engine returned no order"));
    }
    let pii = orders.keyring.decrypt(o.id, o.pii()).map_err(|e| {
        tracing::error!(order_id = %o.id, error = %e, "an order's personal data cannot be decrypted");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "pii_undecryptable",
            "this order's personal data cannot be decrypted with the configured keys",
        )
    })?;
    OrderBody::new(o, &orders.config, pii, view_of(principal))
}

fn view_of(principal: &Principal) -> PiiView {
    if principal.key.role == Role::Auditor { PiiView::Masked } else { PiiView::Full }
}

/// Records that these orders' personal data is about to leave decrypted;
/// the data leaves only once the records are durable (masked views: none).
async fn record_reads(
    app: &App,
    principal: &Principal,
    route: &str,
    status: StatusCode,
    ids: impl IntoIterator<Item = u128>,
) -> ApiResult<()> {
    if matches!(view_of(principal), PiiView::Masked) {
        return Ok(());
    }
    let event = |id| AccessEvent::new(AccessKind::PiiRead, principal.key.id, route, id, status.as_u16());
    app.access.pii_reads(ids.into_iter().map(event).collect()).await
}

/// The order a write answered with, rendered, after recording the read.
async fn answer(
    app: &App,
    orders: &OrdersApi,
    principal: &Principal,
    route: &str,
    status: StatusCode,
    record: &[u8],
) -> ApiResult<Response> {
    let o = stored(record);
    let body = render(orders, principal, &o)?;
    record_reads(app, principal, route, status, [o.id]).await?;
    Ok((status, axum::Json(body)).into_response())
}

/// The order a write returned (zeroed if the engine sent none).
fn stored(bytes: &[u8]) -> Order {
    if bytes.len() == Order::SIZE { bytemuck::pod_read_unaligned(bytes) } else { bytemuck::Zeroable::zeroed() }
}

async fn lookup(app: &App, id: u128) -> ApiResult<Option<Order>> {
    let response = app.read(Operation::LookupOrders, id.to_le_bytes().to_vec()).await?;
    Ok(super::records::<Order>(&response.body).into_iter().next())
}

/// Create a payment order (operator). The fee, the timeouts and the fee
/// policy come from the server's order settings; the personal data is
/// encrypted before it is logged.
#[utoipa::path(post, path = paths::CREATE_ORDER.path, operation_id = "create_order", tag = "orders", request_body = OrderRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created", body = OrderBody),
        (status = 200, description = "The order exists with the same fields (personal data is not compared)", body = OrderBody),
        problem::CreateProblems,
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    Writer { principal, ctx, key }: Writer,
    JsonBody(req): JsonBody<OrderRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Operator])?;
    let orders = enabled(&app)?;
    let mut e = req.to_record(&orders.config)?;
    principal.require_ledger(e.source_ledger)?;
    principal.require_ledger(e.target_ledger)?;
    let pii = req.pii()?;
    // The fingerprint leaves the personal data out (the core does not
    // compare it either): the sealed blob differs on every try, and not
    // even a hash of the plaintext should reach the log.
    let canonical = bytemuck::bytes_of(&e).to_vec();
    let blob = orders.keyring.encrypt(e.id, &pii).map_err(pii_problem)?;
    e.pii[..blob.len()].copy_from_slice(&blob);
    e.pii_len = blob.len() as u16;
    let w = WriteContext::new(&principal, &ctx, paths::CREATE_ORDER, Some(&key));
    let written = app.write(&w, Operation::CreateOrders, bytemuck::bytes_of(&e).to_vec(), Some(&canonical)).await?;
    let route = paths::CREATE_ORDER.name;
    let response = match single(Operation::CreateOrders, &written.results) {
        Single::Created => answer(&app, &orders, &principal, route, StatusCode::CREATED, &written.record).await?,
        Single::Exists => answer(&app, &orders, &principal, route, StatusCode::OK, &written.record).await?,
        Single::Failed(problem) => problem.into_response(),
    };
    Ok(mark_replayed(response, written.replayed))
}

/// Look an order up.
#[utoipa::path(get, path = paths::GET_ORDER.path, operation_id = "get_order", tag = "orders",
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1001")),
    responses(
        (status = 200, description = "The order; personal data masked for auditors", body = OrderBody),
        problem::LookupProblems,
    ),
    security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<App>,
    principal: Principal,
    PathId(id): PathId,
) -> ApiResult<axum::Json<OrderBody>> {
    let orders = enabled(&app)?;
    let id = parse_id("id", &id)?;
    let o = lookup(&app, id).await?.ok_or_else(|| not_found(id))?;
    check_scope(&principal, &o)?;
    let body = render(&orders, &principal, &o)?;
    record_reads(&app, &principal, paths::GET_ORDER.name, StatusCode::OK, [o.id]).await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    /// Only orders in this state.
    #[param(value_type = OrderStateName, required = false)]
    pub state: Option<String>,
    /// 1 to 1000, default 100.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page (the last order id seen).
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,39}$")]
    pub cursor: Option<String>,
}

/// List orders by id, optionally in one state.
#[utoipa::path(get, path = paths::LIST_ORDERS.path, operation_id = "list_orders", tag = "orders",
    params(OrderQuery),
    responses(
        (status = 200, description = "A page of orders; personal data masked for auditors", body = Page<OrderBody>),
        problem::ListProblems,
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    principal: Principal,
    QueryParams(q): QueryParams<OrderQuery>,
) -> ApiResult<axum::Json<Page<OrderBody>>> {
    let orders = enabled(&app)?;
    let limit = page_limit(q.limit)?;
    let state = match q.state.as_deref() {
        None => 0,
        Some(name) => OrderState::from_name(name).ok_or_else(|| {
            Problem::bad_request("invalid_query", format!("unknown order state {name:?}")).field("state")
        })? as u8,
    };
    let after_id = super::cursor::<u128>(q.cursor.as_deref())?;
    let filter = OrderFilter { after_id, limit, state, ..Default::default() };
    let response = app.read(Operation::ListOrders, bytemuck::bytes_of(&filter).to_vec()).await?;
    let rows: Vec<Order> = super::records::<Order>(&response.body);
    let next_cursor = (rows.len() == limit as usize).then(|| rows.last().map(|o| o.id.to_string())).flatten();
    // A scoped key sees the orders on its ledgers only (pages may be short).
    let visible: Vec<&Order> = rows.iter().filter(|o| check_scope(&principal, o).is_ok()).collect();
    let data = visible.iter().map(|o| render(&orders, &principal, o)).collect::<ApiResult<Vec<_>>>()?;
    record_reads(&app, &principal, paths::LIST_ORDERS.name, StatusCode::OK, visible.iter().map(|o| o.id)).await?;
    Ok(axum::Json(Page { data, next_cursor }))
}

/// An order's timeline: its creation, every command (refused ones too, while
/// the order is open) and deadlines, with the ledger transfers each step made.
#[utoipa::path(get, path = paths::GET_ORDER_EVENTS.path, operation_id = "get_order_events", tag = "orders",
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1001")),
    responses(
        (status = 200, description = "The order's events, oldest first", body = OrderEventList),
        problem::LookupProblems,
    ),
    security(("bearer" = [])))]
pub async fn events(
    State(app): State<App>,
    principal: Principal,
    PathId(id): PathId,
) -> ApiResult<axum::Json<OrderEventList>> {
    enabled(&app)?;
    let id = parse_id("id", &id)?;
    if principal.is_scoped() {
        let o = lookup(&app, id).await?.ok_or_else(|| not_found(id))?;
        check_scope(&principal, &o)?;
    }
    let response = app.read(Operation::GetOrderEvents, id.to_le_bytes().to_vec()).await?;
    if response.body.is_empty() {
        return Err(not_found(id));
    }
    let events = TimelineEvent::decode_list(&response.body).map_err(|e| Problem::internal(e.to_string()))?;
    Ok(axum::Json(OrderEventList { data: events.iter().map(|e| OrderEventBody::new(id, e)).collect() }))
}

/// Who may send which command.
const MOVERS: &[Role] = &[Role::Operator];
const REVIEWERS: &[Role] = &[Role::Operator, Role::Compliance];

/// Applies one command to an order and answers with the order after it.
async fn command(
    app: App,
    Writer { principal, ctx, key }: Writer,
    roles: &[Role],
    route: paths::Route,
    id: &str,
    build: impl FnOnce(u128) -> ApiResult<OrderCommand>,
) -> ApiResult<Response> {
    principal.require(roles)?;
    let orders = enabled(&app)?;
    let id = parse_id("id", id)?;
    let c = build(id)?;
    let is_review = c.kind == bursar_core::orders::CommandKind::Review as u8;
    if principal.is_scoped() || is_review {
        // A missing order is left to the state machine (404 from its code).
        if let Some(o) = lookup(&app, id).await? {
            check_scope(&principal, &o)?;
            if is_review {
                check_maker(&app, &principal, &o).await?;
            }
        }
    }
    let w = WriteContext::new(&principal, &ctx, route, Some(&key));
    let written = app.write(&w, Operation::OrderCommands, bytemuck::bytes_of(&c).to_vec(), None).await?;
    let response = match single(Operation::OrderCommands, &written.results) {
        Single::Created | Single::Exists => {
            answer(&app, &orders, &principal, route.name, StatusCode::OK, &written.record).await?
        }
        Single::Failed(problem) => problem.into_response(),
    };
    Ok(mark_replayed(response, written.replayed))
}

/// The friendly early answer of maker-checker (the state machine refuses
/// the same with `maker_checker`, whatever reaches it): the key that created
/// the order may not review it.
async fn check_maker(app: &App, principal: &Principal, o: &Order) -> ApiResult<()> {
    // Like apply: the state is checked first (a review of an order not on
    // hold is 409 whoever sends it).
    if o.flags & order_flags::MAKER_CHECKER == 0 || OrderState::from_code(o.state) != Some(OrderState::OnHold) {
        return Ok(());
    }
    let response = app.read(Operation::GetOrderEvents, o.id.to_le_bytes().to_vec()).await?;
    let events = TimelineEvent::decode_list(&response.body).map_err(|e| Problem::internal(e.to_string()))?;
    let creator = events.first().filter(|e| e.kind == bursar_core::orders::book::EVENT_CREATE).map_or(0, |e| e.key_id);
    if creator != 0 && creator == principal.key.id {
        return Err(maker_checker_problem());
    }
    Ok(())
}

pub fn maker_checker_problem() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "maker_checker",
        "the key that created this order may not review it; another key (operator or compliance) must",
    )
}

/// Cancel an order (operator). Before funds arrive it is `cancelled`; with
/// funds held or FX locked the money goes back and it is `refunded`.
#[utoipa::path(post, path = paths::CANCEL_ORDER.path, operation_id = "cancel_order", tag = "orders",
    request_body = Option<CancelRequest>,
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1001"), IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The order after the command", body = OrderBody),
        problem::CommandProblems,
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(app): State<App>,
    w: Writer,
    PathId(id): PathId,
    OptionalJsonBody(req): OptionalJsonBody<CancelRequest>,
) -> ApiResult<Response> {
    command(app, w, MOVERS, paths::CANCEL_ORDER, &id, |id| req.to_command(id)).await
}

/// Decide an order on hold (operator or compliance): approve or reject it.
/// The key that created the order may not (403 `maker_checker`).
#[utoipa::path(post, path = paths::REVIEW_ORDER.path, operation_id = "review_order", tag = "orders",
    request_body = ReviewRequest,
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1001"), IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The order after the command", body = OrderBody),
        problem::CommandProblems,
    ),
    security(("bearer" = [])))]
pub async fn review(
    State(app): State<App>,
    w: Writer,
    PathId(id): PathId,
    JsonBody(req): JsonBody<ReviewRequest>,
) -> ApiResult<Response> {
    command(app, w, REVIEWERS, paths::REVIEW_ORDER, &id, |id| req.to_command(id)).await
}

/// Notify incoming funds (operator; what a bank integration calls). The
/// amount must equal the order's `source_amount`; the funds are then held.
#[utoipa::path(post, path = paths::ORDER_FUNDS_RECEIVED.path, operation_id = "order_funds_received", tag = "orders",
    request_body = FundsRequest,
    params(("id" = Id, Path, description = "Decimal or UUID", example = "1001"), IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The order after the command", body = OrderBody),
        problem::CommandProblems,
    ),
    security(("bearer" = [])))]
pub async fn funds(
    State(app): State<App>,
    w: Writer,
    PathId(id): PathId,
    JsonBody(req): JsonBody<FundsRequest>,
) -> ApiResult<Response> {
    command(app, w, MOVERS, paths::ORDER_FUNDS_RECEIVED, &id, |id| req.to_command(id)).await
}

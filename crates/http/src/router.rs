//! The router: every route of the table (`paths.rs`) bound to its handler,
//! with the middleware around them.

use crate::app::App;
use crate::paths;
use crate::problem::Problem;
use crate::routes::{access, accounts, audit, events, keys, ledgers, ops, orders, transfers, webhooks};
use axum::Router;
use axum::handler::Handler;
use axum::http::StatusCode;

pub fn router(app: App) -> Router {
    use paths::*;
    let api = Router::new()
        .at(CREATE_LEDGER, ledgers::create)
        .at(LIST_LEDGERS, ledgers::list)
        .at(CREATE_ACCOUNT, accounts::create)
        .at(CREATE_ACCOUNTS, accounts::create_batch)
        .at(GET_ACCOUNT, accounts::get_one)
        .at(GET_ACCOUNT_TRANSFERS, accounts::transfers)
        .at(GET_ACCOUNT_BALANCES, accounts::balances)
        .at(CREATE_TRANSFER, transfers::create)
        .at(CREATE_TRANSFERS, transfers::create_batch)
        .at(GET_TRANSFER, transfers::get_one)
        .at(CREATE_ORDER, orders::create)
        .at(LIST_ORDERS, orders::list)
        .at(GET_ORDER, orders::get_one)
        .at(GET_ORDER_EVENTS, orders::events)
        .at(CANCEL_ORDER, orders::cancel)
        .at(REVIEW_ORDER, orders::review)
        .at(ORDER_FUNDS_RECEIVED, orders::funds)
        .at(CREATE_KEY, keys::create)
        .at(LIST_KEYS, keys::list)
        .at(REVOKE_KEY, keys::revoke)
        .at(ROTATE_KEY, keys::rotate)
        .at(CREATE_WEBHOOK, webhooks::create)
        .at(LIST_WEBHOOKS, webhooks::list)
        .at(GET_WEBHOOK, webhooks::get_one)
        .at(DELETE_WEBHOOK, webhooks::delete)
        .at(LIST_DEAD_LETTERS, webhooks::dead_letters)
        .at(REPLAY_WEBHOOK, webhooks::replay)
        .at(LIST_AUDIT, audit::list)
        .at(LIST_ACCESS_LOG, access::list)
        .at(LIST_EVENTS, events::list)
        .at(STREAM_EVENTS, events::stream)
        .at(OPENAPI, crate::openapi::serve)
        .at(METRICS, ops::metrics)
        .at(HEALTHZ, ops::healthz)
        .at(READYZ, ops::readyz)
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), crate::middleware::refusals))
        .route_layer(axum::middleware::from_fn(crate::middleware::metrics))
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(axum::extract::DefaultBodyLimit::max(app.config.body_limit))
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::middleware::outer));
    api.with_state(app)
}

/// Serves a route of the table: several routes on one path share its
/// method router (axum merges them).
trait At {
    fn at<H: Handler<T, App>, T: 'static>(self, route: paths::Route, handler: H) -> Self;
}

impl At for Router<App> {
    fn at<H: Handler<T, App>, T: 'static>(self, route: paths::Route, handler: H) -> Self {
        self.route(route.path, axum::routing::on(route.method.filter(), handler))
    }
}

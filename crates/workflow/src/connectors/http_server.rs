//! An HTTP server exposing a set of [`Simulators`], so tests can run them in
//! a process that survives the node being killed, with the `Http*` clients
//! talking to it.
//!
//! Routes: `POST /screening/screen`, `POST /fx/quote`, `POST /payouts/send`,
//! `GET /payouts/status`, `POST /funds/expect` (all with an `Idempotency-Key`
//! header), and the controls `POST /control/down` (`{"down": bool}`, with an
//! optional `"connector"`) and `GET /control/calls` (the call log). Errors
//! are `{"error": message}` with 422 for `Rejected`, 503 for `Unavailable`,
//! 502 for `Malformed`, 504 for `Timeout`; a simulated timeout simply never
//! answers in time, so the client's own timeout fires.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::http_client::{DownBody, IDEMPOTENCY_HEADER, QuoteBody};
use super::{ConnectorError, FundsRequest, PayoutRequest, ScreeningRequest, Simulators};

/// The longest idempotency key the server accepts.
const MAX_KEY_LEN: usize = 256;

/// Serves `sims` on `listener` until the task is dropped or the listener fails.
pub async fn serve_simulators(sims: Simulators, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, simulators_router(sims)).await
}

/// The simulator routes, for embedding in another server.
pub fn simulators_router(sims: Simulators) -> Router {
    Router::new()
        .route("/screening/screen", post(screen))
        .route("/fx/quote", post(quote))
        .route("/payouts/send", post(send_payout))
        .route("/payouts/status", get(payout_status))
        .route("/funds/expect", post(expect_funds))
        .route("/control/down", post(set_down))
        .route("/control/calls", get(calls))
        .with_state(sims)
}

async fn screen(
    State(sims): State<Simulators>,
    headers: HeaderMap,
    body: Result<Json<ScreeningRequest>, JsonRejection>,
) -> Result<Response, BadRequest> {
    let (key, request) = inputs(&headers, body)?;
    Ok(reply(sims.screening.screen(&key, &request).await))
}

async fn quote(
    State(sims): State<Simulators>,
    headers: HeaderMap,
    body: Result<Json<QuoteBody>, JsonRejection>,
) -> Result<Response, BadRequest> {
    let (key, q) = inputs(&headers, body)?;
    Ok(reply(sims.fx.quote(&key, &q.source_asset, &q.target_asset, q.source_amount).await))
}

async fn send_payout(
    State(sims): State<Simulators>,
    headers: HeaderMap,
    body: Result<Json<PayoutRequest>, JsonRejection>,
) -> Result<Response, BadRequest> {
    let (key, request) = inputs(&headers, body)?;
    Ok(reply(sims.payout.send(&key, &request).await))
}

async fn payout_status(State(sims): State<Simulators>, headers: HeaderMap) -> Result<Response, BadRequest> {
    let key = idempotency_key(&headers)?;
    Ok(reply(sims.payout.status(&key).await))
}

async fn expect_funds(
    State(sims): State<Simulators>,
    headers: HeaderMap,
    body: Result<Json<FundsRequest>, JsonRejection>,
) -> Result<Response, BadRequest> {
    let (key, request) = inputs(&headers, body)?;
    Ok(reply(sims.funds.expect(&key, &request).await))
}

async fn set_down(
    State(sims): State<Simulators>,
    body: Result<Json<DownBody>, JsonRejection>,
) -> Result<Json<DownBody>, BadRequest> {
    let Json(body) = body.map_err(|rejection| BadRequest(rejection.body_text()))?;
    match &body.connector {
        None => sims.set_down(body.down),
        Some(connector) => sims.controls().set_connector_down(connector, body.down).map_err(BadRequest)?,
    }
    Ok(Json(body))
}

async fn calls(State(sims): State<Simulators>) -> Response {
    Json(sims.calls()).into_response()
}

/// A request the server can't act on: answered 400 with its message.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0)
    }
}

/// The idempotency key and the decoded body.
fn inputs<T>(headers: &HeaderMap, body: Result<Json<T>, JsonRejection>) -> Result<(String, T), BadRequest> {
    let key = idempotency_key(headers)?;
    let Json(body) = body.map_err(|rejection| BadRequest(rejection.body_text()))?;
    Ok((key, body))
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, BadRequest> {
    let value =
        headers.get(IDEMPOTENCY_HEADER).ok_or_else(|| BadRequest(format!("missing {IDEMPOTENCY_HEADER} header")))?;
    let key = value.to_str().map_err(|_| BadRequest(format!("{IDEMPOTENCY_HEADER} must be visible ASCII")))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(BadRequest(format!("{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LEN} bytes")));
    }
    Ok(key.to_string())
}

fn reply<T: Serialize>(result: Result<T, ConnectorError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(ConnectorError::Rejected(message)) => error(StatusCode::UNPROCESSABLE_ENTITY, message),
        Err(ConnectorError::Unavailable(message)) => error(StatusCode::SERVICE_UNAVAILABLE, message),
        Err(ConnectorError::Malformed(message)) => error(StatusCode::BAD_GATEWAY, message),
        Err(ConnectorError::Timeout) => error(StatusCode::GATEWAY_TIMEOUT, "timed out".into()),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

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
//!
//! Answers repeat the idempotency key and what identifies the request
//! (`wire.rs`). With [`SimServerOptions::auth`], every request (controls
//! included) must carry the same credentials the clients are given, or it
//! is answered 401 before a simulator sees it; with [`SimServerOptions::tls`]
//! it is served over HTTPS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Json, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::auth::{ConnectorAuth, unix_now};
use super::http_client::IDEMPOTENCY_HEADER;
use super::wire::{
    Answer, DownBody, FundsAnswer, MoneyEcho, NoEcho, OrderEcho, PayoutAnswer, QuoteAnswer, QuoteBody, ScreeningAnswer,
    StatusAnswer,
};
use super::{ConnectorError, FundsRequest, PayoutRequest, ScreeningRequest, Simulators};

/// The longest idempotency key the server accepts.
const KEY_LEN_MAX: usize = 256;
/// Largest request body read (a connector request is well under 1 KiB).
const REQUEST_BYTES_MAX: usize = 64 << 10;
/// Most connections served at once over TLS.
const TLS_CONNECTIONS_MAX: usize = 256;

/// How the simulator server is reached: credentials it demands and TLS.
#[derive(Debug, Clone, Default)]
pub struct SimServerOptions {
    /// Requests without these credentials are refused with 401.
    pub auth: ConnectorAuth,
    /// Serve HTTPS with this configuration (a private CA's certificate).
    pub tls: Option<Arc<bursar_tls::rustls::ServerConfig>>,
    /// Counts the requests refused for their credentials.
    pub refused: Arc<AtomicU64>,
}

/// Serves `sims` on `listener` without credentials or TLS, until the task is
/// dropped or the listener fails.
pub async fn serve_simulators(sims: Simulators, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    serve_simulators_with(sims, listener, SimServerOptions::default()).await
}

/// Serves `sims` on `listener` as `options` say.
pub async fn serve_simulators_with(
    sims: Simulators,
    listener: tokio::net::TcpListener,
    options: SimServerOptions,
) -> std::io::Result<()> {
    let mut router = simulators_router(sims);
    if !options.auth.is_none() {
        let state = Arc::new((options.auth, options.refused));
        router = router.layer(middleware::from_fn_with_state(state, authenticate));
    }
    match options.tls {
        None => axum::serve(listener, router).await,
        Some(tls) => serve_tls(listener, router, tokio_rustls::TlsAcceptor::from(tls)).await,
    }
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

/// Checks the request's credentials against `auth`; 401 with the reason
/// (never the expected secret) when they are missing or wrong.
async fn authenticate(
    State(state): State<Arc<(ConnectorAuth, Arc<AtomicU64>)>>,
    request: Request,
    next: Next,
) -> Response {
    let (auth, refused) = &*state;
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, REQUEST_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {REQUEST_BYTES_MAX} bytes")),
    };
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Err(why) = auth.verify(parts.method.as_str(), target, &parts.headers, &bytes, unix_now()) {
        refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = parts.uri.path(), "connector request refused: {why}");
        return error(StatusCode::UNAUTHORIZED, why.to_string());
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// HTTPS: one task per connection, a bounded number of them, a bounded handshake.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(TLS_CONNECTIONS_MAX));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
        let (router, acceptor) = (router.clone(), acceptor.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return; // a failed handshake: the client sees the TLS alert
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            drop(permit);
        });
    }
}

async fn screen(
    State(sims): State<Simulators>,
    headers: HeaderMap,
    body: Result<Json<ScreeningRequest>, JsonRejection>,
) -> Result<Response, BadRequest> {
    let (key, request) = inputs(&headers, body)?;
    let verdict = sims.screening.screen(&key, &request).await;
    Ok(reply(verdict.map(|v| ScreeningAnswer::new(&key, OrderEcho::of_screening(&request), v))))
}

async fn quote(
    State(sims): State<Simulators>,
    headers: HeaderMap,
    body: Result<Json<QuoteBody>, JsonRejection>,
) -> Result<Response, BadRequest> {
    let (key, q) = inputs(&headers, body)?;
    let quote = sims.fx.quote(&key, &q.source_asset, &q.target_asset, q.source_amount).await;
    Ok(reply(quote.map(|quote| QuoteAnswer::new(&key, q, quote))))
}

async fn send_payout(
    State(sims): State<Simulators>,
    headers: HeaderMap,
    body: Result<Json<PayoutRequest>, JsonRejection>,
) -> Result<Response, BadRequest> {
    let (key, request) = inputs(&headers, body)?;
    let status = sims.payout.send(&key, &request).await;
    Ok(reply(status.map(|s| PayoutAnswer::new(&key, MoneyEcho::of_payout(&request), s))))
}

async fn payout_status(State(sims): State<Simulators>, headers: HeaderMap) -> Result<Response, BadRequest> {
    let key = idempotency_key(&headers)?;
    let status = sims.payout.status(&key).await;
    Ok(reply(status.map(|s| StatusAnswer::new(&key, NoEcho {}, s))))
}

async fn expect_funds(
    State(sims): State<Simulators>,
    headers: HeaderMap,
    body: Result<Json<FundsRequest>, JsonRejection>,
) -> Result<Response, BadRequest> {
    let (key, request) = inputs(&headers, body)?;
    let instructions = sims.funds.expect(&key, &request).await;
    Ok(reply(instructions.map(|i| FundsAnswer::new(&key, MoneyEcho::of_funds(&request), i))))
}

async fn set_down(
    State(sims): State<Simulators>,
    body: Result<Json<DownBody>, JsonRejection>,
) -> Result<Json<DownBody>, BadRequest> {
    let Json(body) = body.map_err(|rejection| BadRequest(rejection.body_text()))?;
    match &body.connector {
        None => sims.set_down(body.down),
        Some(connector) => {
            sims.controls().set_connector_down(connector, body.down).map_err(|e| BadRequest(e.to_string()))?
        }
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
    if key.is_empty() || key.len() > KEY_LEN_MAX {
        return Err(BadRequest(format!("{IDEMPOTENCY_HEADER} must be 1 to {KEY_LEN_MAX} bytes")));
    }
    Ok(key.to_string())
}

fn reply<E: Serialize, T: Serialize>(result: Result<Answer<E, T>, ConnectorError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(ConnectorError::Rejected(message)) => error(StatusCode::UNPROCESSABLE_ENTITY, message),
        Err(ConnectorError::Unavailable(message)) => error(StatusCode::SERVICE_UNAVAILABLE, message),
        Err(ConnectorError::Malformed(message)) => error(StatusCode::BAD_GATEWAY, message),
        Err(ConnectorError::Timeout) => error(StatusCode::GATEWAY_TIMEOUT, "timed out".into()),
        Err(ConnectorError::Unauthorized(message)) => error(StatusCode::UNAUTHORIZED, message),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

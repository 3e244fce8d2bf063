//! Around every request: a request id (echoed in `X-Request-Id` and error
//! bodies), a bound on requests in progress (503 + Retry-After beyond it),
//! a bound on time, and metrics by route and status.

use crate::app::App;
use crate::problem::Problem;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bursar_core::service::access::{AccessEvent, AccessKind};
use std::time::Instant;
use tracing::Instrument;

/// The request's id, in request extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_string())
}

/// A unique id: a random prefix per process and a counter, so no request
/// pays for a system call.
fn new_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's random source works");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    format!("{prefix}-{:x}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Request id, load shedding and the time bound.
pub async fn outer(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let id = req.headers().get("x-request-id").and_then(valid_request_id).unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    // A debug span: with the default `info` filter it costs nothing per
    // request; 5xx are logged with the id below either way.
    let span = tracing::debug_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let mut response = async {
        let Ok(_permit) = app.in_progress.try_acquire() else {
            return Problem::overloaded("too many requests in progress; retry later").into_response();
        };
        let response = match tokio::time::timeout(app.config.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long; a write's outcome is unknown: retry with the same Idempotency-Key",
            )
            .retry_after(1)
            .into_response(),
        };
        if response.status().is_server_error() {
            tracing::warn!(request_id = %id, status = response.status().as_u16(), "request failed on the server side");
        } else {
            tracing::debug!(status = response.status().as_u16(), "request done");
        }
        response
    }
    .instrument(span)
    .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Metrics for matched routes (the route template, never raw ids).
pub async fn metrics(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("bursar_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("bursar_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Every 401 and 403 of a matched route goes to the access trail: the key
/// (if the token names one, even a revoked one), the client's address, the
/// route and the id it targets. Best effort and aggregated (`crate::access`).
pub async fn refusals(State(app): State<App>, req: Request, next: Next) -> Response {
    let template = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    let auth = req.headers().get(axum::http::header::AUTHORIZATION).cloned();
    let response = next.run(req).await;
    let status = response.status();
    let kind = match status {
        StatusCode::UNAUTHORIZED => AccessKind::Unauthorized,
        StatusCode::FORBIDDEN => AccessKind::Forbidden,
        _ => return response,
    };
    let template = template.unwrap_or_default();
    let route = format!("{method} {template}");
    let target = path_id(&template, &path).unwrap_or(0);
    let key_id = auth.as_ref().map_or(0, |v| key_of(&app, v));
    let mut event = AccessEvent::new(kind, key_id, &route, target, status.as_u16());
    event.client = crate::access::client_bytes(client);
    app.access.refusal(event);
    response
}

/// The id in the `{id}` segment of `path`, if it parses.
fn path_id(template: &str, path: &str) -> Option<u128> {
    let at = template.split('/').position(|s| s == "{id}")?;
    // Ids are digits or a UUID: a percent-encoded one is no id anyway.
    crate::dto::parse_id("id", path.split('/').nth(at)?).ok()
}

/// The id of the key a bearer token names, active or not; 0 if none.
fn key_of(app: &App, header: &HeaderValue) -> u64 {
    let token = header.to_str().ok().and_then(|v| v.split_once(' ')).map(|(_, t)| t.trim());
    let Some(token) = token.filter(|t| bursar_server::keys::token_is_plausible(t)) else { return 0 };
    let hash = bursar_server::keys::token_hash(token);
    app.keys.read().unwrap_or_else(|e| e.into_inner()).by_hash(&hash).map_or(0, |k| k.id)
}

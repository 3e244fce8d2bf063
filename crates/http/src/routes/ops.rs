//! Operational endpoints, no key needed: health, readiness, metrics and the
//! OpenAPI document.

use super::paths;
use crate::app::App;
use crate::dto::Status;
use crate::problem::{self, ApiResult};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The process is up.
#[utoipa::path(get, path = paths::HEALTHZ.path, operation_id = "healthz", tag = "operations", responses(
    (status = 200, description = "Up", body = Status),
    (status = 503, response = problem::Unavailable),
))]
pub async fn healthz() -> axum::Json<Status> {
    axum::Json(Status { status: "ok".into() })
}

/// The engine answers and everything it applied is durable.
#[utoipa::path(get, path = paths::READYZ.path, operation_id = "readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = Status),
    (status = 500, response = problem::InternalError),
    (status = 503, response = problem::Unavailable),
))]
pub async fn readyz(State(app): State<App>) -> ApiResult<axum::Json<Status>> {
    app.ping().await?;
    Ok(axum::Json(Status { status: "ready".into() }))
}

/// Prometheus text format.
#[utoipa::path(get, path = paths::METRICS.path, operation_id = "metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
    (status = 503, response = problem::Unavailable),
))]
pub async fn metrics(State(app): State<App>) -> Response {
    app.record_gauges();
    let text = app.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

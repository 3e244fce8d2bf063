//! Errors as `application/problem+json` (RFC 9457) with a stable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::openapi::{Ref, RefOr};
use utoipa::{ToResponse, ToSchema};

/// An error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    pub field: Option<String>,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u32>,
}

/// The JSON body of a problem.
#[derive(Serialize, ToSchema)]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable: see docs/api.md and docs/ledger.md.
    pub code: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

// The problem responses, declared once and referenced by the routes'
// annotations: `(status = 404, response = NotFound)`.

/// Malformed request: invalid JSON or field (`invalid_json`,
/// `invalid_field`), an invalid query (`invalid_query`), or a missing or
/// invalid Idempotency-Key (`idempotency_key_missing`,
/// `idempotency_key_invalid`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct BadRequest(pub ProblemBody);

/// A missing, unknown, revoked or expired API key (`unauthorized`).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "Bearer"))
)]
pub struct Unauthorized(pub ProblemBody);

/// The key's role or ledgers do not allow this (`forbidden`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Forbidden(pub ProblemBody);

/// No such record (`not_found`, `key_not_found`, `order_not_found`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct NotFound(pub ProblemBody);

/// The record exists with different fields (`exists_with_different_*`,
/// `id_already_failed`, `last_admin_key`), the order's state does not allow
/// the command (`order_is_<state>`), or a request with this
/// Idempotency-Key is still in flight (`idempotency_request_in_flight`,
/// with Retry-After).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
)]
pub struct Conflict(pub ProblemBody);

/// The body exceeds the limit (`body_too_large`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(pub ProblemBody);

/// The body is not JSON: send `Content-Type: application/json`
/// (`unsupported_media_type`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(pub ProblemBody);

/// The ledger rejected the request (its result code, such as
/// `exceeds_credits` or `amount_must_equal_order`), an order field is
/// unusable (`asset_unknown`, `pii_invalid`, `reason_invalid`,
/// `reference_invalid`, `fee_overflows`), a batch is empty or too large
/// (`too_many_events`), or the Idempotency-Key was used for a different
/// request (`idempotency_key_reused`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Unprocessable(pub ProblemBody);

/// The engine failed before answering: a write's outcome is unknown; retry
/// with the same Idempotency-Key (`internal_error`). Or an order's personal
/// data cannot be decrypted with the configured keys (`pii_undecryptable`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct InternalError(pub ProblemBody);

/// The API key has exceeded its request rate (`rate_limited`).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Whole seconds (at least 1) until a request is allowed again"))
)]
pub struct TooManyRequests(pub ProblemBody);

/// Try again later (`overloaded`, `timeout`, `idempotency_store_full`,
/// `shutting_down`), or payment orders are not enabled on this server
/// (`orders_disabled`, without Retry-After).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
)]
pub struct Unavailable(pub ProblemBody);

/// Declares a set of problem responses that the routes' annotations name
/// at once: `responses((status = 200, ...), problem::LookupProblems)`.
macro_rules! problem_set {
    ($(#[$doc:meta])* $name:ident { $($status:literal => $response:ident),* $(,)? }) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
                // References to the components, as `(status = 404, response = NotFound)` makes.
                [$(($status, <$response as ToResponse>::response().0)),*]
                    .into_iter()
                    .map(|(status, name)| (status.to_string(), Ref::from_response_name(name).into()))
                    .collect()
            }
        }
    };
}

problem_set! {
    /// What reading one record can answer besides the record.
    LookupProblems {
        400 => BadRequest, 401 => Unauthorized, 403 => Forbidden, 404 => NotFound, 500 => InternalError,
        503 => Unavailable,
    }
}

problem_set! {
    /// What every route that checks its input and the key's role can
    /// answer (reading a trail or a feed answers nothing else).
    BaseProblems { 400 => BadRequest, 401 => Unauthorized, 403 => Forbidden, 500 => InternalError, 503 => Unavailable }
}

problem_set! {
    /// What listing records can answer besides the page: no 403, since the
    /// page holds only what the key may see.
    ListProblems { 400 => BadRequest, 401 => Unauthorized, 500 => InternalError, 503 => Unavailable }
}

problem_set! {
    /// What a create with a JSON body can answer besides the record.
    CreateProblems {
        400 => BadRequest, 401 => Unauthorized, 403 => Forbidden, 409 => Conflict, 413 => PayloadTooLarge,
        415 => UnsupportedMediaType, 422 => Unprocessable, 500 => InternalError, 503 => Unavailable,
    }
}

problem_set! {
    /// What a command on an existing record can answer besides the record:
    /// those of a create, and 404.
    CommandProblems {
        400 => BadRequest, 401 => Unauthorized, 403 => Forbidden, 404 => NotFound, 409 => Conflict,
        413 => PayloadTooLarge, 415 => UnsupportedMediaType, 422 => Unprocessable, 500 => InternalError,
        503 => Unavailable,
    }
}

impl Problem {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem { status, code: code.into(), detail: detail.into(), field: None, retry_after: None }
    }

    pub fn field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> Problem {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Problem {
        Problem::bad_request("invalid_field", detail).field(field)
    }

    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid API key is required: Authorization: Bearer <key>.",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn overloaded(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", detail).retry_after(1)
    }

    /// The engine failed or went away: the outcome of a write is unknown.
    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", detail)
    }

    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            kind: format!("https://bursar.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_string(),
            status: self.status.as_u16(),
            code: self.code.clone(),
            detail: self.detail.clone(),
            field: self.field.clone(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).expect("a problem body always serializes");
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, Problem>;

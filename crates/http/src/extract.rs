//! Request extractors that turn every kind of bad input into a problem
//! response: the API key, the Idempotency-Key, JSON bodies, query strings
//! and path ids.

use crate::app::App;
use crate::problem::Problem;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bursar_core::service::keys::{ApiKey, Role};
use serde::de::DeserializeOwned;

/// The caller, identified by a valid, active API key.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key: ApiKey,
}

impl Principal {
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.contains(&self.key.role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("the {} role may not do this", self.key.role.name())))
        }
    }

    pub fn require_ledger(&self, ledger: u32) -> Result<(), Problem> {
        if self.key.allows_ledger(ledger) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("this key may not act on ledger {ledger}")))
        }
    }

    pub fn is_scoped(&self) -> bool {
        !self.key.ledgers.is_empty()
    }
}

impl FromRequestParts<App> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(Problem::unauthorized)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .map(str::trim)
            .filter(|t| bursar_server::keys::token_is_plausible(t))
            .ok_or_else(Problem::unauthorized)?;
        let hash = bursar_server::keys::token_hash(token);
        let keys = app.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let key = keys.by_hash(&hash).filter(|k| k.is_active()).ok_or_else(Problem::unauthorized)?;
        let now = app.config.clock.now_nanos();
        if !key.is_usable_at(now) {
            // Only a caller holding the secret learns that it expired.
            return Err(Problem { detail: "The API key has expired.".into(), ..Problem::unauthorized() });
        }
        app.rate_limiter.check(key, now).map_err(rate_limited)?;
        Ok(Principal { key: key.clone() })
    }
}

fn rate_limited(retry_after: u32) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "This API key has exceeded its request rate; retry after the Retry-After seconds.",
    )
    .retry_after(retry_after)
}

/// The `Idempotency-Key` header: 1 to 255 printable ASCII characters.
#[derive(Clone, Debug)]
pub struct IdempotencyKey(pub String);

fn idempotency_key(parts: &Parts) -> Result<Option<IdempotencyKey>, Problem> {
    let Some(v) = parts.headers.get("idempotency-key") else { return Ok(None) };
    let s = v.to_str().map_err(|_| invalid_key())?;
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid_key());
    }
    Ok(Some(IdempotencyKey(s.to_string())))
}

fn invalid_key() -> Problem {
    Problem::bad_request("idempotency_key_invalid", "Idempotency-Key must be 1 to 255 printable ASCII characters")
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        idempotency_key(parts)?.ok_or_else(|| {
            Problem::bad_request("idempotency_key_missing", "every POST needs an Idempotency-Key header")
        })
    }
}

/// An optional `Idempotency-Key` (DELETE); still checked when present.
#[derive(Clone, Debug)]
pub struct MaybeIdempotencyKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeIdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeIdempotencyKey(idempotency_key(parts)?))
    }
}

/// A JSON body whose rejections are problems (400, or 413 when too large).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(json_problem(e)),
        }
    }
}

/// A JSON body that may be left out: no body at all, or JSON `null`, reads
/// as `T::default()`; any other body is checked like [`JsonBody`].
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(e.status(), "body_too_large", "the request body exceeds the limit")
            } else {
                Problem::bad_request("invalid_json", e.body_text())
            }
        })?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(T::default()));
        }
        let mut inner = Request::new(axum::body::Body::from(bytes));
        *inner.headers_mut() = headers;
        let JsonBody(v) = JsonBody::<Option<T>>::from_request(inner, state).await?;
        Ok(OptionalJsonBody(v.unwrap_or_default()))
    }
}

fn json_problem(e: JsonRejection) -> Problem {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::new(status, "body_too_large", "the request body exceeds the limit");
    }
    if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return Problem::new(status, "unsupported_media_type", "send Content-Type: application/json");
    }
    Problem::bad_request("invalid_json", e.body_text())
}

/// Query parameters whose rejections are problems.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(query_problem(e)),
        }
    }
}

fn query_problem(e: QueryRejection) -> Problem {
    Problem::bad_request("invalid_query", e.body_text())
}

/// The `{id}` of a route's path, whose rejections (such as invalid UTF-8
/// after percent-decoding) are problems like any other bad id.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(PathId(id)),
            Err(e) => Err(Problem::invalid_field("id", e.body_text())),
        }
    }
}

/// The route and request id of the request, for envelopes and logs.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let request_id =
            parts.extensions.get::<crate::middleware::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        Ok(RequestContext { request_id })
    }
}

/// What every idempotent write reads from its request besides the body:
/// the caller, the request's context and its `Idempotency-Key` (required,
/// or [`MaybeIdempotencyKey`] on a DELETE), read in that order (the order
/// decides which problem a bad request gets first).
pub struct Writer<K = IdempotencyKey> {
    pub principal: Principal,
    pub ctx: RequestContext,
    pub key: K,
}

impl<K: FromRequestParts<App, Rejection = Problem>> FromRequestParts<App> for Writer<K> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, app).await?;
        let ctx = RequestContext::from_request_parts(parts, app).await?;
        let key = K::from_request_parts(parts, app).await?;
        Ok(Writer { principal, ctx, key })
    }
}

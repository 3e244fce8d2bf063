//! The routes of `/v1` and the operational endpoints.

pub use crate::paths;

pub mod access;
pub mod accounts;
pub mod audit;
pub mod events;
pub mod keys;
pub mod ledgers;
pub mod ops;
pub mod orders;
pub mod transfers;
pub mod webhooks;

use crate::app::App;
use crate::engine_client::WriteContext;
use crate::problem::{ApiResult, Problem};
use crate::results::{Single, single};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bursar_core::Operation;
use serde::Serialize;

/// Marks replayed responses.
fn mark_replayed(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Writes the create of one record and answers: 201 created, 200 exists
/// (both with the stored record), or the result's problem.
async fn write_one<R: bytemuck::Pod + Default, T: Serialize>(
    app: &App,
    w: &WriteContext<'_>,
    op: Operation,
    new: &R,
    render: impl FnOnce(&R) -> T,
) -> ApiResult<Response> {
    let written = app.write(w, op, bytemuck::bytes_of(new).to_vec(), None).await?;
    let stored = || axum::Json(render(&record::<R>(&written.record)));
    let response = match single(op, &written.results) {
        Single::Created => (StatusCode::CREATED, stored()).into_response(),
        Single::Exists => (StatusCode::OK, stored()).into_response(),
        Single::Failed(problem) => problem.into_response(),
    };
    Ok(mark_replayed(response, written.replayed))
}

/// Writes a batch in one log entry and answers 200 with the events that
/// were not ok.
async fn write_batch<R: bytemuck::Pod>(
    app: &App,
    w: &WriteContext<'_>,
    op: Operation,
    records: &[R],
) -> ApiResult<Response> {
    let written = app.write(w, op, bytemuck::cast_slice(records).to_vec(), None).await?;
    let body = crate::results::batch(op, records.len(), &written.results);
    Ok(mark_replayed((StatusCode::OK, axum::Json(body)).into_response(), written.replayed))
}

/// The records of a batch request's `list`, each converted and checked in
/// order; a field problem names its item: `transfers[3].amount`.
fn batch_records<I, R>(
    list: &str,
    items: &[I],
    convert: impl Fn(&I) -> ApiResult<R>,
    check: impl Fn(&R) -> ApiResult<()>,
) -> ApiResult<Vec<R>> {
    check_batch_size(items.len(), list)?;
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let r = convert(item).map_err(|p| prefix_field(p, list, i))?;
        check(&r)?;
        records.push(r);
    }
    Ok(records)
}

/// Names the item of a batch a field problem is in: `transfers[3].amount`.
pub(crate) fn prefix_field(mut p: Problem, list: &str, index: usize) -> Problem {
    p.field = Some(match p.field {
        Some(f) => format!("{list}[{index}].{f}"),
        None => format!("{list}[{index}]"),
    });
    p
}

/// An engine reply a route cannot decode (a bug, or engine and API of
/// different versions): answered 500.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("short {0} reply")]
    Short(&'static str),
    #[error("an {0} reply is not a whole number of records")]
    Ragged(&'static str),
    #[error("{0}")]
    Record(String),
}

impl From<ReplyError> for Problem {
    fn from(e: ReplyError) -> Problem {
        Problem::internal(e.to_string())
    }
}

/// Fixed-size records from an engine reply body.
fn records<T: bytemuck::Pod>(body: &[u8]) -> Vec<T> {
    body.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()
}

/// A record from its stored bytes (the engine sent exactly one).
fn record<T: bytemuck::Pod + Default>(bytes: &[u8]) -> T {
    if bytes.len() == std::mem::size_of::<T>() { bytemuck::pod_read_unaligned(bytes) } else { T::default() }
}

/// Largest page of a list.
pub const PAGE_MAX: u32 = 1000;
pub const PAGE_DEFAULT: u32 = 100;

fn page_limit(limit: Option<u32>) -> Result<u32, Problem> {
    match limit.unwrap_or(PAGE_DEFAULT) {
        l @ 1..=PAGE_MAX => Ok(l),
        _ => {
            Err(Problem::bad_request("invalid_query", format!("limit must be between 1 and {PAGE_MAX}")).field("limit"))
        }
    }
}

/// A numeric page cursor (`next_cursor` of the previous page); none is 0.
fn cursor<T: std::str::FromStr + Default>(cursor: Option<&str>) -> Result<T, Problem> {
    match cursor {
        None => Ok(T::default()),
        Some(c) => c.parse().map_err(|_| Problem::bad_request("invalid_query", "invalid cursor").field("cursor")),
    }
}

/// The audit and access trails span every ledger: readable by admins,
/// auditors and compliance, with keys not restricted to some ledgers.
fn require_trail_reader(principal: &crate::extract::Principal, trail: &str) -> Result<(), Problem> {
    use bursar_core::service::keys::Role;
    principal.require(&[Role::Admin, Role::Auditor, Role::Compliance])?;
    if principal.is_scoped() {
        return Err(Problem::forbidden(format!("the {trail} spans every ledger; this key is restricted to some")));
    }
    Ok(())
}

fn check_batch_size(n: usize, field: &str) -> Result<(), Problem> {
    let max = bursar_core::limits::BATCH_EVENTS_MAX;
    if n == 0 || n > max {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_events",
            format!("a batch holds 1 to {max} events, not {n}"),
        )
        .field(field));
    }
    Ok(())
}

//! The change stream: every committed change as a numbered event, by page
//! (with an optional long-poll wait) or as Server-Sent Events that resume
//! from any sequence. Events span every ledger, so only admins and
//! unrestricted auditors read them.

use super::paths;
use crate::app::App;
use crate::dto_events::{EventBody, decode_page, kinds_mask};
use crate::extract::{Principal, QueryParams};
use crate::problem::{self, ApiResult, Problem};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use bursar_core::Operation;
use bursar_core::events::EventFilter;
use bursar_core::service::keys::Role;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Longest long-poll wait.
const WAIT_MAX_MS: u64 = 30_000;
/// Events per page of the stream.
const STREAM_PAGE: u32 = 1000;
/// Streams open at once; more get 503.
pub const STREAMS_MAX: usize = 256;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events with a larger sequence (default 0: from the first).
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,20}$")]
    pub after: Option<String>,
    /// 1 to 1000, default 100.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Comma-separated types or families: `transfer`, `transfer.posted`,
    /// `order`, `order.completed`, `account`, `ledger`, `key`, `audit`.
    #[param(value_type = String, required = false)]
    pub types: Option<String>,
    /// If nothing is there yet, wait up to this long for an event (long
    /// poll), 0 to 30000 ms; default 0.
    #[param(value_type = u64, required = false, minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this sequence; the `Last-Event-ID` header, sent by a
    /// reconnecting client, takes precedence.
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,20}$")]
    pub after: Option<String>,
    /// As for `GET /v1/events`.
    #[param(value_type = String, required = false)]
    pub types: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPageBody {
    pub data: Vec<EventBody>,
    /// Pass as `after` for the next page (past events a type filter skipped).
    #[schema(value_type = String)]
    pub next_after: String,
}

/// Events after a sequence, oldest first.
#[utoipa::path(get, path = paths::LIST_EVENTS.path, operation_id = "list_events", tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events", body = EventPageBody),
        problem::BaseProblems,
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    principal: Principal,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult<axum::Json<EventPageBody>> {
    require_reader(&principal)?;
    let after = parse_seq(q.after.as_deref(), "after")?;
    let limit = super::page_limit(q.limit)?;
    let kinds = parse_types(q.types.as_deref())?;
    let wait_ms = q.wait_ms.unwrap_or(0);
    if wait_ms > WAIT_MAX_MS {
        return Err(Problem::invalid_field("wait_ms", format!("wait_ms is at most {WAIT_MAX_MS}")));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut tail = app.events_tail.clone();
    let mut from = after;
    loop {
        let (next_after, data) = read_page(&app, from, limit, kinds).await?;
        let expired = tokio::time::Instant::now() >= deadline;
        if !data.is_empty() || expired {
            return Ok(axum::Json(EventPageBody { data, next_after: next_after.to_string() }));
        }
        from = next_after;
        // Nothing yet: sleep until the journal grows past what was read.
        let grown = tail.wait_for(|t| *t > next_after);
        if tokio::time::timeout_at(deadline, grown).await.is_err() {
            return Ok(axum::Json(EventPageBody { data, next_after: next_after.to_string() }));
        }
    }
}

/// Events as Server-Sent Events: `id` is the sequence, `event` the type,
/// `data` the event's JSON. Reconnect with `Last-Event-ID` to resume.
#[utoipa::path(get, path = paths::STREAM_EVENTS.path, operation_id = "stream_events", tag = "events",
    params(StreamQuery),
    responses(
        (status = 200, description = "An endless text/event-stream of events", content_type = "text/event-stream", body = String),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden),
        (status = 503, response = problem::Unavailable),
    ),
    security(("bearer" = [])))]
pub async fn stream(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamQuery>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>> {
    require_reader(&principal)?;
    let last_event_id = headers.get("last-event-id").map(|v| v.to_str().unwrap_or("invalid"));
    let after = match last_event_id {
        Some(id) => parse_seq(Some(id), "Last-Event-ID")?,
        None => parse_seq(q.after.as_deref(), "after")?,
    };
    let kinds = parse_types(q.types.as_deref())?;
    let permit = app
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| Problem::overloaded(format!("at most {STREAMS_MAX} event streams are open at once")))?;
    let state = StreamState { app, after, kinds, pending: Vec::new().into_iter(), _permit: permit };
    let events = futures_util::stream::unfold(state, next_sse);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct StreamState {
    app: App,
    after: u64,
    kinds: u32,
    pending: std::vec::IntoIter<EventBody>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The next SSE event; ends the stream on shutdown or a read error (the
/// client reconnects with `Last-Event-ID`).
async fn next_sse(mut s: StreamState) -> Option<(Result<Event, std::convert::Infallible>, StreamState)> {
    loop {
        if let Some(e) = s.pending.next() {
            let json = serde_json::to_string(&e).expect("invariant: event bodies serialize");
            let sse = Event::default().id(e.seq.to_string()).event(e.event_type.clone()).data(json);
            return Some((Ok(sse), s));
        }
        let (next_after, data) = read_page(&s.app, s.after, STREAM_PAGE, s.kinds).await.ok()?;
        s.after = next_after;
        if data.is_empty() {
            let mut tail = s.app.events_tail.clone();
            let mut stop = s.app.stop.clone();
            tokio::select! {
                r = tail.wait_for(|t| *t > next_after) => { r.ok()?; }
                _ = stop.wait_for(|stopping| *stopping) => return None,
            }
        }
        s.pending = data.into_iter();
    }
}

fn require_reader(principal: &Principal) -> ApiResult<()> {
    principal.require(&[Role::Admin, Role::Auditor])?;
    if principal.is_scoped() {
        return Err(Problem::forbidden("events span every ledger; this key is restricted to some"));
    }
    Ok(())
}

fn parse_seq(s: Option<&str>, field: &str) -> ApiResult<u64> {
    match s {
        None => Ok(0),
        Some(v) => {
            v.parse::<u64>().map_err(|_| Problem::invalid_field(field, format!("{field} must be a sequence number")))
        }
    }
}

fn parse_types(types: Option<&str>) -> ApiResult<u32> {
    types.map_or(Ok(0), |t| kinds_mask(t).map_err(|e| Problem::invalid_field("types", e.to_string())))
}

/// One page from the engine, decoded.
pub async fn read_page(app: &App, after: u64, limit: u32, kinds: u32) -> ApiResult<(u64, Vec<EventBody>)> {
    let filter = EventFilter { after, limit, kinds, reserved: [0; 16] };
    let response = app.read(Operation::GetEvents, bytemuck::bytes_of(&filter).to_vec()).await?;
    let page = decode_page(&response.body).map_err(|e| Problem::internal(e.to_string()))?;
    Ok((page.next_after, page.events))
}

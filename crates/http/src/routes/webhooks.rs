//! Webhooks (admin): subscribe a URL to events, list, delete, read dead
//! letters and replay them. See docs/webhooks.md.

use super::paths;
use super::{mark_replayed, page_limit};
use crate::app::{App, WebhooksApi};
use crate::dto::{OptionalIdempotencyKeyHeader, Page};
use crate::dto_events::{kinds_mask, type_name};
use crate::engine_client::WriteContext;
use crate::extract::{JsonBody, MaybeIdempotencyKey, PathId, Principal, QueryParams, Writer};
use crate::problem::{self, ApiResult, Problem};
use crate::webhooks::delivery::{decode_records, error_kind};
use crate::webhooks::{DestinationError, SECRET_MAX, SECRET_MIN, Target, URL_MAX, generate_secret, secret_aad};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bursar_core::Operation;
use bursar_core::service::keys::Role;
use bursar_core::service::webhooks::{
    CreateWebhookResult, DeadLetter, WebhookCreate, WebhookFilter, WebhookRecord, WebhookUpdate, WebhookUpdateResult,
};
use bursar_core::{EventResult, limits::BATCH_EVENTS_MAX};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Most seqs one replay request names.
pub const REPLAY_SEQS_MAX: usize = 1000;
/// Tries of a create that lost the race for the next id to another create.
const CREATE_TRIES: usize = 3;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where events are POSTed: an http or https URL of at most 2048 bytes
    /// whose host resolves to public addresses (or is allowed by
    /// `--webhook-allow`).
    #[schema(max_length = 2048, example = "https://example.com/bursar-hook")]
    pub url: String,
    /// Event types or families (as `GET /v1/events?types=`); none: every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// The signing secret, 24 to 128 printable ASCII characters; generated
    /// when absent. Returned only in this response.
    #[schema(min_length = 24, max_length = 128)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookBody {
    pub id: u64,
    pub url: String,
    /// The event types delivered (`order` stands for every `order.*`
    /// type); empty: every type.
    pub types: Vec<String>,
    /// Log time of the create, nanoseconds since 1970.
    pub created_at: String,
    pub deleted_at: Option<String>,
    /// Every event up to this seq was delivered (or dead-lettered).
    pub delivered_through: u64,
    pub delivered: u64,
    pub dead_letters: u64,
    /// Dead letters dropped because the list was full (100000 per webhook).
    pub dead_letters_dropped: u64,
    /// Dead letters waiting to be redelivered.
    pub pending_redeliveries: u64,
    /// Only in the response that creates the webhook: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&WebhookRecord> for WebhookBody {
    fn from(r: &WebhookRecord) -> Self {
        WebhookBody {
            id: r.id,
            url: r.url_str().to_string(),
            types: types_of(r.kinds),
            created_at: r.created_at.to_string(),
            deleted_at: (r.deleted_at != 0).then(|| r.deleted_at.to_string()),
            delivered_through: r.cursor,
            delivered: r.delivered,
            dead_letters: r.dead_letters,
            dead_letters_dropped: r.dropped,
            pending_redeliveries: r.redeliveries,
            secret: None,
        }
    }
}

/// The families of a kinds mask (`order`, not each order state).
fn types_of(mask: u32) -> Vec<String> {
    (1..=bursar_core::events::kind::MAX)
        .filter(|k| mask & (1 << k) != 0)
        .filter_map(type_name)
        .map(str::to_string)
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookBody>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterBody {
    pub seq: u64,
    /// Log time it was given up on, nanoseconds since 1970.
    pub dead_at: String,
    pub attempts: u32,
    /// The last HTTP status received, if any.
    pub last_status: Option<u16>,
    /// status, timeout, connection, destination_forbidden, tls or dns.
    pub last_error: String,
}

impl From<&DeadLetter> for DeadLetterBody {
    fn from(d: &DeadLetter) -> Self {
        DeadLetterBody {
            seq: d.seq,
            dead_at: d.dead_at.to_string(),
            attempts: d.attempts,
            last_status: (d.status != 0).then_some(d.status),
            last_error: error_kind::name(d.error).to_string(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The dead letters to redeliver (at most 1000); absent: all of them.
    #[serde(default)]
    pub seqs: Option<Vec<u64>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplayBody {
    /// Dead letters queued for redelivery.
    pub queued: u64,
    /// Seqs asked for that are not dead letters of this webhook.
    pub not_found: Vec<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// 1 to 1000, default 100.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page (the last seq seen).
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,20}$")]
    pub cursor: Option<String>,
}

fn api(app: &App) -> Result<Arc<WebhooksApi>, Problem> {
    app.config.webhooks.clone().ok_or_else(|| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "webhooks_disabled", "webhooks are not enabled on this server")
    })
}

fn parse_id(id: &str) -> Result<u64, Problem> {
    id.parse()
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| Problem::invalid_field("id", "a webhook id is a decimal number"))
}

async fn read_all(app: &App, id: u64) -> Result<(u64, Vec<WebhookRecord>), Problem> {
    let filter = WebhookFilter { id, ..Default::default() };
    let response = app.read(Operation::ListWebhooks, bytemuck::bytes_of(&filter).to_vec()).await?;
    decode_records(&response.body).map_err(|e| Problem::internal(e.to_string()))
}

async fn read_one(app: &App, id: u64) -> Result<WebhookRecord, Problem> {
    read_all(app, id)
        .await?
        .1
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| Problem::not_found(format!("no webhook has id {id}")))
}

fn forbidden(e: DestinationError) -> Problem {
    match e {
        DestinationError::Invalid(why) => Problem::invalid_field("url", why),
        DestinationError::Forbidden(why) => Problem::bad_request("destination_forbidden", why).field("url"),
        DestinationError::Unresolved(why) => Problem::bad_request("destination_unresolved", why).field("url"),
    }
}

fn update_problem(code: u32, id: u64) -> Problem {
    match WebhookUpdateResult::from_code(code) {
        Some(WebhookUpdateResult::WebhookNotFound) => Problem::not_found(format!("no live webhook has id {id}")),
        Some(c) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, c.name(), c.description()),
        None => Problem::internal(format!("unknown result code {code}")),
    }
}

/// Subscribe a URL to events (admin). The signing secret is in this
/// response only.
#[utoipa::path(post, path = paths::CREATE_WEBHOOK.path, operation_id = "create_webhook", tag = "webhooks",
    request_body = WebhookRequest, params(OptionalIdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created; the secret is shown only here (not on a replay)", body = WebhookBody),
        problem::BaseProblems,
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    Writer { principal, ctx, key: MaybeIdempotencyKey(key) }: Writer<MaybeIdempotencyKey>,
    JsonBody(req): JsonBody<WebhookRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    let api = api(&app)?;
    if req.url.len() > URL_MAX {
        return Err(Problem::invalid_field("url", format!("the URL is longer than {URL_MAX} bytes")));
    }
    let target = Target::parse(&req.url).map_err(forbidden)?;
    api.policy.resolve(&target).await.map_err(forbidden)?;
    if req.types.len() > 64 {
        return Err(Problem::invalid_field("types", "at most 64 types"));
    }
    let kinds = kinds_mask(&req.types.join(",")).map_err(|e| Problem::invalid_field("types", e.to_string()))?;
    let secret = match &req.secret {
        Some(s) if (SECRET_MIN..=SECRET_MAX).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => s.clone(),
        Some(_) => {
            return Err(Problem::invalid_field(
                "secret",
                format!("the secret must be {SECRET_MIN} to {SECRET_MAX} printable ASCII characters"),
            ));
        }
        None => generate_secret().map_err(|e| Problem::internal(e.to_string()))?,
    };
    // What the idempotency fingerprint covers: never the secret itself (a
    // generated one differs on every try), only whether it was chosen and
    // a hash of it.
    let canonical = serde_json::to_vec(&(
        &req.url,
        kinds,
        req.secret.as_ref().map(|s| blake3::hash(s.as_bytes()).to_hex().to_string()),
    ))
    .map_err(|e| Problem::internal(e.to_string()))?;
    let request_ref = match &key {
        Some(k) => crate::engine_client::scope(principal.key.id, &k.0),
        None => {
            let mut r = [0u8; 16];
            getrandom::fill(&mut r).map_err(|e| Problem::internal(e.to_string()))?;
            r
        }
    };
    let route = paths::CREATE_WEBHOOK;
    let w = WriteContext::new(&principal, &ctx, route, key.as_ref());
    // Creates run one at a time so the id read is still the next one when
    // the create applies: the secret is sealed for exactly that id.
    let _one_at_a_time = api.create_lock.lock().await;
    for _ in 0..CREATE_TRIES {
        let (next_id, _) = read_all(&app, u64::MAX).await?;
        let sealed = api.keyring.seal(&secret_aad(next_id), secret.as_bytes()).map_err(|e| {
            tracing::error!(error = %e, "sealing a webhook secret failed");
            Problem::internal("the secret could not be sealed")
        })?;
        let event = WebhookCreate::new(next_id, kinds, request_ref, &req.url, &sealed)
            .ok_or_else(|| Problem::internal("the sealed secret does not fit"))?;
        let written =
            app.write(&w, Operation::CreateWebhooks, bytemuck::bytes_of(&event).to_vec(), Some(&canonical)).await?;
        let code = written.results.first().map(|r: &EventResult| r.code);
        let response = match code.map(CreateWebhookResult::from_code) {
            None => {
                let all = read_all(&app, 0).await?.1;
                let Some(record) = all.iter().rev().find(|r| r.request_ref == request_ref) else {
                    return Err(Problem::internal("the created webhook is missing"));
                };
                let mut body = WebhookBody::from(record);
                if !written.replayed {
                    body.secret = Some(secret.clone());
                }
                (StatusCode::CREATED, axum::Json(body)).into_response()
            }
            Some(Some(CreateWebhookResult::WebhookIdMismatch)) if !written.replayed && key.is_none() => continue,
            Some(Some(CreateWebhookResult::WebhooksLimitReached)) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "webhooks_limit_reached",
                CreateWebhookResult::WebhooksLimitReached.description(),
            )
            .into_response(),
            Some(Some(c)) => {
                let status = if c == CreateWebhookResult::WebhookIdMismatch {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                Problem::new(status, c.name(), c.description()).into_response()
            }
            Some(None) => Problem::internal("unknown result code").into_response(),
        };
        return Ok(mark_replayed(response, written.replayed));
    }
    Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "webhook_id_mismatch", "concurrent creates; retry")
        .retry_after(1))
}

/// List webhooks (admin), deleted ones included; secrets are never shown.
#[utoipa::path(get, path = paths::LIST_WEBHOOKS.path, operation_id = "list_webhooks", tag = "webhooks",
    responses(
        (status = 200, description = "Every webhook", body = WebhookList),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden),
        (status = 500, response = problem::InternalError),
        (status = 503, response = problem::Unavailable),
    ),
    security(("bearer" = [])))]
pub async fn list(State(app): State<App>, principal: Principal) -> ApiResult<axum::Json<WebhookList>> {
    principal.require(&[Role::Admin])?;
    api(&app)?;
    let (_, records) = read_all(&app, 0).await?;
    Ok(axum::Json(WebhookList { data: records.iter().map(WebhookBody::from).collect() }))
}

/// One webhook (admin).
#[utoipa::path(get, path = paths::GET_WEBHOOK.path, operation_id = "get_webhook", tag = "webhooks",
    params(("id" = u64, Path, description = "The webhook's id", example = 1)),
    responses(
        (status = 200, description = "The webhook", body = WebhookBody),
        problem::LookupProblems,
    ),
    security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<App>,
    principal: Principal,
    PathId(id): PathId,
) -> ApiResult<axum::Json<WebhookBody>> {
    principal.require(&[Role::Admin])?;
    api(&app)?;
    let id = parse_id(&id)?;
    Ok(axum::Json(WebhookBody::from(&read_one(&app, id).await?)))
}

/// Delete a webhook (admin): deliveries stop and its dead letters go.
#[utoipa::path(delete, path = paths::DELETE_WEBHOOK.path, operation_id = "delete_webhook", tag = "webhooks",
    params(("id" = u64, Path, description = "The webhook's id", example = 1), OptionalIdempotencyKeyHeader),
    responses(
        (status = 200, description = "The deleted webhook", body = WebhookBody),
        problem::LookupProblems,
        (status = 422, response = problem::Unprocessable),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(app): State<App>,
    Writer { principal, ctx, key: MaybeIdempotencyKey(key) }: Writer<MaybeIdempotencyKey>,
    PathId(id): PathId,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    api(&app)?;
    let id = parse_id(&id)?;
    let event = WebhookUpdate { id, ..Default::default() };
    let w = WriteContext::new(&principal, &ctx, paths::DELETE_WEBHOOK, key.as_ref());
    let written = app.write(&w, Operation::DeleteWebhooks, bytemuck::bytes_of(&event).to_vec(), None).await?;
    let response = match written.results.first() {
        Some(r) => update_problem(r.code, id).into_response(),
        None => (StatusCode::OK, axum::Json(WebhookBody::from(&read_one(&app, id).await?))).into_response(),
    };
    Ok(mark_replayed(response, written.replayed))
}

/// A webhook's dead letters by seq (admin).
#[utoipa::path(get, path = paths::LIST_DEAD_LETTERS.path, operation_id = "list_dead_letters", tag = "webhooks",
    params(("id" = u64, Path, description = "The webhook's id", example = 1), DeadLetterQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = Page<DeadLetterBody>),
        problem::LookupProblems,
    ),
    security(("bearer" = [])))]
pub async fn dead_letters(
    State(app): State<App>,
    principal: Principal,
    PathId(id): PathId,
    QueryParams(q): QueryParams<DeadLetterQuery>,
) -> ApiResult<axum::Json<Page<DeadLetterBody>>> {
    principal.require(&[Role::Admin])?;
    api(&app)?;
    let id = parse_id(&id)?;
    read_one(&app, id).await?;
    let limit = page_limit(q.limit)?;
    let after = super::cursor(q.cursor.as_deref())?;
    let filter = WebhookFilter { id, after, limit, redeliveries: 0 };
    let response = app.read(Operation::ListDeadLetters, bytemuck::bytes_of(&filter).to_vec()).await?;
    let v: Vec<DeadLetter> = response.body.chunks_exact(DeadLetter::SIZE).map(bytemuck::pod_read_unaligned).collect();
    let next_cursor = (v.len() == limit as usize).then(|| v.last().map(|d| d.seq.to_string())).flatten();
    Ok(axum::Json(Page { data: v.iter().map(DeadLetterBody::from).collect(), next_cursor }))
}

/// Redeliver dead letters (admin): all of them, or the `seqs` named.
/// Redeliveries go out beside the in-order stream; one that fails for the
/// whole retry period is a dead letter again.
#[utoipa::path(post, path = paths::REPLAY_WEBHOOK.path, operation_id = "replay_webhook", tag = "webhooks",
    request_body = ReplayRequest,
    params(("id" = u64, Path, description = "The webhook's id", example = 1), OptionalIdempotencyKeyHeader),
    responses(
        (status = 202, description = "Queued for redelivery", body = ReplayBody),
        problem::LookupProblems,
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 422, response = problem::Unprocessable),
    ),
    security(("bearer" = [])))]
pub async fn replay(
    State(app): State<App>,
    Writer { principal, ctx, key: MaybeIdempotencyKey(key) }: Writer<MaybeIdempotencyKey>,
    PathId(id): PathId,
    JsonBody(req): JsonBody<ReplayRequest>,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin])?;
    api(&app)?;
    let id = parse_id(&id)?;
    let before = read_one(&app, id).await?;
    let events: Vec<WebhookUpdate> = match &req.seqs {
        None => vec![WebhookUpdate { id, seq: 0, ..Default::default() }],
        Some(seqs) if seqs.is_empty() || seqs.len() > REPLAY_SEQS_MAX.min(BATCH_EVENTS_MAX) => {
            return Err(Problem::invalid_field("seqs", format!("1 to {REPLAY_SEQS_MAX} seqs")));
        }
        Some(seqs) if seqs.contains(&0) => return Err(Problem::invalid_field("seqs", "seqs start at 1")),
        Some(seqs) => seqs.iter().map(|seq| WebhookUpdate { id, seq: *seq, ..Default::default() }).collect(),
    };
    let w = WriteContext::new(&principal, &ctx, paths::REPLAY_WEBHOOK, key.as_ref());
    let written = app.write(&w, Operation::ReplayDeadLetters, bytemuck::cast_slice(&events).to_vec(), None).await?;
    let mut not_found = Vec::new();
    for r in &written.results {
        match WebhookUpdateResult::from_code(r.code) {
            Some(WebhookUpdateResult::DeadLetterNotFound) => not_found.push(events[r.index as usize].seq),
            _ => return Ok(mark_replayed(update_problem(r.code, id).into_response(), written.replayed)),
        }
    }
    let queued = match &req.seqs {
        None => before.dead_letters,
        Some(_) => (events.len() - not_found.len()) as u64,
    };
    let body = ReplayBody { queued, not_found };
    Ok(mark_replayed((StatusCode::ACCEPTED, axum::Json(body)).into_response(), written.replayed))
}

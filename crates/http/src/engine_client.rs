//! Talking to the engine: reads, and writes wrapped in an envelope with the
//! idempotency scope and the audit facts. An in-flight set refuses a second
//! request with the same idempotency scope while the first is running.

use crate::app::AppState;
use crate::extract::{IdempotencyKey, Principal};
use crate::problem::Problem;
use axum::http::StatusCode;
use bursar_core::machine::Outcome;
use bursar_core::{EventResult, Operation};
use bursar_proto::RequestOp;
use bursar_server::handle::EngineError;
use bursar_server::message::{OwnedEnvelope, Response};

/// What a write produced.
pub struct Written {
    pub results: Vec<EventResult>,
    /// The stored record of a single-event create (empty if none).
    pub record: Vec<u8>,
    pub replayed: bool,
}

/// The identity of one HTTP write, for its envelope.
pub struct WriteContext<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a str,
    /// For example `POST /v1/transfers`: the route's name from the table.
    pub route: &'static str,
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

impl<'a> WriteContext<'a> {
    pub fn new(
        principal: &'a Principal,
        ctx: &'a crate::extract::RequestContext,
        route: crate::paths::Route,
        idempotency_key: Option<&'a IdempotencyKey>,
    ) -> WriteContext<'a> {
        WriteContext { principal, request_id: &ctx.request_id, route: route.name, idempotency_key }
    }
}

impl AppState {
    /// A read, answered once everything it reflects is durable.
    pub async fn read(&self, op: Operation, body: Vec<u8>) -> Result<Response, Problem> {
        let response = self.call(RequestOp::Op(op), body, None).await?;
        if response.status == bursar_proto::ProtocolError::InvalidFilter.code() {
            let detail = String::from_utf8_lossy(&response.body).into_owned();
            return Err(Problem::bad_request("invalid_query", detail));
        }
        check_status(&response)?;
        Ok(response)
    }

    /// Succeeds once the engine answers (it is ready and durable).
    pub async fn ping(&self) -> Result<(), Problem> {
        let response = self.call(RequestOp::Ping, Vec::new(), None).await?;
        check_status(&response)
    }

    /// A write. The fingerprint hashes the request in a canonical form: the
    /// binary records it became, or `canonical` when those hold generated
    /// values (a new key's secret). So JSON formatting does not matter.
    pub async fn write(
        &self,
        ctx: &WriteContext<'_>,
        op: Operation,
        body: Vec<u8>,
        canonical: Option<&[u8]>,
    ) -> Result<Written, Problem> {
        let idempotency = ctx
            .idempotency_key
            .map(|k| (scope(ctx.principal.key.id, &k.0), fingerprint(ctx.route, canonical.unwrap_or(&body))));
        let _guard = match idempotency {
            Some((scope, _)) => Some(InFlight::enter(self, scope)?),
            None => None,
        };
        let envelope = OwnedEnvelope {
            key_id: ctx.principal.key.id,
            idempotency,
            retention_seconds: u32::try_from(self.config.idempotency_retention.as_secs()).unwrap_or(u32::MAX),
            idempotency_limit: self.config.idempotency_max_records,
            request_id: ctx.request_id.to_string(),
            route: ctx.route.to_string(),
            idempotency_key: ctx.idempotency_key.map(|k| k.0.clone()).unwrap_or_default(),
        };
        let response = self.call(RequestOp::Op(op), body, Some(envelope)).await?;
        check_status(&response)?;
        let outcome = match (&response.outcome, idempotency.is_some()) {
            (_, false) => "none",
            (Outcome::Executed, true) => "executed",
            (Outcome::Replayed { .. }, _) => "replayed",
            (Outcome::Conflict, _) => "conflict",
            (Outcome::Refused, _) => "refused",
        };
        metrics::counter!("bursar_idempotency_total", "outcome" => outcome).increment(1);
        let replayed = match response.outcome {
            Outcome::Executed => false,
            Outcome::Replayed { .. } => true,
            Outcome::Conflict => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                ));
            }
            Outcome::Refused => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "idempotency_store_full",
                    "the idempotency store is full until old records expire",
                )
                .retry_after(60));
            }
        };
        let results = response.body.chunks_exact(EventResult::SIZE).map(bytemuck::pod_read_unaligned).collect();
        Ok(Written { results, record: response.record, replayed })
    }

    async fn call(&self, op: RequestOp, body: Vec<u8>, envelope: Option<OwnedEnvelope>) -> Result<Response, Problem> {
        self.engine.call(op, body, envelope).await.map_err(|e| match e {
            EngineError::QueueFull(_) => Problem::overloaded("the engine's queue is full; retry later"),
            EngineError::Stopped => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping").retry_after(1)
            }
            // Retrying with the same Idempotency-Key is safe: it finds the write if it landed.
            EngineError::NoReply { .. } => {
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", e.to_string()).retry_after(1)
            }
            EngineError::Dropped | EngineError::Refused { .. } => Problem::internal(e.to_string()),
        })
    }
}

fn check_status(r: &Response) -> Result<(), Problem> {
    if r.status == 0 {
        return Ok(());
    }
    let detail = String::from_utf8_lossy(&r.body).into_owned();
    Err(match bursar_proto::ProtocolError::from_code(r.status) {
        Some(bursar_proto::ProtocolError::ServerBusy) => Problem::overloaded(detail),
        Some(bursar_proto::ProtocolError::ShuttingDown) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail).retry_after(1)
        }
        // Retrying with the same Idempotency-Key is safe: it finds the write if it landed.
        Some(bursar_proto::ProtocolError::OutcomeUnknown) => {
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", detail).retry_after(1)
        }
        // Nothing was applied: a retry (same Idempotency-Key) is safe.
        Some(bursar_proto::ProtocolError::NotApplied) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_applied", detail).retry_after(1)
        }
        _ => Problem::internal(detail),
    })
}

/// The idempotency scope: the API key and the client's key.
pub fn scope(key_id: u64, idempotency_key: &str) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"bursar-idempotency-scope");
    h.update(&key_id.to_le_bytes());
    h.update(idempotency_key.as_bytes());
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// The request fingerprint: route and canonical parsed body.
pub fn fingerprint(route: &str, canonical: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"bursar-idempotency-fingerprint");
    h.update(&(route.len() as u64).to_le_bytes());
    h.update(route.as_bytes());
    h.update(canonical);
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// Marks an idempotency scope as in flight until dropped.
struct InFlight<'a> {
    app: &'a AppState,
    scope: [u8; 16],
}

impl<'a> InFlight<'a> {
    fn enter(app: &'a AppState, scope: [u8; 16]) -> Result<InFlight<'a>, Problem> {
        let mut set = app.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(scope) {
            metrics::counter!("bursar_idempotency_total", "outcome" => "in_flight").increment(1);
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency_request_in_flight",
                "a request with this Idempotency-Key is still being processed; retry after it finishes",
            )
            .retry_after(1));
        }
        Ok(InFlight { app, scope })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.app.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.scope);
    }
}

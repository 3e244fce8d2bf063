//! The access trail (admin, auditors and compliance not restricted to
//! ledgers): personal-data reads and 401/403 refusals (see `crate::access`).

use super::paths;
use super::{ReplyError, page_limit};
use crate::app::App;
use crate::dto::{AccessBody, Page};
use crate::extract::{Principal, QueryParams};
use crate::problem::{self, ApiResult, Problem};
use axum::extract::State;
use bursar_core::Operation;
use bursar_core::service::access::{AccessFilter, AccessKind, AccessRecord};
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccessQuery {
    /// Only records of this kind: pii_read, unauthorized, forbidden or dropped.
    #[param(value_type = String, required = false)]
    pub kind: Option<String>,
    /// 1 to 1000, default 100.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,20}$")]
    pub cursor: Option<String>,
}

/// Access records in order: who read decrypted personal data, and every
/// refused request (aggregated per client per second, with a count).
#[utoipa::path(get, path = paths::LIST_ACCESS_LOG.path, operation_id = "list_access_log", tag = "audit",
    params(AccessQuery),
    responses(
        (status = 200, description = "A page of access records", body = Page<AccessBody>),
        problem::BaseProblems,
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    principal: Principal,
    QueryParams(q): QueryParams<AccessQuery>,
) -> ApiResult<axum::Json<Page<AccessBody>>> {
    super::require_trail_reader(&principal, "access trail")?;
    let limit = page_limit(q.limit)?;
    let kind = match q.kind.as_deref() {
        None => 0,
        Some(name) => AccessKind::from_name(name).ok_or_else(|| {
            Problem::bad_request("invalid_query", format!("unknown access kind {name:?}")).field("kind")
        })? as u8,
    };
    let after_seq = super::cursor::<u64>(q.cursor.as_deref())?;
    let filter = AccessFilter { after_seq, limit, kind, reserved: [0; 3] };
    let response = app.read(Operation::ListAccess, bytemuck::bytes_of(&filter).to_vec()).await?;
    let (scanned_to, records) = decode(&response.body)?;
    // A kind filter scans a bounded window: a short page may still have a next one.
    let window_done = kind != 0 && scanned_to >= after_seq.saturating_add(u64::from(limit) * 64);
    let next_cursor = (records.len() == limit as usize || window_done).then(|| scanned_to.to_string());
    Ok(axum::Json(Page { data: records.iter().map(AccessBody::from).collect(), next_cursor }))
}

/// `scanned_to: u64`, then fixed-size records, as the engine sends them.
fn decode(body: &[u8]) -> Result<(u64, Vec<AccessRecord>), ReplyError> {
    let head = body.get(..8).ok_or(ReplyError::Short("access"))?;
    let rest = &body[8..];
    if !rest.len().is_multiple_of(AccessRecord::SIZE) {
        return Err(ReplyError::Ragged("access"));
    }
    let scanned_to = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    Ok((scanned_to, rest.chunks_exact(AccessRecord::SIZE).map(bytemuck::pod_read_unaligned).collect()))
}

//! The audit trail (admin, auditors and compliance not restricted to ledgers).

use super::page_limit;
use crate::app::App;
use crate::dto::{AuditBody, Page};
use crate::extract::{Principal, QueryParams};
use crate::problem::{self, ApiResult, Problem};
use axum::extract::State;
use bursar_core::Operation;
use bursar_core::command::AuditFilter;
use bursar_core::service::audit::AuditRecord;
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1 to 1000, default 100.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page (the last seq seen).
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,20}$")]
    pub cursor: Option<String>,
}

/// Audit records in order, each chained to the one before by its hash.
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit records", body = Page<AuditBody>),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::Forbidden),
        (status = 500, response = problem::InternalError),
        (status = 503, response = problem::Unavailable),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    principal: Principal,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<axum::Json<Page<AuditBody>>> {
    super::require_trail_reader(&principal, "audit trail")?;
    let limit = page_limit(q.limit)?;
    let after_seq = super::cursor::<u64>(q.cursor.as_deref())?;
    let filter = AuditFilter { after_seq, limit, reserved: 0 };
    let response = app.read(Operation::ListAudit, bytemuck::bytes_of(&filter).to_vec()).await?;
    let records = decode_records(&response.body).map_err(Problem::internal)?;
    let next_cursor = (records.len() == limit as usize).then(|| records.last().map(|r| r.seq.to_string())).flatten();
    Ok(axum::Json(Page { data: records.iter().map(AuditBody::from).collect(), next_cursor }))
}

/// Length-prefixed encoded records, as the engine sends them.
fn decode_records(mut body: &[u8]) -> Result<Vec<AuditRecord>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = body
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("short audit reply")?;
        let record = body.get(4..4 + len).ok_or("short audit reply")?;
        out.push(AuditRecord::decode(record).map_err(|e| e.to_string())?);
        body = &body[4 + len..];
    }
    Ok(out)
}

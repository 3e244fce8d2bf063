//! JSON shapes of the API and their conversion to and from the core's
//! records. Ids and amounts are strings (u128 does not fit a JSON number in
//! most languages); ids may be decimal or UUIDs.

use crate::problem::{ApiResult, Problem};
use bursar_core::records::{account_flags as AF, transfer_flags as TF};
use bursar_core::{Account, BalanceRecord, Ledger, Transfer};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A u128 id from a decimal string or a UUID.
pub fn parse_id(field: &str, s: &str) -> ApiResult<u128> {
    if s.len() == 36 && s.as_bytes().get(8) == Some(&b'-') {
        return uuid::Uuid::try_parse(s)
            .map(|u| u.as_u128())
            .map_err(|_| Problem::invalid_field(field, format!("{field} is not a valid UUID")));
    }
    parse_decimal(field, s)
}

/// A u128 from decimal digits only: no sign, spaces, exponent or fraction.
pub fn parse_decimal(field: &str, s: &str) -> ApiResult<u128> {
    if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::invalid_field(field, format!("{field} must be a decimal string of at most 39 digits")));
    }
    s.parse::<u128>().map_err(|_| Problem::invalid_field(field, format!("{field} exceeds 2^128 - 1")))
}

fn parse_u64(field: &str, s: &str) -> ApiResult<u64> {
    let v = parse_decimal(field, s)?;
    u64::try_from(v).map_err(|_| Problem::invalid_field(field, format!("{field} exceeds 2^64 - 1")))
}

const ACCOUNT_FLAGS: [(&str, u16); 5] = [
    ("linked", AF::LINKED),
    ("debits_must_not_exceed_credits", AF::DEBITS_MUST_NOT_EXCEED_CREDITS),
    ("credits_must_not_exceed_debits", AF::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ("history", AF::HISTORY),
    ("closed", AF::CLOSED),
];

const TRANSFER_FLAGS: [(&str, u16); 8] = [
    ("linked", TF::LINKED),
    ("pending", TF::PENDING),
    ("post_pending", TF::POST_PENDING),
    ("void_pending", TF::VOID_PENDING),
    ("balancing_debit", TF::BALANCING_DEBIT),
    ("balancing_credit", TF::BALANCING_CREDIT),
    ("closing_debit", TF::CLOSING_DEBIT),
    ("closing_credit", TF::CLOSING_CREDIT),
];

fn parse_flags(names: &[String], table: &[(&str, u16)], field: &str) -> ApiResult<u16> {
    let mut flags = 0;
    for (i, name) in names.iter().enumerate() {
        let bit = table
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| Problem::invalid_field(&format!("{field}[{i}]"), format!("unknown flag {name:?}")))?;
        flags |= bit;
    }
    Ok(flags)
}

fn flag_names(flags: u16, table: &[(&'static str, u16)]) -> Vec<String> {
    table.iter().filter(|(_, b)| flags & b != 0).map(|(n, _)| n.to_string()).collect()
}

// ---------------------------------------------------------------- ledgers

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerRequest {
    pub id: u32,
    /// ISO 4217 or custom: 1–16 of A-Z 0-9 _ - . starting with a letter.
    pub asset: String,
    /// Digits of one minor unit, 0–38.
    pub scale: u8,
}

impl LedgerRequest {
    pub fn to_record(&self) -> ApiResult<Ledger> {
        let asset = Ledger::pack_asset(&self.asset).ok_or_else(|| {
            Problem::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "asset_invalid", "the asset code is invalid")
                .field("asset")
        })?;
        Ok(Ledger { id: self.id, scale: self.scale, asset, ..Default::default() })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerBody {
    pub id: u32,
    pub asset: String,
    pub scale: u8,
    pub timestamp: String,
}

impl From<&Ledger> for LedgerBody {
    fn from(l: &Ledger) -> Self {
        LedgerBody {
            id: l.id,
            asset: l.asset_str().unwrap_or_default().to_string(),
            scale: l.scale,
            timestamp: l.timestamp.to_string(),
        }
    }
}

// ---------------------------------------------------------------- accounts

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    /// Decimal or UUID.
    pub id: String,
    pub ledger: u32,
    pub code: u16,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_128: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_32: Option<u32>,
}

impl AccountRequest {
    pub fn to_record(&self) -> ApiResult<Account> {
        Ok(Account {
            id: parse_id("id", &self.id)?,
            ledger: self.ledger,
            code: self.code,
            flags: parse_flags(&self.flags, &ACCOUNT_FLAGS, "flags")?,
            user_data_128: self
                .user_data_128
                .as_deref()
                .map(|s| parse_decimal("user_data_128", s))
                .transpose()?
                .unwrap_or(0),
            user_data_64: self.user_data_64.as_deref().map(|s| parse_u64("user_data_64", s)).transpose()?.unwrap_or(0),
            user_data_32: self.user_data_32.unwrap_or(0),
            ..Default::default()
        })
    }
}

/// An account as created: only the fields that never change, so a replayed
/// response is always identical to the original.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountCreated {
    pub id: String,
    pub ledger: u32,
    pub code: u16,
    pub flags: Vec<String>,
    pub user_data_128: String,
    pub user_data_64: String,
    pub user_data_32: u32,
    pub timestamp: String,
}

impl From<&Account> for AccountCreated {
    fn from(a: &Account) -> Self {
        AccountCreated {
            id: a.id.to_string(),
            ledger: a.ledger,
            code: a.code,
            flags: flag_names(a.flags & !AF::CLOSED, &ACCOUNT_FLAGS),
            user_data_128: a.user_data_128.to_string(),
            user_data_64: a.user_data_64.to_string(),
            user_data_32: a.user_data_32,
            timestamp: a.timestamp.to_string(),
        }
    }
}

/// An account now, with its balances.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountBody {
    pub id: String,
    pub ledger: u32,
    pub code: u16,
    pub flags: Vec<String>,
    pub user_data_128: String,
    pub user_data_64: String,
    pub user_data_32: u32,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
    pub timestamp: String,
}

impl From<&Account> for AccountBody {
    fn from(a: &Account) -> Self {
        AccountBody {
            id: a.id.to_string(),
            ledger: a.ledger,
            code: a.code,
            flags: flag_names(a.flags, &ACCOUNT_FLAGS),
            user_data_128: a.user_data_128.to_string(),
            user_data_64: a.user_data_64.to_string(),
            user_data_32: a.user_data_32,
            debits_pending: a.debits_pending.to_string(),
            debits_posted: a.debits_posted.to_string(),
            credits_pending: a.credits_pending.to_string(),
            credits_posted: a.credits_posted.to_string(),
            timestamp: a.timestamp.to_string(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountBatchRequest {
    pub accounts: Vec<AccountRequest>,
}

// ---------------------------------------------------------------- transfers

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Decimal or UUID.
    pub id: String,
    /// Required except for post_pending/void_pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debit_account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_account_id: Option<String>,
    /// Minor units. Omit on post_pending to post the full pending amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<String>,
    /// Seconds until a pending transfer expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_128: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_32: Option<u32>,
}

impl TransferRequest {
    pub fn to_record(&self) -> ApiResult<Transfer> {
        let flags = parse_flags(&self.flags, &TRANSFER_FLAGS, "flags")?;
        let optional_id = |field: &str, v: &Option<String>| v.as_deref().map(|s| parse_id(field, s)).transpose();
        let amount = match self.amount.as_deref() {
            Some(s) => parse_decimal("amount", s)?,
            None if flags & TF::POST_PENDING != 0 => u128::MAX,
            None if flags & TF::VOID_PENDING != 0 => 0,
            None => return Err(Problem::invalid_field("amount", "amount is required")),
        };
        Ok(Transfer {
            id: parse_id("id", &self.id)?,
            debit_account_id: optional_id("debit_account_id", &self.debit_account_id)?.unwrap_or(0),
            credit_account_id: optional_id("credit_account_id", &self.credit_account_id)?.unwrap_or(0),
            amount,
            pending_id: optional_id("pending_id", &self.pending_id)?.unwrap_or(0),
            user_data_128: self
                .user_data_128
                .as_deref()
                .map(|s| parse_decimal("user_data_128", s))
                .transpose()?
                .unwrap_or(0),
            user_data_64: self.user_data_64.as_deref().map(|s| parse_u64("user_data_64", s)).transpose()?.unwrap_or(0),
            user_data_32: self.user_data_32.unwrap_or(0),
            timeout: self.timeout.unwrap_or(0),
            ledger: self.ledger.unwrap_or(0),
            code: self.code.unwrap_or(0),
            flags,
            timestamp: 0,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TransferBody {
    pub id: String,
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount: String,
    pub pending_id: String,
    pub ledger: u32,
    pub code: u16,
    pub flags: Vec<String>,
    pub timeout: u32,
    pub user_data_128: String,
    pub user_data_64: String,
    pub user_data_32: u32,
    pub timestamp: String,
}

impl From<&Transfer> for TransferBody {
    fn from(t: &Transfer) -> Self {
        TransferBody {
            id: t.id.to_string(),
            debit_account_id: t.debit_account_id.to_string(),
            credit_account_id: t.credit_account_id.to_string(),
            amount: t.amount.to_string(),
            pending_id: t.pending_id.to_string(),
            ledger: t.ledger,
            code: t.code,
            flags: flag_names(t.flags, &TRANSFER_FLAGS),
            timeout: t.timeout,
            user_data_128: t.user_data_128.to_string(),
            user_data_64: t.user_data_64.to_string(),
            user_data_32: t.user_data_32,
            timestamp: t.timestamp.to_string(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBatchRequest {
    pub transfers: Vec<TransferRequest>,
}

// ---------------------------------------------------------------- results

/// The outcome of a batch: only the events that were not `ok`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    /// Events applied.
    pub accepted: u32,
    pub results: Vec<EventError>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventError {
    pub index: u32,
    pub code: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

// ---------------------------------------------------------------- queries

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BalanceBody {
    pub timestamp: String,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
}

impl From<&BalanceRecord> for BalanceBody {
    fn from(b: &BalanceRecord) -> Self {
        BalanceBody {
            timestamp: b.timestamp.to_string(),
            debits_pending: b.debits_pending.to_string(),
            debits_posted: b.debits_posted.to_string(),
            credits_pending: b.credits_pending.to_string(),
            credits_posted: b.credits_posted.to_string(),
        }
    }
}

/// A page of results; pass `next_cursor` back as `cursor` for the next.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- keys

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// admin, operator or auditor.
    pub role: String,
    /// Restrict the key to these ledgers (operator and auditor only).
    #[serde(default)]
    pub ledgers: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyBody {
    pub id: u64,
    pub role: String,
    pub ledgers: Vec<u32>,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub active: bool,
    /// Only in the response that creates the key: shown once, never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&bursar_core::service::keys::ApiKey> for KeyBody {
    fn from(k: &bursar_core::service::keys::ApiKey) -> Self {
        KeyBody {
            id: k.id,
            role: k.role.name().to_string(),
            ledgers: k.ledgers.clone(),
            name: k.name.clone(),
            created_at: k.created_at.to_string(),
            revoked_at: (k.revoked_at != 0).then(|| k.revoked_at.to_string()),
            active: k.is_active(),
            secret: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyBody>,
}

// ---------------------------------------------------------------- audit

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditBody {
    pub seq: u64,
    pub timestamp: String,
    pub log_position: u64,
    /// 0 for the binary protocol and the bootstrap.
    pub key_id: u64,
    pub route: String,
    pub request_id: String,
    pub idempotency_key: String,
    pub operation: String,
    /// executed, replayed, conflict or refused.
    pub outcome: String,
    pub events: u32,
    pub ok: u32,
    pub first_error_code: Option<u32>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&bursar_core::service::audit::AuditRecord> for AuditBody {
    fn from(r: &bursar_core::service::audit::AuditRecord) -> Self {
        let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        AuditBody {
            seq: r.seq,
            timestamp: r.timestamp.to_string(),
            log_position: r.log_position,
            key_id: r.key_id,
            route: r.route.clone(),
            request_id: r.request_id.clone(),
            idempotency_key: r.idempotency_key.clone(),
            operation: bursar_core::Operation::from_code(r.operation).map_or("unknown", |o| o.name()).to_string(),
            outcome: r.outcome.name().to_string(),
            events: r.events,
            ok: r.ok,
            first_error_code: r.first_error,
            prev_hash: hex(&r.prev_hash),
            hash: hex(&r.hash),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_amounts_parse_strictly() {
        assert_eq!(parse_id("id", "42").unwrap(), 42);
        assert_eq!(parse_id("id", "00000000-0000-0000-0000-00000000002a").unwrap(), 42);
        assert_eq!(parse_decimal("amount", "340282366920938463463374607431768211455").unwrap(), u128::MAX);
        for bad in ["", "-1", "+1", "1.5", "1e3", " 1", "340282366920938463463374607431768211456", "0x10"] {
            assert!(parse_decimal("amount", bad).is_err(), "{bad:?}");
        }
        assert!(parse_id("id", "zzzzzzzz-0000-0000-0000-00000000002a").is_err());
    }

    #[test]
    fn transfer_requests_map_to_records() {
        let t = TransferRequest {
            id: "1".into(),
            debit_account_id: None,
            credit_account_id: None,
            amount: None,
            ledger: None,
            code: None,
            flags: vec!["post_pending".into()],
            pending_id: Some("9".into()),
            timeout: None,
            user_data_128: None,
            user_data_64: None,
            user_data_32: None,
        };
        let r = t.to_record().unwrap();
        assert_eq!((r.amount, r.pending_id, r.flags), (u128::MAX, 9, TF::POST_PENDING));
        let bad = TransferRequest { flags: vec!["pending".into(), "nope".into()], ..t.clone() };
        assert_eq!(bad.to_record().unwrap_err().field.as_deref(), Some("flags[1]"));
        let plain = TransferRequest { flags: vec![], ..t };
        assert_eq!(plain.to_record().unwrap_err().field.as_deref(), Some("amount"));
    }
}

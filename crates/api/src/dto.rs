//! JSON shapes of the API and their conversion to and from the core's
//! records. Ids and amounts are strings (u128 does not fit a JSON number in
//! most languages); ids may be decimal or UUIDs.

use crate::problem::{ApiResult, Problem};
use bursar_core::records::{account_flags as AF, transfer_flags as TF};
use bursar_core::{Account, BalanceRecord, Ledger, Transfer};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};

// The shapes of payment orders live in their own module; they are part of
// this one's namespace like every other shape.

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

pub fn parse_u64(field: &str, s: &str) -> ApiResult<u64> {
    let v = parse_decimal(field, s)?;
    u64::try_from(v).map_err(|_| Problem::invalid_field(field, format!("{field} exceeds 2^64 - 1")))
}

/// An optional field parsed by `parse`; absent is 0.
pub(crate) fn or_zero<T: Default>(field: &str, v: Option<&str>, parse: fn(&str, &str) -> ApiResult<T>) -> ApiResult<T> {
    v.map(|s| parse(field, s)).transpose().map(Option::unwrap_or_default)
}

const ACCOUNT_FLAGS: [(&str, u16); 5] = [
    ("linked", AF::LINKED),
    ("debits_must_not_exceed_credits", AF::DEBITS_MUST_NOT_EXCEED_CREDITS),
    ("credits_must_not_exceed_debits", AF::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ("history", AF::HISTORY),
    ("closed", AF::CLOSED),
];

pub const TRANSFER_FLAGS: [(&str, u16); 8] = [
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

// ---------------------------------------------------------------- schemas

// Schemas of the strings that carry numbers and of the named values, for
// the OpenAPI document only: the fields that hold them say so with
// `#[schema(value_type = ...)]`. Parsing stays with the functions above.

pub fn string_schema(description: &str, pattern: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .examples([example])
        .into()
}

pub fn names_schema<'a>(description: &str, names: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description)).enum_values(Some(names)).into()
}

/// A 128-bit id in a request: decimal, or a UUID read as a big-endian u128.
pub struct Id;

impl utoipa::PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "A 128-bit id: decimal digits (at most 2^128 - 1), or a UUID read as a big-endian u128.",
            "^([0-9]{1,39}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$",
            "1",
        )
    }
}

impl utoipa::ToSchema for Id {}

/// An unsigned 128-bit number as decimal digits: ids in responses, amounts,
/// balances, user_data_128.
pub struct U128;

impl utoipa::PartialSchema for U128 {
    fn schema() -> RefOr<Schema> {
        string_schema("Decimal digits of an unsigned 128-bit number (at most 2^128 - 1).", "^[0-9]{1,39}$", "1050")
    }
}

impl utoipa::ToSchema for U128 {}

/// An unsigned 64-bit number as decimal digits: timestamps, user_data_64.
pub struct U64;

impl utoipa::PartialSchema for U64 {
    fn schema() -> RefOr<Schema> {
        string_schema("Decimal digits of an unsigned 64-bit number (at most 2^64 - 1).", "^[0-9]{1,20}$", "7")
    }
}

impl utoipa::ToSchema for U64 {}

/// The name of an account flag.
pub struct AccountFlag;

impl utoipa::PartialSchema for AccountFlag {
    fn schema() -> RefOr<Schema> {
        names_schema("An account flag.", ACCOUNT_FLAGS.iter().map(|(n, _)| *n))
    }
}

impl utoipa::ToSchema for AccountFlag {}

/// The name of a transfer flag.
pub struct TransferFlag;

impl utoipa::PartialSchema for TransferFlag {
    fn schema() -> RefOr<Schema> {
        names_schema("A transfer flag.", TRANSFER_FLAGS.iter().map(|(n, _)| *n))
    }
}

impl utoipa::ToSchema for TransferFlag {}

/// The role of an API key.
pub struct RoleName;

impl utoipa::PartialSchema for RoleName {
    fn schema() -> RefOr<Schema> {
        names_schema("The role of an API key.", bursar_core::service::keys::Role::ALL.map(|r| r.name()))
    }
}

impl utoipa::ToSchema for RoleName {
    fn name() -> std::borrow::Cow<'static, str> {
        "Role".into()
    }
}

/// The `Idempotency-Key` header every POST needs.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// 1 to 255 printable ASCII characters (HTTP drops spaces at either
    /// end), scoped to the API key: the same key with the same request
    /// replays the first response.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$")]
    pub key: String,
}

/// The optional `Idempotency-Key` header of a DELETE.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct OptionalIdempotencyKeyHeader {
    /// 1 to 255 printable ASCII characters, scoped to the API key: the same
    /// key with the same request replays the first response.
    #[param(rename = "Idempotency-Key", value_type = String, min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$")]
    pub key: Option<String>,
}

// ---------------------------------------------------------------- ledgers

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": 1, "asset": "USD", "scale": 2}))]
pub struct LedgerRequest {
    pub id: u32,
    /// ISO 4217 or custom: 1–16 of A-Z 0-9 _ - . starting with a letter.
    #[schema(pattern = "^[A-Z][A-Z0-9_.-]{0,15}$", example = "USD")]
    pub asset: String,
    /// Digits of one minor unit, 0–38.
    #[schema(maximum = 38)]
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
    #[schema(value_type = U64)]
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
#[schema(example = json!({"id": "1", "ledger": 1, "code": 1, "flags": ["history"]}))]
pub struct AccountRequest {
    #[schema(value_type = Id)]
    pub id: String,
    pub ledger: u32,
    #[schema(maximum = 65535)]
    pub code: u16,
    #[serde(default)]
    #[schema(value_type = Vec<AccountFlag>)]
    pub flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U128>)]
    pub user_data_128: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U64>)]
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
            user_data_128: or_zero("user_data_128", self.user_data_128.as_deref(), parse_decimal)?,
            user_data_64: or_zero("user_data_64", self.user_data_64.as_deref(), parse_u64)?,
            user_data_32: self.user_data_32.unwrap_or(0),
            ..Default::default()
        })
    }
}

/// An account as created: only the fields that never change, so a replayed
/// response is always identical to the original.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountCreated {
    #[schema(value_type = U128)]
    pub id: String,
    pub ledger: u32,
    #[schema(maximum = 65535)]
    pub code: u16,
    #[schema(value_type = Vec<AccountFlag>)]
    pub flags: Vec<String>,
    #[schema(value_type = U128)]
    pub user_data_128: String,
    #[schema(value_type = U64)]
    pub user_data_64: String,
    pub user_data_32: u32,
    #[schema(value_type = U64)]
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
    #[schema(value_type = U128)]
    pub id: String,
    pub ledger: u32,
    #[schema(maximum = 65535)]
    pub code: u16,
    #[schema(value_type = Vec<AccountFlag>)]
    pub flags: Vec<String>,
    #[schema(value_type = U128)]
    pub user_data_128: String,
    #[schema(value_type = U64)]
    pub user_data_64: String,
    pub user_data_32: u32,
    #[schema(value_type = U128)]
    pub debits_pending: String,
    #[schema(value_type = U128)]
    pub debits_posted: String,
    #[schema(value_type = U128)]
    pub credits_pending: String,
    #[schema(value_type = U128)]
    pub credits_posted: String,
    #[schema(value_type = U64)]
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
#[schema(example = json!({"accounts": [{"id": "5", "ledger": 1, "code": 1}, {"id": "6", "ledger": 1, "code": 1}]}))]
pub struct AccountBatchRequest {
    #[schema(min_items = 1, max_items = 8190)] // = BATCH_EVENTS_MAX: utoipa takes a literal only (tested)
    pub accounts: Vec<AccountRequest>,
}

// ---------------------------------------------------------------- transfers

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "1", "debit_account_id": "1", "credit_account_id": "2", "amount": "1050", "ledger": 1, "code": 1}))]
pub struct TransferRequest {
    #[schema(value_type = Id)]
    pub id: String,
    /// Required except for post_pending/void_pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Id>)]
    pub debit_account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Id>)]
    pub credit_account_id: Option<String>,
    /// Minor units. Omit on post_pending to post the full pending amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U128>)]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 65535)]
    pub code: Option<u16>,
    #[serde(default)]
    #[schema(value_type = Vec<TransferFlag>)]
    pub flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Id>)]
    pub pending_id: Option<String>,
    /// Seconds until a pending transfer expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U128>)]
    pub user_data_128: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U64>)]
    pub user_data_64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_32: Option<u32>,
}

impl TransferRequest {
    pub fn to_record(&self) -> ApiResult<Transfer> {
        let flags = parse_flags(&self.flags, &TRANSFER_FLAGS, "flags")?;
        let amount = match self.amount.as_deref() {
            Some(s) => parse_decimal("amount", s)?,
            None if flags & TF::POST_PENDING != 0 => u128::MAX,
            None if flags & TF::VOID_PENDING != 0 => 0,
            None => return Err(Problem::invalid_field("amount", "amount is required")),
        };
        Ok(Transfer {
            id: parse_id("id", &self.id)?,
            debit_account_id: or_zero("debit_account_id", self.debit_account_id.as_deref(), parse_id)?,
            credit_account_id: or_zero("credit_account_id", self.credit_account_id.as_deref(), parse_id)?,
            amount,
            pending_id: or_zero("pending_id", self.pending_id.as_deref(), parse_id)?,
            user_data_128: or_zero("user_data_128", self.user_data_128.as_deref(), parse_decimal)?,
            user_data_64: or_zero("user_data_64", self.user_data_64.as_deref(), parse_u64)?,
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
    #[schema(value_type = U128)]
    pub id: String,
    #[schema(value_type = U128)]
    pub debit_account_id: String,
    #[schema(value_type = U128)]
    pub credit_account_id: String,
    #[schema(value_type = U128)]
    pub amount: String,
    #[schema(value_type = U128)]
    pub pending_id: String,
    pub ledger: u32,
    #[schema(maximum = 65535)]
    pub code: u16,
    #[schema(value_type = Vec<TransferFlag>)]
    pub flags: Vec<String>,
    pub timeout: u32,
    #[schema(value_type = U128)]
    pub user_data_128: String,
    #[schema(value_type = U64)]
    pub user_data_64: String,
    pub user_data_32: u32,
    #[schema(value_type = U64)]
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
#[schema(example = json!({"transfers": [{"id": "5", "debit_account_id": "1", "credit_account_id": "2", "amount": "10", "ledger": 1, "code": 1, "flags": ["linked"]}, {"id": "6", "debit_account_id": "2", "credit_account_id": "3", "amount": "10", "ledger": 1, "code": 1}]}))]
pub struct TransferBatchRequest {
    #[schema(min_items = 1, max_items = 8190)] // = BATCH_EVENTS_MAX: utoipa takes a literal only (tested)
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
    #[schema(value_type = U64)]
    pub timestamp: String,
    #[schema(value_type = U128)]
    pub debits_pending: String,
    #[schema(value_type = U128)]
    pub debits_posted: String,
    #[schema(value_type = U128)]
    pub credits_pending: String,
    #[schema(value_type = U128)]
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

impl<T> Page<T> {
    /// The same page with each item rendered.
    pub fn map<'a, U>(&'a self, render: impl FnMut(&'a T) -> U) -> Page<U> {
        Page { data: self.data.iter().map(render).collect(), next_cursor: self.next_cursor.clone() }
    }
}

// ---------------------------------------------------------------- keys

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "auditor", "ledgers": [1], "name": "reporting"}))]
pub struct KeyRequest {
    #[schema(value_type = RoleName)]
    pub role: String,
    /// Restrict the key to these ledgers (operator and auditor only).
    #[serde(default)]
    #[schema(max_items = 32)]
    pub ledgers: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// At most 64 bytes of printable text.
    #[schema(max_length = 64)]
    pub name: Option<String>,
    /// When the key stops working: nanoseconds since the Unix epoch, in
    /// the future. Absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U64>)]
    pub expires_at: Option<String>,
    /// The key's own request rate. Absent: the node's default
    /// (`--rate-limit-per-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitBody>,
}

/// A token bucket: `per_second` requests refill a bucket of `burst`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    #[schema(minimum = 1, maximum = 1000000)]
    pub per_second: u32,
    #[schema(minimum = 1, maximum = 1000000)]
    pub burst: u32,
}

impl RateLimitBody {
    pub fn to_key(self) -> ApiResult<bursar_core::service::keys::KeyRateLimit> {
        let limit = bursar_core::service::keys::KeyRateLimit { per_second: self.per_second, burst: self.burst };
        if limit.is_default() || !limit.is_valid() {
            let max = bursar_core::limits::RATE_LIMIT_MAX;
            return Err(Problem::invalid_field("rate_limit", format!("per_second and burst must be 1 to {max}")));
        }
        Ok(limit)
    }
}

/// An expiry from the request: a nanosecond time after `now` (the node's
/// clock), or 0 when absent.
pub fn parse_expiry(field: &str, s: Option<&str>, now: u64) -> ApiResult<u64> {
    let Some(s) = s else { return Ok(0) };
    let at = parse_u64(field, s)?;
    if at <= now {
        return Err(Problem::invalid_field(field, format!("{field} must be in the future (nanoseconds since 1970)")));
    }
    Ok(at)
}

/// `POST /v1/keys/{id}/rotate`: a new secret for a key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"grace_seconds": 3600}))]
pub struct RotateRequest {
    /// How long the old secret keeps working, in seconds (at most 30 days).
    /// Absent: 3600. 0: it stops at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 2592000)]
    pub grace_seconds: Option<u64>,
    /// When the new key expires (nanoseconds since the Unix epoch, in the
    /// future). Absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U64>)]
    pub expires_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyBody {
    pub id: u64,
    #[schema(value_type = RoleName)]
    pub role: String,
    pub ledgers: Vec<u32>,
    pub name: String,
    #[schema(value_type = U64)]
    pub created_at: String,
    #[schema(value_type = Option<U64>)]
    pub revoked_at: Option<String>,
    /// Not revoked. A key past `expires_at` is refused even while active.
    pub active: bool,
    /// When the key stops working (nanoseconds since the epoch); absent:
    /// never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U64>)]
    pub expires_at: Option<String>,
    /// The key's own rate limit; absent: the node's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitBody>,
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
            expires_at: (k.expires_at != 0).then(|| k.expires_at.to_string()),
            rate_limit: (!k.rate_limit.is_default())
                .then_some(RateLimitBody { per_second: k.rate_limit.per_second, burst: k.rate_limit.burst }),
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
    #[schema(value_type = U64)]
    pub timestamp: String,
    pub log_position: u64,
    /// 0 for the binary protocol and the bootstrap.
    pub key_id: u64,
    pub route: String,
    pub request_id: String,
    pub idempotency_key: String,
    pub operation: String,
    /// executed, replayed, conflict, refused, or rejected (a cluster log
    /// entry the replicas refused; route `CLUSTER <reason>`).
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

/// One access record: a read of decrypted personal data or a refusal.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessBody {
    pub seq: u64,
    /// Log time of the entry that recorded it (ns since the epoch).
    #[schema(value_type = U64)]
    pub timestamp: String,
    pub log_position: u64,
    /// pii_read, unauthorized, forbidden or dropped.
    pub kind: String,
    /// The API key; absent when none was valid (401) and for `dropped`.
    pub key_id: Option<u64>,
    /// The client's IP address, when known (refusals).
    pub client: Option<String>,
    /// For example `GET /v1/orders/{id}`.
    pub route: String,
    /// What was accessed (an order id), when the route names one.
    #[schema(value_type = Option<U128>)]
    pub target: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// Accesses this record stands for (refusals are aggregated per second).
    pub count: u32,
}

impl From<&bursar_core::service::access::AccessRecord> for AccessBody {
    fn from(r: &bursar_core::service::access::AccessRecord) -> Self {
        use bursar_core::service::access::AccessKind;
        let e = &r.event;
        let client = (e.client != [0; 16]).then(|| {
            let v6 = std::net::Ipv6Addr::from(e.client);
            v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string())
        });
        AccessBody {
            seq: r.seq,
            timestamp: r.timestamp.to_string(),
            log_position: r.log_position,
            kind: AccessKind::from_code(e.kind).map_or("unknown", |k| k.name()).to_string(),
            key_id: (e.key_id != 0).then_some(e.key_id),
            client,
            route: e.route_str().to_string(),
            target: (e.target != 0).then(|| e.target.to_string()),
            status: e.status,
            count: e.count,
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

    /// The schemas' `maxItems` are literals (utoipa takes no constant):
    /// they must be the engine's batch limit.
    #[test]
    fn batch_schemas_allow_exactly_the_engines_batch() {
        use utoipa::PartialSchema;
        for (schema, field) in
            [(AccountBatchRequest::schema(), "accounts"), (TransferBatchRequest::schema(), "transfers")]
        {
            let json = serde_json::to_value(&schema).expect("a schema serializes");
            let max = &json["properties"][field]["maxItems"];
            assert_eq!(max.as_u64(), Some(bursar_core::records::BATCH_EVENTS_MAX as u64), "{field}: {json}");
        }
    }

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

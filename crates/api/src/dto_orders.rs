//! JSON shapes of payment orders and their conversion to and from the
//! core's order records. Amounts and ids are strings like everywhere else;
//! times are nanoseconds since the Unix epoch, as strings. Personal data
//! travels in plaintext only between the client and this edge: it is sealed
//! with the order's id as associated data before the command is logged.

use crate::dto::{Id, U64, U128, names_schema, or_zero, parse_decimal, parse_id, parse_u64};
use crate::problem::{ApiResult, Problem};
use axum::http::StatusCode;
use bursar_core::limits::{REASON_MAX, REFERENCE_MAX};
use bursar_core::orders::book::{EVENT_CREATE, EVENT_EXPIRE};
use bursar_core::orders::money::transfer_id;
use bursar_core::orders::records::reference_str;
use bursar_core::orders::settings::OrdersConfig;
use bursar_core::orders::{
    Actor, CommandKind, Order, OrderCommand, OrderCommandResult, OrderCreate, OrderState, TimelineEvent, Verdict,
    order_flags,
};
use bursar_crypto::pii::{OrderPii, PiiError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

const ORDER_FLAGS: [(&str, u32); 3] = [
    ("refund_fee_on_failure", order_flags::REFUND_FEE_ON_FAILURE),
    ("refund_fee_on_cancel", order_flags::REFUND_FEE_ON_CANCEL),
    ("maker_checker", order_flags::MAKER_CHECKER),
];

/// Timeline kind names: `created`, the command kinds, `expired`.
pub fn event_kind_name(kind: u8) -> &'static str {
    match kind {
        EVENT_CREATE => "created",
        EVENT_EXPIRE => "expired",
        k => CommandKind::from_code(k).map_or("unknown", CommandKind::name),
    }
}

fn unprocessable(code: &str, field: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).field(field)
}

// ---------------------------------------------------------------- schemas

/// The name of an order state.
pub struct OrderStateName;

impl utoipa::PartialSchema for OrderStateName {
    fn schema() -> RefOr<Schema> {
        names_schema("The state of a payment order.", OrderState::ALL.iter().map(|s| s.name()))
    }
}

impl utoipa::ToSchema for OrderStateName {}

/// The name of an order flag (the fee policy and review rule stamped at creation).
pub struct OrderFlag;

impl utoipa::PartialSchema for OrderFlag {
    fn schema() -> RefOr<Schema> {
        names_schema(
            "An order flag: the fee policy and the review rule (maker_checker) chosen when it was created.",
            ORDER_FLAGS.iter().map(|(n, _)| *n),
        )
    }
}

impl utoipa::ToSchema for OrderFlag {}

/// What an order event was.
pub struct OrderEventKind;

impl utoipa::PartialSchema for OrderEventKind {
    fn schema() -> RefOr<Schema> {
        let names = std::iter::once("created").chain(CommandKind::ALL.iter().map(|k| k.name())).chain(["expired"]);
        names_schema("The kind of an order event: its creation, a command, or a deadline that fired.", names)
    }
}

impl utoipa::ToSchema for OrderEventKind {}

/// Who caused an order event.
pub struct OrderActor;

impl utoipa::PartialSchema for OrderActor {
    fn schema() -> RefOr<Schema> {
        let names = [Actor::Api, Actor::Executor, Actor::Timer, Actor::Bank].map(Actor::name);
        names_schema("Who caused an order event.", names)
    }
}

impl utoipa::ToSchema for OrderActor {}

/// The outcome of an order event.
pub struct OrderEventResult;

impl utoipa::PartialSchema for OrderEventResult {
    fn schema() -> RefOr<Schema> {
        names_schema(
            "`ok`, or the result code that refused the command.",
            OrderCommandResult::ALL.iter().map(|c| c.name()),
        )
    }
}

impl utoipa::ToSchema for OrderEventResult {}

/// A review decision.
pub struct ReviewDecision;

impl utoipa::PartialSchema for ReviewDecision {
    fn schema() -> RefOr<Schema> {
        names_schema("The decision on an order on hold.", ["approve", "reject"])
    }
}

impl utoipa::ToSchema for ReviewDecision {}

// ---------------------------------------------------------------- create

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SenderRequest {
    /// 1 to 128 bytes of text without control characters.
    #[schema(min_length = 1, max_length = 128, example = "Ada Lovelace")]
    pub name: String,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Z]{2}$", example = "GB")]
    pub country: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientRequest {
    /// 1 to 128 bytes of text without control characters.
    #[schema(min_length = 1, max_length = 128, example = "Blaise Pascal")]
    pub name: String,
    /// IBAN or account number: 1 to 64 of letters, digits, spaces and hyphens.
    #[schema(pattern = "^[A-Za-z0-9 -]{1,64}$", example = "DE89370400440532013000")]
    pub bank_account: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "id": "1001", "customer_id": "42", "source_asset": "USD", "source_amount": "10000", "target_asset": "EUR",
    "sender": {"name": "Ada Lovelace", "country": "GB"},
    "recipient": {"name": "Blaise Pascal", "bank_account": "DE89370400440532013000"}
}))]
pub struct OrderRequest {
    #[schema(value_type = Id)]
    pub id: String,
    #[schema(value_type = Id)]
    pub customer_id: String,
    /// An asset code the server's order settings name (`USD`, `EUR`, ...).
    #[schema(example = "USD")]
    pub source_asset: String,
    /// What the sender pays in, fee included, in source minor units.
    #[schema(value_type = U128)]
    pub source_amount: String,
    #[schema(example = "EUR")]
    pub target_asset: String,
    pub sender: SenderRequest,
    pub recipient: RecipientRequest,
    /// Earliest time the payout may be sent: nanoseconds since the Unix
    /// epoch. Absent or 0: as soon as the order is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<U64>)]
    pub payout_at: Option<String>,
}

/// The JSON field of a personal-data field.
fn pii_field(field: &str) -> &'static str {
    match field {
        "sender_name" => "sender.name",
        "sender_country" => "sender.country",
        "recipient_name" => "recipient.name",
        _ => "recipient.bank_account",
    }
}

/// A personal-data error as a problem. Never carries the data itself.
pub fn pii_problem(e: PiiError) -> Problem {
    match e {
        PiiError::Invalid { field, reason } => {
            let field = pii_field(field);
            unprocessable("pii_invalid", field, format!("{field} {reason}"))
        }
        other => {
            tracing::error!(error = %other, "sealing an order's personal data failed");
            Problem::internal("the personal data could not be sealed")
        }
    }
}

impl OrderRequest {
    /// The personal data, checked; a problem names the JSON field.
    pub fn pii(&self) -> ApiResult<OrderPii> {
        let pii = OrderPii {
            sender_name: self.sender.name.clone(),
            sender_country: self.sender.country.clone(),
            recipient_name: self.recipient.name.clone(),
            recipient_bank_account: self.recipient.bank_account.clone(),
        };
        pii.validate().map_err(pii_problem)?;
        Ok(pii)
    }

    /// The create record without personal data: assets, fee, timeouts and
    /// flags resolved from the server's order settings, so replaying the log
    /// never depends on settings that may change later.
    pub fn to_record(&self, config: &OrdersConfig) -> ApiResult<OrderCreate> {
        let id = parse_id("id", &self.id)?;
        let customer_id = parse_id("customer_id", &self.customer_id)?;
        let source_amount = parse_decimal("source_amount", &self.source_amount)?;
        let payout_at = or_zero("payout_at", self.payout_at.as_deref(), parse_u64)?;
        let ledger = |field: &str, code: &str| {
            config.ledger_of(code).ok_or_else(|| {
                let known: Vec<&str> = config.assets.iter().map(|a| a.code.as_str()).collect();
                unprocessable("asset_unknown", field, format!("{field} must be one of {}", known.join(", ")))
            })
        };
        let source_ledger = ledger("source_asset", &self.source_asset)?;
        let target_ledger = ledger("target_asset", &self.target_asset)?;
        let fee_amount = config.fee.fee(source_amount).ok_or_else(|| {
            unprocessable("fee_overflows", "source_amount", "the fee for this amount does not fit in 128 bits")
        })?;
        Ok(OrderCreate {
            id,
            customer_id,
            source_amount,
            fee_amount,
            payout_at,
            source_ledger,
            target_ledger,
            funds_timeout_seconds: config.funds_timeout_seconds,
            review_timeout_seconds: config.review_timeout_seconds,
            // Every order made through the API asks for maker-checker.
            flags: config.flags | order_flags::MAKER_CHECKER,
            ..OrderCreate::default()
        })
    }
}

// ---------------------------------------------------------------- commands

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "customer asked"}))]
pub struct CancelRequest {
    /// At most 128 bytes of UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"decision": "approve", "reason": "documents checked"}))]
pub struct ReviewRequest {
    #[schema(value_type = ReviewDecision)]
    pub decision: String,
    /// At most 128 bytes of UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount": "10000", "reference": "BANK-REF-0042"}))]
pub struct FundsRequest {
    /// The amount the bank received, in source minor units: must equal the
    /// order's `source_amount`.
    #[schema(value_type = U128)]
    pub amount: String,
    /// The bank's reference: 1 to 32 printable ASCII characters, no spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[!-~]{1,32}$")]
    pub reference: Option<String>,
}

fn command(id: u128, kind: CommandKind, reason: &Option<String>) -> ApiResult<OrderCommand> {
    let reason = reason.as_deref().unwrap_or("");
    if reason.len() > REASON_MAX {
        return Err(unprocessable("reason_invalid", "reason", format!("reason must be at most {REASON_MAX} bytes")));
    }
    // The API acts as itself; the state machine records the key behind it.
    Ok(OrderCommand::new(id, kind, Actor::Api).with_reason(reason))
}

impl CancelRequest {
    pub fn to_command(&self, id: u128) -> ApiResult<OrderCommand> {
        command(id, CommandKind::Cancel, &self.reason)
    }
}

impl ReviewRequest {
    pub fn to_command(&self, id: u128) -> ApiResult<OrderCommand> {
        let verdict = match self.decision.as_str() {
            "approve" => Verdict::Pass,
            "reject" => Verdict::Reject,
            _ => return Err(Problem::invalid_field("decision", "decision must be approve or reject")),
        };
        let mut c = command(id, CommandKind::Review, &self.reason)?;
        c.verdict = verdict as u8;
        Ok(c)
    }
}

impl FundsRequest {
    pub fn to_command(&self, id: u128) -> ApiResult<OrderCommand> {
        let mut c = command(id, CommandKind::FundsReceived, &None)?;
        c.amount = parse_decimal("amount", &self.amount)?;
        if let Some(r) = &self.reference {
            if r.is_empty() || r.len() > REFERENCE_MAX || !r.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(unprocessable(
                    "reference_invalid",
                    "reference",
                    format!("reference must be 1 to {REFERENCE_MAX} printable ASCII characters without spaces"),
                ));
            }
            c = c.with_reference(r);
        }
        Ok(c)
    }
}

// ---------------------------------------------------------------- responses

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SenderBody {
    /// Masked (first character and `***`) for auditors.
    pub name: String,
    pub country: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RecipientBody {
    /// Masked (first character and `***`) for auditors.
    pub name: String,
    /// Masked (`***` and the last 4 characters) for auditors.
    pub bank_account: String,
}

/// How much of an order's personal data the caller sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiiView {
    /// Admins and operators.
    Full,
    /// Auditors: names cut to their first character, the bank account to
    /// its last four; the country as it is.
    Masked,
}

fn mask_name(name: &str) -> String {
    name.chars().next().map(|c| format!("{c}***")).unwrap_or_default()
}

fn mask_account(account: &str) -> String {
    let chars: Vec<char> = account.chars().collect();
    // Short accounts show nothing: four characters would be all of them.
    let shown = if chars.len() > 8 { &chars[chars.len() - 4..] } else { &[][..] };
    format!("***{}", shown.iter().collect::<String>())
}

/// A payment order now.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderBody {
    #[schema(value_type = U128)]
    pub id: String,
    #[schema(value_type = U128)]
    pub customer_id: String,
    #[schema(value_type = OrderStateName)]
    pub state: String,
    /// The asset code of `source_ledger` in the server's order settings
    /// (null if the settings no longer name that ledger).
    pub source_asset: Option<String>,
    pub source_ledger: u32,
    /// What the sender pays in, fee included, in source minor units.
    #[schema(value_type = U128)]
    pub source_amount: String,
    /// The fee, in source minor units, resolved when the order was created.
    #[schema(value_type = U128)]
    pub fee_amount: String,
    pub target_asset: Option<String>,
    pub target_ledger: u32,
    /// What the recipient gets, in target minor units; null until the FX
    /// rate is locked.
    #[schema(value_type = Option<U128>)]
    pub target_amount: Option<String>,
    /// Target minor units per source minor unit × 10^9; null until locked.
    #[schema(value_type = Option<U128>)]
    pub rate_ppb: Option<String>,
    #[schema(value_type = Option<U128>)]
    pub quote_id: Option<String>,
    #[schema(value_type = Vec<OrderFlag>)]
    pub flags: Vec<String>,
    pub funds_timeout_seconds: u32,
    pub review_timeout_seconds: u32,
    #[schema(value_type = U64)]
    pub created_at: String,
    #[schema(value_type = U64)]
    pub updated_at: String,
    /// When the current wait (funds or review) times out; null if none.
    #[schema(value_type = Option<U64>)]
    pub deadline: Option<String>,
    /// Earliest time the payout may be sent; null if as soon as ready.
    #[schema(value_type = Option<U64>)]
    pub payout_at: Option<String>,
    /// When the executor retries a deferred step; null if not deferred.
    #[schema(value_type = Option<U64>)]
    pub retry_at: Option<String>,
    /// Deferrals of the current step.
    pub attempts: u16,
    /// The bank's or the payout rail's reference; null if none yet.
    pub reference: Option<String>,
    pub sender: SenderBody,
    pub recipient: RecipientBody,
}

fn nonzero<T: PartialEq + Default + ToString>(v: T) -> Option<String> {
    (v != T::default()).then(|| v.to_string())
}

impl OrderBody {
    /// The order with its personal data as `view` allows.
    pub fn new(o: &Order, config: &OrdersConfig, pii: OrderPii, view: PiiView) -> ApiResult<OrderBody> {
        let state = OrderState::from_code(o.state)
            .ok_or_else(|| Problem::internal(format!("order {} has an unknown state {}", o.id, o.state)))?;
        let (sender, recipient) = match view {
            PiiView::Full => (
                SenderBody { name: pii.sender_name, country: pii.sender_country },
                RecipientBody { name: pii.recipient_name, bank_account: pii.recipient_bank_account },
            ),
            PiiView::Masked => (
                SenderBody { name: mask_name(&pii.sender_name), country: pii.sender_country },
                RecipientBody {
                    name: mask_name(&pii.recipient_name),
                    bank_account: mask_account(&pii.recipient_bank_account),
                },
            ),
        };
        let reference = reference_str(&o.reference);
        Ok(OrderBody {
            id: o.id.to_string(),
            customer_id: o.customer_id.to_string(),
            state: state.name().to_string(),
            source_asset: config.asset_of(o.source_ledger).map(str::to_string),
            source_ledger: o.source_ledger,
            source_amount: o.source_amount.to_string(),
            fee_amount: o.fee_amount.to_string(),
            target_asset: config.asset_of(o.target_ledger).map(str::to_string),
            target_ledger: o.target_ledger,
            target_amount: (o.rate_ppb != 0).then(|| o.target_amount.to_string()),
            rate_ppb: nonzero(o.rate_ppb),
            quote_id: (o.rate_ppb != 0).then(|| o.quote_id.to_string()),
            flags: ORDER_FLAGS.iter().filter(|(_, b)| o.flags & b != 0).map(|(n, _)| n.to_string()).collect(),
            funds_timeout_seconds: o.funds_timeout_seconds,
            review_timeout_seconds: o.review_timeout_seconds,
            created_at: o.created_at.to_string(),
            updated_at: o.updated_at.to_string(),
            deadline: nonzero(o.deadline),
            payout_at: nonzero(o.payout_at),
            retry_at: nonzero(o.retry_at),
            attempts: o.attempts,
            reference: (!reference.is_empty()).then(|| reference.to_string()),
            sender,
            recipient,
        })
    }
}

/// One entry of an order's timeline.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderEventBody {
    #[schema(value_type = U64)]
    pub timestamp: String,
    /// The log entry that applied it.
    pub log_position: u64,
    #[schema(value_type = OrderEventKind)]
    pub kind: String,
    #[schema(value_type = OrderActor)]
    pub actor: String,
    /// The API key behind it; absent for the executor and timers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<u64>,
    /// The state before; null for the creation.
    #[schema(value_type = Option<OrderStateName>)]
    pub from: Option<String>,
    /// The state after (the same as `from` if the command was refused).
    #[schema(value_type = OrderStateName)]
    pub to: String,
    #[schema(value_type = OrderEventResult)]
    pub result: String,
    /// The command's reason, or why the ledger refused its transfers.
    pub reason: String,
    /// Ids of the ledger transfers this step made, in order.
    #[schema(value_type = Vec<U128>)]
    pub transfers: Vec<String>,
}

impl OrderEventBody {
    pub fn new(order_id: u128, e: &TimelineEvent) -> OrderEventBody {
        let state = |code: u8| OrderState::from_code(code).map_or("unknown", OrderState::name).to_string();
        let seqs = e.first_transfer_seq..e.first_transfer_seq.saturating_add(u32::from(e.transfers));
        OrderEventBody {
            timestamp: e.timestamp.to_string(),
            log_position: e.position,
            kind: event_kind_name(e.kind).to_string(),
            actor: Actor::from_code(e.actor).map_or("unknown", Actor::name).to_string(),
            key_id: (e.key_id != 0).then_some(e.key_id),
            from: (e.from != 0).then(|| state(e.from)),
            to: state(e.to),
            result: OrderCommandResult::from_code(e.result).map_or("unknown", |c| c.name()).to_string(),
            reason: e.reason.to_string(),
            transfers: seqs.map(|seq| transfer_id(order_id, seq).to_string()).collect(),
        }
    }
}

/// An order's timeline, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderEventList {
    pub data: Vec<OrderEventBody>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_little() {
        assert_eq!(mask_name("Zoë Ångström"), "Z***");
        assert_eq!(mask_name("Ё"), "Ё***");
        assert_eq!(mask_account("DE89370400440532013000"), "***3000");
        assert_eq!(mask_account("12345678"), "***");
    }

    #[test]
    fn requests_resolve_settings_and_check_fields() {
        let config = OrdersConfig::default();
        let req = OrderRequest {
            id: "7".into(),
            customer_id: "9".into(),
            source_asset: "USD".into(),
            source_amount: "10000".into(),
            target_asset: "EUR".into(),
            sender: SenderRequest { name: "A".into(), country: "US".into() },
            recipient: RecipientRequest { name: "B".into(), bank_account: "DE89 3704".into() },
            payout_at: None,
        };
        let r = req.to_record(&config).unwrap();
        assert_eq!((r.source_ledger, r.target_ledger, r.fee_amount), (840, 978, 50));
        assert_eq!(
            (r.funds_timeout_seconds, r.flags, r.pii_len),
            (24 * 3600, config.flags | order_flags::MAKER_CHECKER, 0)
        );
        let bad = OrderRequest { target_asset: "XXX".into(), ..req.clone() };
        let p = bad.to_record(&config).unwrap_err();
        assert_eq!((p.code.as_str(), p.field.as_deref()), ("asset_unknown", Some("target_asset")));
        let bad = OrderRequest { sender: SenderRequest { name: "A".into(), country: "us".into() }, ..req };
        let p = bad.pii().unwrap_err();
        assert_eq!((p.status, p.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("sender.country")));
        let long = CancelRequest { reason: Some("é".repeat(65)) };
        assert_eq!(long.to_command(1).unwrap_err().code, "reason_invalid");
        let funds = FundsRequest { amount: "5".into(), reference: Some("has space".into()) };
        assert_eq!(funds.to_command(1).unwrap_err().field.as_deref(), Some("reference"));
    }
}

//! The change stream as this projection reads it: a page of `GET /v1/events`
//! decoded into typed events with integer amounts (docs/events.md).

use serde::Deserialize;

/// One page: the cursor it was asked from, where to continue, the events.
#[derive(Debug)]
pub struct Page {
    pub after: u64,
    pub next_after: u64,
    pub events: Vec<Event>,
}

/// An event with what the read model needs of it.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    /// Log time of the change, nanoseconds since 1970 (the day bucket).
    pub timestamp: u64,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub enum Body {
    Ledger(Ledger),
    Account(Account),
    Transfer(Transfer),
    Order(Order),
    /// Keys, audit records and types this version does not know: they only
    /// advance the cursor.
    Other,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    pub id: u32,
    pub asset: String,
    pub scale: u8,
    pub timestamp: u64,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: u128,
    pub ledger: u32,
    pub code: u16,
    pub flags: Vec<String>,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub timestamp: u64,
}

/// How a transfer event moves balances (the table in docs/events.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// `transfer.posted` without `pending_id`.
    Single,
    /// `transfer.pending`.
    Pending,
    /// `transfer.posted` with `pending_id`.
    Post,
    /// `transfer.voided`.
    Void,
    /// `transfer.expired`: the pending transfer itself, no new transfer.
    Expire,
}

impl TransferKind {
    pub fn name(self) -> &'static str {
        match self {
            TransferKind::Single => "single",
            TransferKind::Pending => "pending",
            TransferKind::Post => "post",
            TransferKind::Void => "void",
            TransferKind::Expire => "expire",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub kind: TransferKind,
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    pub pending_id: u128,
    /// For posts, voids and expiries: what leaves the pending balances.
    pub pending_amount: u128,
    pub ledger: u32,
    pub code: u16,
    pub flags: Vec<String>,
    pub timeout: u32,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub timestamp: u64,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: u128,
    pub customer_id: u128,
    pub source_ledger: u32,
    pub target_ledger: u32,
    pub source_amount: u128,
    pub fee_amount: u128,
    pub target_amount: Option<u128>,
    pub rate_ppb: Option<u128>,
    pub quote_id: Option<u128>,
    pub state: String,
}

// ------------------------------------------------------------- JSON shapes

#[derive(Deserialize)]
struct RawPage {
    data: Vec<RawEvent>,
    next_after: String,
}

#[derive(Deserialize)]
struct RawEvent {
    seq: u64,
    #[serde(rename = "type")]
    event_type: String,
    timestamp: String,
    data: RawData,
}

/// Ledger ids are JSON numbers, account and transfer ids decimal strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(u64),
}

/// The union of the payload fields used here: one pass over the JSON,
/// whatever the type (the fields of the other types are simply absent).
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawData {
    id: Option<Id>,
    debit_account_id: Option<String>,
    credit_account_id: Option<String>,
    amount: Option<String>,
    pending_id: Option<String>,
    pending_amount: Option<String>,
    ledger: Option<u32>,
    code: Option<u16>,
    flags: Vec<String>,
    timeout: Option<u32>,
    user_data_128: Option<String>,
    user_data_64: Option<String>,
    user_data_32: Option<u32>,
    timestamp: Option<String>,
    asset: Option<String>,
    scale: Option<u8>,
    order_id: Option<String>,
    customer_id: Option<String>,
    source_ledger: Option<u32>,
    target_ledger: Option<u32>,
    source_amount: Option<String>,
    fee_amount: Option<String>,
    target_amount: Option<String>,
    rate_ppb: Option<String>,
    quote_id: Option<String>,
    state: Option<String>,
}

/// Why a page of events from the server was refused (nothing of it is applied).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("events page: {0}")]
    Json(#[source] serde_json::Error),
    #[error("next_after {0:?}")]
    NextAfter(String),
    #[error("event {seq} after {last}: the stream went backwards")]
    Backwards { seq: u64, last: u64 },
    #[error("next_after {next_after} before the page's last event {last}")]
    NextAfterBehind { next_after: u64, last: u64 },
    #[error("event {seq}: {source}")]
    Event {
        seq: u64,
        #[source]
        source: EventError,
    },
}

/// Why one event was refused: a field it needs is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("no {field}")]
    Missing { field: &'static str },
    #[error("{kind} without {field}")]
    Without { kind: &'static str, field: &'static str },
    #[error("{field} {value:?} is not an unsigned integer")]
    NotInteger { field: &'static str, value: String },
    #[error("ledger id out of range")]
    LedgerIdRange,
}

fn without(kind: &'static str, field: &'static str) -> EventError {
    EventError::Without { kind, field }
}

/// Decodes a `GET /v1/events` body asked with `after`.
pub fn decode_page(after: u64, body: &[u8]) -> Result<Page, PageError> {
    let raw: RawPage = serde_json::from_slice(body).map_err(PageError::Json)?;
    let next_after = raw.next_after.parse::<u64>().map_err(|_| PageError::NextAfter(raw.next_after.clone()))?;
    let mut events = Vec::with_capacity(raw.data.len());
    let mut last = after;
    for e in raw.data {
        if e.seq <= last {
            return Err(PageError::Backwards { seq: e.seq, last });
        }
        last = e.seq;
        let seq = e.seq;
        events.push(decode_event(e).map_err(|source| PageError::Event { seq, source })?);
    }
    if next_after < last {
        return Err(PageError::NextAfterBehind { next_after, last });
    }
    Ok(Page { after, next_after, events })
}

fn decode_event(e: RawEvent) -> Result<Event, EventError> {
    let d = e.data;
    let timestamp = int::<u64>(Some(&e.timestamp), "timestamp")?;
    let body = match e.event_type.as_str() {
        "ledger.created" => Body::Ledger(Ledger {
            id: match d.id {
                Some(Id::Number(n)) => u32::try_from(n).map_err(|_| EventError::LedgerIdRange)?,
                Some(Id::Text(s)) => int(Some(&s), "id")?,
                None => return Err(without("ledger", "id")),
            },
            asset: d.asset.ok_or(without("ledger", "asset"))?,
            scale: d.scale.ok_or(without("ledger", "scale"))?,
            timestamp: int(d.timestamp.as_deref(), "timestamp")?,
        }),
        "account.created" => Body::Account(Account {
            id: text_id(&d.id)?,
            ledger: d.ledger.ok_or(without("account", "ledger"))?,
            code: d.code.ok_or(without("account", "code"))?,
            flags: d.flags,
            user_data_128: int(d.user_data_128.as_deref(), "user_data_128")?,
            user_data_64: int(d.user_data_64.as_deref(), "user_data_64")?,
            user_data_32: d.user_data_32.unwrap_or(0),
            timestamp: int(d.timestamp.as_deref(), "timestamp")?,
        }),
        t @ ("transfer.posted" | "transfer.pending" | "transfer.voided" | "transfer.expired") => {
            Body::Transfer(decode_transfer(t, d)?)
        }
        t if t.starts_with("order.") => Body::Order(Order {
            id: int(d.order_id.as_deref(), "order_id")?,
            customer_id: int(d.customer_id.as_deref(), "customer_id")?,
            source_ledger: d.source_ledger.ok_or(without("order", "source_ledger"))?,
            target_ledger: d.target_ledger.ok_or(without("order", "target_ledger"))?,
            source_amount: int(d.source_amount.as_deref(), "source_amount")?,
            fee_amount: int(d.fee_amount.as_deref(), "fee_amount")?,
            target_amount: d.target_amount.as_deref().map(|s| int(Some(s), "target_amount")).transpose()?,
            rate_ppb: d.rate_ppb.as_deref().map(|s| int(Some(s), "rate_ppb")).transpose()?,
            quote_id: d.quote_id.as_deref().map(|s| int(Some(s), "quote_id")).transpose()?,
            state: d.state.ok_or(without("order", "state"))?,
        }),
        _ => Body::Other,
    };
    Ok(Event { seq: e.seq, timestamp, body })
}

/// A `transfer.*` event's data (the event type says which kind).
fn decode_transfer(t: &str, d: RawData) -> Result<Transfer, EventError> {
    let pending_id = int(d.pending_id.as_deref(), "pending_id")?;
    let kind = match t {
        "transfer.posted" if pending_id == 0 => TransferKind::Single,
        "transfer.posted" => TransferKind::Post,
        "transfer.pending" => TransferKind::Pending,
        "transfer.voided" => TransferKind::Void,
        _ => TransferKind::Expire,
    };
    let pending_amount = match kind {
        TransferKind::Single | TransferKind::Pending => 0,
        _ => int(
            Some(d.pending_amount.as_deref().ok_or(EventError::Missing { field: "pending_amount" })?),
            "pending_amount",
        )?,
    };
    Ok(Transfer {
        kind,
        id: text_id(&d.id)?,
        debit_account_id: int(d.debit_account_id.as_deref(), "debit_account_id")?,
        credit_account_id: int(d.credit_account_id.as_deref(), "credit_account_id")?,
        amount: int(d.amount.as_deref(), "amount")?,
        pending_id,
        pending_amount,
        ledger: d.ledger.ok_or(without("transfer", "ledger"))?,
        code: d.code.ok_or(without("transfer", "code"))?,
        flags: d.flags,
        timeout: d.timeout.unwrap_or(0),
        user_data_128: int(d.user_data_128.as_deref(), "user_data_128")?,
        user_data_64: int(d.user_data_64.as_deref(), "user_data_64")?,
        user_data_32: d.user_data_32.unwrap_or(0),
        timestamp: int(d.timestamp.as_deref(), "timestamp")?,
    })
}

fn text_id(id: &Option<Id>) -> Result<u128, EventError> {
    match id {
        Some(Id::Text(s)) => int(Some(s), "id"),
        Some(Id::Number(n)) => Ok(u128::from(*n)),
        None => Err(EventError::Missing { field: "id" }),
    }
}

/// A decimal string field; absent is an error (amounts are never guessed).
fn int<T: std::str::FromStr>(s: Option<&str>, field: &'static str) -> Result<T, EventError> {
    let s = s.ok_or(EventError::Missing { field })?;
    s.parse::<T>().map_err(|_| EventError::NotInteger { field, value: s.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_kind() {
        let body = br#"{"data":[
          {"seq":1,"type":"ledger.created","version":1,"timestamp":"5","data":{"id":840,"asset":"USD","scale":2,"timestamp":"5"}},
          {"seq":2,"type":"account.created","version":1,"timestamp":"6","accounts":["7"],"data":{"id":"7","ledger":840,"code":1,"flags":["history"],"user_data_128":"0","user_data_64":"0","user_data_32":0,"debits_pending":"0","debits_posted":"0","credits_pending":"0","credits_posted":"0","timestamp":"6"}},
          {"seq":4,"type":"transfer.posted","version":1,"timestamp":"9","accounts":["7","8"],"data":{"id":"11","debit_account_id":"7","credit_account_id":"8","amount":"340282366920938463463374607431768211455","pending_id":"10","ledger":840,"code":1,"flags":["post_pending"],"timeout":0,"user_data_128":"0","user_data_64":"0","user_data_32":0,"timestamp":"9","pending_amount":"500"}},
          {"seq":5,"type":"key.created","version":1,"timestamp":"9","data":{"id":"3","role":"operator"}}
        ],"next_after":"6"}"#;
        let page = decode_page(0, body).expect("a valid page");
        assert_eq!(page.next_after, 6);
        assert!(matches!(&page.events[0].body, Body::Ledger(l) if l.id == 840 && l.asset == "USD"));
        assert!(matches!(&page.events[1].body, Body::Account(a) if a.id == 7 && a.flags == ["history"]));
        match &page.events[2].body {
            Body::Transfer(t) => {
                assert_eq!((t.kind, t.amount, t.pending_amount), (TransferKind::Post, u128::MAX, 500));
            }
            other => panic!("not a transfer: {other:?}"),
        }
        assert!(matches!(page.events[3].body, Body::Other));
    }

    #[test]
    fn refuses_a_stream_going_backwards() {
        let body =
            br#"{"data":[{"seq":3,"type":"key.created","version":1,"timestamp":"1","data":{}}],"next_after":"3"}"#;
        assert!(decode_page(3, body).unwrap_err().to_string().contains("backwards"));
    }
}

//! The change stream's JSON: one versioned envelope per event, rendered from
//! the engine's wire events (`bursar_core::events`). The schema is documented
//! in `docs/events.md`; `EVENT_VERSION` changes when a payload changes
//! incompatibly.

use crate::dto::{AccountBody, AuditBody, KeyBody, LedgerBody, TransferBody};
use crate::dto_orders::OrderEventBody;
use bursar_core::events::{WIRE_HEADER, kind};
use bursar_core::orders::{OrderState, TimelineEvent};
use bursar_core::records::{Account, Ledger, Transfer};
use bursar_core::service::audit::AuditRecord;
use bursar_core::service::keys::{ApiKey, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Version of every payload below.
pub const EVENT_VERSION: u32 = 1;

/// One committed change.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventBody {
    /// 1, 2, 3, … without gaps, in commit order.
    pub seq: u64,
    /// For example `transfer.posted` or `order.completed`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    /// Log time of the change, nanoseconds since 1970.
    #[schema(value_type = String)]
    pub timestamp: String,
    /// The accounts the change touches (for per-account ordering).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[schema(value_type = Object)]
    pub data: EventData,
}

/// The payload; its shape follows `type` (see `docs/events.md`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventData {
    Transfer(TransferEventBody),
    Account(AccountBody),
    Ledger(LedgerBody),
    Order(Box<OrderChangeBody>),
    Key(KeyBody),
    Audit(AuditBody),
}

/// A transfer as stored, plus what it did to a pending transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferEventBody {
    #[serde(flatten)]
    pub transfer: TransferBody,
    /// For posts, voids and expiries: the pending transfer's full amount,
    /// which leaves the pending balances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_amount: Option<String>,
}

/// An order's creation or transition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderChangeBody {
    pub order_id: String,
    pub customer_id: String,
    pub source_ledger: u32,
    pub source_amount: String,
    pub fee_amount: String,
    pub target_ledger: u32,
    /// Only on `order.fx_locked`, when the quote is locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_ppb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_id: Option<String>,
    pub state: String,
    pub event: OrderEventBody,
}

/// The JSON type of each wire kind (orders are `order.<state>`).
pub fn type_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::LEDGER_CREATED => "ledger.created",
        kind::ACCOUNT_CREATED => "account.created",
        kind::TRANSFER_POSTED => "transfer.posted",
        kind::TRANSFER_PENDING => "transfer.pending",
        kind::TRANSFER_VOIDED => "transfer.voided",
        kind::TRANSFER_EXPIRED => "transfer.expired",
        kind::ORDER => "order",
        kind::KEY_CREATED => "key.created",
        kind::KEY_REVOKED => "key.revoked",
        kind::AUDIT_RECORDED => "audit.recorded",
        _ => return None,
    })
}

/// A name in a list of event types that names no type or family.
#[derive(Debug, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

/// The wire kind bit mask for a list of type prefixes (`transfer`,
/// `transfer.posted`, `order`, …); unknown names are errors.
pub fn kinds_mask(types: &str) -> Result<u32, UnknownEventType> {
    let mut mask = 0u32;
    for t in types.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let matched: u32 = (1..=kind::MAX)
            .filter(|k| type_name(*k).is_some_and(|n| n == t || n.split('.').next() == Some(t) || order_type(*k, t)))
            .map(|k| 1u32 << k)
            .sum();
        if matched == 0 {
            return Err(UnknownEventType(t.to_string()));
        }
        mask |= matched;
    }
    Ok(mask)
}

fn order_type(k: u8, t: &str) -> bool {
    k == kind::ORDER && t.strip_prefix("order.").is_some_and(|s| OrderState::ALL.iter().any(|st| st.name() == s))
}

/// A `GetEvents` reply the engine should never send: a bug or a version
/// mismatch between engine and reader, never user input.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The reply ends inside the part named.
    #[error("short {0}")]
    Short(&'static str),
    /// A fixed-size record of the wrong size.
    #[error("record of {len} bytes, expected {expected}")]
    RecordSize { len: usize, expected: usize },
    #[error("unknown kind {0}")]
    UnknownKind(u8),
    #[error("not a transfer kind: {0}")]
    NotTransfer(u8),
    #[error("unknown order state {0}")]
    UnknownOrderState(u8),
    #[error("unknown role {0}")]
    UnknownRole(u8),
    /// A record's own decoder (order timeline, audit record) refused it.
    #[error("{0}")]
    Record(String),
    /// The event at `seq` failed to decode.
    #[error("event {seq}: {source}")]
    Event {
        seq: u64,
        #[source]
        source: Box<EventDecodeError>,
    },
    /// The event at `seq` decoded but failed to render as JSON.
    #[error("event {seq}: {source}")]
    Json {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
}

impl EventDecodeError {
    fn at(seq: u64) -> impl FnOnce(EventDecodeError) -> EventDecodeError {
        move |e| EventDecodeError::Event { seq, source: Box::new(e) }
    }
}

/// A decoded page: the sequence to continue after, and the events.
pub struct EventPage {
    pub next_after: u64,
    pub events: Vec<EventBody>,
}

/// Decodes a `GetEvents` reply.
pub fn decode_page(body: &[u8]) -> Result<EventPage, EventDecodeError> {
    let (next_after, wire) = split_wire(body)?;
    let events = wire
        .into_iter()
        .map(|w| decode_event(w.seq, w.timestamp, w.kind, w.payload).map_err(EventDecodeError::at(w.seq)))
        .collect::<Result<_, _>>()?;
    Ok(EventPage { next_after, events })
}

/// One event of a `GetEvents` reply, before decoding.
struct WireEvent<'a> {
    seq: u64,
    timestamp: u64,
    kind: u8,
    payload: &'a [u8],
}

/// Splits a `GetEvents` reply into its cursor and its events' headers and
/// payloads (format in `bursar_core::query::events`, `Machine::events_page`).
fn split_wire(body: &[u8]) -> Result<(u64, Vec<WireEvent<'_>>), EventDecodeError> {
    let next_after =
        u64::from_le_bytes(body.get(..8).ok_or(EventDecodeError::Short("events reply"))?.try_into().expect("8 bytes"));
    let mut rest = &body[8..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let header = rest.get(..WIRE_HEADER).ok_or(EventDecodeError::Short("event header"))?;
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes")) as usize;
        let payload = rest.get(WIRE_HEADER..WIRE_HEADER + len).ok_or(EventDecodeError::Short("event payload"))?;
        out.push(WireEvent { seq: word(0), timestamp: word(8), kind: header[16], payload });
        rest = &rest[WIRE_HEADER + len..];
    }
    Ok((next_after, out))
}

fn decode_event(seq: u64, timestamp: u64, k: u8, p: &[u8]) -> Result<EventBody, EventDecodeError> {
    let mut accounts = Vec::new();
    let (event_type, data) = match k {
        kind::LEDGER_CREATED => {
            let l: Ledger = record(p)?;
            ("ledger.created".to_string(), EventData::Ledger(LedgerBody::from(&l)))
        }
        kind::ACCOUNT_CREATED => {
            let a: Account = record(p)?;
            accounts.push(a.id.to_string());
            ("account.created".to_string(), EventData::Account(AccountBody::from(&a)))
        }
        kind::TRANSFER_POSTED | kind::TRANSFER_PENDING | kind::TRANSFER_VOIDED | kind::TRANSFER_EXPIRED => {
            let (t, pending) = transfer_and_pending(p)?;
            accounts.push(t.debit_account_id.to_string());
            accounts.push(t.credit_account_id.to_string());
            let body = TransferEventBody {
                transfer: TransferBody::from(&t),
                pending_amount: (t.pending_id != 0 || k == kind::TRANSFER_EXPIRED).then(|| pending.to_string()),
            };
            (type_name(k).expect("transfer kinds are named").to_string(), EventData::Transfer(body))
        }
        kind::ORDER => {
            let body = decode_order(p)?;
            (format!("order.{}", body.state), EventData::Order(Box::new(body)))
        }
        kind::KEY_CREATED | kind::KEY_REVOKED => {
            let key = decode_key(p)?;
            (type_name(k).expect("key kinds are named").to_string(), EventData::Key(KeyBody::from(&key)))
        }
        kind::AUDIT_RECORDED => {
            let a = AuditRecord::decode(p).map_err(|e| EventDecodeError::Record(e.to_string()))?;
            ("audit.recorded".to_string(), EventData::Audit(AuditBody::from(&a)))
        }
        other => return Err(EventDecodeError::UnknownKind(other)),
    };
    Ok(EventBody { seq, event_type, version: EVENT_VERSION, timestamp: timestamp.to_string(), accounts, data })
}

/// A transfer event's payload: the transfer, then the pending transfer's
/// full amount (16 bytes).
fn transfer_and_pending(p: &[u8]) -> Result<(Transfer, u128), EventDecodeError> {
    let t: Transfer = record(p.get(..Transfer::SIZE).ok_or(EventDecodeError::Short("transfer"))?)?;
    let pending: [u8; 16] = record(p.get(Transfer::SIZE..).ok_or(EventDecodeError::Short("pending amount"))?)?;
    Ok((t, u128::from_le_bytes(pending)))
}

fn record<T: bytemuck::Pod>(p: &[u8]) -> Result<T, EventDecodeError> {
    if p.len() != std::mem::size_of::<T>() {
        return Err(EventDecodeError::RecordSize { len: p.len(), expected: std::mem::size_of::<T>() });
    }
    Ok(bytemuck::pod_read_unaligned(p))
}

fn decode_order(p: &[u8]) -> Result<OrderChangeBody, EventDecodeError> {
    const FIXED: usize = 7 * 16 + 8;
    let head = p.get(..FIXED).ok_or(EventDecodeError::Short("order event"))?;
    let u = |i: usize| u128::from_le_bytes(head[i * 16..i * 16 + 16].try_into().expect("16 bytes"));
    let l = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let e = TimelineEvent::decode_list(&[&1u32.to_le_bytes()[..], &p[FIXED..]].concat())
        .map_err(|e| EventDecodeError::Record(e.to_string()))?
        .remove(0);
    let state = OrderState::from_code(e.to).ok_or(EventDecodeError::UnknownOrderState(e.to))?.name().to_string();
    let opt = |v: u128| (v != 0).then(|| v.to_string());
    Ok(OrderChangeBody {
        order_id: u(0).to_string(),
        customer_id: u(1).to_string(),
        source_amount: u(2).to_string(),
        fee_amount: u(3).to_string(),
        target_amount: opt(u(4)),
        rate_ppb: opt(u(5)),
        quote_id: opt(u(6)),
        source_ledger: l(112),
        target_ledger: l(116),
        state,
        event: OrderEventBody::new(u(0), &e),
    })
}

fn decode_key(p: &[u8]) -> Result<ApiKey, EventDecodeError> {
    let head = p.get(..28).ok_or(EventDecodeError::Short("key event"))?;
    let w = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let (role, ledgers, name_len) = (head[24], head[25] as usize, head[26] as usize);
    let ledger_bytes = p.get(28..28 + ledgers * 4).ok_or(EventDecodeError::Short("key ledgers"))?;
    let name = p.get(28 + ledgers * 4..28 + ledgers * 4 + name_len).ok_or(EventDecodeError::Short("key name"))?;
    Ok(ApiKey {
        id: w(0),
        hash: [0; 32],
        role: Role::from_code(role).ok_or(EventDecodeError::UnknownRole(role))?,
        ledgers: ledger_bytes.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
        name: String::from_utf8_lossy(name).into_owned(),
        created_at: w(8),
        revoked_at: w(16),
        expires_at: 0,
        rate_limit: Default::default(),
    })
}

/// One event as JSON bytes, ready to publish.
pub struct JsonEvent {
    pub seq: u64,
    pub event_type: std::borrow::Cow<'static, str>,
    pub json: Vec<u8>,
}

/// A `GetEvents` reply as JSON bytes per event: the same bytes as
/// `serde_json::to_vec(&EventBody)`, but transfer events (the bulk of any
/// stream) are written straight from their records, without the
/// intermediate strings (the relays' hot path).
pub fn page_json(body: &[u8]) -> Result<(u64, Vec<JsonEvent>), EventDecodeError> {
    let (next_after, wire) = split_wire(body)?;
    let mut out = Vec::with_capacity(wire.len());
    for WireEvent { seq, timestamp, kind: k, payload } in wire {
        let event = match transfer_type(k) {
            Some(name) => {
                let mut json = Vec::with_capacity(512);
                write_transfer_json(seq, timestamp, k, payload, &mut json).map_err(EventDecodeError::at(seq))?;
                JsonEvent { seq, event_type: name.into(), json }
            }
            None => {
                let e = decode_event(seq, timestamp, k, payload).map_err(EventDecodeError::at(seq))?;
                let json = serde_json::to_vec(&e).map_err(|source| EventDecodeError::Json { seq, source })?;
                JsonEvent { seq, event_type: e.event_type.into(), json }
            }
        };
        out.push(event);
    }
    Ok((next_after, out))
}

fn transfer_type(k: u8) -> Option<&'static str> {
    matches!(k, kind::TRANSFER_POSTED | kind::TRANSFER_PENDING | kind::TRANSFER_VOIDED | kind::TRANSFER_EXPIRED)
        .then(|| type_name(k).expect("transfer kinds are named"))
}

/// Writes a transfer event exactly as serde writes its `EventBody` (field
/// order, quoting, optional `pending_amount`); `tests` hold the two equal.
fn write_transfer_json(seq: u64, timestamp: u64, k: u8, p: &[u8], out: &mut Vec<u8>) -> Result<(), EventDecodeError> {
    let (t, pending) = transfer_and_pending(p)?;
    let mut buf = itoa::Buffer::new();
    // Each field: the JSON text before it (key, punctuation), then the
    // number, quoted where serde writes a string.
    let mut field = |out: &mut Vec<u8>, before: &[u8], quoted: bool, v: u128| {
        out.extend_from_slice(before);
        if quoted {
            out.push(b'"');
        }
        out.extend_from_slice(buf.format(v).as_bytes());
        if quoted {
            out.push(b'"');
        }
    };
    field(out, b"{\"seq\":", false, u128::from(seq));
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(type_name(k).ok_or(EventDecodeError::NotTransfer(k))?.as_bytes());
    field(out, b"\",\"version\":", false, u128::from(EVENT_VERSION));
    field(out, b",\"timestamp\":", true, u128::from(timestamp));
    field(out, b",\"accounts\":[", true, t.debit_account_id);
    field(out, b",", true, t.credit_account_id);
    field(out, b"],\"data\":{\"id\":", true, t.id);
    field(out, b",\"debit_account_id\":", true, t.debit_account_id);
    field(out, b",\"credit_account_id\":", true, t.credit_account_id);
    field(out, b",\"amount\":", true, t.amount);
    field(out, b",\"pending_id\":", true, t.pending_id);
    field(out, b",\"ledger\":", false, u128::from(t.ledger));
    field(out, b",\"code\":", false, u128::from(t.code));
    out.extend_from_slice(b",\"flags\":[");
    let mut first = true;
    for (name, bit) in crate::dto::TRANSFER_FLAGS {
        if t.flags & bit != 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
        }
    }
    field(out, b"],\"timeout\":", false, u128::from(t.timeout));
    field(out, b",\"user_data_128\":", true, t.user_data_128);
    field(out, b",\"user_data_64\":", true, u128::from(t.user_data_64));
    field(out, b",\"user_data_32\":", false, u128::from(t.user_data_32));
    field(out, b",\"timestamp\":", true, u128::from(t.timestamp));
    if t.pending_id != 0 || k == kind::TRANSFER_EXPIRED {
        field(out, b",\"pending_amount\":", true, pending);
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bursar_core::records::transfer_flags as TF;

    fn wire(seq: u64, timestamp: u64, k: u8, t: &Transfer, pending: u128) -> Vec<u8> {
        let mut out = vec![0; 8];
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&[k, 0, 0, 0]);
        out.extend_from_slice(&((Transfer::SIZE + 16) as u32).to_le_bytes());
        out.extend_from_slice(bytemuck::bytes_of(t));
        out.extend_from_slice(&pending.to_le_bytes());
        out
    }

    #[test]
    fn direct_transfer_json_equals_serde_byte_for_byte() {
        let mut x: u128 = 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let kinds = [kind::TRANSFER_POSTED, kind::TRANSFER_PENDING, kind::TRANSFER_VOIDED, kind::TRANSFER_EXPIRED];
        for i in 0..2000u64 {
            let r = next();
            // Edge values as often as random ones: 0, max, and everything between.
            let pick = |v: u128, sel: u128| match sel % 3 {
                0 => 0,
                1 => u128::MAX,
                _ => v,
            };
            let t = Transfer {
                id: r | 1,
                debit_account_id: next(),
                credit_account_id: next(),
                amount: pick(next(), r >> 3),
                pending_id: pick(next(), r >> 7),
                user_data_128: pick(next(), r >> 11),
                user_data_64: next() as u64,
                user_data_32: next() as u32,
                timeout: next() as u32,
                ledger: next() as u32,
                code: next() as u16,
                flags: (next() as u16) & (TF::LINKED | TF::PENDING | TF::POST_PENDING | TF::VOID_PENDING | 0xF0),
                timestamp: next() as u64,
            };
            let k = kinds[(i % 4) as usize];
            let body = wire(i + 1, next() as u64, k, &t, pick(next(), r >> 17));
            let (_, direct) = page_json(&body).unwrap();
            let page = decode_page(&body).unwrap();
            assert_eq!(
                String::from_utf8(direct[0].json.clone()).unwrap(),
                serde_json::to_string(&page.events[0]).unwrap(),
                "transfer {t:?}"
            );
            assert_eq!(direct[0].event_type, page.events[0].event_type);
        }
    }
}

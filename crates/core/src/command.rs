//! Operations and the encoding of a log entry's body: the commands the state
//! machine applies, in order.
//!
//! ```text
//! body     := (command | envelope)*
//! command  := operation u8 | reserved [u8; 3] | count u32 (LE) | count × event
//! envelope := 32 u8 | reserved [u8; 3] | length u32 | envelope fields | command
//! ```
//!
//! An envelope wraps one command of an HTTP request with who sent it, its
//! idempotency scope and fingerprint, and what the audit trail records.

use crate::entry::{EntryHeader, decode_header};
use crate::error::{CommandError, DecodeError};
use crate::limits::{BATCH_EVENTS_MAX, ENVELOPE_MAX};
use crate::records::{Account, AccountFilter, Ledger, LedgerFilter, Transfer};
use bytemuck::{Pod, Zeroable};

/// A page of the audit trail: records with seq after `after_seq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AuditFilter {
    pub after_seq: u64,
    pub limit: u32,
    pub reserved: u32,
}

impl AuditFilter {
    pub const SIZE: usize = 16;
}

/// Every operation a client can ask for. Codes are stable.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateLedgers = 1,
    CreateAccounts = 2,
    CreateTransfers = 3,
    CreateKeys = 4,
    RevokeKeys = 5,
    CreateOrders = 6,
    OrderCommands = 7,
    CreateWebhooks = 8,
    DeleteWebhooks = 9,
    WebhookProgress = 10,
    WebhookDeadLetters = 11,
    ReplayDeadLetters = 12,
    /// The HTTP edge's access trail (personal-data reads, refusals).
    RecordAccess = 13,
    RotateKeys = 14,
    ListLedgers = 16,
    LookupAccounts = 17,
    LookupTransfers = 18,
    GetAccountTransfers = 19,
    GetAccountBalances = 20,
    ListAudit = 21,
    LookupOrders = 22,
    ListOrders = 23,
    GetOrderEvents = 24,
    GetEvents = 25,
    ListWebhooks = 26,
    ListDeadLetters = 27,
    ListAccess = 28,
}

impl Operation {
    pub const ALL: &'static [Operation] = &[
        Operation::CreateLedgers,
        Operation::CreateAccounts,
        Operation::CreateTransfers,
        Operation::CreateKeys,
        Operation::RevokeKeys,
        Operation::CreateOrders,
        Operation::OrderCommands,
        Operation::CreateWebhooks,
        Operation::DeleteWebhooks,
        Operation::WebhookProgress,
        Operation::WebhookDeadLetters,
        Operation::ReplayDeadLetters,
        Operation::RecordAccess,
        Operation::RotateKeys,
        Operation::ListLedgers,
        Operation::LookupAccounts,
        Operation::LookupTransfers,
        Operation::GetAccountTransfers,
        Operation::GetAccountBalances,
        Operation::ListAudit,
        Operation::LookupOrders,
        Operation::ListOrders,
        Operation::GetOrderEvents,
        Operation::GetEvents,
        Operation::ListWebhooks,
        Operation::ListDeadLetters,
        Operation::ListAccess,
    ];

    pub fn from_code(code: u8) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|op| *op as u8 == code)
    }

    /// Writes go through the log; reads are answered from the applied state.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Operation::CreateLedgers
                | Operation::CreateAccounts
                | Operation::CreateTransfers
                | Operation::CreateKeys
                | Operation::RevokeKeys
                | Operation::CreateOrders
                | Operation::OrderCommands
                | Operation::CreateWebhooks
                | Operation::DeleteWebhooks
                | Operation::WebhookProgress
                | Operation::WebhookDeadLetters
                | Operation::ReplayDeadLetters
                | Operation::RecordAccess
                | Operation::RotateKeys
        )
    }

    /// Key management, the audit trail, orders (which carry personal data)
    /// and webhooks (sealed secrets, outbound calls) are only reachable through the authenticated HTTP API and the
    /// in-process workflow executor, never the binary protocol.
    pub fn binary_allowed(self) -> bool {
        !matches!(
            self,
            Operation::CreateKeys
                | Operation::RevokeKeys
                | Operation::RotateKeys
                | Operation::ListAudit
                | Operation::CreateOrders
                | Operation::OrderCommands
                | Operation::LookupOrders
                | Operation::ListOrders
                | Operation::GetOrderEvents
                | Operation::GetEvents
                | Operation::CreateWebhooks
                | Operation::DeleteWebhooks
                | Operation::WebhookProgress
                | Operation::WebhookDeadLetters
                | Operation::ReplayDeadLetters
                | Operation::ListWebhooks
                | Operation::ListDeadLetters
                | Operation::RecordAccess
                | Operation::ListAccess
        )
    }

    /// Size of one event in a request body.
    pub fn event_size(self) -> usize {
        match self {
            Operation::CreateLedgers => Ledger::SIZE,
            Operation::CreateAccounts => Account::SIZE,
            Operation::CreateTransfers => Transfer::SIZE,
            Operation::CreateKeys => crate::service::keys::KeyEvent::SIZE,
            Operation::RevokeKeys => crate::service::keys::RevokeEvent::SIZE,
            Operation::RotateKeys => crate::service::keys::RotateEvent::SIZE,
            Operation::ListLedgers => LedgerFilter::SIZE,
            Operation::LookupAccounts | Operation::LookupTransfers => 16,
            Operation::GetAccountTransfers | Operation::GetAccountBalances => AccountFilter::SIZE,
            Operation::ListAudit => AuditFilter::SIZE,
            Operation::CreateOrders => crate::orders::OrderCreate::SIZE,
            Operation::OrderCommands => crate::orders::OrderCommand::SIZE,
            Operation::LookupOrders | Operation::GetOrderEvents => 16,
            Operation::ListOrders => crate::orders::OrderFilter::SIZE,
            Operation::GetEvents => crate::events::EventFilter::SIZE,
            Operation::CreateWebhooks => crate::service::webhooks::WebhookCreate::SIZE,
            Operation::DeleteWebhooks
            | Operation::WebhookProgress
            | Operation::WebhookDeadLetters
            | Operation::ReplayDeadLetters => crate::service::webhooks::WebhookUpdate::SIZE,
            Operation::ListWebhooks | Operation::ListDeadLetters => crate::service::webhooks::WebhookFilter::SIZE,
            Operation::RecordAccess => crate::service::access::AccessEvent::SIZE,
            Operation::ListAccess => crate::service::access::AccessFilter::SIZE,
        }
    }

    /// Largest number of events in one request.
    pub fn events_max(self) -> usize {
        match self {
            Operation::ListLedgers
            | Operation::GetAccountTransfers
            | Operation::GetAccountBalances
            | Operation::ListAudit
            | Operation::ListOrders
            | Operation::GetOrderEvents
            | Operation::GetEvents
            | Operation::CreateKeys
            | Operation::RevokeKeys
            | Operation::RotateKeys
            | Operation::CreateWebhooks
            | Operation::ListWebhooks
            | Operation::ListDeadLetters
            | Operation::ListAccess => 1,
            _ => BATCH_EVENTS_MAX,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateLedgers => "create_ledgers",
            Operation::CreateAccounts => "create_accounts",
            Operation::CreateTransfers => "create_transfers",
            Operation::CreateKeys => "create_keys",
            Operation::RevokeKeys => "revoke_keys",
            Operation::RotateKeys => "rotate_keys",
            Operation::ListLedgers => "list_ledgers",
            Operation::LookupAccounts => "lookup_accounts",
            Operation::LookupTransfers => "lookup_transfers",
            Operation::GetAccountTransfers => "get_account_transfers",
            Operation::GetAccountBalances => "get_account_balances",
            Operation::ListAudit => "list_audit",
            Operation::CreateOrders => "create_orders",
            Operation::OrderCommands => "order_commands",
            Operation::LookupOrders => "lookup_orders",
            Operation::ListOrders => "list_orders",
            Operation::GetOrderEvents => "get_order_events",
            Operation::GetEvents => "get_events",
            Operation::CreateWebhooks => "create_webhooks",
            Operation::DeleteWebhooks => "delete_webhooks",
            Operation::WebhookProgress => "webhook_progress",
            Operation::WebhookDeadLetters => "webhook_dead_letters",
            Operation::ReplayDeadLetters => "replay_dead_letters",
            Operation::ListWebhooks => "list_webhooks",
            Operation::ListDeadLetters => "list_dead_letters",
            Operation::RecordAccess => "record_access",
            Operation::ListAccess => "list_access",
        }
    }
}

/// One write command: an operation and its events as raw little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct Command<'a> {
    pub operation: Operation,
    pub events: &'a [u8],
}

impl<'a> Command<'a> {
    pub const HEADER_SIZE: usize = 8;

    pub fn count(&self) -> usize {
        self.events.len() / self.operation.event_size()
    }

    /// The 8-byte header that precedes the events in a log entry body.
    pub fn header(&self) -> [u8; 8] {
        let mut h = [0u8; 8];
        h[0] = self.operation as u8;
        h[4..8].copy_from_slice(&(self.count() as u32).to_le_bytes());
        h
    }

    /// Checks that a write command is well formed: a write operation and a
    /// whole number of events, at most a batch.
    pub fn validate(&self) -> Result<(), CommandError> {
        let size = self.operation.event_size();
        if !self.operation.is_write() {
            return Err(CommandError::NotWrite { operation: self.operation.name() });
        }
        if !self.events.len().is_multiple_of(size) {
            return Err(CommandError::PartialEvent { len: self.events.len(), size });
        }
        if self.count() > BATCH_EVENTS_MAX {
            return Err(CommandError::BatchTooLarge { count: self.count(), max: BATCH_EVENTS_MAX });
        }
        Ok(())
    }
}

/// Appends the encoding of `command` to `body`.
pub fn encode_command(body: &mut Vec<u8>, command: &Command<'_>) {
    body.extend_from_slice(&command.header());
    body.extend_from_slice(command.events);
}

/// The envelope's operation code in a log entry body.
pub const ENVELOPE: u8 = 32;

/// Who sent a command over HTTP, and what its idempotency record and audit
/// record need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub key_id: u64,
    /// Idempotency scope (a hash of the key id and the Idempotency-Key) and
    /// the request's fingerprint; `None` when the request carried no key.
    pub idempotency: Option<([u8; 16], [u8; 16])>,
    /// How long the idempotency record is kept, in seconds.
    pub retention_seconds: u32,
    /// Most idempotency records kept; a new one beyond it is refused.
    pub idempotency_limit: u32,
    pub request_id: &'a str,
    pub route: &'a str,
    pub idempotency_key: &'a str,
}

/// One item of a log entry body.
#[derive(Clone, Copy, Debug)]
pub enum LogCommand<'a> {
    /// From the binary protocol.
    Plain(Command<'a>),
    /// From the HTTP API.
    Enveloped(Envelope<'a>, Command<'a>),
}

impl<'a> LogCommand<'a> {
    pub fn command(&self) -> &Command<'a> {
        match self {
            LogCommand::Plain(c) | LogCommand::Enveloped(_, c) => c,
        }
    }
}

/// The bytes that precede an enveloped command's header and events in a
/// body (the envelope header and fields). Errors if a field is too long.
pub fn envelope_prefix(env: &Envelope<'_>, command: &Command<'_>) -> Result<Vec<u8>, CommandError> {
    let check = |s: &str, max: usize, what: &'static str| {
        if s.len() > max { Err(CommandError::FieldTooLong { what, max }) } else { Ok(()) }
    };
    check(env.request_id, crate::limits::REQUEST_ID_MAX, "request id")?;
    check(env.route, crate::limits::ROUTE_MAX, "route")?;
    check(env.idempotency_key, crate::limits::IDEMPOTENCY_KEY_MAX, "idempotency key")?;
    let mut fields = Vec::with_capacity(96);
    fields.push(1); // version
    fields.push(u8::from(env.idempotency.is_some()));
    fields.extend_from_slice(&[0, 0]);
    fields.extend_from_slice(&env.retention_seconds.to_le_bytes());
    fields.extend_from_slice(&env.key_id.to_le_bytes());
    fields.extend_from_slice(&env.idempotency_limit.to_le_bytes());
    fields.extend_from_slice(&[0; 4]);
    let (scope, fingerprint) = env.idempotency.unwrap_or(([0; 16], [0; 16]));
    fields.extend_from_slice(&scope);
    fields.extend_from_slice(&fingerprint);
    fields.push(env.request_id.len() as u8);
    fields.extend_from_slice(env.request_id.as_bytes());
    fields.push(env.route.len() as u8);
    fields.extend_from_slice(env.route.as_bytes());
    fields.extend_from_slice(&(env.idempotency_key.len() as u16).to_le_bytes());
    fields.extend_from_slice(env.idempotency_key.as_bytes());
    let len = fields.len() + Command::HEADER_SIZE + command.events.len();
    if len > ENVELOPE_MAX {
        return Err(CommandError::EnvelopeTooLarge { len, max: ENVELOPE_MAX });
    }
    let mut out = Vec::with_capacity(8 + fields.len());
    out.push(ENVELOPE);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&fields);
    Ok(out)
}

/// Decodes a log entry body into its commands.
pub fn decode_body(body: &[u8]) -> Result<Vec<LogCommand<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < Command::HEADER_SIZE {
            return Err(DecodeError::ShortTail { len: rest.len() });
        }
        if rest[0] == ENVELOPE {
            if rest[1..4] != [0, 0, 0] {
                return Err(DecodeError::ReservedNotZero { what: "envelope header" });
            }
            let len = u32::from_le_bytes(rest[4..8].try_into().expect("4-byte slice")) as usize;
            let payload = rest[8..].get(..len).ok_or(DecodeError::EnvelopeOverrun)?;
            out.push(decode_envelope(payload)?);
            rest = &rest[8 + len..];
        } else {
            let (command, used) = decode_command(rest)?;
            out.push(LogCommand::Plain(command));
            rest = &rest[used..];
        }
    }
    Ok(out)
}

/// Decodes one command at the start of `bytes`; returns it and its length.
fn decode_command(bytes: &[u8]) -> Result<(Command<'_>, usize), DecodeError> {
    if bytes.len() < Command::HEADER_SIZE {
        return Err(DecodeError::CutShort { what: "a command header" });
    }
    let operation = Operation::from_code(bytes[0])
        .ok_or(DecodeError::UnknownCode { what: "operation code", code: u64::from(bytes[0]) })?;
    if bytes[1..4] != [0, 0, 0] {
        return Err(DecodeError::ReservedNotZero { what: "command header" });
    }
    let count = u32::from_le_bytes(bytes[4..8].try_into().expect("4-byte slice")) as usize;
    if count > BATCH_EVENTS_MAX {
        return Err(DecodeError::CommandTooLarge { count, max: BATCH_EVENTS_MAX });
    }
    let len = count * operation.event_size();
    let events = bytes[Command::HEADER_SIZE..].get(..len).ok_or(DecodeError::CommandEndsEarly { count })?;
    let command = Command { operation, events };
    command.validate()?;
    Ok((command, Command::HEADER_SIZE + len))
}

fn decode_envelope(payload: &[u8]) -> Result<LogCommand<'_>, DecodeError> {
    let mut c = crate::cursor::Cursor::new(payload);
    let version = c.u8()?;
    if version != 1 {
        return Err(DecodeError::UnknownCode { what: "envelope version", code: u64::from(version) });
    }
    let has_idempotency = match c.u8()? {
        0 => false,
        1 => true,
        flags => return Err(DecodeError::UnknownCode { what: "envelope flags", code: u64::from(flags) }),
    };
    // Reserved bytes and field lengths are checked as the encoder writes
    // them, so every body has one encoding and nothing in it is ignored.
    if c.array::<2>()? != [0; 2] {
        return Err(DecodeError::ReservedNotZero { what: "envelope" });
    }
    let retention_seconds = c.u32()?;
    let key_id = c.u64()?;
    let idempotency_limit = c.u32()?;
    if c.array::<4>()? != [0; 4] {
        return Err(DecodeError::ReservedNotZero { what: "envelope" });
    }
    let scope = c.array::<16>()?;
    let fingerprint = c.array::<16>()?;
    if !has_idempotency && (scope, fingerprint) != ([0; 16], [0; 16]) {
        return Err(DecodeError::ScopeWithoutKey);
    }
    let request_id = bounded(c.str_u8_ref()?, crate::limits::REQUEST_ID_MAX, "request id")?;
    let route = bounded(c.str_u8_ref()?, crate::limits::ROUTE_MAX, "route")?;
    let idempotency_key = bounded(c.str_u16_ref()?, crate::limits::IDEMPOTENCY_KEY_MAX, "idempotency key")?;
    let rest = c.rest();
    let (command, used) = decode_command(rest)?;
    if used != rest.len() {
        return Err(DecodeError::BytesAfterCommand);
    }
    let envelope = Envelope {
        key_id,
        idempotency: has_idempotency.then_some((scope, fingerprint)),
        retention_seconds,
        idempotency_limit,
        request_id,
        route,
        idempotency_key,
    };
    Ok(LogCommand::Enveloped(envelope, command))
}

fn bounded<'a>(s: &'a str, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
    if s.len() > max { Err(DecodeError::EnvelopeFieldTooLong { what, max }) } else { Ok(s) }
}

/// A decoded log entry body.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    pub header: EntryHeader,
    pub commands: Vec<LogCommand<'a>>,
}

impl<'a> Entry<'a> {
    pub fn plain(commands: Vec<LogCommand<'a>>) -> Entry<'a> {
        Entry { header: EntryHeader::None, commands }
    }
}

/// Decodes a log entry body: its header, if any, then its commands.
pub fn decode_entry(body: &[u8]) -> Result<Entry<'_>, DecodeError> {
    let (header, commands) = decode_header(body)?;
    Ok(Entry { header, commands: decode_body(commands)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::encode_all;

    #[test]
    fn body_round_trip_and_rejects_damage() {
        let transfers = vec![Transfer { id: 1, ..Default::default() }, Transfer { id: 2, ..Default::default() }];
        let accounts = vec![Account { id: 3, ..Default::default() }];
        let mut body = Vec::new();
        encode_command(&mut body, &Command { operation: Operation::CreateAccounts, events: encode_all(&accounts) });
        encode_command(&mut body, &Command { operation: Operation::CreateTransfers, events: encode_all(&transfers) });
        let commands = decode_body(&body).unwrap();
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].command().operation, Operation::CreateAccounts);
        assert_eq!(commands[1].command().count(), 2);
        assert!(decode_body(&body[..body.len() - 1]).is_err());
        let mut bad = body.clone();
        bad[0] = Operation::LookupAccounts as u8;
        assert!(decode_body(&bad).is_err(), "reads are never logged");
        bad[0] = 99;
        assert!(decode_body(&bad).is_err());
        assert!(decode_body(&[]).unwrap().is_empty());
    }

    #[test]
    fn envelopes_round_trip_and_reject_damage() {
        let transfers = vec![Transfer { id: 9, ..Default::default() }];
        let command = Command { operation: Operation::CreateTransfers, events: encode_all(&transfers) };
        let env = Envelope {
            key_id: 42,
            idempotency: Some(([1; 16], [2; 16])),
            retention_seconds: 86400,
            idempotency_limit: 1000,
            request_id: "req-7",
            route: "POST /v1/transfers",
            idempotency_key: "k-1",
        };
        let mut body = envelope_prefix(&env, &command).unwrap();
        encode_command(&mut body, &command);
        encode_command(&mut body, &command);
        let decoded = decode_body(&body).unwrap();
        assert_eq!(decoded.len(), 2);
        match decoded[0] {
            LogCommand::Enveloped(e, c) => {
                assert_eq!(e, env);
                assert_eq!(c.count(), 1);
            }
            _ => panic!("expected an envelope"),
        }
        assert!(matches!(decoded[1], LogCommand::Plain(_)));
        for cut in 1..body.len() - 136 {
            assert!(decode_body(&body[..cut]).is_err(), "cut at {cut}");
        }
        let long = "x".repeat(300);
        assert!(envelope_prefix(&Envelope { idempotency_key: &long, ..env }, &command).is_err());
    }
}

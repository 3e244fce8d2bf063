//! The messages between the engine and everything around it: requests in,
//! responses out (through the gate), and the replicated log's proposals and
//! committed entries. They live apart from the engine, the gate and the
//! replicator so that those modules depend on these types and not on each
//! other.

use bursar_core::command::Envelope;
use bursar_core::entry::{EntryHeader, Origin};
use bursar_core::machine::Outcome;
use bursar_proto::{ProtocolError, RequestOp};
use tokio::sync::oneshot;

/// A checked request from a client connection.
pub struct Request {
    pub op: RequestOp,
    pub request_id: u64,
    pub body: Vec<u8>,
    /// Set for HTTP writes: logged around the command.
    pub envelope: Option<OwnedEnvelope>,
    pub reply: ReplyTo,
}

/// An envelope that owns its strings, for the trip to the engine.
#[derive(Clone, Debug, Default)]
pub struct OwnedEnvelope {
    pub key_id: u64,
    pub idempotency: Option<([u8; 16], [u8; 16])>,
    pub retention_seconds: u32,
    pub idempotency_limit: u32,
    pub request_id: String,
    pub route: String,
    pub idempotency_key: String,
}

impl OwnedEnvelope {
    pub fn borrow(&self) -> Envelope<'_> {
        Envelope {
            key_id: self.key_id,
            idempotency: self.idempotency,
            retention_seconds: self.retention_seconds,
            idempotency_limit: self.idempotency_limit,
            request_id: &self.request_id,
            route: &self.route,
            idempotency_key: &self.idempotency_key,
        }
    }
}

/// What the engine thread receives, in order, on its one queue.
pub enum EngineMsg {
    Request(Request),
    /// Wakes the engine so due pending transfers expire without traffic.
    Tick,
    /// Finish queued work, snapshot, close the log, then acknowledge.
    Shutdown(std::sync::mpsc::Sender<()>),
    /// Cluster mode: the next entry the replicated log committed.
    Committed(Committed),
    /// Cluster mode: a proposal's commit could not be confirmed.
    ProposalFailed(ProposalFailed),
}

impl EngineMsg {
    pub(crate) fn body_len(&self) -> usize {
        match self {
            EngineMsg::Request(r) => r.body.len(),
            EngineMsg::Committed(c) => c.body.len(),
            _ => 0,
        }
    }
}

/// One reply to one request, as the connection writes it back.
#[derive(Debug)]
pub struct Response {
    pub operation: u8,
    pub status: u16,
    pub request_id: u64,
    pub count: u32,
    pub body: Vec<u8>,
    /// For writes: whether the command ran or an idempotency record
    /// answered (always `Executed` for the binary protocol).
    pub outcome: bursar_core::machine::Outcome,
    /// For a single-event HTTP create: the stored record's bytes (empty if
    /// it does not exist), so the response needs no second round trip.
    pub record: Vec<u8>,
}

pub type ReplyTo = oneshot::Sender<Response>;

/// A group of writes for the replicated log. Its origin (node, boot,
/// proposal number) is unique forever; the replicator fills in the key id
/// it seals the proposal with.
#[derive(Debug)]
pub struct Proposal {
    pub origin: Origin,
    /// The proposer's clock; the state machine keeps entry time monotonic.
    pub timestamp: u64,
    /// An entry body, exactly as the file log stores it.
    pub body: Vec<u8>,
}

/// An entry the replicated log committed, delivered in log order, as the
/// replicator judged it: authenticated (its origin, then its commands) or
/// rejected (no commands). The local log stores `header` then `body`.
#[derive(Debug)]
pub struct Committed {
    pub position: u64,
    pub timestamp: u64,
    pub header: EntryHeader,
    pub body: bytes::Bytes,
}

impl Committed {
    /// A committed entry as the replicator hands it over; asserts what the
    /// engine relies on when it copies the entry into the local log.
    pub fn new(position: u64, timestamp: u64, header: EntryHeader, body: bytes::Bytes) -> Committed {
        assert!(position >= 1, "invariant: replicated log positions start at 1");
        assert!(!matches!(header, EntryHeader::None), "invariant: a committed entry names an origin or a rejection");
        assert!(
            !matches!(header, EntryHeader::Rejected(_)) || body.is_empty(),
            "invariant: a rejected entry carries no commands"
        );
        Committed { position, timestamp, header, body }
    }
}

/// Why a proposal's requests get no result: its commit was not confirmed
/// in time, so it may still be applied (or already was).
#[derive(Debug)]
pub struct ProposalFailed {
    pub id: u64,
    pub reason: String,
}

pub fn ok_response(operation: u8, request_id: u64, count: usize, body: Vec<u8>) -> Response {
    Response {
        operation,
        status: 0,
        request_id,
        count: count as u32,
        body,
        outcome: Outcome::Executed,
        record: Vec::new(),
    }
}

pub fn error_response(operation: u8, request_id: u64, error: ProtocolError, message: &str) -> Response {
    let mut body = message.as_bytes().to_vec();
    body.truncate(bursar_proto::MESSAGE_MAX);
    while std::str::from_utf8(&body).is_err() {
        body.pop();
    }
    Response {
        operation,
        status: error.code(),
        request_id,
        count: 0,
        body,
        outcome: Outcome::Executed,
        record: Vec::new(),
    }
}

//! The audit trail: one record per mutating request (who, what, when, the
//! result, the idempotency key and the request id), each carrying the hash
//! of the one before it. Records are derived while applying the log, so
//! they exist exactly when the effect does.
//!
//! Stored as two append-only arenas (the encoded records back to back, and
//! the offset of each), so snapshots only write what is new.

use crate::arena::CowArena;
use crate::error::{AuditFault, DecodeError};
use crate::limits::{IDEMPOTENCY_KEY_MAX, REQUEST_ID_MAX, ROUTE_MAX};

/// What happened to the request.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutcome {
    Executed = 1,
    /// Answered from the idempotency record; nothing executed.
    Replayed = 2,
    /// Same idempotency key, different request; nothing executed.
    Conflict = 3,
    /// The idempotency store was full; nothing executed.
    Refused = 4,
    /// A committed cluster entry failed authentication, decoding or replay
    /// protection; nothing executed (the route names the reason).
    Rejected = 5,
}

impl AuditOutcome {
    pub fn from_code(c: u8) -> Option<AuditOutcome> {
        Some(match c {
            1 => AuditOutcome::Executed,
            2 => AuditOutcome::Replayed,
            3 => AuditOutcome::Conflict,
            4 => AuditOutcome::Refused,
            5 => AuditOutcome::Rejected,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AuditOutcome::Executed => "executed",
            AuditOutcome::Replayed => "replayed",
            AuditOutcome::Conflict => "conflict",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Rejected => "rejected",
        }
    }
}

/// One audit record. `hash = blake3(encoding of every other field)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// 1, 2, 3, … no gaps.
    pub seq: u64,
    /// Log time of the entry that carried the request.
    pub timestamp: u64,
    pub log_position: u64,
    /// The API key that made the request (HTTP or binary protocol); 0 for
    /// the in-process workflow executor and entries logged before binary
    /// writes carried keys.
    pub key_id: u64,
    pub operation: u8,
    pub outcome: AuditOutcome,
    pub events: u32,
    /// Events that succeeded.
    pub ok: u32,
    /// The first failing event's result code, if any.
    pub first_error: Option<u32>,
    pub request_id: String,
    /// For example `POST /v1/transfers`.
    pub route: String,
    pub idempotency_key: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditRecord {
    /// The bytes the hash covers.
    fn encode_content(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.log_position.to_le_bytes());
        out.extend_from_slice(&self.key_id.to_le_bytes());
        out.push(self.operation);
        out.push(self.outcome as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.events.to_le_bytes());
        out.extend_from_slice(&self.ok.to_le_bytes());
        out.extend_from_slice(&self.first_error.unwrap_or(u32::MAX).to_le_bytes());
        out.push(self.request_id.len() as u8);
        out.extend_from_slice(self.request_id.as_bytes());
        out.push(self.route.len() as u8);
        out.extend_from_slice(self.route.as_bytes());
        out.extend_from_slice(&(self.idempotency_key.len() as u16).to_le_bytes());
        out.extend_from_slice(self.idempotency_key.as_bytes());
        out.extend_from_slice(&self.prev_hash);
    }

    pub fn compute_hash(&self) -> [u8; 32] {
        let mut content = Vec::with_capacity(128);
        self.encode_content(&mut content);
        *blake3::hash(&content).as_bytes()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        self.encode_content(&mut out);
        out.extend_from_slice(&self.hash);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<AuditRecord, DecodeError> {
        let mut c = crate::cursor::Cursor::new(bytes);
        let (seq, timestamp, log_position, key_id) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?);
        let operation = c.u8()?;
        let code = c.u8()?;
        let outcome = AuditOutcome::from_code(code)
            .ok_or(DecodeError::UnknownCode { what: "audit outcome", code: u64::from(code) })?;
        c.skip(2)?;
        let (events, ok, first_error) = (c.u32()?, c.u32()?, c.u32()?);
        let request_id = c.str_u8()?;
        let route = c.str_u8()?;
        let idempotency_key = c.str_u16()?;
        let prev_hash = c.array::<32>()?;
        let hash = c.array::<32>()?;
        c.finish()?;
        let first_error = (first_error != u32::MAX).then_some(first_error);
        Ok(AuditRecord {
            seq,
            timestamp,
            log_position,
            key_id,
            operation,
            outcome,
            events,
            ok,
            first_error,
            request_id,
            route,
            idempotency_key,
            prev_hash,
            hash,
        })
    }
}

/// What a request contributes to its audit record.
#[derive(Clone, Debug, Default)]
pub struct AuditFacts<'a> {
    pub key_id: u64,
    pub request_id: &'a str,
    pub route: &'a str,
    pub idempotency_key: &'a str,
}

#[derive(Default)]
pub struct AuditTrail {
    bytes: CowArena<u8, 20>,
    /// Start of each record in `bytes`.
    offsets: CowArena<u64, 13>,
    head: [u8; 32],
}

impl AuditTrail {
    /// RAM held (see `crate::memory`).
    pub fn heap_bytes(&self) -> u64 {
        self.bytes.heap_bytes() + self.offsets.heap_bytes()
    }

    pub fn len(&self) -> u64 {
        self.offsets.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The hash of the newest record (zeros when empty).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        facts: &AuditFacts<'_>,
        timestamp: u64,
        log_position: u64,
        operation: u8,
        outcome: AuditOutcome,
        events: u32,
        ok: u32,
        first_error: Option<u32>,
    ) {
        let mut r = AuditRecord {
            seq: self.len() + 1,
            timestamp,
            log_position,
            key_id: facts.key_id,
            operation,
            outcome,
            events,
            ok,
            first_error,
            request_id: truncate(facts.request_id, REQUEST_ID_MAX),
            route: truncate(facts.route, ROUTE_MAX),
            idempotency_key: truncate(facts.idempotency_key, IDEMPOTENCY_KEY_MAX),
            prev_hash: self.head,
            hash: [0; 32],
        };
        r.hash = r.compute_hash();
        self.offsets.push(self.bytes.len() as u64);
        self.bytes.extend_from_slice(&r.encode());
        self.head = r.hash;
    }

    /// Record `seq` (1-based).
    pub fn get(&self, seq: u64) -> Option<AuditRecord> {
        self.decode(seq).ok()
    }

    fn decode(&self, seq: u64) -> Result<AuditRecord, AuditFault> {
        if seq == 0 || seq > self.len() {
            return Err(AuditFault::Missing);
        }
        let i = (seq - 1) as usize;
        let start = self.offsets.get(i) as usize;
        let end = if i + 1 < self.offsets.len() { self.offsets.get(i + 1) as usize } else { self.bytes.len() };
        if start > end || end > self.bytes.len() {
            return Err(AuditFault::Bounds);
        }
        let bytes: Vec<u8> = (start..end).map(|p| self.bytes.get(p)).collect();
        AuditRecord::decode(&bytes).map_err(|e| AuditFault::Undecodable(Box::new(e)))
    }

    /// Records with seq > `after`, at most `limit`.
    pub fn page(&self, after: u64, limit: usize) -> Vec<AuditRecord> {
        (after.saturating_add(1)..=self.len()).take(limit).filter_map(|s| self.get(s)).collect()
    }

    /// Recomputes every record's hash and link; the first broken record.
    pub fn verify(&self) -> Result<(), (u64, AuditFault)> {
        let mut prev = [0u8; 32];
        for seq in 1..=self.len() {
            let r = self.decode(seq).map_err(|e| (seq, e))?;
            if r.seq != seq {
                return Err((seq, AuditFault::WrongSeq(r.seq)));
            }
            if r.prev_hash != prev {
                return Err((seq, AuditFault::BrokenLink));
            }
            if r.compute_hash() != r.hash {
                return Err((seq, AuditFault::HashMismatch));
            }
            prev = r.hash;
        }
        Ok(())
    }

    pub(crate) fn views(&self) -> (crate::arena::ArenaView<u8>, crate::arena::ArenaView<u64>) {
        (self.bytes.view(), self.offsets.view())
    }

    pub(crate) fn restore(bytes: Vec<Vec<u8>>, offsets: Vec<Vec<u64>>) -> Result<AuditTrail, DecodeError> {
        let trail = AuditTrail {
            bytes: CowArena::from_chunks(bytes)?,
            offsets: CowArena::from_chunks(offsets)?,
            head: [0; 32],
        };
        let mut trail = trail;
        trail.verify().map_err(|(seq, fault)| DecodeError::Audit { seq, fault })?;
        trail.head = trail.get(trail.len()).map_or([0; 32], |r| r.hash);
        Ok(trail)
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_verify_and_detect_tampering() {
        let mut t = AuditTrail::default();
        let facts = AuditFacts { key_id: 7, request_id: "req-1", route: "POST /v1/transfers", idempotency_key: "k1" };
        t.append(&facts, 100, 5, 3, AuditOutcome::Executed, 2, 1, Some(58));
        t.append(&facts, 101, 6, 3, AuditOutcome::Replayed, 2, 1, Some(58));
        assert_eq!(t.len(), 2);
        let r = t.get(2).unwrap();
        assert_eq!(
            (r.seq, r.route.as_str(), r.outcome, r.first_error),
            (2, "POST /v1/transfers", AuditOutcome::Replayed, Some(58))
        );
        assert_eq!(r.prev_hash, t.get(1).unwrap().hash);
        assert!(t.verify().is_ok());
        assert_eq!(t.page(1, 10).len(), 1);
        // Flip one byte of the first record's request id: its hash no
        // longer matches.
        let at = t.offsets.get(0) as usize + 50;
        *t.bytes.get_mut(at) ^= 1;
        assert_eq!(t.verify().unwrap_err().0, 1);
        *t.bytes.get_mut(at) ^= 1;
        // Flip its length byte: it no longer decodes. An error, not a panic.
        *t.bytes.get_mut(at - 2) ^= 0x40;
        assert_eq!(t.verify().unwrap_err().0, 1);
        assert!(t.get(1).is_none());
    }
}

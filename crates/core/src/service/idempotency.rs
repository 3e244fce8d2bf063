//! Idempotency records (Stripe semantics), applied in the same log entry as
//! the effect they guard, so the record and the effect can never disagree
//! after a crash.
//!
//! A record is keyed by a 16-byte scope (a hash of the API key id and the
//! client's Idempotency-Key) and holds the request's fingerprint and the
//! sparse results of its one execution. A request with the same scope and
//! fingerprint is answered from the record (a replay, never a second
//! execution); a different fingerprint is a conflict. Records expire by log
//! time after the retention the request carried (at least 24 hours by
//! default), oldest first.
//!
//! The map is a persistent B-tree (`imbl`): a snapshot clones it in O(1) and
//! serializes it on the snapshot thread.

use crate::codes::EventResult;
use crate::limits::EXPIRIES_PER_ENTRY_MAX;
use crate::memory::tree_bytes;
use imbl::{OrdMap, Vector};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub fingerprint: [u8; 16],
    /// The inner command's operation code.
    pub operation: u8,
    pub created_at: u64,
    pub expires_at: u64,
    /// The original sparse results.
    pub results: Arc<[EventResult]>,
}

/// What an idempotency check decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// No record: execute, then `record`.
    Execute,
    /// Same request seen before: answer with its results.
    Replay(IdempotencyRecord),
    /// Same key, different request.
    Conflict,
    /// The store is at its limit: refuse without executing.
    Full,
}

#[derive(Clone, Default)]
pub struct IdempotencyStore {
    records: OrdMap<[u8; 16], IdempotencyRecord>,
    /// Scopes in the order they were recorded, with their expiry.
    queue: Vector<([u8; 16], u64)>,
}

impl IdempotencyStore {
    /// Estimated RAM held (see `crate::memory`).
    pub fn heap_bytes(&self) -> u64 {
        tree_bytes::<[u8; 16], IdempotencyRecord>(self.records.len()) + tree_bytes::<[u8; 16], u64>(self.queue.len())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, scope: &[u8; 16]) -> Option<&IdempotencyRecord> {
        self.records.get(scope)
    }

    pub fn check(&self, scope: &[u8; 16], fingerprint: &[u8; 16], limit: usize) -> Check {
        match self.records.get(scope) {
            Some(r) if r.fingerprint == *fingerprint => Check::Replay(r.clone()),
            Some(_) => Check::Conflict,
            None if self.records.len() >= limit => Check::Full,
            None => Check::Execute,
        }
    }

    pub fn record(&mut self, scope: [u8; 16], record: IdempotencyRecord) {
        let expires = record.expires_at;
        let previous = self.records.insert(scope, record);
        assert!(previous.is_none(), "invariant: a scope is recorded only after check said Execute");
        self.queue.push_back((scope, expires));
    }

    /// Removes records whose expiry has passed, oldest recorded first. A
    /// record behind one with a longer retention waits for it (kept longer,
    /// never shorter, than its retention).
    pub fn expire(&mut self, now: u64) -> usize {
        let mut removed = 0;
        while removed < EXPIRIES_PER_ENTRY_MAX {
            match self.queue.front() {
                Some(&(scope, expires)) if expires <= now => {
                    self.queue.pop_front();
                    let r = self.records.remove(&scope);
                    assert!(r.is_some_and(|r| r.expires_at == expires), "invariant: the queue mirrors the records");
                    removed += 1;
                }
                _ => break,
            }
        }
        removed
    }

    /// The stored form: records in queue order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.records.len() * 72);
        out.extend_from_slice(&(self.queue.len() as u64).to_le_bytes());
        for (scope, _) in self.queue.iter() {
            let r = &self.records[scope];
            out.extend_from_slice(scope);
            out.extend_from_slice(&r.fingerprint);
            out.push(r.operation);
            out.extend_from_slice(&[0; 3]);
            out.extend_from_slice(&(r.results.len() as u32).to_le_bytes());
            out.extend_from_slice(&r.created_at.to_le_bytes());
            out.extend_from_slice(&r.expires_at.to_le_bytes());
            out.extend_from_slice(bytemuck::cast_slice(&r.results));
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<IdempotencyStore, crate::error::DecodeError> {
        use crate::error::DecodeError;
        let mut c = crate::cursor::Cursor::new(bytes);
        let count = c.u64()?;
        let mut store = IdempotencyStore::default();
        for _ in 0..count {
            let scope = c.array::<16>()?;
            let fingerprint = c.array::<16>()?;
            let operation = c.u8()?;
            c.skip(3)?;
            let n = c.u32()? as usize;
            let created_at = c.u64()?;
            let expires_at = c.u64()?;
            let raw =
                c.take(n.checked_mul(EventResult::SIZE).ok_or(DecodeError::ResultCountOverflows { count: n })?)?;
            let results: Vec<EventResult> =
                raw.chunks_exact(EventResult::SIZE).map(bytemuck::pod_read_unaligned).collect();
            if store.records.contains_key(&scope) {
                return Err(DecodeError::ScopeStoredTwice);
            }
            store.record(
                scope,
                IdempotencyRecord { fingerprint, operation, created_at, expires_at, results: results.into() },
            );
        }
        c.finish()?;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fp: u8, expires_at: u64) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint: [fp; 16],
            operation: 3,
            created_at: 1,
            expires_at,
            results: vec![EventResult { index: 0, code: 58 }].into(),
        }
    }

    #[test]
    fn check_record_expire_and_round_trip() {
        let mut s = IdempotencyStore::default();
        assert_eq!(s.check(&[1; 16], &[9; 16], 10), Check::Execute);
        s.record([1; 16], rec(9, 100));
        s.record([2; 16], rec(8, 50));
        assert!(matches!(s.check(&[1; 16], &[9; 16], 10), Check::Replay(r) if r.results.len() == 1));
        assert_eq!(s.check(&[1; 16], &[7; 16], 10), Check::Conflict);
        assert_eq!(s.check(&[3; 16], &[7; 16], 2), Check::Full);
        let restored = IdempotencyStore::decode(&s.encode()).unwrap();
        assert_eq!(restored.encode(), s.encode());
        // [2] expires first but waits behind [1], which was recorded first.
        assert_eq!(s.expire(60), 0);
        assert_eq!(s.expire(100), 2);
        assert!(s.is_empty());
        assert!(IdempotencyStore::decode(&restored.encode()[..20]).is_err());
    }
}

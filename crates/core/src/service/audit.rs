//! The audit trail: one record per mutating request (who, what, when, the
//! result, the idempotency key and the request id), each carrying the hash
//! of the one before it. Records are derived while applying the log, so
//! they exist exactly when the effect does.
//!
//! Stored as two append-only arenas (the encoded records back to back, and
//! the offset of each), so snapshots only write what is new. Like the
//! ledger's records, their full chunks leave RAM once a durable snapshot
//! holds them (`release_stored`), and records are read by value, from
//! memory or through the chunk reader: one audit record per mutating
//! request must not make RAM grow with history.

use crate::arena::{ArenaView, ChunkData, ChunkReader, CowArena, StoredChunk};
use crate::error::{AuditFault, DecodeError};
use crate::limits::{IDEMPOTENCY_KEY_MAX, REQUEST_ID_MAX, ROUTE_MAX};
use crate::state::chunk_shift;
use std::sync::Arc;

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

/// Encoded records back to back: 1 MiB chunks (8 bytes with the
/// `small-chunks` test feature, so records span chunks).
type AuditBytes = CowArena<u8, { chunk_shift(20) }>;
/// Start of each record: 64 KiB chunks.
type AuditOffsets = CowArena<u64, { chunk_shift(13) }>;

#[derive(Default)]
pub struct AuditTrail {
    bytes: AuditBytes,
    /// Start of each record in `bytes`.
    offsets: AuditOffsets,
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

    /// Chunks held on disk only.
    pub fn cold_chunks(&self) -> usize {
        self.bytes.cold_chunks() + self.offsets.cold_chunks()
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
        // Bounded: a record's fields have limits, so a damaged offset
        // cannot make this allocate more than a record's worth.
        if end - start > RECORD_BYTES_MAX {
            return Err(AuditFault::Bounds);
        }
        let mut bytes = vec![0u8; end - start];
        self.bytes.copy_range(start, &mut bytes);
        AuditRecord::decode(&bytes).map_err(|e| AuditFault::Undecodable(Box::new(e)))
    }

    /// Records with seq > `after`, at most `limit`.
    pub fn page(&self, after: u64, limit: usize) -> Vec<AuditRecord> {
        (after.saturating_add(1)..=self.len()).take(limit).filter_map(|s| self.get(s)).collect()
    }

    /// Recomputes every record's hash and link; the first broken record.
    /// Reads the whole trail, cold chunks included (`bursar audit verify`,
    /// `check_invariants_deep`).
    pub fn verify(&self) -> Result<(), (u64, AuditFault)> {
        self.verify_from(1).map(|_| ())
    }

    /// Checks records `first..=len`: each one's sequence number, hash and
    /// link to the one before; for `first > 1` also record `first - 1`'s
    /// own hash, which the link of `first` leads into. Returns the newest
    /// record's hash (zeros when empty).
    fn verify_from(&self, first: u64) -> Result<[u8; 32], (u64, AuditFault)> {
        let mut prev = [0u8; 32];
        if first > 1 {
            prev = self.check_record(first - 1, None)?;
        }
        for seq in first..=self.len() {
            prev = self.check_record(seq, Some(prev))?;
        }
        Ok(prev)
    }

    /// Record `seq`'s number and hash, and its link to `prev` if given;
    /// returns its hash.
    fn check_record(&self, seq: u64, prev: Option<[u8; 32]>) -> Result<[u8; 32], (u64, AuditFault)> {
        let r = self.decode(seq).map_err(|e| (seq, e))?;
        if r.seq != seq {
            return Err((seq, AuditFault::WrongSeq(r.seq)));
        }
        if prev.is_some_and(|p| r.prev_hash != p) {
            return Err((seq, AuditFault::BrokenLink));
        }
        if r.compute_hash() != r.hash {
            return Err((seq, AuditFault::HashMismatch));
        }
        Ok(r.hash)
    }

    /// The first record whose offset and bytes both lie after the newest
    /// cold chunk of their arena: where a restore starts checking.
    fn hot_tail_seq(&self) -> u64 {
        let bytes_hot = self.bytes.hot_tail_start() as u64;
        // Offsets ascend in a trail a checked state wrote, so a binary
        // search over the hot offsets finds the first record in hot bytes;
        // damaged offsets only move where the check starts, and the check
        // itself then fails on them.
        let (mut lo, mut hi) = (self.offsets.hot_tail_start(), self.offsets.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.offsets.get(mid) < bytes_hot {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo as u64 + 1
    }

    pub(crate) fn views(&self) -> (ArenaView<u8>, ArenaView<u64>) {
        (self.bytes.view(), self.offsets.view())
    }

    /// Lets full chunks go cold from now on, read through `reader`.
    pub(crate) fn set_reader(&mut self, reader: Arc<dyn ChunkReader>) {
        self.bytes.set_reader(reader.clone());
        self.offsets.set_reader(reader);
    }

    /// Lets the chunks of a durable snapshot's view leave RAM (see
    /// `StateMachine::release_stored`); returns how many did.
    pub(crate) fn release_stored(
        &mut self,
        view: &(ArenaView<u8>, ArenaView<u64>),
        stored_bytes: &[StoredChunk],
        stored_offsets: &[StoredChunk],
    ) -> usize {
        crate::state::snapshot::release(&mut self.bytes, &view.0, stored_bytes)
            + crate::state::snapshot::release(&mut self.offsets, &view.1, stored_offsets)
    }

    /// Rebuilds the trail from a snapshot's chunks; stored full chunks stay
    /// on disk where `reader` is given.
    ///
    /// Only the hot tail is checked (from the first record after the newest
    /// cold chunk, plus the link into it from the record before): cold
    /// chunks are files named by the blake3 of their bytes, which a state
    /// that had checked those records wrote (and the store checks each
    /// block as it is read), so reading the whole trail back would re-prove
    /// what the chunk names already pin, at a cost growing with history.
    /// The full chain check remains in `verify` (`bursar audit verify`,
    /// `check_invariants_deep`).
    pub(crate) fn restore(
        bytes: Vec<ChunkData<u8>>,
        offsets: Vec<ChunkData<u64>>,
        reader: Option<Arc<dyn ChunkReader>>,
    ) -> Result<AuditTrail, DecodeError> {
        let mut trail = AuditTrail {
            bytes: CowArena::from_stored(bytes, reader.clone())?,
            offsets: CowArena::from_stored(offsets, reader)?,
            head: [0; 32],
        };
        let first = trail.hot_tail_seq();
        trail.head = trail.verify_from(first).map_err(|(seq, fault)| DecodeError::Audit { seq, fault })?;
        Ok(trail)
    }
}

/// The most bytes one encoded record can take: its fixed fields, three
/// strings as long as their length prefixes allow (not today's limits, so
/// records written under other limits still read), and two hashes.
const RECORD_BYTES_MAX: usize = 48 + (1 + u8::MAX as usize) * 2 + 2 + u16::MAX as usize + 64;

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
    use crate::arena::testing::{MemDisk, hex, panic_message};

    /// Enough records for at least two full chunks of each arena (so that
    /// one goes cold past the hot tail), in either chunk size.
    const RECORDS: u64 = if cfg!(feature = "small-chunks") { 200 } else { 20_000 };

    fn trail(n: u64) -> AuditTrail {
        let mut t = AuditTrail::default();
        for i in 0..n {
            let request_id = format!("req-{i}");
            let facts = AuditFacts {
                key_id: i % 3,
                request_id: &request_id,
                route: "POST /v1/transfers",
                ..Default::default()
            };
            t.append(&facts, 1_000 + i, i + 1, 3, AuditOutcome::Executed, 1, 1, None);
        }
        t
    }

    /// Stores the trail's chunks as a snapshot would and lets them go cold.
    fn checkpoint(t: &mut AuditTrail, disk: &MemDisk) -> (usize, Vec<StoredChunk>, Vec<StoredChunk>) {
        let views = t.views();
        let (bytes, offsets) = (disk.store(&views.0), disk.store(&views.1));
        (t.release_stored(&views, &bytes, &offsets), bytes, offsets)
    }

    #[test]
    fn records_read_the_same_hot_or_cold() {
        let disk = Arc::new(MemDisk::default());
        let mut t = trail(RECORDS);
        t.set_reader(disk.clone());
        let before: Vec<AuditRecord> = (1..=RECORDS).map(|s| t.get(s).unwrap()).collect();
        let heap = t.heap_bytes();
        let (released, _, _) = checkpoint(&mut t, &disk);
        assert!(released >= 2 && t.cold_chunks() == released, "released {released}");
        assert!(t.bytes.cold_chunks() >= 1 && t.offsets.cold_chunks() >= 1, "both arenas go cold");
        assert!(t.heap_bytes() < heap, "cold chunks leave RAM");
        let after: Vec<AuditRecord> = (1..=RECORDS).map(|s| t.get(s).unwrap()).collect();
        assert_eq!(after, before);
        assert_eq!(t.page(0, 5), before[..5].to_vec());
        assert!(t.verify().is_ok());
        // Appending after chunks went cold links to the same head.
        t.append(&AuditFacts::default(), 9, 9, 1, AuditOutcome::Refused, 0, 0, None);
        assert_eq!(t.get(RECORDS + 1).unwrap().prev_hash, before.last().unwrap().hash);
        assert!(t.verify().is_ok());
    }

    #[test]
    fn a_restore_with_cold_chunks_reads_only_the_tail() {
        let disk = Arc::new(MemDisk::default());
        let mut t = trail(RECORDS);
        t.set_reader(disk.clone());
        let (_, bytes, offsets) = checkpoint(&mut t, &disk);
        // As a lazy load hands them over: every chunk on disk.
        fn stored<T>(s: &[StoredChunk]) -> Vec<ChunkData<T>> {
            s.iter().map(|c| ChunkData::Stored(*c)).collect()
        }
        let reads = disk.reads();
        let restored = AuditTrail::restore(stored(&bytes), stored(&offsets), Some(disk.clone())).unwrap();
        let restore_reads = disk.reads() - reads;
        assert!(restored.cold_chunks() >= 2);
        assert_eq!((restored.len(), restored.head()), (t.len(), t.head()));
        let reads = disk.reads();
        assert!(restored.verify().is_ok());
        let verify_reads = disk.reads() - reads;
        // Two short last chunks, the link record's offsets and bytes.
        assert!(restore_reads <= 32, "a restore read {restore_reads} times");
        assert!(verify_reads > 10 * restore_reads, "a full verify read {verify_reads} times");
        assert_eq!(restored.get(1), t.get(1));
        // Damage in the hot tail is still found on restore.
        let mut hot = stored(&bytes);
        let last = hot.len() - 1;
        let mut tail = vec![0u8; bytes[last].len as usize];
        disk.read(&bytes[last], 0, &mut tail).unwrap();
        *tail.last_mut().unwrap() ^= 1; // the newest record's hash
        hot[last] = ChunkData::Items(tail);
        let err = AuditTrail::restore(hot, stored(&offsets), Some(disk.clone())).err().expect("damage is found");
        assert!(matches!(err, DecodeError::Audit { .. }), "{err:?}");
    }

    #[test]
    fn a_damaged_stored_chunk_is_named_when_read() {
        let disk = Arc::new(MemDisk::default());
        let mut t = trail(RECORDS);
        t.set_reader(disk.clone());
        let (_, bytes, _) = checkpoint(&mut t, &disk);
        disk.damage(&bytes[0].hash);
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.get(1))).expect_err("a fault");
        let message = panic_message(panic);
        assert!(message.contains("storage fault"), "{message}");
        assert!(message.contains(&hex(&bytes[0].hash)), "the chunk is named: {message}");
    }

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

//! The access trail: reads of decrypted personal data and refused requests
//! (401/403), which never become commands of their own. The HTTP edge
//! batches them into `RecordAccess` commands (refusals aggregated per client
//! per second, with counts), so they are logged, replicated and snapshotted
//! like everything else, and their time is the log entry's.
//!
//! Stored as one append-only arena of fixed-size records, so a snapshot only
//! writes the chunks that are new; its full chunks leave RAM once a durable
//! snapshot holds them, like the ledger's records, and pages read records by
//! value from memory or through the chunk reader.

use crate::arena::{ArenaView, ChunkData, ChunkReader, CowArena, StoredChunk};
use crate::limits::{ACCESS_PAGE_MAX, ACCESS_ROUTE_MAX};
use crate::state::chunk_shift;
use bytemuck::{Pod, Zeroable};
use std::sync::Arc;

/// What an access record is about. Codes are stable.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// A response carried decrypted personal data.
    PiiRead = 1,
    /// 401: no key, or one that is unknown or revoked.
    Unauthorized = 2,
    /// 403: a valid key that may not do this.
    Forbidden = 3,
    /// Refusals the edge could not aggregate (its bounds were full); only counted.
    Dropped = 4,
}

impl AccessKind {
    pub const ALL: [AccessKind; 4] =
        [AccessKind::PiiRead, AccessKind::Unauthorized, AccessKind::Forbidden, AccessKind::Dropped];

    pub fn from_code(code: u8) -> Option<AccessKind> {
        AccessKind::ALL.iter().copied().find(|k| *k as u8 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            AccessKind::PiiRead => "pii_read",
            AccessKind::Unauthorized => "unauthorized",
            AccessKind::Forbidden => "forbidden",
            AccessKind::Dropped => "dropped",
        }
    }

    pub fn from_name(name: &str) -> Option<AccessKind> {
        AccessKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// One access as logged: 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct AccessEvent {
    /// What was accessed (an order id); 0 = nothing in particular.
    pub target: u128,
    /// The API key; 0 = none (a 401 without a known key).
    pub key_id: u64,
    /// How many accesses this record stands for (aggregated refusals); ≥ 1.
    pub count: u32,
    /// The HTTP status answered.
    pub status: u16,
    pub kind: u8,
    pub route_len: u8,
    /// The client's address as IPv6 (IPv4 mapped); zeros = unknown.
    pub client: [u8; 16],
    pub route: [u8; ACCESS_ROUTE_MAX],
    pub reserved: [u8; 16],
}

impl Default for AccessEvent {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

impl AccessEvent {
    pub const SIZE: usize = 128;

    /// An event; the route is cut at `ACCESS_ROUTE_MAX` bytes on a character boundary.
    pub fn new(kind: AccessKind, key_id: u64, route: &str, target: u128, status: u16) -> AccessEvent {
        let mut end = route.len().min(ACCESS_ROUTE_MAX);
        while !route.is_char_boundary(end) {
            end -= 1;
        }
        let mut e = AccessEvent { target, key_id, count: 1, status, kind: kind as u8, ..Default::default() };
        e.route[..end].copy_from_slice(&route.as_bytes()[..end]);
        e.route_len = end as u8;
        e
    }

    pub fn route_str(&self) -> &str {
        self.route.get(..usize::from(self.route_len)).and_then(|r| std::str::from_utf8(r).ok()).unwrap_or("")
    }
}

/// One stored access record: where and when it was logged, then the event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct AccessRecord {
    /// 1, 2, 3, … no gaps.
    pub seq: u64,
    /// Log time of the entry that carried it.
    pub timestamp: u64,
    pub log_position: u64,
    pub reserved: u64,
    pub event: AccessEvent,
}

impl AccessRecord {
    pub const SIZE: usize = 160;
}

/// Reads a page of the access trail: records with seq after `after_seq`,
/// optionally of one kind (0 = every kind).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AccessFilter {
    pub after_seq: u64,
    pub limit: u32,
    pub kind: u8,
    pub reserved: [u8; 3],
}

impl AccessFilter {
    pub const SIZE: usize = 16;
}

const _: () = assert!(std::mem::size_of::<AccessEvent>() == AccessEvent::SIZE);
const _: () = assert!(std::mem::size_of::<AccessRecord>() == AccessRecord::SIZE);
const _: () = assert!(std::mem::size_of::<AccessFilter>() == AccessFilter::SIZE);

crate::codes::result_codes! {
    /// Outcome of recording one access.
    RecordAccessResult {
        Ok = 0 => "The access was recorded.",
        ReservedField = 1 => "A reserved field is not zero.",
        KindInvalid = 2 => "The kind is not a defined one.",
        CountMustNotBeZero = 3 => "The count is zero.",
        RouteInvalid = 4 => "The route is longer than 64 bytes, not UTF-8, or not zero padded.",
    }
}

/// 2.5 MiB chunks (8 records with the `small-chunks` test feature).
type AccessRecords = CowArena<AccessRecord, { chunk_shift(14) }>;

#[derive(Default)]
pub struct AccessTrail {
    records: AccessRecords,
}

impl AccessTrail {
    /// RAM held (see `crate::memory`).
    pub fn heap_bytes(&self) -> u64 {
        self.records.heap_bytes()
    }

    pub fn len(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Chunks held on disk only.
    pub fn cold_chunks(&self) -> usize {
        self.records.cold_chunks()
    }

    /// Checks in the order of `RecordAccessResult`, then appends.
    pub fn record(&mut self, e: &AccessEvent, timestamp: u64, log_position: u64) -> RecordAccessResult {
        use RecordAccessResult as R;
        let route_len = usize::from(e.route_len);
        if e.reserved != [0; 16] {
            return R::ReservedField;
        }
        if AccessKind::from_code(e.kind).is_none() {
            return R::KindInvalid;
        }
        if e.count == 0 {
            return R::CountMustNotBeZero;
        }
        let route_ok = route_len <= ACCESS_ROUTE_MAX
            && e.route[route_len.min(ACCESS_ROUTE_MAX)..].iter().all(|&b| b == 0)
            && std::str::from_utf8(&e.route[..route_len.min(ACCESS_ROUTE_MAX)]).is_ok();
        if !route_ok {
            return R::RouteInvalid;
        }
        let seq = self.len() + 1;
        self.records.push(AccessRecord { seq, timestamp, log_position, reserved: 0, event: *e });
        R::Ok
    }

    /// Records after `filter.after_seq`, of `filter.kind` (0 = all), at most
    /// `filter.limit` (capped at `ACCESS_PAGE_MAX`). A kind filter scans at
    /// most 64 pages' worth of records, so one read stays bounded; the
    /// caller continues from the last seq it saw (`scanned_to`).
    pub fn page(&self, filter: &AccessFilter) -> (Vec<AccessRecord>, u64) {
        let limit = (filter.limit as usize).clamp(1, ACCESS_PAGE_MAX);
        let start = usize::try_from(filter.after_seq).unwrap_or(usize::MAX).min(self.records.len());
        let end = start.saturating_add(limit * 64).min(self.records.len());
        let mut out = Vec::new();
        let mut scanned_to = filter.after_seq.min(self.len());
        for i in start..end {
            let r = self.records.get(i);
            scanned_to = r.seq;
            if filter.kind == 0 || r.event.kind == filter.kind {
                out.push(r);
                if out.len() == limit {
                    break;
                }
            }
        }
        (out, scanned_to)
    }

    pub(crate) fn view(&self) -> ArenaView<AccessRecord> {
        self.records.view()
    }

    /// Lets full chunks go cold from now on, read through `reader`.
    pub(crate) fn set_reader(&mut self, reader: Arc<dyn ChunkReader>) {
        self.records.set_reader(reader);
    }

    /// Lets the chunks of a durable snapshot's view leave RAM (see
    /// `StateMachine::release_stored`); returns how many did.
    pub(crate) fn release_stored(&mut self, view: &ArenaView<AccessRecord>, stored: &[StoredChunk]) -> usize {
        crate::state::snapshot::release(&mut self.records, view, stored)
    }

    /// Rebuilds the trail from snapshot chunks (stored full chunks stay on
    /// disk where `reader` is given), checking the sequence of the hot tail
    /// and of the record before it. Cold chunks are files named by the
    /// blake3 of their bytes that a checked state wrote, so their sequence
    /// is not read back: a restore costs the tail, not the history.
    pub(crate) fn restore(
        chunks: Vec<ChunkData<AccessRecord>>,
        reader: Option<Arc<dyn ChunkReader>>,
    ) -> Result<AccessTrail, crate::error::DecodeError> {
        let trail = AccessTrail { records: CowArena::from_stored(chunks, reader)? };
        let hot = trail.records.hot_tail_start();
        let before = hot.checked_sub(1).map(|i| (trail.records.get(i), i));
        for (r, i) in before.into_iter().chain(trail.records.iter_from(hot).zip(hot..)) {
            if r.seq != i as u64 + 1 {
                return Err(crate::error::DecodeError::AccessSeq { index: i as u64 + 1, seq: r.seq });
            }
        }
        Ok(trail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::testing::{MemDisk, hex, panic_message};

    #[test]
    fn records_checks_pages_and_restores() {
        let mut t = AccessTrail::default();
        let read = AccessEvent::new(AccessKind::PiiRead, 7, "GET /v1/orders/{id}", 42, 200);
        assert_eq!(t.record(&read, 100, 5), RecordAccessResult::Ok);
        let refused = AccessEvent { count: 9, ..AccessEvent::new(AccessKind::Unauthorized, 0, "GET /v1/keys", 0, 401) };
        assert_eq!(t.record(&refused, 101, 6), RecordAccessResult::Ok);
        assert_eq!(t.record(&AccessEvent { kind: 9, ..read }, 102, 7), RecordAccessResult::KindInvalid);
        assert_eq!(t.record(&AccessEvent { count: 0, ..read }, 102, 7), RecordAccessResult::CountMustNotBeZero);
        assert_eq!(t.record(&AccessEvent { route_len: 65, ..read }, 102, 7), RecordAccessResult::RouteInvalid);
        assert_eq!(t.record(&AccessEvent { reserved: [1; 16], ..read }, 102, 7), RecordAccessResult::ReservedField);
        assert_eq!(t.len(), 2);
        let (all, _) = t.page(&AccessFilter { limit: 10, ..Default::default() });
        assert_eq!(all.iter().map(|r| (r.seq, r.timestamp)).collect::<Vec<_>>(), vec![(1, 100), (2, 101)]);
        assert_eq!(all[0].event.route_str(), "GET /v1/orders/{id}");
        let only = AccessFilter { limit: 10, kind: AccessKind::Unauthorized as u8, ..Default::default() };
        let (page, scanned) = t.page(&only);
        assert_eq!((page.len(), page[0].event.count, scanned), (1, 9, 2));
        let chunks = crate::state::snapshot::view_chunks(&t.view()).iter().map(|c| c.bytes().to_vec().into()).collect();
        let decoded = crate::state::snapshot::decode_chunks(chunks, "access_records", None).unwrap();
        let restored = AccessTrail::restore(decoded, None).unwrap();
        assert_eq!(restored.page(&AccessFilter { limit: 10, ..Default::default() }).0, all);
        let short = vec![vec![0u8; 159].into()];
        let damaged = crate::state::snapshot::decode_chunks::<AccessRecord>(short, "access_records", None);
        assert!(damaged.is_err(), "damage is an error, not a panic");
        let wrong_seq = vec![ChunkData::Items(vec![AccessRecord { seq: 2, ..all[0] }])];
        assert!(AccessTrail::restore(wrong_seq, None).is_err());
    }

    /// Enough records for at least two full chunks, in either chunk size.
    const RECORDS: u64 = if cfg!(feature = "small-chunks") { 100 } else { 40_000 };

    fn trail(n: u64, disk: &Arc<MemDisk>) -> AccessTrail {
        let mut t = AccessTrail::default();
        t.set_reader(disk.clone());
        for i in 0..n {
            let e = AccessEvent::new(AccessKind::ALL[(i % 4) as usize], i, "GET /v1/orders/{id}", u128::from(i), 200);
            assert_eq!(t.record(&e, 1_000 + i, i + 1), RecordAccessResult::Ok);
        }
        t
    }

    fn all(t: &AccessTrail) -> Vec<AccessRecord> {
        (0..t.records.len()).map(|i| t.records.get(i)).collect()
    }

    #[test]
    fn records_read_the_same_hot_or_cold_and_restore_reads_the_tail() {
        let disk = Arc::new(MemDisk::default());
        let mut t = trail(RECORDS, &disk);
        let before = all(&t);
        let view = t.view();
        let stored = disk.store(&view);
        assert!(t.release_stored(&view, &stored) >= 1 && t.cold_chunks() >= 1);
        assert_eq!(all(&t), before);
        let page =
            t.page(&AccessFilter { after_seq: 3, limit: 4, kind: AccessKind::Forbidden as u8, ..Default::default() });
        assert_eq!(page.0, before.iter().skip(3).filter(|r| r.event.kind == 3).take(4).copied().collect::<Vec<_>>());
        let reads = disk.reads();
        let chunks = stored.iter().map(|c| ChunkData::Stored(*c)).collect();
        let restored = AccessTrail::restore(chunks, Some(disk.clone())).unwrap();
        // The short last chunk, and the one record before the hot tail.
        assert!(disk.reads() - reads <= 2, "a restore read {} times", disk.reads() - reads);
        assert!(restored.cold_chunks() >= 1);
        assert_eq!(all(&restored), before);
    }

    #[test]
    fn a_damaged_stored_chunk_is_named_when_read() {
        let disk = Arc::new(MemDisk::default());
        let mut t = trail(RECORDS, &disk);
        let view = t.view();
        let stored = disk.store(&view);
        t.release_stored(&view, &stored);
        disk.damage(&stored[0].hash);
        let filter = AccessFilter { limit: 1, ..Default::default() };
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.page(&filter))).expect_err("a fault");
        let message = panic_message(panic);
        assert!(message.contains("storage fault") && message.contains(&hex(&stored[0].hash)), "{message}");
    }
}

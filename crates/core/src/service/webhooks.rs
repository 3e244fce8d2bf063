//! Webhook subscriptions and their delivery state: which URL gets which
//! event types, each webhook's cursor (the last event delivered in order)
//! and its dead letters. The secret that signs deliveries is sealed by the
//! HTTP edge before it is logged; the core stores the opaque blob only.
//!
//! The delivery worker runs outside the core and reports back through the
//! log (progress, dead letters), so a restart resumes from the recorded
//! cursor: delivery is at-least-once.

use crate::limits::{DEAD_LETTERS_MAX, TOMBSTONES_MAX, WEBHOOKS_MAX};
use crate::memory::tree_bytes;
use bytemuck::{Pod, Zeroable};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Old path, for the HTTP webhook policy until it imports `crate::limits` (i14 restructure).
pub use crate::limits::URL_MAX;

/// Room for the sealed secret.
pub const SECRET_SLOT: usize = 256;

/// `WebhookUpdate::flags`: the update is about a redelivery (a replayed
/// dead letter), not the in-order stream.
pub const REDELIVERY: u32 = 1;

/// Creates a webhook. The id is the engine's next webhook id (the HTTP edge
/// reads it and seals the secret with it as associated data; the engine
/// refuses any other id, so a sealed secret always belongs to its webhook).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct WebhookCreate {
    pub id: u64,
    /// Event kinds delivered (bit `1 << kind`); 0 = every kind.
    pub kinds: u32,
    pub url_len: u16,
    pub secret_len: u16,
    /// Names the request that created the webhook (an idempotent replay
    /// finds its webhook by it).
    pub request_ref: [u8; 16],
    pub url: [u8; URL_MAX],
    pub secret: [u8; SECRET_SLOT],
}

impl WebhookCreate {
    pub const SIZE: usize = 2336;

    pub fn new(id: u64, kinds: u32, request_ref: [u8; 16], url: &str, sealed: &[u8]) -> Option<WebhookCreate> {
        if url.len() > URL_MAX || sealed.len() > SECRET_SLOT {
            return None;
        }
        let mut e = WebhookCreate::zeroed();
        e.id = id;
        e.kinds = kinds;
        e.request_ref = request_ref;
        e.url_len = url.len() as u16;
        e.url[..url.len()].copy_from_slice(url.as_bytes());
        e.secret_len = sealed.len() as u16;
        e.secret[..sealed.len()].copy_from_slice(sealed);
        Some(e)
    }
}

/// Deletes a webhook, records delivery progress or a dead letter, or asks
/// for a dead letter's redelivery (by operation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WebhookUpdate {
    pub id: u64,
    /// Progress: the last event delivered. Dead letter: the event given up
    /// on. Replay: the dead letter to redeliver (0: all of them).
    pub seq: u64,
    pub attempts: u32,
    /// The last HTTP status received (0: none, e.g. a timeout).
    pub status: u16,
    /// The last error kind (see `DeliveryError`), 0: none.
    pub error: u16,
    pub flags: u32,
    pub reserved: u32,
}

impl WebhookUpdate {
    pub const SIZE: usize = 32;
}

/// A webhook as stored and as read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct WebhookRecord {
    pub id: u64,
    pub created_at: u64,
    /// 0 while live.
    pub deleted_at: u64,
    /// The last event delivered in order (or dead-lettered).
    pub cursor: u64,
    pub dead_letters: u64,
    /// Dead letters dropped because the list was full.
    pub dropped: u64,
    /// Dead letters waiting for redelivery.
    pub redeliveries: u64,
    pub delivered: u64,
    pub kinds: u32,
    pub url_len: u16,
    pub secret_len: u16,
    pub request_ref: [u8; 16],
    pub url: [u8; URL_MAX],
    pub secret: [u8; SECRET_SLOT],
}

impl WebhookRecord {
    pub const SIZE: usize = 2392;

    pub fn url_str(&self) -> &str {
        std::str::from_utf8(&self.url[..usize::from(self.url_len).min(URL_MAX)]).unwrap_or("")
    }

    pub fn sealed_secret(&self) -> &[u8] {
        &self.secret[..usize::from(self.secret_len).min(SECRET_SLOT)]
    }

    pub fn is_live(&self) -> bool {
        self.deleted_at == 0
    }
}

/// One event given up on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DeadLetter {
    pub seq: u64,
    pub dead_at: u64,
    pub attempts: u32,
    pub status: u16,
    pub error: u16,
}

impl DeadLetter {
    pub const SIZE: usize = 24;
}

/// A read of webhooks (`id` 0: all) or of one webhook's dead letters with
/// seq after `after` (with `redeliveries` 1: the ones waiting for
/// redelivery instead, as dead letters with only `seq` set).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WebhookFilter {
    pub id: u64,
    pub after: u64,
    pub limit: u32,
    pub redeliveries: u32,
}

impl WebhookFilter {
    pub const SIZE: usize = 24;
}

crate::codes::result_codes! {
    /// Outcome of creating a webhook.
    CreateWebhookResult {
        Ok = 0 => "The webhook was created.",
        ReservedField = 1 => "A reserved field is not zero.",
        WebhookIdMismatch = 2 => "The webhook id is not the engine's next id (a concurrent create); retry.",
        UrlInvalid = 3 => "The URL must be 1 to 2048 bytes of printable UTF-8.",
        SecretInvalid = 4 => "The sealed secret is missing or too long.",
        WebhooksLimitReached = 5 => "The engine holds the maximum number of webhooks (1000).",
    }
}

crate::codes::result_codes! {
    /// Outcome of deleting a webhook, recording its progress or a dead
    /// letter, or replaying a dead letter.
    WebhookUpdateResult {
        Ok = 0 => "The update was applied.",
        ReservedField = 1 => "A reserved field is not zero.",
        WebhookNotFound = 2 => "No live webhook has this id.",
        SeqInvalid = 3 => "The event is not the next one of this webhook, or beyond the newest event.",
        DeadLetterNotFound = 4 => "The webhook has no dead letter for this event.",
    }
}

#[derive(Clone, Debug)]
struct Webhook {
    record: Box<WebhookRecord>,
    dead: VecDeque<DeadLetter>,
    redeliver: BTreeSet<u64>,
}

impl Webhook {
    fn sync_counts(&mut self) {
        self.record.dead_letters = self.dead.len() as u64;
        self.record.redeliveries = self.redeliver.len() as u64;
    }
}

#[derive(Clone, Debug, Default)]
pub struct Webhooks {
    by_id: BTreeMap<u64, Webhook>,
    last_id: u64,
}

impl Webhooks {
    /// Estimated RAM held (see `crate::memory`).
    pub fn heap_bytes(&self) -> u64 {
        let each = |w: &Webhook| {
            (WebhookRecord::SIZE + w.dead.len() * std::mem::size_of::<DeadLetter>()) as u64
                + tree_bytes::<u64, ()>(w.redeliver.len())
        };
        tree_bytes::<u64, Webhook>(self.by_id.len()) + self.by_id.values().map(each).sum::<u64>()
    }

    /// The id the next webhook gets.
    pub fn next_id(&self) -> u64 {
        self.last_id + 1
    }

    pub fn get(&self, id: u64) -> Option<&WebhookRecord> {
        self.by_id.get(&id).map(|w| &*w.record)
    }

    /// Every webhook kept (live and deleted), by id.
    pub fn iter(&self) -> impl Iterator<Item = &WebhookRecord> + '_ {
        self.by_id.values().map(|w| &*w.record)
    }

    pub fn live(&self) -> usize {
        self.by_id.values().filter(|w| w.record.is_live()).count()
    }

    /// Up to `limit` dead letters of `id` with seq after `after`, by seq.
    pub fn dead_letters(&self, id: u64, after: u64, limit: usize) -> Vec<DeadLetter> {
        let Some(w) = self.by_id.get(&id) else { return Vec::new() };
        let mut out: Vec<DeadLetter> = w.dead.iter().filter(|d| d.seq > after).copied().collect();
        out.sort_by_key(|d| d.seq);
        out.truncate(limit);
        out
    }

    /// Seqs waiting for redelivery, ascending.
    pub fn redeliveries(&self, id: u64) -> Vec<u64> {
        self.by_id.get(&id).map(|w| w.redeliver.iter().copied().collect()).unwrap_or_default()
    }

    /// `head`: the newest event seq (a webhook starts after it: it receives
    /// the changes made once it exists).
    pub fn create(&mut self, e: &WebhookCreate, now: u64, head: u64) -> CreateWebhookResult {
        use CreateWebhookResult as R;
        if usize::from(e.url_len) > URL_MAX || e.url[usize::from(e.url_len)..].iter().any(|b| *b != 0) {
            return R::ReservedField;
        }
        if usize::from(e.secret_len) > SECRET_SLOT || e.secret[usize::from(e.secret_len)..].iter().any(|b| *b != 0) {
            return R::ReservedField;
        }
        if e.id != self.next_id() {
            return R::WebhookIdMismatch;
        }
        let url = std::str::from_utf8(&e.url[..usize::from(e.url_len)]).ok();
        if url.is_none_or(|u| u.is_empty() || u.chars().any(char::is_control)) {
            return R::UrlInvalid;
        }
        if e.secret_len == 0 {
            return R::SecretInvalid;
        }
        if self.live() >= WEBHOOKS_MAX {
            return R::WebhooksLimitReached;
        }
        let mut record = WebhookRecord::zeroed();
        record.id = e.id;
        record.created_at = now;
        record.cursor = head;
        record.kinds = e.kinds;
        record.url_len = e.url_len;
        record.url = e.url;
        record.secret_len = e.secret_len;
        record.secret = e.secret;
        record.request_ref = e.request_ref;
        self.last_id = e.id;
        self.by_id
            .insert(e.id, Webhook { record: Box::new(record), dead: VecDeque::new(), redeliver: BTreeSet::new() });
        R::Ok
    }

    fn live_mut(&mut self, e: &WebhookUpdate) -> Result<&mut Webhook, WebhookUpdateResult> {
        if e.reserved != 0 {
            return Err(WebhookUpdateResult::ReservedField);
        }
        self.by_id.get_mut(&e.id).filter(|w| w.record.is_live()).ok_or(WebhookUpdateResult::WebhookNotFound)
    }

    /// Deletes a webhook: its dead letters go; a tombstone stays for reads.
    pub fn delete(&mut self, e: &WebhookUpdate, now: u64) -> WebhookUpdateResult {
        let w = match self.live_mut(e) {
            Ok(w) => w,
            Err(code) => return code,
        };
        w.record.deleted_at = now;
        w.dead = VecDeque::new();
        w.redeliver = BTreeSet::new();
        w.sync_counts();
        let tombstones: Vec<u64> = self.by_id.values().filter(|w| !w.record.is_live()).map(|w| w.record.id).collect();
        if tombstones.len() > TOMBSTONES_MAX {
            // Ids increase with creation: the smallest are the oldest.
            for id in &tombstones[..tombstones.len() - TOMBSTONES_MAX] {
                self.by_id.remove(id);
            }
        }
        WebhookUpdateResult::Ok
    }

    /// The worker delivered events up to `seq` in order (or, with
    /// `REDELIVERY`, redelivered the dead letter `seq`). `head` is the
    /// newest event seq.
    pub fn progress(&mut self, e: &WebhookUpdate, head: u64) -> WebhookUpdateResult {
        let w = match self.live_mut(e) {
            Ok(w) => w,
            Err(code) => return code,
        };
        if e.flags & REDELIVERY != 0 {
            if !w.redeliver.remove(&e.seq) {
                return WebhookUpdateResult::DeadLetterNotFound;
            }
        } else {
            // Progress reports may be repeated after a restart: an old cursor
            // changes nothing, but one beyond the newest event is a bug.
            if e.seq > head {
                return WebhookUpdateResult::SeqInvalid;
            }
            let n = e.seq.saturating_sub(w.record.cursor);
            w.record.cursor = w.record.cursor.max(e.seq);
            w.record.delivered += n;
        }
        w.sync_counts();
        WebhookUpdateResult::Ok
    }

    /// The worker gave up on event `seq`: the next one in order (the cursor
    /// moves past it), or, with `REDELIVERY`, a redelivered dead letter.
    pub fn dead_letter(&mut self, e: &WebhookUpdate, now: u64, head: u64) -> WebhookUpdateResult {
        let w = match self.live_mut(e) {
            Ok(w) => w,
            Err(code) => return code,
        };
        if e.flags & REDELIVERY != 0 {
            if !w.redeliver.remove(&e.seq) {
                return WebhookUpdateResult::DeadLetterNotFound;
            }
        } else {
            if e.seq <= w.record.cursor {
                // Already recorded before a restart: nothing to do.
                return WebhookUpdateResult::Ok;
            }
            if e.seq > head {
                return WebhookUpdateResult::SeqInvalid;
            }
            w.record.cursor = e.seq;
        }
        if w.dead.len() >= DEAD_LETTERS_MAX {
            w.dead.pop_front();
            w.record.dropped += 1;
        }
        w.dead.push_back(DeadLetter {
            seq: e.seq,
            dead_at: now,
            attempts: e.attempts,
            status: e.status,
            error: e.error,
        });
        w.sync_counts();
        WebhookUpdateResult::Ok
    }

    /// Moves dead letter `seq` (0: every one) to the redelivery queue.
    pub fn replay(&mut self, e: &WebhookUpdate) -> WebhookUpdateResult {
        let w = match self.live_mut(e) {
            Ok(w) => w,
            Err(code) => return code,
        };
        if e.seq == 0 {
            w.redeliver.extend(w.dead.drain(..).map(|d| d.seq));
        } else {
            let Some(at) = w.dead.iter().position(|d| d.seq == e.seq) else {
                return WebhookUpdateResult::DeadLetterNotFound;
            };
            w.dead.remove(at);
            w.redeliver.insert(e.seq);
        }
        w.sync_counts();
        WebhookUpdateResult::Ok
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.last_id.to_le_bytes());
        out.extend_from_slice(&(self.by_id.len() as u64).to_le_bytes());
        for w in self.by_id.values() {
            out.extend_from_slice(bytemuck::bytes_of(&*w.record));
            out.extend_from_slice(&(w.dead.len() as u64).to_le_bytes());
            for d in &w.dead {
                out.extend_from_slice(bytemuck::bytes_of(d));
            }
            out.extend_from_slice(&(w.redeliver.len() as u64).to_le_bytes());
            for s in &w.redeliver {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Webhooks, crate::error::DecodeError> {
        use crate::error::DecodeError;
        let mut c = crate::cursor::Cursor::new(bytes);
        let mut out = Webhooks { last_id: c.u64()?, by_id: BTreeMap::new() };
        let count = c.u64()?;
        if count > (WEBHOOKS_MAX + TOMBSTONES_MAX) as u64 {
            return Err(DecodeError::TooMany { what: "webhooks", count, max: (WEBHOOKS_MAX + TOMBSTONES_MAX) as u64 });
        }
        for _ in 0..count {
            let record: WebhookRecord = bytemuck::pod_read_unaligned(c.take(WebhookRecord::SIZE)?);
            let dead_count = c.u64()?;
            if dead_count > DEAD_LETTERS_MAX as u64 {
                return Err(DecodeError::TooMany {
                    what: "dead letters",
                    count: dead_count,
                    max: DEAD_LETTERS_MAX as u64,
                });
            }
            let dead = (0..dead_count)
                .map(|_| c.take(DeadLetter::SIZE).map(bytemuck::pod_read_unaligned))
                .collect::<Result<VecDeque<DeadLetter>, _>>()?;
            let redeliver_count = c.u64()?;
            if redeliver_count > DEAD_LETTERS_MAX as u64 {
                return Err(DecodeError::TooMany {
                    what: "redeliveries",
                    count: redeliver_count,
                    max: DEAD_LETTERS_MAX as u64,
                });
            }
            let redeliver = (0..redeliver_count).map(|_| c.u64()).collect::<Result<BTreeSet<u64>, _>>()?;
            if record.id == 0 || record.id > out.last_id || out.by_id.contains_key(&record.id) {
                return Err(DecodeError::WebhookId { id: record.id });
            }
            let w = Webhook { record: Box::new(record), dead, redeliver };
            if w.record.dead_letters != w.dead.len() as u64 || w.record.redeliveries != w.redeliver.len() as u64 {
                return Err(DecodeError::WebhookCounts { id: record.id });
            }
            out.by_id.insert(record.id, w);
        }
        c.finish()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(hooks: &mut Webhooks, id: u64) -> CreateWebhookResult {
        let e = WebhookCreate::new(id, 0, [id as u8; 16], "https://example.com/hook", &[7; 60]).unwrap();
        hooks.create(&e, 100, 10)
    }

    fn update(id: u64, seq: u64, flags: u32) -> WebhookUpdate {
        WebhookUpdate { id, seq, attempts: 3, status: 500, error: 1, flags, reserved: 0 }
    }

    #[test]
    fn sizes_are_stable() {
        assert_eq!(std::mem::size_of::<WebhookCreate>(), WebhookCreate::SIZE);
        assert_eq!(std::mem::size_of::<WebhookUpdate>(), WebhookUpdate::SIZE);
        assert_eq!(std::mem::size_of::<WebhookRecord>(), WebhookRecord::SIZE);
        assert_eq!(std::mem::size_of::<DeadLetter>(), DeadLetter::SIZE);
        assert_eq!(std::mem::size_of::<WebhookFilter>(), WebhookFilter::SIZE);
    }

    #[test]
    fn lifecycle_cursor_dead_letters_and_replay() {
        let mut h = Webhooks::default();
        assert_eq!(create(&mut h, 2), CreateWebhookResult::WebhookIdMismatch, "ids are a sequence");
        assert_eq!(create(&mut h, 1), CreateWebhookResult::Ok);
        assert_eq!(h.get(1).unwrap().cursor, 10, "starts after the newest event");
        assert_eq!(h.progress(&update(1, 12, 0), 20), WebhookUpdateResult::Ok);
        assert_eq!(h.progress(&update(1, 11, 0), 20), WebhookUpdateResult::Ok, "an old report is harmless");
        assert_eq!(h.get(1).unwrap().cursor, 12);
        assert_eq!(h.progress(&update(1, 21, 0), 20), WebhookUpdateResult::SeqInvalid);
        assert_eq!(h.dead_letter(&update(1, 13, 0), 200, 20), WebhookUpdateResult::Ok);
        assert_eq!(h.dead_letter(&update(1, 15, 0), 210, 20), WebhookUpdateResult::Ok);
        assert_eq!(h.get(1).unwrap().cursor, 15);
        assert_eq!(h.dead_letters(1, 0, 10).iter().map(|d| d.seq).collect::<Vec<_>>(), vec![13, 15]);
        assert_eq!(h.replay(&update(1, 14, 0)), WebhookUpdateResult::DeadLetterNotFound);
        assert_eq!(h.replay(&update(1, 13, 0)), WebhookUpdateResult::Ok);
        assert_eq!(h.redeliveries(1), vec![13]);
        assert_eq!(h.progress(&update(1, 13, REDELIVERY), 20), WebhookUpdateResult::Ok);
        assert!(h.redeliveries(1).is_empty());
        assert_eq!(h.replay(&update(1, 0, 0)), WebhookUpdateResult::Ok);
        assert_eq!(h.dead_letter(&update(1, 15, REDELIVERY), 300, 20), WebhookUpdateResult::Ok);
        assert_eq!(h.dead_letters(1, 0, 10)[0].dead_at, 300, "dead again after a failed redelivery");
        let back = Webhooks::decode(&h.encode()).unwrap();
        assert_eq!(back.encode(), h.encode());
        assert_eq!(h.delete(&update(1, 0, 0), 400), WebhookUpdateResult::Ok);
        assert_eq!(h.delete(&update(1, 0, 0), 400), WebhookUpdateResult::WebhookNotFound);
        assert_eq!(h.get(1).unwrap().deleted_at, 400);
        assert_eq!(create(&mut h, 2), CreateWebhookResult::Ok);
    }

    #[test]
    fn dead_letters_are_bounded() {
        let mut h = Webhooks::default();
        create(&mut h, 1);
        for seq in 11..=(11 + DEAD_LETTERS_MAX as u64) {
            assert_eq!(h.dead_letter(&update(1, seq, 0), seq, u64::MAX), WebhookUpdateResult::Ok);
        }
        let r = h.get(1).unwrap();
        assert_eq!((r.dead_letters, r.dropped), (DEAD_LETTERS_MAX as u64, 1));
        assert_eq!(h.dead_letters(1, 0, 1)[0].seq, 12, "the oldest was dropped");
    }

    #[test]
    fn damaged_encodings_are_errors() {
        let mut h = Webhooks::default();
        create(&mut h, 1);
        h.dead_letter(&update(1, 11, 0), 1, 20);
        let bytes = h.encode();
        for cut in [0, 8, 17, bytes.len() - 1] {
            assert!(Webhooks::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

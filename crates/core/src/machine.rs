//! The whole deterministic state: the ledger plus the service state (API
//! keys, idempotency records, audit trail). The engine applies log entries
//! to a `Machine`; everything here is a pure function of the log.
//!
//! For an enveloped (HTTP) command the order is: idempotency check (replay,
//! conflict or refusal execute nothing), the command itself, the idempotency
//! record, then the audit record. A plain (binary protocol) command executes
//! and gets an audit record with key id 0.

use crate::arena::ArenaView;
use crate::arena::{ChunkReader, StoredChunk};
use crate::codes::EventResult;
use crate::command::{Command, Entry, Envelope, LogCommand, Operation};
use crate::entry::{EntryHeader, Origin, RejectReason, Rejection};
use crate::error::{DecodeError, InvariantError};
use crate::memory::MemoryUse;
use crate::orders::book::OpenOrders;
use crate::orders::finals::FinalOrders;
use crate::orders::{self, FinalRef, OrderBook, OrderCommand, OrderCreate};
use crate::records::{NANOS_PER_SECOND, decode_at};
use crate::service::access::AccessRecord;
use crate::service::access::{AccessEvent, AccessTrail};
use crate::service::audit::{AuditFacts, AuditOutcome, AuditTrail};
use crate::service::idempotency::{Check, IdempotencyRecord, IdempotencyStore};
use crate::service::keys::{ApiKey, KeyEvent, KeyRateLimit, Keys, RevokeEvent, RotateEvent};
use crate::service::proposers::Proposers;
use crate::service::webhooks::{WebhookCreate, WebhookUpdate, WebhookUpdateResult, Webhooks};
use crate::state::OnDisk;
use crate::state::snapshot::{decode_chunks, view_chunks};
use crate::state::{
    Batch, ChunkBytes, Limits, SectionChunk, Snapshot, SnapshotChunks, SnapshotSection, StateMachine, StateSnapshot,
};
use std::sync::Arc;

/// What applying one log command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran; its sparse results were appended.
    Executed,
    /// The idempotency record answered; its original results were appended.
    Replayed { created_at: u64 },
    /// The idempotency key was used for a different request.
    Conflict,
    /// The idempotency store is full; nothing ran.
    Refused,
}

/// What an entry's header decided (see [`Machine::admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Its commands run.
    Admitted,
    /// Nothing runs; one audit record says why.
    Rejected(RejectReason),
}

#[derive(Default)]
pub struct Machine {
    ledger: StateMachine,
    keys: Keys,
    idempotency: IdempotencyStore,
    audit: AuditTrail,
    orders: OrderBook,
    webhooks: Webhooks,
    access: AccessTrail,
    proposers: Proposers,
}

impl Machine {
    pub fn new(limits: Limits) -> Machine {
        Machine { ledger: StateMachine::new(limits), ..Default::default() }
    }

    /// RAM held per structure (estimates, O(1) but for webhooks, which
    /// are few; see `crate::memory`).
    pub fn memory(&self) -> MemoryUse {
        let mut out = MemoryUse::default();
        self.ledger.memory(&mut out);
        out.add("keys", self.keys.heap_bytes());
        out.add("idempotency", self.idempotency.heap_bytes());
        out.add("audit", self.audit.heap_bytes() + self.access.heap_bytes());
        out.add("orders", self.orders.heap_bytes());
        out.add("webhooks", self.webhooks.heap_bytes());
        out
    }

    pub fn ledger(&self) -> &StateMachine {
        &self.ledger
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn idempotency(&self) -> &IdempotencyStore {
        &self.idempotency
    }

    pub fn audit(&self) -> &AuditTrail {
        &self.audit
    }

    pub fn orders(&self) -> &OrderBook {
        &self.orders
    }

    pub fn access(&self) -> &AccessTrail {
        &self.access
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    pub fn proposers(&self) -> &Proposers {
        &self.proposers
    }

    pub fn position(&self) -> u64 {
        self.ledger.position()
    }

    /// The earliest time something is due by log time alone (a pending
    /// transfer's expiry, an order's deadline), so the engine logs an entry.
    pub fn next_expiry(&self) -> Option<u64> {
        [self.ledger.next_expiry(), self.orders.next_deadline()].into_iter().flatten().min()
    }

    pub fn begin_entry(&mut self, position: u64, timestamp: u64) {
        self.ledger.begin_entry(position, timestamp);
        let now = self.ledger.entry_time();
        self.idempotency.expire(now);
        let ctx = orders::Ctx { now, position, key_id: 0, api: false };
        orders::apply::expire_due(&mut self.ledger, &mut self.orders, &ctx, crate::limits::EXPIRIES_PER_ENTRY_MAX);
    }

    /// Applies one command, appending its sparse results (or the replayed
    /// ones) to `results`.
    pub fn execute(&mut self, command: &LogCommand<'_>, results: &mut Vec<EventResult>) -> Outcome {
        if let LogCommand::Plain(c) = command
            && matches!(
                c.operation,
                Operation::WebhookProgress | Operation::WebhookDeadLetters | Operation::RecordAccess
            )
        {
            // The delivery worker's bookkeeping gets no audit record: its
            // `audit.recorded` event would itself be delivered, reported,
            // audited again, and so on for ever. The access trail is a
            // trail of its own.
            self.execute_inner(c, None, results);
            return Outcome::Executed;
        }
        let start = results.len();
        let (outcome, facts) = match command {
            LogCommand::Plain(c) => {
                self.execute_inner(c, None, results);
                (Outcome::Executed, AuditFacts { route: binary_route(c.operation), ..Default::default() })
            }
            LogCommand::Enveloped(env, c) => (self.execute_enveloped(env, c, results), facts(env)),
        };
        let c = command.command();
        let audit_outcome = match outcome {
            Outcome::Executed => AuditOutcome::Executed,
            Outcome::Replayed { .. } => AuditOutcome::Replayed,
            Outcome::Conflict => AuditOutcome::Conflict,
            Outcome::Refused => AuditOutcome::Refused,
        };
        let mine = &results[start..];
        let events = c.count() as u32;
        let ok = if matches!(outcome, Outcome::Executed | Outcome::Replayed { .. }) {
            // Saturating: a replay's recorded results come from the log and
            // may not match this command (a damaged or hostile entry).
            events.saturating_sub(mine.len() as u32)
        } else {
            0
        };
        let time = self.ledger.entry_time();
        let position = self.ledger.position() + 1;
        self.audit.append(
            &facts,
            time,
            position,
            c.operation as u8,
            audit_outcome,
            events,
            ok,
            mine.first().map(|r| r.code),
        );
        self.ledger.record_service_event(crate::events::kind::AUDIT_RECORDED, self.audit.len());
        outcome
    }

    fn execute_enveloped(&mut self, env: &Envelope<'_>, c: &Command<'_>, results: &mut Vec<EventResult>) -> Outcome {
        let Some((scope, fingerprint)) = env.idempotency else {
            self.execute_inner(c, Some(env), results);
            return Outcome::Executed;
        };
        match self.idempotency.check(&scope, &fingerprint, env.idempotency_limit as usize) {
            Check::Replay(record) => {
                results.extend_from_slice(&record.results);
                return Outcome::Replayed { created_at: record.created_at };
            }
            Check::Conflict => return Outcome::Conflict,
            Check::Full => return Outcome::Refused,
            Check::Execute => {}
        }
        let start = results.len();
        self.execute_inner(c, Some(env), results);
        let now = self.ledger.entry_time();
        let retention = u64::from(env.retention_seconds).saturating_mul(NANOS_PER_SECOND);
        self.idempotency.record(
            scope,
            IdempotencyRecord {
                fingerprint,
                operation: c.operation as u8,
                created_at: now,
                expires_at: now.saturating_add(retention),
                results: Arc::from(&results[start..]),
            },
        );
        Outcome::Executed
    }

    fn execute_inner(&mut self, c: &Command<'_>, env: Option<&Envelope<'_>>, results: &mut Vec<EventResult>) {
        let ctx = || orders::Ctx {
            now: self.ledger.entry_time(),
            position: self.ledger.position() + 1,
            key_id: env.map_or(0, |e| e.key_id),
            api: env.is_some(),
        };
        match c.operation {
            Operation::CreateOrders => {
                let ctx = ctx();
                for i in 0..c.count() {
                    let e: OrderCreate = decode_at(c.events, i);
                    let code = orders::apply::create(&mut self.ledger, &mut self.orders, &e, &ctx);
                    if code.code() != 0 {
                        results.push(EventResult { index: i as u32, code: code.code() });
                    }
                }
            }
            Operation::OrderCommands => {
                let ctx = ctx();
                for i in 0..c.count() {
                    let e: OrderCommand = decode_at(c.events, i);
                    let code = orders::apply::command(&mut self.ledger, &mut self.orders, &e, &ctx);
                    if code.code() != 0 {
                        results.push(EventResult { index: i as u32, code: code.code() });
                    }
                }
            }
            Operation::CreateKeys => {
                for i in 0..c.count() {
                    let e: KeyEvent = decode_at(c.events, i);
                    let ts = self.ledger.next_timestamp();
                    let ledger = &self.ledger;
                    let code = self.keys.create(&e, ts, |l| ledger.ledger(l).is_some());
                    if code.code() != 0 {
                        results.push(EventResult { index: i as u32, code: code.code() });
                    } else {
                        self.ledger.record_service_event(crate::events::kind::KEY_CREATED, e.id);
                    }
                }
            }
            Operation::RevokeKeys => {
                for i in 0..c.count() {
                    let e: RevokeEvent = decode_at(c.events, i);
                    let ts = self.ledger.next_timestamp();
                    let code = self.keys.revoke(&e, ts);
                    if code.code() != 0 {
                        results.push(EventResult { index: i as u32, code: code.code() });
                    } else {
                        self.ledger.record_service_event(crate::events::kind::KEY_REVOKED, e.id);
                    }
                }
            }
            Operation::RotateKeys => {
                for i in 0..c.count() {
                    let e: RotateEvent = decode_at(c.events, i);
                    let ts = self.ledger.next_timestamp();
                    let code = self.keys.rotate(&e, ts);
                    if code.code() != 0 {
                        results.push(EventResult { index: i as u32, code: code.code() });
                    } else {
                        self.ledger.record_service_event(crate::events::kind::KEY_CREATED, e.new_id);
                    }
                }
            }
            Operation::CreateWebhooks => {
                for i in 0..c.count() {
                    let e: WebhookCreate = decode_at(c.events, i);
                    let (now, head) = (self.ledger.entry_time(), self.events_len());
                    let code = self.webhooks.create(&e, now, head);
                    if code.code() != 0 {
                        results.push(EventResult { index: i as u32, code: code.code() });
                    }
                }
            }
            Operation::DeleteWebhooks
            | Operation::WebhookProgress
            | Operation::WebhookDeadLetters
            | Operation::ReplayDeadLetters => {
                for i in 0..c.count() {
                    let e: WebhookUpdate = decode_at(c.events, i);
                    let (now, head) = (self.ledger.entry_time(), self.events_len());
                    let code = match c.operation {
                        Operation::DeleteWebhooks => self.webhooks.delete(&e, now),
                        Operation::WebhookProgress => self.webhooks.progress(&e, head),
                        Operation::WebhookDeadLetters => self.webhooks.dead_letter(&e, now, head),
                        _ => self.webhooks.replay(&e),
                    };
                    if code != WebhookUpdateResult::Ok {
                        results.push(EventResult { index: i as u32, code: code.code() });
                    }
                }
            }
            Operation::RecordAccess => self.record_access(c, results),
            _ => self.ledger.execute(c, results),
        }
    }

    fn record_access(&mut self, c: &Command<'_>, results: &mut Vec<EventResult>) {
        let (now, position) = (self.ledger.entry_time(), self.ledger.position() + 1);
        for i in 0..c.count() {
            let e: AccessEvent = decode_at(c.events, i);
            let code = self.access.record(&e, now, position);
            if code.code() != 0 {
                results.push(EventResult { index: i as u32, code: code.code() });
            }
        }
    }

    pub fn end_entry(&mut self) {
        self.ledger.end_entry();
    }

    /// Judges an entry's header, after `begin_entry` and before its
    /// commands: a single node's entry and a cluster proposal seen for the
    /// first time are admitted; a replayed or stale proposal, and an entry
    /// the replica refused before decoding, run nothing and leave one
    /// audit record (the entry's time still counts, like a timer entry).
    pub fn admit(&mut self, header: &EntryHeader) -> Admission {
        let (reason, claimed, rejection) = match header {
            EntryHeader::None => return Admission::Admitted,
            EntryHeader::Origin(origin) => match self.proposers.admit(origin) {
                Ok(()) => return Admission::Admitted,
                Err(reason) => (reason, *origin, None),
            },
            EntryHeader::Rejected(r) => (r.reason, r.claimed, Some(r)),
        };
        self.proposers.count_refusal();
        self.record_rejection(reason, &claimed, rejection);
        Admission::Rejected(reason)
    }

    /// The audit record of a refused cluster entry: the reason in the
    /// route, the claimed proposal in the request id (as its message id),
    /// and for an entry refused unread, the payload's hash and size.
    fn record_rejection(&mut self, reason: RejectReason, claimed: &Origin, rejection: Option<&Rejection>) {
        let route = format!("CLUSTER {}", reason.name());
        let request_id = format!("n{}-{}-{}", claimed.node, claimed.boot, claimed.proposal);
        let detail = match rejection {
            Some(r) => format!(
                "key {} payload {} bytes blake3 {}",
                claimed.key_id,
                r.payload_len,
                r.payload_hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            None => format!("key {}", claimed.key_id),
        };
        let facts = AuditFacts { key_id: 0, request_id: &request_id, route: &route, idempotency_key: &detail };
        let (time, position) = (self.ledger.entry_time(), self.ledger.position() + 1);
        self.audit.append(&facts, time, position, 0, AuditOutcome::Rejected, 0, 0, Some(reason.code()));
        self.ledger.record_service_event(crate::events::kind::AUDIT_RECORDED, self.audit.len());
    }

    /// Applies a decoded log entry (replay and verify): its header, then,
    /// if admitted, its commands; the reason when it was refused.
    pub fn apply_decoded(
        &mut self,
        position: u64,
        timestamp: u64,
        entry: &Entry<'_>,
    ) -> Result<Vec<(Outcome, Vec<EventResult>)>, RejectReason> {
        self.begin_entry(position, timestamp);
        let out = match self.admit(&entry.header) {
            Admission::Rejected(reason) => Err(reason),
            Admission::Admitted => Ok(entry
                .commands
                .iter()
                .map(|c| {
                    let mut results = Vec::new();
                    let outcome = self.execute(c, &mut results);
                    (outcome, results)
                })
                .collect()),
        };
        self.end_entry();
        out
    }

    /// Applies a whole entry (replay and tests).
    pub fn apply_entry(
        &mut self,
        position: u64,
        timestamp: u64,
        commands: &[LogCommand<'_>],
    ) -> Vec<(Outcome, Vec<EventResult>)> {
        self.apply_decoded(position, timestamp, &Entry::plain(commands.to_vec()))
            .expect("invariant: an entry without a header is always admitted")
    }

    /// A frozen view for a background snapshot writer. O(chunks).
    pub fn snapshot(&self) -> MachineSnapshot {
        let (audit_bytes, audit_offsets) = self.audit.views();
        MachineSnapshot {
            ledger: self.ledger.snapshot(),
            keys: self.keys.iter().cloned().collect(),
            idempotency: self.idempotency.clone(),
            audit: (audit_bytes, audit_offsets),
            orders: self.orders.open_view(),
            finals: self.orders.final_views(),
            webhooks: self.webhooks.clone(),
            access: self.access.view(),
            proposers: self.proposers.clone(),
        }
    }

    /// Lets full chunks of the ledger's records, of the audit and access
    /// trails and of the final orders go cold from now on (see
    /// `StateMachine::set_chunk_reader`).
    pub fn set_chunk_reader(&mut self, reader: Arc<dyn ChunkReader>) {
        self.ledger.set_chunk_reader(reader.clone());
        self.audit.set_reader(reader.clone());
        self.orders.set_reader(reader.clone());
        self.access.set_reader(reader);
    }

    /// Lets the chunks of `view` that a durable snapshot stored leave RAM;
    /// `stored` lists, per section of `view` (ledger sections first), each
    /// chunk's place on disk. The same rules as the ledger's
    /// (`StateMachine::release_stored`) hold for the audit and access
    /// trails. Returns how many chunks went cold.
    pub fn release_stored(&mut self, view: &MachineSnapshot, stored: &[Vec<StoredChunk>]) -> usize {
        let l = crate::state::SECTIONS.len();
        assert!(stored.len() >= l + SERVICE_SECTIONS.len(), "invariant: every section of the view was stored");
        let ledger = self.ledger.release_stored(&view.ledger, stored);
        let audit = self.audit.release_stored(&view.audit, &stored[l + AUDIT_BYTES], &stored[l + AUDIT_OFFSETS]);
        let finals = self.orders.release_stored(&view.finals, &stored[l + FINAL_REFS], &stored[l + FINAL_BYTES]);
        ledger + audit + finals + self.access.release_stored(&view.access, &stored[l + ACCESS_RECORDS])
    }

    /// Chunks held on disk only: the ledger's, the trails' and the final
    /// orders'.
    pub fn cold_chunks(&self) -> usize {
        self.ledger.cold_chunks() + self.audit.cold_chunks() + self.access.cold_chunks() + self.orders.cold_chunks()
    }

    /// What the installed stored tables cover, in the order of
    /// `StoredIndexes::covered`.
    pub fn stored_covered(&self) -> [u64; 5] {
        let [t, f, tl, bl] = self.ledger.stored_covered();
        [t, f, tl, bl, self.orders.finals().covered()]
    }

    /// Hands old ids and final orders over to stored tables (see
    /// `state::ids`, `orders::finals`).
    pub fn install_stored_ids(&mut self, stored: crate::state::StoredIndexes) {
        self.orders.install_stored(stored.orders.clone());
        self.ledger.install_stored_ids(stored);
    }

    pub fn digest(&self) -> [u8; 32] {
        self.snapshot().digest()
    }

    pub fn check_invariants_deep(&self) -> Result<(), InvariantError> {
        self.ledger.check_invariants_deep()?;
        orders::invariants::check(&self.ledger, &self.orders)?;
        self.orders.verify_finals()?;
        self.audit.verify().map_err(|(seq, fault)| InvariantError::Audit { seq, fault })
    }

    /// Rebuilds a machine from a stored snapshot, checking everything.
    pub fn restore(limits: Limits, stored: SnapshotChunks) -> Result<Machine, DecodeError> {
        Self::restore_with(limits, stored, OnDisk::default())
    }

    /// `restore`, with a reader for chunks the store left on disk (they
    /// stay there where the state allows cold chunks; see
    /// `StateMachine::restore_with`).
    pub fn restore_with(limits: Limits, stored: SnapshotChunks, disk: OnDisk) -> Result<Machine, DecodeError> {
        let reader = disk.chunks.clone();
        let ledger_sections = crate::state::SECTIONS.len();
        let mut stored = stored;
        // Snapshots from before webhooks, the access trail, replay
        // protection or final orders lack the last sections: those start
        // empty.
        let defaults = [
            vec![Webhooks::default().encode().into()],
            Vec::new(),
            vec![Proposers::default().encode().into()],
            Vec::new(),
            Vec::new(),
        ];
        let first_default = SERVICE_SECTIONS.len() - defaults.len();
        for (i, default) in defaults.into_iter().enumerate() {
            if stored.sections.len() == ledger_sections + first_default + i {
                stored.sections.push(default);
            }
        }
        if stored.sections.len() != ledger_sections + SERVICE_SECTIONS.len() {
            return Err(DecodeError::Sections {
                expected: ledger_sections + SERVICE_SECTIONS.len(),
                found: stored.sections.len(),
            });
        }
        let mut sections = stored.sections;
        let service = sections.split_off(ledger_sections);
        let stored_orders = disk.ids.as_ref().map(|ids| ids.orders.clone());
        let ledger = StateMachine::restore_with(limits, SnapshotChunks { header: stored.header, sections }, disk)?;
        let mut machine = Machine { ledger, ..Default::default() };
        machine.restore_service(service, reader, stored_orders)?;
        machine.check_journal_refs()?;
        Ok(machine)
    }

    /// The service sections of `restore_with`, in `SERVICE_SECTIONS` order:
    /// the trails' stored full chunks stay on disk where `reader` is given
    /// (`COLD_SECTIONS`), the other sections are read into memory.
    fn restore_service(
        &mut self,
        service: Vec<Vec<SectionChunk>>,
        reader: Option<Arc<dyn ChunkReader>>,
        stored_orders: Option<Arc<dyn orders::StoredOrders>>,
    ) -> Result<(), DecodeError> {
        let [keys, idempotency, audit_bytes, audit_offsets, order_book, webhooks, access, proposers, refs, final_bytes]: [Vec<
            SectionChunk,
        >;
            10] = service.try_into().expect("invariant: the section count was checked by the caller");
        let r = reader.as_ref();
        let bytes = |s: Vec<SectionChunk>| -> Result<Vec<u8>, DecodeError> {
            Ok(s.into_iter().map(|c| c.into_bytes(r)).collect::<Result<Vec<_>, _>>()?.concat())
        };
        for key in decode_keys(&bytes(keys)?)? {
            self.keys.insert_restored(key)?;
        }
        self.idempotency = IdempotencyStore::decode(&bytes(idempotency)?)?;
        let audit_bytes = decode_chunks::<u8>(audit_bytes, SERVICE_SECTIONS[AUDIT_BYTES], r)?;
        let audit_offsets = decode_chunks::<u64>(audit_offsets, SERVICE_SECTIONS[AUDIT_OFFSETS], r)?;
        self.audit = AuditTrail::restore(audit_bytes, audit_offsets, reader.clone())?;
        let refs = decode_chunks::<FinalRef>(refs, SERVICE_SECTIONS[FINAL_REFS], r)?;
        let final_bytes = decode_chunks::<u8>(final_bytes, SERVICE_SECTIONS[FINAL_BYTES], r)?;
        let finals = FinalOrders::restore(refs, final_bytes, reader.clone(), stored_orders)?;
        self.orders = OrderBook::restore(&bytes(order_book)?, finals)?;
        // Orders must agree with the ledger they move money in (the ledger's
        // own invariants were checked by its restore).
        orders::invariants::check(&self.ledger, &self.orders)?;
        self.webhooks = Webhooks::decode(&bytes(webhooks)?)?;
        let access = decode_chunks::<AccessRecord>(access, SERVICE_SECTIONS[ACCESS_RECORDS], r)?;
        self.access = AccessTrail::restore(access, reader.clone())?;
        self.proposers = Proposers::decode(&bytes(proposers)?)?;
        Ok(())
    }

    /// Every service reference in the journal names something that exists
    /// (the ledger's own references are checked by `StateMachine::restore`).
    /// Only the journal's hot tail is read, as there: keys, audit records
    /// and orders are never removed, so a slot checked once stays valid.
    pub(crate) fn check_journal_refs(&self) -> Result<(), DecodeError> {
        let ledger = self.ledger();
        let start = ledger.journal().hot_tail_start();
        for (r, slot) in ledger.journal().iter_from(start).zip(start..) {
            let ok = match r.kind {
                crate::events::kind::KEY_CREATED => self.keys().get(r.aux).is_some(),
                crate::events::kind::KEY_REVOKED => self.keys().get(r.aux).is_some_and(|k| k.revoked_at != 0),
                crate::events::kind::AUDIT_RECORDED => r.aux >= 1 && r.aux <= self.audit().len(),
                crate::events::kind::ORDER => {
                    let o = ledger.order_event_at(r.index());
                    self.orders().get(o.order_id).is_some_and(|e| (o.timeline as usize) < e.timeline.len())
                }
                _ => true,
            };
            if !ok {
                return Err(DecodeError::DanglingJournalSlot { slot: slot as u64, kind: r.kind });
            }
        }
        Ok(())
    }

    /// Events in the journal: the last event's sequence.
    pub fn events_len(&self) -> u64 {
        self.ledger().journal().len() as u64
    }
}

/// Section names after the ledger's, in stored order. The trails' three
/// (`AUDIT_BYTES`, `AUDIT_OFFSETS`, `ACCESS_RECORDS`) and the final orders'
/// two (`FINAL_REFS`, `FINAL_BYTES`) are arenas whose full chunks go cold,
/// so they are in `state::COLD_SECTIONS` too. "orders" holds open orders.
pub const SERVICE_SECTIONS: [&str; 10] = [
    "keys",
    "idempotency",
    "audit_bytes",
    "audit_offsets",
    "orders",
    "webhooks",
    "access_records",
    "proposers",
    "final_orders",
    "final_order_bytes",
];

/// Indexes into `SERVICE_SECTIONS` of the arenas.
const AUDIT_BYTES: usize = 2;
const AUDIT_OFFSETS: usize = 3;
const ACCESS_RECORDS: usize = 6;
const FINAL_REFS: usize = 8;
const FINAL_BYTES: usize = 9;

const _: () = {
    // The trails' sections must be named in COLD_SECTIONS, or a lazy load
    // would read them whole and a release would find no stored chunks.
    let cold = crate::state::COLD_SECTIONS;
    assert!(const_eq(cold[6], SERVICE_SECTIONS[AUDIT_BYTES]));
    assert!(const_eq(cold[7], SERVICE_SECTIONS[AUDIT_OFFSETS]));
    assert!(const_eq(cold[8], SERVICE_SECTIONS[ACCESS_RECORDS]));
    assert!(const_eq(cold[9], SERVICE_SECTIONS[FINAL_REFS]));
    assert!(const_eq(cold[10], SERVICE_SECTIONS[FINAL_BYTES]));
};

/// String equality usable in a constant.
const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Largest piece an encoded section is split into.
const SECTION_CHUNK: usize = 8 << 20;

fn facts<'a>(env: &Envelope<'a>) -> AuditFacts<'a> {
    AuditFacts {
        key_id: env.key_id,
        request_id: env.request_id,
        route: env.route,
        idempotency_key: env.idempotency_key,
    }
}

fn binary_route(op: Operation) -> &'static str {
    match op {
        Operation::CreateLedgers => "BINARY create_ledgers",
        Operation::CreateAccounts => "BINARY create_accounts",
        Operation::CreateTransfers => "BINARY create_transfers",
        Operation::CreateKeys => "BINARY create_keys",
        Operation::RevokeKeys => "BINARY revoke_keys",
        Operation::RotateKeys => "BINARY rotate_keys",
        // Order commands without an envelope come from the in-process executor.
        Operation::CreateOrders => "WORKFLOW create_orders",
        Operation::OrderCommands => "WORKFLOW order_commands",
        Operation::CreateWebhooks => "WORKFLOW create_webhooks",
        Operation::DeleteWebhooks => "WORKFLOW delete_webhooks",
        Operation::ReplayDeadLetters => "WORKFLOW replay_dead_letters",
        _ => "BINARY",
    }
}

/// A frozen view of a `Machine`.
pub struct MachineSnapshot {
    ledger: StateSnapshot,
    keys: Vec<ApiKey>,
    idempotency: IdempotencyStore,
    audit: (ArenaView<u8>, ArenaView<u64>),
    orders: OpenOrders,
    finals: (ArenaView<FinalRef>, ArenaView<u8>),
    webhooks: Webhooks,
    access: ArenaView<AccessRecord>,
    proposers: Proposers,
}

impl MachineSnapshot {
    /// The ledger's part of the view.
    pub fn ledger(&self) -> &StateSnapshot {
        &self.ledger
    }

    /// Final orders in the view.
    pub fn final_order_count(&self) -> u64 {
        self.finals.0.len as u64
    }

    /// (ref, index) of the view's final orders from index `from` on.
    pub fn final_orders_from(&self, from: u64) -> impl Iterator<Item = (FinalRef, u64)> + '_ {
        self.finals.0.iter_from(from as usize).zip(from..)
    }
}

impl Snapshot for MachineSnapshot {
    fn position(&self) -> u64 {
        self.ledger.position
    }

    fn header(&self) -> Vec<u8> {
        self.ledger.header()
    }

    fn sections(&self) -> Vec<SnapshotSection> {
        let mut out = self.ledger.sections();
        out.push(encoded_section(SERVICE_SECTIONS[0], encode_keys(&self.keys)));
        out.push(encoded_section(SERVICE_SECTIONS[1], self.idempotency.encode()));
        out.push(SnapshotSection { name: SERVICE_SECTIONS[AUDIT_BYTES], chunks: view_chunks(&self.audit.0) });
        out.push(SnapshotSection { name: SERVICE_SECTIONS[AUDIT_OFFSETS], chunks: view_chunks(&self.audit.1) });
        out.push(encoded_section(SERVICE_SECTIONS[4], self.orders.encode()));
        out.push(encoded_section(SERVICE_SECTIONS[5], self.webhooks.encode()));
        out.push(SnapshotSection { name: SERVICE_SECTIONS[ACCESS_RECORDS], chunks: view_chunks(&self.access) });
        out.push(encoded_section(SERVICE_SECTIONS[7], self.proposers.encode()));
        out.push(SnapshotSection { name: SERVICE_SECTIONS[FINAL_REFS], chunks: view_chunks(&self.finals.0) });
        out.push(SnapshotSection { name: SERVICE_SECTIONS[FINAL_BYTES], chunks: view_chunks(&self.finals.1) });
        out
    }
}

/// A section made of encoded bytes, split into pieces of at most 8 MiB.
fn encoded_section(name: &'static str, bytes: Vec<u8>) -> SnapshotSection {
    let chunks = bytes.chunks(SECTION_CHUNK).map(|c| Arc::new(c.to_vec()) as Arc<dyn ChunkBytes>).collect();
    SnapshotSection { name, chunks }
}

/// Marks the keys section's second format (expiry and rate limits). The
/// first format starts with the key count, which is at most `KEYS_MAX`, so
/// it never equals this.
const KEYS_FORMAT_2: u64 = u64::from_le_bytes(*b"bkeys\0\x02\0");

/// Keys without an expiry or a limit of their own are written in the first
/// format, so a state that uses neither keeps the digest it had before.
fn encode_keys(keys: &[ApiKey]) -> Vec<u8> {
    let extended = keys.iter().any(|k| k.expires_at != 0 || !k.rate_limit.is_default());
    let mut out = Vec::new();
    if extended {
        out.extend_from_slice(&KEYS_FORMAT_2.to_le_bytes());
    }
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        out.extend_from_slice(&k.id.to_le_bytes());
        out.extend_from_slice(&k.hash);
        out.push(k.role as u8);
        out.push(k.ledgers.len() as u8);
        out.push(k.name.len() as u8);
        out.push(0);
        for l in &k.ledgers {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(k.name.as_bytes());
        out.extend_from_slice(&k.created_at.to_le_bytes());
        out.extend_from_slice(&k.revoked_at.to_le_bytes());
        if extended {
            out.extend_from_slice(&k.expires_at.to_le_bytes());
            out.extend_from_slice(&k.rate_limit.per_second.to_le_bytes());
            out.extend_from_slice(&k.rate_limit.burst.to_le_bytes());
        }
    }
    out
}

fn decode_keys(bytes: &[u8]) -> Result<Vec<ApiKey>, DecodeError> {
    use crate::limits::KEYS_MAX;
    use crate::service::keys::Role;
    let mut c = crate::cursor::Cursor::new(bytes);
    let first = c.u64()?;
    let extended = first == KEYS_FORMAT_2;
    let count = if extended { c.u64()? } else { first };
    if count > KEYS_MAX as u64 {
        return Err(DecodeError::TooMany { what: "keys", count, max: KEYS_MAX as u64 });
    }
    let mut keys = Vec::new();
    for _ in 0..count {
        let id = c.u64()?;
        let hash = c.array::<32>()?;
        let code = c.u8()?;
        let role = Role::from_code(code).ok_or(DecodeError::UnknownCode { what: "key role", code: u64::from(code) })?;
        let ledger_count = c.u8()? as usize;
        let name_len = c.u8()? as usize;
        c.skip(1)?;
        let ledgers = (0..ledger_count).map(|_| c.u32()).collect::<Result<Vec<_>, _>>()?;
        let name = std::str::from_utf8(c.take(name_len)?)
            .map_err(|_| DecodeError::NotUtf8 { what: "stored key name" })?
            .to_string();
        let (created_at, revoked_at) = (c.u64()?, c.u64()?);
        let (expires_at, rate_limit) = if extended {
            (c.u64()?, KeyRateLimit { per_second: c.u32()?, burst: c.u32()? })
        } else {
            (0, KeyRateLimit::default())
        };
        if !rate_limit.is_valid() {
            return Err(DecodeError::KeyRateLimit { id });
        }
        keys.push(ApiKey { id, hash, role, ledgers, name, created_at, revoked_at, expires_at, rate_limit });
    }
    c.finish()?;
    Ok(keys)
}

/// The ledger's side of a command: the state machine runs ledger batches and
/// knows nothing of operations, so that `state` does not depend on `command`.
impl StateMachine {
    /// Applies one write command of the ledger, appending a result for every
    /// event that was not `ok`. The command must be valid (`Command::validate`).
    pub fn execute(&mut self, command: &Command<'_>, results: &mut Vec<EventResult>) {
        let batch = match command.operation {
            Operation::CreateLedgers => Batch::Ledgers(command.events),
            Operation::CreateAccounts => Batch::Accounts(command.events),
            Operation::CreateTransfers => Batch::Transfers(command.events),
            other => panic!("{} is not a write operation; the engine validates commands", other.name()),
        };
        self.execute_batch(batch, results);
    }

    /// Applies a whole entry: the convenience path for replay and tests.
    pub fn apply_entry(&mut self, position: u64, timestamp: u64, commands: &[Command<'_>]) -> Vec<Vec<EventResult>> {
        self.begin_entry(position, timestamp);
        let out = commands
            .iter()
            .map(|c| {
                let mut results = Vec::new();
                self.execute(c, &mut results);
                results
            })
            .collect();
        self.end_entry();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::CreateTransferResult;
    use crate::command::encode_command;
    use crate::records::{Account, Ledger, Transfer, encode_all};
    use crate::service::keys::Role;

    fn env<'a>(scope: u8, fp: u8) -> Envelope<'a> {
        Envelope {
            key_id: 5,
            idempotency: Some(([scope; 16], [fp; 16])),
            retention_seconds: 10,
            idempotency_limit: 100,
            request_id: "r",
            route: "POST /v1/transfers",
            idempotency_key: "k",
        }
    }

    fn setup() -> Machine {
        let mut m = Machine::default();
        let ledger = [Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() }];
        let accounts: Vec<Account> =
            (1..=2).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
        let c1 = Command { operation: Operation::CreateLedgers, events: encode_all(&ledger) };
        let c2 = Command { operation: Operation::CreateAccounts, events: encode_all(&accounts) };
        m.apply_entry(1, 1000, &[LogCommand::Plain(c1), LogCommand::Plain(c2)]);
        m
    }

    #[test]
    fn idempotent_envelopes_execute_once_and_replay() {
        let mut m = setup();
        let t = [Transfer {
            id: 9,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 5,
            ledger: 1,
            code: 1,
            ..Default::default()
        }];
        let c = Command { operation: Operation::CreateTransfers, events: encode_all(&t) };
        let out = m.apply_entry(2, 2000, &[LogCommand::Enveloped(env(1, 1), c), LogCommand::Enveloped(env(1, 1), c)]);
        assert_eq!(out[0], (Outcome::Executed, vec![]));
        assert!(matches!(out[1].0, Outcome::Replayed { .. }), "same key and request in the same entry replays");
        assert_eq!(m.ledger().account(1).unwrap().debits_posted, 5, "executed once");
        let out = m.apply_entry(3, 3000, &[LogCommand::Enveloped(env(1, 2), c)]);
        assert_eq!(out[0].0, Outcome::Conflict);
        // Without idempotency the id itself still protects: `exists`.
        let out = m.apply_entry(4, 4000, &[LogCommand::Enveloped(Envelope { idempotency: None, ..env(2, 2) }, c)]);
        assert_eq!(out[0].1[0].code, CreateTransferResult::Exists.code());
        // After the retention (10 s) the record is gone.
        m.apply_entry(5, 4000 + 11 * NANOS_PER_SECOND, &[]);
        assert!(m.idempotency().is_empty());
        assert_eq!(m.audit().len(), 6, "two plain setup commands and four enveloped requests");
        assert_eq!(m.audit().get(4).unwrap().outcome, AuditOutcome::Replayed);
        assert_eq!(m.audit().get(5).unwrap().outcome, AuditOutcome::Conflict);
        m.check_invariants_deep().unwrap();
    }

    /// Stores the chunks of every section in `COLD_SECTIONS` as a snapshot
    /// store would (others get a placeholder: they never go cold).
    fn store_cold(disk: &crate::arena::testing::MemDisk, snap: &MachineSnapshot) -> Vec<Vec<StoredChunk>> {
        let placeholder = |n| vec![StoredChunk { hash: [0; 32], len: 0 }; n];
        snap.sections()
            .iter()
            .map(|s| {
                if crate::state::COLD_SECTIONS.contains(&s.name) {
                    disk.store_chunks(&s.chunks)
                } else {
                    placeholder(s.chunks.len())
                }
            })
            .collect()
    }

    #[test]
    fn the_trails_go_cold_read_the_same_and_restore_lazily() {
        use crate::service::access::{AccessFilter, AccessKind};
        // More than two chunks of the audit arenas, one of the access trail.
        let n: u64 = if cfg!(feature = "small-chunks") { 300 } else { 18_000 };
        let mut m = setup();
        let disk = Arc::new(crate::arena::testing::MemDisk::default());
        m.set_chunk_reader(disk.clone());
        for i in 0..n {
            let t = [Transfer {
                id: u128::from(i) + 1,
                debit_account_id: 1,
                credit_account_id: 2,
                amount: 1,
                ledger: 1,
                code: 1,
                ..Default::default()
            }];
            let access = AccessEvent::new(AccessKind::PiiRead, 5, "GET /v1/orders/{id}", u128::from(i), 200);
            let c1 = Command { operation: Operation::CreateTransfers, events: encode_all(&t) };
            let c2 = Command { operation: Operation::RecordAccess, events: bytemuck::bytes_of(&access) };
            m.apply_entry(i + 2, (i + 2) * 1000, &[LogCommand::Plain(c1), LogCommand::Plain(c2)]);
        }
        let events = |m: &Machine| m.events_page(&crate::events::EventFilter { limit: 50, ..Default::default() }).body;
        let access = |m: &Machine| m.access().page(&AccessFilter { after_seq: 2, limit: 20, ..Default::default() }).0;
        let (digest, events_before, access_before, audit_before) =
            (m.digest(), events(&m), access(&m), m.audit().page(0, 20));
        let view = m.snapshot();
        let released = m.release_stored(&view, &store_cold(&disk, &view));
        drop(view);
        assert!(m.audit().cold_chunks() >= 2 && m.access().cold_chunks() >= 1, "released {released}");
        assert_eq!(m.cold_chunks(), released);
        assert_eq!(m.digest(), digest, "digests are over chunk hashes, hot or cold");
        assert_eq!(
            (events(&m), access(&m), m.audit().page(0, 20)),
            (events_before.clone(), access_before.clone(), audit_before.clone())
        );
        m.check_invariants_deep().unwrap();
        // A lazy load hands every chunk of the cold sections over as stored.
        let snap = m.snapshot();
        let stored = store_cold(&disk, &snap);
        let sections = snap
            .sections()
            .iter()
            .zip(&stored)
            .map(|(s, on_disk)| match crate::state::COLD_SECTIONS.contains(&s.name) {
                true => on_disk.iter().map(|c| SectionChunk::Stored(*c)).collect(),
                false => s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect(),
            })
            .collect();
        let chunks = SnapshotChunks { header: snap.header(), sections };
        let restored =
            Machine::restore_with(Limits::default(), chunks, OnDisk { chunks: Some(disk.clone()), ids: None }).unwrap();
        assert!(restored.audit().cold_chunks() >= 2 && restored.access().cold_chunks() >= 1);
        assert_eq!(restored.digest(), digest);
        assert_eq!(
            (events(&restored), access(&restored), restored.audit().page(0, 20)),
            (events_before, access_before, audit_before)
        );
        assert_eq!(restored.audit().head(), m.audit().head());
        restored.check_invariants_deep().unwrap();
    }

    #[test]
    fn keys_and_snapshot_round_trip() {
        let mut m = setup();
        let key = [KeyEvent::new(77, [3; 32], Role::Operator, &[1], "ops").unwrap()];
        let c = Command { operation: Operation::CreateKeys, events: encode_all(&key) };
        let out = m.apply_entry(2, 2000, &[LogCommand::Enveloped(env(3, 3), c)]);
        assert_eq!(out[0], (Outcome::Executed, vec![]));
        assert_eq!(m.keys().by_hash(&[3; 32]).unwrap().ledgers, vec![1]);
        let snap = m.snapshot();
        let digest = snap.digest();
        let stored = SnapshotChunks {
            header: snap.header(),
            sections: snap
                .sections()
                .iter()
                .map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect())
                .collect(),
        };
        let restored = Machine::restore(Limits::default(), stored).unwrap();
        assert_eq!(restored.digest(), digest);
        assert_eq!(restored.keys().get(77).unwrap().name, "ops");
        assert_eq!(restored.audit().len(), m.audit().len());
        assert!(matches!(restored.idempotency().check(&[3; 16], &[3; 16], 10), Check::Replay(_)));
        let mut body = Vec::new();
        encode_command(&mut body, &c);
        assert!(crate::command::decode_body(&body).is_ok());
    }

    #[test]
    fn rotation_applies_through_the_log_and_the_keys_section_reads_both_formats() {
        use crate::service::keys::{KeyRateLimit, RotateKeyResult};
        let mut m = setup();
        let plain = [KeyEvent::new(77, [3; 32], Role::Operator, &[1], "ops").unwrap()];
        let c = Command { operation: Operation::CreateKeys, events: encode_all(&plain) };
        m.apply_entry(2, 2000, &[LogCommand::Enveloped(env(3, 3), c)]);
        // Without expiry or limits the section is in the first format: the
        // key count first, as snapshots written before both existed.
        let first = encode_keys(&m.keys().iter().cloned().collect::<Vec<_>>());
        assert_eq!(first[..8], 1u64.to_le_bytes());
        assert_eq!(decode_keys(&first).unwrap(), m.keys().iter().cloned().collect::<Vec<_>>());

        let limited = [KeyEvent::new(78, [4; 32], Role::Auditor, &[], "lim")
            .unwrap()
            .limited(KeyRateLimit { per_second: 5, burst: 10 })
            .expiring(9_000)];
        let c = Command { operation: Operation::CreateKeys, events: encode_all(&limited) };
        assert_eq!(m.apply_entry(3, 3000, &[LogCommand::Enveloped(env(4, 4), c)])[0], (Outcome::Executed, vec![]));
        let rotate = [RotateEvent { id: 77, new_id: 79, hash: [5; 32], grace_seconds: 1, ..Default::default() }];
        let c = Command { operation: Operation::RotateKeys, events: encode_all(&rotate) };
        let out = m.apply_entry(4, 4000, &[LogCommand::Enveloped(env(5, 5), c), LogCommand::Enveloped(env(6, 6), c)]);
        assert_eq!(out[0], (Outcome::Executed, vec![]));
        assert_eq!(out[1].1, vec![EventResult { index: 0, code: RotateKeyResult::IdExists.code() }]);
        let (old, new) = (m.keys().get(77).unwrap(), m.keys().get(79).unwrap());
        assert_eq!(old.expires_at, new.created_at + NANOS_PER_SECOND);
        assert_eq!((new.ledgers.clone(), new.name.as_str(), new.expires_at), (vec![1], "ops", 0));
        let last = m.audit().get(m.audit().len()).unwrap();
        assert_eq!((last.operation, last.first_error), (Operation::RotateKeys as u8, Some(6)), "rotations are audited");

        let keys: Vec<ApiKey> = m.keys().iter().cloned().collect();
        let second = encode_keys(&keys);
        assert_eq!(second[..8], KEYS_FORMAT_2.to_le_bytes());
        assert_eq!(decode_keys(&second).unwrap(), keys);
        assert!(decode_keys(&second[..second.len() - 1]).is_err());
        let mut too_many = KEYS_FORMAT_2.to_le_bytes().to_vec();
        too_many.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_keys(&too_many).is_err());

        let snap = m.snapshot();
        let stored = SnapshotChunks {
            header: snap.header(),
            sections: snap
                .sections()
                .iter()
                .map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect())
                .collect(),
        };
        let restored = Machine::restore(Limits::default(), stored).unwrap();
        assert_eq!(restored.digest(), snap.digest());
        assert_eq!(restored.keys().get(78).unwrap().rate_limit, KeyRateLimit { per_second: 5, burst: 10 });
    }

    #[test]
    fn webhooks_apply_through_the_log_and_snapshot_round_trip() {
        use crate::service::webhooks::{CreateWebhookResult, REDELIVERY, WebhookCreate, WebhookUpdate};
        let mut m = setup();
        let head = m.events_len();
        let hook = [WebhookCreate::new(1, 0, [9; 16], "https://example.com/h", &[5; 70]).unwrap()];
        let c = Command { operation: Operation::CreateWebhooks, events: encode_all(&hook) };
        let out = m.apply_entry(2, 2000, &[LogCommand::Enveloped(env(4, 4), c)]);
        assert_eq!(out[0], (Outcome::Executed, vec![]));
        let out = m.apply_entry(3, 2500, &[LogCommand::Enveloped(Envelope { idempotency: None, ..env(4, 5) }, c)]);
        assert_eq!(out[0].1[0].code, CreateWebhookResult::WebhookIdMismatch.code(), "the id is taken");
        let r = m.webhooks().get(1).unwrap();
        assert_eq!((r.cursor, r.created_at, r.url_str()), (head, 2000, "https://example.com/h"));
        let audited = m.audit().len();
        let events = m.events_len();
        let up = |seq, flags| WebhookUpdate { id: 1, seq, attempts: 4, status: 503, error: 2, flags, reserved: 0 };
        let dead = [up(head + 1, 0)];
        let progress = [up(head + 2, 0)];
        let c1 = Command { operation: Operation::WebhookDeadLetters, events: encode_all(&dead) };
        let c2 = Command { operation: Operation::WebhookProgress, events: encode_all(&progress) };
        let out = m.apply_entry(4, 3000, &[LogCommand::Plain(c1), LogCommand::Plain(c2)]);
        assert_eq!(out, vec![(Outcome::Executed, vec![]), (Outcome::Executed, vec![])]);
        assert_eq!(m.audit().len(), audited, "the worker's bookkeeping is not audited");
        assert_eq!(m.events_len(), events, "nor does it make events to deliver");
        assert_eq!(m.webhooks().get(1).unwrap().cursor, head + 2);
        let replay = [up(head + 1, 0)];
        let c3 = Command { operation: Operation::ReplayDeadLetters, events: encode_all(&replay) };
        m.apply_entry(5, 4000, &[LogCommand::Enveloped(Envelope { idempotency: None, ..env(4, 6) }, c3)]);
        assert_eq!(m.webhooks().redeliveries(1), vec![head + 1]);
        let snap = m.snapshot();
        let stored = SnapshotChunks {
            header: snap.header(),
            sections: snap
                .sections()
                .iter()
                .map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect())
                .collect(),
        };
        let mut restored = Machine::restore(Limits::default(), stored).unwrap();
        assert_eq!(restored.digest(), snap.digest());
        assert_eq!(restored.webhooks().redeliveries(1), vec![head + 1]);
        assert_eq!(restored.webhooks().next_id(), 2);
        let done = [up(head + 1, REDELIVERY)];
        let c4 = Command { operation: Operation::WebhookProgress, events: encode_all(&done) };
        restored.apply_entry(6, 5000, &[LogCommand::Plain(c4)]);
        assert!(restored.webhooks().redeliveries(1).is_empty());
        assert!(restored.webhooks().dead_letters(1, 0, 10).is_empty());
    }
}

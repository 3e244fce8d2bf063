//! The engine: the single thread that owns the state machine and the log.
//!
//! It drains whatever requests are queued (up to a bound), writes all the
//! writes as ONE log entry (group commit), applies that entry right away
//! while the log's syncer fsyncs it in parallel, and hands the replies to the
//! gate, which releases them once the entry is durable. Reads are answered
//! from the applied state and gated the same way, so no client ever sees
//! state that a crash could take back.

use crate::gate::Gate;
use crate::indexer::Indexer;
use crate::limits::{BOOTS_KEPT, CLUSTER_GROUP_BYTES_MAX, GROUP_BYTES_MAX, GROUP_REQUESTS_MAX, WAITING_PROPOSALS_MAX};
use crate::message::{
    Committed, EngineMsg, Proposal, ProposalFailed, ReplyTo, Request, Response, error_response, ok_response,
};
use crate::replication::ReplicaLink;
use crate::snapshotter::SnapshotTrigger;
use bursar_core::command::{LogCommand, decode_body, envelope_prefix};
use bursar_core::entry::{EntryHeader, Origin, RejectReason};
use bursar_core::machine::{Admission, Machine};
use bursar_core::records::decode_at;
use bursar_core::service::keys::Keys;
use bursar_core::state::QueryErrorKind;
use bursar_core::{Command, EventResult, Operation};
use bursar_proto::{PING, ProtocolError, RequestOp};
use bursar_store::cache::BlockCache;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Applying one entry slower than this is logged.
const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(50);
/// How often the memory gauges are refreshed.
const MEMORY_GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What the engine needs from a log; implemented by every log backend.
pub trait EngineLog: Send {
    /// Appends an entry whose body is the concatenation of `parts`; returns
    /// its position. Durability is reported separately (to the gate).
    fn append(&mut self, timestamp: u64, parts: &[&[u8]]) -> Result<u64, bursar_log::LogError>;
    /// The chain hash of the last appended entry.
    fn last_chain(&self) -> [u8; 32];
    /// Stops after everything appended is durable.
    fn close(self: Box<Self>) -> Result<(), bursar_log::LogError>;
    /// Removes whole old segments all of whose entries are below
    /// `position` (see `FileLog::remove_before`); returns how many.
    fn remove_before(&mut self, position: u64) -> Result<usize, bursar_log::LogError>;
}

/// The API keys as of the last applied entry, shared with the HTTP layer.
/// The engine replaces the `Arc` after any key change, before the reply to
/// that change is released.
pub type KeyTable = Arc<std::sync::RwLock<Arc<Keys>>>;

pub struct Engine {
    sm: Machine,
    log: Box<dyn EngineLog>,
    gate: Arc<Gate>,
    snapshots: SnapshotTrigger,
    keys: KeyTable,
    results: Vec<EventResult>,
    /// Signalled after an entry that changed an order, so the workflow
    /// executor reads the change feed without polling. Never blocks.
    order_changes: Arc<tokio::sync::Notify>,
    /// The journal's length after the last applied entry: event readers wait
    /// on it, then read (a read answers only once durable). Never blocks.
    events_tail: tokio::sync::watch::Sender<u64>,
    /// Cluster mode: writes are proposed, not logged here.
    cluster: Option<Cluster>,
    group_bytes_max: usize,
    /// When the memory gauges were last published.
    memory_published: Option<Instant>,
    /// The cache in front of cold chunks, for its gauges.
    block_cache: Option<Arc<BlockCache>>,
    /// Builds stored id tables from written snapshots.
    indexer: Option<Indexer>,
}

/// The engine's cluster-mode state.
struct Cluster {
    link: ReplicaLink,
    /// The boot number proposals carry (see `core::service::proposers`),
    /// picked at the first proposal, once the state knows this node's
    /// earlier runs, and again if the log shows a newer run of this node.
    boot: Option<u64>,
    /// Every boot this process proposed under (a few), to recognise its
    /// entries; proposal ids never repeat within the process.
    boots: Vec<u64>,
    next_id: u64,
    /// Requests waiting for their proposal's commit, oldest proposal first.
    waiting: BTreeMap<u64, Waiting>,
    /// The timer entry this replica proposed and has not seen committed
    /// (and when), so that it proposes no second one meanwhile.
    tick_in_flight: Option<(u64, Instant)>,
}

/// A proposal's requests: (reply, request id, operation), and when it was
/// proposed.
struct Waiting {
    since: Instant,
    requests: Vec<(ReplyTo, u64, u8)>,
}

impl Engine {
    pub fn new(
        sm: Machine,
        log: Box<dyn EngineLog>,
        gate: Arc<Gate>,
        snapshots: SnapshotTrigger,
        keys: KeyTable,
    ) -> Engine {
        publish_keys(&keys, &sm);
        let events_tail = tokio::sync::watch::Sender::new(sm.events_len());
        Engine {
            sm,
            log,
            gate,
            snapshots,
            keys,
            results: Vec::with_capacity(bursar_core::limits::BATCH_EVENTS_MAX),
            order_changes: Arc::new(tokio::sync::Notify::new()),
            events_tail,
            cluster: None,
            group_bytes_max: GROUP_BYTES_MAX,
            memory_published: None,
            block_cache: None,
            indexer: None,
        }
    }

    /// Builds stored id tables from each written snapshot and installs them.
    pub fn with_indexer(mut self, indexer: Indexer) -> Engine {
        self.indexer = Some(indexer);
        self
    }

    /// Publishes the gauges of the block cache cold chunks are read through.
    pub fn with_block_cache(mut self, cache: Arc<BlockCache>) -> Engine {
        self.block_cache = Some(cache);
        self
    }

    /// Cluster mode: writes go to the replicated log through `link`, and
    /// only committed entries (`EngineMsg::Committed`) are applied.
    pub fn replicated(mut self, link: ReplicaLink) -> Engine {
        self.cluster = Some(Cluster {
            link,
            boot: None,
            boots: Vec::new(),
            next_id: 1,
            waiting: BTreeMap::new(),
            tick_in_flight: None,
        });
        self.group_bytes_max = CLUSTER_GROUP_BYTES_MAX;
        self
    }

    /// Follows the journal's length (the newest event sequence).
    pub fn events_tail(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_tail.subscribe()
    }

    /// The signal raised after entries that changed orders.
    pub fn order_changes(&self) -> Arc<tokio::sync::Notify> {
        self.order_changes.clone()
    }

    /// Runs until a shutdown message or until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<EngineMsg>) {
        let mut msgs = Vec::with_capacity(GROUP_REQUESTS_MAX);
        let mut shutdown_ack = None;
        while shutdown_ack.is_none() {
            let Some(first) = rx.blocking_recv() else { break };
            let mut bytes = first.body_len();
            msgs.push(first);
            while msgs.len() < GROUP_REQUESTS_MAX && bytes < self.group_bytes_max {
                match rx.try_recv() {
                    Ok(m) => {
                        bytes += m.body_len();
                        msgs.push(m);
                    }
                    Err(_) => break,
                }
            }
            shutdown_ack = self.process(&mut msgs);
        }
        rx.close();
        self.finish(shutdown_ack);
    }

    fn process(&mut self, msgs: &mut Vec<EngineMsg>) -> Option<std::sync::mpsc::Sender<()>> {
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        let mut shutdown = None;
        for m in msgs.drain(..) {
            match m {
                EngineMsg::Request(r) if matches!(r.op, RequestOp::Op(op) if op.is_write()) => writes.push(r),
                EngineMsg::Request(r) => reads.push(r),
                EngineMsg::Tick => {}
                EngineMsg::Shutdown(ack) => shutdown = Some(ack),
                // In log order: the replicator sends them in order on this one channel.
                EngineMsg::Committed(c) => self.apply_committed(c),
                EngineMsg::ProposalFailed(f) => self.proposal_failed(f),
            }
        }
        let now = now_nanos();
        let expiry_due = self.sm.next_expiry().is_some_and(|at| at <= now);
        if self.cluster.is_some() {
            self.give_up_waiting(Instant::now());
            self.propose(writes, expiry_due, now);
        } else if !writes.is_empty() || expiry_due {
            self.apply_writes(writes, now);
        }
        if !reads.is_empty() {
            let replies = reads.into_iter().map(|r| (self.answer_read(&r), r.reply)).map(|(resp, to)| (to, resp));
            self.gate.release_after(self.sm.position(), replies.collect());
        }
        self.snapshots.maybe_take(&self.sm, || self.log.last_chain());
        self.remove_old_log();
        self.release_cold();
        self.install_stored_ids();
        self.publish_memory();
        shutdown
    }

    /// Drops the log segments below the oldest retained snapshot once the
    /// snapshot thread published a newer one. A failure is logged, not
    /// fatal: the log stays whole and consistent (see `FileLog::remove_before`)
    /// and the next snapshot tries again.
    fn remove_old_log(&mut self) {
        let Some(position) = self.snapshots.log_removable() else {
            return;
        };
        match self.log.remove_before(position) {
            Ok(0) => {}
            Ok(segments) => tracing::info!(segments, below = position, "removed old log segments"),
            Err(e) => tracing::warn!(below = position, "removing old log segments failed (they are kept): {e}"),
        }
    }

    /// Lets the full chunks the newest written snapshot holds leave RAM.
    /// O(chunks of the view), once per snapshot.
    fn release_cold(&mut self) {
        let Some(stored) = self.snapshots.take_stored() else {
            return;
        };
        let released = self.sm.release_stored(&stored.snapshot, &stored.chunks);
        if released > 0 {
            metrics::counter!("bursar_state_chunks_released_total").increment(released as u64);
            tracing::debug!(released, cold = self.sm.cold_chunks(), "state chunks left memory");
        }
        metrics::gauge!("bursar_state_cold_chunks").set(self.sm.cold_chunks() as f64);
        if let Some(indexer) = &self.indexer {
            indexer.offer(stored.snapshot);
        }
    }

    /// Installs stored id tables the indexer finished: the RAM generations
    /// they cover drop out.
    fn install_stored_ids(&mut self) {
        let Some(ids) = self.indexer.as_ref().and_then(Indexer::take_ready) else {
            return;
        };
        self.sm.install_stored_ids(ids);
        let (in_memory, generations) = self.sm.ledger().indexes_in_memory();
        let covered = self.sm.ledger().stored_covered();
        tracing::debug!(?covered, ?in_memory, generations, "stored index tables installed");
        metrics::gauge!("bursar_state_ids_stored_below").set(covered[0] as f64);
        let finals = self.sm.orders().finals();
        metrics::gauge!("bursar_state_final_orders_stored_below").set(finals.covered() as f64);
        metrics::gauge!("bursar_state_final_orders_in_memory").set(finals.recent_len() as f64);
    }

    /// `bursar_state_memory_bytes{structure}`: what the state holds in RAM,
    /// at most once per `MEMORY_GAUGE_INTERVAL` (the engine ticks every
    /// 100 ms even when idle). The cold chunk count too, so that it is
    /// right after a restart, before any snapshot (a lazy restore leaves
    /// chunks cold).
    fn publish_memory(&mut self) {
        let now = Instant::now();
        if self.memory_published.is_some_and(|at| now.duration_since(at) < MEMORY_GAUGE_INTERVAL) {
            return;
        }
        self.memory_published = Some(now);
        for (structure, bytes) in self.sm.memory().0 {
            metrics::gauge!("bursar_state_memory_bytes", "structure" => structure).set(bytes as f64);
        }
        metrics::gauge!("bursar_state_cold_chunks").set(self.sm.cold_chunks() as f64);
        if let Some(cache) = &self.block_cache {
            let s = cache.stats();
            metrics::gauge!("bursar_block_cache_bytes").set(s.bytes as f64);
            metrics::gauge!("bursar_block_cache_capacity_bytes").set(s.capacity_bytes as f64);
            metrics::gauge!("bursar_block_cache_hits_total").set(s.hits as f64);
            metrics::gauge!("bursar_block_cache_misses_total").set(s.misses as f64);
            metrics::gauge!("bursar_block_cache_evictions_total").set(s.evictions as f64);
            let reads = s.hits + s.misses;
            let rate = if reads == 0 { 1.0 } else { s.hits as f64 / reads as f64 };
            metrics::gauge!("bursar_block_cache_hit_ratio").set(rate);
        }
    }

    /// Logs the writes as one entry and applies it. An entry with no writes
    /// still advances log time, which lets due pending transfers expire.
    fn apply_writes(&mut self, writes: Vec<Request>, timestamp: u64) {
        let encoded = EncodedWrites::new(&writes);
        let parts = encoded.parts();
        let append_started = std::time::Instant::now();
        let position = match self.log.append(timestamp, &parts) {
            Ok(p) => p,
            Err(e) => fatal_storage_error(&self.gate, &format!("log append failed: {e}")),
        };
        metrics::histogram!("bursar_log_append_seconds").record(append_started.elapsed().as_secs_f64());
        let log_commands: Vec<LogCommand<'_>> = writes
            .iter()
            .zip(&encoded.commands)
            .map(|(w, c)| match &w.envelope {
                Some(env) => LogCommand::Enveloped(env.borrow(), *c),
                None => LogCommand::Plain(*c),
            })
            .collect();
        let responses = self
            .apply_entry(position, timestamp, &EntryHeader::None, &log_commands, encoded.bytes())
            .expect("invariant: an entry without a header is always admitted");
        drop(log_commands);
        let replies = writes
            .into_iter()
            .zip(responses)
            .map(|(w, mut r)| {
                r.request_id = w.request_id;
                (w.reply, r)
            })
            .collect();
        self.gate.release_after(position, replies);
    }

    /// Applies one logged entry; returns one response per command (request
    /// ids still zero), or why the entry's header refused it, and publishes
    /// what changed to the node's watchers.
    fn apply_entry(
        &mut self,
        position: u64,
        timestamp: u64,
        header: &EntryHeader,
        commands: &[LogCommand<'_>],
        bytes: usize,
    ) -> Result<Vec<Response>, RejectReason> {
        metrics::counter!("bursar_log_entries_total").increment(1);
        metrics::counter!("bursar_log_bytes_total").increment(bytes as u64);
        metrics::histogram!("bursar_engine_entry_requests_size").record(commands.len() as f64);
        metrics::histogram!("bursar_engine_entry_events_size")
            .record(commands.iter().map(|c| c.command().count()).sum::<usize>() as f64);
        let started = std::time::Instant::now();
        let order_change_before = self.sm.orders().last_change();
        self.sm.begin_entry(position, timestamp);
        let admission = self.sm.admit(header);
        let admitted = admission == Admission::Admitted;
        let mut responses = Vec::with_capacity(commands.len());
        let mut keys_changed = false;
        for log_command in commands.iter().filter(|_| admitted) {
            let command = log_command.command();
            self.results.clear();
            let outcome = self.sm.execute(log_command, &mut self.results);
            keys_changed |=
                matches!(command.operation, Operation::CreateKeys | Operation::RevokeKeys | Operation::RotateKeys);
            let body = bytemuck::cast_slice(&self.results).to_vec();
            let mut response = ok_response(command.operation as u8, 0, self.results.len(), body);
            response.outcome = outcome;
            if matches!(log_command, LogCommand::Enveloped(..)) && command.count() == 1 {
                response.record = self.stored_record(command);
            }
            responses.push(response);
        }
        self.sm.end_entry();
        let took = started.elapsed();
        metrics::histogram!("bursar_engine_apply_seconds").record(took.as_secs_f64());
        if took > SLOW_APPLY {
            tracing::warn!(position, ms = took.as_millis() as u64, requests = commands.len(), bytes, "slow apply");
        }
        if keys_changed {
            publish_keys(&self.keys, &self.sm);
        }
        if self.sm.orders().last_change() != order_change_before {
            self.order_changes.notify_one();
        }
        let events = self.sm.events_len();
        self.events_tail.send_if_modified(|tail| std::mem::replace(tail, events) != events);
        self.snapshots.logged(bytes as u64);
        match admission {
            Admission::Admitted => Ok(responses),
            Admission::Rejected(reason) => Err(reason),
        }
    }

    /// Cluster mode: proposes the writes as one entry (and, on the lease
    /// holder, an empty timer entry when something is due and no write
    /// would carry the time forward).
    fn propose(&mut self, writes: Vec<Request>, expiry_due: bool, timestamp: u64) {
        let cluster = self.cluster.as_mut().expect("invariant: propose runs only in cluster mode");
        let timer =
            writes.is_empty() && expiry_due && cluster.tick_in_flight.is_none() && *cluster.link.lease_held.borrow();
        if writes.is_empty() && !timer {
            return;
        }
        let id = cluster.next_id;
        cluster.next_id += 1;
        let boot = match cluster.boot {
            Some(boot) => boot,
            None => {
                let boot = next_boot(&self.sm, cluster.link.node_id, cluster.boots.last().copied(), timestamp);
                if cluster.boots.len() == BOOTS_KEPT {
                    cluster.boots.remove(0);
                }
                cluster.boots.push(boot);
                cluster.boot = Some(boot);
                boot
            }
        };
        let origin = Origin { node: cluster.link.node_id, key_id: 0, boot, proposal: id };
        let body = EncodedWrites::new(&writes).parts().concat();
        if timer {
            cluster.tick_in_flight = Some((id, Instant::now()));
        } else {
            let requests = writes.into_iter().map(|w| (w.reply, w.request_id, w.op.code())).collect();
            assert!(cluster.waiting.len() < WAITING_PROPOSALS_MAX, "proposals awaiting commit leak");
            cluster.waiting.insert(id, Waiting { since: Instant::now(), requests });
        }
        // Blocks while the replicator's queue is full: back-pressure to clients.
        if cluster.link.proposals.blocking_send(Proposal { origin, timestamp, body }).is_err() {
            let failed = ProposalFailed { id, reason: "the replicated log is closed".into() };
            self.proposal_failed(failed);
        }
    }

    /// Cluster mode: copies a committed entry into the local log (same
    /// position, with the replicator's verdict as its header), applies it,
    /// and answers the requests if it was ours.
    fn apply_committed(&mut self, c: Committed) {
        if self.cluster.is_none() {
            unreachable!("committed entries are delivered only in cluster mode");
        }
        let header_bytes = c.header.encode();
        let position = match self.log.append(c.timestamp, &[&header_bytes, &c.body]) {
            Ok(p) => p,
            Err(e) => fatal_storage_error(&self.gate, &format!("local log append failed: {e}")),
        };
        assert_eq!(position, c.position, "the local log must hold the replicated log's entries at the same positions");
        let commands = decode_body(&c.body).unwrap_or_else(|e| {
            // The replicator checked the body decodes before handing it over.
            panic!("invariant: committed entry {position} was judged decodable but is not: {e}")
        });
        let applied = self.apply_entry(position, c.timestamp, &c.header, &commands, header_bytes.len() + c.body.len());
        if let Err(reason) = applied {
            metrics::counter!("bursar_cluster_entries_refused_total", "reason" => reason.name()).increment(1);
            tracing::error!(position, reason = reason.name(), "committed log entry refused: {}", reason.description());
        }
        // Committed by the replicated log and applied: replies may go.
        self.gate.durable(position);
        let cluster = self.cluster.as_mut().expect("invariant: checked above");
        if let Some(checkpoints) = &cluster.link.checkpoints
            && position % checkpoints.every == 0
            && checkpoints.views.send(self.sm.snapshot()).is_err()
        {
            tracing::error!(position, "the digest thread stopped; no more divergence checks");
        }
        let Some(origin) = c.header.authentic_origin() else { return };
        if origin.node != cluster.link.node_id {
            return;
        }
        if !cluster.boots.contains(&origin.boot) {
            if cluster.boot.is_some_and(|boot| origin.boot > boot) {
                // Entries under this node id from a newer run than this one:
                // this run's proposals would be refused as stale from now on.
                metrics::counter!("bursar_cluster_node_id_conflicts_total").increment(1);
                tracing::error!(
                    position,
                    node = origin.node,
                    "the log holds entries of a newer run of this node id: if another replica runs with \
                     --node-id {}, stop it (every replica needs its own); proposing as a newer run",
                    origin.node
                );
                cluster.boot = None;
            }
            return; // an earlier run's entry
        }
        let id = origin.proposal;
        if cluster.tick_in_flight.is_some_and(|(tick, _)| tick == id) {
            cluster.tick_in_flight = None;
        }
        if matches!(applied, Err(RejectReason::StaleBoot)) && cluster.boot == Some(origin.boot) {
            // The log has seen a newer run of this node: pick a newer boot.
            cluster.boot = None;
        }
        let Some(waiting) = cluster.waiting.remove(&id) else { return };
        let replies = match applied {
            Ok(responses) => {
                assert_eq!(waiting.requests.len(), responses.len(), "a proposal's entry holds one command per request");
                waiting
                    .requests
                    .into_iter()
                    .zip(responses)
                    .map(|((reply, request_id, _), mut r)| {
                        r.request_id = request_id;
                        (reply, r)
                    })
                    .collect()
            }
            Err(reason) => waiting
                .requests
                .into_iter()
                .map(|(reply, request_id, operation)| {
                    let message = format!("the replicas refused this write's log entry ({}); retry it", reason.name());
                    (reply, error_response(operation, request_id, ProtocolError::NotApplied, &message))
                })
                .collect(),
        };
        self.gate.release_after(position, replies);
    }

    /// Cluster mode: the proposal's requests learn that the outcome is
    /// unknown (the entry may still commit, and then applies normally).
    fn proposal_failed(&mut self, f: ProposalFailed) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        if cluster.tick_in_flight.is_some_and(|(tick, _)| tick == f.id) {
            cluster.tick_in_flight = None;
        }
        if let Some(waiting) = cluster.waiting.remove(&f.id) {
            outcome_unknown(f.id, waiting, &f.reason);
        }
    }

    /// Cluster mode: proposals the log confirmed but never delivered back
    /// (or whose confirmation never came) within `commit_wait_max` are
    /// given up: their requests learn the outcome is unknown, and a lost
    /// timer entry no longer blocks the next. A late entry still applies.
    fn give_up_waiting(&mut self, now: Instant) {
        let cluster = self.cluster.as_mut().expect("invariant: runs only in cluster mode");
        let max = cluster.link.commit_wait_max;
        if cluster.tick_in_flight.is_some_and(|(_, since)| now.saturating_duration_since(since) > max) {
            tracing::warn!(?max, "the timer entry proposed was not seen committed in time; proposing again");
            cluster.tick_in_flight = None;
        }
        let mut expired = Vec::new();
        while let Some(oldest) = cluster.waiting.first_entry() {
            if now.saturating_duration_since(oldest.get().since) <= max {
                break;
            }
            expired.push(oldest.remove_entry());
        }
        for (id, waiting) in expired {
            outcome_unknown(id, waiting, &format!("not seen committed within {max:?} of its proposal"));
        }
    }

    /// The stored record named by a single-event create, as bytes.
    fn stored_record(&self, command: &Command<'_>) -> Vec<u8> {
        let ledger = self.sm.ledger();
        match command.operation {
            Operation::CreateLedgers => {
                let l: bursar_core::Ledger = decode_at(command.events, 0);
                ledger.ledger(l.id).map(|r| bytemuck::bytes_of(r).to_vec()).unwrap_or_default()
            }
            Operation::CreateAccounts => {
                let a: bursar_core::Account = decode_at(command.events, 0);
                ledger.account(a.id).map(|r| bytemuck::bytes_of(r).to_vec()).unwrap_or_default()
            }
            Operation::CreateTransfers => {
                let t: bursar_core::Transfer = decode_at(command.events, 0);
                ledger.transfer(t.id).map(|r| bytemuck::bytes_of(&r).to_vec()).unwrap_or_default()
            }
            Operation::CreateOrders | Operation::OrderCommands => {
                let id =
                    u128::from_le_bytes(command.events[..16].try_into().expect("every order event starts with its id"));
                self.sm.orders().get(id).map(|e| bytemuck::bytes_of(&e.order).to_vec()).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Answers a read from the applied state; core encodes the reply.
    fn answer_read(&self, r: &Request) -> Response {
        let op = match r.op {
            RequestOp::Ping => return ok_response(PING, r.request_id, 0, Vec::new()),
            RequestOp::Authenticate => {
                let why = "authenticate is answered by the listener";
                return error_response(r.op.code(), r.request_id, ProtocolError::UnknownOperation, why);
            }
            RequestOp::Op(op) => op,
        };
        match self.sm.query(op, &r.body) {
            Ok(reply) => ok_response(op as u8, r.request_id, reply.count, reply.body),
            Err(e) => {
                let error = match e.kind {
                    QueryErrorKind::InvalidFilter => ProtocolError::InvalidFilter,
                    QueryErrorKind::NotARead => ProtocolError::UnknownOperation,
                };
                error_response(op as u8, r.request_id, error, &e.detail)
            }
        }
    }

    fn finish(mut self, ack: Option<std::sync::mpsc::Sender<()>>) {
        self.snapshots.take_final(&self.sm, self.log.last_chain());
        if let Err(e) = self.log.close() {
            fatal_storage_error(&self.gate, &format!("closing the log failed: {e}"));
        }
        self.snapshots.join();
        tracing::info!(position = self.sm.position(), "engine stopped");
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}

fn publish_keys(table: &KeyTable, sm: &Machine) {
    let keys = Arc::new(sm.keys().clone());
    *table.write().unwrap_or_else(|e| e.into_inner()) = keys;
}

/// A boot number for this run of `node`: after every run the state has
/// seen, and the clock's time when that is later (so boots stay distinct
/// across restarts even before this replica has caught up).
fn next_boot(sm: &Machine, node: u32, last_mine: Option<u64>, now: u64) -> u64 {
    let seen = sm.proposers().boot(node).map_or(0, |b| b.saturating_add(1));
    let boot = now.max(seen).max(last_mine.map_or(0, |b| b.saturating_add(1)));
    assert!(last_mine.is_none_or(|last| boot > last), "a process's boots increase");
    boot
}

/// Wall-clock nanoseconds for entry timestamps. Only the engine reads the
/// clock; the state machine takes time from the log.
pub fn now_nanos() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("invariant: the clock is after 1970");
    u64::try_from(d.as_nanos()).expect("invariant: nanoseconds since 1970 fit in u64 until 2554")
}

/// Cluster mode: tells a proposal's requests that their outcome is unknown
/// (the entry may still commit and then applies normally).
fn outcome_unknown(id: u64, waiting: Waiting, reason: &str) {
    tracing::warn!(proposal = id, requests = waiting.requests.len(), reason, "proposal not confirmed");
    for (reply, request_id, operation) in waiting.requests {
        let _ = reply.send(error_response(operation, request_id, ProtocolError::OutcomeUnknown, reason));
    }
}

/// A write or fsync failed: the state of the file is unknown, so retrying is
/// unsafe. Fail every waiting request and exit; a restart recovers from the
/// log (crash-only design).
pub fn fatal_storage_error(gate: &Gate, message: &str) -> ! {
    tracing::error!("{message}; exiting so that recovery can run from the durable log");
    gate.fail(message.to_string());
    eprintln!("bursar: fatal: {message}");
    std::process::exit(74);
}

/// A group of writes encoded as a log entry body: per command an optional
/// envelope prefix, the command header and its events.
struct EncodedWrites<'a> {
    commands: Vec<Command<'a>>,
    prefixes: Vec<Vec<u8>>,
    headers: Vec<[u8; Command::HEADER_SIZE]>,
}

impl<'a> EncodedWrites<'a> {
    fn new(writes: &'a [Request]) -> EncodedWrites<'a> {
        let commands: Vec<Command<'a>> = writes
            .iter()
            .map(|w| {
                let RequestOp::Op(operation) = w.op else { unreachable!("writes are operations") };
                let command = Command { operation, events: &w.body };
                command.validate().expect("invariant: the protocol layer checked the request size");
                command
            })
            .collect();
        let prefixes = commands
            .iter()
            .zip(writes)
            .map(|(c, w)| match &w.envelope {
                Some(env) => {
                    envelope_prefix(&env.borrow(), c).expect("invariant: the HTTP layer bounds envelope fields")
                }
                None => Vec::new(),
            })
            .collect();
        let headers = commands.iter().map(|c| c.header()).collect();
        EncodedWrites { commands, prefixes, headers }
    }

    fn parts(&self) -> Vec<&[u8]> {
        self.commands
            .iter()
            .zip(&self.headers)
            .zip(&self.prefixes)
            .flat_map(|((c, h), p)| [&p[..], &h[..], c.events])
            .filter(|p| !p.is_empty())
            .collect()
    }

    fn bytes(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }
}

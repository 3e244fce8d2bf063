//! A single node: recovery from disk, then the engine, snapshotter, syncer
//! and listener threads. `Node::start` returns once the node serves.

use crate::engine::{Engine, EngineLog, KeyTable, fatal_storage_error};
use crate::gate::Gate;
use crate::indexer::{IdStores, Indexer};
use crate::message::{EngineMsg, OwnedEnvelope, Request};
use crate::net::{Listener, NetLimits, serve};
use crate::recovery::{Disk, recover};
use crate::replication::Replicator;
use crate::snapshotter::SnapshotTrigger;
use bursar_log::{FileLog, FileLogOptions, SnapshotStore};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// The binary protocol's address; `None` serves no binary protocol.
    pub listen: Option<SocketAddr>,
    /// Serve the binary protocol over TLS.
    pub binary_tls: Option<crate::net::Tls>,
    /// Roll to a new log segment after this many bytes.
    pub segment_bytes: u64,
    /// Take a snapshot after this many bytes of log.
    pub snapshot_every_bytes: u64,
    /// Requests queued for the engine before connections wait.
    pub queue_depth: usize,
    pub net: NetLimits,
    /// Worker threads for connection handling.
    pub io_threads: usize,
    /// On a first start with no keys: the admin key to create (from
    /// `BURSAR_ADMIN_KEY`); `None` generates one and reports it once.
    pub admin_key: Option<String>,
    /// Keep every log segment (`--log-retain`), for audit and for `verify`
    /// from position 1. Without it, segments below the oldest retained
    /// snapshot are removed after each snapshot (see docs/storage.md).
    pub log_retain: bool,
    /// Bytes of the block cache in front of the state's cold chunks
    /// (`--cache-mib`): how much history stays in RAM besides the working
    /// set.
    pub cache_bytes: u64,
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> NodeConfig {
        NodeConfig {
            data_dir,
            listen: Some(listen),
            binary_tls: None,
            segment_bytes: 256 << 20,
            snapshot_every_bytes: 256 << 20,
            queue_depth: 256,
            net: NetLimits::default(),
            io_threads: 2,
            admin_key: None,
            log_retain: false,
            cache_bytes: crate::limits::CACHE_BYTES_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Log(#[from] bursar_log::LogError),
    #[error("recovery failed: {0}")]
    Recovery(#[from] crate::recovery::RecoveryError),
    #[error("recovery failed: the stored id tables: {0}")]
    Index(#[source] bursar_store::StoreError),
    /// The replicator could not join the cluster.
    #[error("recovery failed: joining the cluster: {0}")]
    Join(#[source] crate::replication::ReplicatorError),
    #[error("recovery failed: the local log failed while catching up to position {end}")]
    CatchUp { end: u64 },
    #[error("recovery failed: creating an API key failed: {0}")]
    CreateKey(CreateKeyError),
    #[error("recovery failed: BURSAR_ADMIN_KEY must be {min} to {max} printable characters without spaces")]
    AdminKeyMalformed { min: usize, max: usize },
    #[error(
        "recovery failed: a cluster replica needs BURSAR_ADMIN_KEY on the first start (every replica the same), \
         so that replicas starting together create one admin key"
    )]
    AdminKeyRequired,
    #[error("recovery failed: creating the first admin key failed: {0}")]
    AdminKey(CreateKeyError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why `Node::create_key` failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("invalid name or ledgers")]
    Invalid,
    #[error("the engine stopped before replying")]
    EngineStopped,
    #[error("status {status} with {count} results")]
    Refused { status: u16, count: u32 },
}

/// What recovery found, for the start-up message.
#[derive(Clone, Debug)]
pub struct StartReport {
    /// Where the node serves from (in a cluster, after catching up).
    pub position: u64,
    /// Cluster mode: entries applied from the replicated log before
    /// serving (the counts below are from before them).
    pub caught_up_entries: u64,
    pub snapshot_position: Option<u64>,
    pub replayed_entries: u64,
    pub truncated_bytes: u64,
    pub accounts: usize,
    pub transfers: usize,
    pub recovery: Duration,
    /// The stored index tables could not be used (damaged, or ahead of the
    /// snapshot recovery started from) and are being rebuilt.
    pub indexes_rebuilt: bool,
    /// Set on a first start: the admin key created, and whether it was
    /// generated (then it is shown only this once).
    pub admin_key: Option<(String, bool)>,
}

/// What other front ends (the HTTP API) need to talk to the engine.
#[derive(Clone)]
pub struct NodeHandle {
    pub engine: mpsc::Sender<EngineMsg>,
    pub keys: KeyTable,
    pub runtime: tokio::runtime::Handle,
    pub stop: watch::Receiver<bool>,
    /// Raised after entries that changed orders (see `Engine::order_changes`).
    pub order_changes: Arc<tokio::sync::Notify>,
    /// The newest event sequence applied (see `Engine::events_tail`).
    pub events_tail: watch::Receiver<u64>,
}

impl NodeHandle {
    /// A line to the engine with the default waits (`handle::WAITS_DEFAULT`).
    pub fn engine_handle(&self) -> crate::handle::EngineHandle {
        crate::handle::EngineHandle::new(self.engine.clone(), crate::handle::WAITS_DEFAULT)
    }
}

pub struct Node {
    addr: Option<SocketAddr>,
    keys: KeyTable,
    engine_tx: mpsc::Sender<EngineMsg>,
    stop_tx: watch::Sender<bool>,
    order_changes: Arc<tokio::sync::Notify>,
    events_tail: watch::Receiver<u64>,
    /// SIGTERM and SIGINT, registered at start so a signal that arrives
    /// before `run_until_signal` still shuts down cleanly.
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
    runtime: tokio::runtime::Runtime,
    engine_thread: Option<std::thread::JoinHandle<()>>,
    report: StartReport,
}

struct FileEngineLog(FileLog);

impl EngineLog for FileEngineLog {
    fn append(&mut self, timestamp: u64, parts: &[&[u8]]) -> Result<u64, bursar_log::LogError> {
        self.0.append(timestamp, parts)
    }
    fn last_chain(&self) -> [u8; 32] {
        self.0.last_chain()
    }
    fn close(self: Box<Self>) -> Result<(), bursar_log::LogError> {
        self.0.close().map(|_| ())
    }
    fn remove_before(&mut self, position: u64) -> Result<usize, bursar_log::LogError> {
        self.0.remove_before(position).map(|r| r.segments)
    }
}

/// Starts the log's syncer: each fsync opens `local` up to what it made
/// durable; a failed one is fatal.
fn start_syncer(log: &mut FileLog, local: Arc<Gate>) {
    log.start(Box::new(move |r| match r {
        Ok(p) => local.durable(p),
        Err(e) => fatal_storage_error(&local, &format!("fsync failed: {e}")),
    }));
}

/// Files and folders Bursar creates are private (0600, 0700); ones that
/// already exist with looser modes are reported, not changed.
fn warn_loose_modes(dir: &std::path::Path) {
    let loose = bursar_log::loose_modes(dir);
    if let Some(first) = loose.first() {
        tracing::warn!(
            count = loose.len(),
            first = %first.display(),
            "data directory entries are accessible to group or others; use 0700 for folders and 0600 for files"
        );
    }
}

/// Binds the binary protocol's listener and serves it until `stop`.
fn listen(
    runtime: &tokio::runtime::Runtime,
    at: SocketAddr,
    shared: Listener,
    stop: watch::Receiver<bool>,
) -> Result<SocketAddr, NodeError> {
    let listener =
        runtime.block_on(tokio::net::TcpListener::bind(at)).map_err(|source| NodeError::Listen { addr: at, source })?;
    let addr = listener.local_addr()?;
    runtime.spawn(serve(listener, shared, stop));
    Ok(addr)
}

/// Recovers the state with history on disk: cold chunks read through
/// `cache`, and the stored index tables (rebuilt if recovery cannot use
/// them).
fn recover_with_disk(
    config: &NodeConfig,
    log: &FileLog,
    open: &bursar_log::OpenReport,
    store: &SnapshotStore,
    cache: &Arc<bursar_store::cache::BlockCache>,
) -> Result<(crate::recovery::Recovered, IdStores), NodeError> {
    let cold = Arc::new(bursar_log::ColdChunks::new(&config.data_dir, cache.clone()));
    let mut id_stores = IdStores::open(&config.data_dir, cache.clone()).map_err(NodeError::Index)?;
    let disk = Disk { cold: Some(cold), ids: Some(id_stores.installed()) };
    let recovered = recover(log, open, store, disk)?;
    if !recovered.ids_installed {
        tracing::warn!("the index tables are ahead of the state recovered; they are rebuilt");
        id_stores = id_stores.reset(cache.clone()).map_err(NodeError::Index)?;
    }
    Ok((recovered, id_stores))
}

impl Node {
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Node::start_with(config, None)
    }

    /// Starts a node; with a replicator, as a cluster replica: writes are
    /// proposed to the replicated log and only committed entries are
    /// applied. A replica serves once it has caught up with the log.
    pub fn start_with(config: NodeConfig, replicator: Option<Box<dyn Replicator>>) -> Result<Node, NodeError> {
        let started = std::time::Instant::now();
        bursar_log::create_private_dir_all(&config.data_dir)?;
        warn_loose_modes(&config.data_dir);
        let options = FileLogOptions { dir: config.data_dir.clone(), segment_bytes: config.segment_bytes };
        let (mut log, open) = FileLog::open(options)?;
        let store = SnapshotStore::open(&config.data_dir)?;
        let cache = Arc::new(bursar_store::cache::BlockCache::new(config.cache_bytes));
        let (recovered, id_stores) = recover_with_disk(&config, &log, &open, &store, &cache)?;
        let indexes_rebuilt = id_stores.rebuilt();
        let sm = recovered.state;
        let needs_admin = sm.keys().is_empty();
        let mut report = StartReport {
            position: sm.position(),
            snapshot_position: recovered.snapshot_position,
            replayed_entries: recovered.replayed_entries,
            truncated_bytes: open.truncated_bytes,
            accounts: sm.ledger().account_count(),
            transfers: sm.ledger().transfer_count(),
            recovery: started.elapsed(),
            indexes_rebuilt,
            caught_up_entries: 0,
            admin_key: None,
        };

        // `local`: what the local log holds durably (snapshots wait for it).
        // `gate`: what replies wait for; the same on a single node, while in
        // a cluster an entry counts once the replicated log committed it and
        // the engine applied it, without waiting for the local copy's fsync.
        let local = Arc::new(Gate::new(open.last_position));
        let gate = if replicator.is_some() { Arc::new(Gate::new(open.last_position)) } else { local.clone() };
        start_syncer(&mut log, local.clone());
        let keys: KeyTable = Arc::new(std::sync::RwLock::new(Arc::new(Default::default())));
        let position = sm.position();
        let (engine_tx, engine_rx) = mpsc::channel(config.queue_depth);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads.max(1))
            .thread_name("bursar-io")
            .enable_all()
            .build()?;
        let clustered = replicator.is_some();
        let mut link = match replicator {
            Some(mut replicator) => {
                Some(replicator.start(runtime.handle(), position, engine_tx.clone()).map_err(NodeError::Join)?)
            }
            None => None,
        };
        let log_end = link.as_ref().map(|l| l.log_end);
        let snapshots = SnapshotTrigger::start(
            store,
            local.clone(),
            Some(config.snapshot_every_bytes),
            recovered.snapshot_position.unwrap_or(0),
            link.as_mut().and_then(|l| l.snapshot_written.take()),
            config.log_retain,
        );
        let mut engine = Engine::new(sm, Box::new(FileEngineLog(log)), gate.clone(), snapshots, keys.clone())
            .with_block_cache(cache)
            .with_indexer(Indexer::start(id_stores)?);
        let order_changes = engine.order_changes();
        let events_tail = engine.events_tail();
        if let Some(link) = link {
            engine = engine.replicated(link);
        }
        let engine_thread =
            std::thread::Builder::new().name("bursar-engine".into()).spawn(move || engine.run(engine_rx))?;
        if let Some(end) = log_end {
            catch_up(&gate, position, end)?;
            report.position = gate.durable_position();
            report.caught_up_entries = report.position - position;
        }
        let needs_admin =
            if clustered { keys.read().unwrap_or_else(|e| e.into_inner()).is_empty() } else { needs_admin };
        // Before the listener: a client that finds the port open can
        // authenticate with the admin key at once.
        if needs_admin {
            report.admin_key = Some(bootstrap_admin_key(&engine_tx, config.admin_key.clone(), clustered)?);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Listener {
            engine: engine_tx.clone(),
            keys: keys.clone(),
            limits: config.net.clone(),
            tls: config.binary_tls.clone(),
        };
        let addr = config.listen.map(|at| listen(&runtime, at, shared, stop_rx.clone())).transpose()?;
        runtime.spawn(tick(engine_tx.clone(), stop_rx));
        let signals = runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            Some((signal(SignalKind::terminate()).ok()?, signal(SignalKind::interrupt()).ok()?))
        });
        Ok(Node {
            addr,
            keys,
            engine_tx,
            stop_tx,
            order_changes,
            events_tail,
            signals,
            runtime,
            engine_thread: Some(engine_thread),
            report,
        })
    }

    /// Handles for the HTTP API to run on this node's runtime.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle {
            engine: self.engine_tx.clone(),
            keys: self.keys.clone(),
            runtime: self.runtime.handle().clone(),
            stop: self.stop_tx.subscribe(),
            order_changes: self.order_changes.clone(),
            events_tail: self.events_tail.clone(),
        }
    }

    /// The binary protocol's address.
    ///
    /// # Panics
    /// If the node was configured without one (`listen: None`): a
    /// programming error of the caller, who chose that; see `binary_addr`.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr.expect("invariant: local_addr is called only on nodes configured with a binary listener")
    }

    /// The binary protocol's address, if it is served.
    pub fn binary_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Creates an API key through the log (like `POST /v1/keys`) and returns
    /// its secret: for embedded tools, such as `bursar bench`, and tests.
    pub fn create_key(
        &self,
        role: bursar_core::service::keys::Role,
        ledgers: &[u32],
        name: &str,
    ) -> Result<String, NodeError> {
        let token = crate::keys::generate_token();
        let failed = NodeError::CreateKey;
        let event = bursar_core::service::keys::KeyEvent::new(
            crate::keys::generate_key_id(),
            crate::keys::token_hash(&token),
            role,
            ledgers,
            name,
        )
        .ok_or(failed(CreateKeyError::Invalid))?;
        let envelope = OwnedEnvelope { route: "EMBEDDED create key".into(), ..Default::default() };
        let response =
            submit(&self.engine_tx, bursar_core::Operation::CreateKeys, bytemuck::bytes_of(&event).to_vec(), envelope)
                .map_err(|_| failed(CreateKeyError::EngineStopped))?;
        if response.status != 0 || response.count != 0 {
            return Err(failed(CreateKeyError::Refused { status: response.status, count: response.count }));
        }
        Ok(token)
    }

    pub fn report(&self) -> &StartReport {
        &self.report
    }

    /// Serves until SIGINT or SIGTERM, then shuts down cleanly.
    pub fn run_until_signal(self) {
        self.run_until_signal_or(std::future::pending::<String>())
    }

    /// Like `run_until_signal`, but also stops when `fatal` resolves (the
    /// workflow supervision tree gave up): the node shuts down cleanly, so
    /// everything acknowledged is durable, and the process exits with 70.
    /// A restart recovers from the log.
    pub fn run_until_signal_or(mut self, fatal: impl std::future::Future<Output = String>) {
        let mut failure = None;
        let mut signals = self.signals.take();
        self.runtime.block_on(async {
            let signalled = async {
                match signals.as_mut() {
                    Some((term, int)) => {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = int.recv() => {}
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = signalled => {}
                why = fatal => failure = Some(why),
            }
        });
        match failure {
            Some(why) => {
                tracing::error!(why, "a supervision tree escalated past its root; shutting down");
                self.shutdown();
                eprintln!("bursar: fatal: {why}");
                std::process::exit(70);
            }
            None => {
                tracing::info!("signal received; shutting down");
                self.shutdown();
            }
        }
    }

    /// Stops accepting, lets the engine finish queued work, snapshots, and
    /// waits until everything is durable.
    pub fn shutdown(mut self) {
        let _ = self.stop_tx.send(true);
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        if self.engine_tx.blocking_send(EngineMsg::Shutdown(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
        if let Some(t) = self.engine_thread.take() {
            let _ = t.join();
        }
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

/// Creates the first admin key through the log, like any other key.
/// Cluster mode: waits until the replica applied the log up to its end at
/// start (its reads then include everything committed before it joined).
fn catch_up(gate: &Gate, from: u64, end: u64) -> Result<(), NodeError> {
    if end > from {
        tracing::info!(from, to = end, "catching up with the replicated log");
    }
    if !gate.wait_durable(end) {
        return Err(NodeError::CatchUp { end });
    }
    Ok(())
}

/// Creates the first admin key through the log, like any other key. In a
/// cluster, replicas starting together may all propose it: its id is then
/// derived from the token, so the copies are one key (the later ones fail
/// with "exists", which is success here).
fn bootstrap_admin_key(
    engine: &mpsc::Sender<EngineMsg>,
    supplied: Option<String>,
    clustered: bool,
) -> Result<(String, bool), NodeError> {
    let (token, generated) = match supplied {
        Some(t) if crate::keys::token_is_plausible(&t) => (t, false),
        Some(_) => {
            return Err(NodeError::AdminKeyMalformed {
                min: crate::limits::SUPPLIED_TOKEN_MIN,
                max: crate::limits::TOKEN_MAX,
            });
        }
        None => (crate::keys::generate_token(), true),
    };
    if clustered && generated {
        return Err(NodeError::AdminKeyRequired);
    }
    let id = if clustered { crate::keys::key_id_from_token(&token) } else { crate::keys::generate_key_id() };
    let event = crate::keys::admin_key_event(id, &token);
    let envelope = OwnedEnvelope { route: "BOOTSTRAP admin key".into(), ..Default::default() };
    let failed = NodeError::AdminKey;
    let body = bytemuck::bytes_of(&event).to_vec();
    let response = submit(engine, bursar_core::Operation::CreateKeys, body, envelope)
        .map_err(|_| failed(CreateKeyError::EngineStopped))?;
    let exists_already = clustered && response.status == 0 && response.count == 1;
    if response.status != 0 || (response.count != 0 && !exists_already) {
        return Err(failed(CreateKeyError::Refused { status: response.status, count: response.count }));
    }
    Ok((token, generated))
}

/// Sends one enveloped write to the engine and waits for its reply (from a
/// thread outside the runtime).
fn submit(
    engine: &mpsc::Sender<EngineMsg>,
    operation: bursar_core::Operation,
    body: Vec<u8>,
    envelope: OwnedEnvelope,
) -> Result<crate::message::Response, EngineStopped> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let op = bursar_proto::RequestOp::Op(operation);
    let request = Request { op, request_id: 0, body, envelope: Some(envelope), reply: tx };
    engine.blocking_send(EngineMsg::Request(request)).map_err(|_| EngineStopped)?;
    rx.blocking_recv().map_err(|_| EngineStopped)
}

/// The engine thread is gone: its queue or the reply channel closed.
#[derive(Debug)]
struct EngineStopped;

/// Wakes the engine regularly so that due pending transfers expire even
/// when no client writes.
async fn tick(engine: mpsc::Sender<EngineMsg>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if engine.try_send(EngineMsg::Tick).is_err() && engine.is_closed() {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

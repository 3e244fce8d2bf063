//! Snapshots in JetStream's object store, so that a replica that lost its
//! disk can start from the newest one plus the log after it (see
//! `docs/cluster.md`). Each object is one snapshot bundle
//! (`SnapshotStore::export_bundle`) named `snapshot-<position, 20 digits>`.
//!
//! A bundle may be gigabytes, so it streams both ways: the store's blocking
//! I/O runs in `spawn_blocking` and talks to the NATS transfer through a
//! bounded pipe of a few blocks. Memory holds those blocks (and, on a
//! download, what the consumer's flow control lets the server send ahead),
//! never the snapshot; no temp copy is written either.
//!
//! Objects are authenticated: the metadata entry `bursar-mac` holds
//! `<key id>:<mac hex>`, a MAC (the cluster key's snapshot subkey) over the
//! bucket, the object name and the snapshot's manifest, which names every
//! chunk by hash, the hash chain and the state digest. A download is
//! imported, then its manifest checked; one without a valid MAC is removed
//! again and refused, so a replica never starts from a snapshot that no
//! replica made.
//!
//! Every NATS call has a time limit: each request (each chunk's publish
//! acknowledgement included) `call_timeout`, whole transfers (put, get,
//! delete) `call_timeout` plus their size at the slowest rate tolerated.

mod error;

use crate::cluster_key::{ClusterKeys, MacError, Purpose};
use SnapshotObjectsError as E;
use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind, ObjectStoreError};
use async_nats::jetstream::object_store::{self, GetErrorKind, InfoErrorKind, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::{StorageType, Stream};
use async_nats::jetstream::{self, ErrorCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use bursar_log::{BundleInfo, LogError, SnapshotStore};
use bursar_runtime::resilience::Backoff;
pub use error::{Call, CallError, ConfigError, PumpError, Refusal, SnapshotObjectsError, Task};
use futures_util::TryStreamExt;
use std::collections::HashSet;
use std::future::IntoFuture;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

pub const DEFAULT_BUCKET: &str = "BURSAR_SNAPSHOTS";
const OBJECT_PREFIX: &str = "snapshot-";
/// Blocks queued between the store thread and the NATS transfer: enough to
/// keep both busy, few enough to bound memory.
const PIPE_BLOCKS: usize = 4;
/// Object-store message size limits: not so small that per-message costs
/// dominate, and well below the 8 MiB `max_payload` of the test cluster.
const CHUNK_BYTES_MIN: usize = 1 << 10;
const CHUNK_BYTES_MAX: usize = 4 << 20;
/// Attempts of a download (see `download`).
const DOWNLOAD_ATTEMPTS: u32 = 6;
/// The object metadata entry holding the snapshot's MAC.
const MAC_METADATA: &str = "bursar-mac";

#[derive(Clone, Debug)]
pub struct SnapshotObjectsConfig {
    /// The object store bucket (a stream named `OBJ_<bucket>`).
    pub bucket: String,
    /// Copies of each object: 3 in a 3-node cluster, which then survives the
    /// loss of one node. Used when the bucket is created.
    pub replicas: usize,
    /// Bytes per object-store message, and per pipe block. Must stay below
    /// the servers' `max_payload` (1 MiB unless configured).
    pub chunk_bytes: usize,
    /// The limit of each request: bucket lookup or creation, listing,
    /// opening an object, purges, and each chunk's publish acknowledgement
    /// (it replaces the context's own request timeout).
    pub call_timeout: Duration,
    /// The slowest transfer tolerated: moving n bytes may take
    /// `call_timeout + n / min_bytes_per_second`.
    pub min_bytes_per_second: u64,
    /// `prune` purges chunks that no object names (an upload that failed
    /// half way leaves them) once their newest message is this old. It must
    /// exceed the longest pause of an upload still in progress.
    pub orphan_min_age: Duration,
}

impl Default for SnapshotObjectsConfig {
    fn default() -> SnapshotObjectsConfig {
        SnapshotObjectsConfig {
            bucket: DEFAULT_BUCKET.to_string(),
            replicas: 3,
            chunk_bytes: 512 << 10,
            call_timeout: Duration::from_secs(10),
            min_bytes_per_second: 1 << 20,
            orphan_min_age: Duration::from_secs(3600),
        }
    }
}

impl SnapshotObjectsConfig {
    /// The time limit for moving `bytes` to or from the object store.
    pub fn transfer_timeout(&self, bytes: u64) -> Duration {
        self.call_timeout + Duration::from_secs_f64(bytes as f64 / self.min_bytes_per_second.max(1) as f64)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&self.chunk_bytes) {
            let (chunk_bytes, min, max) = (self.chunk_bytes, CHUNK_BYTES_MIN, CHUNK_BYTES_MAX);
            return Err(ConfigError::ChunkBytes { chunk_bytes, min, max });
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ConfigError::Replicas { replicas: self.replicas });
        }
        if self.min_bytes_per_second == 0 {
            return Err(ConfigError::NoTransferRate);
        }
        Ok(())
    }
}

/// The object holding the snapshot at `position`.
pub fn object_name(position: u64) -> String {
    format!("{OBJECT_PREFIX}{position:020}")
}

/// The position of a snapshot object's name; `None` for other names.
pub fn parse_object_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(OBJECT_PREFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Uploads the local snapshot at `position` as one object, streaming, and
/// returns the bundle's bytes. `store_dir` is the directory given to
/// `SnapshotStore::open` (the data dir). The upload is complete (stored by a
/// quorum of replicas) only when this returns `Ok`; a failed one leaves the
/// objects as they were, plus chunks that `prune` sweeps later.
pub async fn upload(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
    keys: &ClusterKeys,
    store_dir: &Path,
    position: u64,
) -> Result<u64, SnapshotObjectsError> {
    config.check()?;
    let started = Instant::now();
    let dir = store_dir.to_path_buf();
    let (store, size, manifest) = tokio::task::spawn_blocking(move || {
        let store = SnapshotStore::open_read_only(&dir)?;
        let size = store.bundle_size(position)?;
        let manifest = store.manifest_bytes(position)?;
        Ok::<_, bursar_log::LogError>((store, size, manifest))
    })
    .await
    .map_err(|source| E::Unfinished { task: Task::ReadSnapshot { position }, source })?
    .map_err(|source| E::ReadSnapshot { position, source })?;
    let bucket = ensure_bucket(&scoped(js, config), config).await?;

    let (tx, rx) = mpsc::channel(PIPE_BLOCKS);
    let block_bytes = config.chunk_bytes;
    let export = tokio::task::spawn_blocking(move || export_into(&store, position, PipeWriter::new(tx, block_bytes)));
    let name = object_name(position);
    let meta = ObjectMetadata {
        name: name.clone(),
        description: Some(format!("Bursar snapshot bundle at log position {position}")),
        chunk_size: Some(config.chunk_bytes),
        metadata: [(MAC_METADATA.to_string(), seal_manifest(keys, &config.bucket, &name, &manifest))].into(),
        ..Default::default()
    };
    let mut reader = PipeReader { rx, state: ReadState::default() };
    let call = Call::Upload { name: name.clone(), size };
    let put = within(config.transfer_timeout(size), call, bucket.put(meta, &mut reader)).await;
    // A still-running export sees the pipe closed and stops.
    drop(reader);
    let exported =
        export.await.map_err(|source| E::Unfinished { task: Task::Export { name: name.clone() }, source })?;
    let bundle = match (put, exported) {
        (_, Err(Side::Failed(source))) => return Err(E::Export { position, source }),
        (Err(e), _) => return Err(e),
        (Ok(_), Err(Side::Abandoned)) => return Err(E::UploadCutShort { name }),
        (Ok(info), Ok(bundle)) if info.size as u64 != bundle.bytes => {
            return Err(E::UploadIncomplete { name, stored: info.size as u64, bundle: bundle.bytes });
        }
        (Ok(_), Ok(bundle)) => bundle,
    };
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(position, bytes = bundle.bytes, ms, bucket = %config.bucket, "snapshot uploaded");
    Ok(bundle.bytes)
}

/// Runs in the blocking pool: the bundle into the pipe, then its end mark.
fn export_into(store: &SnapshotStore, position: u64, mut pipe: PipeWriter) -> Result<BundleInfo, Side> {
    match store.export_bundle(position, &mut pipe) {
        Ok(info) => pipe.finish().map(|()| info).map_err(|_| Side::Abandoned),
        Err(_) if pipe.abandoned => Err(Side::Abandoned),
        Err(e) => Err(Side::Failed(e)),
    }
}

/// Positions of the snapshot objects, ascending (none if there is no
/// bucket). Read from the stream's subjects, which the stream leader
/// reports: a listing through a consumer may be served by a lagging replica,
/// or placed on a dead one.
pub async fn positions(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
) -> Result<Vec<u64>, SnapshotObjectsError> {
    match open_stream(&scoped(js, config), config).await? {
        Some(stream) => listed(&stream, config).await,
        None => Ok(Vec::new()),
    }
}

/// The newest snapshot object's position.
pub async fn newest(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
) -> Result<Option<u64>, SnapshotObjectsError> {
    Ok(positions(js, config).await?.last().copied())
}

/// Deletes all but the newest `keep` snapshot objects and returns the
/// oldest kept position: the log stream may be purged before it. Also purges
/// chunks no object names once they are `orphan_min_age` old (a failure
/// there is logged, not returned: the deletes are done).
pub async fn prune(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
    keep: usize,
) -> Result<Option<u64>, SnapshotObjectsError> {
    if keep == 0 {
        return Err(E::KeepNone);
    }
    let js = scoped(js, config);
    let Some(stream) = open_stream(&js, config).await? else {
        return Ok(None);
    };
    let positions = listed(&stream, config).await?;
    let (old, kept) = positions.split_at(positions.len().saturating_sub(keep));
    let vanished = || E::BucketVanished { bucket: config.bucket.clone() };
    let bucket = open_bucket(&js, config).await?.ok_or_else(vanished)?;
    for position in old {
        delete(&bucket, &stream, config, *position).await?;
        tracing::info!(position, bucket = %config.bucket, "snapshot object deleted");
    }
    if let Err(e) = sweep_orphans(&bucket, &stream, config, kept).await {
        tracing::warn!(bucket = %config.bucket, "purging chunks of failed uploads failed: {e}");
    }
    Ok(kept.first().copied())
}

/// Downloads the snapshot object at `position` into the store in
/// `store_dir`, streaming it through `SnapshotStore::import_bundle` (which
/// checks every chunk and the bundle's trailer, and makes the snapshot
/// visible only once all of it is durable). Transfer failures are retried a
/// few times: a download reads through a consumer, which JetStream 2.9 may
/// place on a replica that died seconds ago. A damaged object is not.
pub async fn download(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
    keys: &ClusterKeys,
    position: u64,
    store_dir: &Path,
) -> Result<(), SnapshotObjectsError> {
    config.check()?;
    let js = scoped(js, config);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        match download_once(&js, config, keys, position, store_dir).await {
            Ok(bytes) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(position, bytes, ms, attempt, bucket = %config.bucket, "snapshot downloaded");
                return Ok(());
            }
            Err(Failure::Transfer(e)) if attempt < DOWNLOAD_ATTEMPTS => {
                tracing::warn!(position, attempt, "downloading a snapshot failed, retrying: {e}");
                tokio::time::sleep(backoff.next_wait()).await;
                attempt += 1;
            }
            Err(Failure::Transfer(e) | Failure::Final(e)) => return Err(e),
        }
    }
}

/// Why a download failed: worth another attempt, or not.
enum Failure {
    Transfer(SnapshotObjectsError),
    Final(SnapshotObjectsError),
}

/// One attempt at `download`; returns the bytes moved.
async fn download_once(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
    keys: &ClusterKeys,
    position: u64,
    store_dir: &Path,
) -> Result<u64, Failure> {
    use Failure::{Final, Transfer};
    let name = object_name(position);
    let bucket = open_bucket(js, config).await.map_err(Transfer)?;
    let bucket = bucket.ok_or_else(|| Final(E::NoBucket { bucket: config.bucket.clone() }))?;
    let call = Call::OpenObject { name: name.clone() };
    let mut object = match limited(config.call_timeout, &call, bucket.get(&name)).await.map_err(Transfer)? {
        Ok(object) => object,
        Err(e) if e.kind() == GetErrorKind::NotFound => return Err(Final(E::failed(call, e))),
        Err(e) => return Err(Transfer(E::failed(call, e))),
    };
    let size = object.info().size as u64;
    let mac = object.info().metadata.get(MAC_METADATA).cloned().unwrap_or_default();

    let (tx, rx) = mpsc::channel(PIPE_BLOCKS);
    let dir = store_dir.to_path_buf();
    let import = tokio::task::spawn_blocking(move || import_from(&dir, BlockingPipeReader::new(rx)));
    let call = Call::Download { name: name.clone(), size };
    // `tx` lives in the pump: it is dropped when the pump ends or times out,
    // so the import never waits for a block that will not come.
    let pumped = within(config.transfer_timeout(size), call, pump(&mut object, tx, config.chunk_bytes)).await;
    let unfinished = |source| Final(E::Unfinished { task: Task::Import { name: name.clone() }, source });
    let imported = import.await.map_err(unfinished)?;
    match (pumped, imported) {
        (_, Err(Side::Failed(source))) => Err(Final(E::Import { name, source })),
        (Err(e), _) => Err(Transfer(e)),
        (Ok(_), Err(Side::Abandoned)) => Err(Transfer(E::DownloadCutShort { name })),
        (Ok(read), Ok(_)) if read != size => Err(Transfer(E::DownloadIncomplete { name, read, size })),
        (Ok(_), Ok(found)) if found != position => Err(Final(E::WrongPosition { name, found, expected: position })),
        (Ok(bytes), Ok(_)) => {
            let (dir, keys, bucket) = (store_dir.to_path_buf(), keys.clone(), config.bucket.clone());
            let task = Task::CheckMac { name: name.clone() };
            tokio::task::spawn_blocking(move || authenticate_import(&dir, &keys, &bucket, &name, position, &mac))
                .await
                .map_err(|source| Final(E::Unfinished { task, source }))?
                .map_err(Final)?;
            Ok(bytes)
        }
    }
}

/// The `bursar-mac` metadata of a snapshot object.
pub fn seal_manifest(keys: &ClusterKeys, bucket: &str, name: &str, manifest: &[u8]) -> String {
    let id = keys.active();
    let mac = keys
        .mac(id, Purpose::SnapshotObject, &[bucket.as_bytes(), name.as_bytes(), manifest])
        .expect("invariant: the active key is held");
    format!("{id}:{}", mac.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Checks an imported snapshot's manifest against the object's MAC; on
/// failure forgets the snapshot again, so nothing starts from it.
fn authenticate_import(
    dir: &Path,
    keys: &ClusterKeys,
    bucket: &str,
    name: &str,
    position: u64,
    mac: &str,
) -> Result<(), SnapshotObjectsError> {
    let unreadable = |source: LogError| E::ReadImported { name: name.to_string(), source };
    let mut store = SnapshotStore::open(dir).map_err(unreadable)?;
    let manifest = store.manifest_bytes(position).map_err(unreadable)?;
    let reason = match parse_mac(mac) {
        None => Refusal::NoMac,
        Some((key_id, mac)) => {
            match keys.verify(key_id, Purpose::SnapshotObject, &[bucket.as_bytes(), name.as_bytes(), &manifest], &mac) {
                Ok(()) => return Ok(()),
                Err(MacError::UnknownKey) => Refusal::UnknownKey { key_id },
                Err(MacError::Mismatch) => Refusal::Mismatch,
            }
        }
    };
    store.remove(position).map_err(|source| E::RemoveRefused { name: name.to_string(), reason, source })?;
    Err(E::Refused { name: name.to_string(), reason })
}

fn parse_mac(text: &str) -> Option<(u32, [u8; 32])> {
    let (id, hex) = text.split_once(':')?;
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut mac = [0u8; 32];
    for (i, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some((id.parse().ok()?, mac))
}

/// Runs in the blocking pool: the pipe into the local store.
fn import_from(dir: &Path, mut pipe: BlockingPipeReader) -> Result<u64, Side> {
    let mut store = SnapshotStore::open(dir).map_err(Side::Failed)?;
    match store.import_bundle(&mut pipe) {
        Ok(position) => Ok(position),
        Err(_) if pipe.abandoned => Err(Side::Abandoned),
        Err(e) => Err(Side::Failed(e)),
    }
}

/// Copies the object into the pipe in blocks, then marks its end; returns
/// the bytes read.
async fn pump(
    object: &mut object_store::Object,
    tx: mpsc::Sender<Piece>,
    block_bytes: usize,
) -> Result<u64, PumpError> {
    let mut total = 0u64;
    loop {
        let mut block = Vec::with_capacity(block_bytes);
        let mut end = false;
        while block.len() < block_bytes && !end {
            end = object.read_buf(&mut block).await.map_err(PumpError::Read)? == 0;
        }
        total += block.len() as u64;
        let closed = |_| PumpError::ImportStopped;
        if !block.is_empty() {
            tx.send(Piece::Data(block)).await.map_err(closed)?;
        }
        if end {
            tx.send(Piece::End).await.map_err(closed)?;
            return Ok(total);
        }
    }
}

/// How the blocking side of a transfer ended early.
enum Side {
    /// The other side stopped first; its error is the one to report.
    Abandoned,
    Failed(LogError),
}

/// `js` with `call_timeout` as its request timeout: it also bounds the wait
/// for each chunk's acknowledgement inside an object store `put`.
fn scoped(js: &jetstream::Context, config: &SnapshotObjectsConfig) -> jetstream::Context {
    let mut js = js.clone();
    js.set_timeout(config.call_timeout);
    js
}

/// Runs a NATS call with a time limit; its errors name the call.
async fn within<T, F: Into<CallError>>(
    limit: Duration,
    call: Call,
    future: impl IntoFuture<Output = Result<T, F>>,
) -> Result<T, SnapshotObjectsError> {
    limited(limit, &call, future).await?.map_err(|e| E::failed(call, e))
}

/// Runs `future` with a time limit, leaving its own errors to the caller.
async fn limited<F: IntoFuture>(limit: Duration, call: &Call, future: F) -> Result<F::Output, SnapshotObjectsError> {
    tokio::time::timeout(limit, future).await.map_err(|_| E::TimedOut { call: call.clone(), after: limit })
}

fn stream_missing(e: &GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// The stream behind the bucket, or `None` if there is no bucket.
async fn open_stream(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
) -> Result<Option<Stream>, SnapshotObjectsError> {
    let call = Call::OpenStream { bucket: config.bucket.clone() };
    match limited(config.call_timeout, &call, js.get_stream(format!("OBJ_{}", config.bucket))).await? {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if stream_missing(&e) => Ok(None),
        Err(e) => Err(E::failed(call, e)),
    }
}

/// The bucket, or `None` if it does not exist.
async fn open_bucket(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
) -> Result<Option<ObjectStore>, SnapshotObjectsError> {
    let call = Call::OpenBucket { bucket: config.bucket.clone() };
    match limited(config.call_timeout, &call, js.get_object_store(&config.bucket)).await? {
        Ok(bucket) => Ok(Some(bucket)),
        Err(e) if bucket_missing(&e) => Ok(None),
        Err(e) => Err(E::failed(call, e)),
    }
}

fn bucket_missing(e: &ObjectStoreError) -> bool {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<GetStreamError>()).is_some_and(stream_missing)
}

/// The bucket, created (file storage, `replicas` copies) if missing.
async fn ensure_bucket(
    js: &jetstream::Context,
    config: &SnapshotObjectsConfig,
) -> Result<ObjectStore, SnapshotObjectsError> {
    if let Some(bucket) = open_bucket(js, config).await? {
        return Ok(bucket);
    }
    let spec = object_store::Config {
        bucket: config.bucket.clone(),
        description: Some("Bursar snapshot bundles by log position".into()),
        storage: StorageType::File,
        num_replicas: config.replicas,
        ..Default::default()
    };
    let call = Call::CreateBucket { bucket: config.bucket.clone(), replicas: config.replicas };
    within(config.call_timeout, call, js.create_object_store(spec)).await
}

/// The stream's subjects matching `filter`, with their message counts.
async fn subjects(
    stream: &Stream,
    config: &SnapshotObjectsConfig,
    filter: &str,
) -> Result<Vec<(String, usize)>, SnapshotObjectsError> {
    let call = async { stream.info_with_subjects(filter).await?.try_collect::<Vec<_>>().await };
    within(config.call_timeout, Call::ListSubjects { filter: filter.to_string() }, call).await
}

/// The positions of the objects with metadata in the bucket, ascending.
/// Other objects are left alone (and logged).
async fn listed(stream: &Stream, config: &SnapshotObjectsConfig) -> Result<Vec<u64>, SnapshotObjectsError> {
    let prefix = format!("$O.{}.M.", config.bucket);
    let mut out = Vec::new();
    for (subject, _) in subjects(stream, config, &format!("{prefix}>")).await? {
        let name = subject.strip_prefix(&prefix).and_then(decode_name);
        match name.as_deref().and_then(parse_object_name) {
            Some(position) => out.push(position),
            None => tracing::warn!(bucket = %config.bucket, subject, "ignoring an object that is not a snapshot"),
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// An object's name from its metadata subject's last token.
fn decode_name(token: &str) -> Option<String> {
    String::from_utf8(URL_SAFE.decode(token).ok()?).ok()
}

fn meta_subject(config: &SnapshotObjectsConfig, name: &str) -> String {
    format!("$O.{}.M.{}", config.bucket, URL_SAFE.encode(name))
}

/// Deletes an object and then the tombstone the delete leaves on its
/// metadata subject: with one object per snapshot, tombstones would grow the
/// bucket (and every listing) forever. Also finishes a delete that stopped
/// after the tombstone.
async fn delete(
    bucket: &ObjectStore,
    stream: &Stream,
    config: &SnapshotObjectsConfig,
    position: u64,
) -> Result<(), SnapshotObjectsError> {
    let name = object_name(position);
    let call = Call::ReadInfo { name: name.clone() };
    let info = match limited(config.call_timeout, &call, bucket.info(&name)).await? {
        Ok(info) => Some(info),
        Err(e) if e.kind() == InfoErrorKind::NotFound => None,
        Err(e) => return Err(E::failed(call, e)),
    };
    if let Some(info) = info.filter(|info| !info.deleted) {
        let call = Call::Delete { name: name.clone() };
        within(config.transfer_timeout(info.size as u64), call, bucket.delete(&name)).await?;
    }
    let purge = stream.purge().filter(meta_subject(config, &name));
    within(config.call_timeout, Call::PurgeTombstone { name }, purge).await?;
    Ok(())
}

/// Purges chunk subjects that no kept object names and whose newest message
/// is at least `orphan_min_age` old: chunks of uploads that failed before
/// their metadata was written. Returns how many.
async fn sweep_orphans(
    bucket: &ObjectStore,
    stream: &Stream,
    config: &SnapshotObjectsConfig,
    kept: &[u64],
) -> Result<usize, SnapshotObjectsError> {
    let mut live = HashSet::new();
    for position in kept {
        let name = object_name(*position);
        let call = Call::ReadInfo { name: name.clone() };
        live.insert(within(config.call_timeout, call, bucket.info(&name)).await?.nuid);
    }
    let prefix = format!("$O.{}.C.", config.bucket);
    let mut purged = 0;
    for (subject, _) in subjects(stream, config, &format!("{prefix}>")).await? {
        let nuid = subject.strip_prefix(&prefix).unwrap_or(&subject);
        if live.contains(nuid) || !orphan_is_old(stream, config, &subject).await? {
            continue;
        }
        let call = Call::PurgeChunks { subject: subject.clone() };
        within(config.call_timeout, call, stream.purge().filter(&subject)).await?;
        tracing::warn!(subject, "purged chunks no snapshot object names (left by a failed upload)");
        purged += 1;
    }
    Ok(purged)
}

async fn orphan_is_old(
    stream: &Stream,
    config: &SnapshotObjectsConfig,
    subject: &str,
) -> Result<bool, SnapshotObjectsError> {
    let call = Call::ReadNewest { subject: subject.to_string() };
    let last = within(config.call_timeout, call, stream.get_last_raw_message_by_subject(subject)).await?;
    let old_at = async_nats::datetime::add_std_duration(last.time, config.orphan_min_age);
    Ok(old_at.is_ok_and(|at| at <= async_nats::datetime::now()))
}

/// What travels through the pipe: a block of bundle bytes, or the writer's
/// word that the bundle is complete. A pipe that closes without `End` was
/// abandoned: its reader fails rather than see a clean end of a truncated
/// bundle (which the object store would otherwise store as complete).
enum Piece {
    Data(Vec<u8>),
    End,
}

/// The reading end's current block; shared by the async and blocking readers.
#[derive(Default)]
struct ReadState {
    block: Vec<u8>,
    at: usize,
    ended: bool,
}

impl ReadState {
    fn wants_piece(&self) -> bool {
        self.at == self.block.len() && !self.ended
    }

    fn accept(&mut self, piece: Option<Piece>) -> io::Result<()> {
        match piece {
            Some(Piece::Data(block)) => (self.block, self.at) = (block, 0),
            Some(Piece::End) => self.ended = true,
            None => return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the bundle stopped before its end")),
        }
        Ok(())
    }

    /// Up to `max` bytes of the current block; none once the bundle ended.
    fn take(&mut self, max: usize) -> &[u8] {
        let start = self.at;
        self.at += max.min(self.block.len() - start);
        &self.block[start..self.at]
    }
}

/// The upload's end of the pipe: what `ObjectStore::put` reads.
struct PipeReader {
    rx: mpsc::Receiver<Piece>,
    state: ReadState,
}

impl AsyncRead for PipeReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.state.wants_piece() {
            let piece = ready!(this.rx.poll_recv(cx));
            this.state.accept(piece)?;
        }
        buf.put_slice(this.state.take(buf.remaining()));
        Poll::Ready(Ok(()))
    }
}

/// The download's end of the pipe: what `import_bundle` reads, blocking.
struct BlockingPipeReader {
    rx: mpsc::Receiver<Piece>,
    state: ReadState,
    abandoned: bool,
}

impl BlockingPipeReader {
    fn new(rx: mpsc::Receiver<Piece>) -> BlockingPipeReader {
        BlockingPipeReader { rx, state: ReadState::default(), abandoned: false }
    }
}

impl io::Read for BlockingPipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.state.wants_piece() {
            let piece = self.rx.blocking_recv();
            self.abandoned = piece.is_none();
            self.state.accept(piece)?;
        }
        let piece = self.state.take(buf.len());
        buf[..piece.len()].copy_from_slice(piece);
        Ok(piece.len())
    }
}

/// The export's end of the pipe: collects writes into blocks and sends
/// them, blocking while the pipe is full.
struct PipeWriter {
    tx: mpsc::Sender<Piece>,
    block: Vec<u8>,
    block_bytes: usize,
    abandoned: bool,
}

impl PipeWriter {
    fn new(tx: mpsc::Sender<Piece>, block_bytes: usize) -> PipeWriter {
        PipeWriter { tx, block: Vec::new(), block_bytes, abandoned: false }
    }

    fn send(&mut self, piece: Piece) -> io::Result<()> {
        self.tx.blocking_send(piece).map_err(|_| {
            self.abandoned = true;
            io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped reading the bundle")
        })
    }

    /// Sends what is buffered and then the end mark.
    fn finish(mut self) -> io::Result<()> {
        io::Write::flush(&mut self)?;
        self.send(Piece::End)
    }
}

impl io::Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.block.capacity() == 0 {
            self.block.reserve_exact(self.block_bytes);
        }
        let n = buf.len().min(self.block_bytes - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == self.block_bytes {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let block = std::mem::take(&mut self.block);
        self.send(Piece::Data(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn object_names_round_trip_and_others_are_not_snapshots() {
        assert_eq!(object_name(42), "snapshot-00000000000000000042");
        assert_eq!(parse_object_name(&object_name(42)), Some(42));
        assert_eq!(parse_object_name(&object_name(u64::MAX)), Some(u64::MAX));
        for other in ["snapshot-42", "snapshot-0000000000000000004x", "other-00000000000000000042", ""] {
            assert_eq!(parse_object_name(other), None, "{other}");
        }
    }

    #[test]
    fn transfer_timeouts_grow_with_size() {
        let config = SnapshotObjectsConfig::default();
        assert_eq!(config.transfer_timeout(0), Duration::from_secs(10));
        assert_eq!(config.transfer_timeout(2 << 30), Duration::from_secs(10 + 2048));
        assert!(config.check().is_ok());
        let err = SnapshotObjectsConfig { chunk_bytes: 8 << 20, ..config.clone() }.check().unwrap_err();
        assert!(matches!(err, ConfigError::ChunkBytes { chunk_bytes: 0x80_0000, .. }), "{err:?}");
        assert_eq!(err.to_string(), "chunk_bytes 8388608 is not in 1024..=4194304");
        let err = SnapshotObjectsConfig { replicas: 0, ..config }.check().unwrap_err();
        assert!(matches!(err, ConfigError::Replicas { replicas: 0 }), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pipe_carries_everything_and_an_abandoned_one_fails() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (tx, rx) = mpsc::channel(PIPE_BLOCKS);
        let sent = data.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut pipe = PipeWriter::new(tx, 4096);
            pipe.write_all(&sent)?;
            pipe.finish()
        });
        let mut got = Vec::new();
        PipeReader { rx, state: ReadState::default() }.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(got, data);

        // A writer that stops without `finish` is an error, not an early end.
        let (tx, rx) = mpsc::channel(PIPE_BLOCKS);
        let writer = tokio::task::spawn_blocking(move || PipeWriter::new(tx, 4096).write_all(&[1; 10_000]));
        let err = PipeReader { rx, state: ReadState::default() }.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        writer.await.unwrap().unwrap();

        // The same for the blocking reader, fed by an async sender.
        let (tx, rx) = mpsc::channel(PIPE_BLOCKS);
        let reader = tokio::task::spawn_blocking(move || {
            let mut pipe = BlockingPipeReader::new(rx);
            let result = pipe.read_to_end(&mut Vec::new());
            (result.map_err(|e| e.kind()), pipe.abandoned)
        });
        tx.send(Piece::Data(vec![1; 10])).await.unwrap();
        drop(tx);
        assert_eq!(reader.await.unwrap(), (Err(io::ErrorKind::BrokenPipe), true));
    }
}

//! Uploads and downloads stream: moving a 384 MiB snapshot through an R3
//! bucket must not raise this process's peak memory by more than a small
//! fraction of it. Its own test binary, so no other test shares the process
//! whose peak is measured (Linux `/proc/self`). Needs `nats-server` (fails,
//! never skips, when missing).

use async_nats::jetstream;
use bursar_cluster::snapshot_objects::{SnapshotObjectsConfig, download, upload};
use bursar_core::state::{ChunkBytes, Snapshot, SnapshotSection};
use bursar_log::SnapshotStore;
use bursar_testkit::nats_cluster::NatsCluster;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cluster key snapshot objects are sealed with.
fn keys() -> &'static bursar_cluster::ClusterKeys {
    static KEYS: std::sync::OnceLock<bursar_cluster::ClusterKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        bursar_cluster::ClusterKeys::parse("1:c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00")
            .unwrap()
    })
}

/// 48 distinct chunks of 8 MiB (the largest arena chunk).
const CHUNKS: u64 = 48;
const CHUNK_BYTES: usize = 8 << 20;
/// The most an upload may add to the peak: pipe blocks and the object
/// store's chunk buffer (measured: 5 MiB at any size).
const UPLOAD_GROWTH_MAX: u64 = 16 << 20;
/// The most a download may add: the same, plus what the consumer's flow
/// control lets the server send ahead (32 MiB in nats-server 2.9) and the
/// client's buffers around it (measured: 58 to 87 MiB for 128 to 768 MiB).
const DOWNLOAD_GROWTH_MAX: u64 = 128 << 20;

/// A snapshot of opaque, incompressible chunks.
struct Synthetic {
    position: u64,
    chunks: Vec<Arc<dyn ChunkBytes>>,
}

impl Snapshot for Synthetic {
    fn position(&self) -> u64 {
        self.position
    }

    fn header(&self) -> Vec<u8> {
        b"synthetic".to_vec()
    }

    fn sections(&self) -> Vec<SnapshotSection> {
        vec![SnapshotSection { name: "blob", chunks: self.chunks.clone() }]
    }
}

/// xorshift bytes: distinct per seed, so no two chunks are deduplicated.
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(CHUNK_BYTES);
    while out.len() < CHUNK_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn write_synthetic(dir: &Path, position: u64) {
    let chunks = (0..CHUNKS).map(|i| Arc::new(noise(i + 1)) as Arc<dyn ChunkBytes>).collect();
    SnapshotStore::open(dir).unwrap().write(&Synthetic { position, chunks }, [9; 32]).unwrap();
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status (Linux only)");
    let line =
        status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad line {line:?}"))
}

/// Resets the peak (VmHWM) to the current resident size, and returns it.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS through /proc/self/clear_refs");
    status_kib("VmRSS:") << 10
}

fn peak() -> u64 {
    status_kib("VmHWM:") << 10
}

async fn connect(urls: &str) -> jetstream::Context {
    bursar_testkit::jetstream::connect(urls, Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_moves_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = NatsCluster::start(&dir.path().join("nats"), 3).unwrap_or_else(|e| panic!("{e}"));
    let js = connect(&cluster.urls()).await;
    // Generous per-request limits: three servers share this machine's cores
    // while they store hundreds of MiB.
    let config = SnapshotObjectsConfig { replicas: 3, call_timeout: Duration::from_secs(30), ..Default::default() };
    let local = tempfile::tempdir().unwrap();
    write_synthetic(local.path(), 7);
    let size = SnapshotStore::open_read_only(local.path()).unwrap().bundle_size(7).unwrap();
    assert!(size > CHUNKS * CHUNK_BYTES as u64);

    // The bucket first, retried while the new cluster elects its leaders.
    let bucket = jetstream::object_store::Config {
        bucket: config.bucket.clone(),
        num_replicas: 3,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = js.create_object_store(bucket.clone()).await {
        assert!(Instant::now() < deadline, "the cluster is not ready after 60 s: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let base = reset_peak();
    let started = Instant::now();
    assert_eq!(upload(&js, &config, keys(), local.path(), 7).await.unwrap(), size);
    let growth = peak().saturating_sub(base);
    eprintln!("upload of {size} bytes: {:?}, peak memory +{} KiB", started.elapsed(), growth >> 10);
    assert!(growth < UPLOAD_GROWTH_MAX, "the upload raised the peak by {growth} bytes for a {size}-byte bundle");

    let fresh = tempfile::tempdir().unwrap();
    let base = reset_peak();
    let started = Instant::now();
    download(&js, &config, keys(), 7, fresh.path()).await.unwrap();
    let growth = peak().saturating_sub(base);
    eprintln!("download of {size} bytes: {:?}, peak memory +{} KiB", started.elapsed(), growth >> 10);
    assert!(growth < DOWNLOAD_GROWTH_MAX, "the download raised the peak by {growth} bytes for a {size}-byte bundle");

    let (original, copy) = (SnapshotStore::open(local.path()).unwrap(), SnapshotStore::open(fresh.path()).unwrap());
    let (a, b) = (original.load(7).unwrap(), copy.load_latest().unwrap().expect("the downloaded snapshot"));
    assert_eq!((a.position, a.chain, a.digest), (b.position, b.chain, b.digest));
}

//! The snapshot store: content-addressed chunk files plus one manifest per
//! snapshot, under `<data dir>/snapshots/`.
//!
//! ```text
//! chunks/<blake3 hex of payload>.chunk   the payload in checksummed 64 KiB blocks, see `chunk_file`
//! snapshot-<position, 20 digits>.manifest   see `manifest`
//! ```
//!
//! A chunk is one arena chunk of the state machine. Arena chunks that did not
//! change between two snapshots are the same `Arc`, and chunks with the same
//! bytes have the same name, so a new snapshot writes only what changed:
//! 10 million transfers are about 150 chunks of 8 MiB, and a snapshot after
//! a few thousand more transfers writes a few of them.
//!
//! Every write is atomic (temp file, fsync, rename, fsync the directory), and
//! the manifest is written only after all its chunks are durable, so a crash
//! leaves either the old set of snapshots or the new one. Loading checks the
//! manifest's trailer and every chunk's hash; a damaged snapshot is skipped
//! in favour of an older one, which is always safe because the log holds
//! everything after it.
//!
//! A snapshot also travels as one stream, a bundle (`export_bundle`,
//! `import_bundle`; see `bundle`), for copying it to another machine.
//!
//! A chunk file is randomly readable: `cold::ColdChunks` reads a range of
//! a chunk that left RAM, one checked block at a time, through the block
//! cache. Chunk files of the first format (header + raw payload) are still
//! read, and a writable open rewrites them in blocks.

mod bundle;
mod chunk_file;
mod cold;
mod manifest;

pub use bundle::{BUNDLE_MAGIC, BUNDLE_VERSION, BundleInfo};
pub use chunk_file::{CHUNK_MAGIC, CHUNK_VERSION};
pub use cold::ColdChunks;
pub use manifest::{MANIFEST_MAGIC, MANIFEST_VERSION};

use crate::LogError;
use crate::fsutil::{create_dir_durable, list_files, parse_numbered, remove_temp_files, sync_dir, write_file_atomic};
use crate::limits::{CHUNK_PAYLOAD_MAX, MANIFEST_BYTES_MAX};
use bursar_core::state::{COLD_SECTIONS, SectionChunk, Snapshot, SnapshotChunks, StoredChunk};
use chunk_file::{read_chunk, verify_chunk, write_chunk};
use manifest::{ChunkRef, Manifest, SectionRefs};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The store's directory inside the data dir.
pub const SNAPSHOTS_DIR: &str = "snapshots";
const CHUNKS_DIR: &str = "chunks";
const MANIFEST_PREFIX: &str = "snapshot-";
const MANIFEST_SUFFIX: &str = ".manifest";
const CHUNK_SUFFIX: &str = ".chunk";

/// How a snapshot's chunks are loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loading {
    /// Every chunk read into memory and checked against its hash.
    Whole,
    /// Chunks that may go cold left on disk (see `load_with`).
    Lazy,
}

/// What a `write` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub position: u64,
    pub chain: [u8; 32],
    pub digest: [u8; 32],
    pub chunks_written: usize,
    pub chunks_reused: usize,
    /// Chunk and manifest bytes written.
    pub bytes_written: u64,
    /// Where each chunk is, per section in the snapshot's order: what lets
    /// the state send stored chunks cold (`Machine::release_stored`).
    pub stored: Vec<Vec<StoredChunk>>,
}

/// A verified snapshot, ready for `StateMachine::restore`. The caller should
/// compare the restored state's digest with `digest`.
pub struct LoadedSnapshot {
    pub position: u64,
    /// The log's chain hash at `position`: check it against the log.
    pub chain: [u8; 32],
    pub digest: [u8; 32],
    pub chunks: SnapshotChunks,
    /// Newer snapshots that were damaged and skipped (also logged).
    pub skipped: Vec<LogError>,
}

impl std::fmt::Debug for LoadedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedSnapshot")
            .field("position", &self.position)
            .field("digest", &blake3::Hash::from_bytes(self.digest).to_hex())
            .field("header_bytes", &self.chunks.header.len())
            .field("section_chunks", &self.chunks.sections.iter().map(Vec::len).collect::<Vec<_>>())
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// A chunk stored by the previous `write`. Holding its `Arc` (type-erased:
/// core does not export the chunk trait) keeps the allocation alive, so its
/// address cannot be reused by another chunk, and keeps the arena from
/// mutating it in place (the arena copies shared chunks before writing):
/// the same address therefore means the same bytes.
struct KnownChunk {
    _keep_alive: Box<dyn Send + Sync>,
    stored: ChunkRef,
}

pub struct SnapshotStore {
    root: PathBuf,
    chunks_dir: PathBuf,
    read_only: bool,
    /// Chunks of the last write, by the address of their data.
    previous: HashMap<usize, KnownChunk>,
}

fn manifest_name(position: u64) -> String {
    format!("{MANIFEST_PREFIX}{position:020}{MANIFEST_SUFFIX}")
}

fn chunk_name(hash: &[u8; 32]) -> String {
    format!("{}{CHUNK_SUFFIX}", blake3::Hash::from_bytes(*hash).to_hex())
}

fn parse_chunk_name(name: &str) -> Option<[u8; 32]> {
    let hex = name.strip_suffix(CHUNK_SUFFIX)?;
    blake3::Hash::from_hex(hex).ok().map(|h| *h.as_bytes())
}

impl SnapshotStore {
    /// Opens the store in `<dir>/snapshots/`, creating it if needed,
    /// removing temp files left by an interrupted write and rewriting chunk
    /// files of the first format in blocks (`chunk_file`).
    pub fn open(dir: &Path) -> Result<SnapshotStore, LogError> {
        let store = SnapshotStore::new(dir, false);
        create_dir_durable(&store.chunks_dir)?;
        remove_temp_files(&store.root)?;
        remove_temp_files(&store.chunks_dir)?;
        chunk_file::upgrade_v1_files(&store.chunks_dir)?;
        Ok(store)
    }

    /// Opens the store without changing anything on disk; `write` and
    /// `prune` fail. A missing store reads as empty.
    pub fn open_read_only(dir: &Path) -> Result<SnapshotStore, LogError> {
        Ok(SnapshotStore::new(dir, true))
    }

    fn new(dir: &Path, read_only: bool) -> SnapshotStore {
        let root = dir.join(SNAPSHOTS_DIR);
        let chunks_dir = root.join(CHUNKS_DIR);
        SnapshotStore { root, chunks_dir, read_only, previous: HashMap::new() }
    }

    fn check_writable(&self) -> Result<(), LogError> {
        if self.read_only {
            return Err(LogError::ReadOnly { path: self.root.clone() });
        }
        Ok(())
    }

    fn chunk_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.chunks_dir.join(chunk_name(hash))
    }

    /// Checks the chunk file of chunk `hash` (`len` payload bytes, as a
    /// manifest names it) completely: every block, the file's length and
    /// the payload's blake3, holding one block in memory. For a load that
    /// does not keep the chunk's bytes.
    pub fn verify_chunk(&self, hash: &[u8; 32], len: u64) -> Result<(), LogError> {
        verify_chunk(&self.chunk_path(hash), &ChunkRef { hash: *hash, len })
    }

    fn manifest_path(&self, position: u64) -> PathBuf {
        self.root.join(manifest_name(position))
    }

    /// Writes a snapshot atomically (see the module docs). `chain` is the
    /// log's chain hash at `snap.position`. The log must be durable up to
    /// that position before this is called.
    pub fn write(&mut self, snap: &dyn Snapshot, chain: [u8; 32]) -> Result<SnapshotInfo, LogError> {
        self.check_writable()?;
        let mut info = SnapshotInfo {
            position: snap.position(),
            chain,
            digest: [0; 32],
            chunks_written: 0,
            chunks_reused: 0,
            bytes_written: 0,
            stored: Vec::new(),
        };
        let mut known = HashMap::new();
        let mut sections = Vec::new();
        for s in snap.sections() {
            let mut chunks = Vec::with_capacity(s.chunks.len());
            for chunk in s.chunks {
                if let Some(on_disk) = chunk.stored() {
                    chunks.push(self.reuse_stored(on_disk, &mut info)?);
                    continue;
                }
                let key = Arc::as_ptr(&chunk) as *const () as usize;
                let stored = self.store_chunk(key, chunk.bytes(), &known, &mut info)?;
                known.insert(key, KnownChunk { _keep_alive: Box::new(chunk), stored });
                chunks.push(stored);
            }
            sections.push(SectionRefs { name: s.name.to_string(), chunks });
        }
        if info.chunks_written > 0 {
            sync_dir(&self.chunks_dir)?;
        }
        let header = snap.header();
        // The digest from the chunk hashes just computed or remembered: the
        // state is not hashed a second time.
        let hashes: Vec<Vec<[u8; 32]>> = sections.iter().map(|s| s.chunks.iter().map(|c| c.hash).collect()).collect();
        let parts: Vec<(&str, &[[u8; 32]])> =
            sections.iter().zip(&hashes).map(|(s, h)| (s.name.as_str(), h.as_slice())).collect();
        info.digest = bursar_core::state::digest_from_chunk_hashes(&header, &parts);
        info.stored = sections
            .iter()
            .map(|s| s.chunks.iter().map(|c| StoredChunk { hash: c.hash, len: c.len }).collect())
            .collect();
        let manifest = Manifest { position: snap.position(), chain, digest: info.digest, header, sections };
        let bytes = manifest::encode(&manifest)?;
        debug_assert_eq!(
            manifest::decode(&bytes, Path::new("<encoded manifest>")).ok().as_ref(),
            Some(&manifest),
            "invariant: an encoded manifest decodes back"
        );
        info.bytes_written += write_file_atomic(&self.root, &manifest_name(snap.position()), &[&bytes])?;
        sync_dir(&self.root)?;
        debug_assert!(
            self.read_manifest_raw(snap.position()).is_ok_and(|(stored, _)| stored == bytes),
            "invariant: the manifest reads back as written"
        );
        self.previous = known;
        Ok(info)
    }

    /// A chunk the state holds on disk only (cold): its file must still be
    /// there, since nothing else has its bytes. Prune never removes it, as
    /// every snapshot since it went cold names it.
    fn reuse_stored(&self, on_disk: StoredChunk, info: &mut SnapshotInfo) -> Result<ChunkRef, LogError> {
        let path = self.chunk_path(&on_disk.hash);
        if !path.is_file() {
            return Err(LogError::corrupt(&path, 0, "the chunk file of a chunk held on disk only is missing"));
        }
        info.chunks_reused += 1;
        Ok(ChunkRef { hash: on_disk.hash, len: on_disk.len })
    }

    /// Makes sure one chunk is stored: known by identity (`key`, the
    /// address of its data) from the last write, so not even hashed; or
    /// already on disk and intact; or written now.
    fn store_chunk(
        &self,
        key: usize,
        bytes: &[u8],
        known: &HashMap<usize, KnownChunk>,
        info: &mut SnapshotInfo,
    ) -> Result<ChunkRef, LogError> {
        let same = self.previous.get(&key).or_else(|| known.get(&key)).map(|k| k.stored);
        if let Some(stored) = same.filter(|s| self.chunk_path(&s.hash).is_file()) {
            info.chunks_reused += 1;
            return Ok(stored);
        }
        if bytes.len() as u64 > CHUNK_PAYLOAD_MAX {
            return Err(LogError::Invalid {
                reason: format!("chunk of {} bytes exceeds {CHUNK_PAYLOAD_MAX}", bytes.len()),
            });
        }
        let stored = ChunkRef { hash: *blake3::hash(bytes).as_bytes(), len: bytes.len() as u64 };
        if verify_chunk(&self.chunk_path(&stored.hash), &stored).is_ok() {
            info.chunks_reused += 1;
        } else {
            info.bytes_written += write_chunk(&self.chunks_dir, &chunk_name(&stored.hash), &stored.hash, bytes)?;
            info.chunks_written += 1;
        }
        Ok(stored)
    }

    /// Positions of the stored manifests, ascending (damaged ones included).
    pub fn list(&self) -> Result<Vec<u64>, LogError> {
        if !self.root.is_dir() {
            return Ok(Vec::new());
        }
        let mut out: Vec<u64> = list_files(&self.root)?
            .iter()
            .filter_map(|(name, _)| parse_numbered(name, MANIFEST_PREFIX, MANIFEST_SUFFIX))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn read_manifest(&self, position: u64) -> Result<Manifest, LogError> {
        self.read_manifest_raw(position).map(|(_, m)| m)
    }

    /// The manifest's stored bytes and their parse.
    fn read_manifest_raw(&self, position: u64) -> Result<(Vec<u8>, Manifest), LogError> {
        let path = self.manifest_path(position);
        let len = fs::metadata(&path).map_err(|e| LogError::io(&path, e))?.len();
        if len > MANIFEST_BYTES_MAX {
            return Err(LogError::corrupt(&path, 0, format!("manifest of {len} bytes exceeds {MANIFEST_BYTES_MAX}")));
        }
        let bytes = fs::read(&path).map_err(|e| LogError::io(&path, e))?;
        let m = manifest::decode(&bytes, &path)?;
        if m.position != position {
            return Err(LogError::corrupt(&path, 8, format!("manifest is for position {}", m.position)));
        }
        Ok((bytes, m))
    }

    /// The stored manifest of the snapshot at `position`, checked: it names
    /// (by hash) every chunk, the chain and the state digest, so a MAC over
    /// it authenticates the whole snapshot (`load` checks the chunks).
    pub fn manifest_bytes(&self, position: u64) -> Result<Vec<u8>, LogError> {
        self.read_manifest_raw(position).map(|(bytes, _)| bytes)
    }

    /// Forgets the snapshot at `position` (its manifest; `prune` removes
    /// chunks nothing names): one that came from elsewhere and proved
    /// untrustworthy.
    pub fn remove(&mut self, position: u64) -> Result<(), LogError> {
        self.check_writable()?;
        remove_if_present(&self.manifest_path(position))?;
        sync_dir(&self.root)
    }

    /// Loads and verifies the snapshot at `position`: the manifest trailer
    /// and every chunk's length and hash.
    pub fn load(&self, position: u64) -> Result<LoadedSnapshot, LogError> {
        self.load_with(position, Loading::Whole)
    }

    /// Loads the snapshot at `position`: wholly as `load` does, or lazily,
    /// leaving the chunks of the sections that may go cold
    /// (`COLD_SECTIONS`) on disk after checking their files' format and
    /// length; their blocks are checked as they are read (restore reads
    /// every one of them to rebuild the indexes).
    pub fn load_with(&self, position: u64, loading: Loading) -> Result<LoadedSnapshot, LogError> {
        let m = self.read_manifest(position)?;
        let mut sections = Vec::with_capacity(m.sections.len());
        for s in &m.sections {
            let lazy = loading == Loading::Lazy && COLD_SECTIONS.contains(&s.name.as_str());
            let chunk = |c: &ChunkRef| {
                let path = self.chunk_path(&c.hash);
                if lazy { chunk_file::stored_or_read(&path, c) } else { read_chunk(&path, c).map(SectionChunk::Bytes) }
            };
            sections.push(s.chunks.iter().map(chunk).collect::<Result<Vec<_>, _>>()?);
        }
        let counts = |s: &[Vec<SectionChunk>]| s.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(
            counts(&sections),
            m.sections.iter().map(|s| s.chunks.len()).collect::<Vec<_>>(),
            "invariant: a loaded snapshot has the manifest's sections and chunk counts"
        );
        let chunks = SnapshotChunks { header: m.header, sections };
        Ok(LoadedSnapshot { position, chain: m.chain, digest: m.digest, chunks, skipped: Vec::new() })
    }

    /// The newest snapshot that verifies. Damaged newer ones are skipped with
    /// a warning and listed in `skipped`. `None` if no snapshot verifies.
    pub fn load_latest(&self) -> Result<Option<LoadedSnapshot>, LogError> {
        self.load_latest_with(Loading::Whole)
    }

    /// `load_latest`, loading as `loading` says (see `load_with`).
    pub fn load_latest_with(&self, loading: Loading) -> Result<Option<LoadedSnapshot>, LogError> {
        let mut skipped = Vec::new();
        for position in self.list()?.into_iter().rev() {
            match self.load_with(position, loading) {
                Ok(mut s) => {
                    s.skipped = skipped;
                    return Ok(Some(s));
                }
                Err(e) => {
                    tracing::warn!(position, error = %e, "skipping a snapshot that does not verify");
                    skipped.push(e);
                }
            }
        }
        Ok(None)
    }

    /// Deletes all but the newest `keep` manifests, then every chunk file no
    /// kept manifest names. Kept manifests are read first: if one does not
    /// parse, nothing is deleted. Manifests go before chunks, so a crash
    /// in between leaves only unreferenced chunks (removed next time).
    pub fn prune(&mut self, keep: usize) -> Result<(), LogError> {
        self.check_writable()?;
        let positions = self.list()?;
        let (old, kept) = positions.split_at(positions.len().saturating_sub(keep));
        let mut referenced = HashSet::new();
        for position in kept {
            referenced.extend(self.read_manifest(*position)?.chunk_refs().map(|c| c.hash));
        }
        for position in old {
            remove_if_present(&self.manifest_path(*position))?;
        }
        if !old.is_empty() {
            sync_dir(&self.root)?;
        }
        let mut removed = false;
        for (name, path) in list_files(&self.chunks_dir)? {
            if parse_chunk_name(&name).is_some_and(|hash| !referenced.contains(&hash)) {
                remove_if_present(&path)?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.chunks_dir)?;
        }
        self.previous.retain(|_, k| referenced.contains(&k.stored.hash));
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LogError::io(path, e)),
        _ => Ok(()),
    }
}

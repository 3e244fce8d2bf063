//! Chunk files: one snapshot chunk (an arena chunk of the state machine)
//! per file, named by the blake3 hash of its payload.
//!
//! ```text
//! version 2, written since issue 15: whole `bursar_store` blocks, nothing else
//!     block i = kind SnapshotChunk | file_id = u64 LE of hash[0..8] | index i
//!               | payload bytes [i * P, min(len, (i + 1) * P))       P = BLOCK_PAYLOAD_MAX
//!     blocks  = max(1, ceil(len / P)); file length = blocks * BLOCK_SIZE
//!     (an empty chunk is one block with an empty payload)
//! version 1, read, and rewritten as version 2 by a writable open:
//!     magic u32 = "BURC" | version u16 = 1 | reserved u16 = 0 | payload_len u64 | payload
//! ```
//!
//! Why blocks: a chunk that left RAM is read back one 64 KiB block at a
//! time through the block cache (`cold`), and each block must be checkable
//! on its own. Its checksum catches a flipped bit, its address (file id,
//! index) an intact block in the wrong place: copied from another chunk
//! file, or swapped within this one. The payload length is not stored: the
//! manifest names it (with the hash), and it fixes the file's exact length
//! and every block's payload length, which are checked too. A whole read
//! (`read_chunk`, `verify_chunk`) also checks the payload's blake3 against
//! the manifest, so what a snapshot loads is exactly what it named.
//!
//! The file id is the hash's first 8 bytes: a chunk file's blocks are
//! cached under it beside the store's other files (record files and tables,
//! whose owners assign their ids), so two files sharing cache keys takes a
//! 64-bit collision; a cold read still checks each cached block's payload
//! length against its place in the chunk.

use super::manifest::ChunkRef;
use super::parse_chunk_name;
use crate::LogError;
use crate::fsutil::{TEMP_SUFFIX, list_files, sync_dir, write_file_atomic_with};
use crate::limits::CHUNK_PAYLOAD_MAX;
use bursar_core::state::{SectionChunk, StoredChunk};
use bursar_store::StoreError;
use bursar_store::block::{self, BlockAddress, BlockKind};
use bursar_store::limits::{BLOCK_PAYLOAD_MAX, BLOCK_SIZE};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// "BURC" as little-endian bytes: the magic of a version 1 chunk file.
pub const CHUNK_MAGIC: u32 = 0x4352_5542;
/// The version field of a version 1 chunk file (version 2 files are blocks,
/// whose headers carry the block format's own version).
pub const CHUNK_VERSION: u16 = 1;
/// Bytes of a version 1 chunk file's header.
pub(super) const V1_HEADER: usize = 16;

/// The file id of a chunk's blocks.
pub(crate) fn file_id(hash: &[u8; 32]) -> u64 {
    u64::from_le_bytes(hash[0..8].try_into().expect("8 bytes of a 32-byte hash"))
}

/// Where block `index` of chunk `hash` belongs.
pub(crate) fn address(hash: &[u8; 32], index: u64) -> BlockAddress {
    BlockAddress { file_id: file_id(hash), index }
}

/// Blocks of a chunk of `len` payload bytes.
pub(crate) fn block_count(len: u64) -> u64 {
    len.div_ceil(BLOCK_PAYLOAD_MAX as u64).max(1)
}

/// Bytes of the version 2 file of a chunk of `len` payload bytes.
pub(crate) fn file_len(len: u64) -> u64 {
    block_count(len) * BLOCK_SIZE as u64
}

/// Payload bytes block `index` of a chunk of `len` bytes carries.
pub(crate) fn block_payload_len(len: u64, index: u64) -> usize {
    assert!(index < block_count(len), "block {index} of a {len}-byte chunk, which has {} blocks", block_count(len));
    (len - index * BLOCK_PAYLOAD_MAX as u64).min(BLOCK_PAYLOAD_MAX as u64) as usize
}

/// A block of a chunk file that failed its checks: named by its offset.
pub(crate) fn block_fault(path: &Path, index: u64, fault: impl std::fmt::Display) -> LogError {
    LogError::corrupt(path, index * BLOCK_SIZE as u64, format!("chunk block {index}: {fault}"))
}

/// A store error on block `index` of a chunk file, as this crate's error.
pub(crate) fn from_store(e: StoreError, index: u64) -> LogError {
    match e {
        StoreError::Io { path, source } => LogError::Io { path, source },
        StoreError::Corrupt { file, fault, .. } => block_fault(&file, index, fault),
    }
}

/// Checks that an intact block carries the payload bytes its place in a
/// chunk of `len` bytes promises.
pub(crate) fn check_payload_len(path: &Path, len: u64, index: u64, found: usize) -> Result<(), LogError> {
    let expected = block_payload_len(len, index);
    if found != expected {
        let reason = format!("carries {found} payload bytes, a chunk of {len} bytes has {expected} there");
        return Err(block_fault(path, index, reason));
    }
    Ok(())
}

/// Checks a version 2 file's length: every block whole, none more. A short
/// file is named at its first incomplete block, a long one where the
/// surplus starts.
pub(crate) fn check_file_len(path: &Path, actual: u64, len: u64) -> Result<(), LogError> {
    let expected = file_len(len);
    if actual == expected {
        return Ok(());
    }
    let offset = if actual < expected { actual - actual % BLOCK_SIZE as u64 } else { expected };
    let reason = format!(
        "chunk file holds {actual} bytes, {expected} expected ({} blocks of a {len}-byte chunk)",
        block_count(len)
    );
    Err(LogError::corrupt(path, offset, reason))
}

/// Opens a chunk file a manifest names: a missing one is corruption.
pub(crate) fn open_named(path: &Path) -> Result<File, LogError> {
    match File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(LogError::corrupt(path, 0, "chunk file named by a manifest is missing"))
        }
        Err(e) => Err(LogError::io(path, e)),
    }
}

/// A chunk left on disk by a lazy load: a version 2 file of the right
/// length is named `Stored` (its blocks are checked as they are read),
/// anything else is read and checked whole.
pub(crate) fn stored_or_read(path: &Path, stored: &ChunkRef) -> Result<SectionChunk, LogError> {
    let file = open_named(path)?;
    if is_v1(&file, path)? {
        return read_chunk(path, stored).map(SectionChunk::Bytes);
    }
    let actual = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    check_file_len(path, actual, stored.len)?;
    Ok(SectionChunk::Stored(StoredChunk { hash: stored.hash, len: stored.len }))
}

/// True if the file starts with the version 1 magic. A version 2 file
/// starts with a block's magic, which differs from it in three bits.
pub(crate) fn is_v1(file: &File, path: &Path) -> Result<bool, LogError> {
    let mut magic = [0u8; 4];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(u32::from_le_bytes(magic) == CHUNK_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(LogError::io(path, e)),
    }
}

// Writing.

/// Seals payload pieces into the blocks of one chunk file and writes them,
/// holding one block in memory.
pub(super) struct BlockWriter<'a> {
    file: &'a mut File,
    path: &'a Path,
    hash: [u8; 32],
    len: u64,
    index: u64,
    block: Box<[u8; BLOCK_SIZE]>,
}

impl<'a> BlockWriter<'a> {
    /// A writer of the blocks of chunk `hash` (`len` payload bytes) into
    /// `file`, named `path` in errors.
    pub(super) fn new(file: &'a mut File, path: &'a Path, hash: [u8; 32], len: u64) -> BlockWriter<'a> {
        assert!(len <= CHUNK_PAYLOAD_MAX, "a chunk of {len} bytes: the caller checks CHUNK_PAYLOAD_MAX");
        BlockWriter { file, path, hash, len, index: 0, block: Box::new([0u8; BLOCK_SIZE]) }
    }

    /// Payload bytes the next block takes.
    pub(super) fn next_len(&self) -> usize {
        block_payload_len(self.len, self.index)
    }

    /// Writes the next block, carrying `piece` (exactly `next_len` bytes).
    pub(super) fn put(&mut self, piece: &[u8]) -> Result<(), LogError> {
        assert_eq!(piece.len(), self.next_len(), "block {} of a {}-byte chunk", self.index, self.len);
        block::seal(BlockKind::SnapshotChunk, address(&self.hash, self.index), piece, &mut self.block);
        self.file.write_all(self.block.as_slice()).map_err(|e| LogError::io(self.path, e))?;
        self.index += 1;
        Ok(())
    }

    /// True once every block is written.
    pub(super) fn done(&self) -> bool {
        self.index == block_count(self.len)
    }

    /// Bytes written; every block must be.
    pub(super) fn finish(self) -> u64 {
        assert!(self.done(), "a chunk file ends after block {} of {}", self.index, block_count(self.len));
        self.index * BLOCK_SIZE as u64
    }
}

/// Writes `payload` (whose blake3 is `hash`) as chunk file `name` in `dir`
/// atomically: temp file, fsync, rename. The caller fsyncs `dir`. Returns
/// the bytes written.
pub(super) fn write_chunk(dir: &Path, name: &str, hash: &[u8; 32], payload: &[u8]) -> Result<u64, LogError> {
    debug_assert_eq!(blake3::hash(payload).as_bytes(), hash, "invariant: a chunk is named by its payload's hash");
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let len = payload.len() as u64;
    write_file_atomic_with(dir, name, |file| {
        let mut w = BlockWriter::new(file, &temp, *hash, len);
        let mut rest = payload;
        while !w.done() {
            let (piece, after) = rest.split_at(w.next_len());
            w.put(piece)?;
            rest = after;
        }
        assert!(rest.is_empty(), "invariant: every payload byte went into a block");
        Ok(w.finish())
    })
}

// Reading.

/// Reads a chunk file, either version, checking everything: calls `each`
/// with the payload in order, one checked block (or, for version 1, one
/// block's worth) at a time, then checks the payload's blake3 against
/// `stored.hash`. Holds one block in memory. `each` is first called only
/// once the file's length checked out.
pub(crate) fn read_pieces(
    path: &Path,
    stored: &ChunkRef,
    mut each: impl FnMut(&[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    assert!(
        stored.len <= CHUNK_PAYLOAD_MAX,
        "a chunk of {} bytes: manifests name at most {CHUNK_PAYLOAD_MAX}",
        stored.len
    );
    let file = open_named(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut hashed = |piece: &[u8]| {
        hasher.update(piece);
        each(piece)
    };
    let payload_at = if is_v1(&file, path)? {
        read_v1(&file, path, stored, &mut hashed)?;
        V1_HEADER as u64
    } else {
        read_v2(&file, path, stored, &mut hashed)?;
        0
    };
    if *hasher.finalize().as_bytes() != stored.hash {
        return Err(LogError::corrupt(path, payload_at, "chunk payload does not match its hash"));
    }
    Ok(())
}

fn read_v2(
    file: &File,
    path: &Path,
    stored: &ChunkRef,
    each: &mut impl FnMut(&[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    check_file_len(path, file.metadata().map_err(|e| LogError::io(path, e))?.len(), stored.len)?;
    let mut block = vec![0u8; BLOCK_SIZE];
    for index in 0..block_count(stored.len) {
        let at = address(&stored.hash, index);
        file.read_exact_at(&mut block, at.offset()).map_err(|e| LogError::io(path, e))?;
        let payload =
            block::open(BlockKind::SnapshotChunk, at, &block).map_err(|fault| block_fault(path, index, fault))?;
        check_payload_len(path, stored.len, index, payload.len())?;
        each(payload)?;
    }
    Ok(())
}

/// The version 1 header of a chunk of `len` bytes.
fn v1_header(len: u64) -> [u8; V1_HEADER] {
    let mut h = [0u8; V1_HEADER];
    h[0..4].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&CHUNK_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h
}

fn read_v1(
    file: &File,
    path: &Path,
    stored: &ChunkRef,
    each: &mut impl FnMut(&[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let expected = V1_HEADER as u64 + stored.len;
    let actual = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    if actual != expected {
        let reason = format!("chunk file holds {actual} bytes, expected {expected}");
        return Err(LogError::corrupt(path, actual.min(expected), reason));
    }
    let mut header = [0u8; V1_HEADER];
    file.read_exact_at(&mut header, 0).map_err(|e| LogError::io(path, e))?;
    if header != v1_header(stored.len) {
        return Err(LogError::corrupt(path, 0, "bad chunk header (magic, version, reserved or length)"));
    }
    let mut piece = vec![0u8; BLOCK_PAYLOAD_MAX];
    let mut at = 0;
    while at < stored.len {
        let n = (stored.len - at).min(BLOCK_PAYLOAD_MAX as u64) as usize;
        file.read_exact_at(&mut piece[..n], V1_HEADER as u64 + at).map_err(|e| LogError::io(path, e))?;
        each(&piece[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Reads a chunk file (either version) and checks it completely against
/// the manifest's hash and length. A missing file is corruption.
pub(crate) fn read_chunk(path: &Path, stored: &ChunkRef) -> Result<Vec<u8>, LogError> {
    let mut payload = Vec::new();
    read_pieces(path, stored, |piece| {
        // Reserved on the first piece: the file's length, checked by then,
        // vouches for the manifest's.
        payload.reserve_exact(stored.len as usize);
        payload.extend_from_slice(piece);
        Ok(())
    })?;
    assert_eq!(payload.len() as u64, stored.len, "invariant: a chunk reads back with the length the manifest names");
    Ok(payload)
}

/// Checks a chunk file completely, like `read_chunk`, keeping nothing:
/// memory is one block and a hasher.
pub(crate) fn verify_chunk(path: &Path, stored: &ChunkRef) -> Result<(), LogError> {
    let mut seen = 0u64;
    read_pieces(path, stored, |piece| {
        seen += piece.len() as u64;
        Ok(())
    })?;
    assert_eq!(seen, stored.len, "invariant: a verified chunk has the length the manifest names");
    Ok(())
}

// Upgrading.

/// Rewrites every version 1 chunk file in `dir` as version 2, each
/// atomically, once its payload matched its name; fsyncs `dir` if any
/// changed. A damaged one is left as it is, with a warning: the load of a
/// snapshot naming it reports it. Returns how many were rewritten.
pub(super) fn upgrade_v1_files(dir: &Path) -> Result<usize, LogError> {
    let mut upgraded = 0;
    for (name, path) in list_files(dir)? {
        let Some(hash) = parse_chunk_name(&name) else { continue };
        match upgrade(dir, &name, &path, &hash) {
            Ok(true) => upgraded += 1,
            Ok(false) => {}
            Err(e) if e.is_corrupt() => {
                tracing::warn!(file = %path.display(), error = %e, "leaving a damaged old-format chunk file as it is");
            }
            Err(e) => return Err(e),
        }
    }
    if upgraded > 0 {
        sync_dir(dir)?;
        tracing::info!(chunks = upgraded, "rewrote old-format chunk files as blocks");
    }
    Ok(upgraded)
}

/// Rewrites one chunk file if it is version 1 and intact; false if it is
/// not version 1.
fn upgrade(dir: &Path, name: &str, path: &Path, hash: &[u8; 32]) -> Result<bool, LogError> {
    let file = File::open(path).map_err(|e| LogError::io(path, e))?;
    if !is_v1(&file, path)? {
        return Ok(false);
    }
    let mut header = [0u8; V1_HEADER];
    if file.read_exact_at(&mut header, 0).is_err() {
        return Err(LogError::corrupt(path, 0, "old-format chunk file shorter than its header"));
    }
    let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len > CHUNK_PAYLOAD_MAX {
        return Err(LogError::corrupt(path, 8, format!("chunk length {len} exceeds {CHUNK_PAYLOAD_MAX}")));
    }
    let payload = read_chunk(path, &ChunkRef { hash: *hash, len })?;
    write_chunk(dir, name, hash, &payload)?;
    Ok(true)
}

#[cfg(test)]
#[path = "chunk_file_tests.rs"]
mod tests;

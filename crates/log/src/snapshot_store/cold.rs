//! Cold chunks: reads of arena chunks that left RAM, from their chunk files.
//!
//! A full arena chunk that a durable snapshot holds may be dropped from
//! memory; a read of one of its records then comes here and costs one 64 KiB
//! block (not the 8 MiB chunk), read and checked once and then served by the
//! shared, bounded block cache of `bursar_store`. Each block is checked on
//! its own (checksum, address, payload length, see `chunk_file`); the
//! chunk's blake3 was checked when the snapshot was loaded or written, so a
//! block that passes is the one the manifest named.
//!
//! Only version 2 files are readable here: a writable open of the store
//! rewrites older ones, so one found here was left damaged, or the store
//! was opened read-only, and either way it is an error, not a slow path.

use super::chunk_file::{self, address, check_file_len, check_payload_len, from_store, open_named};
use super::{CHUNKS_DIR, SNAPSHOTS_DIR, chunk_name};
use crate::LogError;
use crate::limits::CHUNK_PAYLOAD_MAX;
use bursar_store::block::BlockKind;
use bursar_store::cache::{BlockCache, Payload, read_block};
use bursar_store::limits::BLOCK_PAYLOAD_MAX;
use bursar_store::{Fault, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads ranges of stored chunks through a block cache. Shared by threads.
pub struct ColdChunks {
    chunks_dir: PathBuf,
    cache: Arc<BlockCache>,
}

impl ColdChunks {
    /// Reads the chunks of the snapshot store in `data_dir` (the directory
    /// `SnapshotStore::open` takes) through `cache`.
    pub fn new(data_dir: &Path, cache: Arc<BlockCache>) -> ColdChunks {
        ColdChunks { chunks_dir: data_dir.join(SNAPSHOTS_DIR).join(CHUNKS_DIR), cache }
    }

    /// The cache the blocks are read through.
    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }

    /// Copies payload bytes `[offset, offset + out.len())` of chunk `hash`,
    /// whose payload is `len` bytes (as its manifest names it), into `out`.
    ///
    /// Panics if the range is not inside the chunk: the caller's bug.
    pub fn read(&self, hash: &[u8; 32], len: u64, offset: u64, out: &mut [u8]) -> Result<(), LogError> {
        assert!(len <= CHUNK_PAYLOAD_MAX, "a chunk of {len} bytes: manifests name at most {CHUNK_PAYLOAD_MAX}");
        let end = offset.checked_add(out.len() as u64);
        assert!(
            end.is_some_and(|end| end <= len),
            "a read of {} bytes at {offset} of a {len}-byte chunk: the range is outside the chunk",
            out.len()
        );
        let path = self.chunks_dir.join(chunk_name(hash));
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let index = at / BLOCK_PAYLOAD_MAX as u64;
            let within = (at % BLOCK_PAYLOAD_MAX as u64) as usize;
            let payload = self.block(&path, hash, len, index)?;
            let n = (payload.len() - within).min(out.len() - done);
            out[done..done + n].copy_from_slice(&payload[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// Block `index` of the chunk, from the cache or else from its file.
    fn block(&self, path: &Path, hash: &[u8; 32], len: u64, index: u64) -> Result<Payload, LogError> {
        let at = address(hash, index);
        // The cache's loader returns the store's error type: the loader's
        // own error, with its full text, is kept here.
        let mut failure = None;
        let loaded = self.cache.get_or_load(at, || {
            load_block(path, hash, len, index).map_err(|e| {
                failure = Some(e);
                StoreError::corrupt(path, at.offset(), Fault::Malformed { what: "chunk block" })
            })
        });
        let payload = loaded.map_err(|e| failure.take().unwrap_or_else(|| from_store(e, index)))?;
        // Checked on a hit too: a block cached under this address by a file
        // whose id collides is refused, not served as this chunk's bytes.
        check_payload_len(path, len, index, payload.len())?;
        Ok(payload)
    }
}

/// Reads block `index` of a chunk file from disk and checks it: the file's
/// format and exact length, the block (checksum, kind, address) and its
/// payload length.
///
/// The file is opened on each miss, with no cache of descriptors: a miss
/// costs a 64 KiB pread and a checksum anyway, beside which an open is
/// small, and a descriptor cache would need a bound and eviction of its own
/// and would keep the files of pruned snapshots alive.
fn load_block(path: &Path, hash: &[u8; 32], len: u64, index: u64) -> Result<Payload, LogError> {
    let file = open_named(path)?;
    let actual = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    // A version 1 file is never exactly a version 2 file's length (its
    // header is 16 bytes, the blocks' at least 32), so the magic is only
    // looked at when the length is wrong.
    if actual != chunk_file::file_len(len) && chunk_file::is_v1(&file, path)? {
        return Err(LogError::corrupt(path, 0, "chunk file is in the old format (a writable open rewrites it)"));
    }
    check_file_len(path, actual, len)?;
    let payload =
        read_block(&file, path, BlockKind::SnapshotChunk, address(hash, index)).map_err(|e| from_store(e, index))?;
    check_payload_len(path, len, index, payload.len())?;
    Ok(payload)
}

/// The state machine reads its cold chunks through this.
impl bursar_core::state::ChunkReader for ColdChunks {
    fn read(
        &self,
        chunk: &bursar_core::state::StoredChunk,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), bursar_core::state::ChunkReadError> {
        ColdChunks::read(self, &chunk.hash, chunk.len, offset, out).map_err(|e| Box::new(e) as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_chunks_are_shared_by_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<ColdChunks>();
    }
}

//! Chunk files in blocks: round trips, and every kind of damage named by
//! file and offset, by whole reads (`read_chunk`, `verify_chunk`) and by
//! cold reads of a range (`ColdChunks::read`).

use super::*;
use crate::snapshot_store::{CHUNKS_DIR, ColdChunks, SNAPSHOTS_DIR, chunk_name};
use bursar_store::cache::BlockCache;
use bursar_store::limits::CACHE_BYTES_MIN;
use proptest::prelude::*;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tempfile::TempDir;

const P: u64 = BLOCK_PAYLOAD_MAX as u64;
const B: u64 = BLOCK_SIZE as u64;

/// Deterministic bytes that differ between chunks of one length.
fn payload(len: u64, seed: u64) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7 + i / 251) % 251) as u8).collect()
}

fn chunks_dir(dir: &Path) -> PathBuf {
    let chunks = dir.join(SNAPSHOTS_DIR).join(CHUNKS_DIR);
    fs::create_dir_all(&chunks).unwrap();
    chunks
}

/// Stores `bytes` as a version 2 chunk file under `dir`'s store.
fn stored(dir: &Path, bytes: &[u8]) -> (PathBuf, ChunkRef) {
    let chunks = chunks_dir(dir);
    let c = ChunkRef { hash: *blake3::hash(bytes).as_bytes(), len: bytes.len() as u64 };
    let name = chunk_name(&c.hash);
    let written = write_chunk(&chunks, &name, &c.hash, bytes).unwrap();
    assert_eq!(written, file_len(c.len));
    (chunks.join(name), c)
}

/// Stores `bytes` as a version 1 chunk file, as builds before blocks did.
fn stored_v1(dir: &Path, bytes: &[u8]) -> (PathBuf, ChunkRef) {
    let c = ChunkRef { hash: *blake3::hash(bytes).as_bytes(), len: bytes.len() as u64 };
    let path = chunks_dir(dir).join(chunk_name(&c.hash));
    fs::write(&path, [&v1_header(c.len)[..], bytes].concat()).unwrap();
    (path, c)
}

/// A cache that keeps nothing: every cold read goes to the file.
fn uncached(dir: &Path) -> ColdChunks {
    ColdChunks::new(dir, Arc::new(BlockCache::new(CACHE_BYTES_MIN)))
}

fn cold_read(cold: &ColdChunks, c: &ChunkRef, offset: u64, n: u64) -> Result<Vec<u8>, LogError> {
    let mut out = vec![0u8; n as usize];
    cold.read(&c.hash, c.len, offset, &mut out).map(|()| out)
}

/// The file, offset and reason of a corruption error.
fn corrupt(e: LogError) -> (PathBuf, u64, String) {
    match e {
        LogError::Corrupt { file, offset, reason } => (file, offset, reason),
        other => panic!("not corruption: {other}"),
    }
}

/// Asserts that a whole read, a verify and a cold read of `range` all
/// refuse `path` at `offset`, with `reason` in the message.
fn refused(dir: &Path, path: &Path, c: &ChunkRef, range: (u64, u64), offset: u64, reason: &str) {
    let whole = corrupt(read_chunk(path, c).unwrap_err());
    assert_eq!((whole.0.as_path(), whole.1), (path, offset), "{whole:?}");
    assert!(whole.2.contains(reason), "{whole:?}");
    assert_eq!(corrupt(verify_chunk(path, c).unwrap_err()), whole);
    let cold = corrupt(cold_read(&uncached(dir), c, range.0, range.1).unwrap_err());
    assert_eq!((cold.0.as_path(), cold.1), (path, offset), "{cold:?}");
    assert!(cold.2.contains(reason), "{cold:?}");
}

#[test]
fn chunks_of_every_edge_size_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cold = ColdChunks::new(dir.path(), Arc::new(BlockCache::new(16 << 20)));
    for len in [0, 1, P - 1, P, P + 1, 8 << 20] {
        let bytes = payload(len, 1);
        let (path, c) = stored(dir.path(), &bytes);
        assert_eq!(fs::metadata(&path).unwrap().len(), len.div_ceil(P).max(1) * B, "len {len}");
        assert_eq!(read_chunk(&path, &c).unwrap(), bytes, "len {len}");
        verify_chunk(&path, &c).unwrap();
        assert_eq!(cold_read(&cold, &c, 0, len).unwrap(), bytes, "len {len}");
    }
}

#[test]
fn a_cold_read_spans_blocks_and_hits_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = payload(3 * P, 2);
    let (_, c) = stored(dir.path(), &bytes);
    let cold = ColdChunks::new(dir.path(), Arc::new(BlockCache::new(1 << 20)));
    assert_eq!(cold_read(&cold, &c, P - 3, 6).unwrap(), &bytes[P as usize - 3..P as usize + 3]);
    assert_eq!(cold_read(&cold, &c, P - 1, P + 2).unwrap(), &bytes[P as usize - 1..2 * P as usize + 1]);
    let stats = cold.cache().stats();
    assert_eq!((stats.misses, stats.hits, stats.blocks), (3, 2, 3));
    assert_eq!(cold_read(&cold, &c, 3 * P, 0).unwrap(), Vec::<u8>::new());
}

#[test]
#[should_panic(expected = "outside the chunk")]
fn a_cold_read_past_the_chunk_is_a_caller_bug() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = stored(dir.path(), &payload(100, 3));
    let _ = cold_read(&uncached(dir.path()), &c, 50, 51);
}

#[test]
fn every_flipped_header_bit_and_sampled_payload_bit_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, c) = stored(dir.path(), &payload(P + 1000, 4));
    let clean = fs::read(&path).unwrap();
    for block in 0..2u64 {
        let start = block * B;
        let header_bits = (start * 8..(start + 32) * 8).collect::<Vec<_>>();
        let sampled = (start + 32..start + B).step_by(997).chain([start + B - 1]).map(|byte| byte * 8 + byte % 8);
        let range = (block * P, block_payload_len(c.len, block) as u64);
        for bit in header_bits.into_iter().chain(sampled) {
            let mut bytes = clean.clone();
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            fs::write(&path, &bytes).unwrap();
            refused(dir.path(), &path, &c, range, start, "checksum mismatch");
        }
    }
    fs::write(&path, &clean).unwrap();
    verify_chunk(&path, &c).unwrap();
}

#[test]
fn a_cut_or_overlong_file_is_named_at_its_first_bad_block() {
    let dir = tempfile::tempdir().unwrap();
    let (path, c) = stored(dir.path(), &payload(2 * P + 500, 5));
    let clean = fs::read(&path).unwrap();
    for cut in [0, 1, B / 2, B - 1, B, B + 1, 2 * B, 2 * B + 1000, 3 * B - 1] {
        fs::write(&path, &clean[..cut as usize]).unwrap();
        refused(dir.path(), &path, &c, (0, 1), cut - cut % B, &format!("holds {cut} bytes, {} expected", 3 * B));
    }
    for extra in [1, B] {
        fs::write(&path, [&clean[..], &vec![0; extra as usize]].concat()).unwrap();
        refused(dir.path(), &path, &c, (0, 1), 3 * B, "expected");
    }
}

#[test]
fn a_block_from_another_file_or_another_place_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, c) = stored(dir.path(), &payload(2 * P, 6));
    let (other, _) = stored(dir.path(), &payload(2 * P, 7));
    let clean = fs::read(&path).unwrap();
    let foreign = fs::read(&other).unwrap();
    let b = B as usize;
    let copied = [&clean[..b], &foreign[b..]].concat();
    fs::write(&path, copied).unwrap();
    refused(dir.path(), &path, &c, (P, 1), B, "misdirected");
    let swapped = [&clean[b..], &clean[..b]].concat();
    fs::write(&path, swapped).unwrap();
    refused(dir.path(), &path, &c, (0, 1), 0, "misdirected");
    let (_, offset, reason) = corrupt(cold_read(&uncached(dir.path()), &c, P, 1).unwrap_err());
    assert!(offset == B && reason.contains("misdirected"), "{reason}");
}

#[test]
fn intact_blocks_of_the_wrong_length_or_content_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Blocks sealed for this chunk's address around other bytes of the
    // same length: each block is intact, only the hash can tell.
    let bytes = payload(P + 10, 8);
    let (path, c) = stored(dir.path(), &bytes);
    let mut other = bytes.clone();
    other[5] ^= 1;
    let mut file = File::create(&path).unwrap();
    let mut w = BlockWriter::new(&mut file, &path, c.hash, c.len);
    w.put(&other[..P as usize]).unwrap();
    w.put(&other[P as usize..]).unwrap();
    w.finish();
    let (file, offset, reason) = corrupt(read_chunk(&path, &c).unwrap_err());
    assert_eq!((file, offset, reason.as_str()), (path.clone(), 0, "chunk payload does not match its hash"));
    // The manifest says fewer bytes than the file's blocks hold: the last
    // block's payload length disagrees (the file's length still fits).
    let shorter = ChunkRef { hash: c.hash, len: P + 9 };
    refused(dir.path(), &path, &shorter, (P, 1), B, "carries 10 payload bytes");
}

#[test]
fn a_missing_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let c = ChunkRef { hash: [9; 32], len: 10 };
    let path = chunks_dir(dir.path()).join(chunk_name(&c.hash));
    refused(dir.path(), &path, &c, (0, 10), 0, "is missing");
}

#[test]
fn old_format_files_are_read_whole_refused_cold_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = chunks_dir(dir.path());
    let mut intact = Vec::new();
    for len in [0, 1, P + 1] {
        let bytes = payload(len, 9);
        let (path, c) = stored_v1(dir.path(), &bytes);
        assert_eq!(read_chunk(&path, &c).unwrap(), bytes);
        if len > 0 {
            let (_, offset, reason) = corrupt(cold_read(&uncached(dir.path()), &c, 0, 1).unwrap_err());
            assert!(offset == 0 && reason.contains("old format"), "{reason}");
        }
        intact.push((path, c, bytes));
    }
    let (damaged, d) = stored_v1(dir.path(), &payload(100, 10));
    flip(&damaged, 16 + 50);
    let before = fs::read(&damaged).unwrap();
    assert_eq!(upgrade_v1_files(&chunks).unwrap(), intact.len());
    assert_eq!(fs::read(&damaged).unwrap(), before, "a damaged old file is left alone");
    assert!(read_chunk(&damaged, &d).unwrap_err().to_string().contains("does not match its hash"));
    for (path, c, bytes) in &intact {
        let file = File::open(path).unwrap();
        assert!(!is_v1(&file, path).unwrap());
        assert_eq!(file.metadata().unwrap().len(), file_len(c.len));
        assert_eq!(read_chunk(path, c).unwrap(), *bytes);
        assert_eq!(cold_read(&uncached(dir.path()), c, 0, c.len).unwrap(), *bytes);
    }
    assert_eq!(upgrade_v1_files(&chunks).unwrap(), 0, "nothing left to upgrade");
}

fn flip(path: &Path, byte: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[byte] ^= 0x04;
    fs::write(path, bytes).unwrap();
}

/// One chunk of three and a half blocks, stored once for the property test.
fn shared_chunk() -> &'static (TempDir, ChunkRef, Vec<u8>) {
    static CHUNK: OnceLock<(TempDir, ChunkRef, Vec<u8>)> = OnceLock::new();
    CHUNK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let bytes = payload(3 * P + P / 2, 11);
        let (_, c) = stored(dir.path(), &bytes);
        (dir, c, bytes)
    })
}

fn ranges() -> impl Strategy<Value = (u64, u64)> {
    let len = 3 * P + P / 2;
    // Offsets near block boundaries are where ranges go wrong: half of the
    // cases start within 8 bytes of one.
    let near_edge = (0..4u64, 0..16u64).prop_map(move |(b, d)| (b * P + d).saturating_sub(8).min(len));
    prop_oneof![0..=len, near_edge].prop_flat_map(move |offset| (Just(offset), 0..=len - offset))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_cold_read_of_any_range_is_the_payload_there((offset, n) in ranges()) {
        let (dir, c, bytes) = shared_chunk();
        static COLD: OnceLock<ColdChunks> = OnceLock::new();
        let cached = COLD.get_or_init(|| ColdChunks::new(dir.path(), Arc::new(BlockCache::new(2 * B))));
        let want = &bytes[offset as usize..(offset + n) as usize];
        prop_assert_eq!(cold_read(cached, c, offset, n).unwrap(), want);
        prop_assert_eq!(cold_read(&uncached(dir.path()), c, offset, n).unwrap(), want);
    }
}

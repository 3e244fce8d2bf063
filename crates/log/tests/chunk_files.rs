//! Chunk files in blocks against real snapshots: a store written by an
//! older build (chunk files of the first format) loads as before, a
//! writable open rewrites its files in blocks, and every chunk of a loaded
//! snapshot reads back cold, range by range, through the block cache.

use bursar_core::command::{Command, LogCommand, Operation};
use bursar_core::machine::Machine;
use bursar_core::records::encode_all;
use bursar_core::state::SectionChunk;
use bursar_core::{Account, Ledger, Limits, Transfer};
use bursar_log::snapshot_store::{CHUNK_MAGIC, CHUNK_VERSION};
use bursar_log::{ColdChunks, LoadedSnapshot, SnapshotStore};
use bursar_store::cache::BlockCache;
use bursar_store::limits::BLOCK_SIZE;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn apply(m: &mut Machine, operation: Operation, events: &[u8]) {
    let position = m.position() + 1;
    let out = m.apply_entry(position, position * 1_000_000, &[LogCommand::Plain(Command { operation, events })]);
    assert!(out[0].1.is_empty(), "{:?}", out[0]);
}

/// A ledger, 5000 accounts (two arena chunks) and 3000 transfers.
fn machine() -> Machine {
    let mut m = Machine::new(Limits::default());
    let ledger = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    apply(&mut m, Operation::CreateLedgers, encode_all(&[ledger]));
    let accounts: Vec<Account> =
        (1..=5000).map(|id| Account { id, ledger: 1, code: 10, ..Default::default() }).collect();
    apply(&mut m, Operation::CreateAccounts, encode_all(&accounts));
    let transfers: Vec<Transfer> = (1..=3000u128)
        .map(|id| Transfer {
            id,
            debit_account_id: 1 + id % 40,
            credit_account_id: 41 + id % 40,
            amount: id,
            ledger: 1,
            code: 1,
            ..Default::default()
        })
        .collect();
    apply(&mut m, Operation::CreateTransfers, encode_all(&transfers));
    m
}

const CHAIN: [u8; 32] = [3; 32];

fn chunk_path(dir: &Path, payload: &[u8]) -> PathBuf {
    dir.join(format!("snapshots/chunks/{}.chunk", blake3::hash(payload).to_hex()))
}

/// Every chunk's bytes of a wholly loaded snapshot.
fn loaded_bytes(s: &LoadedSnapshot) -> Vec<Vec<u8>> {
    let bytes = |c: &SectionChunk| match c {
        SectionChunk::Bytes(b) => b.clone(),
        SectionChunk::Stored(_) => panic!("a whole load holds every chunk's bytes"),
    };
    s.chunks.sections.iter().flatten().map(bytes).collect()
}

/// Every chunk payload of a loaded snapshot, by file.
fn payloads(s: &LoadedSnapshot, dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    loaded_bytes(s).into_iter().map(|p| (chunk_path(dir, &p), p)).collect()
}

/// Every chunk file's bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let chunks = dir.join("snapshots/chunks");
    fs::read_dir(chunks).unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), fs::read(p).unwrap())).collect()
}

/// Rewrites every chunk file in the first format, as builds before blocks
/// wrote them: "BURC", version 1, reserved 0, payload length, payload.
fn rewrite_as_v1(chunks: &BTreeMap<PathBuf, Vec<u8>>) {
    for (path, payload) in chunks {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&CHUNK_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&CHUNK_VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(payload);
        fs::write(path, bytes).unwrap();
    }
}

fn digest_of(store: &SnapshotStore) -> [u8; 32] {
    let s = store.load_latest().unwrap().expect("a snapshot");
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    let digest = s.digest;
    let restored = Machine::restore(Limits::default(), s.chunks).unwrap();
    assert_eq!(restored.digest(), digest, "the restored state has the stored digest");
    digest
}

fn is_blocks(bytes: &[u8]) -> bool {
    bytes.starts_with(b"BSBK") && bytes.len().is_multiple_of(BLOCK_SIZE)
}

#[test]
fn a_store_of_old_chunk_files_loads_and_a_writable_open_rewrites_them() {
    let dir = tempfile::tempdir().unwrap();
    let m = machine();
    SnapshotStore::open(dir.path()).unwrap().write(&m.snapshot(), CHAIN).unwrap();
    let store = SnapshotStore::open_read_only(dir.path()).unwrap();
    let chunks = payloads(&store.load(m.position()).unwrap(), dir.path());
    assert!(chunks.len() >= 4 && files(dir.path()).values().all(|b| is_blocks(b)));
    rewrite_as_v1(&chunks);
    let old = files(dir.path());

    let read_only = SnapshotStore::open_read_only(dir.path()).unwrap();
    assert_eq!(digest_of(&read_only), m.digest(), "old files load as before");
    assert_eq!(files(dir.path()), old, "a read-only open and load change nothing");

    let writable = SnapshotStore::open(dir.path()).unwrap();
    let new = files(dir.path());
    assert_eq!(new.keys().collect::<Vec<_>>(), old.keys().collect::<Vec<_>>(), "the same names");
    assert!(new.values().all(|b| is_blocks(b)), "every file is in blocks now");
    assert_eq!(digest_of(&writable), m.digest());
    for (hash_path, payload) in &chunks {
        let hash = *blake3::hash(payload).as_bytes();
        writable.verify_chunk(&hash, payload.len() as u64).unwrap_or_else(|e| panic!("{}: {e}", hash_path.display()));
    }
    drop(writable);
    SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(files(dir.path()), new, "a second open has nothing to rewrite");
}

#[test]
fn a_damaged_old_chunk_file_is_left_alone_and_reported_by_load() {
    let dir = tempfile::tempdir().unwrap();
    let m = machine();
    SnapshotStore::open(dir.path()).unwrap().write(&m.snapshot(), CHAIN).unwrap();
    let chunks = payloads(&SnapshotStore::open_read_only(dir.path()).unwrap().load(m.position()).unwrap(), dir.path());
    rewrite_as_v1(&chunks);
    let victim = chunks.keys().next().unwrap();
    let mut bytes = fs::read(victim).unwrap();
    bytes[16] ^= 0x20;
    fs::write(victim, &bytes).unwrap();

    let store = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(fs::read(victim).unwrap(), bytes, "the damaged file is as it was");
    let others = files(dir.path());
    assert!(others.iter().filter(|(p, _)| *p != victim).all(|(_, b)| is_blocks(b)));
    let err = store.load(m.position()).unwrap_err();
    assert!(err.is_corrupt() && err.to_string().contains(&victim.display().to_string()), "{err}");
    assert!(err.to_string().contains("does not match its hash"), "{err}");
}

#[test]
fn bundles_move_old_and_new_stores_alike() {
    let m = machine();
    let source = tempfile::tempdir().unwrap();
    SnapshotStore::open(source.path()).unwrap().write(&m.snapshot(), CHAIN).unwrap();
    let read_only = SnapshotStore::open_read_only(source.path()).unwrap();
    let mut from_blocks = Vec::new();
    read_only.export_bundle(m.position(), &mut from_blocks).unwrap();
    rewrite_as_v1(&payloads(&read_only.load(m.position()).unwrap(), source.path()));
    let mut from_old = Vec::new();
    read_only.export_bundle(m.position(), &mut from_old).unwrap();
    assert_eq!(from_old, from_blocks, "a bundle carries payloads, whatever the files' format");

    let target = tempfile::tempdir().unwrap();
    let mut imported = SnapshotStore::open(target.path()).unwrap();
    assert_eq!(imported.import_bundle(&mut &from_old[..]).unwrap(), m.position());
    assert!(files(target.path()).values().all(|b| is_blocks(b)), "an import writes blocks");
    assert_eq!(digest_of(&imported), m.digest());
    let mut again = Vec::new();
    imported.export_bundle(m.position(), &mut again).unwrap();
    assert_eq!(again, from_blocks);
}

#[test]
fn every_chunk_of_a_snapshot_reads_back_cold() {
    let dir = tempfile::tempdir().unwrap();
    let m = machine();
    SnapshotStore::open(dir.path()).unwrap().write(&m.snapshot(), CHAIN).unwrap();
    let loaded = SnapshotStore::open_read_only(dir.path()).unwrap().load(m.position()).unwrap();
    let cold = ColdChunks::new(dir.path(), Arc::new(BlockCache::new(4 << 20)));
    for payload in &loaded_bytes(&loaded) {
        let hash = *blake3::hash(payload).as_bytes();
        let len = payload.len() as u64;
        let mut whole = vec![0u8; payload.len()];
        cold.read(&hash, len, 0, &mut whole).unwrap();
        assert_eq!(&whole, payload);
        // One 128-byte record in the middle.
        if payload.len() >= 256 {
            let at = payload.len() / 2 / 128 * 128;
            let mut record = [0u8; 128];
            cold.read(&hash, len, at as u64, &mut record).unwrap();
            assert_eq!(&record[..], &payload[at..at + 128]);
        }
    }
    assert!(cold.cache().stats().hits > 0);
}

#[test]
fn threads_share_one_reader_and_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let m = machine();
    SnapshotStore::open(dir.path()).unwrap().write(&m.snapshot(), CHAIN).unwrap();
    let loaded = SnapshotStore::open_read_only(dir.path()).unwrap().load(m.position()).unwrap();
    let biggest = loaded_bytes(&loaded).into_iter().max_by_key(|p| p.len()).unwrap();
    let hash = *blake3::hash(&biggest).as_bytes();
    // Two blocks' bytes keep one block: the threads keep evicting each other.
    let cold = Arc::new(ColdChunks::new(dir.path(), Arc::new(BlockCache::new(2 * BLOCK_SIZE as u64))));
    let biggest = Arc::new(biggest);
    let readers: Vec<_> = (0..4u64)
        .map(|t| {
            let (cold, payload) = (Arc::clone(&cold), Arc::clone(&biggest));
            std::thread::spawn(move || {
                let len = payload.len() as u64;
                for i in 0..200u64 {
                    let offset = (t * 7919 + i * 104_729) % len;
                    let n = ((i * 613) % 300).min(len - offset);
                    let mut out = vec![0u8; n as usize];
                    cold.read(&hash, len, offset, &mut out).unwrap();
                    assert_eq!(out, payload[offset as usize..(offset + n) as usize], "thread {t} read {i}");
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let stats = cold.cache().stats();
    assert!(stats.blocks <= 1 && stats.hits + stats.misses >= 700, "{stats:?}");
}

//! Fuzz targets for snapshot files and bundles (issue 13, trust boundaries).
//!
//! - `fuzz_snapshot_files`: a stored snapshot's manifest and chunk files are
//!   damaged (raw edits; manifest edits re-sealed with a valid trailer, so
//!   the parser behind it is reached), then `load_latest` and, for whatever
//!   loads, `Machine::restore`: errors, never panics.
//! - `fuzz_snapshot_inner`: a snapshot whose chunks were edited before the
//!   store wrote them, so every outer checksum is valid and only the state
//!   decoders stand between the bytes and the machine.
//! - `fuzz_bundle_import`: a bundle (what a replica fetches from the
//!   JetStream object store) edited raw or re-sealed, imported into an
//!   empty store, then loaded and restored.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

use bursar_core::Limits;
use bursar_core::command::{Command, LogCommand, Operation};
use bursar_core::machine::Machine;
use bursar_core::orders::{Actor, CommandKind, OrderCommand, OrderCreate};
use bursar_core::records::encode_all;
use bursar_core::state::{ChunkBytes, Snapshot, SnapshotSection};
use bursar_core::{Account, Ledger, Transfer};
use bursar_fuzz as fz;
use bursar_log::SnapshotStore;
use proptest::prelude::*;
use proptest::sample::Index;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const CHAIN: [u8; 32] = [7; 32];
const SEC: u64 = 1_000_000_000;

/// A payment order from ledger 1 to ledger 2.
fn order(id: u128) -> OrderCreate {
    let mut o = OrderCreate {
        id,
        customer_id: 77,
        source_amount: 10_000,
        fee_amount: 150,
        source_ledger: 1,
        target_ledger: 2,
        funds_timeout_seconds: 60,
        review_timeout_seconds: 600,
        pii_len: 3,
        ..Default::default()
    };
    o.pii[..3].copy_from_slice(b"xyz");
    o
}

/// A small machine with ledgers, accounts, transfers (plain and pending)
/// and orders (open, and final: those are in their own sections).
fn machine() -> Machine {
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").expect("asset"), ..Default::default() };
    let eur = Ledger { id: 2, scale: 2, asset: Ledger::pack_asset("EUR").expect("asset"), ..Default::default() };
    let accounts: Vec<Account> = (1..=4).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    let t = |id: u128, flags: u16, timeout: u32| Transfer {
        id,
        debit_account_id: 1 + id % 3,
        credit_account_id: 4,
        amount: id * 10,
        ledger: 1,
        code: 1,
        flags,
        timeout,
        ..Default::default()
    };
    let transfers = [t(10, 0, 0), t(11, 2, 60), t(12, 0, 0), t(13, 2, 0)];
    let ledgers = [usd, eur];
    let orders = [order(50), order(51), order(52)];
    let cancels = [
        OrderCommand::new(50, CommandKind::Cancel, Actor::Executor),
        OrderCommand::new(52, CommandKind::Cancel, Actor::Executor),
    ];
    let mut m = Machine::new(Limits::default());
    let entries: [(Operation, &[u8]); 5] = [
        (Operation::CreateLedgers, encode_all(&ledgers)),
        (Operation::CreateAccounts, encode_all(&accounts)),
        (Operation::CreateTransfers, encode_all(&transfers)),
        (Operation::CreateOrders, encode_all(&orders)),
        (Operation::OrderCommands, encode_all(&cancels)),
    ];
    for (i, (operation, events)) in entries.into_iter().enumerate() {
        let command = LogCommand::Plain(Command { operation, events });
        m.apply_entry(i as u64 + 1, 1_000 * SEC + i as u64 * SEC, &[command]);
    }
    m
}

/// A store holding one snapshot of `machine()`, built once; cases copy it.
fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = SnapshotStore::open(dir.path()).expect("store");
        store.write(&machine().snapshot(), CHAIN).expect("write snapshot");
        dir
    })
    .path()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("dir");
    for e in fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).expect("copy");
        }
    }
}

fn files(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let root = dir.join("snapshots");
    let manifest = fs::read_dir(&root)
        .expect("store dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "manifest"))
        .expect("a manifest");
    let mut chunks: Vec<PathBuf> =
        fs::read_dir(root.join("chunks")).expect("chunks dir").map(|e| e.expect("entry").path()).collect();
    chunks.sort();
    (manifest, chunks)
}

/// Recomputes a blake3 trailer over everything before the last 32 bytes.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= 32 {
        let at = bytes.len() - 32;
        let trailer = *blake3::hash(&bytes[..at]).as_bytes();
        bytes[at..].copy_from_slice(&trailer);
    }
}

/// Loads the newest snapshot and restores it; neither may panic.
fn load_and_restore(dir: &Path) -> Result<(), TestCaseError> {
    let store = SnapshotStore::open_read_only(dir).expect("read-only open touches nothing");
    match store.load_latest() {
        Ok(Some(loaded)) => {
            if let Ok(m) = Machine::restore(Limits::default(), loaded.chunks) {
                m.check_invariants_deep().map_err(|e| TestCaseError::fail(format!("restored, but: {e}")))?;
            }
        }
        Ok(None) => {}
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum FileDamage {
    Manifest(Vec<fz::Mutation>, bool),
    Chunk(Index, Vec<fz::Mutation>),
}

fn file_damage() -> impl Strategy<Value = FileDamage> {
    prop_oneof![
        (fz::mutations(4), any::<bool>()).prop_map(|(m, reseal)| FileDamage::Manifest(m, reseal)),
        (any::<Index>(), fz::mutations(4)).prop_map(|(c, m)| FileDamage::Chunk(c, m)),
    ]
}

/// A snapshot made of given bytes, for the store to write as it would a
/// real one (so every checksum it writes is valid).
struct Edited {
    position: u64,
    header: Vec<u8>,
    sections: Vec<(&'static str, Vec<Vec<u8>>)>,
}

impl Snapshot for Edited {
    fn position(&self) -> u64 {
        self.position
    }

    fn header(&self) -> Vec<u8> {
        self.header.clone()
    }

    fn sections(&self) -> Vec<SnapshotSection> {
        let chunk = |c: &Vec<u8>| Arc::new(c.clone()) as Arc<dyn ChunkBytes>;
        self.sections
            .iter()
            .map(|(name, chunks)| SnapshotSection { name, chunks: chunks.iter().map(chunk).collect() })
            .collect()
    }
}

fn edited(header_edits: &[fz::Mutation], section: &Index, chunk: &Index, edits: &[fz::Mutation]) -> Edited {
    let snap = machine().snapshot();
    let mut sections: Vec<(&'static str, Vec<Vec<u8>>)> =
        snap.sections().iter().map(|s| (s.name, s.chunks.iter().map(|c| c.bytes().to_vec()).collect())).collect();
    let with_chunks: Vec<usize> = (0..sections.len()).filter(|i| !sections[*i].1.is_empty()).collect();
    let s = with_chunks[section.index(with_chunks.len())];
    let chunks = &mut sections[s].1;
    let c = chunk.index(chunks.len());
    chunks[c] = fz::mutated(std::mem::take(&mut chunks[c]), edits);
    Edited { position: snap.position(), header: fz::mutated(snap.header(), header_edits), sections }
}

fn bundle() -> &'static [u8] {
    static BUNDLE: OnceLock<Vec<u8>> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let store = SnapshotStore::open_read_only(base()).expect("store");
        let position = *store.list().expect("list").last().expect("a snapshot");
        let mut out = Vec::new();
        store.export_bundle(position, &mut out).expect("export");
        out
    })
}

proptest! {
    #![proptest_config(fz::config(64))]

    #[test]
    fn fuzz_snapshot_files(damages in proptest::collection::vec(file_damage(), 1..3)) {
        let work = tempfile::tempdir().expect("temp dir");
        copy_dir(base(), work.path());
        let (manifest, chunks) = files(work.path());
        for d in &damages {
            match d {
                FileDamage::Manifest(m, reseal_it) => {
                    let mut bytes = fz::mutated(fs::read(&manifest).expect("manifest"), m);
                    if *reseal_it {
                        reseal(&mut bytes);
                    }
                    fs::write(&manifest, bytes).expect("write manifest");
                }
                FileDamage::Chunk(c, m) => {
                    let path = &chunks[c.index(chunks.len())];
                    fs::write(path, fz::mutated(fs::read(path).expect("chunk"), m)).expect("write chunk");
                }
            }
        }
        load_and_restore(work.path())?;
    }

    #[test]
    fn fuzz_snapshot_inner(
        header_edits in prop_oneof![3 => Just(Vec::new()), 1 => fz::mutations(3)],
        section in any::<Index>(),
        chunk in any::<Index>(),
        edits in fz::mutations(6),
    ) {
        let work = tempfile::tempdir().expect("temp dir");
        let mut store = SnapshotStore::open(work.path()).expect("store");
        let snap = edited(&header_edits, &section, &chunk, &edits);
        store.write(&snap, CHAIN).expect("the store writes any bytes");
        load_and_restore(work.path())?;
    }

    #[test]
    fn fuzz_bundle_import(edits in fz::mutations(4), reseal_it in any::<bool>()) {
        let mut bytes = fz::mutated(bundle().to_vec(), &edits);
        if reseal_it {
            reseal(&mut bytes);
        }
        let work = tempfile::tempdir().expect("temp dir");
        let mut store = SnapshotStore::open(work.path()).expect("store");
        match store.import_bundle(&mut bytes.as_slice()) {
            Ok(_) => load_and_restore(work.path())?,
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn undamaged_snapshot_and_bundle_restore() {
    let store = SnapshotStore::open_read_only(base()).unwrap();
    let loaded = store.load_latest().unwrap().unwrap();
    let m = Machine::restore(Limits::default(), loaded.chunks).unwrap();
    assert_eq!(m.digest(), machine().digest());
    assert_eq!((m.orders().open_len(), m.orders().finals().len()), (1, 2), "the fuzzed snapshot holds final orders");
    let work = tempfile::tempdir().unwrap();
    SnapshotStore::open(work.path()).unwrap().import_bundle(&mut bundle()).unwrap();
    let loaded = SnapshotStore::open_read_only(work.path()).unwrap().load_latest().unwrap().unwrap();
    assert_eq!(Machine::restore(Limits::default(), loaded.chunks).unwrap().digest(), m.digest());
}

//! The snapshot store against real states of the core state machine.

mod common;

use bursar_core::command::{Command, Operation};
use bursar_core::records::encode_all;
use bursar_core::state::StateSnapshot;
use bursar_core::{Account, Ledger, Limits, StateMachine, Transfer};
use bursar_log::{LogError, SnapshotStore};
use common::flip_bit;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Accounts per arena chunk is 4096: 5000 accounts make two chunks.
const ACCOUNTS: u128 = 5000;

struct State {
    sm: StateMachine,
    next_transfer: u128,
}

impl State {
    fn new() -> State {
        let mut s = State { sm: StateMachine::new(Limits::default()), next_transfer: 1 };
        let ledger = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
        s.apply(Operation::CreateLedgers, encode_all(&[ledger]));
        let accounts: Vec<Account> =
            (1..=ACCOUNTS).map(|id| Account { id, ledger: 1, code: 10, ..Default::default() }).collect();
        s.apply(Operation::CreateAccounts, encode_all(&accounts));
        assert_eq!(s.sm.account_count(), ACCOUNTS as usize);
        s
    }

    fn apply(&mut self, operation: Operation, events: &[u8]) {
        let position = self.sm.position() + 1;
        let results = self.sm.apply_entry(position, position * 1_000_000, &[Command { operation, events }]);
        assert!(results[0].is_empty(), "{:?}", results[0]);
    }

    /// Transfers between accounts of the second account chunk only.
    fn transfers(&mut self, count: u128) {
        let transfers: Vec<Transfer> = (0..count)
            .map(|i| {
                let id = self.next_transfer + i;
                let (dr, cr) = (4097 + id % 50, 4200 + id % 50);
                Transfer {
                    id,
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount: 1 + i,
                    ledger: 1,
                    code: 1,
                    ..Default::default()
                }
            })
            .collect();
        self.next_transfer += count;
        self.apply(Operation::CreateTransfers, encode_all(&transfers));
    }
}

fn chain(position: u64) -> [u8; 32] {
    *blake3::hash(&position.to_le_bytes()).as_bytes()
}

fn chunk_files(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir.join("snapshots/chunks")).unwrap().map(|e| e.unwrap().path()).collect()
}

/// The chunk files a snapshot needs, named by the hash of their bytes.
fn needed_chunks(dir: &Path, snap: &StateSnapshot) -> BTreeSet<PathBuf> {
    snap.sections()
        .iter()
        .flat_map(|s| s.chunks.iter().map(|c| blake3::hash(c.bytes()).to_hex().to_string()))
        .map(|hex| dir.join(format!("snapshots/chunks/{hex}.chunk")))
        .collect()
}

fn manifest(dir: &Path, position: u64) -> PathBuf {
    dir.join(format!("snapshots/snapshot-{position:020}.manifest"))
}

fn restore_digest(store: &SnapshotStore) -> (u64, [u8; 32], [u8; 32], usize) {
    let s = store.load_latest().unwrap().expect("a snapshot");
    let (position, chain, digest, skipped) = (s.position, s.chain, s.digest, s.skipped.len());
    let sm = StateMachine::restore(Limits::default(), s.chunks).unwrap();
    assert_eq!(sm.digest(), digest, "the restored state has the stored digest");
    assert_eq!(sm.position(), position);
    (position, chain, digest, skipped)
}

#[test]
fn write_then_load_restores_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    assert!(store.load_latest().unwrap().is_none());
    let mut st = State::new();
    st.transfers(100);
    let snap = st.sm.snapshot();
    let info = store.write(&snap, chain(snap.position)).unwrap();
    assert_eq!((info.position, info.digest, info.chunks_reused), (st.sm.position(), st.sm.digest(), 0));
    assert!(info.chunks_written >= 4 && info.bytes_written > 640_000, "{info:?}");
    assert_eq!(store.list().unwrap(), vec![st.sm.position()]);
    let reopened = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(restore_digest(&reopened), (st.sm.position(), chain(st.sm.position()), st.sm.digest(), 0));
}

#[test]
fn unchanged_chunks_are_reused_by_identity_and_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    let mut st = State::new();
    st.transfers(10);
    let first = store.write(&st.sm.snapshot(), chain(3)).unwrap();
    st.transfers(5);
    let snap = st.sm.snapshot();
    let second = store.write(&snap, chain(4)).unwrap();
    assert!(second.chunks_reused >= 1, "the first account chunk did not change: {second:?}");
    assert!(second.bytes_written + 500_000 < first.bytes_written, "{first:?} {second:?}");
    assert_eq!(second.chunks_written + second.chunks_reused, first.chunks_written + first.chunks_reused);

    // A new store instance knows no Arcs: it hashes and finds every chunk on disk.
    let mut fresh = SnapshotStore::open(dir.path()).unwrap();
    let again = fresh.write(&snap, chain(4)).unwrap();
    assert_eq!((again.chunks_written, again.chunks_reused), (0, second.chunks_written + second.chunks_reused));
    assert_eq!(restore_digest(&fresh).2, st.sm.digest());
}

#[test]
fn a_damaged_chunk_or_manifest_falls_back_to_the_previous_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    let mut st = State::new();
    st.transfers(10);
    let old = (st.sm.position(), chain(st.sm.position()), st.sm.digest(), 1);
    store.write(&st.sm.snapshot(), old.1).unwrap();
    let old_chunks = chunk_files(dir.path());
    st.transfers(5);
    let snap = st.sm.snapshot();
    store.write(&snap, chain(st.sm.position())).unwrap();
    let new_chunks = needed_chunks(dir.path(), &snap);
    drop(snap);
    let new_only: Vec<PathBuf> = new_chunks.difference(&old_chunks).cloned().collect();
    assert!(!new_only.is_empty());

    for bit in [0, 8 * 12, 8 * 16 + 3, fs::metadata(&new_only[0]).unwrap().len() * 8 - 1] {
        flip_bit(&new_only[0], bit);
        assert_eq!(restore_digest(&store), old, "chunk bit {bit}");
        let s = store.load_latest().unwrap().unwrap();
        assert!(s.skipped[0].is_corrupt() && s.skipped[0].to_string().contains(".chunk"), "{:?}", s.skipped);
        flip_bit(&new_only[0], bit);
    }
    assert_eq!(restore_digest(&store).0, st.sm.position());

    let newest = manifest(dir.path(), st.sm.position());
    let len = fs::metadata(&newest).unwrap().len();
    for byte in 0..len {
        let bit = byte * 8 + byte % 8;
        flip_bit(&newest, bit);
        assert_eq!(restore_digest(&store), old, "manifest bit {bit}");
        flip_bit(&newest, bit);
    }
    let bytes = fs::read(&newest).unwrap();
    fs::write(&newest, &bytes[..bytes.len() - 1]).unwrap();
    assert_eq!(restore_digest(&store), old, "truncated manifest");
    fs::remove_file(&new_only[0]).unwrap();
    fs::write(&newest, &bytes).unwrap();
    assert_eq!(restore_digest(&store), old, "missing chunk");

    // A chunk both snapshots use: nothing verifies, nothing is returned.
    let shared = new_chunks.intersection(&old_chunks).next().expect("the first account chunk is shared");
    flip_bit(shared, 200);
    assert!(store.load_latest().unwrap().is_none(), "a damaged snapshot is never returned");
}

#[test]
fn prune_keeps_only_what_the_kept_manifests_need() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    let mut st = State::new();
    let mut positions = Vec::new();
    let mut chunks_of_last = BTreeSet::new();
    for _ in 0..3 {
        st.transfers(7);
        let snap = st.sm.snapshot();
        store.write(&snap, chain(snap.position)).unwrap();
        positions.push(snap.position);
        chunks_of_last = needed_chunks(dir.path(), &snap);
    }
    assert_eq!(store.list().unwrap(), positions);
    assert!(chunk_files(dir.path()).len() > chunks_of_last.len());
    store.prune(2).unwrap();
    assert_eq!(store.list().unwrap(), positions[1..].to_vec());
    store.prune(1).unwrap();
    assert_eq!(store.list().unwrap(), positions[2..].to_vec());
    assert_eq!(chunk_files(dir.path()), chunks_of_last, "exactly the chunks the kept manifest names");
    assert_eq!(restore_digest(&store).2, st.sm.digest());

    // Pruning forgets identities of deleted chunks: a later write still stores everything it needs.
    st.transfers(3);
    store.write(&st.sm.snapshot(), chain(st.sm.position())).unwrap();
    store.prune(1).unwrap();
    assert_eq!(restore_digest(&store).2, st.sm.digest());
}

#[test]
fn temp_files_are_removed_and_read_only_stores_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SnapshotStore::open(dir.path()).unwrap();
    let st = State::new();
    store.write(&st.sm.snapshot(), chain(2)).unwrap();
    let temp = dir.path().join("snapshots/chunks/abc.chunk.tmp");
    fs::write(&temp, b"partial").unwrap();
    let mut ro = SnapshotStore::open_read_only(dir.path()).unwrap();
    assert!(temp.exists(), "read-only open changes nothing");
    assert!(matches!(ro.write(&st.sm.snapshot(), chain(2)), Err(LogError::ReadOnly { .. })));
    assert!(matches!(ro.prune(0), Err(LogError::ReadOnly { .. })));
    assert_eq!(ro.load(2).unwrap().digest, st.sm.digest());
    SnapshotStore::open(dir.path()).unwrap();
    assert!(!temp.exists());
    let empty = SnapshotStore::open_read_only(&dir.path().join("nothing")).unwrap();
    assert_eq!(empty.list().unwrap(), Vec::<u64>::new());
}

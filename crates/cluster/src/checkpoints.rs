//! State digests at regular log positions, for the divergence guard.
//!
//! The engine hands over a frozen view (O(chunks) to take) at every
//! multiple of the checkpoint interval; this thread hashes it. A digest
//! covers the whole state, gigabytes at 10M transfers, so chunks that did
//! not change since the last checkpoint are not hashed again: a chunk
//! shared with the previous view (same allocation) has the same bytes,
//! because the state copies a chunk before writing to it while a view
//! holds it. The previous view's sections are kept alive so no cached
//! address can be reused by a new allocation. Chunks already on disk
//! (cold history) are never read back: their stored hash is their hash.

use bursar_core::machine::MachineSnapshot;
use bursar_core::state::{Snapshot, SnapshotSection, digest_from_chunk_hashes};
use std::collections::HashMap;
use tokio::sync::mpsc;

/// Views waiting to be hashed; the engine waits when this many are queued.
pub const QUEUED_MAX: usize = 2;

/// Hashes states incrementally (see the module docs).
#[derive(Default)]
pub struct Digester {
    /// Chunk address and length → hash, for the chunks of `previous`.
    known: HashMap<(usize, usize), [u8; 32]>,
    previous: Vec<SnapshotSection>,
}

impl Digester {
    /// The digest of `view`, equal to `Snapshot::digest` of it.
    pub fn digest(&mut self, view: &MachineSnapshot) -> [u8; 32] {
        let sections = view.sections();
        let mut known = HashMap::with_capacity(self.known.len());
        let hashes: Vec<(&str, Vec<[u8; 32]>)> = sections
            .iter()
            .map(|s| {
                let chunk_hashes = s
                    .chunks
                    .iter()
                    .map(|c| {
                        // A cold chunk is known by the hash it is stored
                        // under (blake3 of its bytes, as below): reading it
                        // back would cost a disk read per checkpoint, and
                        // the view kept in `previous` would hold its bytes,
                        // so every cold chunk would come back into RAM.
                        if let Some(stored) = c.stored() {
                            return stored.hash;
                        }
                        let bytes = c.bytes();
                        let key = (bytes.as_ptr() as usize, bytes.len());
                        let hash = match self.known.get(&key) {
                            Some(h) => *h,
                            None => *blake3::hash(bytes).as_bytes(),
                        };
                        known.insert(key, hash);
                        hash
                    })
                    .collect();
                (s.name, chunk_hashes)
            })
            .collect();
        let refs: Vec<(&str, &[[u8; 32]])> = hashes.iter().map(|(n, h)| (*n, h.as_slice())).collect();
        let digest = digest_from_chunk_hashes(&view.header(), &refs);
        self.known = known;
        self.previous = sections;
        digest
    }
}

/// Runs the digest thread: views in, `(position, digest)` out (to the
/// divergence guard). Ends when either side closes.
pub fn spawn(
    views: std::sync::mpsc::Receiver<MachineSnapshot>,
    digests: mpsc::Sender<(u64, [u8; 32])>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("bursar-digest".into()).spawn(move || {
        let mut digester = Digester::default();
        for view in views {
            let started = std::time::Instant::now();
            let digest = digester.digest(&view);
            metrics::histogram!("bursar_cluster_digest_seconds").record(started.elapsed().as_secs_f64());
            if digests.blocking_send((view.position(), digest)).is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Digester;
    use bursar_core::arena::{ChunkReadError, ChunkReader, StoredChunk};
    use bursar_core::command::{Command, LogCommand, Operation};
    use bursar_core::machine::Machine;
    use bursar_core::records::{Account, Ledger, Transfer, encode_all};
    use bursar_core::state::{COLD_SECTIONS, Snapshot};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// Chunks "on disk" in memory, counting every read back.
    #[derive(Default)]
    struct CountingStore {
        chunks: Mutex<HashMap<[u8; 32], Vec<u8>>>,
        reads: AtomicUsize,
    }

    impl ChunkReader for CountingStore {
        fn read(&self, chunk: &StoredChunk, offset: u64, out: &mut [u8]) -> Result<(), ChunkReadError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let chunks = self.chunks.lock().unwrap();
            let bytes = chunks.get(&chunk.hash).ok_or("no such chunk")?;
            out.copy_from_slice(&bytes[offset as usize..offset as usize + out.len()]);
            Ok(())
        }
    }

    impl CountingStore {
        /// Stores every chunk of `view` that may go cold, as a snapshot
        /// store would (named by the blake3 of its bytes), and lets them go
        /// cold in `m`; returns how many did.
        fn checkpoint(&self, m: &mut Machine) -> usize {
            let view = m.snapshot();
            let stored: Vec<Vec<StoredChunk>> = view
                .sections()
                .iter()
                .map(|s| {
                    s.chunks
                        .iter()
                        .map(|c| {
                            if !COLD_SECTIONS.contains(&s.name) {
                                return StoredChunk { hash: [0; 32], len: 0 };
                            }
                            let hash = *blake3::hash(c.bytes()).as_bytes();
                            self.chunks.lock().unwrap().insert(hash, c.bytes().to_vec());
                            StoredChunk { hash, len: c.bytes().len() as u64 }
                        })
                        .collect()
                })
                .collect();
            m.release_stored(&view, &stored)
        }
    }

    fn apply(m: &mut Machine, op: Operation, events: &[u8]) {
        let position = m.position() + 1;
        m.apply_entry(position, position * 1_000_000_000, &[LogCommand::Plain(Command { operation: op, events })]);
    }

    fn transfers(from: u128, n: u128) -> Vec<Transfer> {
        (from..from + n)
            .map(|id| Transfer {
                id,
                debit_account_id: 1 + id % 50,
                credit_account_id: 1 + (id + 1) % 50,
                amount: id,
                ledger: 1,
                code: 1,
                ..Default::default()
            })
            .collect()
    }

    /// A machine with ledger 1 and accounts 1 to 50.
    fn machine_with_accounts() -> Machine {
        let mut m = Machine::default();
        let ledger = [Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() }];
        apply(&mut m, Operation::CreateLedgers, encode_all(&ledger));
        let accounts: Vec<Account> =
            (1..=50).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
        apply(&mut m, Operation::CreateAccounts, encode_all(&accounts));
        m
    }

    #[test]
    fn incremental_digests_equal_full_digests_as_the_state_changes() {
        let mut m = machine_with_accounts();
        let mut digester = Digester::default();
        let mut seen = Vec::new();
        for round in 0..6u128 {
            // Enough transfers to fill several arena chunks, so some stay shared.
            for batch in 0..4 {
                apply(
                    &mut m,
                    Operation::CreateTransfers,
                    encode_all(&transfers(1 + round * 40_000 + batch * 8_000, 8_000)),
                );
            }
            let incremental = digester.digest(&m.snapshot());
            assert_eq!(incremental, m.digest(), "round {round}: the incremental digest differs from the full one");
            // Asking again without a change gives the same digest from the cache.
            assert_eq!(digester.digest(&m.snapshot()), incremental);
            seen.push(incremental);
        }
        seen.dedup();
        assert_eq!(seen.len(), 6, "every change changes the digest");
    }

    /// Cold history is hashed by the hash it is stored under: the digest is
    /// the one of the same state in RAM, and nothing is read back from disk
    /// (a read per cold chunk per checkpoint, and the bytes kept with the
    /// previous view, would bring all history back into memory).
    #[test]
    fn cold_chunks_are_digested_by_their_stored_hash_without_reading_them() {
        let mut m = machine_with_accounts();
        let store = Arc::new(CountingStore::default());
        m.set_chunk_reader(store.clone());
        for batch in 0..25 {
            apply(&mut m, Operation::CreateTransfers, encode_all(&transfers(1 + batch * 8_000, 8_000)));
        }
        let mut digester = Digester::default();
        let hot = digester.digest(&m.snapshot());
        assert_eq!(hot, m.digest(), "all in RAM: the incremental digest is the full one");
        let released = store.checkpoint(&mut m);
        assert!(released >= 2, "three full transfer chunks: the older ones (and their events) go cold, not {released}");
        assert_eq!(Digester::default().digest(&m.snapshot()), hot, "a fresh digester over cold chunks");
        assert_eq!(digester.digest(&m.snapshot()), hot, "the digester that saw the chunks hot");
        assert_eq!(digester.digest(&m.snapshot()), hot, "again, from what it remembers");
        assert_eq!(store.reads.load(Ordering::Relaxed), 0, "no cold chunk was read back to be digested");
    }
}

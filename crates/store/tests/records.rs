//! Record files against what they promise: every appended record reads
//! back at its position, through any mix of appends, syncs, crashes and
//! reopens (a model-based property test against a `Vec`); a crash keeps
//! exactly the durable records; damaged or missing bytes are `Corrupt`,
//! naming the file and the offset.

use bursar_store::block::{BlockAddress, BlockFault};
use bursar_store::cache::BlockCache;
use bursar_store::limits::{BLOCK_SIZE, CACHE_BYTES_MIN};
use bursar_store::records::RecordFile;
use bursar_store::{Fault, StoreError};
use bytemuck::{Pod, Zeroable};
use proptest::prelude::*;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A transfer-sized record: 128 bytes, 511 to a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Transfer {
    id: u128,
    body: [u64; 14],
}

/// The largest record: 15 to a block, so tests cross many block boundaries.
type Page = [u64; 512];

/// Record `position` of lineage `salt` (a crash and different appends
/// after it start a new lineage, so stale bytes cannot pass for new ones).
trait Make: Pod + std::fmt::Debug + PartialEq {
    fn make(position: u64, salt: u64) -> Self;
}

impl Make for Transfer {
    fn make(position: u64, salt: u64) -> Transfer {
        Transfer { id: u128::from(position) << 64 | u128::from(salt), body: [position ^ salt.rotate_left(7); 14] }
    }
}

impl Make for Page {
    fn make(position: u64, salt: u64) -> Page {
        let mut page = [position; 512];
        page[511] = salt;
        page
    }
}

fn records<T: Make>(from: u64, count: u64, salt: u64) -> Vec<T> {
    (from..from + count).map(|p| T::make(p, salt)).collect()
}

fn file_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("transfers.rec")
}

fn read_all<T: Make>(file: &RecordFile<T>, cache: &BlockCache) -> Vec<T> {
    (0..file.len()).map(|p| file.get(p, cache).unwrap()).collect()
}

fn expect_corrupt<T>(result: Result<T, StoreError>) -> (PathBuf, u64, Fault) {
    match result {
        Err(StoreError::Corrupt { file, offset, fault }) => (file, offset, fault),
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, got a value"),
    }
}

/// Flips single bits of a file in place, through one open handle.
struct Flipper(std::fs::File);

impl Flipper {
    fn new(path: &Path) -> Flipper {
        Flipper(OpenOptions::new().read(true).write(true).open(path).unwrap())
    }

    fn flip(&self, bit: u64) {
        let mut byte = [0u8];
        self.0.read_exact_at(&mut byte, bit / 8).unwrap();
        byte[0] ^= 1 << (bit % 8);
        self.0.write_all_at(&byte, bit / 8).unwrap();
    }
}

#[test]
fn records_appended_one_at_a_time_or_in_batches_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Transfer>::create(&file_in(&dir), 1, &cache).unwrap();
    assert_eq!(RecordFile::<Transfer>::PER_BLOCK, 511);
    let expected: Vec<Transfer> = records(0, 3000, 0);
    for one in &expected[..600] {
        file.append(std::slice::from_ref(one)).unwrap();
    }
    file.append(&expected[600..2999]).unwrap();
    file.append(&expected[2999..]).unwrap();
    assert_eq!(file.len(), 3000);
    assert_eq!(read_all(&file, &cache), expected);
    let mut page = Vec::new();
    file.read_range(500, 1100, &cache, &mut page).unwrap();
    assert_eq!(page, expected[500..1600]);
    // The file holds the two tail slots and five full blocks; the tail
    // goes to a slot on sync.
    assert_eq!(std::fs::metadata(file.path()).unwrap().len(), 7 * BLOCK_SIZE as u64);
    assert_eq!(file.sync().unwrap(), 3000);
    assert_eq!(std::fs::metadata(file.path()).unwrap().len(), 7 * BLOCK_SIZE as u64);
    let reopened = RecordFile::<Transfer>::open(&file_in(&dir), 1, 3000, &cache).unwrap();
    assert_eq!(read_all(&reopened, &cache), expected);
}

#[test]
fn a_crash_before_sync_reopens_at_the_durable_length() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Page>::create(&file_in(&dir), 2, &cache).unwrap();
    file.append(&records::<Page>(0, 20, 0)).unwrap();
    assert_eq!(file.sync().unwrap(), 20);
    // More records, filling and writing blocks 1 and 2 and re-sealing the
    // tail on a sync the manifest never heard of, then more unsynced.
    file.append(&records::<Page>(20, 20, 0)).unwrap();
    file.sync().unwrap();
    file.append(&records::<Page>(40, 7, 0)).unwrap();
    read_all(&file, &cache); // the cache now holds blocks past the durable length
    drop(file); // the crash: no sync
    let mut file = RecordFile::<Page>::open(&file_in(&dir), 2, 20, &cache).unwrap();
    assert_eq!((file.len(), file.durable_len()), (20, 20));
    assert_eq!(read_all(&file, &cache), records::<Page>(0, 20, 0));
    assert_eq!(std::fs::metadata(file.path()).unwrap().len(), 3 * BLOCK_SIZE as u64, "cut back to one full block");
    // A new lineage after the crash: stale cached blocks never show through.
    file.append(&records::<Page>(20, 30, 1)).unwrap();
    let expected = [records::<Page>(0, 20, 0), records::<Page>(20, 30, 1)].concat();
    assert_eq!(read_all(&file, &cache), expected);
    file.sync().unwrap();
    let file = RecordFile::<Page>::open(&file_in(&dir), 2, 50, &cache).unwrap();
    assert_eq!(read_all(&file, &cache), expected);
}

#[test]
fn a_file_shorter_than_its_durable_length_is_truncated_corruption_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Page>::create(&path, 3, &cache).unwrap();
    file.append(&records::<Page>(0, 40, 0)).unwrap();
    file.sync().unwrap();
    drop(file);
    // Cut while open: the read of a full block names the cut.
    let file = RecordFile::<Page>::open(&path, 3, 30, &cache).unwrap();
    let cut = 3 * BLOCK_SIZE as u64 + 10;
    OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
    let (named, offset, fault) = expect_corrupt(file.get(15, &cache));
    assert_eq!((named, offset), (path.clone(), 3 * BLOCK_SIZE as u64));
    assert_eq!(fault, Fault::Truncated { len: cut, expected: 4 * BLOCK_SIZE as u64 });
    drop(file);
    // Cut before open.
    let (named, offset, fault) = expect_corrupt(RecordFile::<Page>::open(&path, 3, 40, &cache));
    assert_eq!((named, offset), (path.clone(), cut));
    assert_eq!(fault, Fault::Truncated { len: cut, expected: 4 * BLOCK_SIZE as u64 });
    let message = RecordFile::<Page>::open(&path, 3, 40, &cache).err().unwrap().to_string();
    assert!(message.contains("transfers.rec") && message.contains("offset"), "{message}");
}

#[test]
fn every_flipped_bit_of_a_full_block_is_caught_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(CACHE_BYTES_MIN);
    let mut file = RecordFile::<Transfer>::create(&path, 4, &cache).unwrap();
    let expected = records::<Transfer>(0, 511, 0);
    file.append(&expected).unwrap();
    file.sync().unwrap();
    let file = RecordFile::<Transfer>::open(&path, 4, 511, &cache).unwrap();
    let flipper = Flipper::new(&path);
    let block = 2 * BLOCK_SIZE as u64; // after the two tail slots
    for bit in block * 8..(block + BLOCK_SIZE as u64) * 8 {
        flipper.flip(bit);
        let position = (bit / 8 - block).saturating_sub(32) / 128;
        let (named, offset, fault) = expect_corrupt(file.get(position.min(510), &cache));
        assert_eq!((&named, offset, fault), (&path, block, Fault::Block(BlockFault::Checksum)), "bit {bit}");
        flipper.flip(bit);
    }
    assert_eq!(read_all(&file, &cache), expected);
    assert_eq!(cache.stats().hits, 0, "the one-block cache keeps nothing: every read was checked");
}

/// The slot the last `sync` wrote: the one of the two whose bytes changed.
fn slots(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.truncate(2 * BLOCK_SIZE);
    bytes
}

fn changed_slot(before: &[u8], after: &[u8]) -> Option<u64> {
    (0..2u64).find(|s| {
        let range = *s as usize * BLOCK_SIZE..(*s as usize + 1) * BLOCK_SIZE;
        before[range.clone()] != after[range]
    })
}

#[test]
fn a_torn_tail_write_keeps_the_tail_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Page>::create(&path, 5, &cache).unwrap();
    file.append(&records::<Page>(0, 5, 0)).unwrap();
    assert_eq!(file.sync().unwrap(), 5);
    file.append(&records::<Page>(5, 4, 0)).unwrap();
    let before = slots(&path);
    file.sync().unwrap();
    drop(file);
    // The crash tore the second sync's write: its second half is old bytes.
    let slot = changed_slot(&before, &slots(&path)).expect("the sync wrote a slot");
    let half = slot * BLOCK_SIZE as u64 + BLOCK_SIZE as u64 / 2;
    let old = &before[half as usize..(slot as usize + 1) * BLOCK_SIZE];
    OpenOptions::new().write(true).open(&path).unwrap().write_all_at(old, half).unwrap();
    let file = RecordFile::<Page>::open(&path, 5, 5, &cache).unwrap();
    assert_eq!(read_all(&file, &cache), records::<Page>(0, 5, 0));
    drop(file);
    // The manifest cannot say 9 (that sync never returned), but if it did,
    // the damage is named, not papered over.
    let (named, offset, fault) = expect_corrupt(RecordFile::<Page>::open(&path, 5, 9, &cache));
    assert_eq!((named, offset, fault), (path, slot * BLOCK_SIZE as u64, Fault::Block(BlockFault::Checksum)));
}

#[test]
fn a_flipped_bit_in_either_tail_slot_falls_back_to_the_other_or_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Page>::create(&path, 5, &cache).unwrap();
    file.append(&records::<Page>(0, 8, 0)).unwrap();
    file.sync().unwrap();
    file.append(&records::<Page>(8, 4, 0)).unwrap();
    let before = slots(&path);
    file.sync().unwrap();
    drop(file);
    let newest = changed_slot(&before, &slots(&path)).unwrap();
    let flipper = Flipper::new(&path);
    // A step of 7 bits flips a bit in every byte, at every bit position;
    // every single-bit flip is covered by the full-block test above.
    for bit in (0..2 * BLOCK_SIZE as u64 * 8).step_by(7) {
        flipper.flip(bit);
        let slot = bit / 8 / BLOCK_SIZE as u64;
        // At 8 records, both slots hold the tail: either one will do.
        let file = RecordFile::<Page>::open(&path, 5, 8, &cache).unwrap();
        assert_eq!(read_all(&file, &cache), records::<Page>(0, 8, 0), "bit {bit}");
        drop(file);
        // At 12, only the newest does.
        let opened = RecordFile::<Page>::open(&path, 5, 12, &cache);
        if slot == newest {
            let (named, offset, fault) = expect_corrupt(opened);
            assert_eq!((&named, offset, fault), (&path, slot * BLOCK_SIZE as u64, Fault::Block(BlockFault::Checksum)));
        } else {
            assert_eq!(read_all(&opened.unwrap(), &cache), records::<Page>(0, 12, 0), "bit {bit}");
        }
        flipper.flip(bit);
    }
}

#[test]
fn the_newest_tail_wins_over_a_longer_one_from_before_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Page>::create(&path, 13, &cache).unwrap();
    file.append(&records::<Page>(0, 4, 0)).unwrap();
    assert_eq!(file.sync().unwrap(), 4);
    // Lineage 0 reaches 10, then 12 records, in both slots; the manifest
    // stays at 4.
    file.append(&records::<Page>(4, 6, 0)).unwrap();
    file.sync().unwrap();
    file.append(&records::<Page>(10, 2, 0)).unwrap();
    file.sync().unwrap();
    drop(file);
    let mut file = RecordFile::<Page>::open(&path, 13, 4, &cache).unwrap();
    // Lineage 1 reaches 10 records in the other slot; the manifest says 10.
    file.append(&records::<Page>(4, 6, 1)).unwrap();
    assert_eq!(file.sync().unwrap(), 10);
    drop(file);
    let file = RecordFile::<Page>::open(&path, 13, 10, &cache).unwrap();
    assert_eq!(read_all(&file, &cache), [records::<Page>(0, 4, 0), records::<Page>(4, 6, 1)].concat());
}

#[test]
fn a_tail_that_filled_after_the_manifest_is_recovered_from_its_full_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Page>::create(&path, 12, &cache).unwrap();
    file.append(&records::<Page>(0, 20, 0)).unwrap();
    assert_eq!(file.sync().unwrap(), 20);
    // Block 1 fills and two more syncs move both slots on to block 2.
    file.append(&records::<Page>(20, 12, 0)).unwrap();
    file.sync().unwrap();
    file.append(&records::<Page>(32, 1, 0)).unwrap();
    file.sync().unwrap();
    drop(file);
    for _ in 0..2 {
        let file = RecordFile::<Page>::open(&path, 12, 20, &cache).unwrap();
        assert_eq!(read_all(&file, &cache), records::<Page>(0, 20, 0));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * BLOCK_SIZE as u64);
    }
}

#[test]
fn an_intact_file_under_another_id_is_misplaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Page>::create(&path, 6, &cache).unwrap();
    file.append(&records::<Page>(0, 20, 0)).unwrap();
    file.sync().unwrap();
    drop(file);
    let (_, offset, fault) = expect_corrupt(RecordFile::<Page>::open(&path, 7, 20, &cache));
    let expected = BlockAddress { file_id: 7, index: 0 };
    let found = BlockAddress { file_id: 6, index: 0 };
    assert_eq!((offset, fault), (0, Fault::Block(BlockFault::Misplaced { expected, found })));
    let file = RecordFile::<Page>::open(&path, 7, 15, &cache).unwrap();
    let (_, offset, fault) = expect_corrupt(file.get(3, &cache));
    let expected = BlockAddress { file_id: 7, index: 2 };
    let found = BlockAddress { file_id: 6, index: 2 };
    assert_eq!((offset, fault), (2 * BLOCK_SIZE as u64, Fault::Block(BlockFault::Misplaced { expected, found })));
}

#[test]
fn a_tail_with_fewer_records_than_promised_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Page>::create(&path, 8, &cache).unwrap();
    file.append(&records::<Page>(0, 3, 0)).unwrap();
    file.sync().unwrap();
    drop(file);
    let (_, offset, fault) = expect_corrupt(RecordFile::<Page>::open(&path, 8, 14, &cache));
    assert_eq!((offset, fault), (0, Fault::TailLost { block: 0, records: 14 }));
}

#[test]
fn a_tiny_cache_sends_every_read_to_disk_and_a_large_one_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = BlockCache::new(CACHE_BYTES_MIN);
    let mut file = RecordFile::<Transfer>::create(&file_in(&dir), 9, &tiny).unwrap();
    file.append(&records::<Transfer>(0, 2000, 0)).unwrap();
    for _ in 0..2 {
        read_all(&file, &tiny);
    }
    let stats = tiny.stats();
    assert_eq!((stats.hits, stats.misses, stats.blocks), (0, 2 * 3 * 511, 0), "the tail reads from memory");
    let large = BlockCache::new(1 << 22);
    for _ in 0..2 {
        read_all(&file, &large);
    }
    let stats = large.stats();
    assert_eq!((stats.hits, stats.misses, stats.blocks), (2 * 3 * 511 - 3, 3, 3));
}

#[test]
fn readers_on_several_threads_share_one_file_and_one_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(4 * BLOCK_SIZE as u64);
    let mut file = RecordFile::<Transfer>::create(&file_in(&dir), 14, &cache).unwrap();
    file.append(&records::<Transfer>(0, 5000, 0)).unwrap();
    let position = |reader: u64, i: u64| (i * 7919 + reader * 104_729) % 5000;
    let (file, cache) = (&file, &cache);
    std::thread::scope(|scope| {
        for reader in 0..4 {
            scope.spawn(move || {
                for i in 0..2000 {
                    let p = position(reader, i);
                    assert_eq!(file.get(p, cache).unwrap(), Transfer::make(p, 0));
                }
            });
        }
    });
    // Every read of a full block went through the cache; the tail's did not.
    let full = 5000 / 511 * 511;
    let cached = (0..4).flat_map(|r| (0..2000).map(move |i| position(r, i))).filter(|p| *p < full).count();
    let stats = cache.stats();
    assert_eq!(stats.hits + stats.misses, cached as u64);
}

#[test]
fn create_refuses_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(1 << 22);
    RecordFile::<Transfer>::create(&file_in(&dir), 10, &cache).unwrap();
    let err = RecordFile::<Transfer>::create(&file_in(&dir), 10, &cache).err().unwrap();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}

#[test]
#[should_panic(expected = "record 5 of")]
fn reading_past_the_end_is_a_caller_bug() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(1 << 22);
    let mut file = RecordFile::<Transfer>::create(&file_in(&dir), 11, &cache).unwrap();
    file.append(&records::<Transfer>(0, 5, 0)).unwrap();
    let _ = file.get(5, &cache);
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    Append(u64),
    Sync,
    /// Drop without syncing and reopen at the durable length.
    Crash,
    /// Sync, then crash before the caller's manifest records it: reopen at
    /// the durable length before it.
    UnrecordedSync,
    /// Sync, but crash during it, tearing the slot it wrote (its second
    /// half keeps the old bytes); reopen at the durable length before it.
    TornSync,
    Get(u64),
    Range(u64, u64),
}

fn ops(append_max: u64) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0..=append_max).prop_map(Op::Append),
        2 => Just(Op::Sync),
        1 => Just(Op::Crash),
        1 => Just(Op::TornSync),
        1 => Just(Op::UnrecordedSync),
        4 => any::<u64>().prop_map(Op::Get),
        2 => (any::<u64>(), 0..=append_max * 2).prop_map(|(f, c)| Op::Range(f, c)),
    ];
    proptest::collection::vec(op, 1..60)
}

/// Runs `ops` on a record file and on a `Vec`, comparing every read.
fn run_model<T: Make>(ops: &[Op], cache_blocks: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let cache = BlockCache::new(cache_blocks * BLOCK_SIZE as u64);
    let mut file = RecordFile::<T>::create(&path, 42, &cache).unwrap();
    let (mut model, mut durable, mut salt) = (Vec::<T>::new(), 0usize, 0u64);
    for op in ops {
        match *op {
            Op::Append(n) => {
                let batch = records::<T>(model.len() as u64, n, salt);
                file.append(&batch).unwrap();
                model.extend(batch);
            }
            Op::Sync => durable = file.sync().unwrap() as usize,
            Op::Crash => {
                drop(file);
                file = RecordFile::<T>::open(&path, 42, durable as u64, &cache).unwrap();
                model.truncate(durable);
                salt += 1;
            }
            Op::TornSync | Op::UnrecordedSync => {
                let before = slots(&path);
                file.sync().unwrap();
                drop(file);
                let torn = changed_slot(&before, &slots(&path)).filter(|_| matches!(op, Op::TornSync));
                if let Some(slot) = torn {
                    let half = slot as usize * BLOCK_SIZE + BLOCK_SIZE / 2;
                    let old = &before[half..half + BLOCK_SIZE / 2];
                    OpenOptions::new().write(true).open(&path).unwrap().write_all_at(old, half as u64).unwrap();
                }
                file = RecordFile::<T>::open(&path, 42, durable as u64, &cache).unwrap();
                model.truncate(durable);
                salt += 1;
            }
            Op::Get(seed) if !model.is_empty() => {
                let p = seed % model.len() as u64;
                assert_eq!(file.get(p, &cache).unwrap(), model[p as usize], "record {p}");
            }
            Op::Get(_) => {}
            Op::Range(seed, count) => {
                let first = seed % (model.len() as u64 + 1);
                let count = count.min(model.len() as u64 - first) as usize;
                let mut out = Vec::new();
                file.read_range(first, count, &cache, &mut out).unwrap();
                assert_eq!(out, model[first as usize..first as usize + count]);
            }
        }
        assert_eq!((file.len(), file.durable_len()), (model.len() as u64, durable as u64));
    }
    assert_eq!(read_all(&file, &cache), model);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn large_records_behave_like_a_vec(ops in ops(40), cache_blocks in 1..6u64) {
        run_model::<Page>(&ops, cache_blocks);
    }

    #[test]
    fn transfers_behave_like_a_vec(ops in ops(1200), cache_blocks in 1..6u64) {
        run_model::<Transfer>(&ops, cache_blocks);
    }
}

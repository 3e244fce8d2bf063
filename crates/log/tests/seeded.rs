//! A log seeded after a snapshot (`FileLog::open_after`): empty, it reports
//! the snapshot's position and chain; its entries continue that chain, as if
//! the entries before had been there.

mod common;

use bursar_log::{FileLog, LogError};
use common::*;
use std::fs;

const SEG: u64 = 1 << 20;

/// Entries 1..=30 in `dir`; returns their chains by position (index 0 unused).
fn reference(dir: &std::path::Path) -> Vec<[u8; 32]> {
    build_log(dir, 30, SEG);
    let (log, _) = FileLog::open(options(dir, SEG)).unwrap();
    let mut chains = vec![[0; 32]];
    chains.extend(read_all(&log).iter().map(|e| e.chain));
    chains
}

#[test]
fn a_seeded_log_continues_the_chain_and_reopens() {
    let (full, seeded) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let chains = reference(full.path());
    let (log, report) = FileLog::open_after(options(seeded.path(), SEG), 20, chains[20]).unwrap();
    assert_eq!((report.first_position, report.last_position, report.last_chain), (21, 20, chains[20]));
    assert_eq!(log.chain_at(20).unwrap(), chains[20], "first_position - 1 gives the seed chain");
    assert!(log.entries_from(21).next().is_none());
    assert!(matches!(log.entries_from(20).next(), Some(Err(LogError::OutOfRange { .. }))));
    log.close().unwrap();

    // Empty, it reopens the same; then the same entries get the same chains.
    let (mut log, report) = FileLog::open(options(seeded.path(), SEG)).unwrap();
    assert_eq!((report.first_position, report.last_position, report.last_chain), (21, 20, chains[20]));
    append_range(&mut log, 21, 30);
    assert_eq!(log.last_chain(), chains[30]);
    log.close().unwrap();
    let (log, report) = FileLog::open(options(seeded.path(), SEG)).unwrap();
    assert_eq!((report.first_position, report.last_position, report.last_chain), (21, 30, chains[30]));
    assert_eq!(log.chain_at(20).unwrap(), chains[20]);
    assert_eq!(log.chain_at(25).unwrap(), chains[25]);
    let entries = log.entries_from(21).collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(entries.iter().map(|e| e.position).collect::<Vec<_>>(), (21..=30).collect::<Vec<_>>());
}

#[test]
fn seeding_an_existing_log_or_after_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 3, SEG);
    let err = FileLog::open_after(options(dir.path(), SEG), 10, [1; 32]).err().unwrap();
    assert!(err.to_string().contains("already holds a log"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(FileLog::open_after(options(empty.path(), SEG), 0, [0; 32]).is_err());
    // A log created but never written to may be seeded (its empty segment goes).
    FileLog::open(options(empty.path(), SEG)).unwrap().0.close().unwrap();
    FileLog::open_after(options(empty.path(), SEG), 5, [1; 32]).unwrap().0.close().unwrap();
    assert!(FileLog::open_after(options(empty.path(), SEG), 5, [1; 32]).is_err(), "seeded twice");
}

#[test]
fn entries_that_do_not_link_to_the_base_or_a_damaged_base_are_corruption() {
    let (full, seeded, other) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let chains = reference(full.path());
    let (mut log, _) = FileLog::open_after(options(seeded.path(), SEG), 20, chains[20]).unwrap();
    append_range(&mut log, 21, 25);
    log.close().unwrap();
    FileLog::open_after(options(other.path(), SEG), 20, [7; 32]).unwrap().0.close().unwrap();

    let base = log_dir(seeded.path()).join("base");
    let good = fs::read(&base).unwrap();
    fs::copy(log_dir(other.path()).join("base"), &base).unwrap();
    let err = FileLog::open(options(seeded.path(), SEG)).err().unwrap();
    assert!(err.is_corrupt() && err.to_string().contains("does not link"), "{err}");

    let mut damaged = good.clone();
    damaged[3] ^= 1;
    fs::write(&base, &damaged).unwrap();
    assert!(FileLog::open(options(seeded.path(), SEG)).err().unwrap().is_corrupt());
    fs::write(&base, &good).unwrap();
    assert_eq!(FileLog::open(options(seeded.path(), SEG)).unwrap().1.last_position, 25);
}

//! Damaged files: bit flips, truncation and missing tables are named (file
//! and offset); damage in what the newest manifest names falls back to the
//! previous manifest; damage in everything retained is an error, every
//! time, never an empty set.

use super::*;
use bursar_store::limits::BLOCK_SIZE;
use bursar_store::{Fault, StoreError};

const BLOCK: u64 = BLOCK_SIZE as u64;

/// A set with two commits: table A (covered 1), then table B (covered 2).
/// Returns the directory, the state after A and the state after both.
fn two_commits() -> (tempfile::TempDir, Model, Model) {
    let d = tempfile::tempdir().unwrap();
    let set = open(d.path());
    let mut model = Model::new();
    add(&set, &mut model, &(0..2000).map(|i| (key(i), i)).collect::<Vec<_>>(), 1);
    let after_a = model.clone();
    add(&set, &mut model, &(2000..4000).map(|i| (key(i), i)).collect::<Vec<_>>(), 2);
    (d, after_a, model)
}

fn table(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{NAME}-{number:020}.bst"))
}

fn manifest(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("manifest-{sequence:020}.bsm"))
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

fn corrupt(e: &StoreError) -> (PathBuf, u64, Fault) {
    match e {
        StoreError::Corrupt { file, offset, fault } => (file.clone(), *offset, fault.clone()),
        other => panic!("expected corruption, got {other}"),
    }
}

/// Opens a damaged copy that must fall back to A: the damage is named as
/// (`file`, `offset`), the state is A's, and the set goes on working.
fn falls_back_to_a(d: &Path, a: &Model, file: &Path, offset: u64) -> Fault {
    let set = open(d);
    let recovery = set.recovery();
    assert!(recovery.fell_back());
    let (named, at, fault) = corrupt(&recovery.damaged[0]);
    assert_eq!((named.as_path(), at), (file, offset), "{fault}");
    assert_eq!(recovery.manifest, Some(1));
    assert_same(&set, a);
    assert_eq!(set.covered(), 1);
    assert!(!table(d, 1).exists(), "B is garbage now");
    let mut model = a.clone();
    add(&set, &mut model, &[(key(9_999_999), 7)], 3);
    drop(set);
    let set = open(d);
    assert!(!set.recovery().fell_back());
    assert_same(&set, &model);
    fault
}

#[test]
fn damage_in_the_newest_tables_index_filter_or_footer_falls_back() {
    let (template, a, _) = two_commits();
    let blocks = std::fs::metadata(table(template.path(), 1)).unwrap().len() / BLOCK;
    assert_eq!(blocks, 4, "data, index, filter, footer");
    for block in 1..blocks {
        for within in [3, 40, 1000, BLOCK - 1] {
            let d = tempfile::tempdir().unwrap();
            copy_dir(template.path(), d.path());
            flip(&table(d.path(), 1), block * BLOCK + within);
            let fault = falls_back_to_a(d.path(), &a, &table(d.path(), 1), block * BLOCK);
            assert!(matches!(fault, Fault::Block(_)), "{fault}");
        }
    }
}

#[test]
fn a_truncated_or_missing_table_falls_back() {
    let (template, a, _) = two_commits();
    // A cut inside a block is named there; a cut at a block boundary
    // leaves a data block where the footer belongs (its kind is wrong).
    for (len, at) in
        [(0, 0), (1, 0), (3 * BLOCK + 17, 3 * BLOCK), (4 * BLOCK - 1, 3 * BLOCK), (BLOCK, 0), (3 * BLOCK, 2 * BLOCK)]
    {
        let d = tempfile::tempdir().unwrap();
        copy_dir(template.path(), d.path());
        truncate(&table(d.path(), 1), len);
        let fault = falls_back_to_a(d.path(), &a, &table(d.path(), 1), at);
        let whole = len > 0 && len % BLOCK == 0;
        assert!(whole || matches!(fault, Fault::Truncated { .. }), "{fault}");
        assert!(!whole || matches!(fault, Fault::Block(_)), "{fault}");
    }
    let d = tempfile::tempdir().unwrap();
    copy_dir(template.path(), d.path());
    std::fs::remove_file(table(d.path(), 1)).unwrap();
    assert_eq!(falls_back_to_a(d.path(), &a, &table(d.path(), 1), 0), Fault::Missing);
}

#[test]
fn a_damaged_newest_manifest_falls_back() {
    let (template, a, _) = two_commits();
    for offset in [0, 40, 100, BLOCK - 1] {
        let d = tempfile::tempdir().unwrap();
        copy_dir(template.path(), d.path());
        flip(&manifest(d.path(), 2), offset);
        falls_back_to_a(d.path(), &a, &manifest(d.path(), 2), 0);
        assert!(files(d.path()).contains(&"manifest-00000000000000000002.bsm.damaged".to_string()));
    }
    let d = tempfile::tempdir().unwrap();
    copy_dir(template.path(), d.path());
    truncate(&manifest(d.path(), 2), 100);
    falls_back_to_a(d.path(), &a, &manifest(d.path(), 2), 0);
}

/// Data blocks are checked when read, not at open: a lookup or a range
/// that reaches a damaged one fails naming it, and never answers wrong.
#[test]
fn a_damaged_data_block_fails_the_reads_that_reach_it() {
    let (d, _, model) = two_commits();
    flip(&table(d.path(), 1), 5000);
    let set = open(d.path());
    assert!(!set.recovery().fell_back());
    let (file, offset, _) = corrupt(&set.get(&key(2500)).unwrap_err());
    assert_eq!((file, offset), (table(d.path(), 1), 0));
    assert_eq!(set.get(&key(10)).unwrap(), Some(10), "table A is intact");
    let err = set.range(0, u128::MAX, false, 100).unwrap_err();
    assert_eq!(corrupt(&err).0, table(d.path(), 1));
    let err = set.range(0, u128::MAX, true, 100).unwrap_err();
    assert_eq!(corrupt(&err).0, table(d.path(), 1));
    assert!(set.compaction().is_none());
    assert_eq!(model.len(), 4000);
}

/// Damage in a table both retained manifests name, or in both manifests,
/// leaves nothing intact: open fails, and keeps failing (the damaged
/// manifests were set aside, but the set never starts empty).
#[test]
fn damage_in_everything_retained_is_an_error_every_time() {
    let (template, _, _) = two_commits();
    let d = tempfile::tempdir().unwrap();
    copy_dir(template.path(), d.path());
    flip(&table(d.path(), 0), 3 * BLOCK + 9);
    let err = Tiers::<u128, u64>::open(d.path(), NAME, cache()).err().unwrap();
    assert_eq!(corrupt(&err).0, table(d.path(), 0));
    let again = Tiers::<u128, u64>::open(d.path(), NAME, cache()).err().unwrap();
    assert!(again.is_corrupt(), "{again}");

    let d = tempfile::tempdir().unwrap();
    copy_dir(template.path(), d.path());
    flip(&manifest(d.path(), 1), 50);
    flip(&manifest(d.path(), 2), 50);
    let err = Tiers::<u128, u64>::open(d.path(), NAME, cache()).err().unwrap();
    assert_eq!(corrupt(&err).0, manifest(d.path(), 2));
    let again = Tiers::<u128, u64>::open(d.path(), NAME, cache()).err().unwrap();
    assert!(again.is_corrupt(), "{again}");
    assert!(table_paths(d.path()).len() == 2, "nothing deleted");
}

/// A table opened as the wrong key or value type is damage, not data.
#[test]
fn a_set_read_as_other_types_is_refused() {
    let (d, _, _) = two_commits();
    let err = Tiers::<u64, u64>::open(d.path(), NAME, cache()).err().unwrap();
    assert!(err.is_corrupt(), "{err}");
    let err = Tiers::<u128, u32>::open(d.path(), NAME, cache()).err().unwrap();
    assert!(err.is_corrupt(), "{err}");
    assert!(!open(d.path()).recovery().fell_back(), "nothing was set aside");
}

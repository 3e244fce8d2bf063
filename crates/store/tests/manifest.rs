//! Checkpoint manifests on a real directory: commit, reopen, retention,
//! garbage, crashes around the commit point and damaged manifests falling
//! back to the previous checkpoint.

use bursar_store::StoreError;
use bursar_store::manifest::Manifests;
use std::fs;
use std::path::Path;

fn touch(dir: &Path, name: &str) -> String {
    fs::write(dir.join(name), b"data").expect("a data file");
    name.to_string()
}

fn names(paths: Vec<std::path::PathBuf>) -> Vec<String> {
    paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn commits_survive_reopening_and_only_the_newest_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, found) = Manifests::open(dir.path(), 2).unwrap();
    assert!(found.newest.is_none() && found.damaged.is_empty());
    let a = touch(dir.path(), "a.bst");
    let b = touch(dir.path(), "b.bst");
    m.commit(10, vec![a.clone()], b"one".to_vec()).unwrap();
    m.commit(20, vec![a.clone(), b.clone()], b"two".to_vec()).unwrap();
    assert!(m.garbage().unwrap().is_empty());
    let c = touch(dir.path(), "c.bst");
    assert_eq!(names(m.garbage().unwrap()), vec![c.clone()], "written, not yet committed");
    m.commit(30, vec![b.clone(), c.clone()], b"three".to_vec()).unwrap();
    // `a` is named by the second checkpoint, still retained.
    assert!(m.garbage().unwrap().is_empty());
    m.commit(40, vec![c.clone()], b"four".to_vec()).unwrap();
    assert_eq!(names(m.garbage().unwrap()), vec![a], "named by no retained checkpoint (b is, by the third)");
    let manifests = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("manifest-"));
    assert_eq!(manifests.count(), 2, "older manifests are pruned");

    let (m, found) = Manifests::open(dir.path(), 2).unwrap();
    let newest = found.newest.expect("a checkpoint");
    assert_eq!((newest.sequence, newest.position, newest.files, newest.body), (4, 40, vec![c], b"four".to_vec()));
    assert_eq!(m.retained().iter().map(|c| c.position).collect::<Vec<_>>(), vec![30, 40]);
}

#[test]
fn a_crash_before_the_rename_leaves_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, _) = Manifests::open(dir.path(), 2).unwrap();
    m.commit(10, vec![], b"one".to_vec()).unwrap();
    // What a crash mid-commit leaves: a temporary manifest, half written.
    fs::write(dir.path().join("manifest-00000000000000000002.bsm.tmp"), b"half").unwrap();
    let (mut m, found) = Manifests::open(dir.path(), 2).unwrap();
    assert_eq!(found.newest.map(|c| c.position), Some(10));
    assert!(!dir.path().join("manifest-00000000000000000002.bsm.tmp").exists(), "temporaries are removed");
    assert_eq!(m.commit(20, vec![], vec![]).unwrap().sequence, 2);
}

#[test]
fn a_damaged_newest_manifest_falls_back_and_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, _) = Manifests::open(dir.path(), 3).unwrap();
    m.commit(10, vec![], b"one".to_vec()).unwrap();
    m.commit(20, vec![], b"two".to_vec()).unwrap();
    let newest = dir.path().join("manifest-00000000000000000002.bsm");
    let mut raw = fs::read(&newest).unwrap();
    raw[40] ^= 0x10;
    fs::write(&newest, raw).unwrap();

    let (mut m, found) = Manifests::open(dir.path(), 3).unwrap();
    assert_eq!(found.newest.map(|c| c.position), Some(10), "the previous checkpoint");
    match &found.damaged[..] {
        [StoreError::Corrupt { file, offset: 0, .. }] => assert_eq!(file, &newest),
        other => panic!("{other:?}"),
    }
    assert!(dir.path().join("manifest-00000000000000000002.bsm.damaged").exists(), "kept for inspection");
    assert_eq!(m.commit(30, vec![], vec![]).unwrap().sequence, 3, "a damaged manifest's sequence is never reused");
}

#[test]
fn truncated_manifests_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, _) = Manifests::open(dir.path(), 2).unwrap();
    m.commit(10, vec![], vec![7; 100]).unwrap();
    m.commit(20, vec![], vec![8; 100]).unwrap();
    let newest = dir.path().join("manifest-00000000000000000002.bsm");
    let raw = fs::read(&newest).unwrap();
    for len in [0, 1, 31, 32, raw.len() - 1] {
        fs::write(&newest, &raw[..len]).unwrap();
        let (_, found) = Manifests::open(dir.path(), 2).unwrap();
        assert_eq!(found.newest.map(|c| c.position), Some(10), "cut at {len}");
        assert!(found.damaged[0].is_corrupt());
        fs::rename(dir.path().join("manifest-00000000000000000002.bsm.damaged"), &newest).unwrap();
    }
}

//! Crashes at every step: the directory is copied at each step of each
//! operation (the hook runs after every change to it), and each copy,
//! opened, must hold exactly the state before or the state after the
//! operation, with no leftover files.

use super::*;
use bursar_store::manifest::Manifests;
use bursar_store::tiers::{Step, StepHook};
use std::sync::Mutex;

/// What a set answers: its entries, its mark, its tables' sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    entries: Vec<(u128, u64)>,
    covered: u64,
    sizes: Vec<u64>,
}

fn state(set: &Set) -> State {
    State { entries: dump(set), covered: set.covered(), sizes: set.table_sizes() }
}

/// Copies of the directory, one per step, with the step's name.
struct Snapshots {
    dir: PathBuf,
    root: PathBuf,
    taken: Mutex<Vec<(Step, PathBuf)>>,
}

impl Snapshots {
    fn hook(self: &Arc<Self>) -> StepHook {
        let me = Arc::clone(self);
        Arc::new(move |step| {
            let mut taken = me.taken.lock().unwrap();
            let to = me.root.join(format!("step-{:04}", taken.len()));
            copy_dir(&me.dir, &to);
            taken.push((step, to));
        })
    }

    fn take(&self) -> Vec<(Step, PathBuf)> {
        std::mem::take(&mut *self.taken.lock().unwrap())
    }
}

/// Opens a crashed copy: its state, after checking that open left no
/// table file that no retained manifest names, and no temporary file.
fn reopen(dir: &Path) -> State {
    let set = open(dir);
    assert!(!set.recovery().fell_back(), "{:?}", set.recovery());
    let s = state(&set);
    drop(set);
    let (manifests, _) = Manifests::open(dir, bursar_store::limits::TIERS_MANIFESTS_KEPT_MAX).unwrap();
    assert_eq!(manifests.garbage().unwrap(), Vec::<PathBuf>::new(), "leftover files in {}", dir.display());
    assert!(files(dir).iter().all(|f| !f.ends_with(".tmp")), "{:?}", files(dir));
    s
}

/// The newest manifest of a copy renamed back to its temporary name: the
/// state of a crash after it was written and synced, before the rename.
fn unrename_newest(dir: &Path) {
    let newest = files(dir).into_iter().rfind(|f| f.ends_with(".bsm")).unwrap();
    std::fs::rename(dir.join(&newest), dir.join(format!("{newest}.tmp"))).unwrap();
}

fn run(k: u64, n: u64) -> Vec<(u128, u64)> {
    (0..n).map(|i| (key(k * 1000 + i), k)).collect()
}

#[derive(Debug)]
enum Op {
    Add(u64, u64),
    Compact,
    /// Two plans for the same tables: the second gives up.
    CompactTwice,
}

#[test]
fn a_crash_at_any_step_leaves_the_state_before_or_after() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("set");
    let set = open(&dir);
    let snapshots = Arc::new(Snapshots { dir: dir.clone(), root: root.path().to_path_buf(), taken: Mutex::default() });
    set.set_step_hook(Some(snapshots.hook()));
    let mut model = Model::new();
    let ops = [
        Op::Add(0, 40),
        Op::Add(1, 50),
        Op::Add(2, 45),
        Op::Add(3, 60),
        Op::CompactTwice,
        Op::Add(4, 30),
        Op::Add(5, 0),
        Op::Add(6, 30),
        Op::Add(7, 30),
        Op::Add(8, 30),
        Op::Compact,
        Op::Add(9, 10),
    ];
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for (i, op) in ops.iter().enumerate() {
        let before = state(&set);
        match op {
            Op::Add(k, n) => add(&set, &mut model, &run(*k, *n), i as u64 + 1),
            Op::Compact => assert!(set.compaction().unwrap().run(&set).unwrap()),
            Op::CompactTwice => {
                let (first, second) = (set.compaction().unwrap(), set.compaction().unwrap());
                assert!(first.run(&set).unwrap());
                assert!(!second.run(&set).unwrap(), "its inputs are gone");
            }
        }
        let after = state(&set);
        assert_ne!(before, after, "op {op:?} changes the state");
        // Until the commit the old state holds, from it the new one.
        let mut committed = false;
        for (step, copy) in snapshots.take() {
            *seen.entry(format!("{step:?}")).or_default() += 1;
            if step == Step::Committed && !committed {
                let unrenamed = copy.with_extension("unrenamed");
                copy_dir(&copy, &unrenamed);
                unrename_newest(&unrenamed);
                assert_eq!(reopen(&unrenamed), before, "op {op:?}: a crash before the rename");
            }
            committed |= step == Step::Committed;
            let expected = if committed { &after } else { &before };
            assert_eq!(&reopen(&copy), expected, "op {op:?}, a crash after {step:?}");
        }
    }
    eprintln!("crash points per step: {seen:?}");
    for step in ["TableCreated", "TableWritten", "TablesSynced", "Committed", "GarbageRemoved", "OutputRemoved"] {
        assert!(seen.contains_key(step), "no crash at {step}: {seen:?}");
    }
    drop(set);
    assert_same(&open(&dir), &model);
}

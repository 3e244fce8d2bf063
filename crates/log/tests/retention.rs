//! Log retention (`FileLog::remove_before`): exactly the sealed segments
//! below the position go, the kept log still verifies its first link, and a
//! crash at every step of a removal recovers (repairing or read-only).

mod common;

use bursar_log::{FileLog, LogError};
use common::*;
use std::fs;
use std::path::Path;

const SEG: u64 = 300;
const N: u64 = 40;

/// A closed log of `N` entries in several segments; returns the entries.
fn full_log(dir: &Path) -> Vec<bursar_log::Entry> {
    build_log(dir, N, SEG);
    let (log, _) = FileLog::open(options(dir, SEG)).unwrap();
    let all = read_all(&log);
    assert!(segments(dir).len() >= 5, "the test needs several segments");
    all
}

/// First positions of the segments on disk.
fn firsts(dir: &Path) -> Vec<u64> {
    segments(dir).iter().map(|p| segment_first(p)).collect()
}

/// Expected first position after `remove_before(position)`.
fn expected_first(firsts: &[u64], position: u64) -> u64 {
    let kept = firsts.windows(2).take_while(|w| w[1] <= position).count();
    firsts[kept]
}

/// Checks an open log holds exactly `all[first-1..]` and refuses below it.
fn assert_holds_from(log: &FileLog, all: &[bursar_log::Entry], first: u64) {
    assert_eq!(log.first_position(), first);
    let rest: Vec<_> = log.entries_from(first).map(Result::unwrap).collect();
    assert_eq!(rest, all[first as usize - 1..].to_vec());
    if first > 1 {
        let err = log.entries_from(first - 1).next().unwrap().unwrap_err();
        assert!(
            matches!(err, LogError::OutOfRange { position, first: f, last: N } if position == first - 1 && f == first),
            "{err}"
        );
        assert_eq!(log.chain_at(first - 1).unwrap(), all[first as usize - 2].chain);
    }
}

#[test]
fn removes_exactly_the_segments_below_the_position_and_reopens() {
    let base = tempfile::tempdir().unwrap();
    let all = full_log(base.path());
    let before = firsts(base.path());
    for position in 0..=N + 1 {
        let work = tempfile::tempdir().unwrap();
        copy_dir(base.path(), work.path());
        let (mut log, _) = FileLog::open(options(work.path(), SEG)).unwrap();
        let removed = log.remove_before(position).unwrap();
        let first = expected_first(&before, position);
        let gone = before.iter().filter(|f| **f < first).count();
        assert_eq!((removed.segments, removed.first_position), (gone, first), "position {position}");
        assert_eq!(firsts(work.path()), before[gone..].to_vec(), "position {position}");
        assert_holds_from(&log, &all, first);
        assert_eq!(log.remove_before(position).unwrap().segments, 0, "a second call removes nothing");
        log.close().unwrap();
        let (mut log, report) = FileLog::open(options(work.path(), SEG)).unwrap();
        assert_eq!((report.first_position, report.last_position, report.segments), (first, N, before.len() - gone));
        assert_holds_from(&log, &all, first);
        append_range(&mut log, N + 1, N + 1);
        log.close().unwrap();
        let (log, _) = FileLog::open_read_only(options(work.path(), SEG)).unwrap();
        assert_eq!((log.first_position(), log.last_position()), (first, N + 1));
    }
}

#[test]
fn the_active_segment_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    full_log(dir.path());
    let last = *firsts(dir.path()).last().unwrap();
    let (mut log, _) = FileLog::open(options(dir.path(), SEG)).unwrap();
    let removed = log.remove_before(N + 1).unwrap();
    assert_eq!((removed.first_position, firsts(dir.path())), (last, vec![last]));
}

#[test]
#[should_panic(expected = "past the log's end")]
fn removing_past_the_end_is_a_caller_bug() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 3, SEG);
    let (mut log, _) = FileLog::open(options(dir.path(), SEG)).unwrap();
    let _ = log.remove_before(5);
}

#[test]
fn a_read_only_log_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    full_log(dir.path());
    let (mut log, _) = FileLog::open_read_only(options(dir.path(), SEG)).unwrap();
    assert!(matches!(log.remove_before(N), Err(LogError::ReadOnly { .. })));
    assert_eq!(firsts(dir.path())[0], 1);
}

/// Simulates a crash during `remove_before(position)` after the base was
/// written and `unlinked` of the old segments were removed (oldest first).
fn crashed_removal(base_dir: &Path, work: &Path, position: u64, unlinked: usize) -> (u64, usize) {
    copy_dir(base_dir, work);
    let done = tempfile::tempdir().unwrap();
    copy_dir(base_dir, done.path());
    let (mut log, _) = FileLog::open(options(done.path(), SEG)).unwrap();
    let removed = log.remove_before(position).unwrap();
    log.close().unwrap();
    fs::copy(log_dir(done.path()).join("base"), log_dir(work).join("base")).unwrap();
    for seg in segments(work).iter().take(unlinked) {
        fs::remove_file(seg).unwrap();
    }
    (removed.first_position, removed.segments)
}

#[test]
fn a_crash_at_every_step_of_a_removal_recovers() {
    let base = tempfile::tempdir().unwrap();
    let all = full_log(base.path());
    let position = N - 3;
    let gone = firsts(base.path()).iter().filter(|f| **f < expected_first(&firsts(base.path()), position)).count();
    assert!(gone >= 3, "the test needs a removal of several segments");
    for unlinked in 0..=gone {
        let work = tempfile::tempdir().unwrap();
        let (first, removed) = crashed_removal(base.path(), work.path(), position, unlinked);
        assert_eq!(removed, gone);

        let (log, report) = FileLog::open_read_only(options(work.path(), SEG)).unwrap();
        assert_eq!((report.first_position, report.segments), (first, firsts(work.path()).len() - (gone - unlinked)));
        assert_holds_from(&log, &all, first);
        assert_eq!(segments(work.path()).len(), firsts(base.path()).len() - unlinked, "read-only changes nothing");
        drop(log);

        let (log, report) = FileLog::open(options(work.path(), SEG)).unwrap();
        assert_eq!(report.first_position, first, "unlinked {unlinked}");
        assert_eq!(firsts(work.path())[0], first, "the repairing open finished the removal");
        assert_holds_from(&log, &all, first);
    }
}

#[test]
fn a_base_that_does_not_match_the_first_kept_segment_is_corruption() {
    let base = tempfile::tempdir().unwrap();
    full_log(base.path());
    let work = tempfile::tempdir().unwrap();
    let (first, _) = crashed_removal(base.path(), work.path(), N - 10, 0);
    // Drop the first kept segment too: the base names a start no segment has.
    let kept = log_dir(work.path()).join(format!("segment-{first:020}.log"));
    let next = segments(work.path()).into_iter().find(|p| segment_first(p) > first).unwrap();
    fs::remove_file(&kept).unwrap();
    let (offset, reason) = expect_corrupt(FileLog::open(options(work.path(), SEG)), &next);
    assert_eq!(offset, 0);
    assert!(reason.contains("base says it starts at position"), "{reason}");
    assert!(segments(work.path()).len() > 2, "a failed open unlinks nothing");
}

#[test]
fn the_base_still_checks_the_first_kept_link() {
    let base = tempfile::tempdir().unwrap();
    full_log(base.path());
    let (mut log, _) = FileLog::open(options(base.path(), SEG)).unwrap();
    let first = log.remove_before(N - 3).unwrap().first_position;
    log.close().unwrap();
    let path = log_dir(base.path()).join("base");
    let mut bytes = fs::read(&path).unwrap();
    bytes[8] ^= 1; // the chain; fix the CRC so only the link is wrong
    let crc = crc32c::crc32c(&bytes[0..40]);
    bytes[40..44].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let kept = log_dir(base.path()).join(format!("segment-{first:020}.log"));
    let (offset, reason) = expect_corrupt(FileLog::open(options(base.path(), SEG)), &kept);
    assert_eq!(offset, 0);
    assert!(reason.contains("does not link"), "{reason}");
}

#[test]
fn every_flipped_bit_of_the_base_is_caught() {
    let base = tempfile::tempdir().unwrap();
    full_log(base.path());
    let (mut log, _) = FileLog::open(options(base.path(), SEG)).unwrap();
    log.remove_before(N - 3).unwrap();
    log.close().unwrap();
    let path = log_dir(base.path()).join("base");
    for bit in 0..48 * 8 {
        flip_bit(&path, bit);
        assert!(FileLog::open_read_only(options(base.path(), SEG)).is_err(), "bit {bit}");
        flip_bit(&path, bit);
    }
    assert!(FileLog::open(options(base.path(), SEG)).is_ok());
}

mod model {
    use super::*;
    use proptest::prelude::*;

    /// One step: append `n` entries, then remove below a position chosen
    /// as a fraction (per mille) of the way from the first to the next one.
    fn step() -> impl Strategy<Value = (u64, u64)> {
        (0u64..12, 0u64..=1000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Against a model (every entry ever appended): after any mix of
        /// appends and removals, the log holds exactly the model's entries
        /// from its first position, which never passes the position asked
        /// for, never goes down, and survives a reopen.
        #[test]
        fn removals_keep_exactly_a_suffix_of_the_model(steps in proptest::collection::vec(step(), 1..12)) {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = FileLog::open(options(dir.path(), SEG)).unwrap();
            let mut appended = 0;
            let mut first = 1;
            for (n, permille) in steps {
                append_range(&mut log, appended + 1, appended + n);
                appended += n;
                let position = first + (appended + 1 - first) * permille / 1000;
                let removed = log.remove_before(position).unwrap();
                prop_assert!(removed.first_position >= first && removed.first_position <= position.max(first));
                first = removed.first_position;
                prop_assert_eq!(log.first_position(), first);
                let held: Vec<_> = log.entries_from(first).map(Result::unwrap).collect();
                prop_assert_eq!(held.len() as u64, appended + 1 - first);
                for e in &held {
                    prop_assert_eq!((e.timestamp, &e.body), (timestamp(e.position), &body(e.position)));
                }
                if first > 1 {
                    let below = log.entries_from(first - 1).next().unwrap();
                    let out_of_range = matches!(below, Err(LogError::OutOfRange { .. }));
                    prop_assert!(out_of_range, "below the first position: {:?}", below.map(|e| e.position));
                }
            }
            log.close().unwrap();
            let (log, report) = FileLog::open(options(dir.path(), SEG)).unwrap();
            prop_assert_eq!((report.first_position, report.last_position), (first, appended));
            prop_assert_eq!(log.entries_from(first).count() as u64, appended + 1 - first);
        }
    }
}

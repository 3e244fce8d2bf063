//! Crash recovery: a torn tail (never acknowledged) is removed at every
//! possible cut; damage to anything acknowledged is corruption.

mod common;

use bursar_log::FileLog;
use common::*;
use std::fs;
use std::path::Path;

const SEGMENT: u64 = 400;
const ENTRIES: u64 = 8;

/// A log of 8 entries in 2 segments, closed (marker at 8).
fn small_log(dir: &Path) {
    build_log(dir, ENTRIES, SEGMENT);
    assert_eq!(segments(dir).len(), 2);
    assert_eq!(marker(dir), Some(ENTRIES));
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

#[test]
fn every_cut_of_the_last_segment_recovers_exactly_the_whole_entries_before_it() {
    let base = tempfile::tempdir().unwrap();
    small_log(base.path());
    let last = segments(base.path()).pop().unwrap();
    let first = segment_first(&last);
    let len = fs::metadata(&last).unwrap().len();
    let offsets = entry_offsets(first, len);
    for cut in 0..len {
        let work = tempfile::tempdir().unwrap();
        copy_dir(base.path(), work.path());
        let seg = log_dir(work.path()).join(last.file_name().unwrap());
        truncate(&seg, cut);
        fs::remove_file(log_dir(work.path()).join("durable")).unwrap();

        let whole = offsets.iter().filter(|o| **o <= cut).count() as u64 - 1;
        let valid_end = offsets[whole as usize];
        let expected_last = first - 1 + whole;
        let (mut log, report) = FileLog::open(options(work.path(), SEGMENT)).unwrap();
        assert_eq!(report.last_position, expected_last, "cut at {cut}");
        assert_eq!(report.truncated_bytes, cut - valid_end, "cut at {cut}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), valid_end, "torn tail removed on disk (cut at {cut})");
        assert_entries(&read_all(&log), expected_last);

        append_range(&mut log, expected_last + 1, expected_last + 1);
        assert_eq!(log.close().unwrap(), expected_last + 1);
        let (log, report) = FileLog::open(options(work.path(), SEGMENT)).unwrap();
        assert_eq!((report.last_position, report.truncated_bytes), (expected_last + 1, 0), "cut at {cut}");
        assert_entries(&read_all(&log), expected_last + 1);
    }
}

#[test]
fn cutting_an_acknowledged_entry_is_corruption_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    small_log(dir.path());
    let last = segments(dir.path()).pop().unwrap();
    let original = fs::read(&last).unwrap();
    let offsets = entry_offsets(segment_first(&last), original.len() as u64);
    for cut in 0..original.len() as u64 {
        fs::write(&last, &original[..cut as usize]).unwrap();
        let (offset, reason) = expect_corrupt(FileLog::open(options(dir.path(), SEGMENT)), &last);
        if offsets.contains(&cut) {
            assert_eq!(offset, cut);
            assert!(reason.contains("acknowledged"), "{reason}");
        } else {
            assert_eq!(offset, *offsets.iter().rev().find(|o| **o < cut).unwrap(), "damaged entry's start");
            assert!(reason.contains("acknowledged as durable") && reason.contains("file ends"), "{reason}");
        }
        assert_eq!(fs::metadata(&last).unwrap().len(), cut, "a failed open must not truncate");
    }
    fs::write(&last, &original).unwrap();
    assert_entries(&read_all(&FileLog::open(options(dir.path(), SEGMENT)).unwrap().0), ENTRIES);
}

#[test]
fn garbage_after_the_last_acknowledged_entry_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    small_log(dir.path());
    let last = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    // Zeros (blocks allocated but never written) and then a copy of a valid
    // header that does not link: neither was acknowledged.
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0; 300]);
    fs::write(&last, &bytes).unwrap();
    let (log, report) = FileLog::open(options(dir.path(), SEGMENT)).unwrap();
    assert_eq!((report.last_position, report.truncated_bytes, report.durable_marker), (ENTRIES, 300, ENTRIES));
    drop(log);
    let mut bytes = fs::read(&last).unwrap();
    let first_entry = bytes[..(HEADER as usize + body(segment_first(&last)).len())].to_vec();
    bytes.extend_from_slice(&first_entry);
    fs::write(&last, &bytes).unwrap();
    let (log, report) = FileLog::open(options(dir.path(), SEGMENT)).unwrap();
    assert_eq!((report.last_position, report.truncated_bytes), (ENTRIES, first_entry.len() as u64));
    assert_eq!(fs::metadata(&last).unwrap().len(), len);
    assert_entries(&read_all(&log), ENTRIES);
}

#[test]
fn missing_segments_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 12, 300);
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    let saved = fs::read(&files[1]).unwrap();
    fs::remove_file(&files[1]).unwrap();
    let (offset, reason) = expect_corrupt(FileLog::open(options(dir.path(), 300)), &files[2]);
    assert_eq!(offset, 0);
    assert!(reason.contains("but the log before it ends at"), "{reason}");
    fs::write(&files[1], saved).unwrap();

    // The last segment gone: the log ends before the acknowledged position.
    let last = files.last().unwrap();
    fs::remove_file(last).unwrap();
    let before_last = &files[files.len() - 2];
    let (offset, reason) = expect_corrupt(FileLog::open(options(dir.path(), 300)), before_last);
    assert_eq!(offset, fs::metadata(before_last).unwrap().len());
    assert!(reason.contains("was acknowledged as durable: entries are missing"), "{reason}");
}

#[test]
fn a_truncated_sealed_segment_is_corruption_even_without_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    small_log(dir.path());
    fs::remove_file(log_dir(dir.path()).join("durable")).unwrap();
    let sealed = segments(dir.path()).remove(0);
    let len = fs::metadata(&sealed).unwrap().len();
    truncate(&sealed, len - 1);
    let (_, reason) = expect_corrupt(FileLog::open(options(dir.path(), SEGMENT)), &sealed);
    assert!(reason.contains("sealed segment"), "{reason}");
}

#[test]
fn a_damaged_marker_reads_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    small_log(dir.path());
    flip_bit(&log_dir(dir.path()).join("durable"), 3);
    let (log, report) = FileLog::open(options(dir.path(), SEGMENT)).unwrap();
    assert_eq!((report.durable_marker, report.last_position), (0, ENTRIES));
    drop(log);
    assert_eq!(marker(dir.path()), Some(ENTRIES), "open rewrites the marker after syncing what it recovered");
    let path = log_dir(dir.path()).join("durable");
    let mut long = fs::read(&path).unwrap();
    long.extend_from_slice(b"junk");
    fs::write(&path, long).unwrap();
    let (_, report) = FileLog::open(options(dir.path(), SEGMENT)).unwrap();
    assert_eq!(report.durable_marker, 0);
    assert_eq!(fs::read(&path).unwrap().len(), 16, "the rewritten marker decodes again");
}

#[test]
fn orphan_temp_files_are_removed_and_unknown_segment_names_refused() {
    let dir = tempfile::tempdir().unwrap();
    small_log(dir.path());
    let temp = log_dir(dir.path()).join("something.tmp");
    fs::write(&temp, b"half-written").unwrap();
    let (log, _) = FileLog::open(options(dir.path(), SEGMENT)).unwrap();
    assert!(!temp.exists());
    drop(log);
    let odd = log_dir(dir.path()).join("segment-12.log");
    fs::write(&odd, b"").unwrap();
    expect_corrupt(FileLog::open(options(dir.path(), SEGMENT)), &odd);
}

#[test]
fn a_segment_from_another_log_does_not_link() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    small_log(a.path());
    // Same positions and bodies, other timestamps: every chain differs.
    let (mut other, _) = FileLog::open(options(b.path(), SEGMENT)).unwrap();
    for i in 1..=ENTRIES {
        other.append(timestamp(i) + 1, &[&body(i)]).unwrap();
    }
    other.close().unwrap();
    let last = segments(a.path()).pop().unwrap();
    fs::copy(log_dir(b.path()).join(last.file_name().unwrap()), &last).unwrap();
    let (offset, reason) = expect_corrupt(FileLog::open(options(a.path(), SEGMENT)), &last);
    assert_eq!(offset, 0);
    assert!(reason.contains("does not link to the previous entry"), "{reason}");
}

#[test]
fn a_log_whose_oldest_segment_was_removed_starts_later_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 12, 300);
    let (full, _) = FileLog::open(options(dir.path(), 300)).unwrap();
    let all = read_all(&full);
    drop(full);
    let first_file = segments(dir.path()).remove(0);
    fs::remove_file(&first_file).unwrap();
    let start = segment_first(&segments(dir.path())[0]);
    let (log, report) = FileLog::open(options(dir.path(), 300)).unwrap();
    assert_eq!((report.first_position, report.last_position), (start, 12));
    let err = log.entries_from(1).next().unwrap().unwrap_err();
    assert!(matches!(err, bursar_log::LogError::OutOfRange { position: 1, first, last: 12 } if first == start));
    let rest: Vec<_> = log.entries_from(start).map(Result::unwrap).collect();
    assert_eq!(rest, all[start as usize - 1..].to_vec());
    assert_eq!(log.chain_at(start - 1).unwrap(), all[start as usize - 2].chain);
    assert!(log.chain_at(start - 2).is_err());
}

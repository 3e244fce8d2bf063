//! Every single-bit flip in a segment is detected: as corruption (with file
//! and offset) where entries were acknowledged or sealed, and never by
//! accepting a damaged entry.

mod common;

use bursar_log::FileLog;
use common::*;
use std::fs;

const SEGMENT: u64 = 400;
const ENTRIES: u64 = 8;

/// The offset of the entry holding byte `byte` of a segment whose entry
/// starts are `offsets`.
fn entry_start(offsets: &[u64], byte: u64) -> u64 {
    *offsets.iter().rev().find(|o| **o <= byte).unwrap()
}

#[test]
fn every_bit_flip_in_every_segment_is_corruption_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), ENTRIES, SEGMENT);
    assert_eq!(marker(dir.path()), Some(ENTRIES));
    let files = segments(dir.path());
    assert_eq!(files.len(), 2);
    for file in &files {
        let len = fs::metadata(file).unwrap().len();
        let offsets = entry_offsets(segment_first(file), len);
        for bit in 0..len * 8 {
            flip_bit(file, bit);
            let (offset, _) = expect_corrupt(FileLog::open(options(dir.path(), SEGMENT)), file);
            assert_eq!(offset, entry_start(&offsets, bit / 8), "flip of bit {bit} in {}", file.display());
            flip_bit(file, bit);
        }
    }
    let (log, report) = FileLog::open(options(dir.path(), SEGMENT)).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_entries(&read_all(&log), ENTRIES);
}

#[test]
fn every_bit_flip_in_a_sealed_segment_is_corruption_without_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), ENTRIES, SEGMENT);
    fs::remove_file(log_dir(dir.path()).join("durable")).unwrap();
    let sealed = segments(dir.path()).remove(0);
    let len = fs::metadata(&sealed).unwrap().len();
    let offsets = entry_offsets(1, len);
    for bit in 0..len * 8 {
        flip_bit(&sealed, bit);
        let (offset, reason) = expect_corrupt(FileLog::open(options(dir.path(), SEGMENT)), &sealed);
        assert_eq!(offset, entry_start(&offsets, bit / 8), "bit {bit}");
        assert!(reason.contains("sealed segment"), "{reason}");
        flip_bit(&sealed, bit);
    }
}

/// Without a marker, damage in the last segment cannot be told from a torn
/// write: recovery keeps exactly the entries before the damaged one and
/// never returns a damaged entry. (Sampled bits, since each open truncates.)
#[test]
fn bit_flips_in_the_unacknowledged_tail_keep_only_the_entries_before_them() {
    let base = tempfile::tempdir().unwrap();
    build_log(base.path(), ENTRIES, SEGMENT);
    let last = segments(base.path()).pop().unwrap();
    let first = segment_first(&last);
    let len = fs::metadata(&last).unwrap().len();
    let offsets = entry_offsets(first, len);
    for bit in (0..len * 8).step_by(13) {
        let work = tempfile::tempdir().unwrap();
        copy_dir(base.path(), work.path());
        fs::remove_file(log_dir(work.path()).join("durable")).unwrap();
        flip_bit(&log_dir(work.path()).join(last.file_name().unwrap()), bit);
        let (log, report) = FileLog::open(options(work.path(), SEGMENT)).unwrap();
        let damaged = offsets.iter().position(|o| *o == entry_start(&offsets, bit / 8)).unwrap() as u64;
        assert_eq!(report.last_position, first - 1 + damaged, "bit {bit}");
        assert_eq!(report.truncated_bytes, len - offsets[damaged as usize]);
        assert_entries(&read_all(&log), first - 1 + damaged);
    }
}

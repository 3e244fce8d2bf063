//! Appending, reading back, segment roll-over, durability reports, reopen.

mod common;

use bursar_log::{FileLog, LogError};
use common::*;
use std::fs;
use std::time::{Duration, Instant};

#[test]
fn entries_read_back_identical_after_reopen_with_chains() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = FileLog::open(options(dir.path(), 1 << 20)).unwrap();
    assert_eq!((report.last_position, report.first_position, report.segments), (0, 1, 1));
    assert_eq!(log.chain_at(0).unwrap(), [0; 32], "the first entry links to zeros");
    append_range(&mut log, 1, 40);
    assert!(log.append(5, &[]).is_ok(), "an entry with no parts at all has an empty body");
    let before = read_all(&log);
    assert_entries(&before[..40], 40);
    assert_eq!(before[40].body, Vec::<u8>::new());
    let last_chain = log.last_chain();
    assert_eq!(log.close().unwrap(), 41);

    let (log, report) = FileLog::open(options(dir.path(), 1 << 20)).unwrap();
    assert_eq!((report.last_position, report.last_chain, report.truncated_bytes), (41, last_chain, 0));
    assert_eq!(report.durable_marker, 41, "close left the marker at the last position");
    let after = read_all(&log);
    assert_eq!(after, before, "bodies, timestamps, positions and chains survive a reopen");
    assert_eq!(after[40].chain, last_chain);
    for e in &after {
        assert_eq!(log.chain_at(e.position).unwrap(), e.chain, "chain_at({})", e.position);
    }
    let distinct: std::collections::HashSet<_> = after.iter().map(|e| e.chain).collect();
    assert_eq!(distinct.len(), after.len());
    assert!(matches!(log.chain_at(42), Err(LogError::OutOfRange { position: 42, first: 1, last: 41 })));
}

#[test]
fn segments_roll_over_and_positions_continue_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = FileLog::open(options(dir.path(), 300)).unwrap();
    append_range(&mut log, 1, 30);
    log.close().unwrap();
    let files = segments(dir.path());
    assert!(files.len() >= 5, "tiny segments roll over: {} files", files.len());
    let mut next = 1;
    for f in &files {
        let len = fs::metadata(f).unwrap().len();
        assert_eq!(segment_first(f), next, "each segment is named for its first entry");
        let offsets = entry_offsets(next, len);
        next += offsets.len() as u64 - 1;
        let last_start = offsets[offsets.len() - 2];
        if f != files.last().unwrap() {
            assert!(last_start < 300 && len >= 300, "rolls once a segment holds >= segment_bytes");
        }
    }
    assert_eq!(next, 31);

    let (mut log, report) = FileLog::open(options(dir.path(), 300)).unwrap();
    assert_eq!((report.last_position, report.segments), (30, files.len()));
    append_range(&mut log, 31, 45);
    log.close().unwrap();
    let (log, report) = FileLog::open(options(dir.path(), 300)).unwrap();
    assert_eq!(report.last_position, 45);
    assert_entries(&read_all(&log), 45);
    for from in [0, 1, 2, 7, 8, 9, 29, 30, 31, 44, 45] {
        let got: Vec<u64> = log.entries_from(from).map(|e| e.unwrap().position).collect();
        assert_eq!(got, (from.max(1)..=45).collect::<Vec<_>>(), "entries_from({from})");
    }
    assert_eq!(log.entries_from(46).count(), 0);
    for p in 0..=45 {
        let expected = if p == 0 { [0; 32] } else { log.entries_from(p).next().unwrap().unwrap().chain };
        assert_eq!(log.chain_at(p).unwrap(), expected, "chain_at({p}) across segments");
    }
}

#[test]
fn on_durable_is_monotonic_and_reaches_the_last_position() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = FileLog::open(options(dir.path(), 2_000)).unwrap();
    let durable = Durable::default();
    log.start(durable.callback());
    append_range(&mut log, 1, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while durable.calls().last() != Some(&Ok(200)) {
        assert!(Instant::now() < deadline, "on_durable never reached 200: {:?}", durable.calls());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(log.close().unwrap(), 200);
    let calls: Vec<u64> = durable.calls().into_iter().map(Result::unwrap).collect();
    assert!(calls.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {calls:?}");
    assert_eq!(marker(dir.path()), Some(200));
    assert!(calls.len() <= 200);
}

#[test]
fn entries_are_readable_while_the_syncer_runs_and_before_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = FileLog::open(options(dir.path(), 500)).unwrap();
    append_range(&mut log, 1, 10);
    assert_entries(&read_all(&log), 10);
    log.start(Durable::default().callback());
    append_range(&mut log, 11, 20);
    let iter = log.entries_from(15);
    append_range(&mut log, 21, 22);
    let got: Vec<u64> = iter.map(|e| e.unwrap().position).collect();
    assert_eq!(got, (15..=20).collect::<Vec<_>>(), "an iterator stops at the last position when it was made");
    assert_entries(&read_all(&log), 22);
    log.close().unwrap();
}

#[test]
fn close_without_start_syncs_and_writes_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 5, 1 << 20);
    assert_eq!(marker(dir.path()), Some(5));
}

#[test]
fn oversized_bodies_are_rejected_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = FileLog::open(options(dir.path(), 1 << 20)).unwrap();
    append_range(&mut log, 1, 2);
    let mib = vec![7u8; 1 << 20];
    let parts: Vec<&[u8]> = std::iter::repeat_n(&mib[..], 64).chain([&b"x"[..]]).collect();
    match log.append(1, &parts) {
        Err(LogError::BodyTooLarge { len, max }) => assert_eq!((len, max), ((64 << 20) + 1, 64 << 20)),
        other => panic!("expected BodyTooLarge, got {other:?}"),
    }
    append_range(&mut log, 3, 3);
    log.close().unwrap();
    let (log, _) = FileLog::open(options(dir.path(), 1 << 20)).unwrap();
    assert_entries(&read_all(&log), 3);
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(options(dir.path(), 1 << 20)).unwrap();
    assert!(matches!(FileLog::open(options(dir.path(), 1 << 20)), Err(LogError::Locked { .. })));
    assert!(matches!(FileLog::open_read_only(options(dir.path(), 1 << 20)), Err(LogError::Locked { .. })));
    drop(log);
    assert!(FileLog::open(options(dir.path(), 1 << 20)).is_ok());
}

#[test]
fn read_only_open_reports_a_torn_tail_without_removing_it() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 6, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs::remove_file(log_dir(dir.path()).join("durable")).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    let (mut log, report) = FileLog::open_read_only(options(dir.path(), 1 << 20)).unwrap();
    let torn = HEADER + body(6).len() as u64 - 5;
    assert_eq!((report.last_position, report.truncated_bytes), (5, torn));
    assert_entries(&read_all(&log), 5);
    assert!(matches!(log.append(1, &[b"x"]), Err(LogError::ReadOnly { .. })));
    assert_eq!(fs::metadata(&seg).unwrap().len(), len - 5, "read-only open changed the file");
    assert!(!log_dir(dir.path()).join("durable").exists());
}

//! A failed write stops the log (no append after it is accepted, the syncer
//! reports the failure, close fails), and recovery removes the partial entry.
//! Its own test binary: it lowers this process's file size limit.

mod common;

use bursar_log::{FileLog, LogError};
use common::*;
use std::fs;
use std::time::{Duration, Instant};

fn set_file_size_limit(bytes: libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on this process's own limits and signal disposition.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

fn wait_for(durable: &Durable, done: impl Fn(&[Result<u64, String>]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&durable.calls()) {
        assert!(Instant::now() < deadline, "{:?}", durable.calls());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_failed_write_stops_the_log_and_recovery_removes_the_partial_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = FileLog::open(options(dir.path(), 1 << 20)).unwrap();
    let durable = Durable::default();
    log.start(durable.callback());
    append_range(&mut log, 1, 5);
    wait_for(&durable, |c| c.last() == Some(&Ok(5)));
    let segment = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();

    set_file_size_limit(len + 150);
    let big = vec![1u8; 1000];
    match log.append(1, &[&big]) {
        Err(LogError::Io { path, source }) => {
            assert_eq!(path, segment);
            assert_eq!(source.raw_os_error(), Some(libc::EFBIG));
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(fs::metadata(&segment).unwrap().len(), len + 150, "a partial entry was written");
    assert!(matches!(log.append(1, &[b"small"]), Err(LogError::Failed { .. })), "no appends after a failure");
    wait_for(&durable, |c| c.last().is_some_and(Result::is_err));
    assert!(matches!(log.close(), Err(LogError::Failed { .. })));
    set_file_size_limit(libc::RLIM_INFINITY);

    let (log, report) = FileLog::open(options(dir.path(), 1 << 20)).unwrap();
    assert_eq!((report.last_position, report.truncated_bytes, report.durable_marker), (5, 150, 5));
    assert_entries(&read_all(&log), 5);
}

//! Helpers shared by the integration tests: small logs with known contents,
//! directory copies and byte-level damage.

#![allow(dead_code)]

use bursar_log::{Entry, FileLog, FileLogOptions, LogError};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const HEADER: u64 = 96;

pub fn options(dir: &Path, segment_bytes: u64) -> FileLogOptions {
    FileLogOptions { dir: dir.to_path_buf(), segment_bytes }
}

/// Deterministic bodies of varied sizes, including empty ones.
pub fn body(i: u64) -> Vec<u8> {
    let len = (i * 7 % 23) as usize;
    (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

pub fn timestamp(i: u64) -> u64 {
    1_000_000 + i * 1_000
}

/// Appends entries `from..=to` (bodies from `body`), split into up to three
/// parts to exercise vectored writes.
pub fn append_range(log: &mut FileLog, from: u64, to: u64) {
    for i in from..=to {
        let b = body(i);
        let (a, rest) = b.split_at(b.len() / 3);
        let (c, d) = rest.split_at(rest.len() / 2);
        assert_eq!(log.append(timestamp(i), &[a, c, d]).unwrap(), i);
    }
}

/// Creates a log of `n` entries and closes it (so the marker is at `n`).
pub fn build_log(dir: &Path, n: u64, segment_bytes: u64) {
    let (mut log, report) = FileLog::open(options(dir, segment_bytes)).unwrap();
    assert_eq!(report.last_position, 0);
    append_range(&mut log, 1, n);
    assert_eq!(log.close().unwrap(), n);
}

pub fn read_all(log: &FileLog) -> Vec<Entry> {
    log.entries_from(1).collect::<Result<Vec<_>, _>>().unwrap()
}

/// Checks that `entries` are exactly entries 1..=n as `append_range` wrote them.
pub fn assert_entries(entries: &[Entry], n: u64) {
    assert_eq!(entries.len() as u64, n);
    for (e, i) in entries.iter().zip(1..) {
        assert_eq!((e.position, e.timestamp, &e.body), (i, timestamp(i), &body(i)), "entry {i}");
    }
}

pub fn log_dir(dir: &Path) -> PathBuf {
    dir.join("log")
}

/// Segment files, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(log_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("segment-"))
        .collect();
    out.sort();
    out
}

/// Offsets at which entries start in a segment holding entries `first..`, plus its end.
pub fn entry_offsets(first: u64, len: u64) -> Vec<u64> {
    let mut out = vec![0];
    let mut at = 0;
    let mut i = first;
    while at < len {
        at += HEADER + body(i).len() as u64;
        out.push(at);
        i += 1;
    }
    assert_eq!(at, len, "segment does not hold whole entries");
    out
}

/// First position of a segment, from its name.
pub fn segment_first(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    name.trim_start_matches("segment-").trim_end_matches(".log").parse().unwrap()
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Flips one bit in place (no truncate-and-rewrite, which makes ext4 flush).
pub fn flip_bit(path: &Path, bit: u64) {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, bit / 8).unwrap();
    byte[0] ^= 1 << (bit % 8);
    file.write_all_at(&byte, bit / 8).unwrap();
}

pub fn marker(dir: &Path) -> Option<u64> {
    let b = fs::read(log_dir(dir).join("durable")).ok()?;
    Some(u64::from_le_bytes(b[0..8].try_into().unwrap()))
}

/// Expects `Corrupt` naming `file` (also in the message, with the offset).
pub fn expect_corrupt(result: Result<(FileLog, bursar_log::OpenReport), LogError>, file: &Path) -> (u64, String) {
    match result {
        Ok((log, _)) => panic!("expected corruption in {}, opened at {}", file.display(), log.last_position()),
        Err(LogError::Corrupt { file: f, offset, reason }) => {
            assert_eq!(f, file, "corruption named the wrong file: {reason}");
            let msg = LogError::Corrupt { file: f, offset, reason: reason.clone() }.to_string();
            assert!(msg.contains(&file.display().to_string()) && msg.contains(&format!("offset {offset}")), "{msg}");
            (offset, reason)
        }
        Err(e) => panic!("expected corruption in {}, got {e}", file.display()),
    }
}

/// Records every `on_durable` call.
#[derive(Clone, Default)]
pub struct Durable(pub Arc<Mutex<Vec<Result<u64, String>>>>);

impl Durable {
    pub fn callback(&self) -> bursar_log::DurableCallback {
        let calls = self.0.clone();
        Box::new(move |r| calls.lock().unwrap().push(r.map_err(|e| e.to_string())))
    }

    pub fn calls(&self) -> Vec<Result<u64, String>> {
        self.0.lock().unwrap().clone()
    }
}

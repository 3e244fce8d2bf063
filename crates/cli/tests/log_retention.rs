//! Log retention at the node level: with small segments and a snapshot
//! after every entry, the node removes the segments below its oldest
//! retained snapshot; it restarts to the same state, and `bursar verify`
//! (replaying from the oldest snapshot) passes. With `log_retain` every
//! segment stays and verify replays from position 1.

mod small_ledger;

use bursar_log::{FileLog, FileLogOptions, SnapshotStore};
use bursar_server::{Node, NodeConfig};
use std::path::Path;

/// Small enough that the small ledger spans many segments.
const SEGMENT_BYTES: u64 = 1024;

fn config(dir: &Path, log_retain: bool) -> NodeConfig {
    let mut config = NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.snapshot_every_bytes = 1;
    config.segment_bytes = SEGMENT_BYTES;
    config.log_retain = log_retain;
    config
}

/// (first position, last position, segments) of the log in `dir`.
fn log_span(dir: &Path) -> (u64, u64, usize) {
    let (_, open) = FileLog::open_read_only(FileLogOptions::new(dir)).unwrap();
    (open.first_position, open.last_position, open.segments)
}

fn verify_through_binary(dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "verify: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Starts a node on `dir`, lets the engine tick, and stops it cleanly.
fn restart_and_idle(dir: &Path) -> u64 {
    let node = Node::start(config(dir, false)).unwrap();
    let position = node.report().position;
    std::thread::sleep(std::time::Duration::from_millis(400));
    node.shutdown();
    position
}

#[test]
fn a_node_removes_segments_below_its_oldest_snapshot_and_restarts_to_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    small_ledger::populate(config(tmp.path(), false));
    // The engine removes segments at its pass after a snapshot was written
    // (the last ones are written at shutdown): a restart gets to them.
    restart_and_idle(tmp.path());
    let (first, last, segments) = log_span(tmp.path());
    let snapshots = SnapshotStore::open_read_only(tmp.path()).unwrap().list().unwrap();
    assert!(first > 1, "old segments were removed: log starts at {first} ({segments} segments)");
    assert!(first <= snapshots[0] + 1, "the oldest snapshot {} still has its log: {first}", snapshots[0]);
    assert!(segments <= 4, "only a few segments are left: {segments}");

    let report = bursar_server::verify::verify(tmp.path()).unwrap();
    assert_eq!((report.entries, report.position), (last, last));
    let digest = report.digest;
    assert_eq!(SnapshotStore::open_read_only(tmp.path()).unwrap().load(last).unwrap().digest, digest);
    assert!(verify_through_binary(tmp.path()).starts_with("verify: ok"));
    // Audit verify starts from the oldest snapshot: its records' chain is
    // checked, every later record re-derived from the log, and every later
    // snapshot must hold the same records.
    let audit = bursar_server::verify::verify_audit(tmp.path()).unwrap();
    assert_eq!(audit.from_snapshot, Some(snapshots[0]));
    assert_eq!(audit.records, report.audit_records);
    assert_eq!(audit.snapshots_checked, snapshots.len(), "the start and every later snapshot");
    assert!(audit.summary().contains(&format!("from_snapshot={}", snapshots[0])));

    // Restart: recovery loads the newest snapshot; the log still verifies.
    assert_eq!(restart_and_idle(tmp.path()), last);
    assert_eq!(log_span(tmp.path()), (first, last, segments), "nothing more to remove");
    assert_eq!(bursar_server::verify::verify(tmp.path()).unwrap().digest, digest);

    // Without the newest snapshot, recovery falls back to the oldest and
    // replays the log from there: the same state.
    let store_dir = tmp.path().join("snapshots");
    let newest = std::fs::read_dir(&store_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(&format!("{last:020}")))
        .collect::<Vec<_>>();
    assert_eq!(newest.len(), 1, "the newest snapshot's manifest: {newest:?}");
    std::fs::remove_file(&newest[0]).unwrap();
    let node = Node::start(config(tmp.path(), false)).unwrap();
    assert_eq!(node.report().position, last);
    assert!(node.report().replayed_entries > 0);
    node.shutdown();
    assert_eq!(bursar_server::verify::verify(tmp.path()).unwrap().digest, digest);
}

#[test]
fn with_log_retain_every_segment_stays_and_verify_replays_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    small_ledger::populate(config(tmp.path(), true));
    let (first, last, segments) = log_span(tmp.path());
    assert_eq!(first, 1);
    assert!(segments > 4, "{segments} segments");
    let report = bursar_server::verify::verify(tmp.path()).unwrap();
    assert_eq!(report.entries, last);
    let early = bursar_server::verify::verify_until(tmp.path(), Some(3)).unwrap();
    assert_eq!(early.position, 3, "history before every snapshot is replayable");
    assert_eq!(bursar_server::verify::verify_audit(tmp.path()).unwrap().records, report.audit_records);
}

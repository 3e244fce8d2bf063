//! Damage to a data directory, seen through the real binary: a flipped bit
//! in acknowledged log data stops `bursar start` with the file and offset
//! and fails `bursar verify`; a torn tail beyond the durable point is cut
//! off and the server starts with everything before it.

mod small_ledger;

use bursar_client::{Client, ClientOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bursar(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bursar")).args(args).arg("--data-dir").arg(dir).output().unwrap()
}

/// Writes a few entries through an in-process node and stops it cleanly.
fn populate(dir: &Path) {
    small_ledger::populate(bursar_server::NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap()));
}

fn segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment exists")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn verify_passes_on_a_healthy_directory() {
    let tmp = tempfile::tempdir().unwrap();
    populate(tmp.path());
    let out = bursar(&["verify"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("verify: ok entries=23 accounts=4 transfers=20 audit_records=23"), "{line}");
    assert!(line.contains("1:USD:debits_posted=200:credits_posted=200"), "{line}");
}

#[test]
fn a_flipped_bit_in_acknowledged_data_stops_start_and_fails_verify() {
    let tmp = tempfile::tempdir().unwrap();
    populate(tmp.path());
    let seg = segment(tmp.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();

    let out = bursar(&["start", "--addr", "127.0.0.1:0"], tmp.path());
    assert!(!out.status.success(), "start must refuse: {}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("corruption in") && msg.contains("segment-") && msg.contains("at offset"), "{msg}");

    let out = bursar(&["verify"], tmp.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("verify: FAILED"), "{}", text(&out));
}

#[test]
fn a_torn_tail_beyond_the_durable_point_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    populate(tmp.path());
    // A crash in the middle of writing an entry nobody was told about:
    // half an entry at the end, the marker still at the last whole entry.
    let seg = segment(tmp.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let whole = bytes.len();
    bytes.extend_from_within(..150);
    std::fs::write(&seg, &bytes).unwrap();

    let out = bursar(&["verify"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("torn_tail_bytes=150"), "{}", text(&out));

    let node = bursar_server::Node::start(bursar_server::NodeConfig::new(
        tmp.path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .unwrap();
    assert_eq!(node.report().truncated_bytes, 150);
    let key = Some(small_ledger::ADMIN_KEY.to_string());
    let mut c = Client::connect(node.local_addr(), &ClientOptions { key, ..Default::default() }).unwrap();
    assert_eq!(c.lookup_transfers(&(100..120).collect::<Vec<_>>()).unwrap().len(), 20);
    node.shutdown();
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, whole);
}

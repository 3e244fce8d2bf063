//! `bursar verify` prints the state's digest and, with `--until`, the
//! state at an earlier log position, through the real binary: the digests
//! it prints equal the ones the engine stored with its own snapshots at
//! those positions, and positions the directory cannot rebuild fail
//! cleanly.

mod small_ledger;

use bursar_log::SnapshotStore;
use std::path::Path;
use std::process::{Command, Output};

fn verify(dir: &Path, until: Option<u64>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bursar"));
    cmd.args(["verify", "--data-dir"]).arg(dir);
    if let Some(position) = until {
        cmd.args(["--until", &position.to_string()]);
    }
    cmd.output().unwrap()
}

/// The summary line of a successful verify.
fn line(dir: &Path, until: Option<u64>) -> String {
    let out = verify(dir, until);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "verify --until {until:?}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("verify: ok entries="), "{stdout}");
    stdout
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    line.split(' ').find_map(|f| f.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no {name}= in {line}"))
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes single-transfer entries through an in-process node that takes a
/// snapshot after every entry it can (two are kept), and stops it cleanly
/// (which snapshots the end).
fn populate(dir: &Path) {
    let mut config = bursar_server::NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.snapshot_every_bytes = 1;
    small_ledger::populate(config);
}

#[test]
fn verify_until_prints_the_digest_the_engine_computed_at_that_position() {
    let tmp = tempfile::tempdir().unwrap();
    populate(tmp.path());
    let end = line(tmp.path(), None);
    let last: u64 = field(&end, "entries").parse().unwrap();
    assert_eq!(field(&end, "position"), last.to_string(), "{end}");
    let store = SnapshotStore::open_read_only(tmp.path()).unwrap();
    let snapshots = store.list().unwrap();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    assert_eq!(snapshots[1], last, "the clean stop snapshots the end");
    assert!(snapshots[0] < last, "{snapshots:?}");
    assert_eq!(field(&end, "digest"), hex(&store.load(last).unwrap().digest), "{end}");
    assert_eq!(line(tmp.path(), Some(last)), end, "--until the end is plain verify");

    let earlier = snapshots[0];
    let at = line(tmp.path(), Some(earlier));
    eprintln!("{end}\n{at}");
    assert_eq!(field(&at, "position"), earlier.to_string(), "{at}");
    assert_eq!(field(&at, "entries"), last.to_string(), "every entry is still checked: {at}");
    assert_eq!(field(&at, "digest"), hex(&store.load(earlier).unwrap().digest), "{at}");
    assert_ne!(field(&at, "digest"), field(&end, "digest"));
    assert_eq!(field(&at, "snapshots_checked"), "1", "{at}");
    // A transfer was written after the earlier snapshot: fewer transfers there.
    let transfers = |l: &str| field(l, "transfers").parse::<u64>().unwrap();
    assert!(transfers(&at) < transfers(&end) && transfers(&end) == 20, "{at}\n{end}");

    // Earlier than any snapshot: the log starts at 1, so no snapshot is
    // needed. Entry 1 creates the admin key, 2 the ledger, 3 the accounts.
    let first = line(tmp.path(), Some(3));
    assert_eq!(field(&first, "accounts"), "4", "{first}");
    assert_eq!(field(&first, "transfers"), "0", "{first}");

    let out = verify(tmp.path(), Some(last + 1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    let expected = format!("verify: FAILED position {} is beyond the log's end at position {last}", last + 1);
    assert!(stdout.starts_with(&expected), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

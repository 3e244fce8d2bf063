//! `bursar bench history` end to end on a small directory: a throughput run
//! writes 150,000 transfers with a snapshot every MiB (more than two full
//! 65,536-transfer chunks, so the old half of the history is on disk, read
//! through the block cache), then the history bench opens that directory,
//! finds old transfers on its own, checks every answer, and prints the one
//! line the README documents with the count that was written.

use std::path::Path;
use std::process::{Command, Output};

const TRANSFERS: u64 = 150_000;

fn bench(args: &[&str], data_dir: &Path) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_bursar-bench"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("BURSAR_LOG", "warn")
        .output()
        .expect("bursar-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: exit {}: {stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

fn field(line: &str, name: &str) -> f64 {
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} missing from {line}"));
    value.parse().unwrap_or_else(|e| panic!("{name}={value}: {e}"))
}

#[test]
fn history_reads_old_transfers_of_a_written_directory() {
    let temp = tempfile::Builder::new().prefix("bursar-bench-history-").tempdir().expect("a temporary directory");
    let data = temp.path().join("data");
    let transfers = TRANSFERS.to_string();
    let args = ["--transfers", &transfers, "--accounts", "500", "--batch", "2000", "--snapshot-every-mib", "1"];
    let written = bench(&args, &data);
    assert!(written.contains(&format!("bench: transfers={TRANSFERS} ")), "{written}");

    // A tiny cache: the timed reads of old history go to the chunk files.
    let stdout = bench(&["history", "--lookups", "300", "--pages", "50", "--cache-mib", "1"], &data);
    let line = stdout.lines().find(|l| l.starts_with("history: ")).unwrap_or_else(|| panic!("no line: {stdout}"));
    let names: Vec<&str> =
        line.split_whitespace().skip(1).take(4).filter_map(|kv| kv.split_once('=')).map(|kv| kv.0).collect();
    assert_eq!(names, ["transfers", "lookup_p99_ms", "account_page_p99_ms", "rss_mb"], "{line}");
    assert_eq!(field(line, "transfers"), TRANSFERS as f64, "{line}");
    assert_eq!((field(line, "lookups"), field(line, "pages")), (300.0, 50.0), "{line}");
    for name in ["lookup_p99_ms", "account_page_p99_ms", "rss_mb"] {
        assert!(field(line, name) > 0.0, "{name} in {line}");
    }
    assert_eq!(stdout.lines().filter(|l| l.starts_with("history: ")).count(), 1, "one line: {stdout}");
}

#[test]
fn history_refuses_a_directory_without_a_log() {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_bursar-bench"))
        .args(["history", "--data-dir"])
        .arg(temp.path().join("missing"))
        .output()
        .expect("bursar-bench runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no Bursar log"));
    assert!(!temp.path().join("missing").exists(), "no data directory is created");
}

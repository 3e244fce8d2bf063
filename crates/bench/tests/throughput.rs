//! The throughput bench end to end on a small run: it starts its embedded
//! server, checks the balances against its tally, and prints the one line
//! the README documents, with every field filled in.

use std::process::Command;

#[test]
fn a_small_run_prints_the_documented_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_bursar-bench"))
        .args(["--transfers", "20000", "--accounts", "100", "--batch", "500"])
        .env("BURSAR_LOG", "warn")
        .output()
        .expect("bursar-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {}: {stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("bench: ")).unwrap_or_else(|| panic!("no bench line: {stdout}"));
    let field = |name: &str| -> f64 {
        let value = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from {line}"));
        value.parse().unwrap_or_else(|e| panic!("{name}={value}: {e}"))
    };
    assert_eq!(field("transfers"), 20000.0);
    for name in ["tps", "rss_mb", "first_tenth_tps", "last_tenth_tps", "batch_p99_ms"] {
        assert!(field(name) > 0.0, "{name} in {line}");
    }
}

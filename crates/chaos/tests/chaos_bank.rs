//! `bursar chaos bank` (the `bursar-chaos` binary) against a real cluster (three `nats-server`, three
//! replicas) for 45 s under the seeded nemesis: no anomaly, and enough
//! transfers and faults that the run means something.
//!
//! Needs `nats-server` (fails, never skips, when it is missing).

use std::process::Command;

/// The numbers of the last line, `chaos: seconds=.. acked=.. faults=.. anomalies=..`.
fn summary(line: &str) -> Option<[u64; 4]> {
    let rest = line.strip_prefix("chaos: ")?;
    let mut values = [0u64; 4];
    let names = ["seconds", "acked", "faults", "anomalies"];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != names.len() {
        return None;
    }
    for ((field, name), value) in fields.iter().zip(names).zip(&mut values) {
        *value = field.strip_prefix(name)?.strip_prefix('=')?.parse().ok()?;
    }
    Some(values)
}

#[test]
fn the_bank_survives_the_nemesis() {
    // `bursar-chaos` runs the `bursar` binary next to it, which
    // `cargo test --workspace` builds (it is the binary of the cli crate's
    // integration tests); alone, build it first: `cargo build -p bursar`.
    let out = Command::new(env!("CARGO_BIN_EXE_bursar-chaos"))
        .args(["bank", "--duration", "45", "--seed", "7"])
        .output()
        .expect("the bursar-chaos binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(out.status.success(), "chaos bank failed with {}:\n{log}", out.status);
    let last = stdout.lines().last().unwrap_or_default();
    let Some([seconds, acked, faults, anomalies]) = summary(last) else {
        panic!("the last line is not the summary: {last:?}\n{log}");
    };
    assert_eq!(anomalies, 0, "{log}");
    assert!(seconds >= 45, "ran {seconds} s:\n{log}");
    assert!(acked >= 100, "only {acked} transfers acknowledged:\n{log}");
    assert!(faults >= 5, "only {faults} faults injected:\n{log}");
}

#[test]
fn the_summary_line_parses() {
    assert_eq!(summary("chaos: seconds=45 acked=1234 faults=9 anomalies=0"), Some([45, 1234, 9, 0]));
    assert_eq!(summary("chaos: t=10.0s acked=1"), None);
    assert_eq!(summary("chaos: seconds=45 acked=1234 faults=9"), None);
}

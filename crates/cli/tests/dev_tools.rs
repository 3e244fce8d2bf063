//! `bursar bench` and `bursar chaos` run the developer tools found next to
//! the binary, with the arguments untouched, and explain what to build when
//! a tool is missing. Method: a link to the real `bursar` in a temp dir,
//! first alone, then beside a stand-in tool that prints its arguments.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bursar_in(dir: &Path) -> PathBuf {
    let path = dir.join("bursar");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_bursar"), &path).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_bursar"), &path).expect("copy the bursar binary");
    }
    path
}

#[test]
fn a_missing_tool_is_named_with_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let bursar = bursar_in(dir.path());
    for (command, tool) in [("bench", "bursar-bench"), ("chaos", "bursar-chaos")] {
        let out = Command::new(&bursar).args([command, "--transfers", "10"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("{tool} is not installed next to this binary")), "{stderr}");
        assert!(stderr.contains(&format!("cargo build --release -p {tool}")), "{stderr}");
    }
}

#[test]
fn the_tool_gets_every_argument_and_its_exit_status_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let bursar = bursar_in(dir.path());
    let tool = dir.path().join("bursar-bench");
    std::fs::write(&tool, "#!/bin/sh\nfor a in \"$@\"; do echo \"arg:$a\"; done\nexit 7\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out =
        Command::new(&bursar).args(["bench", "cluster", "--help", "--batch", "-1", "two words"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "arg:cluster\narg:--help\narg:--batch\narg:-1\narg:two words\n");
    assert_eq!(out.status.code(), Some(7), "the tool's exit status is bursar's");
}

#!/usr/bin/env bash
# The full test suite: formatting, lints, and every test in the workspace.
# Installs what a fresh machine lacks (nothing beyond Rust so far).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace

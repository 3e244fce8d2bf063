//! Test-only: see `tests/tidy.rs`. The rules live in the test so that a
//! change that breaks one fails `cargo test` with the place and the rule.

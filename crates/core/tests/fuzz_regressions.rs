//! Regression tests for what the core fuzz targets (`fuzz_body.rs`,
//! `fuzz_snapshot.rs`) found, one per finding, named after it.

#[path = "fuzz/seeds.rs"]
mod seeds;

use bursar_core::Limits;
use bursar_core::command::{Command, Envelope, LogCommand, Operation, decode_body, encode_command, envelope_prefix};
use bursar_core::machine::Machine;
use bursar_core::records::encode_all;
use seeds::*;

/// Finding of `fuzz_decode_body`: the envelope's reserved bytes were
/// skipped, not checked, so two bodies decoded to the same commands.
#[test]
fn regression_envelope_reserved_bytes_were_ignored() {
    let ledgers = [ledger(1, "GBP")];
    let command = Command { operation: Operation::CreateLedgers, events: encode_all(&ledgers) };
    let env = Envelope {
        key_id: 9,
        idempotency: Some(([1; 16], [2; 16])),
        retention_seconds: 60,
        idempotency_limit: 10,
        request_id: "r-1",
        route: "POST /v1/ledgers",
        idempotency_key: "k",
    };
    let mut valid = envelope_prefix(&env, &command).unwrap();
    encode_command(&mut valid, &command);
    assert!(decode_body(&valid).is_ok());
    // Envelope fields start after the 8-byte envelope header: version,
    // flags, 2 reserved bytes, retention, key id, limit, then 4 reserved
    // bytes at 20..24.
    for at in [10, 11, 8 + 20, 8 + 23] {
        let mut body = valid.clone();
        body[at] = 1;
        assert!(decode_body(&body).unwrap_err().to_string().contains("reserved"), "byte {at}");
    }
}

/// Finding of `fuzz_decode_body`: an envelope could carry a request id,
/// route or idempotency key longer than the encoder (and the audit trail,
/// which truncated them) allows, or a scope without an idempotency key.
#[test]
fn regression_envelope_fields_beyond_the_encoder_limits_were_accepted() {
    let command = Command { operation: Operation::CreateLedgers, events: &[] };
    let long = "a".repeat(64);
    let env = Envelope {
        key_id: 1,
        idempotency: None,
        retention_seconds: 0,
        idempotency_limit: 0,
        request_id: &long,
        route: "r",
        idempotency_key: "",
    };
    let mut body = envelope_prefix(&env, &command).unwrap();
    encode_command(&mut body, &command);
    assert!(decode_body(&body).is_ok());
    // One more byte of request id (its length byte follows the 56 fixed
    // bytes of the fields), and the envelope length to match.
    let mut longer = body.clone();
    longer.insert(8 + 56 + 1, b'a');
    longer[8 + 56] += 1;
    let len = u32::from_le_bytes(longer[4..8].try_into().unwrap()) + 1;
    longer[4..8].copy_from_slice(&len.to_le_bytes());
    assert!(decode_body(&longer).unwrap_err().to_string().contains("longer than 64"));
    // A scope without the idempotency flag.
    let mut scoped = body.clone();
    scoped[8 + 24] = 7; // the scope starts after the reserved bytes
    assert!(decode_body(&scoped).is_err());
}

/// Finding of `fuzz_apply_entry`: an entry timestamp near `u64::MAX` (a bad
/// clock or a damaged entry) overflowed the per-event clock and panicked
/// every replica that applied it. Entry time is now capped.
#[test]
fn regression_entry_timestamp_near_u64_max_overflowed_the_clock() {
    let (mut m, position, _) = base();
    let t = [transfer(700, 1, 2, 1), transfer(701, 2, 1, 1)];
    for (i, ts) in [u64::MAX, u64::MAX, 5].into_iter().enumerate() {
        let command = LogCommand::Plain(Command {
            operation: Operation::CreateTransfers,
            events: encode_all(&t[i % 2..i % 2 + 1]),
        });
        m.apply_entry(position + 1 + i as u64, ts, &[command]);
        m.check_invariants_deep().unwrap();
    }
    let stamp = m.ledger().transfer(701).unwrap().timestamp;
    assert!(stamp > bursar_core::limits::ENTRY_TIME_MAX && stamp < bursar_core::limits::LAST_TIMESTAMP_MAX);
}

/// Finding of `fuzz_apply_entry`: an idempotent replay whose recorded
/// results outnumber the replayed command's events (same scope and
/// fingerprint, different command: only a damaged or hostile entry does
/// that) underflowed the audit's `ok` count.
#[test]
fn regression_replay_with_more_results_than_events_underflowed() {
    let (mut m, mut position, time) = base();
    let failing = [account(1, USD), account(2, USD)];
    for events in [encode_all(&failing), encode_all(&failing[..1])] {
        position += 1;
        let body = enveloped_body(Operation::CreateAccounts, events, "same-key");
        let out = m.apply_entry(position, time + position * SEC, &decode_body(&body).unwrap());
        assert_eq!(out[0].1.len(), 2, "both failures, then both replayed");
    }
    m.check_invariants_deep().unwrap();
}

/// Finding of `fuzz_snapshot_restore`: a snapshot whose order book
/// disagreed with the ledger (an order's amounts edited) restored, and the
/// machine's invariant check failed only later. Restore now checks orders
/// against the ledger: every single-byte edit of the orders section is
/// refused or restores a consistent state.
#[test]
fn regression_restore_accepted_orders_that_disagree_with_the_ledger() {
    let (m, _, _) = base();
    let orders = bursar_core::state::SECTIONS.len() + 4;
    let len = stored(&m).sections[orders][0].bytes_mut().expect("in memory").len();
    for at in 0..len {
        for value in [0u8, 1, 0xff] {
            let mut s = stored(&m);
            s.sections[orders][0].bytes_mut().expect("in memory")[at] = value;
            if let Ok(restored) = Machine::restore(Limits::default(), s) {
                restored.check_invariants_deep().unwrap_or_else(|e| panic!("byte {at} = {value}: {e}"));
            }
        }
    }
}

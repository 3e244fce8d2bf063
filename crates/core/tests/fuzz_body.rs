//! Fuzz targets for log entry bodies (issue 13, trust boundaries).
//!
//! A body comes from the log on disk or, in cluster mode, from another
//! replica through JetStream: it is outside input. Two properties:
//!
//! - `fuzz_decode_body`: any bytes decode to commands or an error, and what
//!   decodes re-encodes to exactly the same bytes (one encoding per body, so
//!   no field is silently ignored).
//! - `fuzz_apply_entry`: bodies built from valid events of every write
//!   operation, with mutated events, envelopes and bytes, applied to a
//!   machine holding ledgers, accounts, transfers, keys, an order and a
//!   webhook: never panics, every invariant still holds, and a snapshot of
//!   the result restores to the same digest.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

#[path = "fuzz/seeds.rs"]
mod seeds;

use bursar_core::Limits;
use bursar_core::command::{Command, Envelope, LogCommand, Operation, decode_body, encode_command, envelope_prefix};
use bursar_core::machine::Machine;
use bursar_fuzz as fz;
use proptest::prelude::*;
use proptest::sample::Index;
use seeds::*;

/// One command of a fuzzed entry.
#[derive(Clone, Debug)]
struct FuzzCommand {
    /// Which seed's events to start from.
    seed: Index,
    /// Repeat the seed's events (more events per command).
    repeat: usize,
    /// Edits of the event bytes that keep their length (so the command
    /// header stays consistent and apply sees the damaged fields).
    event_edits: Vec<fz::Mutation>,
    /// A different operation code, valid or not.
    operation: Option<u8>,
    envelope: Option<FuzzEnvelope>,
}

#[derive(Clone, Debug)]
struct FuzzEnvelope {
    key_id: u64,
    idempotency: Option<([u8; 16], [u8; 16])>,
    retention_seconds: u32,
    idempotency_limit: u32,
    request_id: String,
    route: String,
    idempotency_key: String,
}

fn fuzz_envelope() -> impl Strategy<Value = FuzzEnvelope> {
    let scope = prop_oneof![Just([1u8; 16]), Just([2u8; 16]), any::<[u8; 16]>()];
    (
        prop_oneof![Just(0u64), Just(9), any::<u64>()],
        proptest::option::of((scope, prop_oneof![Just([3u8; 16]), any::<[u8; 16]>()])),
        prop_oneof![Just(86_400u32), any::<u32>()],
        prop_oneof![Just(1_000u32), 0u32..3, any::<u32>()],
        ".{0,20}",
        prop_oneof![Just("POST /v1/transfers".to_string()), ".{0,30}"],
        ".{0,40}",
    )
        .prop_map(
            |(key_id, idempotency, retention_seconds, idempotency_limit, request_id, route, idempotency_key)| {
                FuzzEnvelope {
                    key_id,
                    idempotency,
                    retention_seconds,
                    idempotency_limit,
                    request_id,
                    route,
                    idempotency_key,
                }
            },
        )
}

fn fuzz_command() -> impl Strategy<Value = FuzzCommand> {
    (
        any::<Index>(),
        prop_oneof![4 => Just(1usize), 1 => 2usize..5],
        fz::mutations(6),
        proptest::option::weighted(0.1, any::<u8>()),
        proptest::option::weighted(0.4, fuzz_envelope()),
    )
        .prop_map(|(seed, repeat, event_edits, operation, envelope)| FuzzCommand {
            seed,
            repeat,
            event_edits,
            operation,
            envelope,
        })
}

/// Encodes one fuzzed command; keeps length-preserving edits only.
fn encode(seeds: &[(Operation, Vec<u8>)], c: &FuzzCommand, body: &mut Vec<u8>) {
    let (op, events) = &seeds[c.seed.index(seeds.len())];
    let mut bytes = events.repeat(c.repeat);
    let len = bytes.len();
    for m in &c.event_edits {
        fz::apply(&mut bytes, m);
        bytes.resize(len, 0);
    }
    let operation = c.operation.and_then(Operation::from_code).unwrap_or(*op);
    let command = Command { operation, events: &bytes };
    match &c.envelope {
        None => {
            if let Some(code) = c.operation.filter(|code| Operation::from_code(*code).is_none()) {
                // An unknown operation code: only the raw header can carry it.
                let mut h = command.header();
                h[0] = code;
                body.extend_from_slice(&h);
                body.extend_from_slice(&bytes);
            } else {
                encode_command(body, &command);
            }
        }
        Some(e) => {
            let env = Envelope {
                key_id: e.key_id,
                idempotency: e.idempotency,
                retention_seconds: e.retention_seconds,
                idempotency_limit: e.idempotency_limit,
                request_id: &e.request_id,
                route: &e.route,
                idempotency_key: &e.idempotency_key,
            };
            if let Ok(prefix) = envelope_prefix(&env, &command) {
                body.extend_from_slice(&prefix);
            }
            encode_command(body, &command);
        }
    }
}

/// A fuzzed entry: its commands, byte edits of the whole body, and how far
/// log time moves (sometimes backwards, sometimes to the far end).
#[derive(Clone, Debug)]
struct FuzzEntry {
    commands: Vec<FuzzCommand>,
    body_edits: Vec<fz::Mutation>,
    time: TimeStep,
}

#[derive(Clone, Debug)]
enum TimeStep {
    Forward(u64),
    Back(u64),
    At(u64),
}

fn fuzz_entry() -> impl Strategy<Value = FuzzEntry> {
    let time = prop_oneof![
        6 => (0u64..7 * 24 * 3600 * SEC).prop_map(TimeStep::Forward),
        1 => (0u64..3600 * SEC).prop_map(TimeStep::Back),
        1 => prop_oneof![proptest::sample::select(fz::INTERESTING), any::<u64>()].prop_map(TimeStep::At),
    ];
    let body_edits = prop_oneof![4 => Just(Vec::new()), 1 => fz::mutations(4)];
    (proptest::collection::vec(fuzz_command(), 0..5), body_edits, time)
        .prop_map(|(commands, body_edits, time)| FuzzEntry { commands, body_edits, time })
}

/// Re-encodes decoded commands (the inverse of `decode_body`).
fn reencode(commands: &[LogCommand<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in commands {
        if let LogCommand::Enveloped(env, command) = c {
            out.extend_from_slice(&envelope_prefix(env, command).expect("decoded fields are within bounds"));
        }
        encode_command(&mut out, c.command());
    }
    out
}

fn check_decode(body: &[u8]) -> Result<(), TestCaseError> {
    match decode_body(body) {
        Ok(commands) => prop_assert_eq!(reencode(&commands), body, "a body decodes but is not canonical"),
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

/// Seed bodies for byte-level mutation: every seed, plain and enveloped.
fn seed_body(i: usize, enveloped: bool) -> Vec<u8> {
    let seeds = seeds();
    let (op, events) = &seeds[i % seeds.len()];
    let command = Command { operation: *op, events };
    let mut body = Vec::new();
    if enveloped {
        let env = Envelope {
            key_id: 9,
            idempotency: Some(([1; 16], [2; 16])),
            retention_seconds: 60,
            idempotency_limit: 10,
            request_id: "r-1",
            route: "POST /v1/transfers",
            idempotency_key: "k",
        };
        body.extend_from_slice(&envelope_prefix(&env, &command).expect("short fields"));
    }
    encode_command(&mut body, &command);
    body
}

proptest! {
    #![proptest_config(fz::config(512))]

    #[test]
    fn fuzz_decode_body(
        seed in any::<Index>(),
        enveloped in any::<bool>(),
        edits in fz::mutations(8),
        random in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        check_decode(&fz::mutated(seed_body(seed.index(1 << 16), enveloped), &edits))?;
        check_decode(&random)?;
    }
}

proptest! {
    #![proptest_config(fz::config(96))]

    #[test]
    fn fuzz_apply_entry(entries in proptest::collection::vec(fuzz_entry(), 1..4)) {
        let seeds = seeds();
        let (mut m, mut position, mut time) = base();
        for entry in &entries {
            let mut body = Vec::new();
            for c in &entry.commands {
                encode(&seeds, c, &mut body);
            }
            let body = fz::mutated(body, &entry.body_edits);
            time = match entry.time {
                TimeStep::Forward(d) => time.saturating_add(d),
                TimeStep::Back(d) => time.saturating_sub(d),
                TimeStep::At(t) => t,
            };
            let Ok(commands) = decode_body(&body) else { continue };
            position += 1;
            m.apply_entry(position, time, &commands);
            if let Err(e) = m.check_invariants_deep() {
                return Err(TestCaseError::fail(format!("invariant broken after entry {position}: {e}")));
            }
        }
        let restored = Machine::restore(Limits::default(), stored(&m))
            .map_err(|e| TestCaseError::fail(format!("own snapshot does not restore: {e}")))?;
        prop_assert_eq!(restored.digest(), m.digest());
    }
}

#[test]
fn seeds_apply_cleanly() {
    // The base state really holds what the fuzzer mutates: every seed
    // event was accepted, so mutations start from valid encodings.
    let seeds = seeds();
    let mut m = Machine::new(Limits::default());
    for (i, (op, events)) in seeds.iter().enumerate() {
        let command = LogCommand::Plain(Command { operation: *op, events });
        let out = m.apply_entry(i as u64 + 1, START + (i as u64 + 1) * SEC, &[command]);
        assert!(out[0].1.is_empty(), "seed {i} ({}) failed: {:?}", op.name(), out[0].1);
    }
    m.check_invariants_deep().unwrap();
}

//! Fuzz target for binary protocol frames (issue 13, trust boundaries).
//!
//! `fuzz_frame_decode` starts from valid request frames of every operation
//! (and ping), edits the header (raw, or with its CRC recomputed so the
//! checks behind the CRC are reached) and the body (raw, or with the body
//! CRC recomputed so size and count checks are reached), then runs the
//! server's checks: `Header::decode` and `check_request`. Neither may panic;
//! a header that decodes re-encodes to the same bytes, and a request that
//! passes has exactly `count` whole events of an operation the binary
//! protocol may reach.
//!
//! The live counterpart (random frames against a real listener) is
//! `crates/server/tests/fuzz_protocol.rs`.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

use bursar_core::Operation;
use bursar_fuzz as fz;
use bursar_proto::{HEADER_SIZE, Header, PING, RequestOp, check_request};
use proptest::prelude::*;

/// A valid request: an operation code (or ping), its body and count.
fn request() -> impl Strategy<Value = (u8, Vec<u8>, u32)> {
    let op = prop_oneof![Just(PING), proptest::sample::select(Operation::ALL).prop_map(|o| o as u8)];
    (op, 1u32..4, any::<u8>()).prop_map(|(code, count, fill)| match Operation::from_code(code) {
        Some(op) => {
            let count = count.min(op.events_max() as u32);
            (code, vec![fill; op.event_size() * count as usize], count)
        }
        None => (code, Vec::new(), 0),
    })
}

fn reseal_header(h: &mut [u8; HEADER_SIZE]) {
    let crc = crc32c::crc32c(&h[8..]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
}

proptest! {
    #![proptest_config(fz::config(2048))]

    #[test]
    fn fuzz_frame_decode(
        (code, body, count) in request(),
        request_id in any::<u64>(),
        header_edits in fz::mutations(4),
        reseal in any::<bool>(),
        body_edits in prop_oneof![2 => Just(Vec::new()), 1 => fz::mutations(4)],
        fix_body_crc in any::<bool>(),
    ) {
        let valid = Header::request(code, request_id, &body, count);
        let mut raw = [0u8; HEADER_SIZE];
        let edited = fz::mutated(valid.encode().to_vec(), &header_edits);
        let n = edited.len().min(HEADER_SIZE);
        raw[..n].copy_from_slice(&edited[..n]);
        if reseal {
            reseal_header(&mut raw);
        }
        let body = fz::mutated(body, &body_edits);
        let Ok(mut header) = Header::decode(&raw) else { return Ok(()) };
        prop_assert_eq!(header.encode(), raw, "a header decodes but is not canonical");
        if fix_body_crc {
            header.body_crc = crc32c::crc32c(&body);
            header.body_len = body.len() as u32;
        }
        match check_request(&header, &body) {
            Ok(RequestOp::Ping) => prop_assert!(header.operation == PING && body.is_empty() && header.count == 0),
            Ok(RequestOp::Authenticate) => {
                prop_assert!(header.operation == bursar_proto::AUTHENTICATE);
                prop_assert!(body.len() <= bursar_proto::AUTH_TOKEN_MAX);
            }
            Ok(RequestOp::Op(op)) => {
                prop_assert!(op.binary_allowed(), "{} reached through the binary protocol", op.name());
                prop_assert_eq!(body.len(), op.event_size() * header.count as usize);
                prop_assert!(header.count as usize <= op.events_max());
            }
            Err(e) => prop_assert!(!e.name().is_empty()),
        }
    }

    #[test]
    fn fuzz_frame_decode_random(raw in any::<[u8; HEADER_SIZE]>(), reseal in any::<bool>()) {
        let mut raw = raw;
        if reseal {
            raw[0..4].copy_from_slice(&bursar_proto::MAGIC.to_le_bytes());
            reseal_header(&mut raw);
        }
        if let Ok(header) = Header::decode(&raw) {
            prop_assert_eq!(header.encode(), raw);
            let _ = check_request(&header, &[]);
        }
    }
}

//! Sealed log entries: what a replica publishes to the log stream, and how
//! a replica judges what it reads back.
//!
//! ```text
//! sealed := "BSE1" | key_id u32 | node u32 | boot u64 | proposal u64
//!           | timestamp u64 | mac [u8; 32] | body
//! mac    := blake3 keyed (log-entry subkey of key_id) over
//!           (stream name, the 36 header bytes before the mac, body)
//! ```
//!
//! The MAC covers everything the state machine takes from the message:
//! who proposed it (for replay protection and answering requests), its
//! time, and its commands; the stream name binds it to one cluster's log.
//! The stream position is not covered (unknown when proposing): a copied
//! message is caught by replay protection in the state
//! (`bursar_core::service::proposers`).
//!
//! Judging ([`judge`]) never fails: every message becomes an entry header
//! for the local log, either the authenticated origin (the body follows)
//! or a rejection that stands alone. It depends only on the message bytes
//! and the keys held, so replicas holding the same keys judge alike.

use crate::cluster_key::{ClusterKeys, MacError, Purpose};
use bursar_core::command::decode_body;
use bursar_core::entry::{EntryHeader, Origin, RejectReason, Rejection};

pub const MAGIC: [u8; 4] = *b"BSE1";
/// Bytes before the MAC.
const HEADER_BYTES: usize = 4 + 4 + 4 + 8 + 8 + 8;
/// Bytes before the body.
pub const SEAL_BYTES: usize = HEADER_BYTES + 32;

/// A proposal's seal fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealFields {
    pub origin: Origin,
    pub timestamp: u64,
}

/// The message payload for a proposal, signed with the active key.
pub fn seal(keys: &ClusterKeys, stream: &str, origin: Origin, timestamp: u64, body: &[u8]) -> Vec<u8> {
    let origin = Origin { key_id: keys.active(), ..origin };
    let header = header_bytes(&SealFields { origin, timestamp });
    let mac = keys
        .mac(origin.key_id, Purpose::LogEntry, &[stream.as_bytes(), &header, body])
        .expect("invariant: the active key is held");
    let mut out = Vec::with_capacity(SEAL_BYTES + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&mac);
    out.extend_from_slice(body);
    // Paired with `judge`: what is sealed parses back and authenticates.
    assert_eq!(parse_header(&out), Some(SealFields { origin, timestamp }), "invariant: a sealed header parses back");
    debug_assert!(
        keys.verify(origin.key_id, Purpose::LogEntry, &[stream.as_bytes(), &header, body], &mac).is_ok(),
        "invariant: a sealed proposal authenticates under the key that sealed it"
    );
    out
}

/// The message id a proposal is published under: unique per proposal, the
/// same for its retries (so the broker drops duplicates).
pub fn message_id(origin: &Origin) -> String {
    format!("n{}-{}-{}", origin.node, origin.boot, origin.proposal)
}

/// A committed message judged: the entry header for the local log, the
/// entry time, and where the body starts when admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    pub header: EntryHeader,
    /// The sealed time when authentic; 0 otherwise (the state machine then
    /// moves time forward by its minimum step only).
    pub timestamp: u64,
    /// The commands' byte range in the payload (empty when rejected).
    pub body: std::ops::Range<usize>,
}

/// Authenticates and checks one committed message.
pub fn judge(keys: &ClusterKeys, stream: &str, payload: &[u8]) -> Judged {
    let rejected = |reason, claimed, timestamp| Judged {
        header: EntryHeader::Rejected(Rejection {
            reason,
            claimed,
            payload_len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            payload_hash: *blake3::hash(payload).as_bytes(),
        }),
        timestamp,
        body: 0..0,
    };
    let Some(fields) = parse_header(payload) else {
        return rejected(RejectReason::Malformed, Origin::default(), 0);
    };
    let (header, rest) = payload.split_at(HEADER_BYTES);
    let (mac, body) = rest.split_at(32);
    let mac: &[u8; 32] = mac.try_into().expect("invariant: split at 32");
    let claimed = fields.origin;
    match keys.verify(claimed.key_id, Purpose::LogEntry, &[stream.as_bytes(), header, body], mac) {
        Err(MacError::UnknownKey) => return rejected(RejectReason::UnknownKey, claimed, 0),
        Err(MacError::Mismatch) => return rejected(RejectReason::BadMac, claimed, 0),
        Ok(()) => {}
    }
    // Authentic from here: the time can be trusted even if the body is bad.
    if decode_body(body).is_err() {
        return rejected(RejectReason::Undecodable, claimed, fields.timestamp);
    }
    Judged { header: EntryHeader::Origin(claimed), timestamp: fields.timestamp, body: SEAL_BYTES..payload.len() }
}

fn header_bytes(f: &SealFields) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    out[0..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&f.origin.key_id.to_le_bytes());
    out[8..12].copy_from_slice(&f.origin.node.to_le_bytes());
    out[12..20].copy_from_slice(&f.origin.boot.to_le_bytes());
    out[20..28].copy_from_slice(&f.origin.proposal.to_le_bytes());
    out[28..36].copy_from_slice(&f.timestamp.to_le_bytes());
    out
}

fn parse_header(payload: &[u8]) -> Option<SealFields> {
    if payload.len() < SEAL_BYTES || payload[0..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(payload[i..i + 4].try_into().expect("4-byte slice"));
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8-byte slice"));
    let origin = Origin { key_id: u32_at(4), node: u32_at(8), boot: u64_at(12), proposal: u64_at(20) };
    Some(SealFields { origin, timestamp: u64_at(28) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bursar_core::command::{Command, Operation, encode_command};
    use bursar_core::records::{Transfer, encode_all};
    use proptest::prelude::*;

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn keys(text: &str) -> ClusterKeys {
        ClusterKeys::parse(text).unwrap()
    }

    fn body() -> Vec<u8> {
        let mut body = Vec::new();
        let transfers = vec![Transfer { id: 7, amount: 5, ledger: 1, code: 1, ..Default::default() }];
        encode_command(&mut body, &Command { operation: Operation::CreateTransfers, events: encode_all(&transfers) });
        body
    }

    fn origin() -> Origin {
        Origin { node: 2, key_id: 0, boot: 1_800_000_000_000_000_000, proposal: 9 }
    }

    fn reason(j: &Judged) -> Option<RejectReason> {
        match j.header {
            EntryHeader::Rejected(r) => Some(r.reason),
            _ => None,
        }
    }

    #[test]
    fn a_sealed_proposal_is_admitted_with_its_origin_and_time() {
        let k = keys(&format!("4:{A}"));
        let sealed = seal(&k, "LOG", origin(), 123, &body());
        let j = judge(&k, "LOG", &sealed);
        assert_eq!(j.header, EntryHeader::Origin(Origin { key_id: 4, ..origin() }));
        assert_eq!(j.timestamp, 123);
        assert_eq!(&sealed[j.body.clone()], &body()[..]);
    }

    #[test]
    fn forged_replayed_elsewhere_and_unsealed_messages_are_rejected() {
        let k = keys(&format!("1:{A}"));
        let sealed = seal(&k, "LOG", origin(), 123, &body());
        assert_eq!(reason(&judge(&k, "OTHER", &sealed)), Some(RejectReason::BadMac), "another cluster's log");
        assert_eq!(reason(&judge(&keys(&format!("1:{B}")), "LOG", &sealed)), Some(RejectReason::BadMac));
        assert_eq!(reason(&judge(&keys(&format!("2:{A}")), "LOG", &sealed)), Some(RejectReason::UnknownKey));
        assert_eq!(reason(&judge(&k, "LOG", &body())), Some(RejectReason::Malformed), "a raw body");
        assert_eq!(reason(&judge(&k, "LOG", b"")), Some(RejectReason::Malformed));
        let mut later = sealed.clone();
        later[28] ^= 1; // the timestamp is covered
        assert_eq!(reason(&judge(&k, "LOG", &later)), Some(RejectReason::BadMac));
        let j = judge(&k, "LOG", &later);
        assert_eq!(j.timestamp, 0, "an unauthenticated time is not used");
        assert!(j.header.authentic_origin().is_none(), "a forged origin answers nobody's requests");
    }

    #[test]
    fn an_authentic_body_that_does_not_decode_is_rejected_with_its_time() {
        let k = keys(A);
        let sealed = seal(&k, "LOG", origin(), 77, &[255, 0, 0, 0, 1, 0, 0, 0]);
        let j = judge(&k, "LOG", &sealed);
        assert_eq!(reason(&j), Some(RejectReason::Undecodable));
        assert_eq!(j.timestamp, 77);
        assert_eq!(j.header.authentic_origin(), Some(Origin { key_id: 1, ..origin() }));
    }

    #[test]
    fn rotation_accepts_every_held_key_and_signs_with_the_first() {
        let old = keys(&format!("1:{A}"));
        let both = keys(&format!("2:{B},1:{A}"));
        let from_old = seal(&old, "LOG", origin(), 1, &body());
        let from_new = seal(&both, "LOG", origin(), 1, &body());
        assert!(reason(&judge(&both, "LOG", &from_old)).is_none());
        assert!(reason(&judge(&both, "LOG", &from_new)).is_none());
        assert_eq!(reason(&judge(&old, "LOG", &from_new)), Some(RejectReason::UnknownKey));
    }

    proptest! {
        /// Any change to a sealed message is either rejected or (never, in
        /// practice) a different authentic message: it never panics, and
        /// no flipped bit passes.
        #[test]
        fn every_bit_flip_is_rejected(bit in 0usize..(SEAL_BYTES + 48) * 8) {
            let k = keys(A);
            let mut sealed = seal(&k, "LOG", origin(), 5, &body());
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(reason(&judge(&k, "LOG", &sealed)).is_some());
        }

        #[test]
        fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let j = judge(&keys(A), "LOG", &payload);
            prop_assert!(reason(&j).is_some());
        }
    }
}

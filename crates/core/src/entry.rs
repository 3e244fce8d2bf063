//! A log entry's body as the state machine sees it: an optional header
//! saying where a cluster entry came from (or why it was refused), then the
//! commands.
//!
//! ```text
//! entry     := [origin | rejected] (command | envelope)*
//! origin    := 33 | reserved [u8; 3] | 24 u32 | node u32 | key_id u32 | boot u64 | proposal u64
//! rejected  := 34 | reserved [u8; 3] | 64 u32 | reason u8 | reserved [u8; 3] | node u32 | key_id u32
//!              | boot u64 | proposal u64 | payload_len u32 | payload_hash [u8; 32]
//! ```
//!
//! A single node writes neither header. A replica writes one into the local
//! copy of every committed cluster entry, after it authenticated the entry
//! (`bursar-cluster`'s sealing): `origin` when the entry's MAC is valid and
//! its body decodes, `rejected` (alone) when not. Applying an `origin` entry
//! first asks [`Proposers`](crate::service::proposers::Proposers) whether
//! the proposal is new (replay protection, deterministic); a refused entry of
//! either kind changes nothing but time and one audit record. The local log
//! thus records each decision once, so a restart or `bursar verify` replays
//! it without the cluster keys.
//!
//! This module decodes the header; `command::decode_entry` the whole body.

use crate::error::DecodeError;

/// The item code of an origin header.
pub const ORIGIN: u8 = 33;
/// The item code of a rejection.
pub const REJECTED: u8 = 34;
const ORIGIN_LEN: usize = 24;
const REJECTED_LEN: usize = 64;

/// Who proposed a cluster entry, as its authenticated seal says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The proposing replica's node id.
    pub node: u32,
    /// The cluster key that authenticated it (0 when none did).
    pub key_id: u32,
    /// The proposer's run: strictly increasing across its restarts.
    pub boot: u64,
    /// The proposal's number within the run.
    pub proposal: u64,
}

crate::codes::result_codes! {
    /// Why a committed cluster entry was not applied. Codes are stable.
    RejectReason {
        Ok = 0 => "Not rejected.",
        Malformed = 1 => "The message is not a sealed entry (too short, or an unknown format).",
        UnknownKey = 2 => "The entry names a cluster key this replica does not hold.",
        BadMac = 3 => "The entry's authentication code does not match: forged or damaged.",
        Undecodable = 4 => "The entry is authentic but its body does not decode.",
        Replayed = 5 => "This proposal was applied before: a replayed message.",
        StaleBoot = 6 => "The proposal comes from an earlier run of its replica than one already seen.",
        TooOld = 7 => "The proposal is older than the replay window of its replica's run.",
        TooManyProposers = 8 => "More replicas proposed entries than the state tracks.",
    }
}

impl RejectReason {
    pub fn from_u8(code: u8) -> Option<RejectReason> {
        RejectReason::from_code(u32::from(code)).filter(|r| *r != RejectReason::Ok)
    }
}

/// A committed cluster entry that failed authentication or decoding: what
/// the seal claimed (unauthenticated, for the record) and which bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// As claimed by the message; zeros when it could not be read.
    pub claimed: Origin,
    pub payload_len: u32,
    /// blake3 of the whole message payload.
    pub payload_hash: [u8; 32],
}

/// The header of a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryHeader {
    /// A single node's entry (or one logged before cluster entries were sealed).
    None,
    /// An authenticated cluster entry.
    Origin(Origin),
    /// A cluster entry refused before decoding; it carries no commands.
    Rejected(Rejection),
}

impl EntryHeader {
    /// The proposal this entry authentically comes from: an admitted
    /// entry's origin, or a refused one whose seal verified (its body did
    /// not decode). None for a single node's entry and for messages whose
    /// claimed origin nobody vouches for.
    pub fn authentic_origin(&self) -> Option<Origin> {
        match self {
            EntryHeader::Origin(o) => Some(*o),
            EntryHeader::Rejected(r) if r.reason == RejectReason::Undecodable => Some(r.claimed),
            _ => None,
        }
    }

    /// The bytes this header adds before the entry's commands.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            EntryHeader::None => Vec::new(),
            EntryHeader::Origin(o) => encode_origin(o).to_vec(),
            EntryHeader::Rejected(r) => encode_rejection(r),
        }
    }
}

/// The origin header's bytes; the entry's commands follow it.
pub fn encode_origin(origin: &Origin) -> [u8; 8 + ORIGIN_LEN] {
    let mut out = [0u8; 8 + ORIGIN_LEN];
    out[0] = ORIGIN;
    out[4..8].copy_from_slice(&(ORIGIN_LEN as u32).to_le_bytes());
    out[8..12].copy_from_slice(&origin.node.to_le_bytes());
    out[12..16].copy_from_slice(&origin.key_id.to_le_bytes());
    out[16..24].copy_from_slice(&origin.boot.to_le_bytes());
    out[24..32].copy_from_slice(&origin.proposal.to_le_bytes());
    out
}

/// A whole entry body recording a rejection.
pub fn encode_rejection(r: &Rejection) -> Vec<u8> {
    assert!(r.reason != RejectReason::Ok, "a rejection has a reason");
    let mut out = Vec::with_capacity(8 + REJECTED_LEN);
    out.push(REJECTED);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&(REJECTED_LEN as u32).to_le_bytes());
    out.push(r.reason.code() as u8);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&r.claimed.node.to_le_bytes());
    out.extend_from_slice(&r.claimed.key_id.to_le_bytes());
    out.extend_from_slice(&r.claimed.boot.to_le_bytes());
    out.extend_from_slice(&r.claimed.proposal.to_le_bytes());
    out.extend_from_slice(&r.payload_len.to_le_bytes());
    out.extend_from_slice(&r.payload_hash);
    debug_assert_eq!(out.len(), 8 + REJECTED_LEN);
    out
}

/// Splits a log entry body into its header, if any, and the commands'
/// bytes after it (none after a rejection).
pub fn decode_header(body: &[u8]) -> Result<(EntryHeader, &[u8]), DecodeError> {
    match body.first() {
        Some(&ORIGIN) => {
            let fields = item(body, ORIGIN_LEN, ORIGIN_ITEM)?;
            let mut c = crate::cursor::Cursor::new(fields);
            let origin = Origin { node: c.u32()?, key_id: c.u32()?, boot: c.u64()?, proposal: c.u64()? };
            Ok((EntryHeader::Origin(origin), &body[8 + ORIGIN_LEN..]))
        }
        Some(&REJECTED) => {
            let fields = item(body, REJECTED_LEN, REJECTED_ITEM)?;
            if body.len() != 8 + REJECTED_LEN {
                return Err(DecodeError::BytesAfterRejection);
            }
            let mut c = crate::cursor::Cursor::new(fields);
            let code = c.u8()?;
            let reason = RejectReason::from_u8(code)
                .ok_or(DecodeError::UnknownCode { what: "rejection reason", code: u64::from(code) })?;
            if c.array::<3>()? != [0; 3] {
                return Err(DecodeError::ReservedNotZero { what: "rejection" });
            }
            let claimed = Origin { node: c.u32()?, key_id: c.u32()?, boot: c.u64()?, proposal: c.u64()? };
            let payload_len = c.u32()?;
            let payload_hash = c.array::<32>()?;
            let rejection = Rejection { reason, claimed, payload_len, payload_hash };
            Ok((EntryHeader::Rejected(rejection), &[]))
        }
        _ => Ok((EntryHeader::None, body)),
    }
}

/// A header item's names in error messages (static, so errors stay typed).
#[derive(Clone, Copy)]
struct Item {
    name: &'static str,
    header: &'static str,
    reserved: &'static str,
}

const ORIGIN_ITEM: Item = Item { name: "origin", header: "the origin header", reserved: "origin header" };
const REJECTED_ITEM: Item = Item { name: "rejection", header: "the rejection header", reserved: "rejection header" };

/// The fields of a fixed-length header item at the start of `body`.
fn item(body: &[u8], len: usize, what: Item) -> Result<&[u8], DecodeError> {
    if body.len() < 8 + len {
        return Err(DecodeError::CutShort { what: what.header });
    }
    if body[1..4] != [0, 0, 0] {
        return Err(DecodeError::ReservedNotZero { what: what.reserved });
    }
    if u32::from_le_bytes(body[4..8].try_into().expect("4-byte slice")) as usize != len {
        return Err(DecodeError::HeaderLength { what: what.name });
    }
    Ok(&body[8..8 + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Operation, decode_entry, encode_command};
    use crate::records::{Transfer, encode_all};

    fn origin() -> Origin {
        Origin { node: 3, key_id: 2, boot: 1_700_000_000_000_000_000, proposal: 42 }
    }

    #[test]
    fn an_origin_precedes_the_commands() {
        let transfers = vec![Transfer { id: 7, ..Default::default() }];
        let mut body = encode_origin(&origin()).to_vec();
        encode_command(&mut body, &Command { operation: Operation::CreateTransfers, events: encode_all(&transfers) });
        let entry = decode_entry(&body).unwrap();
        assert_eq!(entry.header, EntryHeader::Origin(origin()));
        assert_eq!(entry.commands.len(), 1);
        let header = encode_origin(&origin());
        let empty = decode_entry(&header).unwrap();
        assert!(empty.commands.is_empty(), "a timer entry has an origin and no commands");
        for cut in 1..32 {
            assert!(decode_entry(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = body.clone();
        bad[4] = 25;
        assert!(decode_entry(&bad).is_err());
        bad = body.clone();
        bad[2] = 1;
        assert!(decode_entry(&bad).is_err());
    }

    #[test]
    fn a_rejection_stands_alone() {
        let r = Rejection { reason: RejectReason::BadMac, claimed: origin(), payload_len: 999, payload_hash: [9; 32] };
        let body = encode_rejection(&r);
        let entry = decode_entry(&body).unwrap();
        assert_eq!(entry.header, EntryHeader::Rejected(r));
        assert!(entry.commands.is_empty());
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_entry(&longer).is_err());
        let mut unknown = body.clone();
        unknown[8] = 200;
        assert!(decode_entry(&unknown).is_err());
        unknown[8] = 0;
        assert!(decode_entry(&unknown).is_err(), "reason 0 is not a rejection");
        for cut in 1..body.len() {
            assert!(decode_entry(&body[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn plain_bodies_decode_as_before() {
        let entry = decode_entry(&[]).unwrap();
        assert_eq!(entry.header, EntryHeader::None);
        assert!(entry.commands.is_empty());
    }
}

//! The entry header: encoding, decoding and the checks that need nothing but
//! the header's own 96 bytes. The layout table is in the `file_log` docs.

use crate::limits::ENTRY_BODY_MAX;

/// "BURL" as little-endian bytes.
pub const ENTRY_MAGIC: u32 = 0x4C52_5542;
pub const ENTRY_VERSION: u16 = 1;
pub const ENTRY_HEADER_SIZE: usize = 96;

/// A decoded header whose magic, CRC, version, reserved field and body
/// length bound have been checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub position: u64,
    pub timestamp: u64,
    pub body_len: u32,
    pub prev_chain: [u8; 32],
    pub body_hash: [u8; 32],
}

/// Which check of the header's own bytes failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderFault {
    #[error("bad entry magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("entry header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unsupported entry version {version}")]
    UnsupportedVersion { version: u16 },
    #[error("reserved entry header field is not zero")]
    ReservedNotZero,
    #[error("entry body length {len} exceeds the limit of {max}")]
    BodyTooLong { len: u32, max: u32 },
}

/// Why a small fixed-size file (the base, the durable marker) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FileFault {
    #[error("{len} bytes instead of {expected}")]
    WrongSize { len: usize, expected: usize },
    #[error("CRC mismatch")]
    CrcMismatch,
    #[error("reserved bytes are not zero")]
    ReservedNotZero,
}

fn u16_at(b: &[u8; ENTRY_HEADER_SIZE], at: usize) -> u16 {
    let mut w = [0u8; 2];
    w.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(w)
}

fn u32_at(b: &[u8; ENTRY_HEADER_SIZE], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8; ENTRY_HEADER_SIZE], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn hash_at(b: &[u8; ENTRY_HEADER_SIZE], at: usize) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(&b[at..at + 32]);
    h
}

impl Header {
    /// The header's 96 bytes. Checked both ways: what is encoded decodes
    /// back to the same header (and `decode` re-encodes what it accepted).
    pub fn encode(&self) -> [u8; ENTRY_HEADER_SIZE] {
        assert!(self.position >= 1, "invariant: log positions start at 1, yet an entry has position 0");
        assert!(
            self.body_len <= ENTRY_BODY_MAX,
            "invariant: append bounds bodies, yet body_len {} > {ENTRY_BODY_MAX}",
            self.body_len
        );
        let b = self.encode_unchecked();
        debug_assert_eq!(Header::decode_unchecked(&b), Ok(*self), "invariant: an encoded entry header decodes back");
        b
    }

    fn encode_unchecked(&self) -> [u8; ENTRY_HEADER_SIZE] {
        let mut b = [0u8; ENTRY_HEADER_SIZE];
        b[0..4].copy_from_slice(&ENTRY_MAGIC.to_le_bytes());
        b[8..10].copy_from_slice(&ENTRY_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.body_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.position.to_le_bytes());
        b[24..32].copy_from_slice(&self.timestamp.to_le_bytes());
        b[32..64].copy_from_slice(&self.prev_chain);
        b[64..96].copy_from_slice(&self.body_hash);
        let crc = crc32c::crc32c(&b[8..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says which check failed.
    pub fn decode(b: &[u8; ENTRY_HEADER_SIZE]) -> Result<Header, HeaderFault> {
        let header = Header::decode_unchecked(b)?;
        // Every field is checked or copied: an accepted header is the only
        // encoding of itself, so its chain hash names exactly these bytes.
        debug_assert_eq!(&header.encode_unchecked(), b, "invariant: a decoded entry header re-encodes to its bytes");
        Ok(header)
    }

    fn decode_unchecked(b: &[u8; ENTRY_HEADER_SIZE]) -> Result<Header, HeaderFault> {
        let magic = u32_at(b, 0);
        if magic != ENTRY_MAGIC {
            return Err(HeaderFault::BadMagic { found: magic });
        }
        let (stored, computed) = (u32_at(b, 4), crc32c::crc32c(&b[8..]));
        if stored != computed {
            return Err(HeaderFault::CrcMismatch { stored, computed });
        }
        let version = u16_at(b, 8);
        if version != ENTRY_VERSION {
            return Err(HeaderFault::UnsupportedVersion { version });
        }
        if u16_at(b, 10) != 0 {
            return Err(HeaderFault::ReservedNotZero);
        }
        let body_len = u32_at(b, 12);
        if body_len > ENTRY_BODY_MAX {
            return Err(HeaderFault::BodyTooLong { len: body_len, max: ENTRY_BODY_MAX });
        }
        Ok(Header {
            position: u64_at(b, 16),
            timestamp: u64_at(b, 24),
            body_len,
            prev_chain: hash_at(b, 32),
            body_hash: hash_at(b, 64),
        })
    }
}

/// The chain hash of an entry: blake3 of its header after the CRC. The
/// header holds the body hash and the previous chain, so this commits to the
/// entry and, transitively, to every entry before it.
pub(crate) fn chain_of(header: &[u8; ENTRY_HEADER_SIZE]) -> [u8; 32] {
    *blake3::hash(&header[8..]).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header { position: 7, timestamp: 99, body_len: 3, prev_chain: [1; 32], body_hash: [2; 32] }
    }

    #[test]
    fn header_round_trip_and_layout() {
        let b = sample().encode();
        assert_eq!(&b[0..4], b"BURL");
        assert_eq!(Header::decode(&b), Ok(sample()));
    }

    /// Headers as append writes them (a chain from position 1, body
    /// lengths at both bounds): `encode` and `decode` check each other (the
    /// debug assertions pair up), and each link names the previous header.
    #[test]
    fn a_chain_of_headers_round_trips_both_ways() {
        let mut prev_chain = [0u8; 32];
        for (i, body_len) in [0, 1, ENTRY_BODY_MAX].into_iter().enumerate() {
            let h = Header { position: i as u64 + 1, timestamp: u64::MAX, body_len, prev_chain, body_hash: [7; 32] };
            let bytes = h.encode();
            let back = Header::decode(&bytes).unwrap();
            assert_eq!(back, h);
            assert_eq!(back.encode(), bytes);
            assert_eq!(back.prev_chain, prev_chain);
            prev_chain = chain_of(&bytes);
        }
    }

    #[test]
    #[should_panic(expected = "append bounds bodies")]
    fn encoding_an_oversized_header_is_a_bug() {
        Header { body_len: ENTRY_BODY_MAX + 1, ..sample() }.encode();
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let b = sample().encode();
        for bit in 0..ENTRY_HEADER_SIZE * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&c).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn oversized_body_is_rejected_even_with_a_valid_crc() {
        let h = Header { body_len: ENTRY_BODY_MAX + 1, ..sample() };
        // Forged bytes: `encode` itself refuses to write such a header.
        assert!(Header::decode(&h.encode_unchecked()).unwrap_err().to_string().contains("exceeds"));
    }
}

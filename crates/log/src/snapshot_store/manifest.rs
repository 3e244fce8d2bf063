//! The manifest of one snapshot: which chunks, in which order, make up each
//! section, plus the header bytes and the identity of the snapshot (log
//! position, log chain there, state digest). A blake3 trailer over all
//! preceding bytes is checked before anything else is parsed.
//!
//! ```text
//! magic u32 = "BURS" | version u16 = 1 | reserved u16 = 0
//! position u64 | chain [32] | digest [32]
//! header_len u32 | header bytes
//! section_count u32 | per section:
//!     name_len u8 | name | chunk_count u32 | per chunk: hash [32], payload_len u64
//! trailer: blake3(all preceding bytes) [32]
//! ```

use crate::LogError;
use crate::limits::{CHUNK_PAYLOAD_MAX, MANIFEST_BYTES_MAX, SECTIONS_MAX};
use std::path::Path;

/// "BURS" as little-endian bytes.
pub const MANIFEST_MAGIC: u32 = 0x5352_5542;
pub const MANIFEST_VERSION: u16 = 1;
const TRAILER: usize = 32;
const CHUNK_REF: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub hash: [u8; 32],
    pub len: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SectionRefs {
    pub name: String,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub position: u64,
    pub chain: [u8; 32],
    pub digest: [u8; 32],
    pub header: Vec<u8>,
    pub sections: Vec<SectionRefs>,
}

impl Manifest {
    pub fn chunk_refs(&self) -> impl Iterator<Item = &ChunkRef> + '_ {
        self.sections.iter().flat_map(|s| s.chunks.iter())
    }
}

fn invalid(reason: String) -> LogError {
    LogError::Invalid { reason }
}

pub(crate) fn encode(m: &Manifest) -> Result<Vec<u8>, LogError> {
    let header_len =
        u32::try_from(m.header.len()).map_err(|_| invalid(format!("header of {} bytes", m.header.len())))?;
    let mut out = Vec::with_capacity(128 + m.header.len() + m.chunk_refs().count() * CHUNK_REF);
    out.extend_from_slice(&MANIFEST_MAGIC.to_le_bytes());
    out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&m.position.to_le_bytes());
    out.extend_from_slice(&m.chain);
    out.extend_from_slice(&m.digest);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&m.header);
    out.extend_from_slice(&(m.sections.len() as u32).to_le_bytes());
    for s in &m.sections {
        let name_len = u8::try_from(s.name.len()).map_err(|_| invalid(format!("section name {:?}", s.name)))?;
        let count = u32::try_from(s.chunks.len()).map_err(|_| invalid(format!("{} chunks", s.chunks.len())))?;
        out.push(name_len);
        out.extend_from_slice(s.name.as_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for c in &s.chunks {
            out.extend_from_slice(&c.hash);
            out.extend_from_slice(&c.len.to_le_bytes());
        }
    }
    let trailer = blake3::hash(&out);
    out.extend_from_slice(trailer.as_bytes());
    if out.len() as u64 > MANIFEST_BYTES_MAX {
        return Err(invalid(format!("manifest of {} bytes exceeds {MANIFEST_BYTES_MAX}", out.len())));
    }
    Ok(out)
}

/// Checks the trailer, then parses. Every failure is `Corrupt` with the
/// offset.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Manifest, LogError> {
    if bytes.len() < TRAILER {
        return Err(LogError::corrupt(path, 0, format!("manifest of {} bytes is too short", bytes.len())));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    if blake3::hash(body).as_bytes() != trailer {
        return Err(LogError::corrupt(path, body.len() as u64, "manifest does not match its trailer hash"));
    }
    let mut c = Cursor { bytes: body, at: 0, path };
    if c.u32()? != MANIFEST_MAGIC {
        return Err(c.fail_at(0, "bad manifest magic"));
    }
    if c.u16()? != MANIFEST_VERSION {
        return Err(c.fail_at(4, "unsupported manifest version"));
    }
    if c.u16()? != 0 {
        return Err(c.fail_at(6, "reserved manifest field is not zero"));
    }
    let (position, chain, digest) = (c.u64()?, c.hash()?, c.hash()?);
    let header_len = c.u32()? as usize;
    let header = c.take(header_len)?.to_vec();
    let section_count = c.u32()? as usize;
    if section_count > SECTIONS_MAX {
        return Err(c.fail(format!("manifest declares {section_count} sections, more than {SECTIONS_MAX}")));
    }
    let sections = (0..section_count).map(|_| section(&mut c)).collect::<Result<_, _>>()?;
    if c.at != body.len() {
        return Err(c.fail("unexpected bytes after the last section"));
    }
    let m = Manifest { position, chain, digest, header, sections };
    // Every byte is checked or copied, so an accepted manifest is the only
    // encoding of itself: a MAC over its bytes names exactly this snapshot.
    debug_assert!(
        bytes.len() as u64 > MANIFEST_BYTES_MAX || encode(&m).is_ok_and(|e| e == bytes),
        "invariant: a decoded manifest re-encodes to its bytes"
    );
    Ok(m)
}

fn section(c: &mut Cursor<'_>) -> Result<SectionRefs, LogError> {
    let start = c.at;
    let name_len = c.u8()? as usize;
    let name = std::str::from_utf8(c.take(name_len)?).map_err(|_| c.fail_at(start, "section name is not UTF-8"))?;
    let name = name.to_string();
    let count = c.u32()? as usize;
    if count.saturating_mul(CHUNK_REF) > c.remaining() {
        return Err(c.fail(format!("section {name} declares {count} chunks, more than the manifest holds")));
    }
    let mut chunks = Vec::with_capacity(count);
    for _ in 0..count {
        let (hash, len) = (c.hash()?, c.u64()?);
        if len > CHUNK_PAYLOAD_MAX {
            return Err(c.fail_at(c.at - 8, format!("chunk length {len} exceeds {CHUNK_PAYLOAD_MAX}")));
        }
        chunks.push(ChunkRef { hash, len });
    }
    Ok(SectionRefs { name, chunks })
}

/// Bounds-checked reads; errors name the manifest and offset.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn fail_at(&self, offset: usize, reason: impl Into<String>) -> LogError {
        LogError::corrupt(self.path, offset as u64, reason)
    }

    fn fail(&self, reason: impl Into<String>) -> LogError {
        self.fail_at(self.at, reason)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        if n > self.remaining() {
            return Err(self.fail(format!("manifest ends inside a field ({n} bytes needed)")));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LogError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, LogError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, LogError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, LogError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, LogError> {
        self.array().map(u64::from_le_bytes)
    }

    fn hash(&mut self) -> Result<[u8; 32], LogError> {
        self.array()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            position: 42,
            chain: [1; 32],
            digest: [2; 32],
            header: vec![9; 40],
            sections: vec![
                SectionRefs { name: "a".into(), chunks: vec![ChunkRef { hash: [3; 32], len: 10 }] },
                SectionRefs { name: "bb".into(), chunks: vec![] },
            ],
        }
    }

    #[test]
    fn round_trip_and_every_bit_flip_is_caught() {
        let bytes = encode(&sample()).unwrap();
        let path = Path::new("m");
        let m = decode(&bytes, path).unwrap();
        assert_eq!((m.position, m.chain, m.digest, &m.header), (42, [1; 32], [2; 32], &vec![9; 40]));
        let names: Vec<&str> = m.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "bb"]);
        assert_eq!(m.chunk_refs().copied().collect::<Vec<_>>(), vec![ChunkRef { hash: [3; 32], len: 10 }]);
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b, path).unwrap_err().is_corrupt(), "bit {bit}");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], path).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn counts_beyond_the_bytes_are_rejected_without_allocating() {
        let mut m = sample();
        m.sections.truncate(1);
        let mut bytes = encode(&m).unwrap();
        // Rewrite the chunk count of section "a" to u32::MAX and re-seal the trailer.
        let count_at = 4 + 2 + 2 + 8 + 32 + 32 + 4 + 40 + 4 + 1 + 1;
        bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let body_len = bytes.len() - TRAILER;
        let trailer = blake3::hash(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(trailer.as_bytes());
        let err = decode(&bytes, Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("more than the manifest holds"), "{err}");
    }
}

//! The base file `log/base`: where a log that does not start at position 1
//! begins when it holds no entry yet. A replica that bootstraps from a
//! snapshot at position P with chain C has no entries up to P, and the first
//! entry it receives is P + 1; the base records (P, C) so that an empty log
//! still knows its position and chain, and so that the first entry's link is
//! checked against the snapshot's chain.
//!
//! It is also how a log whose oldest segments were removed (`prune`) keeps
//! checking its first link: before unlinking, the base is rewritten to the
//! first kept segment's start.
//!
//! 48 bytes: position u64, chain [u8; 32], crc32c of those 40 bytes u32,
//! 4 zero bytes. Written atomically (temp file, rename, directory sync):
//! when a log is seeded, before any segment exists, and before each
//! removal. Segments starting at or below P are leftovers of an
//! interrupted removal; the first other segment must start at P + 1.

use super::format::FileFault;
use crate::LogError;
use crate::fsutil::{sync_dir, write_file_atomic};
use std::io;
use std::path::Path;

pub(crate) const BASE_FILE: &str = "base";
const BASE_SIZE: usize = 48;

/// The log starts after `position`, whose chain is `chain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Base {
    pub position: u64,
    pub chain: [u8; 32],
}

pub(crate) fn encode(base: Base) -> [u8; BASE_SIZE] {
    let mut b = [0u8; BASE_SIZE];
    b[0..8].copy_from_slice(&base.position.to_le_bytes());
    b[8..40].copy_from_slice(&base.chain);
    let crc = crc32c::crc32c(&b[0..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode(&b), Ok(base), "invariant: an encoded base decodes back");
    b
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Base, FileFault> {
    let b: &[u8; BASE_SIZE] =
        bytes.try_into().map_err(|_| FileFault::WrongSize { len: bytes.len(), expected: BASE_SIZE })?;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[40..44]);
    if u32::from_le_bytes(crc) != crc32c::crc32c(&b[0..40]) {
        return Err(FileFault::CrcMismatch);
    }
    if b[44..48] != [0; 4] {
        return Err(FileFault::ReservedNotZero);
    }
    let mut position = [0u8; 8];
    position.copy_from_slice(&b[0..8]);
    let mut chain = [0u8; 32];
    chain.copy_from_slice(&b[8..40]);
    Ok(Base { position: u64::from_le_bytes(position), chain })
}

/// Reads the base: `None` if there is none. Unlike the durable marker, a
/// damaged base is corruption: without it the log's start is unknown.
pub(crate) fn read(log_dir: &Path) -> Result<Option<Base>, LogError> {
    let path = log_dir.join(BASE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes).map(Some).map_err(|fault| LogError::corrupt(&path, 0, fault.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(&path, e)),
    }
}

/// Writes the base durably (file and directory entry).
pub(crate) fn write(log_dir: &Path, base: Base) -> Result<(), LogError> {
    write_file_atomic(log_dir, BASE_FILE, &[&encode(base)])?;
    sync_dir(log_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let base = Base { position: 77, chain: [9; 32] };
        let b = encode(base);
        assert_eq!(decode(&b), Ok(base));
        for bit in 0..BASE_SIZE * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&c).is_err(), "bit {bit}");
        }
        assert!(decode(&b[..47]).is_err());
    }
}

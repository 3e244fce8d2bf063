//! The durable marker `log/durable`: the highest position known to be
//! fsynced, as 16 bytes (position u64, crc32c of those 8 bytes u32, 4 zero
//! bytes).
//!
//! The syncer rewrites it in place after every successful fdatasync and does
//! not fsync it: if it survives a crash its value is correct (the entries
//! were synced before it was written); if it does not, an older value is
//! read. Recovery only uses it one way: an entry at or below the marker must
//! be intact, so damage there is corruption and never a torn tail.

use super::format::FileFault;
use crate::LogError;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) const MARKER_FILE: &str = "durable";
const MARKER_SIZE: usize = 16;

pub(crate) fn encode(position: u64) -> [u8; MARKER_SIZE] {
    let mut b = [0u8; MARKER_SIZE];
    b[0..8].copy_from_slice(&position.to_le_bytes());
    let crc = crc32c::crc32c(&position.to_le_bytes());
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode(&b), Ok(position), "invariant: an encoded durable marker decodes back");
    b
}

pub(crate) fn decode(bytes: &[u8]) -> Result<u64, FileFault> {
    let b: &[u8; MARKER_SIZE] =
        bytes.try_into().map_err(|_| FileFault::WrongSize { len: bytes.len(), expected: MARKER_SIZE })?;
    let mut pos = [0u8; 8];
    pos.copy_from_slice(&b[0..8]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[8..12]);
    if u32::from_le_bytes(crc) != crc32c::crc32c(&pos) {
        return Err(FileFault::CrcMismatch);
    }
    if b[12..16] != [0; 4] {
        return Err(FileFault::ReservedNotZero);
    }
    Ok(u64::from_le_bytes(pos))
}

/// Reads the marker: `None` if it is missing; a damaged marker reads as 0
/// with a warning (it is a hint that only ever makes recovery stricter).
pub(crate) fn read(path: &Path) -> Result<Option<u64>, LogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(path, e)),
    };
    Ok(Some(decode(&bytes).unwrap_or_else(|reason| {
        tracing::warn!(file = %path.display(), reason = %reason, "durable marker is damaged; treating it as 0");
        0
    })))
}

/// The open marker file, written by the syncer.
pub(crate) struct Marker {
    file: File,
    path: PathBuf,
}

impl Marker {
    pub fn open(path: PathBuf) -> Result<Marker, LogError> {
        let file = crate::fsutil::private_file()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        // A longer file (damage) would never decode again.
        file.set_len(MARKER_SIZE as u64).map_err(|e| LogError::io(&path, e))?;
        Ok(Marker { file, path })
    }

    /// Overwrites the marker in place (no fsync, see the module docs).
    pub fn write(&self, position: u64) -> Result<(), LogError> {
        self.file.write_all_at(&encode(position), 0).map_err(|e| LogError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let b = encode(123_456);
        assert_eq!(decode(&b), Ok(123_456));
        for bit in 0..MARKER_SIZE * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&c).is_err(), "bit {bit}");
        }
        assert!(decode(&b[..15]).is_err());
    }
}

//! Names and the manifest body: how a tier set's files are called, which
//! file id their blocks carry, and what a commit records beside the file
//! names.
//!
//! Body (little-endian): `magic u32 | version u32 | key_size u32 |
//! value_size u32 | next_number u64 | tables u32 | tables × entries u64`,
//! one entry count per file the manifest names, in the same order.

use crate::error::{Fault, StoreError};
use crate::limits::{TIERS_NAME_MAX, TIERS_TABLES_MAX};
use std::path::Path;

/// "BTRS": the body of a tier set's manifest.
const MAGIC: u32 = u32::from_le_bytes(*b"BTRS");
const VERSION: u32 = 1;
const HEAD: usize = 28;
const SUFFIX: &str = ".bst";
/// Seed of the file-id hash: any constant, as long as it never changes.
const FILE_ID_SEED: u64 = 0x7469_6572_732e_6964;

/// Panics unless `name` may prefix a tier set's files: 1..=`TIERS_NAME_MAX`
/// ASCII letters, digits and underscores.
pub(super) fn check_name(name: &str) {
    assert!(
        (1..=TIERS_NAME_MAX).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "a tier set's name is 1..={TIERS_NAME_MAX} ASCII letters, digits or underscores, not {name:?}"
    );
}

/// The file name of table `number`.
pub(super) fn table_file(name: &str, number: u64) -> String {
    format!("{name}-{number:020}{SUFFIX}")
}

/// The table number in `file`, if it is one of this set's table names.
pub(super) fn table_number(name: &str, file: &str) -> Option<u64> {
    let digits = file.strip_prefix(name)?.strip_prefix('-')?.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// The file id table `number`'s blocks carry, and the block cache keys
/// them by: a hash of the set's name and the number, so sets sharing a
/// cache (and other files, whose ids are counters or hashes too) collide
/// only by a 64-bit accident. The caller also drops the id from the cache
/// before writing a table under it.
pub(super) fn file_id(name: &str, number: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(table_file(name, number).as_bytes(), FILE_ID_SEED)
}

/// What a commit records beside the file names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Body {
    pub key_size: u32,
    pub value_size: u32,
    /// Above every table number handed out when the commit was made.
    pub next_number: u64,
    /// Entries of each named table, in the manifest's file order.
    pub entries: Vec<u64>,
}

impl Body {
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.entries.len() <= TIERS_TABLES_MAX, "{} tables in one tier set", self.entries.len());
        let mut out = Vec::with_capacity(HEAD + 8 * self.entries.len());
        for word in [MAGIC, VERSION, self.key_size, self.value_size] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&self.next_number.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for n in &self.entries {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// Decodes a body read from `manifest`; any disagreement is `Corrupt`
    /// naming the manifest (the body's offset within the manifest's
    /// payload is not known here: 0).
    pub fn decode(bytes: &[u8], manifest: &Path) -> Result<Body, StoreError> {
        let bad = |what| StoreError::corrupt(manifest, 0, Fault::Malformed { what });
        let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        let u64_at = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        if u32_at(0) != Some(MAGIC) || u32_at(4) != Some(VERSION) {
            return Err(bad("tier set manifest body: magic or version"));
        }
        let (key_size, value_size) = (u32_at(8).unwrap_or(0), u32_at(12).unwrap_or(0));
        let next_number = u64_at(16).ok_or(bad("tier set manifest body: next number"))?;
        let tables = u32_at(24).ok_or(bad("tier set manifest body: table count"))? as usize;
        if tables > TIERS_TABLES_MAX || bytes.len() != HEAD + 8 * tables {
            return Err(bad("tier set manifest body: length"));
        }
        let entries = (0..tables).map(|i| u64_at(HEAD + 8 * i).expect("length checked")).collect();
        Ok(Body { key_size, value_size, next_number, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_not_tables() {
        assert_eq!(table_file("ids", 7), "ids-00000000000000000007.bst");
        assert_eq!(table_number("ids", &table_file("ids", 7)), Some(7));
        assert_eq!(table_number("ids", &table_file("ids", u64::MAX)), Some(u64::MAX));
        for other in
            ["ids-7.bst", "idsx-00000000000000000007.bst", "ids-00000000000000000007.bst.tmp", "manifest-1.bsm"]
        {
            assert_eq!(table_number("ids", other), None, "{other}");
        }
        assert_ne!(file_id("ids", 1), file_id("failed", 1));
        assert_ne!(file_id("ids", 1), file_id("ids", 2));
    }

    #[test]
    fn bodies_round_trip_and_every_cut_or_change_is_refused() {
        let body = Body { key_size: 16, value_size: 8, next_number: 9, entries: vec![3, 1 << 40] };
        let bytes = body.encode();
        let path = Path::new("m");
        assert_eq!(Body::decode(&bytes, path).unwrap(), body);
        for cut in 0..bytes.len() {
            assert!(Body::decode(&bytes[..cut], path).unwrap_err().is_corrupt(), "cut at {cut}");
        }
        for at in [0, 4, 24] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(Body::decode(&changed, path).is_err(), "byte {at}");
        }
    }

    #[test]
    #[should_panic(expected = "a tier set's name")]
    fn a_name_with_a_dash_is_a_caller_bug() {
        check_name("a-b");
    }
}

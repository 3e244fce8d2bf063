//! The cluster keys: secrets only replicas hold, which authenticate what a
//! replica trusts from NATS (log entries, shared snapshots, digest records).
//!
//! NATS permissions are the first line; the keys are the second, so that
//! someone who can publish to the log subject (a misconfigured account, a
//! leaked relay credential) still cannot write to the ledger. Keys have ids
//! so they can be rotated without downtime: a replica signs with its
//! *active* key (the first one given) and accepts every key it holds. Each
//! use gets its own subkey (`blake3::derive_key`), so a MAC made for one
//! purpose is never valid for another.
//!
//! Formats: `BURSAR_CLUSTER_KEY` holds `HEX` (key id 1) or
//! `ID:HEX,ID:HEX,...`; `--cluster-key-file` holds the same, one key per
//! line, `#` comments allowed, and must not be readable by group or others.

/// The environment variable holding the cluster keys (never a flag: the
/// process list would show it).
pub const CLUSTER_KEY_ENV: &str = "BURSAR_CLUSTER_KEY";

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Bytes of a cluster key (64 hex digits).
pub const KEY_BYTES: usize = 32;
/// Keys a replica holds at most (rotation needs two or three).
pub const KEYS_MAX: usize = 16;
/// Largest key file read.
const KEY_FILE_BYTES_MAX: u64 = 64 << 10;

/// What a subkey authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    LogEntry,
    SnapshotObject,
    DigestRecord,
}

impl Purpose {
    const ALL: [Purpose; 3] = [Purpose::LogEntry, Purpose::SnapshotObject, Purpose::DigestRecord];

    fn context(self) -> &'static str {
        match self {
            Purpose::LogEntry => "bursar 2026-12 cluster log entry v1",
            Purpose::SnapshotObject => "bursar 2026-12 cluster snapshot object v1",
            Purpose::DigestRecord => "bursar 2026-12 cluster digest record v1",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone)]
struct Subkeys([[u8; KEY_BYTES]; 3]);

/// The keys a replica holds, by id; never printed.
#[derive(Clone)]
pub struct ClusterKeys {
    active: u32,
    keys: BTreeMap<u32, Subkeys>,
}

impl fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKeys {{ active: {}, ids: {:?} }}", self.active, self.ids())
    }
}

/// Why cluster keys were refused. Never holds key material: items are
/// named by their place (1-based) or their id.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cluster key {item}: give it an id (ID:HEX) when several keys are set")]
    MissingId { item: usize },
    #[error("cluster key {item}: the id must be a number from 1 to {}", u32::MAX)]
    BadId { item: usize },
    #[error("cluster key {id}: must be {} hex digits ({KEY_BYTES} bytes)", KEY_BYTES * 2)]
    BadHex { id: u32 },
    #[error("more than {KEYS_MAX} cluster keys")]
    TooMany,
    #[error("cluster key id {id} is given twice")]
    Duplicate { id: u32 },
    #[error("no cluster key given")]
    Empty,
    #[error("cluster key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster key file {}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("cluster key file {shown}: mode {mode:o} lets others read it; `chmod 600 {shown}` first", shown = path.display())]
    Readable { path: PathBuf, mode: u32 },
    #[error("cluster key file {}: larger than {KEY_FILE_BYTES_MAX} bytes", path.display())]
    FileTooLarge { path: PathBuf },
    #[error("cluster key file {}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<KeyError>,
    },
}

impl ClusterKeys {
    /// Parses `HEX` or `ID:HEX` items separated by commas or newlines
    /// (blank lines and `#` comments ignored); the first is the active key.
    /// Errors never contain key material.
    pub fn parse(text: &str) -> Result<ClusterKeys, KeyError> {
        let items = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty());
        let mut active = None;
        let mut keys = BTreeMap::new();
        for (n, item) in items.enumerate() {
            let (id, hex) = match item.split_once(':') {
                Some((id, hex)) => (parse_id(id.trim(), n)?, hex.trim()),
                None if n == 0 => (1, item),
                None => return Err(KeyError::MissingId { item: n + 1 }),
            };
            let key = parse_hex(hex).ok_or(KeyError::BadHex { id })?;
            if keys.len() == KEYS_MAX {
                return Err(KeyError::TooMany);
            }
            if keys.insert(id, Subkeys::derive(&key)).is_some() {
                return Err(KeyError::Duplicate { id });
            }
            active.get_or_insert(id);
        }
        let active = active.ok_or(KeyError::Empty)?;
        Ok(ClusterKeys { active, keys })
    }

    /// Reads a key file; refuses one that group or others may read.
    pub fn from_file(path: &Path) -> Result<ClusterKeys, KeyError> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let read = |source| KeyError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read)?;
        let meta = file.metadata().map_err(read)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile { path: path.to_path_buf() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Readable { path: path.to_path_buf(), mode });
        }
        let mut text = String::new();
        file.take(KEY_FILE_BYTES_MAX + 1).read_to_string(&mut text).map_err(read)?;
        if text.len() as u64 > KEY_FILE_BYTES_MAX {
            return Err(KeyError::FileTooLarge { path: path.to_path_buf() });
        }
        ClusterKeys::parse(&text).map_err(|e| KeyError::InFile { path: path.to_path_buf(), source: Box::new(e) })
    }

    /// The id of the key this replica signs with.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// The ids of every key held, ascending.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// The subkey of key `id` for `purpose`, if held.
    pub fn subkey(&self, id: u32, purpose: Purpose) -> Option<&[u8; KEY_BYTES]> {
        self.keys.get(&id).map(|k| &k.0[purpose.index()])
    }

    /// The active key's subkey for `purpose`.
    pub fn active_subkey(&self, purpose: Purpose) -> &[u8; KEY_BYTES] {
        self.subkey(self.active, purpose).expect("invariant: the active key is one of the keys")
    }

    /// A keyed MAC under key `id` over `parts`, each length-prefixed so no
    /// two different part lists hash alike. None when the key is not held.
    pub fn mac(&self, id: u32, purpose: Purpose, parts: &[&[u8]]) -> Option<[u8; 32]> {
        Some(*keyed_hash(self.subkey(id, purpose)?, parts).as_bytes())
    }

    /// Checks a MAC in constant time.
    pub fn verify(&self, id: u32, purpose: Purpose, parts: &[&[u8]], mac: &[u8; 32]) -> Result<(), MacError> {
        let key = self.subkey(id, purpose).ok_or(MacError::UnknownKey)?;
        // blake3::Hash compares in constant time.
        if keyed_hash(key, parts) == blake3::Hash::from_bytes(*mac) { Ok(()) } else { Err(MacError::Mismatch) }
    }
}

/// Why a MAC did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacError {
    UnknownKey,
    Mismatch,
}

impl Subkeys {
    fn derive(key: &[u8; KEY_BYTES]) -> Subkeys {
        Subkeys(Purpose::ALL.map(|p| blake3::derive_key(p.context(), key)))
    }
}

fn keyed_hash(key: &[u8; KEY_BYTES], parts: &[&[u8]]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    for part in parts {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize()
}

fn parse_id(text: &str, n: usize) -> Result<u32, KeyError> {
    match text.parse::<u32>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(KeyError::BadId { item: n + 1 }),
    }
}

fn parse_hex(text: &str) -> Option<[u8; KEY_BYTES]> {
    if text.len() != KEY_BYTES * 2 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_BYTES];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_bare_key_is_key_one_and_active() {
        let keys = ClusterKeys::parse(A).unwrap();
        assert_eq!(keys.active(), 1);
        assert_eq!(keys.ids(), [1]);
    }

    #[test]
    fn several_keys_by_id_the_first_signs() {
        let keys = ClusterKeys::parse(&format!("7:{B}, 3:{A}")).unwrap();
        assert_eq!(keys.active(), 7);
        assert_eq!(keys.ids(), [3, 7]);
        let file = ClusterKeys::parse(&format!("# rotation\n3:{A}\n\n7:{B} # new\n")).unwrap();
        assert_eq!(file.active(), 3);
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        for (text, expect) in [
            ("", "no cluster key"),
            ("abcd", "64 hex digits"),
            (&format!("{}zz", &A[..62]), "64 hex digits"),
            (&format!("1:{A},1:{B}"), "given twice"),
            (&format!("0:{A}"), "the id must be"),
            (&format!("{A},{B}"), "give it an id"),
        ] {
            let e = ClusterKeys::parse(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text:?}: {e}");
            assert!(!e.contains(&A[..16]) && !e.contains(&B[..16]), "{e}");
        }
        let many = (1..=KEYS_MAX as u32 + 1).map(|i| format!("{i}:{A}")).collect::<Vec<_>>().join(",");
        assert!(ClusterKeys::parse(&many).unwrap_err().to_string().contains("more than"));
        assert!(!format!("{:?}", ClusterKeys::parse(A).unwrap()).contains(&A[..8]));
    }

    #[test]
    fn macs_depend_on_key_purpose_and_part_boundaries() {
        let keys = ClusterKeys::parse(&format!("1:{A},2:{B}")).unwrap();
        let mac = keys.mac(1, Purpose::LogEntry, &[b"ab", b"c"]).unwrap();
        assert_eq!(keys.verify(1, Purpose::LogEntry, &[b"ab", b"c"], &mac), Ok(()));
        assert_eq!(keys.verify(1, Purpose::LogEntry, &[b"a", b"bc"], &mac), Err(MacError::Mismatch));
        assert_eq!(keys.verify(2, Purpose::LogEntry, &[b"ab", b"c"], &mac), Err(MacError::Mismatch));
        assert_eq!(keys.verify(1, Purpose::DigestRecord, &[b"ab", b"c"], &mac), Err(MacError::Mismatch));
        assert_eq!(keys.verify(9, Purpose::LogEntry, &[b"ab", b"c"], &mac), Err(MacError::UnknownKey));
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, format!("2:{A}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ClusterKeys::from_file(&path).unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ClusterKeys::from_file(&path).unwrap().active(), 2);
    }
}

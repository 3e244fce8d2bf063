//! Checkpoint manifests: the one durable record of what a checkpoint is.
//!
//! A checkpoint makes the on-disk state durable at a log position: the data
//! files (record files, tables) are written and synced first, then a
//! manifest naming them and the position is written to a temporary file,
//! synced, renamed into place and the directory synced. The rename is the
//! commit point: a crash before it leaves the previous manifest in charge,
//! and the files the new one would have named are garbage.
//!
//! The newest `keep` manifests are retained, so a damaged newest manifest
//! (or a damaged file it names) falls back to an older checkpoint plus the
//! log after it; a data file is garbage only once no retained manifest
//! names it. What a checkpoint means beyond its files is the caller's
//! business: the manifest carries an opaque body (the caller's small
//! in-memory sections and its file roles), checked like every other byte.
//!
//! File `manifest-<sequence>.bsm`: blocks of kind `Manifest`, addressed by
//! (sequence, index). The payloads, concatenated, hold:
//! `total_len u64 | position u64 | files u32 | body_len u32 |
//! files × (name_len u16, name) | body`.

use crate::block::{self, BlockAddress, BlockKind};
use crate::error::{Fault, StoreError};
use crate::limits::{
    BLOCK_PAYLOAD_MAX, BLOCK_SIZE, MANIFEST_BODY_MAX, MANIFEST_FILE_NAME_MAX, MANIFEST_FILES_MAX, MANIFESTS_KEPT_MAX,
};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const PREFIX: &str = "manifest-";
const SUFFIX: &str = ".bsm";
const TEMP_SUFFIX: &str = ".tmp";
const HEAD_SIZE: usize = 24;

/// One committed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Increases by one per commit; names the manifest file.
    pub sequence: u64,
    /// The log position the checkpoint's state is at.
    pub position: u64,
    /// The data files it consists of (names in the directory).
    pub files: Vec<String>,
    /// The caller's own description of the checkpoint.
    pub body: Vec<u8>,
}

/// What `open` found.
#[derive(Debug, Default)]
pub struct Found {
    /// The newest intact checkpoint, if any.
    pub newest: Option<Checkpoint>,
    /// Manifests that failed their checks, newest first: renamed to
    /// `….bsm.damaged` (kept for inspection, never used again); the caller
    /// logs them.
    pub damaged: Vec<StoreError>,
}

/// The manifests of one directory.
#[derive(Debug)]
pub struct Manifests {
    dir: PathBuf,
    keep: usize,
    /// The highest sequence seen, intact or not: never reused.
    last_sequence: u64,
    /// Intact retained checkpoints, oldest first (at most `keep`).
    retained: Vec<Checkpoint>,
}

impl Manifests {
    /// Opens `dir` (created if missing), keeping the newest `keep` manifests.
    pub fn open(dir: &Path, keep: usize) -> Result<(Manifests, Found), StoreError> {
        assert!((1..=MANIFESTS_KEPT_MAX).contains(&keep), "keep {keep} manifests: 1 to {MANIFESTS_KEPT_MAX}");
        crate::files::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        remove_temporaries(dir)?;
        let sequences = listed(dir)?;
        let mut found = Found::default();
        let mut retained = Vec::new();
        for &sequence in sequences.iter().rev() {
            if retained.len() == keep {
                break;
            }
            let path = manifest_path(dir, sequence);
            match read(&path, sequence) {
                Ok(c) => retained.push(c),
                Err(e) if e.is_corrupt() => {
                    set_aside(&path)?;
                    found.damaged.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        retained.reverse();
        found.newest = retained.last().cloned();
        let last_sequence = sequences.last().copied().unwrap_or(0);
        Ok((Manifests { dir: dir.to_path_buf(), keep, last_sequence, retained }, found))
    }

    /// Commits a checkpoint at `position` made of `files` (already written
    /// and synced by the caller), then prunes manifests beyond `keep`.
    pub fn commit(&mut self, position: u64, files: Vec<String>, body: Vec<u8>) -> Result<&Checkpoint, StoreError> {
        if let Some(last) = self.retained.last() {
            assert!(position >= last.position, "checkpoint at {position} after one at {}", last.position);
        }
        let checkpoint = Checkpoint { sequence: self.last_sequence + 1, position, files, body };
        let bytes = encode(&checkpoint);
        write_atomically(&self.dir, checkpoint.sequence, &bytes)?;
        self.last_sequence = checkpoint.sequence;
        self.retained.push(checkpoint);
        self.prune()?;
        Ok(self.retained.last().expect("just pushed"))
    }

    /// The retained checkpoints, oldest first.
    pub fn retained(&self) -> &[Checkpoint] {
        &self.retained
    }

    /// The file of the manifest with `sequence`.
    pub fn path_of(&self, sequence: u64) -> PathBuf {
        manifest_path(&self.dir, sequence)
    }

    /// Sets the newest retained checkpoint aside (renamed to
    /// `….bsm.damaged`, like a manifest that failed its checks), for a
    /// caller that found damage in what it names; the previous one becomes
    /// the newest. Its sequence is never reused. Returns the renamed path.
    pub fn set_aside_newest(&mut self) -> Result<PathBuf, StoreError> {
        let newest = self.retained.pop().expect("a retained checkpoint to set aside");
        let path = manifest_path(&self.dir, newest.sequence);
        set_aside(&path)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(&self.dir, e))?;
        Ok(path.with_extension("bsm.damaged"))
    }

    /// Data files in the directory that no retained manifest names: safe to
    /// delete (sorted by name).
    pub fn garbage(&self) -> Result<Vec<PathBuf>, StoreError> {
        let named: std::collections::BTreeSet<&str> =
            self.retained.iter().flat_map(|c| c.files.iter().map(String::as_str)).collect();
        let mut out = Vec::new();
        for name in file_names(&self.dir)? {
            if !name.starts_with(PREFIX) && !named.contains(name.as_str()) {
                out.push(self.dir.join(name));
            }
        }
        Ok(out)
    }

    fn prune(&mut self) -> Result<(), StoreError> {
        let excess = self.retained.len().saturating_sub(self.keep);
        self.retained.drain(..excess);
        let oldest = self.retained.first().map_or(0, |c| c.sequence);
        for sequence in listed(&self.dir)? {
            if sequence < oldest {
                let path = manifest_path(&self.dir, sequence);
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            }
        }
        Ok(())
    }
}

fn manifest_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{sequence:020}{SUFFIX}"))
}

fn file_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let is_file = entry.file_type().map_err(|e| StoreError::io(&entry.path(), e))?.is_file();
        if let Some(name) = entry.file_name().to_str().filter(|_| is_file) {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Sequences of the manifests in `dir`, ascending.
fn listed(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out: Vec<u64> =
        file_names(dir)?.iter().filter_map(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok()).collect();
    out.sort_unstable();
    Ok(out)
}

/// Renames a damaged manifest out of the way, keeping its bytes.
fn set_aside(path: &Path) -> Result<(), StoreError> {
    let aside = path.with_extension("bsm.damaged");
    fs::rename(path, &aside).map_err(|e| StoreError::io(path, e))
}

fn remove_temporaries(dir: &Path) -> Result<(), StoreError> {
    for name in file_names(dir)? {
        if name.starts_with(PREFIX) && name.ends_with(TEMP_SUFFIX) {
            let path = dir.join(name);
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
    }
    Ok(())
}

fn encode(c: &Checkpoint) -> Vec<u8> {
    assert!(c.files.len() <= MANIFEST_FILES_MAX, "{} files in one checkpoint", c.files.len());
    assert!(c.body.len() <= MANIFEST_BODY_MAX, "a manifest body of {} bytes", c.body.len());
    let mut out = vec![0; HEAD_SIZE];
    out[8..16].copy_from_slice(&c.position.to_le_bytes());
    out[16..20].copy_from_slice(&(c.files.len() as u32).to_le_bytes());
    out[20..24].copy_from_slice(&(c.body.len() as u32).to_le_bytes());
    for name in &c.files {
        assert!(valid_name(name), "data file name {name:?}");
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(&c.body);
    let total = out.len() as u64;
    out[..8].copy_from_slice(&total.to_le_bytes());
    out
}

/// A data file name a manifest may hold: short, one path component, not a
/// manifest's own name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MANIFEST_FILE_NAME_MAX
        && !name.starts_with(PREFIX)
        && !name.contains(['/', '\0'])
        && name != "."
        && name != ".."
}

fn write_atomically(dir: &Path, sequence: u64, bytes: &[u8]) -> Result<(), StoreError> {
    let path = manifest_path(dir, sequence);
    let temp = path.with_extension(format!("bsm{TEMP_SUFFIX}"));
    let mut file = crate::files::create_truncated(&temp).map_err(|e| StoreError::io(&temp, e))?;
    let mut block = vec![0u8; BLOCK_SIZE];
    for (index, payload) in bytes.chunks(BLOCK_PAYLOAD_MAX).enumerate() {
        let at = BlockAddress { file_id: sequence, index: index as u64 };
        let out: &mut [u8; BLOCK_SIZE] = block.as_mut_slice().try_into().expect("a block-sized buffer");
        block::seal(BlockKind::Manifest, at, payload, out);
        file.write_all(&block).map_err(|e| StoreError::io(&temp, e))?;
    }
    file.sync_all().map_err(|e| StoreError::io(&temp, e))?;
    fs::rename(&temp, &path).map_err(|e| StoreError::io(&path, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

fn read(path: &Path, sequence: u64) -> Result<Checkpoint, StoreError> {
    let raw = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    let bytes = payloads(path, sequence, &raw)?;
    decode(&bytes, sequence).map_err(|(offset, fault)| StoreError::corrupt(path, offset, fault))
}

/// The blocks' payloads, concatenated, each block checked.
fn payloads(path: &Path, sequence: u64, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
    if raw.is_empty() || !raw.len().is_multiple_of(BLOCK_SIZE) {
        let expected = raw.len().div_ceil(BLOCK_SIZE).max(1) * BLOCK_SIZE;
        return Err(StoreError::corrupt(
            path,
            0,
            Fault::Truncated { len: raw.len() as u64, expected: expected as u64 },
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (index, b) in raw.chunks(BLOCK_SIZE).enumerate() {
        let at = BlockAddress { file_id: sequence, index: index as u64 };
        let payload = block::open(BlockKind::Manifest, at, b).map_err(|f| StoreError::corrupt(path, at.offset(), f))?;
        out.extend_from_slice(payload);
    }
    Ok(out)
}

fn decode(bytes: &[u8], sequence: u64) -> Result<Checkpoint, (u64, Fault)> {
    let bad = |offset: usize, what: &'static str| (offset as u64, Fault::Malformed { what });
    let u64_at = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let total = u64_at(0).ok_or(bad(0, "manifest header"))?;
    if total != bytes.len() as u64 {
        return Err(bad(0, "manifest length"));
    }
    let position = u64_at(8).ok_or(bad(8, "position"))?;
    let files = u32_at(16).ok_or(bad(16, "file count"))? as usize;
    let body_len = u32_at(20).ok_or(bad(20, "body length"))? as usize;
    if files > MANIFEST_FILES_MAX || body_len > MANIFEST_BODY_MAX {
        return Err(bad(16, "file count or body length over its limit"));
    }
    let mut at = HEAD_SIZE;
    let mut names = Vec::with_capacity(files);
    for _ in 0..files {
        let len = bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or(bad(at, "file name length"))?;
        let name = bytes.get(at + 2..at + 2 + len as usize).ok_or(bad(at, "file name"))?;
        let name = std::str::from_utf8(name).ok().filter(|n| valid_name(n)).ok_or(bad(at, "file name"))?;
        names.push(name.to_string());
        at += 2 + len as usize;
    }
    if bytes.len() - at != body_len {
        return Err(bad(at, "body length"));
    }
    Ok(Checkpoint { sequence, position, files: names, body: bytes[at..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            sequence: 3,
            position: 1234,
            files: vec!["transfers-1.brf".into(), "ids-7.bst".into()],
            body: b"accounts and ledgers".to_vec(),
        }
    }

    fn sealed(c: &Checkpoint) -> Vec<u8> {
        let bytes = encode(c);
        let mut out = Vec::new();
        let mut block = [0u8; BLOCK_SIZE];
        for (index, payload) in bytes.chunks(BLOCK_PAYLOAD_MAX).enumerate() {
            block::seal(
                BlockKind::Manifest,
                BlockAddress { file_id: c.sequence, index: index as u64 },
                payload,
                &mut block,
            );
            out.extend_from_slice(&block);
        }
        out
    }

    fn parse(raw: &[u8], sequence: u64) -> Result<Checkpoint, StoreError> {
        let path = Path::new("manifest-test.bsm");
        let bytes = payloads(path, sequence, raw)?;
        decode(&bytes, sequence).map_err(|(offset, fault)| StoreError::corrupt(path, offset, fault))
    }

    #[test]
    fn encoding_round_trips_across_blocks() {
        let mut c = checkpoint();
        assert_eq!(parse(&sealed(&c), 3).expect("intact"), c);
        c.body = (0..BLOCK_PAYLOAD_MAX * 2 + 17).map(|i| i as u8).collect();
        let raw = sealed(&c);
        assert_eq!(raw.len(), 3 * BLOCK_SIZE);
        assert_eq!(parse(&raw, 3).expect("intact"), c);
    }

    #[test]
    fn every_flipped_bit_is_named() {
        let raw = sealed(&checkpoint());
        let mut damaged = raw.clone();
        for bit in 0..raw.len() * 8 {
            damaged[bit / 8] ^= 1 << (bit % 8);
            match parse(&damaged, 3) {
                Err(StoreError::Corrupt { offset: 0, fault: Fault::Block(block::BlockFault::Checksum), .. }) => {}
                other => panic!("bit {bit}: {other:?}"),
            }
            damaged[bit / 8] ^= 1 << (bit % 8);
        }
    }

    #[test]
    fn a_manifest_under_another_name_is_refused() {
        let raw = sealed(&checkpoint());
        assert!(matches!(
            parse(&raw, 4),
            Err(StoreError::Corrupt { fault: Fault::Block(block::BlockFault::Misplaced { .. }), .. })
        ));
    }

    #[test]
    fn checked_blocks_with_bad_content_are_malformed() {
        let c = checkpoint();
        for (at, value) in [(0usize, 1u8), (16, 0xff), (20, 1), (24, 0xff)] {
            let mut bytes = encode(&c);
            bytes[at] ^= value;
            assert!(matches!(decode(&bytes, 3), Err((_, Fault::Malformed { .. }))), "byte {at}");
        }
        for cut in 0..encode(&c).len() {
            let mut bytes = encode(&c)[..cut].to_vec();
            if bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&(cut as u64).to_le_bytes());
            }
            assert!(decode(&bytes, 3).is_err(), "cut at {cut}");
        }
    }
}

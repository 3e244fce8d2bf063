//! Snapshot bundles: one snapshot (its manifest and every chunk the manifest
//! names) as a single self-describing byte stream, so that a snapshot can be
//! shipped to another machine (cluster mode keeps them in JetStream's object
//! store). Both directions stream one block at a time, so memory does not
//! grow with the snapshot, which may be gigabytes. The bundle carries the
//! payloads, not the chunk files: it does not change with their format.
//!
//! ```text
//! magic u32 = "BURB" | version u16 = 1 | reserved u16 = 0
//! records: the manifest first, then every distinct chunk it names, once:
//!     kind u8 (1 = manifest, 2 = chunk) | id [32] = blake3(payload) | payload_len u64 | payload
//! end: kind u8 = 0 | trailer: blake3(all preceding bytes) [32]
//! ```
//!
//! A chunk's id is its content address (its file name), so an import checks
//! every chunk as it streams past; lengths are bounded by the manifest's
//! limits before anything is allocated. Import writes the chunks first and
//! the manifest last, only after the trailer and the end of the input
//! checked out: a crash or a bad bundle leaves only unreferenced chunks
//! (removed by the next prune), never a visible snapshot.

use super::chunk_file::{BlockWriter, read_pieces};
use super::manifest::{self, ChunkRef, Manifest};
use super::{SnapshotStore, chunk_name, manifest_name};
use crate::LogError;
use crate::fsutil::{TEMP_SUFFIX, sync_dir, write_file_atomic, write_file_atomic_with};
use crate::limits::MANIFEST_BYTES_MAX;
use bursar_store::limits::BLOCK_PAYLOAD_MAX;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::Path;

/// "BURB" as little-endian bytes.
pub const BUNDLE_MAGIC: u32 = 0x4252_5542;
pub const BUNDLE_VERSION: u16 = 1;
const KIND_END: u8 = 0;
const KIND_MANIFEST: u8 = 1;
const KIND_CHUNK: u8 = 2;
const HEADER: u64 = 8;
const RECORD_HEADER: u64 = 1 + 32 + 8;
const TRAILER: u64 = 32;
/// The "file" named by I/O errors on the bundle stream itself.
const STREAM: &str = "<snapshot bundle stream>";

/// What an `export_bundle` wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleInfo {
    pub position: u64,
    /// Bytes of the whole bundle.
    pub bytes: u64,
}

fn stream_error(e: io::Error) -> LogError {
    LogError::io(Path::new(STREAM), e)
}

fn bad(offset: u64, reason: impl Into<String>) -> LogError {
    LogError::BadBundle { offset, reason: reason.into() }
}

fn hex(hash: &[u8; 32]) -> impl std::fmt::Display {
    blake3::Hash::from_bytes(*hash).to_hex()
}

fn bundle_header() -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[0..4].copy_from_slice(&BUNDLE_MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&BUNDLE_VERSION.to_le_bytes());
    h
}

/// The size of the bundle of a manifest (`raw`, parsed as `m`).
fn bundle_bytes(raw: &[u8], m: &Manifest) -> u64 {
    let chunks: u64 = distinct_chunks(m).iter().map(|c| RECORD_HEADER + c.len).sum();
    HEADER + RECORD_HEADER + raw.len() as u64 + chunks + 1 + TRAILER
}

/// The distinct chunks of a manifest, in manifest order: a chunk named twice
/// (two sections with equal bytes) is shipped once.
fn distinct_chunks(m: &Manifest) -> Vec<ChunkRef> {
    let mut seen = HashSet::new();
    m.chunk_refs().filter(|c| seen.insert(c.hash)).copied().collect()
}

impl SnapshotStore {
    /// The exact size of the bundle `export_bundle(position, ..)` writes,
    /// from the manifest alone (to size transfer timeouts).
    pub fn bundle_size(&self, position: u64) -> Result<u64, LogError> {
        let (raw, m) = self.read_manifest_raw(position)?;
        Ok(bundle_bytes(&raw, &m))
    }

    /// Writes the snapshot at `position` to `out` as a bundle (see the module
    /// docs). Each chunk is checked against its hash as it is copied; after
    /// an error `out` holds a partial bundle, which an import refuses.
    pub fn export_bundle(&self, position: u64, out: &mut impl Write) -> Result<BundleInfo, LogError> {
        let (raw, m) = self.read_manifest_raw(position)?;
        let mut w = HashingWriter { out, hasher: blake3::Hasher::new(), bytes: 0 };
        w.write(&bundle_header())?;
        w.record_header(KIND_MANIFEST, blake3::hash(&raw).as_bytes(), raw.len() as u64)?;
        w.write(&raw)?;
        for chunk in distinct_chunks(&m) {
            self.export_chunk(&chunk, &mut w)?;
        }
        w.write(&[KIND_END])?;
        let trailer = w.hasher.finalize();
        w.out.write_all(trailer.as_bytes()).and_then(|()| w.out.flush()).map_err(stream_error)?;
        let bytes = w.bytes + TRAILER;
        assert_eq!(bytes, bundle_bytes(&raw, &m), "invariant: an exported bundle has the size bundle_size promised");
        Ok(BundleInfo { position, bytes })
    }

    /// Copies one chunk's payload into the bundle, each block checked as it
    /// is read and the whole against its hash at the end (through the one
    /// reader of chunk files, either format).
    fn export_chunk<W: Write>(&self, chunk: &ChunkRef, w: &mut HashingWriter<'_, W>) -> Result<(), LogError> {
        w.record_header(KIND_CHUNK, &chunk.hash, chunk.len)?;
        read_pieces(&self.chunk_path(&chunk.hash), chunk, |piece| w.write(piece))
    }

    /// Reads a bundle and stores its snapshot; returns its position. Chunks
    /// are checked against their content address while they stream to disk;
    /// the manifest is written last, and only once the trailer and the end
    /// of the input checked out. Everything is fsynced as by `write`.
    pub fn import_bundle(&mut self, input: &mut impl Read) -> Result<u64, LogError> {
        self.check_writable()?;
        let mut r = HashingReader { input, hasher: blake3::Hasher::new(), offset: 0 };
        read_bundle_header(&mut r)?;
        let (raw, m) = read_manifest_record(&mut r)?;
        let mut expected = expected_chunks(&m, r.offset)?;
        let mut buffer = vec![0u8; BLOCK_PAYLOAD_MAX];
        loop {
            let at = r.offset;
            match r.u8("a record kind")? {
                KIND_END => break,
                KIND_CHUNK => self.import_chunk(&mut r, at, &mut expected, &mut buffer)?,
                kind => return Err(bad(at, format!("unknown record kind {kind}"))),
            }
        }
        if let Some(hash) = expected.keys().next() {
            let reason = format!("{} chunks named by the manifest are missing, e.g. {}", expected.len(), hex(hash));
            return Err(bad(r.offset, reason));
        }
        check_trailer_and_end(&mut r)?;
        assert!(expected.is_empty(), "invariant: every chunk the manifest names was imported");
        sync_dir(&self.chunks_dir)?;
        write_file_atomic(&self.root, &manifest_name(m.position), &[&raw])?;
        sync_dir(&self.root)?;
        debug_assert!(
            self.read_manifest_raw(m.position).is_ok_and(|(stored, back)| stored == raw && back == m),
            "invariant: an imported manifest reads back as it arrived"
        );
        Ok(m.position)
    }

    /// Streams one chunk record (its kind byte at `at` already read) into
    /// its chunk file; nothing is renamed into place unless it matches.
    fn import_chunk<R: Read>(
        &self,
        r: &mut HashingReader<'_, R>,
        at: u64,
        expected: &mut HashMap<[u8; 32], u64>,
        buffer: &mut [u8],
    ) -> Result<(), LogError> {
        let hash = r.array::<32>("a chunk record")?;
        let len = r.u64("a chunk record")?;
        match expected.remove(&hash) {
            None => return Err(bad(at, format!("chunk {} is not named by the manifest, or repeated", hex(&hash)))),
            Some(want) if want != len => {
                return Err(bad(at, format!("chunk {} has {len} bytes, the manifest says {want}", hex(&hash))));
            }
            Some(_) => {}
        }
        let name = chunk_name(&hash);
        let temp = self.chunks_dir.join(format!("{name}{TEMP_SUFFIX}"));
        write_file_atomic_with(&self.chunks_dir, &name, |file| {
            let start = r.offset;
            let mut hasher = blake3::Hasher::new();
            let mut w = BlockWriter::new(file, &temp, hash, len);
            while !w.done() {
                let piece = &mut buffer[..w.next_len()];
                r.fill(piece, "a chunk payload", true)?;
                hasher.update(piece);
                w.put(piece)?;
            }
            w.finish();
            if *hasher.finalize().as_bytes() != hash {
                return Err(bad(start, format!("chunk {} does not match its content address", hex(&hash))));
            }
            Ok(())
        })
    }
}

fn read_bundle_header<R: Read>(r: &mut HashingReader<'_, R>) -> Result<(), LogError> {
    if r.u32("the bundle header")? != BUNDLE_MAGIC {
        return Err(bad(0, "not a snapshot bundle (bad magic)"));
    }
    let version = r.u16("the bundle header")?;
    if version != BUNDLE_VERSION {
        return Err(bad(4, format!("unsupported bundle version {version}")));
    }
    if r.u16("the bundle header")? != 0 {
        return Err(bad(6, "reserved header field is not zero"));
    }
    Ok(())
}

/// The first record: the manifest's bytes, checked against their id and
/// parsed (which checks the manifest's own trailer).
fn read_manifest_record<R: Read>(r: &mut HashingReader<'_, R>) -> Result<(Vec<u8>, Manifest), LogError> {
    let at = r.offset;
    if r.u8("the manifest record")? != KIND_MANIFEST {
        return Err(bad(at, "the first record is not a manifest"));
    }
    let id = r.array::<32>("the manifest record")?;
    let len = r.u64("the manifest record")?;
    if len > MANIFEST_BYTES_MAX {
        return Err(bad(at, format!("manifest of {len} bytes exceeds {MANIFEST_BYTES_MAX}")));
    }
    let start = r.offset;
    let raw = r.vec(len, "the manifest")?;
    if *blake3::hash(&raw).as_bytes() != id {
        return Err(bad(start, "the manifest does not match its id hash"));
    }
    let m = manifest::decode(&raw, Path::new(STREAM)).map_err(|e| bad(start, format!("bad manifest: {e}")))?;
    Ok((raw, m))
}

/// Length of every distinct chunk the manifest names, by hash.
fn expected_chunks(m: &Manifest, offset: u64) -> Result<HashMap<[u8; 32], u64>, LogError> {
    let mut out = HashMap::new();
    for c in m.chunk_refs() {
        if out.insert(c.hash, c.len).is_some_and(|len| len != c.len) {
            return Err(bad(offset, format!("the manifest names chunk {} with two lengths", hex(&c.hash))));
        }
    }
    Ok(out)
}

fn check_trailer_and_end<R: Read>(r: &mut HashingReader<'_, R>) -> Result<(), LogError> {
    let at = r.offset;
    let computed = r.hasher.finalize();
    let mut trailer = [0u8; TRAILER as usize];
    r.fill(&mut trailer, "the trailer", false)?;
    if computed.as_bytes() != &trailer {
        return Err(bad(at, "the bundle does not match its trailer hash"));
    }
    let mut probe = [0u8; 1];
    loop {
        match r.input.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(bad(r.offset, "unexpected bytes after the trailer")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(e)),
        }
    }
}

/// Writes to the bundle stream, hashing and counting what it writes.
struct HashingWriter<'a, W: Write> {
    out: &'a mut W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> HashingWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.out.write_all(bytes).map_err(stream_error)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn record_header(&mut self, kind: u8, id: &[u8; 32], len: u64) -> Result<(), LogError> {
        let mut h = [0u8; RECORD_HEADER as usize];
        h[0] = kind;
        h[1..33].copy_from_slice(id);
        h[33..41].copy_from_slice(&len.to_le_bytes());
        self.write(&h)
    }
}

/// Reads the bundle stream, hashing what it reads and tracking the offset
/// for error messages.
struct HashingReader<'a, R: Read> {
    input: &'a mut R,
    hasher: blake3::Hasher,
    offset: u64,
}

impl<R: Read> HashingReader<'_, R> {
    fn fill(&mut self, buf: &mut [u8], what: &str, hashed: bool) -> Result<(), LogError> {
        match self.input.read_exact(buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(bad(self.offset, format!("the bundle ends inside {what}")));
            }
            Err(e) => return Err(stream_error(e)),
        }
        if hashed {
            self.hasher.update(buf);
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// `len` bytes, grown as they arrive: a bundle that claims more than it
    /// holds costs no more memory than it holds.
    fn vec(&mut self, len: u64, what: &str) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::new();
        let mut piece = [0u8; 64 << 10];
        while (out.len() as u64) < len {
            let n = (len - out.len() as u64).min(piece.len() as u64) as usize;
            self.fill(&mut piece[..n], what, true)?;
            out.extend_from_slice(&piece[..n]);
        }
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], LogError> {
        let mut out = [0u8; N];
        self.fill(&mut out, what, true)?;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, LogError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, LogError> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, LogError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, LogError> {
        self.array(what).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bursar_core::command::{Command, LogCommand, Operation};
    use bursar_core::machine::Machine;
    use bursar_core::records::encode_all;
    use bursar_core::{Account, Ledger, Limits, Transfer};
    use std::collections::BTreeMap;
    use std::fs;
    use tempfile::TempDir;

    fn apply(m: &mut Machine, operation: Operation, events: &[u8]) {
        let position = m.position() + 1;
        let out = m.apply_entry(position, position * 1_000_000, &[LogCommand::Plain(Command { operation, events })]);
        assert!(out[0].1.is_empty(), "{:?}", out[0]);
    }

    /// A ledger, `accounts` accounts (4096 per arena chunk) and `transfers`
    /// transfers among the first (at most) 50.
    fn machine(accounts: u128, transfers: u128) -> Machine {
        let mut m = Machine::new(Limits::default());
        let ledger = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
        apply(&mut m, Operation::CreateLedgers, encode_all(&[ledger]));
        let accounts: Vec<Account> =
            (1..=accounts).map(|id| Account { id, ledger: 1, code: 10, ..Default::default() }).collect();
        apply(&mut m, Operation::CreateAccounts, encode_all(&accounts));
        let half = (accounts.len() as u128 / 2).min(25);
        let transfers: Vec<Transfer> = (1..=transfers)
            .map(|id| Transfer {
                id,
                debit_account_id: 1 + id % half,
                credit_account_id: 1 + half + id % half,
                amount: id,
                ledger: 1,
                code: 1,
                ..Default::default()
            })
            .collect();
        apply(&mut m, Operation::CreateTransfers, encode_all(&transfers));
        m
    }

    fn chain(position: u64) -> [u8; 32] {
        *blake3::hash(&position.to_le_bytes()).as_bytes()
    }

    /// A store in a temp dir holding a snapshot of `m`, and that snapshot's bundle.
    fn exported(m: &Machine) -> (TempDir, SnapshotStore, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(dir.path()).unwrap();
        store.write(&m.snapshot(), chain(m.position())).unwrap();
        let mut bundle = Vec::new();
        let info = store.export_bundle(m.position(), &mut bundle).unwrap();
        assert_eq!(info, BundleInfo { position: m.position(), bytes: bundle.len() as u64 });
        assert_eq!(store.bundle_size(m.position()).unwrap(), info.bytes);
        (dir, store, bundle)
    }

    /// Every file under `dir/snapshots`, by relative path.
    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for sub in ["snapshots", "snapshots/chunks"] {
            for e in fs::read_dir(dir.join(sub)).unwrap() {
                let path = e.unwrap().path();
                if path.is_file() {
                    out.insert(
                        format!("{sub}/{}", path.file_name().unwrap().to_string_lossy()),
                        fs::read(path).unwrap(),
                    );
                }
            }
        }
        out
    }

    /// Imports `bundle` into `store`, expecting a `BadBundle` error that
    /// leaves no snapshot and no temp file.
    fn refused(store: &mut SnapshotStore, dir: &Path, bundle: &[u8], case: &str) -> String {
        let err = store.import_bundle(&mut &bundle[..]).err().unwrap_or_else(|| panic!("{case}: accepted"));
        assert!(matches!(err, LogError::BadBundle { .. }), "{case}: {err}");
        assert_eq!(store.list().unwrap(), Vec::<u64>::new(), "{case}: a snapshot became visible");
        assert!(files(dir).keys().all(|name| !name.ends_with(".tmp")), "{case}: a temp file is left");
        err.to_string()
    }

    /// Offset of the first chunk record.
    fn first_chunk(bundle: &[u8]) -> usize {
        let len = u64::from_le_bytes(bundle[41..49].try_into().unwrap());
        (HEADER + RECORD_HEADER + len) as usize
    }

    /// Changes a bundle in place (before its trailer is resealed).
    type Damage = Box<dyn Fn(&mut [u8])>;

    fn reseal(bundle: &mut [u8]) {
        let body = bundle.len() - TRAILER as usize;
        let trailer = blake3::hash(&bundle[..body]);
        bundle[body..].copy_from_slice(trailer.as_bytes());
    }

    #[test]
    fn a_bundle_round_trips_to_the_same_snapshot() {
        let m = machine(5000, 200);
        let (dir, _store, bundle) = exported(&m);
        let target = tempfile::tempdir().unwrap();
        let mut imported = SnapshotStore::open(target.path()).unwrap();
        assert_eq!(imported.import_bundle(&mut &bundle[..]).unwrap(), m.position());
        // Importing again changes nothing.
        assert_eq!(imported.import_bundle(&mut &bundle[..]).unwrap(), m.position());
        assert_eq!(files(target.path()), files(dir.path()), "the same manifest and chunk files");

        let reopened = SnapshotStore::open(target.path()).unwrap();
        assert_eq!(reopened.list().unwrap(), vec![m.position()]);
        let s = reopened.load_latest().unwrap().expect("the imported snapshot");
        assert_eq!((s.position, s.chain, s.digest), (m.position(), chain(m.position()), m.digest()));
        let restored = Machine::restore(Limits::default(), s.chunks).unwrap();
        assert_eq!((restored.position(), restored.digest()), (m.position(), m.digest()));
        let again = reopened.load(m.position()).unwrap();
        assert_eq!((again.position, again.chain, again.digest), (m.position(), chain(m.position()), m.digest()));
    }

    #[test]
    fn a_truncated_bundle_is_refused_and_leaves_no_snapshot() {
        let (_dir, _store, bundle) = exported(&machine(10, 5));
        let target = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(target.path()).unwrap();
        let chunk = first_chunk(&bundle);
        let mut cuts = vec![0, 1, 7, 8, 9, 48, 49, chunk - 1, chunk, chunk + 1, chunk + 41, chunk + 42];
        cuts.extend((0..bundle.len()).step_by(bundle.len() / 16));
        cuts.extend((1..=33).map(|back| bundle.len() - back));
        for cut in cuts {
            let err = refused(&mut store, target.path(), &bundle[..cut], &format!("cut at {cut}"));
            assert!(err.contains("ends inside"), "cut at {cut}: {err}");
        }
        assert_eq!(store.import_bundle(&mut &bundle[..]).unwrap(), 3, "the whole bundle still imports");
    }

    #[test]
    fn a_flipped_byte_is_refused_and_leaves_no_snapshot() {
        let (_dir, _store, bundle) = exported(&machine(10, 5));
        let target = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(target.path()).unwrap();
        let chunk = first_chunk(&bundle);
        let mut offsets: Vec<usize> = (0..49).chain(chunk..chunk + 45).collect();
        offsets.extend((49..bundle.len()).step_by(bundle.len() / 24));
        offsets.extend(bundle.len() - 34..bundle.len());
        for at in offsets {
            let mut b = bundle.clone();
            b[at] ^= 0x10;
            refused(&mut store, target.path(), &b, &format!("byte {at} flipped"));
        }
        let mut longer = bundle.clone();
        longer.push(0);
        let err = refused(&mut store, target.path(), &longer, "a byte after the trailer");
        assert!(err.contains("after the trailer"), "{err}");
    }

    #[test]
    fn bad_lengths_and_chunk_sets_are_refused_even_when_resealed() {
        let (_dir, _store, bundle) = exported(&machine(10, 5));
        let target = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(target.path()).unwrap();
        let chunk = first_chunk(&bundle);
        let cases: [(&str, Damage, &str); 4] = [
            ("huge manifest", Box::new(|b| b[41..49].copy_from_slice(&u64::MAX.to_le_bytes())), "exceeds"),
            (
                "manifest longer than the bundle",
                Box::new(|b| b[41..49].copy_from_slice(&MANIFEST_BYTES_MAX.to_le_bytes())),
                "ends inside the manifest",
            ),
            (
                "huge chunk",
                Box::new(move |b| b[chunk + 33..chunk + 41].copy_from_slice(&u64::MAX.to_le_bytes())),
                "the manifest says",
            ),
            ("unknown record kind", Box::new(move |b| b[chunk] = 7), "unknown record kind 7"),
        ];
        for (case, damage, expected) in cases {
            let mut b = bundle.clone();
            damage(&mut b);
            reseal(&mut b);
            let err = refused(&mut store, target.path(), &b, case);
            assert!(err.contains(expected), "{case}: {err}");
        }
        // Drop the first chunk record and reseal: the manifest still names it.
        let len = u64::from_le_bytes(bundle[chunk + 33..chunk + 41].try_into().unwrap()) as usize;
        let mut b = bundle[..chunk].to_vec();
        b.extend_from_slice(&bundle[chunk + 41 + len..]);
        reseal(&mut b);
        let err = refused(&mut store, target.path(), &b, "a missing chunk");
        assert!(err.contains("are missing"), "{err}");
        // The same chunk twice.
        let mut b = bundle[..chunk + 41 + len].to_vec();
        b.extend_from_slice(&bundle[chunk..]);
        reseal(&mut b);
        let err = refused(&mut store, target.path(), &b, "a repeated chunk");
        assert!(err.contains("or repeated"), "{err}");
    }

    #[test]
    fn export_refuses_a_damaged_chunk() {
        let m = machine(10, 5);
        let (dir, store, _bundle) = exported(&m);
        let chunks = dir.path().join("snapshots/chunks");
        let victim =
            fs::read_dir(&chunks).unwrap().map(|e| e.unwrap().path()).max_by_key(|p| p.metadata().unwrap().len());
        let victim = victim.expect("a chunk file");
        let mut bytes = fs::read(&victim).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&victim, bytes).unwrap();
        let err = store.export_bundle(m.position(), &mut io::sink()).unwrap_err();
        // The last byte is in the last block (its padding or its payload):
        // that block's checksum catches it, before the chunk's hash would.
        let last_block =
            (last as u64 / bursar_store::limits::BLOCK_SIZE as u64) * bursar_store::limits::BLOCK_SIZE as u64;
        match &err {
            LogError::Corrupt { file, offset, reason } => {
                assert_eq!((file, *offset), (&victim, last_block), "{err}");
                assert!(reason.contains("checksum mismatch"), "{err}");
            }
            _ => panic!("not corruption: {err}"),
        }
    }
}

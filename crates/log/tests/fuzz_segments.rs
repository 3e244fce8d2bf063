//! Fuzz target for the file log's on-disk format (issue 13, trust
//! boundaries): segment files, entry headers and the durable marker.
//!
//! `fuzz_log_open` copies a valid two-segment log, damages it (raw byte
//! edits of a segment; header edits with the CRC recomputed, so position,
//! length, chain and body-hash checks are reached; marker edits, also with
//! a valid CRC; a segment removed or an extra one added), then reads it the
//! way every reader does (`scan`, `open_read_only`, `open`, `entries_from`).
//! Each must return a typed error or entries that the log really holds;
//! none may panic.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

mod common;

use bursar_fuzz as fz;
use bursar_log::{FileLog, LogError};
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SEGMENT: u64 = 400;
const ENTRIES: u64 = 8;

/// One valid log, built once; each case works on a copy.
fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        build_log(dir.path(), ENTRIES, SEGMENT);
        dir
    })
    .path()
}

#[derive(Clone, Debug)]
enum Damage {
    /// Raw edits of a segment's bytes.
    Bytes(Index, Vec<fz::Mutation>),
    /// Edits of one entry header's fields after the CRC, CRC recomputed.
    Header(Index, Index, Vec<fz::Mutation>),
    /// A marker with any position and a valid CRC.
    Marker(u64),
    /// Raw edits of the marker file.
    MarkerBytes(Vec<fz::Mutation>),
    /// A segment file removed.
    Remove(Index),
    /// A segment with another name (a copy of an existing one, edited).
    Extra(u64, Index, Vec<fz::Mutation>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let position = prop_oneof![0u64..ENTRIES + 3, proptest::sample::select(fz::INTERESTING)];
    prop_oneof![
        4 => (any::<Index>(), fz::mutations(4)).prop_map(|(s, m)| Damage::Bytes(s, m)),
        4 => (any::<Index>(), any::<Index>(), fz::mutations(3)).prop_map(|(s, e, m)| Damage::Header(s, e, m)),
        1 => position.clone().prop_map(Damage::Marker),
        1 => fz::mutations(3).prop_map(Damage::MarkerBytes),
        1 => any::<Index>().prop_map(Damage::Remove),
        1 => (position, any::<Index>(), fz::mutations(3)).prop_map(|(p, s, m)| Damage::Extra(p, s, m)),
    ]
}

fn crc32c_of(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

/// Edits the header of the `entry`th entry of `file`, then re-seals its CRC.
fn edit_header(file: &Path, entry: &Index, muts: &[fz::Mutation]) {
    let mut bytes = fs::read(file).expect("segment");
    let offsets = header_offsets(&bytes);
    if offsets.is_empty() {
        return;
    }
    let start = offsets[entry.index(offsets.len())];
    let fields = bytes[start + 8..start + HEADER as usize].to_vec();
    let mut edited = fz::mutated(fields.clone(), muts);
    edited.resize(fields.len(), 0);
    bytes[start + 8..start + HEADER as usize].copy_from_slice(&edited);
    let crc = crc32c_of(&bytes[start + 8..start + HEADER as usize]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(file, bytes).expect("write segment");
}

/// Where whole headers start, following each header's own body length
/// (earlier damage may have moved them).
fn header_offsets(bytes: &[u8]) -> Vec<usize> {
    let header = HEADER as usize;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + header <= bytes.len() {
        out.push(at);
        let len = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().expect("4 bytes"));
        at = at.saturating_add(header).saturating_add(len as usize);
    }
    out
}

fn marker_bytes(position: u64) -> Vec<u8> {
    let mut b = position.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32c_of(&position.to_le_bytes()).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b
}

fn apply(dir: &Path, d: &Damage) {
    let files = segments(dir);
    let pick = |i: &Index| -> PathBuf { files[i.index(files.len())].clone() };
    let marker = log_dir(dir).join("durable");
    match d {
        Damage::Bytes(s, m) => {
            let f = pick(s);
            let bytes = fz::mutated(fs::read(&f).expect("segment"), m);
            fs::write(f, bytes).expect("write segment");
        }
        Damage::Header(s, e, m) => edit_header(&pick(s), e, m),
        Damage::Marker(p) => fs::write(marker, marker_bytes(*p)).expect("write marker"),
        Damage::MarkerBytes(m) => {
            let bytes = fz::mutated(fs::read(&marker).unwrap_or_default(), m);
            fs::write(marker, bytes).expect("write marker");
        }
        Damage::Remove(s) => fs::remove_file(pick(s)).expect("remove segment"),
        Damage::Extra(first, s, m) => {
            let bytes = fz::mutated(fs::read(pick(s)).expect("segment"), m);
            fs::write(log_dir(dir).join(format!("segment-{first:020}.log")), bytes).expect("write segment");
        }
    }
}

/// Entries a reader returned must be entries the log holds: consecutive
/// (from 1, or later when older segments are gone), with the bodies
/// written. Timestamps are compared except for the last entry: nothing
/// after it commits to its header (the CRC was recomputed on purpose),
/// which is the documented limit of the chain.
fn check_entries(entries: &[bursar_log::Entry]) -> Result<(), TestCaseError> {
    let first = entries.first().map_or(1, |e| e.position);
    for (n, e) in entries.iter().enumerate() {
        let i = first + n as u64;
        prop_assert_eq!(e.position, i);
        prop_assert!((1..=ENTRIES).contains(&i), "entry {} was never written", i);
        prop_assert_eq!(&e.body, &body(i), "entry {} has a body never written", i);
        if n + 1 < entries.len() {
            prop_assert_eq!(e.timestamp, timestamp(i));
        }
    }
    Ok(())
}

/// Reads everything `log` holds; an error ends the read (typed, not a panic).
fn read(log: &FileLog) -> Vec<bursar_log::Entry> {
    log.entries_from(log.first_position()).map_while(Result::ok).collect()
}

fn typed(e: &LogError) -> Result<(), TestCaseError> {
    prop_assert!(!e.to_string().is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(fz::config(192))]

    #[test]
    fn fuzz_log_open(damages in proptest::collection::vec(damage(), 1..3)) {
        let work = tempfile::tempdir().expect("temp dir");
        copy_dir(base(), work.path());
        for d in &damages {
            if !segments(work.path()).is_empty() {
                apply(work.path(), d);
            }
        }
        let mut scanned = Vec::new();
        let _ = bursar_log::scan(work.path(), |e| {
            scanned.push(e);
            Ok(())
        });
        check_entries(&scanned)?;
        match FileLog::open_read_only(options(work.path(), SEGMENT)) {
            Ok((log, _)) => check_entries(&read(&log))?,
            Err(e) => typed(&e)?,
        }
        match FileLog::open(options(work.path(), SEGMENT)) {
            Ok((log, report)) => {
                let entries = read(&log);
                check_entries(&entries)?;
                prop_assert_eq!(entries.last().map_or(report.last_position, |e| e.position), report.last_position);
            }
            Err(e) => typed(&e)?,
        }
    }

    #[test]
    fn fuzz_log_open_random_segment(bytes in proptest::collection::vec(any::<u8>(), 0..600), first in 0u64..3) {
        let work = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(log_dir(work.path())).expect("log dir");
        fs::write(log_dir(work.path()).join(format!("segment-{first:020}.log")), &bytes).expect("write segment");
        match FileLog::open(options(work.path(), SEGMENT)) {
            Ok((log, report)) => {
                let entries = read(&log);
                prop_assert_eq!(entries.last().map_or(report.last_position, |e| e.position), report.last_position);
            }
            Err(e) => typed(&e)?,
        }
    }
}

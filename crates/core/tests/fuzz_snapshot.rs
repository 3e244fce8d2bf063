//! Fuzz target for snapshot restore (issue 13, trust boundaries).
//!
//! A snapshot is read from disk or, in cluster mode, from the JetStream
//! object store; the store checks its outer checksums (manifest trailer,
//! chunk hashes), so damage that reaches `Machine::restore` is exactly what
//! these mutations model: bytes with a valid outer checksum but a bad inside.
//! `fuzz_snapshot_restore` mutates the header, any chunk of any section, and
//! the section structure (chunks split, dropped, duplicated, sections
//! missing), then restores: an error, never a panic; and a state that
//! restores holds its invariants and applies further entries.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

#[path = "fuzz/seeds.rs"]
mod seeds;

use bursar_core::Limits;
use bursar_core::command::{Command, LogCommand, Operation};
use bursar_core::machine::Machine;
use bursar_core::records::encode_all;
use bursar_core::state::{SectionChunk, SnapshotChunks};
use bursar_fuzz as fz;
use proptest::prelude::*;
use proptest::sample::Index;
use seeds::*;

/// One edit of a stored snapshot.
#[derive(Clone, Debug)]
enum Edit {
    /// Byte edits of the header.
    Header(Vec<fz::Mutation>),
    /// Byte edits of one chunk of one section.
    Chunk(Index, Index, Vec<fz::Mutation>),
    /// Split a chunk in two (chunk boundaries are not part of the format
    /// for encoded sections, but are for arenas).
    Split(Index, Index, Index),
    /// Remove a chunk.
    DropChunk(Index, Index),
    /// Repeat a chunk.
    RepeatChunk(Index, Index),
    /// Remove a whole section.
    DropSection(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => fz::mutations(4).prop_map(Edit::Header),
        8 => (any::<Index>(), any::<Index>(), fz::mutations(6)).prop_map(|(s, c, m)| Edit::Chunk(s, c, m)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(s, c, at)| Edit::Split(s, c, at)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(s, c)| Edit::DropChunk(s, c)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(s, c)| Edit::RepeatChunk(s, c)),
        1 => any::<Index>().prop_map(Edit::DropSection),
    ]
}

/// The chunks of a non-empty section (picked by `s`), if any section has one.
fn chunks_of<'a>(stored: &'a mut SnapshotChunks, s: &Index) -> Option<&'a mut Vec<SectionChunk>> {
    let with_chunks: Vec<usize> = (0..stored.sections.len()).filter(|i| !stored.sections[*i].is_empty()).collect();
    if with_chunks.is_empty() {
        return None;
    }
    let i = with_chunks[s.index(with_chunks.len())];
    Some(&mut stored.sections[i])
}

fn apply(stored: &mut SnapshotChunks, e: &Edit) {
    match e {
        Edit::Header(m) => stored.header = fz::mutated(std::mem::take(&mut stored.header), m),
        Edit::Chunk(s, c, m) => {
            if let Some(chunks) = chunks_of(stored, s) {
                let i = c.index(chunks.len());
                let bytes = chunks[i].bytes_mut().expect("chunks in memory");
                *bytes = fz::mutated(std::mem::take(bytes), m);
            }
        }
        Edit::Split(s, c, at) => {
            if let Some(chunks) = chunks_of(stored, s) {
                let i = c.index(chunks.len());
                let bytes = chunks[i].bytes_mut().expect("chunks in memory");
                let cut = at.index(bytes.len() + 1);
                let tail = bytes.split_off(cut);
                chunks.insert(i + 1, tail.into());
            }
        }
        Edit::DropChunk(s, c) => {
            if let Some(chunks) = chunks_of(stored, s) {
                chunks.remove(c.index(chunks.len()));
            }
        }
        Edit::RepeatChunk(s, c) => {
            if let Some(chunks) = chunks_of(stored, s) {
                let i = c.index(chunks.len());
                chunks.insert(i, chunks[i].clone());
            }
        }
        Edit::DropSection(s) => {
            let n = stored.sections.len();
            if n > 0 {
                stored.sections.remove(s.index(n));
            }
        }
    }
}

/// A state that restored must work: invariants hold and more entries apply.
fn exercise(mut m: Machine) -> Result<(), TestCaseError> {
    if let Err(e) = m.check_invariants_deep() {
        return Err(TestCaseError::fail(format!("restored a state that breaks an invariant: {e}")));
    }
    let (position, time) = (m.position() + 1, START + 10_000 * SEC);
    let transfers = [transfer(900, 1, 2, 1), transfer(901, 2, 3, 1)];
    let transfers = encode_all(&transfers);
    m.apply_entry(
        position,
        time,
        &[LogCommand::Plain(Command { operation: Operation::CreateTransfers, events: transfers })],
    );
    m.apply_entry(position + 1, time + 3600 * SEC, &[]);
    m.check_invariants_deep().map_err(|e| TestCaseError::fail(format!("invariant broken after restore and apply: {e}")))
}

proptest! {
    #![proptest_config(fz::config(256))]

    #[test]
    fn fuzz_snapshot_restore(edits in proptest::collection::vec(edit(), 1..4)) {
        let (m, _, _) = base();
        let mut s = stored(&m);
        for e in &edits {
            apply(&mut s, e);
        }
        match Machine::restore(Limits::default(), s) {
            Ok(restored) => exercise(restored)?,
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn unedited_snapshot_restores_to_the_same_digest() {
    let (m, _, _) = base();
    let restored = Machine::restore(Limits::default(), stored(&m)).unwrap();
    assert_eq!(restored.digest(), m.digest());
    exercise(restored).unwrap();
}

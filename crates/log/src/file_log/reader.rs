//! Reading segments back: one sequential reader that verifies every entry it
//! passes (used by recovery, `entries_from` and `chain_at`), and the public
//! iterator over verified entries.

use super::format::{ENTRY_HEADER_SIZE, Header, HeaderFault, chain_of};
use crate::LogError;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

const READ_BUFFER: usize = 256 << 10;

/// A segment file: its first position (from its name) and the chain of the
/// entry before it, which its first entry must link to.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub first: u64,
    pub path: PathBuf,
    pub start_chain: [u8; 32],
}

/// An entry that passed every check.
pub(crate) struct Verified {
    pub header: Header,
    pub chain: [u8; 32],
}

/// Where and why the next entry failed a check (or the file ended inside it).
#[derive(Debug)]
pub(crate) struct Damage {
    pub offset: u64,
    pub reason: EntryFault,
}

/// Why an entry failed a check (the header's own, its place in the chain,
/// its length against the file, or its body hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EntryFault {
    #[error("file ends {remaining} bytes into an entry header")]
    HeaderCut { remaining: u64 },
    #[error(transparent)]
    Header(#[from] HeaderFault),
    #[error("entry has position {found}, expected {expected}")]
    WrongPosition { found: u64, expected: u64 },
    #[error("entry {position} does not link to the previous entry (prev_chain mismatch)")]
    BrokenLink { position: u64 },
    #[error("file ends inside entry {position}: it needs {needed} bytes but {remaining} remain in the file")]
    BodyCut { position: u64, needed: u64, remaining: u64 },
    #[error("body of entry {position} does not match its hash")]
    BodyHash { position: u64 },
}

pub(crate) enum Step {
    /// The file ends exactly at an entry boundary.
    End,
    Entry(Verified),
    Damaged(Damage),
}

/// Reads one segment front to back. `prev_chain` is `None` only for a first
/// segment that does not start at position 1 (older segments were removed),
/// where the first entry's link cannot be checked.
pub(crate) struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    len: u64,
    next_position: u64,
    prev_chain: Option<[u8; 32]>,
}

impl SegmentReader {
    pub fn open(path: &Path, first_position: u64, prev_chain: Option<[u8; 32]>) -> Result<SegmentReader, LogError> {
        let file = File::open(path).map_err(|e| LogError::io(path, e))?;
        let len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
        Ok(SegmentReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(READ_BUFFER, file),
            offset: 0,
            len,
            next_position: first_position,
            prev_chain,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the file when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Offset of the next entry (the end of the last verified one).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn corrupt(&self, d: Damage) -> LogError {
        LogError::corrupt(&self.path, d.offset, d.reason.to_string())
    }

    /// Reads and checks the next entry. With `body`, the body is read into it
    /// and its hash checked; without, it is skipped (header checks only).
    /// On `Damaged` the reader does not advance.
    pub fn step(&mut self, body: Option<&mut Vec<u8>>) -> Result<Step, LogError> {
        let remaining = self.len - self.offset;
        if remaining == 0 {
            return Ok(Step::End);
        }
        let offset = self.offset;
        let damaged = |reason: EntryFault| Ok(Step::Damaged(Damage { offset, reason }));
        if remaining < ENTRY_HEADER_SIZE as u64 {
            return damaged(EntryFault::HeaderCut { remaining });
        }
        let mut raw = [0u8; ENTRY_HEADER_SIZE];
        self.reader.read_exact(&mut raw).map_err(|e| LogError::io(&self.path, e))?;
        let header = match self.check_header(&raw, remaining) {
            Ok(h) => h,
            Err(reason) => return damaged(reason),
        };
        if let Some(reason) = self.body(&header, body)? {
            return damaged(reason);
        }
        let chain = chain_of(&raw);
        self.offset += ENTRY_HEADER_SIZE as u64 + u64::from(header.body_len);
        assert!(
            self.offset <= self.len,
            "invariant: a verified entry ends inside its file ({} > {})",
            self.offset,
            self.len
        );
        self.next_position += 1;
        self.prev_chain = Some(chain);
        Ok(Step::Entry(Verified { header, chain }))
    }

    fn check_header(&self, raw: &[u8; ENTRY_HEADER_SIZE], remaining: u64) -> Result<Header, EntryFault> {
        let header = Header::decode(raw)?;
        let expected = self.next_position;
        if header.position != expected {
            return Err(EntryFault::WrongPosition { found: header.position, expected });
        }
        if self.prev_chain.is_some_and(|prev| prev != header.prev_chain) {
            return Err(EntryFault::BrokenLink { position: expected });
        }
        let needed = ENTRY_HEADER_SIZE as u64 + u64::from(header.body_len);
        if remaining < needed {
            return Err(EntryFault::BodyCut { position: expected, needed, remaining });
        }
        Ok(header)
    }

    /// Reads and checks the body, or skips it. Returns the damage, if any.
    /// I/O errors are errors, never damage: an unreadable sector is not a
    /// torn write and must not be truncated away.
    fn body(&mut self, header: &Header, body: Option<&mut Vec<u8>>) -> Result<Option<EntryFault>, LogError> {
        let len = header.body_len as usize;
        let io = |e| LogError::io(&self.path, e);
        let Some(buf) = body else {
            self.reader.seek_relative(len as i64).map_err(io)?;
            return Ok(None);
        };
        buf.clear();
        buf.resize(len, 0);
        self.reader.read_exact(buf).map_err(io)?;
        if *blake3::hash(buf).as_bytes() != header.body_hash {
            return Ok(Some(EntryFault::BodyHash { position: header.position }));
        }
        Ok(None)
    }
}

/// A verified log entry as read back from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub position: u64,
    /// Opaque to the log: chosen by the engine when it appended the entry.
    pub timestamp: u64,
    /// This entry's chain hash.
    pub chain: [u8; 32],
    pub body: Vec<u8>,
}

/// Verified entries from a position up to the log's last position at the
/// time the iterator was made. Independent of the `FileLog` (it opens its
/// own file handles), so it may outlive the borrow and run on another
/// thread. Stops after the first error.
pub struct EntryIter {
    segments: std::vec::IntoIter<Segment>,
    reader: Option<SegmentReader>,
    from: u64,
    end: u64,
    next_position: u64,
    prev_chain: [u8; 32],
    /// Where the last segment read ended, for the error if more are missing.
    last_end: Option<(PathBuf, u64)>,
    pending: Option<LogError>,
    done: bool,
}

impl EntryIter {
    /// Segments must start with the one holding `from`.
    pub(crate) fn new(segments: Vec<Segment>, from: u64, end: u64) -> EntryIter {
        let (next_position, prev_chain) = segments.first().map_or((end + 1, [0; 32]), |s| (s.first, s.start_chain));
        EntryIter {
            segments: segments.into_iter(),
            reader: None,
            from,
            end,
            next_position,
            prev_chain,
            last_end: None,
            pending: None,
            done: false,
        }
    }

    /// An iterator whose only item is `error`.
    pub(crate) fn failed(error: LogError) -> EntryIter {
        let mut it = EntryIter::new(Vec::new(), 1, 0);
        it.pending = Some(error);
        it
    }

    fn advance(&mut self) -> Result<Option<Entry>, LogError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        while self.next_position <= self.end {
            let wanted = self.next_position >= self.from;
            let mut body = Vec::new();
            let reader = self.reader()?;
            match reader.step(wanted.then_some(&mut body))? {
                Step::Entry(v) => {
                    // The segment reader checked the entry against its own
                    // count and link; the iterator's must agree with them.
                    assert_eq!(v.header.position, self.next_position, "invariant: entries come back in position order");
                    assert_eq!(
                        v.header.prev_chain, self.prev_chain,
                        "invariant: entry {} links to the one before",
                        self.next_position
                    );
                    self.next_position += 1;
                    self.prev_chain = v.chain;
                    if wanted {
                        let h = v.header;
                        return Ok(Some(Entry { position: h.position, timestamp: h.timestamp, chain: v.chain, body }));
                    }
                }
                Step::End => {
                    self.last_end = Some((reader.path().to_path_buf(), reader.offset()));
                    self.reader = None;
                }
                Step::Damaged(d) => return Err(reader.corrupt(d)),
            }
        }
        Ok(None)
    }

    /// The reader of the current segment, opening the next one if needed.
    fn reader(&mut self) -> Result<&mut SegmentReader, LogError> {
        let reader = match self.reader.take() {
            Some(r) => r,
            None => self.open_next()?,
        };
        Ok(self.reader.insert(reader))
    }

    fn open_next(&mut self) -> Result<SegmentReader, LogError> {
        let Some(seg) = self.segments.next() else {
            let (file, offset) = self.last_end.clone().unwrap_or_default();
            let reason = format!("log ends before entry {} (expected entries up to {})", self.next_position, self.end);
            return Err(LogError::Corrupt { file, offset, reason });
        };
        if seg.first != self.next_position {
            let reason = format!("segment starts at {} but entry {} comes next", seg.first, self.next_position);
            return Err(LogError::corrupt(&seg.path, 0, reason));
        }
        SegmentReader::open(&seg.path, seg.first, Some(self.prev_chain))
    }
}

impl Iterator for EntryIter {
    type Item = Result<Entry, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.advance().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

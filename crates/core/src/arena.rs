//! An append-mostly array stored in fixed-size chunks behind `Arc`s.
//!
//! Growth never copies existing elements (no 2x memory spike when 10 million
//! transfers outgrow a `Vec`), and a snapshot is a cheap clone of the chunk
//! pointers: the snapshot writer serializes the chunks on another thread while
//! the state machine keeps going, and the first write to a chunk that a
//! snapshot still holds copies that chunk (copy-on-write).
//!
//! **Cold chunks.** A full chunk that a durable snapshot already holds on
//! disk can leave RAM (`release`): the arena keeps only its hash, and reads
//! go through a [`ChunkReader`] (the snapshot store's chunk files behind a
//! bounded block cache). Memory then follows the working set, not the
//! history. Reads return elements by value for that reason. A write to a
//! cold chunk (rare: only undo of a linked chain reaches back that far)
//! reads it back into RAM first. The arena's contents, and so every result
//! and digest, are the same whether a chunk is hot or cold.
//!
//! A chunk that cannot be read back (its file damaged or gone) is a storage
//! fault the state cannot apply around: `get` panics naming the chunk and
//! the fault, and recovery restarts from an older snapshot plus the log.

use bytemuck::Pod;
use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;

/// A chunk stored on disk: the blake3 hash of its bytes (its name in the
/// snapshot store) and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    pub hash: [u8; 32],
    pub len: u64,
}

/// Why a stored chunk could not be read (I/O error or damage, named by the
/// implementation).
pub type ChunkReadError = Box<dyn std::error::Error + Send + Sync>;

/// Reads bytes of stored chunks: the engine hands the state machine one
/// backed by the snapshot store. Implementations check what they read
/// (block checksums and addresses) and never return unchecked bytes.
pub trait ChunkReader: Send + Sync {
    /// Fills `out` with bytes `offset..offset + out.len()` of `chunk`.
    fn read(&self, chunk: &StoredChunk, offset: u64, out: &mut [u8]) -> Result<(), ChunkReadError>;
}

/// One chunk: in memory, or on disk only.
pub enum Chunk<T> {
    Hot(Arc<Vec<T>>),
    Cold(StoredChunk),
}

impl<T> Clone for Chunk<T> {
    fn clone(&self) -> Self {
        match self {
            Chunk::Hot(v) => Chunk::Hot(Arc::clone(v)),
            Chunk::Cold(s) => Chunk::Cold(*s),
        }
    }
}

/// Reads element `index` of a cold chunk; a failure is fatal (module docs).
fn read_cold<T: Pod>(reader: Option<&Arc<dyn ChunkReader>>, chunk: &StoredChunk, index: usize) -> T {
    let reader = reader.expect("invariant: an arena holds cold chunks only once it has a reader");
    let size = std::mem::size_of::<T>();
    let mut value = T::zeroed();
    let offset = (index * size) as u64;
    assert!(offset + size as u64 <= chunk.len, "invariant: element {index} lies inside its stored chunk");
    if let Err(e) = reader.read(chunk, offset, bytemuck::bytes_of_mut(&mut value)) {
        panic!("storage fault: stored chunk {} cannot be read at byte {offset}: {e}", hex(&chunk.hash));
    }
    value
}

/// Reads elements `index..index + out.len()` of a cold chunk in one read;
/// a failure is fatal (module docs).
fn read_cold_into<T: Pod>(reader: Option<&Arc<dyn ChunkReader>>, chunk: &StoredChunk, index: usize, out: &mut [T]) {
    let reader = reader.expect("invariant: an arena holds cold chunks only once it has a reader");
    let offset = (index * std::mem::size_of::<T>()) as u64;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
    assert!(offset + bytes.len() as u64 <= chunk.len, "invariant: elements read lie inside their stored chunk");
    if let Err(e) = reader.read(chunk, offset, bytes) {
        panic!("storage fault: stored chunk {} cannot be read at byte {offset}: {e}", hex(&chunk.hash));
    }
}

/// Reads a whole cold chunk back into memory; a failure is fatal.
fn load_cold<T: Pod>(reader: Option<&Arc<dyn ChunkReader>>, chunk: &StoredChunk, capacity: usize) -> Vec<T> {
    let reader = reader.expect("invariant: an arena holds cold chunks only once it has a reader");
    let size = std::mem::size_of::<T>();
    assert!(chunk.len.is_multiple_of(size as u64), "invariant: a stored chunk holds whole elements");
    let count = (chunk.len / size as u64) as usize;
    let mut items = vec![T::zeroed(); count];
    items.reserve_exact(capacity.saturating_sub(count));
    if let Err(e) = reader.read(chunk, 0, bytemuck::cast_slice_mut(&mut items)) {
        panic!("storage fault: stored chunk {} cannot be read: {e}", hex(&chunk.hash));
    }
    items
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Elements per chunk is `1 << SHIFT`.
pub struct CowArena<T: Pod, const SHIFT: u32> {
    chunks: Vec<Chunk<T>>,
    /// Per chunk: the number of views taken when it was last known to be
    /// unique. Below `views`, a view may still hold it, and only then does a
    /// write pay for the atomic uniqueness check (and maybe a copy).
    unique_since: Vec<u64>,
    views: Cell<u64>,
    len: usize,
    /// Set once chunks may go cold.
    reader: Option<Arc<dyn ChunkReader>>,
    cold: usize,
}

impl<T: Pod, const SHIFT: u32> Default for CowArena<T, SHIFT> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Pod, const SHIFT: u32> CowArena<T, SHIFT> {
    pub const CHUNK: usize = 1 << SHIFT;
    const MASK: usize = Self::CHUNK - 1;
    /// Bytes of a full chunk, the only kind that goes cold.
    pub const CHUNK_BYTES: u64 = (Self::CHUNK * std::mem::size_of::<T>()) as u64;

    pub fn new() -> Self {
        CowArena { chunks: Vec::new(), unique_since: Vec::new(), views: Cell::new(0), len: 0, reader: None, cold: 0 }
    }

    /// Rebuilds an arena from chunks as a snapshot stored them: in memory,
    /// or (with a reader) cold. Every chunk but the last must be full.
    pub fn from_stored(
        chunks: Vec<ChunkData<T>>,
        reader: Option<Arc<dyn ChunkReader>>,
    ) -> Result<Self, crate::error::DecodeError> {
        let mut arena = Self::new();
        arena.reader = reader;
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let len = chunk.len::<T>();
            if len > Self::CHUNK || (i + 1 < count && len != Self::CHUNK) || len == 0 {
                return Err(crate::error::DecodeError::ArenaChunk { index: i, len, chunk: Self::CHUNK });
            }
            match chunk {
                ChunkData::Items(items) => arena.chunks.push(Chunk::Hot(Arc::new(Self::with_full_capacity(&items)))),
                ChunkData::Stored(stored) if arena.reader.is_some() && len == Self::CHUNK => {
                    arena.chunks.push(Chunk::Cold(stored));
                    arena.cold += 1;
                }
                ChunkData::Stored(stored) => {
                    let items = load_cold::<T>(arena.reader.as_ref(), &stored, Self::CHUNK);
                    arena.chunks.push(Chunk::Hot(Arc::new(items)));
                }
            }
            arena.unique_since.push(0);
            arena.len += len;
        }
        Ok(arena)
    }

    /// Rebuilds an arena from in-memory chunks. Every chunk but the last
    /// must be full.
    pub fn from_chunks(chunks: Vec<Vec<T>>) -> Result<Self, crate::error::DecodeError> {
        Self::from_stored(chunks.into_iter().map(ChunkData::Items).collect(), None)
    }

    /// Lets full chunks go cold from now on, read through `reader`.
    pub fn set_reader(&mut self, reader: Arc<dyn ChunkReader>) {
        self.reader = Some(reader);
    }

    fn with_full_capacity(items: &[T]) -> Vec<T> {
        let mut v = Self::new_chunk();
        v.extend_from_slice(items);
        v
    }

    fn new_chunk() -> Vec<T> {
        let v = Vec::with_capacity(Self::CHUNK);
        crate::mem::advise_huge_pages(v.as_ptr() as *const u8, Self::CHUNK * std::mem::size_of::<T>());
        v
    }

    /// Bytes of element storage held in RAM (whole hot chunks), for memory
    /// gauges.
    pub fn heap_bytes(&self) -> u64 {
        ((self.chunks.len() - self.cold) * Self::CHUNK * std::mem::size_of::<T>()) as u64
    }

    /// Chunks, hot and cold.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Chunks held on disk only.
    pub fn cold_chunks(&self) -> usize {
        self.cold
    }

    /// The first position after the newest cold chunk (0 if none is
    /// cold): what a restore reads to check records, since cold chunks
    /// hold bytes a checked state wrote (and their hashes are verified).
    pub fn hot_tail_start(&self) -> usize {
        self.chunks.iter().rposition(|c| matches!(c, Chunk::Cold(_))).map_or(0, |i| (i + 1) << SHIFT)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `index`, from memory or its stored chunk.
    #[inline]
    pub fn get(&self, index: usize) -> T {
        assert!(index < self.len, "arena index {index} out of bounds (len {})", self.len);
        match &self.chunks[index >> SHIFT] {
            Chunk::Hot(items) => items[index & Self::MASK],
            Chunk::Cold(stored) => read_cold(self.reader.as_ref(), stored, index & Self::MASK),
        }
    }

    /// Copies elements `start..start + out.len()` into `out`: from memory,
    /// or with one read per cold chunk the range touches (records of
    /// variable length, such as audit records, span chunks).
    pub fn copy_range(&self, start: usize, out: &mut [T]) {
        let end = start.checked_add(out.len()).expect("invariant: a range end fits in usize");
        assert!(end <= self.len, "arena range {start}..{end} out of bounds (len {})", self.len);
        let mut done = 0;
        while done < out.len() {
            let at = start + done;
            let within = at & Self::MASK;
            let n = (Self::CHUNK - within).min(out.len() - done);
            let dst = &mut out[done..done + n];
            match &self.chunks[at >> SHIFT] {
                Chunk::Hot(items) => dst.copy_from_slice(&items[within..within + n]),
                Chunk::Cold(stored) => read_cold_into(self.reader.as_ref(), stored, within, dst),
            }
            done += n;
        }
    }

    /// Element `index` by reference, for arenas that never go cold (they
    /// have no reader): accounts, whose balances change all the time.
    #[inline]
    pub fn get_hot(&self, index: usize) -> &T {
        assert!(index < self.len, "arena index {index} out of bounds (len {})", self.len);
        match &self.chunks[index >> SHIFT] {
            Chunk::Hot(items) => &items[index & Self::MASK],
            Chunk::Cold(_) => panic!("invariant: get_hot on an arena whose chunks go cold"),
        }
    }

    /// A mutable element; copies its chunk first if a snapshot still holds
    /// it, or reads it back if it is cold.
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> &mut T {
        assert!(index < self.len, "arena index {index} out of bounds (len {})", self.len);
        let chunk = self.unshare(index >> SHIFT);
        &mut chunk[index & Self::MASK]
    }

    /// Appends an element and returns its index.
    #[inline]
    pub fn push(&mut self, value: T) -> usize {
        let index = self.len;
        if index & Self::MASK == 0 {
            self.chunks.push(Chunk::Hot(Arc::new(Self::new_chunk())));
            self.unique_since.push(self.views.get());
        }
        self.unshare(index >> SHIFT).push(value);
        self.len += 1;
        index
    }

    /// Appends every element of `items`.
    pub fn extend_from_slice(&mut self, mut items: &[T]) {
        while !items.is_empty() {
            if self.len & Self::MASK == 0 {
                self.chunks.push(Chunk::Hot(Arc::new(Self::new_chunk())));
                self.unique_since.push(self.views.get());
            }
            let room = Self::CHUNK - (self.len & Self::MASK);
            let (now, later) = items.split_at(room.min(items.len()));
            let last = self.chunks.len() - 1;
            self.unshare(last).extend_from_slice(now);
            self.len += now.len();
            items = later;
        }
    }

    /// Removes the last element (undo of a push within a batch).
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let last = self.chunks.len() - 1;
        let value = self.unshare(last).pop().expect("invariant: the last chunk holds the last element");
        self.len -= 1;
        if self.len & Self::MASK == 0 {
            self.chunks.pop();
            self.unique_since.pop();
        }
        Some(value)
    }

    #[inline]
    fn unshare(&mut self, chunk: usize) -> &mut Vec<T> {
        if let Chunk::Cold(stored) = &self.chunks[chunk] {
            let items = load_cold::<T>(self.reader.as_ref(), stored, Self::CHUNK);
            self.chunks[chunk] = Chunk::Hot(Arc::new(items));
            self.cold -= 1;
        }
        let views = self.views.get();
        let Chunk::Hot(arc) = &mut self.chunks[chunk] else { unreachable!("a cold chunk was just read back") };
        if self.unique_since[chunk] < views {
            if Arc::get_mut(arc).is_none() {
                *arc = Arc::new(Self::with_full_capacity(arc));
            }
            self.unique_since[chunk] = views;
        }
        Arc::get_mut(arc).expect("invariant: only views share chunks, and they are marked")
    }

    /// Lets chunk `index` go cold if it is full, in memory and still the
    /// very allocation `seen` (which a view held while `stored` was written
    /// from it, so the bytes are the stored ones: the arena copies a chunk
    /// a view holds before writing it). Returns whether it went cold.
    pub fn release(&mut self, index: usize, seen: &Chunk<T>, stored: StoredChunk) -> bool {
        let (Some(Chunk::Hot(now)), Chunk::Hot(seen)) = (self.chunks.get(index), seen) else { return false };
        if self.reader.is_none() || !Arc::ptr_eq(now, seen) || now.len() != Self::CHUNK {
            return false;
        }
        assert_eq!(stored.len, Self::CHUNK_BYTES, "invariant: a stored full chunk has a full chunk's bytes");
        debug_assert_eq!(
            blake3::hash(bytemuck::cast_slice(now)).as_bytes(),
            &stored.hash,
            "invariant: a chunk goes cold only with the hash of its own bytes"
        );
        self.chunks[index] = Chunk::Cold(stored);
        self.cold += 1;
        true
    }

    /// A consistent, immutable view of the current contents. O(chunks).
    pub fn view(&self) -> ArenaView<T> {
        self.views.set(self.views.get() + 1);
        ArenaView { chunks: self.chunks.clone(), len: self.len, shift: SHIFT, reader: self.reader.clone() }
    }

    /// Every element in order, by value; a cold chunk is read back whole
    /// while its elements are visited.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        iter_chunks(&self.chunks, self.reader.as_ref())
    }

    /// Elements from `start` on, in order (see `iter`).
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = T> + '_ {
        let first = (start >> SHIFT).min(self.chunks.len());
        let skip = start - (first << SHIFT).min(start);
        iter_chunks(&self.chunks[first..], self.reader.as_ref()).skip(skip)
    }
}

fn iter_chunks<'a, T: Pod>(
    chunks: &'a [Chunk<T>],
    reader: Option<&'a Arc<dyn ChunkReader>>,
) -> impl Iterator<Item = T> + 'a {
    chunks.iter().flat_map(move |c| {
        let items: Cow<'a, [T]> = match c {
            Chunk::Hot(v) => Cow::Borrowed(v.as_slice()),
            Chunk::Cold(stored) => Cow::Owned(load_cold::<T>(reader, stored, 0)),
        };
        (0..items.len()).map(move |i| items[i])
    })
}

/// A chunk as a stored snapshot hands it back: its elements, or (for a
/// store that reads lazily) where it is on disk.
pub enum ChunkData<T> {
    Items(Vec<T>),
    Stored(StoredChunk),
}

impl<T> ChunkData<T> {
    fn len<U>(&self) -> usize {
        match self {
            ChunkData::Items(items) => items.len(),
            ChunkData::Stored(s) => (s.len / std::mem::size_of::<U>().max(1) as u64) as usize,
        }
    }
}

/// A frozen copy of an arena, shared with the arena until it writes.
#[derive(Clone)]
pub struct ArenaView<T> {
    pub chunks: Vec<Chunk<T>>,
    pub len: usize,
    shift: u32,
    reader: Option<Arc<dyn ChunkReader>>,
}

impl<T: Pod> ArenaView<T> {
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        iter_chunks(&self.chunks, self.reader.as_ref())
    }

    /// Element `index`, from memory or its stored chunk.
    pub fn get(&self, index: usize) -> T {
        assert!(index < self.len, "view index {index} out of bounds (len {})", self.len);
        let mask = (1usize << self.shift) - 1;
        match &self.chunks[index >> self.shift] {
            Chunk::Hot(items) => items[index & mask],
            Chunk::Cold(stored) => read_cold(self.reader.as_ref(), stored, index & mask),
        }
    }

    /// Elements from `start` on, in order; cold chunks read back whole, one
    /// at a time.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = T> + '_ {
        let first = (start >> self.shift).min(self.chunks.len());
        let skip = start - (first << self.shift).min(start);
        iter_chunks(&self.chunks[first..], self.reader.as_ref()).skip(skip)
    }

    /// The reader cold chunks are read through (none if all are hot).
    pub fn reader(&self) -> Option<&Arc<dyn ChunkReader>> {
        self.reader.as_ref()
    }
}

/// Stored chunks in memory for unit tests of arenas that go cold: named by
/// the blake3 of their bytes as the snapshot store names them, checked on
/// every read as the store checks its blocks, and counting reads.
#[cfg(test)]
pub(crate) mod testing {
    use super::{ArenaView, ChunkReadError, ChunkReader, StoredChunk};
    use crate::state::ChunkBytes;
    use bytemuck::Pod;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    pub(crate) struct MemDisk {
        chunks: Mutex<HashMap<[u8; 32], Vec<u8>>>,
        reads: AtomicUsize,
    }

    impl ChunkReader for MemDisk {
        fn read(&self, chunk: &StoredChunk, offset: u64, out: &mut [u8]) -> Result<(), ChunkReadError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let chunks = self.chunks.lock().unwrap();
            let bytes = chunks.get(&chunk.hash).ok_or("no such chunk file")?;
            if blake3::hash(bytes).as_bytes() != &chunk.hash {
                return Err("checksum mismatch".into());
            }
            let start = usize::try_from(offset)?;
            out.copy_from_slice(bytes.get(start..start + out.len()).ok_or("read past the end")?);
            Ok(())
        }
    }

    impl MemDisk {
        /// Stores every chunk of `view`, as a snapshot write would.
        pub(crate) fn store<T: Pod + Send + Sync>(&self, view: &ArenaView<T>) -> Vec<StoredChunk> {
            self.store_chunks(&crate::state::snapshot::view_chunks(view))
        }

        /// Stores chunks of a snapshot section, named by their hashes.
        pub(crate) fn store_chunks(&self, chunks: &[Arc<dyn ChunkBytes>]) -> Vec<StoredChunk> {
            chunks
                .iter()
                .map(|c| {
                    let bytes = c.bytes().to_vec();
                    let stored = StoredChunk { hash: *blake3::hash(&bytes).as_bytes(), len: bytes.len() as u64 };
                    self.chunks.lock().unwrap().insert(stored.hash, bytes);
                    stored
                })
                .collect()
        }

        /// Reads so far.
        pub(crate) fn reads(&self) -> usize {
            self.reads.load(Ordering::Relaxed)
        }

        /// Flips one byte of the stored chunk `hash`.
        pub(crate) fn damage(&self, hash: &[u8; 32]) {
            self.chunks.lock().unwrap().get_mut(hash).expect("a stored chunk")[0] ^= 1;
        }
    }

    /// The message of a panic caught by `catch_unwind`.
    pub(crate) fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
        match panic.downcast::<String>() {
            Ok(s) => *s,
            Err(p) => p.downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_default(),
        }
    }

    pub(crate) fn hex(hash: &[u8; 32]) -> String {
        super::hex(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Small = CowArena<u64, 2>;

    #[test]
    fn push_get_pop_across_chunks() {
        let mut a = Small::new();
        for i in 0..10 {
            assert_eq!(a.push(i * 10), i as usize);
        }
        assert_eq!(a.len(), 10);
        assert_eq!(a.get(9), 90);
        *a.get_mut(5) = 55;
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 10, 20, 30, 40, 55, 60, 70, 80, 90]);
        assert_eq!(a.pop(), Some(90));
        assert_eq!(a.pop(), Some(80));
        assert_eq!(a.len(), 8);
        assert_eq!(a.view().chunks.len(), 2, "an emptied chunk is released");
        a.push(1);
        assert_eq!(a.get(8), 1);
    }

    #[test]
    fn extend_fills_chunks_like_pushes() {
        let mut a = Small::new();
        a.push(0);
        a.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        a.extend_from_slice(&[]);
        assert_eq!(a.iter().collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        assert_eq!(a.view().chunks.len(), 3);
        assert_eq!(a.get(9), 9);
    }

    #[test]
    fn views_are_not_affected_by_later_writes() {
        let mut a = Small::new();
        for i in 0..6 {
            a.push(i);
        }
        let view = a.view();
        *a.get_mut(0) = 100;
        a.push(6);
        a.pop();
        a.pop();
        assert_eq!(view.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(view.len, 6);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![100, 1, 2, 3, 4]);
        let rebuilt =
            Small::from_chunks(view.iter().collect::<Vec<_>>().chunks(4).map(|c| c.to_vec()).collect()).unwrap();
        assert_eq!(rebuilt.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
    }

    /// Stored chunks in memory, counting reads.
    #[derive(Default)]
    struct Disk {
        chunks: std::sync::Mutex<Vec<([u8; 32], Vec<u8>)>>,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl ChunkReader for Disk {
        fn read(&self, chunk: &StoredChunk, offset: u64, out: &mut [u8]) -> Result<(), ChunkReadError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let chunks = self.chunks.lock().unwrap();
            let (_, bytes) = chunks.iter().find(|(h, _)| *h == chunk.hash).ok_or("missing")?;
            out.copy_from_slice(&bytes[offset as usize..offset as usize + out.len()]);
            Ok(())
        }
    }

    impl Disk {
        /// Stores every chunk of `view`, as a snapshot would.
        fn store(&self, view: &ArenaView<u64>) -> Vec<StoredChunk> {
            let all: Vec<u64> = view.iter().collect();
            all.chunks(4)
                .map(|c| {
                    let bytes: &[u8] = bytemuck::cast_slice(c);
                    let hash = *blake3::hash(bytes).as_bytes();
                    self.chunks.lock().unwrap().push((hash, bytes.to_vec()));
                    StoredChunk { hash, len: bytes.len() as u64 }
                })
                .collect()
        }
    }

    fn cold_arena() -> (Small, Arc<Disk>, ArenaView<u64>, Vec<StoredChunk>) {
        let disk = Arc::new(Disk::default());
        let mut a = Small::new();
        a.set_reader(disk.clone());
        for i in 0..10 {
            a.push(i);
        }
        let view = a.view();
        let stored = disk.store(&view);
        (a, disk, view, stored)
    }

    #[test]
    fn stored_full_chunks_go_cold_and_read_the_same() {
        let (mut a, disk, view, stored) = cold_arena();
        let before: Vec<u64> = a.iter().collect();
        let released: Vec<bool> = (0..3).map(|i| a.release(i, &view.chunks[i], stored[i])).collect();
        assert_eq!(released, vec![true, true, false], "the short last chunk stays in memory");
        assert_eq!((a.cold_chunks(), a.heap_bytes()), (2, 4 * 8));
        assert_eq!(a.iter().collect::<Vec<_>>(), before);
        assert_eq!((a.get(0), a.get(5), a.get(9)), (0, 5, 9));
        let mut range = [0u64; 7];
        a.copy_range(2, &mut range);
        assert_eq!(range, [2, 3, 4, 5, 6, 7, 8], "a range across cold and hot chunks");
        assert!(disk.reads.load(std::sync::atomic::Ordering::Relaxed) >= 4);
        assert!(!a.release(0, &view.chunks[0], stored[0]), "already cold");
        // A write to a cold chunk reads it back first; a view taken while it
        // was cold still reads the stored bytes.
        let cold_view = a.view();
        *a.get_mut(1) = 100;
        assert_eq!((a.cold_chunks(), a.get(1), a.get(2)), (1, 100, 2));
        assert_eq!(cold_view.iter().collect::<Vec<_>>(), before);
        assert_eq!(cold_view.get(1), 1);
        // Rebuilt from stored chunks, cold where a reader is given.
        let chunks = vec![ChunkData::Stored(stored[0]), ChunkData::Stored(stored[1]), ChunkData::Items(vec![8, 9])];
        let rebuilt = Small::from_stored(chunks, Some(disk.clone())).unwrap();
        assert_eq!((rebuilt.cold_chunks(), rebuilt.iter().collect::<Vec<_>>()), (2, before));
    }

    #[test]
    fn a_chunk_written_after_the_view_does_not_go_cold() {
        let (mut a, _disk, view, stored) = cold_arena();
        *a.get_mut(0) = 7;
        assert!(!a.release(0, &view.chunks[0], stored[0]), "the view's bytes are no longer the arena's");
        assert!(a.release(1, &view.chunks[1], stored[1]));
        assert_eq!(a.get(0), 7);
        let mut plain = Small::new();
        (0..8).for_each(|i| {
            plain.push(i);
        });
        let v = plain.view();
        assert!(!plain.release(0, &v.chunks[0], stored[0]), "no reader, nothing goes cold");
    }

    #[test]
    fn a_view_iterates_from_any_position() {
        let (mut a, _disk, view, stored) = cold_arena();
        a.release(0, &view.chunks[0], stored[0]);
        for view in [view, a.view()] {
            for start in 0..=12 {
                let want: Vec<u64> = (start.min(10) as u64..10).collect();
                assert_eq!(view.iter_from(start).collect::<Vec<_>>(), want, "from {start}");
            }
        }
    }

    #[test]
    fn pops_reach_back_into_a_cold_chunk() {
        let (mut a, _disk, view, stored) = cold_arena();
        a.release(1, &view.chunks[1], stored[1]);
        assert_eq!((a.pop(), a.pop(), a.pop()), (Some(9), Some(8), Some(7)));
        assert_eq!(a.cold_chunks(), 0);
        assert_eq!(a.iter().collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "storage fault")]
    fn an_unreadable_cold_chunk_is_a_loud_storage_fault() {
        let (mut a, disk, view, stored) = cold_arena();
        a.release(0, &view.chunks[0], stored[0]);
        disk.chunks.lock().unwrap().clear();
        a.get(0);
    }

    #[test]
    fn from_chunks_rejects_short_middle_chunks() {
        assert!(Small::from_chunks(vec![vec![1, 2], vec![3]]).is_err());
        assert!(Small::from_chunks(vec![vec![1, 2, 3, 4, 5]]).is_err());
        assert!(Small::from_chunks(vec![vec![]]).is_err());
        assert!(Small::from_chunks(vec![]).unwrap().is_empty());
    }
}

//! An append-mostly array stored in fixed-size chunks behind `Arc`s.
//!
//! Growth never copies existing elements (no 2x memory spike when 10 million
//! transfers outgrow a `Vec`), and a snapshot is a cheap clone of the chunk
//! pointers: the snapshot writer serializes the chunks on another thread while
//! the state machine keeps going, and the first write to a chunk that a
//! snapshot still holds copies that chunk (copy-on-write).

use std::cell::Cell;
use std::sync::Arc;

/// Elements per chunk is `1 << SHIFT`.
pub struct CowArena<T: Copy, const SHIFT: u32> {
    chunks: Vec<Arc<Vec<T>>>,
    /// Per chunk: the number of views taken when it was last known to be
    /// unique. Below `views`, a view may still hold it, and only then does a
    /// write pay for the atomic uniqueness check (and maybe a copy).
    unique_since: Vec<u64>,
    views: Cell<u64>,
    len: usize,
}

impl<T: Copy, const SHIFT: u32> Default for CowArena<T, SHIFT> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy, const SHIFT: u32> CowArena<T, SHIFT> {
    pub const CHUNK: usize = 1 << SHIFT;
    const MASK: usize = Self::CHUNK - 1;

    pub fn new() -> Self {
        CowArena { chunks: Vec::new(), unique_since: Vec::new(), views: Cell::new(0), len: 0 }
    }

    /// Rebuilds an arena from chunks as a snapshot stored them. Every chunk but
    /// the last must be full.
    pub fn from_chunks(chunks: Vec<Vec<T>>) -> Result<Self, crate::error::DecodeError> {
        let mut len = 0;
        let count = chunks.len();
        let mut out = Vec::with_capacity(count);
        for (i, chunk) in chunks.into_iter().enumerate() {
            if chunk.len() > Self::CHUNK || (i + 1 < count && chunk.len() != Self::CHUNK) || chunk.is_empty() {
                return Err(crate::error::DecodeError::ArenaChunk { index: i, len: chunk.len(), chunk: Self::CHUNK });
            }
            len += chunk.len();
            out.push(Arc::new(Self::with_full_capacity(&chunk)));
        }
        Ok(CowArena { unique_since: vec![0; out.len()], chunks: out, views: Cell::new(0), len })
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

    /// Bytes of element storage held (whole chunks), for memory gauges.
    pub fn heap_bytes(&self) -> u64 {
        (self.chunks.len() * Self::CHUNK * std::mem::size_of::<T>()) as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, index: usize) -> &T {
        assert!(index < self.len, "arena index {index} out of bounds (len {})", self.len);
        &self.chunks[index >> SHIFT][index & Self::MASK]
    }

    /// A mutable element; copies its chunk first if a snapshot still holds it.
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
            self.chunks.push(Arc::new(Self::new_chunk()));
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
                self.chunks.push(Arc::new(Self::new_chunk()));
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
        let arc = &mut self.chunks[chunk];
        let views = self.views.get();
        if self.unique_since[chunk] < views {
            if Arc::get_mut(arc).is_none() {
                *arc = Arc::new(Self::with_full_capacity(arc));
            }
            self.unique_since[chunk] = views;
        }
        Arc::get_mut(arc).expect("invariant: only views share chunks, and they are marked")
    }

    /// A consistent, immutable view of the current contents. O(chunks).
    pub fn view(&self) -> ArenaView<T> {
        self.views.set(self.views.get() + 1);
        ArenaView { chunks: self.chunks.clone(), len: self.len }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

/// A frozen copy of an arena, shared with the arena until it writes.
#[derive(Clone)]
pub struct ArenaView<T> {
    pub chunks: Vec<Arc<Vec<T>>>,
    pub len: usize,
}

impl<T> ArenaView<T> {
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
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
        assert_eq!(*a.get(9), 90);
        *a.get_mut(5) = 55;
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![0, 10, 20, 30, 40, 55, 60, 70, 80, 90]);
        assert_eq!(a.pop(), Some(90));
        assert_eq!(a.pop(), Some(80));
        assert_eq!(a.len(), 8);
        assert_eq!(a.view().chunks.len(), 2, "an emptied chunk is released");
        a.push(1);
        assert_eq!(*a.get(8), 1);
    }

    #[test]
    fn extend_fills_chunks_like_pushes() {
        let mut a = Small::new();
        a.push(0);
        a.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        a.extend_from_slice(&[]);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        assert_eq!(a.view().chunks.len(), 3);
        assert_eq!(*a.get(9), 9);
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
        assert_eq!(view.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(view.len, 6);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![100, 1, 2, 3, 4]);
        let rebuilt = Small::from_chunks(view.chunks.iter().map(|c| c.to_vec()).collect()).unwrap();
        assert_eq!(rebuilt.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn from_chunks_rejects_short_middle_chunks() {
        assert!(Small::from_chunks(vec![vec![1, 2], vec![3]]).is_err());
        assert!(Small::from_chunks(vec![vec![1, 2, 3, 4, 5]]).is_err());
        assert!(Small::from_chunks(vec![vec![]]).is_err());
        assert!(Small::from_chunks(vec![]).unwrap().is_empty());
    }
}

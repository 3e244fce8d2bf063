//! Tables: shapes at the block boundaries, lookups and ranges against a
//! model, merges, and every kind of damage named with file and offset.

mod basics;
mod faults;
mod props;

use bursar_store::StoreError;
use bursar_store::table::{Table, TableInfo, TableWriter};
use bytemuck::Pod;
use std::path::{Path, PathBuf};

/// A cache for one opened table: each open gets its own, so a test that
/// damages a file and reopens it never reads a block cached before.
pub fn cache() -> std::sync::Arc<bursar_store::cache::BlockCache> {
    std::sync::Arc::new(bursar_store::cache::BlockCache::new(4 << 20))
}

/// The smallest cache, which keeps nothing: every read goes to disk.
pub fn no_cache() -> std::sync::Arc<bursar_store::cache::BlockCache> {
    std::sync::Arc::new(bursar_store::cache::BlockCache::new(bursar_store::limits::CACHE_BYTES_MIN))
}

/// The test's tables live in one temporary directory.
pub fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes `entries` (sorted, distinct keys) as file `file_id` at `dir/name`.
pub fn write<K: Pod + Ord, V: Pod>(
    dir: &Path,
    name: &str,
    file_id: u64,
    entries: impl IntoIterator<Item = (K, V)>,
) -> (PathBuf, TableInfo<K>) {
    let entries: Vec<_> = entries.into_iter().collect();
    let path = dir.join(name);
    let mut w = TableWriter::new(&path, file_id, entries.len() as u64).unwrap();
    for (k, v) in entries {
        w.push(k, v).unwrap();
    }
    (path.clone(), w.finish().unwrap())
}

/// Every entry of a table, in order.
pub fn all<K: Pod + Ord, V: Pod>(table: &Table<K, V>) -> Result<Vec<(K, V)>, StoreError> {
    table.range(..).collect()
}

/// The file and offset of a `Corrupt` error; panics on anything else.
pub fn corrupt_at(e: StoreError) -> (PathBuf, u64, bursar_store::Fault) {
    match e {
        StoreError::Corrupt { file, offset, fault } => (file, offset, fault),
        other => panic!("expected corruption, got {other}"),
    }
}

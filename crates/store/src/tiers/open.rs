//! Opening a tier set: the newest intact manifest whose tables are all
//! intact, falling back to older ones; then the garbage is deleted.

use super::catalog::{Body, check_name, file_id, table_number};
use super::{Counters, Live, Recovery, Tier, Tiers, Writer};
use crate::cache::BlockCache;
use crate::error::{Fault, StoreError};
use crate::limits::TIERS_MANIFESTS_KEPT_MAX;
use crate::manifest::{Checkpoint, Manifests};
use crate::table::{Lookups, Table};
use bytemuck::Pod;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

impl<K: Pod + Ord + Send + Sync, V: Pod + Send + Sync> Tiers<K, V> {
    /// Opens the set `name` in `dir` (created if missing), reading through
    /// `cache`. Uses the newest manifest that is intact and whose tables
    /// are all intact, setting aside newer ones (`recovery()` names the
    /// damage), and deletes table files no retained manifest names.
    ///
    /// Damage in everything retained, with damaged manifests set aside now
    /// or before, is an error: the set never silently starts empty.
    ///
    /// One set per directory. Sets sharing a cache must have distinct
    /// names: a table's blocks are cached under a hash of its file name.
    pub fn open(dir: &Path, name: &str, cache: Arc<BlockCache>) -> Result<Self, StoreError> {
        Self::open_for(dir, name, cache, Lookups::Points)
    }

    /// `open`, for `lookups`: a set read only by ranges keeps its tables'
    /// filters on disk (see `Lookups`).
    pub fn open_for(dir: &Path, name: &str, cache: Arc<BlockCache>, lookups: Lookups) -> Result<Self, StoreError> {
        check_name(name);
        create_dir(dir)?;
        let (mut manifests, found) = Manifests::open(dir, TIERS_MANIFESTS_KEPT_MAX)?;
        let mut recovery = Recovery { damaged: found.damaged, ..Recovery::default() };
        refuse_other_types::<K, V>(&manifests)?;
        let (tables, covered, next_number) = loop {
            let Some(newest) = manifests.retained().last().cloned() else {
                refuse_if_damaged(dir, &mut recovery)?;
                break (Vec::new(), 0, 0);
            };
            match load_tables(&manifests, &newest, (dir, name), (&cache, lookups)) {
                Ok((tables, next)) => {
                    recovery.manifest = Some(newest.sequence);
                    break (tables, newest.position, next);
                }
                Err(e) if e.is_corrupt() => {
                    recovery.damaged.push(e);
                    manifests.set_aside_newest()?;
                }
                Err(e) => return Err(e),
            }
        };
        let next_number = next_number.max(highest_table_file(dir, name)?.map_or(0, |n| n + 1));
        let writer = Writer { manifests, next_number, in_flight: BTreeSet::new() };
        let tiers = Tiers {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            cache,
            lookups,
            live: RwLock::new(Arc::new(Live { tables, covered })),
            writer: Mutex::new(writer),
            adding: Mutex::new(()),
            recovery,
            counters: Counters::default(),
            hook: RwLock::new(None),
        };
        let removed = tiers.remove_garbage(&tiers.writer())?;
        let mut tiers = tiers;
        tiers.recovery.removed = removed;
        Ok(tiers)
    }
}

/// Creates `dir` if missing (owner only), and makes its entry durable.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    crate::files::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(parent, e))
}

/// A set written with other key or value sizes is an error before any
/// fallback: the caller's types are wrong, nothing is damaged (nothing is
/// set aside).
fn refuse_other_types<K, V>(manifests: &Manifests) -> Result<(), StoreError> {
    let Some(newest) = manifests.retained().last() else { return Ok(()) };
    let path = manifests.path_of(newest.sequence);
    match Body::decode(&newest.body, &path) {
        Ok(body) if (body.key_size as usize, body.value_size as usize) != (size_of::<K>(), size_of::<V>()) => {
            let what = "tier set of other key or value sizes than the types it is opened with";
            Err(StoreError::corrupt(&path, 0, Fault::Malformed { what }))
        }
        _ => Ok(()),
    }
}

/// Opens every table `checkpoint` names, checking each against the body:
/// its name, its entry count and the key and value sizes. Returns the
/// tables (oldest first) and the body's next table number. A missing table
/// is damage (`Fault::Missing`), like a bad byte.
#[allow(clippy::type_complexity)]
fn load_tables<K: Pod + Ord, V: Pod>(
    manifests: &Manifests,
    checkpoint: &Checkpoint,
    (dir, name): (&Path, &str),
    (cache, lookups): (&Arc<BlockCache>, Lookups),
) -> Result<(Vec<Arc<Tier<K, V>>>, u64), StoreError> {
    let manifest = manifests.path_of(checkpoint.sequence);
    let bad = |what| StoreError::corrupt(&manifest, 0, Fault::Malformed { what });
    let body = Body::decode(&checkpoint.body, &manifest)?;
    if (body.key_size as usize, body.value_size as usize) != (size_of::<K>(), size_of::<V>()) {
        return Err(bad("tier set manifest body: key or value size differs from the types read"));
    }
    if body.entries.len() != checkpoint.files.len() {
        return Err(bad("tier set manifest body: table count differs from the files named"));
    }
    let mut tables = Vec::with_capacity(body.entries.len());
    for (file, &entries) in checkpoint.files.iter().zip(&body.entries) {
        let number = table_number(name, file).ok_or(bad("tier set manifest: a file not named like a table"))?;
        if number >= body.next_number || tables.iter().any(|t: &Arc<Tier<K, V>>| t.number == number) {
            return Err(bad("tier set manifest: a table number repeated or not below the next"));
        }
        let path = dir.join(file);
        let table = open_table(&path, file_id(name, number), cache, lookups)?;
        if table.len() != entries {
            return Err(StoreError::corrupt(
                &path,
                0,
                Fault::Malformed { what: "table entry count differs from the manifest's" },
            ));
        }
        tables.push(Arc::new(Tier { number, table }));
    }
    Ok((tables, body.next_number))
}

fn open_table<K: Pod + Ord, V: Pod>(
    path: &Path,
    id: u64,
    cache: &Arc<BlockCache>,
    lookups: Lookups,
) -> Result<Table<K, V>, StoreError> {
    match Table::open_for(path, id, cache, lookups) {
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Err(StoreError::corrupt(path, 0, Fault::Missing))
        }
        other => other,
    }
}

/// With no intact manifest: an error if damaged ones were set aside (now
/// or by an earlier open), since the set held something; else a new set.
fn refuse_if_damaged(dir: &Path, recovery: &mut Recovery) -> Result<(), StoreError> {
    if !recovery.damaged.is_empty() {
        return Err(recovery.damaged.remove(0));
    }
    if let Some(aside) = set_aside_manifests(dir)?.into_iter().next_back() {
        let what = "the only manifests are damaged ones set aside: refusing to start the tier set empty";
        return Err(StoreError::corrupt(&aside, 0, Fault::Malformed { what }));
    }
    Ok(())
}

fn set_aside_manifests(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out: Vec<PathBuf> = file_names(dir)?
        .into_iter()
        .filter(|n| n.starts_with("manifest-") && n.ends_with(".bsm.damaged"))
        .map(|n| dir.join(n))
        .collect();
    out.sort();
    Ok(out)
}

/// The highest number among the set's table files in `dir`, named or not.
fn highest_table_file(dir: &Path, name: &str) -> Result<Option<u64>, StoreError> {
    Ok(file_names(dir)?.iter().filter_map(|f| table_number(name, f)).max())
}

fn file_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

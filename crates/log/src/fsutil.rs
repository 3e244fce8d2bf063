//! File-system helpers whose point is durability: a new file or rename is
//! only durable once its directory is fsynced, so every helper that creates
//! names says which directory to sync, and temp files left by a crash are
//! recognizable (`.tmp`) and removed on open.

use crate::LogError;
use crate::limits::MODE_SCAN_MAX;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file Bursar creates in its data directory: the owner only.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory Bursar creates there.
pub const DIR_MODE: u32 = 0o700;

/// Options that create a file with `FILE_MODE` (the umask may only narrow it).
pub(crate) fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates one directory with `DIR_MODE`.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(DIR_MODE).create(dir)
}

/// Creates `dir` and missing parents with `DIR_MODE` (not fsynced).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Paths under `dir` (itself included, three levels deep) that group or
/// others may access. Existing files are reported, never changed: an
/// operator may have loosened them on purpose (a backup agent's group).
pub fn loose_modes(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0)];
    let mut seen = 0;
    while let Some((path, depth)) = pending.pop() {
        seen += 1;
        if seen > MODE_SCAN_MAX {
            break;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.permissions().mode() & 0o077 != 0 && !meta.file_type().is_symlink() {
            out.push(path.clone());
        }
        if meta.is_dir() && depth < 3 {
            let Ok(items) = fs::read_dir(&path) else { continue };
            pending.extend(items.flatten().map(|i| (i.path(), depth + 1)));
        }
    }
    out.sort();
    out
}

/// Suffix of files that are written and then renamed into place.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// fsyncs a directory, making the names created or removed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| LogError::io(dir, e))
}

/// Creates `dir` and any missing parents, fsyncing each parent whose listing
/// gained a new directory, so the new directories survive a crash.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), LogError> {
    let mut missing: Vec<&Path> = Vec::new();
    let mut cursor = Some(dir);
    while let Some(d) = cursor {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        cursor = d.parent();
    }
    for d in missing.iter().rev() {
        match create_private_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(LogError::io(d, e)),
        }
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Takes an advisory `flock` on `path` for as long as the returned file is
/// open: exclusive for a writer, shared for a reader. Two writers on one log
/// would interleave entries; this turns that into an error.
pub(crate) fn lock_file(path: &Path, exclusive: bool) -> Result<File, LogError> {
    let file = if exclusive {
        private_file().read(true).write(true).create(true).truncate(false).open(path)
    } else {
        File::open(path)
    }
    .map_err(|e| LogError::io(path, e))?;
    let mode = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
    // SAFETY: flock on a file descriptor we own and keep open; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        return Err(LogError::Locked { path: path.to_path_buf() });
    }
    Err(LogError::io(path, err))
}

/// Writes all of `bufs` with vectored writes, continuing after partial
/// writes and interrupts. On error some prefix may have been written.
pub(crate) fn write_all_vectored(mut out: &File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes")),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `parts` to `<dir>/<name>.tmp`, fsyncs it and renames it to
/// `<dir>/<name>`. The caller fsyncs `dir` (once for many files) to make the
/// rename durable. Returns the bytes written.
pub(crate) fn write_file_atomic(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<u64, LogError> {
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let target = dir.join(name);
    let file = create_temp(&temp)?;
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    write_all_vectored(&file, &mut slices).map_err(|e| LogError::io(&temp, e))?;
    file.sync_all().map_err(|e| LogError::io(&temp, e))?;
    drop(file);
    fs::rename(&temp, &target).map_err(|e| LogError::io(&target, e))?;
    Ok(parts.iter().map(|p| p.len() as u64).sum())
}

/// A temp file, truncated if a crash left one (with whatever mode it had:
/// it is set to `FILE_MODE` again).
fn create_temp(temp: &Path) -> Result<File, LogError> {
    let file = private_file().write(true).create(true).truncate(true).open(temp).map_err(|e| LogError::io(temp, e))?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE)).map_err(|e| LogError::io(temp, e))?;
    Ok(file)
}

/// Like [`write_file_atomic`], but `fill` writes the content, so it can be
/// streamed, and may refuse it: on an error the temp file is removed and
/// nothing is renamed into place. The caller fsyncs `dir`.
pub(crate) fn write_file_atomic_with<T>(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut File) -> Result<T, LogError>,
) -> Result<T, LogError> {
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let target = dir.join(name);
    let mut file = create_temp(&temp)?;
    let filled = fill(&mut file).and_then(|out| file.sync_all().map(|()| out).map_err(|e| LogError::io(&temp, e)));
    drop(file);
    match filled {
        Ok(out) => fs::rename(&temp, &target).map(|()| out).map_err(|e| LogError::io(&target, e)),
        Err(e) => {
            // Best effort: a temp file left behind is removed by the next open.
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Regular files in `dir` with their names, as (name, path). Names that are
/// not UTF-8 are returned lossily converted (they match no pattern of ours).
pub(crate) fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, LogError> {
    let mut out = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let item = item.map_err(|e| LogError::io(dir, e))?;
        let kind = item.file_type().map_err(|e| LogError::io(&item.path(), e))?;
        if kind.is_file() {
            out.push((item.file_name().to_string_lossy().into_owned(), item.path()));
        }
    }
    Ok(out)
}

/// Removes temp files a crash left in `dir`, then fsyncs `dir` if any went.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<(), LogError> {
    let mut removed = false;
    for (name, path) in list_files(dir)? {
        if name.ends_with(TEMP_SUFFIX) {
            tracing::warn!(file = %path.display(), "removing a temp file left by an interrupted write");
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Parses `<prefix><20 digits><suffix>` into the number; `None` if `name`
/// has a different shape.
pub(crate) fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

//! Files and directories this crate creates are the owner's only (0600 and
//! 0700, whatever the umask): they hold a ledger's history, and the server
//! warns at start about data directory entries group or others can read.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every file created here.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory created here.
pub const DIR_MODE: u32 = 0o700;

/// Creates `path`, which must not exist, for reading and writing.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(FILE_MODE).open(path)
}

/// Creates or truncates `path` for writing (temporary files renamed into
/// place).
pub fn create_truncated(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)
}

/// Creates `dir` and its missing parents.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_files_and_dirs_are_the_owners_only_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).unwrap();
        create_new(&dir.join("f")).unwrap();
        create_truncated(&dir.join("g")).unwrap();
        for (path, mode) in [(dir.clone(), DIR_MODE), (dir.join("f"), FILE_MODE), (dir.join("g"), FILE_MODE)] {
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, mode, "{}", path.display());
        }
        assert!(create_new(&dir.join("f")).is_err(), "create_new never reuses a file");
    }
}

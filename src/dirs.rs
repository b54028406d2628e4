//! `create_dir_all`: `mkdir -p` that makes each new entry durable.
//!
//! A file replaced durably inside a directory created a moment ago is only
//! as durable as the directory's own entry in its parent. ext4, XFS and
//! btrfs make that entry durable with the file's directory fsync in
//! practice, but POSIX does not promise it, so each parent that gained an
//! entry here is fsynced once.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Step};
use crate::sys::Sys;

/// Creates `path` and its missing parents (mode `0o777` under the umask),
/// fsyncing each parent right after an entry was created in it, and the
/// deepest new directory itself (its own inode).
pub(crate) fn create_dir_all<S: Sys>(sys: &S, path: &Path) -> Result<(), Error> {
    if path.as_os_str().is_empty() {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "the path is empty");
        return Err(Error::io(Step::OpenDir, path, e));
    }
    // Walk up to the deepest directory that exists.
    let mut missing: Vec<OsString> = Vec::new();
    let mut here: PathBuf = path.to_path_buf();
    let mut dir = loop {
        match sys.open_dir(&here) {
            Ok(dir) => break dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (here.parent(), here.file_name()) else {
                    return Err(Error::io(Step::OpenDir, path, e));
                };
                missing.push(name.to_os_string());
                here = match parent.as_os_str().is_empty() {
                    true => PathBuf::from("."),
                    false => parent.to_path_buf(),
                };
            }
            Err(e) => return Err(Error::io(Step::OpenDir, path, e).with_dir(&here)),
        }
    };
    let created = !missing.is_empty();
    for name in missing.into_iter().rev() {
        match sys.mkdir_at(&dir, &name, 0o777) {
            // The new entry lives in `dir`: durable once `dir` is synced.
            Ok(()) => sys
                .sync_dir(&dir)
                .map_err(|e| Error::io(Step::SyncParent, path, e).with_dir(&here))?,
            // A racing creator made it: its entry is theirs to sync.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(Step::CreateDir, path, e).with_dir(&here)),
        }
        here.push(&name);
        dir = sys
            .open_dir(&here)
            .map_err(|e| Error::io(Step::OpenDir, path, e).with_dir(&here))?;
    }
    if created {
        // The deepest new directory's own inode: every other new one was
        // synced as the parent of the next.
        sys.sync_dir(&dir)
            .map_err(|e| Error::io(Step::SyncParent, path, e).with_dir(&here))?;
    }
    Ok(())
}

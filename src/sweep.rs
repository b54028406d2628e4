//! `sweep`: removing temp files left behind by writers that died.
//!
//! A live writer holds an exclusive `flock` on its temp from just after it
//! creates it until after the rename, and the kernel drops that lock when the
//! process dies. So a temp that can be locked belongs to nobody, and is
//! removed at once, whatever its age.
//!
//! The instant between a writer's `openat` and its `flock` is closed on the
//! writer's side (see `Replace::create`): after locking, the writer checks
//! with `fstat` that its temp still has a name (`st_nlink > 0`). `sweep`
//! removes a temp only while holding its lock, so either the writer's lock
//! comes first (and `sweep` keeps the temp), or `sweep`'s unlink does (and
//! the writer, finding its lock refused or its file nameless, starts again
//! with a new name).
//!
//! A [`Batch`](crate::Batch) of many files closes the temps past its first
//! few to bound its open files; while it lives it holds the lock of an
//! anchor (`.crashsafe-batch.…tmp`) in that directory, and `sweep` removes
//! no unlocked temp from a directory with a locked anchor (`batch_alive`).
//!
//! Only names with this library's temp mark (see `temp_name`) that are
//! regular files are ever candidates; symlinks are never followed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Step};
use crate::sys::{Kind, Stat, Sys};
use crate::temp_name::is_temp_name;

/// What [`sweep_report`](crate::sweep_report) did in one directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// The temps removed: their writers were dead.
    pub removed: Vec<PathBuf>,
    /// Names with the temp mark that were left alone, and why.
    pub kept: Vec<(PathBuf, Kept)>,
}

/// Why [`sweep_report`](crate::sweep_report) left a temp-named entry alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kept {
    /// A live writer holds its lock.
    InUse,
    /// It is a symlink, directory or special file, not a temp of ours.
    NotRegularFile,
    /// It could not be opened (for example `EACCES`).
    CannotOpen,
    /// The filesystem refused the lock for another reason than a holder
    /// (no `flock` support): whether its writer lives cannot be told.
    CannotLock,
    /// The name was removed or replaced while `sweep` looked at it.
    Changed,
    /// Unlocked, but a live [`Batch`](crate::Batch) in the directory (its
    /// anchor is locked) may have closed it early to bound its open files.
    LiveBatch,
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kept::InUse => "a live writer holds it",
            Kept::NotRegularFile => "not a regular file",
            Kept::CannotOpen => "cannot be opened",
            Kept::CannotLock => "the filesystem refused the lock, so its writer may be alive",
            Kept::Changed => "it changed while being looked at",
            Kept::LiveBatch => "a live batch in this directory may still own it",
        })
    }
}

/// Removes stale temps in `dir`; returns what it removed and what it kept.
pub(crate) fn sweep<S: Sys>(sys: &S, dir_path: &Path) -> Result<SweepReport, Error> {
    let dir = sys
        .open_dir(dir_path)
        .map_err(|e| Error::io(Step::OpenDir, dir_path, e))?;
    let names = sys
        .read_dir(&dir)
        .map_err(|e| Error::io(Step::ReadDir, dir_path, e))?;
    let mut report = SweepReport::default();
    for name in names.iter().filter(|n| is_temp_name(n)) {
        let path = dir_path.join(name);
        // O_NOFOLLOW: a symlink with a temp-shaped name fails here (ELOOP)
        // and is left alone.
        let file = match sys.open_read_at(&dir, name) {
            Ok(file) => file,
            // Gone meanwhile: its writer renamed or removed it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                let reason = match sys.stat_at(&dir, name) {
                    Ok(st) if st.kind != Kind::File => Kept::NotRegularFile,
                    _ => Kept::CannotOpen,
                };
                report.kept.push((path, reason));
                continue;
            }
        };
        let verdict = match sys.stat_file(&file) {
            Ok(st) => writer_is_dead(sys, &dir, name, &file, &st),
            Err(_) => Err(Kept::CannotOpen),
        };
        if let Err(reason) = verdict {
            sys.close(file);
            report.kept.push((path, reason));
            continue;
        }
        // Still holding the lock: a writer between its create and its lock
        // either fails to lock, or locks after this unlink and sees no name.
        let result = sys.unlink_at(&dir, name);
        sys.close(file);
        match result {
            Ok(()) => report.removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(Step::RemoveTemp, dir_path, e).with_temp_left(path)),
        }
    }
    Ok(report)
}

/// The one liveness decision: `Ok` when the temp open as `file` (with stat
/// `st`) under `name` belongs to no live writer, and then this call holds its
/// lock, so no writer can take it before the unlink.
fn writer_is_dead<S: Sys>(
    sys: &S,
    dir: &S::Dir,
    name: &std::ffi::OsStr,
    file: &S::File,
    st: &Stat,
) -> Result<(), Kept> {
    if st.kind != Kind::File {
        return Err(Kept::NotRegularFile);
    }
    match sys.lock(file, false) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Kept::InUse),
        Err(_) => return Err(Kept::CannotLock),
    }
    // Unlocked, but perhaps closed early by a live batch.
    if batch_alive(sys, dir, name) {
        return Err(Kept::LiveBatch);
    }
    // Still the same file under that name: not renamed away and replaced by
    // something else since it was opened.
    match sys.stat_at(dir, name) {
        Ok(now) if now.ino == st.ino && now.kind == Kind::File => Ok(()),
        _ => Err(Kept::Changed),
    }
}

// issue 10: the one rule about batches; the rest of sweep is not touched.

/// Whether a live [`Batch`](crate::Batch) holds an anchor in `dir`. A batch
/// closes temps early (to bound its fds), and a closed temp loses its
/// `flock`; before closing one, the batch creates and locks an anchor in
/// its directory and keeps it locked until every temp is renamed or
/// removed. So an unlocked temp in a directory with a locked anchor may
/// belong to a live batch and is left alone. Called after the temp's lock
/// was taken: the temp was closed before, so its anchor already exists. An
/// anchor we can lock belongs to a dead batch (the main loop removes it).
/// `this` (the name being examined, which we hold locked) is skipped.
fn batch_alive<S: Sys>(sys: &S, dir: &S::Dir, this: &std::ffi::OsStr) -> bool {
    let Ok(names) = sys.read_dir(dir) else {
        return true; // cannot tell: keep the temp
    };
    names
        .iter()
        .filter(|n| n.as_os_str() != this && crate::batch::is_anchor_name(n))
        .any(|name| {
            let Ok(anchor) = sys.open_read_at(dir, name) else {
                return false; // gone: that batch finished
            };
            let locked = sys.lock(&anchor, false).is_err();
            sys.close(anchor);
            locked
        })
}

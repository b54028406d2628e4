//! `sweep`: removing temp files left behind by writers that died.
//!
//! A live writer holds an exclusive `flock` on its temp from the moment it
//! creates it until after the rename, and the kernel drops that lock when the
//! process dies. So a temp that can be locked belongs to nobody. Two more
//! checks close the remaining gaps: the name must have this library's temp
//! shape and be a regular file (never a symlink, never followed), and it must
//! not have been modified for [`GRACE_SECS`], which covers the instant
//! between a writer's `openat` and its `flock`.

use std::io;
use std::path::Path;

use crate::error::{Error, Step};
use crate::sys::{Kind, Sys};
use crate::temp_name::is_temp_name;

/// A temp modified less than this many seconds ago is never removed.
pub(crate) const GRACE_SECS: i64 = 10;

/// Removes stale temps in `dir`; returns how many were removed.
pub(crate) fn sweep<S: Sys>(sys: &S, dir_path: &Path, now: i64) -> Result<usize, Error> {
    let dir = sys
        .open_dir(dir_path)
        .map_err(|e| Error::io(Step::OpenParent, dir_path, e))?;
    let names = sys
        .read_dir(&dir)
        .map_err(|e| Error::io(Step::ReadDir, dir_path, e))?;
    let mut removed = 0;
    for name in names.iter().filter(|n| is_temp_name(n)) {
        // O_NOFOLLOW: a symlink with a temp-shaped name fails here (ELOOP)
        // and is left alone; so is anything that vanished meanwhile.
        let Ok(file) = sys.open_read_at(&dir, name) else {
            continue;
        };
        let stale = sys.stat_file(&file).is_ok_and(|st| {
            st.kind == Kind::File
                && now - st.mtime >= GRACE_SECS
                && sys.lock(&file, false).is_ok()
                // Unlocked, but perhaps closed early by a live batch.
                && !batch_alive(sys, &dir, name)
                // Still the same file under that name: not renamed away and
                // replaced by something else since we opened it.
                && sys
                    .stat_at(&dir, name)
                    .is_ok_and(|now_st| now_st.ino == st.ino && now_st.kind == Kind::File)
        });
        if stale {
            match sys.unlink_at(&dir, name) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    sys.close(file);
                    let path = dir_path.join(name);
                    return Err(Error::io(Step::RemoveTemp, dir_path, e).with_temp_left(path));
                }
            }
        }
        sys.close(file);
    }
    Ok(removed)
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

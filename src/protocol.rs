//! The replace protocol: the one place that orders system calls.
//!
//! ```text
//! open(parent, O_DIRECTORY)                      once; every later call is *at this fd
//! fstatat(parent, name, AT_SYMLINK_NOFOLLOW)     type check; mode and owner to keep
//!   (readlinkat + open the link's parent again, while following a symlink)
//! openat(parent, ".name.RANDOM.tmp", O_CREAT|O_EXCL|O_NOFOLLOW)
//! pwrite ...                                     the caller's bytes
//! fchown, fchmod                                 before the fsync, chown first
//! fsync(temp)                                    the data and mode are durable
//! renameat(parent, temp, parent, name)           atomic switch (create_new: RENAME_NOREPLACE)
//! fsync(parent)                                  the switch is durable (Durability::Durable)
//! ```
//!
//! Everything here is generic over [`Sys`], so the crash simulator runs this
//! exact code. Cleanup after a failure is part of the protocol and lives here
//! too: before the rename a failure removes the temp and leaves the target
//! alone; after the rename nothing is undone.

#[cfg(any(test, feature = "sim"))]
use std::ffi::OsStr;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, InvalidReason, Step};
use crate::options::{Durability, Options};
use crate::sys::{Kind, Stat, Sys};
use crate::target::split;
use crate::temp_name::{RETRIES_MAX, temp_name};

/// How many symlinks are followed at the target before giving up (`ELOOP`),
/// as the kernel's own limit for path resolution.
const SYMLINK_HOPS_MAX: usize = 40;

/// Deliberately broken protocol variants, used only by tests to prove that
/// the crash and fault tests catch each mistake.
#[cfg(any(test, feature = "sim"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Broken {
    /// Skip the temp file's fsync.
    NoFileSync,
    /// Skip the directory fsync even when `Durable`.
    NoDirSync,
    /// Set owner and mode after the temp's fsync instead of before.
    ModeAfterSync,
    /// Rename first, fsync the temp afterwards.
    RenameBeforeSync,
    /// Retry a failed temp fsync and carry on when the retry succeeds.
    RetrySync,
    /// Unlink the target, then rename the temp into the free name.
    UnlinkThenRename,
}

/// A replace in progress: the temp exists and the target is untouched.
pub(crate) struct Replace<S: Sys> {
    sys: S,
    /// The caller's path, named in every error.
    target: PathBuf,
    /// The directory the protocol works in (the resolved parent).
    parent: PathBuf,
    dir: S::Dir,
    /// The target's file name in `dir` (after following symlinks).
    name: OsString,
    temp: OsString,
    /// `None` once the temp is closed (after commit, discard or cleanup).
    file: Option<S::File>,
    /// The existing regular file whose mode and owner are kept.
    old: Option<Stat>,
    opts: Options,
    /// Write position and current length of the temp (it starts empty).
    pos: u64,
    len: u64,
}

impl<S: Sys> std::fmt::Debug for Replace<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replace")
            .field("target", &self.target)
            .field("temp", &self.parent.join(&self.temp))
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Follows symlinks at `target` (when asked) and opens the directory that
/// holds the file to replace. Returns that directory's path and fd, the file
/// name in it, and what is there now.
#[allow(clippy::type_complexity)]
fn resolve<S: Sys>(
    sys: &S,
    target: &Path,
    follow: bool,
) -> Result<(PathBuf, S::Dir, OsString, Option<Stat>), Error> {
    let mut path = target.to_path_buf();
    for _ in 0..=SYMLINK_HOPS_MAX {
        let (parent, name) = split(&path).map_err(|r| Error::invalid(target, r))?;
        let dir = sys
            .open_dir(&parent)
            .map_err(|e| Error::io(Step::OpenParent, target, e))?;
        let stat = match sys.stat_at(&dir, name) {
            Ok(st) => Some(st),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(Step::InspectTarget, target, e)),
        };
        if follow && stat.is_some_and(|st| st.kind == Kind::Symlink) {
            let link = sys
                .read_link_at(&dir, name)
                .map_err(|e| Error::io(Step::ResolveSymlink, target, e))?;
            // A relative link resolves against the link's own directory;
            // `join` keeps an absolute one as it is.
            path = parent.join(link);
            continue;
        }
        let name = name.to_os_string();
        return Ok((parent, dir, name, stat));
    }
    Err(Error::io(
        Step::ResolveSymlink,
        target,
        crate::sys::symlink_loop(),
    ))
}

impl<S: Sys> Replace<S> {
    /// Steps 1-3: resolve, inspect, create the temp.
    pub(crate) fn open(sys: S, target: &Path, opts: &Options) -> Result<Replace<S>, Error> {
        let (parent, dir, name, existing) = resolve(&sys, target, opts.follow_symlinks)?;
        let old = match existing {
            None => None,
            Some(st) if st.kind == Kind::Dir => {
                return Err(Error::invalid(target, InvalidReason::IsDirectory));
            }
            Some(st) if st.kind == Kind::Other => {
                return Err(Error::invalid(target, InvalidReason::NotRegularFile));
            }
            // Refused early so no bytes are written in vain; the rename
            // below still decides atomically (RENAME_NOREPLACE).
            Some(_) if opts.create_new => {
                return Err(Error::AlreadyExists {
                    target: target.to_path_buf(),
                });
            }
            // A symlink that is replaced, not followed: its mode (0777) and
            // owner mean nothing for a regular file, so it counts as new.
            Some(st) if st.kind == Kind::Symlink => None,
            Some(st) => Some(st),
        };
        // A file that takes an existing file's mode starts private (0600)
        // and gets its mode at commit; a new file is created with its final
        // mode and the kernel applies the umask, as `File::create` does.
        let create_mode = match (opts.mode, old) {
            (Some(mode), _) => mode,
            (None, Some(_)) => 0o600,
            (None, None) => 0o666,
        };
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..RETRIES_MAX {
            let temp = temp_name(&name, sys.random());
            match sys.create_at(&dir, &temp, create_mode) {
                Ok(file) => {
                    return Ok(Replace {
                        sys,
                        target: target.to_path_buf(),
                        parent,
                        dir,
                        name,
                        temp,
                        file: Some(file),
                        old,
                        opts: opts.clone(),
                        pos: 0,
                        len: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(Error::io(Step::CreateTemp, target, e)),
            }
        }
        Err(Error::io(Step::CreateTemp, target, last))
    }

    /// The caller's path.
    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    /// Step 4: one `pwrite` at the current position, retried on `EINTR`.
    pub(crate) fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let Some(file) = &self.file else {
            return Err(self.closed(Step::Write));
        };
        loop {
            match self.sys.write_at(file, buf, self.pos) {
                Ok(n) => {
                    self.pos += n as u64;
                    self.len = self.len.max(self.pos);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(Step::Write, &self.target, e)),
            }
        }
    }

    /// Writes all of `buf`, looping over short writes.
    pub(crate) fn write_all(&mut self, mut buf: &[u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            match self.write(buf)? {
                0 => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return Err(Error::io(Step::Write, &self.target, e));
                }
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    /// Moves the write position; the length is known without a syscall
    /// because the temp started empty and only this writer writes to it.
    pub(crate) fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let base = match to {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let pos = base.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        self.pos = pos;
        Ok(pos)
    }

    /// One-shot replace: write everything, commit, and on a write error
    /// remove the temp before returning.
    pub(crate) fn write_all_and_commit(mut self, contents: &[u8]) -> Result<(), Error> {
        match self.write_all(contents) {
            Ok(()) => self.commit(),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Gives up after `err` (a failed write): closes and removes the temp,
    /// and says so in the error if the temp could not be removed.
    pub(crate) fn fail(mut self, err: Error) -> Error {
        if let Some(file) = self.file.take() {
            self.sys.close(file);
        }
        self.abort(err)
    }

    /// Steps 5-8: metadata, fsync, rename, directory fsync.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        let Some(file) = self.file.take() else {
            return Err(self.closed(Step::SyncTemp));
        };
        // Owner and mode go on the temp *before* its fsync so they become
        // durable together with the data: a crash after the rename never
        // shows new data with the temp's 0600.
        if !self.broken(Broken::ModeAfterSync) {
            if let Err(e) = self.set_metadata(&file) {
                self.sys.close(file);
                return Err(self.abort(e));
            }
        }
        if self.broken(Broken::RenameBeforeSync) {
            if let Err(e) = self.publish() {
                self.sys.close(file);
                return Err(e);
            }
        }
        // fsync the temp through the fd that wrote it: without it, a crash
        // after the rename may leave the target empty or zero-filled (the
        // rename can reach the disk before the data). Never retried: after a
        // failure Linux marks the pages clean and a second fsync may succeed
        // with the data lost.
        if !self.broken(Broken::NoFileSync) {
            if let Err(e) = self.sys.sync_file(&file) {
                let retried = self.broken(Broken::RetrySync) && self.sys.sync_file(&file).is_ok();
                if !retried {
                    self.sys.close(file);
                    return Err(self.abort(Error::io(Step::SyncTemp, &self.target, e)));
                }
            }
        }
        if self.broken(Broken::ModeAfterSync) {
            if let Err(e) = self.set_metadata(&file) {
                self.sys.close(file);
                return Err(self.abort(e));
            }
        }
        self.sys.close(file);
        if !self.broken(Broken::RenameBeforeSync) {
            self.publish()?;
        }
        // fsync the directory: the rename lives in the directory, and until
        // the directory is on disk a power cut can undo it (old content back,
        // or no file at all for a new one).
        if self.opts.durability == Durability::Durable && !self.broken(Broken::NoDirSync) {
            self.sys
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(Step::SyncParent, &self.target, e))?;
        }
        Ok(())
    }

    /// Removes the temp without touching the target.
    pub(crate) fn discard(mut self) -> Result<(), Error> {
        if let Some(file) = self.file.take() {
            self.sys.close(file);
        }
        self.sys.unlink_at(&self.dir, &self.temp).map_err(|e| {
            Error::io(Step::RemoveTemp, &self.target, e).with_temp_left(self.temp_path())
        })
    }

    /// Step 5: owner first (the kernel clears setuid/setgid on chown), mode last.
    fn set_metadata(&self, file: &S::File) -> Result<(), Error> {
        let mut chowned = false;
        if let (Some(old), true) = (self.old, self.opts.preserve_owner) {
            match self.sys.set_owner(file, old.uid, old.gid) {
                Ok(()) => chowned = true,
                // Not root: we may not give the file away. Best effort, as documented.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
                    ) && !self.sys.is_root() => {}
                Err(e) => return Err(Error::io(Step::SetOwner, &self.target, e)),
            }
        }
        let mode = match (self.opts.mode, self.old) {
            // Created with this mode already; only a chown that cleared
            // setuid/setgid needs them put back (the umask never masks them).
            (Some(mode), _) if chowned && mode & 0o7000 != 0 => {
                let st = self
                    .sys
                    .stat_file(file)
                    .map_err(|e| Error::io(Step::SetMode, &self.target, e))?;
                Some(st.mode & 0o777 | mode & 0o7000)
            }
            (Some(_), _) => None,
            (None, Some(old)) => Some(old.mode),
            (None, None) => None,
        };
        if let Some(mode) = mode {
            self.sys
                .set_mode(file, mode)
                .map_err(|e| Error::io(Step::SetMode, &self.target, e))?;
        }
        Ok(())
    }

    /// Step 7: the atomic switch. On failure the temp is removed and the
    /// target is as it was.
    fn publish(&self) -> Result<(), Error> {
        let (sys, dir) = (&self.sys, &self.dir);
        if !self.opts.create_new {
            if self.broken(Broken::UnlinkThenRename) {
                let _ = sys.unlink_at(dir, &self.name);
            }
            return sys
                .rename_at(dir, &self.temp, &self.name)
                .map_err(|e| self.abort(Error::io(Step::Rename, &self.target, e)));
        }
        let e = match sys.rename_noreplace_at(dir, &self.temp, &self.name) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match e.kind() {
            io::ErrorKind::AlreadyExists => return Err(self.abort(self.already_exists())),
            // The filesystem has no RENAME_NOREPLACE (ZFS, some FUSE): a hard
            // link also fails atomically with EEXIST; then drop the temp name.
            io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported => {}
            _ => return Err(self.abort(Error::io(Step::Rename, &self.target, e))),
        }
        match sys.link_at(dir, &self.temp, &self.name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(self.abort(self.already_exists()));
            }
            Err(e) => return Err(self.abort(Error::io(Step::Rename, &self.target, e))),
        }
        // The target already holds the new content; a failure here only
        // leaves a second name behind.
        sys.unlink_at(dir, &self.temp).map_err(|e| {
            Error::io(Step::RemoveTempLink, &self.target, e).with_temp_left(self.temp_path())
        })
    }

    /// Cleanup after a failure before the rename: removes the temp and
    /// returns `err`, noting the temp if it could not be removed.
    fn abort(&self, err: Error) -> Error {
        match self.sys.unlink_at(&self.dir, &self.temp) {
            Ok(()) => err,
            Err(_) => err.with_temp_left(self.temp_path()),
        }
    }

    fn already_exists(&self) -> Error {
        Error::AlreadyExists {
            target: self.target.clone(),
        }
    }

    fn closed(&self, step: Step) -> Error {
        let e = io::Error::other("the temporary file is already closed");
        Error::io(step, &self.target, e)
    }

    fn temp_path(&self) -> PathBuf {
        self.parent.join(&self.temp)
    }

    /// The temp's name in its directory (for tests).
    #[cfg(any(test, feature = "sim"))]
    #[allow(dead_code)]
    pub(crate) fn temp_name(&self) -> &OsStr {
        &self.temp
    }

    #[cfg(any(test, feature = "sim"))]
    fn broken(&self, variant: Broken) -> bool {
        self.opts.broken == Some(variant)
    }

    #[cfg(not(any(test, feature = "sim")))]
    #[inline(always)]
    fn broken(&self, _: Broken) -> bool {
        false
    }
}

/// Production builds have no broken variants; this keeps `broken()` calls
/// type-checked while compiling to nothing.
#[cfg(not(any(test, feature = "sim")))]
#[derive(Clone, Copy)]
enum Broken {
    NoFileSync,
    NoDirSync,
    ModeAfterSync,
    RenameBeforeSync,
    RetrySync,
    UnlinkThenRename,
}

impl<S: Sys> Drop for Replace<S> {
    /// An uncommitted replace removes its temp and never touches the target.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            self.sys.close(file);
            let _ = self.sys.unlink_at(&self.dir, &self.temp);
        }
    }
}

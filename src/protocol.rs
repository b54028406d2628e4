//! The replace protocol: the one place that orders system calls.
//!
//! ```text
//! open(parent, O_DIRECTORY)                      once; every later call is *at this fd
//!                                                (O_PATH for a write+search-only dir)
//! statx(parent, name, AT_SYMLINK_NOFOLLOW)       type check; refuse a mount point
//!   (fstatfs, fstat(dir), readlinkat, openat(dir, link's dir) per symlink followed:
//!    protected_symlinks, no /proc magic links)
//! fstat(parent)                                  file not ours: protected_regular
//! openat(parent, name, O_RDONLY|O_NOFOLLOW), fstat, flistxattr, close
//!                                                mode, owner, ACL, xattrs of that inode
//! openat(parent, ".name.crashsafe-RANDOM.tmp", O_CREAT|O_EXCL|O_NOFOLLOW)
//! flock(temp, LOCK_EX|LOCK_NB); fstat(temp)      `sweep` keeps away; no links: a
//!                                                sweep took it first, start again
//! pwrite ...                                     the caller's bytes
//! fstat; fchown, ACL, fchmod, xattrs            before the fsync, chown first; never wider
//!   (no old ACL: the mode as a minimal ACL, dropping one a default ACL gave)
//! fsync(temp)                                    the data and mode are durable
//!   (backup: linkat(name, temp2), renameat(temp2, name~), fsync(parent))
//! renameat(parent, temp, parent, name)           atomic switch (create_new: RENAME_NOREPLACE)
//! fsync(parent)                                  the switch is durable (Durability::Durable)
//! ```
//!
//! Everything here is generic over [`Sys`], so the crash simulator runs this
//! exact code. Cleanup after a failure is part of the protocol and lives here
//! too: before the rename a failure removes the temp and leaves the target
//! alone; after the rename nothing is undone.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, InvalidReason, Step};
use crate::options::{Durability, HardLinks, Options};
use crate::sys::{Kind, Stat, Sys};
use crate::target::split;
use crate::temp_name::{NAME_MAX, RETRIES_MAX, temp_name};

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
    /// Report a failed directory fsync as a failed rename, so the error
    /// says the target was not replaced although it was.
    DirSyncErrorLooksEarly,
    /// `create_new` by looking first: `fstatat` the target, then a plain
    /// rename if it was absent (a racing creator is clobbered).
    CheckThenRename,
    /// A batch groups directories by their path string, not by identity.
    GroupByPath,
    // issue 12: backup durability
    /// Skip the directory fsync between the backup's rename and the main
    /// rename.
    NoBackupSync,
}

/// A replace in progress: the temp exists and the target is untouched.
pub(crate) struct Replace<S: Sys> {
    sys: S,
    /// The caller's path, named in every error.
    target: PathBuf,
    /// The directory the protocol works in (the resolved parent).
    parent: PathBuf,
    /// Shared by the entries of a batch in one directory (issue 10).
    dir: Arc<S::Dir>,
    /// The target's file name in `dir` (after following symlinks).
    name: OsString,
    temp: OsString,
    /// Whether `temp` exists in `dir` as our file's name (false for an
    /// unnamed O_TMPFILE temp before commit, and after rename or cleanup).
    named: bool,
    /// `None` once the temp is closed (after commit, discard or cleanup).
    file: Option<S::File>,
    /// The existing regular file whose mode and owner are kept.
    old: Option<Stat>,
    /// That file's ACL and extended attributes, read through its descriptor.
    old_attrs: OldAttrs,
    opts: Options,
    /// Whether `dir` was opened for reading rather than `O_PATH` (a
    /// directory we may search and write but not read): only then can it
    /// be fsynced or `syncfs`ed.
    dir_readable: bool,
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
///
/// Every hop is taken relative to the directory fd the link was found in,
/// so a long chain of relative links never grows a path the kernel has to
/// walk. Each link must pass the kernel's `protected_symlinks` rule and may
/// not be a `/proc` magic link (see [`may_follow`]).
#[allow(clippy::type_complexity)]
fn resolve<S: Sys>(
    sys: &S,
    target: &Path,
    opts: &Options,
) -> Result<(PathBuf, S::Dir, OsString, Option<Stat>, bool), Error> {
    let (mut parent, name) = split(target).map_err(|r| Error::invalid(target, r))?;
    let mut name = name.to_os_string();
    // Whether `dir` was opened for reading (not `O_PATH`), so it can be
    // fsynced and `syncfs`ed.
    let mut readable = true;
    let mut dir = match sys.open_dir(&parent) {
        Ok(dir) => dir,
        Err(e) => {
            readable = false;
            open_unreadable_dir(sys, None, &parent, e, target, opts)
                .map_err(|e| e.with_dir(&parent))?
        }
    };
    for _ in 0..=SYMLINK_HOPS_MAX {
        let stat = match sys.stat_at(&dir, &name) {
            Ok(st) => Some(st),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(Step::InspectTarget, target, e)),
        };
        let link = match stat {
            Some(st) if opts.follow_symlinks && st.kind == Kind::Symlink => st,
            _ => return Ok((parent, dir, name, stat, readable)),
        };
        let at = parent.join(&name);
        may_follow(sys, &dir, &link, target, &at)?;
        let to = sys
            .read_link_at(&dir, &name)
            .map_err(|e| Error::io(Step::ResolveSymlink, target, e))?;
        let to = PathBuf::from(to);
        let (to_parent, to_name) = split(&to).map_err(|r| Error::invalid(target, r))?;
        // A bare name stays in this directory (no syscall); anything else
        // is opened relative to it, as the kernel resolves a relative link
        // against the link's own directory (an absolute one ignores `dir`).
        if to_parent != Path::new(".") {
            let next = match sys.open_dir_at(Some(&dir), &to_parent, false) {
                Ok(next) => {
                    readable = true;
                    next
                }
                Err(e) => {
                    readable = false;
                    open_unreadable_dir(sys, Some(&dir), &to_parent, e, target, opts)
                        .map_err(|e| e.with_dir(&parent.join(&to_parent)))?
                }
            };
            dir = next;
            // For messages only: the kernel never sees this path.
            parent = parent.join(&to_parent);
        }
        name = to_name.to_os_string();
    }
    Err(Error::io(
        Step::ResolveSymlink,
        target,
        crate::sys::symlink_loop(),
    ))
}

/// A directory that could not be opened for reading (`first` is why): one
/// we may write and search but not read (mode `0300`) is opened `O_PATH`,
/// which serves every `*at` call. It cannot be fsynced, so a `Durable`
/// replace is refused here, before anything is written.
fn open_unreadable_dir<S: Sys>(
    sys: &S,
    at: Option<&S::Dir>,
    path: &Path,
    first: io::Error,
    target: &Path,
    opts: &Options,
) -> Result<S::Dir, Error> {
    if first.kind() != io::ErrorKind::PermissionDenied {
        return Err(Error::io(Step::OpenParent, target, first));
    }
    // Not searchable either (or no O_PATH): the first error says why.
    let Ok(dir) = sys.open_dir_at(at, path, true) else {
        return Err(Error::io(Step::OpenParent, target, first));
    };
    if opts.durability == Durability::Durable {
        return Err(Error::refused(
            target,
            path,
            InvalidReason::DirectoryNotReadable,
        ));
    }
    Ok(dir)
}

/// The kernel's rules for following the symlink `link` (named `at`) found
/// in `dir`, applied whatever the sysctls say, because the library reads
/// links itself and the kernel never sees that hop:
///
/// - `protected_symlinks`: in a sticky world-writable directory a link is
///   followed only if it belongs to the caller or to the directory's owner;
///   else anyone could point a name in `/tmp` at a file of the caller's.
/// - A link in `procfs` is "magic": `readlink` gives a description
///   (`/x (deleted)`, `pipe:[7]`), not a path to the file. Refused.
///
/// Costs nothing unless a link is followed: one `fstatfs`, and an `fstat`
/// of the directory for a link that is not the caller's.
fn may_follow<S: Sys>(
    sys: &S,
    dir: &S::Dir,
    link: &Stat,
    target: &Path,
    at: &Path,
) -> Result<(), Error> {
    let inspect = |e| Error::io(Step::InspectTarget, target, e);
    if sys.is_procfs(dir).map_err(inspect)? {
        return Err(Error::refused(target, at, InvalidReason::ProcMagicLink));
    }
    if link.uid == sys.euid() {
        return Ok(());
    }
    let parent = sys.stat_dir(dir).map_err(inspect)?;
    let sticky_world = parent.mode & 0o1002 == 0o1002;
    if sticky_world && link.uid != parent.uid {
        return Err(Error::refused(
            target,
            at,
            InvalidReason::ForeignSymlinkInStickyDir,
        ));
    }
    Ok(())
}

/// What is at the target when the replace starts, checked against the options.
fn classify(target: &Path, existing: Option<Stat>, opts: &Options) -> Result<Option<Stat>, Error> {
    match existing {
        None => Ok(None),
        Some(st) if st.kind == Kind::Dir => Err(Error::invalid(target, InvalidReason::IsDirectory)),
        Some(st) if st.kind == Kind::Other => {
            Err(Error::invalid(target, InvalidReason::NotRegularFile))
        }
        // Refused early so no bytes are written in vain; the rename still
        // decides atomically (RENAME_NOREPLACE), so a racing creator loses too.
        Some(_) if opts.create_new => Err(Error::AlreadyExists {
            target: target.to_path_buf(),
            step: Step::InspectTarget,
        }),
        // A symlink that is replaced, not followed: its mode (0777) and
        // owner mean nothing for a regular file, so it counts as new.
        Some(st) if st.kind == Kind::Symlink => Ok(None),
        Some(st) if st.nlink > 1 && opts.hard_links == HardLinks::Refuse => {
            Err(Error::invalid(target, InvalidReason::HardLinked))
        }
        Some(st) => Ok(Some(st)),
    }
}

/// How often the old file may be swapped between `fstatat` and `openat`
/// (by concurrent writers) before a replace gives up.
const INSPECT_ATTEMPTS: usize = 4;

/// The existing regular file `old` (as `fstatat` saw it), checked against
/// the kernel's `protected_regular` rule and a bind mount over the name,
/// then opened (`O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`) so that its
/// attributes and ACL are later read from this very inode, never by name.
///
/// Returns the file's status as seen through the descriptor, and what of
/// its attributes the new file is to get. The descriptor is closed at once
/// (a batch of many files must not hold one per file).
fn inspect_old<S: Sys>(
    sys: &S,
    target: &Path,
    parent: &Path,
    dir: &S::Dir,
    name: &OsStr,
    old: Option<Stat>,
    opts: &Options,
) -> Result<(Option<Stat>, OldAttrs), Error> {
    let inspect = |e| Error::io(Step::InspectTarget, target, e);
    let mut old = old;
    for _ in 0..INSPECT_ATTEMPTS {
        let Some(seen) = old else {
            return Ok((None, OldAttrs::default()));
        };
        if seen.mount_root {
            let at = parent.join(name);
            return Err(Error::refused(target, &at, InvalidReason::MountPoint));
        }
        // Only a file that is not the caller's can be a planted one; the
        // common case (your own file) costs no syscall here.
        if seen.uid != sys.euid() && !opts.others_in_sticky {
            let d = sys.stat_dir(dir).map_err(inspect)?;
            let shared = d.mode & 0o1000 != 0 && d.mode & 0o022 != 0;
            if shared && seen.uid != d.uid {
                let at = parent.join(name);
                return Err(Error::refused(
                    target,
                    &at,
                    InvalidReason::ForeignFileInStickyDir,
                ));
            }
        }
        // The descriptor serves the mode (ACL) and the xattrs only.
        if opts.mode.is_some() && !opts.preserve_xattrs {
            return Ok((Some(seen), OldAttrs::default()));
        }
        let file = match sys.open_read_at(dir, name) {
            Ok(file) => file,
            // Not readable by us: its ACL cannot be known (`keep_mode`
            // then assumes one) and its attributes are not copied.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let attrs = OldAttrs {
                    acl: Acl::Unknown,
                    copy: Vec::new(),
                };
                return Ok((Some(seen), attrs));
            }
            // Swapped for a symlink (ELOOP) or removed since the fstatat.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == crate::sys::symlink_loop().raw_os_error() =>
            {
                old = restat(sys, target, dir, name, opts)?;
                continue;
            }
            Err(e) => return Err(inspect(e)),
        };
        let now = match sys.stat_file(&file) {
            Ok(now) => now,
            Err(e) => {
                sys.close(file);
                return Err(inspect(e));
            }
        };
        if (now.ino, now.dev, now.kind) == (seen.ino, seen.dev, Kind::File) {
            let now = Stat {
                mount_root: seen.mount_root,
                ..now
            };
            let attrs = read_attrs(sys, &file, opts);
            sys.close(file);
            return Ok((Some(now), attrs.map_err(inspect)?));
        }
        // Another writer replaced it in between: look again.
        sys.close(file);
        old = restat(sys, target, dir, name, opts)?;
    }
    Err(inspect(io::Error::new(
        io::ErrorKind::Interrupted,
        "the file kept being replaced while it was inspected",
    )))
}

/// `fstatat` again after the file changed under `inspect_old`.
fn restat<S: Sys>(
    sys: &S,
    target: &Path,
    dir: &S::Dir,
    name: &OsStr,
    opts: &Options,
) -> Result<Option<Stat>, Error> {
    let existing = match sys.stat_at(dir, name) {
        Ok(st) => Some(st),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(Step::InspectTarget, target, e)),
    };
    classify(target, existing, opts)
}

/// What the old file's extended attributes say, read through its
/// descriptor when the replace starts.
#[derive(Debug, Default)]
struct OldAttrs {
    /// Its access ACL (only looked at when the old mode is kept).
    acl: Acl,
    /// The `user.*` and `security.*` attributes to copy (with
    /// `preserve_xattrs`), with their values.
    copy: Vec<(OsString, Vec<u8>)>,
}

/// Whether the old file has an access ACL.
#[derive(Debug, Default)]
enum Acl {
    /// None (or the filesystem has no xattrs).
    #[default]
    None,
    /// This one, as the xattr's bytes.
    Some(Vec<u8>),
    /// Cannot be told (the file may not be opened by us).
    Unknown,
}

/// One `flistxattr`, then an `fgetxattr` for each attribute that is kept:
/// a file without attributes costs one call. A failure to list, or to read
/// the ACL, fails the replace: guessing could widen the permissions.
fn read_attrs<S: Sys>(sys: &S, file: &S::File, opts: &Options) -> io::Result<OldAttrs> {
    let names = match sys.list_xattrs(file) {
        Ok(names) => names,
        Err(e) if no_xattrs(&e) => return Ok(OldAttrs::default()),
        Err(e) => return Err(e),
    };
    let mut attrs = OldAttrs::default();
    for name in names {
        let bytes = name.as_encoded_bytes();
        if name == ACL_ACCESS {
            if opts.mode.is_none() {
                attrs.acl = Acl::Some(sys.get_xattr(file, &name)?);
            }
        } else if opts.preserve_xattrs
            && (bytes.starts_with(b"user.") || bytes.starts_with(b"security."))
        {
            if let Ok(value) = sys.get_xattr(file, &name) {
                attrs.copy.push((name, value));
            }
        }
    }
    Ok(attrs)
}

/// The ACL xattr: when present, the mode's group bits are the ACL's mask,
/// not the owning group's permissions.
const ACL_ACCESS: &str = "system.posix_acl_access";

/// Errors from `flistxattr` that mean "this filesystem has no extended
/// attributes", so no ACL either.
fn no_xattrs(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(95)
}

/// [`classify`] plus what this library's own names add: a backup name
/// that cannot fit, and a file whose only other name is its own backup
/// (left so by a crash between the backup's rename and the main rename),
/// which is not hard-linked for [`HardLinks::Refuse`].
fn admit<S: Sys>(
    sys: &S,
    dir: &S::Dir,
    name: &OsStr,
    target: &Path,
    existing: Option<Stat>,
    opts: &Options,
) -> Result<Option<Stat>, Error> {
    if opts.backup && backup_name(name).len() > NAME_MAX {
        return Err(Error::invalid(target, InvalidReason::BackupNameTooLong));
    }
    let mut seen = existing;
    if let Some(st) = seen
        .as_mut()
        .filter(|st| st.kind == Kind::File && st.nlink == 2 && opts.hard_links == HardLinks::Refuse)
    {
        let backup = sys.stat_at(dir, &backup_name(name));
        if backup.is_ok_and(|b| b.ino == st.ino) {
            st.nlink = 1;
        }
    }
    // The real link count goes on: `backup` looks at it.
    classify(target, seen, opts).map(|old| old.and(existing))
}

impl<S: Sys> Replace<S> {
    /// Steps 1-3: resolve, inspect, create the temp.
    pub(crate) fn open(sys: S, target: &Path, opts: &Options) -> Result<Replace<S>, Error> {
        let (parent, dir, name, existing, readable) = resolve(&sys, target, opts)?;
        let old = admit(&sys, &dir, &name, target, existing, opts)?;
        let mut replace = Replace::create(sys, target, opts, parent, dir, name, old)?;
        replace.dir_readable = readable;
        Ok(replace)
    }

    /// Step 3: the temp file in the target's directory, locked so that
    /// `sweep` can tell it from one left by a dead process.
    fn create(
        sys: S,
        target: &Path,
        opts: &Options,
        parent: PathBuf,
        dir: S::Dir,
        name: OsString,
        old: Option<Stat>,
    ) -> Result<Replace<S>, Error> {
        let (old, old_attrs) = inspect_old(&sys, target, &parent, &dir, &name, old, opts)?;
        // A file that takes an existing file's mode starts private (0600)
        // and gets its mode at commit; a new file is created with its final
        // mode and the kernel applies the umask, as `File::create` does.
        let create_mode = match (opts.mode, old) {
            (Some(mode), _) => mode,
            (None, Some(_)) => 0o600,
            (None, None) => 0o666,
        };
        let mut replace = Replace {
            sys,
            target: target.to_path_buf(),
            parent,
            dir: Arc::new(dir),
            temp: OsString::new(),
            name,
            named: false,
            file: None,
            old,
            old_attrs,
            opts: opts.clone(),
            dir_readable: true,
            pos: 0,
            len: 0,
        };
        let sys = replace.sys.clone();
        if opts.unnamed_temp {
            match sys.create_unnamed(&replace.dir, create_mode) {
                Ok(file) => {
                    // Locked too: between the link at commit and the rename
                    // the temp has a name, and `sweep` must leave it alone.
                    let _ = sys.lock(&file, false);
                    replace.temp = temp_name(&replace.name, sys.random());
                    replace.file = Some(file);
                    return Ok(replace);
                }
                // No O_TMPFILE on this kernel or filesystem (or no /proc to
                // link it through): fall back to a named temp.
                Err(e) if unnamed_unsupported(&e) => {}
                Err(e) => return Err(Error::io(Step::CreateTemp, target, e)),
            }
        }
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..RETRIES_MAX {
            let temp = temp_name(&replace.name, sys.random());
            match sys.create_at(&replace.dir, &temp, create_mode) {
                Ok(file) => match lock_temp(&sys, &file) {
                    Ok(()) => {
                        replace.temp = temp;
                        replace.named = true;
                        replace.file = Some(file);
                        return Ok(replace);
                    }
                    // A `sweep` took the temp between our create and our
                    // lock: it removes the name, or already did. Start
                    // again with a new one.
                    Err(e) => {
                        if e.kind() == io::ErrorKind::WouldBlock {
                            // Still named, maybe: do not leave it to the
                            // holder (should it not be a sweep).
                            let _ = sys.unlink_at(&replace.dir, &temp);
                        }
                        sys.close(file);
                        last = e;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(Error::io(Step::CreateTemp, target, e)),
            }
        }
        Err(Error::io(Step::CreateTemp, target, last))
    }

    /// Read-modify-write under the directory lock: resolve, lock, look
    /// again, read the current content, let `f` compute the new one, replace.
    pub(crate) fn update<F>(sys: S, target: &Path, opts: &Options, f: F) -> Result<(), Error>
    where
        F: FnOnce(Option<&[u8]>) -> io::Result<Vec<u8>>,
    {
        let (parent, dir, name, _, _) = resolve(&sys, target, opts)?;
        // The lock lives on the directory, not the target: every replace
        // gives the target a new inode, so a lock on it would guard nothing.
        // The kernel drops it when `dir` is closed, or the process dies.
        // `_held` outlives `dir` (declared first, dropped last).
        let _held = lock_update_dir(&sys, &dir, opts.lock_timeout)
            .map_err(|e| Error::io(Step::Lock, target, e))?;
        // Look again: another updater may have replaced the file meanwhile.
        let existing = match sys.stat_at(&dir, &name) {
            Ok(st) => Some(st),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(Step::InspectTarget, target, e)),
        };
        let old = admit(&sys, &dir, &name, target, existing, opts)?;
        let current = match (existing, old) {
            (Some(_), Some(_)) => Some(
                read_all(&sys, &dir, &name).map_err(|e| Error::io(Step::ReadTarget, target, e))?,
            ),
            _ => None,
        };
        let contents = f(current.as_deref()).map_err(|e| Error::io(Step::Transform, target, e))?;
        Replace::create(sys, target, opts, parent, dir, name, old)?.write_all_and_commit(&contents)
    }

    /// The caller's path.
    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    /// The directory the protocol works in (the resolved parent).
    pub(crate) fn parent(&self) -> &Path {
        &self.parent
    }

    /// Step 8 alone: fsync the directory (once per directory in a batch).
    pub(crate) fn sync_parent(&self) -> Result<(), Error> {
        if self.opts.durability != Durability::Durable || self.broken(Broken::NoDirSync) {
            return Ok(());
        }
        // The rename lives in the directory; until the directory is on disk
        // a power cut can undo it.
        let step = if self.broken(Broken::DirSyncErrorLooksEarly) {
            Step::Rename
        } else {
            Step::SyncParent
        };
        self.sys
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(step, &self.target, e))
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

    /// Steps 5-8: metadata, fsync, rename, directory fsync.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        self.sync_and_publish()?;
        // fsync the directory: the rename lives in the directory, and until
        // the directory is on disk a power cut can undo it (old content back,
        // or no file at all for a new one).
        self.sync_parent()
    }

    /// Steps 5-7: everything but the directory fsync (which a batch does
    /// once per directory). On error the temp is gone and the target is as
    /// it was, unless the error says it was replaced.
    pub(crate) fn sync_and_publish(&mut self) -> Result<(), Error> {
        self.prepare()?;
        // fsync the temp through the fd that wrote it: without it, a crash
        // after the rename may leave the target empty or zero-filled (the
        // rename can reach the disk before the data). Never retried: after a
        // failure Linux marks the pages clean and a second fsync may succeed
        // with the data lost.
        if !self.broken(Broken::NoFileSync) && !self.broken(Broken::RenameBeforeSync) {
            self.sync_temp()?;
        }
        self.publish_prepared()
    }

    /// Step 5, and the fsync-free part of a commit: flushing is the
    /// caller's, metadata goes on the temp here.
    pub(crate) fn prepare(&mut self) -> Result<(), Error> {
        // Owner and mode go on the temp *before* its fsync so they become
        // durable together with the data: a crash after the rename never
        // shows new data with the temp's 0600.
        if !self.broken(Broken::ModeAfterSync) {
            self.set_metadata().map_err(|e| self.fail(e))?;
        }
        if !self.named {
            // An O_TMPFILE temp gets its temp name now, before the fsync:
            // from here on it is an ordinary named temp. Linking first means
            // the fsync covers an inode that has a name, which some
            // filesystems (btrfs) need for the data to be logged, and no
            // target name ever points at data that was not synced first.
            self.link_unnamed(&self.temp.clone())?;
        }
        Ok(())
    }

    /// Step 6: fsync the temp. On failure the temp is removed.
    pub(crate) fn sync_temp(&mut self) -> Result<(), Error> {
        let result = match &self.file {
            Some(file) => self.sys.sync_file(file),
            None => return Err(self.closed(Step::SyncTemp)),
        };
        if let Err(e) = result {
            let retried = self.broken(Broken::RetrySync)
                && self
                    .file
                    .as_ref()
                    .is_some_and(|f| self.sys.sync_file(f).is_ok());
            if !retried {
                return Err(self.fail(Error::io(Step::SyncTemp, &self.target, e)));
            }
        }
        Ok(())
    }

    /// Step 7 after the temp is synced: rename, then close the temp (its
    /// lock keeps `sweep` away until the name is gone).
    pub(crate) fn publish_prepared(&mut self) -> Result<(), Error> {
        if self.broken(Broken::ModeAfterSync) {
            self.set_metadata().map_err(|e| self.fail(e))?;
        }
        self.publish()?;
        if self.broken(Broken::RenameBeforeSync) {
            if let Some(file) = &self.file {
                let _ = self.sys.sync_file(file);
            }
        }
        if let Some(file) = self.file.take() {
            self.sys.close(file);
        }
        Ok(())
    }

    /// As [`Replace::discard`], leaving `self` emptied in place (issue 10:
    /// a batch keeps its entries' indices).
    pub(crate) fn discard_in_place(&mut self) -> Result<(), Error> {
        if let Some(file) = self.file.take() {
            self.sys.close(file);
        }
        if !self.named {
            return Ok(());
        }
        self.named = false;
        self.sys.unlink_at(&self.dir, &self.temp).map_err(|e| {
            Error::io(Step::RemoveTemp, &self.target, e).with_temp_left(self.temp_path())
        })
    }

    /// Removes the temp without touching the target.
    pub(crate) fn discard(mut self) -> Result<(), Error> {
        self.discard_in_place()
    }

    /// Step 5: owner first (the kernel clears setuid/setgid and file
    /// capabilities on chown), then the ACL, the mode, and the other
    /// extended attributes, all as read from the old file's descriptor.
    fn set_metadata(&self) -> Result<(), Error> {
        let Some(file) = &self.file else {
            return Err(self.closed(Step::SetMode));
        };
        let special = self.opts.mode.is_some_and(|m| m & 0o7000 != 0);
        if self.old.is_none() && !special {
            // A new file was created with its final mode (under the umask)
            // and belongs to us: nothing to change.
            return Ok(());
        }
        // Look at the temp first: one fstat, which is cheaper than a chown
        // or chmod that would change nothing (the usual case for a user
        // replacing their own file).
        let now = self
            .sys
            .stat_file(file)
            .map_err(|e| Error::io(Step::InspectTemp, &self.target, e))?;
        let mut owner = (now.uid, now.gid);
        let mut chowned = false;
        if let (Some(old), true) = (self.old, self.opts.preserve_owner) {
            if owner != (old.uid, old.gid) {
                match self.sys.set_owner(file, old.uid, old.gid) {
                    Ok(()) => {
                        chowned = true;
                        owner = (old.uid, old.gid);
                    }
                    // Not allowed to give the file away (EPERM), or an id
                    // this user namespace cannot map (EINVAL): best effort,
                    // whoever we are. Keep at least the group if we are in
                    // it; `keep_mode` makes sure nobody gains access.
                    Err(e) if owner_best_effort(&e) => {
                        if now.uid != old.uid
                            && now.gid != old.gid
                            && self.sys.set_owner(file, now.uid, old.gid).is_ok()
                        {
                            chowned = true;
                            owner.1 = old.gid;
                        }
                    }
                    Err(e) => return Err(Error::io(Step::SetOwner, &self.target, e)),
                }
            }
        }
        let mut acl_set = false;
        // The old file's mode without its ACL: the temp must not keep an
        // ACL it inherited from the directory's default ACL, whose named
        // entries the mode's group bits (its mask) would otherwise grant.
        let mut drop_acl = false;
        let want = match (self.opts.mode, self.old) {
            // Created with this mode, so the low bits are right (the umask
            // applied); setuid/setgid may be gone, since a chown clears them
            // and so does every write by a process without CAP_FSETID. Put
            // them back (the umask never masks them).
            (Some(mode), _) => now.mode & 0o777 | mode & 0o7000,
            (None, Some(old)) => {
                let (mode, set) = self.keep_mode(file, old, owner);
                acl_set = set;
                drop_acl = !set;
                mode
            }
            (None, None) => now.mode,
        };
        // A chown just cleared any setuid/setgid bits `now` still shows; an
        // ACL just rewrote the mode from its entries.
        // No call when the mode is already right: an inherited ACL then has
        // a mask of `---` (from the create mode 0600, as the group bits
        // show), so its named entries grant nothing.
        if want != now.mode || (chowned && want & 0o6000 != 0) || acl_set {
            let set = if drop_acl {
                self.sys.set_mode_without_acl(file, want)
            } else {
                self.sys.set_mode(file, want)
            };
            set.map_err(|e| Error::io(Step::SetMode, &self.target, e))?;
        }
        if self.old.is_some() {
            self.copy_xattrs(file);
        }
        Ok(())
    }

    /// The old file's mode for the new file, narrowed so that nobody can
    /// read or write the result who could not read or write the old file:
    ///
    /// - an ACL (`system.posix_acl_access`) is copied when the group was
    ///   kept; if it cannot be (or its presence cannot be told), the group
    ///   bits are dropped, since with an ACL they are the mask, not the
    ///   group's permissions;
    /// - when the group could not be kept, the group bits are reduced to
    ///   what both the old group and "others" had (`group & other`): the new
    ///   group's members were "others" before, or in the old group;
    /// - setuid (setgid) is dropped when the owner (group) was not kept.
    ///
    /// Returns the mode and whether an ACL was set on the temp.
    fn keep_mode(&self, file: &S::File, old: Stat, owner: (u32, u32)) -> (u32, bool) {
        let mut mode = old.mode;
        let group_kept = owner.1 == old.gid;
        if owner.0 != old.uid {
            mode &= !0o4000;
        }
        if !group_kept {
            mode = mode & !0o2070 | (mode & (mode << 3) & 0o070);
        }
        let acl = match &self.old_attrs.acl {
            Acl::None => return (mode, false),
            Acl::Some(acl) => Some(acl),
            Acl::Unknown => None,
        };
        // The ACL's `group::` entry would apply to whatever group the new
        // file has: copy it only onto the same group.
        let copied = group_kept
            && acl.is_some_and(|acl| {
                self.sys
                    .set_xattr(file, OsStr::new(ACL_ACCESS), acl)
                    .is_ok()
            });
        if copied {
            (mode, true)
        } else {
            (mode & !0o070, false)
        }
    }

    /// Copies the `user.*` and `security.*` attributes (SELinux labels,
    /// file capabilities) read from the old file's descriptor in
    /// `inspect_old`: always the inode whose mode and owner are kept, never
    /// a file found by name later. Best effort: an attribute we may not set
    /// (a `security.capability` without `CAP_SETFCAP`) is left out.
    fn copy_xattrs(&self, file: &S::File) {
        for (name, value) in &self.old_attrs.copy {
            let _ = self.sys.set_xattr(file, name, value);
        }
    }

    /// Step 7: the atomic switch. On failure the temp is removed and the
    /// target is as it was.
    fn publish(&mut self) -> Result<(), Error> {
        if self.opts.backup && self.old.is_some() {
            self.backup()?;
        }
        if !self.opts.create_new {
            if self.broken(Broken::UnlinkThenRename) {
                let _ = self.sys.unlink_at(&self.dir, &self.name);
            }
            let result = self.sys.rename_at(&self.dir, &self.temp, &self.name);
            result.map_err(|e| self.fail(Error::io(Step::Rename, &self.target, e)))?;
            self.named = false;
            return Ok(());
        }
        if self.broken(Broken::CheckThenRename) {
            if self.sys.stat_at(&self.dir, &self.name).is_ok() {
                return Err(self.fail(self.already_exists()));
            }
            let result = self.sys.rename_at(&self.dir, &self.temp, &self.name);
            result.map_err(|e| self.fail(Error::io(Step::Rename, &self.target, e)))?;
            self.named = false;
            return Ok(());
        }
        let result = self
            .sys
            .rename_noreplace_at(&self.dir, &self.temp, &self.name);
        let Err(e) = result else {
            self.named = false;
            return Ok(());
        };
        match e.kind() {
            io::ErrorKind::AlreadyExists => return Err(self.fail(self.already_exists())),
            // The filesystem has no RENAME_NOREPLACE (ZFS, some FUSE): a hard
            // link also fails atomically with EEXIST; then drop the temp name.
            io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported => {}
            _ => return Err(self.fail(Error::io(Step::Rename, &self.target, e))),
        }
        match self.sys.link_at(&self.dir, &self.temp, &self.name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(self.fail(self.already_exists()));
            }
            Err(e) => return Err(self.fail(Error::io(Step::Rename, &self.target, e))),
        }
        // The target already holds the new content; a failure here only
        // leaves a second name behind.
        self.named = false;
        self.sys.unlink_at(&self.dir, &self.temp).map_err(|e| {
            Error::io(Step::RemoveTempLink, &self.target, e).with_temp_left(self.temp_path())
        })
    }

    /// Names an O_TMPFILE temp `name` in the directory.
    fn link_unnamed(&mut self, name: &OsStr) -> Result<(), Error> {
        let result = match &self.file {
            Some(file) => self.sys.link_unnamed(file, &self.dir, name),
            None => return Err(self.closed(Step::LinkTemp)),
        };
        match result {
            Ok(()) => {
                self.named = true;
                Ok(())
            }
            Err(e) => Err(self.fail(Error::io(Step::LinkTemp, &self.target, e))),
        }
    }

    /// Keeps the old version as `name~`: a hard link to the old inode under
    /// a temp name, renamed over any earlier backup, then a directory fsync
    /// before the main rename. Without that fsync a crash may keep the main
    /// rename but not the backup's (the conservative model allows it), and
    /// the old version would be under neither name.
    fn backup(&mut self) -> Result<(), Error> {
        let backup = backup_name(&self.name);
        // `name~` may already be this very file (a crash between the two
        // renames leaves them so). Then there is nothing to keep, and the
        // rename onto it would do nothing and leave the temp link behind.
        // Only a file with other names can be in that state.
        if let Some(old) = self.old.filter(|old| old.nlink > 1) {
            if self
                .sys
                .stat_at(&self.dir, &backup)
                .is_ok_and(|st| st.ino == old.ino)
            {
                return Ok(());
            }
        }
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..RETRIES_MAX {
            let temp = temp_name(&backup, self.sys.random());
            let (sys, dir) = (&self.sys, &self.dir);
            match sys.link_at(dir, &self.name, &temp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last = e;
                    continue;
                }
                Err(e) => return Err(self.fail(Error::io(Step::Backup, &self.target, e))),
            }
            match sys.rename_at(dir, &temp, &backup) {
                Ok(()) => return self.sync_backup(),
                // The link is unlocked, so a `sweep` may remove it before
                // the rename: make another.
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = e,
                Err(e) => {
                    let left = sys.unlink_at(dir, &temp).is_err();
                    let err = self.fail(Error::io(Step::Backup, &self.target, e));
                    // A backup link that could not be removed is named like
                    // a temp (unless the temp stayed too: one slot).
                    return Err(match left {
                        true if err.temp_left().is_none() => {
                            err.with_temp_left(self.parent.join(&temp))
                        }
                        _ => err,
                    });
                }
            }
        }
        Err(self.fail(Error::io(Step::Backup, &self.target, last)))
    }

    /// fsync the directory after the backup's rename and before the main
    /// rename: the backup name must be durable before the old name can be
    /// taken by the new version, so that after any crash the old version is
    /// under `name` or `name~`. Done whatever the durability, since the
    /// backup's promise is about the old version, not the new one.
    fn sync_backup(&mut self) -> Result<(), Error> {
        if self.broken(Broken::NoBackupSync) {
            return Ok(());
        }
        let result = self.sys.sync_dir(&self.dir);
        result.map_err(|e| self.fail(Error::io(Step::Backup, &self.target, e)))
    }

    /// Cleanup after a failure before the rename: closes and removes the
    /// temp and returns `err`, noting the temp if it could not be removed.
    pub(crate) fn fail(&mut self, err: Error) -> Error {
        if let Some(file) = self.file.take() {
            self.sys.close(file);
        }
        self.abort(err)
    }

    /// Removes the temp's name (if it has one) and returns `err`, noting
    /// the temp if it could not be removed.
    fn abort(&mut self, err: Error) -> Error {
        if !self.named {
            return err;
        }
        self.named = false;
        match self.sys.unlink_at(&self.dir, &self.temp) {
            Ok(()) => err,
            Err(_) => err.with_temp_left(self.temp_path()),
        }
    }

    fn already_exists(&self) -> Error {
        Error::AlreadyExists {
            target: self.target.clone(),
            step: Step::Rename,
        }
    }

    fn closed(&self, step: Step) -> Error {
        let e = io::Error::other("the temporary file is already closed");
        Error::io(step, &self.target, e)
    }

    fn temp_path(&self) -> PathBuf {
        self.parent.join(&self.temp)
    }

    // issue 10: a batch shares one directory fd per directory and closes
    // temps early.

    /// The open parent directory.
    pub(crate) fn dir(&self) -> &Arc<S::Dir> {
        &self.dir
    }

    /// Works through `dir` from now on, closing this replace's own fd of
    /// the parent. `dir` must be the same directory (same `st_dev` and
    /// `st_ino`), opened no later than this replace's own.
    pub(crate) fn share_dir(&mut self, dir: Arc<S::Dir>) {
        self.dir = dir;
    }

    /// Whether the parent was opened for reading (not `O_PATH`).
    pub(crate) fn dir_readable(&self) -> bool {
        self.dir_readable
    }

    /// Whether the temp's fd is still open.
    pub(crate) fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Closes the temp's fd; its name stays (and with it the new content),
    /// so `publish_prepared` still renames it. The caller has run
    /// `prepare` (and `sync_temp` where it must), which need the fd.
    pub(crate) fn close_temp(&mut self) {
        if let Some(file) = self.file.take() {
            self.sys.close(file);
        }
    }

    /// The durability this file asked for.
    pub(crate) fn durability(&self) -> Durability {
        self.opts.durability
    }

    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn broken(&self, variant: Broken) -> bool {
        self.opts.broken == Some(variant)
    }

    #[cfg(not(any(test, feature = "sim")))]
    #[inline(always)]
    pub(crate) fn broken(&self, _: Broken) -> bool {
        false
    }
}

/// Production builds have no broken variants; this keeps `broken()` calls
/// type-checked while compiling to nothing.
#[cfg(not(any(test, feature = "sim")))]
#[derive(Clone, Copy)]
pub(crate) enum Broken {
    NoFileSync,
    NoDirSync,
    ModeAfterSync,
    RenameBeforeSync,
    RetrySync,
    UnlinkThenRename,
    DirSyncErrorLooksEarly,
    CheckThenRename,
    GroupByPath,
    NoBackupSync,
}

impl<S: Sys> Drop for Replace<S> {
    /// An uncommitted replace removes its temp and never touches the target.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            self.sys.close(file);
        }
        if self.named {
            let _ = self.sys.unlink_at(&self.dir, &self.temp);
        }
    }
}

/// `fchown` errors that leave the owner as it is rather than failing the
/// replace: `EPERM` (no privilege to give the file away) and `EINVAL` (an
/// owner this user namespace has no mapping for).
fn owner_best_effort(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
    )
}

/// Locks a just-created named temp so that `sweep` leaves it alone, and
/// checks that it still has its name. `sweep` unlinks a temp only while
/// holding its lock, so after our lock succeeds the name can only be gone
/// if `sweep` removed it first, and then `fstat` shows no links left. An
/// `Err` (`WouldBlock`: a `sweep` holds it; `NotFound`: a `sweep` removed
/// it) means: start again with a new name.
pub(crate) fn lock_temp<S: Sys>(sys: &S, file: &S::File) -> io::Result<()> {
    loop {
        match sys.lock(file, false) {
            Ok(()) => break,
            // A signal handler without SA_RESTART: ask again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
            // Best effort: where flock is unsupported, `sweep` cannot lock
            // either, and so removes nothing.
            Err(_) => return Ok(()),
        }
    }
    match sys.stat_file(file) {
        Ok(st) if st.nlink == 0 => Err(io::Error::from(io::ErrorKind::NotFound)),
        // A failed fstat tells nothing new; the temp is ours and locked.
        _ => Ok(()),
    }
}

std::thread_local! {
    /// The directories (device, inode) whose update lock this thread holds:
    /// a nested `update` in one of them would wait for itself forever.
    static HELD: std::cell::RefCell<Vec<(u64, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's hold on a directory's update lock, in [`HELD`] until dropped.
pub(crate) struct Held((u64, u64));

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(i) = held.iter().rposition(|&id| id == self.0) {
                held.remove(i);
            }
        });
    }
}

/// Takes the `update` lock of `dir`: refuses at once (`Deadlock`) if this
/// thread already holds it; otherwise waits, for at most `timeout` if given
/// (`TimedOut` then; `Some(ZERO)` tries once). `EINTR` is retried.
fn lock_update_dir<S: Sys>(
    sys: &S,
    dir: &S::Dir,
    timeout: Option<std::time::Duration>,
) -> io::Result<Held> {
    let id = sys.dir_identity(dir)?;
    if HELD.with(|held| held.borrow().contains(&id)) {
        return Err(io::Error::new(
            io::ErrorKind::Deadlock,
            "this thread already holds this directory's update lock (an update inside an update)",
        ));
    }
    match timeout {
        None => loop {
            match sys.lock_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        },
        Some(limit) => {
            // flock has no timeout: poll, backing off from 1 ms to 50 ms.
            let start = std::time::Instant::now();
            let mut pause = std::time::Duration::from_millis(1);
            loop {
                match sys.try_lock_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    Err(_) => {}
                }
                let waited = start.elapsed();
                if waited >= limit {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "another update holds this directory's lock",
                    ));
                }
                std::thread::sleep(pause.min(limit - waited));
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
        }
    }
    HELD.with(|held| held.borrow_mut().push(id));
    Ok(Held(id))
}

/// The backup's name: the target's name and `~`.
pub(crate) fn backup_name(name: &OsStr) -> OsString {
    let mut backup = name.to_os_string();
    backup.push("~");
    backup
}

/// Errors from `O_TMPFILE` that mean "not here" rather than "failed".
fn unnamed_unsupported(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Unsupported | io::ErrorKind::IsADirectory | io::ErrorKind::InvalidInput
    )
}

/// Reads a whole file through `dir`.
fn read_all<S: Sys>(sys: &S, dir: &S::Dir, name: &OsStr) -> io::Result<Vec<u8>> {
    let file = sys.open_read_at(dir, name)?;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let result = loop {
        match sys.read_at(&file, &mut chunk, out.len() as u64) {
            Ok(0) => break Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    sys.close(file);
    result
}

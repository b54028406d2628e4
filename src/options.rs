//! [`Options`]: how a replace behaves.

use std::path::Path;

use crate::error::Error;
use crate::file::AtomicFile;
use crate::protocol::Replace;
use crate::sys::RealSys;

/// How far a successful replace is guaranteed to survive a power cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// fsync the file, rename, then fsync the directory. After `Ok` the new
    /// content survives a power cut. The default.
    #[default]
    Durable,
    /// fsync the file and rename, but skip the directory fsync. After a crash
    /// the target is still the old or the new version, never torn, but a
    /// replace that returned `Ok` may roll back to the old version.
    Consistent,
}

/// What to do when the target has other hard links (`st_nlink > 1`).
///
/// A replace gives the target a new inode, so the other names keep pointing
/// at the old content. Nothing can make a rename keep the inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HardLinks {
    /// Replace anyway: the target gets the new content, the other links keep
    /// the old. The default, and what every rename-based writer does.
    #[default]
    Break,
    /// Refuse with [`InvalidReason::HardLinked`](crate::InvalidReason::HardLinked)
    /// before anything is written.
    Refuse,
}

/// Options for a replace; [`Options::new`] gives the defaults.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("settings.json");
/// use crashsafe::{Durability, Options};
///
/// Options::new()
///     .durability(Durability::Consistent)
///     .mode(0o600)
///     .write(&path, b"{}")?;
/// # Ok::<(), crashsafe::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) mode: Option<u32>,
    pub(crate) preserve_owner: bool,
    pub(crate) follow_symlinks: bool,
    pub(crate) create_new: bool,
    pub(crate) backup: bool,
    pub(crate) hard_links: HardLinks,
    pub(crate) preserve_xattrs: bool,
    pub(crate) unnamed_temp: bool,
    // issue 11
    pub(crate) others_in_sticky: bool,
    pub(crate) lock_timeout: Option<std::time::Duration>,
    #[cfg(any(test, feature = "sim"))]
    pub(crate) broken: Option<crate::protocol::Broken>,
}

impl Default for Options {
    fn default() -> Options {
        Options::new()
    }
}

impl Options {
    /// The defaults: [`Durability::Durable`], the existing file's mode and
    /// owner kept, symlinks followed, an existing target replaced.
    pub fn new() -> Options {
        Options {
            durability: Durability::Durable,
            mode: None,
            preserve_owner: true,
            follow_symlinks: true,
            create_new: false,
            backup: false,
            hard_links: HardLinks::Break,
            preserve_xattrs: true,
            unnamed_temp: false,
            others_in_sticky: false,
            lock_timeout: None,
            #[cfg(any(test, feature = "sim"))]
            broken: None,
        }
    }

    /// How far an `Ok` is guaranteed to survive a power cut. Default:
    /// [`Durability::Durable`].
    pub fn durability(&mut self, level: Durability) -> &mut Options {
        self.durability = level;
        self
    }

    /// The permission bits of the result (e.g. `0o640`), with the process
    /// umask applied as with std's `OpenOptionsExt::mode`. Overrides keeping
    /// the existing file's mode.
    pub fn mode(&mut self, mode: u32) -> &mut Options {
        self.mode = Some(mode & 0o7777);
        self
    }

    /// Give the new file the existing file's owner and group. Default `true`.
    ///
    /// Best effort, for everyone: an `EPERM` from `fchown` (a process that
    /// is not root can only give a file to itself and its own groups) or an
    /// `EINVAL` (an owner with no mapping in this user namespace) is ignored,
    /// and the group alone is kept where possible. Whatever is not kept
    /// narrows the mode instead, so nobody gains access: a group that was
    /// not kept gets at most what "others" had, and set-user-ID (set-group-ID)
    /// is dropped with the owner (group).
    pub fn preserve_owner(&mut self, yes: bool) -> &mut Options {
        self.preserve_owner = yes;
        self
    }

    /// With `true` (the default), a symlink at the target is followed (chains
    /// and relative links included) and the file it points to is replaced in
    /// its own directory; the link stays. With `false`, the link itself is
    /// replaced by a regular file. Links are followed only as the kernel's
    /// `protected_symlinks` rule allows, whatever the sysctl says, and
    /// `/proc` magic links are refused (see the crate docs, Security).
    pub fn follow_symlinks(&mut self, yes: bool) -> &mut Options {
        self.follow_symlinks = yes;
        self
    }

    /// With `true`, fail with [`Error::AlreadyExists`] (kind `AlreadyExists`)
    /// if the target exists, decided atomically at the rename
    /// (`RENAME_NOREPLACE`, or a hard link where that flag is unsupported).
    /// Default `false`.
    ///
    /// With [`follow_symlinks`](Options::follow_symlinks) on, a symlink at
    /// the path is followed first: a dangling link counts as absent and the
    /// file it points to is created, as `std::fs::write` would. Turn
    /// following off to treat any existing name, links included, as taken.
    pub fn create_new(&mut self, yes: bool) -> &mut Options {
        self.create_new = yes;
        self
    }

    /// Keep the previous version as `name~` beside the target. Default `false`.
    ///
    /// The backup is a hard link to the old file made just before the
    /// rename (under a temp name, then renamed over any older backup), and
    /// the directory is fsynced before the main rename (whatever the
    /// [`Durability`]), so at every moment, across any crash, the old version
    /// is reachable under one of the two names. Nothing is backed up for a
    /// new file. A target whose name is 255 bytes long has no room for the
    /// `~`: the write fails at once with
    /// [`InvalidReason::BackupNameTooLong`](crate::InvalidReason::BackupNameTooLong).
    /// For [`HardLinks::Refuse`], a file whose only other name is its own
    /// backup (what a crash between the two renames leaves) is not
    /// hard-linked.
    pub fn backup(&mut self, yes: bool) -> &mut Options {
        self.backup = yes;
        self
    }

    /// What to do when the target has other hard links. Default
    /// [`HardLinks::Break`].
    pub fn hard_links(&mut self, policy: HardLinks) -> &mut Options {
        self.hard_links = policy;
        self
    }

    /// Copy the old file's `user.*` and `security.*` extended attributes
    /// (SELinux labels, file capabilities) to the new file. Default `true`,
    /// best effort: attributes the filesystem or the process's privileges do
    /// not allow are silently left out. They are read through a descriptor
    /// of the very file whose mode is kept, never by name. `trusted.*` is
    /// not copied. The access ACL (`system.posix_acl_access`) is part of the
    /// mode, not of this option: it is carried over whenever the old mode is.
    pub fn preserve_xattrs(&mut self, yes: bool) -> &mut Options {
        self.preserve_xattrs = yes;
        self
    }

    /// Write into an unnamed temp file (`O_TMPFILE`, Linux) that gets a
    /// name only at commit (linked to a temp name, fsynced, then renamed as
    /// usual), so a process killed while writing leaves nothing behind.
    /// Falls back to a named temp where the kernel, the filesystem or a
    /// missing `/proc` rules it out. Default `false`: it costs one more
    /// syscall, and measured slower than a named temp on ext4 (1.06 vs 1.03
    /// times the syscall floor) and on tmpfs (see `benches/RESULTS.md`).
    pub fn unnamed_temp(&mut self, yes: bool) -> &mut Options {
        self.unnamed_temp = yes;
        self
    }

    // issue 11
    /// Replace an existing file that belongs to neither the caller nor the
    /// directory's owner in a sticky world- or group-writable directory
    /// (`/tmp`, `/var/tmp`, a shared group directory). Default `false`: such
    /// a file is refused with
    /// [`InvalidReason::ForeignFileInStickyDir`](crate::InvalidReason::ForeignFileInStickyDir),
    /// as the kernel's `protected_regular` rule refuses an `O_CREAT` open of
    /// it, because whoever planted it would own the result and could read
    /// and rewrite it. Turn it on only when the file's owner is trusted.
    pub fn replace_others_in_sticky_dirs(&mut self, yes: bool) -> &mut Options {
        self.others_in_sticky = yes;
        self
    }

    // issue 12
    /// How long [`update`](Options::update) waits for the directory lock
    /// that another update holds: `None` (the default) waits as long as it
    /// takes, `Some(Duration::ZERO)` tries once. When the time is up the
    /// update fails at [`Step::Lock`](crate::Step::Lock) with kind
    /// `TimedOut`, and nothing was changed. (An update nested inside another
    /// in the same directory, which would wait for itself, fails at once
    /// with kind `Deadlock`, whatever this says.)
    pub fn lock_timeout(&mut self, timeout: Option<std::time::Duration>) -> &mut Options {
        self.lock_timeout = timeout;
        self
    }

    /// Read-modify-write under an exclusive lock; see [`crate::update`].
    ///
    /// # Errors
    /// As [`Options::write`], plus [`Step::Lock`](crate::Step::Lock),
    /// [`Step::ReadTarget`](crate::Step::ReadTarget) and
    /// [`Step::Transform`](crate::Step::Transform) (`f` failed; nothing was changed).
    pub fn update<P, F>(&self, path: P, f: F) -> Result<(), Error>
    where
        P: AsRef<Path>,
        F: FnOnce(Option<&[u8]>) -> std::io::Result<Vec<u8>>,
    {
        Replace::update(RealSys, path.as_ref(), self, f)
    }

    /// Selects a deliberately broken protocol variant (tests only: the
    /// negative controls that prove the crash tests can fail).
    #[cfg(any(test, feature = "sim"))]
    #[doc(hidden)]
    pub fn broken(&mut self, variant: Option<crate::protocol::Broken>) -> &mut Options {
        self.broken = variant;
        self
    }

    /// Starts a streaming replace of `path`: write into the returned
    /// [`AtomicFile`], then [`commit`](AtomicFile::commit) it.
    ///
    /// # Errors
    /// The path names no file, the parent directory cannot be opened, the
    /// target is a directory, FIFO, socket or device, `create_new` is set and
    /// the target exists, or the temporary file cannot be created.
    pub fn open<P: AsRef<Path>>(&self, path: P) -> Result<AtomicFile, Error> {
        Replace::open(RealSys, path.as_ref(), self).map(AtomicFile::new)
    }

    /// Replaces `path` with `contents` in one call.
    ///
    /// # Errors
    /// As [`Options::open`], then any failure while writing, syncing or
    /// renaming; see [`Error`]. The target is unchanged unless
    /// [`Error::target_replaced`] says otherwise.
    pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(&self, path: P, contents: C) -> Result<(), Error> {
        Replace::open(RealSys, path.as_ref(), self)?.write_all_and_commit(contents.as_ref())
    }
}

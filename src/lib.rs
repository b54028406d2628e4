//! Replace files atomically and durably.
//!
//! `crashsafe::write(path, bytes)` is a drop-in for [`std::fs::write`] that
//! never leaves a torn, empty or missing file behind, whatever moment the
//! process dies or the power fails. [`AtomicFile`] does the same for content
//! written in pieces, and [`Options`] sets durability, mode, owner, symlink
//! and no-clobber behaviour.
//!
//! # Example
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("config.toml");
//! crashsafe::write(&path, "answer = 42\n")?;
//! assert_eq!(std::fs::read_to_string(&path).unwrap(), "answer = 42\n");
//! # Ok::<(), crashsafe::Error>(())
//! ```
//!
//! # Guarantees
//!
//! On filesystems that honour `fsync` (ext4, XFS, btrfs; see Limitations.
//! tmpfs keeps the atomicity, but a power cut loses all of it anyway):
//!
//! - **After `Ok`** with the default [`Durability::Durable`], the target holds
//!   exactly the new bytes, with the kept (or chosen) mode and owner, and this
//!   survives a power cut.
//! - **After a crash at any moment**, the target holds either its complete old
//!   content and metadata (or is absent, if it was absent) or the complete new
//!   content and metadata. Never empty, short, zero-filled or a mix. A stray
//!   hidden temp file `.name.crashsafe-RANDOM.tmp` may remain beside it;
//!   [`sweep`] removes it.
//! - **With [`Options::backup`]**, after a crash at any moment the old
//!   version is under the target's name or under `name~`.
//! - **After an `Err`** with [`Error::target_replaced`] false, the target is
//!   unchanged and the temp file was removed (unless [`Error::temp_left`]
//!   names it, because removing it failed too). With `target_replaced()` true
//!   the new content is in place but its durability is unknown (the directory
//!   fsync failed).
//! - With [`Durability::Consistent`] the directory fsync is skipped: after a
//!   crash the target is still old or new, but an `Ok` replace may roll back.
//!
//! These are checked by running this crate's protocol code against an
//! in-memory filesystem that models what a power cut may keep, at every crash
//! point (see `DESIGN.md`), and by tests on real filesystems.
//!
//! # How it works
//!
//! ```text
//! 1. open(parent, O_DIRECTORY)     every later call is relative to this fd;
//!                                  a symlink at the target is resolved first
//! 2. statx(parent, name)           refuse directories, special files, mount
//!                                  points; then open the old file O_NOFOLLOW:
//!                                  mode, owner, ACL, xattrs of that inode
//! 3. openat(parent, ".name.crashsafe-RANDOM.tmp", O_CREAT|O_EXCL|O_NOFOLLOW, MODE)
//!    flock(temp); fstat(temp)      MODE: 0600 when a file is replaced (it gets
//!                                  that file's mode at step 5), else the final
//!                                  mode under the umask; the lock keeps `sweep`
//!                                  away, and a temp a `sweep` took first
//!                                  (no links left) is dropped for a new name
//! 4. pwrite ...                    the caller's bytes
//! 5. fstat; fchown, fchmod         only what differs; owner first (it clears setuid)
//! 6. fsync(temp)                   data and metadata on disk before the switch
//! 7. renameat(temp -> name)        the atomic switch; RENAME_NOREPLACE for create_new
//! 8. fsync(parent)                 the switch itself on disk
//! ```
//!
//! # A set of files as one unit
//!
//! [`DirReplace`] (Linux) replaces a directory's whole set of files: it is
//! staged in a hidden sibling `.name.RANDOM.stage`, flushed, and swapped in
//! with one `renameat2(RENAME_EXCHANGE)`. After a crash the directory holds
//! the complete old set or the complete new one; a [`SetReader`] reads one
//! version, never a mix; the directory keeps its mode and owner. Files
//! carried over with [`DirReplace::keep`] are hard links (see there).
//!
//! # Security
//!
//! The library follows symlinks and replaces files in user space, where the
//! kernel's own protections never see those steps, so it applies them itself,
//! whatever the sysctls say (see README, Security):
//!
//! - `protected_symlinks`: a link in a sticky world-writable directory is
//!   followed only if it is the caller's or the directory owner's
//!   ([`InvalidReason::ForeignSymlinkInStickyDir`]);
//! - `protected_regular`: an existing file there (or in a sticky
//!   group-writable one) owned by neither is not replaced
//!   ([`InvalidReason::ForeignFileInStickyDir`],
//!   [`Options::replace_others_in_sticky_dirs`]);
//! - `/proc` magic links are refused ([`InvalidReason::ProcMagicLink`]);
//!   relative links are followed through directory fds, 40 hops as the kernel;
//! - permissions never widen: the access ACL is carried over, or else the
//!   group bits (its mask) dropped; a group that could not be kept gets at
//!   most the "other" bits; `EPERM`/`EINVAL` from `fchown` is best effort for
//!   everyone, root in a user namespace included;
//! - mode, owner, ACL and `user.*`/`security.*` xattrs come through a
//!   descriptor of the inode that was inspected (`O_NOFOLLOW`, same inode as
//!   `statx` saw): root copies `security.capability` only from the file it
//!   replaces;
//! - refused before writing: a bind-mounted target ([`InvalidReason::MountPoint`])
//!   and a `Durable` replace in a directory that cannot be read
//!   ([`InvalidReason::DirectoryNotReadable`]).
//!
//! A directory's default ACL applies to a new file as to any file created
//! there (as with `std::fs::write`); a replaced file without an ACL gets its
//! mode through a minimal ACL, which drops what the temp inherited, so the
//! default ACL's named entries gain nothing the old file did not grant.
//! Path components the kernel resolves follow its own sysctls.
//!
//! # Limitations
//!
//! - **Network and user-space filesystems** (NFS, SMB, FUSE, vboxsf) may not
//!   honour `fsync` or rename atomically across clients; no durability is
//!   claimed there.
//! - **Hard links break**: the target gets a new inode, so other names of the
//!   old file keep the old content.
//! - **Concurrent writers**: each writer has its own temp and the last rename
//!   wins; nothing is torn, but serialising writers needs a lock.
//! - **Mode, owner, ACL and xattrs** are read when the replace starts, not at
//!   commit. `user.*` and `security.*` extended attributes and the access ACL
//!   are copied by default ([`Options::preserve_xattrs`]); default ACLs and
//!   `trusted.*` xattrs are not.
//! - **Owner** is kept only when permitted (an `EPERM` or `EINVAL` from
//!   `fchown` is ignored); the mode is narrowed instead (see Security).
//! - `close` is not checked (rustix offers no checked close); the `fsync`
//!   before it reports the errors a local filesystem can give.
//! - **Platforms**: tested on Linux. Other Unix systems compile (Apple uses
//!   `F_FULLFSYNC` for the file and for the directory: a plain `fsync` there
//!   leaves both in the drive's cache, and the rename matters as much as the
//!   data); elsewhere every call returns [`std::io::ErrorKind::Unsupported`].
//! - **A directory created just before**: a file's durable replace fsyncs
//!   the file's directory, not that directory's parent, so a directory made
//!   with `std::fs::create_dir_all` a moment ago may vanish in a power cut
//!   with the file in it (ext4, XFS and btrfs keep it in practice; POSIX does
//!   not promise it). Create it with [`create_dir_all`] instead.
//!
//! # When a replace cannot work
//!
//! A rename-based replace needs what `std::fs::write` (which truncates and
//! rewrites the existing inode) does not; there `write` fails, before the
//! target is touched:
//!
//! | situation | error | what to do |
//! |---|---|---|
//! | the target is a bind mount (a file mounted over, as in containers) | `EBUSY` at [`Step::Rename`] | write through the mount source's path, or rewrite in place (not crash-safe) |
//! | you may write the file but not create files in its directory | `EACCES` at [`Step::CreateTemp`] | ask for write access to the directory, or keep the file in one you own |
//! | a sticky directory (`/tmp`) where the target belongs to another user | `EPERM` at [`Step::Rename`] | only the owner (or the directory's owner) can replace it |
//! | a disk with room for only one copy | `ENOSPC` at [`Step::Write`] | free space: the old and the new content exist together until the rename |
//!
//! In every case the target is unchanged and the temp was removed.
//!
//! # Errors
//!
//! Every [`Error`]'s message (`{}`) names the [`Step`] that failed, the
//! path and the OS reason; so does the [`std::io::Error`] it converts to
//! (keeping its kind). The reason is in the message, so `source()` is
//! `None` and reporters that walk the chain print it once; the OS error
//! number is [`Error::raw_os_error`], and [`Error::raw_os_error_of`] for a
//! converted `io::Error`. What the target holds after each kind of error:
//!
//! | step | target after the error |
//! |---|---|
//! | none ([`Error::InvalidTarget`]) | unchanged; nothing was created |
//! | [`Step::OpenParent`] .. [`Step::CreateTemp`] | unchanged; nothing was created |
//! | [`Step::Write`] .. [`Step::Rename`] | unchanged; temp removed |
//! | [`Step::SyncParent`], [`Step::RemoveTempLink`] | **replaced**, durability unknown |
//! | [`Step::RemoveTemp`] (discard) | unchanged; the temp named by [`Error::temp_left`] remains |
//! | [`Step::Lock`] (`update`: `Deadlock` for a nested update, `TimedOut`) | unchanged; nothing was created |
//! | [`Step::OpenDir`], [`Step::ReadDir`], [`Step::CreateDir`] | `sweep` / `create_dir_all` only |
//!
//! `Error` converts into [`std::io::Error`] keeping its kind (`NotFound` for
//! a missing parent, `AlreadyExists` for `create_new`, ...).
//!
//! # Cargo features
//!
//! - `sim`: exposes the crash simulator for fuzzing and downstream tests.
//! - `cli`: builds the `crashsafe` command-line tool (`crashsafe write FILE
//!   -- CMD` replaces FILE with CMD's output if CMD succeeds, `crashsafe
//!   write FILE` with standard input); the library never needs it.
//! - `tokio`: async `write`, `update` and `Batch` commit in the `tokio`
//!   module, run on tokio's blocking pool; see there what a dropped future
//!   leaves behind (nothing half-done). Without it, tokio is not a dependency.

mod batch;
// issue 16: replacing a directory's whole set of files (Linux: RENAME_EXCHANGE).
#[cfg(any(target_os = "linux", target_os = "android"))]
mod dir_replace;
mod dirs;
mod error;
mod file;
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
pub mod fuzzing;
mod options;
mod protocol;
#[cfg(all(unix, any(test, feature = "sim")))]
pub mod sim;
mod sweep;
mod sys;
mod target;
mod temp_name;
#[cfg(all(test, unix))]
mod tests;
#[cfg(feature = "tokio")]
pub mod tokio;

use std::path::Path;

pub use batch::Batch;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use dir_replace::{DirReplace, SetReader, StagedFile};
pub use error::{Error, InvalidReason, Step};
pub use file::AtomicFile;
pub use options::{Durability, HardLinks, Options};
pub use sweep::{Kept, SweepReport};

/// Replaces `path` with `contents`, atomically and durably, keeping the
/// existing file's mode and owner and following a symlink at `path`.
///
/// This is `Options::new().write(path, contents)`. If the file's directory
/// was just created, create it with [`create_dir_all`], which makes the new
/// directories themselves durable; `write` syncs only the file's directory.
///
/// # Errors
/// See [`Error`]; the target is unchanged unless [`Error::target_replaced`].
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("state.json");
/// crashsafe::write(&path, br#"{"level": 3}"#)?;
/// # Ok::<(), crashsafe::Error>(())
/// ```
pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(path: P, contents: C) -> Result<(), Error> {
    Options::new().write(path, contents)
}

/// Read-modify-write under an exclusive cross-process lock: no update is
/// ever lost.
///
/// `f` gets the current content (`None` if the file does not exist yet) and
/// returns the new content, which replaces the file as [`write`](fn@write) does. Calls
/// to `update` on files in the same directory run one at a time, across
/// threads and processes.
///
/// An `update` inside `f` of another file in the same directory would wait
/// for itself; it fails at once instead ([`Step::Lock`], kind `Deadlock`).
/// [`Options::lock_timeout`] bounds the wait for another holder, or tries
/// once. A signal that interrupts the wait (`EINTR`) does not fail it.
///
/// The lock is an `flock` on the file's (resolved) parent directory. It
/// cannot be on the file itself, since every replace gives the file a new
/// inode; a lock file beside it would be one more file to leave behind. The
/// kernel releases the lock when the process exits or is killed, so a crash
/// while holding it never blocks later writers. It is advisory: plain
/// [`write`](fn@write) calls do not take it. Updates to different files in one
/// directory are serialised too.
///
/// # Errors
/// As [`write`](fn@write), plus [`Step::Lock`], [`Step::ReadTarget`] and
/// [`Step::Transform`] (the error `f` returned; nothing was changed).
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("counter");
/// let bump = |old: Option<&[u8]>| {
///     let n: u64 = old.map_or(0, |b| String::from_utf8_lossy(b).parse().unwrap_or(0));
///     Ok((n + 1).to_string().into_bytes())
/// };
/// crashsafe::update(&path, bump)?;
/// crashsafe::update(&path, bump)?;
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "2");
/// # Ok::<(), crashsafe::Error>(())
/// ```
pub fn update<P, F>(path: P, f: F) -> Result<(), Error>
where
    P: AsRef<Path>,
    F: FnOnce(Option<&[u8]>) -> std::io::Result<Vec<u8>>,
{
    Options::new().update(path, f)
}

/// Removes this library's temp files in `dir` that were left behind by
/// crashed or killed writers, never a live writer's. Returns how many were
/// removed; [`sweep_report`] says which, and which it kept and why.
///
/// Only regular files whose names carry the temp mark
/// `.NAME.crashsafe-RANDOM.tmp` are candidates; symlinks are never followed
/// or removed, and no other name is ever touched. A temp is removed when no
/// process holds its lock (every writer locks its temp until the rename and
/// the kernel drops the lock when the writer dies), so everything a dead
/// writer left is removed at once. A writer caught between creating its
/// temp and locking it notices the removal and starts again under a new
/// name.
///
/// # Errors
/// [`Step::OpenDir`] or [`Step::ReadDir`] for `dir`, or
/// [`Step::RemoveTemp`] if a stale temp could not be removed.
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let removed = crashsafe::sweep(dir.path())?;
/// assert_eq!(removed, 0);
/// # Ok::<(), crashsafe::Error>(())
/// ```
pub fn sweep<P: AsRef<Path>>(dir: P) -> Result<usize, Error> {
    sweep_report(dir).map(|r| r.removed.len())
}

/// Creates the directory `path` and its missing parents, like
/// [`std::fs::create_dir_all`], and fsyncs each parent right after a
/// directory was created in it, so the new directories survive a power cut.
///
/// Use it for a directory that [`write`](fn@write) will put a file into:
/// `write` makes the file's own entry durable (it fsyncs the file's
/// directory), but the new directory's entry in *its* parent is durable
/// only when that parent is synced. ext4, XFS and btrfs do that in practice
/// with the file's directory fsync; POSIX does not promise it. Existing
/// directories are not synced again (a directory made by someone else is
/// theirs to sync). New directories get mode `0o777` under the umask.
///
/// # Errors
/// [`Step::OpenDir`] if a directory on the way cannot be opened,
/// [`Step::CreateDir`] if `mkdir` fails, [`Step::SyncParent`] if a parent's
/// fsync fails (the directory exists then, its durability unknown).
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let state = dir.path().join("app/state");
/// crashsafe::create_dir_all(&state)?;
/// crashsafe::write(state.join("db.json"), b"{}")?;
/// # Ok::<(), crashsafe::Error>(())
/// ```
pub fn create_dir_all<P: AsRef<Path>>(path: P) -> Result<(), Error> {
    dirs::create_dir_all(&sys::RealSys, path.as_ref())
}

/// [`sweep`], returning the temps it removed and those it kept, with the
/// reason for each.
///
/// # Errors
/// As [`sweep`].
///
/// # Examples
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let report = crashsafe::sweep_report(dir.path())?;
/// for (path, why) in &report.kept {
///     println!("kept {}: {why}", path.display());
/// }
/// # Ok::<(), crashsafe::Error>(())
/// ```
pub fn sweep_report<P: AsRef<Path>>(dir: P) -> Result<SweepReport, Error> {
    sweep::sweep(&sys::RealSys, dir.as_ref())
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

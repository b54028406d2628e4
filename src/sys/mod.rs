//! The syscall seam.
//!
//! [`Sys`] has one method per system call the protocol makes. Implementations
//! hold no policy: no retries, no cleanup, no ordering. `protocol.rs` decides all
//! of that, so the same protocol code runs against the real kernel
//! ([`RealSys`]) and against the crash simulator (`crate::sim::SimFs`).
//!
//! Errors are plain [`std::io::Error`]s carrying the OS error number
//! (`raw_os_error()`), so the simulator can produce exactly what the kernel does.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::RealSys;

#[cfg(unix)]
pub(crate) use unix::symlink_loop;

#[cfg(not(unix))]
mod unsupported;
#[cfg(not(unix))]
pub(crate) use unsupported::RealSys;
#[cfg(not(unix))]
pub(crate) use unsupported::symlink_loop;

/// What kind of object a directory entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (only seen when not following).
    Symlink,
    /// A FIFO, socket, block or character device.
    Other,
}

/// The part of `struct stat` the protocol uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The file type.
    pub(crate) kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u32,
    /// Group.
    pub(crate) gid: u32,
    /// Number of hard links.
    pub(crate) nlink: u64,
    /// Inode number.
    pub(crate) ino: u64,
    /// Last modification time, seconds since the epoch.
    pub(crate) mtime: i64,
    /// The device the inode lives on (`st_dev`).
    pub(crate) dev: u64,
    /// The inode is the root of a mount (`STATX_ATTR_MOUNT_ROOT`): a file
    /// bind-mounted over the name. Always false where the kernel cannot tell.
    pub(crate) mount_root: bool,
}

/// One method per system call the protocol makes.
///
/// Every method maps to exactly one syscall (named in its first line) and
/// returns its error unchanged. Durability notes say what a successful call
/// makes durable on a POSIX filesystem; the simulator models exactly that.
pub(crate) trait Sys: Clone {
    /// An open directory (`O_RDONLY|O_DIRECTORY|O_CLOEXEC`).
    type Dir;
    /// A temp file opened for writing.
    type File;

    /// `open(path, O_RDONLY|O_DIRECTORY|O_CLOEXEC)`: the directory all later
    /// calls are relative to. Symlinks in `path` are followed.
    fn open_dir(&self, path: &Path) -> io::Result<Self::Dir>;

    /// `statx(dir, name, AT_SYMLINK_NOFOLLOW)` (`fstatat` where there is no
    /// `statx`): also says whether the name is a mount point.
    fn stat_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Stat>;

    /// `readlinkat(dir, name)`.
    fn read_link_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<OsString>;

    /// `openat(dir, name, O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, mode)`.
    /// The kernel applies the umask to `mode`. The new name is not durable
    /// until the directory is synced.
    fn create_at(&self, dir: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<Self::File>;

    /// `pwrite(file, buf, offset)`: may write less than `buf.len()`.
    /// Not durable until [`Sys::sync_file`].
    fn write_at(&self, file: &Self::File, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// `fstat(file)`: only the permission bits are used.
    fn stat_file(&self, file: &Self::File) -> io::Result<Stat>;

    /// `fchown(file, uid, gid)`: clears setuid/setgid on regular files.
    fn set_owner(&self, file: &Self::File, uid: u32, gid: u32) -> io::Result<()>;

    /// `fchmod(file, mode)`.
    fn set_mode(&self, file: &Self::File, mode: u32) -> io::Result<()>;

    /// `fsync(file)` (`fcntl(F_FULLFSYNC)` on Apple targets): the file's data,
    /// size and metadata become durable, not the names that point to it.
    fn sync_file(&self, file: &Self::File) -> io::Result<()>;

    /// `close(file)`. Takes the file so it can't be used again.
    fn close(&self, file: Self::File);

    /// `renameat(dir, from, dir, to)`: atomically replaces `to`. Visible at
    /// once; durable only after [`Sys::sync_dir`].
    fn rename_at(&self, dir: &Self::Dir, from: &OsStr, to: &OsStr) -> io::Result<()>;

    /// `renameat2(dir, from, dir, to, RENAME_NOREPLACE)`: fails with `EEXIST`
    /// if `to` exists; `EINVAL`/`ENOSYS` where the flag is unsupported.
    fn rename_noreplace_at(&self, dir: &Self::Dir, from: &OsStr, to: &OsStr) -> io::Result<()>;

    /// `linkat(dir, from, dir, to, 0)`: fails with `EEXIST` if `to` exists.
    fn link_at(&self, dir: &Self::Dir, from: &OsStr, to: &OsStr) -> io::Result<()>;

    /// `unlinkat(dir, name, 0)`.
    fn unlink_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;

    /// `fsync(dir)`: every earlier change to the directory's entries
    /// (creates, renames, unlinks) becomes durable.
    fn sync_dir(&self, dir: &Self::Dir) -> io::Result<()>;

    /// `flock(file, LOCK_EX)`, with `LOCK_NB` unless `wait`. Advisory; the
    /// kernel drops it when the last fd of the open file closes.
    fn lock(&self, file: &Self::File, wait: bool) -> io::Result<()>;

    /// `flock(dir, LOCK_EX)`: waits for other holders of the directory lock.
    fn lock_dir(&self, dir: &Self::Dir) -> io::Result<()>;

    /// `openat(dir, name, O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_NOCTTY|O_CLOEXEC)`.
    fn open_read_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::File>;

    /// `pread(file, buf, offset)`.
    fn read_at(&self, file: &Self::File, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// `getdents` on a duplicate of `dir`: every name but `.` and `..`.
    fn read_dir(&self, dir: &Self::Dir) -> io::Result<Vec<OsString>>;

    /// `flistxattr(file)`: the names of the extended attributes of the open
    /// file (a second call only when the names do not fit a small buffer).
    fn list_xattrs(&self, file: &Self::File) -> io::Result<Vec<OsString>>;

    /// `fgetxattr(file, name)`.
    fn get_xattr(&self, file: &Self::File, name: &OsStr) -> io::Result<Vec<u8>>;

    /// `fsetxattr(file, name, value, 0)`. Durable with the file's fsync.
    fn set_xattr(&self, file: &Self::File, name: &OsStr, value: &[u8]) -> io::Result<()>;

    /// `syncfs(dir)`: everything written to the directory's filesystem
    /// becomes durable; reports writeback errors on that filesystem since
    /// `dir` was opened (Linux 5.8 and later).
    fn sync_fs(&self, dir: &Self::Dir) -> io::Result<()>;

    /// `openat(dir, ".", O_TMPFILE|O_WRONLY|O_CLOEXEC, mode)`: a file with no
    /// name, which vanishes if the process dies before it is linked.
    fn create_unnamed(&self, dir: &Self::Dir, mode: u32) -> io::Result<Self::File>;

    /// `linkat(AT_FDCWD, "/proc/self/fd/N", dir, name, AT_SYMLINK_FOLLOW)`:
    /// gives an unnamed file a name; fails with `EEXIST` if `name` exists.
    fn link_unnamed(&self, file: &Self::File, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;

    /// 64 unpredictable bits for temp names. The real backend draws them
    /// from a randomly keyed hash; the simulator from its seed.
    fn random(&self) -> u64;

    // issue 11: the kernel's own checks, mirrored where the protocol follows
    // links and opens directories itself.

    /// `fstat(dir)`: the directory's mode (sticky, writable) and owner.
    fn stat_dir(&self, dir: &Self::Dir) -> io::Result<Stat>;

    /// `openat(dir, path, O_DIRECTORY|O_CLOEXEC)` with `O_RDONLY`, or with
    /// `O_PATH` when `path_only` (a directory we may search and write but
    /// not read; such an fd serves every `*at` call but not `fsync`). With
    /// `dir` `None`, relative to the working directory. Symlinks in `path`
    /// are followed by the kernel.
    fn open_dir_at(
        &self,
        dir: Option<&Self::Dir>,
        path: &Path,
        path_only: bool,
    ) -> io::Result<Self::Dir>;

    /// `fstatfs(dir)`, reduced to one question: is the directory on
    /// `procfs` (`f_type == PROC_SUPER_MAGIC`), whose symlinks are magic.
    fn is_procfs(&self, dir: &Self::Dir) -> io::Result<bool>;

    /// `geteuid()`: whom the kernel's symlink and sticky rules call "the
    /// caller".
    fn euid(&self) -> u32;

    // issue 10: how far `syncfs` can be trusted (a directory's identity
    // is `stat_dir`'s `(dev, ino)`).

    /// `fstatfs(dir)`: the filesystem type (`f_type`, e.g. `0xEF53` for
    /// ext2/3/4, `0x794C7630` for overlayfs).
    fn fs_type(&self, dir: &Self::Dir) -> io::Result<u64>;

    /// `uname()`: the kernel's (major, minor) version; `(0, 0)` where it
    /// cannot be read. Not a per-call syscall: read once per process.
    fn kernel_version(&self) -> (u32, u32);

    // issue 11b: a default ACL inherited by the temp must not outlive the
    // old file's mode.

    /// Sets the mode and leaves the file without an access ACL: named
    /// entries a directory's default ACL gave the file at create are gone,
    /// so the mode is all the access there is. Linux: one `fsetxattr` of a
    /// minimal `system.posix_acl_access` (owner, group, other: the kernel
    /// stores it as the mode and drops the ACL), plus an `fchmod` for
    /// setuid/setgid/sticky (an ACL has no room for them), or `fchmod`
    /// alone where the filesystem has no ACLs (then none was inherited).
    fn set_mode_without_acl(&self, file: &Self::File, mode: u32) -> io::Result<()>;

    // issue 12: update without hanging; create_dir_all
    /// `flock(dir, LOCK_EX|LOCK_NB)`: `EWOULDBLOCK` while another open file
    /// description holds the lock.
    fn try_lock_dir(&self, dir: &Self::Dir) -> io::Result<()>;

    /// `fstat(dir)`: `(st_dev, st_ino)`, which tell directories apart (the
    /// locks `update` holds; the simulator makes each instance its own
    /// device here, unlike [`Sys::stat_dir`]).
    fn dir_identity(&self, dir: &Self::Dir) -> io::Result<(u64, u64)>;

    /// `mkdirat(dir, name, mode)`: the kernel applies the umask. The new
    /// entry is durable only after [`Sys::sync_dir`] of `dir`.
    fn mkdir_at(&self, dir: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<()>;
}

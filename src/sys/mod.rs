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

    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
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

    /// `openat(dir, name, O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC)`.
    fn open_read_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::File>;

    /// `pread(file, buf, offset)`.
    fn read_at(&self, file: &Self::File, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// `getdents` on a duplicate of `dir`: every name but `.` and `..`.
    fn read_dir(&self, dir: &Self::Dir) -> io::Result<Vec<OsString>>;

    /// `llistxattr(path)`: the names of the extended attributes at `path`.
    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>>;

    /// `lgetxattr(path, name)`.
    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Vec<u8>>;

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

    /// `geteuid() == 0`: decides whether an `EPERM` from `fchown` is expected.
    fn is_root(&self) -> bool;

    /// 64 unpredictable bits for temp names. The real backend draws them
    /// from a randomly keyed hash; the simulator from its seed.
    fn random(&self) -> u64;

    // issue 12: update without hanging; create_dir_all
    /// `flock(dir, LOCK_EX|LOCK_NB)`: `EWOULDBLOCK` while another open file
    /// description holds the lock.
    fn try_lock_dir(&self, dir: &Self::Dir) -> io::Result<()>;

    /// `fstat(dir)`: `(st_dev, st_ino)`, which tell directories apart.
    fn dir_identity(&self, dir: &Self::Dir) -> io::Result<(u64, u64)>;

    /// `mkdirat(dir, name, mode)`: the kernel applies the umask. The new
    /// entry is durable only after [`Sys::sync_dir`] of `dir`.
    fn mkdir_at(&self, dir: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<()>;
}

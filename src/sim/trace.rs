//! The record of every call the protocol made, for golden-trace tests and
//! for naming crash points.
//!
//! Temp names are shown with their random part masked (`.a.*.tmp`), so a
//! golden trace does not depend on the seed.

use std::ffi::OsStr;
use std::fmt;

use super::errno;
use crate::temp_name::{MARK, RANDOM_LEN, is_temp_name};

/// The syscalls of the protocol's syscall trait, one per method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Call {
    /// `open(path, O_DIRECTORY)`.
    OpenDir,
    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
    StatAt,
    /// `readlinkat(dir, name)`.
    ReadLinkAt,
    /// `openat(dir, name, O_CREAT|O_EXCL|O_NOFOLLOW)`.
    CreateAt,
    /// `pwrite(file, buf, offset)`.
    WriteAt,
    /// `fstat(file)`.
    StatFile,
    /// `fchown(file, uid, gid)`.
    SetOwner,
    /// `fchmod(file, mode)`.
    SetMode,
    /// `fsync(file)`.
    SyncFile,
    /// `close(file)`; never fails.
    Close,
    /// `renameat(dir, from, dir, to)`.
    RenameAt,
    /// `renameat2(dir, from, dir, to, RENAME_NOREPLACE)`.
    RenameNoreplaceAt,
    /// `linkat(dir, from, dir, to, 0)`.
    LinkAt,
    /// `unlinkat(dir, name, 0)`.
    UnlinkAt,
    /// `fsync(dir)`.
    SyncDir,
    /// `flock(file, LOCK_EX[|LOCK_NB])`.
    Lock,
    /// `flock(dir, LOCK_EX)`.
    LockDir,
    /// `openat(dir, name, O_RDONLY|O_NOFOLLOW|O_NONBLOCK)`.
    OpenReadAt,
    /// `pread(file, buf, offset)`.
    ReadAt,
    /// `getdents(dir)`.
    ReadDir,
    /// `flistxattr(file)`.
    ListXattrs,
    /// `fgetxattr(file, name)`.
    GetXattr,
    /// `fsetxattr(file, name, value)`.
    SetXattr,
    /// `syncfs(dir)`.
    SyncFs,
    /// `openat(dir, ".", O_TMPFILE|O_WRONLY)`.
    CreateUnnamed,
    /// `linkat(AT_FDCWD, "/proc/self/fd/N", dir, name, AT_SYMLINK_FOLLOW)`.
    LinkUnnamed,
    // issue 11: the kernel's own checks.
    /// `fstat(dir)`.
    StatDir,
    /// `openat(dir, path, O_DIRECTORY)`, `O_RDONLY` or `O_PATH`.
    OpenDirAt,
    /// `fstatfs(dir)`: is it procfs.
    IsProcfs,
    // issue 10: the filesystem type.
    /// `fstatfs(dir)`: the filesystem type.
    StatFs,
    // issue 12: update without hanging; create_dir_all
    /// `flock(dir, LOCK_EX|LOCK_NB)`.
    TryLockDir,
    /// `fstat(dir)`.
    DirIdentity,
    /// `mkdirat(dir, name, mode)`.
    MkdirAt,
}

impl Call {
    /// Every call kind, in declaration order.
    pub const ALL: [Call; 33] = [
        Call::OpenDir,
        Call::StatAt,
        Call::ReadLinkAt,
        Call::CreateAt,
        Call::WriteAt,
        Call::StatFile,
        Call::SetOwner,
        Call::SetMode,
        Call::SyncFile,
        Call::Close,
        Call::RenameAt,
        Call::RenameNoreplaceAt,
        Call::LinkAt,
        Call::UnlinkAt,
        Call::SyncDir,
        Call::Lock,
        Call::LockDir,
        Call::OpenReadAt,
        Call::ReadAt,
        Call::ReadDir,
        Call::ListXattrs,
        Call::GetXattr,
        Call::SetXattr,
        Call::SyncFs,
        Call::CreateUnnamed,
        Call::LinkUnnamed,
        Call::StatDir,
        Call::OpenDirAt,
        Call::IsProcfs,
        Call::StatFs,
        Call::TryLockDir,
        Call::DirIdentity,
        Call::MkdirAt,
    ];

    /// The method name, as in the trace.
    pub fn name(self) -> &'static str {
        match self {
            Call::OpenDir => "open_dir",
            Call::StatAt => "stat_at",
            Call::ReadLinkAt => "read_link_at",
            Call::CreateAt => "create_at",
            Call::WriteAt => "write_at",
            Call::StatFile => "stat_file",
            Call::SetOwner => "set_owner",
            Call::SetMode => "set_mode",
            Call::SyncFile => "sync_file",
            Call::Close => "close",
            Call::RenameAt => "rename_at",
            Call::RenameNoreplaceAt => "rename_noreplace_at",
            Call::LinkAt => "link_at",
            Call::UnlinkAt => "unlink_at",
            Call::SyncDir => "sync_dir",
            Call::Lock => "lock",
            Call::LockDir => "lock_dir",
            Call::OpenReadAt => "open_read_at",
            Call::ReadAt => "read_at",
            Call::ReadDir => "read_dir",
            Call::ListXattrs => "list_xattrs",
            Call::GetXattr => "get_xattr",
            Call::SetXattr => "set_xattr",
            Call::SyncFs => "sync_fs",
            Call::CreateUnnamed => "create_unnamed",
            Call::LinkUnnamed => "link_unnamed",
            Call::StatDir => "stat_dir",
            Call::OpenDirAt => "open_dir_at",
            Call::IsProcfs => "is_procfs",
            Call::StatFs => "stat_fs",
            Call::TryLockDir => "try_lock_dir",
            Call::DirIdentity => "dir_identity",
            Call::MkdirAt => "mkdir_at",
        }
    }

    /// Whether the call can fail (and so take an injected fault).
    pub fn can_fail(self) -> bool {
        self != Call::Close
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One call: what was asked and what it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Which call.
    pub call: Call,
    /// The arguments, rendered (paths, names, sizes, modes).
    pub args: String,
    /// The return value (bytes written or read for `write_at` and
    /// `read_at`, else 0) or the error number.
    pub result: Result<u64, i32>,
    /// True if the error was injected by a fault plan.
    pub injected: bool,
}

impl TraceEntry {
    /// The error number, if the call failed.
    pub fn errno(&self) -> Option<i32> {
        self.result.err()
    }
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.call, self.args)?;
        match (self.call, self.result) {
            (Call::Close, _) => Ok(()),
            (Call::WriteAt | Call::ReadAt, Ok(n)) => write!(f, " = {n}"),
            (_, Ok(_)) => write!(f, " = ok"),
            (_, Err(e)) if self.injected => write!(f, " = {} (injected)", errno::name(e)),
            (_, Err(e)) => write!(f, " = {}", errno::name(e)),
        }
    }
}

/// A name for a trace: temp names get their random part masked.
pub(crate) fn show(name: &OsStr) -> String {
    let text = name.to_string_lossy();
    if !is_temp_name(name) {
        return text.into_owned();
    }
    // ".{name}.crashsafe-{RANDOM}.tmp": replace "crashsafe-RANDOM" by '*'.
    let bytes = text.as_bytes();
    let end = bytes.len() - ".tmp".len();
    let start = end - RANDOM_LEN - MARK.len() + 1;
    format!("{}*{}", &text[..start], &text[end..])
}

//! [`Sys`] on the real kernel, through rustix. One syscall per method, no policy.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::{Kind, Stat, Sys};

/// The real kernel. Zero-sized: every call goes straight to rustix.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RealSys;

fn err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `ELOOP`, for a symlink chain longer than the protocol follows.
pub(crate) fn symlink_loop() -> io::Error {
    err(rustix::io::Errno::LOOP)
}

// `st_mode` and `st_nlink` have different widths across Unix targets.
#[allow(clippy::unnecessary_cast)]
fn to_stat(st: &rustix::fs::Stat) -> Stat {
    let kind = match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    Stat {
        kind,
        mode: st.st_mode as u32 & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink as u64,
        ino: st.st_ino as u64,
        mtime: st.st_mtime as i64,
        dev: st.st_dev as u64,
        mount_root: false,
    }
}

/// `statx` with the attributes the protocol reads, where the kernel has it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn statx_at(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<Stat> {
    use rustix::fs::{StatxAttributes, StatxFlags};
    let want = StatxFlags::TYPE
        | StatxFlags::MODE
        | StatxFlags::UID
        | StatxFlags::GID
        | StatxFlags::NLINK
        | StatxFlags::INO
        | StatxFlags::MTIME;
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
    let st = rustix::fs::statx(dir, name, flags, want)?;
    let kind = match FileType::from_raw_mode(st.stx_mode.into()) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    let root = StatxAttributes::MOUNT_ROOT;
    Ok(Stat {
        kind,
        mode: u32::from(st.stx_mode) & 0o7777,
        uid: st.stx_uid,
        gid: st.stx_gid,
        nlink: u64::from(st.stx_nlink),
        ino: st.stx_ino,
        mtime: st.stx_mtime.tv_sec,
        dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
        mount_root: st.stx_attributes_mask.contains(root) && st.stx_attributes.contains(root),
    })
}

impl Sys for RealSys {
    type Dir = OwnedFd;
    type File = OwnedFd;

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::open(path, flags, Mode::empty()).map_err(err)
    }

    fn stat_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<Stat> {
        // statx answers "is this a mount point" in the same call; rustix
        // reports ENOSYS where the kernel (or a seccomp filter) lacks it.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        match statx_at(dir, name) {
            Err(rustix::io::Errno::NOSYS) => {}
            result => return result.map_err(err),
        }
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
        Ok(to_stat(&st))
    }

    fn read_link_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<OsString> {
        let target = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(err)?;
        Ok(OsString::from_vec(target.into_bytes()))
    }

    fn create_at(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<OwnedFd> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode as _)).map_err(err)
    }

    fn write_at(&self, file: &OwnedFd, buf: &[u8], offset: u64) -> io::Result<usize> {
        rustix::io::pwrite(file, buf, offset).map_err(err)
    }

    fn stat_file(&self, file: &OwnedFd) -> io::Result<Stat> {
        Ok(to_stat(&rustix::fs::fstat(file).map_err(err)?))
    }

    fn set_owner(&self, file: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
        let uid = rustix::fs::Uid::from_raw(uid);
        let gid = rustix::fs::Gid::from_raw(gid);
        rustix::fs::fchown(file, Some(uid), Some(gid)).map_err(err)
    }

    fn set_mode(&self, file: &OwnedFd, mode: u32) -> io::Result<()> {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode as _)).map_err(err)
    }

    fn sync_file(&self, file: &OwnedFd) -> io::Result<()> {
        // Apple's fsync leaves data in the drive's cache; F_FULLFSYNC flushes it.
        #[cfg(target_vendor = "apple")]
        return rustix::fs::fcntl_fullfsync(file).map_err(err);
        #[cfg(not(target_vendor = "apple"))]
        rustix::fs::fsync(file).map_err(err)
    }

    fn close(&self, file: OwnedFd) {
        // rustix offers no checked close; on local filesystems close reports
        // nothing that the preceding fsync did not (see Limitations).
        drop(file);
    }

    fn rename_at(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::renameat(dir, from, dir, to).map_err(err)
    }

    fn rename_noreplace_at(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            let flags = rustix::fs::RenameFlags::NOREPLACE;
            rustix::fs::renameat_with(dir, from, dir, to, flags).map_err(err)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
        {
            let _ = (dir, from, to);
            Err(err(rustix::io::Errno::NOSYS))
        }
    }

    fn link_at(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::linkat(dir, from, dir, to, AtFlags::empty()).map_err(err)
    }

    fn unlink_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(err)
    }

    fn sync_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        // As for files: Apple's fsync leaves the rename in the drive's cache.
        #[cfg(target_vendor = "apple")]
        return rustix::fs::fcntl_fullfsync(dir).map_err(err);
        #[cfg(not(target_vendor = "apple"))]
        rustix::fs::fsync(dir).map_err(err)
    }

    fn lock(&self, file: &OwnedFd, wait: bool) -> io::Result<()> {
        use rustix::fs::FlockOperation;
        let op = if wait {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        rustix::fs::flock(file, op).map_err(err)
    }

    fn lock_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        rustix::fs::flock(dir, rustix::fs::FlockOperation::LockExclusive).map_err(err)
    }

    fn open_read_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
        // O_NONBLOCK: a FIFO must not block the open; O_NOCTTY: a terminal
        // must never become our controlling one.
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(err)
    }

    fn read_at(&self, file: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        rustix::io::pread(file, buf, offset).map_err(err)
    }

    fn read_dir(&self, dir: &OwnedFd) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir).map_err(err)? {
            let name = entry.map_err(err)?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name));
            }
        }
        Ok(names)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn list_xattrs(&self, file: &OwnedFd) -> io::Result<Vec<OsString>> {
        // Most files have no attributes or a few short names: one call into
        // a small buffer; ask for the size only when that is too small.
        let mut list = vec![0u8; 256];
        let len = match rustix::fs::flistxattr(file, &mut list[..]) {
            Ok(len) => len,
            Err(rustix::io::Errno::RANGE) => {
                let len = rustix::fs::flistxattr_query(file).map_err(err)?;
                list = vec![0u8; len];
                rustix::fs::flistxattr(file, &mut list[..]).map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
        Ok(list[..len]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsString::from_vec(n.to_vec()))
            .collect())
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn get_xattr(&self, file: &OwnedFd, name: &OsStr) -> io::Result<Vec<u8>> {
        let len = rustix::fs::fgetxattr_query(file, name).map_err(err)?;
        let mut value = vec![0u8; len];
        let len = rustix::fs::fgetxattr(file, name, &mut value[..]).map_err(err)?;
        value.truncate(len);
        Ok(value)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn set_xattr(&self, file: &OwnedFd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::fsetxattr(file, name, value, flags).map_err(err)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn list_xattrs(&self, _: &OwnedFd) -> io::Result<Vec<OsString>> {
        Err(err(rustix::io::Errno::NOSYS))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn get_xattr(&self, _: &OwnedFd, _: &OsStr) -> io::Result<Vec<u8>> {
        Err(err(rustix::io::Errno::NOSYS))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn set_xattr(&self, _: &OwnedFd, _: &OsStr, _: &[u8]) -> io::Result<()> {
        Err(err(rustix::io::Errno::NOSYS))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn sync_fs(&self, dir: &OwnedFd) -> io::Result<()> {
        rustix::fs::syncfs(dir).map_err(err)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn sync_fs(&self, _: &OwnedFd) -> io::Result<()> {
        Err(err(rustix::io::Errno::NOSYS))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn create_unnamed(&self, dir: &OwnedFd, mode: u32) -> io::Result<OwnedFd> {
        // Without /proc the temp could never be linked: report O_TMPFILE as
        // unsupported here, so the caller falls back before writing.
        static PROC_FD: OnceLock<bool> = OnceLock::new();
        let proc_fd = *PROC_FD.get_or_init(|| {
            rustix::fs::access("/proc/self/fd", rustix::fs::Access::EXISTS).is_ok()
        });
        if !proc_fd {
            return Err(err(rustix::io::Errno::OPNOTSUPP));
        }
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(mode as _)).map_err(err)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn link_unnamed(&self, file: &OwnedFd, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let cwd = rustix::fs::CWD;
        rustix::fs::linkat(cwd, proc_path.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW).map_err(err)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn create_unnamed(&self, _: &OwnedFd, _: u32) -> io::Result<OwnedFd> {
        Err(err(rustix::io::Errno::OPNOTSUPP))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn link_unnamed(&self, _: &OwnedFd, _: &OwnedFd, _: &OsStr) -> io::Result<()> {
        Err(err(rustix::io::Errno::OPNOTSUPP))
    }

    fn random(&self) -> u64 {
        // A process-wide SipHash key drawn from the OS once, applied to a
        // counter and the clock: unpredictable to other users, no syscall
        // per name. A forked child shares the key and counter, so two
        // processes may rarely draw the same name: O_EXCL then fails and
        // the protocol draws again.
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        h.write_u128(now.map(|d| d.as_nanos()).unwrap_or(0));
        h.finish()
    }

    // issue 11: the kernel's own checks, mirrored where the protocol follows
    // links and opens directories itself.

    fn stat_dir(&self, dir: &OwnedFd) -> io::Result<Stat> {
        Ok(to_stat(&rustix::fs::fstat(dir).map_err(err)?))
    }

    fn open_dir_at(
        &self,
        dir: Option<&OwnedFd>,
        path: &Path,
        path_only: bool,
    ) -> io::Result<OwnedFd> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let access = if path_only {
            OFlags::PATH
        } else {
            OFlags::RDONLY
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let access = {
            let _ = path_only;
            OFlags::RDONLY
        };
        let flags = access | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match dir {
            Some(dir) => rustix::fs::openat(dir, path, flags, Mode::empty()),
            None => rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty()),
        }
        .map_err(err)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn is_procfs(&self, dir: &OwnedFd) -> io::Result<bool> {
        let st = rustix::fs::fstatfs(dir).map_err(err)?;
        Ok(st.f_type == rustix::fs::PROC_SUPER_MAGIC)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn is_procfs(&self, _: &OwnedFd) -> io::Result<bool> {
        // No magic links elsewhere: a `/proc` there holds plain files.
        Ok(false)
    }

    fn euid(&self) -> u32 {
        rustix::process::geteuid().as_raw()
    }

    // issue 10: how far `syncfs` can be trusted.

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn fs_type(&self, dir: &OwnedFd) -> io::Result<u64> {
        let st = rustix::fs::fstatfs(dir).map_err(err)?;
        #[allow(clippy::unnecessary_cast)]
        Ok(st.f_type as u64)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn fs_type(&self, _: &OwnedFd) -> io::Result<u64> {
        Err(err(rustix::io::Errno::NOSYS))
    }

    fn kernel_version(&self) -> (u32, u32) {
        static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
        *VERSION.get_or_init(|| {
            let uname = rustix::system::uname();
            parse_release(uname.release().to_bytes())
        })
    }

    // issue 11b: a default ACL inherited by the temp must not outlive the
    // old file's mode.

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn set_mode_without_acl(&self, file: &OwnedFd, mode: u32) -> io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        let acl = minimal_acl(mode);
        match rustix::fs::fsetxattr(file, "system.posix_acl_access", &acl, flags) {
            Ok(()) if mode & 0o7000 == 0 => Ok(()),
            // The ACL is gone, so this fchmod can no longer raise a mask.
            Ok(()) => self.set_mode(file, mode),
            // No ACLs here: the temp cannot have inherited one.
            Err(rustix::io::Errno::OPNOTSUPP) => self.set_mode(file, mode),
            // A filesystem that refuses this ACL for another reason: fchmod,
            // unless the temp has an ACL (or may have one) whose mask the
            // fchmod would open up.
            Err(e) => {
                let no_acl = match self.list_xattrs(file) {
                    Ok(names) => !names.iter().any(|n| n == "system.posix_acl_access"),
                    Err(no) => {
                        no.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error())
                    }
                };
                if no_acl {
                    self.set_mode(file, mode)
                } else {
                    Err(err(e))
                }
            }
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn set_mode_without_acl(&self, file: &OwnedFd, mode: u32) -> io::Result<()> {
        self.set_mode(file, mode)
    }

    // issue 12: update without hanging; create_dir_all
    fn try_lock_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        let op = rustix::fs::FlockOperation::NonBlockingLockExclusive;
        rustix::fs::flock(dir, op).map_err(err)
    }

    fn dir_identity(&self, dir: &OwnedFd) -> io::Result<(u64, u64)> {
        let st = self.stat_dir(dir)?;
        Ok((st.dev, st.ino))
    }

    fn mkdir_at(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode as _)).map_err(err)
    }
}

/// `"5.15.0-91-generic"` -> `(5, 15)`; anything unreadable -> `(0, 0)`.
fn parse_release(release: &[u8]) -> (u32, u32) {
    let text = String::from_utf8_lossy(release);
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok());
    let minor = parts.next().and_then(|p| p.parse().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor),
        _ => (0, 0),
    }
}

/// The access ACL that says exactly what `mode`'s permission bits say
/// (Linux's xattr form: version 2, then tag, permissions and id per entry,
/// sorted by tag; ids unused for these three entries).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn minimal_acl(mode: u32) -> [u8; 28] {
    const USER_OBJ: u16 = 0x01;
    const GROUP_OBJ: u16 = 0x04;
    const OTHER: u16 = 0x20;
    let mut acl = [0u8; 28];
    acl[..4].copy_from_slice(&2u32.to_le_bytes());
    let entries = [(USER_OBJ, mode >> 6), (GROUP_OBJ, mode >> 3), (OTHER, mode)];
    for (i, (tag, perm)) in entries.into_iter().enumerate() {
        let at = 4 + 8 * i;
        acl[at..at + 2].copy_from_slice(&tag.to_le_bytes());
        acl[at + 2..at + 4].copy_from_slice(&((perm & 7) as u16).to_le_bytes());
        acl[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    acl
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_releases_parse() {
        use super::parse_release;
        assert_eq!(parse_release(b"5.15.0-91-generic"), (5, 15));
        assert_eq!(parse_release(b"6.8.12"), (6, 8));
        assert_eq!(parse_release(b"4.19-rc1"), (4, 19));
        assert_eq!(parse_release(b"weird"), (0, 0));
    }
}

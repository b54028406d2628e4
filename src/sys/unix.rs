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
    }
}

impl Sys for RealSys {
    type Dir = OwnedFd;
    type File = OwnedFd;

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::open(path, flags, Mode::empty()).map_err(err)
    }

    fn stat_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<Stat> {
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
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
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
    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let len = rustix::fs::llistxattr_query(path).map_err(err)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut list = vec![0u8; len];
        let len = rustix::fs::llistxattr(path, &mut list[..]).map_err(err)?;
        Ok(list[..len]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsString::from_vec(n.to_vec()))
            .collect())
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Vec<u8>> {
        let len = rustix::fs::lgetxattr_query(path, name).map_err(err)?;
        let mut value = vec![0u8; len];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..]).map_err(err)?;
        value.truncate(len);
        Ok(value)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn set_xattr(&self, file: &OwnedFd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::fsetxattr(file, name, value, flags).map_err(err)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn list_xattrs(&self, _: &Path) -> io::Result<Vec<OsString>> {
        Err(err(rustix::io::Errno::NOSYS))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn get_xattr(&self, _: &Path, _: &OsStr) -> io::Result<Vec<u8>> {
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

    fn is_root(&self) -> bool {
        rustix::process::geteuid().is_root()
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

    // issue 12: update without hanging; create_dir_all
    fn try_lock_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        let op = rustix::fs::FlockOperation::NonBlockingLockExclusive;
        rustix::fs::flock(dir, op).map_err(err)
    }

    fn dir_identity(&self, dir: &OwnedFd) -> io::Result<(u64, u64)> {
        let st = rustix::fs::fstat(dir).map_err(err)?;
        #[allow(clippy::unnecessary_cast)] // the field types differ by platform
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    fn mkdir_at(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode as _)).map_err(err)
    }
}

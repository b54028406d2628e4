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
        rustix::fs::fsync(dir).map_err(err)
    }

    fn is_root(&self) -> bool {
        rustix::process::geteuid().is_root()
    }

    fn random(&self) -> u64 {
        // A process-wide SipHash key drawn from the OS once, applied to a
        // counter and the clock: unpredictable to other users, no syscall per name.
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        h.write_u128(now.map(|d| d.as_nanos()).unwrap_or(0));
        h.write_u32(std::process::id());
        h.finish()
    }
}

//! [`Sys`] on platforms without the POSIX calls the protocol needs: every
//! call fails with `io::ErrorKind::Unsupported`, so the public API compiles
//! everywhere and reports the platform plainly.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use super::{Stat, Sys};

/// Stands in for the kernel where the protocol is not implemented.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RealSys;

/// Never constructed: no call can return one.
#[derive(Debug)]
pub(crate) enum Never {}

fn unsupported<T>() -> io::Result<T> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "crashsafe supports only Unix platforms",
    ))
}

/// Stands in for `ELOOP`; never reached on these platforms.
pub(crate) fn symlink_loop() -> io::Error {
    io::Error::other("too many levels of symbolic links")
}

impl Sys for RealSys {
    type Dir = Never;
    type File = Never;

    fn open_dir(&self, _: &Path) -> io::Result<Never> {
        unsupported()
    }
    fn stat_at(&self, d: &Never, _: &OsStr) -> io::Result<Stat> {
        match *d {}
    }
    fn read_link_at(&self, d: &Never, _: &OsStr) -> io::Result<OsString> {
        match *d {}
    }
    fn create_at(&self, d: &Never, _: &OsStr, _: u32) -> io::Result<Never> {
        match *d {}
    }
    fn write_at(&self, f: &Never, _: &[u8], _: u64) -> io::Result<usize> {
        match *f {}
    }
    fn stat_file(&self, f: &Never) -> io::Result<Stat> {
        match *f {}
    }
    fn set_owner(&self, f: &Never, _: u32, _: u32) -> io::Result<()> {
        match *f {}
    }
    fn set_mode(&self, f: &Never, _: u32) -> io::Result<()> {
        match *f {}
    }
    fn sync_file(&self, f: &Never) -> io::Result<()> {
        match *f {}
    }
    fn close(&self, f: Never) {
        match f {}
    }
    fn rename_at(&self, d: &Never, _: &OsStr, _: &OsStr) -> io::Result<()> {
        match *d {}
    }
    fn rename_noreplace_at(&self, d: &Never, _: &OsStr, _: &OsStr) -> io::Result<()> {
        match *d {}
    }
    fn link_at(&self, d: &Never, _: &OsStr, _: &OsStr) -> io::Result<()> {
        match *d {}
    }
    fn unlink_at(&self, d: &Never, _: &OsStr) -> io::Result<()> {
        match *d {}
    }
    fn sync_dir(&self, d: &Never) -> io::Result<()> {
        match *d {}
    }
    fn lock(&self, f: &Never, _: bool) -> io::Result<()> {
        match *f {}
    }
    fn lock_dir(&self, d: &Never) -> io::Result<()> {
        match *d {}
    }
    fn open_read_at(&self, d: &Never, _: &OsStr) -> io::Result<Never> {
        match *d {}
    }
    fn read_at(&self, f: &Never, _: &mut [u8], _: u64) -> io::Result<usize> {
        match *f {}
    }
    fn read_dir(&self, d: &Never) -> io::Result<Vec<OsString>> {
        match *d {}
    }
    fn list_xattrs(&self, f: &Never) -> io::Result<Vec<OsString>> {
        match *f {}
    }
    fn get_xattr(&self, f: &Never, _: &OsStr) -> io::Result<Vec<u8>> {
        match *f {}
    }
    fn set_xattr(&self, f: &Never, _: &OsStr, _: &[u8]) -> io::Result<()> {
        match *f {}
    }
    fn sync_fs(&self, d: &Never) -> io::Result<()> {
        match *d {}
    }
    fn create_unnamed(&self, d: &Never, _: u32) -> io::Result<Never> {
        match *d {}
    }
    fn link_unnamed(&self, f: &Never, _: &Never, _: &OsStr) -> io::Result<()> {
        match *f {}
    }
    fn random(&self) -> u64 {
        0
    }

    // issue 11: the kernel's own checks.
    fn stat_dir(&self, d: &Never) -> io::Result<Stat> {
        match *d {}
    }
    fn open_dir_at(&self, _: Option<&Never>, _: &Path, _: bool) -> io::Result<Never> {
        unsupported()
    }
    fn is_procfs(&self, d: &Never) -> io::Result<bool> {
        match *d {}
    }
    fn euid(&self) -> u32 {
        0
    }
    // issue 10: how far `syncfs` can be trusted.
    fn fs_type(&self, d: &Never) -> io::Result<u64> {
        match *d {}
    }
    fn kernel_version(&self) -> (u32, u32) {
        (0, 0)
    }

    // issue 11b: a default ACL inherited by the temp.
    fn set_mode_without_acl(&self, f: &Never, _: u32) -> io::Result<()> {
        match *f {}
    }

    // issue 12: update without hanging; create_dir_all
    fn try_lock_dir(&self, d: &Never) -> io::Result<()> {
        match *d {}
    }
    fn dir_identity(&self, d: &Never) -> io::Result<(u64, u64)> {
        match *d {}
    }
    fn mkdir_at(&self, d: &Never, _: &OsStr, _: u32) -> io::Result<()> {
        match *d {}
    }
}

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
    fn list_xattrs(&self, _: &Path) -> io::Result<Vec<OsString>> {
        unsupported()
    }
    fn get_xattr(&self, _: &Path, _: &OsStr) -> io::Result<Vec<u8>> {
        unsupported()
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
    fn is_root(&self) -> bool {
        false
    }
    fn random(&self) -> u64 {
        0
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

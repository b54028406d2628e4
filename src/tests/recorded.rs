//! Batches on the real kernel with their flushes recorded (issue 10): the
//! real syscalls, through a [`Sys`] that forwards to [`RealSys`] and notes
//! the identity (`st_dev`, `st_ino`) of every directory fsynced and every
//! filesystem `syncfs`ed. This is the power-cut argument on a real
//! filesystem without a power cut: after `Ok`, every real directory that
//! holds a `Durable` file was fsynced, and every filesystem holding a temp
//! was flushed.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::batch::Entries;
use crate::options::{Durability, Options};
use crate::sys::{RealSys, Stat, Sys};

/// What the batch flushed: directory fsyncs and syncfs calls, by identity.
#[derive(Clone, Default)]
struct Recorder {
    dir_syncs: Arc<Mutex<Vec<(u64, u64)>>>,
    fs_syncs: Arc<Mutex<Vec<u64>>>,
    file_syncs: Arc<Mutex<usize>>,
}

impl Sys for Recorder {
    type Dir = OwnedFd;
    type File = OwnedFd;
    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        RealSys.open_dir(path)
    }
    fn stat_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<Stat> {
        RealSys.stat_at(dir, name)
    }
    fn read_link_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<OsString> {
        RealSys.read_link_at(dir, name)
    }
    fn create_at(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<OwnedFd> {
        RealSys.create_at(dir, name, mode)
    }
    fn write_at(&self, file: &OwnedFd, buf: &[u8], offset: u64) -> io::Result<usize> {
        RealSys.write_at(file, buf, offset)
    }
    fn stat_file(&self, file: &OwnedFd) -> io::Result<Stat> {
        RealSys.stat_file(file)
    }
    fn set_owner(&self, file: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
        RealSys.set_owner(file, uid, gid)
    }
    fn set_mode(&self, file: &OwnedFd, mode: u32) -> io::Result<()> {
        RealSys.set_mode(file, mode)
    }
    fn sync_file(&self, file: &OwnedFd) -> io::Result<()> {
        *self.file_syncs.lock().unwrap() += 1;
        RealSys.sync_file(file)
    }
    fn close(&self, file: OwnedFd) {
        RealSys.close(file)
    }
    fn rename_at(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        RealSys.rename_at(dir, from, to)
    }
    fn rename_noreplace_at(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        RealSys.rename_noreplace_at(dir, from, to)
    }
    fn link_at(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        RealSys.link_at(dir, from, to)
    }
    fn unlink_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        RealSys.unlink_at(dir, name)
    }
    fn sync_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        self.dir_syncs
            .lock()
            .unwrap()
            .push(RealSys.stat_dir(dir).map(|st| (st.dev, st.ino))?);
        RealSys.sync_dir(dir)
    }
    fn lock(&self, file: &OwnedFd, wait: bool) -> io::Result<()> {
        RealSys.lock(file, wait)
    }
    fn lock_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        RealSys.lock_dir(dir)
    }
    fn open_read_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
        RealSys.open_read_at(dir, name)
    }
    fn read_at(&self, file: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        RealSys.read_at(file, buf, offset)
    }
    fn read_dir(&self, dir: &OwnedFd) -> io::Result<Vec<OsString>> {
        RealSys.read_dir(dir)
    }
    fn list_xattrs(&self, file: &OwnedFd) -> io::Result<Vec<OsString>> {
        RealSys.list_xattrs(file)
    }
    fn get_xattr(&self, file: &OwnedFd, name: &OsStr) -> io::Result<Vec<u8>> {
        RealSys.get_xattr(file, name)
    }
    fn set_xattr(&self, file: &OwnedFd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        RealSys.set_xattr(file, name, value)
    }
    fn sync_fs(&self, dir: &OwnedFd) -> io::Result<()> {
        self.fs_syncs
            .lock()
            .unwrap()
            .push(RealSys.stat_dir(dir)?.dev);
        RealSys.sync_fs(dir)
    }
    fn create_unnamed(&self, dir: &OwnedFd, mode: u32) -> io::Result<OwnedFd> {
        RealSys.create_unnamed(dir, mode)
    }
    fn link_unnamed(&self, file: &OwnedFd, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        RealSys.link_unnamed(file, dir, name)
    }
    fn random(&self) -> u64 {
        RealSys.random()
    }
    fn stat_dir(&self, dir: &OwnedFd) -> io::Result<Stat> {
        RealSys.stat_dir(dir)
    }
    fn open_dir_at(
        &self,
        dir: Option<&OwnedFd>,
        path: &Path,
        path_only: bool,
    ) -> io::Result<OwnedFd> {
        RealSys.open_dir_at(dir, path, path_only)
    }
    fn is_procfs(&self, dir: &OwnedFd) -> io::Result<bool> {
        RealSys.is_procfs(dir)
    }
    fn euid(&self) -> u32 {
        RealSys.euid()
    }
    fn fs_type(&self, dir: &OwnedFd) -> io::Result<u64> {
        RealSys.fs_type(dir)
    }
    fn kernel_version(&self) -> (u32, u32) {
        RealSys.kernel_version()
    }
    fn set_mode_without_acl(&self, file: &OwnedFd, mode: u32) -> io::Result<()> {
        RealSys.set_mode_without_acl(file, mode)
    }
    fn try_lock_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        RealSys.try_lock_dir(dir)
    }
    fn dir_identity(&self, dir: &OwnedFd) -> io::Result<(u64, u64)> {
        RealSys.dir_identity(dir)
    }
    fn mkdir_at(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
        RealSys.mkdir_at(dir, name, mode)
    }
}

fn id(path: &Path) -> (u64, u64) {
    let m = fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// Checks what a committed batch flushed: each of `durable_dirs` fsynced
/// exactly once, nothing else fsynced, and each filesystem of `dirs`
/// flushed (by syncfs, or by an fsync per temp where syncfs is not
/// trusted).
fn assert_flushed(rec: &Recorder, durable_dirs: &[&Path], dirs: &[&Path], files: usize) {
    let mut synced = rec.dir_syncs.lock().unwrap().clone();
    synced.sort_unstable();
    let mut want: Vec<(u64, u64)> = durable_dirs.iter().map(|d| id(d)).collect();
    want.sort_unstable();
    want.dedup();
    assert_eq!(synced, want, "directory fsyncs");
    let devs: BTreeSet<u64> = dirs.iter().map(|d| id(d).0).collect();
    let fs_synced: BTreeSet<u64> = rec.fs_syncs.lock().unwrap().iter().copied().collect();
    let file_syncs = *rec.file_syncs.lock().unwrap();
    // Where syncfs is trusted it is used once per filesystem; elsewhere
    // every temp on that filesystem is fsynced.
    assert!(
        fs_synced == devs || (fs_synced.is_subset(&devs) && file_syncs > 0),
        "syncfs on {fs_synced:?}, {file_syncs} file fsyncs, for {devs:?}"
    );
    assert_eq!(
        rec.fs_syncs.lock().unwrap().len(),
        fs_synced.len(),
        "one syncfs per fs"
    );
    assert!(file_syncs <= files);
}

fn durable() -> Options {
    Options::new()
}

fn consistent() -> Options {
    let mut opts = Options::new();
    opts.durability(Durability::Consistent);
    opts
}

#[test]
fn chdir_between_relative_writes_fsyncs_both_directories() {
    // The only lib test that changes the working directory; every other
    // real-filesystem test uses absolute paths.
    let root = tempfile::tempdir().unwrap();
    let (d, e) = (root.path().join("d"), root.path().join("e"));
    fs::create_dir(&d).unwrap();
    fs::create_dir(&e).unwrap();
    let before = std::env::current_dir().unwrap();
    let rec = Recorder::default();
    let mut batch = Entries::new(rec.clone());
    std::env::set_current_dir(&d).unwrap();
    let first = batch.write(&durable(), Path::new("a"), b"d/a");
    std::env::set_current_dir(&e).unwrap();
    let second = batch.write(&durable(), Path::new("a"), b"e/a");
    std::env::set_current_dir(&before).unwrap();
    first.unwrap();
    second.unwrap();
    batch.commit().unwrap();
    assert_eq!(fs::read(d.join("a")).unwrap(), b"d/a");
    assert_eq!(fs::read(e.join("a")).unwrap(), b"e/a");
    assert_flushed(&rec, &[&d, &e], &[&d, &e], 2);
}

#[test]
fn a_repointed_symlink_fsyncs_both_directories() {
    let root = tempfile::tempdir().unwrap();
    let (d, e, l) = (
        root.path().join("d"),
        root.path().join("e"),
        root.path().join("l"),
    );
    fs::create_dir(&d).unwrap();
    fs::create_dir(&e).unwrap();
    std::os::unix::fs::symlink(&d, &l).unwrap();
    let rec = Recorder::default();
    let mut batch = Entries::new(rec.clone());
    batch.write(&durable(), &l.join("x"), b"x").unwrap();
    fs::remove_file(&l).unwrap();
    std::os::unix::fs::symlink(&e, &l).unwrap();
    batch.write(&durable(), &l.join("y"), b"y").unwrap();
    batch.commit().unwrap();
    assert_flushed(&rec, &[&d, &e], &[&d, &e], 2);
}

#[test]
fn mixed_durability_fsyncs_the_directory_once() {
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    let rec = Recorder::default();
    let mut batch = Entries::new(rec.clone());
    batch.write(&consistent(), &d.join("cache"), b"c").unwrap();
    batch.write(&durable(), &d.join("important"), b"i").unwrap();
    batch.write(&consistent(), &d.join("more"), b"m").unwrap();
    batch.commit().unwrap();
    assert_flushed(&rec, &[d], &[d], 3);
}

#[test]
fn a_consistent_only_directory_is_not_fsynced() {
    let root = tempfile::tempdir().unwrap();
    let (d, e) = (root.path().join("d"), root.path().join("e"));
    fs::create_dir(&d).unwrap();
    fs::create_dir(&e).unwrap();
    let rec = Recorder::default();
    let mut batch = Entries::new(rec.clone());
    batch.write(&consistent(), &d.join("a"), b"a").unwrap();
    batch.write(&durable(), &e.join("b"), b"b").unwrap();
    batch.commit().unwrap();
    assert_flushed(&rec, &[&e], &[&d, &e], 2);
}

#[test]
fn two_filesystems_are_both_flushed() {
    // /dev/shm is a tmpfs where there is one; the temp dir is on the disk.
    let shm = Path::new("/dev/shm");
    let Ok(t) = tempfile::tempdir_in(shm) else {
        println!("skipped: two_filesystems_are_both_flushed: no writable /dev/shm");
        return;
    };
    let w = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    if id(t.path()).0 == id(w.path()).0 {
        println!("skipped: two_filesystems_are_both_flushed: /dev/shm is on the same fs");
        return;
    }
    let rec = Recorder::default();
    let mut batch = Entries::new(rec.clone());
    batch.write(&durable(), &t.path().join("a"), b"a").unwrap();
    batch.write(&durable(), &w.path().join("b"), b"b").unwrap();
    batch.write(&durable(), &t.path().join("c"), b"c").unwrap();
    batch.commit().unwrap();
    assert_flushed(&rec, &[t.path(), w.path()], &[t.path(), w.path()], 3);
}

/// A bind mount of ours, undone on drop even if the test fails.
struct Bind(std::path::PathBuf);

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_bind_mount_is_one_directory_fsynced_once() {
    let test = "a_bind_mount_is_one_directory_fsynced_once";
    if RealSys.euid() != 0 {
        println!("skipped: {test}: bind mounts need root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (d, b) = (root.path().join("d"), root.path().join("b"));
    fs::create_dir(&d).unwrap();
    fs::create_dir(&b).unwrap();
    let status = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&d)
        .arg(&b)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!("skipped: {test}: mount --bind failed");
        return;
    }
    let _bind = Bind(b.clone());
    assert_eq!(id(&d), id(&b), "one directory, two paths");
    let rec = Recorder::default();
    let mut batch = Entries::new(rec.clone());
    batch.write(&durable(), &d.join("x"), b"x").unwrap();
    batch.write(&durable(), &b.join("y"), b"y").unwrap();
    batch.commit().unwrap();
    assert_eq!(rec.dir_syncs.lock().unwrap().len(), 1, "fsynced once");
    assert_flushed(&rec, &[&d], &[&d], 2);
    assert_eq!(fs::read(d.join("y")).unwrap(), b"y");
}

//! [`Batch`]: many replaces, one durability point.
//!
//! Every file keeps the single-replace guarantee (old or new after a crash).
//! What is shared is the waiting. The temps are written first. Directories
//! are grouped by identity (`st_dev`, `st_ino` of the opened directory, never
//! by path string), one fd per directory. At commit the temps' data reaches
//! the disk through a flush whose failure this process is sure to see: one
//! `syncfs` per filesystem where `syncfs` reports write-back errors, an
//! `fsync` of each temp elsewhere. Then every temp is renamed, and each
//! directory holding a `Durable` file is fsynced once.
//!
//! At most [`OPEN_TEMPS_MAX`] temps stay open; past that each new temp gets
//! its metadata (and, where `syncfs` cannot be trusted, its fsync) at once
//! and is closed. A closed temp has lost its `flock`, so the batch holds an
//! *anchor* in its directory: a locked, temp-shaped, empty file named
//! `.crashsafe-batch.crashsafe-RANDOM.tmp`. `sweep` removes no unlocked temp from a
//! directory with a locked anchor (see `sweep::batch_alive`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, InvalidReason, Step};
use crate::options::{Durability, Options};
use crate::protocol::{Broken, Replace};
use crate::sys::{RealSys, Sys};
use crate::temp_name::{RETRIES_MAX, is_temp_name, temp_name};

/// How many temps a batch keeps open; later ones are closed once written.
pub(crate) const OPEN_TEMPS_MAX: usize = 64;

/// The stem of an anchor's name: `.crashsafe-batch.crashsafe-RANDOM.tmp`.
const ANCHOR_STEM: &str = "crashsafe-batch";

/// Whether `name` is a batch anchor (a temp-shaped name with our stem, so
/// `sweep` removes one a dead batch left behind like any temp).
pub(crate) fn is_anchor_name(name: &OsStr) -> bool {
    let prefix = format!(".{ANCHOR_STEM}.");
    is_temp_name(name) && name.as_encoded_bytes().starts_with(prefix.as_bytes())
}

/// Filesystem types (`statfs` `f_type`) whose `syncfs` reports write-back
/// errors of their own files (Linux 5.8 and later): local filesystems that
/// record them on their superblock. Overlayfs, FUSE, NFS, CIFS and anything
/// unknown are not listed: there each temp is fsynced through its own fd.
const SYNCFS_REPORTS: [u64; 5] = [
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs (no write-back at all)
    0xF2F5_2010, // f2fs
];

/// Whether `syncfs` on a filesystem of type `fs_type` reports every
/// write-back error of its files to us: Linux 5.8 made `syncfs` check the
/// superblock's error sequence; before, it reported none.
pub(crate) fn syncfs_trusted(fs_type: u64, kernel: (u32, u32)) -> bool {
    kernel >= (5, 8) && SYNCFS_REPORTS.contains(&fs_type)
}

/// One distinct directory of a batch.
struct Dir<S: Sys> {
    /// `(st_dev, st_ino)` of the opened directory.
    id: (u64, u64),
    /// The path it was first reached by (for errors).
    path: PathBuf,
    /// The one fd every entry in this directory uses.
    fd: Arc<S::Dir>,
    /// `syncfs` on this directory's filesystem reports write-back errors.
    trusted: bool,
    /// The first directory of the batch on its filesystem: its fd is the
    /// oldest there, so `syncfs` through it reports every error since
    /// before the first temp on that filesystem was created.
    first_on_fs: bool,
    /// The locked anchor that keeps `sweep` off closed temps.
    anchor: Option<(OsString, S::File)>,
}

/// The engine of [`Batch`], generic so the simulator runs the same code.
pub(crate) struct Entries<S: Sys> {
    sys: S,
    entries: Vec<Replace<S>>,
    /// Index into `dirs` of each entry's directory.
    dir_of: Vec<usize>,
    dirs: Vec<Dir<S>>,
    /// How many temps are open now, and how many may be.
    open_temps: usize,
    open_temps_max: usize,
}

impl<S: Sys> Entries<S> {
    pub(crate) fn new(sys: S) -> Entries<S> {
        Entries {
            sys,
            entries: Vec::new(),
            dir_of: Vec::new(),
            dirs: Vec::new(),
            open_temps: 0,
            open_temps_max: OPEN_TEMPS_MAX,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Fewer open temps (the simulator's fd-bounded batches).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn set_open_temps_max(&mut self, max: usize) {
        self.open_temps_max = max;
    }

    /// Writes `contents` into a new temp for `path`. On error that temp is
    /// removed; the files written so far stay in the batch.
    pub(crate) fn write(
        &mut self,
        opts: &Options,
        path: &Path,
        contents: &[u8],
    ) -> Result<(), Error> {
        let mut replace = Replace::open(self.sys.clone(), path, opts)?;
        // A batch flushes through the directory (`syncfs`, or its fsync),
        // which an `O_PATH` fd of a write-only directory cannot do; and a
        // later `Durable` file must never share such an fd.
        if !replace.dir_readable() {
            let parent = replace.parent().to_path_buf();
            let e = Error::refused(path, &parent, InvalidReason::DirectoryNotReadable);
            return Err(replace.fail(e));
        }
        let d = match self.dir_for(&mut replace) {
            Ok(d) => d,
            Err(e) => return Err(replace.fail(e)),
        };
        replace.write_all(contents).map_err(|e| replace.fail(e))?;
        if self.open_temps < self.open_temps_max {
            self.open_temps += 1;
        } else {
            self.seal(&mut replace, d)?;
        }
        self.entries.push(replace);
        self.dir_of.push(d);
        Ok(())
    }

    /// The batch's directory for `replace`, by identity: an earlier one
    /// with the same `(st_dev, st_ino)` (whose fd `replace` then shares),
    /// or a new one.
    fn dir_for(&mut self, replace: &mut Replace<S>) -> Result<usize, Error> {
        let id = self
            .sys
            .stat_dir(replace.dir())
            .map(|st| (st.dev, st.ino))
            .map_err(|e| Error::io(Step::InspectTarget, replace.target(), e))?;
        if replace.broken(Broken::GroupByPath) {
            // The mistake this variant keeps: one path string, one directory.
            if let Some(d) = self.dirs.iter().position(|d| d.path == replace.parent()) {
                return Ok(d);
            }
        } else if let Some(d) = self.dirs.iter().position(|d| d.id == id) {
            replace.share_dir(self.dirs[d].fd.clone());
            return Ok(d);
        }
        let on_fs = self.dirs.iter().find(|d| d.id.0 == id.0);
        let (trusted, first_on_fs) = match on_fs {
            Some(d) => (d.trusted, false),
            None => {
                // No `statfs` (or no `syncfs`): fsync each temp.
                let fs_type = self.sys.fs_type(replace.dir());
                let kernel = self.sys.kernel_version();
                (fs_type.is_ok_and(|t| syncfs_trusted(t, kernel)), true)
            }
        };
        self.dirs.push(Dir {
            id,
            path: replace.parent().to_path_buf(),
            fd: replace.dir().clone(),
            trusted,
            first_on_fs,
            anchor: None,
        });
        Ok(self.dirs.len() - 1)
    }

    /// Finishes a temp early and closes it: metadata now, its fsync now
    /// where `syncfs` will not be trusted with it. The directory's anchor
    /// is locked first, so `sweep` never sees the temp unlocked and
    /// unclaimed. On error the temp is removed.
    fn seal(&mut self, replace: &mut Replace<S>, d: usize) -> Result<(), Error> {
        if let Err(e) = self.anchor(d, replace.target()) {
            return Err(replace.fail(e));
        }
        replace.prepare()?;
        if !self.dirs[d].trusted && !replace.broken(Broken::NoFileSync) {
            // fsync through the fd that wrote it: its own write-back error
            // is reported here, which a later `syncfs` would not promise.
            replace.sync_temp()?;
        }
        replace.close_temp();
        Ok(())
    }

    /// Creates and locks the anchor of directory `d` unless it has one.
    fn anchor(&mut self, d: usize, target: &Path) -> Result<(), Error> {
        if self.dirs[d].anchor.is_some() {
            return Ok(());
        }
        let mut last = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
        for _ in 0..RETRIES_MAX {
            let name = temp_name(OsStr::new(ANCHOR_STEM), self.sys.random());
            match self.sys.create_at(&self.dirs[d].fd, &name, 0o600) {
                Ok(file) => {
                    // Best effort, as for temps: without flock, `sweep`
                    // cannot lock a temp either and removes nothing.
                    let _ = self.sys.lock(&file, false);
                    self.dirs[d].anchor = Some((name, file));
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(Error::io(Step::CreateTemp, target, e)),
            }
        }
        Err(Error::io(Step::CreateTemp, target, last))
    }

    /// Removes every anchor (all temps are renamed or removed by now).
    /// Best effort: one left behind is an empty temp-shaped file that
    /// `sweep` removes once its lock is gone.
    fn remove_anchors(&mut self) {
        for dir in &mut self.dirs {
            if let Some((name, file)) = dir.anchor.take() {
                let _ = self.sys.unlink_at(&dir.fd, &name);
                self.sys.close(file);
            }
        }
    }

    /// Metadata on every open temp; data of all to disk; rename each;
    /// fsync each directory holding a `Durable` file, once.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        let total = self.entries.len();
        for i in 0..total {
            if !self.entries[i].is_open() {
                continue; // sealed at write time
            }
            if let Err(e) = self.entries[i].prepare() {
                return Err(self.abandon(e, total));
            }
        }
        // (Broken::RenameBeforeSync: skip the flush; each temp is fsynced
        // after its rename instead, in `publish_prepared`.)
        if !self
            .entries
            .iter()
            .any(|e| e.broken(Broken::RenameBeforeSync))
        {
            if let Err(e) = self.flush() {
                return Err(self.abandon(e, total));
            }
        }
        let mut replaced: Vec<usize> = Vec::with_capacity(total);
        for i in 0..total {
            if let Err(e) = self.entries[i].publish_prepared() {
                // A failure after the switch (the `create_new` link
                // fallback could not remove the temp name) still replaced
                // this file.
                if e.target_replaced() {
                    replaced.push(i);
                }
                let e = self.remove_temps(e);
                self.remove_anchors();
                // Make what was already replaced durable before reporting:
                // the caller learns these files are new, so they must stay
                // new after a power cut (unless a directory fsync fails,
                // which the error then names).
                let (failed, _) = self.sync_dirs(&replaced);
                return Err(self.batch_error(e, &replaced, failed));
            }
            replaced.push(i);
        }
        // No temp is left: the anchors can go, before the directory fsyncs
        // so that their removal is durable with the renames.
        self.remove_anchors();
        let (failed, first) = self.sync_dirs(&replaced);
        match first {
            None => Ok(()),
            Some(e) => Err(self.batch_error(e, &replaced, failed)),
        }
    }

    /// Gets every temp's data and metadata to disk before any rename,
    /// through flushes whose failure we are sure to see: `syncfs` once per
    /// filesystem where it reports write-back errors (through the oldest
    /// fd on that filesystem, opened before its first temp was created),
    /// else `fsync` of each temp through the fd that wrote it.
    fn flush(&mut self) -> Result<(), Error> {
        for d in 0..self.dirs.len() {
            let dir = &self.dirs[d];
            if dir.first_on_fs && dir.trusted {
                if let Err(e) = self.sys.sync_fs(&dir.fd) {
                    let target = self.first_target_in(d);
                    return Err(Error::io(Step::SyncFilesystem, &target, e));
                }
            }
        }
        for i in 0..self.entries.len() {
            let trusted = self.dirs[self.dir_of[i]].trusted;
            let entry = &mut self.entries[i];
            // Sealed temps were fsynced when they were closed.
            if !trusted && entry.is_open() && !entry.broken(Broken::NoFileSync) {
                entry.sync_temp()?;
            }
        }
        Ok(())
    }

    fn first_target_in(&self, d: usize) -> PathBuf {
        self.dir_of
            .iter()
            .position(|&x| x == d)
            .map(|i| self.entries[i].target().to_path_buf())
            .unwrap_or_else(|| self.dirs[d].path.clone())
    }

    /// After a failure before any rename: removes every temp and anchor.
    fn abandon(&mut self, e: Error, total: usize) -> Error {
        let e = self.remove_temps(e);
        self.remove_anchors();
        Error::Batch {
            source: Box::new(e),
            replaced: Vec::new(),
            total,
            failed_dirs: Vec::new(),
            unsynced: Vec::new(),
        }
    }

    /// After a failed commit: removes the temps not renamed (and closes
    /// every temp), and names in `err` the first temp that could not be
    /// removed, unless it already names one (an error has one slot).
    /// Entries stay in place (emptied), so indices keep their meaning.
    fn remove_temps(&mut self, mut err: Error) -> Error {
        for entry in &mut self.entries {
            if let Err(e) = entry.discard_in_place() {
                if let (None, Some(temp)) = (err.temp_left(), e.temp_left()) {
                    err = err.with_temp_left(temp.to_path_buf());
                }
            }
        }
        err
    }

    /// fsyncs each directory holding a `Durable` entry of `which`, once,
    /// and carries on past failures: returns each failed directory (index
    /// and path) and the first failure's error (naming a file in it).
    fn sync_dirs(&self, which: &[usize]) -> (Vec<(usize, PathBuf)>, Option<Error>) {
        let mut failed = Vec::new();
        let mut first = None;
        for d in 0..self.dirs.len() {
            // The strictest durability in the directory wins: one Durable
            // file makes the directory's fsync necessary.
            let durable = which.iter().copied().find(|&i| {
                self.dir_of[i] == d && self.entries[i].durability() == Durability::Durable
            });
            let Some(i) = durable else { continue };
            // All entries of the directory share its fd: this fsyncs `d`.
            if let Err(e) = self.entries[i].sync_parent() {
                failed.push((d, self.dirs[d].path.clone()));
                first.get_or_insert(e);
            }
        }
        (failed, first)
    }

    /// The error of a failed commit: `e`, the files `replaced`, the
    /// directories whose fsync `failed`, and the `Durable` files replaced
    /// in those (new, but of unknown durability).
    fn batch_error(&self, e: Error, replaced: &[usize], failed: Vec<(usize, PathBuf)>) -> Error {
        let target = |i: usize| self.entries[i].target().to_path_buf();
        let unsynced = replaced
            .iter()
            .copied()
            .filter(|&i| {
                failed.iter().any(|(d, _)| *d == self.dir_of[i])
                    && self.entries[i].durability() == Durability::Durable
            })
            .map(target)
            .collect();
        Error::Batch {
            source: Box::new(e),
            replaced: replaced.iter().copied().map(target).collect(),
            total: self.entries.len(),
            failed_dirs: failed.into_iter().map(|(_, d)| d).collect(),
            unsynced,
        }
    }
}

impl<S: Sys> Drop for Entries<S> {
    /// An uncommitted batch removes its temps, then its anchors.
    fn drop(&mut self) {
        self.entries.clear();
        self.remove_anchors();
    }
}

/// Replaces many files with one durability point: much faster than one
/// durable [`write`](fn@crate::write) per file, with the same per-file guarantee.
///
/// [`write`](Batch::write) puts each file's new content in its own temp
/// beside it; nothing is visible until [`commit`](Batch::commit), which
/// flushes all temps together, renames each over its target and fsyncs each
/// directory holding a [`Durable`](crate::Durability::Durable) file once.
/// After a crash every file is its old or its new version (the batch as a
/// whole is *not* atomic: some files may be new and others old). After
/// `Ok`, every `Durable` file is durably new. Dropping a batch without
/// committing removes its temps.
///
/// Directories are told apart by identity (device and inode of the opened
/// directory), not by path: relative paths with a `chdir` in between, a
/// symlinked directory repointed between writes, and bind mounts are all
/// handled. The data flush is one `syncfs` per filesystem where `syncfs`
/// reports write-back errors (ext4, XFS, btrfs, f2fs, tmpfs on Linux 5.8
/// and later) and an `fsync` of each file elsewhere (overlayfs, FUSE, NFS,
/// older kernels), so `Ok` never covers data the kernel failed to write.
///
/// Any number of files: a batch keeps one file descriptor per distinct
/// directory and at most 64 temps open (plus one locked marker file,
/// `.crashsafe-batch.*.tmp`, per directory once it holds more, which keeps
/// [`sweep`](fn@crate::sweep) away from its closed temps), so it fits the
/// common `ulimit -n 1024`.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let mut batch = crashsafe::Batch::new();
/// for i in 0..10 {
///     batch.write(dir.path().join(format!("part-{i}.json")), format!("{{\"part\": {i}}}"))?;
/// }
/// batch.commit()?;
/// # Ok::<(), crashsafe::Error>(())
/// ```
pub struct Batch {
    options: Options,
    entries: Entries<RealSys>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

impl Batch {
    /// An empty batch with the default [`Options`].
    pub fn new() -> Batch {
        Batch::with_options(&Options::new())
    }

    /// An empty batch whose files use `options` (durability, mode, owner,
    /// symlinks, ...). `create_new` applies to each file.
    pub fn with_options(options: &Options) -> Batch {
        Batch {
            options: options.clone(),
            entries: Entries::new(RealSys),
        }
    }

    /// Adds `path` with `contents`: the content goes into a temp now, the
    /// target changes only at [`commit`](Batch::commit).
    ///
    /// # Errors
    /// As [`Options::write`] before the rename; the failed file's temp is
    /// removed and the files added earlier stay in the batch.
    pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(
        &mut self,
        path: P,
        contents: C,
    ) -> Result<(), Error> {
        let options = self.options.clone();
        self.write_with(&options, path, contents)
    }

    /// As [`write`](Batch::write), with options for this file only.
    ///
    /// # Errors
    /// As [`Batch::write`].
    pub fn write_with<P: AsRef<Path>, C: AsRef<[u8]>>(
        &mut self,
        options: &Options,
        path: P,
        contents: C,
    ) -> Result<(), Error> {
        self.entries
            .write(options, path.as_ref(), contents.as_ref())
    }

    /// How many files the batch holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch holds no file.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Replaces every file; durable on `Ok` (with [`Durability::Durable`](crate::Durability::Durable)).
    ///
    /// # Errors
    /// An [`Error::Batch`] naming the file and step that failed and
    /// listing the files already replaced ([`Error::replaced`]); every other
    /// file keeps its old content and its temp is removed (one that cannot
    /// be removed is named by [`Error::temp_left`]). A failed directory
    /// fsync does not stop the others: [`Error::failed_dirs`] names every
    /// directory whose fsync failed, and [`Error::unsynced`] lists the
    /// replaced files in those, the only ones of unknown durability.
    pub fn commit(self) -> Result<(), Error> {
        self.entries.commit()
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.entries.len())
            .field("durability", &self.options.durability)
            .finish_non_exhaustive()
    }
}

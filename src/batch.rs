//! [`Batch`]: many replaces, one durability point.
//!
//! Every file keeps the single-replace guarantee (old or new after a crash).
//! What is shared is the waiting: the temps are written first, their data is
//! flushed together (`syncfs` on Linux, one call per directory instead of
//! one `fsync` per file), then every temp is renamed, then each distinct
//! directory is fsynced once.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Step};
use crate::options::Options;
use crate::protocol::{Broken, Replace};
use crate::sys::{RealSys, Sys};

/// The engine of [`Batch`], generic so the simulator runs the same code.
pub(crate) struct Entries<S: Sys> {
    sys: S,
    entries: Vec<Replace<S>>,
}

impl<S: Sys> Entries<S> {
    pub(crate) fn new(sys: S) -> Entries<S> {
        Entries {
            sys,
            entries: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
        replace.write_all(contents).map_err(|e| replace.fail(e))?;
        self.entries.push(replace);
        Ok(())
    }

    /// Metadata on every temp; data of all of them to disk; rename each;
    /// fsync each directory once.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        let total = self.entries.len();
        // On an early return, `remove_temps` removes the temps that were
        // not renamed.
        for i in 0..total {
            if let Err(e) = self.entries[i].prepare() {
                let e = self.remove_temps(e);
                return Err(batch_error(e, Vec::new(), total));
            }
        }
        // (Broken::RenameBeforeSync: skip the flush; each temp is fsynced
        // after its rename instead, in `publish_prepared`.)
        if !self
            .entries
            .iter()
            .any(|e| e.broken(Broken::RenameBeforeSync))
        {
            if let Err(e) = self.sync_data() {
                let e = self.remove_temps(e);
                return Err(batch_error(e, Vec::new(), total));
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
                // Make what was already replaced durable before reporting.
                let _ = self.sync_dirs(&replaced);
                let paths: Vec<PathBuf> = replaced
                    .iter()
                    .map(|&j| self.entries[j].target().to_path_buf())
                    .collect();
                let e = self.remove_temps(e);
                return Err(batch_error(e, paths, total));
            }
            replaced.push(i);
        }
        self.sync_dirs(&replaced).map_err(|e| {
            let paths = self.entries.iter().map(|r| r.target().to_path_buf());
            batch_error(e, paths.collect(), total)
        })
    }

    /// Gets every temp's data and metadata to disk before any rename.
    ///
    /// `syncfs` on a directory's filesystem flushes all the temps in it at
    /// once, and since Linux 5.8 it reports any writeback error on that
    /// filesystem since the directory fd was opened, which was before the
    /// first temp in it was created; so a failed flush of any of our temps
    /// cannot pass as success. Where there is no `syncfs`, each temp is
    /// fsynced through the fd that wrote it.
    fn sync_data(&mut self) -> Result<(), Error> {
        for i in self.first_in_each_dir(0..self.entries.len()) {
            let entry = &self.entries[i];
            match entry.sync_filesystem() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    for entry in &mut self.entries {
                        entry.sync_temp()?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(Error::io(Step::SyncFilesystem, entry.target(), e)),
            }
        }
        Ok(())
    }

    /// After a failed commit: removes the temps not renamed (and closes
    /// every temp), and names in `err` the first temp that could not be
    /// removed, unless it already names one (an error has one slot).
    fn remove_temps(&mut self, mut err: Error) -> Error {
        for entry in self.entries.drain(..) {
            if let Err(e) = entry.discard() {
                if let (None, Some(temp)) = (err.temp_left(), e.temp_left()) {
                    err = err.with_temp_left(temp.to_path_buf());
                }
            }
        }
        err
    }

    /// fsyncs the directory of each entry in `which`, once per directory.
    fn sync_dirs(&self, which: &[usize]) -> Result<(), Error> {
        for i in self.first_in_each_dir(which.iter().copied()) {
            self.entries[i].sync_parent()?;
        }
        Ok(())
    }

    /// The first entry for each distinct parent directory, in order.
    fn first_in_each_dir(&self, which: impl Iterator<Item = usize>) -> Vec<usize> {
        let mut seen: Vec<&Path> = Vec::new();
        let mut firsts = Vec::new();
        for i in which {
            let parent = self.entries[i].parent();
            if !seen.contains(&parent) {
                seen.push(parent);
                firsts.push(i);
            }
        }
        firsts
    }
}

fn batch_error(error: Error, replaced: Vec<PathBuf>, total: usize) -> Error {
    Error::Batch {
        source: Box::new(error),
        replaced,
        total,
    }
}

/// Replaces many files with one durability point: much faster than one
/// durable [`write`](fn@crate::write) per file, with the same per-file guarantee.
///
/// [`write`](Batch::write) puts each file's new content in its own temp
/// beside it; nothing is visible until [`commit`](Batch::commit), which
/// flushes all temps together, renames each over its target and fsyncs each
/// distinct directory once. After a crash every file is its old or its new
/// version (the batch as a whole is *not* atomic: some files may be new and
/// others old). After `Ok`, all are durably new. Dropping a batch without
/// committing removes its temps.
///
/// A batch keeps two file descriptors per file until it commits; for
/// thousands of files, commit in chunks of a few hundred.
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
    /// be removed is named by [`Error::temp_left`]).
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

//! An in-memory filesystem that knows what a power cut may keep and lose.
//!
//! **Test support, not for production.** Compiled for this crate's tests and
//! under the `sim` feature (for the fuzz targets). It is how the crate's
//! guarantees are checked: the real protocol code, unchanged, runs against
//! [`SimFs`] through the same syscall trait as the rustix backend, and the
//! tests then crash it at every point.
//!
//! # What it models
//!
//! - **The volatile view**: what processes see, with the POSIX result of
//!   every call the protocol makes, errors included (`EEXIST`, `ENOENT`,
//!   `ENOTDIR`, `ELOOP`, `EISDIR`, `EACCES`, `ENAMETOOLONG`). Inodes are
//!   files, directories and symlinks with data, mode, owner and link count;
//!   an open file outlives its last name.
//! - **The durable view**: the state before the run plus a log of every
//!   effect (inode created, data piece, size, mode/owner, name added or
//!   removed, rename, sync), in program order (REFERENCE.md §2.1).
//! - **Crash images**: for a crash point (after any call, or inside one) and
//!   a [`Model`], every state the disk may hold after recovery: any POSIX
//!   filesystem, ext4 `data=ordered`, or a process kill.
//! - **Faults**: a per-instance plan fails the Nth call, or the first call
//!   of a kind, with an error number. A failed `fsync` drops the file's
//!   dirty pages, as Linux does, and the next `fsync` succeeds.
//! - **A trace** of every call, with temp names masked, for golden tests.
//! - **`O_TMPFILE`** (an inode with no name until linked; switched off with
//!   [`SimFs::set_tmpfile`]), reads, `getdents`, `syncfs` (everything
//!   durable), and `flock` per open file description (a second descriptor
//!   of a locked file gets `EWOULDBLOCK`), so [`SimFs::update`],
//!   [`SimFs::batch`] and [`SimFs::sweep`] run the real code.
//! - **Interleaving**: [`SimFs::before_call`] slots another writer's steps
//!   just before a given call, deterministically, in one thread.
//!
//! Everything is deterministic: the temp names come from the seed given to
//! [`SimFs::new`], and sampling of crash images from [`Budget::seed`].
//!
//! # What it does not model
//!
//! Concurrent processes (only interleaving in one thread; the directory
//! lock of `update` is always granted); hard-link counts of directories;
//! sticky directories; ACLs; extended attributes (every xattr call fails
//! with `EOPNOTSUPP`); timestamps (every mtime is 0); a full disk (only as
//! an injected `ENOSPC`); garbage (rather than zeros) in torn sectors; data
//! written through a second descriptor. DESIGN.md lists the rest.

pub mod check;
mod crash;
mod errno;
mod fault;
pub(crate) mod fs;
pub(crate) mod kernel;
mod plan_support;
mod trace;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::protocol::Broken;
pub use crash::{Budget, CrashPoint, Model, Stats};
pub use fault::Trigger;
pub use trace::{Call, TraceEntry};

use crate::batch::Entries;
use crate::error::Error;
use crate::file::Buffered;
use crate::options::Options;
use crate::protocol::Replace;
use fs::{Cred, Fs, InitKind, Ino, Node, Op, ROOT, apply};
use kernel::{Config, Entry, State, splitmix};

/// Error numbers, for fault plans: the host's values.
pub mod errnos {
    /// `EIO`.
    pub const EIO: i32 = super::errno::IO;
    /// `ENOSPC`.
    pub const ENOSPC: i32 = super::errno::NOSPC;
    /// `EDQUOT`.
    pub const EDQUOT: i32 = super::errno::DQUOT;
    /// `EACCES`.
    pub const EACCES: i32 = super::errno::ACCESS;
    /// `EINTR`.
    pub const EINTR: i32 = super::errno::INTR;
    /// `EOPNOTSUPP`.
    pub const EOPNOTSUPP: i32 = super::errno::NOTSUP;
    /// `EISDIR`.
    pub const EISDIR: i32 = super::errno::ISDIR;
    /// `EPERM`.
    pub const EPERM: i32 = super::errno::PERM;
    /// `EINVAL`.
    pub const EINVAL: i32 = super::errno::INVAL;
    /// `ENOENT`.
    pub const ENOENT: i32 = super::errno::NOENT;
    /// `EEXIST`.
    pub const EEXIST: i32 = super::errno::EXIST;
}

/// The uid and gid a new simulator runs as (an ordinary user).
pub const USER_ID: u32 = 1000;

/// A simulated filesystem and kernel. Cloning gives another handle to the
/// same state (it is the protocol's syscall handle).
#[derive(Clone)]
pub struct SimFs {
    inner: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimFs")
            .field("seed", &st.seed)
            .field("calls", &st.trace.len())
            .field("effects", &st.log.len())
            .finish_non_exhaustive()
    }
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// `stat` of a simulated path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimStat {
    /// The file type.
    pub kind: SimKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of names.
    pub nlink: u64,
    /// Inode number (issue 12: tells two names of one file).
    pub ino: u64,
}

/// Setup calls walk paths with full privilege.
const SETUP: Cred = Cred {
    uid: 0,
    gid: 0,
    root: true,
};

impl SimFs {
    /// An empty filesystem (just `/`, mode 0755, owned by root), used by an
    /// ordinary user (uid and gid [`USER_ID`], umask 022) on a filesystem
    /// with `RENAME_NOREPLACE` and hard links. Temp names derive from `seed`.
    pub fn new(seed: u64) -> SimFs {
        let config = Config {
            cred: Cred {
                uid: USER_ID,
                gid: USER_ID,
                root: false,
            },
            umask: 0o022,
            noreplace: true,
            hardlinks: true,
            tmpfile: true,
        };
        SimFs::from_state(State::new(seed, Fs::new(), config))
    }

    fn from_state(state: State) -> SimFs {
        SimFs {
            inner: Arc::new(Mutex::new(state)),
        }
    }

    /// Tells this simulator (and its clones) from every other one.
    pub(crate) fn instance_id(&self) -> u64 {
        Arc::as_ptr(&self.inner) as usize as u64
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs as `uid`/`gid`; `root` grants every permission.
    pub fn set_identity(&self, uid: u32, gid: u32, root: bool) {
        self.lock().config.cred = Cred { uid, gid, root };
    }

    /// The process umask applied to created files (default `0o022`).
    pub fn set_umask(&self, umask: u32) {
        self.lock().config.umask = umask & 0o777;
    }

    /// Whether `renameat2(RENAME_NOREPLACE)` is supported; if not it fails
    /// with `EINVAL`, as on ZFS, and `create_new` falls back to `linkat`.
    pub fn set_rename_noreplace(&self, supported: bool) {
        self.lock().config.noreplace = supported;
    }

    /// Whether hard links are supported; if not `linkat` fails with `EPERM`.
    pub fn set_hard_links(&self, supported: bool) {
        self.lock().config.hardlinks = supported;
    }

    /// Whether `O_TMPFILE` is supported (the default); if not it fails with
    /// `EOPNOTSUPP`, and a replace with [`Options::unnamed_temp`] falls back
    /// to a named temp.
    pub fn set_tmpfile(&self, supported: bool) {
        self.lock().config.tmpfile = supported;
    }

    // issue 10: several filesystems, a working directory, kernel version.

    /// Makes the existing directory `path` the root of a filesystem of its
    /// own (a new device number) of type `fs_type` (`f_type`, e.g.
    /// `0x794C7630` for overlayfs); returns the device number. `syncfs`
    /// then flushes only the inodes of the filesystem it is called on.
    ///
    /// # Errors
    /// `ENOENT`/`ENOTDIR` if `path` is not a directory.
    pub fn mount(&self, path: impl AsRef<Path>, fs_type: u64) -> io::Result<u64> {
        let mut st = self.lock();
        let ino = dir_at(&st.volatile, ROOT, path.as_ref())?;
        let dev = st.mounts.len() as u64 + 1;
        st.mounts.insert(ino, (dev, fs_type));
        Ok(dev)
    }

    /// The filesystem type of `/`'s filesystem (default ext4, `0xEF53`).
    pub fn set_root_fs_type(&self, fs_type: u64) {
        self.lock().root_fs_type = fs_type;
    }

    /// What `uname` reports (default 6.1).
    pub fn set_kernel_version(&self, major: u32, minor: u32) {
        self.lock().kernel = (major, minor);
    }

    /// `chdir(path)`: relative paths given to later calls start there.
    ///
    /// # Errors
    /// `ENOENT`/`ENOTDIR` if `path` is not a directory.
    pub fn chdir(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut st = self.lock();
        let ino = dir_at(&st.volatile, st.cwd, path.as_ref())?;
        st.cwd = ino;
        Ok(())
    }

    /// Points the existing symlink `path` at `target` instead (setup: not
    /// traced, durable at once), as another process flipping it would.
    ///
    /// # Errors
    /// `ENOENT` if there is nothing at `path`; `EINVAL` if it is not a symlink.
    pub fn repoint_symlink(
        &self,
        path: impl AsRef<Path>,
        target: impl AsRef<Path>,
    ) -> io::Result<()> {
        let mut st = self.lock();
        let bytes = path.as_ref().as_os_str().as_encoded_bytes();
        let ino = st
            .volatile
            .walk(ROOT, bytes, false, SETUP)
            .map_err(errno::error)?;
        let target = target.as_ref().as_os_str().to_os_string();
        let st = &mut *st;
        for fs in [&mut st.volatile, &mut st.base] {
            match fs.get_mut(ino).map(|i| &mut i.node) {
                Some(Node::Symlink { target: t }) => *t = target.clone(),
                _ => return Err(errno::error(errno::INVAL)),
            }
        }
        Ok(())
    }

    // ---- setup: durable at once, not traced, not logged ----

    /// Applies setup ops to both the volatile and the durable state.
    fn setup(
        &self,
        path: &Path,
        make: impl FnOnce(Ino, OsString, Ino) -> Vec<Op>,
    ) -> io::Result<()> {
        let mut st = self.lock();
        let bytes = path.as_os_str().as_encoded_bytes();
        let (parent, name) = st
            .volatile
            .walk_parent(ROOT, bytes, SETUP)
            .map_err(errno::error)?;
        if st.volatile.entry(parent, &name).is_some()
            || name.is_empty()
            || name == "."
            || name == ".."
        {
            return Err(errno::error(errno::EXIST));
        }
        let ino = st.volatile.alloc_ino();
        for op in make(parent, name, ino) {
            apply(&mut st.volatile, &op);
            apply(&mut st.base, &op);
        }
        Ok(())
    }

    /// `mkdir path` with `mode`, owned by the simulated user; durable.
    ///
    /// # Errors
    /// `ENOENT`/`ENOTDIR` for a bad parent, `EEXIST` if the name is taken.
    pub fn mkdir(&self, path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        let cred = self.lock().config.cred;
        self.setup(path.as_ref(), |parent, name, ino| {
            vec![
                Op::Init {
                    ino,
                    kind: InitKind::Dir { parent },
                    mode,
                    uid: cred.uid,
                    gid: cred.gid,
                },
                Op::Link {
                    dir: parent,
                    name,
                    ino,
                },
            ]
        })
    }

    /// `mkdir -p path` (mode 0755, owned by the simulated user); durable.
    ///
    /// # Errors
    /// `ENOTDIR` if a component is not a directory.
    pub fn mkdir_all(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut sofar = PathBuf::from("/");
        for part in path
            .as_ref()
            .components()
            .skip_while(|c| c.as_os_str() == "/")
        {
            sofar.push(part);
            match self.stat(&sofar) {
                Ok(st) if st.kind == SimKind::Dir => continue,
                Ok(_) => return Err(errno::error(errno::NOTDIR)),
                Err(_) => self.mkdir(&sofar, 0o755)?,
            }
        }
        Ok(())
    }

    /// Creates the regular file `path` with `contents`, mode and owner;
    /// durable at once.
    ///
    /// # Errors
    /// `ENOENT`/`ENOTDIR` for a bad parent, `EEXIST` if the name is taken.
    pub fn put_file(
        &self,
        path: impl AsRef<Path>,
        contents: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        self.setup(path.as_ref(), |parent, name, ino| {
            vec![
                Op::Init {
                    ino,
                    kind: InitKind::File,
                    mode: mode & 0o7777,
                    uid,
                    gid,
                },
                Op::Data {
                    ino,
                    offset: 0,
                    bytes: contents.to_vec(),
                },
                Op::Size {
                    ino,
                    size: contents.len() as u64,
                },
                Op::Link {
                    dir: parent,
                    name,
                    ino,
                },
            ]
        })
    }

    /// Creates the symlink `path -> target`, owned by the user; durable.
    ///
    /// # Errors
    /// `ENOENT`/`ENOTDIR` for a bad parent, `EEXIST` if the name is taken.
    pub fn symlink(&self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> io::Result<()> {
        let cred = self.lock().config.cred;
        let target = target.as_ref().as_os_str().to_os_string();
        self.setup(path.as_ref(), |parent, name, ino| {
            vec![
                Op::Init {
                    ino,
                    kind: InitKind::Symlink { target },
                    mode: 0o777,
                    uid: cred.uid,
                    gid: cred.gid,
                },
                Op::Link {
                    dir: parent,
                    name,
                    ino,
                },
            ]
        })
    }

    // ---- inspecting the volatile view ----

    /// The content of the regular file at `path` (symlinks followed).
    ///
    /// # Errors
    /// `ENOENT`, `ENOTDIR`, `ELOOP` as `open` would; `EISDIR` for a directory.
    pub fn read_file(&self, path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        let st = self.lock();
        let bytes = path.as_ref().as_os_str().as_encoded_bytes();
        let ino = st
            .volatile
            .walk(ROOT, bytes, true, SETUP)
            .map_err(errno::error)?;
        st.volatile
            .content(ino)
            .ok_or_else(|| errno::error(errno::ISDIR))
    }

    /// The target of the symlink at `path`.
    ///
    /// # Errors
    /// `ENOENT`, or `EINVAL` if `path` is not a symlink.
    pub fn read_link(&self, path: impl AsRef<Path>) -> io::Result<PathBuf> {
        let st = self.lock();
        let bytes = path.as_ref().as_os_str().as_encoded_bytes();
        let ino = st
            .volatile
            .walk(ROOT, bytes, false, SETUP)
            .map_err(errno::error)?;
        match st.volatile.get(ino).map(|i| &i.node) {
            Some(Node::Symlink { target }) => Ok(PathBuf::from(target)),
            _ => Err(errno::error(errno::INVAL)),
        }
    }

    /// The names in the directory at `path`, sorted.
    ///
    /// # Errors
    /// `ENOENT`, `ENOTDIR`.
    pub fn list_dir(&self, path: impl AsRef<Path>) -> io::Result<Vec<OsString>> {
        let st = self.lock();
        let bytes = path.as_ref().as_os_str().as_encoded_bytes();
        let ino = st
            .volatile
            .walk(ROOT, bytes, true, SETUP)
            .map_err(errno::error)?;
        match st.volatile.get(ino).map(|i| &i.node) {
            Some(Node::Dir { entries, .. }) => Ok(entries.keys().cloned().collect()),
            _ => Err(errno::error(errno::NOTDIR)),
        }
    }

    /// `lstat(path)`: a final symlink is not followed.
    ///
    /// # Errors
    /// `ENOENT`, `ENOTDIR`, `ELOOP`.
    pub fn stat(&self, path: impl AsRef<Path>) -> io::Result<SimStat> {
        let st = self.lock();
        let bytes = path.as_ref().as_os_str().as_encoded_bytes();
        let ino = st
            .volatile
            .walk(ROOT, bytes, false, SETUP)
            .map_err(errno::error)?;
        let inode = st.volatile.get(ino).expect("walked inode exists");
        let kind = match inode.node {
            Node::File { .. } => SimKind::File,
            Node::Dir { .. } => SimKind::Dir,
            Node::Symlink { .. } => SimKind::Symlink,
        };
        Ok(SimStat {
            kind,
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
            nlink: u64::from(inode.nlink),
            ino: u64::from(ino),
        })
    }

    // ---- the real protocol ----

    /// `opts.write(path, contents)`, run by the real protocol on this
    /// simulator.
    ///
    /// # Errors
    /// Exactly those of [`Options::write`].
    pub fn write(
        &self,
        path: impl AsRef<Path>,
        contents: &[u8],
        opts: &Options,
    ) -> Result<(), Error> {
        Replace::open(self.clone(), path.as_ref(), opts)?.write_all_and_commit(contents)
    }

    /// `opts.open(path)`: a streaming replace on this simulator.
    ///
    /// # Errors
    /// Exactly those of [`Options::open`].
    pub fn open(&self, path: impl AsRef<Path>, opts: &Options) -> Result<SimFile, Error> {
        let replace = Replace::open(self.clone(), path.as_ref(), opts)?;
        Ok(SimFile {
            inner: Buffered::new(replace),
        })
    }

    /// `opts.update(path, f)`: the read-modify-write under the directory
    /// lock, run by the real protocol on this simulator. The directory lock
    /// is always granted (one thread cannot wait for another holder).
    ///
    /// # Errors
    /// Exactly those of [`Options::update`].
    pub fn update<F>(&self, path: impl AsRef<Path>, opts: &Options, f: F) -> Result<(), Error>
    where
        F: FnOnce(Option<&[u8]>) -> io::Result<Vec<u8>>,
    {
        Replace::update(self.clone(), path.as_ref(), opts, f)
    }

    /// A [`Batch`](crate::Batch) on this simulator: the same engine, so the
    /// same calls in the same order.
    pub fn batch(&self, opts: &Options) -> SimBatch {
        SimBatch {
            options: opts.clone(),
            entries: Entries::new(self.clone()),
        }
    }

    /// [`sweep`](crate::sweep) of the directory `dir`. A temp whose writer
    /// still holds its lock is never removed.
    ///
    /// # Errors
    /// Exactly those of [`sweep`](crate::sweep).
    pub fn sweep(&self, dir: impl AsRef<Path>) -> Result<usize, Error> {
        self.sweep_report(dir).map(|r| r.removed.len())
    }

    /// [`create_dir_all`](crate::create_dir_all) on the simulator.
    ///
    /// # Errors
    /// Exactly those of [`create_dir_all`](crate::create_dir_all).
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        crate::dirs::create_dir_all(self, path.as_ref())
    }

    /// [`sweep_report`](crate::sweep_report) of the directory `dir`.
    ///
    /// # Errors
    /// Exactly those of [`sweep`](crate::sweep).
    pub fn sweep_report(&self, dir: impl AsRef<Path>) -> Result<crate::SweepReport, Error> {
        crate::sweep::sweep(self, dir.as_ref())
    }

    // ---- interleaving ----

    /// Runs `f` just before the call with trace index `n` (0-based), from
    /// within that call's thread: another writer's steps slotted between
    /// two calls of this one, deterministically. `f` gets this simulator
    /// and its calls are traced too (and shift later indices).
    pub fn before_call(&self, n: usize, f: impl FnOnce(&SimFs) + Send + 'static) {
        self.lock().hooks.push(kernel::Hook {
            before: n,
            run: Box::new(f),
        });
    }

    // ---- faults ----

    /// Makes call number `n` of the trace (0-based) fail with `errno`.
    pub fn fail_nth(&self, n: usize, errno: i32) {
        self.lock().faults.add(Trigger::Nth(n), errno);
    }

    /// Makes the next call of kind `call` fail with `errno`.
    pub fn fail_first(&self, call: Call, errno: i32) {
        self.lock().faults.add(Trigger::First(call), errno);
    }

    /// Makes the first call of kind `call` after call number `n` fail.
    pub fn fail_first_after(&self, call: Call, n: usize, errno: i32) {
        self.lock().faults.add(Trigger::FirstAfter(call, n), errno);
    }

    /// How many planned faults have fired.
    pub fn faults_fired(&self) -> usize {
        self.lock().faults.fired()
    }

    // ---- trace ----

    /// Every call made so far.
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.lock().trace.clone()
    }

    /// The trace as text, one call per line, temp names masked.
    pub fn trace_lines(&self) -> Vec<String> {
        self.lock().trace.iter().map(|t| t.to_string()).collect()
    }

    // ---- durability and crashes ----

    /// `sync()`: everything done so far becomes durable.
    pub fn sync_all(&self) {
        let mut st = self.lock();
        let call = st.trace.len();
        st.log.push(Entry {
            call,
            op: Op::SyncAll,
        });
    }

    /// How many effects are logged: a mark for [`SimFs::crash_points_since`].
    pub fn effects(&self) -> usize {
        self.lock().log.len()
    }

    /// Every crash point of the run so far.
    pub fn crash_points(&self) -> Vec<CrashPoint> {
        self.crash_points_since(0)
    }

    /// The crash points after at least `mark` effects.
    pub fn crash_points_since(&self, mark: usize) -> Vec<CrashPoint> {
        let st = self.lock();
        (mark..=st.log.len())
            .map(|p| CrashPoint {
                effects: p,
                label: crash::label(&st.log, &st.trace, p),
            })
            .collect()
    }

    /// The states a power cut (or kill) right now may leave, each as a fresh
    /// simulator to carry on from, with the default [`Budget`].
    pub fn crash_images(&self, model: Model) -> Vec<SimFs> {
        let end = self.effects();
        self.crash_images_at(end, model, &Budget::default())
    }

    /// The states a crash after `effects` logged effects may leave.
    pub fn crash_images_at(&self, effects: usize, model: Model, budget: &Budget) -> Vec<SimFs> {
        let mut images = Vec::new();
        self.explore(model, effects, budget, &mut |point, fs| {
            if point.effects == effects {
                images.push(fs.clone());
            }
            point.effects <= effects
        });
        let st = self.lock();
        images_to_sims(&st, effects, images)
    }

    /// Visits every crash point from `from` effects on and every image the
    /// model allows there, until `visit` returns false.
    pub(crate) fn explore(
        &self,
        model: Model,
        from: usize,
        budget: &Budget,
        visit: &mut dyn FnMut(&CrashPoint, &Fs) -> bool,
    ) -> Stats {
        let st = self.lock();
        crash::explore(model, &st.base, &st.log, &st.trace, from, budget, visit)
    }
}

/// A batch on a [`SimFs`]: the simulator's [`Batch`](crate::Batch).
pub struct SimBatch {
    options: Options,
    entries: Entries<SimFs>,
}

impl SimBatch {
    /// Keeps at most `max` temps open (default 64): later temps are
    /// finished and closed as they are written (issue 10).
    pub fn set_open_temps_max(&mut self, max: usize) {
        self.entries.set_open_temps_max(max);
    }

    /// As [`Batch::write`](crate::Batch::write).
    ///
    /// # Errors
    /// As [`Batch::write`](crate::Batch::write).
    pub fn write(&mut self, path: impl AsRef<Path>, contents: &[u8]) -> Result<(), Error> {
        let options = self.options.clone();
        self.write_with(&options, path, contents)
    }

    /// As [`Batch::write_with`](crate::Batch::write_with).
    ///
    /// # Errors
    /// As [`Batch::write`](crate::Batch::write).
    pub fn write_with(
        &mut self,
        opts: &Options,
        path: impl AsRef<Path>,
        contents: &[u8],
    ) -> Result<(), Error> {
        self.entries.write(opts, path.as_ref(), contents)
    }

    /// How many files the batch holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch holds no file.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// As [`Batch::commit`](crate::Batch::commit).
    ///
    /// # Errors
    /// As [`Batch::commit`](crate::Batch::commit).
    pub fn commit(self) -> Result<(), Error> {
        self.entries.commit()
    }
}

impl fmt::Debug for SimBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBatch")
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// A streaming replace on a [`SimFs`]: the simulator's `AtomicFile`.
pub struct SimFile {
    inner: Buffered<SimFs>,
}

impl SimFile {
    /// The path this file will replace.
    pub fn target(&self) -> &Path {
        self.inner.target()
    }

    /// As `AtomicFile::commit`.
    ///
    /// # Errors
    /// As `AtomicFile::commit`.
    pub fn commit(self) -> Result<(), Error> {
        self.inner.commit()
    }

    /// As `AtomicFile::discard`.
    ///
    /// # Errors
    /// As `AtomicFile::discard`.
    pub fn discard(self) -> Result<(), Error> {
        self.inner.discard()
    }
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for SimFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Turns the crash images after `effects` logged effects into simulators to
/// carry on from. Inode numbers are never reused in a lineage (an image may
/// lack inodes the volatile view had already numbered), and each image gets
/// its own temp-name seed.
pub(crate) fn images_to_sims(st: &State, effects: usize, images: Vec<Fs>) -> Vec<SimFs> {
    images
        .into_iter()
        .enumerate()
        .map(|(i, mut fs)| {
            fs.next_ino = fs.next_ino.max(st.volatile.next_ino);
            let mut seed = st.seed ^ (effects as u64) << 20 ^ i as u64;
            let seed = splitmix(&mut seed);
            SimFs::from_state(State::new(seed, fs, st.config))
        })
        .collect()
}

/// The directory `path` names, walked from `start` (symlinks followed):
/// `ENOENT`/`ENOTDIR` if it is not one.
fn dir_at(fs: &Fs, start: Ino, path: &Path) -> io::Result<Ino> {
    let ino = fs
        .walk(start, path.as_os_str().as_encoded_bytes(), true, SETUP)
        .map_err(errno::error)?;
    match fs.get(ino).map(|i| &i.node) {
        Some(Node::Dir { .. }) => Ok(ino),
        _ => Err(errno::error(errno::NOTDIR)),
    }
}

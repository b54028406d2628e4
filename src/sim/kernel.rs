//! The simulated kernel: [`Sys`] on an in-memory filesystem.
//!
//! Each call checks its preconditions against the volatile view and
//! returns the error number Linux returns (`EEXIST`, `ENOENT`, `ENOTDIR`,
//! `ELOOP`, `EISDIR`, `EACCES`, ...). When it succeeds it turns into
//! [`Op`]s, which are applied to the volatile view and appended, in program
//! order, to the log the crash models read.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use super::SimFs;
use super::errno::{self, Errno};
use super::fault::FaultPlan;
use super::fs::{Access, Cred, Fs, InitKind, Ino, Node, Op, ROOT, apply, mode_after_chown};
use super::trace::{Call, TraceEntry, show};
use crate::sys::{Kind, Stat, Sys};

/// The sector size that writes are torn at.
pub(crate) const SECTOR_LEN: u64 = 512;

/// At most this many independent pieces per write: the first sector, the
/// middle, and the last sector. Enough to tear the head, the tail and the
/// body apart, while keeping the image count of a write bounded (§2.8).
const PIECES_MAX: usize = 3;

/// One logged effect and the call (trace index) that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) call: usize,
    pub(crate) op: Op,
}

/// Knobs of the simulated system.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) cred: Cred,
    pub(crate) umask: u32,
    /// `renameat2(RENAME_NOREPLACE)` works (else `EINVAL`, as on ZFS).
    pub(crate) noreplace: bool,
    /// `linkat` works (else `EPERM`, as on filesystems without hard links).
    pub(crate) hardlinks: bool,
    /// `O_TMPFILE` works (else `EOPNOTSUPP`, and the protocol falls back).
    pub(crate) tmpfile: bool,
}

/// An open directory handle.
#[derive(Debug)]
pub(crate) struct SimDir {
    pub(crate) ino: Ino,
    /// The path it was opened with, for traces.
    path: String,
}

/// An open file handle.
#[derive(Debug)]
pub(crate) struct SimHandle {
    fd: u32,
    /// The name it was created with (temp names masked), for traces.
    name: String,
}

/// Work to run just before a given call: another writer's steps, to
/// interleave two writers deterministically in one thread.
pub(crate) struct Hook {
    /// The trace index of the call it runs before.
    pub(crate) before: usize,
    pub(crate) run: Box<dyn FnOnce(&SimFs) + Send>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hook(before #{})", self.before)
    }
}

/// Everything one simulator knows.
#[derive(Debug)]
pub(crate) struct State {
    /// What processes see.
    pub(crate) volatile: Fs,
    /// The durable state before the first logged op.
    pub(crate) base: Fs,
    /// Every effect since `base`, in program order.
    pub(crate) log: Vec<Entry>,
    pub(crate) trace: Vec<TraceEntry>,
    pub(crate) faults: FaultPlan,
    pub(crate) config: Config,
    pub(crate) seed: u64,
    rng: u64,
    open: BTreeMap<u32, Ino>,
    next_fd: u32,
    /// `flock`s held: inode -> the descriptor (open file description) that
    /// holds it. Released when that descriptor is closed.
    flocks: BTreeMap<Ino, u32>,
    pub(crate) hooks: Vec<Hook>,
    // issue 10: several filesystems, a working directory, a kernel version.
    /// Directories that are the root of a filesystem other than `/`'s:
    /// directory inode -> (device number, filesystem type).
    pub(crate) mounts: BTreeMap<Ino, (u64, u64)>,
    /// The filesystem type of `/`'s filesystem (device 0).
    pub(crate) root_fs_type: u64,
    /// The working directory relative paths start from.
    pub(crate) cwd: Ino,
    /// What `uname` reports: (major, minor).
    pub(crate) kernel: (u32, u32),
    /// The device of each file created during the run (an unnamed or
    /// unlinked file cannot be placed by walking the tree).
    file_dev: BTreeMap<Ino, u64>,
}

/// ext2/3/4's `f_type`, the simulator's default filesystem.
pub(crate) const EXT4_MAGIC: u64 = 0xEF53;

/// SplitMix64: a tiny, good-enough deterministic generator.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Splits the write `[offset, offset + len)` at sector boundaries into at
/// most [`PIECES_MAX`] pieces (as byte ranges relative to `offset`).
fn pieces(offset: u64, len: usize) -> Vec<(usize, usize)> {
    let end = offset + len as u64;
    let mut cuts = vec![0usize];
    let mut next = (offset / SECTOR_LEN + 1) * SECTOR_LEN;
    while next < end {
        cuts.push((next - offset) as usize);
        next += SECTOR_LEN;
    }
    cuts.push(len);
    let mut out: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
    if out.len() > PIECES_MAX {
        let last = out[out.len() - 1];
        out = vec![out[0], (out[0].1, last.0), last];
    }
    out
}

fn to_stat(fs: &Fs, ino: Ino) -> Stat {
    let inode = fs.get(ino).expect("a looked-up inode exists");
    let kind = match inode.node {
        Node::File { .. } => Kind::File,
        Node::Dir { .. } => Kind::Dir,
        Node::Symlink { .. } => Kind::Symlink,
    };
    Stat {
        kind,
        mode: inode.mode,
        uid: inode.uid,
        gid: inode.gid,
        nlink: u64::from(inode.nlink),
        ino: u64::from(ino),
        // The simulator has no clock: every file looks old to `sweep`.
        mtime: 0,
        // One filesystem, no mounts.
        dev: 1,
        mount_root: false,
    }
}

impl State {
    pub(crate) fn new(seed: u64, base: Fs, config: Config) -> State {
        State {
            volatile: base.clone(),
            base,
            log: Vec::new(),
            trace: Vec::new(),
            faults: FaultPlan::default(),
            config,
            seed,
            rng: seed,
            open: BTreeMap::new(),
            next_fd: 3,
            flocks: BTreeMap::new(),
            hooks: Vec::new(),
            mounts: BTreeMap::new(),
            root_fs_type: EXT4_MAGIC,
            cwd: ROOT,
            kernel: (6, 1),
            file_dev: BTreeMap::new(),
        }
    }

    fn cred(&self) -> Cred {
        self.config.cred
    }

    /// Records the start of a call; returns its index and an injected error.
    fn begin(&mut self, call: Call, args: String) -> (usize, Option<Errno>) {
        let index = self.trace.len();
        let fault = self.faults.take(index, call);
        self.trace.push(TraceEntry {
            call,
            args,
            result: fault.map_or(Ok(0), Err),
            injected: fault.is_some(),
        });
        (index, fault)
    }

    fn finish<T>(&mut self, index: usize, result: Result<T, Errno>) -> io::Result<T> {
        if let Err(e) = &result {
            self.trace[index].result = Err(*e);
        }
        result.map_err(errno::error)
    }

    /// Applies `op` to the volatile view and logs it.
    fn emit(&mut self, call: usize, op: Op) {
        apply(&mut self.volatile, &op);
        self.log.push(Entry { call, op });
    }

    fn is_open(&self, ino: Ino) -> bool {
        self.open.values().any(|&i| i == ino)
    }

    fn forget_if_unused(&mut self, ino: Ino) {
        let open = self.is_open(ino);
        self.volatile.forget_if_unused(ino, open);
    }

    fn lookup(&self, dir: Ino, name: &OsStr, follow: bool) -> Result<Ino, Errno> {
        self.volatile
            .walk(dir, name.as_encoded_bytes(), follow, self.cred())
    }

    /// The parent and last name of `name` relative to `dir`.
    fn parent_of(&self, dir: Ino, name: &OsStr) -> Result<(Ino, OsString), Errno> {
        self.volatile
            .walk_parent(dir, name.as_encoded_bytes(), self.cred())
    }

    /// The write permission on `parent` that adding or removing a name
    /// needs. Linux checks it after the lookups, so a missing name is
    /// `ENOENT` and a taken one `EEXIST` even in a read-only directory.
    fn may_change(&self, parent: Ino) -> Result<(), Errno> {
        if self.volatile.may(parent, Access::Write, self.cred()) {
            Ok(())
        } else {
            Err(errno::ACCESS)
        }
    }

    fn inode_of(&self, handle: &SimHandle) -> Result<Ino, Errno> {
        match self.open.get(&handle.fd) {
            Some(&ino) if self.volatile.get(ino).is_some() => Ok(ino),
            _ => Err(errno::BADF),
        }
    }

    fn open_dir(&mut self, path: &Path) -> Result<SimDir, Errno> {
        let ino = self.volatile.walk(
            self.cwd,
            path.as_os_str().as_encoded_bytes(),
            true,
            self.cred(),
        )?;
        if !matches!(
            self.volatile.get(ino).map(|i| &i.node),
            Some(Node::Dir { .. })
        ) {
            return Err(errno::NOTDIR);
        }
        if !self.volatile.may(ino, Access::Read, self.cred()) {
            return Err(errno::ACCESS);
        }
        Ok(SimDir {
            ino,
            path: path.display().to_string(),
        })
    }

    /// `openat(dir, path, O_DIRECTORY)`: a relative path starts at `dir`
    /// (at `/` without one, as the simulator has no working directory).
    fn open_dir_at(
        &mut self,
        dir: Option<&SimDir>,
        path: &Path,
        path_only: bool,
    ) -> Result<SimDir, Errno> {
        let bytes = path.as_os_str().as_encoded_bytes();
        let start = match dir {
            Some(d) if !bytes.starts_with(b"/") => d.ino,
            _ => ROOT,
        };
        let ino = self.volatile.walk(start, bytes, true, self.cred())?;
        if !matches!(
            self.volatile.get(ino).map(|i| &i.node),
            Some(Node::Dir { .. })
        ) {
            return Err(errno::NOTDIR);
        }
        if !path_only && !self.volatile.may(ino, Access::Read, self.cred()) {
            return Err(errno::ACCESS);
        }
        let shown = match dir {
            Some(d) if !bytes.starts_with(b"/") => format!("{}/{}", d.path, path.display()),
            _ => path.display().to_string(),
        };
        Ok(SimDir { ino, path: shown })
    }

    fn create_at(
        &mut self,
        call: usize,
        dir: Ino,
        name: &OsStr,
        mode: u32,
    ) -> Result<SimHandle, Errno> {
        let (parent, last) = self.parent_of(dir, name)?;
        if self.lookup(dir, name, false).is_ok() {
            return Err(errno::EXIST);
        }
        self.may_change(parent)?;
        let parent_inode = self.volatile.get(parent).ok_or(errno::NOENT)?;
        // A setgid directory hands its group to new files (BSD semantics).
        let gid = if parent_inode.mode & 0o2000 != 0 {
            parent_inode.gid
        } else {
            self.config.cred.gid
        };
        let ino = self.volatile.alloc_ino();
        assert!(self.volatile.get(ino).is_none(), "inode {ino} reused");
        let mode = mode & !self.config.umask & 0o7777;
        let uid = self.config.cred.uid;
        self.emit(
            call,
            Op::Init {
                ino,
                kind: InitKind::File,
                mode,
                uid,
                gid,
            },
        );
        self.emit(
            call,
            Op::Link {
                dir: parent,
                name: last,
                ino,
            },
        );
        let dev = self.dev_of_dir(parent);
        self.file_dev.insert(ino, dev);
        let fd = self.next_fd;
        self.next_fd += 1;
        self.open.insert(fd, ino);
        Ok(SimHandle {
            fd,
            name: show(name),
        })
    }

    /// The owner of a new inode in `parent`: the caller, with the
    /// directory's group where it is setgid.
    fn new_owner(&self, parent: Ino) -> Result<(u32, u32), Errno> {
        let parent_inode = self.volatile.get(parent).ok_or(errno::NOENT)?;
        let gid = if parent_inode.mode & 0o2000 != 0 {
            parent_inode.gid
        } else {
            self.config.cred.gid
        };
        Ok((self.config.cred.uid, gid))
    }

    // issue 12: create_dir_all
    fn mkdir_at(&mut self, call: usize, dir: Ino, name: &OsStr, mode: u32) -> Result<(), Errno> {
        let (parent, last) = self.parent_of(dir, name)?;
        if self.lookup(dir, name, false).is_ok() {
            return Err(errno::EXIST);
        }
        self.may_change(parent)?;
        let (uid, gid) = self.new_owner(parent)?;
        let ino = self.volatile.alloc_ino();
        let mode = mode & !self.config.umask & 0o7777;
        self.emit(
            call,
            Op::Init {
                ino,
                kind: InitKind::Dir { parent },
                mode,
                uid,
                gid,
            },
        );
        self.emit(
            call,
            Op::Link {
                dir: parent,
                name: last,
                ino,
            },
        );
        Ok(())
    }

    fn write_at(&mut self, call: usize, ino: Ino, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let size = match &self.volatile.get(ino).map(|i| &i.node) {
            Some(Node::File { size, .. }) => *size,
            _ => return Err(errno::BADF),
        };
        for (start, end) in pieces(offset, buf.len()) {
            let op = Op::Data {
                ino,
                offset: offset + start as u64,
                bytes: buf[start..end].to_vec(),
            };
            self.emit(call, op);
        }
        let end = offset + buf.len() as u64;
        if end > size {
            self.emit(call, Op::Size { ino, size: end });
        }
        Ok(buf.len())
    }

    fn set_owner(&mut self, call: usize, ino: Ino, uid: u32, gid: u32) -> Result<(), Errno> {
        let cred = self.cred();
        let inode = self.volatile.get(ino).ok_or(errno::BADF)?;
        // Without privilege a file can only be given to its own owner and
        // to a group the caller is in.
        if !cred.root && (inode.uid != cred.uid || uid != inode.uid || gid != cred.gid) {
            return Err(errno::PERM);
        }
        let is_file = matches!(inode.node, Node::File { .. });
        let mode = mode_after_chown(inode.mode, is_file);
        self.emit(
            call,
            Op::Meta {
                ino,
                mode,
                uid,
                gid,
            },
        );
        Ok(())
    }

    fn set_mode(&mut self, call: usize, ino: Ino, mode: u32) -> Result<(), Errno> {
        let cred = self.cred();
        let inode = self.volatile.get(ino).ok_or(errno::BADF)?;
        if !cred.root && inode.uid != cred.uid {
            return Err(errno::PERM);
        }
        let mut mode = mode & 0o7777;
        // Linux drops setgid silently when the caller is not in the group.
        if !cred.root && inode.gid != cred.gid {
            mode &= !0o2000;
        }
        let (uid, gid) = (inode.uid, inode.gid);
        self.emit(
            call,
            Op::Meta {
                ino,
                mode,
                uid,
                gid,
            },
        );
        Ok(())
    }

    /// `renameat` and `renameat2(RENAME_NOREPLACE)` within one directory.
    fn rename_at(
        &mut self,
        call: usize,
        dir: Ino,
        from: &OsStr,
        to: &OsStr,
        noreplace: bool,
    ) -> Result<(), Errno> {
        let (from_dir, from_name) = self.parent_of(dir, from)?;
        let (to_dir, to_name) = self.parent_of(dir, to)?;
        let ino = self.lookup(dir, from, false)?;
        let replaced = self.lookup(dir, to, false).ok();
        if noreplace && replaced.is_some() {
            return Err(errno::EXIST);
        }
        if replaced == Some(ino) {
            // Two names of one inode: POSIX says do nothing.
            return Ok(());
        }
        self.may_change(from_dir)?;
        self.may_change(to_dir)?;
        let is_dir = |i: Ino| {
            matches!(
                self.volatile.get(i).map(|n| &n.node),
                Some(Node::Dir { .. })
            )
        };
        if let Some(old) = replaced {
            match (is_dir(ino), is_dir(old)) {
                (false, true) => return Err(errno::ISDIR),
                (true, false) => return Err(errno::NOTDIR),
                (true, true) => {
                    let empty = matches!(&self.volatile.get(old).map(|n| &n.node), Some(Node::Dir { entries, .. }) if entries.is_empty());
                    if !empty {
                        return Err(errno::NOTEMPTY);
                    }
                }
                (false, false) => {}
            }
        }
        let replaced = replaced.map(|old| {
            let is_file = matches!(
                self.volatile.get(old).map(|n| &n.node),
                Some(Node::File { .. })
            );
            (old, is_file)
        });
        self.emit(
            call,
            Op::Rename {
                from_dir,
                from: from_name,
                to_dir,
                to: to_name,
                ino,
                replaced,
            },
        );
        if let Some((old, _)) = replaced {
            self.forget_if_unused(old);
        }
        Ok(())
    }

    fn link_at(&mut self, call: usize, dir: Ino, from: &OsStr, to: &OsStr) -> Result<(), Errno> {
        let ino = self.lookup(dir, from, false)?;
        let (to_dir, to_name) = self.parent_of(dir, to)?;
        if self.lookup(dir, to, false).is_ok() {
            return Err(errno::EXIST);
        }
        self.may_change(to_dir)?;
        if matches!(
            self.volatile.get(ino).map(|n| &n.node),
            Some(Node::Dir { .. })
        ) {
            return Err(errno::PERM);
        }
        if !self.config.hardlinks {
            return Err(errno::PERM);
        }
        self.emit(
            call,
            Op::Link {
                dir: to_dir,
                name: to_name,
                ino,
            },
        );
        Ok(())
    }

    fn open_fd(&mut self, ino: Ino, name: &OsStr) -> SimHandle {
        let fd = self.next_fd;
        self.next_fd += 1;
        self.open.insert(fd, ino);
        SimHandle {
            fd,
            name: show(name),
        }
    }

    fn open_read_at(&mut self, dir: Ino, name: &OsStr) -> Result<SimHandle, Errno> {
        let ino = self.lookup(dir, name, false)?;
        if matches!(
            self.volatile.get(ino).map(|n| &n.node),
            Some(Node::Symlink { .. })
        ) {
            // O_NOFOLLOW on a final symlink.
            return Err(errno::LOOP);
        }
        if !self.volatile.may(ino, Access::Read, self.cred()) {
            return Err(errno::ACCESS);
        }
        Ok(self.open_fd(ino, name))
    }

    fn read_at(&self, ino: Ino, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        match &self.volatile.get(ino).map(|i| &i.node) {
            Some(Node::File { data, size }) => {
                if offset >= *size {
                    return Ok(0);
                }
                let end = (*size).min(offset + buf.len() as u64);
                let n = (end - offset) as usize;
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = data.get(offset as usize + i).copied().unwrap_or(0);
                }
                Ok(n)
            }
            Some(Node::Dir { .. }) => Err(errno::ISDIR),
            _ => Err(errno::BADF),
        }
    }

    fn read_dir(&self, dir: Ino) -> Result<Vec<OsString>, Errno> {
        match &self.volatile.get(dir).map(|i| &i.node) {
            Some(Node::Dir { entries, .. }) => Ok(entries.keys().cloned().collect()),
            _ => Err(errno::NOTDIR),
        }
    }

    fn create_unnamed(&mut self, call: usize, dir: Ino, mode: u32) -> Result<SimHandle, Errno> {
        // A filesystem without hard links cannot link an O_TMPFILE inode
        // either, and Linux offers O_TMPFILE only where it can.
        if !self.config.tmpfile || !self.config.hardlinks {
            return Err(errno::NOTSUP);
        }
        self.may_change(dir)?;
        let (uid, gid) = self.new_owner(dir)?;
        let ino = self.volatile.alloc_ino();
        let mode = mode & !self.config.umask & 0o7777;
        self.emit(
            call,
            Op::Init {
                ino,
                kind: InitKind::File,
                mode,
                uid,
                gid,
            },
        );
        let dev = self.dev_of_dir(dir);
        self.file_dev.insert(ino, dev);
        Ok(self.open_fd(ino, OsStr::new("(unnamed)")))
    }

    fn link_unnamed(&mut self, call: usize, ino: Ino, dir: Ino, name: &OsStr) -> Result<(), Errno> {
        let (to_dir, to_name) = self.parent_of(dir, name)?;
        if self.lookup(dir, name, false).is_ok() {
            return Err(errno::EXIST);
        }
        self.may_change(to_dir)?;
        self.emit(
            call,
            Op::Link {
                dir: to_dir,
                name: to_name,
                ino,
            },
        );
        Ok(())
    }

    /// The device and filesystem type of directory `dir`: that of the
    /// nearest mount root above it, or of `/`.
    pub(crate) fn fs_of_dir(&self, dir: Ino) -> (u64, u64) {
        let mut cur = dir;
        loop {
            if let Some(&fs) = self.mounts.get(&cur) {
                return fs;
            }
            match self.volatile.get(cur).map(|i| &i.node) {
                Some(Node::Dir { parent, .. }) if *parent != cur => cur = *parent,
                _ => return (0, self.root_fs_type),
            }
        }
    }

    fn dev_of_dir(&self, dir: Ino) -> u64 {
        self.fs_of_dir(dir).0
    }

    /// Every inode on device `dev`: the tree walked from `/` (switching
    /// device at mount roots), plus the files created on it in this run.
    fn inodes_on(&self, dev: u64) -> std::collections::BTreeSet<Ino> {
        let mut out = std::collections::BTreeSet::new();
        let mut stack = vec![(ROOT, 0u64)];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((ino, parent_dev)) = stack.pop() {
            if !seen.insert(ino) {
                continue;
            }
            let here = self.mounts.get(&ino).map_or(parent_dev, |&(d, _)| d);
            if here == dev {
                out.insert(ino);
            }
            if let Some(Node::Dir { entries, .. }) = self.volatile.get(ino).map(|i| &i.node) {
                stack.extend(entries.values().map(|&child| (child, here)));
            }
        }
        out.extend(
            self.file_dev
                .iter()
                .filter(|&(_, &d)| d == dev)
                .map(|(&ino, _)| ino),
        );
        out
    }

    fn unlink_at(&mut self, call: usize, dir: Ino, name: &OsStr) -> Result<(), Errno> {
        let (parent, last) = self.parent_of(dir, name)?;
        let ino = self.lookup(dir, name, false)?;
        self.may_change(parent)?;
        if matches!(
            self.volatile.get(ino).map(|n| &n.node),
            Some(Node::Dir { .. })
        ) {
            return Err(errno::ISDIR);
        }
        self.emit(
            call,
            Op::Unlink {
                dir: parent,
                name: last,
                ino,
            },
        );
        self.forget_if_unused(ino);
        Ok(())
    }
}

impl SimFs {
    /// Locks the state for one traced call, first running any hook planned
    /// before the call with this index (with the lock released, since the
    /// hook makes calls of its own).
    fn enter(&self) -> std::sync::MutexGuard<'_, State> {
        loop {
            let mut st = self.lock();
            let index = st.trace.len();
            let Some(at) = st.hooks.iter().position(|h| h.before == index) else {
                return st;
            };
            let hook = st.hooks.remove(at);
            drop(st);
            (hook.run)(self);
        }
    }
}

impl Sys for SimFs {
    type Dir = SimDir;
    type File = SimHandle;

    fn open_dir(&self, path: &Path) -> io::Result<SimDir> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::OpenDir, path.display().to_string());
        let result = match fault {
            Some(e) => Err(e),
            None => st.open_dir(path),
        };
        st.finish(index, result)
    }

    fn stat_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<Stat> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::StatAt, format!("{}, {}", dir.path, show(name)));
        let result = match fault {
            Some(e) => Err(e),
            None => st
                .lookup(dir.ino, name, false)
                .map(|ino| to_stat(&st.volatile, ino)),
        };
        st.finish(index, result)
    }

    fn read_link_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<OsString> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::ReadLinkAt, format!("{}, {}", dir.path, show(name)));
        let result = match fault {
            Some(e) => Err(e),
            None => st.lookup(dir.ino, name, false).and_then(|ino| {
                match &st.volatile.get(ino).map(|i| &i.node) {
                    Some(Node::Symlink { target }) => Ok(target.clone()),
                    _ => Err(errno::INVAL),
                }
            }),
        };
        st.finish(index, result)
    }

    fn create_at(&self, dir: &SimDir, name: &OsStr, mode: u32) -> io::Result<SimHandle> {
        let mut st = self.enter();
        let args = format!("{}, {}, {mode:#o}", dir.path, show(name));
        let (index, fault) = st.begin(Call::CreateAt, args);
        let result = match fault {
            Some(e) => Err(e),
            None => st.create_at(index, dir.ino, name, mode),
        };
        st.finish(index, result)
    }

    fn write_at(&self, file: &SimHandle, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut st = self.enter();
        let args = format!("{}, {} bytes @{offset}", file.name, buf.len());
        let (index, fault) = st.begin(Call::WriteAt, args);
        let result = match fault {
            Some(e) => Err(e),
            None => st
                .inode_of(file)
                .and_then(|ino| st.write_at(index, ino, buf, offset)),
        };
        if let Ok(n) = result {
            st.trace[index].result = Ok(n as u64);
        }
        st.finish(index, result)
    }

    fn stat_file(&self, file: &SimHandle) -> io::Result<Stat> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::StatFile, file.name.clone());
        let result = match fault {
            Some(e) => Err(e),
            None => st.inode_of(file).map(|ino| to_stat(&st.volatile, ino)),
        };
        st.finish(index, result)
    }

    fn set_owner(&self, file: &SimHandle, uid: u32, gid: u32) -> io::Result<()> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::SetOwner, format!("{}, {uid}, {gid}", file.name));
        let result = match fault {
            Some(e) => Err(e),
            None => st
                .inode_of(file)
                .and_then(|ino| st.set_owner(index, ino, uid, gid)),
        };
        st.finish(index, result)
    }

    fn set_mode(&self, file: &SimHandle, mode: u32) -> io::Result<()> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::SetMode, format!("{}, {mode:#o}", file.name));
        let result = match fault {
            Some(e) => Err(e),
            None => st
                .inode_of(file)
                .and_then(|ino| st.set_mode(index, ino, mode)),
        };
        st.finish(index, result)
    }

    fn sync_file(&self, file: &SimHandle) -> io::Result<()> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::SyncFile, file.name.clone());
        let result = st.inode_of(file).and_then(|ino| match fault {
            // Writeback failed: Linux marks the pages clean, so what was
            // pending never reaches the disk, and the next fsync succeeds.
            Some(e) if [errno::IO, errno::NOSPC, errno::DQUOT].contains(&e) => {
                st.emit(index, Op::SyncLost { ino });
                Err(e)
            }
            Some(e) => Err(e),
            None => {
                st.emit(index, Op::SyncFile { ino });
                Ok(())
            }
        });
        st.finish(index, result)
    }

    fn close(&self, file: SimHandle) {
        let mut st = self.enter();
        st.begin(Call::Close, file.name.clone());
        st.flocks.retain(|_, fd| *fd != file.fd);
        if let Some(ino) = st.open.remove(&file.fd) {
            st.forget_if_unused(ino);
        }
    }

    fn rename_at(&self, dir: &SimDir, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let mut st = self.enter();
        let args = format!("{}, {}, {}", dir.path, show(from), show(to));
        let (index, fault) = st.begin(Call::RenameAt, args);
        let result = match fault {
            Some(e) => Err(e),
            None => st.rename_at(index, dir.ino, from, to, false),
        };
        st.finish(index, result)
    }

    fn rename_noreplace_at(&self, dir: &SimDir, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let mut st = self.enter();
        let args = format!("{}, {}, {}", dir.path, show(from), show(to));
        let (index, fault) = st.begin(Call::RenameNoreplaceAt, args);
        let result = match fault {
            Some(e) => Err(e),
            None if !st.config.noreplace => Err(errno::INVAL),
            None => st.rename_at(index, dir.ino, from, to, true),
        };
        st.finish(index, result)
    }

    fn link_at(&self, dir: &SimDir, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let mut st = self.enter();
        let args = format!("{}, {}, {}", dir.path, show(from), show(to));
        let (index, fault) = st.begin(Call::LinkAt, args);
        let result = match fault {
            Some(e) => Err(e),
            None => st.link_at(index, dir.ino, from, to),
        };
        st.finish(index, result)
    }

    fn unlink_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<()> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::UnlinkAt, format!("{}, {}", dir.path, show(name)));
        let result = match fault {
            Some(e) => Err(e),
            None => st.unlink_at(index, dir.ino, name),
        };
        st.finish(index, result)
    }

    fn sync_dir(&self, dir: &SimDir) -> io::Result<()> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::SyncDir, dir.path.clone());
        let result = match fault {
            Some(e) => Err(e),
            None => {
                st.emit(index, Op::SyncDir { dir: dir.ino });
                Ok(())
            }
        };
        st.finish(index, result)
    }

    fn lock(&self, file: &SimHandle, wait: bool) -> io::Result<()> {
        // flock locks belong to an open file description: a second
        // descriptor of the same file (a `sweep` opening a live writer's
        // temp) conflicts even within one process. One thread cannot wait
        // for itself, so a conflict fails at once either way.
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::Lock, format!("{}, wait={wait}", file.name));
        let result = match fault {
            Some(e) => Err(e),
            None => st.inode_of(file).and_then(|ino| match st.flocks.get(&ino) {
                Some(&fd) if fd != file.fd => Err(errno::AGAIN),
                _ => {
                    st.flocks.insert(ino, file.fd);
                    Ok(())
                }
            }),
        };
        st.finish(index, result)
    }

    /// Always granted: one thread cannot wait for another holder, and the
    /// protocol takes this lock once per `update`.
    fn lock_dir(&self, dir: &SimDir) -> io::Result<()> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::LockDir, dir.path.clone());
        st.finish(index, fault.map_or(Ok(()), Err))
    }

    fn open_read_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<SimHandle> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::OpenReadAt, format!("{}, {}", dir.path, show(name)));
        let result = match fault {
            Some(e) => Err(e),
            None => st.open_read_at(dir.ino, name),
        };
        st.finish(index, result)
    }

    fn read_at(&self, file: &SimHandle, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.enter();
        let args = format!("{}, {} bytes @{offset}", file.name, buf.len());
        let (index, fault) = st.begin(Call::ReadAt, args);
        let result = match fault {
            Some(e) => Err(e),
            None => st
                .inode_of(file)
                .and_then(|ino| st.read_at(ino, buf, offset)),
        };
        if let Ok(n) = result {
            st.trace[index].result = Ok(n as u64);
        }
        st.finish(index, result)
    }

    fn read_dir(&self, dir: &SimDir) -> io::Result<Vec<OsString>> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::ReadDir, dir.path.clone());
        let result = match fault {
            Some(e) => Err(e),
            None => st.read_dir(dir.ino),
        };
        st.finish(index, result)
    }

    /// The simulated filesystem has no extended attributes (`EOPNOTSUPP`,
    /// as on a filesystem mounted without them); copying them is best
    /// effort, so the protocol carries on.
    fn list_xattrs(&self, file: &SimHandle) -> io::Result<Vec<OsString>> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::ListXattrs, file.name.clone());
        st.finish(index, Err(fault.unwrap_or(errno::NOTSUP)))
    }

    fn get_xattr(&self, file: &SimHandle, name: &OsStr) -> io::Result<Vec<u8>> {
        let mut st = self.enter();
        let args = format!("{}, {}", file.name, name.to_string_lossy());
        let (index, fault) = st.begin(Call::GetXattr, args);
        st.finish(index, Err(fault.unwrap_or(errno::NOTSUP)))
    }

    fn set_xattr(&self, file: &SimHandle, name: &OsStr, _value: &[u8]) -> io::Result<()> {
        let mut st = self.enter();
        let args = format!("{}, {}", file.name, name.to_string_lossy());
        let (index, fault) = st.begin(Call::SetXattr, args);
        st.finish(index, Err(fault.unwrap_or(errno::NOTSUP)))
    }

    fn sync_fs(&self, dir: &SimDir) -> io::Result<()> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::SyncFs, dir.path.clone());
        let result = match fault {
            // A failed syncfs makes nothing durable that was pending; the
            // protocol must not rename after it.
            Some(e) => Err(e),
            // One filesystem: everything. Several: that of `dir` only.
            None if st.mounts.is_empty() => {
                st.emit(index, Op::SyncAll);
                Ok(())
            }
            None => {
                let dev = st.dev_of_dir(dir.ino);
                let inos = st.inodes_on(dev);
                st.emit(index, Op::SyncFs { inos });
                Ok(())
            }
        };
        st.finish(index, result)
    }

    fn create_unnamed(&self, dir: &SimDir, mode: u32) -> io::Result<SimHandle> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::CreateUnnamed, format!("{}, {mode:#o}", dir.path));
        let result = match fault {
            Some(e) => Err(e),
            None => st.create_unnamed(index, dir.ino, mode),
        };
        st.finish(index, result)
    }

    fn link_unnamed(&self, file: &SimHandle, dir: &SimDir, name: &OsStr) -> io::Result<()> {
        let mut st = self.enter();
        let args = format!("{}, {}, {}", file.name, dir.path, show(name));
        let (index, fault) = st.begin(Call::LinkUnnamed, args);
        let result = match fault {
            Some(e) => Err(e),
            None => st
                .inode_of(file)
                .and_then(|ino| st.link_unnamed(index, ino, dir.ino, name)),
        };
        st.finish(index, result)
    }

    fn random(&self) -> u64 {
        splitmix(&mut SimFs::lock(self).rng)
    }

    // issue 11: the kernel's own checks.

    fn stat_dir(&self, dir: &SimDir) -> io::Result<Stat> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::StatDir, dir.path.clone());
        let result = match fault {
            Some(e) => Err(e),
            None => {
                let mut stat = to_stat(&st.volatile, dir.ino);
                // The directory's filesystem (the simulator's mounts).
                stat.dev = st.dev_of_dir(dir.ino);
                Ok(stat)
            }
        };
        st.finish(index, result)
    }

    fn open_dir_at(
        &self,
        dir: Option<&SimDir>,
        path: &Path,
        path_only: bool,
    ) -> io::Result<SimDir> {
        let mut st = self.enter();
        let shown = match dir {
            Some(dir) => format!("{}, {}, path_only={path_only}", dir.path, path.display()),
            None => format!("{}, path_only={path_only}", path.display()),
        };
        let (index, fault) = st.begin(Call::OpenDirAt, shown);
        let result = match fault {
            Some(e) => Err(e),
            None => st.open_dir_at(dir, path, path_only),
        };
        st.finish(index, result)
    }

    /// The simulated filesystem is never procfs.
    fn is_procfs(&self, dir: &SimDir) -> io::Result<bool> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::IsProcfs, dir.path.clone());
        st.finish(index, fault.map_or(Ok(false), Err))
    }

    /// Not traced: no filesystem call.
    fn euid(&self) -> u32 {
        let cred = SimFs::lock(self).config.cred;
        if cred.root { 0 } else { cred.uid }
    }

    // issue 10: the filesystem type and the kernel version.

    fn fs_type(&self, dir: &SimDir) -> io::Result<u64> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::StatFs, dir.path.clone());
        let result = match fault {
            Some(e) => Err(e),
            None => Ok(st.fs_of_dir(dir.ino).1),
        };
        st.finish(index, result)
    }

    fn kernel_version(&self) -> (u32, u32) {
        SimFs::lock(self).kernel
    }

    // issue 11b: a default ACL inherited by the temp.

    /// The simulated filesystem has no ACLs, so nothing can have been
    /// inherited: a plain `fchmod`, traced as one (the real call it stands
    /// for, an `fsetxattr` of a minimal ACL, is one call too).
    fn set_mode_without_acl(&self, file: &SimHandle, mode: u32) -> io::Result<()> {
        self.set_mode(file, mode)
    }

    // issue 12: update without hanging; create_dir_all
    /// Always granted, as [`Sys::lock_dir`] here.
    fn try_lock_dir(&self, dir: &SimDir) -> io::Result<()> {
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::TryLockDir, dir.path.clone());
        st.finish(index, fault.map_or(Ok(()), Err))
    }

    /// The device number is this simulator's own, so two simulators in one
    /// thread never look like one directory.
    fn dir_identity(&self, dir: &SimDir) -> io::Result<(u64, u64)> {
        let dev = self.instance_id();
        let mut st = self.enter();
        let (index, fault) = st.begin(Call::DirIdentity, dir.path.clone());
        let result = match fault {
            Some(e) => Err(e),
            None => Ok((dev, u64::from(dir.ino))),
        };
        st.finish(index, result)
    }

    fn mkdir_at(&self, dir: &SimDir, name: &OsStr, mode: u32) -> io::Result<()> {
        let mut st = self.enter();
        let args = format!("{}, {}, {mode:#o}", dir.path, show(name));
        let (index, fault) = st.begin(Call::MkdirAt, args);
        let result = match fault {
            Some(e) => Err(e),
            None => st.mkdir_at(index, dir.ino, name, mode),
        };
        st.finish(index, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_tear_at_sectors_into_at_most_three_pieces() {
        assert_eq!(pieces(0, 1), vec![(0, 1)]);
        assert_eq!(pieces(0, 512), vec![(0, 512)]);
        assert_eq!(pieces(0, 513), vec![(0, 512), (512, 513)]);
        assert_eq!(pieces(100, 1000), vec![(0, 412), (412, 924), (924, 1000)]);
        assert_eq!(pieces(0, 4096), vec![(0, 512), (512, 3584), (3584, 4096)]);
    }
}

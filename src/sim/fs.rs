//! The in-memory filesystem tree and the effects that change it.
//!
//! One [`Fs`] value is one state of a disk: the volatile view the process
//! sees, the durable view, or a recovered crash image. Every mutating
//! syscall of the simulator is turned into [`Op`]s, and the *same*
//! [`apply`] function moves the volatile view forward and rebuilds crash
//! images from a subset of those ops. That sharing is what makes the
//! images trustworthy: replaying every op of a run on the starting state
//! gives exactly the volatile state (checked by the model self-tests).
//!
//! [`apply`] is lenient on purpose: in a crash image an op may land without
//! the ops it depended on (a name without its inode, data without the size
//! that makes it visible). It then does what a filesystem checker would
//! leave behind, and [`Fs::fsck`] finishes the job.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use super::errno::{self, Errno};

/// An inode number. Never reused within one simulator lineage, so the same
/// number means the same file in the volatile view, the log and every image.
pub(crate) type Ino = u32;

/// The root directory's inode.
pub(crate) const ROOT: Ino = 1;

/// How many symlinks one path walk follows before `ELOOP` (Linux: 40).
const SYMLINK_HOPS_MAX: u32 = 40;

/// The longest name of one path component (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Permission bits a `chown` clears on a regular file.
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o010;

/// What an inode is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// A regular file. `data` may be longer than `size` in a durable view
    /// (written blocks whose size update did not persist); readers see
    /// `size` bytes, zero-filled past the end of `data`.
    File { data: Vec<u8>, size: u64 },
    /// A directory; `parent` is the directory that holds it (root: itself).
    Dir {
        entries: BTreeMap<OsString, Ino>,
        parent: Ino,
    },
    /// A symbolic link.
    Symlink { target: OsString },
}

/// An inode: its content and the metadata the protocol cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Inode {
    pub(crate) node: Node,
    /// Permission bits, `0o7777`.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Names that point to this inode (files and symlinks; 2 for directories).
    pub(crate) nlink: u32,
}

/// How an `Init` op creates its inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InitKind {
    File,
    Dir { parent: Ino },
    Symlink { target: OsString },
}

/// One effect of a syscall, in the vocabulary of REFERENCE.md §2.1, plus the
/// sync markers the crash models need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// A new inode (create, mkdir, symlink).
    Init {
        ino: Ino,
        kind: InitKind,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// One sector-aligned piece of a write.
    Data {
        ino: Ino,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The file size after an extending write.
    Size { ino: Ino, size: u64 },
    /// Mode and owner after `fchmod`/`fchown` (the whole triple).
    Meta {
        ino: Ino,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A new name (`Dent Add`): create or link.
    Link { dir: Ino, name: OsString, ino: Ino },
    /// A removed name (`Dent Del`).
    Unlink { dir: Ino, name: OsString, ino: Ino },
    /// A rename, all or nothing. `replaced` is the inode that lost the name
    /// `to`, and whether it was a regular file (ext4's `auto_da_alloc`).
    Rename {
        from_dir: Ino,
        from: OsString,
        to_dir: Ino,
        to: OsString,
        ino: Ino,
        replaced: Option<(Ino, bool)>,
    },
    /// A successful `fsync` of a file.
    SyncFile { ino: Ino },
    /// A successful `fsync` of a directory.
    SyncDir { dir: Ino },
    /// A failed `fsync` of a file: its dirty pages were dropped (Linux marks
    /// them clean), so its pending data never reaches the disk.
    SyncLost { ino: Ino },
    /// `sync()`: everything so far is durable.
    SyncAll,
    /// `syncfs` on one of several filesystems: everything so far on the
    /// inodes listed (those of that filesystem) is durable.
    SyncFs {
        inos: std::collections::BTreeSet<Ino>,
    },
}

/// Process credentials for permission checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cred {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) root: bool,
}

/// Permission wanted on an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read = 4,
    Write = 2,
    Search = 1,
}

/// A whole filesystem state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fs {
    pub(crate) inodes: BTreeMap<Ino, Inode>,
    /// The next unused inode number.
    pub(crate) next_ino: Ino,
}

impl Fs {
    /// An empty filesystem: a root directory, mode 0755, owned by root.
    pub(crate) fn new() -> Fs {
        let mut inodes = BTreeMap::new();
        inodes.insert(
            ROOT,
            Inode {
                node: Node::Dir {
                    entries: BTreeMap::new(),
                    parent: ROOT,
                },
                mode: 0o755,
                uid: 0,
                gid: 0,
                nlink: 2,
            },
        );
        Fs {
            inodes,
            next_ino: ROOT + 1,
        }
    }

    pub(crate) fn get(&self, ino: Ino) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub(crate) fn get_mut(&mut self, ino: Ino) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    pub(crate) fn alloc_ino(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// The entry `name` in directory `dir` (no `.`/`..` handling).
    pub(crate) fn entry(&self, dir: Ino, name: &OsStr) -> Option<Ino> {
        match &self.get(dir)?.node {
            Node::Dir { entries, .. } => entries.get(name).copied(),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> Option<&mut BTreeMap<OsString, Ino>> {
        match &mut self.get_mut(dir)?.node {
            Node::Dir { entries, .. } => Some(entries),
            _ => None,
        }
    }

    /// The visible bytes of a regular file.
    pub(crate) fn content(&self, ino: Ino) -> Option<Vec<u8>> {
        match &self.get(ino)?.node {
            Node::File { data, size } => {
                let size = *size as usize;
                let mut out = data[..size.min(data.len())].to_vec();
                out.resize(size, 0);
                Some(out)
            }
            _ => None,
        }
    }

    /// Whether `cred` may access `ino` as `want`. Root may do anything.
    pub(crate) fn may(&self, ino: Ino, want: Access, cred: Cred) -> bool {
        if cred.root {
            return true;
        }
        let Some(inode) = self.get(ino) else {
            return false;
        };
        let bits = if inode.uid == cred.uid {
            inode.mode >> 6
        } else if inode.gid == cred.gid {
            inode.mode >> 3
        } else {
            inode.mode
        };
        bits & want as u32 != 0
    }

    /// Looks up one component in `dir`, as the kernel does: `dir` must be a
    /// directory we may search; `.` and `..` are handled.
    fn step(&self, dir: Ino, name: &[u8], cred: Cred) -> Result<Option<Ino>, Errno> {
        let Some(Inode {
            node: Node::Dir { parent, .. },
            ..
        }) = self.get(dir)
        else {
            return Err(errno::NOTDIR);
        };
        if !self.may(dir, Access::Search, cred) {
            return Err(errno::ACCESS);
        }
        if name.len() > NAME_MAX {
            return Err(errno::NAMETOOLONG);
        }
        Ok(match name {
            b"." => Some(dir),
            b".." => Some(*parent),
            _ => self.entry(dir, bytes_os(name)),
        })
    }

    /// Walks `path` from `start` (or the root, for an absolute path),
    /// following symlinks in every component but the last, and in the last
    /// one too when `follow_last` (or when the path ends in `/`).
    pub(crate) fn walk(
        &self,
        start: Ino,
        path: &[u8],
        follow_last: bool,
        cred: Cred,
    ) -> Result<Ino, Errno> {
        let mut hops = 0;
        self.walk_from(start, path, follow_last, cred, &mut hops)
    }

    fn walk_from(
        &self,
        start: Ino,
        path: &[u8],
        follow_last: bool,
        cred: Cred,
        hops: &mut u32,
    ) -> Result<Ino, Errno> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        let mut cur = if path[0] == b'/' { ROOT } else { start };
        let trailing_slash = path.ends_with(b"/");
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let dir = cur;
            cur = self.step(dir, part, cred)?.ok_or(errno::NOENT)?;
            let follow = !last || follow_last || trailing_slash;
            if let (true, Some(Node::Symlink { target })) = (follow, self.get(cur).map(|n| &n.node))
            {
                *hops += 1;
                if *hops > SYMLINK_HOPS_MAX {
                    return Err(errno::LOOP);
                }
                cur = self.walk_from(dir, target.as_encoded_bytes(), true, cred, hops)?;
            }
            if (!last || trailing_slash)
                && !matches!(self.get(cur).map(|n| &n.node), Some(Node::Dir { .. }))
            {
                return Err(errno::NOTDIR);
            }
        }
        Ok(cur)
    }

    /// Splits `path` for a call that creates or removes its last component:
    /// the directory that holds it (walked fully) and the last name.
    pub(crate) fn walk_parent(
        &self,
        start: Ino,
        path: &[u8],
        cred: Cred,
    ) -> Result<(Ino, OsString), Errno> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        let trimmed = trim_trailing_slashes(path);
        let (head, name) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        let dir = if head.is_empty() {
            start
        } else {
            self.walk(start, head, true, cred)?
        };
        if !matches!(self.get(dir).map(|n| &n.node), Some(Node::Dir { .. })) {
            return Err(errno::NOTDIR);
        }
        if !self.may(dir, Access::Search, cred) {
            return Err(errno::ACCESS);
        }
        if name.len() > NAME_MAX {
            return Err(errno::NAMETOOLONG);
        }
        Ok((dir, bytes_os(name).to_os_string()))
    }

    /// Drops inode `ino` if no name and no open handle keeps it alive.
    pub(crate) fn forget_if_unused(&mut self, ino: Ino, open: bool) {
        let dead = self
            .get(ino)
            .is_some_and(|i| i.nlink == 0 && !matches!(i.node, Node::Dir { .. }));
        if dead && !open {
            self.inodes.remove(&ino);
        }
    }

    /// The recovery step after a crash (REFERENCE.md §2.1): a name whose
    /// inode never reached the disk becomes an empty file with mode 0 owned
    /// by root; inodes no name reaches are dropped; link counts are
    /// recounted; file data is cut or zero-filled to the durable size.
    pub(crate) fn fsck(&mut self) {
        let mut names: BTreeMap<Ino, u32> = BTreeMap::new();
        let mut stack = vec![ROOT];
        let mut dangling = Vec::new();
        let mut seen_dirs = std::collections::BTreeSet::new();
        while let Some(dir) = stack.pop() {
            if !seen_dirs.insert(dir) {
                continue;
            }
            let Some(Inode {
                node: Node::Dir { entries, .. },
                ..
            }) = self.get(dir)
            else {
                continue;
            };
            for &ino in entries.values() {
                match self.get(ino).map(|i| &i.node) {
                    None => dangling.push(ino),
                    Some(Node::Dir { .. }) => stack.push(ino),
                    Some(_) => *names.entry(ino).or_insert(0) += 1,
                }
            }
        }
        for ino in dangling {
            *names.entry(ino).or_insert(0) += 1;
            self.next_ino = self.next_ino.max(ino + 1);
            self.inodes.entry(ino).or_insert(Inode {
                node: Node::File {
                    data: Vec::new(),
                    size: 0,
                },
                mode: 0,
                uid: 0,
                gid: 0,
                nlink: 0,
            });
        }
        self.inodes.retain(|ino, inode| match &mut inode.node {
            Node::Dir { .. } => seen_dirs.contains(ino),
            node => match names.get(ino) {
                None => false,
                Some(&n) => {
                    inode.nlink = n;
                    if let Node::File { data, size } = node {
                        data.resize(*size as usize, 0);
                    }
                    true
                }
            },
        });
    }
}

fn trim_trailing_slashes(path: &[u8]) -> &[u8] {
    let mut end = path.len();
    while end > 1 && path[end - 1] == b'/' {
        end -= 1;
    }
    &path[..end]
}

/// Bytes to `OsStr` (Unix: any bytes are a valid `OsStr`).
pub(crate) fn bytes_os(b: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(b)
}

/// Mode after `chown` on a regular file: setuid always goes, setgid goes
/// when group-execute is set (otherwise it marks mandatory locking), as
/// Linux's `notify_change` does for root and users alike.
pub(crate) fn mode_after_chown(mode: u32, is_file: bool) -> u32 {
    if !is_file {
        return mode;
    }
    let mut mode = mode & !S_ISUID;
    if mode & S_IXGRP != 0 {
        mode &= !S_ISGID;
    }
    mode
}

/// Applies one op to `fs`. Exact on a volatile view (every precondition
/// was checked by the syscall); lenient in a crash image, where an op may
/// find the inode or name it expects missing.
pub(crate) fn apply(fs: &mut Fs, op: &Op) {
    match op {
        Op::Init {
            ino,
            kind,
            mode,
            uid,
            gid,
        } => {
            let (node, nlink) = match kind {
                InitKind::File => (
                    Node::File {
                        data: Vec::new(),
                        size: 0,
                    },
                    0,
                ),
                InitKind::Dir { parent } => (
                    Node::Dir {
                        entries: BTreeMap::new(),
                        parent: *parent,
                    },
                    2,
                ),
                InitKind::Symlink { target } => (
                    Node::Symlink {
                        target: target.clone(),
                    },
                    0,
                ),
            };
            fs.inodes.entry(*ino).or_insert(Inode {
                node,
                mode: *mode,
                uid: *uid,
                gid: *gid,
                nlink,
            });
            fs.next_ino = fs.next_ino.max(*ino + 1);
        }
        Op::Data { ino, offset, bytes } => {
            if let Some(Inode {
                node: Node::File { data, .. },
                ..
            }) = fs.get_mut(*ino)
            {
                let start = *offset as usize;
                let end = start + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[start..end].copy_from_slice(bytes);
            }
        }
        Op::Size { ino, size: new } => {
            if let Some(Inode {
                node: Node::File { size, .. },
                ..
            }) = fs.get_mut(*ino)
            {
                *size = *new;
            }
        }
        Op::Meta {
            ino,
            mode,
            uid,
            gid,
        } => {
            if let Some(inode) = fs.get_mut(*ino) {
                inode.mode = *mode;
                inode.uid = *uid;
                inode.gid = *gid;
            }
        }
        Op::Link { dir, name, ino } => add_name(fs, *dir, name, *ino),
        Op::Unlink { dir, name, ino } => {
            let removed = fs
                .entries_mut(*dir)
                .is_some_and(|e| e.get(name) == Some(ino) && e.remove(name).is_some());
            if removed {
                drop_link(fs, *ino);
            }
        }
        Op::Rename {
            from_dir,
            from,
            to_dir,
            to,
            ino,
            ..
        } => {
            let removed = fs
                .entries_mut(*from_dir)
                .is_some_and(|e| e.get(from) == Some(ino) && e.remove(from).is_some());
            if removed {
                drop_link(fs, *ino);
            }
            add_name(fs, *to_dir, to, *ino);
        }
        Op::SyncFile { .. }
        | Op::SyncDir { .. }
        | Op::SyncLost { .. }
        | Op::SyncAll
        | Op::SyncFs { .. } => {}
    }
}

/// Points `dir/name` at `ino`; whatever the name pointed to loses a link.
fn add_name(fs: &mut Fs, dir: Ino, name: &OsStr, ino: Ino) {
    let Some(entries) = fs.entries_mut(dir) else {
        return;
    };
    let old = entries.insert(name.to_os_string(), ino);
    if old == Some(ino) {
        return;
    }
    if let Some(old) = old {
        drop_link(fs, old);
    }
    if let Some(inode) = fs.get_mut(ino) {
        if !matches!(inode.node, Node::Dir { .. }) {
            inode.nlink += 1;
        }
    }
}

fn drop_link(fs: &mut Fs, ino: Ino) {
    if let Some(inode) = fs.get_mut(ino) {
        if !matches!(inode.node, Node::Dir { .. }) {
            inode.nlink = inode.nlink.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_CRED: Cred = Cred {
        uid: 0,
        gid: 0,
        root: true,
    };

    fn mkdir(fs: &mut Fs, parent: Ino, name: &str) -> Ino {
        let ino = fs.alloc_ino();
        apply(
            fs,
            &Op::Init {
                ino,
                kind: InitKind::Dir { parent },
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        );
        apply(
            fs,
            &Op::Link {
                dir: parent,
                name: name.into(),
                ino,
            },
        );
        ino
    }

    fn symlink(fs: &mut Fs, parent: Ino, name: &str, target: &str) -> Ino {
        let ino = fs.alloc_ino();
        let kind = InitKind::Symlink {
            target: target.into(),
        };
        apply(
            fs,
            &Op::Init {
                ino,
                kind,
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        );
        apply(
            fs,
            &Op::Link {
                dir: parent,
                name: name.into(),
                ino,
            },
        );
        ino
    }

    #[test]
    fn walk_errors_match_linux() {
        let mut fs = Fs::new();
        let d = mkdir(&mut fs, ROOT, "d");
        symlink(&mut fs, d, "up", "..");
        symlink(&mut fs, d, "self", "self");
        symlink(&mut fs, d, "dangling", "nowhere");
        let walk = |p: &str| fs.walk(ROOT, p.as_bytes(), true, ROOT_CRED);
        assert_eq!(walk("/d"), Ok(d));
        assert_eq!(walk("/d/up/d/./up/d"), Ok(d));
        assert_eq!(walk("/d/missing"), Err(errno::NOENT));
        assert_eq!(walk("/d/self"), Err(errno::LOOP));
        assert_eq!(walk("/d/dangling"), Err(errno::NOENT));
        assert_eq!(walk(""), Err(errno::NOENT));
        let long = format!("/{}", "x".repeat(256));
        assert_eq!(walk(&long), Err(errno::NAMETOOLONG));
    }

    #[test]
    fn fsck_turns_a_dangling_name_into_an_empty_file() {
        let mut fs = Fs::new();
        apply(
            &mut fs,
            &Op::Link {
                dir: ROOT,
                name: "x".into(),
                ino: 9,
            },
        );
        fs.fsck();
        let x = fs.entry(ROOT, OsStr::new("x")).unwrap();
        assert_eq!(fs.content(x), Some(Vec::new()));
        assert_eq!(fs.get(x).unwrap().mode, 0);
    }
}

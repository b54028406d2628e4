//! `DirReplace` (issue 16): a directory whose set of files is replaced as one
//! unit, so a crash, a failure or a concurrent reader sees the complete old
//! set or the complete new set, never a mix.
//!
//! The new set is staged in a hidden sibling directory `.NAME.RANDOM.stage`,
//! flushed, and swapped with the target by one `renameat2(RENAME_EXCHANGE)`.
//! The old set then sits under the staging name and is removed. See
//! DESIGN.md, "Replacing a set of files", for the outline and trade-offs.
//!
//! Locks (`flock`, released by the kernel when a process dies):
//! - the writer holds an exclusive lock on its staging directory from its
//!   creation until after the exchange, so `sweep` never removes a live
//!   writer's staging;
//! - a [`SetReader`] holds a shared lock on the directory it reads, and the
//!   old set is removed only under an exclusive lock taken without waiting;
//!   a set someone still reads stays (hidden, under its staging name) until
//!   a later commit or sweep removes it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags};

use crate::batch::syncfs_trusted;
use crate::error::{Error, InvalidReason, Step};
use crate::sys::{Kind, RealSys, Sys};

const SUFFIX: &[u8] = b".stage";
const RANDOM_LEN: usize = 16;
/// The longest file name most filesystems accept.
const NAME_MAX: usize = 255;
/// How often a reader reopens the target when a commit moved it away
/// between its open and its lock.
const READER_RETRIES: u32 = 100;

fn os(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// The staging name for `target_name`: `.NAME.RANDOM.stage`, 16 hex digits
/// of randomness, the name shortened to fit in 255 bytes.
fn staging_name(target_name: &OsStr, random: u64) -> OsString {
    let name = target_name.as_encoded_bytes();
    let room = NAME_MAX - (2 + RANDOM_LEN + SUFFIX.len());
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&name[..name.len().min(room)]);
    out.push(b'.');
    out.extend_from_slice(format!("{random:016x}").as_bytes());
    out.extend_from_slice(SUFFIX);
    OsString::from_vec(out)
}

/// True if `name` has the shape of a staging directory name this module
/// makes (`.NAME.` + 16 lowercase hex digits + `.stage`). `sweep` uses this
/// with [`remove_stale_staging`].
pub(crate) fn is_staging_name(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    let fixed = 1 + 1 + 1 + RANDOM_LEN + SUFFIX.len();
    if b.len() < fixed || b[0] != b'.' || !b.ends_with(SUFFIX) {
        return false;
    }
    let end = b.len() - SUFFIX.len();
    let random = &b[end - RANDOM_LEN..end];
    b[end - RANDOM_LEN - 1] == b'.'
        && random
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// True if `name` is a staging name made for the target `target_name`
/// (allowing for the shortening of long names).
fn is_staging_of(name: &OsStr, target_name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    let t = target_name.as_encoded_bytes();
    let room = NAME_MAX - (2 + RANDOM_LEN + SUFFIX.len());
    let t = &t[..t.len().min(room)];
    is_staging_name(name)
        && b.len() == t.len() + 2 + RANDOM_LEN + SUFFIX.len()
        && &b[1..=t.len()] == t
}

fn open_dir_at(parent: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(parent, name, flags, Mode::empty()).map_err(os)
}

/// Removes the staging directory `name` in `parent` if it is a leftover:
/// a real directory (never a symlink) with a staging name whose exclusive
/// lock can be taken without waiting (no live writer, no reader of an old
/// set). Returns whether it was removed. For `sweep` to call for every
/// name with [`is_staging_name`].
pub(crate) fn remove_stale_staging(parent: &OwnedFd, name: &OsStr) -> io::Result<bool> {
    remove_staging(parent, name, true)
}

/// [`remove_stale_staging`]; `sync_parent`: fsync the parent before
/// removing anything, so an exchange whose own parent fsync failed (or
/// was never reached) cannot roll back, after a crash, to the set being
/// removed. A commit that has just synced the parent passes false.
fn remove_staging(parent: &OwnedFd, name: &OsStr, sync_parent: bool) -> io::Result<bool> {
    if !is_staging_name(name) {
        return Ok(false);
    }
    let dir = match open_dir_at(parent, name) {
        Ok(dir) => dir,
        // A symlink (ELOOP), a file (ENOTDIR) or gone: not ours to remove.
        Err(_) => return Ok(false),
    };
    if rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(false);
    }
    // Still the same directory under that name (not exchanged away since).
    let now = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(os)?;
    let held = rustix::fs::fstat(&dir).map_err(os)?;
    if now.st_ino != held.st_ino || now.st_dev != held.st_dev {
        return Ok(false);
    }
    if sync_parent {
        // The parent's entries on disk before a set is destroyed (above).
        rustix::fs::fsync(parent).map_err(os)?;
    }
    remove_contents(&dir)?;
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(os(e)),
    }
}

/// Unlinks every entry of a set directory (files only; a set holds no
/// subdirectories, and a subdirectory someone added is left, so `rmdir`
/// then fails with a clear error rather than a recursive delete).
fn remove_contents(dir: &OwnedFd) -> io::Result<()> {
    for name in list(dir)? {
        match rustix::fs::unlinkat(dir, name.as_os_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(os(e)),
        }
    }
    Ok(())
}

/// The first subdirectory in `dir`, if any (from the entries' types; a
/// `statx` only where the filesystem does not report them).
fn subdirectory(dir: &OwnedFd) -> io::Result<Option<OsString>> {
    use rustix::fs::FileType;
    for entry in rustix::fs::Dir::read_from(dir).map_err(os)? {
        let entry = entry.map_err(os)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                rustix::fs::statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            }
            _ => false,
        };
        if is_dir {
            return Ok(Some(OsString::from_vec(name.to_vec())));
        }
    }
    Ok(None)
}

fn list(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(os)? {
        let name = entry.map_err(os)?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    names.sort();
    Ok(names)
}

/// Splits `path` into its parent (`.` if none) and final name.
fn split(path: &Path) -> Result<(PathBuf, OsString), Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid(path, InvalidReason::Empty));
    }
    // A trailing slash is fine for a directory (`saves/slot1/`); `/`, `..`
    // and `.` name no entry that could be exchanged.
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name.to_os_string(),
        _ => return Err(Error::invalid(path, InvalidReason::NoFileName)),
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// A member name must be one plain file name: not empty, no `/`, not `.`
/// or `..`, no NUL byte. Non-UTF-8 bytes are fine.
fn member_name<'a>(target: &Path, name: &'a Path) -> Result<&'a OsStr, Error> {
    let mut parts = name.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(n)), None)
            if !name.as_os_str().as_encoded_bytes().contains(&b'/')
                && !n.as_encoded_bytes().contains(&0) =>
        {
            Ok(n)
        }
        _ => Err(Error::io(
            Step::CreateTemp,
            &target.join(name),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a member of a set must be one plain file name (no '/', '.', '..', NUL or empty name)",
            ),
        )),
    }
}

/// Replaces the whole content of a directory as one unit: after a crash,
/// a failure or a drop the directory holds the complete old set of files,
/// after [`commit`](DirReplace::commit) the complete new set, durably;
/// [`DirReplace::open_reader`] reads one version, never a mix.
///
/// The new set is exactly what was staged with [`write`](DirReplace::write),
/// [`create`](DirReplace::create_file) and [`keep`](DirReplace::keep): files
/// of the old set not named again are gone after the commit. A set holds
/// regular files only (no subdirectories).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let slot_path = dir.path().join("slot1");
/// use std::io::Write;
/// let mut slot = crashsafe::DirReplace::create(&slot_path)?;
/// slot.write("world.dat", b"terrain")?;
/// let mut player = slot.create_file("player.json")?;
/// player.write_all(br#"{"hp": 10}"#).unwrap();
/// drop(player);
/// slot.commit()?;
///
/// let mut slot = crashsafe::DirReplace::create(&slot_path)?;
/// slot.keep("world.dat")?; // carried over by a hard link, no copy
/// slot.write("player.json", br#"{"hp": 9}"#)?;
/// slot.commit()?;
///
/// let reader = crashsafe::DirReplace::open_reader(&slot_path)?;
/// assert_eq!(reader.read("world.dat")?, b"terrain");
/// assert_eq!(reader.read("player.json")?, br#"{"hp": 9}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Where it works: Linux filesystems with `RENAME_EXCHANGE` (ext4, XFS,
/// btrfs, tmpfs, f2fs); elsewhere `commit` fails with
/// [`std::io::ErrorKind::Unsupported`] and the old set stays. The target must
/// be a real directory (a symlink to one is refused: pass the resolved
/// path), not a mount point, and its parent must be writable.
///
/// Concurrent writers on one target do not block each other: each stages
/// its own set and the last commit wins, whole (as with single files).
///
/// A file carried over by [`keep`](DirReplace::keep) is a hard link to the
/// old file: someone who holds that file open and writes into it in place
/// changes it in both sets. Files this library writes are never changed in
/// place, so this matters only for other writers.
pub struct DirReplace {
    target: PathBuf,
    parent: OwnedFd,
    name: OsString,
    /// The staging directory, locked exclusively until the exchange.
    stage: Option<OwnedFd>,
    stage_name: OsString,
    /// The old set, if the target existed when staging began.
    old: Option<OwnedFd>,
    /// Mode and owner the new directory gets at commit.
    dir_mode: u32,
    dir_owner: Option<(u32, u32)>,
    /// `syncfs` through the staging fd reports every write-back error of
    /// the staged files (opened after it), so one `syncfs` flushes the set.
    syncfs: bool,
    /// Where `syncfs` cannot be trusted: the staged files, fsynced at commit.
    files: Vec<OwnedFd>,
    staged: Vec<OsString>,
    /// A deliberately broken variant for the crash tools: no flush before
    /// the exchange (set only through `sim`-feature test hooks).
    skip_flush: bool,
    /// A member whose write failed: the set may hold it short, so it
    /// cannot be committed.
    poisoned: Option<PathBuf>,
}

impl fmt::Debug for DirReplace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirReplace")
            .field("target", &self.target)
            .field("staging", &self.stage_name)
            .field("staged", &self.staged)
            .finish_non_exhaustive()
    }
}

impl DirReplace {
    /// Starts replacing the set of files in directory `path` (created by the
    /// commit if it does not exist). Creates the hidden staging directory
    /// beside it, and first removes leftovers of earlier writers of `path`
    /// that died (and old sets no reader holds any more).
    ///
    /// # Errors
    /// [`Error::InvalidTarget`] for an empty path, one without a file name,
    /// a target that is not a directory (or is a symlink), a mount point;
    /// [`Step::OpenParent`], [`Step::InspectTarget`], [`Step::CreateTemp`]
    /// (the staging directory) for system call failures. Nothing is left
    /// behind after an error.
    pub fn create<P: AsRef<Path>>(path: P) -> Result<DirReplace, Error> {
        let target = path.as_ref().to_path_buf();
        let (parent_path, name) = split(&target)?;
        let sys = RealSys;
        let parent = sys
            .open_dir(&parent_path)
            .map_err(|e| Error::io(Step::OpenParent, &target, e))?;
        let (old, dir_mode, dir_owner) = match sys.stat_at(&parent, &name) {
            Ok(st) if st.kind == Kind::Dir && st.mount_root => {
                return Err(Error::invalid(&target, InvalidReason::MountPoint));
            }
            Ok(st) if st.kind == Kind::Dir => {
                let old = open_dir_at(&parent, &name)
                    .map_err(|e| Error::io(Step::InspectTarget, &target, e))?;
                // A set holds files only: a subdirectory would be dropped
                // from the new set and could not be removed with the old.
                if let Some(sub) =
                    subdirectory(&old).map_err(|e| Error::io(Step::InspectTarget, &target, e))?
                {
                    return Err(Error::io(
                        Step::InspectTarget,
                        &target.join(sub),
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "a set holds files only, and this is a subdirectory: move it out first",
                        ),
                    ));
                }
                (Some(old), st.mode & 0o7777, Some((st.uid, st.gid)))
            }
            Ok(_) => return Err(Error::invalid(&target, InvalidReason::NotRegularFile)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, 0, None),
            Err(e) => return Err(Error::io(Step::InspectTarget, &target, e)),
        };
        // Leftovers of dead writers of this target; failures here are not
        // this writer's problem (the next one retries).
        if let Ok(names) = list(&parent) {
            for n in names.iter().filter(|n| is_staging_of(n, &name)) {
                let _ = remove_stale_staging(&parent, n);
            }
        }
        let (stage, stage_name, umask_mode) = Self::make_stage(&sys, &parent, &name, &target)?;
        let dir_mode = if old.is_some() { dir_mode } else { umask_mode };
        let syncfs = sys
            .fs_type(&stage)
            .is_ok_and(|t| syncfs_trusted(t, sys.kernel_version()));
        Ok(DirReplace {
            target,
            parent,
            name,
            stage: Some(stage),
            stage_name,
            old,
            dir_mode,
            dir_owner,
            syncfs,
            files: Vec::new(),
            staged: Vec::new(),
            skip_flush: false,
            poisoned: None,
        })
    }

    /// Creates and locks the staging directory; returns it, its name and
    /// the mode a new directory gets here (0o777 less the umask).
    fn make_stage(
        sys: &RealSys,
        parent: &OwnedFd,
        name: &OsStr,
        target: &Path,
    ) -> Result<(OwnedFd, OsString, u32), Error> {
        let mut tries = 0;
        loop {
            let stage_name = staging_name(name, sys.random());
            match rustix::fs::mkdirat(parent, stage_name.as_os_str(), Mode::from_raw_mode(0o777)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) if tries < 64 => {
                    tries += 1;
                    continue;
                }
                Err(e) => return Err(Error::io(Step::CreateTemp, target, os(e))),
            }
            // Another writer of this target sweeping leftovers may take an
            // unlocked stage for a dead one's: between our `mkdirat` and our
            // `flock` it can remove it. Then we hold (or fail to open) a
            // removed directory: draw a new name.
            let setup = || -> io::Result<Option<(OwnedFd, u32)>> {
                let stage = match open_dir_at(parent, &stage_name) {
                    Ok(stage) => stage,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                rustix::fs::flock(&stage, FlockOperation::LockExclusive).map_err(os)?;
                let held = rustix::fs::fstat(&stage).map_err(os)?;
                match rustix::fs::statat(parent, stage_name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(st) if st.st_ino == held.st_ino && st.st_dev == held.st_dev => {}
                    Ok(_) | Err(rustix::io::Errno::NOENT) => return Ok(None),
                    Err(e) => return Err(os(e)),
                }
                // Private while staging; the final mode is set at commit.
                rustix::fs::fchmod(&stage, Mode::from_raw_mode(0o700)).map_err(os)?;
                Ok(Some((stage, held.st_mode & 0o7777)))
            };
            match setup() {
                Ok(Some((stage, mode))) => return Ok((stage, stage_name, mode)),
                Ok(None) if tries < 64 => tries += 1,
                Ok(None) => {
                    let e = io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the staging directory was removed by another writer 64 times",
                    );
                    return Err(Error::io(Step::CreateTemp, target, e));
                }
                Err(e) => {
                    let _ =
                        rustix::fs::unlinkat(parent, stage_name.as_os_str(), AtFlags::REMOVEDIR);
                    return Err(Error::io(Step::CreateTemp, target, e));
                }
            }
        }
    }

    fn stage(&self) -> &OwnedFd {
        self.stage
            .as_ref()
            .expect("staging directory is open until commit")
    }

    /// Mode and owner for a new member `name`: the old set's file of that
    /// name if there is one, else 0o666 less the umask and the caller.
    fn open_member(&mut self, name: &OsStr, path: &Path) -> Result<OwnedFd, Error> {
        let old = self.old.as_ref().and_then(|old| {
            rustix::fs::statat(old, name, AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .filter(|st| st.st_mode & 0o170000 == 0o100000)
        });
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file = rustix::fs::openat(self.stage(), name, flags, Mode::from_raw_mode(0o666))
            .map_err(|e| Error::io(Step::CreateTemp, path, os(e)))?;
        if let Some(st) = old {
            // Owner first (it clears setuid), best effort as for single files.
            let _ = rustix::fs::fchown(
                &file,
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
            );
            rustix::fs::fchmod(&file, Mode::from_raw_mode(st.st_mode & 0o7777))
                .map_err(|e| Error::io(Step::SetMode, path, os(e)))?;
        }
        self.staged.push(name.to_os_string());
        Ok(file)
    }

    /// Stages `name` with `contents`. The mode and owner of the old set's
    /// file of that name are kept.
    ///
    /// # Errors
    /// [`Step::CreateTemp`] (also for a bad name or a name staged twice),
    /// [`Step::SetMode`], [`Step::Write`]. The old set is untouched.
    pub fn write<N: AsRef<Path>, C: AsRef<[u8]>>(
        &mut self,
        name: N,
        contents: C,
    ) -> Result<(), Error> {
        let mut f = self.create_file(name)?;
        let path = f.path.clone();
        // Through the staged file, so a failure poisons the set.
        f.write_all(contents.as_ref())
            .map_err(|e| Error::io(Step::Write, &path, e))
    }

    /// Stages `name` to be written in pieces: the returned file is
    /// `Write + Seek` (and `Read`). Drop it when done; it is flushed at
    /// [`commit`](DirReplace::commit).
    ///
    /// # Errors
    /// As [`write`](DirReplace::write).
    pub fn create_file<N: AsRef<Path>>(&mut self, name: N) -> Result<StagedFile<'_>, Error> {
        let name = member_name(&self.target, name.as_ref())?.to_os_string();
        let path = self.target.join(&name);
        let fd = self.open_member(&name, &path)?;
        Ok(StagedFile {
            file: Some(File::from(fd)),
            path,
            keep_fd: (!self.syncfs).then_some(&mut self.files),
            poisoned: &mut self.poisoned,
        })
    }

    /// Carries the old set's file `name` into the new set unchanged: a hard
    /// link (same inode, no bytes copied), or a copy keeping its mode where
    /// links are refused.
    ///
    /// # Errors
    /// [`Step::ReadTarget`] with `NotFound` if the old set has no regular
    /// file `name` (or there is no old set); [`Step::CreateTemp`] for a bad
    /// name or a failed link; [`Step::Write`] for a failed copy.
    pub fn keep<N: AsRef<Path>>(&mut self, name: N) -> Result<(), Error> {
        let name = member_name(&self.target, name.as_ref())?.to_os_string();
        let path = self.target.join(&name);
        let Some(old) = self.old.as_ref() else {
            return Err(Error::io(
                Step::ReadTarget,
                &path,
                io::ErrorKind::NotFound.into(),
            ));
        };
        let st = rustix::fs::statat(old, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io(Step::ReadTarget, &path, os(e)))?;
        if st.st_mode & 0o170000 != 0o100000 {
            return Err(Error::invalid(&path, InvalidReason::NotRegularFile));
        }
        match rustix::fs::linkat(
            old,
            name.as_os_str(),
            self.stage(),
            name.as_os_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => {
                // Already durable as the old set's file; the link itself is
                // flushed with the staging directory at commit.
                self.staged.push(name);
                Ok(())
            }
            Err(rustix::io::Errno::EXIST) => Err(Error::io(
                Step::CreateTemp,
                &path,
                io::ErrorKind::AlreadyExists.into(),
            )),
            // EPERM (protected_hardlinks, filesystems without links),
            // EMLINK, EXDEV: copy the bytes instead.
            Err(_) => {
                let src = rustix::fs::openat(
                    old,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::io(Step::ReadTarget, &path, os(e)))?;
                let mut src = File::from(src);
                let mut dst = self.create_file(&name)?;
                io::copy(&mut src, &mut dst).map_err(|e| Error::io(Step::Write, &path, e))?;
                Ok(())
            }
        }
    }

    /// Test hook for the crash tools (`sim` feature): a deliberately broken
    /// commit that exchanges before the staged set is flushed. The crash
    /// checks must catch it. Never use it otherwise.
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn broken_skip_flush(&mut self) {
        self.skip_flush = true;
    }

    /// Test hook for the crash tools (`sim` feature): flush with an
    /// `fsync` of every member and of the stage, as where `syncfs` is not
    /// trusted, so that path runs on filesystems where it is. Only before
    /// anything is staged (else nothing happens). Never use it otherwise.
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn fsync_each_for_testing(&mut self) {
        if self.staged.is_empty() {
            self.syncfs = false;
        }
    }

    /// The names staged so far, in staging order.
    pub fn staged(&self) -> &[OsString] {
        &self.staged
    }

    /// Makes the staged set the directory's content, atomically and
    /// durably: every staged file and the staging directory are flushed,
    /// then one `renameat2(RENAME_EXCHANGE)` swaps the staging directory
    /// with the target (`RENAME_NOREPLACE` if there is none yet), then the
    /// parent is flushed and the old set removed.
    ///
    /// # Errors
    /// [`Step::Write`] naming a member whose write failed earlier (even if
    /// the caller went on): nothing is committed.
    /// [`Step::SetOwner`]/[`Step::SetMode`] (the directory's), [`Step::SyncTemp`]
    /// or [`Step::SyncFilesystem`] (the flush), [`Step::Rename`] (the
    /// exchange; `Unsupported` where the filesystem has no
    /// `RENAME_EXCHANGE`): the old set is in place and the staging is
    /// removed. [`Step::SyncParent`]: the new set is in place, its
    /// durability unknown ([`Error::target_replaced`]). Failing to remove
    /// the old set afterwards is not an error: it stays hidden under a
    /// staging name until the next `create` or `sweep`.
    pub fn commit(mut self) -> Result<(), Error> {
        let target = self.target.clone();
        if let Some(member) = self.poisoned.take() {
            let e = io::Error::other(
                "a write to this member failed earlier; the set was not committed",
            );
            return Err(Error::io(Step::Write, &member, e));
        }
        self.flush()?;
        self.switch()?;
        // From here the staging fd is the new set, under the target name:
        // Drop must never empty it. Held (locked) until the parent fsync,
        // so a reader opens it only once the switch is on disk.
        let new_set = self.stage.take();
        let old_set = std::mem::take(&mut self.stage_name);
        // The switch itself on disk: the parent's entries now name the new
        // set under the target name.
        if let Err(e) = rustix::fs::fsync(&self.parent) {
            // The switch may still roll back after a power cut, to the old
            // set: leave it whole (hidden; a later create or sweep removes it).
            return Err(Error::io(Step::SyncParent, &target, os(e)));
        }
        drop(new_set);
        // The old set (if one was exchanged out), unless a reader holds it.
        if !old_set.is_empty() {
            let _ = remove_staging(&self.parent, &old_set, false);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        let target = self.target.clone();
        let stage = self.stage.as_ref().expect("open until commit");
        if let Some((uid, gid)) = self.dir_owner {
            let _ = rustix::fs::fchown(
                stage,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            );
        }
        rustix::fs::fchmod(stage, Mode::from_raw_mode(self.dir_mode))
            .map_err(|e| Error::io(Step::SetMode, &target, os(e)))?;
        if self.skip_flush {
            // The deliberately broken variant: nothing flushed.
        } else if self.syncfs {
            // One flush for the data and metadata of every staged file and
            // of the staging directory: the set is on disk before the
            // exchange can be. The staging fd predates every staged file,
            // so this reports any write-back error they had.
            rustix::fs::syncfs(stage)
                .map_err(|e| Error::io(Step::SyncFilesystem, &target, os(e)))?;
        } else {
            for f in self.files.drain(..) {
                // Each file's data and size on disk before the exchange.
                rustix::fs::fsync(&f).map_err(|e| Error::io(Step::SyncTemp, &target, os(e)))?;
            }
            // The staging directory's entries on disk before the exchange.
            rustix::fs::fsync(stage).map_err(|e| Error::io(Step::SyncTemp, &target, os(e)))?;
        }
        Ok(())
    }

    fn switch(&mut self) -> Result<(), Error> {
        let target = self.target.clone();
        // Something else put at the name since `create` (a file, a
        // symlink) would be exchanged just as well: refuse instead.
        match rustix::fs::statat(
            &self.parent,
            self.name.as_os_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(st)
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    != rustix::fs::FileType::Directory =>
            {
                return Err(Error::invalid(&target, InvalidReason::NotRegularFile));
            }
            _ => {}
        }
        for _ in 0..64 {
            let exchange = rustix::fs::renameat_with(
                &self.parent,
                self.stage_name.as_os_str(),
                &self.parent,
                self.name.as_os_str(),
                RenameFlags::EXCHANGE,
            );
            match exchange {
                Ok(()) => return Ok(()),
                // No target (yet, or any more): create it, never overwrite.
                Err(rustix::io::Errno::NOENT) => {
                    match rustix::fs::renameat_with(
                        &self.parent,
                        self.stage_name.as_os_str(),
                        &self.parent,
                        self.name.as_os_str(),
                        RenameFlags::NOREPLACE,
                    ) {
                        Ok(()) => {
                            // Nothing was exchanged out: no old set to remove.
                            self.stage = None;
                            self.stage_name = OsString::new();
                            return Ok(());
                        }
                        // Another writer created it meanwhile: exchange.
                        Err(rustix::io::Errno::EXIST) => continue,
                        Err(e) => return Err(Error::io(Step::Rename, &target, os(e))),
                    }
                }
                Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                    return Err(Error::io(
                        Step::Rename,
                        &target,
                        io::Error::new(
                            io::ErrorKind::Unsupported,
                            "this filesystem cannot exchange two directories (RENAME_EXCHANGE)",
                        ),
                    ));
                }
                Err(e) => return Err(Error::io(Step::Rename, &target, os(e))),
            }
        }
        Err(Error::io(
            Step::Rename,
            &target,
            io::ErrorKind::AlreadyExists.into(),
        ))
    }

    /// Opens directory `path` for reading one version of its set.
    ///
    /// # Errors
    /// `NotFound` if there is no such directory; other OS errors as is.
    pub fn open_reader<P: AsRef<Path>>(path: P) -> io::Result<SetReader> {
        SetReader::open_set(path.as_ref())
    }

    /// Removes the leftovers of writers of `path` that died (staging
    /// directories nobody holds locked); returns how many were removed.
    /// [`create`](DirReplace::create) does this too.
    ///
    /// # Errors
    /// Opening or listing the parent directory, or removing a leftover.
    pub fn sweep<P: AsRef<Path>>(path: P) -> Result<usize, Error> {
        let target = path.as_ref();
        let (parent_path, name) = split(target)?;
        let parent = RealSys
            .open_dir(&parent_path)
            .map_err(|e| Error::io(Step::OpenParent, target, e))?;
        let names = list(&parent).map_err(|e| Error::io(Step::ReadDir, target, e))?;
        let mut removed = 0;
        for n in names.iter().filter(|n| is_staging_of(n, &name)) {
            if remove_stale_staging(&parent, n)
                .map_err(|e| Error::io(Step::RemoveTemp, target, e))?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Drop for DirReplace {
    fn drop(&mut self) {
        // Not committed (or the exchange failed): the staging is still
        // ours, locked, and holds only the staged set.
        if let Some(stage) = self.stage.take() {
            self.files.clear();
            let _ = remove_contents(&stage);
            let _ = rustix::fs::unlinkat(
                &self.parent,
                self.stage_name.as_os_str(),
                AtFlags::REMOVEDIR,
            );
        }
    }
}

/// A file being staged by [`DirReplace::create_file`]: `Read + Write + Seek`.
/// A failed write or seek marks the set: its
/// [`commit`](DirReplace::commit) then fails, since the member may be short.
pub struct StagedFile<'a> {
    file: Option<File>,
    path: PathBuf,
    /// Where `syncfs` is not trusted, the fd goes here on drop to be fsynced.
    keep_fd: Option<&'a mut Vec<OwnedFd>>,
    /// Set to this member's path when a write or seek fails.
    poisoned: &'a mut Option<PathBuf>,
}

impl fmt::Debug for StagedFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedFile")
            .field("path", &self.path)
            .finish()
    }
}

impl StagedFile<'_> {
    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until dropped")
    }
}

impl StagedFile<'_> {
    fn poison<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if r.is_err() {
            *self.poisoned = Some(self.path.clone());
        }
        r
    }
}

impl Write for StagedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.file().write(buf);
        self.poison(r)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for StagedFile<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let r = self.file().seek(pos);
        self.poison(r)
    }
}

impl Read for StagedFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file().read(buf)
    }
}

impl Drop for StagedFile<'_> {
    fn drop(&mut self) {
        if let (Some(file), Some(fds)) = (self.file.take(), self.keep_fd.as_mut()) {
            fds.push(OwnedFd::from(file));
        }
    }
}

/// One version of a set, for reading: holds the directory it opened (and a
/// shared lock on it, so a commit does not remove it while it is read).
/// Every read through it sees the same version, whatever commits happen
/// meanwhile; drop it and open a new one to see the latest set. A reader
/// held for long keeps an old set on disk (hidden) until it is dropped and
/// a later commit or sweep removes it. (So does a child process forked
/// while the reader is open, until it calls `exec`: it shares the lock.)
pub struct SetReader {
    dir: OwnedFd,
    path: PathBuf,
}

impl fmt::Debug for SetReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetReader")
            .field("path", &self.path)
            .finish()
    }
}

impl SetReader {
    fn open_set(path: &Path) -> io::Result<SetReader> {
        let (parent_path, name) = split(path).map_err(io::Error::from)?;
        let parent = RealSys.open_dir(&parent_path)?;
        for _ in 0..READER_RETRIES {
            let dir = open_dir_at(&parent, &name)?;
            // Waits only while a committer still holds the new set (between
            // its exchange and its parent fsync).
            rustix::fs::flock(&dir, FlockOperation::LockShared).map_err(os)?;
            // Still the target? If a commit moved it away between our open
            // and our lock, its files may already be gone: reopen.
            let now = rustix::fs::statat(&parent, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW);
            let held = rustix::fs::fstat(&dir).map_err(os)?;
            if now.is_ok_and(|st| st.st_ino == held.st_ino && st.st_dev == held.st_dev) {
                return Ok(SetReader {
                    dir,
                    path: path.to_path_buf(),
                });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{}: replaced {READER_RETRIES} times while opening it",
                path.display()
            ),
        ))
    }

    /// The names in this version of the set, sorted by bytes.
    ///
    /// # Errors
    /// The OS error of listing the directory.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        list(&self.dir)
    }

    /// Opens member `name` of this version for reading.
    ///
    /// # Errors
    /// `InvalidInput` for a name that is not one plain file name;
    /// `NotFound` if this version has no such member.
    pub fn open<N: AsRef<Path>>(&self, name: N) -> io::Result<File> {
        let name = member_name(&self.path, name.as_ref()).map_err(io::Error::from)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        Ok(File::from(
            rustix::fs::openat(&self.dir, name, flags, Mode::empty()).map_err(os)?,
        ))
    }

    /// Reads member `name` of this version whole.
    ///
    /// # Errors
    /// As [`open`](SetReader::open), plus read errors.
    pub fn read<N: AsRef<Path>>(&self, name: N) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(name)?.read_to_end(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn staging_names_are_recognised_and_bound_to_their_target() {
        let n = staging_name(OsStr::new("slot1"), 0xdead_beef);
        assert_eq!(n, OsStr::new(".slot1.00000000deadbeef.stage"));
        assert!(is_staging_name(&n));
        assert!(is_staging_of(&n, OsStr::new("slot1")));
        assert!(!is_staging_of(&n, OsStr::new("slot")));
        assert!(!is_staging_of(&n, OsStr::new("slot12")));
        for other in [
            ".slot1.00000000deadbeeg.stage",
            "slot1.00000000deadbeef.stage",
            ".slot1.00000000deadbeef.tmp",
            ".slot1.0000000deadbeef.stage",
        ] {
            assert!(!is_staging_name(OsStr::new(other)), "{other}");
        }
        let long = OsString::from("x".repeat(255));
        let n = staging_name(&long, 7);
        assert!(n.len() <= 255 && is_staging_of(&n, &long));
    }
}

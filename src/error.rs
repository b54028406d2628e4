//! The error type: which step failed, for which target, and whether the
//! target had already been replaced.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A step of the replace protocol, as named in errors.
///
/// The steps before [`Step::Rename`] leave the target untouched when they fail;
/// [`Step::SyncParent`] and [`Step::RemoveTempLink`] fail after the new content
/// is in place (see [`Error::target_replaced`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Opening the directory that holds the target (or, for `sweep`, the
    /// directory to sweep).
    OpenParent,
    /// Waiting for the directory lock that serialises `update` calls.
    Lock,
    /// Reading the current content for `update`.
    ReadTarget,
    /// The caller's `update` function returned an error.
    Transform,
    /// Listing the directory for `sweep`.
    ReadDir,
    /// Looking at the existing target (`fstatat`).
    InspectTarget,
    /// Reading a symlink at the target while following it.
    ResolveSymlink,
    /// Creating the temporary file beside the target.
    CreateTemp,
    /// Writing the new content into the temporary file.
    Write,
    /// Looking at the temporary file's owner and mode (`fstat`) before
    /// keeping the old file's.
    InspectTemp,
    /// Giving the temporary file the target's owner.
    SetOwner,
    /// Giving the temporary file its final permission bits.
    SetMode,
    /// Flushing the temporary file to disk (`fsync`).
    SyncTemp,
    /// Flushing a batch's filesystem to disk (`syncfs`).
    SyncFilesystem,
    /// Giving an unnamed (`O_TMPFILE`) temporary file a name.
    LinkTemp,
    /// Keeping the previous version as the backup file (`name~`).
    Backup,
    /// Renaming (or, for `create_new`, linking) the temporary file onto the target.
    Rename,
    /// Flushing the directory so the rename itself is durable.
    SyncParent,
    /// Removing the temporary name after it was linked onto the target
    /// (`create_new` fallback where `RENAME_NOREPLACE` is unsupported).
    RemoveTempLink,
    /// Removing the temporary file after a failure or a discard.
    RemoveTemp,
}

impl Step {
    /// Whether a failure at this step happens after the target was replaced.
    fn after_publish(self) -> bool {
        matches!(self, Step::SyncParent | Step::RemoveTempLink)
    }

    fn describe(self) -> &'static str {
        match self {
            Step::OpenParent => "open the parent directory",
            Step::Lock => "lock the parent directory",
            Step::ReadTarget => "read the current file",
            Step::Transform => "compute the new content",
            Step::ReadDir => "list the directory",
            Step::SyncFilesystem => "sync the filesystem",
            Step::LinkTemp => "link the temporary file into the directory",
            Step::Backup => "keep the previous version as a backup",
            Step::InspectTarget => "inspect the existing file",
            Step::ResolveSymlink => "read the symlink",
            Step::CreateTemp => "create the temporary file",
            Step::Write => "write the temporary file",
            Step::InspectTemp => "inspect the temporary file",
            Step::SetOwner => "set the owner of the temporary file",
            Step::SetMode => "set the permissions of the temporary file",
            Step::SyncTemp => "fsync the temporary file",
            Step::Rename => "rename the temporary file over the target",
            Step::SyncParent => "fsync the parent directory",
            Step::RemoveTempLink => "remove the temporary name after linking",
            Step::RemoveTemp => "remove the temporary file",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why a path cannot be replaced, found before any file was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The path is empty.
    Empty,
    /// The path has no file name: `/`, `..`, `a/.` or a trailing slash.
    NoFileName,
    /// The target is a directory.
    IsDirectory,
    /// The target is a FIFO, socket or device, which cannot be replaced by a file.
    NotRegularFile,
    /// The target has other hard links and [`HardLinks::Refuse`](crate::HardLinks::Refuse) is set.
    HardLinked,
    // issue 11: the kernel's own protections, applied to what the library
    // does in user space (see the crate docs, Security).
    /// A symlink on the way lies in a sticky world-writable directory and is
    /// owned by neither the caller nor the directory's owner: the kernel's
    /// `protected_symlinks` rule, which the library applies whatever the sysctl says.
    ForeignSymlinkInStickyDir,
    /// The existing file lies in a sticky world- or group-writable directory
    /// and is owned by neither the caller nor the directory's owner: the
    /// kernel's `protected_regular` rule (see
    /// [`Options::replace_others_in_sticky_dirs`](crate::Options::replace_others_in_sticky_dirs)).
    ForeignFileInStickyDir,
    /// A `/proc` magic link (`/proc/self/fd/N`, `/proc/PID/exe`): it stands
    /// for an open file, not a path, and the library only replaces by name.
    ProcMagicLink,
    /// The target is a mount point (a file bind-mounted over the name, as
    /// Docker and Kubernetes do): no rename can replace it.
    MountPoint,
    /// `Durability::Durable` in a directory that may be written and searched
    /// but not read (mode `0300`): it cannot be opened for the `fsync` that
    /// makes the rename durable.
    DirectoryNotReadable,
}

impl InvalidReason {
    fn kind(self) -> io::ErrorKind {
        match self {
            InvalidReason::Empty | InvalidReason::NoFileName => io::ErrorKind::InvalidInput,
            InvalidReason::IsDirectory => io::ErrorKind::IsADirectory,
            InvalidReason::NotRegularFile | InvalidReason::HardLinked => {
                io::ErrorKind::InvalidInput
            }
            InvalidReason::ForeignSymlinkInStickyDir
            | InvalidReason::ForeignFileInStickyDir
            | InvalidReason::DirectoryNotReadable => io::ErrorKind::PermissionDenied,
            InvalidReason::ProcMagicLink => io::ErrorKind::InvalidInput,
            InvalidReason::MountPoint => io::ErrorKind::ResourceBusy,
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidReason::Empty => "the path is empty",
            InvalidReason::NoFileName => "the path does not end in a file name",
            InvalidReason::IsDirectory => "it is a directory",
            InvalidReason::NotRegularFile => "it is not a regular file (FIFO, socket or device)",
            InvalidReason::HardLinked => "it has other hard links, which a replace would split off",
            InvalidReason::ForeignSymlinkInStickyDir => {
                "refused to follow a symlink in a sticky world-writable directory that \
                 belongs to neither you nor the directory's owner (the kernel's \
                 protected_symlinks rule)"
            }
            InvalidReason::ForeignFileInStickyDir => {
                "the existing file is in a sticky shared directory and belongs to neither \
                 you nor the directory's owner, who could read and rewrite what is written \
                 (the kernel's protected_regular rule; Options::replace_others_in_sticky_dirs \
                 allows it)"
            }
            InvalidReason::ProcMagicLink => {
                "it is a /proc magic link, which stands for an open file rather than a \
                 path; pass the file's real path"
            }
            InvalidReason::MountPoint => {
                "it is a mount point (a file bind-mounted over the name), which no rename \
                 can replace; mount its directory instead, or write the file in place"
            }
            InvalidReason::DirectoryNotReadable => {
                "the directory may be written but not read, so it cannot be fsynced and \
                 a durable replace is impossible; grant read permission or use \
                 Durability::Consistent"
            }
        })
    }
}

/// An error from a replace, naming the step and the target.
///
/// The OS error, where there is one, is the [`source`](std::error::Error::source),
/// not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed at `step`.
    #[error("failed to {step} for {}{}{}", target.display(), replaced_note(*step), temp_note(temp_left.as_deref()))]
    Io {
        /// The protocol step that failed.
        step: Step,
        /// The path the caller asked to replace.
        target: PathBuf,
        /// A temporary file that could not be removed after the failure.
        temp_left: Option<PathBuf>,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The target cannot be replaced; nothing was created or changed.
    #[error("cannot replace {}: {reason}", target.display())]
    InvalidTarget {
        /// The path the caller asked to replace.
        target: PathBuf,
        /// What is wrong with it.
        reason: InvalidReason,
    },
    // issue 11
    /// A protection rule refused the replace because of `path` (a symlink on
    /// the way, the existing file, or its directory); nothing was created or
    /// changed.
    #[error("cannot replace {}{}: {reason}", target.display(), AtNote(target, path))]
    Refused {
        /// The path the caller asked to replace.
        target: PathBuf,
        /// The link, file or directory the rule objects to.
        path: PathBuf,
        /// Which rule, and why.
        reason: InvalidReason,
    },
    /// A [`Batch`](crate::Batch) commit failed: `source` says for which file
    /// and at which step; `replaced` lists the files already replaced.
    #[error("{source} (in a batch of {total} files, {} already replaced{})", replaced.len(), dirs_note(failed_dirs, unsynced))]
    Batch {
        /// The failure, naming its file and step.
        #[source]
        source: Box<Error>,
        /// The files that already hold their new content.
        replaced: Vec<PathBuf>,
        /// How many files the batch held.
        total: usize,
        /// The directories whose fsync failed (issue 10).
        failed_dirs: Vec<PathBuf>,
        /// The `Durable` files of `replaced` in those directories: new, but
        /// of unknown durability (issue 10).
        unsynced: Vec<PathBuf>,
    },
    /// `create_new` was set and the target already exists; nothing was changed.
    #[error("cannot create {}: it already exists", target.display())]
    AlreadyExists {
        /// The path the caller asked to create.
        target: PathBuf,
    },
}

/// Names the directories whose fsync failed in a batch.
fn dirs_note(dirs: &[PathBuf], unsynced: &[PathBuf]) -> String {
    let show = |paths: &[PathBuf]| {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        names.join(", ")
    };
    match dirs.len() {
        0 => String::new(),
        _ => format!(
            "; fsync failed for directory {}, so the durability of {} is unknown",
            show(dirs),
            show(unsynced)
        ),
    }
}

fn replaced_note(step: Step) -> &'static str {
    if step.after_publish() {
        " (the new content is in place, but its durability is unknown)"
    } else {
        ""
    }
}

struct TempNote<'a>(Option<&'a Path>);

impl fmt::Display for TempNote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " (temporary file {} was left behind)", p.display()),
            None => Ok(()),
        }
    }
}

/// ` (at PATH)` when the refused path is not the target itself.
struct AtNote<'a>(&'a Path, &'a Path);

impl fmt::Display for AtNote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == self.1 {
            Ok(())
        } else {
            write!(f, " (at {})", self.1.display())
        }
    }
}

fn temp_note(temp: Option<&Path>) -> TempNote<'_> {
    TempNote(temp)
}

impl Error {
    /// The protocol step that failed, or `None` when the target was refused
    /// before any step ran.
    pub fn step(&self) -> Option<Step> {
        match self {
            Error::Io { step, .. } => Some(*step),
            Error::InvalidTarget { .. } | Error::Refused { .. } => None,
            Error::AlreadyExists { .. } => Some(Step::Rename),
            Error::Batch { source, .. } => source.step(),
        }
    }

    /// For a [`Batch`](crate::Batch) error, the files that already hold
    /// their new content; empty otherwise.
    pub fn replaced(&self) -> &[PathBuf] {
        match self {
            Error::Batch { replaced, .. } => replaced,
            _ => &[],
        }
    }

    /// For a [`Batch`](crate::Batch) error, the directories whose fsync
    /// failed: the replaced files in them may not survive a power cut.
    pub fn failed_dirs(&self) -> &[PathBuf] {
        match self {
            Error::Batch { failed_dirs, .. } => failed_dirs,
            _ => &[],
        }
    }

    /// For a [`Batch`](crate::Batch) error, the files that hold their new
    /// content but whose directory fsync failed: a power cut may still
    /// undo them. Every other `Durable` file in [`replaced`](Error::replaced)
    /// is durable.
    pub fn unsynced(&self) -> &[PathBuf] {
        match self {
            Error::Batch { unsynced, .. } => unsynced,
            _ => &[],
        }
    }

    /// The path the caller asked to replace.
    pub fn target(&self) -> &Path {
        match self {
            Error::Io { target, .. }
            | Error::InvalidTarget { target, .. }
            | Error::Refused { target, .. }
            | Error::AlreadyExists { target } => target,
            Error::Batch { source, .. } => source.target(),
        }
    }

    /// True only when the new content is already in place: the rename
    /// succeeded, and a later step (the directory fsync) failed, so the
    /// replace may not survive a power cut.
    pub fn target_replaced(&self) -> bool {
        match self {
            Error::Io { step, .. } => step.after_publish(),
            Error::Batch { source, .. } => source.target_replaced(),
            _ => false,
        }
    }

    /// A temporary file that was left behind because removing it failed too.
    pub fn temp_left(&self) -> Option<&Path> {
        match self {
            Error::Io { temp_left, .. } => temp_left.as_deref(),
            Error::Batch { source, .. } => source.temp_left(),
            _ => None,
        }
    }

    /// The [`io::ErrorKind`] this error converts to.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. } => source.kind(),
            Error::InvalidTarget { reason, .. } | Error::Refused { reason, .. } => reason.kind(),
            Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            Error::Batch { source, .. } => source.kind(),
        }
    }

    /// The OS error number, if a system call failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Batch { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn io(step: Step, target: &Path, source: io::Error) -> Error {
        Error::Io {
            step,
            target: target.to_path_buf(),
            temp_left: None,
            source,
        }
    }

    pub(crate) fn invalid(target: &Path, reason: InvalidReason) -> Error {
        Error::InvalidTarget {
            target: target.to_path_buf(),
            reason,
        }
    }

    pub(crate) fn refused(target: &Path, path: &Path, reason: InvalidReason) -> Error {
        Error::Refused {
            target: target.to_path_buf(),
            path: path.to_path_buf(),
            reason,
        }
    }

    pub(crate) fn with_temp_left(mut self, temp: PathBuf) -> Error {
        if let Error::Io { temp_left, .. } = &mut self {
            *temp_left = Some(temp);
        }
        self
    }
}

impl From<Error> for io::Error {
    /// Keeps [`Error::kind`], so `?` works in `io::Result` code; the whole
    /// error stays reachable through `get_ref()` and `source()`.
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_names_step_and_target_but_not_the_os_error() {
        let e = Error::io(
            Step::SyncTemp,
            Path::new("/d/x"),
            io::Error::from_raw_os_error(5),
        );
        let text = e.to_string();
        assert_eq!(text, "failed to fsync the temporary file for /d/x");
        assert!(!e.target_replaced());
        let source = e.source().unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(source.raw_os_error(), Some(5));
    }

    #[test]
    fn directory_sync_failure_says_replaced() {
        let e = Error::io(
            Step::SyncParent,
            Path::new("a"),
            io::Error::from_raw_os_error(5),
        );
        assert!(e.target_replaced());
        assert!(e.to_string().contains("new content is in place"));
    }

    #[test]
    fn temp_left_is_reported() {
        let e = Error::io(
            Step::Write,
            Path::new("a"),
            io::Error::from_raw_os_error(28),
        )
        .with_temp_left(PathBuf::from(".a.x.tmp"));
        assert_eq!(e.temp_left(), Some(Path::new(".a.x.tmp")));
        assert!(
            e.to_string()
                .ends_with("(temporary file .a.x.tmp was left behind)")
        );
    }

    #[test]
    fn refused_names_the_path_the_rule_objects_to() {
        let reason = InvalidReason::ForeignSymlinkInStickyDir;
        let e = Error::refused(Path::new("/t/a"), Path::new("/t/b"), reason);
        assert!(
            e.to_string()
                .starts_with("cannot replace /t/a (at /t/b): refused to follow")
        );
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!((e.step(), e.target()), (None, Path::new("/t/a")));
        let e = Error::refused(Path::new("/t/a"), Path::new("/t/a"), reason);
        assert!(
            e.to_string().starts_with("cannot replace /t/a: refused"),
            "{e}"
        );
    }

    #[test]
    fn conversion_keeps_kind() {
        let e = Error::AlreadyExists { target: "a".into() };
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::AlreadyExists);
        let e = Error::invalid(Path::new("d"), InvalidReason::IsDirectory);
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::IsADirectory);
    }
}

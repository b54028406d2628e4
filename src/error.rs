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
    /// Opening the directory that holds the target.
    OpenParent,
    /// Opening the directory given to `sweep` (or `create_dir_all`).
    OpenDir,
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
    /// Creating a missing directory (`create_dir_all`).
    CreateDir,
}

impl Step {
    /// Whether a failure at this step happens after the target was replaced.
    fn after_publish(self) -> bool {
        matches!(self, Step::SyncParent | Step::RemoveTempLink)
    }

    fn describe(self) -> &'static str {
        match self {
            Step::OpenParent => "open the parent directory",
            Step::OpenDir => "open the directory",
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
            Step::CreateDir => "create the directory",
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
    /// [`Options::backup`](crate::Options::backup) is set and the target's
    /// name is 255 bytes long, so `name~` cannot exist.
    BackupNameTooLong,
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
            InvalidReason::BackupNameTooLong => io::ErrorKind::InvalidInput,
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
            InvalidReason::BackupNameTooLong => {
                "its name is 255 bytes long, so the backup name (name~) would be too long"
            }
        })
    }
}

/// An error from a replace, naming the step and the target.
///
/// Its message (`{}`) is whole: the step, the path and the OS reason, e.g.
/// `failed to create the temporary file for /etc/app.conf: Permission
/// denied (os error 13)`. Because the message already holds the reason,
/// [`source`](std::error::Error::source) returns `None`: error reporters
/// that print the chain (`anyhow`'s `{:#}`, `eyre`) would print it twice
/// otherwise. The OS error itself is [`Error::io_error`]; its number is
/// [`Error::raw_os_error`], also for an `io::Error` made from this error
/// ([`Error::raw_os_error_of`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed at `step`.
    Io {
        /// The protocol step that failed.
        step: Step,
        /// The path the caller asked to replace.
        target: PathBuf,
        /// A temporary file that could not be removed after the failure.
        temp_left: Option<PathBuf>,
        /// The OS error.
        source: io::Error,
        /// The directory the failed call was about, when the message should
        /// name it (the real parent after following a symlink).
        dir: Option<PathBuf>,
    },
    /// The target cannot be replaced; nothing was created or changed.
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
    Batch {
        /// The failure, naming its file and step.
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
    AlreadyExists {
        /// The path the caller asked to create.
        target: PathBuf,
        /// [`Step::InspectTarget`] when the target was seen before any file
        /// was created, [`Step::Rename`] when the atomic rename refused.
        step: Step,
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                step,
                target,
                temp_left,
                source,
                dir,
            } => {
                let target = target.display();
                match (step, dir) {
                    // `sweep`'s steps are about the directory itself.
                    (Step::OpenDir | Step::ReadDir, _) => write!(f, "failed to {step} {target}")?,
                    (Step::OpenParent, Some(dir)) => write!(
                        f,
                        "failed to open the parent directory {} of {target}",
                        dir.display()
                    )?,
                    _ => write!(f, "failed to {step} for {target}")?,
                }
                write!(f, ": {source}{}", replaced_note(*step))?;
                temp_note(temp_left.as_deref()).fmt(f)
            }
            Error::InvalidTarget { target, reason } if target.as_os_str().is_empty() => {
                write!(f, "cannot replace the empty path: {reason}")
            }
            Error::InvalidTarget { target, reason } => {
                write!(f, "cannot replace {}: {reason}", target.display())
            }
            Error::Refused {
                target,
                path,
                reason,
            } => write!(
                f,
                "cannot replace {}{}: {reason}",
                target.display(),
                AtNote(target, path)
            ),
            Error::Batch {
                source,
                replaced,
                total,
                failed_dirs,
                unsynced,
            } => write!(
                f,
                "{source} (in a batch of {total} files, {} already replaced{})",
                replaced.len(),
                dirs_note(failed_dirs, unsynced)
            ),
            Error::AlreadyExists { target, .. } => {
                write!(f, "cannot create {}: it already exists", target.display())
            }
        }
    }
}

/// `source()` is `None` on purpose: the message already holds the OS reason
/// (and a batch's message holds its file's error), so a reporter that walks
/// the chain prints each reason once.
impl std::error::Error for Error {}

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
            Error::AlreadyExists { step, .. } => Some(*step),
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
            | Error::AlreadyExists { target, .. } => target,
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
        self.io_error().and_then(io::Error::raw_os_error)
    }

    /// The OS error of the failed system call, if there was one (it is in
    /// the message, and deliberately not the `source()`).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Batch { source, .. } => source.io_error(),
            _ => None,
        }
    }

    /// The crashsafe error inside an [`io::Error`] made from one (by `?` or
    /// `From`), if `e` is such an error.
    pub fn from_io_ref(e: &io::Error) -> Option<&Error> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
    }

    /// The OS error number of `e`, also when `e` was made from a crashsafe
    /// [`Error`] (whose own `raw_os_error()` std cannot see: an `io::Error`
    /// holds either an OS code or a custom error, not both).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let missing = dir.path().join("no/such/dir/file");
    /// let e: std::io::Error = crashsafe::write(&missing, b"x").unwrap_err().into();
    /// assert_eq!(e.raw_os_error(), None);
    /// assert_eq!(crashsafe::Error::raw_os_error_of(&e), Some(2)); // ENOENT
    /// ```
    pub fn raw_os_error_of(e: &io::Error) -> Option<i32> {
        e.raw_os_error()
            .or_else(|| Error::from_io_ref(e).and_then(Error::raw_os_error))
    }

    pub(crate) fn io(step: Step, target: &Path, source: io::Error) -> Error {
        Error::Io {
            step,
            target: target.to_path_buf(),
            temp_left: None,
            source,
            dir: None,
        }
    }

    /// Names the directory the failed call was about in the message.
    pub(crate) fn with_dir(mut self, path: &Path) -> Error {
        if let Error::Io { dir, .. } = &mut self {
            *dir = Some(path.to_path_buf());
        }
        self
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
    /// Keeps [`Error::kind`], so `?` works in `io::Result` code, and the
    /// message (`{}` prints the step, the path and the OS reason). The whole
    /// error stays reachable through `get_ref()` ([`Error::from_io_ref`]);
    /// the OS error number through [`Error::raw_os_error_of`].
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_names_step_target_and_os_reason_once_in_a_chain() {
        let e = Error::io(
            Step::SyncTemp,
            Path::new("/d/x"),
            io::Error::from_raw_os_error(5),
        );
        let text = e.to_string();
        assert_eq!(
            text,
            format!(
                "failed to fsync the temporary file for /d/x: {}",
                io::Error::from_raw_os_error(5)
            )
        );
        assert!(!e.target_replaced());
        // The reason is in the message, so not the source: walking the
        // chain as anyhow does prints it once.
        assert!(e.source().is_none());
        assert_eq!(e.raw_os_error(), Some(5));
        assert_eq!(e.io_error().unwrap().raw_os_error(), Some(5));
        // Converted: the same message, no source, the code reachable.
        let io_err = io::Error::from(e);
        assert_eq!(io_err.to_string(), text);
        assert!(std::error::Error::source(&io_err).is_none());
        assert_eq!(Error::raw_os_error_of(&io_err), Some(5));
        assert_eq!(
            Error::from_io_ref(&io_err).unwrap().step(),
            Some(Step::SyncTemp)
        );
    }

    #[test]
    fn a_batch_error_is_one_message_without_a_repeating_source() {
        let inner = Error::io(
            Step::Rename,
            Path::new("/d/b"),
            io::Error::from_raw_os_error(28),
        );
        let e = Error::Batch {
            source: Box::new(inner),
            replaced: vec![PathBuf::from("/d/a")],
            total: 2,
            failed_dirs: Vec::new(),
            unsynced: Vec::new(),
        };
        let text = e.to_string();
        assert!(text.starts_with("failed to rename the temporary file over the target for /d/b: "));
        assert!(text.ends_with("(in a batch of 2 files, 1 already replaced)"));
        assert!(e.source().is_none());
        assert_eq!(e.raw_os_error(), Some(28));
    }

    #[test]
    fn messages_name_the_right_thing() {
        let e = Error::invalid(Path::new(""), InvalidReason::Empty);
        assert_eq!(
            e.to_string(),
            "cannot replace the empty path: the path is empty"
        );
        let e = Error::io(
            Step::OpenDir,
            Path::new("/nonexistent"),
            io::Error::from_raw_os_error(2),
        );
        assert!(
            e.to_string()
                .starts_with("failed to open the directory /nonexistent: "),
            "{e}"
        );
        let e = Error::io(
            Step::OpenParent,
            Path::new("/l"),
            io::Error::from_raw_os_error(2),
        )
        .with_dir(Path::new("/gone"));
        assert!(
            e.to_string()
                .starts_with("failed to open the parent directory /gone of /l: "),
            "{e}"
        );
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
        let e = Error::AlreadyExists {
            target: "a".into(),
            step: Step::Rename,
        };
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::AlreadyExists);
        let e = Error::invalid(Path::new("d"), InvalidReason::IsDirectory);
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::IsADirectory);
    }
}

//! Fixtures for the real-filesystem tests: a temporary directory that checks,
//! when the test ends, that no temp file of ours was left in it; snapshots of
//! a directory tree to prove a failed call changed nothing; file metadata
//! helpers; and a way to rerun one test in a child process (with another
//! umask, or as an unprivileged user).

// Each test binary that includes this module uses a different subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::error::Error as _;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crashsafe::Step;

/// The uid and gid of `nobody` on Linux, used to run a test unprivileged.
pub(crate) const NOBODY: u32 = 65534;

/// A fresh temporary directory. Dropping it (when the test did not already
/// panic) asserts that no temp file is left anywhere below it.
pub(crate) struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `rel` inside the fixture.
    pub(crate) fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates (or overwrites, in place) a regular file with std.
    pub(crate) fn file(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        fs::write(&path, contents).expect("write a fixture file");
        path
    }

    /// Creates a regular file and sets its exact permission bits.
    pub(crate) fn file_with_mode(
        &self,
        rel: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
        mode: u32,
    ) -> PathBuf {
        let path = self.file(rel, contents);
        set_mode(&path, mode);
        assert_eq!(mode_of(&path), mode, "fixture mode for {}", path.display());
        path
    }

    pub(crate) fn dir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(&path).expect("create a fixture directory");
        path
    }

    /// Creates the symlink `rel -> points_to` (`points_to` is stored as given).
    pub(crate) fn symlink(&self, rel: impl AsRef<Path>, points_to: impl AsRef<Path>) -> PathBuf {
        let path = self.path(rel);
        std::os::unix::fs::symlink(points_to, &path).expect("create a fixture symlink");
        path
    }

    /// Everything below the fixture, for before/after comparisons.
    pub(crate) fn snapshot(&self) -> Snapshot {
        snapshot(self.root())
    }

    /// Every temp-shaped name below the fixture.
    pub(crate) fn temps(&self) -> Vec<PathBuf> {
        temps_under(self.root())
    }

    pub(crate) fn assert_no_temps(&self) {
        let temps = self.temps();
        assert!(temps.is_empty(), "temp files left behind: {temps:?}");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // A directory left read-only by a failed test must not stop the
        // cleanup (or the leftover check); errors are ignored here because
        // the checks below and the tempdir's own removal report what matters.
        let mut stack = vec![self.root().to_path_buf()];
        while let Some(d) = stack.pop() {
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o700));
            for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        if !std::thread::panicking() {
            self.assert_no_temps();
        }
    }
}

/// True if `name` looks like a temp file of ours: `.` first, `.tmp` last.
/// Deliberately looser than the exact `.NAME.<12 chars>.tmp` shape, so a
/// temp with a malformed name is caught too.
pub(crate) fn is_temp_like(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() > 4 && b.starts_with(b".") && b.ends_with(b".tmp")
}

/// Recursively lists every entry below `dir` whose name is temp-like. Does
/// not follow symlinks.
pub(crate) fn temps_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("read a directory entry");
            if is_temp_like(&entry.file_name()) {
                found.push(entry.path());
            }
            if entry.file_type().expect("entry type").is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// The temp-like names directly in `dir` (not below it).
pub(crate) fn temps_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list a directory")
        .map(|e| e.expect("read a directory entry"))
        .filter(|e| is_temp_like(&e.file_name()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// One entry of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    File {
        contents: Vec<u8>,
        ino: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Dir {
        ino: u64,
        mode: u32,
    },
    Symlink {
        points_to: PathBuf,
        ino: u64,
    },
    /// A FIFO, socket or device.
    Special {
        ino: u64,
        mode: u32,
    },
}

/// A tree below a directory, keyed by relative path; links are not followed.
pub(crate) type Snapshot = BTreeMap<PathBuf, Node>;

pub(crate) fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("list a directory") {
            let path = entry.expect("read a directory entry").path();
            let md = fs::symlink_metadata(&path).expect("lstat");
            let ft = md.file_type();
            let node = if ft.is_file() {
                Node::File {
                    contents: fs::read(&path).expect("read a file"),
                    ino: md.ino(),
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                }
            } else if ft.is_dir() {
                stack.push(path.clone());
                Node::Dir {
                    ino: md.ino(),
                    mode: md.mode() & 0o7777,
                }
            } else if ft.is_symlink() {
                Node::Symlink {
                    points_to: fs::read_link(&path).expect("readlink"),
                    ino: md.ino(),
                }
            } else {
                Node::Special {
                    ino: md.ino(),
                    mode: md.mode() & 0o7777,
                }
            };
            let rel = path.strip_prefix(root).expect("below the root");
            out.insert(rel.to_path_buf(), node);
        }
    }
    out
}

/// Permission bits (setuid, setgid and sticky included) of the file `path`
/// names, following symlinks.
pub(crate) fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Inode number of the file `path` names, following symlinks.
pub(crate) fn ino_of(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").ino()
}

pub(crate) fn owner_of(path: &Path) -> (u32, u32) {
    let md = fs::metadata(path).expect("stat");
    (md.uid(), md.gid())
}

pub(crate) fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

pub(crate) fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Says that a test did not run its checks, and why: one line
/// `SKIPPED: <test>: <why>`, which `.ci/run` counts into its summary.
///
/// Written straight to the process's stderr, not with `eprintln!`: the test
/// harness captures the macros' output and hides it for passing tests, and
/// a skipped test passes.
pub(crate) fn skip(test: &str, why: &str) {
    skipped(&format!("{test}: {why}"));
}

/// As [`skip`], for a line already reading `<test>: <why>`.
pub(crate) fn skipped(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(io::stderr(), "SKIPPED: {line}");
}

/// The process umask, found without calling `umask()` (which would race
/// other tests): create a file asking for 0o777 and see what is left.
pub(crate) fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let probe = dir.path().join("probe");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o777)
            .open(&probe)
            .expect("create the umask probe");
        !mode_of(&probe) & 0o777
    })
}

/// The mode a file created asking for `mode` gets under the current umask
/// (the umask never masks setuid, setgid or sticky).
pub(crate) fn created_mode(mode: u32) -> u32 {
    mode & 0o7777 & !umask()
}

/// Makes a FIFO at `path`.
pub(crate) fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .expect("mkfifo");
}

/// The raw errno values the tests look for.
pub(crate) fn eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}
pub(crate) fn enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}
pub(crate) fn efbig() -> i32 {
    rustix::io::Errno::FBIG.raw_os_error()
}
pub(crate) fn enametoolong() -> i32 {
    rustix::io::Errno::NAMETOOLONG.raw_os_error()
}

/// Checks everything a caller can see on an error raised before the target
/// was touched: the target and step it names, its kind (also after
/// conversion into `io::Error`), a `Display` that names the target and step
/// but leaves the OS error text to `source()`, and no temp left.
pub(crate) fn check_refused(
    err: crashsafe::Error,
    target: &Path,
    step: Option<Step>,
    kind: io::ErrorKind,
) -> crashsafe::Error {
    let text = err.to_string();
    assert_eq!(err.target(), target, "target() of {text:?}");
    assert_eq!(err.step(), step, "step() of {text:?}");
    assert_eq!(err.kind(), kind, "kind() of {text:?}");
    assert!(!err.target_replaced(), "target_replaced() of {text:?}");
    assert_eq!(err.temp_left(), None, "temp_left() of {text:?}");
    assert!(!text.is_empty());
    assert!(
        text.contains(&target.display().to_string()),
        "{text:?} does not name {}",
        target.display()
    );
    if let crashsafe::Error::Io { step, .. } = &err {
        assert!(
            text.contains(&step.to_string()),
            "{text:?} does not name the step"
        );
        // The OS reason is in the message, once, and so not the source
        // (a reporter walking the chain would print it twice).
        assert!(err.source().is_none(), "{text:?} also has a source");
        let os = err.io_error().expect("an Io error has an OS error");
        assert_eq!(os.kind(), kind);
        assert!(os.raw_os_error().is_some(), "the error is an OS error");
        assert_eq!(err.raw_os_error(), os.raw_os_error());
        assert_eq!(
            text.matches(&os.to_string()).count(),
            1,
            "{text:?} does not name the OS error once"
        );
    } else {
        assert!(err.source().is_none(), "no error has a source");
        assert!(!text.contains("os error"), "{text:?} has OS error text");
    }
    // Converting keeps the kind and the whole error.
    let io_err = io::Error::from(err);
    assert_eq!(io_err.kind(), kind);
    let inner = io_err
        .into_inner()
        .expect("the io::Error wraps ours")
        .downcast::<crashsafe::Error>()
        .expect("the wrapped error is crashsafe::Error");
    assert_eq!(inner.step(), step);
    *inner
}

/// The name libtest knows a test by: its module path without the crate.
pub(crate) fn test_name(module_path: &str, function: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{function}"),
        None => function.to_string(),
    }
}

/// How to run a copy of this test binary.
pub(crate) struct Child<'a> {
    pub(crate) test: &'a str,
    pub(crate) envs: Vec<(&'a str, &'a OsStr)>,
    /// Run as this uid and gid (needs root).
    pub(crate) user: Option<u32>,
    /// Start the child with `SIGXFSZ` ignored (through `/bin/sh`, since
    /// ignored signals survive `exec`), so exceeding `RLIMIT_FSIZE` gives
    /// `EFBIG` instead of killing it.
    pub(crate) ignore_sigxfsz: bool,
}

/// The result of [`run_child`].
pub(crate) enum ChildRun {
    /// The child ran exactly the one test, and it passed.
    Passed,
    /// The binary could not be started as that user (e.g. a private build
    /// directory); the caller should skip.
    CannotStart(io::Error),
}

/// Runs exactly one test of this binary in a child process and asserts it
/// ran and passed. The test decides what to do from `envs`.
pub(crate) fn run_child(child: &Child<'_>) -> ChildRun {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = if child.ignore_sigxfsz {
        let mut sh = Command::new("/bin/sh");
        sh.args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\""]).arg(exe);
        sh
    } else {
        Command::new(exe)
    };
    cmd.args(["--exact", child.test, "--test-threads=1", "--nocapture"]);
    for (k, v) in &child.envs {
        cmd.env(k, v);
    }
    if let Some(id) = child.user {
        cmd.uid(id).gid(id);
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return ChildRun::CannotStart(e);
        }
        Err(e) => panic!("cannot run the test binary: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child run of {} failed ({}):\n{stdout}\n{stderr}",
        child.test,
        out.status
    );
    ChildRun::Passed
}

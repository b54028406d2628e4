//! What another user or a hostile file in the directory can and cannot do:
//!
//! - while a replace whose final mode is 0600 runs, its temp is never
//!   readable by group or others (a watcher thread polls the directory);
//! - the temp is opened `O_CREAT|O_EXCL|O_NOFOLLOW`, so a symlink planted at
//!   its name is never followed: seen at the syscall level with `strace`
//!   when it is installed, and in `/proc/self/fdinfo` of the open temp;
//!   a symlink planted at the backup name is replaced, not followed;
//! - `sweep` cannot be tricked into removing or following anything that is
//!   not a stale temp: symlinks, a FIFO, directories, look-alike names; a
//!   hard link under a temp name loses that name only.
//!
//! The random part of a temp name cannot be predicted from outside, so a
//! test that plants symlinks at guessed names would prove nothing; the
//! syscall flags are the real evidence.
#![cfg(unix)]

mod common;
mod procs;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crashsafe::{AtomicFile, Options};
use procs::{child_env, child_mode};

// ------------------------------------------------------------- temp mode

/// What the watcher saw: how many times it found a temp, and every temp
/// mode that let group or others in.
struct Watch {
    stop: AtomicBool,
    seen: AtomicUsize,
    open_to_others: Mutex<BTreeSet<(String, u32)>>,
}

/// Polls `dir` until told to stop, recording the mode of every temp.
fn watch(dir: &Path, w: &Watch) {
    while !w.stop.load(Ordering::SeqCst) {
        for entry in fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name();
            if !procs::is_temp_name(&name) {
                continue;
            }
            // Gone already (renamed or removed): nothing to see.
            let Ok(meta) = fs::symlink_metadata(dir.join(&name)) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                let name = name.to_string_lossy().into_owned();
                w.open_to_others.lock().unwrap().insert((name, mode));
            }
            w.seen.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Waits until the watcher has seen a temp more times than `before`.
fn wait_until_seen(w: &Watch, before: usize) {
    let start = Instant::now();
    while w.seen.load(Ordering::SeqCst) <= before {
        // A hang guard, not a timing assertion: the watcher polls nonstop.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the watcher never saw the temp"
        );
        thread::yield_now();
    }
}

/// Streams `rounds` replaces in chunks with a watcher polling the
/// directory; after each chunk the writer waits until the watcher has
/// seen the temp, so every stage of the temp's life is observed.
fn stream_watched(dir: &Path, rounds: usize, mut replace: impl FnMut(usize) -> AtomicFile) {
    let w = Watch {
        stop: AtomicBool::new(false),
        seen: AtomicUsize::new(0),
        open_to_others: Mutex::new(BTreeSet::new()),
    };
    thread::scope(|s| {
        let _stop = procs::StopOnDrop(&w.stop);
        s.spawn(|| watch(dir, &w));
        for round in 0..rounds {
            let mut file = replace(round);
            wait_until_seen(&w, w.seen.load(Ordering::SeqCst));
            for chunk in 0..8u8 {
                file.write_all(&[chunk; 20_000]).unwrap();
                file.flush().unwrap();
                wait_until_seen(&w, w.seen.load(Ordering::SeqCst));
            }
            file.commit().unwrap();
        }
    });
    let bad: Vec<String> = (w.open_to_others.into_inner().unwrap().iter())
        .take(10)
        .map(|(name, mode)| format!("{name} {mode:04o}"))
        .collect();
    assert!(bad.is_empty(), "temps open to group or others: {bad:?}");
    let seen = w.seen.load(Ordering::SeqCst);
    assert!(
        seen >= rounds * 9,
        "the watcher saw temps only {seen} times"
    );
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn temp_of_a_private_file_is_never_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("secret");
    fs::write(&target, "old").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    stream_watched(dir.path(), 20, |_| AtomicFile::create(&target).unwrap());
    assert_eq!(mode_of(&target), 0o600);
    assert_eq!(fs::read(&target).unwrap().len(), 8 * 20_000);
}

#[test]
fn temp_with_mode_0600_is_never_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // New files, and an existing 0644 file made private.
    fs::write(d.join("was_public"), "old").unwrap();
    fs::set_permissions(d.join("was_public"), fs::Permissions::from_mode(0o644)).unwrap();
    let name = |round: usize| match round {
        0 => "was_public".to_string(),
        r => format!("new{r}"),
    };
    stream_watched(d, 20, |round| {
        Options::new()
            .mode(0o600)
            .open(d.join(name(round)))
            .unwrap()
    });
    for round in 0..20 {
        assert_eq!(mode_of(&d.join(name(round))), 0o600, "{}", name(round));
    }
}

// ------------------------------------------------------- O_NOFOLLOW|O_EXCL

/// The child run under strace: replaces a new and an existing file (named
/// temps), streams one, and sweeps a planted stale temp.
fn strace_child() {
    let dir = std::path::PathBuf::from(child_env("CRASHSAFE_DIR"));
    let target = dir.join("target");
    crashsafe::write(&target, "new file").unwrap();
    crashsafe::write(&target, "existing file").unwrap();
    let mut file = AtomicFile::create(&target).unwrap();
    file.write_all(b"streamed").unwrap();
    file.commit().unwrap();
    assert_eq!(crashsafe::sweep(&dir).unwrap(), 1);
    procs::report("strace child done");
}

#[test]
fn temps_are_created_exclusive_and_nofollow_under_strace() {
    let test = "temps_are_created_exclusive_and_nofollow_under_strace";
    if child_mode().is_some() {
        return strace_child();
    }
    let probe = Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        common::skip(test, "strace is missing or may not trace here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join(".planted.crashsafe-abcdefghijkl.tmp");
    fs::write(&planted, "stale").unwrap();
    procs::age(&planted, 60);
    let log = dir.path().join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat", "-o"])
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args(procs::child_args(test))
        .env(procs::CHILD_ENV, "strace")
        .env("CRASHSAFE_DIR", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}", out.status);
    assert!(stdout.lines().any(|l| l.contains("@@strace child done")));
    let log = fs::read_to_string(&log).unwrap();
    // openat(3, ".target.crashsafe-abcdefghijkl.tmp", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600) = 4
    let temp_opens: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\".target.") && l.contains(".tmp\""))
        .collect();
    assert_eq!(temp_opens.len(), 3, "one temp per replace:\n{log}");
    for line in &temp_opens {
        for flag in ["O_CREAT", "O_EXCL", "O_NOFOLLOW"] {
            assert!(line.contains(flag), "temp opened without {flag}: {line}");
        }
    }
    // sweep opens candidates without following links or blocking on FIFOs.
    let sweep_opens: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\".planted.crashsafe-abcdefghijkl.tmp\""))
        .collect();
    assert!(
        !sweep_opens.is_empty(),
        "sweep never opened the planted temp"
    );
    for line in &sweep_opens {
        for flag in ["O_NOFOLLOW", "O_NONBLOCK"] {
            assert!(line.contains(flag), "sweep opened without {flag}: {line}");
        }
    }
}

#[test]
fn open_temp_carries_nofollow_in_fdinfo() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = AtomicFile::create(dir.path().join("target")).unwrap();
    file.write_all(b"pending").unwrap();
    file.flush().unwrap();
    let temp = dir.path().join(&procs::temps(dir.path())[0]);
    // Find our temp's descriptor among this process's open files.
    let fd = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| fs::read_link(e.path()).is_ok_and(|p| p == temp))
        .expect("the temp is open in this process")
        .file_name();
    let info = fs::read_to_string(Path::new("/proc/self/fdinfo").join(&fd)).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    let nofollow = rustix::fs::OFlags::NOFOLLOW.bits();
    assert_ne!(
        flags & nofollow,
        0,
        "temp fd flags {flags:o} lack O_NOFOLLOW"
    );
    file.discard().unwrap();
}

#[test]
fn symlink_at_the_backup_name_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("victim"), "precious").unwrap();
    fs::write(d.join("target"), "v1").unwrap();
    std::os::unix::fs::symlink(d.join("victim"), d.join("target~")).unwrap();
    Options::new()
        .backup(true)
        .write(d.join("target"), "v2")
        .unwrap();
    assert_eq!(fs::read_to_string(d.join("victim")).unwrap(), "precious");
    let backup = fs::symlink_metadata(d.join("target~")).unwrap();
    assert!(backup.is_file(), "the backup name is still a symlink");
    assert_eq!(fs::read_to_string(d.join("target~")).unwrap(), "v1");
    assert_eq!(fs::read_to_string(d.join("target")).unwrap(), "v2");
    assert_eq!(procs::names(d), ["target", "target~", "victim"]);
}

// -------------------------------------------------------------- sweep

/// Sets the mtime of `path` itself (never a symlink's target) an hour back.
fn age_nofollow(path: &Path) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};
    let then = Timespec {
        tv_sec: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 3600,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: then,
        last_modification: then,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

#[test]
fn sweep_removes_nothing_but_stale_temps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    fs::create_dir(outside.path().join("victim_dir")).unwrap();
    age_nofollow(&victim);

    // Symlinks with temp names: to a file, a directory, nowhere.
    let links = [
        (".a.crashsafe-abcdefghijkl.tmp", victim.clone()),
        (
            ".b.crashsafe-abcdefghijkl.tmp",
            outside.path().join("victim_dir"),
        ),
        (
            ".c.crashsafe-abcdefghijkl.tmp",
            outside.path().join("missing"),
        ),
    ];
    for (name, to) in &links {
        std::os::unix::fs::symlink(to, d.join(name)).unwrap();
        age_nofollow(&d.join(name));
    }
    // A FIFO with a temp name: opening it without O_NONBLOCK would hang.
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        d.join(".f.crashsafe-abcdefghijkl.tmp"),
        0o600.into(),
    )
    .unwrap();
    age_nofollow(&d.join(".f.crashsafe-abcdefghijkl.tmp"));
    // A directory with a temp name, not empty.
    fs::create_dir(d.join(".d.crashsafe-abcdefghijkl.tmp")).unwrap();
    fs::write(d.join(".d.crashsafe-abcdefghijkl.tmp/inner"), "x").unwrap();
    age_nofollow(&d.join(".d.crashsafe-abcdefghijkl.tmp"));
    // Regular files whose names only look like temps.
    let lookalikes = [
        ".a.crashsafe-abcdefghijkl.tmp~",
        ".a.ABCDEFGHIJKL.tmp",
        "a.abcdefghijkl.tmp",
        ".a.abcdefghijk1.tmp",
        ".a.abcdefghijkl.TMP",
        ".a.crashsafe-abcdefghijkl.tmp.bak",
        "..abcdefghijkl.tmp",
    ];
    for name in lookalikes {
        fs::write(d.join(name), "mine").unwrap();
        age_nofollow(&d.join(name));
    }
    // A hard link to a real file under a temp name: it IS an unlocked
    // regular file of the temp shape, so that name goes; the file stays.
    fs::write(d.join("linked"), "kept").unwrap();
    fs::hard_link(d.join("linked"), d.join(".h.crashsafe-abcdefghijkl.tmp")).unwrap();
    age_nofollow(&d.join("linked"));
    // And one real stale temp.
    fs::write(d.join(".s.crashsafe-abcdefghijkl.tmp"), "stale").unwrap();
    age_nofollow(&d.join(".s.crashsafe-abcdefghijkl.tmp"));

    let before = procs::names(d);
    let removed = sweep_with_hang_guard(d);
    assert_eq!(
        removed, 2,
        "only the hard link's temp name and the stale temp"
    );
    let mut expected: Vec<String> = before
        .into_iter()
        .filter(|n| n != ".h.crashsafe-abcdefghijkl.tmp" && n != ".s.crashsafe-abcdefghijkl.tmp")
        .collect();
    expected.sort();
    assert_eq!(procs::names(d), expected);
    for (name, to) in &links {
        let link = d.join(name);
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink(), "{name}");
        assert_eq!(&fs::read_link(&link).unwrap(), to);
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(outside.path().join("victim_dir").is_dir());
    assert_eq!(
        fs::read_to_string(d.join(".d.crashsafe-abcdefghijkl.tmp/inner")).unwrap(),
        "x"
    );
    for name in lookalikes {
        assert_eq!(fs::read_to_string(d.join(name)).unwrap(), "mine", "{name}");
    }
    let linked = fs::metadata(d.join("linked")).unwrap();
    assert_eq!(linked.nlink(), 1);
    assert_eq!(fs::read_to_string(d.join("linked")).unwrap(), "kept");
}

/// Runs sweep in a thread so that a hang (a FIFO opened blocking) fails
/// the test instead of stalling the suite.
fn sweep_with_hang_guard(dir: &Path) -> usize {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    thread::spawn(move || {
        let _ = tx.send(crashsafe::sweep(&dir));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("sweep hung (a FIFO opened without O_NONBLOCK?)")
        .unwrap()
}

// ------------------------------------------- the kernel's rules (issue 11)
//
// The library follows symlinks and replaces files in user space, so the
// kernel's `protected_symlinks` and `protected_regular` never see those
// steps. These tests plant what another user could plant (as root, with
// `lchown`) and check that the library refuses as the kernel would,
// whatever the sysctls say. The cases that need the caller to be someone
// else run a child process as that user.

/// An unprivileged user that plants files and links.
const ATTACKER: u32 = 2001;

/// Returns true (after printing why) when the test cannot run here.
fn skip_unless_root(test: &str) -> bool {
    if procs::is_root() {
        return false;
    }
    common::skipped(&format!("{test}: needs root to give files to other users"));
    true
}

/// `lchown`: sets the owner of `path` itself, also of a symlink.
fn lchown(path: &Path, uid: u32, gid: u32) {
    use rustix::fs::{AtFlags, CWD, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// A directory that other users can reach (tempdirs are 0700).
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A `/tmp` look-alike: sticky, world-writable, root's.
fn sticky_dir(parent: &Path, name: &str, mode: u32) -> std::path::PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    dir
}

fn reason_of(err: &crashsafe::Error) -> Option<crashsafe::InvalidReason> {
    match err {
        crashsafe::Error::Refused { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[test]
fn a_symlink_planted_by_another_user_in_a_sticky_dir_is_not_followed() {
    let test = "a_symlink_planted_by_another_user_in_a_sticky_dir_is_not_followed";
    if skip_unless_root(test) {
        return;
    }
    use crashsafe::InvalidReason::ForeignSymlinkInStickyDir;
    let dir = shared_tempdir();
    let tmp = sticky_dir(dir.path(), "tmp", 0o1777);
    let victim = dir.path().join("passwd");
    fs::write(&victim, "root:x:0:0").unwrap();
    let link = tmp.join("report.txt");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    lchown(&link, ATTACKER, ATTACKER);
    let err = crashsafe::write(&link, "root's report").unwrap_err();
    assert_eq!(reason_of(&err), Some(ForeignSymlinkInStickyDir), "{err}");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("report.txt"), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root:x:0:0");
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(procs::temps(&tmp).is_empty() && procs::temps(dir.path()).is_empty());

    // Deeper in a chain: root's own link leads to the attacker's.
    let first = tmp.join("first");
    std::os::unix::fs::symlink("report.txt", &first).unwrap();
    let err = crashsafe::write(&first, "x").unwrap_err();
    assert_eq!(reason_of(&err), Some(ForeignSymlinkInStickyDir), "{err}");
    match &err {
        crashsafe::Error::Refused { path, target, .. } => {
            assert_eq!(path, &link, "the error names the refused link");
            assert_eq!(target, &first);
        }
        other => panic!("{other}"),
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root:x:0:0");

    // The kernel's exceptions: a link of the directory's owner, and any
    // link in a directory that is not sticky, are followed.
    lchown(&link, 0, 0);
    crashsafe::write(&link, "followed").unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "followed");
    let open = sticky_dir(dir.path(), "open", 0o777);
    let link2 = open.join("report.txt");
    std::os::unix::fs::symlink(&victim, &link2).unwrap();
    lchown(&link2, ATTACKER, ATTACKER);
    crashsafe::write(&link2, "not sticky").unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "not sticky");
}

#[test]
fn a_file_planted_by_another_user_in_a_sticky_dir_is_refused() {
    let test = "a_file_planted_by_another_user_in_a_sticky_dir_is_refused";
    if skip_unless_root(test) {
        return;
    }
    use crashsafe::InvalidReason::ForeignFileInStickyDir;
    let dir = shared_tempdir();
    for mode in [0o1777, 0o1770] {
        let tmp = sticky_dir(dir.path(), &format!("tmp{mode:o}"), mode);
        let planted = tmp.join("report.txt");
        fs::write(&planted, "attacker's").unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o666)).unwrap();
        lchown(&planted, ATTACKER, ATTACKER);
        let err = crashsafe::write(&planted, "root's secret").unwrap_err();
        assert_eq!(
            reason_of(&err),
            Some(ForeignFileInStickyDir),
            "{mode:o}: {err}"
        );
        assert_eq!(fs::read_to_string(&planted).unwrap(), "attacker's");
        assert!(procs::temps(&tmp).is_empty());
        // The explicit opt-out: the caller knows the owner.
        Options::new()
            .replace_others_in_sticky_dirs(true)
            .write(&planted, "shared on purpose")
            .unwrap();
        assert_eq!(fs::read_to_string(&planted).unwrap(), "shared on purpose");
        assert_eq!(fs::metadata(&planted).unwrap().uid(), ATTACKER);
    }
    // The directory owner's files, and the caller's own, are replaced.
    let home = sticky_dir(dir.path(), "home", 0o1777);
    lchown(&home, ATTACKER, ATTACKER);
    let theirs = home.join("theirs");
    fs::write(&theirs, "old").unwrap();
    lchown(&theirs, ATTACKER, ATTACKER);
    crashsafe::write(&theirs, "new").unwrap();
    let tmp = sticky_dir(dir.path(), "tmp", 0o1777);
    fs::write(tmp.join("mine"), "old").unwrap();
    crashsafe::write(tmp.join("mine"), "new").unwrap();
    // A sticky directory nobody else may write to is not shared.
    let private = sticky_dir(dir.path(), "private", 0o1755);
    let other = private.join("other");
    fs::write(&other, "old").unwrap();
    lchown(&other, ATTACKER, ATTACKER);
    crashsafe::write(&other, "new").unwrap();
}

/// Links whose targets are long relative paths: following them by joining
/// strings grows the path past `PATH_MAX` long before 40 hops.
#[test]
fn a_chain_of_forty_relative_links_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let long = "d".repeat(200);
    let sub = dir.path().join(&long);
    fs::create_dir(&sub).unwrap();
    let hops = 40;
    for i in 0..hops {
        let to = if i + 1 == hops {
            format!("{long}/../real")
        } else {
            format!("{long}/../l{}", i + 1)
        };
        std::os::unix::fs::symlink(&to, dir.path().join(format!("l{i}"))).unwrap();
    }
    fs::write(dir.path().join("real"), "old").unwrap();
    // (Not compared with the kernel's own walk of `l0`: a path walk of
    // exactly 40 links can fail with ELOOP when a mount elsewhere, such as
    // the bind-mount test's, makes the kernel retry the walk.)
    crashsafe::write(dir.path().join("l0"), "new").unwrap();
    assert_eq!(fs::read_to_string(dir.path().join("real")).unwrap(), "new");
    assert!(
        fs::symlink_metadata(dir.path().join("l0"))
            .unwrap()
            .is_symlink()
    );
    // One more hop is a loop, as for the kernel.
    std::os::unix::fs::symlink("l0", dir.path().join("l-1")).unwrap();
    let err = crashsafe::write(dir.path().join("l-1"), "x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::LOOP.raw_os_error())
    );
}

#[test]
fn a_proc_magic_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "old").unwrap();
    let open = fs::File::open(&victim).unwrap();
    fs::remove_file(&victim).unwrap();
    use std::os::fd::AsRawFd;
    let magic = std::path::PathBuf::from(format!("/proc/self/fd/{}", open.as_raw_fd()));
    let err = crashsafe::write(&magic, "new").unwrap_err();
    assert_eq!(
        reason_of(&err),
        Some(crashsafe::InvalidReason::ProcMagicLink),
        "{err}"
    );
    assert!(
        procs::names(dir.path()).is_empty(),
        "{:?}",
        procs::names(dir.path())
    );
    // A live file behind the magic link is refused too: no name is made up.
    let live = dir.path().join("live");
    fs::write(&live, "old").unwrap();
    let f = fs::File::open(&live).unwrap();
    let magic = format!("/proc/self/fd/{}", f.as_raw_fd());
    let err = crashsafe::write(&magic, "new").unwrap_err();
    assert_eq!(
        reason_of(&err),
        Some(crashsafe::InvalidReason::ProcMagicLink)
    );
    assert_eq!(fs::read_to_string(&live).unwrap(), "old");
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_bind_mounted_target_is_refused_before_anything_is_written() {
    let test = "a_bind_mounted_target_is_refused_before_anything_is_written";
    if skip_unless_root(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let target = dir.path().join("config.yaml");
    fs::write(&source, "from the host").unwrap();
    fs::write(&target, "under the mount").unwrap();
    let status = Command::new("mount")
        .arg("--bind")
        .arg(&source)
        .arg(&target)
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        common::skipped(&format!("{test}: cannot bind-mount here"));
        return;
    }
    let _unmount = Unmount(target.clone());
    let err = crashsafe::write(&target, "new").unwrap_err();
    assert_eq!(
        reason_of(&err),
        Some(crashsafe::InvalidReason::MountPoint),
        "{err}"
    );
    assert!(err.to_string().contains("mount its directory"), "{err}");
    assert_eq!(fs::read_to_string(&source).unwrap(), "from the host");
    assert!(procs::temps(dir.path()).is_empty());
}

/// Runs this test binary's `test` as `uid:gid` (no supplementary groups),
/// in child mode `mode`, with `envs`; returns its reports.
fn run_as(test: &str, mode: &str, uid: u32, gid: u32, envs: &[(&str, &Path)]) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = procs::child_command(test, mode);
    cmd.uid(uid).gid(gid);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{test} as {uid}: {stdout}");
    stdout
        .lines()
        .filter_map(procs::parse_report)
        .map(str::to_owned)
        .collect()
}

/// Whether this test binary can be run as `uid:gid` here (it may live
/// under a directory only root may enter); `Err` says why not.
fn can_run_as(uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let status = Command::new(std::env::current_exe().unwrap())
        .arg("--list")
        .uid(uid)
        .gid(gid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the test binary run as {uid} exited with {s}")),
        Err(e) => Err(format!("cannot run the test binary as {uid}: {e}")),
    }
}

/// What a child's replace returned, as a report line.
fn outcome(result: Result<(), crashsafe::Error>) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(crashsafe::Error::Refused { reason, .. }) => format!("refused {reason:?}"),
        Err(e) => format!("error {e}"),
    }
}

#[test]
fn a_write_and_search_only_directory() {
    let test = "a_write_and_search_only_directory";
    if let Some(mode) = child_mode() {
        let dir = std::path::PathBuf::from(child_env("CRASHSAFE_DIR"));
        let durability = match mode.as_str() {
            "durable" => crashsafe::Durability::Durable,
            _ => crashsafe::Durability::Consistent,
        };
        let result = Options::new()
            .durability(durability)
            .write(dir.join("drop"), "new");
        procs::report(&outcome(result));
        return;
    }
    if skip_unless_root(test) {
        return;
    }
    if let Err(why) = can_run_as(ATTACKER, ATTACKER) {
        common::skipped(&format!("{test}: {why}"));
        return;
    }
    let dir = shared_tempdir();
    let inbox = dir.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    fs::write(inbox.join("drop"), "old").unwrap();
    lchown(&inbox, ATTACKER, ATTACKER);
    lchown(&inbox.join("drop"), ATTACKER, ATTACKER);
    fs::set_permissions(&inbox, fs::Permissions::from_mode(0o300)).unwrap();
    let envs = [("CRASHSAFE_DIR", inbox.as_path())];
    // Durable needs the directory's fsync, which needs it open for reading.
    let reports = run_as(test, "durable", ATTACKER, ATTACKER, &envs);
    assert_eq!(reports, ["refused DirectoryNotReadable"]);
    assert_eq!(fs::read_to_string(inbox.join("drop")).unwrap(), "old");
    // Consistent works through an O_PATH directory fd.
    let reports = run_as(test, "consistent", ATTACKER, ATTACKER, &envs);
    assert_eq!(reports, ["ok"]);
    assert_eq!(fs::read_to_string(inbox.join("drop")).unwrap(), "new");
    assert_eq!(procs::names(&inbox), ["drop"]);
}

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
        println!("skipped: {test}: strace is missing or may not trace here");
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

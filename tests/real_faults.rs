//! Real faults from real filesystems, not simulated ones:
//!
//! - disk full (`ENOSPC`) on a 1 MiB tmpfs and on a loop-mounted 16 MiB
//!   ext4, for `write` and streaming;
//! - file too large (`EFBIG`) through `RLIMIT_FSIZE` in a child process
//!   (`ulimit -f` with `SIGXFSZ` ignored, set up by `sh`; no root needed);
//! - a read-only filesystem (`EROFS`), for every entry point.
//!
//! In each case the error names the failed step, the old content is intact
//! and no temp is left behind. Mounting needs root (and, for ext4,
//! `mkfs.ext4` and a loop device): without them those tests print why they
//! skipped and pass.
#![cfg(unix)]

mod common;
mod procs;

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crashsafe::{AtomicFile, Error, Options, Step};
use procs::{Mount, child_env, child_mode};

const ENOSPC: i32 = 28;
const EFBIG: i32 = 27;
const EROFS: i32 = 30;

/// The mount, or `None` after printing why the test is skipped.
fn mount_or_skip(test: &str, mount: Result<Mount, String>) -> Option<Mount> {
    match mount {
        Ok(m) => Some(m),
        Err(why) => {
            common::skip(test, &why);
            None
        }
    }
}

/// The checks every failed replace must pass: the step, the errno, the
/// target not replaced, nothing left behind.
fn assert_failed_at(err: &Error, steps: &[Step], errno: i32, target: &Path) {
    assert!(
        err.step().is_some_and(|s| steps.contains(&s)),
        "expected a failure at {steps:?}: {err}"
    );
    assert_eq!(err.raw_os_error(), Some(errno), "{err}");
    assert!(!err.target_replaced(), "{err}");
    assert_eq!(err.temp_left(), None, "{err}");
    assert_eq!(err.target(), target);
    // The message names the step and the file.
    let msg = err.to_string();
    let step = err.step().unwrap().to_string();
    assert!(msg.starts_with(&format!("failed to {step} for ")), "{msg}");
    assert!(msg.contains(&target.display().to_string()), "{msg}");
}

/// The crate's error inside an `io::Error` from `AtomicFile`'s `Write`.
fn inner(e: &std::io::Error) -> &Error {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("not a crashsafe error: {e}"))
}

/// Fills the filesystem holding `dir` with a file `filler`.
fn fill(dir: &Path) {
    let mut f = fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

/// `write` (named and O_TMPFILE temps) into a full filesystem.
fn check_disk_full_write(dir: &Path) {
    let target = dir.join("target");
    fs::write(&target, "old").unwrap();
    fill(dir);
    let payload = vec![b'n'; 256 * 1024];
    for opts in [Options::new(), Options::new().unnamed_temp(true).clone()] {
        let err = opts.write(&target, &payload).unwrap_err();
        assert_failed_at(&err, &[Step::Write, Step::SyncTemp], ENOSPC, &target);
        assert_eq!(err.kind(), ErrorKind::StorageFull);
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(visible_names(dir), ["filler", "target"]);
    }
    // With room again the same write succeeds: it was the space.
    fs::remove_file(dir.join("filler")).unwrap();
    crashsafe::write(&target, &payload).unwrap();
    assert_eq!(fs::read(&target).unwrap(), payload);
    assert_eq!(visible_names(dir), ["target"]);
    fs::remove_file(&target).unwrap();
}

/// `AtomicFile` streaming into a full filesystem.
fn check_disk_full_streaming(dir: &Path) {
    let target = dir.join("streamed");
    fs::write(&target, "old").unwrap();
    fill(dir);
    // Stream until the filesystem refuses; the caller sees the step.
    let mut file = AtomicFile::create(&target).unwrap();
    let chunk = [b's'; 4096];
    let failure = (0..1024).find_map(|_| file.write_all(&chunk).err());
    let e = failure.expect("4 MiB streamed into a full filesystem");
    assert_eq!(e.kind(), ErrorKind::StorageFull);
    assert_failed_at(inner(&e), &[Step::Write], ENOSPC, &target);
    // Committing anyway fails too (the buffered bytes still do not fit),
    // and removes the temp.
    let err = file.commit().unwrap_err();
    assert_failed_at(&err, &[Step::Write, Step::SyncTemp], ENOSPC, &target);
    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert_eq!(visible_names(dir), ["filler", "streamed"]);

    // Dropping after the failure removes the temp as well.
    let mut file = AtomicFile::create(&target).unwrap();
    assert!((0..1024).any(|_| file.write_all(&chunk).is_err()));
    drop(file);
    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert_eq!(visible_names(dir), ["filler", "streamed"]);
    fs::remove_file(dir.join("filler")).unwrap();
}

/// Names in `dir` but ext4's `lost+found`.
fn visible_names(dir: &Path) -> Vec<String> {
    let mut names = procs::names(dir);
    names.retain(|n| n != "lost+found");
    names
}

#[test]
fn disk_full_on_tmpfs_keeps_old_content() {
    let test = "disk_full_on_tmpfs_keeps_old_content";
    let Some(mount) = mount_or_skip(test, Mount::tmpfs("size=1m")) else {
        return;
    };
    check_disk_full_write(mount.path());
    check_disk_full_streaming(mount.path());
}

#[test]
fn disk_full_on_ext4_keeps_old_content() {
    let test = "disk_full_on_ext4_keeps_old_content";
    let Some(mount) = mount_or_skip(test, Mount::ext4_loop(16)) else {
        return;
    };
    check_disk_full_write(mount.path());
    check_disk_full_streaming(mount.path());
}

#[test]
fn read_only_filesystem_changes_nothing() {
    let test = "read_only_filesystem_changes_nothing";
    let Some(mount) = mount_or_skip(test, Mount::tmpfs("size=1m")) else {
        return;
    };
    let dir = mount.path();
    let target = dir.join("target");
    fs::write(&target, "old").unwrap();
    // A stale temp from an earlier crash, which sweep cannot remove now.
    let stale = dir.join(".target.crashsafe-abcdefghijkl.tmp");
    fs::write(&stale, "stale").unwrap();
    procs::age(&stale, 60);
    mount.remount_ro();

    let create = [Step::CreateTemp];
    let err = crashsafe::write(&target, "new").unwrap_err();
    assert_failed_at(&err, &create, EROFS, &target);
    assert_eq!(err.kind(), ErrorKind::ReadOnlyFilesystem);
    let err = Options::new()
        .unnamed_temp(true)
        .write(&target, "new")
        .unwrap_err();
    assert_failed_at(&err, &create, EROFS, &target);
    let err = AtomicFile::create(&target).unwrap_err();
    assert_failed_at(&err, &create, EROFS, &target);
    let err = crashsafe::update(&target, |old| {
        assert_eq!(old, Some(&b"old"[..]));
        Ok(b"new".to_vec())
    })
    .unwrap_err();
    assert_failed_at(&err, &create, EROFS, &target);

    let err = crashsafe::sweep(dir).unwrap_err();
    assert_eq!(err.step(), Some(Step::RemoveTemp), "{err}");
    assert_eq!(err.raw_os_error(), Some(EROFS));
    assert_eq!(err.temp_left(), Some(stale.as_path()));

    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert_eq!(
        procs::names(dir),
        [".target.crashsafe-abcdefghijkl.tmp", "target"]
    );
}

/// `RLIMIT_FSIZE` makes writes past the limit fail with `EFBIG` (after a
/// short write up to it). A process may lower its own limit without root,
/// but the test harness is multi-threaded and the limit is per process, so
/// the faulty writes run in a child: `sh` sets the limit, ignores SIGXFSZ
/// (which would otherwise kill the child) and execs this test binary.
#[test]
fn file_too_large_keeps_old_content() {
    let test = "file_too_large_keeps_old_content";
    if child_mode().is_some() {
        return too_large_child();
    }
    let Ok(sh) = which("sh") else {
        common::skip(test, "no sh to set ulimit -f");
        return;
    };
    let dir = procs::disk_dir();
    let target = dir.path().join("target");
    fs::write(&target, "old").unwrap();
    let exe = std::env::current_exe().unwrap();
    // ulimit -f counts 512- or 1024-byte blocks depending on the shell:
    // at most 64 KiB either way.
    let out = Command::new(sh)
        .arg("-c")
        .arg("ulimit -f 64 && trap '' XFSZ && exec \"$0\" \"$@\"")
        .arg(exe)
        .args(procs::child_args(test))
        .env(procs::CHILD_ENV, "too-large")
        .env("CRASHSAFE_PATH", &target)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed ({:?}, signal {:?}):\n{stdout}\n{}",
        out.status,
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<&str> = stdout.lines().filter_map(procs::parse_report).collect();
    assert_eq!(reports, ["efbig checked"], "{stdout}");
    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert_eq!(procs::names(dir.path()), ["target"]);
}

fn too_large_child() {
    use rustix::process::{Resource, getrlimit};
    let target = std::path::PathBuf::from(child_env("CRASHSAFE_PATH"));
    let dir = target.parent().unwrap();
    let limit = getrlimit(Resource::Fsize).current;
    assert!(limit.is_some_and(|l| l <= 64 * 1024), "limit {limit:?}");
    let payload = vec![b'n'; 1024 * 1024];
    for opts in [Options::new(), Options::new().unnamed_temp(true).clone()] {
        let err = opts.write(&target, &payload).unwrap_err();
        assert_failed_at(&err, &[Step::Write], EFBIG, &target);
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(procs::names(dir), ["target"]);
    }
    let mut file = AtomicFile::create(&target).unwrap();
    let e = (0..256)
        .find_map(|_| file.write_all(&[b's'; 4096]).err())
        .expect("1 MiB streamed past a 64 KiB limit");
    assert_failed_at(inner(&e), &[Step::Write], EFBIG, &target);
    drop(file);
    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert_eq!(procs::names(dir), ["target"]);
    procs::report("efbig checked");
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

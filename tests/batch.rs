//! Batches on real filesystems (issue 10).
//!
//! - The audit's overlayfs: the upper layer is ext4 on a loop device whose
//!   backing file sits on a full tmpfs, so the kernel fails the write-back
//!   of new data for real. `Batch`, `write`, `AtomicFile` and `update` must
//!   all fail, and after a remount the old content is still there.
//! - One path string, two directories: `chdir` between relative writes and
//!   a symlinked directory repointed between writes; two paths to one
//!   directory (a bind mount); two filesystems in one batch (a tmpfs of our
//!   own and the disk); mixed durability in one directory.
//! - Scale: 10,000 files of 1 KiB in 3 directories under `ulimit -n 1024`
//!   in a child process, and `sweep` during a large live batch.
//! - Full disk and read-only filesystems.
//!
//! Mounts need root (and `mkfs.ext4`, `losetup`, overlayfs): without them
//! those tests print why they skipped and pass. Every mount and loop device
//! is our own and is undone by a guard, even when the test fails.
#![cfg(target_os = "linux")]

mod procs;

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crashsafe::{AtomicFile, Batch, Durability, Options, Step};
use procs::{Mount, child_mode, is_root};

/// Tests that `chdir` hold this, and so does every test that uses relative
/// paths (none other does): the working directory is per process.
static CWD: Mutex<()> = Mutex::new(());

const ENOSPC: i32 = 28;
const EROFS: i32 = 30;

/// Runs a setup command; its failure (or absence) is the reason to skip.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{cmd:?} failed: {}", err.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---- the audit: overlayfs over ext4 over a loop device on a full tmpfs ----

/// Our own mounts and loop device, undone in reverse order on drop.
struct Stack {
    root: tempfile::TempDir,
    /// Mount points, innermost last; unmounted last-first.
    mounts: Vec<PathBuf>,
    loop_dev: Option<String>,
}

impl Stack {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn mount(&mut self, args: &[&str], at: &Path) -> Result<(), String> {
        fs::create_dir_all(at).map_err(|e| e.to_string())?;
        run(Command::new("mount").args(args).arg(at))?;
        self.mounts.push(at.to_path_buf());
        Ok(())
    }

    fn unmount_last(&mut self) -> Result<(), String> {
        let at = self.mounts.pop().expect("a mount");
        run(Command::new("umount").arg(&at)).map(|_| ())
    }

    /// tmpfs (24 MiB) <- sparse 128 MiB ext4 image <- loop device <- ext4
    /// at `x` with `x/upper/target` = `old`, synced <- tmpfs filled up <-
    /// overlayfs at `merged` (lower: an empty directory).
    fn build(old: &[u8]) -> Result<Stack, String> {
        if !is_root() {
            return Err("mounting needs root".into());
        }
        let mut stack = Stack {
            root: tempfile::tempdir().map_err(|e| e.to_string())?,
            mounts: Vec::new(),
            loop_dev: None,
        };
        let t = stack.path("t");
        stack.mount(&["-t", "tmpfs", "-o", "size=24m", "tmpfs"], &t)?;
        let image = t.join("ext4.img");
        let file = fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(128 << 20).map_err(|e| e.to_string())?;
        drop(file);
        run(Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
            ])
            .arg(&image))?;
        let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))?;
        stack.loop_dev = Some(dev.clone());
        let x = stack.path("x");
        stack.mount(&["-t", "ext4", &dev], &x)?;
        for d in ["upper", "work"] {
            fs::create_dir(x.join(d)).map_err(|e| e.to_string())?;
        }
        fs::write(x.join("upper/target"), old).map_err(|e| e.to_string())?;
        run(Command::new("sync").arg("-f").arg(&x))?;
        fill(&t);
        let lower = stack.path("lower");
        fs::create_dir(&lower).map_err(|e| e.to_string())?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            x.join("upper").display(),
            x.join("work").display()
        );
        let merged = stack.path("merged");
        stack.mount(&["-t", "overlay", "overlay", "-o", &options], &merged)?;
        Ok(stack)
    }

    /// Unmounts the overlay and the ext4, mounts the ext4 again (from the
    /// same loop device) and reads `x/upper/target` from it.
    fn remount_and_read(&mut self) -> Vec<u8> {
        self.unmount_last().expect("unmount the overlay");
        self.unmount_last().expect("unmount the ext4");
        let dev = self.loop_dev.clone().expect("a loop device");
        let x = self.path("x");
        // `noload`: the journal may not be writable any more (the backing
        // tmpfs is full); what is on the device is what we read.
        self.mount(&["-t", "ext4", "-o", "ro,noload", &dev], &x)
            .expect("mount the ext4 again");
        fs::read(x.join("upper/target")).expect("the target survives")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        while let Some(at) = self.mounts.pop() {
            if run(Command::new("umount").arg(&at)).is_err() {
                let _ = Command::new("umount").arg("-l").arg(&at).status();
            }
        }
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        }
    }
}

/// Fills the filesystem at `dir` until `ENOSPC`.
fn fill(dir: &Path) {
    let mut file = fs::File::create(dir.join("fill")).expect("create the filler");
    for chunk in [1 << 20, 4096] {
        let buf = vec![0x55u8; chunk];
        while file.write_all(&buf).is_ok() {}
    }
}

/// What each API does with `new` at `target`.
type Api = fn(&Path, &[u8]) -> Result<(), crashsafe::Error>;

fn by_batch(target: &Path, new: &[u8]) -> Result<(), crashsafe::Error> {
    let mut batch = Batch::new();
    batch.write(target, new)?;
    batch.commit()
}

fn by_write(target: &Path, new: &[u8]) -> Result<(), crashsafe::Error> {
    crashsafe::write(target, new)
}

fn by_atomic_file(target: &Path, new: &[u8]) -> Result<(), crashsafe::Error> {
    let mut file = AtomicFile::create(target)?;
    // Into the page cache: the write-back error comes at the commit.
    file.write_all(new).expect("a buffered write");
    file.commit()
}

fn by_update(target: &Path, new: &[u8]) -> Result<(), crashsafe::Error> {
    crashsafe::update(target, |_| Ok(new.to_vec()))
}

#[test]
fn overlay_write_back_errors_fail_every_api_and_keep_the_old_content() {
    let test = "overlay_write_back_errors_fail_every_api_and_keep_the_old_content";
    let old: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let new = vec![0xA5u8; 4 << 20];
    let apis: [(&str, Api); 4] = [
        ("Batch", by_batch),
        ("write", by_write),
        ("AtomicFile", by_atomic_file),
        ("update", by_update),
    ];
    for (name, api) in apis {
        let mut stack = match Stack::build(&old) {
            Ok(s) => s,
            Err(why) => {
                common::skipped(&format!("{test}: {why}"));
                return;
            }
        };
        let target = stack.path("merged/target");
        let result = api(&target, &new);
        let err = match result {
            Ok(()) => panic!("{name}: Ok although the new data could not be written back"),
            Err(e) => e,
        };
        // Before the rename: the target was never switched.
        assert!(!err.target_replaced(), "{name}: {err}");
        assert!(err.replaced().is_empty(), "{name}: {err}");
        let on_disk = stack.remount_and_read();
        assert!(
            on_disk == old,
            "{name}: the old content did not survive ({err})"
        );
        println!("{test}: {name} failed as it must: {err}");
    }
}

// ---- directory identity on real filesystems ----

/// Each file's content after a commit, and no temp or anchor left.
fn assert_new(files: &[(&Path, &[u8])]) {
    for (path, content) in files {
        assert_eq!(fs::read(path).unwrap(), *content, "{}", path.display());
        let dir = path.parent().unwrap();
        let leftovers: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{}: {leftovers:?}", dir.display());
    }
}

#[test]
fn chdir_between_relative_writes_replaces_in_both_directories() {
    let _cwd = CWD.lock().unwrap_or_else(|e| e.into_inner());
    let before = std::env::current_dir().unwrap();
    let root = procs::disk_dir();
    let (d, e) = (root.path().join("d"), root.path().join("e"));
    fs::create_dir(&d).unwrap();
    fs::create_dir(&e).unwrap();
    fs::write(d.join("a"), "old d/a").unwrap();
    fs::write(e.join("a"), "old e/a").unwrap();
    let mut batch = Batch::new();
    std::env::set_current_dir(&d).unwrap();
    batch.write("a", "new d/a").unwrap();
    std::env::set_current_dir(&e).unwrap();
    batch.write("a", "new e/a").unwrap();
    // The commit works on the directories opened at write time, whatever
    // the working directory is now.
    std::env::set_current_dir(&before).unwrap();
    batch.commit().unwrap();
    assert_new(&[(&d.join("a"), b"new d/a"), (&e.join("a"), b"new e/a")]);
}

#[test]
fn a_symlinked_directory_flipped_between_writes_replaces_in_both() {
    let root = procs::disk_dir();
    let (d, e, l) = (
        root.path().join("d"),
        root.path().join("e"),
        root.path().join("l"),
    );
    fs::create_dir(&d).unwrap();
    fs::create_dir(&e).unwrap();
    std::os::unix::fs::symlink(&d, &l).unwrap();
    let mut batch = Batch::new();
    batch.write(l.join("x"), "x in d").unwrap();
    fs::remove_file(&l).unwrap();
    std::os::unix::fs::symlink(&e, &l).unwrap();
    batch.write(l.join("y"), "y in e").unwrap();
    batch.commit().unwrap();
    assert_new(&[(&d.join("x"), b"x in d"), (&e.join("y"), b"y in e")]);
    assert!(!d.join("y").exists() && !e.join("x").exists());
}

#[test]
fn mixed_durability_in_one_directory_commits() {
    let root = procs::disk_dir();
    let mut consistent = Options::new();
    consistent.durability(Durability::Consistent);
    let mut batch = Batch::new();
    batch
        .write_with(&consistent, root.path().join("cache"), "cache")
        .unwrap();
    batch
        .write(root.path().join("important"), "important")
        .unwrap();
    batch.commit().unwrap();
    assert_new(&[
        (&root.path().join("cache"), b"cache"),
        (&root.path().join("important"), b"important"),
    ]);
}

#[test]
fn a_bind_mounted_directory_is_one_directory_under_two_paths() {
    let test = "a_bind_mounted_directory_is_one_directory_under_two_paths";
    if !is_root() {
        common::skipped(&format!("{test}: bind mounts need root"));
        return;
    }
    let root = procs::disk_dir();
    let (d, b) = (root.path().join("d"), root.path().join("b"));
    fs::create_dir(&d).unwrap();
    fs::create_dir(&b).unwrap();
    let mut stack = Stack {
        root: tempfile::tempdir().unwrap(),
        mounts: Vec::new(),
        loop_dev: None,
    };
    if let Err(why) = stack.mount(&["--bind", &d.display().to_string()], &b) {
        common::skipped(&format!("{test}: {why}"));
        return;
    }
    let mut batch = Batch::new();
    batch.write(d.join("x"), "x").unwrap();
    batch.write(b.join("y"), "y").unwrap();
    batch.write(d.join("z"), "z").unwrap();
    batch.commit().unwrap();
    assert_new(&[
        (&d.join("x"), b"x"),
        (&d.join("y"), b"y"),
        (&b.join("z"), b"z"),
    ]);
}

#[test]
fn two_filesystems_in_one_batch() {
    let test = "two_filesystems_in_one_batch";
    let mount = match Mount::tmpfs("size=4m") {
        Ok(m) => m,
        Err(why) => {
            common::skipped(&format!("{test}: {why}"));
            return;
        }
    };
    let disk = procs::disk_dir();
    fs::write(mount.path().join("t"), "old t").unwrap();
    fs::write(disk.path().join("w"), "old w").unwrap();
    let mut batch = Batch::new();
    batch.write(mount.path().join("t"), "new t").unwrap();
    batch.write(disk.path().join("w"), "new w").unwrap();
    batch.write(mount.path().join("u"), "new u").unwrap();
    batch.commit().unwrap();
    assert_new(&[
        (&mount.path().join("t"), b"new t"),
        (&disk.path().join("w"), b"new w"),
        (&mount.path().join("u"), b"new u"),
    ]);
}

// ---- full disk, read-only ----

#[test]
fn a_full_disk_fails_the_write_and_keeps_the_batch() {
    let test = "a_full_disk_fails_the_write_and_keeps_the_batch";
    let mount = match Mount::tmpfs("size=1m") {
        Ok(m) => m,
        Err(why) => {
            common::skipped(&format!("{test}: {why}"));
            return;
        }
    };
    let dir = mount.path();
    fs::write(dir.join("a"), "old a").unwrap();
    let mut batch = Batch::new();
    batch.write(dir.join("a"), "new a").unwrap();
    let err = batch
        .write(dir.join("big"), vec![7u8; 2 << 20])
        .unwrap_err();
    assert_eq!(err.step(), Some(Step::Write), "{err}");
    assert_eq!(err.raw_os_error(), Some(ENOSPC), "{err}");
    assert_eq!(err.temp_left(), None, "{err}");
    assert!(!dir.join("big").exists());
    // The file written before is still in the batch and commits.
    batch.commit().unwrap();
    assert_new(&[(&dir.join("a"), b"new a")]);
}

#[test]
fn a_read_only_filesystem_fails_at_the_temp() {
    let test = "a_read_only_filesystem_fails_at_the_temp";
    let mount = match Mount::tmpfs("size=1m") {
        Ok(m) => m,
        Err(why) => {
            common::skipped(&format!("{test}: {why}"));
            return;
        }
    };
    let dir = mount.path();
    fs::write(dir.join("a"), "old a").unwrap();
    mount.remount_ro();
    let mut batch = Batch::new();
    let err = batch.write(dir.join("a"), "new a").unwrap_err();
    assert_eq!(err.step(), Some(Step::CreateTemp), "{err}");
    assert_eq!(err.raw_os_error(), Some(EROFS), "{err}");
    assert!(batch.is_empty());
    assert_eq!(fs::read(dir.join("a")).unwrap(), b"old a");
}

// ---- scale ----

/// 10,000 files of 1 KiB in 3 directories, in one batch.
const SCALE_FILES: usize = 10_000;

fn scale_body(root: &Path) {
    let dirs: Vec<PathBuf> = (0..3).map(|i| root.join(format!("d{i}"))).collect();
    for d in &dirs {
        fs::create_dir_all(d).unwrap();
    }
    let mut batch = Batch::new();
    let mut most_fds = 0;
    for i in 0..SCALE_FILES {
        let content = vec![(i % 251) as u8; 1024];
        batch
            .write(dirs[i % 3].join(format!("f{i}")), content)
            .unwrap_or_else(|e| panic!("file {i}: {e}"));
        if i % 500 == 0 {
            most_fds = most_fds.max(fs::read_dir("/proc/self/fd").unwrap().count());
        }
    }
    // The fds held do not grow with the batch: 64 temps, 3 directories,
    // 3 anchors, plus what the test harness holds.
    assert!(most_fds < 200, "{most_fds} fds open during the batch");
    batch.commit().unwrap();
    for i in (0..SCALE_FILES).step_by(997) {
        let path = dirs[i % 3].join(format!("f{i}"));
        assert_eq!(fs::read(&path).unwrap(), vec![(i % 251) as u8; 1024]);
    }
    for d in &dirs {
        let names: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")));
        assert_eq!(
            names.len(),
            SCALE_FILES / 3 + usize::from(d.ends_with("d0"))
        );
    }
}

#[test]
fn ten_thousand_files_commit_under_ulimit_1024() {
    let test = "ten_thousand_files_commit_under_ulimit_1024";
    if child_mode().as_deref() == Some("scale") {
        let root = PathBuf::from(procs::child_env("CRASHSAFE_SCALE_DIR"));
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(
            limit.current,
            Some(1024),
            "the child runs under ulimit -n 1024"
        );
        return scale_body(&root);
    }
    let dir = procs::disk_dir();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ulimit -n 1024 && exec \"$0\" {}",
        procs::child_args(test).join(" ")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(&exe)
        .env(procs::CHILD_ENV, "scale")
        .env("CRASHSAFE_SCALE_DIR", dir.path())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            common::skipped(&format!("{test}: no bash to set ulimit -n: {e}"));
            return;
        }
    };
    assert!(
        out.status.success(),
        "child under ulimit -n 1024 failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The child really ran the body (and did not skip it).
    assert_eq!(
        fs::read_dir(dir.path().join("d1")).unwrap().count(),
        SCALE_FILES / 3
    );
}

#[test]
fn sweep_during_a_large_live_batch_removes_nothing() {
    // Past 64 files the batch closes its temps (they lose their flock);
    // its locked anchor keeps `sweep` off them. The temps are made old, so
    // only the lock rules decide.
    let root = procs::disk_dir();
    let mut batch = Batch::new();
    for i in 0..200 {
        batch
            .write(root.path().join(format!("f{i}")), format!("{i}"))
            .unwrap();
    }
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for entry in fs::read_dir(root.path()).unwrap() {
        let file = fs::File::options()
            .write(true)
            .open(entry.unwrap().path())
            .unwrap();
        file.set_modified(old).unwrap();
    }
    assert_eq!(crashsafe::sweep(root.path()).unwrap(), 0);
    batch.commit().unwrap();
    for i in 0..200 {
        assert_eq!(
            fs::read_to_string(root.path().join(format!("f{i}"))).unwrap(),
            format!("{i}")
        );
    }
    let left: Vec<_> = fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

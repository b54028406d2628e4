//! Real-filesystem tests of update, sweep, backup, hard links, xattrs,
//! unnamed temps and Batch.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

mod common;

use crashsafe::{Batch, Error, HardLinks, InvalidReason, Options, Step};

/// Names in `dir` that have the temp shape.
fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn update_reads_modifies_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n");
    let mut seen = Vec::new();
    for _ in 0..3 {
        crashsafe::update(&path, |old| {
            seen.push(old.map(|b| b.to_vec()));
            let n: u32 = old.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
            Ok((n + 1).to_string().into_bytes())
        })
        .unwrap();
    }
    assert_eq!(seen, vec![None, Some(b"1".to_vec()), Some(b"2".to_vec())]);
    assert_eq!(fs::read_to_string(&path).unwrap(), "3");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn update_error_from_closure_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n");
    fs::write(&path, "keep").unwrap();
    let err = crashsafe::update(&path, |_| Err(std::io::Error::other("no"))).unwrap_err();
    assert_eq!(err.step(), Some(Step::Transform));
    assert!(!err.target_replaced());
    assert_eq!(fs::read_to_string(&path).unwrap(), "keep");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn update_from_threads_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    crashsafe::update(&path, |old| {
                        let n: u32 =
                            old.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
                        Ok((n + 1).to_string().into_bytes())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(fs::read_to_string(&path).unwrap(), "100");
}

// The sweep tests live in tests/sweep.rs.

#[test]
fn backup_keeps_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("save");
    let backup = dir.path().join("save~");
    let mut opts = Options::new();
    opts.backup(true);
    opts.write(&path, "v1").unwrap();
    assert!(!backup.exists(), "a new file has nothing to back up");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let v1_ino = fs::metadata(&path).unwrap().ino();
    opts.write(&path, "v2").unwrap();
    assert_eq!(fs::read_to_string(&backup).unwrap(), "v1");
    assert_eq!(fs::metadata(&backup).unwrap().ino(), v1_ino);
    opts.write(&path, "v3").unwrap();
    assert_eq!(fs::read_to_string(&backup).unwrap(), "v2");
    assert_eq!(fs::read_to_string(&path).unwrap(), "v3");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn hard_links_break_by_default_and_can_be_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a");
    let other = dir.path().join("b");
    fs::write(&path, "old").unwrap();
    fs::hard_link(&path, &other).unwrap();
    let err = Options::new()
        .hard_links(HardLinks::Refuse)
        .write(&path, "new")
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidTarget {
            reason: InvalidReason::HardLinked,
            ..
        }
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), "old");
    crashsafe::write(&path, "new").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    assert_eq!(fs::read_to_string(&other).unwrap(), "old");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn user_xattrs_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tagged");
    fs::write(&path, "old").unwrap();
    match rustix::fs::setxattr(
        &path,
        "user.crashsafe",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    ) {
        Ok(()) => {}
        Err(e) => {
            common::skip(
                "user_xattrs_are_kept",
                &format!("this filesystem does not take user xattrs ({e})"),
            );
            return;
        }
    }
    crashsafe::write(&path, "new").unwrap();
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(&path, "user.crashsafe", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"kept");
    // Opting out leaves them behind.
    Options::new()
        .preserve_xattrs(false)
        .write(&path, "newer")
        .unwrap();
    assert!(rustix::fs::getxattr(&path, "user.crashsafe", &mut buf[..]).is_err());
}

#[test]
fn unnamed_temp_replaces_and_creates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u");
    let mut opts = Options::new();
    opts.unnamed_temp(true);
    opts.write(&path, "one").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    opts.write(&path, "two").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "two");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    // Before commit nothing is visible in the directory at all.
    let mut f = opts.open(&path).unwrap();
    std::io::Write::write_all(&mut f, b"three").unwrap();
    std::io::Write::flush(&mut f).unwrap();
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("u")]);
    f.commit().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "three");
    // create_new links straight onto the name, atomically refusing an existing one.
    let new = dir.path().join("fresh");
    opts.create_new(true);
    opts.write(&new, "x").unwrap();
    let err = opts.write(&new, "y").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read_to_string(&new).unwrap(), "x");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn batch_commits_all_files() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(dir.path().join("f0"), "old").unwrap();
    fs::set_permissions(dir.path().join("f0"), fs::Permissions::from_mode(0o640)).unwrap();
    let mut batch = Batch::new();
    for i in 0..20 {
        let d = if i % 2 == 0 { dir.path() } else { &sub };
        batch
            .write(d.join(format!("f{i}")), format!("content {i}"))
            .unwrap();
    }
    assert_eq!(batch.len(), 20);
    // Nothing visible before commit.
    assert_eq!(fs::read_to_string(dir.path().join("f0")).unwrap(), "old");
    batch.commit().unwrap();
    for i in 0..20 {
        let d = if i % 2 == 0 { dir.path() } else { &sub };
        assert_eq!(
            fs::read_to_string(d.join(format!("f{i}"))).unwrap(),
            format!("content {i}")
        );
    }
    assert_eq!(
        fs::metadata(dir.path().join("f0")).unwrap().mode() & 0o7777,
        0o640
    );
    assert!(temps(dir.path()).is_empty() && temps(&sub).is_empty());
}

#[test]
fn batch_dropped_leaves_everything() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a"), "old").unwrap();
    let mut batch = Batch::new();
    batch.write(dir.path().join("a"), "new").unwrap();
    batch.write(dir.path().join("b"), "new").unwrap();
    drop(batch);
    assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "old");
    assert!(!dir.path().join("b").exists());
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn batch_failure_names_the_file_and_what_was_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new();
    opts.create_new(true);
    let mut batch = Batch::with_options(&opts);
    batch.write(dir.path().join("a"), "A").unwrap();
    batch.write(dir.path().join("b"), "B").unwrap();
    batch.write(dir.path().join("c"), "C").unwrap();
    // Someone else creates "b" before the commit: create_new must refuse it
    // at the rename, after "a" was already replaced.
    fs::write(dir.path().join("b"), "theirs").unwrap();
    let err = batch.commit().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(err.target(), dir.path().join("b"));
    assert_eq!(err.replaced(), &[dir.path().join("a")]);
    assert!(
        err.to_string()
            .contains("in a batch of 3 files, 1 already replaced"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "A");
    assert_eq!(fs::read_to_string(dir.path().join("b")).unwrap(), "theirs");
    assert!(!dir.path().join("c").exists());
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn owner_kept_as_root_with_setuid_mode_option() {
    if !is_root() {
        common::skip(
            "owner_kept_as_root_with_setuid_mode_option",
            "chown to another user needs root",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tool");
    fs::write(&path, "old").unwrap();
    std::os::unix::fs::chown(&path, Some(12345), Some(12345)).unwrap();
    Options::new().mode(0o4750).write(&path, "new").unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (12345, 12345));
    assert_eq!(meta.mode() & 0o7777, 0o4750);
}

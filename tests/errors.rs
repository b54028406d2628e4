//! The errors people see: `{}` names the step, the path and the OS reason,
//! on `crashsafe::Error` and on the `io::Error` it converts to; a reporter
//! walking the source chain prints the reason once; messages point at the
//! right thing.

mod common;

use std::io;

use crashsafe::{Error, Options, Step};

/// What `anyhow`'s `{:#}` prints: each error in the chain, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

fn enoent() -> String {
    io::Error::from_raw_os_error(2).to_string()
}

#[test]
fn display_names_the_step_the_path_and_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/app.conf");
    let err = crashsafe::write(&path, b"x").unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "failed to open the parent directory {} of {}: {}",
            dir.path().join("no/such").display(),
            path.display(),
            enoent()
        )
    );
    // Walking the chain does not repeat the reason.
    assert_eq!(chain(&err), text);
    assert_eq!(text.matches(&enoent()).count(), 1);
    assert_eq!(err.raw_os_error(), Some(2));
    // After `?` into io::Error: same message, same kind, the code reachable.
    let io_err: io::Error = err.into();
    assert_eq!(io_err.to_string(), text);
    assert_eq!(chain(&io_err), text);
    assert_eq!(io_err.kind(), io::ErrorKind::NotFound);
    assert_eq!(Error::raw_os_error_of(&io_err), Some(2));
    let inner = Error::from_io_ref(&io_err).unwrap();
    assert_eq!(inner.step(), Some(Step::OpenParent));
}

#[test]
fn a_symlink_into_a_missing_directory_names_that_directory() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link");
    let gone = dir.path().join("gone");
    std::os::unix::fs::symlink(gone.join("file"), &link).unwrap();
    let err = crashsafe::write(&link, b"x").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "failed to open the parent directory {} of {}: ",
            gone.display(),
            link.display()
        )),
        "{text}"
    );
}

#[test]
fn an_empty_path_says_so_plainly() {
    let err = crashsafe::write("", b"x").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot replace the empty path: the path is empty"
    );
}

#[test]
fn create_new_refused_by_looking_reports_the_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, "old").unwrap();
    let err = Options::new()
        .create_new(true)
        .write(&path, "new")
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }));
    assert_eq!(err.step(), Some(Step::InspectTarget));
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_bind_mounted_file_cannot_be_replaced_and_stays_as_it_was() {
    // The "When a replace cannot work" table: a file mounted over another
    // (as in containers) cannot be renamed over; it is refused before
    // anything is written (Linux 5.8+ reports the mount root in statx).
    if !rustix::process::geteuid().is_root() {
        common::skipped(
            "a_bind_mounted_file_cannot_be_replaced_and_stays_as_it_was: bind mounts need root",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (target, source) = (dir.path().join("target"), dir.path().join("source"));
    std::fs::write(&target, "under").unwrap();
    std::fs::write(&source, "mounted").unwrap();
    let ok = std::process::Command::new("mount")
        .args(["--bind"])
        .arg(&source)
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        common::skipped(
            "a_bind_mounted_file_cannot_be_replaced_and_stays_as_it_was: mount --bind failed here",
        );
        return;
    }
    let _mount = BindMount(target.clone());
    let err = crashsafe::write(&target, "new").unwrap_err();
    assert!(
        matches!(
            err,
            crashsafe::Error::Refused {
                reason: crashsafe::InvalidReason::MountPoint,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy, "{err}");
    assert!(!err.target_replaced());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "mounted");
    let temps: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".crashsafe-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

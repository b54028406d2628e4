//! Permissions never widen (issue 11): whoever could not read or write the
//! old file cannot read or write the new one.
//!
//! - a POSIX ACL is carried over, and where it cannot be, the group bits
//!   (which are the ACL's mask) are dropped rather than granted;
//! - a group that cannot be kept keeps no more than "others" had;
//! - an owner that cannot be kept, even by root in a user namespace
//!   (`EINVAL`), is best effort, with the same narrowing;
//! - extended attributes come from the file that was inspected, not from
//!   whatever is at the old path at commit time;
//! - a directory's default ACL, inherited by the temp, grants nobody access
//!   to a replaced file that the old one did not (a new file inherits it as
//!   with `std::fs::write`); where there are no ACLs, `fchmod` sets the mode.
//!
//! ACLs are written as the raw `system.posix_acl_access` xattr, so no
//! `acl` package is needed.
#![cfg(target_os = "linux")]

mod procs;

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crashsafe::{AtomicFile, Options};
use procs::{child_env, child_mode};

const ACL: &str = "system.posix_acl_access";
const USER: u32 = 2001;
const OTHER_USER: u32 = 2002;
const FOREIGN_GROUP: u32 = 2200;
const USERS_GROUP: u32 = 100;

/// The raw ACL xattr: version 2, then (tag, perm, id) entries sorted by tag.
fn acl_bytes(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

const NO_ID: u32 = u32::MAX;

/// `user::rw-, user:2002:rw-, group::---, mask::rw-, other::---`: the file
/// of the issue, mode 0660 on disk (the group bits are the mask).
fn named_user_acl() -> Vec<u8> {
    acl_bytes(&[
        (0x01, 6, NO_ID),
        (0x02, 6, OTHER_USER),
        (0x04, 0, NO_ID),
        (0x10, 6, NO_ID),
        (0x20, 0, NO_ID),
    ])
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::getxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Sets an xattr, or says why the filesystem cannot hold it.
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), String> {
    rustix::fs::setxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .map_err(|e| format!("cannot set {name} here: {e}"))
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn owner_of(path: &Path) -> (u32, u32) {
    let m = fs::metadata(path).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn an_acl_is_carried_over() {
    let test = "an_acl_is_carried_over";
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("shared");
    fs::write(&target, "old").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    if let Err(why) = set_xattr(&target, ACL, &named_user_acl()) {
        common::skipped(&format!("{test}: {why}"));
        return;
    }
    assert_eq!(mode_of(&target), 0o660, "the mask shows as the group bits");
    crashsafe::write(&target, "new").unwrap();
    assert_eq!(fs::read_to_string(&target).unwrap(), "new");
    assert_eq!(
        get_xattr(&target, ACL),
        Some(named_user_acl()),
        "the ACL was not carried over (mode now {:o})",
        mode_of(&target)
    );
    assert_eq!(mode_of(&target), 0o660);
}

#[test]
fn an_explicit_mode_replaces_the_acl() {
    let test = "an_explicit_mode_replaces_the_acl";
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("shared");
    fs::write(&target, "old").unwrap();
    if let Err(why) = set_xattr(&target, ACL, &named_user_acl()) {
        common::skipped(&format!("{test}: {why}"));
        return;
    }
    Options::new().mode(0o600).write(&target, "new").unwrap();
    assert_eq!(get_xattr(&target, ACL), None);
    assert_eq!(mode_of(&target) & 0o077, 0);
}

/// Runs this test binary's `test` as `uid:gid` with no supplementary
/// groups, in child mode `mode`; returns its reports.
fn run_as(test: &str, mode: &str, uid: u32, gid: u32, dir: &Path) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = procs::child_command(test, mode);
    cmd.uid(uid).gid(gid).env("CRASHSAFE_DIR", dir);
    reports_of(cmd)
}

fn reports_of(mut cmd: Command) -> Vec<String> {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{cmd:?}: {stdout}");
    stdout
        .lines()
        .filter_map(procs::parse_report)
        .map(str::to_owned)
        .collect()
}

/// The child's side: replace `$CRASHSAFE_DIR/t` and report the outcome.
fn child_write() {
    let dir = PathBuf::from(child_env("CRASHSAFE_DIR"));
    let result = crashsafe::write(dir.join("t"), "new");
    procs::report(&match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error {e}: {:?}", std::error::Error::source(&e)),
    });
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

/// A directory the test user owns, in a tempdir others may enter.
fn users_dir(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if !procs::is_root() {
        common::skipped(&format!("{test}: needs root to act as other users"));
        return None;
    }
    if let Err(why) = can_run_as(USER, USERS_GROUP) {
        common::skipped(&format!("{test}: {why}"));
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(USER), Some(USERS_GROUP)).unwrap();
    Some((dir, home))
}

#[test]
fn a_group_that_cannot_be_kept_gets_no_more_than_others() {
    let test = "a_group_that_cannot_be_kept_gets_no_more_than_others";
    if child_mode().is_some() {
        return child_write();
    }
    let Some((_dir, home)) = users_dir(test) else {
        return;
    };
    let target = home.join("t");
    fs::write(&target, "old").unwrap();
    std::os::unix::fs::chown(&target, Some(USER), Some(FOREIGN_GROUP)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    // 2001, primary group 100, not in 2200: the chown to 2200 fails.
    assert_eq!(run_as(test, "write", USER, USERS_GROUP, &home), ["ok"]);
    assert_eq!(fs::read_to_string(&target).unwrap(), "new");
    assert_eq!(owner_of(&target), (USER, USERS_GROUP));
    // Group 2200 could read (4), others could read (4): group 100 may read.
    assert_eq!(mode_of(&target), 0o644);

    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&target, Some(USER), Some(FOREIGN_GROUP)).unwrap();
    assert_eq!(run_as(test, "write", USER, USERS_GROUP, &home), ["ok"]);
    assert_eq!(owner_of(&target), (USER, USERS_GROUP));
    // Others could not read: neither may group 100 (it was 0640 2001:100).
    assert_eq!(mode_of(&target), 0o600);
}

#[test]
fn an_acl_that_cannot_be_kept_drops_the_group_bits() {
    let test = "an_acl_that_cannot_be_kept_drops_the_group_bits";
    if child_mode().is_some() {
        return child_write();
    }
    let Some((_dir, home)) = users_dir(test) else {
        return;
    };
    let target = home.join("t");
    fs::write(&target, "old").unwrap();
    std::os::unix::fs::chown(&target, Some(USER), Some(FOREIGN_GROUP)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    if let Err(why) = set_xattr(&target, ACL, &named_user_acl()) {
        common::skipped(&format!("{test}: {why}"));
        return;
    }
    // The group cannot be kept, so the ACL (whose `group::` entry would
    // apply to the new group) is not copied; its mask must not become
    // group 100's permissions.
    assert_eq!(run_as(test, "write", USER, USERS_GROUP, &home), ["ok"]);
    assert_eq!(owner_of(&target), (USER, USERS_GROUP));
    assert_eq!(get_xattr(&target, ACL), None);
    assert_eq!(mode_of(&target), 0o600);
}

#[test]
fn an_unmapped_owner_in_a_user_namespace_is_best_effort() {
    let test = "an_unmapped_owner_in_a_user_namespace_is_best_effort";
    if child_mode().is_some() {
        return child_write();
    }
    let Some((_dir, home)) = users_dir(test) else {
        return;
    };
    let probe = Command::new("unshare").args(["-U", "-r", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        common::skipped(&format!("{test}: unshare -U -r does not work here"));
        return;
    }
    // Root's own directory; the file belongs to 2001, who has no mapping
    // in the namespace, so fchown to 2001 fails with EINVAL there.
    std::os::unix::fs::chown(&home, Some(0), Some(0)).unwrap();
    let target = home.join("t");
    fs::write(&target, "old").unwrap();
    std::os::unix::fs::chown(&target, Some(USER), Some(USER)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-U", "-r"])
        .arg(std::env::current_exe().unwrap())
        .args(procs::child_args(test))
        .env(procs::CHILD_ENV, "userns")
        .env("CRASHSAFE_DIR", &home)
        .stdin(std::process::Stdio::null());
    assert_eq!(reports_of(cmd), ["ok"]);
    assert_eq!(fs::read_to_string(&target).unwrap(), "new");
    assert_eq!(owner_of(&target), (0, 0));
    // The group (2001) was not kept, and others could not read.
    assert_eq!(mode_of(&target), 0o600);
}

#[test]
fn attributes_come_from_the_file_that_was_inspected() {
    let test = "attributes_come_from_the_file_that_was_inspected";
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("d");
    fs::create_dir(&dir).unwrap();
    let target = dir.join("t");
    fs::write(&target, "old").unwrap();
    if let Err(why) = set_xattr(&target, "user.private", b"mine") {
        common::skipped(&format!("{test}: {why}"));
        return;
    }
    let mut file = AtomicFile::create(&target).unwrap();
    file.write_all(b"new").unwrap();
    // Meanwhile the directory moves away and another file takes its path.
    let moved = top.path().join("moved");
    fs::rename(&dir, &moved).unwrap();
    fs::create_dir(&dir).unwrap();
    fs::write(&target, "planted").unwrap();
    set_xattr(&target, "user.private", b"planted").unwrap();
    set_xattr(&target, "user.extra", b"planted").unwrap();
    file.commit().unwrap();
    // The replace happened in the directory it opened (now `moved`).
    let result = moved.join("t");
    assert_eq!(fs::read_to_string(&result).unwrap(), "new");
    assert_eq!(
        get_xattr(&result, "user.private").as_deref(),
        Some(&b"mine"[..])
    );
    assert_eq!(get_xattr(&result, "user.extra"), None);
    assert_eq!(fs::read_to_string(&target).unwrap(), "planted");
}

// issue 11b: a directory's default ACL must not widen a replaced file.

const ACL_DEFAULT: &str = "system.posix_acl_default";

/// `user::rwx, user:2002:rw-, group::r-x, mask::rwx, other::r-x`: as a
/// directory's default ACL, every file created there gets `user:2002:rw-`,
/// masked by the create mode's group bits.
fn default_acl_naming_the_other_user() -> Vec<u8> {
    acl_bytes(&[
        (0x01, 7, NO_ID),
        (0x02, 6, OTHER_USER),
        (0x04, 5, NO_ID),
        (0x10, 7, NO_ID),
        (0x20, 5, NO_ID),
    ])
}

/// What the named entry for `uid` in the file's access ACL effectively
/// grants (its permissions under the mask), as `getfacl` prints in its
/// `#effective:` comment; 0 without an ACL or an entry for `uid`.
fn effective_for_named_user(path: &Path, uid: u32) -> u16 {
    let Some(acl) = get_xattr(path, ACL) else {
        return 0;
    };
    let entries: Vec<(u16, u16, u32)> = acl[4..]
        .chunks(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            (tag, perm, u32::from_le_bytes([e[4], e[5], e[6], e[7]]))
        })
        .collect();
    let mask = entries.iter().find(|e| e.0 == 0x10).map_or(7, |e| e.1);
    entries
        .iter()
        .find(|e| e.0 == 0x02 && e.2 == uid)
        .map_or(0, |e| e.1 & mask)
}

/// A directory with the default ACL above, or why it cannot have one.
fn dir_with_default_acl() -> Result<tempfile::TempDir, String> {
    let dir = tempfile::tempdir().unwrap();
    set_xattr(
        dir.path(),
        ACL_DEFAULT,
        &default_acl_naming_the_other_user(),
    )?;
    Ok(dir)
}

#[test]
fn a_default_acl_does_not_widen_an_old_file_without_one() {
    let test = "a_default_acl_does_not_widen_an_old_file_without_one";
    let dir = match dir_with_default_acl() {
        Ok(dir) => dir,
        Err(why) => return common::skipped(&format!("{test}: {why}")),
    };
    for unnamed in [false, true] {
        for old_mode in [0o640, 0o600, 0o644, 0o660, 0o4750] {
            let target = dir.path().join(format!("t{old_mode:o}-{unnamed}"));
            fs::write(&target, "old").unwrap();
            // The old file inherited the default ACL too: take it away, so
            // that user 2002 may not read it.
            rustix::fs::removexattr(&target, ACL).unwrap();
            fs::set_permissions(&target, fs::Permissions::from_mode(old_mode)).unwrap();
            assert_eq!(effective_for_named_user(&target, OTHER_USER), 0);
            let mut opts = Options::new();
            opts.unnamed_temp(unnamed);
            opts.write(&target, "new").unwrap();
            assert_eq!(fs::read_to_string(&target).unwrap(), "new");
            let what = format!("old {old_mode:o}, unnamed temp {unnamed}");
            assert_eq!(
                effective_for_named_user(&target, OTHER_USER),
                0,
                "{what}: user {OTHER_USER} gained access (mode now {:o})",
                mode_of(&target)
            );
            assert_eq!(mode_of(&target), old_mode, "{what}");
        }
    }
}

#[test]
fn a_new_file_inherits_the_default_acl_as_with_std() {
    let test = "a_new_file_inherits_the_default_acl_as_with_std";
    let dir = match dir_with_default_acl() {
        Ok(dir) => dir,
        Err(why) => return common::skipped(&format!("{test}: {why}")),
    };
    let ours = dir.path().join("ours");
    let std_one = dir.path().join("std");
    crashsafe::write(&ours, "new").unwrap();
    fs::write(&std_one, "new").unwrap();
    assert!(get_xattr(&std_one, ACL).is_some());
    assert_eq!(get_xattr(&ours, ACL), get_xattr(&std_one, ACL));
    assert_eq!(mode_of(&ours), mode_of(&std_one));
    assert_eq!(effective_for_named_user(&ours, OTHER_USER), 6);
}

/// A ramfs (no extended attributes, so no ACLs) on a fresh directory,
/// unmounted when dropped, even if the test panics.
struct Ramfs(tempfile::TempDir);

impl Ramfs {
    fn mount() -> Result<Ramfs, String> {
        if !procs::is_root() {
            return Err("mounting a filesystem needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "ramfs", "ramfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!("mount -t ramfs failed: {}", why.trim()));
        }
        Ok(Ramfs(dir))
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn without_acl_support_the_mode_is_set_by_fchmod() {
    let test = "without_acl_support_the_mode_is_set_by_fchmod";
    let mnt = match Ramfs::mount() {
        Ok(mnt) => mnt,
        Err(why) => return common::skipped(&format!("{test}: {why}")),
    };
    let target = mnt.0.path().join("t");
    fs::write(&target, "old").unwrap();
    assert!(set_xattr(&target, ACL, &named_user_acl()).is_err());
    for old_mode in [0o640, 0o644, 0o2750] {
        fs::set_permissions(&target, fs::Permissions::from_mode(old_mode)).unwrap();
        crashsafe::write(&target, "new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(mode_of(&target), old_mode);
    }
}

#[test]
fn a_default_acl_does_not_mix_into_a_carried_acl() {
    let test = "a_default_acl_does_not_mix_into_a_carried_acl";
    let dir = match dir_with_default_acl() {
        Ok(dir) => dir,
        Err(why) => return common::skipped(&format!("{test}: {why}")),
    };
    // The old file's own ACL names user 2003, not 2002.
    let own = acl_bytes(&[
        (0x01, 6, NO_ID),
        (0x02, 4, OTHER_USER + 1),
        (0x04, 0, NO_ID),
        (0x10, 4, NO_ID),
        (0x20, 0, NO_ID),
    ]);
    let target = dir.path().join("t");
    fs::write(&target, "old").unwrap();
    set_xattr(&target, ACL, &own).unwrap();
    crashsafe::write(&target, "new").unwrap();
    assert_eq!(get_xattr(&target, ACL), Some(own));
    assert_eq!(effective_for_named_user(&target, OTHER_USER), 0);
    assert_eq!(mode_of(&target), 0o640);
}

#[test]
fn a_default_acl_does_not_widen_a_file_root_gives_back() {
    let test = "a_default_acl_does_not_widen_a_file_root_gives_back";
    if !procs::is_root() {
        return common::skipped(&format!("{test}: needs root to own another user's file"));
    }
    let dir = match dir_with_default_acl() {
        Ok(dir) => dir,
        Err(why) => return common::skipped(&format!("{test}: {why}")),
    };
    let target = dir.path().join("t");
    fs::write(&target, "old").unwrap();
    rustix::fs::removexattr(&target, ACL).unwrap();
    std::os::unix::fs::chown(&target, Some(USER), Some(USER)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o2640)).unwrap();
    // Root writes: the temp is root's, then given to 2001 (fchown), then
    // its mode set; the chown cleared setgid, so it is set again.
    crashsafe::write(&target, "new").unwrap();
    assert_eq!(owner_of(&target), (USER, USER));
    assert_eq!(mode_of(&target), 0o2640);
    assert_eq!(effective_for_named_user(&target, OTHER_USER), 0);
}

//! The number of system calls per replace, pinned: the cost of a replace
//! must not creep up unnoticed. Counted through the simulator's trace, which
//! records every call the protocol makes except closing the directory fd
//! (dropping the handle), so each real count below is one more.
//!
//! The floor, a hand-written minimal durable replace, makes 8 calls (open
//! dir, openat, write, fdatasync, renameat, fsync dir, close twice). What a
//! default replace adds, and why:
//!
//! - `fstatat` of the target: refuse directories and devices, read mode
//!   and owner to keep;
//! - `flock` of the temp: lets `sweep` tell a live writer's temp from a dead
//!   one's; then `fstat` of the temp: after the lock, its link count says
//!   whether a `sweep` removed it between create and lock (then the writer
//!   starts again), which is what lets `sweep` remove dead temps at once;
//! - `fstat` of the temp (existing file only), then `fchown` only when the
//!   owner differs (root replacing another user's file) and `fchmod` only
//!   when the mode differs (the temp starts 0600); for an old file without
//!   an ACL that "fchmod" is an `fsetxattr` of a minimal access ACL (same
//!   count: it sets the mode and drops an ACL inherited from a directory's
//!   default ACL; the simulator has no ACLs and traces it as `SetMode`);
//! - (existing file only) `openat` of the old file with `O_NOFOLLOW`, its
//!   `fstat` (the same inode `fstatat` saw?), one `flistxattr` (ACL to
//!   carry, `user.*`/`security.*` to copy; an `fgetxattr` per attribute
//!   kept) and its `close`: attributes come from the inspected inode;
//! - `fstat` of the directory only when the file is not the caller's
//!   (sticky-directory rule), `fstatfs` and maybe `fstat` of the directory
//!   per symlink followed; `geteuid` is not traced (no filesystem call).

use crate::options::{Durability, Options};
use crate::sim::{Call, SimFs};

/// A user (uid and gid 1000) with a writable directory holding their
/// own 0644 file `old` and 0600 file `secret`.
fn sim() -> SimFs {
    let sim = SimFs::new(1);
    sim.mkdir("/d", 0o777).unwrap();
    sim.put_file("/d/old", b"old", 0o644, 1000, 1000).unwrap();
    sim.put_file("/d/secret", b"old", 0o600, 1000, 1000)
        .unwrap();
    sim.set_identity(1000, 1000, false);
    sim
}

/// (calls traced, syncs) for one write of 4 KiB with `opts`.
fn count(path: &str, opts: &Options) -> (usize, usize) {
    let sim = sim();
    sim.write(path, &[7u8; 4096], opts).unwrap();
    let trace = sim.trace();
    let syncs = trace
        .iter()
        .filter(|t| matches!(t.call, Call::SyncFile | Call::SyncDir | Call::SyncFs))
        .count();
    (trace.len(), syncs)
}

#[test]
fn replace_of_an_existing_file() {
    // Your own 0644 file: the old file opened, fstat'ed and listed, then
    // fstat of the temp after its lock (a sweep that took it first leaves
    // no links) and again for the metadata, the mode (0600 -> 0644: on Linux one fsetxattr of
    // a minimal ACL in place of fchmod), no fchown, no fstat of
    // the directory (your own file cannot be a planted one).
    // 16 traced + close(dir) = 17 real calls, 2 syncs.
    assert_eq!(count("/d/old", &Options::new()), (16, 2));
}

#[test]
fn replace_of_a_private_file_needs_neither_chown_nor_chmod() {
    // The temp already is 0600 and yours: the fstat shows it.
    assert_eq!(count("/d/secret", &Options::new()), (15, 2));
}

#[test]
fn root_replacing_another_users_file_adds_the_chown() {
    let sim = sim();
    sim.set_identity(0, 0, true);
    sim.write("/d/old", &[7u8; 4096], &Options::new()).unwrap();
    // Plus the directory's fstat: a file that is not yours may be planted.
    assert_eq!(sim.trace().len(), 18);
}

#[test]
fn new_file() {
    // No fchown, fchmod or llistxattr: 10 traced + close(dir) = 11.
    assert_eq!(count("/d/new", &Options::new()), (10, 2));
}

#[test]
fn without_the_optional_extras() {
    let mut opts = Options::new();
    opts.preserve_xattrs(false);
    // The old file is still opened and listed: an ACL is part of the mode.
    assert_eq!(count("/d/old", &opts), (16, 2));
}

#[test]
fn consistent_skips_one_sync() {
    let mut opts = Options::new();
    opts.durability(Durability::Consistent);
    assert_eq!(count("/d/old", &opts), (15, 1));
}

#[test]
fn unnamed_temp_costs_one_link() {
    let mut opts = Options::new();
    opts.unnamed_temp(true);
    assert_eq!(count("/d/old", &opts), (16, 2));
}

#[test]
fn batch_of_files_in_one_directory() {
    // Per file: open dir, fstatat, openat, flock, fstat of the temp, fstat
    // of the directory, pwrite, rename, close; once per batch: one fstatfs,
    // one syncfs and one directory fsync.
    let sim = sim();
    let mut batch = sim.batch(&Options::new());
    for i in 0..10 {
        batch.write(format!("/d/f{i}"), &[i as u8; 64]).unwrap();
    }
    batch.commit().unwrap();
    let trace = sim.trace();
    let of = |call: Call| trace.iter().filter(|t| t.call == call).count();
    assert_eq!(trace.len(), 10 * 9 + 3);
    assert_eq!(
        (of(Call::SyncFs), of(Call::SyncDir), of(Call::SyncFile)),
        (1, 1, 0)
    );
}

// issue 11: the sticky-directory rule costs the common case nothing, and
// refuses a planted file before anything is created.

/// `/t` is a `/tmp` look-alike (sticky, world-writable, root's) holding
/// the caller's own file, one of uid 2001, and a link of 2001's.
fn sticky_sim() -> SimFs {
    let sim = SimFs::new(1);
    sim.mkdir("/t", 0o1777).unwrap();
    sim.put_file("/t/mine", b"old", 0o644, 1000, 1000).unwrap();
    sim.put_file("/t/planted", b"old", 0o666, 2001, 2001)
        .unwrap();
    sim.put_file("/victim", b"old", 0o644, 1000, 1000).unwrap();
    sim.set_identity(2001, 2001, false);
    sim.symlink("/t/link", "/victim").unwrap();
    sim.set_identity(1000, 1000, false);
    sim
}

#[test]
fn own_file_in_a_sticky_dir_costs_no_extra_call() {
    let sim = sticky_sim();
    sim.write("/t/mine", &[7u8; 4096], &Options::new()).unwrap();
    assert_eq!(sim.trace().len(), 16);
    assert!(!sim.trace().iter().any(|t| t.call == Call::StatDir));
}

#[test]
fn a_planted_file_in_a_sticky_dir_is_refused_before_any_create() {
    let sim = sticky_sim();
    let err = sim
        .write("/t/planted", &[7u8; 4096], &Options::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            crate::Error::Refused {
                reason: crate::InvalidReason::ForeignFileInStickyDir,
                ..
            }
        ),
        "{err}"
    );
    // open_dir, stat_at, stat_dir: nothing created.
    let calls: Vec<Call> = sim.trace().iter().map(|t| t.call).collect();
    assert_eq!(calls, [Call::OpenDir, Call::StatAt, Call::StatDir]);
    assert_eq!(sim.read_file("/t/planted").unwrap(), b"old");
}

#[test]
fn a_foreign_link_in_a_sticky_dir_is_not_followed() {
    let sim = sticky_sim();
    let err = sim.write("/t/link", b"new", &Options::new()).unwrap_err();
    assert!(
        matches!(
            err,
            crate::Error::Refused {
                reason: crate::InvalidReason::ForeignSymlinkInStickyDir,
                ..
            }
        ),
        "{err}"
    );
    assert!(!sim.trace().iter().any(|t| t.call == Call::ReadLinkAt));
    assert_eq!(sim.read_file("/victim").unwrap(), b"old");
}

#[test]
fn backup_adds_a_link_a_rename_and_a_directory_fsync() {
    // The directory fsync between the backup's rename and the main rename
    // keeps the old version under one of the two names after any crash.
    let mut opts = Options::new();
    opts.backup(true);
    // On top of the 16 calls of a plain replace of this file.
    assert_eq!(count("/d/old", &opts), (19, 3));
}

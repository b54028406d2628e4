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
//!   when the mode differs (the temp starts 0600);
//! - `llistxattr` (existing file only): keep `user.*`/`security.*` xattrs.

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
    // Your own 0644 file: fstat, fchmod (0600 -> 0644), no fchown.
    // 13 traced + close(dir) = 14 real calls, 2 syncs.
    assert_eq!(count("/d/old", &Options::new()), (13, 2));
}

#[test]
fn replace_of_a_private_file_needs_neither_chown_nor_chmod() {
    // The temp already is 0600 and yours: the fstat shows it.
    assert_eq!(count("/d/secret", &Options::new()), (12, 2));
}

#[test]
fn root_replacing_another_users_file_adds_the_chown() {
    let sim = sim();
    sim.set_identity(0, 0, true);
    sim.write("/d/old", &[7u8; 4096], &Options::new()).unwrap();
    assert_eq!(sim.trace().len(), 14);
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
    assert_eq!(count("/d/old", &opts), (12, 2));
}

#[test]
fn consistent_skips_one_sync() {
    let mut opts = Options::new();
    opts.durability(Durability::Consistent);
    assert_eq!(count("/d/old", &opts), (12, 1));
}

#[test]
fn unnamed_temp_costs_one_link() {
    let mut opts = Options::new();
    opts.unnamed_temp(true);
    assert_eq!(count("/d/old", &opts), (13, 2));
}

#[test]
fn batch_of_files_in_one_directory() {
    // Per file: open dir, fstatat, openat, flock, fstat, pwrite, rename, close;
    // once per batch: one syncfs and one directory fsync.
    let sim = sim();
    let mut batch = sim.batch(&Options::new());
    for i in 0..10 {
        batch.write(format!("/d/f{i}"), &[i as u8; 64]).unwrap();
    }
    batch.commit().unwrap();
    let trace = sim.trace();
    let of = |call: Call| trace.iter().filter(|t| t.call == call).count();
    assert_eq!(trace.len(), 10 * 8 + 2);
    assert_eq!(
        (of(Call::SyncFs), of(Call::SyncDir), of(Call::SyncFile)),
        (1, 1, 0)
    );
}

#[test]
fn backup_adds_a_link_a_rename_and_a_directory_fsync() {
    // The directory fsync between the backup's rename and the main rename
    // keeps the old version under one of the two names after any crash.
    let mut opts = Options::new();
    opts.backup(true);
    assert_eq!(count("/d/old", &opts), (16, 3));
}

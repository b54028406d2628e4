//! Tier 2: golden traces. The exact syscall sequence of each protocol path,
//! with temp names masked (`.a.*.tmp`). A change to the order of the
//! durability steps shows up here first, as a readable diff.

use std::io::Write;

use crate::options::{Durability, Options};
use crate::sim::check::{Backup, Case, Reach, Via};
use crate::sim::{Call, SimFs, errnos};

fn case(present: bool, durability: Durability, create_new: bool, reach: Reach) -> Case {
    Case {
        present,
        durability,
        create_new,
        reach,
        payload_len: 5,
        via: Via::Write,
        unnamed_temp: false,
        backup: Backup::Off,
        user: false,
        broken: None,
    }
}

#[track_caller]
fn assert_trace(sim: &SimFs, expected: &[&str]) {
    let actual = sim.trace_lines();
    if actual != expected {
        panic!(
            "trace differs\n--- expected\n{}\n--- actual\n{}",
            expected.join("\n"),
            actual.join("\n")
        );
    }
}

fn run(case: &Case) -> SimFs {
    let sim = case.setup(1);
    case.run(&sim).unwrap();
    sim
}

#[test]
fn new_file() {
    let sim = run(&case(false, Durability::Durable, false, Reach::Direct));
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ENOENT",
            "create_at(/d, .a.*.tmp, 0o666) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "sync_file(.a.*.tmp) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
    );
}

#[test]
fn replace_keeps_owner_then_mode_before_the_fsync() {
    let sim = run(&case(true, Durability::Durable, false, Reach::Direct));
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "stat_dir(/d) = ok",
            "open_read_at(/d, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "stat_file(.a.*.tmp) = ok",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o4750) = ok",
            "sync_file(.a.*.tmp) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
    );
}

#[test]
fn create_new_uses_rename_noreplace() {
    let sim = run(&case(false, Durability::Durable, true, Reach::Direct));
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ENOENT",
            "create_at(/d, .a.*.tmp, 0o666) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "sync_file(.a.*.tmp) = ok",
            "rename_noreplace_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
    );
}

#[test]
fn create_new_falls_back_to_link_where_noreplace_is_unsupported() {
    let c = case(false, Durability::Durable, true, Reach::Direct);
    let sim = c.setup(1);
    sim.set_rename_noreplace(false);
    c.run(&sim).unwrap();
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ENOENT",
            "create_at(/d, .a.*.tmp, 0o666) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "sync_file(.a.*.tmp) = ok",
            "rename_noreplace_at(/d, .a.*.tmp, a) = EINVAL",
            "link_at(/d, .a.*.tmp, a) = ok",
            "unlink_at(/d, .a.*.tmp) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
    );
}

#[test]
fn create_new_on_an_existing_file_touches_nothing() {
    let c = case(true, Durability::Durable, true, Reach::Direct);
    let sim = c.setup(1);
    let err = c.run(&sim).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_trace(&sim, &["open_dir(/d) = ok", "stat_at(/d, a) = ok"]);
}

#[test]
fn followed_symlink_replaces_and_syncs_in_the_targets_directory() {
    let sim = run(&case(true, Durability::Durable, false, Reach::Followed));
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "is_procfs(/d) = ok",
            "read_link_at(/d, a) = ok",
            "open_dir_at(/d, ../e, path_only=false) = ok",
            "stat_at(/d/../e, a) = ok",
            "stat_dir(/d/../e) = ok",
            "open_read_at(/d/../e, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_at(/d/../e, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "stat_file(.a.*.tmp) = ok",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o4750) = ok",
            "sync_file(.a.*.tmp) = ok",
            "rename_at(/d/../e, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d/../e) = ok",
        ],
    );
}

#[test]
fn not_followed_symlink_is_replaced_as_a_new_file() {
    let sim = run(&case(true, Durability::Durable, false, Reach::NotFollowed));
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "create_at(/d, .a.*.tmp, 0o666) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "sync_file(.a.*.tmp) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
    );
}

#[test]
fn consistent_skips_only_the_directory_fsync() {
    let sim = run(&case(true, Durability::Consistent, false, Reach::Direct));
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "stat_dir(/d) = ok",
            "open_read_at(/d, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "stat_file(.a.*.tmp) = ok",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o4750) = ok",
            "sync_file(.a.*.tmp) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
        ],
    );
}

#[test]
fn streaming_buffers_small_writes_into_one() {
    let c = case(false, Durability::Durable, false, Reach::Direct);
    let sim = c.setup(1);
    let mut file = sim.open("/d/a", &c.options()).unwrap();
    for _ in 0..10 {
        file.write_all(b"0123456789").unwrap();
    }
    file.commit().unwrap();
    assert_eq!(sim.read_file("/d/a").unwrap(), b"0123456789".repeat(10));
    assert_eq!(
        sim.trace_lines()[5],
        "write_at(.a.*.tmp, 100 bytes @0) = 100"
    );
}

#[test]
fn failed_fsync_removes_the_temp_and_never_renames() {
    let c = case(true, Durability::Durable, false, Reach::Direct);
    let sim = c.setup(1);
    sim.fail_first(Call::SyncFile, errnos::EIO);
    c.run(&sim).unwrap_err();
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "stat_dir(/d) = ok",
            "open_read_at(/d, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "stat_file(.a.*.tmp) = ok",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o4750) = ok",
            "sync_file(.a.*.tmp) = EIO (injected)",
            "close(.a.*.tmp)",
            "unlink_at(/d, .a.*.tmp) = ok",
        ],
    );
}

/// `/d/a` ("old a", 0640, 1234:5678) and `/e/c` ("old c", 0600, root),
/// written by root.
fn two_dirs() -> SimFs {
    let sim = SimFs::new(1);
    sim.set_identity(0, 0, true);
    sim.mkdir("/d", 0o755).unwrap();
    sim.mkdir("/e", 0o755).unwrap();
    sim.put_file("/d/a", b"old a", 0o640, 1234, 5678).unwrap();
    sim.put_file("/e/c", b"old c", 0o600, 0, 0).unwrap();
    sim
}

#[test]
fn batch_flushes_once_per_directory_then_renames_then_syncs_each_directory() {
    let sim = two_dirs();
    let mut batch = sim.batch(&Options::new());
    batch.write("/d/a", b"new a").unwrap();
    batch.write("/d/b", b"new b").unwrap();
    batch.write("/e/c", b"new c").unwrap();
    batch.commit().unwrap();
    assert_trace(
        &sim,
        &[
            // Each file: the directory opened (before its temp), a locked
            // temp, the directory's identity (a directory seen before is
            // shared; the first on a filesystem also asks its type), the
            // content. Nothing is visible yet.
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "stat_dir(/d) = ok",
            "open_read_at(/d, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "stat_dir(/d) = ok",
            "stat_fs(/d) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "open_dir(/d) = ok",
            "stat_at(/d, b) = ENOENT",
            "create_at(/d, .b.*.tmp, 0o666) = ok",
            "lock(.b.*.tmp, wait=false) = ok",
            "stat_file(.b.*.tmp) = ok",
            "stat_dir(/d) = ok",
            "write_at(.b.*.tmp, 5 bytes @0) = 5",
            "open_dir(/e) = ok",
            "stat_at(/e, c) = ok",
            "open_read_at(/e, c) = ok",
            "stat_file(c) = ok",
            "list_xattrs(c) = EOPNOTSUPP",
            "close(c)",
            "create_at(/e, .c.*.tmp, 0o600) = ok",
            "lock(.c.*.tmp, wait=false) = ok",
            "stat_file(.c.*.tmp) = ok",
            "stat_dir(/e) = ok",
            "write_at(.c.*.tmp, 5 bytes @0) = 5",
            // Commit: each temp that replaces a file is looked at, and its owner
            // and mode changed only where they differ (c already matches)...
            "stat_file(.a.*.tmp) = ok",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o640) = ok",
            "stat_file(.c.*.tmp) = ok",
            // ...one syncfs per filesystem (one here), no per-file fsync...
            "sync_fs(/d) = ok",
            // ...every rename, each temp closed after its rename...
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "rename_at(/d, .b.*.tmp, b) = ok",
            "close(.b.*.tmp)",
            "rename_at(/e, .c.*.tmp, c) = ok",
            "close(.c.*.tmp)",
            // ...and one directory fsync per distinct directory.
            "sync_dir(/d) = ok",
            "sync_dir(/e) = ok",
        ],
    );
    assert_eq!(sim.read_file("/d/b").unwrap(), b"new b");
}

#[test]
fn batch_fsyncs_each_temp_where_syncfs_hides_write_back_errors() {
    // Overlayfs (every container): its syncfs does not report the upper
    // filesystem's write-back errors, so each temp is fsynced through the
    // fd that wrote it, and no syncfs is made. The same on a kernel before
    // 5.8 (syncfs reported no write-back error at all).
    for (fs_type, kernel) in [(0x794C_7630, (6, 1)), (0xEF53, (5, 7))] {
        let sim = two_dirs();
        sim.set_root_fs_type(fs_type);
        sim.set_kernel_version(kernel.0, kernel.1);
        let mut batch = sim.batch(&Options::new());
        batch.write("/d/b", b"new b").unwrap();
        batch.write("/e/d", b"new d").unwrap();
        batch.commit().unwrap();
        let trace = sim.trace_lines();
        assert_eq!(
            trace[15..],
            [
                "sync_file(.b.*.tmp) = ok",
                "sync_file(.d.*.tmp) = ok",
                "rename_at(/d, .b.*.tmp, b) = ok",
                "close(.b.*.tmp)",
                "rename_at(/e, .d.*.tmp, d) = ok",
                "close(.d.*.tmp)",
                "sync_dir(/d) = ok",
                "sync_dir(/e) = ok",
            ],
            "{fs_type:#x} {kernel:?}: {trace:#?}"
        );
    }
}

#[test]
fn unnamed_temp_is_linked_under_a_temp_name_then_renamed() {
    let sim = two_dirs();
    let mut opts = Options::new();
    opts.unnamed_temp(true);
    sim.write("/d/a", b"new a", &opts).unwrap();
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "stat_dir(/d) = ok",
            "open_read_at(/d, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_unnamed(/d, 0o600) = ok",
            "lock((unnamed), wait=false) = ok",
            "write_at((unnamed), 5 bytes @0) = 5",
            "stat_file((unnamed)) = ok",
            "set_owner((unnamed), 1234, 5678) = ok",
            "set_mode((unnamed), 0o640) = ok",
            // No name while writing; at commit a temp name first (linkat
            // cannot replace), so the fsync covers an inode with a name
            // (btrfs needs that), then the ordinary atomic rename.
            "link_unnamed((unnamed), /d, .a.*.tmp) = ok",
            "sync_file((unnamed)) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close((unnamed))",
            "sync_dir(/d) = ok",
        ],
    );
}

#[test]
fn unnamed_temp_create_new_links_a_temp_name_then_renames_without_replacing() {
    let sim = two_dirs();
    let mut opts = Options::new();
    opts.unnamed_temp(true).create_new(true);
    sim.write("/d/b", b"new b", &opts).unwrap();
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, b) = ENOENT",
            "create_unnamed(/d, 0o666) = ok",
            "lock((unnamed), wait=false) = ok",
            "write_at((unnamed), 5 bytes @0) = 5",
            // Never a name for unsynced data at the target: a temp name,
            // the fsync, then RENAME_NOREPLACE as for a named temp.
            "link_unnamed((unnamed), /d, .b.*.tmp) = ok",
            "sync_file((unnamed)) = ok",
            "rename_noreplace_at(/d, .b.*.tmp, b) = ok",
            "close((unnamed))",
            "sync_dir(/d) = ok",
        ],
    );
}

#[test]
fn unnamed_temp_falls_back_to_a_named_temp_without_o_tmpfile() {
    let sim = two_dirs();
    sim.set_tmpfile(false);
    let mut opts = Options::new();
    opts.unnamed_temp(true);
    sim.write("/d/a", b"new a", &opts).unwrap();
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "stat_dir(/d) = ok",
            "open_read_at(/d, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_unnamed(/d, 0o600) = EOPNOTSUPP",
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "stat_file(.a.*.tmp) = ok",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o640) = ok",
            "sync_file(.a.*.tmp) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
    );
}

#[test]
fn backup_links_the_old_file_and_renames_it_over_the_backup_before_the_main_rename() {
    let sim = two_dirs();
    let mut opts = Options::new();
    opts.backup(true);
    sim.write("/d/a", b"new a", &opts).unwrap();
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "stat_dir(/d) = ok",
            "open_read_at(/d, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "stat_file(.a.*.tmp) = ok",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o640) = ok",
            "sync_file(.a.*.tmp) = ok",
            "link_at(/d, a, .a~.*.tmp) = ok",
            "rename_at(/d, .a~.*.tmp, a~) = ok",
            // The backup's name is durable before the old name is taken:
            // the old version is under one of the two names after any crash.
            "sync_dir(/d) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
    );
    assert_eq!(sim.read_file("/d/a~").unwrap(), b"old a");
    assert_eq!(sim.read_file("/d/a").unwrap(), b"new a");
}

#[test]
fn update_locks_the_directory_and_looks_again_before_reading() {
    let sim = two_dirs();
    sim.update("/d/a", &Options::new(), |old| {
        let mut new = old.expect("/d/a exists").to_vec();
        new.extend_from_slice(b"+");
        Ok(new)
    })
    .unwrap();
    assert_trace(
        &sim,
        &[
            "open_dir(/d) = ok",
            "stat_at(/d, a) = ok",
            "dir_identity(/d) = ok",
            "lock_dir(/d) = ok",
            // Another updater may have replaced the file before we got the lock.
            "stat_at(/d, a) = ok",
            "open_read_at(/d, a) = ok",
            "read_at(a, 65536 bytes @0) = 5",
            "read_at(a, 65536 bytes @5) = 0",
            "close(a)",
            "stat_dir(/d) = ok",
            "open_read_at(/d, a) = ok",
            "stat_file(a) = ok",
            "list_xattrs(a) = EOPNOTSUPP",
            "close(a)",
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "stat_file(.a.*.tmp) = ok",
            "write_at(.a.*.tmp, 6 bytes @0) = 6",
            "stat_file(.a.*.tmp) = ok",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o640) = ok",
            "sync_file(.a.*.tmp) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
    );
    assert_eq!(sim.read_file("/d/a").unwrap(), b"old a+");
}

#[test]
fn update_of_a_missing_file_reads_nothing() {
    let sim = two_dirs();
    sim.update("/d/b", &Options::new(), |old| {
        assert_eq!(old, None);
        Ok(b"first".to_vec())
    })
    .unwrap();
    let trace = sim.trace_lines();
    assert_eq!(
        trace[..6],
        [
            "open_dir(/d) = ok",
            "stat_at(/d, b) = ENOENT",
            "dir_identity(/d) = ok",
            "lock_dir(/d) = ok",
            "stat_at(/d, b) = ENOENT",
            "create_at(/d, .b.*.tmp, 0o666) = ok",
        ],
        "{trace:#?}"
    );
}

#[test]
fn backup_that_already_is_the_old_file_leaves_no_temp_link() {
    // Found by the property tests: a crash (even kill -9) between the
    // backup's rename and the main rename leaves `a~` and `a` as two names
    // of one file. The next backup's rename of its temp link onto `a~` is
    // then a no-op (rename(2) on two links to one inode), and the temp
    // link stayed behind after Ok.
    use crate::sys::Sys;
    let sim = two_dirs();
    let d = sim.open_dir(std::path::Path::new("/d")).unwrap();
    sim.link_at(&d, "a".as_ref(), "a~".as_ref()).unwrap();
    sim.sync_all();
    let mut opts = Options::new();
    opts.backup(true);
    sim.write("/d/a", b"new a", &opts).unwrap();
    assert_eq!(
        sim.list_dir("/d").unwrap(),
        ["a", "a~"],
        "{:#?}",
        sim.trace_lines()
    );
    assert_eq!(sim.read_file("/d/a~").unwrap(), b"old a");
    assert_eq!(sim.read_file("/d/a").unwrap(), b"new a");
    // The file has two names, so the backup looks first, and finds its
    // work done.
    let trace = sim.trace_lines();
    assert_eq!(
        trace[16..],
        [
            "sync_file(.a.*.tmp) = ok",
            "stat_at(/d, a~) = ok",
            "rename_at(/d, .a.*.tmp, a) = ok",
            "close(.a.*.tmp)",
            "sync_dir(/d) = ok",
        ],
        "{trace:#?}"
    );
}

#[test]
fn batch_keeps_fsyncing_directories_after_one_fails_and_names_it() {
    // issue 10: /d's fsync fails; /e is still fsynced, and the error
    // names /d and lists every replaced file.
    let sim = two_dirs();
    sim.fail_first(Call::SyncDir, errnos::EIO);
    let mut batch = sim.batch(&Options::new());
    batch.write("/d/a", b"new a").unwrap();
    batch.write("/e/c", b"new c").unwrap();
    batch.write("/d/b", b"new b").unwrap();
    let err = batch.commit().unwrap_err();
    let trace = sim.trace_lines();
    let n = trace.len();
    assert_eq!(
        trace[n - 2..],
        ["sync_dir(/d) = EIO (injected)", "sync_dir(/e) = ok"],
        "{trace:#?}"
    );
    assert_eq!(err.failed_dirs(), [std::path::PathBuf::from("/d")]);
    let unsynced: Vec<_> = err
        .unsynced()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(unsynced, ["/d/a", "/d/b"], "{err}");
    assert_eq!(err.replaced().len(), 3, "{err}");
    assert!(err.target_replaced(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("fsync failed for directory /d, so the durability of /d/a, /d/b is unknown"),
        "{text}"
    );
}

#[test]
fn sweep_leaves_the_closed_temps_of_a_live_batch_alone() {
    // issue 10: a batch closes temps past its open-temp limit (they lose
    // their flock); its locked anchor keeps `sweep` off them.
    let sim = two_dirs();
    let mut batch = sim.batch(&Options::new());
    batch.set_open_temps_max(1);
    for name in ["x", "y", "z"] {
        batch.write(format!("/d/{name}"), name.as_bytes()).unwrap();
    }
    let temps = |sim: &SimFs| {
        sim.list_dir("/d")
            .unwrap()
            .into_iter()
            .filter(|n| crate::temp_name::is_temp_name(n))
            .count()
    };
    // Three temps and one anchor.
    assert_eq!(temps(&sim), 4);
    assert_eq!(sim.sweep("/d").unwrap(), 0);
    assert_eq!(temps(&sim), 4);
    batch.commit().unwrap();
    assert_eq!(temps(&sim), 0, "the anchor is gone after the commit");
    for name in ["x", "y", "z"] {
        assert_eq!(
            sim.read_file(format!("/d/{name}")).unwrap(),
            name.as_bytes()
        );
    }
    // A dead batch's anchor (nobody holds its lock) protects nothing and
    // is swept like any stale temp.
    sim.put_file(
        "/d/.crashsafe-batch.crashsafe-aaaaaaaaaaaa.tmp",
        b"",
        0o600,
        0,
        0,
    )
    .unwrap();
    sim.put_file("/d/.x.crashsafe-bbbbbbbbbbbb.tmp", b"half", 0o600, 0, 0)
        .unwrap();
    assert_eq!(sim.sweep("/d").unwrap(), 2);
}

//! Tier 2: golden traces. The exact syscall sequence of each protocol path,
//! with temp names masked (`.a.*.tmp`). A change to the order of the
//! durability steps shows up here first, as a readable diff.

use std::io::Write;

use crate::options::Durability;
use crate::sim::check::{Case, Reach};
use crate::sim::{Call, SimFs, errnos};

fn case(present: bool, durability: Durability, create_new: bool, reach: Reach) -> Case {
    Case {
        present,
        durability,
        create_new,
        reach,
        payload_len: 5,
        streaming: false,
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
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o4750) = ok",
            "list_xattrs(/d/a) = EOPNOTSUPP",
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
            "read_link_at(/d, a) = ok",
            "open_dir(/d/../e) = ok",
            "stat_at(/d/../e, a) = ok",
            "create_at(/d/../e, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o4750) = ok",
            "list_xattrs(/d/../e/a) = EOPNOTSUPP",
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
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o4750) = ok",
            "list_xattrs(/d/a) = EOPNOTSUPP",
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
        sim.trace_lines()[4],
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
            "create_at(/d, .a.*.tmp, 0o600) = ok",
            "lock(.a.*.tmp, wait=false) = ok",
            "write_at(.a.*.tmp, 5 bytes @0) = 5",
            "set_owner(.a.*.tmp, 1234, 5678) = ok",
            "set_mode(.a.*.tmp, 0o4750) = ok",
            "list_xattrs(/d/a) = EOPNOTSUPP",
            "sync_file(.a.*.tmp) = EIO (injected)",
            "close(.a.*.tmp)",
            "unlink_at(/d, .a.*.tmp) = ok",
        ],
    );
}

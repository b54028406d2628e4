//! Tier 1: the oracle is right. These drive the simulator's syscalls by hand
//! (not through the protocol) and check what each crash model allows. If
//! these are wrong, every crash test built on the models is worthless.

use std::ffi::OsStr;
use std::path::Path;

use super::{file, images_now, versions};
use crate::sim::check::{Version, version};
use crate::sim::fs::Fs;
use crate::sim::kernel::SimHandle;
use crate::sim::{Budget, Call, Model, SimFs, errnos};
use crate::sys::Sys;

const CONSERVATIVE: Model = Model::Conservative;
const EXT4: Model = Model::Ext4Ordered {
    auto_da_alloc: true,
};
const EXT4_NOAUTO: Model = Model::Ext4Ordered {
    auto_da_alloc: false,
};

const OLD: &[u8] = b"old";
const NEW: &[u8] = b"new content";

/// `/d` with a durable `/d/x` holding "old" (mode 0644, root).
fn with_old() -> SimFs {
    let sim = SimFs::new(7);
    sim.set_identity(0, 0, true);
    sim.mkdir("/d", 0o755).unwrap();
    sim.put_file("/d/x", OLD, 0o644, 0, 0).unwrap();
    sim
}

/// Creates `/d/name` and writes `data` into it, without any sync.
fn create_and_write(sim: &SimFs, dir: &<SimFs as Sys>::Dir, name: &str, data: &[u8]) -> SimHandle {
    let f = sim.create_at(dir, OsStr::new(name), 0o644).unwrap();
    assert_eq!(sim.write_at(&f, data, 0).unwrap(), data.len());
    f
}

fn old() -> Version {
    file(OLD, 0o644, 0, 0)
}

fn new() -> Version {
    file(NEW, 0o644, 0, 0)
}

/// Whether some image holds `path` as a file of length < `len` or with a zero byte.
fn some_torn(images: &[Fs], path: &str, len: usize) -> bool {
    images.iter().any(|fs| match version(fs, Path::new(path)) {
        Version::File { data, .. } => data.len() < len || data.contains(&0),
        _ => false,
    })
}

#[test]
fn an_unsynced_rename_can_be_lost() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let t = create_and_write(&sim, &d, "t", NEW);
    sim.sync_file(&t).unwrap();
    sim.rename_at(&d, OsStr::new("t"), OsStr::new("x")).unwrap();
    for model in [CONSERVATIVE, EXT4, EXT4_NOAUTO] {
        let seen = versions(&images_now(&sim, model), "/d/x");
        assert_eq!(seen, vec![old(), new()], "{model}");
    }
    // A process kill keeps the page cache: only the new version.
    let seen = versions(&images_now(&sim, Model::ProcessCrash), "/d/x");
    assert_eq!(seen, vec![new()]);
}

#[test]
fn a_directory_fsync_keeps_the_rename() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let t = create_and_write(&sim, &d, "t", NEW);
    sim.sync_file(&t).unwrap();
    sim.rename_at(&d, OsStr::new("t"), OsStr::new("x")).unwrap();
    sim.sync_dir(&d).unwrap();
    for model in Model::ALL {
        let images = images_now(&sim, model);
        assert_eq!(versions(&images, "/d/x"), vec![new()], "{model}");
        assert_eq!(versions(&images, "/d/t"), vec![Version::Absent], "{model}");
    }
}

#[test]
fn a_file_fsync_keeps_data_but_not_the_name() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let n = create_and_write(&sim, &d, "n", NEW);
    sim.sync_file(&n).unwrap();
    let images = images_now(&sim, CONSERVATIVE);
    // The name may be lost, but where it survives the data is complete.
    assert_eq!(versions(&images, "/d/n"), vec![Version::Absent, new()]);
    // ext4 commits the name with the fsync (a knob the conservative model lacks).
    assert_eq!(versions(&images_now(&sim, EXT4), "/d/n"), vec![new()]);
    // With the directory synced too, the file is there in full everywhere.
    sim.sync_dir(&d).unwrap();
    for model in Model::ALL {
        assert_eq!(
            versions(&images_now(&sim, model), "/d/n"),
            vec![new()],
            "{model}"
        );
    }
}

#[test]
fn without_a_file_fsync_a_synced_name_may_have_no_data() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let _n = create_and_write(&sim, &d, "n", &[7u8; 1300]);
    sim.sync_dir(&d).unwrap();
    let images = images_now(&sim, CONSERVATIVE);
    let seen = versions(&images, "/d/n");
    assert!(!seen.contains(&Version::Absent));
    // Empty (inode never written, mode 0), and zero-filled (size without data).
    assert!(seen.contains(&file(b"", 0, 0, 0)));
    assert!(seen.contains(&file(b"", 0o644, 0, 0)));
    assert!(some_torn(&images, "/d/n", 1300));
    assert!(seen.iter().any(|v| matches!(v, Version::File { data, .. } if data.len() == 1300 && data.iter().filter(|&&b| b == 0).count() == 512)));
}

#[test]
fn conservative_can_leave_a_renamed_but_empty_file() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let _t = create_and_write(&sim, &d, "t", NEW);
    sim.rename_at(&d, OsStr::new("t"), OsStr::new("x")).unwrap();
    let seen = versions(&images_now(&sim, CONSERVATIVE), "/d/x");
    assert!(seen.contains(&old()));
    assert!(seen.contains(&new()));
    assert!(seen.contains(&file(b"", 0o644, 0, 0)), "{seen:?}");
}

#[test]
fn ext4_auto_da_alloc_protects_a_rename_over_an_existing_file() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let _t = create_and_write(&sim, &d, "t", NEW);
    sim.rename_at(&d, OsStr::new("t"), OsStr::new("x")).unwrap();
    // §2.3 item 2: old, or complete new.
    assert_eq!(
        versions(&images_now(&sim, EXT4), "/d/x"),
        vec![old(), new()]
    );
    // Without auto_da_alloc the renamed file can come back empty.
    let seen = versions(&images_now(&sim, EXT4_NOAUTO), "/d/x");
    assert!(seen.contains(&file(b"", 0o644, 0, 0)), "{seen:?}");
}

#[test]
fn ext4_renaming_to_a_new_name_without_fsync_can_give_size_zero() {
    // §2.3 item 1: auto_da_alloc does not apply when the target was absent.
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let _t = create_and_write(&sim, &d, "t", NEW);
    sim.rename_at(&d, OsStr::new("t"), OsStr::new("fresh"))
        .unwrap();
    let seen = versions(&images_now(&sim, EXT4), "/d/fresh");
    assert!(seen.contains(&file(b"", 0o644, 0, 0)), "{seen:?}");
    // ext4 never tears or zero-fills: a file has a prefix of its writes.
    assert!(seen.iter().all(|v| match v {
        Version::File { data, .. } => data.is_empty() || data == NEW,
        _ => *v == Version::Absent,
    }));
}

#[test]
fn ext4_fsync_of_the_temp_before_the_rename_leaves_old_or_new() {
    // §2.3 item 3: fsync(temp), rename, crash before the next commit.
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let t = create_and_write(&sim, &d, "t", NEW);
    sim.sync_file(&t).unwrap();
    sim.rename_at(&d, OsStr::new("t"), OsStr::new("x")).unwrap();
    assert_eq!(
        versions(&images_now(&sim, EXT4_NOAUTO), "/d/x"),
        vec![old(), new()]
    );
}

#[test]
fn metadata_is_a_prefix_on_ext4_but_not_in_the_conservative_model() {
    // create a, create b, crash: ext4 never shows b without a.
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let _a = create_and_write(&sim, &d, "a", b"");
    let _b = create_and_write(&sim, &d, "b", b"");
    let only_b = |fs: &Fs| {
        version(fs, Path::new("/d/a")) == Version::Absent
            && version(fs, Path::new("/d/b")) != Version::Absent
    };
    assert!(!images_now(&sim, EXT4).iter().any(only_b));
    assert!(images_now(&sim, CONSERVATIVE).iter().any(only_b));
}

#[test]
fn a_failed_fsync_drops_the_data_and_the_retry_succeeds() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let t = create_and_write(&sim, &d, "t", NEW);
    sim.fail_first(Call::SyncFile, errnos::EIO);
    assert_eq!(
        sim.sync_file(&t).unwrap_err().raw_os_error(),
        Some(errnos::EIO)
    );
    // The fsyncgate trap: the second fsync reports success.
    sim.sync_file(&t).unwrap();
    sim.rename_at(&d, OsStr::new("t"), OsStr::new("x")).unwrap();
    sim.sync_dir(&d).unwrap();
    // The process still reads the new bytes...
    assert_eq!(sim.read_file("/d/x").unwrap(), NEW);
    // ...but no image has them.
    for model in [CONSERVATIVE, EXT4, EXT4_NOAUTO] {
        let seen = versions(&images_now(&sim, model), "/d/x");
        assert_eq!(seen, vec![file(b"", 0o644, 0, 0)], "{model}");
    }
}

#[test]
fn a_process_crash_keeps_everything_and_matches_the_volatile_view() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let t = create_and_write(&sim, &d, "t", NEW);
    sim.close(t);
    sim.rename_at(&d, OsStr::new("t"), OsStr::new("x")).unwrap();
    let _u = create_and_write(&sim, &d, "u", b"unnamed soon");
    sim.unlink_at(&d, OsStr::new("u")).unwrap();
    let images = images_now(&sim, Model::ProcessCrash);
    assert_eq!(images.len(), 1);
    // Replaying the log on the base state gives the volatile view (after
    // the recovery step drops the open but unnamed file).
    let mut volatile = sim.lock().volatile.clone();
    volatile.fsck();
    assert_eq!(images[0], volatile);
}

#[test]
fn crash_points_include_points_inside_a_call() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let _t = create_and_write(&sim, &d, "t", &[1u8; 1300]);
    let labels: Vec<String> = sim.crash_points().into_iter().map(|p| p.label).collect();
    assert_eq!(
        labels,
        [
            "start",
            "inside #1 create_at (1/2 effects)",
            "after #1 create_at",
            "inside #2 write_at (1/4 effects)",
            "inside #2 write_at (2/4 effects)",
            "inside #2 write_at (3/4 effects)",
            "after #2 write_at",
        ]
    );
}

#[test]
fn sampling_beyond_the_budget_is_bounded_and_replayable() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    for i in 0..8 {
        let _f = create_and_write(&sim, &d, &format!("f{i}"), &[1u8; 1300]);
    }
    let budget = Budget {
        exhaustive_max: 1 << 10,
        samples: 50,
        seed: 99,
    };
    let run = || {
        let mut seen = Vec::new();
        let end = sim.effects();
        let stats = sim.explore(CONSERVATIVE, end, &budget, &mut |_, fs| {
            seen.push(fs.clone());
            true
        });
        (stats, seen)
    };
    let (stats, first) = run();
    assert_eq!(stats.sampled_points, 1);
    assert_eq!(stats.images, 52);
    let (_, second) = run();
    assert_eq!(first, second, "same seed, same images");
}

#[test]
fn syscalls_return_linux_errors() {
    let sim = with_old();
    sim.symlink("/d/loop", "loop").unwrap();
    sim.symlink("/d/up", "..").unwrap();
    let err = |r: std::io::Result<<SimFs as Sys>::Dir>| r.unwrap_err().raw_os_error().unwrap();
    assert_eq!(err(sim.open_dir(Path::new("/missing"))), errnos::ENOENT);
    assert_eq!(
        err(sim.open_dir(Path::new("/d/x"))),
        rustix::io::Errno::NOTDIR.raw_os_error()
    );
    assert_eq!(
        err(sim.open_dir(Path::new("/d/x/y"))),
        rustix::io::Errno::NOTDIR.raw_os_error()
    );
    assert_eq!(
        err(sim.open_dir(Path::new("/d/loop"))),
        rustix::io::Errno::LOOP.raw_os_error()
    );
    let d = sim.open_dir(Path::new("/d/up/d")).unwrap();
    let e = sim.create_at(&d, OsStr::new("x"), 0o600).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    // O_EXCL refuses a dangling symlink too.
    sim.symlink("/d/dangling", "nowhere").unwrap();
    let e = sim
        .create_at(&d, OsStr::new("dangling"), 0o600)
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    let e = sim.read_link_at(&d, OsStr::new("x")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errnos::EINVAL));
    let e = sim
        .rename_noreplace_at(&d, OsStr::new("loop"), OsStr::new("x"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errnos::EEXIST));
    let e = sim.unlink_at(&d, OsStr::new("nothing")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errnos::ENOENT));
    // An ordinary user cannot create in a root-owned 0755 directory, but
    // lookups come first: a taken name is EEXIST, a missing one ENOENT.
    sim.set_identity(1000, 1000, false);
    let e = sim.create_at(&d, OsStr::new("new"), 0o600).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errnos::EACCES));
    let e = sim.create_at(&d, OsStr::new("x"), 0o600).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errnos::EEXIST));
    let e = sim.unlink_at(&d, OsStr::new("nothing")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errnos::ENOENT));
    let e = sim.unlink_at(&d, OsStr::new("x")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errnos::EACCES));
    let e = sim
        .rename_at(&d, OsStr::new("nothing"), OsStr::new("x"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errnos::ENOENT));
}

#[test]
fn chown_clears_setuid_and_an_unlinked_open_file_lives_on() {
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let f = sim.create_at(&d, OsStr::new("s"), 0o4755).unwrap();
    sim.set_owner(&f, 5, 6).unwrap();
    assert_eq!(sim.stat_file(&f).unwrap().mode, 0o755);
    sim.unlink_at(&d, OsStr::new("s")).unwrap();
    assert_eq!(sim.write_at(&f, b"still open", 0).unwrap(), 10);
    assert_eq!(sim.stat_file(&f).unwrap().nlink, 0);
    sim.close(f);
    assert!(sim.lock().volatile.inodes.len() == 3, "root, /d, /d/x");
}

#[test]
fn a_recovered_state_never_reuses_an_inode_number() {
    // Regression: fsck gave a dangling name an inode without advancing the
    // inode counter, and the next create on the recovered state reused it.
    let sim = with_old();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let _t = sim.create_at(&d, OsStr::new("t"), 0o644).unwrap();
    sim.sync_dir(&d).unwrap();
    let image = sim
        .crash_images(CONSERVATIVE)
        .into_iter()
        .find(|i| i.stat("/d/t").is_ok_and(|st| st.mode == 0))
        .expect("the name without its inode");
    let d = image.open_dir(Path::new("/d")).unwrap();
    let _u = image.create_at(&d, OsStr::new("u"), 0o640).unwrap();
    assert_eq!(image.stat("/d/u").unwrap().mode, 0o640 & !0o022);
    assert_eq!(image.stat("/d/t").unwrap().mode, 0);
}

// ---- sweep, on the simulator ----

/// A name with the temp mark `.NAME.crashsafe-RANDOM.tmp`.
const TEMP: &str = ".x.crashsafe-abcdefghijkl.tmp";

fn sweep_setup() -> SimFs {
    let sim = with_old();
    assert!(crate::temp_name::is_temp_name(OsStr::new(TEMP)));
    sim
}

#[test]
fn sweep_removes_an_unlocked_temp_shaped_regular_file() {
    let sim = sweep_setup();
    sim.put_file(format!("/d/{TEMP}"), b"left by a dead writer", 0o600, 0, 0)
        .unwrap();
    assert_eq!(sim.sweep("/d").unwrap(), 1);
    let names = sim.list_dir("/d").unwrap();
    assert_eq!(names, ["x"]);
    // And nothing is left to do.
    assert_eq!(sim.sweep("/d").unwrap(), 0);
}

#[test]
fn sweep_never_removes_a_symlink_a_directory_or_another_name() {
    let sim = sweep_setup();
    // A temp-shaped symlink (to a file that must survive too), a
    // temp-shaped directory, and regular files without the temp shape.
    sim.symlink(format!("/d/{TEMP}"), "x").unwrap();
    sim.mkdir("/d/.y.crashsafe-abcdefghijkl.tmp", 0o755)
        .unwrap();
    for name in [
        "a.tmp",
        ".x.tmp",
        // Look-alikes: the old temp shape, which ordinary files can have.
        ".notes.sessionstore.tmp",
        ".x.abcdefghijkl.tmp",
        ".x.crashsafe-ABCDEFGHIJKL.tmp",
        ".x.crashsafe-abcdefghijk.tmp",
        ".x.crashsafe.abcdefghijkl.tmp",
        "x~",
    ] {
        sim.put_file(format!("/d/{name}"), b"keep", 0o644, 0, 0)
            .unwrap();
    }
    let before = sim.list_dir("/d").unwrap();
    assert_eq!(sim.sweep("/d").unwrap(), 0);
    assert_eq!(sim.list_dir("/d").unwrap(), before);
    assert_eq!(sim.read_file("/d/x").unwrap(), OLD);
}

#[test]
fn sweep_never_removes_a_live_writers_temp_but_a_dead_ones_at_once() {
    let sim = sweep_setup();
    // A writer in progress holds the lock on its temp.
    let mut file = sim.open("/d/x", &crate::options::Options::new()).unwrap();
    std::io::Write::write_all(&mut file, NEW).unwrap();
    assert_eq!(sim.sweep("/d").unwrap(), 0);
    // The sweep's own attempt to lock it failed, as flock does.
    let trace = sim.trace_lines();
    assert!(
        trace
            .iter()
            .any(|l| l == "lock(.x.*.tmp, wait=false) = EWOULDBLOCK"),
        "{trace:#?}"
    );
    file.commit().unwrap();
    assert_eq!(sim.read_file("/d/x").unwrap(), NEW);
    // A dead writer's temp, just written: removed at once (no age rule).
    sim.put_file(format!("/d/{TEMP}"), b"", 0o600, 0, 0)
        .unwrap();
    assert_eq!(sim.sweep("/d").unwrap(), 1);
}

#[test]
fn sweep_cleans_up_after_a_crashed_writer() {
    // A power cut after the temp was written: every image that kept the
    // temp's name is swept clean, and the target is untouched.
    let sim = sweep_setup();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    let _t = create_and_write(&sim, &d, TEMP, NEW);
    sim.sync_dir(&d).unwrap();
    for model in Model::ALL {
        for image in sim.crash_images(model) {
            assert_eq!(image.list_dir("/d").unwrap().len(), 2, "{model}");
            assert_eq!(image.sweep("/d").unwrap(), 1, "{model}");
            assert_eq!(image.list_dir("/d").unwrap(), ["x"], "{model}");
            assert_eq!(image.read_file("/d/x").unwrap(), OLD, "{model}");
        }
    }
}

//! Tier 6: negative controls. Each deliberately broken protocol variant
//! (selected through `Options::broken`, in the real code path) must be
//! caught by the same checks that pass for the real protocol. The table
//! below states, per variant and model, the first case and crash point
//! where a crash image breaks an invariant; `None` means the model cannot
//! see that mistake (and says why).
//!
//! This is the proof that the crash tests can fail. Beyond the table: a
//! batch that renames before its flush; a failed directory fsync reported
//! as an early failure (caught by the fault tier); a check-then-rename
//! `create_new` (caught by two interleaved writers); the table's variants
//! on `O_TMPFILE` temps; a backup check that forgets the earlier backup.

use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::options::Options;
use crate::sim::check::{
    Backup, BatchCase, Case, Violation, check_images, explore_batch, prepare_for, run_case_with,
    sweep,
};
use crate::sim::{Broken, Budget, Call, Model, SimFs, errnos};
use crate::temp_name::is_temp_name;

const CONSERVATIVE: Model = Model::Conservative;
const EXT4: Model = Model::Ext4Ordered {
    auto_da_alloc: true,
};
const EXT4_NOAUTO: Model = Model::Ext4Ordered {
    auto_da_alloc: false,
};
const KILL: Model = Model::ProcessCrash;

/// Where a variant is first caught: (case, crash point, what it showed).
type Found = Option<(&'static str, &'static str, &'static str)>;

/// (variant, model, first case caught, crash point, what the image showed)
type Expectation = (Broken, Model, Found);

#[rustfmt::skip]
const EXPECTED: &[Expectation] = &[
    // The rename reaches the disk before the inode: an empty file, mode 0.
    (Broken::NoFileSync, CONSERVATIVE, Some(("absent file Durable 0B", "after #5 rename_at", "mode 0o0"))),
    // ext4 journals the inode with the rename, but delayed allocation
    // leaves it empty; auto_da_alloc does not help a new name.
    (Broken::NoFileSync, EXT4, Some(("absent file Durable 1B", "after #6 rename_at", "file of 0 bytes"))),
    (Broken::NoFileSync, EXT4_NOAUTO, Some(("absent file Durable 1B", "after #6 rename_at", "file of 0 bytes"))),
    // kill -9 keeps the page cache: a missing fsync is invisible.
    (Broken::NoFileSync, KILL, None),
    // Ok was returned, but the rename is still only in memory.
    (Broken::NoDirSync, CONSERVATIVE, Some(("absent file Durable 0B", "after #6 rename_at", "after Ok (Durable)"))),
    (Broken::NoDirSync, EXT4, Some(("absent file Durable 0B", "after #6 rename_at", "after Ok (Durable)"))),
    (Broken::NoDirSync, EXT4_NOAUTO, Some(("absent file Durable 0B", "after #6 rename_at", "after Ok (Durable)"))),
    (Broken::NoDirSync, KILL, None),
    // New data under the temp's 0600 root:root: the chown/chmod after the
    // fsync had not reached the disk when the rename did.
    (Broken::ModeAfterSync, CONSERVATIVE, Some(("present file Durable 0B", "after #14 rename_at", "mode 0o600 owner 0:0"))),
    // ext4 journals metadata in program order and the chmod precedes the
    // rename: invisible there, which is why the conservative model exists.
    (Broken::ModeAfterSync, EXT4, None),
    (Broken::ModeAfterSync, EXT4_NOAUTO, None),
    (Broken::ModeAfterSync, KILL, None),
    // As for no file fsync: the rename lands before the data.
    (Broken::RenameBeforeSync, CONSERVATIVE, Some(("absent file Durable 0B", "after #5 rename_at", "mode 0o0"))),
    (Broken::RenameBeforeSync, EXT4, Some(("absent file Durable 1B", "after #6 rename_at", "file of 0 bytes"))),
    (Broken::RenameBeforeSync, EXT4_NOAUTO, Some(("absent file Durable 1B", "after #6 rename_at", "file of 0 bytes"))),
    (Broken::RenameBeforeSync, KILL, None),
    // Between the unlink and the rename the name is gone, even for kill -9.
    (Broken::UnlinkThenRename, CONSERVATIVE, Some(("absent symlink-replaced Durable 0B", "after #6 unlink_at", "neither old nor new: absent"))),
    (Broken::UnlinkThenRename, EXT4, Some(("absent symlink-replaced Durable 0B", "after #6 unlink_at", "neither old nor new: absent"))),
    (Broken::UnlinkThenRename, EXT4_NOAUTO, Some(("absent symlink-replaced Durable 0B", "after #6 unlink_at", "neither old nor new: absent"))),
    (Broken::UnlinkThenRename, KILL, Some(("absent symlink-replaced Durable 0B", "after #6 unlink_at", "neither old nor new: absent"))),
    // The first fsync fails with EIO (pages dropped), the retry returns 0,
    // and the rename publishes a file whose data never reached the disk.
    (Broken::RetrySync, CONSERVATIVE, Some(("absent file Durable 1B", "after #8 rename_at", "neither old nor new: file of 0 bytes"))),
    (Broken::RetrySync, EXT4, Some(("absent file Durable 1B", "after #8 rename_at", "neither old nor new: file of 0 bytes"))),
    (Broken::RetrySync, EXT4_NOAUTO, Some(("absent file Durable 1B", "after #8 rename_at", "neither old nor new: file of 0 bytes"))),
    // kill -9 keeps the pages the failed fsync could not write.
    (Broken::RetrySync, KILL, None),
];

fn check(variant: Broken) {
    let cases = Case::suite();
    for &(v, model, expected) in EXPECTED.iter().filter(|e| e.0 == variant) {
        let result = sweep(Some(v), model, &cases, &Budget::default());
        let found = result.first_crash.as_ref();
        eprintln!(
            "{v:?} in {model}: {} images, {} violations; first crash violation: {}",
            result.report.stats.images,
            result.report.violations,
            found.map_or("none".to_string(), |(c, x)| format!("{c}: {x}"))
        );
        match (expected, found) {
            (None, None) => {}
            (Some((case, point, shows)), Some((c, x))) => {
                assert_eq!(c.to_string(), case, "{v:?} in {model}");
                assert_eq!(x.point, point, "{v:?} in {model}");
                assert!(x.message.contains(shows), "{v:?} in {model}: {}", x.message);
            }
            (e, f) => panic!("{v:?} in {model}: expected {e:?}, found {f:?}"),
        }
    }
}

#[test]
fn no_file_sync_is_caught() {
    check(Broken::NoFileSync);
}

#[test]
fn no_dir_sync_is_caught() {
    check(Broken::NoDirSync);
}

#[test]
fn mode_after_sync_is_caught() {
    check(Broken::ModeAfterSync);
}

#[test]
fn rename_before_sync_is_caught() {
    check(Broken::RenameBeforeSync);
}

#[test]
fn unlink_then_rename_is_caught() {
    check(Broken::UnlinkThenRename);
}

#[test]
fn retry_after_a_failed_fsync_is_caught() {
    check(Broken::RetrySync);
    // It is also caught without any crash: the trace shows a rename after
    // a failed fsync.
    let case = Case::suite()[0].with_broken(Some(Broken::RetrySync));
    let (sim, _, result) = crate::sim::check::run_case_with(
        &case,
        1,
        crate::sim::check::prepare_for(Some(Broken::RetrySync)),
    );
    assert!(result.is_ok());
    let v = crate::sim::check::check_trace(&sim).expect("caught by the trace check");
    assert!(v.message.contains("rename_at"), "{v}");
}

#[test]
fn the_real_protocol_passes_the_same_checks() {
    // The control for the controls: same cases, same checks, no variant.
    let cases = Case::suite();
    for model in Model::ALL {
        let result = sweep(None, model, &cases, &Budget::default());
        assert_eq!(
            result.report.violations, 0,
            "{model}: {:?}",
            result.report.first
        );
    }
}

// ---- batches ----

/// As the batch crash tier: temps-only points sampled, the rest enumerated.
const BATCH_BUDGET: Budget = Budget {
    exhaustive_max: 1 << 9,
    samples: 64,
    seed: 0x5eed,
};

/// The first batch case and violation (volatile, trace or crash image).
fn first_batch_violation(variant: Broken, model: Model) -> Option<(String, Violation)> {
    BatchCase::suite().iter().find_map(|case| {
        let report = explore_batch(&case.with_broken(Some(variant)), model, &BATCH_BUDGET);
        report.first.map(|v| (case.to_string(), v))
    })
}

#[test]
fn batch_renaming_before_the_flush_is_caught() {
    // The batch skips its syncfs and each temp is fsynced after its
    // rename: the first rename can reach the disk before the data.
    #[rustfmt::skip]
    let expected: [(Model, Found); 4] = [
        (CONSERVATIVE, Some(("batch /d/a- /d/b- Durable 600B", "after #15 rename_at", "mode 0o0"))),
        (EXT4, Some(("batch /d/a- /d/b- Durable 600B", "after #15 rename_at", "file of 0 bytes"))),
        (EXT4_NOAUTO, Some(("batch /d/a- /d/b- Durable 600B", "after #15 rename_at", "file of 0 bytes"))),
        // kill -9 keeps the page cache.
        (KILL, None),
    ];
    for (model, want) in expected {
        let found = first_batch_violation(Broken::RenameBeforeSync, model);
        match (want, &found) {
            (None, None) => {}
            (Some((case, point, shows)), Some((c, v))) => {
                assert_eq!(c, case, "{model}");
                assert_eq!(v.model, Some(model), "{model}: {v}");
                assert_eq!(v.point, point, "{model}: {v}");
                assert!(v.message.contains("neither old nor new"), "{model}: {v}");
                assert!(v.message.contains(shows), "{model}: {v}");
            }
            _ => panic!("{model}: expected {want:?}, found {found:?}"),
        }
    }
    // The control, the real batch passing the same checks on the same
    // cases, is the exhaustive tier (`exhaustive::batch_*`).
}

// ---- issue 10: a batch that groups directories by path string ----

#[test]
fn a_batch_grouping_directories_by_path_string_is_caught() {
    // One path string, two directories (`chdir` between relative writes,
    // a symlinked directory repointed, on one or two filesystems): the
    // variant never fsyncs the second directory (nor, on a second
    // filesystem, syncs it), so a Durable file can be lost after `Ok`.
    let mut caught = Vec::new();
    for case in BatchCase::identity_suite() {
        let broken = case.with_broken(Some(Broken::GroupByPath));
        let report = explore_batch(&broken, CONSERVATIVE, &BATCH_BUDGET);
        if let Some(v) = report.first {
            caught.push(format!("{broken}: {v}"));
        }
    }
    let shows = |what: &str| caught.iter().any(|c| c.contains(what));
    assert!(shows("chdir"), "{caught:#?}");
    assert!(shows("via-symlink"), "{caught:#?}");
    assert!(shows("two-fs chdir"), "{caught:#?}");
    // The second directory's Durable file is lost after Ok; on a second
    // filesystem that was never synced it is even torn (zero-filled).
    assert!(
        caught
            .iter()
            .all(|c| c.contains("after Ok (Durable)") || c.contains("neither old nor new")),
        "{caught:#?}"
    );
    // Absolute paths to distinct directories are grouped right either
    // way: only the aliased cases are caught.
    assert!(
        caught
            .iter()
            .all(|c| c.contains("chdir") || c.contains("via-symlink")),
        "{caught:#?}"
    );
}

#[test]
fn mixed_durability_in_one_directory_fsyncs_it() {
    // The mixed options: `Consistent` first, then `Durable` in
    // the same directory. The strictest wins: the directory is fsynced.
    // (The code before issue 10 took the first entry's options: no
    // directory fsync, and half the images lost `important`.)
    let case = BatchCase {
        mixed: true,
        ..BatchCase::plain(vec![("/d/a", false), ("/d/b", false)])
    };
    let sim = case.setup(1);
    let mut batch = sim.batch(&case.options());
    let mut consistent = case.options();
    consistent.durability(crate::Durability::Consistent);
    batch.write_with(&consistent, "/d/a", b"cache").unwrap();
    batch.write("/d/b", b"important").unwrap();
    batch.commit().unwrap();
    let syncs = sim
        .trace()
        .iter()
        .filter(|t| t.call == Call::SyncDir)
        .count();
    assert_eq!(syncs, 1, "{:#?}", sim.trace_lines());
    // Every crash image after Ok keeps `important`.
    for image in sim.crash_images(CONSERVATIVE) {
        assert_eq!(image.read_file("/d/b").unwrap(), b"important");
    }
}

// ---- honest errors ----

#[test]
fn a_dir_fsync_error_that_looks_like_an_early_failure_is_caught_by_the_fault_tier() {
    // atomic-write-file's mistake (REFERENCE.md §2.7): the rename is done,
    // but the error says the target was not replaced. The fault tier
    // compares the error's claim with the volatile view.
    let path = super::faults::broken_path(Broken::DirSyncErrorLooksEarly);
    let err = super::faults::run_path(&path).expect_err("the fault tier must catch it");
    assert!(err.contains("#17 sync_dir fails with 5:"), "{err}");
    assert!(
        err.contains("says target_replaced() = false, but the file is file of 1300 bytes"),
        "{err}"
    );
    // Without the fault tier's claim check, the crash images catch it too:
    // kill -9 at the end keeps the renamed file, where an early error
    // promises the old one.
    let case = path.case.clone();
    let (sim, oracle, result) = run_case_with(&case, 1, |sim| {
        sim.fail_first(Call::SyncDir, errnos::EIO);
    });
    assert!(result.is_err_and(|e| !e.target_replaced()));
    let report = check_images(&sim, &oracle, KILL, &Budget::default());
    let v = report.first.expect("caught in the images");
    // The final point: the failed sync_dir added no effect.
    assert_eq!(v.point, "after #15 rename_at", "{v}");
    assert!(
        v.message.contains("after an early error /d/a is not old"),
        "{v}"
    );
}

// ---- no-clobber ----

/// The first writer's result, the second's (if it ran), the file's content.
type Race = (Result<(), Error>, Option<Result<(), Error>>, Vec<u8>);

/// Two `create_new` writers of `/d/a` (absent): the second runs its whole
/// write just before call `n` of the first. Returns the first's result,
/// the second's (if it ran) and the file's content.
fn race(n: usize, first: Option<Broken>) -> Race {
    let sim = SimFs::new(5);
    sim.mkdir("/d", 0o755).unwrap();
    let second: Arc<Mutex<Option<Result<(), Error>>>> = Arc::default();
    let slot = Arc::clone(&second);
    sim.before_call(n, move |sim| {
        let mut opts = Options::new();
        opts.create_new(true);
        *slot.lock().unwrap() = Some(sim.write("/d/a", b"second", &opts));
    });
    let mut opts = Options::new();
    opts.create_new(true).broken(first);
    let result = sim.write("/d/a", b"first", &opts);
    let content = sim.read_file("/d/a").unwrap_or_default();
    let temps: Vec<_> = sim
        .list_dir("/d")
        .unwrap()
        .into_iter()
        .filter(|n| is_temp_name(n))
        .collect();
    assert!(temps.is_empty(), "#{n}: temps {temps:?}");
    let second = second.lock().unwrap().take();
    (result, second, content)
}

/// The first interleaving where both `create_new` writers succeed (the
/// first clobbered the second), as the call index it was slotted before.
fn first_clobber(first: Option<Broken>) -> Option<(usize, String)> {
    let calls = {
        let sim = SimFs::new(5);
        sim.mkdir("/d", 0o755).unwrap();
        let mut opts = Options::new();
        opts.create_new(true).broken(first);
        sim.write("/d/a", b"first", &opts).unwrap();
        sim.trace_lines()
    };
    for (n, call) in calls.iter().enumerate() {
        let (a, b, content) = race(n, first);
        let b = b.expect("the second writer ran");
        // At most one create_new may succeed, and the file is the winner's.
        match (&a, &b) {
            (Ok(()), Ok(())) => return Some((n, call.clone())),
            (Ok(()), Err(e)) | (Err(e), Ok(())) => {
                assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "#{n}: {e}");
                let winner: &[u8] = if a.is_ok() { b"first" } else { b"second" };
                assert_eq!(content, winner, "#{n}");
            }
            (Err(x), Err(y)) => panic!("#{n}: both failed: {x}; {y}"),
        }
    }
    None
}

#[test]
fn check_then_rename_no_clobber_is_caught_by_two_interleaved_writers() {
    // The real protocol: wherever the second writer runs, exactly one wins.
    assert_eq!(first_clobber(None), None);
    // Looking first, then renaming: the second writer slotted between the
    // look and the rename is clobbered, and both are told they created it.
    let (n, call) = first_clobber(Some(Broken::CheckThenRename)).expect("caught");
    assert_eq!(call, "rename_at(/d, .a.*.tmp, a) = ok", "#{n}");
}

// ---- the new paths under the old variants ----

#[test]
fn the_broken_variants_are_caught_on_unnamed_temps_too() {
    // The same table, in the conservative model, on the O_TMPFILE path:
    // every variant it catches on named temps is caught here too.
    let cases: Vec<Case> = Case::suite()
        .into_iter()
        .map(|c| Case {
            unnamed_temp: true,
            ..c
        })
        .collect();
    for &(variant, _, expected) in EXPECTED.iter().filter(|e| e.1 == CONSERVATIVE) {
        let caught = cases.iter().find_map(|case| {
            let case = case.with_broken(Some(variant));
            let (sim, oracle, _) = run_case_with(&case, 1, prepare_for(Some(variant)));
            let report = check_images(&sim, &oracle, CONSERVATIVE, &Budget::default());
            report.first.map(|v| (case.to_string(), v))
        });
        assert_eq!(
            caught.is_some(),
            expected.is_some(),
            "{variant:?}: {caught:?}"
        );
    }
}

#[test]
fn the_backup_check_can_fail() {
    // A checker that forgot the earlier backup: the case expects a first
    // backup, but the disk holds an earlier one, which is neither absent
    // nor the old version. The images before the backup's rename show it.
    let first = Case::extended_suite()
        .into_iter()
        .find(|c| c.backup == Backup::First)
        .unwrap();
    let rotate = Case {
        backup: Backup::Rotate,
        ..first.clone()
    };
    let sim = rotate.setup(1);
    let result = first.run(&sim);
    assert!(result.is_ok());
    let (_, oracle, _) = run_case_with(&first, 1, |_| {});
    let report = check_images(&sim, &oracle, CONSERVATIVE, &Budget::default());
    let v = report.first.expect("caught");
    assert_eq!(v.point, "start", "{v}");
    assert!(v.message.contains("backup /d/a~ is neither"), "{v}");
}

#[test]
fn a_backup_without_its_directory_fsync_is_caught() {
    // issue 12: without the directory fsync between the backup's rename and
    // the main rename, the conservative model keeps the main rename but not
    // the backup's: the old version is under neither name.
    let cases: Vec<Case> = Case::extended_suite()
        .into_iter()
        .filter(|c| c.backup == Backup::Rotate)
        .collect();
    assert!(!cases.is_empty());
    let broken = sweep(
        Some(Broken::NoBackupSync),
        CONSERVATIVE,
        &cases,
        &Budget::default(),
    );
    let (case, v) = broken.first_crash.expect("NoBackupSync is caught");
    assert!(v.message.contains("under neither name"), "{case}: {v}");
    // The real protocol passes the same check on the same cases.
    let real = sweep(None, CONSERVATIVE, &cases, &Budget::default());
    assert_eq!(real.report.violations, 0, "{:?}", real.first_crash);
}

//! Tier 6: negative controls. Each deliberately broken protocol variant
//! (selected through `Options::broken`, in the real code path) must be
//! caught by the same checks that pass for the real protocol. The table
//! below states, per variant and model, the first case and crash point
//! where a crash image breaks an invariant; `None` means the model cannot
//! see that mistake (and says why).
//!
//! This is the proof that the crash tests can fail.

use crate::sim::check::{Case, sweep};
use crate::sim::{Broken, Budget, Model};

const CONSERVATIVE: Model = Model::Conservative;
const EXT4: Model = Model::Ext4Ordered {
    auto_da_alloc: true,
};
const EXT4_NOAUTO: Model = Model::Ext4Ordered {
    auto_da_alloc: false,
};
const KILL: Model = Model::ProcessCrash;

/// (variant, model, first case caught, crash point, what the image showed)
type Expectation = (
    Broken,
    Model,
    Option<(&'static str, &'static str, &'static str)>,
);

#[rustfmt::skip]
const EXPECTED: &[Expectation] = &[
    // The rename reaches the disk before the inode: an empty file, mode 0.
    (Broken::NoFileSync, CONSERVATIVE, Some(("absent file Durable 0B", "after #4 rename_at", "mode 0o0"))),
    // ext4 journals the inode with the rename, but delayed allocation
    // leaves it empty; auto_da_alloc does not help a new name.
    (Broken::NoFileSync, EXT4, Some(("absent file Durable 1B", "after #5 rename_at", "file of 0 bytes"))),
    (Broken::NoFileSync, EXT4_NOAUTO, Some(("absent file Durable 1B", "after #5 rename_at", "file of 0 bytes"))),
    // kill -9 keeps the page cache: a missing fsync is invisible.
    (Broken::NoFileSync, KILL, None),
    // Ok was returned, but the rename is still only in memory.
    (Broken::NoDirSync, CONSERVATIVE, Some(("absent file Durable 0B", "after #5 rename_at", "after Ok (Durable)"))),
    (Broken::NoDirSync, EXT4, Some(("absent file Durable 0B", "after #5 rename_at", "after Ok (Durable)"))),
    (Broken::NoDirSync, EXT4_NOAUTO, Some(("absent file Durable 0B", "after #5 rename_at", "after Ok (Durable)"))),
    (Broken::NoDirSync, KILL, None),
    // New data under the temp's 0600 root:root: the chown/chmod after the
    // fsync had not reached the disk when the rename did.
    (Broken::ModeAfterSync, CONSERVATIVE, Some(("present file Durable 0B", "after #8 rename_at", "mode 0o600 owner 0:0"))),
    // ext4 journals metadata in program order and the chmod precedes the
    // rename: invisible there, which is why the conservative model exists.
    (Broken::ModeAfterSync, EXT4, None),
    (Broken::ModeAfterSync, EXT4_NOAUTO, None),
    (Broken::ModeAfterSync, KILL, None),
    // As for no file fsync: the rename lands before the data.
    (Broken::RenameBeforeSync, CONSERVATIVE, Some(("absent file Durable 0B", "after #4 rename_at", "mode 0o0"))),
    (Broken::RenameBeforeSync, EXT4, Some(("absent file Durable 1B", "after #5 rename_at", "file of 0 bytes"))),
    (Broken::RenameBeforeSync, EXT4_NOAUTO, Some(("absent file Durable 1B", "after #5 rename_at", "file of 0 bytes"))),
    (Broken::RenameBeforeSync, KILL, None),
    // Between the unlink and the rename the name is gone, even for kill -9.
    (Broken::UnlinkThenRename, CONSERVATIVE, Some(("absent symlink-replaced Durable 0B", "after #5 unlink_at", "neither old nor new: absent"))),
    (Broken::UnlinkThenRename, EXT4, Some(("absent symlink-replaced Durable 0B", "after #5 unlink_at", "neither old nor new: absent"))),
    (Broken::UnlinkThenRename, EXT4_NOAUTO, Some(("absent symlink-replaced Durable 0B", "after #5 unlink_at", "neither old nor new: absent"))),
    (Broken::UnlinkThenRename, KILL, Some(("absent symlink-replaced Durable 0B", "after #5 unlink_at", "neither old nor new: absent"))),
    // The first fsync fails with EIO (pages dropped), the retry returns 0,
    // and the rename publishes a file whose data never reached the disk.
    (Broken::RetrySync, CONSERVATIVE, Some(("absent file Durable 1B", "after #7 rename_at", "neither old nor new: file of 0 bytes"))),
    (Broken::RetrySync, EXT4, Some(("absent file Durable 1B", "after #7 rename_at", "neither old nor new: file of 0 bytes"))),
    (Broken::RetrySync, EXT4_NOAUTO, Some(("absent file Durable 1B", "after #7 rename_at", "neither old nor new: file of 0 bytes"))),
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

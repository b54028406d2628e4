//! Tier 5: fault injection. For each protocol path, every call of a clean
//! run is failed in turn with each of `EIO`, `ENOSPC`, `EDQUOT`, `EACCES`
//! and `EINTR`, and then once more with the cleanup `unlink` failing too.
//!
//! Checked each time: the error names the step of the failed call and
//! carries its errno; `target_replaced()` is true exactly after the rename;
//! before the rename the target is unchanged in the volatile view and in
//! every crash image of every model; no temp remains unless removing it
//! failed, and then the error names it; a failed fsync is never followed by
//! a rename. `EINTR` on a write is retried and the replace succeeds.

use crate::error::Step;
use crate::options::Durability;
use crate::sim::check::{
    Backup, Case, Reach, Via, check_images, check_trace, run_case_with, version,
};
use crate::sim::{Budget, Call, Model, SimFs, errnos};
use crate::temp_name::is_temp_name;

const ERRNOS: [i32; 5] = [
    errnos::EIO,
    errnos::ENOSPC,
    errnos::EDQUOT,
    errnos::EACCES,
    errnos::EINTR,
];

/// One protocol path: a case plus knobs of the simulator.
#[derive(Clone, Debug)]
struct Path {
    name: &'static str,
    case: Case,
    /// `RENAME_NOREPLACE` unsupported: create_new links and unlinks.
    link_fallback: bool,
}

fn paths() -> Vec<Path> {
    let base = Case {
        present: true,
        durability: Durability::Durable,
        create_new: false,
        reach: Reach::Direct,
        payload_len: 1300,
        via: Via::Write,
        unnamed_temp: false,
        backup: Backup::Off,
        user: false,
        broken: None,
    };
    let path = |name, case: Case| Path {
        name,
        case,
        link_fallback: false,
    };
    let mut out = vec![
        path(
            "new file",
            Case {
                present: false,
                ..base.clone()
            },
        ),
        path("replace", base.clone()),
        path(
            "create_new",
            Case {
                present: false,
                create_new: true,
                ..base.clone()
            },
        ),
        path(
            "create_new refused",
            Case {
                create_new: true,
                ..base.clone()
            },
        ),
        path(
            "followed symlink",
            Case {
                reach: Reach::Followed,
                ..base.clone()
            },
        ),
        path(
            "replaced symlink",
            Case {
                reach: Reach::NotFollowed,
                ..base.clone()
            },
        ),
        path(
            "consistent",
            Case {
                durability: Durability::Consistent,
                ..base.clone()
            },
        ),
        path(
            "streaming",
            Case {
                via: Via::Streaming,
                ..base.clone()
            },
        ),
    ];
    out.push(Path {
        link_fallback: true,
        ..path(
            "create_new via link",
            Case {
                present: false,
                create_new: true,
                ..base.clone()
            },
        )
    });
    out.push(path("replace as a user", Case { user: true, ..base }));
    out
}

fn prepare(path: &Path, sim: &SimFs) {
    if path.link_fallback {
        sim.set_rename_noreplace(false);
    }
}

/// The step a failure of this call reports.
fn step_of(call: Call) -> Step {
    match call {
        Call::OpenDir => Step::OpenParent,
        Call::StatAt => Step::InspectTarget,
        Call::ReadLinkAt => Step::ResolveSymlink,
        Call::CreateAt => Step::CreateTemp,
        Call::WriteAt => Step::Write,
        Call::SetOwner => Step::SetOwner,
        Call::StatFile | Call::SetMode => Step::SetMode,
        Call::SyncFile => Step::SyncTemp,
        Call::RenameAt | Call::RenameNoreplaceAt | Call::LinkAt => Step::Rename,
        Call::SyncDir => Step::SyncParent,
        // In a clean run the only unlink is the one after linkat.
        Call::UnlinkAt => Step::RemoveTempLink,
        other => panic!("{other} cannot fail"),
    }
}

/// Runs `path` with call `nth` failing with `errno` (and, if `cleanup_fails`,
/// the first unlink after it with `EIO`), and checks everything.
/// Returns the crash images checked.
fn run_one(path: &Path, nth: usize, call: Call, errno: i32, cleanup_fails: bool) -> u64 {
    let what = format!(
        "{}: #{nth} {call} fails with {errno}{}",
        path.name,
        if cleanup_fails {
            " and the cleanup too"
        } else {
            ""
        }
    );
    let (sim, mut oracle, result) = run_case_with(&path.case, 1, |sim| {
        prepare(path, sim);
        sim.fail_nth(nth, errno);
        if cleanup_fails {
            sim.fail_first_after(Call::UnlinkAt, nth, errnos::EIO);
        }
    });
    let trace = sim.trace();
    assert!(
        trace.get(nth).is_some_and(|t| t.injected),
        "{what}: the fault did not fire: {:#?}",
        sim.trace_lines()
    );
    // Best-effort calls: the temp's lock (only `sweep` relies on it) and
    // the copy of extended attributes never fail a replace.
    let best_effort = matches!(
        call,
        Call::Lock | Call::ListXattrs | Call::GetXattr | Call::SetXattr
    );
    let tolerated = best_effort
        || (errno == errnos::EINTR && call == Call::WriteAt)
        || (path.case.user && call == Call::SetOwner && errno == errnos::EACCES);
    let temps_now: Vec<_> = ["/d", "/e"]
        .iter()
        .flat_map(|d| sim.list_dir(d).unwrap_or_default())
        .filter(|n| is_temp_name(n))
        .collect();
    match &result {
        Ok(()) => {
            assert!(tolerated, "{what}: succeeded");
            assert!(temps_now.is_empty(), "{what}: temps {temps_now:?}");
        }
        Err(e) if oracle.expected.refused && call != Call::OpenDir && call != Call::StatAt => {
            panic!("{what}: refused case made call {call}: {e}")
        }
        Err(e) => {
            assert!(!tolerated, "{what}: {e}");
            assert_eq!(e.step(), Some(step_of(call)), "{what}: {e}");
            assert_eq!(e.raw_os_error(), Some(errno), "{what}: {e}");
            let replaced = matches!(step_of(call), Step::SyncParent | Step::RemoveTempLink);
            assert_eq!(e.target_replaced(), replaced, "{what}: {e}");
            // The temp is gone unless removing it failed, and then the
            // error names the temp that is still there.
            let unlink_failed = trace
                .iter()
                .any(|t| t.call == Call::UnlinkAt && t.result.is_err());
            match e.temp_left() {
                None => assert!(temps_now.is_empty(), "{what}: {e}: temps {temps_now:?}"),
                Some(temp) => {
                    assert!(unlink_failed, "{what}: {e}");
                    assert_eq!(temps_now.len(), 1, "{what}: {e}");
                    assert_eq!(
                        temp.file_name(),
                        Some(temps_now[0].as_os_str()),
                        "{what}: {e}"
                    );
                }
            }
            if unlink_failed {
                assert!(
                    e.temp_left().is_some(),
                    "{what}: the error hides the temp left behind: {e}"
                );
            }
            let volatile = version(&sim.lock().volatile, &oracle.expected.path);
            let want = if replaced {
                &oracle.expected.new
            } else {
                &oracle.expected.old
            };
            assert_eq!(&volatile, want, "{what}: {e}");
        }
    }
    if let Some(v) = check_trace(&sim) {
        panic!("{what}: {v}");
    }
    // Every crash image: old or new throughout; old at the end after an
    // early error; new at the end after Ok with Durable.
    oracle.ok = result.is_ok();
    oracle.failed_before_publish = result.as_ref().is_err_and(|e| !e.target_replaced());
    oracle.durable = result.is_ok() && path.case.durability == Durability::Durable;
    let mut images = 0;
    for model in Model::ALL {
        let report = check_images(&sim, &oracle, model, &Budget::default());
        if let Some(v) = report.first {
            panic!("{what}: {v}");
        }
        images += report.stats.images;
    }
    images
}

fn run_path(path: &Path) -> (usize, u64) {
    let (sim, _, result) = run_case_with(&path.case, 1, |sim| prepare(path, sim));
    assert_eq!(
        result.is_ok(),
        !path.case.create_new || !path.case.present,
        "{}",
        path.name
    );
    let clean = sim.trace();
    let mut runs = 0;
    let mut images = 0;
    for (nth, entry) in clean.iter().enumerate() {
        if !entry.call.can_fail() {
            continue;
        }
        for errno in ERRNOS {
            // A retried EINTR, or a failed best-effort call (the temp's
            // lock, xattr copying), fails nothing, so no cleanup runs.
            let retried = errno == errnos::EINTR && entry.call == Call::WriteAt;
            let best_effort = matches!(
                entry.call,
                Call::Lock | Call::ListXattrs | Call::GetXattr | Call::SetXattr
            );
            let variants = if retried || best_effort { 1 } else { 2 };
            for cleanup_fails in [false, true].into_iter().take(variants) {
                images += run_one(path, nth, entry.call, errno, cleanup_fails);
                runs += 1;
            }
        }
    }
    (runs, images)
}

#[test]
fn every_call_fails_in_turn_with_every_error() {
    let start = std::time::Instant::now();
    let (mut runs, mut images) = (0, 0);
    for path in paths() {
        let (r, i) = run_path(&path);
        runs += r;
        images += i;
    }
    eprintln!(
        "fault injection: {runs} faulty runs, {images} crash images checked in {:.2?}",
        start.elapsed()
    );
}

#[test]
fn the_user_path_keeps_the_old_owner() {
    // Sanity check of the user path itself: no fault, old file owned by
    // the user, chown to the same owner succeeds.
    let path = paths().into_iter().find(|p| p.case.user).unwrap();
    let (sim, _, result) = run_case_with(&path.case, 1, |sim| prepare(&path, sim));
    result.unwrap();
    let trace = sim.trace_lines();
    assert!(
        trace.iter().any(|l| l.starts_with("set_owner")),
        "{trace:?}"
    );
}

#[test]
fn streaming_commit_names_the_temp_when_cleanup_fails_too() {
    // Regression: `Buffered::commit` used to drop the replace after a
    // failed flush, so a failed unlink of the temp went unreported.
    let case = paths()
        .into_iter()
        .find(|p| p.name == "streaming")
        .unwrap()
        .case;
    let (sim, _, result) = run_case_with(&case, 1, |sim| {
        sim.fail_first(Call::WriteAt, errnos::ENOSPC);
        sim.fail_first(Call::UnlinkAt, errnos::EIO);
    });
    let err = result.unwrap_err();
    assert_eq!(err.step(), Some(Step::Write));
    let temp = err.temp_left().expect("the error names the temp");
    assert!(sim.stat(temp).is_ok(), "{}", temp.display());
}

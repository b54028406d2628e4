//! Tier 5: fault injection. For each protocol path, every call of a clean
//! run is failed in turn with each of `EIO`, `ENOSPC`, `EDQUOT`, `EACCES`
//! and `EINTR`, and then once more with the cleanup `unlink` failing too.
//!
//! Checked each time: the error names the step of the failed call and
//! carries its errno; `target_replaced()` is true exactly after the rename;
//! before the rename the target is unchanged in the volatile view and in
//! every crash image of every model; no temp remains unless removing it
//! failed, and then the error names it; a failed fsync is never followed by
//! a rename. `EINTR` on a write or a read is retried and the replace
//! succeeds.
//!
//! The paths: new file, replace, `create_new` (renameat2 and its linkat
//! fallback), symlinks, Consistent, streaming, as a user, `O_TMPFILE` temps
//! (replace, `create_new`, fallback), backups (first and rotated), and
//! `update`. Batches have their own runner: the error is an
//! [`Error::Batch`](crate::Error::Batch) whose `replaced()` lists exactly
//! the files that are new in the volatile view, and every other file is old
//! there and in every crash image.

use crate::error::{Error, InvalidReason, Step};
use crate::options::Durability;
use crate::sim::check::{
    Backup, BatchCase, BatchOracle, BatchVia, Case, Reach, Version, Via, Violation,
    check_batch_volatile, check_images, check_images_from, check_trace, check_volatile,
    run_batch_case_with, run_case_with, version,
};
use crate::sim::kernel::Entry;
use crate::sim::{Broken, Budget, Call, Model, SimFs, TraceEntry, errnos};
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
pub(super) struct Path {
    name: &'static str,
    pub(super) case: Case,
    /// `RENAME_NOREPLACE` unsupported: create_new links and unlinks.
    link_fallback: bool,
    /// `O_TMPFILE` unsupported: an unnamed temp falls back to a named one.
    no_tmpfile: bool,
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
        no_tmpfile: false,
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
    out.push(path(
        "replace as a user",
        Case {
            user: true,
            ..base.clone()
        },
    ));
    let unnamed = Case {
        unnamed_temp: true,
        ..base.clone()
    };
    out.push(path("unnamed temp", unnamed.clone()));
    out.push(path(
        "unnamed temp, create_new",
        Case {
            present: false,
            create_new: true,
            ..unnamed.clone()
        },
    ));
    out.push(Path {
        no_tmpfile: true,
        ..path("unnamed temp without O_TMPFILE", unnamed)
    });
    out.push(path(
        "backup",
        Case {
            backup: Backup::First,
            ..base.clone()
        },
    ));
    out.push(path(
        "backup over an earlier one",
        Case {
            backup: Backup::Rotate,
            ..base.clone()
        },
    ));
    out.push(path(
        "update",
        Case {
            via: Via::Update,
            ..base.clone()
        },
    ));
    out.push(path(
        "update of a new file",
        Case {
            via: Via::Update,
            present: false,
            ..base
        },
    ));
    out
}

/// The "replace" path run by a broken variant (for the negative controls).
pub(super) fn broken_path(variant: Broken) -> Path {
    let mut path = paths().swap_remove(1);
    assert_eq!(path.name, "replace");
    path.case.broken = Some(variant);
    path
}

fn prepare(path: &Path, sim: &SimFs) {
    if path.link_fallback {
        sim.set_rename_noreplace(false);
    }
    if path.no_tmpfile {
        sim.set_tmpfile(false);
    }
}

/// The step a failure of call `nth` reports; its `args` tell the backup's
/// link and rename (`a~`) from the others, and the old file (a plain name)
/// from the temp; the calls before it tell `update`'s read of the old file
/// (after the lock, before any read) from the inspection of it.
fn step_of(trace: &[TraceEntry], nth: usize) -> Step {
    let (call, args) = (trace[nth].call, trace[nth].args.as_str());
    let before = &trace[..nth];
    let temp = args.contains(".tmp") || args.contains("(unnamed)");
    let reading = before.iter().any(|t| t.call == Call::LockDir)
        && !before.iter().any(|t| t.call == Call::ReadAt);
    // The directory fsync right after the backup's rename is part of the
    // backup.
    let after_backup =
        nth > 0 && trace[nth - 1].call == Call::RenameAt && trace[nth - 1].args.contains("a~");
    if call == Call::SyncDir && after_backup {
        return Step::Backup;
    }
    match call {
        Call::LinkAt | Call::RenameAt if args.contains("a~") => Step::Backup,
        Call::OpenDir | Call::OpenDirAt => Step::OpenParent,
        Call::StatAt | Call::StatDir | Call::IsProcfs | Call::ListXattrs => Step::InspectTarget,
        Call::StatFile if !temp => Step::InspectTarget,
        Call::ReadLinkAt => Step::ResolveSymlink,
        Call::LockDir | Call::TryLockDir | Call::DirIdentity => Step::Lock,
        Call::OpenReadAt if !reading => Step::InspectTarget,
        Call::OpenReadAt | Call::ReadAt => Step::ReadTarget,
        Call::CreateAt | Call::CreateUnnamed => Step::CreateTemp,
        Call::WriteAt => Step::Write,
        Call::SetOwner => Step::SetOwner,
        Call::StatFile => Step::InspectTemp,
        Call::SetMode => Step::SetMode,
        Call::SyncFile => Step::SyncTemp,
        Call::SyncFs => Step::SyncFilesystem,
        Call::LinkUnnamed => Step::LinkTemp,
        Call::RenameAt | Call::RenameNoreplaceAt | Call::LinkAt => Step::Rename,
        Call::SyncDir => Step::SyncParent,
        // In a clean run the only unlink is the one after linkat.
        Call::UnlinkAt => Step::RemoveTempLink,
        other => panic!("{other} cannot fail"),
    }
}

/// Best-effort calls: the temp's lock (only `sweep` relies on it) and the
/// copy of extended attributes never fail a replace.
fn best_effort(call: Call) -> bool {
    matches!(
        call,
        Call::Lock | Call::GetXattr | Call::SetXattr | Call::StatFs
    )
}

/// An `EACCES` opening a directory: the protocol opens it `O_PATH` instead.
fn unreadable_dir(call: Call, errno: i32) -> bool {
    matches!(call, Call::OpenDir | Call::OpenDirAt) && errno == errnos::EACCES
}

/// Whether call `nth` failing with `errno` is the old file refusing to be
/// opened for its ACL (not `update`'s read of it).
fn narrowed_by(trace: &[TraceEntry], nth: usize, errno: i32) -> bool {
    trace[nth].call == Call::OpenReadAt
        && errno == errnos::EACCES
        && step_of(trace, nth) == Step::InspectTarget
}

/// The expected new version without group bits.
fn narrow(version: &mut Version) {
    if let Version::File { mode, .. } = version {
        *mode &= !0o070;
    }
}

/// Whether call `nth` is the `fstat` right after the lock of its own temp
/// (which only looks for a `sweep` that removed it: a failure is ignored).
fn after_own_lock(trace: &[TraceEntry], nth: usize) -> bool {
    nth > 0
        && trace[nth - 1].call == Call::Lock
        && trace[nth - 1].args.split(", ").next() == Some(trace[nth].args.as_str())
}

/// A failure that is retried (`EINTR` on a write, a read or a lock).
fn retried(call: Call, errno: i32) -> bool {
    errno == errnos::EINTR
        && matches!(
            call,
            Call::WriteAt | Call::ReadAt | Call::LockDir | Call::TryLockDir
        )
}

/// Returns early from a checker with a message naming the run.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Runs `path` with call `nth` failing with `errno` (and, if `cleanup_fails`,
/// the first unlink after it with `EIO`), and checks everything.
/// Returns the crash images checked, or what was wrong.
fn run_one(
    path: &Path,
    clean: &[Entry],
    nth: usize,
    call: Call,
    errno: i32,
    cleanup_fails: bool,
) -> Result<u64, String> {
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
    ensure!(
        trace.get(nth).is_some_and(|t| t.injected),
        "{what}: the fault did not fire: {:#?}",
        sim.trace_lines()
    );
    // The temp's `fstat` right after its lock only looks for a `sweep`
    // that removed it; a failure there tells nothing and is ignored.
    let after_lock = after_own_lock(&trace, nth);
    let unreadable = unreadable_dir(call, errno);
    // An old file we may not open may hide an ACL: replaced, no group bits.
    let narrowed = narrowed_by(&trace, nth, errno);
    if narrowed {
        narrow(&mut oracle.expected.new);
    }
    // A chown refused even to root (EPERM, or an unmapped id) is best
    // effort: the file stays root's, keeps the old group (the fallback chown
    // of the group alone), and loses setuid.
    let owner_lost = call == Call::SetOwner && errno == errnos::EACCES && !path.case.user;
    if owner_lost {
        if let Version::File { mode, uid, .. } = &mut oracle.expected.new {
            *uid = 0;
            *mode &= !0o4000;
        }
    }
    let tolerated = best_effort(call)
        || retried(call, errno)
        || (call == Call::StatFile && after_lock)
        || narrowed
        || owner_lost
        || (unreadable && path.case.durability == Durability::Consistent)
        || (path.case.user && call == Call::SetOwner && errno == errnos::EACCES);
    let temps_now: Vec<_> = ["/d", "/e"]
        .iter()
        .flat_map(|d| sim.list_dir(d).unwrap_or_default())
        .filter(|n| is_temp_name(n))
        .collect();
    match &result {
        Ok(()) => {
            ensure!(tolerated, "{what}: succeeded");
            ensure!(temps_now.is_empty(), "{what}: temps {temps_now:?}");
        }
        Err(e) if oracle.expected.refused && call != Call::OpenDir && call != Call::StatAt => {
            return Err(format!("{what}: refused case made call {call}: {e}"));
        }
        // A directory we may not read: `O_PATH` serves a Consistent
        // replace; a Durable one is refused before anything is written.
        Err(
            e @ Error::Refused {
                reason: InvalidReason::DirectoryNotReadable,
                ..
            },
        ) => {
            ensure!(unreadable && !tolerated, "{what}: {e}");
            let volatile = version(&sim.lock().volatile, &oracle.expected.path);
            ensure!(volatile == oracle.expected.old, "{what}: {e}: {volatile}");
            ensure!(temps_now.is_empty(), "{what}: temps {temps_now:?}");
        }
        Err(e) => {
            ensure!(!tolerated, "{what}: {e}");
            // What the error claims about the target must match the
            // volatile view: unchanged unless `target_replaced()`.
            let volatile = version(&sim.lock().volatile, &oracle.expected.path);
            let want = if e.target_replaced() {
                &oracle.expected.new
            } else {
                &oracle.expected.old
            };
            ensure!(
                &volatile == want,
                "{what}: the error ({e}) says target_replaced() = {}, but the file is {volatile}",
                e.target_replaced()
            );
            let step = step_of(&trace, nth);
            ensure!(e.step() == Some(step), "{what}: {e}");
            ensure!(e.raw_os_error() == Some(errno), "{what}: {e}");
            let replaced = matches!(step, Step::SyncParent | Step::RemoveTempLink);
            ensure!(e.target_replaced() == replaced, "{what}: {e}");
            // The temp is gone unless removing it failed, and then the
            // error names the temp that is still there.
            let unlink_failed = trace
                .iter()
                .any(|t| t.call == Call::UnlinkAt && t.result.is_err());
            match e.temp_left() {
                None => ensure!(temps_now.is_empty(), "{what}: {e}: temps {temps_now:?}"),
                Some(temp) => {
                    ensure!(unlink_failed, "{what}: {e}");
                    ensure!(temps_now.len() == 1, "{what}: {e}: temps {temps_now:?}");
                    ensure!(
                        temp.file_name() == Some(temps_now[0].as_os_str()),
                        "{what}: {e}"
                    );
                }
            }
            if unlink_failed {
                ensure!(
                    e.temp_left().is_some(),
                    "{what}: the error hides the temp left behind: {e}"
                );
            }
        }
    }
    if let Some(v) = check_volatile(&sim, &oracle, &result) {
        return Err(format!("{what}: {v}"));
    }
    if let Some(v) = check_trace(&sim) {
        return Err(format!("{what}: {v}"));
    }
    // Every crash image: old or new throughout; old at the end after an
    // early error; new at the end after Ok with Durable. The points before
    // the faulty call are those of the clean run, checked in `run_path`.
    oracle.ok = result.is_ok();
    oracle.failed_before_publish = result.as_ref().is_err_and(|e| !e.target_replaced());
    oracle.durable = result.is_ok() && path.case.durability == Durability::Durable;
    if same_effects(&sim, &result, clean) {
        return Ok(0);
    }
    let from = effects_before_call(&sim, nth);
    let mut images = 0;
    for model in Model::ALL {
        let report = check_images_from(&sim, &oracle, model, &Budget::default(), from);
        if let Some(v) = report.first {
            return Err(format!("{what}: {v}"));
        }
        images += report.stats.images;
    }
    Ok(images)
}

/// Every call of `path`'s clean run failed in turn with every errno, alone
/// and with the cleanup failing too: (faulty runs, crash images), or the
/// first problem found.
pub(super) fn run_path(path: &Path) -> Result<(usize, u64), String> {
    let (sim, oracle, result) = run_case_with(&path.case, 1, |sim| prepare(path, sim));
    ensure!(
        result.is_ok() == (!path.case.create_new || !path.case.present),
        "{}: {result:?}",
        path.name
    );
    // The clean run's crash points, once: every faulty run shares a prefix
    // of them, up to its faulty call.
    let mut images = 0;
    for model in Model::ALL {
        let report = check_images(&sim, &oracle, model, &Budget::default());
        if let Some(v) = report.first {
            return Err(format!("{}, clean: {v}", path.name));
        }
        images += report.stats.images;
    }
    let clean = sim.trace();
    let clean_log = sim.lock().log.clone();
    let mut runs = 0;
    for (nth, entry) in clean.iter().enumerate() {
        if !entry.call.can_fail() {
            continue;
        }
        for errno in ERRNOS {
            // A retried EINTR, or a failed best-effort call, fails nothing,
            // so no cleanup runs.
            let after_lock = nth > 0 && clean[nth - 1].call == Call::Lock;
            let ignored = entry.call == Call::StatFile && after_lock;
            let variants = if retried(entry.call, errno) || best_effort(entry.call) || ignored {
                1
            } else {
                2
            };
            for cleanup_fails in [false, true].into_iter().take(variants) {
                images += run_one(path, &clean_log, nth, entry.call, errno, cleanup_fails)?;
                runs += 1;
            }
        }
    }
    Ok((runs, images))
}

#[test]
fn every_call_fails_in_turn_with_every_error() {
    let start = std::time::Instant::now();
    let (mut runs, mut images) = (0, 0);
    for path in paths() {
        let (r, i) = run_path(&path).unwrap_or_else(|e| panic!("{e}"));
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
    // the user. The temp already has that owner, so the fstat shows it and
    // no chown is made; the result still has the old owner.
    let path = paths().into_iter().find(|p| p.case.user).unwrap();
    let (sim, _, result) = run_case_with(&path.case, 1, |sim| prepare(&path, sim));
    result.unwrap();
    let trace = sim.trace_lines();
    assert!(
        trace.iter().any(|l| l.starts_with("stat_file")),
        "{trace:?}"
    );
    assert!(
        !trace.iter().any(|l| l.starts_with("set_owner")),
        "{trace:?}"
    );
    let before = path.case.setup(1).stat("/d/a").unwrap();
    let after = sim.stat("/d/a").unwrap();
    assert_eq!((after.uid, after.gid), (before.uid, before.gid));
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

#[test]
fn a_failed_backup_names_its_temp_when_removing_it_fails_too() {
    // Regression: when the backup's rename failed and removing its temp
    // link failed too, that link (a second name of the old file) stayed
    // behind and the error did not say so.
    let case = Case {
        backup: Backup::First,
        ..paths()[1].case.clone()
    };
    let (sim, _, result) = run_case_with(&case, 1, |sim| {
        sim.fail_first(Call::RenameAt, errnos::EIO);
        sim.fail_first(Call::UnlinkAt, errnos::EIO);
    });
    let err = result.unwrap_err();
    assert_eq!(err.step(), Some(Step::Backup), "{err}");
    let temp = err.temp_left().expect("the error names the temp");
    assert!(sim.stat(temp).is_ok(), "{}", temp.display());
    assert_eq!(sim.read_file("/d/a").unwrap(), sim.read_file(temp).unwrap());
    assert_eq!(
        sim.list_dir("/d").unwrap().len(),
        2,
        "a and the backup's temp"
    );
}

// ---- batches ----

/// One batch path: three files in two directories, `/d/a` and `/e/c`
/// replaced, `/d/b` new.
#[derive(Clone, Debug)]
struct BatchPath {
    name: &'static str,
    case: BatchCase,
    /// On overlayfs, whose `syncfs` hides write-back errors: each temp is
    /// fsynced instead.
    no_syncfs: bool,
}

fn batch_paths() -> Vec<BatchPath> {
    let base = BatchCase::plain(vec![("/d/a", true), ("/e/c", true), ("/d/b", false)]);
    let path = |name, case| BatchPath {
        name,
        case,
        no_syncfs: false,
    };
    vec![
        path("batch", base.clone()),
        path(
            "batch of unnamed temps",
            BatchCase {
                unnamed_temp: true,
                ..base.clone()
            },
        ),
        BatchPath {
            no_syncfs: true,
            ..path("batch on overlayfs", base.clone())
        },
        path(
            "batch, Consistent",
            BatchCase {
                durability: Durability::Consistent,
                ..base.clone()
            },
        ),
        // issue 10: directory identity, two filesystems, bounded fds.
        path(
            "batch, mixed durability",
            BatchCase {
                mixed: true,
                ..base.clone()
            },
        ),
        path(
            "batch by chdir",
            BatchCase {
                via: BatchVia::Chdir,
                ..base.clone()
            },
        ),
        path(
            "batch on two filesystems",
            BatchCase {
                two_fs: true,
                ..base.clone()
            },
        ),
        path(
            "batch with one open temp",
            BatchCase {
                open_temps_max: Some(1),
                ..base.clone()
            },
        ),
        path(
            "batch with one open temp on overlayfs",
            BatchCase {
                open_temps_max: Some(1),
                overlay: true,
                ..base
            },
        ),
    ]
}

const BATCH_ERRNOS: [i32; 4] = [errnos::EIO, errnos::ENOSPC, errnos::EACCES, errnos::EINTR];

/// Crash images after a fault: points before the faulty call are those of
/// the clean run (the exhaustive tier's); from it on, every point, with a
/// point of more than 256 images sampled (only points where all the temps'
/// effects are still pending have that many; the targets are untouched
/// there).
const BATCH_BUDGET: Budget = Budget {
    exhaustive_max: 1 << 8,
    samples: 32,
    seed: 0x5eed,
};

/// Whether a run that succeeded despite its fault (a best-effort call, a
/// retried `EINTR`) logged exactly the clean run's effects: then its crash
/// images are the clean run's, already checked with the same oracle.
fn same_effects(sim: &SimFs, result: &Result<(), Error>, clean: &[Entry]) -> bool {
    result.is_ok() && sim.lock().log == clean
}

/// How many effects the calls before call `nth` made: the crash points
/// from there on are the ones a fault in call `nth` can change.
fn effects_before_call(sim: &SimFs, nth: usize) -> usize {
    let st = sim.lock();
    let from = st.log.iter().position(|e| e.call >= nth);
    from.unwrap_or(st.log.len())
}

/// Checks every image of the crash points from the call `nth` on.
fn batch_images_from(sim: &SimFs, oracle: &BatchOracle, nth: usize) -> Result<u64, Violation> {
    let from = effects_before_call(sim, nth);
    let end = sim.effects();
    let mut images = 0;
    for model in Model::ALL {
        let mut first = None;
        let stats = sim.explore(model, from, &BATCH_BUDGET, &mut |point, fs| {
            if let Err(message) = oracle.check_image(fs, point.effects == end) {
                first = Some(Violation {
                    model: Some(model),
                    point: point.label.clone(),
                    message,
                });
                return false;
            }
            true
        });
        if let Some(v) = first {
            return Err(v);
        }
        images += stats.images;
    }
    Ok(images)
}

/// Runs the batch with call `nth` failing with `errno` (and, if
/// `cleanup_fails`, the first unlink after it with `EIO`), and checks it.
fn run_batch_one(
    path: &BatchPath,
    clean: &[Entry],
    nth: usize,
    commit_start: usize,
    errno: i32,
    cleanup_fails: bool,
) -> Result<u64, String> {
    let (sim, mut oracle, result) = run_batch_case_with(&path.case, 1, |sim| {
        sim.fail_nth(nth, errno);
        if cleanup_fails {
            sim.fail_first_after(Call::UnlinkAt, nth, errnos::EIO);
        }
        if path.no_syncfs {
            sim.set_root_fs_type(0x794C_7630); // overlayfs: no syncfs
        }
    });
    let trace = sim.trace();
    let call = trace[nth].call;
    let what = format!(
        "{}: #{nth} {call} fails with {errno}{}",
        path.name,
        if cleanup_fails {
            " and the cleanup too"
        } else {
            ""
        }
    );
    ensure!(
        trace[nth].injected,
        "{what}: the fault did not fire: {:#?}",
        sim.trace_lines()
    );
    let after_lock = after_own_lock(&trace, nth);
    let unreadable = unreadable_dir(call, errno);
    let narrowed = narrowed_by(&trace, nth, errno);
    let owner_lost = call == Call::SetOwner && errno == errnos::EACCES;
    // The file the faulty call concerns: `/d, a` or `.a.*.tmp, ...`.
    let args = &trace[nth].args;
    let name = match args.split_once(", ") {
        Some((_, rest)) if call == Call::OpenReadAt => rest.to_string(),
        _ => args
            .trim_start_matches('.')
            .split('.')
            .next()
            .unwrap_or("")
            .to_string(),
    };
    // Unnamed temps look alike: the k-th chown is the k-th existing file's.
    let kth = trace[..nth]
        .iter()
        .filter(|t| t.call == Call::SetOwner)
        .count();
    let by_order = (call == Call::SetOwner && name.is_empty() || name.starts_with('('))
        .then(|| path.case.files.iter().filter(|f| f.1).nth(kth))
        .flatten()
        .map(|f| f.0.rsplit('/').next().unwrap_or("").to_string());
    let name = by_order.unwrap_or(name);
    for (file, _, new) in &mut oracle.files {
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy() == name)
        {
            if narrowed {
                narrow(new);
            }
            if let (true, Version::File { mode, uid, .. }) = (owner_lost, new) {
                *uid = 0;
                *mode &= !0o4000;
            }
        }
    }
    // A batch's anchor that cannot be removed after the renames stays as
    // an empty temp-shaped file for `sweep`; the commit still succeeded.
    let anchor = trace[nth].args.contains("crashsafe-batch");
    if anchor && call == Call::UnlinkAt {
        oracle.dropped_leftovers = 1 + usize::from(cleanup_fails);
    }
    // So does one whose removal failed because every cleanup fails after a
    // tolerated fault (a narrowed mode, say).
    let anchors_left = trace
        .iter()
        .filter(|t| {
            t.call == Call::UnlinkAt && t.result.is_err() && t.args.contains("crashsafe-batch")
        })
        .count();
    oracle.dropped_leftovers = oracle.dropped_leftovers.max(anchors_left);
    let tolerated = best_effort(call)
        || retried(call, errno)
        || (call == Call::StatFile && after_lock)
        || narrowed
        || owner_lost
        || (anchor && call == Call::UnlinkAt);
    match &result {
        Ok(()) => ensure!(tolerated, "{what}: succeeded"),
        Err(e) => {
            ensure!(!tolerated, "{what}: {e}");
            // A failed write leaves the batch uncommitted: a plain error.
            // A failed commit says which files it had replaced.
            let in_commit = nth >= commit_start;
            match e {
                Error::Batch { total, .. } => {
                    ensure!(in_commit, "{what}: a batch error before the commit: {e}");
                    ensure!(*total == path.case.files.len(), "{what}: {e}");
                }
                _ => ensure!(!in_commit, "{what}: not a batch error: {e}"),
            }
            let refused = matches!(
                e,
                Error::Refused {
                    reason: InvalidReason::DirectoryNotReadable,
                    ..
                }
            );
            // A batch refuses an `O_PATH` directory whatever the durability.
            let step = if refused && unreadable {
                Step::OpenParent
            } else {
                let step = step_of(&trace, nth);
                ensure!(e.step() == Some(step), "{what}: {e}");
                ensure!(e.raw_os_error() == Some(errno), "{what}: {e}");
                step
            };
            ensure!(
                e.target_replaced() == (step == Step::SyncParent),
                "{what}: {e}"
            );
            // Only a failed directory fsync comes after every rename.
            if step != Step::SyncParent {
                ensure!(
                    e.replaced().len() < path.case.files.len(),
                    "{what}: {e}: everything replaced"
                );
            }
            let unlink_failed = trace
                .iter()
                .any(|t| t.call == Call::UnlinkAt && t.result.is_err());
            if unlink_failed && in_commit {
                ensure!(
                    e.temp_left().is_some(),
                    "{what}: the error hides the temp left behind: {e}"
                );
            }
            // A failed write: the runner drops the batch, and the temps
            // written before are removed by `Drop`, which cannot report.
            if unlink_failed && !in_commit && e.temp_left().is_none() {
                oracle.dropped_leftovers = 1;
            }
        }
    }
    // `replaced()` is exactly the set of files that are new; no temp
    // unless the error names it.
    if let Some(v) = check_batch_volatile(&sim, &oracle, &result) {
        return Err(format!("{what}: {v}"));
    }
    // A failed syncfs or fsync is never followed by a rename or link.
    if let Some(v) = check_trace(&sim) {
        return Err(format!("{what}: {v}"));
    }
    if same_effects(&sim, &result, clean) {
        return Ok(0);
    }
    batch_images_from(&sim, &oracle, nth).map_err(|v| format!("{what}: {v}"))
}

fn run_batch_path(path: &BatchPath) -> Result<(usize, u64), String> {
    let (sim, oracle, result) = run_batch_case_with(&path.case, 1, |sim| {
        if path.no_syncfs {
            sim.set_root_fs_type(0x794C_7630); // overlayfs: no syncfs
        }
    });
    ensure!(result.is_ok(), "{}: {result:?}", path.name);
    // The clean run's crash points, once (see `run_path`).
    let mut images =
        batch_images_from(&sim, &oracle, 0).map_err(|v| format!("{}, clean: {v}", path.name))?;
    let clean = sim.trace();
    let clean_log = sim.lock().log.clone();
    // Where the commit starts (a batch bounded in open temps finishes
    // and closes temps during `write`, after their last pwrite).
    let commit_start = {
        let fresh = path.case.setup(1);
        if path.no_syncfs {
            fresh.set_root_fs_type(0x794C_7630);
        }
        let (result, start) = path.case.run_marked(&fresh);
        ensure!(
            result.is_ok() && fresh.trace() == clean,
            "{}: not deterministic",
            path.name
        );
        start
    };
    let mut runs = 0;
    for (nth, entry) in clean.iter().enumerate() {
        // The unsupported syncfs already fails in the clean run.
        if !entry.call.can_fail() || entry.injected {
            continue;
        }
        for errno in BATCH_ERRNOS {
            let after_lock = nth > 0 && clean[nth - 1].call == Call::Lock;
            let ignored = entry.call == Call::StatFile && after_lock;
            let variants = if retried(entry.call, errno) || best_effort(entry.call) || ignored {
                1
            } else {
                2
            };
            for cleanup_fails in [false, true].into_iter().take(variants) {
                images += run_batch_one(path, &clean_log, nth, commit_start, errno, cleanup_fails)?;
                runs += 1;
            }
        }
    }
    Ok((runs, images))
}

#[test]
fn every_call_of_a_batch_fails_in_turn() {
    let start = std::time::Instant::now();
    let (mut runs, mut images) = (0, 0);
    for path in batch_paths() {
        let (r, i) = run_batch_path(&path).unwrap_or_else(|e| panic!("{e}"));
        runs += r;
        images += i;
    }
    eprintln!(
        "batch fault injection: {runs} faulty runs, {images} crash images checked in {:.2?}",
        start.elapsed()
    );
}

#[test]
fn a_failed_batch_commit_names_a_temp_it_could_not_remove() {
    // Regression: after a failed commit the temps not yet renamed were
    // removed by `Drop`, which ignores errors: a temp could stay behind
    // while the error said nothing.
    let case = batch_paths()[0].case.clone();
    let (sim, _, result) = run_batch_case_with(&case, 1, |sim| {
        sim.fail_first(Call::SyncFs, errnos::EIO);
        sim.fail_first(Call::UnlinkAt, errnos::EIO);
    });
    let err = result.unwrap_err();
    assert_eq!(err.step(), Some(Step::SyncFilesystem), "{err}");
    assert!(err.replaced().is_empty(), "{err}");
    let temp = err.temp_left().expect("the error names the temp");
    assert!(sim.stat(temp).is_ok(), "{}", temp.display());
    let temps: usize = ["/d", "/e"]
        .iter()
        .map(|d| {
            sim.list_dir(d)
                .unwrap()
                .iter()
                .filter(|n| is_temp_name(n))
                .count()
        })
        .sum();
    assert_eq!(temps, 1, "the other temps are removed");
}

// ---- unnamed temps and backups, one by one ----

fn names_in(sim: &SimFs, dir: &str) -> Vec<String> {
    let names = sim.list_dir(dir).unwrap();
    names
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn o_tmpfile_unsupported_falls_back_and_a_real_failure_is_an_error() {
    let case = paths()
        .into_iter()
        .find(|p| p.name == "unnamed temp")
        .unwrap()
        .case;
    let expected = case.expected();
    // "Not here" (no O_TMPFILE on this filesystem or kernel): a named temp.
    for errno in [errnos::EOPNOTSUPP, errnos::EISDIR, errnos::EINVAL] {
        let (sim, _, result) = run_case_with(&case, 1, |sim| {
            sim.fail_first(Call::CreateUnnamed, errno);
        });
        result.unwrap_or_else(|e| panic!("errno {errno}: {e}"));
        let trace = sim.trace_lines();
        let unnamed = trace.iter().position(|l| l.starts_with("create_unnamed"));
        let next = &trace[unnamed.expect("O_TMPFILE tried first") + 1];
        assert!(next.starts_with("create_at(/d, .a.*.tmp"), "{trace:#?}");
        assert!(!trace.iter().any(|l| l.starts_with("link_unnamed")));
        assert_eq!(version(&sim.lock().volatile, &expected.path), expected.new);
    }
    // Anything else is a failure to create the temp: nothing is changed.
    for errno in [errnos::EIO, errnos::ENOSPC, errnos::EACCES] {
        let (sim, _, result) = run_case_with(&case, 1, |sim| {
            sim.fail_first(Call::CreateUnnamed, errno);
        });
        let err = result.unwrap_err();
        assert_eq!(err.step(), Some(Step::CreateTemp), "{err}");
        assert_eq!(err.raw_os_error(), Some(errno), "{err}");
        assert!(!sim.trace_lines().iter().any(|l| l.starts_with("create_at")));
        assert_eq!(names_in(&sim, "/d"), ["a"]);
        assert_eq!(version(&sim.lock().volatile, &expected.path), expected.old);
    }
}

#[test]
fn a_failed_link_of_an_unnamed_temp_leaves_no_name() {
    for name in ["unnamed temp", "unnamed temp, create_new"] {
        let case = paths().into_iter().find(|p| p.name == name).unwrap().case;
        let (sim, _, result) = run_case_with(&case, 1, |sim| {
            sim.fail_first(Call::LinkUnnamed, errnos::ENOSPC);
        });
        let err = result.unwrap_err();
        assert_eq!(err.step(), Some(Step::LinkTemp), "{name}: {err}");
        assert!(
            !err.target_replaced() && err.temp_left().is_none(),
            "{name}"
        );
        let want: &[&str] = if case.present { &["a"] } else { &[] };
        assert_eq!(names_in(&sim, "/d"), want, "{name}");
        // Nothing was unlinked: the temp never had a name.
        let trace = sim.trace_lines();
        assert!(
            !trace.iter().any(|l| l.starts_with("unlink_at")),
            "{trace:#?}"
        );
        // The unnamed inode is gone once closed.
        for model in Model::ALL {
            for image in sim.crash_images(model) {
                let names = image.list_dir("/d").unwrap();
                assert_eq!(names.len(), want.len(), "{name} in {model}");
            }
        }
    }
}

#[test]
fn a_failed_backup_leaves_the_target_old_and_no_temp() {
    for rotate in [false, true] {
        let backup = if rotate {
            Backup::Rotate
        } else {
            Backup::First
        };
        let case = Case {
            backup,
            ..paths()[1].case.clone()
        };
        let expected = case.expected();
        let (before, _) = expected.backup.clone().unwrap();
        let backup_before = case.setup(1).read_file(&before).ok();
        // The backup's link, then its rename (the first of each kind).
        for call in [Call::LinkAt, Call::RenameAt] {
            let (sim, _, result) = run_case_with(&case, 1, |sim| {
                sim.fail_first(call, errnos::EIO);
            });
            let err = result.unwrap_err();
            assert_eq!(err.step(), Some(Step::Backup), "{call}: {err}");
            assert!(!err.target_replaced(), "{err}");
            assert_eq!(version(&sim.lock().volatile, &expected.path), expected.old);
            let temps = names_in(&sim, "/d")
                .into_iter()
                .filter(|n| n.ends_with(".tmp"))
                .count();
            assert_eq!(temps, 0, "{call}: {:?}", names_in(&sim, "/d"));
            // The earlier backup (or its absence) is untouched.
            assert_eq!(sim.read_file(&before).ok(), backup_before, "{call}");
        }
    }
}

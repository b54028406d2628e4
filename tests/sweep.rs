//! `sweep` on a real filesystem: every dead writer's temp goes at once,
//! nothing else ever does (look-alike names, symlinks, directories, a live
//! writer's temp, a writer racing the sweep).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crashsafe::{Kept, Options, Step};

const DEAD: &str = ".a.crashsafe-abcdefghijkl.tmp";

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn a_dead_writers_temp_goes_at_once_and_nothing_else_ever() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Left by a dead writer a moment ago: no age rule keeps it.
    fs::write(d.join(DEAD), "x").unwrap();
    // Look-alikes that are not ours, however old.
    let others = [
        ".notes.sessionstore.tmp",
        ".a.abcdefghijkl.tmp",
        ".a.crashsafe-ABCDEFGHIJKL.tmp",
        ".a.crashsafe-abcdefghijk.tmp",
        ".a.crashsafe.abcdefghijkl.tmp",
        "a.crashsafe-abcdefghijkl.tmp",
        ".a.tmp",
        "data",
    ];
    for name in others {
        fs::write(d.join(name), "x").unwrap();
        let f = fs::File::options().write(true).open(d.join(name)).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(86_400))
            .unwrap();
    }
    // A temp-named symlink to a real file, and a temp-named directory.
    fs::write(d.join("precious"), "p").unwrap();
    let link = ".c.crashsafe-abcdefghijkl.tmp";
    std::os::unix::fs::symlink(d.join("precious"), d.join(link)).unwrap();
    fs::create_dir(d.join(".e.crashsafe-abcdefghijkl.tmp")).unwrap();
    // A live writer.
    let mut live = Options::new().open(d.join("live")).unwrap();
    std::io::Write::write_all(&mut live, b"in progress").unwrap();

    let report = crashsafe::sweep_report(d).unwrap();
    assert_eq!(report.removed, [d.join(DEAD)]);
    let mut kept: Vec<(String, Kept)> = report
        .kept
        .iter()
        .map(|(p, k)| (p.file_name().unwrap().to_string_lossy().into_owned(), *k))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert_eq!(kept[0], (link.to_string(), Kept::NotRegularFile));
    assert_eq!(
        kept[1],
        (
            ".e.crashsafe-abcdefghijkl.tmp".to_string(),
            Kept::NotRegularFile
        )
    );
    assert!(kept[2].0.starts_with(".live.crashsafe-") && kept[2].1 == Kept::InUse);
    for name in others.iter().chain(&["precious", link]) {
        assert!(
            fs::symlink_metadata(d.join(name)).is_ok(),
            "{name} was removed"
        );
    }
    live.commit().unwrap();
    assert_eq!(fs::read_to_string(d.join("live")).unwrap(), "in progress");
    assert_eq!(crashsafe::sweep(d).unwrap(), 0);
}

#[test]
fn an_extreme_mtime_is_no_problem() {
    // Any mtime a user can set (tmpfs takes the whole 64-bit range).
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let d = dir.path();
    // The far past is what overflowed `now - mtime` (old code).
    let times = [
        UNIX_EPOCH.checked_sub(Duration::from_secs(i64::MAX as u64 - 10)),
        UNIX_EPOCH.checked_add(Duration::from_secs(i64::MAX as u64 - 10)),
    ];
    let mut made = 0;
    for (i, t) in times.into_iter().enumerate() {
        let name = format!(".{i}.crashsafe-abcdefghijkl.tmp");
        fs::write(d.join(&name), "x").unwrap();
        let f = fs::File::options().write(true).open(d.join(&name)).unwrap();
        if t.is_some_and(|t| f.set_modified(t).is_ok()) {
            made += 1;
        }
    }
    let mtimes: Vec<i64> = (0..2)
        .map(|i| {
            let p = d.join(format!(".{i}.crashsafe-abcdefghijkl.tmp"));
            std::os::unix::fs::MetadataExt::mtime(&fs::metadata(p).unwrap())
        })
        .collect();
    println!("{made} of 2 extreme mtimes set: {mtimes:?}");
    assert_eq!(crashsafe::sweep(d).unwrap(), 2);
}

#[test]
fn a_missing_directory_is_named_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = crashsafe::sweep(&missing).unwrap_err();
    assert_eq!(err.step(), Some(Step::OpenDir));
    assert_eq!(err.target(), missing);
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "failed to open the directory {}: ",
            missing.display()
        )),
        "{text}"
    );
    assert!(!text.contains("parent"), "{text}");
}

#[test]
fn sweeping_in_a_loop_never_hurts_concurrent_writers() {
    // Writers replace files (some with a backup) while another thread
    // sweeps as fast as it can: every write succeeds, and at the end no
    // temp is left.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (d, stop) = (d.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut removed = 0;
            let mut sweeps = 0;
            while !stop.load(Ordering::Relaxed) {
                removed += crashsafe::sweep(&d).unwrap();
                sweeps += 1;
            }
            (sweeps, removed)
        })
    };
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut opts = Options::new();
                opts.backup(w == 0).unnamed_temp(w == 2);
                for i in 0..300 {
                    let path = d.join(format!("f{w}"));
                    opts.write(&path, format!("{w} {i}")).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (sweeps, removed) = sweeper.join().unwrap();
    // A temp caught between its create and its lock (or a backup link
    // before its rename) may be removed; its writer then starts again.
    println!("{sweeps} sweeps during 900 writes; {removed} fresh temps taken from writers");
    assert_eq!(names(&d), ["f0", "f0~", "f1", "f2"]);
    assert_eq!(fs::read_to_string(d.join("f0")).unwrap(), "0 299");
    assert_eq!(fs::read_to_string(d.join("f0~")).unwrap(), "0 298");
}

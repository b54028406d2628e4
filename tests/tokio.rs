//! The async wrappers (feature `tokio`) under a multi-threaded runtime.
#![cfg(all(feature = "tokio", unix))]

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crashsafe::{Batch, Options};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// Hidden temps (`.name.RANDOM.tmp`) in `dir`.
fn temps(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

#[test]
fn write_replaces_and_keeps_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg");
    fs::write(&path, b"old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
    runtime()
        .block_on(crashsafe::tokio::write(&path, b"new".to_vec()))
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o604
    );
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn write_with_options_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"old").unwrap();
    let mut opts = Options::new();
    opts.create_new(true);
    let rt = runtime();
    let e = rt
        .block_on(crashsafe::tokio::write_with(&opts, &path, "new"))
        .unwrap_err();
    assert!(!e.target_replaced(), "{e}");
    assert_eq!(fs::read(&path).unwrap(), b"old");
    // A missing directory: a clear error, as from the blocking call.
    let e = rt
        .block_on(crashsafe::tokio::write(dir.path().join("no/f"), "x"))
        .unwrap_err();
    assert!(e.to_string().contains("no/f"), "{e}");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn concurrent_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("counter"));
    let rt = runtime();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let path = Arc::clone(&path);
            tasks.push(tokio::spawn(async move {
                crashsafe::tokio::update(&*path, |old| {
                    let n: u64 = old.map_or(0, |b| String::from_utf8_lossy(b).parse().unwrap());
                    Ok((n + 1).to_string().into_bytes())
                })
                .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    });
    assert_eq!(fs::read_to_string(&*path).unwrap(), "40");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn batch_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut batch = Batch::new();
    for i in 0..5 {
        batch
            .write(dir.path().join(format!("part-{i}")), format!("{i}"))
            .unwrap();
    }
    runtime().block_on(crashsafe::tokio::commit(batch)).unwrap();
    for i in 0..5 {
        let text = fs::read_to_string(dir.path().join(format!("part-{i}"))).unwrap();
        assert_eq!(text, i.to_string());
    }
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn a_dropped_future_still_completes_the_replace() {
    // The update holds its closure until the future was dropped: the
    // replace must still finish, whole, and leave no temp.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"old").unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let rt = runtime();
    let seen = Arc::clone(&started);
    let p = path.clone();
    let task = rt.spawn(crashsafe::tokio::update(p, move |_| {
        seen.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        Ok(b"new".to_vec())
    }));
    // Abort the task (which drops the future) while the closure sleeps.
    while started.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    task.abort();
    assert!(rt.block_on(task).unwrap_err().is_cancelled());
    // Dropping the runtime waits for its blocking tasks.
    drop(rt);
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn a_panicking_update_closure_panics_the_caller_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"old").unwrap();
    let rt = runtime();
    let p = path.clone();
    let joined =
        rt.block_on(rt.spawn(async move { crashsafe::tokio::update(p, |_| panic!("boom")).await }));
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(fs::read(&path).unwrap(), b"old");
    assert!(temps(dir.path()).is_empty());
}

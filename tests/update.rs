//! `update` on a real filesystem: a nested update never hangs, and the
//! lock can be waited for with a limit or tried once.

use std::io::ErrorKind;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crashsafe::{Options, Step};

#[test]
fn a_nested_update_in_the_same_directory_fails_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let other = tempfile::tempdir().unwrap();
    let c = other.path().join("c");
    crashsafe::update(&a, |_| {
        let err = crashsafe::update(&b, |_| Ok(b"b".to_vec())).unwrap_err();
        assert_eq!(err.step(), Some(Step::Lock));
        assert_eq!(err.kind(), ErrorKind::Deadlock);
        assert!(err.to_string().contains("update inside an update"), "{err}");
        // Another directory is fine.
        crashsafe::update(&c, |_| Ok(b"c".to_vec())).unwrap();
        Ok(b"a".to_vec())
    })
    .unwrap();
    assert!(!b.exists());
    assert_eq!(std::fs::read(&a).unwrap(), b"a");
    assert_eq!(std::fs::read(&c).unwrap(), b"c");
    // The lock and the registry are released: the same update now works.
    crashsafe::update(&b, |_| Ok(b"b".to_vec())).unwrap();
}

#[test]
fn the_lock_can_be_waited_for_with_a_limit_or_tried_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // Another thread holds the directory's lock until told to go on.
    let held = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    let holder = {
        let (held, done) = (Arc::clone(&held), Arc::clone(&done));
        std::thread::spawn(move || {
            crashsafe::update(&a, |_| {
                held.wait();
                done.wait();
                Ok(b"a".to_vec())
            })
            .unwrap();
        })
    };
    held.wait();
    for limit in [Duration::ZERO, Duration::from_millis(30)] {
        let mut opts = Options::new();
        opts.lock_timeout(Some(limit));
        let err = opts.update(&b, |_| Ok(b"b".to_vec())).unwrap_err();
        assert_eq!(err.step(), Some(Step::Lock), "{err}");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(!b.exists());
    }
    done.wait();
    holder.join().unwrap();
    // Free again: a limited wait succeeds.
    let mut opts = Options::new();
    opts.lock_timeout(Some(Duration::from_secs(5)));
    opts.update(&b, |_| Ok(b"b".to_vec())).unwrap();
}

#[cfg(feature = "sim")]
#[test]
fn an_interrupted_lock_is_retried() {
    use crashsafe::sim::{Call, SimFs, errnos};
    let sim = SimFs::new(1);
    sim.mkdir("/d", 0o755).unwrap();
    for call in [Call::LockDir, Call::TryLockDir] {
        sim.fail_first(call, errnos::EINTR);
        let mut opts = Options::new();
        if call == Call::TryLockDir {
            opts.lock_timeout(Some(Duration::ZERO));
        }
        sim.update("/d/a", &opts, |_| Ok(b"x".to_vec())).unwrap();
        assert!(sim.faults_fired() > 0, "{call}");
    }
}

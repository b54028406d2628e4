//! Black-box tests of the public API on the real filesystem.
//!
//! Every test works in its own `tempfile::tempdir()` (never the current
//! directory) through [`common::Fixture`], which fails the test if any temp
//! file (`.NAME.<random>.tmp`) is left anywhere below it. Checks are exact:
//! contents byte for byte, all twelve permission bits, owner, and the inode
//! (a replace must produce a new one; a refused call must keep the old one).
//!
//! Tests that need root (giving files to another user) print `SKIPPED: ...`
//! and return when not root. Tests whose point is an unprivileged caller
//! (permission denied, best-effort owner, the kernel clearing setuid on
//! write, a sticky directory) rerun themselves as `nobody` in a child process
//! when root, and print `SKIPPED: ...` if that is impossible. Tests that need
//! a process-wide setting (umask, `RLIMIT_FSIZE`) also rerun themselves in a
//! child process, so this multithreaded process never changes it.

#![cfg(unix)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crashsafe::{AtomicFile, Durability, Error, InvalidReason, Options, Step};

use common::*;

/// Create and replace: contents, new inode, no leftovers.
mod replace {
    use super::*;

    #[test]
    fn creates_a_new_file() {
        let fx = Fixture::new();
        let target = fx.path("new.txt");
        crashsafe::write(&target, b"first\n").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"first\n");
        assert!(fs::symlink_metadata(&target).unwrap().file_type().is_file());
        assert_eq!(fs::read_dir(fx.root()).unwrap().count(), 1);
    }

    #[test]
    fn replaces_exact_contents_with_a_new_inode() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old contents that are longer than the new ones");
        let before = ino_of(&target);
        crashsafe::write(&target, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_ne!(ino_of(&target), before, "a replace must not write in place");
        assert_eq!(fs::read_dir(fx.root()).unwrap().count(), 1);
    }

    #[test]
    fn replaces_with_empty_and_with_large_contents() {
        let fx = Fixture::new();
        let target = fx.file("t", b"something");
        crashsafe::write(&target, b"").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"");
        // Larger than any internal buffer, and not a repeating pattern.
        let big: Vec<u8> = (0..3_000_017u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let before = ino_of(&target);
        crashsafe::write(&target, &big).unwrap();
        assert_eq!(fs::read(&target).unwrap(), big);
        assert_ne!(ino_of(&target), before);
    }

    #[test]
    fn repeated_replaces_each_take_effect() {
        let fx = Fixture::new();
        let target = fx.path("counter");
        let mut inodes = Vec::new();
        for i in 0..20 {
            crashsafe::write(&target, format!("value {i}")).unwrap();
            assert_eq!(fs::read_to_string(&target).unwrap(), format!("value {i}"));
            inodes.push(ino_of(&target));
            fx.assert_no_temps();
        }
        // Each replace installs a fresh inode over the previous one.
        assert!(inodes.windows(2).all(|w| w[0] != w[1]), "{inodes:?}");
    }

    #[test]
    fn consistent_durability_also_replaces() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        let before = ino_of(&target);
        Options::new()
            .durability(Durability::Consistent)
            .write(&target, b"new")
            .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_ne!(ino_of(&target), before);
    }

    #[test]
    fn a_hard_link_keeps_the_old_contents() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        let other = fx.path("other-name");
        fs::hard_link(&target, &other).unwrap();
        crashsafe::write(&target, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(fs::read(&other).unwrap(), b"old", "documented: links break");
    }

    #[test]
    fn parent_reached_through_a_symlinked_directory() {
        let fx = Fixture::new();
        fx.dir("real-dir");
        fx.file("real-dir/t", b"old");
        fx.symlink("dir-link", "real-dir");
        crashsafe::write(fx.path("dir-link/t"), b"new").unwrap();
        assert_eq!(fs::read(fx.path("real-dir/t")).unwrap(), b"new");
        assert!(is_symlink(&fx.path("dir-link")));
    }

    /// A relative path is resolved against the current directory, which the
    /// test never changes: it reaches the fixture through enough `..`.
    #[test]
    fn relative_caller_path() {
        let fx = Fixture::new();
        fx.file("t", b"old");
        let cwd = std::env::current_dir().unwrap();
        let ups = cwd.components().count() - 1;
        let mut rel = std::path::PathBuf::new();
        for _ in 0..ups {
            rel.push("..");
        }
        rel.push(fx.root().strip_prefix("/").unwrap());
        rel.push("t");
        assert!(rel.is_relative());
        crashsafe::write(&rel, b"new").unwrap();
        assert_eq!(fs::read(fx.path("t")).unwrap(), b"new");
        // Errors name the path as the caller gave it.
        let missing = rel.with_file_name("no-dir").join("x");
        let err = crashsafe::write(&missing, b"x").unwrap_err();
        check_refused(
            err,
            &missing,
            Some(Step::OpenParent),
            io::ErrorKind::NotFound,
        );
    }
}

/// Permission bits: kept from the old file, umask for new files, and
/// `Options::mode`.
mod modes {
    use super::*;

    /// Every interesting mode, special bits included, survives a replace.
    #[test]
    fn existing_mode_is_kept_including_special_bits() {
        let fx = Fixture::new();
        let modes = [
            0o644, 0o600, 0o640, 0o755, 0o400, 0o000, 0o777, 0o4755, 0o2750, 0o1644, 0o6755, 0o7777,
        ];
        for mode in modes {
            let name = format!("m{mode:o}");
            let target = fx.file_with_mode(&name, b"old", mode);
            let before = ino_of(&target);
            crashsafe::write(&target, format!("new {mode:o}")).unwrap();
            assert_eq!(mode_of(&target), mode, "mode {mode:o} not kept");
            // Without root, a file without read permission cannot be checked.
            if is_root() || mode & 0o400 != 0 {
                assert_eq!(
                    fs::read_to_string(&target).unwrap(),
                    format!("new {mode:o}")
                );
            }
            assert_ne!(ino_of(&target), before);
        }
    }

    #[test]
    fn existing_mode_is_kept_by_atomic_file() {
        let fx = Fixture::new();
        let target = fx.file_with_mode("t", b"old", 0o4750);
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(mode_of(&target), 0o4750);
    }

    #[test]
    fn new_file_gets_0666_minus_umask() {
        let fx = Fixture::new();
        let target = fx.path("new");
        crashsafe::write(&target, b"x").unwrap();
        assert_eq!(mode_of(&target), created_mode(0o666));
        let streamed = fx.path("streamed");
        AtomicFile::create(&streamed).unwrap().commit().unwrap();
        assert_eq!(mode_of(&streamed), created_mode(0o666));
    }

    #[test]
    fn options_mode_for_a_new_file_applies_the_umask() {
        let fx = Fixture::new();
        for mode in [0o600, 0o640, 0o777, 0o4755, 0o2770, 0o1666] {
            let target = fx.path(format!("n{mode:o}"));
            Options::new().mode(mode).write(&target, b"x").unwrap();
            assert_eq!(mode_of(&target), created_mode(mode), "mode {mode:o}");
        }
    }

    const UNPRIVILEGED_DIR_ENV: &str = "CRASHSAFE_TEST_UNPRIVILEGED_DIR";

    /// Without `CAP_FSETID`, the kernel clears setuid (and setgid with group
    /// execute) on every write; a mode asked for with `Options::mode` must
    /// still be the result. Root is exempt, so as root this reruns as nobody.
    #[test]
    fn options_mode_special_bits_survive_unprivileged_writes() {
        const NAME: &str = "options_mode_special_bits_survive_unprivileged_writes";
        const CASES: [(&str, u32); 4] = [
            ("suid", 0o4755),
            ("sgid", 0o2750),
            ("both", 0o6711),
            ("sticky", 0o1644),
        ];
        let run_cases = |dir: &Path| {
            for (name, mode) in CASES {
                let new = dir.join(format!("new-{name}"));
                Options::new().mode(mode).write(&new, b"data").unwrap();
                let existing = dir.join(format!("existing-{name}"));
                fs::write(&existing, b"old").unwrap();
                Options::new().mode(mode).write(&existing, b"data").unwrap();
                let mut f = Options::new()
                    .mode(mode)
                    .open(dir.join(format!("streamed-{name}")))
                    .unwrap();
                f.write_all(&[b's'; 20_000]).unwrap();
                f.commit().unwrap();
            }
        };
        let check = |dir: &Path| {
            for (name, mode) in CASES {
                for prefix in ["new", "existing", "streamed"] {
                    let path = dir.join(format!("{prefix}-{name}"));
                    assert_eq!(mode_of(&path), created_mode(mode), "{prefix}-{name}");
                }
            }
        };
        if let Some(dir) = std::env::var_os(UNPRIVILEGED_DIR_ENV) {
            // Child role, as nobody.
            assert!(!is_root());
            return run_cases(Path::new(&dir));
        }
        let fx = Fixture::new();
        if !is_root() {
            run_cases(fx.root());
            return check(fx.root());
        }
        set_mode(fx.root(), 0o777);
        let test = test_name(module_path!(), NAME);
        let run = run_child(&Child {
            test: &test,
            envs: vec![(UNPRIVILEGED_DIR_ENV, fx.root().as_os_str())],
            user: Some(NOBODY),
            ignore_sigxfsz: false,
        });
        if let ChildRun::CannotStart(e) = run {
            return skip(NAME, &format!("cannot run the test binary as nobody: {e}"));
        }
        check(fx.root());
    }

    #[test]
    fn options_mode_overrides_the_existing_mode() {
        let fx = Fixture::new();
        let target = fx.file_with_mode("t", b"old", 0o4755);
        Options::new().mode(0o600).write(&target, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(mode_of(&target), 0o600);
        let target = fx.file_with_mode("u", b"old", 0o600);
        Options::new().mode(0o2755).write(&target, b"new").unwrap();
        assert_eq!(mode_of(&target), created_mode(0o2755));
    }

    /// Runs the body of [`new_files_follow_the_umask`] in the child, which
    /// sets its own umask first; the parent checks the results.
    const UMASK_ENV: &str = "CRASHSAFE_TEST_UMASK";
    const DIR_ENV: &str = "CRASHSAFE_TEST_DIR";

    /// What the child creates under its umask: (name, requested mode). A
    /// `None` mode means the default (0o666 for a new file).
    const UMASK_CASES: [(&str, Option<u32>); 5] = [
        ("default", None),
        ("mode-0666", Some(0o666)),
        ("mode-4775", Some(0o4775)),
        ("streamed", None),
        ("create-new", None),
    ];

    fn umask_child(dir: &Path, umask: u32) {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
        for (name, mode) in UMASK_CASES {
            let target = dir.join(name);
            let mut opts = Options::new();
            if let Some(mode) = mode {
                opts.mode(mode);
            }
            match name {
                "streamed" => {
                    let mut f = opts.open(&target).unwrap();
                    f.write_all(b"streamed").unwrap();
                    f.commit().unwrap();
                }
                "create-new" => opts.create_new(true).write(&target, name).unwrap(),
                _ => opts.write(&target, name).unwrap(),
            }
        }
        // Existing files: the kept mode ignores the umask, an explicit mode
        // does not.
        crashsafe::write(dir.join("existing-0666"), b"kept").unwrap();
        Options::new()
            .mode(0o666)
            .write(dir.join("existing-override"), b"override")
            .unwrap();
    }

    #[test]
    fn new_files_follow_the_umask() {
        const NAME: &str = "new_files_follow_the_umask";
        if let (Some(dir), Some(umask)) = (std::env::var_os(DIR_ENV), std::env::var_os(UMASK_ENV)) {
            // Child role: this process runs only this test, on one thread.
            let umask = u32::from_str_radix(umask.to_str().unwrap(), 8).unwrap();
            umask_child(Path::new(&dir), umask);
            return;
        }
        for umask in [0o027, 0o077, 0o000, 0o002] {
            let fx = Fixture::new();
            fx.file_with_mode("existing-0666", b"old", 0o666);
            fx.file_with_mode("existing-override", b"old", 0o600);
            let umask_text = format!("{umask:o}");
            let test = test_name(module_path!(), NAME);
            let run = run_child(&Child {
                test: &test,
                envs: vec![
                    (DIR_ENV, fx.root().as_os_str()),
                    (UMASK_ENV, OsStr::new(&umask_text)),
                ],
                user: None,
                ignore_sigxfsz: false,
            });
            assert!(matches!(run, ChildRun::Passed));
            for (name, mode) in UMASK_CASES {
                let want = mode.unwrap_or(0o666) & !umask;
                assert_eq!(
                    mode_of(&fx.path(name)),
                    want,
                    "{name} under umask {umask:o}"
                );
            }
            assert_eq!(fs::read(fx.path("streamed")).unwrap(), b"streamed");
            assert_eq!(fs::read(fx.path("create-new")).unwrap(), b"create-new");
            assert_eq!(mode_of(&fx.path("existing-0666")), 0o666);
            assert_eq!(fs::read(fx.path("existing-0666")).unwrap(), b"kept");
            assert_eq!(mode_of(&fx.path("existing-override")), 0o666 & !umask);
            assert_eq!(fs::read(fx.path("existing-override")).unwrap(), b"override");
        }
    }
}

/// Owner and group: kept as root, best effort otherwise.
mod owner {
    use super::*;

    const OTHER: u32 = 12345;

    #[test]
    fn owner_and_group_kept_as_root() {
        if !is_root() {
            return skip(
                "owner_and_group_kept_as_root",
                "needs root to give a file to another user",
            );
        }
        let fx = Fixture::new();
        let target = fx.file_with_mode("t", b"old", 0o640);
        chown(&target, OTHER, OTHER);
        crashsafe::write(&target, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(owner_of(&target), (OTHER, OTHER));
        assert_eq!(mode_of(&target), 0o640);
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"streamed").unwrap();
        f.commit().unwrap();
        assert_eq!(owner_of(&target), (OTHER, OTHER));
    }

    /// As root the chown clears setuid/setgid; the mode must be set after it.
    #[test]
    fn special_bits_survive_the_chown_as_root() {
        if !is_root() {
            return skip(
                "special_bits_survive_the_chown_as_root",
                "needs root to give a file to another user",
            );
        }
        let fx = Fixture::new();
        for mode in [0o4755, 0o2750, 0o1644, 0o6711, 0o2070] {
            let target = fx.path(format!("m{mode:o}"));
            fs::write(&target, b"old").unwrap();
            chown(&target, OTHER, OTHER);
            set_mode(&target, mode);
            assert_eq!(mode_of(&target), mode);
            crashsafe::write(&target, b"new").unwrap();
            assert_eq!(owner_of(&target), (OTHER, OTHER), "mode {mode:o}");
            assert_eq!(mode_of(&target), mode, "mode {mode:o} lost at the chown");
        }
    }

    /// `Options::mode` with setuid on a target owned by someone else: the
    /// chown must not strip the requested bits.
    #[test]
    fn options_mode_with_special_bits_survives_the_chown_as_root() {
        if !is_root() {
            return skip(
                "options_mode_with_special_bits_survives_the_chown_as_root",
                "needs root to give a file to another user",
            );
        }
        let fx = Fixture::new();
        for mode in [0o4755, 0o2750, 0o6777, 0o1640] {
            let target = fx.file_with_mode(format!("m{mode:o}"), b"old", 0o644);
            chown(&target, OTHER, OTHER);
            Options::new().mode(mode).write(&target, b"new").unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"new");
            assert_eq!(owner_of(&target), (OTHER, OTHER));
            assert_eq!(mode_of(&target), created_mode(mode), "mode {mode:o}");
        }
    }

    #[test]
    fn preserve_owner_false_gives_the_file_to_the_caller() {
        if !is_root() {
            return skip(
                "preserve_owner_false_gives_the_file_to_the_caller",
                "needs root to give a file to another user first",
            );
        }
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        // chown first: it clears setuid.
        chown(&target, OTHER, OTHER);
        set_mode(&target, 0o4750);
        Options::new()
            .preserve_owner(false)
            .write(&target, b"new")
            .unwrap();
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        assert_eq!(owner_of(&target), me);
        // Never wider than before (issue 11): not the old owner, so no
        // setuid; not the old group, so the group gets what both the old
        // group and "others" had (nothing here).
        assert_eq!(mode_of(&target), 0o700);
    }

    const DIR_ENV: &str = "CRASHSAFE_TEST_FOREIGN_DIR";

    /// Not root: the target belongs to another user, so its owner cannot be
    /// kept; that is ignored (best effort), and the mode narrowed so that
    /// the caller's group gains nothing. Needs a
    /// foreign-owned file, so root prepares it and reruns the test as
    /// `nobody`.
    #[test]
    fn foreign_owner_is_best_effort_when_not_root() {
        const NAME: &str = "foreign_owner_is_best_effort_when_not_root";
        if let Some(dir) = std::env::var_os(DIR_ENV) {
            // Child role, as nobody.
            assert!(!is_root());
            let target = Path::new(&dir).join("t");
            crashsafe::write(&target, b"new").unwrap();
            return;
        }
        if !is_root() {
            return skip(NAME, "needs root to create a file owned by another user");
        }
        let fx = Fixture::new();
        set_mode(fx.root(), 0o777);
        let target = fx.file_with_mode("t", b"old", 0o640);
        chown(&target, OTHER, OTHER);
        let test = test_name(module_path!(), NAME);
        let run = run_child(&Child {
            test: &test,
            envs: vec![(DIR_ENV, fx.root().as_os_str())],
            user: Some(NOBODY),
            ignore_sigxfsz: false,
        });
        if let ChildRun::CannotStart(e) = run {
            return skip(NAME, &format!("cannot run the test binary as nobody: {e}"));
        }
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(owner_of(&target), (NOBODY, NOBODY));
        // The old group's read bit must not pass to nobody's group
        // (issue 11): the group keeps only what "others" had.
        assert_eq!(mode_of(&target), 0o600);
    }
}

/// Symlinks at the target, followed (the default) or replaced.
mod symlinks {
    use super::*;

    #[test]
    fn followed_link_stays_and_the_real_file_is_replaced() {
        let fx = Fixture::new();
        let real = fx.file_with_mode("real", b"old", 0o640);
        let link = fx.symlink("link", "real");
        let before = ino_of(&real);
        crashsafe::write(&link, b"new").unwrap();
        assert!(is_symlink(&link));
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("real"));
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_ne!(ino_of(&real), before);
        // The real file's mode, not the link's 0777.
        assert_eq!(mode_of(&real), 0o640);
    }

    #[test]
    fn followed_link_with_atomic_file() {
        let fx = Fixture::new();
        let real = fx.file_with_mode("real", b"old", 0o600);
        let link = fx.symlink("link", "real");
        let mut f = AtomicFile::create(&link).unwrap();
        assert_eq!(f.target(), link);
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert!(is_symlink(&link));
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(mode_of(&real), 0o600);
    }

    #[test]
    fn not_following_replaces_the_link_itself() {
        let fx = Fixture::new();
        let real = fx.file_with_mode("real", b"old", 0o600);
        let link = fx.symlink("link", "real");
        let before = fx.snapshot()[Path::new("real")].clone();
        Options::new()
            .follow_symlinks(false)
            .write(&link, b"new")
            .unwrap();
        assert!(!is_symlink(&link));
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
        assert_eq!(fs::read(&link).unwrap(), b"new");
        // A new regular file: 0666 minus umask, not the link's 0777 and not
        // the old target's mode.
        assert_eq!(mode_of(&link), created_mode(0o666));
        assert_eq!(fx.snapshot()[Path::new("real")], before);
        assert_eq!(fs::read(&real).unwrap(), b"old");
    }

    #[test]
    fn not_following_replaces_a_dangling_or_looping_link() {
        let fx = Fixture::new();
        let dangling = fx.symlink("dangling", "missing");
        let looping = fx.symlink("loop", "loop");
        let opts = Options::new().follow_symlinks(false).clone();
        opts.write(&dangling, b"d").unwrap();
        opts.write(&looping, b"l").unwrap();
        assert_eq!(fs::read(&dangling).unwrap(), b"d");
        assert_eq!(fs::read(&looping).unwrap(), b"l");
        assert!(!fx.path("missing").exists());
    }

    /// A relative link resolves against the link's directory, not the
    /// current directory and not the caller's path.
    #[test]
    fn relative_link_in_a_subdirectory() {
        let fx = Fixture::new();
        fx.dir("sub");
        let real = fx.file_with_mode("x", b"old", 0o604);
        let link = fx.symlink("sub/link", "../x");
        crashsafe::write(&link, b"new").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(mode_of(&real), 0o604);
        assert!(is_symlink(&link));
        assert!(!fx.path("sub/x").exists());
        let names: Vec<_> = fs::read_dir(fx.path("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "only the link in sub/");
    }

    #[test]
    fn chained_links() {
        let fx = Fixture::new();
        fx.dir("d1");
        fx.dir("d2");
        let real = fx.file_with_mode("d2/c", b"old", 0o640);
        // a -> d1/b -> ../d2/c, each relative to its own directory.
        let a = fx.symlink("a", "d1/b");
        let b = fx.symlink("d1/b", "../d2/c");
        let before = ino_of(&real);
        crashsafe::write(&a, b"new").unwrap();
        assert!(is_symlink(&a));
        assert!(is_symlink(&b));
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_ne!(ino_of(&real), before);
        assert_eq!(mode_of(&real), 0o640);
    }

    /// `..` in a link is relative to the directory the link really lives in,
    /// even when the caller reached it through a symlinked directory: a
    /// lexical clean-up of `dir-link/../x` would pick the wrong `x`.
    #[test]
    fn dot_dot_in_a_link_reached_through_a_symlinked_directory() {
        let fx = Fixture::new();
        fx.dir("a/b");
        let real = fx.file_with_mode("a/x", b"old", 0o640);
        let decoy = fx.file("x", b"decoy");
        fx.symlink("dir-link", "a/b");
        let link = fx.symlink("a/b/link", "../x");
        crashsafe::write(fx.path("dir-link/link"), b"new").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(mode_of(&real), 0o640);
        assert_eq!(fs::read(&decoy).unwrap(), b"decoy");
        assert!(is_symlink(&link));
    }

    /// Chains are followed as far as the kernel follows them (40 links),
    /// and a longer chain is refused with `ELOOP`, as `open` would.
    #[test]
    fn chain_length_matches_the_kernel() {
        let fx = Fixture::new();
        let real = fx.file("real", b"old");
        let mut prev = "real".to_string();
        for i in 1..=41 {
            let name = format!("l{i}");
            fx.symlink(&name, &prev);
            prev = name;
        }
        // The kernel's own verdicts, for comparison.
        assert_eq!(fs::read(fx.path("l40")).unwrap(), b"old");
        let os = fs::read(fx.path("l41")).unwrap_err();
        assert_eq!(os.raw_os_error(), Some(eloop()));
        crashsafe::write(fx.path("l40"), b"new").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new");
        let before = fx.snapshot();
        let err = crashsafe::write(fx.path("l41"), b"newer").unwrap_err();
        check_refused(
            err,
            &fx.path("l41"),
            Some(Step::ResolveSymlink),
            err_kind_of_eloop(),
        );
        assert_eq!(fx.snapshot(), before);
    }

    #[test]
    fn absolute_link_into_another_directory() {
        let fx = Fixture::new();
        let elsewhere = Fixture::new();
        let real = elsewhere.file_with_mode("real", b"old", 0o2750);
        let link = fx.symlink("link", &real);
        crashsafe::write(&link, b"new").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(mode_of(&real), 0o2750);
        assert_eq!(fs::read_link(&link).unwrap(), real);
    }

    #[test]
    fn dangling_link_creates_the_file_it_points_to() {
        let fx = Fixture::new();
        fx.dir("sub");
        let link = fx.symlink("link", "sub/missing");
        crashsafe::write(&link, b"created").unwrap();
        assert!(is_symlink(&link));
        assert_eq!(fs::read(fx.path("sub/missing")).unwrap(), b"created");
        assert_eq!(mode_of(&fx.path("sub/missing")), created_mode(0o666));
    }

    #[test]
    fn symlink_loop_is_an_error_and_creates_nothing() {
        let fx = Fixture::new();
        let a = fx.symlink("a", "b");
        fx.symlink("b", "a");
        let me = fx.symlink("self", "self");
        let before = fx.snapshot();
        for target in [&a, &me] {
            let err = crashsafe::write(target, b"x").unwrap_err();
            let err = check_refused(err, target, Some(Step::ResolveSymlink), err_kind_of_eloop());
            assert_eq!(err.raw_os_error(), Some(eloop()));
            let err = AtomicFile::create(target).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(eloop()));
        }
        assert_eq!(fx.snapshot(), before);
    }

    #[test]
    fn link_into_a_missing_directory() {
        let fx = Fixture::new();
        let link = fx.symlink("link", "no-such-dir/x");
        let before = fx.snapshot();
        let err = crashsafe::write(&link, b"x").unwrap_err();
        check_refused(err, &link, Some(Step::OpenParent), io::ErrorKind::NotFound);
        assert_eq!(fx.snapshot(), before);
    }

    #[test]
    fn link_to_a_directory_or_a_fifo_is_refused() {
        let fx = Fixture::new();
        fx.dir("d");
        mkfifo(&fx.path("fifo"));
        let to_dir = fx.symlink("to-dir", "d");
        let to_fifo = fx.symlink("to-fifo", "fifo");
        let before = fx.snapshot();
        let err = crashsafe::write(&to_dir, b"x").unwrap_err();
        let err = check_refused(err, &to_dir, None, io::ErrorKind::IsADirectory);
        assert!(matches!(
            err,
            Error::InvalidTarget {
                reason: InvalidReason::IsDirectory,
                ..
            }
        ));
        let err = crashsafe::write(&to_fifo, b"x").unwrap_err();
        let err = check_refused(err, &to_fifo, None, io::ErrorKind::InvalidInput);
        assert!(matches!(
            err,
            Error::InvalidTarget {
                reason: InvalidReason::NotRegularFile,
                ..
            }
        ));
        assert_eq!(fx.snapshot(), before);
    }

    /// The kind std gives `ELOOP` (`FilesystemLoop` is not nameable on stable).
    pub(super) fn err_kind_of_eloop() -> io::ErrorKind {
        io::Error::from_raw_os_error(eloop()).kind()
    }
}

/// `create_new`: atomic no-clobber.
mod create_new {
    use super::*;

    fn create_new() -> Options {
        Options::new().create_new(true).clone()
    }

    #[test]
    fn absent_target_is_created() {
        let fx = Fixture::new();
        let target = fx.path("t");
        create_new().write(&target, b"fresh").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"fresh");
        assert_eq!(mode_of(&target), created_mode(0o666));
        let streamed = fx.path("s");
        let mut f = create_new().open(&streamed).unwrap();
        f.write_all(b"streamed").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&streamed).unwrap(), b"streamed");
    }

    #[test]
    fn existing_target_is_refused_untouched() {
        let fx = Fixture::new();
        let target = fx.file_with_mode("t", b"old", 0o640);
        let before = fx.snapshot();
        let err = create_new().write(&target, b"new").unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }));
        let err = check_refused(
            err,
            &target,
            Some(Step::InspectTarget),
            io::ErrorKind::AlreadyExists,
        );
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::AlreadyExists);
        let err = create_new().open(&target).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fx.snapshot(), before);
    }

    /// The target appears after `open` (which saw it absent) and before the
    /// commit: the rename itself must refuse to clobber it.
    #[test]
    fn target_created_during_the_write_is_not_clobbered() {
        let fx = Fixture::new();
        let target = fx.path("t");
        let mut f = create_new().open(&target).unwrap();
        f.write_all(b"from crashsafe").unwrap();
        fs::write(&target, b"someone else").unwrap();
        let mut before = fx.snapshot();
        // The temp exists now; it must be gone after the refused commit.
        before.retain(|path, _| !is_temp_like(path.as_os_str()));
        assert_eq!(before.len(), 1);
        let err = f.commit().unwrap_err();
        check_refused(
            err,
            &target,
            Some(Step::Rename),
            io::ErrorKind::AlreadyExists,
        );
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fs::read(&target).unwrap(), b"someone else");
    }

    #[test]
    fn existing_symlink_to_a_file_is_refused() {
        let fx = Fixture::new();
        fx.file("real", b"old");
        let link = fx.symlink("link", "real");
        let before = fx.snapshot();
        for follow in [true, false] {
            let err = create_new()
                .follow_symlinks(follow)
                .write(&link, b"new")
                .unwrap_err();
            check_refused(
                err,
                &link,
                Some(Step::InspectTarget),
                io::ErrorKind::AlreadyExists,
            );
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// Not following, the link itself is the target and it exists.
    #[test]
    fn existing_dangling_symlink_is_refused_when_not_following() {
        let fx = Fixture::new();
        let link = fx.symlink("link", "missing");
        let before = fx.snapshot();
        let err = create_new()
            .follow_symlinks(false)
            .write(&link, b"new")
            .unwrap_err();
        check_refused(
            err,
            &link,
            Some(Step::InspectTarget),
            io::ErrorKind::AlreadyExists,
        );
        assert_eq!(fx.snapshot(), before);
    }

    /// Following (the default), a dangling link names an absent file, which
    /// is created; the link stays. (Unlike `O_CREAT|O_EXCL`, which refuses
    /// any symlink; this follows the documented symlink policy.)
    #[test]
    fn existing_dangling_symlink_is_followed_by_default() {
        let fx = Fixture::new();
        let link = fx.symlink("link", "missing");
        create_new().write(&link, b"new").unwrap();
        assert!(is_symlink(&link));
        assert_eq!(fs::read(fx.path("missing")).unwrap(), b"new");
        let err = create_new().write(&link, b"again").unwrap_err();
        check_refused(
            err,
            &link,
            Some(Step::InspectTarget),
            io::ErrorKind::AlreadyExists,
        );
        assert_eq!(fs::read(fx.path("missing")).unwrap(), b"new");
    }
}

/// `AtomicFile`: streaming, seeking, and abandoning.
mod atomic_file {
    use super::*;

    #[test]
    fn streams_in_chunks_of_many_sizes() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        let mut expected = Vec::new();
        let mut f = AtomicFile::create(&target).unwrap();
        // Sizes below, at and above the internal buffer.
        for (i, size) in [1usize, 7, 4096, 8191, 8192, 8193, 20_000, 3, 100_000]
            .into_iter()
            .cycle()
            .take(60)
            .enumerate()
        {
            let chunk: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
            f.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        f.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), expected);
    }

    #[test]
    fn writes_before_commit_are_invisible() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        let absent = fx.path("absent");
        let before = ino_of(&target);
        let mut f = AtomicFile::create(&target).unwrap();
        let mut g = AtomicFile::create(&absent).unwrap();
        f.write_all(&[b'n'; 50_000]).unwrap();
        g.write_all(b"new").unwrap();
        f.flush().unwrap();
        g.flush().unwrap();
        // The bytes are in the temps, not at the targets.
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(ino_of(&target), before);
        assert!(!absent.exists());
        let temps = temps_in(fx.root());
        assert_eq!(temps.len(), 2, "{temps:?}");
        let sizes: Vec<u64> = temps
            .iter()
            .map(|t| fs::metadata(t).unwrap().len())
            .collect();
        assert!(sizes.contains(&50_000) && sizes.contains(&3), "{sizes:?}");
        f.commit().unwrap();
        g.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), vec![b'n'; 50_000]);
        assert_eq!(fs::read(&absent).unwrap(), b"new");
    }

    #[test]
    fn seek_overwrites_in_the_middle() {
        let fx = Fixture::new();
        let target = fx.path("t");
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"hello world, hello moon").unwrap();
        assert_eq!(f.seek(SeekFrom::Start(6)).unwrap(), 6);
        f.write_all(b"WORLD").unwrap();
        assert_eq!(f.seek(SeekFrom::End(-4)).unwrap(), 19);
        f.write_all(b"MOON").unwrap();
        assert_eq!(f.seek(SeekFrom::Current(-10)).unwrap(), 13);
        f.write_all(b"HELLO").unwrap();
        assert_eq!(f.stream_position().unwrap(), 18);
        f.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello WORLD, HELLO MOON");
    }

    #[test]
    fn seek_past_the_end_leaves_a_hole_of_zeros() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"ab").unwrap();
        assert_eq!(f.seek(SeekFrom::Start(100_000)).unwrap(), 100_000);
        f.write_all(b"cd").unwrap();
        // End is now the far end.
        assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 100_002);
        f.write_all(b"ef").unwrap();
        f.commit().unwrap();
        let got = fs::read(&target).unwrap();
        assert_eq!(got.len(), 100_004);
        assert_eq!(&got[..2], b"ab");
        assert!(got[2..100_000].iter().all(|&b| b == 0));
        assert_eq!(&got[100_000..], b"cdef");
    }

    #[test]
    fn seek_before_the_start_is_an_error() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"abc").unwrap();
        let e = f.seek(SeekFrom::Current(-4)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = f.seek(SeekFrom::End(-4)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // The position did not move: writing continues after "abc".
        f.write_all(b"d").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"abcd");
    }

    #[test]
    fn drop_leaves_the_target_untouched_and_no_temp() {
        let fx = Fixture::new();
        fx.file_with_mode("t", b"old", 0o640);
        let before = fx.snapshot();
        {
            let mut f = AtomicFile::create(fx.path("t")).unwrap();
            f.write_all(&[b'x'; 100_000]).unwrap();
            f.write_all(b"buffered tail").unwrap();
            let mut g = AtomicFile::create(fx.path("absent")).unwrap();
            g.write_all(b"never").unwrap();
            assert_eq!(temps_in(fx.root()).len(), 2);
        }
        assert_eq!(fx.snapshot(), before);
    }

    #[test]
    fn discard_leaves_the_target_untouched_and_no_temp() {
        let fx = Fixture::new();
        fx.file_with_mode("t", b"old", 0o640);
        let before = fx.snapshot();
        let mut f = AtomicFile::create(fx.path("t")).unwrap();
        f.write_all(&[b'x'; 100_000]).unwrap();
        f.write_all(b"buffered tail").unwrap();
        assert_eq!(temps_in(fx.root()).len(), 1);
        f.discard().unwrap();
        let mut g = AtomicFile::create(fx.path("absent")).unwrap();
        g.write_all(b"never").unwrap();
        g.discard().unwrap();
        // A discard right after open, with nothing written.
        AtomicFile::create(fx.path("t")).unwrap().discard().unwrap();
        assert_eq!(fx.snapshot(), before);
    }

    #[test]
    fn commit_with_nothing_written_gives_an_empty_file() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        AtomicFile::create(&target).unwrap().commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"");
    }

    #[test]
    fn two_writers_last_commit_wins() {
        let fx = Fixture::new();
        let target = fx.file("t", b"old");
        let mut a = AtomicFile::create(&target).unwrap();
        let mut b = AtomicFile::create(&target).unwrap();
        a.write_all(b"from a").unwrap();
        b.write_all(b"from b").unwrap();
        b.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"from b");
        a.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"from a");
    }

    #[test]
    fn target_and_debug_name_the_callers_path() {
        let fx = Fixture::new();
        let target = fx.path("t");
        let f = AtomicFile::create(&target).unwrap();
        assert_eq!(f.target(), target);
        assert!(format!("{f:?}").contains(&target.display().to_string()));
        f.discard().unwrap();
    }
}

/// Paths and targets that cannot be replaced: a clear error, nothing changed.
mod bad_input {
    use super::*;

    /// Runs `write`, `create_new` and `AtomicFile::create` on `target` and
    /// checks each error; nothing below the fixture may change.
    fn refused(fx: &Fixture, target: &Path, step: Option<Step>, kind: io::ErrorKind) -> Vec<Error> {
        let before = fx.snapshot();
        let errors = vec![
            crashsafe::write(target, b"new").unwrap_err(),
            Options::new()
                .create_new(true)
                .write(target, b"new")
                .unwrap_err(),
            Options::new()
                .follow_symlinks(false)
                .mode(0o600)
                .write(target, b"new")
                .unwrap_err(),
            AtomicFile::create(target).unwrap_err(),
        ];
        let checked = errors
            .into_iter()
            .map(|e| check_refused(e, target, step, kind))
            .collect();
        assert_eq!(
            fx.snapshot(),
            before,
            "{} changed something",
            target.display()
        );
        checked
    }

    fn reason(e: &Error) -> InvalidReason {
        match e {
            Error::InvalidTarget { reason, .. } => *reason,
            other => panic!("expected InvalidTarget, got {other:?}"),
        }
    }

    #[test]
    fn empty_path() {
        let fx = Fixture::new();
        for e in refused(&fx, Path::new(""), None, io::ErrorKind::InvalidInput) {
            assert_eq!(reason(&e), InvalidReason::Empty);
            assert!(e.to_string().contains("empty"), "{e}");
        }
    }

    #[test]
    fn paths_without_a_file_name() {
        let fx = Fixture::new();
        fx.dir("sub");
        fx.file("file", b"old");
        let mut paths = vec![
            Path::new("/").to_path_buf(),
            Path::new("..").to_path_buf(),
            Path::new(".").to_path_buf(),
        ];
        for rel in [
            "sub/..", "sub/.", "file/", "sub/", "missing/", "file/.", "file/..",
        ] {
            // Built as bytes: `Path::join` would keep these, but be explicit.
            let mut bytes = fx.root().as_os_str().as_bytes().to_vec();
            bytes.push(b'/');
            bytes.extend_from_slice(rel.as_bytes());
            paths.push(OsStr::from_bytes(&bytes).into());
        }
        for path in paths {
            for e in refused(&fx, &path, None, io::ErrorKind::InvalidInput) {
                assert_eq!(reason(&e), InvalidReason::NoFileName, "{}", path.display());
            }
        }
        assert_eq!(fs::read(fx.path("file")).unwrap(), b"old");
    }

    #[test]
    fn target_is_a_directory() {
        let fx = Fixture::new();
        fx.dir("sub");
        fx.file("sub/inside", b"keep");
        for e in refused(&fx, &fx.path("sub"), None, io::ErrorKind::IsADirectory) {
            assert_eq!(reason(&e), InvalidReason::IsDirectory);
        }
    }

    #[test]
    fn parent_is_missing() {
        let fx = Fixture::new();
        let target = fx.path("no-such-dir/t");
        refused(
            &fx,
            &target,
            Some(Step::OpenParent),
            io::ErrorKind::NotFound,
        );
        assert!(!fx.path("no-such-dir").exists());
    }

    #[test]
    fn parent_is_a_regular_file() {
        let fx = Fixture::new();
        fx.file("file", b"old");
        let target = fx.path("file/t");
        for e in refused(
            &fx,
            &target,
            Some(Step::OpenParent),
            io::ErrorKind::NotADirectory,
        ) {
            assert_eq!(e.raw_os_error(), Some(enotdir()));
        }
    }

    #[test]
    fn parent_is_a_symlink_loop() {
        let fx = Fixture::new();
        fx.symlink("loop", "loop");
        let target = fx.path("loop/t");
        for e in refused(
            &fx,
            &target,
            Some(Step::OpenParent),
            symlinks::err_kind_of_eloop(),
        ) {
            assert_eq!(e.raw_os_error(), Some(eloop()));
        }
    }

    #[test]
    fn target_is_a_fifo() {
        let fx = Fixture::new();
        let fifo = fx.path("fifo");
        mkfifo(&fifo);
        for e in refused(&fx, &fifo, None, io::ErrorKind::InvalidInput) {
            assert_eq!(reason(&e), InvalidReason::NotRegularFile);
        }
    }

    #[test]
    fn target_is_a_unix_socket() {
        let fx = Fixture::new();
        let sock = fx.path("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for e in refused(&fx, &sock, None, io::ErrorKind::InvalidInput) {
            assert_eq!(reason(&e), InvalidReason::NotRegularFile);
        }
    }

    #[test]
    fn target_is_a_symlink_loop() {
        let fx = Fixture::new();
        let a = fx.symlink("a", "b");
        fx.symlink("b", "a");
        let before = fx.snapshot();
        // Following: an error. (Not following replaces the link; see `symlinks`.)
        let err = crashsafe::write(&a, b"x").unwrap_err();
        check_refused(
            err,
            &a,
            Some(Step::ResolveSymlink),
            symlinks::err_kind_of_eloop(),
        );
        let err = Options::new().create_new(true).write(&a, b"x").unwrap_err();
        check_refused(
            err,
            &a,
            Some(Step::ResolveSymlink),
            symlinks::err_kind_of_eloop(),
        );
        assert_eq!(fx.snapshot(), before);
    }

    #[test]
    fn name_longer_than_255_bytes() {
        let fx = Fixture::new();
        let target = fx.path("n".repeat(256));
        let before = fx.snapshot();
        let err = crashsafe::write(&target, b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(enametoolong()));
        assert!(!err.target_replaced());
        assert_eq!(err.target(), target);
        assert!(err.step().is_some());
        assert_eq!(fx.snapshot(), before);
    }

    /// As a user who may not write the directory: refused at `CreateTemp`.
    fn expect_create_temp_denied(target: &Path) {
        let err = crashsafe::write(target, b"new").unwrap_err();
        check_refused(
            err,
            target,
            Some(Step::CreateTemp),
            io::ErrorKind::PermissionDenied,
        );
        let err = AtomicFile::create(target).unwrap_err();
        check_refused(
            err,
            target,
            Some(Step::CreateTemp),
            io::ErrorKind::PermissionDenied,
        );
    }

    const DIR_ENV: &str = "CRASHSAFE_TEST_READONLY_DIR";

    #[test]
    fn read_only_directory_is_permission_denied() {
        const NAME: &str = "read_only_directory_is_permission_denied";
        if let Some(dir) = std::env::var_os(DIR_ENV) {
            // Child role, as nobody: the parent owns `dir` and checks it.
            assert!(!is_root());
            return expect_create_temp_denied(&Path::new(&dir).join("ro/t"));
        }
        let fx = Fixture::new();
        fx.dir("ro");
        fx.file_with_mode("ro/t", b"old", 0o644);
        if is_root() {
            // Root bypasses permission checks; run the check as nobody.
            set_mode(fx.root(), 0o755);
            set_mode(&fx.path("ro"), 0o755);
            let before = fx.snapshot();
            let test = test_name(module_path!(), NAME);
            let run = run_child(&Child {
                test: &test,
                envs: vec![(DIR_ENV, fx.root().as_os_str())],
                user: Some(NOBODY),
                ignore_sigxfsz: false,
            });
            if let ChildRun::CannotStart(e) = run {
                return skip(
                    NAME,
                    &format!(
                        "root bypasses permissions, and nobody cannot run the test binary: {e}"
                    ),
                );
            }
            assert_eq!(fx.snapshot(), before);
            return;
        }
        set_mode(&fx.path("ro"), 0o500);
        let before = fx.snapshot();
        expect_create_temp_denied(&fx.path("ro/t"));
        assert_eq!(fx.snapshot(), before);
        set_mode(&fx.path("ro"), 0o700);
    }
}

/// Failures after the temp was created and written, which a real
/// filesystem can produce: the temp is removed, the target is unchanged,
/// and the error says which step failed.
mod late_failures {
    use super::*;

    const FSIZE_ENV: &str = "CRASHSAFE_TEST_FSIZE_DIR";
    const FSIZE_MAX: u64 = 4096;

    fn efbig_kind() -> io::ErrorKind {
        io::Error::from_raw_os_error(efbig()).kind()
    }

    /// The child's part: with `RLIMIT_FSIZE` at 4 KiB, a larger write fails
    /// part-way with `EFBIG`.
    fn write_past_the_size_limit(dir: &Path) {
        let limit = rustix::process::Rlimit {
            current: Some(FSIZE_MAX),
            maximum: rustix::process::getrlimit(rustix::process::Resource::Fsize).maximum,
        };
        rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).unwrap();
        let target = dir.join("t");
        let big = vec![b'n'; 100_000];
        let err = crashsafe::write(&target, &big).unwrap_err();
        let err = check_refused(err, &target, Some(Step::Write), efbig_kind());
        assert_eq!(err.raw_os_error(), Some(efbig()));
        // Streaming: the error comes out of `Write`, wrapping ours.
        let mut f = AtomicFile::create(&target).unwrap();
        let io_err = f.write_all(&big).unwrap_err();
        assert_eq!(
            io_err.raw_os_error(),
            None,
            "wrapped, not the bare OS error"
        );
        let inner = io_err.get_ref().unwrap().downcast_ref::<Error>().unwrap();
        assert_eq!(inner.step(), Some(Step::Write));
        assert_eq!(inner.raw_os_error(), Some(efbig()));
        f.discard().unwrap();
        // Within the limit everything still works.
        crashsafe::write(dir.join("small"), b"fits").unwrap();
    }

    #[test]
    fn write_failure_removes_the_temp() {
        const NAME: &str = "write_failure_removes_the_temp";
        if let Some(dir) = std::env::var_os(FSIZE_ENV) {
            return write_past_the_size_limit(Path::new(&dir));
        }
        let fx = Fixture::new();
        fx.file_with_mode("t", b"old", 0o640);
        let mut before = fx.snapshot();
        let test = test_name(module_path!(), NAME);
        let run = run_child(&Child {
            test: &test,
            envs: vec![(FSIZE_ENV, fx.root().as_os_str())],
            user: None,
            ignore_sigxfsz: true,
        });
        assert!(matches!(run, ChildRun::Passed));
        let after = fx.snapshot();
        assert_eq!(fs::read(fx.path("small")).unwrap(), b"fits");
        before.insert("small".into(), after[Path::new("small")].clone());
        assert_eq!(after, before);
    }

    const STICKY_ENV: &str = "CRASHSAFE_TEST_STICKY_DIR";

    /// The child's part, as nobody: in a sticky directory a file owned by
    /// someone else cannot be renamed over, so the replace fails at the
    /// rename, after write, mode and fsync.
    fn rename_over_a_foreign_file(dir: &Path) {
        assert!(!is_root());
        let target = dir.join("t");
        let err = crashsafe::write(&target, b"new").unwrap_err();
        check_refused(
            err,
            &target,
            Some(Step::Rename),
            io::ErrorKind::PermissionDenied,
        );
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"new").unwrap();
        let err = f.commit().unwrap_err();
        check_refused(
            err,
            &target,
            Some(Step::Rename),
            io::ErrorKind::PermissionDenied,
        );
        // Its own file in the same directory is replaced as usual.
        let mine = dir.join("mine");
        crashsafe::write(&mine, b"one").unwrap();
        crashsafe::write(&mine, b"two").unwrap();
    }

    #[test]
    fn rename_failure_removes_the_temp() {
        const NAME: &str = "rename_failure_removes_the_temp";
        if let Some(dir) = std::env::var_os(STICKY_ENV) {
            return rename_over_a_foreign_file(Path::new(&dir));
        }
        if !is_root() {
            return skip(NAME, "needs root to prepare a file owned by another user");
        }
        let fx = Fixture::new();
        set_mode(fx.root(), 0o1777);
        fx.file_with_mode("t", b"old", 0o644);
        let before = fx.snapshot();
        let test = test_name(module_path!(), NAME);
        let run = run_child(&Child {
            test: &test,
            envs: vec![(STICKY_ENV, fx.root().as_os_str())],
            user: Some(NOBODY),
            ignore_sigxfsz: false,
        });
        if let ChildRun::CannotStart(e) = run {
            return skip(NAME, &format!("cannot run the test binary as nobody: {e}"));
        }
        let mut after = fx.snapshot();
        let mine = after
            .remove(Path::new("mine"))
            .expect("the child's own file");
        assert!(matches!(mine, Node::File { ref contents, uid: NOBODY, .. } if contents == b"two"));
        assert_eq!(after, before);
    }
}

/// Unusual but valid names.
mod names {
    use super::*;

    fn create_then_replace(fx: &Fixture, name: &OsStr) {
        let target = fx.path(name);
        crashsafe::write(&target, b"one").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"one");
        set_mode(&target, 0o604);
        let before = ino_of(&target);
        crashsafe::write(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(mode_of(&target), 0o604);
        assert_ne!(ino_of(&target), before);
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"three").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"three");
        // The listing holds exactly that name.
        let names: Vec<_> = fs::read_dir(fx.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [name]);
    }

    #[test]
    fn name_of_255_ascii_bytes() {
        let fx = Fixture::new();
        create_then_replace(&fx, OsStr::new(&"a".repeat(255)));
    }

    #[test]
    fn name_of_255_bytes_of_multibyte_characters() {
        // 127 two-byte characters and one byte: the temp name must cut the
        // target name somewhere and still be valid.
        let fx = Fixture::new();
        let name = format!("{}x", "é".repeat(127));
        assert_eq!(name.len(), 255);
        create_then_replace(&fx, OsStr::new(&name));
    }

    #[test]
    fn non_utf8_names() {
        let fx = Fixture::new();
        create_then_replace(&fx, OsStr::from_bytes(b"caf\xe9"));
        let fx = Fixture::new();
        create_then_replace(&fx, OsStr::from_bytes(&[0xff; 255]));
    }

    #[test]
    fn names_that_look_like_temps_or_dots() {
        for name in [".hidden", "..x", "x.tmp", ".x.tmp", "-", " ", "a b\tc\n"] {
            let fx = Fixture::new();
            let target = fx.path(name);
            crashsafe::write(&target, b"one").unwrap();
            crashsafe::write(&target, b"two").unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"two", "{name:?}");
            let count = fs::read_dir(fx.root()).unwrap().count();
            assert_eq!(count, 1, "{name:?}");
            // `.x.tmp` is temp-shaped by our loose check; remove it so the
            // fixture's leftover check only sees what the library left.
            fs::remove_file(&target).unwrap();
        }
    }

    #[test]
    fn non_utf8_error_message_still_names_the_path() {
        let fx = Fixture::new();
        let target = fx.path(OsStr::from_bytes(b"caf\xe9/x"));
        let err = crashsafe::write(&target, b"x").unwrap_err();
        check_refused(
            err,
            &target,
            Some(Step::OpenParent),
            io::ErrorKind::NotFound,
        );
    }
}

/// Several writers and a reader at once.
mod concurrency {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const WRITERS: u8 = 8;
    const ROUNDS: u8 = 50;
    const SIZE: usize = 64 * 1024;

    /// A full-size payload that names its writer and round in its first two
    /// bytes; the rest is derived from both, so any mix is detected.
    fn payload(writer: u8, round: u8) -> Vec<u8> {
        let mut state = u32::from(writer) * 1_000_003 + u32::from(round) * 7919 + 1;
        let mut out = vec![writer, round];
        while out.len() < SIZE {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            out.push((state >> 24) as u8);
        }
        out
    }

    #[test]
    fn readers_see_only_whole_payloads() {
        let fx = Fixture::new();
        let target = Arc::new(fx.path("shared"));
        crashsafe::write(&*target, payload(WRITERS, 0)).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (target, done) = (Arc::clone(&target), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let got = fs::read(&*target).expect("the target never goes missing");
                    assert_eq!(got.len(), SIZE, "a short or empty read");
                    let (w, r) = (got[0], got[1]);
                    assert!(w <= WRITERS && r < ROUNDS, "bad header {w} {r}");
                    assert!(got == payload(w, r), "a mixed payload");
                    reads += 1;
                    if finished {
                        return reads;
                    }
                }
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let target = Arc::clone(&target);
                std::thread::spawn(move || {
                    for r in 0..ROUNDS {
                        crashsafe::write(&*target, payload(w, r)).unwrap();
                    }
                })
            })
            .collect();
        let results: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        // Stop the reader even if a writer failed, then report.
        done.store(true, Ordering::Release);
        let reads = reader.join().unwrap();
        for r in results {
            r.unwrap();
        }
        assert!(reads > 0);
        // The last rename is some writer's last round.
        let last = fs::read(&*target).unwrap();
        assert!(last[0] < WRITERS && last[1] == ROUNDS - 1);
        assert_eq!(last, payload(last[0], last[1]));
        assert_eq!(fs::read_dir(fx.root()).unwrap().count(), 1);
    }
}

//! `DirReplace` on real filesystems (issue 16): a directory's set of files is
//! replaced whole; readers, kills and failures see the old set or the new,
//! never a mix.
//!
//! `CRASHSAFE_SET_KILLS` (default 200) sets the kill count of the kill test.
#![cfg(target_os = "linux")]

mod procs;

use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crashsafe::{DirReplace, Step};
use procs::{Rng, child_command, child_env, child_mode, env_count, kill_and_reap, report};

/// The entries of `dir`, sorted, as strings.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Member `i` of version `v` of a set: self-describing, sizes vary.
fn member(v: u64, i: usize) -> Vec<u8> {
    let mut out = format!("{v}:{i}:").into_bytes();
    out.resize(
        out.len() + ((v as usize * 7 + i * 131) % 3000),
        b'a' + i as u8,
    );
    out
}

fn write_set(path: &Path, v: u64, files: usize) {
    let mut set = DirReplace::create(path).unwrap();
    for i in 0..files {
        set.write(format!("f{i}"), member(v, i)).unwrap();
    }
    set.commit().unwrap();
}

/// Reads the whole set through one reader; returns its version, or what is
/// wrong (a mix, a torn member, a missing or extra name).
fn read_set(path: &Path, files: usize) -> Result<u64, String> {
    let reader = DirReplace::open_reader(path).map_err(|e| format!("open: {e}"))?;
    let names = reader.names().map_err(|e| format!("names: {e}"))?;
    let want: Vec<_> = (0..files).map(|i| format!("f{i}")).collect();
    let got: Vec<_> = names
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    if got != want {
        return Err(format!("names {got:?}"));
    }
    let mut version = None;
    for i in 0..files {
        let bytes = reader
            .read(format!("f{i}"))
            .map_err(|e| format!("f{i}: {e}"))?;
        let text = String::from_utf8_lossy(&bytes);
        let v: u64 = text
            .split(':')
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("f{i} unreadable: {:?}", &text[..text.len().min(20)]))?;
        if bytes != member(v, i) {
            return Err(format!("f{i} of version {v} is torn"));
        }
        if *version.get_or_insert(v) != v {
            return Err(format!("a mix: f0 is version {version:?}, f{i} is {v}"));
        }
    }
    version.ok_or_else(|| "empty set".into())
}

/// Sweeps `path`'s leftovers until `dir` holds `want` (up to 1 s): an old
/// set is removed only when nobody holds its lock, and a child process
/// another test forks holds a copy of every open reader's lock until it
/// execs, so a sweep right after readers may find one still held.
fn sweep_until(path: &Path, dir: &Path, want: &[&str]) {
    for _ in 0..100 {
        DirReplace::sweep(path).unwrap();
        if entries(dir) == want {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(entries(dir), want, "leftovers never became free");
}

#[test]
fn commit_creates_a_new_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    write_set(&path, 1, 3);
    assert_eq!(read_set(&path, 3), Ok(1));
    assert_eq!(entries(dir.path()), ["slot"], "no staging left");
    // A new directory gets what mkdir would give it (0o777 less the umask).
    fs::create_dir(dir.path().join("plain")).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&path), mode(&dir.path().join("plain")));
}

#[test]
fn commit_replaces_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    fs::create_dir(&path).unwrap();
    for n in ["a", "b", "c"] {
        fs::write(path.join(n), format!("old {n}")).unwrap();
    }
    let ino_b = fs::metadata(path.join("b")).unwrap().ino();
    let mut set = DirReplace::create(&path).unwrap();
    set.write("a", "new a").unwrap();
    set.keep("b").unwrap();
    set.write("d", "new d").unwrap();
    // Nothing visible before the commit.
    assert_eq!(entries(&path), ["a", "b", "c"]);
    assert_eq!(fs::read_to_string(path.join("a")).unwrap(), "old a");
    set.commit().unwrap();
    assert_eq!(entries(&path), ["a", "b", "d"], "c was not staged: gone");
    assert_eq!(fs::read_to_string(path.join("a")).unwrap(), "new a");
    assert_eq!(fs::read_to_string(path.join("b")).unwrap(), "old b");
    assert_eq!(
        fs::metadata(path.join("b")).unwrap().ino(),
        ino_b,
        "kept by a hard link"
    );
    assert_eq!(
        fs::metadata(path.join("b")).unwrap().nlink(),
        1,
        "old set removed"
    );
    assert_eq!(entries(dir.path()), ["slot"], "old set and staging removed");
}

#[test]
fn keep_of_a_missing_file_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    write_set(&path, 1, 2);
    let mut set = DirReplace::create(&path).unwrap();
    let err = set.keep("nope").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.step(), Some(Step::ReadTarget));
    // A symlink someone put in the set is not carried over (nor followed).
    std::os::unix::fs::symlink("/etc/passwd", path.join("link")).unwrap();
    let err = set.keep("link").unwrap_err();
    assert!(
        matches!(err, crashsafe::Error::InvalidTarget { .. }),
        "{err}"
    );
    assert!(set.staged().is_empty());
    fs::remove_file(path.join("link")).unwrap();
    drop(set);
    assert_eq!(read_set(&path, 2), Ok(1));
    assert_eq!(entries(dir.path()), ["slot"]);
    // No old set at all.
    let mut set = DirReplace::create(dir.path().join("new")).unwrap();
    assert_eq!(set.keep("f0").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn streaming_writer_seeks_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    let mut set = DirReplace::create(&path).unwrap();
    let mut f = set.create_file("player.dat").unwrap();
    f.write_all(b"XXXX-body").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"HEAD").unwrap();
    drop(f);
    let dup = set.create_file("player.dat").unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    assert_eq!(set.staged(), [OsStr::new("player.dat")]);
    set.commit().unwrap();
    assert_eq!(fs::read(path.join("player.dat")).unwrap(), b"HEAD-body");
}

#[test]
fn drop_removes_staging_and_keeps_the_old_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    write_set(&path, 1, 3);
    let mut set = DirReplace::create(&path).unwrap();
    set.write("f0", member(2, 0)).unwrap();
    set.keep("f1").unwrap();
    assert_eq!(entries(dir.path()).len(), 2, "staging beside the target");
    drop(set);
    assert_eq!(entries(dir.path()), ["slot"]);
    assert_eq!(read_set(&path, 3), Ok(1));
}

#[test]
fn bad_member_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    write_set(&path, 1, 1);
    let mut set = DirReplace::create(&path).unwrap();
    for bad in ["a/b", "..", ".", "", "/etc/passwd", "../escape", "a/"] {
        let err = set.write(bad, "x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
        assert_eq!(set.keep(bad).unwrap_err().kind(), ErrorKind::InvalidInput);
        let reader = DirReplace::open_reader(&path).unwrap();
        assert_eq!(
            reader.read(bad).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    assert!(set.staged().is_empty());
    drop(set);
    assert_eq!(entries(dir.path()), ["slot"], "nothing escaped the staging");
    assert_eq!(read_set(&path, 1), Ok(1));
}

#[test]
fn non_utf8_member_names_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    let name = OsStr::from_bytes(b"caf\xe9.dat");
    let mut set = DirReplace::create(&path).unwrap();
    set.write(name, "bytes").unwrap();
    set.commit().unwrap();
    let reader = DirReplace::open_reader(&path).unwrap();
    assert_eq!(reader.names().unwrap(), [name]);
    assert_eq!(reader.read(name).unwrap(), b"bytes");
    drop(reader); // else the old set it holds stays (hidden) after the commit
    let mut set = DirReplace::create(&path).unwrap();
    set.keep(name).unwrap();
    set.commit().unwrap();
    assert_eq!(fs::read(path.join(name)).unwrap(), b"bytes");
    // A non-UTF-8 target name, given with a trailing slash.
    let odd = dir.path().join(OsStr::from_bytes(b"sl\xffot"));
    let mut slash = odd.clone().into_os_string();
    slash.push("/");
    for _ in 0..2 {
        let mut set = DirReplace::create(&slash).unwrap();
        set.write(name, "odd").unwrap();
        set.commit().unwrap();
    }
    assert_eq!(fs::read(odd.join(name)).unwrap(), b"odd");
    // The reader's old set may outlive it in a child forked meanwhile by
    // another test (until its exec): sweep takes it.
    let odd_name = odd.file_name().unwrap().to_string_lossy().into_owned();
    sweep_until(&path, dir.path(), &["slot", &odd_name]);
}

#[test]
fn mode_and_owner_of_the_directory_and_its_files_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("secret"), "old").unwrap();
    fs::set_permissions(path.join("secret"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o2750)).unwrap();
    let root = procs::is_root();
    if root {
        std::os::unix::fs::chown(&path, Some(1234), Some(2345)).unwrap();
        std::os::unix::fs::chown(path.join("secret"), Some(1235), Some(2346)).unwrap();
        // chown clears setgid on some systems: set it again.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o2750)).unwrap();
    } else {
        println!("not root: owners are not checked");
    }
    let mut set = DirReplace::create(&path).unwrap();
    set.write("secret", "new").unwrap();
    set.write("fresh", "new").unwrap();
    set.commit().unwrap();
    let d = fs::metadata(&path).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o2750);
    let f = fs::metadata(path.join("secret")).unwrap();
    assert_eq!(f.permissions().mode() & 0o7777, 0o640);
    if root {
        assert_eq!((d.uid(), d.gid()), (1234, 2345));
        assert_eq!((f.uid(), f.gid()), (1235, 2346));
    }
}

#[test]
fn targets_that_are_not_plain_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = DirReplace::create(&file).unwrap_err();
    assert!(
        matches!(err, crashsafe::Error::InvalidTarget { .. }),
        "{err}"
    );
    let real = dir.path().join("real");
    write_set(&real, 1, 1);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("real", &link).unwrap();
    let err = DirReplace::create(&link).unwrap_err();
    assert!(
        matches!(err, crashsafe::Error::InvalidTarget { .. }),
        "{err}"
    );
    for bad in ["", "/", "a/.."] {
        assert!(DirReplace::create(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        entries(dir.path()),
        ["file", "link", "real"],
        "nothing staged"
    );
    assert_eq!(fs::read(&file).unwrap(), b"x");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_mount_point_is_refused() {
    let mount = match procs::Mount::tmpfs("size=1m") {
        Ok(m) => m,
        Err(why) => return println!("skipped: {why}"),
    };
    let err = DirReplace::create(mount.path()).unwrap_err();
    assert!(
        matches!(
            err,
            crashsafe::Error::InvalidTarget {
                reason: crashsafe::InvalidReason::MountPoint,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_old_set() {
    let mount = match procs::Mount::tmpfs("size=256k") {
        Ok(m) => m,
        Err(why) => return println!("skipped: {why}"),
    };
    let path = mount.path().join("slot");
    write_set(&path, 1, 3);
    let mut set = DirReplace::create(&path).unwrap();
    set.keep("f0").unwrap();
    let err = set.write("big", vec![7u8; 1 << 20]).unwrap_err();
    assert_eq!(err.step(), Some(Step::Write), "{err}");
    assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
    drop(set);
    assert_eq!(read_set(&path, 3), Ok(1));
    assert_eq!(entries(mount.path()), ["slot"]);
    // A caller that ignores the failed write cannot commit a short member.
    for streaming in [false, true] {
        let mut set = DirReplace::create(&path).unwrap();
        for i in 0..3 {
            set.write(format!("f{i}"), member(2, i)).unwrap();
        }
        if streaming {
            let mut f = set.create_file("big").unwrap();
            let _ = f.write_all(&vec![7u8; 1 << 20]); // ENOSPC, ignored
        } else {
            let _ = set.write("big", vec![7u8; 1 << 20]); // ignored
        }
        let err = set.commit().unwrap_err();
        assert_eq!(err.step(), Some(Step::Write), "{err}");
        assert!(err.target().ends_with("slot/big"), "{err}");
        assert_eq!(read_set(&path, 3), Ok(1), "the old set stays");
        assert_eq!(entries(mount.path()), ["slot"]);
    }
}

#[test]
fn sweep_removes_dead_leftovers_but_never_a_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    write_set(&path, 1, 2);
    let mut live = DirReplace::create(&path).unwrap();
    live.write("f0", member(2, 0)).unwrap();
    // A dead writer's staging: the shape, no lock.
    let dead = dir.path().join(".slot.0123456789abcdef.stage");
    fs::create_dir(&dead).unwrap();
    fs::write(dead.join("f0"), "half").unwrap();
    // Names that are not staging are never touched.
    fs::create_dir(dir.path().join(".slot.0123456789abcdeg.stage")).unwrap();
    fs::create_dir(dir.path().join(".other.0123456789abcdef.stage")).unwrap();
    assert_eq!(DirReplace::sweep(&path).unwrap(), 1);
    assert!(!dead.exists());
    assert_eq!(
        entries(dir.path()).len(),
        4,
        "live staging and unrelated dirs stay"
    );
    live.write("f1", member(2, 1)).unwrap();
    live.commit().unwrap();
    assert_eq!(read_set(&path, 2), Ok(2));
}

#[test]
fn a_reader_keeps_its_version_across_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    write_set(&path, 1, 3);
    let reader = DirReplace::open_reader(&path).unwrap();
    assert_eq!(reader.read("f0").unwrap(), member(1, 0));
    write_set(&path, 2, 3);
    write_set(&path, 3, 3);
    // Still version 1, whole, even though two commits happened.
    for i in 0..3 {
        assert_eq!(reader.read(format!("f{i}")).unwrap(), member(1, i));
    }
    assert_eq!(read_set(&path, 3), Ok(3));
    // The old set it holds is hidden and removed by a later sweep.
    drop(reader);
    sweep_until(&path, dir.path(), &["slot"]);
}

/// Reader threads read the whole set through a reader again and again while
/// the writer commits many versions: every read is one complete version,
/// never older than one committed before the read began.
#[test]
fn readers_never_see_a_mix_while_commits_run() {
    let dir = procs::tmpfs_dir();
    let path = dir.path().join("slot");
    const FILES: usize = 4;
    write_set(&path, 0, FILES);
    let committed = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let commits = env_count("CRASHSAFE_SET_COMMITS", 400) as u64;
    thread::scope(|s| {
        let _stop = procs::StopOnDrop(&stop);
        let mut readers = Vec::new();
        for _ in 0..3 {
            readers.push(s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let floor = committed.load(Ordering::SeqCst);
                    let v = read_set(&path, FILES).unwrap_or_else(|e| panic!("bad read: {e}"));
                    assert!(v >= floor, "read version {v}, {floor} was committed before");
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for v in 1..=commits {
            // Alternate a full rewrite with a partial one that keeps files.
            let mut set = DirReplace::create(&path).unwrap();
            for i in 0..FILES {
                set.write(format!("f{i}"), member(v, i)).unwrap();
            }
            set.commit().unwrap();
            committed.store(v, Ordering::SeqCst);
        }
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            r.join().unwrap();
        }
    });
    let reads = reads.load(Ordering::SeqCst);
    println!("{commits} commits, {reads} whole-set reads");
    assert!(reads > 0);
    sweep_until(&path, dir.path(), &["slot"]);
}

/// Four writers on one target: none fails (a writer's fresh stage is never
/// taken for a dead one's), and the last commit wins, whole.
#[test]
fn concurrent_writers_last_commit_wins_whole() {
    let dir = procs::tmpfs_dir();
    let path = dir.path().join("slot");
    thread::scope(|s| {
        for w in 0..4u64 {
            let path = &path;
            s.spawn(move || {
                for k in 0..100 {
                    write_set(path, w * 1000 + k, 3);
                }
            });
        }
    });
    let v = read_set(&path, 3).unwrap();
    assert!(v % 1000 == 99, "last version {v}");
    sweep_until(&path, dir.path(), &["slot"]);
}

/// The child: commit the next version of the set, report, forever.
fn set_writer_child() {
    let path = child_env("CRASHSAFE_PATH");
    let path = Path::new(&path);
    let mut v = read_set(path, 4).unwrap();
    report(&format!("ready {v}"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        v += 1;
        let mut set = DirReplace::create(path).unwrap();
        set.write("f0", member(v, 0)).unwrap();
        set.write("f1", member(v, 1)).unwrap();
        let mut f = set.create_file("f2").unwrap();
        f.write_all(&member(v, 2)).unwrap();
        drop(f);
        set.write("f3", member(v, 3)).unwrap();
        set.commit().unwrap();
        report(&format!("commit {v}"));
    }
}

#[test]
fn kill_9_mid_commit_leaves_one_complete_set() {
    let test = "kill_9_mid_commit_leaves_one_complete_set";
    if child_mode().as_deref() == Some("writer") {
        return set_writer_child();
    }
    let dir = procs::tmpfs_dir();
    let path = dir.path().join("slot");
    write_set(&path, 0, 4);
    let mut rng = Rng::for_test(test);
    let kills = env_count("CRASHSAFE_SET_KILLS", 200);
    let mut base = 0;
    let mut leftovers = 0;
    let mut unreported = 0;
    for round in 0..kills {
        let mut child = child_command(test, "writer")
            .env("CRASHSAFE_PATH", &path)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(r) = procs::parse_report(&line) {
                    let _ = tx.send(r.to_owned());
                }
            }
        });
        let ready = rx.recv().unwrap();
        assert_eq!(ready, format!("ready {base}"));
        thread::sleep(Duration::from_micros(rng.below(20_000)));
        kill_and_reap(&mut child);
        lines.join().unwrap();
        let last = rx
            .try_iter()
            .filter_map(|r| {
                r.strip_prefix("commit ")
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .last()
            .unwrap_or(base);
        let v = read_set(&path, 4).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            v == last || v == last + 1,
            "round {round}: set {v}, last reported {last}"
        );
        unreported += usize::from(v == last + 1);
        leftovers += entries(dir.path()).len() - 1;
        base = v;
    }
    // The next writer's create sweeps; so does sweep itself.
    sweep_until(&path, dir.path(), &["slot"]);
    println!(
        "{kills} kills, {base} versions, {unreported} killed after the exchange before the report, {leftovers} leftovers seen and swept"
    );
}

#[test]
fn reader_of_a_missing_set_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = DirReplace::open_reader(dir.path().join("none")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn an_old_set_with_a_subdirectory_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    write_set(&path, 1, 2);
    fs::create_dir(path.join("sub")).unwrap();
    fs::write(path.join("sub/inner"), "keep me").unwrap();
    let err = DirReplace::create(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("sub"), "{err}");
    assert_eq!(entries(dir.path()), ["slot"], "nothing staged");
    assert_eq!(
        fs::read_to_string(path.join("sub/inner")).unwrap(),
        "keep me"
    );
}

/// Undoes `chattr +i` in a whole tree even when the test fails, so the
/// temp dir can go.
struct Immutable<'a>(&'a Path);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .args(["-R", "-f", "-i"])
            .arg(self.0)
            .status();
    }
}

/// `keep` of a file that cannot be hard-linked (immutable: `linkat` gets
/// `EPERM`) copies it, keeping its mode; the old set, which still holds the
/// immutable file, cannot be removed and stays hidden until it can.
#[test]
fn keep_copies_when_a_link_is_refused() {
    if !procs::is_root() {
        return println!("skipped: chattr +i needs root");
    }
    let dir = procs::disk_dir();
    let path = dir.path().join("slot");
    write_set(&path, 1, 2);
    fs::set_permissions(path.join("f1"), fs::Permissions::from_mode(0o604)).unwrap();
    let f1 = path.join("f1");
    let st = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&f1)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        return println!("skipped: chattr +i is not supported here");
    }
    let guard = Immutable(dir.path());
    let old_ino = fs::metadata(&f1).unwrap().ino();
    let mut set = DirReplace::create(&path).unwrap();
    set.write("f0", member(2, 0)).unwrap();
    set.keep("f1").unwrap();
    set.commit().unwrap();
    let new = fs::metadata(path.join("f1")).unwrap();
    assert_ne!(new.ino(), old_ino, "a copy, not a link");
    assert_eq!(new.permissions().mode() & 0o7777, 0o604);
    assert_eq!(fs::read(path.join("f1")).unwrap(), member(1, 1));
    assert_eq!(fs::read(path.join("f0")).unwrap(), member(2, 0));
    // The old set could not be emptied (its f1 is immutable): hidden, kept.
    let left = entries(dir.path());
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].ends_with(".stage"), "{left:?}");
    drop(guard);
    assert_eq!(DirReplace::sweep(&path).unwrap(), 1);
    assert_eq!(entries(dir.path()), ["slot"]);
}

/// One step of the model-based property test.
#[derive(Debug, Clone)]
enum Op {
    Write(usize, Vec<u8>),
    Keep(usize),
    Commit,
    Drop,
}

const NAMES: [&[u8]; 4] = [b"world.dat", b"player", b"caf\xe9", b".hidden"];

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0..NAMES.len(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(n, b)| Op::Write(n, b)),
        2 => (0..NAMES.len()).prop_map(Op::Keep),
        2 => Just(Op::Commit),
        1 => Just(Op::Drop),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any sequence of stage, keep, commit and drop leaves the directory
    /// holding exactly the last committed set (names and bytes), errors
    /// exactly where the model says (keeping a name the old set lacks,
    /// staging a name twice), and no staging behind.
    #[test]
    fn the_directory_is_always_the_last_committed_set(ops in proptest::collection::vec(op(), 1..24)) {
        use std::collections::BTreeMap;
        let dir = procs::tmpfs_dir();
        let path = dir.path().join("slot");
        let mut committed: Option<BTreeMap<&[u8], Vec<u8>>> = None;
        let mut staged: BTreeMap<&[u8], Vec<u8>> = BTreeMap::new();
        let mut set: Option<DirReplace> = None;
        for op in ops {
            let s = set.get_or_insert_with(|| DirReplace::create(&path).unwrap());
            match op {
                Op::Write(n, bytes) => {
                    let name = NAMES[n];
                    let r = s.write(OsStr::from_bytes(name), &bytes);
                    if staged.contains_key(name) {
                        proptest::prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::AlreadyExists);
                    } else {
                        r.unwrap();
                        staged.insert(name, bytes);
                    }
                }
                Op::Keep(n) => {
                    let name = NAMES[n];
                    let old = committed.as_ref().and_then(|c| c.get(name));
                    let r = s.keep(OsStr::from_bytes(name));
                    match (old, staged.contains_key(name)) {
                        (Some(bytes), false) => {
                            r.unwrap();
                            staged.insert(name, bytes.clone());
                        }
                        (None, _) => proptest::prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound),
                        (Some(_), true) => proptest::prop_assert!(r.is_err()),
                    }
                }
                Op::Commit => {
                    set.take().unwrap().commit().unwrap();
                    committed = Some(std::mem::take(&mut staged));
                }
                Op::Drop => {
                    set = None;
                    staged.clear();
                }
            }
            // Whatever is staged, the directory shows the last commit.
            match &committed {
                None => proptest::prop_assert!(!path.exists()),
                Some(c) => {
                    let reader = DirReplace::open_reader(&path).unwrap();
                    let names = reader.names().unwrap();
                    let want: Vec<&[u8]> = c.keys().copied().collect();
                    let got: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
                    proptest::prop_assert_eq!(got, want);
                    for (name, bytes) in c {
                        proptest::prop_assert_eq!(&reader.read(OsStr::from_bytes(name)).unwrap(), bytes);
                    }
                }
            }
        }
        drop(set);
        // An old set is removed at commit only if nobody holds it: a child
        // another test forks while a reader here is open holds a copy of
        // its lock until it execs. Sweep takes what is left.
        let want: &[&str] = if committed.is_some() { &["slot"] } else { &[] };
        sweep_until(&path, dir.path(), want);
    }
}

/// Real faults at every call that allocates: tmpfs mounts with room for
/// fewer and fewer inodes (the stage, then each member) and bytes (each
/// member's pages). Each commit is all-or-nothing: `Ok` and the new set,
/// or `Err` naming the step, the old set whole, and nothing left behind.
#[test]
fn running_out_of_inodes_or_space_at_each_step_keeps_the_old_set() {
    if !procs::is_root() {
        return println!("skipped: mounting a tmpfs needs root");
    }
    let (mut failed, mut committed) = (Vec::new(), 0);
    // nr_inodes counts the root, the slot and its 3 files (5), then the
    // stage and 3 new members: 5..=9 hits each of those creates.
    let budgets = (5..=9)
        .map(|n| format!("size=1m,nr_inodes={n}"))
        .chain((4..=9).map(|pages| format!("size={}k", pages * 4)));
    for options in budgets {
        let mount = match procs::Mount::tmpfs(&options) {
            Ok(m) => m,
            Err(why) => return println!("skipped: {why}"),
        };
        let path = mount.path().join("slot");
        let first = (|| {
            let mut set = DirReplace::create(&path)?;
            for i in 0..3 {
                set.write(format!("f{i}"), vec![b'1'; 4096])?;
            }
            set.commit()
        })();
        if first.is_err() {
            // Not even room for the first set: nothing to check here.
            assert_eq!(entries(mount.path()), Vec::<String>::new(), "{options}");
            continue;
        }
        let result = (|| {
            let mut set = DirReplace::create(&path)?;
            for i in 0..3 {
                set.write(format!("f{i}"), vec![b'2'; 4096])?;
            }
            set.commit()
        })();
        let reader = DirReplace::open_reader(&path).unwrap();
        let now: Vec<Vec<u8>> = (0..3)
            .map(|i| reader.read(format!("f{i}")).unwrap())
            .collect();
        drop(reader);
        match result {
            Ok(()) => {
                assert!(
                    now.iter().all(|f| f == &vec![b'2'; 4096]),
                    "{options}: Ok but not the new set"
                );
                committed += 1;
            }
            Err(e) => {
                assert!(
                    now.iter().all(|f| f == &vec![b'1'; 4096]),
                    "{options}: {e}, and not the old set"
                );
                assert_eq!(
                    e.raw_os_error(),
                    Some(28),
                    "{options}: ENOSPC expected: {e}"
                );
                failed.push(format!("{options}: {:?}", e.step()));
            }
        }
        assert_eq!(entries(mount.path()), ["slot"], "{options}: left behind");
    }
    println!("committed {committed}; failed cleanly: {failed:#?}");
    assert!(
        failed.len() >= 3 && committed >= 1,
        "the budgets missed the steps: {failed:?}"
    );
}

#[test]
fn a_target_turned_into_a_file_before_the_commit_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slot");
    write_set(&path, 1, 2);
    let mut set = DirReplace::create(&path).unwrap();
    set.write("f0", member(2, 0)).unwrap();
    fs::remove_dir_all(&path).unwrap();
    fs::write(&path, "someone else's file").unwrap();
    let err = set.commit().unwrap_err();
    assert!(
        matches!(err, crashsafe::Error::InvalidTarget { .. }),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "someone else's file");
    assert_eq!(entries(dir.path()), ["slot"], "staging removed");
}

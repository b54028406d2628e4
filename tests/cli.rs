//! Runs the built `crashsafe` binary the way a shell script would.
//!
//! Needs the `cli` feature (`cargo test --all-features` in CI); without it
//! there is no binary and this file compiles to nothing.
#![cfg(all(feature = "cli", unix))]

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

fn crashsafe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crashsafe"))
}

/// Runs the binary with `args`, feeding `input` on stdin from a thread.
fn run(args: &[&str], dir: &Path, input: &[u8]) -> Output {
    let mut child = crashsafe()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // The child may exit before reading (a usage error): ignore EPIPE.
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// Runs the binary with `args` and the given stdin.
fn run_with(args: &[&str], dir: &Path, stdin: Stdio) -> Output {
    crashsafe()
        .args(args)
        .current_dir(dir)
        .stdin(stdin)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_success(out: &Output) {
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(out));
    assert!(out.stderr.is_empty(), "{}", stderr(out));
}

/// Exit status 1 with exactly one line on stderr, which is returned.
fn assert_failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let text = stderr(out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("crashsafe: "), "{text}");
    text
}

/// Hidden temp files (`.name.RANDOM.tmp`) left in `dir`.
fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

/// Deterministic bytes covering every byte value.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn replaces_content_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    fs::write(&path, b"old content that is longer than nothing").unwrap();
    // Several 64 KiB chunks plus a tail.
    let input = pattern(300_000);
    let out = run(&["write", "data.bin"], dir.path(), &input);
    assert_success(&out);
    assert!(out.stdout.is_empty());
    assert_eq!(fs::read(&path).unwrap(), input);
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn creates_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["write", "new.txt"], dir.path(), b"hello\n");
    assert_success(&out);
    assert_eq!(fs::read(dir.path().join("new.txt")).unwrap(), b"hello\n");
}

#[test]
fn keeps_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg");
    fs::write(&path, b"a").unwrap();
    // 0604 is not what any umask would give a new file: it must be copied.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
    assert_success(&run(&["write", "cfg"], dir.path(), b"b"));
    assert_eq!(fs::read(&path).unwrap(), b"b");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o604);
}

#[test]
fn mode_option_sets_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    fs::write(&path, b"a").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert_success(&run(
        &["write", "--mode", "600", "secret"],
        dir.path(),
        b"b",
    ));
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn keeps_owner() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped keeps_owner: needs root to give the file to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owned");
    fs::write(&path, b"a").unwrap();
    std::os::unix::fs::chown(&path, Some(12345), Some(12345)).unwrap();
    assert_success(&run(&["write", "owned"], dir.path(), b"b"));
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (12345, 12345));
    assert_eq!(fs::read(&path).unwrap(), b"b");
}

#[test]
fn create_new_refuses_an_existing_file_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("once");
    fs::write(&path, b"first").unwrap();
    let out = run(&["write", "--create-new", "once"], dir.path(), b"second");
    let text = assert_failure(&out);
    assert!(
        text.contains("once") && text.contains("already exists"),
        "{text}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"first");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn create_new_creates_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["write", "--create-new", "once"], dir.path(), b"first");
    assert_success(&out);
    assert_eq!(fs::read(dir.path().join("once")).unwrap(), b"first");
}

#[test]
fn missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["write", "no/such/dir/cfg.json"], dir.path(), b"{}");
    let text = assert_failure(&out);
    assert!(text.contains("no/such/dir/cfg.json"), "{text}");
    assert!(text.contains("open the parent directory"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_target_can_feed_its_own_replacement() {
    // `jq . cfg.json | crashsafe write cfg.json`: the input is read from the
    // old file while the new one is written; with `> cfg.json` it would be
    // truncated before it was read.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg.json");
    let content = pattern(200_000);
    fs::write(&path, &content).unwrap();
    let stdin = Stdio::from(File::open(&path).unwrap());
    assert_success(&run_with(&["write", "cfg.json"], dir.path(), stdin));
    assert_eq!(fs::read(&path).unwrap(), content);
}

#[test]
fn nonempty_refuses_empty_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.txt");
    fs::write(&path, b"keep me\n").unwrap();
    let text = assert_failure(&run(&["write", "--nonempty", "list.txt"], dir.path(), b""));
    assert!(
        text.contains("empty") && text.contains("list.txt"),
        "{text}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"keep me\n");
    assert!(temps(dir.path()).is_empty());

    // With input, --nonempty changes nothing.
    assert_success(&run(&["write", "--nonempty", "list.txt"], dir.path(), b"x"));
    assert_eq!(fs::read(&path).unwrap(), b"x");
}

#[test]
fn a_closed_stdin_is_empty_input() {
    // The Rust runtime reopens a closed fd 0 as /dev/null, so a closed stdin
    // looks like empty input: --nonempty is what protects the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"keep").unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" write --nonempty f <&-")
        .arg(env!("CARGO_BIN_EXE_crashsafe"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_failure(&out);
    assert_eq!(fs::read(&path).unwrap(), b"keep");
}

#[test]
fn empty_input_without_nonempty_empties_the_file() {
    // Documented behaviour: an empty input is a valid new content.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"old").unwrap();
    assert_success(&run(&["write", "f"], dir.path(), b""));
    assert_eq!(fs::read(&path).unwrap(), b"");
}

#[test]
fn a_stdin_read_error_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg");
    fs::write(&path, b"intact").unwrap();
    // Reading a directory fails with EISDIR.
    let stdin = Stdio::from(File::open(dir.path()).unwrap());
    let out = run_with(&["write", "cfg"], dir.path(), stdin);
    let text = assert_failure(&out);
    assert!(
        text.contains("read stdin") && text.contains("cfg"),
        "{text}"
    );
    assert!(text.contains("nothing was replaced"), "{text}");
    assert_eq!(fs::read(&path).unwrap(), b"intact");
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn follows_symlinks_unless_no_follow() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let link = dir.path().join("link");
    fs::write(&real, b"a").unwrap();
    std::os::unix::fs::symlink("real", &link).unwrap();

    assert_success(&run(&["write", "link"], dir.path(), b"b"));
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&real).unwrap(), b"b");

    assert_success(&run(&["write", "--no-follow", "link"], dir.path(), b"c"));
    assert!(fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(fs::read(&link).unwrap(), b"c");
    assert_eq!(fs::read(&real).unwrap(), b"b");
}

#[test]
fn consistent_still_replaces() {
    let dir = tempfile::tempdir().unwrap();
    assert_success(&run(&["write", "--consistent", "f"], dir.path(), b"v"));
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"v");
}

#[test]
fn after_double_dash_and_dash_are_file_names() {
    let dir = tempfile::tempdir().unwrap();
    assert_success(&run(&["write", "--", "--nonempty"], dir.path(), b"1"));
    assert_eq!(fs::read(dir.path().join("--nonempty")).unwrap(), b"1");
    assert_success(&run(&["write", "-"], dir.path(), b"2"));
    assert_eq!(fs::read(dir.path().join("-")).unwrap(), b"2");
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = run(args, dir.path(), b"");
        assert_success(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Examples:"), "{text}");
        assert!(text.contains("| crashsafe write cfg.json"), "{text}");
    }
    let out = run(&["write", "--help"], dir.path(), b"");
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("--nonempty") && text.contains("pipefail"),
        "{text}"
    );

    let out = run(&["--version"], dir.path(), b"");
    assert_success(&out);
    let expected = format!("crashsafe {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

#[test]
fn usage_errors_exit_2_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[][..],
        &["frobnicate"],
        &["write"],
        &["write", "--bogus", "f"],
        &["write", "--mode", "999", "f"],
        &["write", "--mode"],
        &["write", "a", "b"],
        &["sweep"],
    ] {
        let out = run(args, dir.path(), b"data");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{args:?}");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn backup_keeps_the_previous_content_as_tilde_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"old").unwrap();
    let out = run(&["write", "--backup", "f"], dir.path(), b"new");
    assert_success(&out);
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new");
    assert_eq!(fs::read(dir.path().join("f~")).unwrap(), b"old");
}

#[test]
fn sweep_removes_stale_temps_and_prints_the_count() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("cfg"), b"keep").unwrap();
    let stale = dir.path().join(".cfg.crashsafe-abcdefghijkl.tmp");
    let file = File::create(&stale).unwrap();
    let two_days = Duration::from_secs(2 * 24 * 3600);
    file.set_modified(std::time::SystemTime::now() - two_days)
        .unwrap();
    drop(file);
    let out = run(&["sweep", "."], dir.path(), b"");
    assert_success(&out);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "1\n");
    assert!(!stale.exists());
    assert_eq!(fs::read(dir.path().join("cfg")).unwrap(), b"keep");
}

#[test]
fn sweep_verbose_lists_what_it_removed_and_kept_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join(".a.crashsafe-abcdefghijkl.tmp");
    fs::write(&stale, b"left by a dead writer").unwrap();
    // Held by a live writer: an open streaming replace.
    let mut live = crashsafe::Options::new()
        .open(dir.path().join("b"))
        .unwrap();
    std::io::Write::write_all(&mut live, b"in progress").unwrap();
    // A look-alike of the old temp shape: never touched, never listed.
    fs::write(dir.path().join(".notes.sessionstore.tmp"), b"mine").unwrap();
    let out = run(&["sweep", "--verbose", "."], dir.path(), b"");
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "removed ./.a.crashsafe-abcdefghijkl.tmp");
    assert!(lines[1].starts_with("kept ./.b.crashsafe-"), "{text}");
    assert!(lines[1].ends_with(": a live writer holds it"), "{text}");
    assert_eq!(lines[2], "1 removed, 1 kept");
    assert!(dir.path().join(".notes.sessionstore.tmp").exists());
    live.commit().unwrap();
}

#[test]
fn sweep_of_a_missing_directory_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["sweep", "nonexistent"], dir.path(), b"");
    let text = assert_failure(&out);
    assert!(
        text.starts_with("crashsafe: failed to open the directory nonexistent: No such file"),
        "{text}"
    );
    assert!(!text.contains("parent"), "{text}");
}

/// The child's peak resident set size (`VmHWM`) in KiB, if it is still alive.
fn peak_rss_kib(child: &Child) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn streams_64_mib_in_constant_memory() {
    const TOTAL: usize = 64 << 20;
    const LIMIT_KIB: u64 = 32 << 10;
    let dir = tempfile::tempdir().unwrap();
    let mut child = crashsafe()
        .args(["write", "big.bin"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        let chunk = pattern(1 << 20);
        for _ in 0..TOTAL / chunk.len() {
            stdin.write_all(&chunk).unwrap();
        }
        // Dropping stdin closes the pipe: end of input.
    });
    let mut peak = 0;
    let mut samples = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(&child) {
            peak = peak.max(kib);
            samples += 1;
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        thread::sleep(Duration::from_millis(2));
    };
    feeder.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    eprintln!("peak RSS of crashsafe write for 64 MiB: {peak} KiB ({samples} samples)");
    assert!(samples > 0, "never saw the child running");
    assert!(peak > 0 && peak < LIMIT_KIB, "peak RSS {peak} KiB");

    let written = fs::read(dir.path().join("big.bin")).unwrap();
    assert_eq!(written.len(), TOTAL);
    let chunk = pattern(1 << 20);
    assert!(written.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
}

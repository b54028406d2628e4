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

mod common;

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
        common::skip("keeps_owner", "needs root to give the file to another user");
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

// ---- producer mode: `crashsafe write FILE -- CMD [ARGS...]` ----

/// Runs `crashsafe write [opts] f -- sh -c SCRIPT` in `dir` with `input`.
fn produce(dir: &Path, opts: &[&str], script: &str, input: &[u8]) -> Output {
    let mut args = vec!["write"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["f", "--", "sh", "-c", script]);
    run(&args, dir, input)
}

/// A directory with `f` holding `old`.
fn dir_with_f() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"old").unwrap();
    dir
}

/// Asserts that `f` still holds `old` and that no temp is left.
fn assert_unchanged(dir: &Path) {
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"old");
    assert!(temps(dir).is_empty(), "{:?}", temps(dir));
}

#[test]
fn producer_success_replaces_with_its_output() {
    let dir = dir_with_f();
    // Arguments with spaces reach the producer unchanged, it can read the
    // target itself, and it gets crashsafe's standard input.
    let out = run(
        &[
            "write",
            "f",
            "--",
            "sh",
            "-c",
            "cat f; printf '%s|' \"$1\"; cat",
            "sh",
            "a  b",
        ],
        dir.path(),
        b"from stdin",
    );
    assert_success(&out);
    assert_eq!(
        fs::read(dir.path().join("f")).unwrap(),
        b"olda  b|from stdin"
    );
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn producer_large_output_is_copied_exactly() {
    let dir = dir_with_f();
    let input = pattern(5 * 1024 * 1024 + 17);
    assert_success(&produce(dir.path(), &[], "cat", &input));
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), input);
}

#[test]
fn producer_exiting_non_zero_replaces_nothing() {
    let dir = dir_with_f();
    let out = produce(dir.path(), &[], "printf 'half of the'; exit 3", b"");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("'sh' exited with status 3"), "{text}");
    assert!(text.contains("nothing was replaced"), "{text}");
    assert_unchanged(dir.path());
}

#[test]
fn producer_killed_midway_replaces_nothing() {
    let dir = dir_with_f();
    // A lot of output first, so the temp already holds part of it.
    let out = produce(
        dir.path(),
        &[],
        "head -c 3000000 /dev/zero; kill -9 $$",
        b"",
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("killed by SIGKILL"),
        "{}",
        stderr(&out)
    );
    assert_unchanged(dir.path());
}

#[test]
fn producer_closing_stdout_early_is_still_waited_for() {
    let dir = dir_with_f();
    // The output ends long before the producer does, and then it fails.
    let out = produce(
        dir.path(),
        &[],
        "printf new; exec >&-; sleep 0.3; exit 4",
        b"",
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_unchanged(dir.path());
}

#[test]
fn producer_not_found_is_127_and_replaces_nothing() {
    let dir = dir_with_f();
    let out = run(&["write", "f", "--", "./no-such-producer"], dir.path(), b"");
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot run './no-such-producer'"));
    assert_unchanged(dir.path());
}

#[test]
fn producer_is_not_run_when_the_target_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["write", "missing/f", "--", "sh", "-c", "touch ran"],
        dir.path(),
        b"",
    );
    assert_failure(&out);
    assert!(!dir.path().join("ran").exists(), "the producer ran");
}

#[test]
fn producer_printing_nothing_with_nonempty_replaces_nothing() {
    let dir = dir_with_f();
    let text = assert_failure(&produce(dir.path(), &["--nonempty"], "true", b""));
    assert!(text.contains("printed nothing"), "{text}");
    assert_unchanged(dir.path());
    // Options before FILE still apply in producer mode.
    assert_success(&produce(dir.path(), &["--mode", "640"], "printf x", b""));
    assert_eq!(
        fs::metadata(dir.path().join("f")).unwrap().mode() & 0o777,
        0o640
    );
}

#[test]
fn double_dash_before_file_still_ends_options() {
    let dir = tempfile::tempdir().unwrap();
    // `write -- --x -- CMD`: the first `--` ends the options, so `--x` is
    // the file; the second starts the command.
    let out = run(
        &["write", "--", "--x", "--", "printf", "made"],
        dir.path(),
        b"",
    );
    assert_success(&out);
    assert_eq!(fs::read(dir.path().join("--x")).unwrap(), b"made");
    // A trailing `--` with no command is a usage error, creating nothing.
    let out = run(&["write", "g", "--"], dir.path(), b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.path().join("g").exists());
}

// ---- signals ----

/// Waits (at most 20 s, then fails) until a temp with content is in `dir`:
/// the write is then in the middle of the stream.
fn wait_for_partial_temp(dir: &Path) {
    for _ in 0..2000 {
        let partial = temps(dir)
            .iter()
            .any(|t| fs::metadata(dir.join(t)).is_ok_and(|m| m.len() > 0));
        if partial {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("no temp with content appeared in {}", dir.display());
}

/// Sends `signal` (a name `kill` knows) to `pid` with the `kill` command.
fn send(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn a_signal_mid_stream_removes_the_temp_and_exits_128_plus_n() {
    for (signal, number) in [("TERM", 15), ("INT", 2), ("HUP", 1), ("PIPE", 13)] {
        let dir = dir_with_f();
        let mut child = crashsafe()
            .args(["write", "f"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A slow writer: some input, then the pipe stays open and idle, so
        // crashsafe is blocked waiting for more when the signal comes.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&pattern(200_000)).unwrap();
        wait_for_partial_temp(dir.path());
        send(signal, child.id());
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(
            out.status.code(),
            Some(128 + number),
            "SIG{signal}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(&format!("interrupted by SIG{signal}")));
        assert_unchanged(dir.path());
    }
}

#[test]
fn a_signal_mid_stream_stops_the_producer_too() {
    let dir = dir_with_f();
    let child = crashsafe()
        .args(["write", "f", "--", "sh", "-c"])
        .arg("echo $$ > pid; head -c 200000 /dev/zero; exec sleep 60")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_partial_temp(dir.path());
    send("TERM", child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    // The producer got the signal and was reaped: its pid is gone.
    let pid = fs::read_to_string(dir.path().join("pid")).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "producer {pid} still exists"
    );
    fs::remove_file(dir.path().join("pid")).unwrap();
    assert_unchanged(dir.path());
}

#[test]
fn a_signal_while_data_is_flowing_stops_an_endless_producer() {
    let dir = dir_with_f();
    // `yes` never stops on its own: only the signal ends this write.
    let child = crashsafe()
        .args(["write", "f", "--", "yes", "endless"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_partial_temp(dir.path());
    send("INT", child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_unchanged(dir.path());
}

/// The number of `fsync` in `/proc/PID/syscall` on this architecture.
#[cfg(target_arch = "x86_64")]
const FSYNC_NR: &str = "74";

#[test]
#[cfg(target_arch = "x86_64")]
fn a_signal_during_the_flush_lets_the_replace_finish() {
    const NAME: &str = "a_signal_during_the_flush_lets_the_replace_finish";
    let probe = Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return common::skip(NAME, "strace is missing or may not trace here");
    }
    let dir = dir_with_f();
    fs::write(dir.path().join("input"), b"new").unwrap();
    // strace holds every fsync at its entry for a second: the input has
    // ended, and the commit is under way when the signal comes.
    let strace = Command::new("strace")
        .args(["-o", "/dev/null", "-e", "trace=fsync"])
        .args(["-e", "inject=fsync:delay_enter=1000000"])
        .arg(env!("CARGO_BIN_EXE_crashsafe"))
        .args(["write", "f"])
        .current_dir(dir.path())
        .stdin(File::open(dir.path().join("input")).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", strace.id());
    let mut in_fsync = None;
    for _ in 0..2000 {
        let pid = fs::read_to_string(&children).unwrap_or_default();
        let pid = pid.trim();
        let syscall = fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if !pid.is_empty() && syscall.split(' ').next() == Some(FSYNC_NR) {
            in_fsync = Some(pid.parse::<u32>().unwrap());
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let pid = in_fsync.expect("crashsafe never reached its fsync");
    send("INT", pid);
    let out = strace.wait_with_output().unwrap();
    // strace exits with its tracee's status.
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("f holds the new content"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new");
    fs::remove_file(dir.path().join("input")).unwrap();
    assert!(temps(dir.path()).is_empty());
}

#[test]
fn a_producer_ignoring_the_signal_is_killed_after_its_grace() {
    let dir = dir_with_f();
    // An ignored SIGTERM stays ignored across exec.
    let child = crashsafe()
        .args(["write", "f", "--", "sh", "-c"])
        .arg("trap '' TERM; echo $$ > pid; head -c 200000 /dev/zero; exec sleep 60")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_partial_temp(dir.path());
    send("TERM", child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let pid = fs::read_to_string(dir.path().join("pid")).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "producer {pid} still exists"
    );
    fs::remove_file(dir.path().join("pid")).unwrap();
    assert_unchanged(dir.path());
}

#[test]
fn a_closed_stderr_pipe_does_not_change_the_exit_status() {
    // crashsafe's stderr is a pipe whose reader is gone: the failure message
    // cannot be written (EPIPE, and a SIGPIPE to crashsafe), yet the exit
    // status must still be the producer's, not a panic's or 141.
    let dir = dir_with_f();
    let mut child = crashsafe()
        .args([
            "write",
            "f",
            "--",
            "sh",
            "-c",
            "exec 2>/dev/null; printf x; exit 3",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert_unchanged(dir.path());
}

// ---- progress ----

/// A producer whose output takes more than a second.
const SLOW_PRODUCER: &str = "head -c 100000 /dev/zero; sleep 1; head -c 100000 /dev/zero";

#[test]
fn no_progress_when_stderr_is_not_a_terminal() {
    let dir = dir_with_f();
    let out = produce(dir.path(), &[], SLOW_PRODUCER, b"");
    // assert_success also checks that stderr is empty.
    assert_success(&out);
    assert_eq!(fs::read(dir.path().join("f")).unwrap().len(), 200_000);
}

#[test]
fn progress_on_a_terminal() {
    // `script` gives the command a pseudo-terminal as stdout and stderr.
    if Command::new("script").arg("--version").output().is_err() {
        common::skip("progress_on_a_terminal", "no `script` command for a pty");
        return;
    }
    let dir = dir_with_f();
    let command = format!(
        "'{}' write f -- sh -c '{SLOW_PRODUCER}'",
        env!("CARGO_BIN_EXE_crashsafe")
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {text}", out.status);
    // e.g. "crashsafe: 105.7 KiB written, 105.0 KiB/s" (the figures depend
    // on how the chunks arrive).
    assert!(text.contains("\x1b[Kcrashsafe: "), "{text:?}");
    assert!(text.contains(" KiB written, "), "{text:?}");
    assert!(text.contains("B/s"), "{text:?}");
    // The line is erased at the end.
    assert!(text.ends_with("\r\x1b[K"), "{text:?}");
    assert_eq!(fs::read(dir.path().join("f")).unwrap().len(), 200_000);
}

//! Helpers shared by the robustness tests (kill, concurrency, real_faults,
//! security): self-checking content, a seeded PRNG, counts from the
//! environment, child processes that re-run the test binary, and mounts.
//!
//! Each test crate uses only part of this module.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// The environment variable that turns a test into a child process's body.
pub(crate) const CHILD_ENV: &str = "CRASHSAFE_CHILD";

/// Prefix of every line a child reports to its parent. libtest may print
/// on the same line (`test name ... `), so parents search for it anywhere.
pub(crate) const REPORT: &str = "@@";

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The child mode this process was started in, if it is a child.
pub(crate) fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A required environment variable of a child process.
pub(crate) fn child_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
}

/// Prints one report line in a single `write` (atomic on a pipe, so a
/// SIGKILL never leaves half a report) and flushes it.
pub(crate) fn report(line: &str) {
    use std::io::Write;
    // The leading newline ends whatever libtest printed before.
    let text = format!("\n{REPORT}{line}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).expect("parent went away");
    out.flush().expect("parent went away");
}

/// The report carried by `line` (the text after the prefix), if any.
pub(crate) fn parse_report(line: &str) -> Option<&str> {
    line.find(REPORT).map(|i| &line[i + REPORT.len()..])
}

/// A command that re-runs this test binary with only `test` selected, in
/// child `mode`.
pub(crate) fn child_command(test: &str, mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(child_args(test))
        .env(CHILD_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// The libtest arguments that run exactly `test`, output uncaptured.
pub(crate) fn child_args(test: &str) -> [&str; 4] {
    ["--exact", test, "--nocapture", "--test-threads=1"]
}

/// Spawns a thread that reads `stdout` to the end and returns every report.
pub(crate) fn collect_reports(stdout: ChildStdout) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| parse_report(&l).map(str::to_owned))
            .collect()
    })
}

/// Kills `child` with SIGKILL (what `Child::kill` sends on Unix), reaps it
/// and asserts it died of that signal rather than exiting on its own.
pub(crate) fn kill_and_reap(child: &mut Child) {
    use std::os::unix::process::ExitStatusExt;
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "child {status:?} should have been killed, it ended on its own"
    );
}

/// Sets the flag when dropped, so reader threads stop even if the main
/// loop panics (a scoped thread would otherwise wait for them forever).
pub(crate) struct StopOnDrop<'a>(pub(crate) &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A count from the environment (`CRASHSAFE_KILLS=1000`), or `default`.
pub(crate) fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a count")),
        Err(_) => default,
    }
}

/// xorshift64*: small, seeded, reproducible.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `test`, seeded from `CRASHSAFE_SEED` or the clock.
    /// The seed is printed so a failing run can be replayed.
    pub(crate) fn for_test(test: &str) -> Rng {
        let seed = match std::env::var("CRASHSAFE_SEED") {
            Ok(v) => v.parse().expect("CRASHSAFE_SEED is not a number"),
            Err(_) => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        println!("{test}: seed {seed} (replay with CRASHSAFE_SEED={seed})");
        Rng::new(seed ^ fnv1a(test.as_bytes()))
    }

    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for test scheduling.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One writer's version `version`: a header line naming writer, version,
/// body length and checksum, then a body derived from both numbers. Lengths
/// vary from 1 to 40 KiB, so versions differ in size and span several pages.
pub(crate) fn encode(writer: u32, version: u64) -> Vec<u8> {
    let seed = fnv1a(&[writer.to_le_bytes().as_slice(), &version.to_le_bytes()].concat());
    let len = 1 + (seed % (40 * 1024)) as usize;
    let body = body(seed, len);
    let header = format!(
        "crashsafe-test w={writer:08x} v={version:016x} len={len:08x} sum={:016x}\n",
        fnv1a(&body)
    );
    let mut out = header.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Eight bytes per PRNG step: cheap even in an unoptimised test build.
fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Checks a whole file against [`encode`]; returns (writer, version) or
/// what is wrong with it (empty, short, torn, mixed).
pub(crate) fn decode(bytes: &[u8]) -> Result<(u32, u64), String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("no header line in {} bytes", bytes.len()))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Result<u64, String> {
        let start = header
            .find(key)
            .ok_or_else(|| format!("header {header:?} lacks {key}"))?
            + key.len();
        let hex = header[start..].split(' ').next().unwrap_or("");
        u64::from_str_radix(hex, 16).map_err(|_| format!("bad {key} in {header:?}"))
    };
    let (writer, version) = (field(" w=")? as u32, field(" v=")?);
    let expected = encode(writer, version);
    if bytes != expected.as_slice() {
        let sum_ok = fnv1a(&bytes[nl + 1..]) == field(" sum=")?;
        return Err(format!(
            "torn: {header:?}, {} bytes instead of {}, checksum {}",
            bytes.len(),
            expected.len(),
            if sum_ok { "ok" } else { "wrong" }
        ));
    }
    Ok((writer, version))
}

/// Reads and decodes `path`.
pub(crate) fn read_version(path: &Path) -> Result<(u32, u64), String> {
    let bytes = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    decode(&bytes)
}

/// True if `name` has this library's temp mark `.NAME.crashsafe-RANDOM.tmp`.
pub(crate) fn is_temp_name(name: &OsStr) -> bool {
    // ".NAME.crashsafe-RANDOM.tmp", RANDOM 12 characters of the alphabet.
    let b = name.as_encoded_bytes();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let tail = ".crashsafe-".len() + 12 + ".tmp".len();
    b.len() > tail + 1
        && b[0] == b'.'
        && b.ends_with(b".tmp")
        && b[b.len() - tail..].starts_with(b".crashsafe-")
        && b[b.len() - 16..b.len() - 4]
            .iter()
            .all(|c| alphabet.contains(c))
}

/// Every name in `dir`, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The temp-shaped names in `dir`.
pub(crate) fn temps(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| is_temp_name(OsStr::new(n)))
        .collect()
}

/// Sets `path`'s mtime `secs` seconds into the past (`sweep` ignores it).
pub(crate) fn age(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

/// Sweeps `dir` right away (no ageing: a dead writer's temp goes at once)
/// and checks that sweep removed exactly the leftover temps and that only
/// `keep` remains. Returns how many were swept.
pub(crate) fn sweep_leftovers(dir: &Path, keep: &[&str]) -> usize {
    let leftovers = temps(dir);
    for name in &leftovers {
        let meta = fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is not a regular file");
    }
    let swept = crashsafe::sweep(dir).unwrap();
    assert_eq!(swept, leftovers.len(), "sweep count vs leftovers");
    let mut keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    keep.sort();
    assert_eq!(names(dir), keep, "only the target may remain");
    swept
}

/// A directory on a tmpfs (`/dev/shm`) when there is one, else the target
/// directory's tmp (the real disk).
pub(crate) fn tmpfs_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    println!("no writable /dev/shm: using the disk instead");
    disk_dir()
}

/// A directory on the disk that holds the build (never a tmpfs /tmp).
pub(crate) fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A tmpfs mounted on a fresh directory, unmounted (lazily, so it cannot
/// fail on a busy mount) when dropped, even if the test panics.
#[derive(Debug)]
pub(crate) struct Mount {
    path: PathBuf,
    // Dropped after `Drop::drop` has unmounted it.
    _dir: tempfile::TempDir,
}

impl Mount {
    /// Mounts a tmpfs with `options` (e.g. `size=1m`), or explains why not.
    pub(crate) fn tmpfs(options: &str) -> Result<Mount, String> {
        if !is_root() {
            return Err("mounting a filesystem needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path()))?;
        Ok(Mount {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Mounts a fresh ext4 image of `size_mib` through a loop device, or
    /// explains why not.
    pub(crate) fn ext4_loop(size_mib: u64) -> Result<Mount, String> {
        if !is_root() {
            return Err("mounting a filesystem needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("ext4.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let file = fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(size_mib << 20).map_err(|e| e.to_string())?;
        drop(file);
        // -m 0: no blocks reserved for root, so "full" means full.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&image)
            .arg(&mnt))?;
        Ok(Mount {
            path: mnt,
            _dir: dir,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the filesystem read-only.
    pub(crate) fn remount_ro(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount,ro: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs a setup command; its failure (or absence) is the reason to skip.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{cmd:?} failed: {}", err.trim()));
    }
    Ok(())
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

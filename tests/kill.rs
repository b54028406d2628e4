//! kill -9 at random moments while a child process replaces one file in a
//! loop and reader threads read it.
//!
//! The child (this test binary re-run in child mode) starts from the version
//! in the file, writes the next versions one after another and reports each
//! committed one on stdout. The parent kills it with SIGKILL after a random
//! delay, reaps it, and checks that the file is a complete version no older
//! than the last one reported (and at most one newer: the kill may land after
//! the rename, before the report). Meanwhile readers check every read: never
//! missing, empty, torn or older than what was already reported. At the end
//! the temps left by the kills are swept at once.
//!
//! Counts: `CRASHSAFE_KILLS` (default 1000) for each tmpfs variant,
//! `CRASHSAFE_DISK_KILLS` (default 300) for the real-disk one: 2300 kills
//! per run by default, about 30 s on two cores. `CRASHSAFE_SEED` replays
//! the delays.
//!
//! A kill is process death, not a power cut: the page cache survives, so
//! these tests cannot see a missing fsync (the simulator covers that). They
//! see everything a dying process can leave: torn targets, missing files,
//! stray temps. Hence the fast variants run on tmpfs (`/dev/shm`) with the
//! default `Durable` options; one variant runs on the real disk.
#![cfg(unix)]

mod procs;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crashsafe::Options;
use procs::{Rng, child_command, child_env, child_mode, env_count, kill_and_reap, report};

/// One kill-loop configuration.
#[derive(Debug, Clone, Copy)]
struct Config {
    kills: usize,
    unnamed_temp: bool,
    /// Upper bound of the random delay between the child's start and the kill.
    delay_us_max: u64,
}

/// What a kill loop did, printed by each test.
#[derive(Debug, Default)]
struct Stats {
    kills: usize,
    /// Versions committed in total (the last version in the file).
    versions: u64,
    /// Kills that landed after a rename but before its report.
    unreported: usize,
    /// Temps left behind by the kills, all removed by sweep.
    swept: usize,
    reads: u64,
}

const READERS: usize = 2;

#[test]
fn kill_named_temps_on_tmpfs() {
    let test = "kill_named_temps_on_tmpfs";
    if child_mode().is_some() {
        return writer_child();
    }
    let dir = procs::tmpfs_dir();
    let kills = env_count("CRASHSAFE_KILLS", 1000);
    let cfg = Config {
        kills,
        unnamed_temp: false,
        delay_us_max: 4000,
    };
    let stats = kill_loop(test, dir.path(), cfg);
    assert!(
        stats.swept > 0 || kills < 20,
        "no kill left a temp: {stats:?}"
    );
}

#[test]
fn kill_unnamed_temps_on_tmpfs() {
    let test = "kill_unnamed_temps_on_tmpfs";
    if child_mode().is_some() {
        return writer_child();
    }
    let dir = procs::tmpfs_dir();
    let cfg = Config {
        kills: env_count("CRASHSAFE_KILLS", 1000),
        unnamed_temp: true,
        delay_us_max: 4000,
    };
    // Leftovers come only from kills between the link and the rename.
    kill_loop(test, dir.path(), cfg);
}

#[test]
fn kill_named_temps_on_disk() {
    let test = "kill_named_temps_on_disk";
    if child_mode().is_some() {
        return writer_child();
    }
    let dir = procs::disk_dir();
    let cfg = Config {
        kills: env_count("CRASHSAFE_DISK_KILLS", 300),
        unnamed_temp: false,
        delay_us_max: 20_000,
    };
    kill_loop(test, dir.path(), cfg);
}

/// The child: replace the file with the next version, report, forever
/// (until killed; it gives up after five minutes in case the parent died).
fn writer_child() {
    let path = child_env("CRASHSAFE_PATH");
    let mut opts = Options::new();
    opts.unnamed_temp(child_env("CRASHSAFE_UNNAMED") == "1");
    let (_, mut version) = procs::read_version(Path::new(&path)).unwrap();
    report(&format!("ready {version}"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        version += 1;
        let contents = procs::encode(0, version);
        opts.write(&path, &contents).unwrap();
        report(&format!("commit {version}"));
    }
}

/// Shared between the kill loop and the readers.
struct Shared {
    stop: AtomicBool,
    /// The newest version known to be committed: no read may be older.
    committed: AtomicU64,
    reads: AtomicU64,
    failures: Mutex<Vec<String>>,
}

fn kill_loop(test: &str, dir: &Path, cfg: Config) -> Stats {
    let started = Instant::now();
    let mut rng = Rng::for_test(test);
    let path = dir.join("target");
    fs::write(&path, procs::encode(0, 0)).unwrap();
    let shared = Shared {
        stop: AtomicBool::new(false),
        committed: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
    };
    let mut stats = Stats::default();
    thread::scope(|s| {
        let _stop = procs::StopOnDrop(&shared.stop);
        for _ in 0..READERS {
            s.spawn(|| reader(&path, &shared));
        }
        let mut base = 0;
        for round in 0..cfg.kills {
            let (last, file) = kill_round(test, &path, base, &cfg, &mut rng);
            assert!(
                file == last || file == last + 1,
                "round {round}: after the kill the file holds version {file}, \
                 but the child last reported {last}"
            );
            stats.unreported += usize::from(file == last + 1);
            stats.kills += 1;
            shared.committed.store(file, Ordering::SeqCst);
            base = file;
        }
        stats.versions = base;
    });
    let failures = shared.failures.into_inner().unwrap();
    assert!(failures.is_empty(), "bad reads: {failures:#?}");
    stats.reads = shared.reads.load(Ordering::SeqCst);
    assert!(stats.reads > 0, "the readers never read the file");
    let leftovers = procs::temps(dir).len();
    stats.swept = procs::sweep_leftovers(dir, &["target"]);
    assert_eq!(procs::read_version(&path), Ok((0, stats.versions)));
    println!(
        "{test}: {} kills, {} versions, {} kills after the rename before the report, \
         {leftovers} temps left and swept, {} reads, {:.1} s",
        stats.kills,
        stats.versions,
        stats.unreported,
        stats.reads,
        started.elapsed().as_secs_f64()
    );
    stats
}

/// Starts a writer child at version `base`, kills it after a random delay,
/// and returns the last version it reported and the version now in the file.
fn kill_round(test: &str, path: &Path, base: u64, cfg: &Config, rng: &mut Rng) -> (u64, u64) {
    let mut child = child_command(test, "writer")
        .env("CRASHSAFE_PATH", path)
        .env(
            "CRASHSAFE_UNNAMED",
            if cfg.unnamed_temp { "1" } else { "0" },
        )
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
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
    // Kill only once the child is in its loop, at a random point of it.
    let ready = rx.recv();
    if ready.as_deref() != Ok(format!("ready {base}").as_str()) {
        let _ = child.kill();
        panic!(
            "child did not start at {base}: {ready:?}, {:?}",
            child.wait()
        );
    }
    thread::sleep(Duration::from_micros(rng.below(cfg.delay_us_max)));
    kill_and_reap(&mut child);
    lines.join().unwrap();
    let mut last = base;
    for r in rx.try_iter() {
        let v: u64 = r
            .strip_prefix("commit ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected report {r:?}"));
        assert_eq!(v, last + 1, "versions must be reported in order");
        last = v;
    }
    let (writer, file) = procs::read_version(path)
        .unwrap_or_else(|e| panic!("after killing the writer at version {last}: {e}"));
    assert_eq!(writer, 0);
    (last, file)
}

/// Reads the file continuously: every read is a complete version, never
/// older than the last committed one when the read began, and never older
/// than what this reader saw before.
fn reader(path: &Path, shared: &Shared) {
    let mut seen = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let floor = shared.committed.load(Ordering::SeqCst);
        let problem = match procs::read_version(path) {
            Ok((_, v)) if v < floor => Some(format!("version {v} after {floor} was committed")),
            Ok((_, v)) if v < seen => Some(format!("version {v} after this reader saw {seen}")),
            Ok((_, v)) => {
                seen = v;
                None
            }
            Err(e) => Some(e),
        };
        shared.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = problem {
            let mut failures = shared.failures.lock().unwrap();
            failures.push(p);
            if failures.len() >= 10 {
                return;
            }
        }
    }
}

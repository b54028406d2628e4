//! Many writers at once, in threads and in processes.
//!
//! - `update` from 8 processes x 250 calls loses no increment, also while
//!   processes are killed at random moments (a killed process's unfinished
//!   update is simply not counted, and the file says exactly which landed).
//! - Plain replaces of one target from threads and processes at once: every
//!   read is a complete version of some writer, and no temp is left behind.
//!
//! Counts: `CRASHSAFE_UPDATES` per process (default 250),
//! `CRASHSAFE_UPDATE_KILLS` (default 100), `CRASHSAFE_WRITES` per
//! concurrent writer (default 200); `CRASHSAFE_SEED` replays the kills.
#![cfg(unix)]

mod procs;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crashsafe::{AtomicFile, Durability, Options};
use procs::{Rng, child_command, child_env, child_mode, env_count, report};

const PROCESSES: usize = 8;

// ---------------------------------------------------------------- counter

/// The counter file: a total and, per updater process, how many of its
/// increments are in it. `total` must always equal the sum of the entries.
#[derive(Debug, Default, PartialEq)]
struct Counter {
    total: u64,
    by_id: BTreeMap<u32, u64>,
}

impl Counter {
    fn parse(bytes: &[u8]) -> Counter {
        let text = std::str::from_utf8(bytes).expect("counter is not text");
        let mut lines = text.lines();
        let total = lines
            .next()
            .and_then(|l| l.strip_prefix("total "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("torn counter file: {text:?}"));
        let by_id: BTreeMap<u32, u64> = lines
            .map(|l| {
                let (id, n) = l.split_once(' ').expect("torn counter line");
                (id.parse().unwrap(), n.parse().unwrap())
            })
            .collect();
        assert!(text.ends_with('\n'), "torn counter file: {text:?}");
        assert_eq!(total, by_id.values().sum::<u64>(), "inconsistent: {text:?}");
        Counter { total, by_id }
    }

    fn read(path: &Path) -> Counter {
        Counter::parse(&fs::read(path).unwrap())
    }

    /// As `read`, but a file no update has created yet counts as all zero
    /// (a kill can land before the first rename). A file that vanished
    /// after updates landed still fails the caller's count check.
    fn read_or_empty(path: &Path) -> Counter {
        match fs::read(path) {
            Ok(bytes) => Counter::parse(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Counter::parse(b"total 0\n"),
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut out = format!("total {}\n", self.total);
        for (id, n) in &self.by_id {
            out.push_str(&format!("{id} {n}\n"));
        }
        out.into_bytes()
    }

    fn get(&self, id: u32) -> u64 {
        self.by_id.get(&id).copied().unwrap_or(0)
    }
}

/// The updater child: `CRASHSAFE_UPDATES` increments as process
/// `CRASHSAFE_ID`, reporting each one after `update` returned.
fn updater_child() {
    let path = child_env("CRASHSAFE_PATH");
    let id: u32 = child_env("CRASHSAFE_ID").parse().unwrap();
    let updates: u64 = child_env("CRASHSAFE_UPDATES").parse().unwrap();
    for _ in 0..updates {
        crashsafe::update(&path, |old| {
            let mut c = old.map(Counter::parse).unwrap_or_default();
            c.total += 1;
            *c.by_id.entry(id).or_default() += 1;
            Ok(c.render())
        })
        .unwrap();
        report(&format!("done {id}"));
    }
}

/// A running updater process and its report collector.
struct Updater {
    id: u32,
    quota: u64,
    child: Child,
    /// Taken by [`Updater::reported`].
    reports: Option<JoinHandle<Vec<String>>>,
}

impl Drop for Updater {
    /// A test that fails midway leaves no updater running.
    fn drop(&mut self) {
        if self.reports.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Updater {
    fn spawn(test: &str, path: &Path, id: u32, quota: u64) -> Updater {
        let mut child = child_command(test, "updater")
            .env("CRASHSAFE_PATH", path)
            .env("CRASHSAFE_ID", id.to_string())
            .env("CRASHSAFE_UPDATES", quota.to_string())
            .spawn()
            .unwrap();
        let reports = Some(procs::collect_reports(child.stdout.take().unwrap()));
        Updater {
            id,
            quota,
            child,
            reports,
        }
    }

    /// Waits for the end of the reports (call after the child ended);
    /// returns how many updates it reported.
    fn reported(mut self) -> u64 {
        let id = self.id;
        let reports = self.reports.take().unwrap().join().unwrap();
        assert!(
            reports.iter().all(|r| *r == format!("done {id}")),
            "{reports:?}"
        );
        reports.len() as u64
    }
}

#[test]
fn updates_from_processes_lose_nothing() {
    let test = "updates_from_processes_lose_nothing";
    if child_mode().is_some() {
        return updater_child();
    }
    let started = Instant::now();
    let per_process = env_count("CRASHSAFE_UPDATES", 250) as u64;
    // The real disk, default durability: every update fsyncs.
    let dir = procs::disk_dir();
    let path = dir.path().join("counter");
    let updaters: Vec<Updater> = (0..PROCESSES as u32)
        .map(|id| Updater::spawn(test, &path, id, per_process))
        .collect();
    for mut u in updaters {
        let status = u.child.wait().unwrap();
        assert!(status.success(), "updater {} failed: {status:?}", u.id);
        let (id, quota) = (u.id, u.quota);
        assert_eq!(u.reported(), quota, "updater {id} reports");
    }
    let c = Counter::read(&path);
    assert_eq!(c.total, PROCESSES as u64 * per_process);
    for id in 0..PROCESSES as u32 {
        assert_eq!(c.get(id), per_process, "increments of updater {id}");
    }
    assert_eq!(procs::names(dir.path()), ["counter"]);
    println!(
        "{test}: {PROCESSES} processes x {per_process} updates = {}, {:.1} s",
        c.total,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn updates_with_random_kills_lose_nothing() {
    let test = "updates_with_random_kills_lose_nothing";
    if child_mode().is_some() {
        return updater_child();
    }
    let started = Instant::now();
    let mut rng = Rng::for_test(test);
    let per_slot = env_count("CRASHSAFE_UPDATES", 250) as u64;
    let kills = env_count("CRASHSAFE_UPDATE_KILLS", 100);
    // The real disk: its fsyncs make the updates slow enough that the
    // kills land all through the run, not after the last update.
    let dir = procs::disk_dir();
    let path = dir.path().join("counter");
    // Each of the 8 slots owes `per_slot` increments; a killed process is
    // replaced by a new one (new id) that does what is still owed.
    let mut next_id = PROCESSES as u32;
    let mut slots: Vec<Option<Updater>> = (0..PROCESSES as u32)
        .map(|id| Some(Updater::spawn(test, &path, id, per_slot)))
        .collect();
    let (mut killed, mut reported_total, mut unreported) = (0, 0, 0);
    while killed < kills && slots.iter().any(Option::is_some) {
        thread::sleep(Duration::from_micros(rng.below(20_000)));
        let live: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_some()).collect();
        let slot = live[rng.below(live.len() as u64) as usize];
        let mut u = slots[slot].take().unwrap();
        u.child.kill().unwrap();
        let status = u.child.wait().unwrap();
        let (id, quota) = (u.id, u.quota);
        let reported = u.reported();
        reported_total += reported;
        let landed = Counter::read_or_empty(&path).get(id);
        if status.success() {
            // It had finished before the kill reached it.
            assert_eq!((reported, landed), (quota, quota), "updater {id}");
            continue;
        }
        assert_eq!(status.signal(), Some(9), "updater {id} failed: {status:?}");
        killed += 1;
        // The kill may land after an update's rename, before its report.
        assert!(
            landed == reported || landed == reported + 1,
            "updater {id}: {landed} increments in the file, {reported} reported"
        );
        unreported += landed - reported;
        if landed < quota {
            let replacement = Updater::spawn(test, &path, next_id, quota - landed);
            slots[slot] = Some(replacement);
            next_id += 1;
        }
    }
    for mut u in slots.into_iter().flatten() {
        let status = u.child.wait().unwrap();
        assert!(status.success(), "updater {} failed: {status:?}", u.id);
        let (id, quota) = (u.id, u.quota);
        let reported = u.reported();
        assert_eq!(reported, quota, "updater {id} reports");
        assert_eq!(Counter::read(&path).get(id), quota, "updater {id}");
        reported_total += reported;
    }
    let c = Counter::read(&path);
    assert_eq!(c.total, PROCESSES as u64 * per_slot, "{c:?}");
    assert_eq!(c.total, reported_total + unreported);
    let swept = procs::sweep_leftovers(dir.path(), &["counter"]);
    println!(
        "{test}: {} increments by {next_id} processes, {killed} killed \
         ({unreported} after the rename before the report), {swept} temps swept, {:.1} s",
        c.total,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- writers

/// How a writer replaces the file.
#[derive(Debug, Clone, Copy)]
enum Style {
    Write,
    Stream,
    Unnamed,
    ConsistentStream,
}

fn write_version(path: &Path, style: Style, writer: u32, version: u64) {
    let contents = procs::encode(writer, version);
    let mut opts = Options::new();
    match style {
        Style::Write => crashsafe::write(path, &contents).unwrap(),
        Style::Unnamed => opts.unnamed_temp(true).write(path, &contents).unwrap(),
        Style::Stream | Style::ConsistentStream => {
            if let Style::ConsistentStream = style {
                opts.durability(Durability::Consistent);
            }
            let mut file: AtomicFile = opts.open(path).unwrap();
            for chunk in contents.chunks(3000) {
                file.write_all(chunk).unwrap();
            }
            file.commit().unwrap();
        }
    }
}

/// A writer process: waits for "go" on stdin, then writes its versions.
fn writer_child() {
    let path = child_env("CRASHSAFE_PATH");
    let writer: u32 = child_env("CRASHSAFE_ID").parse().unwrap();
    let writes: u64 = child_env("CRASHSAFE_WRITES").parse().unwrap();
    let style = match child_env("CRASHSAFE_STYLE").as_str() {
        "write" => Style::Write,
        _ => Style::ConsistentStream,
    };
    report("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    for v in 1..=writes {
        write_version(Path::new(&path), style, writer, v);
    }
    report("finished");
}

#[test]
fn concurrent_writers_never_tear() {
    let test = "concurrent_writers_never_tear";
    if child_mode().is_some() {
        return writer_child();
    }
    let started = Instant::now();
    let writes = env_count("CRASHSAFE_WRITES", 200) as u64;
    let dir = procs::disk_dir();
    let path = dir.path().join("target");
    fs::write(&path, procs::encode(0, 0)).unwrap();
    let threads = [(1, Style::Write), (2, Style::Stream), (3, Style::Unnamed)];
    let processes = [(10, "write"), (11, "stream")];
    let mut children: Vec<Child> = processes
        .iter()
        .map(|(id, style)| {
            let mut child = child_command(test, "writer")
                .env("CRASHSAFE_PATH", &path)
                .env("CRASHSAFE_ID", id.to_string())
                .env("CRASHSAFE_WRITES", writes.to_string())
                .env("CRASHSAFE_STYLE", style)
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            wait_for_report(&mut child, "ready");
            child
        })
        .collect();
    let writers: Vec<u32> = threads
        .iter()
        .map(|t| t.0)
        .chain(processes.iter().map(|p| p.0))
        .collect();
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    thread::scope(|s| {
        let _stop = procs::StopOnDrop(&stop);
        let readers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| read_while(&path, &writers, &stop, &reads, &failures)))
            .collect();
        for child in &mut children {
            child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        }
        let handles: Vec<_> = threads
            .iter()
            .map(|&(id, style)| {
                let path = &path;
                s.spawn(move || (1..=writes).for_each(|v| write_version(path, style, id, v)))
            })
            .collect();
        let done: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        for child in &mut children {
            wait_for_report(child, "finished");
            assert!(child.wait().unwrap().success());
        }
        stop.store(true, Ordering::SeqCst);
        readers.into_iter().for_each(|r| r.join().unwrap());
        assert!(done.iter().all(Result::is_ok), "a writer thread panicked");
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "bad reads: {failures:#?}");
    let reads = reads.load(Ordering::SeqCst);
    assert!(reads > 0);
    // The last rename wins, and it is some writer's last version.
    let (writer, version) = procs::read_version(&path).unwrap();
    assert!(
        writers.contains(&writer) && version == writes,
        "{writer} {version}"
    );
    assert_eq!(procs::names(dir.path()), ["target"], "temps leaked");
    println!(
        "{test}: {} writers x {writes} versions, {reads} reads, {:.1} s",
        writers.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Reads child stdout lines until the report `want`.
fn wait_for_report(child: &mut Child, want: &str) {
    let stdout = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "child ended before reporting {want}");
        if procs::parse_report(line.trim_end()) == Some(want) {
            return;
        }
    }
}

/// Reads until `stop`: every read is a complete version by a known writer,
/// and no writer's version goes backwards for this reader.
fn read_while(
    path: &Path,
    writers: &[u32],
    stop: &AtomicBool,
    reads: &AtomicU64,
    failures: &Mutex<Vec<String>>,
) {
    let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let problem = match procs::read_version(path) {
            Ok((0, 0)) => None,
            Ok((w, _)) if !writers.contains(&w) => Some(format!("unknown writer {w}")),
            Ok((w, v)) => {
                let last = seen.entry(w).or_default();
                let back = v < *last;
                *last = v;
                back.then(|| format!("writer {w} went back to {v}"))
            }
            Err(e) => Some(e),
        };
        reads.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = problem {
            let mut f = failures.lock().unwrap();
            f.push(p);
            if f.len() >= 10 {
                return;
            }
        }
    }
}

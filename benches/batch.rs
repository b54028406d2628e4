//! Batch benchmark: 100, 1,000 and 10,000 files of 4 KiB in one directory.
//!
//! Contenders, interleaved round by round in a rotating order (the disk here
//! alternates between fast and slow periods, so only ratios measured side by
//! side mean anything):
//!
//! - `batch`: `crashsafe::Batch` (temps, one flush, renames, one dir fsync);
//! - `floor`: the hand-written batch: write all temps (each closed once
//!   written), one `syncfs`, rename all, one directory fsync, nothing else;
//! - `floor+fdatasync`: the floor plus an `fdatasync` of each temp after
//!   the `syncfs` (the flush rule issue 10 weighed and did not take; its
//!   cost is reported for the record);
//! - `singles`: separate durable `crashsafe::write` calls (100 files only).
//!
//! Reported: median time per file of each contender at each size, and the
//! ratio to the floor of the same size. Goal (issue 10): batch at most 1.3x
//! the floor at every size on disk, and at least 2x faster than singles at
//! 100 files.
//!
//! ```text
//! cargo bench --bench batch                          # on the disk (and tmpfs when root)
//! CRASHSAFE_BENCH_ROUNDS=21 cargo bench --bench batch
//! cargo bench --bench batch -- --quick               # smoke test: 100 and 1,000 files, 2 rounds
//! CRASHSAFE_BENCH_DIR=/mnt/x cargo bench --bench batch
//! cargo bench --bench batch -- --files 10000 --rounds 9   # one size only
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{Args, Tmpfs, disk_base, environment, fs_type, median_f64};
use rustix::fs::{Mode, OFlags};

const SIZE: usize = 4096;

fn payload(round: usize, i: usize) -> Vec<u8> {
    let mut v = vec![0u8; SIZE];
    for (k, b) in v.iter_mut().enumerate() {
        *b = (k as u8) ^ (round as u8) ^ (i as u8);
    }
    v
}

fn run_batch(dir: &Path, files: usize, round: usize) {
    let mut batch = crashsafe::Batch::new();
    for i in 0..files {
        batch
            .write(dir.join(format!("f{i:05}")), payload(round, i))
            .unwrap();
    }
    batch.commit().unwrap();
}

fn run_singles(dir: &Path, files: usize, round: usize) {
    for i in 0..files {
        crashsafe::write(dir.join(format!("f{i:05}")), payload(round, i)).unwrap();
    }
}

/// The hand-written floor: write all temps, one syncfs, rename all, one
/// directory fsync.
fn run_floor(dir: &Path, files: usize, round: usize) {
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    for i in 0..files {
        let temp = format!(".f{i:05}.tmp");
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(&dirfd, temp.as_str(), flags, Mode::from_raw_mode(0o644)).unwrap();
        let data = payload(round, i);
        let mut done = 0;
        while done < data.len() {
            done += rustix::io::write(&fd, &data[done..]).unwrap();
        }
    }
    rustix::fs::syncfs(&dirfd).unwrap();
    for i in 0..files {
        let (temp, name) = (format!(".f{i:05}.tmp"), format!("f{i:05}"));
        rustix::fs::renameat(&dirfd, temp.as_str(), &dirfd, name.as_str()).unwrap();
    }
    rustix::fs::fsync(&dirfd).unwrap();
}

/// The floor plus an `fdatasync` of every temp after the `syncfs` (temps
/// kept open until then): the price of the alternative flush rule "syncfs,
/// then fdatasync each temp" that issue 10 weighed (not what `Batch` does).
fn run_floor_fdatasync(dir: &Path, files: usize, round: usize) {
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let mut fds = Vec::with_capacity(files);
    for i in 0..files {
        let temp = format!(".f{i:05}.tmp");
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(&dirfd, temp.as_str(), flags, Mode::from_raw_mode(0o644)).unwrap();
        let data = payload(round, i);
        let mut done = 0;
        while done < data.len() {
            done += rustix::io::write(&fd, &data[done..]).unwrap();
        }
        fds.push(fd);
    }
    rustix::fs::syncfs(&dirfd).unwrap();
    for fd in &fds {
        rustix::fs::fdatasync(fd).unwrap();
    }
    drop(fds);
    for i in 0..files {
        let (temp, name) = (format!(".f{i:05}.tmp"), format!("f{i:05}"));
        rustix::fs::renameat(&dirfd, temp.as_str(), &dirfd, name.as_str()).unwrap();
    }
    rustix::fs::fsync(&dirfd).unwrap();
}

/// One contender: writes `files` files of round `usize` into the directory.
type Run = fn(&Path, usize, usize);

/// Median seconds per file of each contender at `files` files.
fn bench_size(
    base: &Path,
    files: usize,
    rounds: usize,
    with_singles: bool,
) -> Vec<(&'static str, f64)> {
    let mut kinds: Vec<(&'static str, Run)> = vec![
        ("batch", run_batch),
        ("floor", run_floor),
        ("floor+fdatasync", run_floor_fdatasync),
    ];
    if with_singles {
        kinds.push(("singles", run_singles));
    }
    let dirs: Vec<PathBuf> = kinds
        .iter()
        .map(|(name, _)| {
            let d = base.join(format!("{name}-{files}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    // Warm-up round also creates every target, so each timed op replaces.
    for (k, (_, f)) in kinds.iter().enumerate() {
        f(&dirs[k], files, 0);
    }
    let mut per_file: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for round in 1..=rounds {
        for k in 0..kinds.len() {
            let idx = (k + round) % kinds.len();
            let start = Instant::now();
            kinds[idx].1(&dirs[idx], files, round);
            per_file[idx].push(start.elapsed().as_secs_f64() / files as f64);
        }
    }
    kinds
        .iter()
        .zip(&per_file)
        .map(|((name, _), t)| (*name, median_f64(t)))
        .collect()
}

fn bench_in(base: &Path, label: &str, sizes: &[(usize, usize)]) {
    println!("\n{label}: files of {SIZE} B, median time per file");
    println!(
        "{:>7} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>12}",
        "files",
        "rounds",
        "batch us",
        "floor us",
        "+fdsync us",
        "singles us",
        "vs floor",
        "+fdsync",
        "vs singles"
    );
    for &(files, rounds) in sizes {
        let m = bench_size(base, files, rounds, files == 100);
        let get = |name: &str| m.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
        let (batch, floor) = (get("batch").unwrap(), get("floor").unwrap());
        let fdsync = get("floor+fdatasync").unwrap();
        let singles = get("singles");
        println!(
            "{files:>7} {rounds:>7} {:>10.1} {:>10.1} {:>10.1} {:>10} {:>8.2}x {:>8.2}x {:>12}",
            batch * 1e6,
            floor * 1e6,
            fdsync * 1e6,
            singles.map_or("-".into(), |s| format!("{:.1}", s * 1e6)),
            batch / floor,
            fdsync / floor,
            singles.map_or("-".into(), |s| format!("{:.1}x faster", s / batch)),
        );
    }
}

fn main() {
    let args = Args::from_env();
    let quick = args.quick();
    let rounds = args.number("--rounds", "CRASHSAFE_BENCH_ROUNDS");
    // (files, rounds): fewer rounds for the big batches, which take long.
    let only = args.number("--files", "CRASHSAFE_BENCH_FILES");
    let mut sizes: Vec<(usize, usize)> = if quick {
        vec![(100, 2), (1000, 2)]
    } else {
        let r = rounds.map_or(15, |r| r as usize);
        vec![(100, r), (1000, r.div_ceil(2)), (10_000, r.div_ceil(3))]
    };
    if let Some(n) = only {
        // One size only, with all the rounds asked for.
        let r = rounds.map_or(if quick { 2 } else { 15 }, |r| r as usize);
        sizes = vec![(n as usize, r)];
    }
    println!("{}", environment());
    let disk = tempfile::tempdir_in(disk_base(&args)).unwrap();
    let label = format!("{} ({})", disk.path().display(), fs_type(disk.path()));
    bench_in(disk.path(), &label, &sizes);
    match Tmpfs::mount("512m") {
        Ok(tmpfs) => {
            let label = format!("{} ({})", tmpfs.path().display(), fs_type(tmpfs.path()));
            bench_in(tmpfs.path(), &label, &sizes);
        }
        Err(why) => println!("\ntmpfs: skipped ({why})"),
    }
}

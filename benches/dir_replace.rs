//! `DirReplace` benchmark (issue 16): a set of 10 files of 4 KiB committed as
//! one unit, against the same 10 files written with `Batch` and with 10
//! single durable `crashsafe::write` calls.
//!
//! The contenders run op by op in a rotating order (the disk alternates
//! between fast and slow periods, so only ratios measured side by side mean
//! anything). Reported: the median time per commit of 10 files and the
//! ratio to `Batch`. Goal (issue 16): `DirReplace` at most 1.3x `Batch`.
//!
//! ```text
//! cargo bench -p crashsafe-bench --bench dir_replace                 # disk (and tmpfs when root)
//! cargo bench -p crashsafe-bench --bench dir_replace -- --ops 301
//! cargo bench -p crashsafe-bench --bench dir_replace -- --quick      # smoke test: 5 ops
//! CRASHSAFE_BENCH_DIR=/mnt/x cargo bench -p crashsafe-bench --bench dir_replace
//! ```

mod common;

use std::path::Path;
use std::time::Instant;

use common::{Args, Tmpfs, disk_base, environment, fs_type, median_f64};

const FILES: usize = 10;
const SIZE: usize = 4096;

fn payload(op: usize, i: usize) -> Vec<u8> {
    (0..SIZE).map(|k| (k ^ op ^ (i * 7)) as u8).collect()
}

fn run_dir_replace(dir: &Path, op: usize) {
    let mut set = crashsafe::DirReplace::create(dir.join("set")).unwrap();
    for i in 0..FILES {
        set.write(format!("f{i}"), payload(op, i)).unwrap();
    }
    set.commit().unwrap();
}

fn run_batch(dir: &Path, op: usize) {
    let mut batch = crashsafe::Batch::new();
    for i in 0..FILES {
        batch
            .write(dir.join(format!("f{i}")), payload(op, i))
            .unwrap();
    }
    batch.commit().unwrap();
}

fn run_singles(dir: &Path, op: usize) {
    for i in 0..FILES {
        crashsafe::write(dir.join(format!("f{i}")), payload(op, i)).unwrap();
    }
}

type Run = fn(&Path, usize);

fn bench_in(base: &Path, label: &str, ops: usize) {
    let kinds: [(&str, Run); 3] = [
        ("DirReplace", run_dir_replace),
        ("Batch", run_batch),
        ("10 singles", run_singles),
    ];
    let dirs: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(k, _)| {
            let d = base.join(format!("c{k}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    // Warm-up: every later op replaces existing files.
    for (k, (_, run)) in kinds.iter().enumerate() {
        run(&dirs[k], 0);
    }
    let mut times = vec![Vec::with_capacity(ops); kinds.len()];
    for op in 1..=ops {
        for j in 0..kinds.len() {
            let k = (j + op) % kinds.len();
            let start = Instant::now();
            kinds[k].1(&dirs[k], op);
            times[k].push(start.elapsed().as_secs_f64());
        }
    }
    let medians: Vec<f64> = times.iter().map(|t| median_f64(t)).collect();
    println!("\n{label}: {FILES} files of {SIZE} B per op, {ops} ops each, interleaved");
    println!("{:>12} {:>12} {:>10}", "contender", "median us", "vs Batch");
    for (k, (name, _)) in kinds.iter().enumerate() {
        println!(
            "{name:>12} {:>12.1} {:>9.2}x",
            medians[k] * 1e6,
            medians[k] / medians[1]
        );
    }
}

fn main() {
    let args = Args::from_env();
    let ops = args
        .number("--ops", "CRASHSAFE_BENCH_OPS")
        .map_or(if args.quick() { 5 } else { 101 }, |n| n as usize);
    println!("{}", environment());
    let disk = tempfile::tempdir_in(disk_base(&args)).unwrap();
    let label = format!("{} ({})", disk.path().display(), fs_type(disk.path()));
    bench_in(disk.path(), &label, ops);
    match Tmpfs::mount("64m") {
        Ok(tmpfs) => {
            let label = format!("{} ({})", tmpfs.path().display(), fs_type(tmpfs.path()));
            bench_in(tmpfs.path(), &label, ops);
        }
        Err(why) => println!("\ntmpfs: skipped ({why})"),
    }
}

//! Batch benchmark: 100 files of 4 KiB in one directory.
//!
//! Contenders, interleaved round by round in a rotating order (the disk here
//! alternates between fast and slow periods, so only ratios measured side by
//! side mean anything):
//!
//! - `batch`: `crashsafe::Batch` (temps, one `syncfs`, renames, one dir fsync);
//! - `floor`: the same sequence written by hand with rustix, nothing else;
//! - `singles`: 100 separate durable `crashsafe::write` calls.
//!
//! ```text
//! cargo bench --bench batch                          # 15 rounds on the test disk (and tmpfs when root)
//! CRASHSAFE_BENCH_ROUNDS=40 cargo bench --bench batch
//! cargo bench --bench batch -- --quick               # 2 rounds: a smoke test
//! CRASHSAFE_BENCH_DIR=/mnt/x cargo bench --bench batch
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

const FILES: usize = 100;
const SIZE: usize = 4096;

fn payload(round: usize, i: usize) -> Vec<u8> {
    let mut v = vec![0u8; SIZE];
    for (k, b) in v.iter_mut().enumerate() {
        *b = (k as u8) ^ (round as u8) ^ (i as u8);
    }
    v
}

fn targets(dir: &Path, who: &str) -> Vec<PathBuf> {
    (0..FILES)
        .map(|i| dir.join(format!("{who}-{i:03}")))
        .collect()
}

fn run_batch(dir: &Path, round: usize) {
    let mut batch = crashsafe::Batch::new();
    for (i, t) in targets(dir, "batch").iter().enumerate() {
        batch.write(t, payload(round, i)).unwrap();
    }
    batch.commit().unwrap();
}

fn run_singles(dir: &Path, round: usize) {
    for (i, t) in targets(dir, "single").iter().enumerate() {
        crashsafe::write(t, payload(round, i)).unwrap();
    }
}

/// The hand-written floor: write all temps, one syncfs, rename all, one
/// directory fsync.
fn run_floor(dir: &Path, round: usize) {
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let mut temps = Vec::with_capacity(FILES);
    for i in 0..FILES {
        let temp = format!(".floor-{i:03}.tmp");
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(&dirfd, temp.as_str(), flags, Mode::from_raw_mode(0o644)).unwrap();
        let data = payload(round, i);
        let mut done = 0;
        while done < data.len() {
            done += rustix::io::write(&fd, &data[done..]).unwrap();
        }
        temps.push((temp, fd));
    }
    rustix::fs::syncfs(&dirfd).unwrap();
    for (i, (temp, fd)) in temps.into_iter().enumerate() {
        rustix::fs::renameat(
            &dirfd,
            temp.as_str(),
            &dirfd,
            format!("floor-{i:03}").as_str(),
        )
        .unwrap();
        drop(fd);
    }
    rustix::fs::fsync(&dirfd).unwrap();
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One contender: writes a whole batch of round `usize` into the directory.
type Run = fn(&Path, usize);

fn bench_in(dir: &Path, label: &str, rounds: usize) {
    let kinds: [(&str, Run); 3] = [
        ("batch", run_batch),
        ("floor", run_floor),
        ("singles", run_singles),
    ];
    // Warm-up round also creates every target, so each timed op replaces.
    for (_, f) in kinds {
        f(dir, 0);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    for round in 1..=rounds {
        for k in 0..kinds.len() {
            let idx = (k + round) % kinds.len();
            let start = Instant::now();
            kinds[idx].1(dir, round);
            times[idx].push(start.elapsed());
        }
    }
    let medians: Vec<Duration> = times.iter_mut().map(|t| median(t)).collect();
    let floor = medians[1].as_secs_f64();
    println!("\n{label}: {FILES} x {SIZE} B per batch, {rounds} rounds, medians");
    println!("{:<10} {:>12} {:>10}", "contender", "ms/batch", "vs floor");
    for (k, (name, _)) in kinds.iter().enumerate() {
        let m = medians[k].as_secs_f64();
        println!("{name:<10} {:>12.2} {:>9.2}x", m * 1e3, m / floor);
    }
    println!(
        "batch is {:.2}x faster than {FILES} single durable writes",
        medians[2].as_secs_f64() / medians[0].as_secs_f64()
    );
}

fn fs_type(dir: &Path) -> String {
    match rustix::fs::statfs(dir) {
        #[allow(clippy::unnecessary_cast)] // f_type's width differs by target
        Ok(st) => match st.f_type as i64 {
            0xEF53 => "ext4".into(),
            0x0102_1994 => "tmpfs".into(),
            0x5846_5342 => "xfs".into(),
            0x9123_683E => "btrfs".into(),
            other => format!("0x{other:x}"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

/// Unmounts the tmpfs even if the benchmark panics.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = std::env::var("CRASHSAFE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 2 } else { 15 });
    let base = std::env::var_os("CRASHSAFE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let disk = tempfile::tempdir_in(&base).unwrap();
    let label = format!("{} ({})", disk.path().display(), fs_type(disk.path()));
    bench_in(disk.path(), &label, rounds);

    if !rustix::process::geteuid().is_root() {
        println!("\ntmpfs: skipped (mounting one needs root)");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("\ntmpfs: skipped (mount failed)");
        return;
    }
    let guard = Mounted(mnt.path().to_path_buf());
    let label = format!("{} ({})", guard.0.display(), fs_type(&guard.0));
    bench_in(&guard.0, &label, rounds);
}

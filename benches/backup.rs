//! Backup benchmark (issue 12): what the directory fsync between the
//! backup's rename and the main rename costs.
//!
//! Contenders, interleaved op by op in a rotating order (only ratios
//! measured side by side mean anything on a disk with fast and slow
//! periods): a durable 4 KiB replace of an existing file
//!
//! - `plain`: no backup (the baseline);
//! - `backup`: `Options::backup(true)`: link, rename to `name~`, directory
//!   fsync, then the usual rename and directory fsync.
//!
//! ```text
//! cargo bench -p crashsafe-bench --bench backup                        # 200 rounds in target/ (the test disk)
//! CRASHSAFE_BENCH_ROUNDS=50 cargo bench --bench backup
//! CRASHSAFE_BENCH_DIR=/dev/shm cargo bench --bench backup
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds: usize = std::env::var("CRASHSAFE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 5 } else { 200 });
    let base = std::env::var_os("CRASHSAFE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let payload = vec![7u8; 4096];
    let mut plain = crashsafe::Options::new();
    plain.backup(false);
    let mut backup = crashsafe::Options::new();
    backup.backup(true);
    let contenders = [("plain", plain), ("backup", backup)];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    for (name, _) in &contenders {
        std::fs::write(dir.path().join(name), &payload).unwrap();
    }
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let i = (round + k) % contenders.len();
            let (name, opts) = &contenders[i];
            let start = Instant::now();
            opts.write(dir.path().join(name), &payload).unwrap();
            times[i].push(start.elapsed());
        }
    }
    let floor = median(times[0].clone());
    println!(
        "backup bench in {} ({rounds} rounds, 4 KiB, durable):",
        base.display()
    );
    for (i, (name, _)) in contenders.iter().enumerate() {
        let m = median(times[i].clone());
        let ratio = m.as_secs_f64() / floor.as_secs_f64();
        println!(
            "  {name:7} median {:>8.1} µs  {ratio:.2}x plain",
            m.as_secs_f64() * 1e6
        );
    }
}

//! Large-file benchmark: streaming a big file through `crashsafe::AtomicFile`
//! must use constant memory and keep up with a plain write + fsync.
//!
//! Each measurement runs in a child process (this binary re-executed with
//! `CRASHSAFE_LARGE_CHILD` set), so its peak RSS (`VmHWM`) is its own. An
//! empty child gives the baseline. Every round runs each contender once in a
//! shuffled order, and all write the same bytes in 1 MiB chunks from one
//! buffer:
//!
//! - `crashsafe`: `AtomicFile::create`, `write_all` per chunk, `commit`;
//! - `plain`: `File::create` (truncating), `write_all` per chunk, `sync_all`;
//! - `rename` (reference, not a goal): a hand-written atomic replace with std
//!   only: `create_new` temp, `write_all` per chunk, `sync_all`, `rename`,
//!   directory `sync_all`. It shows what any atomic replace costs here.
//!
//! Both replace an existing file of the same size (a first, unrecorded round
//! creates them). Goals from issue 5: peak RSS ≤ 16 MiB over the baseline and
//! median throughput ≥ 0.9× plain. They are printed, never asserted.
//!
//! ```text
//! cargo bench --bench large_file                 # 256 MiB, 25 rounds
//! cargo bench --bench large_file -- --quick      # 16 MiB, 2 rounds (also `cargo test --benches`)
//! cargo bench --bench large_file -- --mib 64 --rounds 9 --dir /var/tmp
//! ```
//!
//! Environment twins: `CRASHSAFE_LARGE_MIB`, `CRASHSAFE_LARGE_ROUNDS`,
//! `CRASHSAFE_BENCH_DIR`, `CRASHSAFE_BENCH_QUICK=1`.

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
fn main() {
    bench::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("large_file bench: Linux only, skipped");
}

#[cfg(target_os = "linux")]
mod bench {
    use std::fs::File;
    use std::io::Write;
    use std::path::Path;
    use std::process::Command;
    use std::time::Instant;

    use crate::common::{self, Args, Rng};

    const CHUNK: usize = 1 << 20;
    const CHILD_ENV: &str = "CRASHSAFE_LARGE_CHILD";

    /// Peak resident set size of this process in KiB (`VmHWM`).
    fn peak_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/self/status")
    }

    /// In the child: one measurement, printed as `ns=... hwm_kib=...`.
    fn child(role: &str) {
        let path = std::env::var("CRASHSAFE_LARGE_PATH").expect("path");
        let mib: usize = std::env::var("CRASHSAFE_LARGE_MIB")
            .expect("size")
            .parse()
            .expect("size");
        let mut ns = 0;
        if role != "baseline" {
            let chunk = Rng::new(0x5eed).bytes(CHUNK);
            let t0 = Instant::now();
            match role {
                "crashsafe" => {
                    let mut f = crashsafe::AtomicFile::create(&path).expect("create");
                    for _ in 0..mib {
                        f.write_all(&chunk).expect("write");
                    }
                    f.commit().expect("commit");
                }
                "plain" => {
                    let mut f = File::create(&path).expect("create");
                    for _ in 0..mib {
                        f.write_all(&chunk).expect("write");
                    }
                    f.sync_all().expect("sync_all");
                }
                "rename" => {
                    let path = Path::new(&path);
                    let dir = path.parent().expect("parent");
                    let temp = dir.join(".large-rename.tmp");
                    let mut f = File::create_new(&temp).expect("create temp");
                    for _ in 0..mib {
                        f.write_all(&chunk).expect("write");
                    }
                    f.sync_all().expect("sync_all");
                    drop(f);
                    std::fs::rename(&temp, path).expect("rename");
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .expect("dir sync");
                }
                other => panic!("unknown child role {other}"),
            }
            ns = t0.elapsed().as_nanos() as u64;
        }
        println!("ns={ns} hwm_kib={}", peak_rss_kib());
    }

    /// Runs one child and returns (ns, peak RSS KiB).
    fn spawn(role: &str, path: &Path, mib: u64) -> (u64, u64) {
        let exe = std::env::current_exe().expect("current_exe");
        let out = Command::new(exe)
            .env(CHILD_ENV, role)
            .env("CRASHSAFE_LARGE_PATH", path)
            .env("CRASHSAFE_LARGE_MIB", mib.to_string())
            .output()
            .expect("spawn child");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{role} child failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |name: &str| -> u64 {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{role} child printed no {name}: {text}"))
        };
        (field("ns="), field("hwm_kib="))
    }

    pub(crate) fn main() {
        if let Ok(role) = std::env::var(CHILD_ENV) {
            return child(&role);
        }
        let args = Args::from_env();
        let quick = args.quick();
        let mib = args
            .number("--mib", "CRASHSAFE_LARGE_MIB")
            .unwrap_or(if quick { 16 } else { 256 });
        let rounds = args
            .number("--rounds", "CRASHSAFE_LARGE_ROUNDS")
            .unwrap_or(if quick { 2 } else { 25 })
            .max(1);
        let base = common::disk_base(&args);
        let dir = tempfile::Builder::new()
            .prefix("crashsafe-large.")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("cannot create a temp dir in {}: {e}", base.display()));
        println!(
            "## crashsafe large-file bench{}",
            if quick { " (quick mode)" } else { "" }
        );
        println!("\n{}", common::environment());
        println!(
            "command: {}",
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        println!(
            "dir: {} — {} — {}",
            dir.path().display(),
            common::fs_name(dir.path()),
            common::mount_of(dir.path())
        );
        println!("{mib} MiB in 1 MiB chunks, {rounds} rounds + 1 unrecorded (creates the targets)");

        let roles = ["crashsafe", "plain", "rename"];
        let paths = roles.map(|r| dir.path().join(format!("large-{r}.dat")));
        let mut ns = [Vec::new(), Vec::new(), Vec::new()];
        let mut hwm = [0u64; 3];
        let mut rng = Rng::new(0x1a7e);
        let mut order = [0usize, 1, 2];
        let mut baseline = 0u64;
        for round in 0..=rounds {
            baseline = baseline.max(spawn("baseline", dir.path(), 0).1);
            rng.shuffle(&mut order);
            for i in order {
                let (t, h) = spawn(roles[i], &paths[i], mib);
                hwm[i] = hwm[i].max(h);
                if round > 0 {
                    ns[i].push(t);
                }
            }
        }
        for i in 0..roles.len() {
            let ms: Vec<String> = ns[i].iter().map(|t| format!("{}", t / 1_000_000)).collect();
            println!("{} per round (ms): {}", roles[i], ms.join(" "));
        }
        let bytes = (mib as usize * CHUNK) as f64;
        let mibps = |t: u64| bytes / (1 << 20) as f64 / (t as f64 / 1e9);
        println!(
            "\n| contender | median MiB/s | min MiB/s | max MiB/s | median s | peak RSS MiB | over baseline MiB |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for i in 0..roles.len() {
            let med = common::summary(&ns[i]).0;
            // The slowest op has the lowest throughput.
            let slowest = ns[i].iter().copied().max().unwrap_or(0);
            let fastest = ns[i].iter().copied().min().unwrap_or(0);
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} |",
                roles[i],
                mibps(med),
                mibps(slowest),
                mibps(fastest),
                med as f64 / 1e9,
                hwm[i] as f64 / 1024.0,
                hwm[i].saturating_sub(baseline) as f64 / 1024.0
            );
        }
        println!(
            "| empty child (baseline) | | | | | {:.1} | 0 |",
            baseline as f64 / 1024.0
        );
        let ratio = common::summary(&ns[1]).0 as f64 / common::summary(&ns[0]).0 as f64;
        let paired: Vec<f64> = ns[0]
            .iter()
            .zip(&ns[1])
            .map(|(&a, &b)| b as f64 / a.max(1) as f64)
            .collect();
        let reference = common::summary(&ns[2]).0 as f64 / common::summary(&ns[0]).0 as f64;
        let over = hwm[0].saturating_sub(baseline) as f64 / 1024.0;
        println!("\n### Goals\n");
        println!(
            "- throughput crashsafe / plain = {ratio:.3} (median per-round {:.3}), goal ≥ 0.9: {}",
            common::median_f64(&paired),
            if ratio >= 0.9 { "met" } else { "MISSED" }
        );
        println!(
            "- peak RSS over the empty baseline = {over:.1} MiB, goal ≤ 16 MiB: {}",
            if over <= 16.0 { "met" } else { "MISSED" }
        );
        let best = |i: usize| ns[i].iter().copied().min().unwrap_or(1).max(1) as f64;
        println!(
            "- reference: crashsafe / hand-written std rename replace throughput = {reference:.3}"
        );
        println!(
            "- best of {} rounds: crashsafe / plain = {:.3}, crashsafe / rename = {:.3}",
            ns[0].len(),
            best(1) / best(0),
            best(2) / best(0)
        );
        if quick {
            println!("\n(quick mode: a smoke test; these figures are not results)");
        }
    }
}

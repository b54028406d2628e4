//! `crashtest`: crash states of the real kernel.
//!
//! Records ext4, XFS and btrfs at the block layer while crashsafe's own
//! code runs on them, then replays every crash state the disk could hold
//! and checks the library's promises on each. See README, "Crash states of
//! the real kernel", and `crashtest --help`.

mod blocklog;
mod catalog;
mod check;
mod fsys;
mod fuse;
mod record;
mod replay;
mod report;
mod simcheck;
mod states;
mod sys;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use fsys::FsKind;

const HELP: &str = "\
crashtest: record ext4/XFS/btrfs at the block layer while crashsafe runs, and
check every crash state the disk could hold after a power cut.

usage: crashtest [--fs ext4,xfs,btrfs] [--ci | --thorough] [options]

  --fs LIST         filesystems (default: ext4,xfs,btrfs)
  --ci              the CI budget (>= 3,000 states over three filesystems)
  --thorough        >= 50,000 states over three filesystems
  --states N        states per recording of a real-protocol workload
  --runs N          recordings per real-protocol workload (default 1)
  --broken-runs N   recordings per must-catch broken variant (timing can
                    hide one; the other variants get half as many)
  --workload NAME   only workloads whose name contains NAME
  --no-broken       skip the broken variants
  --fsck            also run the filesystem's checker on every state
  --ext4-options O  mount ext4 with these options (default: none)
  --seed N          seed for sampled subsets (default 1)
  --jobs N          parallel state checks (default: number of CPUs)
  --keep DIR        keep the smallest failing image per workload in DIR
  --workdir DIR     where images and mount points go (default /dev/shm)

Needs root, /dev/fuse, losetup, and mkfs.ext4, mkfs.xfs (xfsprogs),
mkfs.btrfs (btrfs-progs); exits 0 with a note when something is missing.
Exit status: 1 on a violation of the real protocol, on a broken variant
that must be caught but was not, or on an error; 130 when interrupted.";

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    fs: Vec<FsKind>,
    states: usize,
    real_runs: usize,
    broken_states: usize,
    broken_runs: usize,
    broken: bool,
    filter: Option<String>,
    fsck: bool,
    seed: u64,
    jobs: usize,
    keep: Option<PathBuf>,
    workdir: PathBuf,
    /// With all three filesystems: fail if fewer states were checked (the
    /// budget's promise; some workloads have fewer distinct states).
    min_total: Option<usize>,
}

fn parse(args: &[String]) -> Result<Plan, String> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let mut plan = Plan {
        fs: FsKind::ALL.to_vec(),
        states: 150,
        real_runs: 1,
        broken_states: 60,
        broken_runs: 3,
        broken: true,
        filter: None,
        fsck: false,
        seed: 1,
        jobs,
        keep: None,
        workdir: base,
        min_total: None,
    };
    let mut it = args.iter();
    let num = |v: Option<&String>, what: &str| -> Result<usize, String> {
        v.and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{what} needs a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fs" => {
                let list = it.next().ok_or("--fs needs a list")?;
                plan.fs = list
                    .split(',')
                    .map(|s| FsKind::parse(s).ok_or_else(|| format!("unknown filesystem {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--ci" => {
                plan.states = 75;
                plan.broken_states = 40;
                plan.broken_runs = 2;
                plan.min_total = Some(3000);
            }
            "--thorough" => {
                // ext4's epochs are small and enumerated whole after a few
                // hundred states: more recordings (each timed differently)
                // rather than more states per recording.
                plan.real_runs = 3;
                plan.states = 600;
                plan.broken_states = 200;
                plan.broken_runs = 5;
                plan.min_total = Some(50_000);
            }
            "--states" => plan.states = num(it.next(), "--states")?,
            "--runs" => plan.real_runs = num(it.next(), "--runs")?.max(1),
            "--broken-runs" => plan.broken_runs = num(it.next(), "--broken-runs")?.max(1),
            "--workload" => plan.filter = Some(it.next().ok_or("--workload needs a name")?.clone()),
            "--no-broken" => plan.broken = false,
            "--fsck" => plan.fsck = true,
            "--ext4-options" => {
                let o = it.next().ok_or("--ext4-options needs options")?;
                let _ = fsys::EXT4_OPTIONS.set(o.clone());
            }
            "--seed" => plan.seed = num(it.next(), "--seed")? as u64,
            "--jobs" => plan.jobs = num(it.next(), "--jobs")?.max(1),
            "--keep" => {
                plan.keep = Some(PathBuf::from(it.next().ok_or("--keep needs a directory")?))
            }
            "--workdir" => {
                plan.workdir = PathBuf::from(it.next().ok_or("--workdir needs a directory")?)
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(plan)
}

/// What is missing to run at all, if anything.
fn missing(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if !rustix::process::geteuid().is_root() {
        out.push("root (mounts and loop devices)".to_string());
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        out.push("/dev/fuse".to_string());
    }
    let mut tools = vec!["losetup", "mount", "umount"];
    for fs in &plan.fs {
        tools.extend(fs.tools());
    }
    for t in tools {
        if !sys::have(t) {
            out.push(t.to_string());
        }
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = match parse(&args) {
        Ok(p) => p,
        Err(e) if e.is_empty() => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("crashtest: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let missing = missing(&plan);
    if !missing.is_empty() {
        println!(
            "crashtest: skipped, missing: {} (Debian: apt-get install xfsprogs btrfs-progs fuse3; run as root)",
            missing.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    if let Err(e) = ctrlc::set_handler(sys::interrupt) {
        eprintln!("crashtest: cannot handle SIGINT/SIGTERM: {e}");
        return ExitCode::from(1);
    }
    // New files get the mode the simulator gives them.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let work = plan
        .workdir
        .join(format!("{}{}", sys::PREFIX, std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("crashtest: {}: {e}", work.display());
        return ExitCode::from(1);
    }
    // A panic (a closed stdout, say) must not skip the cleanup below.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        report::run_all(&plan, &work)
    }))
    .unwrap_or_else(|_| Err("panicked".to_string()));
    // Whatever happened, nothing of ours stays mounted or attached.
    sys::cleanup(&work.to_string_lossy());
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if sys::interrupted() => {
            eprintln!("crashtest: interrupted ({e}); everything unmounted and detached");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("crashtest: error: {e}");
            ExitCode::from(1)
        }
    }
}

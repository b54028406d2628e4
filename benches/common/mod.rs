//! Helpers shared by the custom-harness benches: argument handling,
//! statistics, filesystem identification and the tmpfs mount guard.

// Each bench uses its own subset of these helpers.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A command-line flag or its `CRASHSAFE_BENCH_*` environment twin.
pub(crate) struct Args {
    args: Vec<String>,
}

impl Args {
    /// The process arguments, without the program name.
    pub(crate) fn from_env() -> Args {
        Args {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// True if `--name` was given.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }

    /// The value after `--name`, or else the environment variable `env`.
    pub(crate) fn value(&self, name: &str, env: &str) -> Option<String> {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            if a == name {
                return it.next().cloned();
            }
            if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return Some(v.to_string());
            }
        }
        std::env::var(env).ok().filter(|v| !v.is_empty())
    }

    /// Parsed `value`, exiting with a message on a malformed number.
    pub(crate) fn number(&self, name: &str, env: &str) -> Option<u64> {
        self.value(name, env).map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{name} / {env}: not a number: {v}");
                std::process::exit(2)
            })
        })
    }

    /// Quick (smoke-test) mode: `--quick`, `CRASHSAFE_BENCH_QUICK=1`, or a
    /// run that is not `cargo bench` (cargo passes `--bench` only there, so
    /// `cargo test --benches` gets the quick mode).
    pub(crate) fn quick(&self) -> bool {
        self.flag("--quick")
            || std::env::var("CRASHSAFE_BENCH_QUICK").is_ok_and(|v| v == "1")
            || !self.flag("--bench")
    }
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Median, p10 and p90 of `values`.
pub(crate) fn summary(values: &[u64]) -> (u64, u64, u64) {
    let mut v = values.to_vec();
    v.sort_unstable();
    (quantile(&v, 0.5), quantile(&v, 0.1), quantile(&v, 0.9))
}

/// Median of floating-point values (NaN-free).
pub(crate) fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Median of `values` with a distribution-free 95 % confidence interval
/// (order statistics n/2 ± 1.96·√n/2): `(low, median, high)`.
pub(crate) fn median_ci(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let lo = ((n as f64 / 2.0 - half).floor().max(0.0)) as usize;
    let hi = ((n as f64 / 2.0 + half).ceil() as usize).min(n - 1);
    (v[lo], v[n / 2], v[hi])
}

/// A small deterministic generator (xorshift64*), for shuffling and payloads.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fisher-Yates shuffle.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    /// `len` pseudo-random bytes (incompressible, so no filesystem shortcut).
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The filesystem type of `path` from `statfs(2)`, by name where known.
pub(crate) fn fs_type(path: &Path) -> String {
    match rustix::fs::statfs(path) {
        // `f_type` is signed on some targets and unsigned on others.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => {
            let magic = st.f_type as u64;
            let name = match magic {
                0xef53 => "ext2/ext3/ext4",
                0x0102_1994 => "tmpfs",
                0x5846_5342 => "xfs",
                0x9123_683e => "btrfs",
                0x794c_7630 => "overlayfs",
                0x2fc1_2fc1 => "zfs",
                0x6969 => "nfs",
                0x6573_5546 => "fuse",
                _ => "unknown",
            };
            format!("{name} (f_type {magic:#x})")
        }
        Err(e) => format!("unknown (statfs: {e})"),
    }
}

/// The `/proc/mounts` line of the mount that holds `path`: device, type and
/// options, so a result names the filesystem it ran on.
pub(crate) fn mount_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return String::from("(no /proc/mounts)");
    };
    let mut best: Option<(usize, &str)> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_dev), Some(point)) = (fields.next(), fields.next()) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if path.starts_with(&point) && best.is_none_or(|(len, _)| point.len() >= len) {
            best = Some((point.len(), line));
        }
    }
    best.map_or_else(|| String::from("(mount not found)"), |(_, l)| l.to_string())
}

/// A short name for the filesystem of `path`: the type column of its
/// `/proc/mounts` line (says `ext4` where `statfs` only says ext2/3/4).
pub(crate) fn fs_name(path: &Path) -> String {
    let line = mount_of(path);
    match line.split_whitespace().nth(2) {
        Some(t) if !line.starts_with('(') => t.to_string(),
        _ => fs_type(path),
    }
}

/// Kernel release and machine facts for the header of a result.
pub(crate) fn environment() -> String {
    let mut out = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = write!(out, "kernel {}", kernel.trim());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = write!(out, ", {cpus} CPUs");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        let _ = write!(out, ", load {}", load.join(" "));
    }
    out
}

/// True when running as root (needed to mount a tmpfs).
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The directory the on-disk runs use: `--dir`/`CRASHSAFE_BENCH_DIR`, else
/// the cargo target directory (on the same disk as the repository), never a
/// `/tmp` that may be a tmpfs.
pub(crate) fn disk_base(args: &Args) -> PathBuf {
    if let Some(dir) = args.value("--dir", "CRASHSAFE_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    if std::fs::create_dir_all(&target).is_ok() {
        target
    } else {
        PathBuf::from("/var/tmp")
    }
}

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop, also
/// when the bench panics (drop runs while unwinding).
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`) on a new directory in
    /// the system temp dir. `Err` says why not (not root, mount failed).
    pub(crate) fn mount(size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err(String::from("not root, cannot mount a tmpfs"));
        }
        let dir = tempfile::Builder::new()
            .prefix("crashsafe-bench-tmpfs.")
            .tempdir()
            .map_err(|e| format!("cannot create a mount point: {e}"))?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed: {status}"));
        }
        Ok(Tmpfs { dir })
    }

    /// The mount point.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open: detach it now, the kernel
            // frees it when the last user goes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
        // The TempDir field then removes the (now empty) mount point.
    }
}

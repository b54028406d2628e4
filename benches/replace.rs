//! Single-replace benchmark: crashsafe against its peers and a hand-written
//! floor, interleaved operation by operation.
//!
//! The disks this project runs on switch between fast and slow periods, so
//! timing contender A for a while and then contender B compares two periods,
//! not two implementations. Here every round runs each contender once, in an
//! order shuffled per round, each on its own pre-created target (so every op
//! replaces an existing file). The report gives median, p10 and p90 per
//! contender, the ratio of each median to the floor's median from the same
//! run, and the median of the per-round ratios.
//!
//! ```text
//! cargo bench --bench replace                    # full run (disk + tmpfs)
//! cargo bench --bench replace -- --quick         # seconds; also what `cargo test --benches` runs
//! cargo bench --bench replace -- --rounds 300 --sizes 4k --dir /var/tmp --no-tmpfs
//! cargo bench --bench replace -- --extra         # adds diagnostic floor variants
//! cargo bench --bench replace -- --only crashsafe --ops 10 --dir D   # for strace -c
//! ```
//!
//! Defaults: 3000 / 2000 / 500 rounds at 4 KiB / 64 KiB / 1 MiB, each
//! (filesystem, size) capped at 25 s (at least 30 rounds), so a full run
//! stays near 3 minutes even when the disk is in a slow period.
//!
//! Environment twins: `CRASHSAFE_BENCH_ROUNDS`, `CRASHSAFE_BENCH_SECS` (time
//! cap per filesystem and size), `CRASHSAFE_BENCH_DIR`, `CRASHSAFE_BENCH_QUICK=1`.
//! The tmpfs run mounts a tmpfs when root and always unmounts it; otherwise
//! it says it was skipped.

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
fn main() {
    bench::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("replace bench: Linux only, skipped");
}

#[cfg(target_os = "linux")]
mod bench {
    use std::fs;
    use std::io::{self, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use rustix::fs::{Mode, OFlags};

    use crate::common::{self, Args, Rng};

    /// One way of replacing a file.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Contender {
        Floor,
        Crashsafe,
        CrashsafeConsistent,
        AtomicWriteFile,
        Atomicwrites,
        Tempfile,
        StdWrite,
        FloorFsync,
        FloorMeta,
        FloorMetaAcl,
        FloorFstat,
        CrashsafeUnnamed,
        CrashsafeLean,
    }

    use Contender::*;

    /// The contenders of every run.
    const MAIN: [Contender; 8] = [
        Floor,
        Crashsafe,
        CrashsafeConsistent,
        CrashsafeUnnamed,
        AtomicWriteFile,
        Atomicwrites,
        Tempfile,
        StdWrite,
    ];

    /// Diagnostic variants of the floor, added by `--extra`: they split
    /// crashsafe's distance from the floor into syscalls and the rest.
    const EXTRA: [Contender; 5] = [
        FloorFsync,
        FloorMeta,
        FloorMetaAcl,
        FloorFstat,
        CrashsafeLean,
    ];

    impl Contender {
        /// Short name, used by `--only` and as the target file name.
        fn key(self) -> &'static str {
            match self {
                Floor => "floor",
                Crashsafe => "crashsafe",
                CrashsafeConsistent => "crashsafe-consistent",
                AtomicWriteFile => "atomic-write-file",
                Atomicwrites => "atomicwrites",
                Tempfile => "tempfile",
                StdWrite => "std-write",
                FloorFsync => "floor-fsync",
                FloorMeta => "floor-meta",
                FloorMetaAcl => "floor-meta-acl",
                FloorFstat => "floor-fstat",
                CrashsafeUnnamed => "crashsafe-unnamed",
                CrashsafeLean => "crashsafe-lean",
            }
        }

        /// The label in the result table.
        fn label(self) -> &'static str {
            match self {
                Floor => "floor: minimal rustix sequence (durable)",
                Crashsafe => "crashsafe default (Durable, keeps mode+owner)",
                CrashsafeConsistent => "crashsafe Consistent (no dir fsync)",
                AtomicWriteFile => "atomic-write-file 0.3",
                Atomicwrites => "atomicwrites 0.4",
                Tempfile => "tempfile persist + sync_all + dir fsync",
                StdWrite => "std::fs::write (not durable)",
                FloorFsync => "(extra) floor with fsync instead of fdatasync",
                FloorMeta => "(extra) floor + fstatat, fchown, fchmod, fsync",
                FloorMetaAcl => "(extra) the same with the mode as a minimal ACL (fsetxattr)",
                FloorFstat => "(extra) floor + fstatat, temp made with old mode, fstat, fsync",
                CrashsafeUnnamed => "crashsafe with an O_TMPFILE temp (unnamed_temp)",
                CrashsafeLean => "(extra) crashsafe without the xattr copy",
            }
        }

        /// One replace of `target` (in `dir`) with `data`.
        fn run(self, dir: &Path, target: &Path, data: &[u8]) -> io::Result<()> {
            match self {
                Floor => floor(dir, target, data, Variant::Plain),
                FloorFsync => floor(dir, target, data, Variant::Fsync),
                FloorMeta => floor(dir, target, data, Variant::Meta),
                FloorMetaAcl => floor(dir, target, data, Variant::MetaAcl),
                FloorFstat => floor(dir, target, data, Variant::Fstat),
                Crashsafe => crashsafe::write(target, data).map_err(io::Error::from),
                CrashsafeConsistent => crashsafe::Options::new()
                    .durability(crashsafe::Durability::Consistent)
                    .write(target, data)
                    .map_err(io::Error::from),
                CrashsafeUnnamed => crashsafe::Options::new()
                    .unnamed_temp(true)
                    .write(target, data)
                    .map_err(io::Error::from),
                CrashsafeLean => crashsafe::Options::new()
                    .preserve_xattrs(false)
                    .write(target, data)
                    .map_err(io::Error::from),
                AtomicWriteFile => {
                    let mut file = atomic_write_file::AtomicWriteFile::open(target)?;
                    file.write_all(data)?;
                    file.commit()
                }
                Atomicwrites => {
                    use atomicwrites::{AtomicFile, OverwriteBehavior};
                    AtomicFile::new(target, OverwriteBehavior::AllowOverwrite)
                        .write(|f| f.write_all(data))
                        .map_err(io::Error::from)
                }
                Tempfile => {
                    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
                    temp.write_all(data)?;
                    temp.as_file().sync_all()?;
                    temp.persist(target).map_err(|e| e.error)?;
                    fs::File::open(dir)?.sync_all()
                }
                StdWrite => fs::write(target, data),
            }
        }
    }

    /// Which floor.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Variant {
        /// The minimal sequence.
        Plain,
        /// `fsync` instead of `fdatasync` for the temp.
        Fsync,
        /// Also keep mode and owner as crashsafe does: `fstatat` the target,
        /// `fchown` + `fchmod` the temp, `fsync` it.
        Meta,
        /// `Meta` with the mode set as crashsafe sets it for an old file
        /// without an ACL: an `fsetxattr` of a minimal access ACL instead of
        /// `fchmod` (it also drops an ACL inherited from a default ACL).
        MetaAcl,
        /// Keep mode and owner with fewer calls: `fstatat` the target, create
        /// the temp with the target's mode, `fstat` the temp and `fchown` /
        /// `fchmod` only what differs (nothing, for a file of our own whose
        /// mode the umask leaves alone), `fsync`.
        Fstat,
    }

    /// The floor: the fewest calls a durable replace can make. Fixed temp
    /// name, no metadata copy, `fdatasync` for the file.
    fn floor(dir: &Path, target: &Path, data: &[u8], variant: Variant) -> io::Result<()> {
        let name = target.file_name().expect("target has a file name");
        let mut temp = std::ffi::OsString::from(".");
        temp.push(name);
        temp.push(".floor.tmp");
        let dirfd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let old = if matches!(variant, Variant::Meta | Variant::MetaAcl | Variant::Fstat) {
            Some(rustix::fs::statat(
                &dirfd,
                name,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )?)
        } else {
            None
        };
        let fd = rustix::fs::openat(
            &dirfd,
            &temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            match (variant, old) {
                (Variant::Fstat, Some(old)) => Mode::from_raw_mode(old.st_mode & 0o777),
                _ => Mode::from_raw_mode(0o600),
            },
        )?;
        let mut rest = data;
        while !rest.is_empty() {
            match rustix::io::write(&fd, rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let (Variant::Fstat, Some(old)) = (variant, old) {
            let now = rustix::fs::fstat(&fd)?;
            if (now.st_uid, now.st_gid) != (old.st_uid, old.st_gid) {
                let uid = rustix::fs::Uid::from_raw(old.st_uid);
                let gid = rustix::fs::Gid::from_raw(old.st_gid);
                rustix::fs::fchown(&fd, Some(uid), Some(gid))?;
            }
            if now.st_mode & 0o7777 != old.st_mode & 0o7777 {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(old.st_mode & 0o7777))?;
            }
        } else if let Some(old) = old {
            let uid = rustix::fs::Uid::from_raw(old.st_uid);
            let gid = rustix::fs::Gid::from_raw(old.st_gid);
            rustix::fs::fchown(&fd, Some(uid), Some(gid))?;
            if variant == Variant::MetaAcl {
                let flags = rustix::fs::XattrFlags::empty();
                let acl = minimal_acl(old.st_mode);
                rustix::fs::fsetxattr(&fd, "system.posix_acl_access", &acl, flags)?;
            } else {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(old.st_mode & 0o7777))?;
            }
        }
        match variant {
            Variant::Plain => rustix::fs::fdatasync(&fd)?,
            Variant::Fsync | Variant::Meta | Variant::MetaAcl | Variant::Fstat => {
                rustix::fs::fsync(&fd)?
            }
        }
        rustix::fs::renameat(&dirfd, &temp, &dirfd, name)?;
        rustix::fs::fsync(&dirfd)?;
        drop(fd);
        Ok(())
    }

    /// The access ACL that says what `mode`'s permission bits say: version
    /// 2, then (tag, permissions, id) for owner, group and other.
    fn minimal_acl(mode: u32) -> Vec<u8> {
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm) in [(0x01u16, mode >> 6), (0x04, mode >> 3), (0x20, mode)] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&((perm & 7) as u16).to_le_bytes());
            acl.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        acl
    }

    /// Payload sizes by name.
    fn parse_size(s: &str) -> usize {
        let s = s.trim().to_ascii_lowercase();
        let (num, mul) = if let Some(n) = s.strip_suffix('k') {
            (n, 1024)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 1024 * 1024)
        } else {
            (s.as_str(), 1)
        };
        num.parse::<usize>().map(|n| n * mul).unwrap_or_else(|_| {
            eprintln!("bad size: {s} (use e.g. 4k, 64k, 1m)");
            std::process::exit(2)
        })
    }

    fn size_label(size: usize) -> String {
        match size {
            s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
            s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
            s => format!("{s} B"),
        }
    }

    /// How long and how often to run, per filesystem and payload size.
    struct Plan {
        rounds: Option<u64>,
        secs: f64,
        quick: bool,
    }

    impl Plan {
        /// Recorded rounds for `size` (a time cap may stop earlier).
        fn rounds(&self, size: usize) -> u64 {
            if let Some(r) = self.rounds {
                return r;
            }
            match (self.quick, size) {
                (true, s) if s >= 1 << 20 => 8,
                (true, _) => 30,
                (false, s) if s >= 1 << 20 => 500,
                (false, s) if s >= 64 << 10 => 2000,
                (false, _) => 3000,
            }
        }
    }

    /// Timings of one filesystem and size: `ns[c][round]`.
    struct Run {
        fs: String,
        contenders: Vec<Contender>,
        size: usize,
        ns: Vec<Vec<u64>>,
        elapsed: Duration,
    }

    /// Runs every contender once per round, order shuffled each round.
    fn measure(
        dir: &Path,
        size: usize,
        plan: &Plan,
        contenders: &[Contender],
        seed: u64,
    ) -> io::Result<Run> {
        let mut rng = Rng::new(seed);
        let data = rng.bytes(size);
        let sub = dir.join(format!("replace-{size}"));
        fs::create_dir_all(&sub)?;
        let targets: Vec<PathBuf> = contenders
            .iter()
            .map(|c| sub.join(format!("{}.dat", c.key())))
            .collect();
        for t in &targets {
            fs::write(t, &data)?;
            fs::set_permissions(t, fs::Permissions::from_mode(0o644))?;
        }
        let rounds = plan.rounds(size);
        let warmup = (rounds / 20).clamp(2, 20);
        let cap = Duration::from_secs_f64(plan.secs);
        let min_rounds = rounds.min(30);
        let mut ns = vec![Vec::with_capacity(rounds as usize); contenders.len()];
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        let start = Instant::now();
        let mut measured_start = start;
        for round in 0..warmup + rounds {
            if round == warmup {
                measured_start = Instant::now();
            }
            rng.shuffle(&mut order);
            for &i in &order {
                let t0 = Instant::now();
                contenders[i].run(&sub, &targets[i], &data)?;
                let dt = t0.elapsed().as_nanos() as u64;
                if round >= warmup {
                    ns[i].push(dt);
                }
            }
            let done = round + 1 - warmup.min(round + 1);
            if round >= warmup && done >= min_rounds && measured_start.elapsed() > cap {
                break;
            }
        }
        // Every contender must have really replaced its file.
        for (c, t) in contenders.iter().zip(&targets) {
            let got = fs::read(t)?;
            assert!(
                got == data,
                "{} left wrong content in {}",
                c.key(),
                t.display()
            );
        }
        // Leftover temps would mean a contender leaks; the floor's are removed by rename.
        let left: Vec<_> = fs::read_dir(&sub)?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "temp files left behind: {left:?}");
        fs::remove_dir_all(&sub)?;
        Ok(Run {
            fs: String::new(),
            contenders: contenders.to_vec(),
            size,
            ns,
            elapsed: start.elapsed(),
        })
    }

    fn us(ns: u64) -> String {
        let us = ns as f64 / 1000.0;
        if us >= 100.0 {
            format!("{us:.0}")
        } else {
            format!("{us:.1}")
        }
    }

    /// The markdown table of one run.
    fn report(run: &Run) {
        let floor = summary_of(run, Floor).0;
        let rounds = run.ns[0].len();
        let slow = run.ns[0].iter().filter(|&&n| n > 3_000_000).count();
        println!(
            "\n#### {} — {} — {} rounds in {:.1} s (floor > 3 ms in {} rounds)\n",
            run.fs,
            size_label(run.size),
            rounds,
            run.elapsed.as_secs_f64(),
            slow
        );
        println!(
            "| contender | median µs | p10 µs | p90 µs | ratio of medians to floor | median per-round ratio |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for &c in &run.contenders {
            let (med, p10, p90) = summary_of(run, c);
            println!(
                "| {} | {} | {} | {} | {:.3} | {:.3} |",
                c.label(),
                us(med),
                us(p10),
                us(p90),
                med as f64 / floor as f64,
                paired_ratio(run, c, Floor)
            );
        }
    }

    fn summary_of(run: &Run, c: Contender) -> (u64, u64, u64) {
        common::summary(&run.ns[index(run, c)])
    }

    fn index(run: &Run, c: Contender) -> usize {
        run.contenders.iter().position(|&x| x == c).expect("listed")
    }

    /// Median over rounds of `a / b` measured in the same round.
    fn paired_ratio(run: &Run, a: Contender, b: Contender) -> f64 {
        common::median_f64(&paired(run, a, b))
    }

    /// Per-round ratios `a / b`.
    fn paired(run: &Run, a: Contender, b: Contender) -> Vec<f64> {
        let (a, b) = (&run.ns[index(run, a)], &run.ns[index(run, b)]);
        a.iter()
            .zip(b)
            .map(|(&x, &y)| x as f64 / y.max(1) as f64)
            .collect()
    }

    /// Goals from issue 5, for the 4 KiB runs. Printed, never asserted.
    fn goals(runs: &[Run]) {
        if runs.is_empty() {
            return;
        }
        println!(
            "\n### Goals (4 KiB, crashsafe default; ratio of medians, then the median per-round ratio)\n"
        );
        for run in runs.iter().filter(|r| r.size == 4096) {
            let med = |c| summary_of(run, c).0 as f64;
            let tmpfs = run.fs.starts_with("tmpfs");
            let limit = if tmpfs { 1.2 } else { 1.05 };
            let checks = [
                ("floor", Floor, limit),
                ("atomic-write-file", AtomicWriteFile, 1.0),
                ("atomicwrites", Atomicwrites, 0.75),
            ];
            for (name, other, limit) in checks {
                let ratio = med(Crashsafe) / med(other);
                let (lo, paired, hi) = common::median_ci(&paired(run, Crashsafe, other));
                let verdict = if ratio <= limit { "met" } else { "MISSED" };
                println!(
                    "- {}: crashsafe / {name} = {ratio:.3} (per-round {paired:.3}, 95 % CI {lo:.3}–{hi:.3}), goal ≤ {limit}: {verdict}",
                    run.fs
                );
            }
        }
    }

    /// `--only KEY --ops N`: N replaces by one contender and nothing else,
    /// for `strace -f -c` ((N=10) − (N=0)) / 10 gives syscalls per replace.
    fn only(args: &Args, key: &str) {
        let all = MAIN.iter().chain(&EXTRA);
        let Some(&c) = all.clone().find(|c| c.key() == key) else {
            let keys: Vec<_> = all.map(|c| c.key()).collect();
            eprintln!("--only: unknown contender {key}; one of {keys:?}");
            std::process::exit(2)
        };
        let ops = args.number("--ops", "CRASHSAFE_BENCH_OPS").unwrap_or(10);
        let size = parse_size(
            &args
                .value("--size", "CRASHSAFE_BENCH_SIZE")
                .unwrap_or("4k".into()),
        );
        let base = common::disk_base(args);
        let dir = tempfile::Builder::new()
            .prefix("crashsafe-bench-only.")
            .tempdir_in(&base)
            .expect("temp dir");
        let target = dir.path().join("target.dat");
        let data = vec![0x5a; size];
        fs::write(&target, &data).expect("pre-create target");
        for _ in 0..ops {
            c.run(dir.path(), &target, &data).expect("replace");
        }
    }

    pub(crate) fn main() {
        let args = Args::from_env();
        if args.flag("--help") || args.flag("-h") {
            println!(
                "{}",
                include_str!("replace.rs")
                    .lines()
                    .take_while(|l| l.starts_with("//!"))
                    .map(|l| l.trim_start_matches("//!").trim_start())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return;
        }
        if let Some(key) = args.value("--only", "CRASHSAFE_BENCH_ONLY") {
            return only(&args, &key);
        }
        let quick = args.quick();
        let plan = Plan {
            rounds: args.number("--rounds", "CRASHSAFE_BENCH_ROUNDS"),
            secs: args
                .number("--secs", "CRASHSAFE_BENCH_SECS")
                .map_or(if quick { 2.0 } else { 25.0 }, |s| s as f64),
            quick,
        };
        let sizes: Vec<usize> = args
            .value("--sizes", "CRASHSAFE_BENCH_SIZES")
            .unwrap_or_else(|| String::from("4k,64k,1m"))
            .split(',')
            .map(parse_size)
            .collect();
        println!(
            "## crashsafe replace bench{}",
            if quick { " (quick mode)" } else { "" }
        );
        println!("\n{}", common::environment());
        println!(
            "command: {}",
            std::env::args().collect::<Vec<_>>().join(" ")
        );

        let mut contenders = MAIN.to_vec();
        if args.flag("--extra") {
            contenders.extend(EXTRA);
        }
        let base = common::disk_base(&args);
        let disk = tempfile::Builder::new()
            .prefix("crashsafe-bench.")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("cannot create a temp dir in {}: {e}", base.display()));
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        let disk_fs = common::fs_type(disk.path());
        println!("\ndisk dir: {} — {disk_fs}", disk.path().display());
        println!("  mount: {}", common::mount_of(disk.path()));
        if disk_fs.starts_with("tmpfs") {
            println!("  WARNING: this directory is on a tmpfs, not a disk; pass --dir");
        }
        dirs.push((common::fs_name(disk.path()), disk.path().into()));

        let tmpfs = if args.flag("--no-tmpfs") {
            println!("tmpfs run: skipped (--no-tmpfs)");
            None
        } else {
            match common::Tmpfs::mount("256m") {
                Ok(t) => {
                    println!(
                        "tmpfs dir: {} — {}",
                        t.path().display(),
                        common::fs_type(t.path())
                    );
                    Some(t)
                }
                Err(why) => {
                    println!("tmpfs run: skipped ({why})");
                    None
                }
            }
        };
        if let Some(t) = &tmpfs {
            dirs.push((common::fs_name(t.path()), t.path().into()));
        }

        let mut runs = Vec::new();
        for (fs_name, dir) in &dirs {
            for (k, &size) in sizes.iter().enumerate() {
                let mut run = measure(dir, size, &plan, &contenders, 0x9e37_79b9 + k as u64)
                    .unwrap_or_else(|e| panic!("{fs_name} {size}: {e}"));
                run.fs = fs_name.clone();
                report(&run);
                runs.push(run);
            }
        }
        goals(&runs);
        if quick {
            println!("\n(quick mode: a smoke test; these figures are not results)");
        }
        drop(tmpfs);
    }
}

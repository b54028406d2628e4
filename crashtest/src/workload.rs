//! Workloads: sequences of the library's public operations, described as
//! data so that the same sequence runs on a real filesystem (here) and on
//! the simulator ([`crate::simcheck`]).
//!
//! On the real filesystem the library's own code runs unchanged. Around
//! each operation the runner logs a `Begin` mark, and an `Ack` mark once it
//! returned `Ok`; it then reads back every file the operation wrote, so the
//! checker knows each version's exact bytes, mode and owner.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crashsafe::sim::Broken;
use crashsafe::{Batch, Durability, Options};

use crate::blocklog::{BlockLog, Event};

/// The uid and gid of the files made by setup (not root's, so a replace
/// that forgot the owner shows).
pub const OWNER: u32 = 1000;

/// The options one operation uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Opts {
    /// `Durability::Consistent` (no directory fsync).
    pub consistent: bool,
    /// `backup(true)`.
    pub backup: bool,
    /// `create_new(true)`.
    pub create_new: bool,
    /// `unnamed_temp(true)`.
    pub unnamed_temp: bool,
    /// `mode(m)`.
    pub mode: Option<u32>,
    /// A deliberately broken protocol variant.
    pub broken: Option<Broken>,
}

impl Opts {
    /// The library's options.
    pub fn options(&self) -> Options {
        let mut o = Options::new();
        if self.consistent {
            o.durability(Durability::Consistent);
        }
        o.backup(self.backup)
            .create_new(self.create_new)
            .unnamed_temp(self.unnamed_temp)
            .broken(self.broken);
        if let Some(m) = self.mode {
            o.mode(m);
        }
        o
    }
}

/// One operation.
#[derive(Clone, Debug)]
pub enum Step {
    /// `write(path, content(path, version))`; with `fails`, the call must
    /// return an error (e.g. `create_new` over an existing file).
    Write {
        path: &'static str,
        version: u32,
        opts: Opts,
        fails: bool,
    },
    /// `open` + `write_all` in 64 KiB pieces + `commit`: `len` bytes.
    Stream {
        path: &'static str,
        version: u32,
        len: usize,
        opts: Opts,
    },
    /// `update(path, |old| old + line)`.
    Update {
        path: &'static str,
        version: u32,
        opts: Opts,
    },
    /// A `Batch` with per-file options, committed.
    Batch {
        entries: Vec<(&'static str, u32, Opts)>,
        opts: Opts,
    },
    /// `sweep(dir)`.
    Sweep { dir: &'static str },
    // issue 16
    /// `DirReplace` of directory `dir` with exactly `members` (paths under
    /// `dir`, each written at `version`), committed; with `broken`, the
    /// deliberately broken commit that skips the flush; with `fsync_each`,
    /// the flush that fsyncs every member instead of one `syncfs`.
    DirSet {
        dir: &'static str,
        members: Vec<&'static str>,
        version: u32,
        broken: bool,
        fsync_each: bool,
    },
}

/// A workload: the files before it, and its operations.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Name in reports.
    pub name: String,
    /// Directories made by setup.
    pub dirs: Vec<&'static str>,
    /// Files made by setup: path, version, mode (owner [`OWNER`]).
    pub files: Vec<(&'static str, u32, u32)>,
    /// Symlinks made by setup: (link, target relative to the link).
    pub symlinks: Vec<(&'static str, &'static str)>,
    /// Temp-shaped files made by setup, old enough for `sweep`.
    pub stale_temps: Vec<&'static str>,
    /// The operations.
    pub steps: Vec<Step>,
    /// Files whose versions are checked (symlinks resolved).
    pub tracked: Vec<&'static str>,
    /// Whether the simulator cross-check applies (plain replaces in one
    /// directory: no links, no batches, no multi-MiB files).
    pub sim_check: bool,
    /// The broken variant this workload exercises, if any.
    pub broken: Option<Broken>,
    /// issue 16: groups of tracked files that must always be from the same
    /// operation (a `DirReplace` set): all old or all new, never a mix.
    pub sets: Vec<Vec<&'static str>>,
}

/// Content of `path` at `version`: tagged lines, 6000 bytes (two blocks
/// and a half), so a torn or mixed file shows.
pub fn content(path: &str, version: u32) -> Vec<u8> {
    sized_content(path, version, 6000)
}

/// Content of `len` bytes; distinct for each (path, version).
pub fn sized_content(path: &str, version: u32, len: usize) -> Vec<u8> {
    let line = format!("{path} version {version}\n");
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{i:08} ").as_bytes());
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// What `update` makes of the old content.
pub fn updated(old: Option<&[u8]>, version: u32) -> Vec<u8> {
    let mut v = old.map(<[u8]>::to_vec).unwrap_or_default();
    v.extend_from_slice(format!("update {version}\n").as_bytes());
    v
}

/// One version of a file, as read back right after it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The operation that wrote it (`None`: before the workload).
    pub op: Option<usize>,
    /// Bytes.
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// One operation as the checker sees it.
#[derive(Clone, Debug)]
pub struct OpInfo {
    /// `write d/file v2 (backup)`.
    pub label: String,
    /// Files (tracked paths) it replaces.
    pub files: Vec<&'static str>,
    /// Whether `Ok` promises the new versions survive a power cut.
    pub durable: bool,
    /// Whether it keeps a backup `name~`.
    pub backup: bool,
}

/// Everything the checker needs to know about a recording.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The operations, by number.
    pub ops: Vec<OpInfo>,
    /// Per tracked file: its versions in order (the setup's first).
    pub versions: Vec<(&'static str, Vec<Version>)>,
}

impl History {
    /// The versions of `path`.
    pub fn of(&self, path: &str) -> &[Version] {
        self.versions
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(&[], |(_, v)| v.as_slice())
    }
}

/// Reads `path`'s version now, if it exists.
pub fn read_version(path: &Path, op: Option<usize>) -> std::io::Result<Option<Version>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(Version {
        op,
        content: std::fs::read(path)?,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Makes the workload's starting files under `root`.
pub fn setup(w: &Workload, root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in &w.dirs {
        std::fs::create_dir_all(root.join(d))?;
    }
    for (path, version, mode) in &w.files {
        let p = root.join(path);
        std::fs::write(&p, content(path, *version))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
        std::os::unix::fs::chown(&p, Some(OWNER), Some(OWNER))?;
    }
    for (link, target) in &w.symlinks {
        std::os::unix::fs::symlink(target, root.join(link))?;
    }
    for temp in &w.stale_temps {
        let p = root.join(temp);
        std::fs::write(&p, b"left behind by a writer that died")?;
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&p)?
            .set_modified(old)?;
    }
    Ok(())
}

fn resolve(w: &Workload, path: &'static str) -> &'static str {
    // A written symlink stands for the tracked file it points to.
    if w.symlinks.iter().any(|(l, _)| *l == path) {
        w.tracked.first().copied().unwrap_or(path)
    } else {
        path
    }
}

fn describe(step: &Step) -> (String, Vec<&'static str>, Opts) {
    fn flags(o: &Opts) -> String {
        let mut f = Vec::new();
        if o.consistent {
            f.push("consistent".to_string());
        }
        if o.backup {
            f.push("backup".to_string());
        }
        if o.create_new {
            f.push("create_new".to_string());
        }
        if o.unnamed_temp {
            f.push("unnamed_temp".to_string());
        }
        if let Some(m) = o.mode {
            f.push(format!("mode {m:o}"));
        }
        if let Some(b) = o.broken {
            f.push(format!("broken {b:?}"));
        }
        if f.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.join(", "))
        }
    }
    match step {
        Step::Write {
            path,
            version,
            opts,
            ..
        } => (
            format!("write {path} v{version}{}", flags(opts)),
            vec![*path],
            *opts,
        ),
        Step::Stream {
            path,
            version,
            len,
            opts,
        } => (
            format!("stream {path} v{version} {len} bytes{}", flags(opts)),
            vec![*path],
            *opts,
        ),
        Step::Update {
            path,
            version,
            opts,
            ..
        } => (
            format!("update {path} v{version}{}", flags(opts)),
            vec![*path],
            *opts,
        ),
        Step::Batch { entries, opts } => (
            format!("batch of {}{}", entries.len(), flags(opts)),
            entries.iter().map(|e| e.0).collect(),
            *opts,
        ),
        Step::Sweep { dir } => (format!("sweep {dir}"), Vec::new(), Opts::default()),
        Step::DirSet {
            dir,
            members,
            version,
            broken,
            fsync_each,
        } => (
            format!(
                "replace set {dir} ({} files) v{version}{}{}",
                members.len(),
                if *broken { " (broken: no flush)" } else { "" },
                if *fsync_each { " (fsync each)" } else { "" }
            ),
            members.clone(),
            Opts::default(),
        ),
    }
}

fn run_step(step: &Step, root: &Path) -> Result<(), String> {
    let done = match step {
        Step::Write {
            path,
            version,
            opts,
            ..
        } => opts
            .options()
            .write(root.join(path), content(path, *version)),
        Step::Stream {
            path,
            version,
            len,
            opts,
        } => {
            let data = sized_content(path, *version, *len);
            let file = opts
                .options()
                .open(root.join(path))
                .map_err(|e| e.to_string())?;
            let mut file = file;
            for piece in data.chunks(64 << 10) {
                file.write_all(piece)
                    .map_err(|e| format!("streaming: {e}"))?;
            }
            file.commit()
        }
        Step::Update {
            path,
            version,
            opts,
            ..
        } => {
            let v = *version;
            opts.options()
                .update(root.join(path), move |old| Ok(updated(old, v)))
        }
        Step::Batch { entries, opts } => {
            let mut batch = Batch::with_options(&opts.options());
            for (path, version, o) in entries {
                batch
                    .write_with(&o.options(), root.join(path), content(path, *version))
                    .map_err(|e| e.to_string())?;
            }
            batch.commit()
        }
        Step::Sweep { dir } => crashsafe::sweep(root.join(dir)).map(|_| ()),
        Step::DirSet {
            dir,
            members,
            version,
            broken,
            fsync_each,
        } => (|| {
            let mut set = crashsafe::DirReplace::create(root.join(dir))?;
            if *broken {
                set.broken_skip_flush();
            }
            if *fsync_each {
                set.fsync_each_for_testing();
            }
            for path in members {
                let name = Path::new(path).file_name().expect("a member has a name");
                set.write(name, content(path, *version))?;
            }
            set.commit()
        })(),
    };
    done.map_err(|e| e.to_string())
}

/// The operations' descriptions, without running anything.
pub fn ops(w: &Workload) -> Vec<OpInfo> {
    w.steps
        .iter()
        .map(|s| {
            let (label, files, opts) = describe(s);
            OpInfo {
                label,
                files: files.into_iter().map(|f| resolve(w, f)).collect(),
                durable: !opts.consistent,
                backup: opts.backup,
            }
        })
        .collect()
}

/// The tracked files' versions before the workload.
pub fn initial(w: &Workload, root: &Path) -> std::io::Result<History> {
    let mut h = History {
        ops: ops(w),
        versions: Vec::new(),
    };
    for t in &w.tracked {
        let v = read_version(&root.join(t), None)?;
        h.versions.push((t, v.into_iter().collect()));
    }
    Ok(h)
}

/// Runs the workload's operations under `root`, marking the log. An
/// operation whose outcome differs from the expected one is an error.
pub fn run(w: &Workload, root: &Path, log: &BlockLog, h: &mut History) -> Result<(), String> {
    for (i, step) in w.steps.iter().enumerate() {
        log.push(Event::Begin(i));
        let result = run_step(step, root);
        let fails = matches!(step, Step::Write { fails: true, .. });
        match (result, fails) {
            (Ok(()), false) => {}
            (Err(_), true) => continue,
            (Ok(()), true) => {
                return Err(format!("{}: succeeded, expected an error", h.ops[i].label));
            }
            (Err(e), false) => return Err(format!("{}: {e}", h.ops[i].label)),
        }
        log.push(Event::Ack(i));
        for f in h.ops[i].files.clone() {
            let v = read_version(&root.join(f), Some(i))
                .map_err(|e| format!("reading back {f}: {e}"))?
                .ok_or_else(|| format!("{f} missing after {}", h.ops[i].label))?;
            if let Some((_, vs)) = h.versions.iter_mut().find(|(p, _)| *p == f) {
                vs.push(v);
            }
        }
    }
    Ok(())
}

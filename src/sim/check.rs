//! The crash checker: runs one replace on a fresh simulator, then looks at
//! every crash image at every crash point and checks the guarantees.
//!
//! Shared by the exhaustive crash tests, the fault tier, the negative controls,
//! `examples/crash_report.rs` and the benchmark.
//!
//! The invariants (REFERENCE.md §2.5), for the file the replace is about:
//!
//! 1. **Old or new**: in every image it is the old version or the new one,
//!    comparing content *and* mode and owner of the same version. Never
//!    missing if it existed, never empty, short or zero-filled.
//! 2. **Durable**: after `Ok` at [`Durability::Durable`], every image of the
//!    final point shows the new version.
//! 3. **Failure atomicity**: after an error before the rename, every image of
//!    the final point shows the old version.
//! 4. **Untouched**: a symlink that was followed is still the same symlink.
//! 5. **Bounded leaks**: besides the expected names, only temp-named files
//!    appear, at most one (two with a backup: its link waits under a temp
//!    name for its rename).
//! 6. **Backup**: `a~` is the earlier backup (or absent) or the old
//!    version, never torn or new; after `Ok` at Durable, the old version.
//! 7. **Backup reachable**: with a backup, the old version is under `a` or
//!    `a~` in every image (`Options::backup`'s promise).
//!
//! The volatile view is checked too: after `Ok` it shows the new version and
//! no temp; after a refusal, the old version and no temp.
//!
//! Batches ([`BatchCase`]) are checked per file: old or new in every image;
//! all new at the final point after `Ok` at Durable; after an error, every
//! file the error does not list as replaced is old at the final point and in
//! the volatile view, every file it lists is new in the volatile view; at
//! most one temp per file.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::fs::{Cred, Fs, Node, ROOT};
use super::{Broken, Budget, Model, SimFs, Stats};
use crate::error::Error;
use crate::options::{Durability, Options};
use crate::temp_name::is_temp_name;

/// The owner of the existing target in the cases: not the (root) writer, so
/// a lost `fchown` shows.
pub const OLD_OWNER: (u32, u32) = (1234, 5678);
/// The existing target's mode: setuid, so a `fchown` after `fchmod` shows.
pub const OLD_MODE: u32 = 0o4750;
/// A new file's mode: `0o666` under the cases' umask `0o022`.
pub const NEW_MODE: u32 = 0o644;
/// The payload length of the standard cases: three sectors and a bit, so a
/// write tears into three pieces.
pub const PAYLOAD_LEN: usize = 1300;

const WALK: Cred = Cred {
    uid: 0,
    gid: 0,
    root: true,
};

/// How the replaced file is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// `/d/a` is the file.
    Direct,
    /// `/d/a` is a symlink to `../e/a`, followed: `/e/a` is replaced.
    Followed,
    /// `/d/a` is a symlink to `../e/a`, not followed: the link is replaced.
    NotFollowed,
}

/// The entry point a case goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `write(path, bytes)`.
    Write,
    /// `open` + `Write` in chunks of 100 bytes + `commit`.
    Streaming,
    /// `update(path, f)`: `f` checks it was given the old content.
    Update,
}

/// Whether a case keeps the old version as `name~`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backup {
    /// No backup.
    Off,
    /// `Options::backup`, no earlier backup: `a~` is created.
    First,
    /// `Options::backup` over an earlier backup: `a~` is replaced.
    Rotate,
}

/// One configuration of a single replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Whether the file exists before (for [`Reach::NotFollowed`]: whether
    /// the link's target exists; the link itself always does).
    pub present: bool,
    /// The durability level asked for.
    pub durability: Durability,
    /// `Options::create_new`.
    pub create_new: bool,
    /// How the target is named.
    pub reach: Reach,
    /// Length of the new content.
    pub payload_len: usize,
    /// Which entry point runs the replace.
    pub via: Via,
    /// `Options::unnamed_temp`: an `O_TMPFILE` temp, linked at commit.
    pub unnamed_temp: bool,
    /// `Options::backup`, and whether an earlier backup exists.
    pub backup: Backup,
    /// Run as an ordinary user ([`USER_ID`](super::USER_ID)) who owns the
    /// directories and the old file, instead of root.
    pub user: bool,
    /// A deliberately broken protocol variant.
    pub broken: Option<Broken>,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reach = match self.reach {
            Reach::Direct => "file",
            Reach::Followed => "symlink-followed",
            Reach::NotFollowed => "symlink-replaced",
        };
        write!(
            f,
            "{} {reach} {:?}{}{}{}{}{} {}B",
            if self.present { "present" } else { "absent" },
            self.durability,
            if self.create_new { " create_new" } else { "" },
            match self.via {
                Via::Write => "",
                Via::Streaming => " streaming",
                Via::Update => " update",
            },
            if self.unnamed_temp { " unnamed" } else { "" },
            match self.backup {
                Backup::Off => "",
                Backup::First => " backup",
                Backup::Rotate => " backup-rotate",
            },
            if self.user { " user" } else { "" },
            self.payload_len,
        )
    }
}

/// One version of a path: what the invariants compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    /// No such name.
    Absent,
    /// A regular file.
    File {
        /// Its bytes.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A symlink.
    Symlink(OsString),
    /// A directory.
    Dir,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Absent => f.write_str("absent"),
            Version::File {
                data,
                mode,
                uid,
                gid,
            } => {
                let zeros = data.iter().filter(|&&b| b == 0).count();
                write!(
                    f,
                    "file of {} bytes ({zeros} zero) mode {mode:#o} owner {uid}:{gid}",
                    data.len()
                )
            }
            Version::Symlink(t) => write!(f, "symlink to {}", t.to_string_lossy()),
            Version::Dir => f.write_str("directory"),
        }
    }
}

/// The version of `path` in `fs` (a final symlink is not followed).
pub(crate) fn version(fs: &Fs, path: &Path) -> Version {
    let Ok(ino) = fs.walk(ROOT, path.as_os_str().as_encoded_bytes(), false, WALK) else {
        return Version::Absent;
    };
    let inode = fs.get(ino).expect("walked inode exists");
    match &inode.node {
        Node::File { .. } => Version::File {
            data: fs.content(ino).unwrap_or_default(),
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
        },
        Node::Symlink { target } => Version::Symlink(target.clone()),
        Node::Dir { .. } => Version::Dir,
    }
}

/// The names in directory `path` of `fs`.
pub(crate) fn names(fs: &Fs, path: &Path) -> Vec<OsString> {
    let Ok(ino) = fs.walk(ROOT, path.as_os_str().as_encoded_bytes(), true, WALK) else {
        return Vec::new();
    };
    match fs.get(ino).map(|i| &i.node) {
        Some(Node::Dir { entries, .. }) => entries.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Deterministic content with no zero byte, distinct per `tag`.
pub fn payload(len: usize, tag: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(7).wrapping_add(usize::from(tag) * 31) % 251) as u8 + 1)
        .collect()
}

const OLD_CONTENT: &[u8] = b"the old version of the file\n";
const OLDER_CONTENT: &[u8] = b"the backup of an even older version\n";
const OLDER_MODE: u32 = 0o640;
const LINK_TARGET: &str = "../e/a";

/// What a case must do.
#[derive(Clone, Debug)]
pub struct Expected {
    /// The path whose version is checked.
    pub path: PathBuf,
    /// Its version before.
    pub old: Version,
    /// Its version after a successful replace.
    pub new: Version,
    /// Whether the replace must be refused (`create_new` on an existing name).
    pub refused: bool,
    /// With a backup that applies (the old version is a regular file):
    /// the backup's path and its version before. A successful replace
    /// makes it `old`.
    pub backup: Option<(PathBuf, Version)>,
}

impl Case {
    /// Every option combination of the exhaustive suite: target absent or
    /// present × Durable or Consistent × create_new or not × plain file,
    /// symlink followed or symlink replaced. 24 cases.
    pub fn matrix() -> Vec<Case> {
        let mut out = Vec::new();
        for present in [false, true] {
            for durability in [Durability::Durable, Durability::Consistent] {
                for create_new in [false, true] {
                    for reach in [Reach::Direct, Reach::Followed, Reach::NotFollowed] {
                        out.push(Case {
                            present,
                            durability,
                            create_new,
                            reach,
                            payload_len: PAYLOAD_LEN,
                            via: Via::Write,
                            unnamed_temp: false,
                            backup: Backup::Off,
                            user: false,
                            broken: None,
                        });
                    }
                }
            }
        }
        out
    }

    /// The exhaustive suite: [`Case::matrix`] × payloads of 0, 1, 512 and
    /// 5000 bytes (empty, one byte, one sector, many sectors) × `write` or
    /// streaming. 192 cases.
    pub fn suite() -> Vec<Case> {
        let mut out = Vec::new();
        for case in Case::matrix() {
            for payload_len in [0, 1, 512, 5000] {
                for via in [Via::Write, Via::Streaming] {
                    out.push(Case {
                        payload_len,
                        via,
                        ..case.clone()
                    });
                }
            }
        }
        out
    }

    /// The paths that landed after the first version too: [`Case::matrix`]
    /// × payloads of 0, 1, 512 and 5000 bytes × `write`, streaming or
    /// `update` × named or unnamed (`O_TMPFILE`) temp × no backup, a
    /// first backup or a rotated one (the backup only where it applies: an
    /// existing regular file, not `create_new`). 768 cases; the first 192
    /// that are not `update`, unnamed or backup are [`Case::suite`].
    pub fn extended_suite() -> Vec<Case> {
        let mut out = Vec::new();
        for case in Case::matrix() {
            let backups: &[Backup] =
                if case.present && !case.create_new && case.reach != Reach::NotFollowed {
                    &[Backup::Off, Backup::First, Backup::Rotate]
                } else {
                    &[Backup::Off]
                };
            for payload_len in [0, 1, 512, 5000] {
                for via in [Via::Write, Via::Streaming, Via::Update] {
                    for unnamed_temp in [false, true] {
                        for &backup in backups {
                            out.push(Case {
                                payload_len,
                                via,
                                unnamed_temp,
                                backup,
                                ..case.clone()
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// The same case run by a broken protocol variant.
    pub fn with_broken(&self, broken: Option<Broken>) -> Case {
        Case {
            broken,
            ..self.clone()
        }
    }

    /// The options the replace runs with.
    pub fn options(&self) -> Options {
        let mut opts = Options::new();
        opts.durability(self.durability)
            .create_new(self.create_new)
            .follow_symlinks(self.reach != Reach::NotFollowed)
            .unnamed_temp(self.unnamed_temp)
            .backup(self.backup != Backup::Off)
            .broken(self.broken);
        opts
    }

    /// The file that is replaced (for [`Reach::NotFollowed`], where the
    /// link's target would be).
    fn file(&self) -> &'static str {
        match self.reach {
            Reach::Direct => "/d/a",
            Reach::Followed | Reach::NotFollowed => "/e/a",
        }
    }

    /// The starting state: `/d`, `/e`, the old file and the link, all
    /// durable; the writer is root (or the user) with umask 022.
    pub fn setup(&self, seed: u64) -> SimFs {
        let sim = SimFs::new(seed);
        let (uid, gid) = self.writer();
        sim.set_identity(uid, gid, !self.user);
        sim.mkdir("/d", 0o755).expect("fresh fs");
        sim.mkdir("/e", 0o755).expect("fresh fs");
        let file = self.file();
        if self.reach != Reach::Direct {
            sim.symlink("/d/a", LINK_TARGET).expect("fresh fs");
        }
        if self.present {
            let (uid, gid) = self.old_owner();
            sim.put_file(file, OLD_CONTENT, OLD_MODE, uid, gid)
                .expect("fresh fs");
        }
        if self.backup == Backup::Rotate {
            let (uid, gid) = self.old_owner();
            let backup = format!("{file}~");
            sim.put_file(backup, OLDER_CONTENT, OLDER_MODE, uid, gid)
                .expect("fresh fs");
        }
        sim
    }

    /// Who runs the replace.
    fn writer(&self) -> (u32, u32) {
        if self.user {
            (super::USER_ID, super::USER_ID)
        } else {
            (0, 0)
        }
    }

    /// Who owns the old file: someone else when root writes, so a lost
    /// `fchown` shows; the user when the user writes.
    fn old_owner(&self) -> (u32, u32) {
        if self.user { self.writer() } else { OLD_OWNER }
    }

    /// The expected outcome.
    pub fn expected(&self) -> Expected {
        let (path, old) = match self.reach {
            Reach::Direct | Reach::Followed => {
                let path = if self.reach == Reach::Direct {
                    "/d/a"
                } else {
                    "/e/a"
                };
                let old = if self.present {
                    Version::File {
                        data: OLD_CONTENT.to_vec(),
                        mode: OLD_MODE,
                        uid: self.old_owner().0,
                        gid: self.old_owner().1,
                    }
                } else {
                    Version::Absent
                };
                (path, old)
            }
            Reach::NotFollowed => ("/d/a", Version::Symlink(LINK_TARGET.into())),
        };
        let (mode, uid, gid) = match old {
            Version::File { mode, uid, gid, .. } => (mode, uid, gid),
            _ => (NEW_MODE, self.writer().0, self.writer().1),
        };
        let new = Version::File {
            data: payload(self.payload_len, 1),
            mode,
            uid,
            gid,
        };
        let backup_applies =
            self.backup != Backup::Off && !self.create_new && matches!(old, Version::File { .. });
        let backup = backup_applies.then(|| {
            let before = match self.backup {
                Backup::Rotate => Version::File {
                    data: OLDER_CONTENT.to_vec(),
                    mode: OLDER_MODE,
                    uid: self.old_owner().0,
                    gid: self.old_owner().1,
                },
                _ => Version::Absent,
            };
            (PathBuf::from(format!("{path}~")), before)
        });
        Expected {
            path: PathBuf::from(path),
            refused: self.create_new && old != Version::Absent,
            old,
            new,
            backup,
        }
    }

    /// Runs the replace on `sim`.
    pub fn run(&self, sim: &SimFs) -> Result<(), Error> {
        let opts = self.options();
        let data = payload(self.payload_len, 1);
        match self.via {
            Via::Write => return sim.write("/d/a", &data, &opts),
            Via::Update => {
                // `f` must be given exactly the old content: none for a new
                // file or a symlink that is replaced, not followed.
                let want = match self.expected().old {
                    Version::File { data, .. } => Some(data),
                    _ => None,
                };
                return sim.update("/d/a", &opts, move |current| {
                    if current.map(<[u8]>::to_vec) != want {
                        return Err(std::io::Error::other(format!(
                            "update read {current:?}, not the old content"
                        )));
                    }
                    Ok(data)
                });
            }
            Via::Streaming => {}
        }
        let mut file = sim.open("/d/a", &opts)?;
        for chunk in data.chunks(100) {
            if let Err(e) = file.write_all(chunk) {
                drop(file);
                return Err(Error::io(crate::error::Step::Write, Path::new("/d/a"), e));
            }
        }
        file.commit()
    }
}

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The model whose image broke it (`None`: the volatile view).
    pub model: Option<Model>,
    /// The crash point, e.g. `after #8 rename_at`.
    pub point: String,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let model = self.model.map_or("volatile", Model::name);
        write!(f, "[{model}] {}: {}", self.point, self.message)
    }
}

/// The result of checking one case in one model.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Points and images visited.
    pub stats: Stats,
    /// Images (or volatile checks) that broke an invariant.
    pub violations: u64,
    /// The first of them.
    pub first: Option<Violation>,
}

impl Report {
    fn note(&mut self, v: Violation) {
        self.violations += 1;
        if self.first.is_none() {
            self.first = Some(v);
        }
    }

    /// Adds `other` into `self`, keeping the first violation seen.
    pub fn merge(&mut self, other: Report) {
        self.stats.add(other.stats);
        self.violations += other.violations;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// What the images are checked against.
#[derive(Clone, Debug)]
pub struct Oracle {
    /// The case's expectations.
    pub expected: Expected,
    /// Whether the replace returned `Ok`.
    pub ok: bool,
    /// Whether it failed before the rename (target must be old at the end).
    pub failed_before_publish: bool,
    /// Whether the final point must show the new version (`Ok` + Durable).
    pub durable: bool,
    /// Whether the followed symlink `/d/a` must stay.
    pub keeps_link: bool,
}

impl Oracle {
    /// Checks one image at a point; `last` says it is the final point.
    pub(crate) fn check_image(&self, fs: &Fs, last: bool) -> Result<(), String> {
        let exp = &self.expected;
        let now = version(fs, &exp.path);
        if now != exp.old && now != exp.new {
            return Err(format!(
                "{} is neither old nor new: {now}",
                exp.path.display()
            ));
        }
        if last && self.durable && now != exp.new {
            return Err(format!(
                "after Ok (Durable) {} is not new: {now}",
                exp.path.display()
            ));
        }
        if last && self.failed_before_publish && now != exp.old {
            return Err(format!(
                "after an early error {} is not old: {now}",
                exp.path.display()
            ));
        }
        if self.keeps_link {
            let link = version(fs, Path::new("/d/a"));
            if link != Version::Symlink(LINK_TARGET.into()) {
                return Err(format!("the followed symlink /d/a became {link}"));
            }
        }
        // The backup is the earlier backup (or none) or the old version,
        // never torn, never the new one; after a durable `Ok` the old one.
        if let Some((path, before)) = &exp.backup {
            let now = version(fs, path);
            if now != *before && now != exp.old {
                return Err(format!(
                    "backup {} is neither the earlier backup nor old: {now}",
                    path.display()
                ));
            }
            if last && self.durable && now != exp.old {
                return Err(format!(
                    "after Ok (Durable) backup {} is not old: {now}",
                    path.display()
                ));
            }
            // The promise of `Options::backup`: at every moment the old
            // version is under one of the two names.
            let target = version(fs, &exp.path);
            if now != exp.old && target != exp.old {
                return Err(format!(
                    "the old version is under neither name: {} is {target}, {} is {now}",
                    exp.path.display(),
                    path.display()
                ));
            }
        }
        // One temp for the new content, and one more while the backup is
        // linked under a temp name before its rename.
        let temps_max = if exp.backup.is_some() { 2 } else { 1 };
        let mut temps = 0;
        for dir in ["/d", "/e"] {
            for name in names(fs, Path::new(dir)) {
                if name == "a" || (name == "a~" && exp.backup.is_some()) {
                    continue;
                }
                if !is_temp_name(&name) {
                    return Err(format!("unexpected name {dir}/{}", name.to_string_lossy()));
                }
                temps += 1;
            }
        }
        if temps > temps_max {
            return Err(format!("{temps} temp files for one replace"));
        }
        Ok(())
    }
}

/// Whether the temp name list of the volatile view is empty.
fn volatile_temps(sim: &SimFs) -> Vec<OsString> {
    ["/d", "/e"]
        .iter()
        .flat_map(|d| sim.list_dir(d).unwrap_or_default())
        .filter(|n| is_temp_name(n))
        .collect()
}

/// Runs `case` once and returns the simulator and the oracle for it.
pub fn run_case(case: &Case, seed: u64) -> (SimFs, Oracle, Result<(), Error>) {
    run_case_with(case, seed, |_| {})
}

/// As [`run_case`], with `prepare` run on the simulator before the replace
/// (to plan faults or change knobs).
pub fn run_case_with(
    case: &Case,
    seed: u64,
    prepare: impl FnOnce(&SimFs),
) -> (SimFs, Oracle, Result<(), Error>) {
    let sim = case.setup(seed);
    prepare(&sim);
    let result = case.run(&sim);
    let expected = case.expected();
    let oracle = Oracle {
        ok: result.is_ok(),
        failed_before_publish: result.as_ref().is_err_and(|e| !e.target_replaced()),
        durable: result.is_ok() && case.durability == Durability::Durable,
        keeps_link: case.reach == Reach::Followed,
        expected,
    };
    (sim, oracle, result)
}

/// Checks the volatile view after the run.
pub fn check_volatile(
    sim: &SimFs,
    oracle: &Oracle,
    result: &Result<(), Error>,
) -> Option<Violation> {
    let st = sim.lock();
    let exp = &oracle.expected;
    let now = version(&st.volatile, &exp.path);
    let backup_now = exp
        .backup
        .as_ref()
        .map(|(path, before)| (version(&st.volatile, path), before));
    drop(st);
    let bad = |message: String| {
        Some(Violation {
            model: None,
            point: "end".into(),
            message,
        })
    };
    match (&backup_now, result) {
        (Some((now, _)), Ok(())) if *now != exp.old => {
            return bad(format!("after Ok the backup is {now}"));
        }
        (Some((now, before)), Err(_)) if now != *before && *now != exp.old => {
            return bad(format!("after an error the backup is {now}"));
        }
        _ => {}
    }
    match result {
        Ok(()) if exp.refused => return bad("create_new replaced an existing file".into()),
        Ok(()) if now != exp.new => return bad(format!("after Ok the file is {now}")),
        Err(e) if !e.target_replaced() && now != exp.old => {
            return bad(format!("after an early error ({e}) the file is {now}"));
        }
        Err(e) if e.target_replaced() && now != exp.new => {
            return bad(format!("after a late error ({e}) the file is {now}"));
        }
        _ => {}
    }
    let temps = volatile_temps(sim);
    if !temps.is_empty() && result.as_ref().err().and_then(Error::temp_left).is_none() {
        return bad(format!("temp left behind: {temps:?}"));
    }
    None
}

/// Checks every image of every crash point of a finished run.
pub fn check_images(sim: &SimFs, oracle: &Oracle, model: Model, budget: &Budget) -> Report {
    check_images_from(sim, oracle, model, budget, 0)
}

/// Checks every image of the crash points after at least `from` effects.
pub fn check_images_from(
    sim: &SimFs,
    oracle: &Oracle,
    model: Model,
    budget: &Budget,
    from: usize,
) -> Report {
    let mut report = Report::default();
    let end = sim.effects();
    let stats = sim.explore(model, from, budget, &mut |point, fs| {
        if let Err(message) = oracle.check_image(fs, point.effects == end) {
            report.note(Violation {
                model: Some(model),
                point: point.label.clone(),
                message,
            });
        }
        true
    });
    report.stats = stats;
    report
}

/// Runs `case` and checks the volatile view and every crash image in `model`.
pub fn explore_case(case: &Case, model: Model, budget: &Budget) -> Report {
    let (sim, oracle, result) = run_case(case, budget.seed);
    let mut report = check_images(&sim, &oracle, model, budget);
    if let Some(v) = check_volatile(&sim, &oracle, &result) {
        report.note(v);
    }
    if result.is_ok() == oracle.expected.refused {
        report.note(Violation {
            model: None,
            point: "end".into(),
            message: format!("unexpected result {result:?}"),
        });
    }
    report
}

/// The outcome of checking many cases in one model.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    /// Everything visited and every violation.
    pub report: Report,
    /// The case of the first violation.
    pub first_case: Option<Case>,
    /// The first violation seen in a crash image (not in the volatile view
    /// or the trace), with its case: where a model catches the mistake.
    pub first_crash: Option<(Case, Violation)>,
}

/// Faults a variant needs to show its mistake: the retry-after-`EIO`
/// variant only differs once the first `fsync` fails.
pub fn prepare_for(broken: Option<Broken>) -> impl Fn(&SimFs) {
    move |sim: &SimFs| {
        if broken == Some(Broken::RetrySync) {
            sim.fail_first(super::Call::SyncFile, super::errnos::EIO);
        }
    }
}

/// Checks every case of `cases` (run by `broken`, or the real protocol) in
/// `model`: volatile view, every crash point, every image.
pub fn sweep(broken: Option<Broken>, model: Model, cases: &[Case], budget: &Budget) -> Sweep {
    let mut sweep = Sweep::default();
    for case in cases {
        let case = case.with_broken(broken);
        let (sim, oracle, result) = run_case_with(&case, budget.seed, prepare_for(broken));
        let mut report = check_images(&sim, &oracle, model, budget);
        if let (None, Some(v)) = (&sweep.first_crash, &report.first) {
            sweep.first_crash = Some((case.clone(), v.clone()));
        }
        if let Some(v) = check_volatile(&sim, &oracle, &result) {
            report.note(v);
        }
        if let Some(v) = check_trace(&sim) {
            report.note(v);
        }
        if report.violations > 0 && sweep.first_case.is_none() {
            sweep.first_case = Some(case.clone());
        }
        sweep.report.merge(report);
    }
    sweep
}

/// Honest errors (§2.5 invariant 4): a failed `fsync` of a temp, or a
/// failed `syncfs` of a batch, is never followed by a rename or link. A
/// `syncfs` that is unsupported (`EOPNOTSUPP`) is no failure: the batch
/// fsyncs each temp instead.
pub fn check_trace(sim: &SimFs) -> Option<Violation> {
    use super::Call;
    let trace = sim.trace();
    let failed = trace.iter().position(|t| match (t.call, t.result) {
        (Call::SyncFile, Err(_)) => true,
        (Call::SyncFs, Err(e)) => e != super::errno::NOTSUP,
        _ => false,
    })?;
    let publish = trace[failed..].iter().find(|t| {
        matches!(
            t.call,
            Call::RenameAt | Call::RenameNoreplaceAt | Call::LinkAt | Call::LinkUnnamed
        )
    })?;
    Some(Violation {
        model: None,
        point: format!("#{failed} {}", trace[failed].call),
        message: format!("a failed flush was followed by {publish}"),
    })
}

/// A short text for a temp name (for messages).
pub fn show_name(name: &OsStr) -> String {
    super::trace::show(name)
}

// ---- batches ----

/// One configuration of a [`Batch`](crate::Batch) commit, over files in
/// `/d` and `/e`, written by root (so a lost `fchown` shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchCase {
    /// The files in the order they are written, and whether each exists
    /// before (then with old content of its own, [`OLD_MODE`] and
    /// [`OLD_OWNER`]).
    pub files: Vec<(&'static str, bool)>,
    /// The durability level asked for.
    pub durability: Durability,
    /// `Options::unnamed_temp`.
    pub unnamed_temp: bool,
    /// Length of each file's new content.
    pub payload_len: usize,
    /// A deliberately broken protocol variant.
    pub broken: Option<Broken>,
    // issue 10: directory identity, several filesystems, bounded fds.
    /// The first file asks for `Consistent`, the others for `durability`.
    pub mixed: bool,
    /// `/e` is a filesystem of its own (ext4, another device).
    pub two_fs: bool,
    /// `/` is overlayfs: `syncfs` is not trusted, each temp is fsynced.
    pub overlay: bool,
    /// How the paths are given to the batch.
    pub via: BatchVia,
    /// At most this many open temps (`None`: the default, 64).
    pub open_temps_max: Option<usize>,
}

/// How a batch case names its files (issue 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchVia {
    /// Absolute paths: `/d/a`.
    Direct,
    /// `chdir` into the file's directory, then the bare name: every file
    /// has the parent path `.`.
    Chdir,
    /// `/l/a`, with the symlink `/l` repointed at the file's directory
    /// before each write: one path string, two directories.
    Symlink,
}

/// Whether `reported` (a path an error lists) names the batch file `path`:
/// the same path, or (for a case that gives relative or `/l/` paths) the
/// same file name; the names of a case's files differ.
fn same_file(path: &Path, reported: &Path) -> bool {
    path == reported
        || ((reported.is_relative() || reported.starts_with("/l"))
            && path.file_name() == reported.file_name())
}

impl fmt::Display for BatchCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("batch")?;
        for (path, present) in &self.files {
            write!(f, " {path}{}", if *present { "+" } else { "-" })?;
        }
        write!(
            f,
            " {:?}{} {}B",
            self.durability,
            if self.unnamed_temp { " unnamed" } else { "" },
            self.payload_len
        )?;
        for (on, what) in [
            (self.mixed, " mixed"),
            (self.two_fs, " two-fs"),
            (self.overlay, " overlay"),
            (self.via == BatchVia::Chdir, " chdir"),
            (self.via == BatchVia::Symlink, " via-symlink"),
        ] {
            if on {
                f.write_str(what)?;
            }
        }
        match self.open_temps_max {
            Some(n) => write!(f, " open<={n}"),
            None => Ok(()),
        }
    }
}

/// A batch file's version before the commit.
fn batch_old(path: &str, present: bool) -> Version {
    if !present {
        return Version::Absent;
    }
    Version::File {
        data: format!("old {path}\n").into_bytes(),
        mode: OLD_MODE,
        uid: OLD_OWNER.0,
        gid: OLD_OWNER.1,
    }
}

impl BatchCase {
    /// The batch suite: two files in one directory, two in two, and three
    /// in two with the directories interleaved (`/d`, `/e`, `/d`) × each
    /// file absent or present × Durable or Consistent × named or unnamed
    /// temps. 64 cases, 600-byte payloads (two sector pieces per write).
    pub fn suite() -> Vec<BatchCase> {
        let layouts: [&[&str]; 3] = [
            &["/d/a", "/d/b"],
            &["/d/a", "/e/c"],
            &["/d/a", "/e/c", "/d/b"],
        ];
        let mut out = Vec::new();
        for layout in layouts {
            for present in 0..1u32 << layout.len() {
                for durability in [Durability::Durable, Durability::Consistent] {
                    for unnamed_temp in [false, true] {
                        let files = layout
                            .iter()
                            .enumerate()
                            .map(|(i, &p)| (p, present >> i & 1 == 1))
                            .collect();
                        out.push(BatchCase {
                            durability,
                            unnamed_temp,
                            ..BatchCase::plain(files)
                        });
                    }
                }
            }
        }
        out
    }

    /// `files`, Durable, named temps, 600-byte payloads, absolute paths,
    /// one filesystem, default limits.
    pub fn plain(files: Vec<(&'static str, bool)>) -> BatchCase {
        BatchCase {
            files,
            durability: Durability::Durable,
            unnamed_temp: false,
            payload_len: 600,
            broken: None,
            mixed: false,
            two_fs: false,
            overlay: false,
            via: BatchVia::Direct,
            open_temps_max: None,
        }
    }

    /// Issue 10's cases: mixed durability in one directory; `chdir` and a
    /// repointed symlink (one path string, two directories); two
    /// filesystems; overlayfs; at most one open temp (each later temp is
    /// closed early, under an anchor). Each with every file absent or
    /// present, named and unnamed temps.
    pub fn identity_suite() -> Vec<BatchCase> {
        let one_dir = || vec![("/d/a", false), ("/d/b", false)];
        let two_dirs = || vec![("/d/a", false), ("/e/c", false), ("/d/b", false)];
        let mut shapes = vec![
            BatchCase {
                mixed: true,
                ..BatchCase::plain(one_dir())
            },
            BatchCase {
                mixed: true,
                ..BatchCase::plain(two_dirs())
            },
            BatchCase {
                via: BatchVia::Chdir,
                ..BatchCase::plain(two_dirs())
            },
            BatchCase {
                via: BatchVia::Symlink,
                ..BatchCase::plain(two_dirs())
            },
            BatchCase {
                two_fs: true,
                ..BatchCase::plain(two_dirs())
            },
            BatchCase {
                two_fs: true,
                via: BatchVia::Chdir,
                ..BatchCase::plain(two_dirs())
            },
            BatchCase {
                overlay: true,
                ..BatchCase::plain(two_dirs())
            },
        ];
        for overlay in [false, true] {
            for durability in [Durability::Durable, Durability::Consistent] {
                shapes.push(BatchCase {
                    overlay,
                    durability,
                    open_temps_max: Some(1),
                    ..BatchCase::plain(two_dirs())
                });
            }
        }
        let mut out = Vec::new();
        for shape in shapes {
            for present in [false, true] {
                for unnamed_temp in [false, true] {
                    let files = shape.files.iter().map(|&(p, _)| (p, present)).collect();
                    out.push(BatchCase {
                        files,
                        unnamed_temp,
                        ..shape.clone()
                    });
                }
            }
        }
        out
    }

    /// The durability file `i` asks for.
    pub fn durability_of(&self, i: usize) -> Durability {
        if self.mixed && i == 0 {
            Durability::Consistent
        } else {
            self.durability
        }
    }

    /// The same case run by a broken protocol variant.
    pub fn with_broken(&self, broken: Option<Broken>) -> BatchCase {
        BatchCase {
            broken,
            ..self.clone()
        }
    }

    /// The options every file of the batch uses.
    pub fn options(&self) -> Options {
        let mut opts = Options::new();
        opts.durability(self.durability)
            .unnamed_temp(self.unnamed_temp)
            .broken(self.broken);
        opts
    }

    /// `/d` and `/e` with the present files, all durable; root writes.
    pub fn setup(&self, seed: u64) -> SimFs {
        let sim = SimFs::new(seed);
        sim.set_identity(0, 0, true);
        sim.mkdir("/d", 0o755).expect("fresh fs");
        sim.mkdir("/e", 0o755).expect("fresh fs");
        if self.two_fs {
            sim.mount("/e", 0xEF53).expect("fresh fs");
        }
        if self.overlay {
            sim.set_root_fs_type(0x794C_7630);
        }
        if self.via == BatchVia::Symlink {
            sim.symlink("/l", "/d").expect("fresh fs");
        }
        for &(path, present) in &self.files {
            if present {
                let data = format!("old {path}\n");
                sim.put_file(path, data.as_bytes(), OLD_MODE, OLD_OWNER.0, OLD_OWNER.1)
                    .expect("fresh fs");
            }
        }
        sim
    }

    /// Each file's path, version before, and version after the commit.
    pub fn expected(&self) -> Vec<(PathBuf, Version, Version)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, &(path, present))| {
                let old = batch_old(path, present);
                let (mode, uid, gid) = match old {
                    Version::File { mode, uid, gid, .. } => (mode, uid, gid),
                    _ => (NEW_MODE, 0, 0),
                };
                let new = Version::File {
                    data: payload(self.payload_len, i as u8 + 1),
                    mode,
                    uid,
                    gid,
                };
                (PathBuf::from(path), old, new)
            })
            .collect()
    }

    /// Writes every file into the batch and commits. A failed write drops
    /// the batch (removing the temps written so far) and returns its error.
    pub fn run(&self, sim: &SimFs) -> Result<(), Error> {
        self.run_marked(sim).0
    }

    /// As [`run`](BatchCase::run); also returns the trace index at which
    /// `commit` started (the trace length if it was never called).
    pub fn run_marked(&self, sim: &SimFs) -> (Result<(), Error>, usize) {
        let result = self.write_all(sim);
        let start = sim.trace().len();
        (result.and_then(|batch| batch.commit()), start)
    }

    fn write_all(&self, sim: &SimFs) -> Result<super::SimBatch, Error> {
        let mut batch = sim.batch(&self.options());
        if let Some(max) = self.open_temps_max {
            batch.set_open_temps_max(max);
        }
        for (i, &(path, _)) in self.files.iter().enumerate() {
            let path = Path::new(path);
            let (dir, name) = (
                path.parent().expect("a dir"),
                path.file_name().expect("a name"),
            );
            let given = match self.via {
                BatchVia::Direct => path.to_path_buf(),
                BatchVia::Chdir => {
                    sim.chdir(dir).expect("the case's directory");
                    PathBuf::from(name)
                }
                BatchVia::Symlink => {
                    sim.repoint_symlink("/l", dir).expect("the case's symlink");
                    Path::new("/l").join(name)
                }
            };
            let mut opts = self.options();
            opts.durability(self.durability_of(i));
            batch.write_with(&opts, given, &payload(self.payload_len, i as u8 + 1))?;
        }
        Ok(batch)
    }
}

/// What the images of a batch run are checked against.
#[derive(Clone, Debug)]
pub struct BatchOracle {
    /// Each file's path, old and new version.
    pub files: Vec<(PathBuf, Version, Version)>,
    /// `Ok` at Durable: every file new at the final point.
    pub durable: bool,
    /// Files that asked for `Consistent` only (exempt from `durable`).
    pub consistent: Vec<PathBuf>,
    /// After an error: the `Durable` files it lists as replaced and not as
    /// unsynced. Their directory was fsynced (also on the failure path,
    /// after a failed rename), so they must be new at the final point.
    pub synced: Vec<PathBuf>,
    /// After an error, the files it lists as replaced ([`Error::replaced`]);
    /// every other file must be old at the final point. `None` after `Ok`.
    pub replaced: Option<Vec<PathBuf>>,
    /// Temps a dropped batch may leave unnamed in the volatile view: a
    /// failed write drops the batch, and `Drop` cannot report a temp it
    /// failed to remove. 0 unless a fault plan makes such a removal fail.
    pub dropped_leftovers: usize,
}

impl BatchOracle {
    /// Checks one image at a point; `last` says it is the final point.
    pub(crate) fn check_image(&self, fs: &Fs, last: bool) -> Result<(), String> {
        for (path, old, new) in &self.files {
            let now = version(fs, path);
            if now != *old && now != *new {
                return Err(format!("{} is neither old nor new: {now}", path.display()));
            }
            if last && self.synced.contains(path) && now != *new {
                return Err(format!(
                    "after an error that lists {} as replaced and not as unsynced, \
                     it is not new: {now}",
                    path.display()
                ));
            }
            if last && self.durable && !self.consistent.contains(path) && now != *new {
                return Err(format!(
                    "after Ok (Durable) {} is not new: {now}",
                    path.display()
                ));
            }
            let unreplaced = self
                .replaced
                .as_ref()
                .is_some_and(|r| !r.iter().any(|r| same_file(path, r)));
            if last && unreplaced && now != *old {
                return Err(format!(
                    "after a failed commit that did not replace it, {} is not old: {now}",
                    path.display()
                ));
            }
        }
        // At most one temp per file, all temp-named; no other name.
        let mut temps = 0;
        for dir in ["/d", "/e"] {
            for name in names(fs, Path::new(dir)) {
                let path = Path::new(dir).join(&name);
                if self.files.iter().any(|(p, _, _)| *p == path) {
                    continue;
                }
                if !is_temp_name(&name) {
                    return Err(format!("unexpected name {}", path.display()));
                }
                // A batch's anchors may stay after a crash (empty,
                // temp-shaped, removed by `sweep`).
                if !crate::batch::is_anchor_name(&name) {
                    temps += 1;
                }
            }
        }
        if temps > self.files.len() {
            return Err(format!(
                "{temps} temp files for a batch of {}",
                self.files.len()
            ));
        }
        Ok(())
    }
}

/// Runs `case` once, with `prepare` run on the simulator first (to plan
/// faults or change knobs); returns the simulator and the oracle.
pub fn run_batch_case_with(
    case: &BatchCase,
    seed: u64,
    prepare: impl FnOnce(&SimFs),
) -> (SimFs, BatchOracle, Result<(), Error>) {
    let sim = case.setup(seed);
    prepare(&sim);
    let result = case.run(&sim);
    let oracle = BatchOracle {
        files: case.expected(),
        durable: result.is_ok() && case.durability == Durability::Durable,
        consistent: (0..case.files.len())
            .filter(|&i| case.durability_of(i) == Durability::Consistent)
            .map(|i| PathBuf::from(case.files[i].0))
            .collect(),
        replaced: result.as_ref().err().map(|e| e.replaced().to_vec()),
        synced: result
            .as_ref()
            .err()
            .map_or_else(Vec::new, |e| synced_after(case, e)),
        dropped_leftovers: 0,
    };
    (sim, oracle, result)
}

/// The `Durable` files `e` lists as replaced and not as unsynced (their
/// directory's fsync did not fail).
fn synced_after(case: &BatchCase, e: &Error) -> Vec<PathBuf> {
    case.files
        .iter()
        .enumerate()
        .map(|(i, &(p, _))| (i, Path::new(p)))
        .filter(|&(i, p)| {
            case.durability_of(i) == Durability::Durable
                && e.replaced().iter().any(|r| same_file(p, r))
                && !e.unsynced().iter().any(|r| same_file(p, r))
        })
        .map(|(_, p)| p.to_path_buf())
        .collect()
}

/// Checks the volatile view after a batch run: after `Ok` every file is
/// new and no temp is left; after an error exactly the files it lists as
/// replaced are new, the others old, and no temp is left unless the error
/// names it.
pub fn check_batch_volatile(
    sim: &SimFs,
    oracle: &BatchOracle,
    result: &Result<(), Error>,
) -> Option<Violation> {
    let bad = |message: String| {
        Some(Violation {
            model: None,
            point: "end".into(),
            message,
        })
    };
    let st = sim.lock();
    let now: Vec<Version> = oracle
        .files
        .iter()
        .map(|(p, _, _)| version(&st.volatile, p))
        .collect();
    drop(st);
    let replaced = result.as_ref().err().map_or(&[][..], Error::replaced);
    for r in replaced {
        if !oracle.files.iter().any(|(p, _, _)| same_file(p, r)) {
            return bad(format!("the error lists {} as replaced", r.display()));
        }
    }
    for ((path, old, new), now) in oracle.files.iter().zip(&now) {
        let want_new = result.is_ok() || replaced.iter().any(|r| same_file(path, r));
        let want = if want_new { new } else { old };
        if now != want {
            let said = match result {
                Ok(()) => "after Ok".to_string(),
                Err(e) => format!(
                    "after {e} (replaced: {:?})",
                    e.replaced().iter().map(|p| p.display()).collect::<Vec<_>>()
                ),
            };
            return bad(format!("{said} {} is {now}", path.display()));
        }
    }
    let temps = volatile_temps(sim);
    let left = result.as_ref().err().and_then(Error::temp_left);
    let named = |t: &&OsString| left.is_some_and(|l| l.file_name() == Some(t.as_os_str()));
    let unnamed = temps.iter().filter(|t| !named(t)).count();
    if unnamed > oracle.dropped_leftovers {
        return bad(format!(
            "temps left behind: {temps:?} (the error names {left:?})"
        ));
    }
    None
}

/// Checks every image of every crash point of a finished batch run.
pub fn check_batch_images(
    sim: &SimFs,
    oracle: &BatchOracle,
    model: Model,
    budget: &Budget,
) -> Report {
    let mut report = Report::default();
    let end = sim.effects();
    let stats = sim.explore(model, 0, budget, &mut |point, fs| {
        if let Err(message) = oracle.check_image(fs, point.effects == end) {
            report.note(Violation {
                model: Some(model),
                point: point.label.clone(),
                message,
            });
        }
        true
    });
    report.stats = stats;
    report
}

/// Runs `case` (no faults: it must succeed) and checks the volatile view,
/// the trace and every crash image in `model`.
pub fn explore_batch(case: &BatchCase, model: Model, budget: &Budget) -> Report {
    let (sim, oracle, result) = run_batch_case_with(case, budget.seed, |_| {});
    let mut report = check_batch_images(&sim, &oracle, model, budget);
    for v in [
        check_batch_volatile(&sim, &oracle, &result),
        check_trace(&sim),
    ]
    .into_iter()
    .flatten()
    {
        report.note(v);
    }
    if let Err(e) = &result {
        report.note(Violation {
            model: None,
            point: "end".into(),
            message: format!("unexpected error {e}"),
        });
    }
    report
}

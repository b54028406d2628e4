//! The crash checker: runs one replace on a fresh simulator, then looks at
//! every crash image at every crash point and checks the guarantees.
//!
//! Shared by the exhaustive crash tests, the negative controls,
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
//!    appear, at most one.
//!
//! The volatile view is checked too: after `Ok` it shows the new version and
//! no temp; after a refusal, the old version and no temp.

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
    /// Through `open` + `Write` + `commit` instead of `write`.
    pub streaming: bool,
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
            "{} {reach} {:?}{}{}{} {}B",
            if self.present { "present" } else { "absent" },
            self.durability,
            if self.create_new { " create_new" } else { "" },
            if self.streaming { " streaming" } else { "" },
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
                            streaming: false,
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
                for streaming in [false, true] {
                    out.push(Case {
                        payload_len,
                        streaming,
                        ..case.clone()
                    });
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
            .broken(self.broken);
        opts
    }

    /// The starting state: `/d`, `/e`, the old file and the link, all
    /// durable; the writer is root (or the user) with umask 022.
    pub fn setup(&self, seed: u64) -> SimFs {
        let sim = SimFs::new(seed);
        let (uid, gid) = self.writer();
        sim.set_identity(uid, gid, !self.user);
        sim.mkdir("/d", 0o755).expect("fresh fs");
        sim.mkdir("/e", 0o755).expect("fresh fs");
        let file = match self.reach {
            Reach::Direct => "/d/a",
            Reach::Followed | Reach::NotFollowed => "/e/a",
        };
        if self.reach != Reach::Direct {
            sim.symlink("/d/a", LINK_TARGET).expect("fresh fs");
        }
        if self.present {
            let (uid, gid) = self.old_owner();
            sim.put_file(file, OLD_CONTENT, OLD_MODE, uid, gid)
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
        Expected {
            path: PathBuf::from(path),
            refused: self.create_new && old != Version::Absent,
            old,
            new,
        }
    }

    /// Runs the replace on `sim`.
    pub fn run(&self, sim: &SimFs) -> Result<(), Error> {
        let opts = self.options();
        let data = payload(self.payload_len, 1);
        if !self.streaming {
            return sim.write("/d/a", &data, &opts);
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
        let mut temps = 0;
        for dir in ["/d", "/e"] {
            for name in names(fs, Path::new(dir)) {
                if name == "a" {
                    continue;
                }
                if !is_temp_name(&name) {
                    return Err(format!("unexpected name {dir}/{}", name.to_string_lossy()));
                }
                temps += 1;
            }
        }
        if temps > 1 {
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
    drop(st);
    let bad = |message: String| {
        Some(Violation {
            model: None,
            point: "end".into(),
            message,
        })
    };
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

/// Honest errors (§2.5 invariant 4): a failed `fsync` of the temp is never
/// followed by a rename or link.
pub fn check_trace(sim: &SimFs) -> Option<Violation> {
    let trace = sim.trace();
    let failed = trace
        .iter()
        .position(|t| t.call == super::Call::SyncFile && t.result.is_err())?;
    let publish = trace[failed..].iter().find(|t| {
        matches!(
            t.call,
            super::Call::RenameAt | super::Call::RenameNoreplaceAt | super::Call::LinkAt
        )
    })?;
    Some(Violation {
        model: None,
        point: format!("#{failed} sync_file"),
        message: format!("a failed fsync was followed by {publish}"),
    })
}

/// A short text for a temp name (for messages).
pub fn show_name(name: &OsStr) -> String {
    super::trace::show(name)
}

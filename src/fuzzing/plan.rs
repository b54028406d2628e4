//! The machinery of the `plan` target: decoding a plan from fuzz bytes,
//! running it on the simulator, and the oracle that checks every step.
//! [`super::plan`] describes what a plan covers and the input layout.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use super::Input;
use crate::batch::Entries;
use crate::error::Error;
use crate::options::{Durability, HardLinks, Options};
use crate::protocol::Replace;
use crate::sim::check::{Version, names, payload, version};
use crate::sim::{Budget, Call, Model, SimFs, SimKind, USER_ID, errnos};
use crate::temp_name::is_temp_name;

/// The directories; `/e` may be missing.
const DIRS: [&str; 2] = ["/d", "/e"];
/// The names the operations are asked to replace (two or three of them).
const SLOTS: [&str; 3] = ["/d/a", "/d/b", "/e/c"];
/// Where slot `i`'s symlink points when it points at a file of its own.
const REALS: [&str; 3] = ["/e/ra", "/d/rb", "/d/rc"];
/// The second name of slot `i` when it starts hard-linked.
const SECOND_NAMES: [&str; 3] = ["/d/ha", "/d/hb", "/e/hc"];
/// Someone other than the writer, who owns some of the starting files.
const OTHER: (u32, u32) = (1234, 5678);
/// The error numbers a fault injects.
const ERRNOS: [i32; 7] = [
    errnos::EIO,
    errnos::ENOSPC,
    errnos::EDQUOT,
    errnos::EACCES,
    errnos::EINTR,
    errnos::EPERM,
    errnos::EINVAL,
];
/// Content lengths: empty, tiny, around one sector, several sectors, and
/// more than the streaming buffer (8 KiB).
const LENS: [usize; 12] = [0, 1, 3, 20, 100, 511, 512, 513, 1300, 4096, 5000, 9000];
/// Modes of starting files and of `Options::mode`: setuid, setgid, sticky
/// and no permission at all among them.
const MODES: [u32; 8] = [0o644, 0o600, 0o640, 0o755, 0o4750, 0o2755, 0o1644, 0o000];
const UMASKS: [u32; 4] = [0o022, 0o077, 0o002, 0o000];
/// Bounds that keep one run short.
const STEPS_MAX: usize = 24;
const OPS_MAX: usize = 8;
const CRASHES_MAX: usize = 2;
/// Planned faults that have not fired yet; so at most this many fire in one
/// operation.
const PENDING_FAULTS_MAX: usize = 2;

/// Whether to print each step and its system calls to stderr
/// (`CRASHSAFE_PLAN_LOG=1`), to follow a failing input.
fn verbose() -> bool {
    static VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("CRASHSAFE_PLAN_LOG").is_some())
}

/// `input.u8() % n`: one byte for a small choice.
fn pick(input: &mut Input<'_>, n: usize) -> usize {
    usize::from(input.u8()) % n
}

/// `path` with `.` and `..` resolved lexically (no directory on the way is
/// a symlink here, so that is also where the kernel ends up).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

/// The text of a symlink at `from` that leads to `to`.
fn link_text(from: &str, to: &str, relative: bool) -> PathBuf {
    let (from, to) = (Path::new(from), Path::new(to));
    if !relative {
        return to.to_path_buf();
    }
    if from.parent() == to.parent() {
        return PathBuf::from(to.file_name().expect("a file name"));
    }
    Path::new("..").join(to.strip_prefix("/").expect("absolute"))
}

/// `path~`: where a backup of `path` goes.
fn backup_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("~");
    PathBuf::from(name)
}

fn show(versions: &[Version]) -> String {
    let shown: Vec<String> = versions.iter().map(ToString::to_string).collect();
    shown.join(" | ")
}

/// Who writes, and the knobs of the simulated system.
#[derive(Clone, Copy, Debug)]
struct Writer {
    uid: u32,
    gid: u32,
    root: bool,
    umask: u32,
    noreplace: bool,
    hard_links: bool,
}

/// When a refused replace fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// When it starts (`open`, `write`, a batch's `write`): nothing created.
    Open,
    /// At the publish step, after the temp was written and synced.
    Publish,
}

/// Why a replace must fail when no fault fires.
#[derive(Clone, Copy, Debug)]
struct Refusal {
    why: &'static str,
    when: When,
}

/// What a replace of one slot does, worked out from the state before it.
#[derive(Clone, Debug)]
struct Target {
    /// The caller's path.
    path: PathBuf,
    /// The file the replace works on: the slot, or where its symlinks
    /// lead. `None` when they lead nowhere (missing directory, loop).
    landing: Option<PathBuf>,
    /// The landing's version before.
    old: Version,
    /// The regular file whose mode and owner the new version keeps.
    kept: Option<Version>,
    refusal: Option<Refusal>,
    /// `landing~`, when the old version is kept as a backup.
    backup: Option<PathBuf>,
}

impl Target {
    fn refused_early(&self) -> bool {
        self.refusal.is_some_and(|r| r.when == When::Open)
    }
}

/// One name an operation may change, and how.
#[derive(Clone, Debug)]
struct Touch {
    landing: PathBuf,
    old: Version,
    new: Version,
    backup: Option<PathBuf>,
    /// The call says the new version is in place.
    published: bool,
    /// The new version takes the old file's mode (no `Options::mode`).
    keeps_mode: bool,
}

/// What the checks after an operation need.
#[derive(Debug, Default)]
struct Outcome {
    touches: Vec<Touch>,
    /// Temps that errors say were left behind.
    named: Vec<PathBuf>,
    /// How many temps may stay without an error naming them (a drop whose
    /// cleanup hit a fault: best effort, and nobody to tell).
    silent: usize,
    /// Directories a successful `Durable` call fsynced.
    durable_dirs: Vec<PathBuf>,
    /// How many temp names the operation creates at most (what a crash
    /// image may keep of them).
    temps: usize,
}

/// The state an operation started from.
#[derive(Debug)]
struct Begin {
    mark: usize,
    trace: usize,
    fired: usize,
    before: BTreeMap<PathBuf, Vec<Version>>,
}

/// The last operation, for a crash inside it.
#[derive(Debug)]
struct LastOp {
    mark: usize,
    /// The versions a crash could show before it.
    before: BTreeMap<PathBuf, Vec<Version>>,
    /// The versions the process saw during it, for the names it changed.
    during: BTreeMap<PathBuf, Vec<Version>>,
}

/// The model of what the process sees and what a crash may show.
struct Run {
    sim: SimFs,
    writer: Writer,
    slots: usize,
    /// Every name the checks know: slots, symlink targets, second names,
    /// backups.
    keys: Vec<PathBuf>,
    /// The version the process sees, per key.
    current: BTreeMap<PathBuf, Version>,
    /// The versions a crash may leave, per key.
    possible: BTreeMap<PathBuf, Vec<Version>>,
    /// Temps in the volatile view (left by a crash, or named by an error).
    leftovers: BTreeSet<PathBuf>,
    /// Temps present at the last recovery, and how many more the
    /// operations since may have left in a crash image.
    base_temps: BTreeSet<PathBuf>,
    capacity: usize,
    last: Option<LastOp>,
    /// Faults planned since the last recovery.
    planned: usize,
    crashes: usize,
    tag: u8,
    step: usize,
}

impl Run {
    /// Decodes the starting state and builds it.
    fn setup(input: &mut Input<'_>) -> Run {
        let head = input.u8();
        let seed = u64::from(input.u8());
        let root = head & 1 == 1;
        let (uid, gid) = if root { (0, 0) } else { (USER_ID, USER_ID) };
        let writer = Writer {
            uid,
            gid,
            root,
            umask: UMASKS[usize::from(head >> 4 & 3)],
            noreplace: head & 4 == 0,
            hard_links: head & 8 == 0,
        };
        let sim = SimFs::new(seed);
        // Directories belong to the user (the default identity), so the
        // user may create and rename in them.
        sim.mkdir("/d", 0o755).expect("fresh fs");
        if head & 2 == 0 {
            sim.mkdir("/e", 0o755).expect("fresh fs");
        }
        let slots = 2 + usize::from(head >> 6 & 1);
        for i in 0..slots {
            let kind = input.u8();
            let a = input.u8();
            let content = payload(LENS[usize::from(a) % LENS.len()], 200 + i as u8);
            let mode = MODES[usize::from(a >> 4) % MODES.len()];
            let (ouid, ogid) = if kind & 0x80 != 0 { OTHER } else { (uid, gid) };
            let relative = kind & 0x40 != 0;
            let slot = SLOTS[i];
            // Setup calls into a missing `/e` fail; the slot stays absent.
            let _ = match kind % 8 {
                0 => Ok(()),
                1 => sim.put_file(slot, &content, mode, ouid, ogid),
                2 => sim
                    .put_file(REALS[i], &content, mode, ouid, ogid)
                    .and_then(|()| sim.symlink(slot, link_text(slot, REALS[i], relative))),
                3 => sim.symlink(slot, link_text(slot, REALS[i], relative)),
                4 => {
                    let other = SLOTS[(i + 1 + usize::from(kind >> 3 & 1)) % 3];
                    sim.symlink(slot, link_text(slot, other, relative))
                }
                5 => sim.mkdir(slot, 0o755),
                6 => sim
                    .put_file(slot, &content, mode, ouid, ogid)
                    .and_then(|()| sim.hard_link(slot, SECOND_NAMES[i])),
                _ => sim.symlink(slot, link_text(slot, slot, true)),
            };
        }
        sim.set_identity(writer.uid, writer.gid, writer.root);
        sim.set_umask(writer.umask);
        sim.set_rename_noreplace(writer.noreplace);
        sim.set_hard_links(writer.hard_links);
        let mut keys: Vec<PathBuf> = SLOTS
            .iter()
            .chain(&REALS)
            .chain(&SECOND_NAMES)
            .map(PathBuf::from)
            .collect();
        let backups: Vec<PathBuf> = SLOTS
            .iter()
            .chain(&REALS)
            .map(|p| backup_of(Path::new(p)))
            .collect();
        keys.extend(backups);
        let mut run = Run {
            sim,
            writer,
            slots,
            keys,
            current: BTreeMap::new(),
            possible: BTreeMap::new(),
            leftovers: BTreeSet::new(),
            base_temps: BTreeSet::new(),
            capacity: 0,
            last: None,
            planned: 0,
            crashes: 0,
            tag: 0,
            step: 0,
        };
        run.recover();
        run
    }

    /// After setup or a crash: the state is durable as it is.
    fn recover(&mut self) {
        for key in &self.keys {
            let v = version(&self.sim.lock().volatile, key);
            self.current.insert(key.clone(), v.clone());
            self.possible.insert(key.clone(), vec![v]);
        }
        self.leftovers = self.temps_now("recovery");
        self.base_temps = self.leftovers.clone();
        self.capacity = 0;
        self.last = None;
        self.planned = 0;
    }

    fn next_tag(&mut self) -> u8 {
        self.tag = self.tag.wrapping_add(1);
        self.tag
    }

    fn version_now(&self, path: &Path) -> Version {
        version(&self.sim.lock().volatile, path)
    }

    /// The temp-shaped names in the directories of `fs`; panics on a name
    /// that is neither a key nor temp-shaped.
    fn temps_in(&self, fs: &SimFs, what: &str) -> BTreeSet<PathBuf> {
        let mut temps = BTreeSet::new();
        let st = fs.lock();
        for dir in DIRS {
            for name in names(&st.volatile, Path::new(dir)) {
                let path = Path::new(dir).join(&name);
                if self.keys.contains(&path) {
                    continue;
                }
                assert!(
                    is_temp_name(&name),
                    "step {} ({what}): stray name {}",
                    self.step,
                    path.display()
                );
                temps.insert(path);
            }
        }
        temps
    }

    fn temps_now(&self, what: &str) -> BTreeSet<PathBuf> {
        self.temps_in(&self.sim, what)
    }

    fn begin(&self) -> Begin {
        // One lock at a time: a guard in a struct literal lives to its end.
        let trace = self.sim.lock().trace.len();
        Begin {
            mark: self.sim.effects(),
            trace,
            fired: self.sim.faults_fired(),
            before: self.possible.clone(),
        }
    }

    fn faulted(&self, begin: &Begin) -> bool {
        self.sim.faults_fired() > begin.fired
    }

    fn decode_options(&self, input: &mut Input<'_>) -> Options {
        let bits = input.u16();
        let mut opts = Options::new();
        opts.durability(if bits & 1 == 0 {
            Durability::Durable
        } else {
            Durability::Consistent
        })
        .follow_symlinks(bits & 2 == 0)
        .create_new(bits & 0x1c == 0x1c)
        .backup(bits & 0x60 == 0x60)
        .unnamed_temp(bits & 0x80 != 0)
        .hard_links(if bits & 0x300 == 0x300 {
            HardLinks::Refuse
        } else {
            HardLinks::Break
        })
        .preserve_owner(bits & 0xc00 != 0xc00);
        if bits & 0x1000 != 0 {
            opts.mode(MODES[usize::from(bits >> 13)]);
        }
        opts
    }

    /// Works out where a replace of `slot` lands and whether it must fail,
    /// from the simulator's state (untraced setup-level calls).
    fn predict(&self, slot: usize, opts: &Options, update: bool) -> Target {
        let sim = &self.sim;
        let path = PathBuf::from(SLOTS[slot]);
        let mut target = Target {
            path: path.clone(),
            landing: None,
            old: Version::Absent,
            kept: None,
            refusal: None,
            backup: None,
        };
        let refuse = |why, when| Some(Refusal { why, when });
        let mut at = path;
        let mut hops = 0;
        loop {
            let parent = at.parent().expect("absolute path").to_path_buf();
            if !sim.stat(&parent).is_ok_and(|s| s.kind == SimKind::Dir) {
                target.refusal = refuse("the parent directory is missing", When::Open);
                return target;
            }
            match sim.stat(&at) {
                Ok(st) if st.kind == SimKind::Symlink && opts.follow_symlinks => {
                    hops += 1;
                    if hops > 40 {
                        target.refusal = refuse("a symlink loop", When::Open);
                        return target;
                    }
                    let link = sim.read_link(&at).expect("a symlink");
                    at = normalize(&parent.join(link));
                }
                _ => break,
            }
        }
        target.old = self.version_now(&at);
        target.landing = Some(at.clone());
        match sim.stat(&at).ok() {
            Some(st) if st.kind == SimKind::Dir => {
                target.refusal = refuse("the target is a directory", When::Open);
            }
            Some(_) if opts.create_new => {
                target.refusal = refuse("create_new, and the target exists", When::Open);
            }
            // A symlink that is not followed is replaced like a new file.
            Some(st) if st.kind == SimKind::Symlink => {}
            // Its only other name being its own backup (a crash between
            // the two renames) does not count.
            Some(st)
                if st.nlink > 1
                    && opts.hard_links == HardLinks::Refuse
                    && !(st.nlink == 2
                        && self.sim.stat(backup_of(&at)).is_ok_and(|b| b.ino == st.ino)) =>
            {
                target.refusal = refuse("the target is hard-linked", When::Open);
            }
            Some(_) => target.kept = Some(target.old.clone()),
            None => {}
        }
        if target.refusal.is_some() {
            return target;
        }
        let w = &self.writer;
        if let (true, Some(Version::File { mode, uid, gid, .. })) = (update, &target.kept) {
            if !self.readable(*mode, *uid, *gid) {
                target.refusal = refuse("update cannot read the target", When::Open);
                return target;
            }
        }
        // An O_TMPFILE temp is linked to a temp name and then published
        // like a named one, so it needs the same support.
        if opts.create_new && !w.noreplace && !w.hard_links {
            target.refusal = refuse(
                "create_new without RENAME_NOREPLACE or hard links",
                When::Publish,
            );
        }
        if opts.backup && target.kept.is_some() {
            target.backup = Some(backup_of(&at));
            if !w.hard_links {
                target.refusal = refuse("a backup needs a hard link", When::Publish);
            }
        }
        target
    }

    /// Whether the writer may open a file of this mode and owner for reading.
    fn readable(&self, mode: u32, uid: u32, gid: u32) -> bool {
        let w = &self.writer;
        let bits = if w.root {
            0o4
        } else if uid == w.uid {
            mode >> 6
        } else if gid == w.gid {
            mode >> 3
        } else {
            mode
        };
        bits & 0o4 != 0
    }

    /// The version a successful replace of `target` with `data` leaves.
    fn new_version(&self, target: &Target, opts: &Options, data: &[u8]) -> Version {
        let w = &self.writer;
        let kept = match &target.kept {
            Some(Version::File { mode, uid, gid, .. }) => Some((*mode, *uid, *gid)),
            _ => None,
        };
        let (uid, gid) = match kept {
            // Only root may give the file to its old owner; a user's
            // `EPERM` is ignored and the file stays the user's.
            Some((_, uid, gid)) if opts.preserve_owner && w.root => (uid, gid),
            _ => (w.uid, w.gid),
        };
        let mode = match (opts.mode, kept) {
            // Created with the mode under the umask; the special bits are
            // put back after the chown that clears them.
            (Some(m), _) => m & !w.umask & 0o777 | m & 0o7000,
            // Never wider than before: set-id bits only for the same
            // owner/group; another group gets at most what "others" had;
            // an old file we cannot read may hide an ACL, so no group bits.
            (None, Some((mut mode, ouid, ogid))) => {
                if uid != ouid {
                    mode &= !0o4000;
                }
                if gid != ogid {
                    mode = mode & !0o2070 | (mode & (mode << 3) & 0o070);
                }
                if !self.readable(mode_of(&target.kept), ouid, ogid) {
                    mode &= !0o070;
                }
                mode
            }
            (None, None) => 0o666 & !w.umask,
        };
        Version::File {
            data: data.to_vec(),
            mode,
            uid,
            gid,
        }
    }

    /// What one single-target operation may have left: the new version
    /// where it published (`committed` and an `Ok` or a replaced-target
    /// error), the temp its error names, and the directory made durable.
    fn single_outcome(
        &self,
        target: &Target,
        opts: &Options,
        data: &[u8],
        result: &Result<(), Error>,
        committed: bool,
        silent: usize,
    ) -> Outcome {
        let published = committed
            && result
                .as_ref()
                .map_or_else(Error::target_replaced, |()| true);
        Outcome {
            touches: self.touch(target, opts, data, published),
            named: result
                .as_ref()
                .err()
                .and_then(Error::temp_left)
                .map(Path::to_path_buf)
                .into_iter()
                .collect(),
            silent,
            durable_dirs: if committed {
                durable_dir(result, opts, target)
            } else {
                Vec::new()
            },
            temps: 1 + usize::from(target.backup.is_some()),
        }
    }

    fn touch(&self, target: &Target, opts: &Options, data: &[u8], published: bool) -> Vec<Touch> {
        let Some(landing) = &target.landing else {
            return Vec::new();
        };
        vec![Touch {
            landing: landing.clone(),
            old: target.old.clone(),
            new: self.new_version(target, opts, data),
            backup: target.backup.clone(),
            published,
            keeps_mode: opts.mode.is_none() && target.kept.is_some(),
        }]
    }

    /// Checks the volatile view after an operation and moves the model on.
    fn settle(&mut self, what: &str, begin: Begin, mut out: Outcome) {
        let step = self.step;
        // An old file that could not be opened (here: an injected EACCES or
        // EPERM) may hide an ACL, so the new file gets no group bits.
        let trace = self.sim.trace();
        for touch in &mut out.touches {
            let name = touch
                .landing
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let denied = trace[begin.trace..].iter().any(|t| {
                t.call == Call::OpenReadAt
                    && t.injected
                    && matches!(t.result, Err(1) | Err(13))
                    && name
                        .as_deref()
                        .is_some_and(|n| t.args.ends_with(&format!(", {n}")))
            });
            if let (true, true, Version::File { mode, .. }) =
                (denied, touch.keeps_mode, &mut touch.new)
            {
                *mode &= !0o070;
            }
        }
        if verbose() {
            eprintln!("step {step}: {what}");
            for call in &self.sim.trace()[begin.trace..] {
                eprintln!("    {call}");
            }
        }
        let mut observed = BTreeMap::new();
        for key in &self.keys {
            let now = self.version_now(key);
            let mut expected = vec![self.current[key].clone()];
            for t in &out.touches {
                if *key == t.landing {
                    expected = vec![if t.published {
                        t.new.clone()
                    } else {
                        t.old.clone()
                    }];
                }
                if t.backup.as_ref() == Some(key) {
                    // A failure after the backup was made leaves it made.
                    if t.published {
                        expected = vec![t.old.clone()];
                    } else {
                        expected.push(t.old.clone());
                    }
                }
            }
            assert!(
                expected.contains(&now),
                "step {step} ({what}): {} is {now}, expected {}",
                key.display(),
                show(&expected)
            );
            observed.insert(key.clone(), now);
        }
        let temps = self.temps_now(what);
        let named: BTreeSet<PathBuf> = out.named.iter().map(|p| normalize(p)).collect();
        for temp in &named {
            assert!(
                temps.contains(temp),
                "step {step} ({what}): the error names {} as left behind, but it is gone",
                temp.display()
            );
        }
        let extra: Vec<&PathBuf> = temps
            .iter()
            .filter(|t| !self.leftovers.contains(*t) && !named.contains(*t))
            .collect();
        assert!(
            extra.len() <= out.silent,
            "step {step} ({what}): temp left behind and not named by an error: {extra:?} \
             (left before: {:?})",
            self.leftovers
        );
        let mut during = BTreeMap::new();
        for key in &self.keys {
            let (was, now) = (&self.current[key], &observed[key]);
            if was != now {
                during.insert(key.clone(), vec![was.clone(), now.clone()]);
                let possible = self.possible.get_mut(key).expect("every key");
                if !possible.contains(now) {
                    possible.push(now.clone());
                }
            }
        }
        // A directory fsync makes every name in the directory durable, and
        // every file behind them was durable already (fsynced before its
        // rename, or part of a recovered state).
        for key in &self.keys {
            let dir = key.parent().expect("absolute");
            if out.durable_dirs.iter().any(|d| d == dir) {
                self.possible
                    .insert(key.clone(), vec![observed[key].clone()]);
            }
        }
        self.current = observed;
        self.leftovers = temps;
        self.capacity += out.temps;
        self.last = Some(LastOp {
            mark: begin.mark,
            before: begin.before,
            during,
        });
    }

    /// Honest errors: after a failed fsync of the data the call fails and
    /// publishes nothing; a failed directory fsync is reported.
    fn check_trace(&self, what: &str, begin: &Begin, result: &Result<(), Error>) {
        let st = self.sim.lock();
        let calls = &st.trace[begin.trace..];
        let synced = |c: Call| matches!(c, Call::SyncFile | Call::SyncFs);
        if let Some(i) = calls
            .iter()
            .position(|t| synced(t.call) && t.result.is_err())
        {
            assert!(
                result.is_err(),
                "step {} ({what}): Ok after a failed {}",
                self.step,
                calls[i]
            );
            let publish = calls[i..].iter().find(|t| {
                matches!(
                    t.call,
                    Call::RenameAt | Call::RenameNoreplaceAt | Call::LinkAt | Call::LinkUnnamed
                )
            });
            if let Some(p) = publish {
                panic!(
                    "step {} ({what}): {p} after the failed {}",
                    self.step, calls[i]
                );
            }
        }
        if let Some(t) = calls
            .iter()
            .find(|t| t.call == Call::SyncDir && t.result.is_err())
        {
            assert!(
                result.is_err(),
                "step {} ({what}): Ok after a failed {t}",
                self.step
            );
        }
    }

    /// Without a fault the call fails exactly when the model says it must.
    fn check_expected(&self, what: &str, faulted: bool, ok: bool, refusal: Option<Refusal>) {
        if faulted {
            return;
        }
        match refusal {
            None => assert!(ok, "step {} ({what}): failed with no fault", self.step),
            Some(r) => assert!(
                !ok,
                "step {} ({what}): succeeded, but must fail: {}",
                self.step, r.why
            ),
        }
    }

    fn check_error(&self, what: &str, path: &Path, result: &Result<(), Error>) {
        if let Err(e) = result {
            assert_eq!(e.target(), path, "step {} ({what}): {e}", self.step);
            let shown = e.to_string();
            assert!(
                shown.contains(&*path.to_string_lossy()),
                "step {} ({what}): message lacks the path: {shown}",
                self.step
            );
        }
    }

    // ---- the steps ----

    /// `write`: a one-shot replace.
    fn write(&mut self, input: &mut Input<'_>) {
        let slot = pick(input, self.slots);
        let opts = self.decode_options(input);
        let tag = self.next_tag();
        let data = payload(LENS[pick(input, LENS.len())], tag);
        let target = self.predict(slot, &opts, false);
        let begin = self.begin();
        let result = self.sim.write(&target.path, &data, &opts);
        let what = format!("write {} {opts:?}: {result:?}", target.path.display());
        let faulted = self.faulted(&begin);
        self.check_expected(&what, faulted, result.is_ok(), target.refusal);
        self.check_error(&what, &target.path, &result);
        self.check_trace(&what, &begin, &result);
        let out = self.single_outcome(&target, &opts, &data, &result, true, 0);
        self.settle(&what, begin, out);
    }

    /// `open`, then writes and seeks, then commit, discard or drop.
    fn stream(&mut self, input: &mut Input<'_>) {
        let slot = pick(input, self.slots);
        let opts = self.decode_options(input);
        let target = self.predict(slot, &opts, false);
        let begin = self.begin();
        let opened = self.sim.open(&target.path, &opts);
        let mut content: Vec<u8> = Vec::new();
        let mut pos: u64 = 0;
        let mut log = String::new();
        let actions = pick(input, 8);
        let (result, end) = match opened {
            Err(e) => (Err(e), "open"),
            Ok(mut file) => {
                for _ in 0..actions {
                    let a = input.u8();
                    let fired = self.sim.faults_fired();
                    if a % 4 == 0 {
                        let (to, expected) = match a >> 2 & 3 {
                            0 | 3 => {
                                let n = u64::from(input.u16()) % 10_000;
                                (SeekFrom::Start(n), Some(n))
                            }
                            1 => {
                                let d = i64::from(input.u16() as i16) % 1024;
                                (SeekFrom::Current(d), pos.checked_add_signed(d))
                            }
                            _ => {
                                let d = i64::from(input.u16() as i16) % 1024;
                                let len = content.len() as u64;
                                (SeekFrom::End(d), len.checked_add_signed(d))
                            }
                        };
                        let r = file.seek(to);
                        log.push_str(&format!(" seek {to:?} = {r:?};"));
                        match r {
                            Ok(p) => {
                                assert_eq!(Some(p), expected, "step {}: {log}", self.step);
                                pos = p;
                            }
                            Err(_) => assert!(
                                expected.is_none() || self.sim.faults_fired() > fired,
                                "step {}: seek failed with no fault:{log}",
                                self.step
                            ),
                        }
                    } else {
                        let tag = self.next_tag();
                        let chunk = payload(LENS[usize::from(a >> 2) % LENS.len()], tag);
                        let r = file.write_all(&chunk);
                        log.push_str(&format!(" write {} = {r:?};", chunk.len()));
                        match r {
                            // A write that fails changes nothing: the
                            // buffer keeps what it could not write and
                            // tries again later.
                            Ok(()) if !chunk.is_empty() => {
                                let at = pos as usize;
                                let end = at + chunk.len();
                                if content.len() < end {
                                    content.resize(end, 0);
                                }
                                content[at..end].copy_from_slice(&chunk);
                                pos = end as u64;
                            }
                            Ok(()) => {}
                            Err(e) => assert!(
                                self.sim.faults_fired() > fired,
                                "step {}: write failed with no fault: {e}:{log}",
                                self.step
                            ),
                        }
                    }
                }
                match pick(input, 5) {
                    0 => (file.discard(), "discard"),
                    1 => {
                        drop(file);
                        (Ok(()), "drop")
                    }
                    _ => (file.commit(), "commit"),
                }
            }
        };
        let what = format!(
            "stream {} {opts:?}:{log} {end} {result:?}",
            target.path.display()
        );
        let faulted = self.faulted(&begin);
        if !faulted {
            assert_eq!(
                end == "open",
                target.refused_early(),
                "step {} ({what}): {:?}",
                self.step,
                target.refusal
            );
        }
        match end {
            "commit" => self.check_expected(&what, faulted, result.is_ok(), target.refusal),
            "discard" => self.check_expected(&what, faulted, result.is_ok(), None),
            _ => {}
        }
        self.check_error(&what, &target.path, &result);
        self.check_trace(&what, &begin, &result);
        let silent = usize::from(end == "drop" && faulted);
        let out = self.single_outcome(&target, &opts, &content, &result, end == "commit", silent);
        self.settle(&what, begin, out);
    }

    /// `update`: read-modify-write under the directory lock.
    fn update(&mut self, input: &mut Input<'_>) {
        let slot = pick(input, self.slots);
        let opts = self.decode_options(input);
        let fails = pick(input, 8) == 0;
        let tag = self.next_tag();
        let add = payload(LENS[pick(input, LENS.len())], tag);
        let mut target = self.predict(slot, &opts, true);
        let early = target.refused_early();
        if fails && target.refusal.is_none() {
            target.refusal = Some(Refusal {
                why: "the update function fails",
                when: When::Open,
            });
        }
        let expected_arg = match &target.kept {
            Some(Version::File { data, .. }) => Some(data.clone()),
            _ => None,
        };
        let seen: RefCell<Option<Option<Vec<u8>>>> = RefCell::new(None);
        let begin = self.begin();
        let result = Replace::update(self.sim.clone(), &target.path, &opts, |old| {
            *seen.borrow_mut() = Some(old.map(<[u8]>::to_vec));
            if fails {
                return Err(io::Error::other("plan: the update function fails"));
            }
            let mut new = old.unwrap_or_default().to_vec();
            new.extend_from_slice(&add);
            Ok(new)
        });
        let what = format!("update {} {opts:?}: {result:?}", target.path.display());
        let faulted = self.faulted(&begin);
        match seen.into_inner() {
            Some(arg) => assert!(
                arg == expected_arg,
                "step {} ({what}): the function got {:?} bytes, not {:?}",
                self.step,
                arg.map(|a| a.len()),
                expected_arg.as_ref().map(Vec::len)
            ),
            None => assert!(
                faulted || early,
                "step {} ({what}): the function was not called",
                self.step
            ),
        }
        self.check_expected(&what, faulted, result.is_ok(), target.refusal);
        self.check_error(&what, &target.path, &result);
        self.check_trace(&what, &begin, &result);
        let mut data = expected_arg.unwrap_or_default();
        data.extend_from_slice(&add);
        let out = self.single_outcome(&target, &opts, &data, &result, true, 0);
        self.settle(&what, begin, out);
    }

    /// A batch of up to three files, then commit or drop.
    fn batch(&mut self, input: &mut Input<'_>) {
        let n = 1 + pick(input, 3);
        let opts = self.decode_options(input);
        let begin = self.begin();
        let mut entries = Entries::new(self.sim.clone());
        let mut added: Vec<(Target, Vec<u8>)> = Vec::new();
        let mut named = Vec::new();
        let mut log = String::new();
        let mut temps = 0;
        for _ in 0..n {
            let slot = pick(input, self.slots);
            let tag = self.next_tag();
            let data = payload(LENS[pick(input, LENS.len())], tag);
            let target = self.predict(slot, &opts, false);
            // Two entries for one file: the batch has no rule for that.
            let dup = added
                .iter()
                .any(|(t, _)| t.landing.is_some() && t.landing == target.landing);
            if dup {
                continue;
            }
            let fired = self.sim.faults_fired();
            // Its temp may outlive a crash even if the write fails.
            temps += 1;
            let r = entries.write(&opts, &target.path, &data);
            log.push_str(&format!(" write {} = {r:?};", target.path.display()));
            if self.sim.faults_fired() == fired {
                assert_eq!(
                    r.is_ok(),
                    !target.refused_early(),
                    "step {} (batch {opts:?}):{log} {:?}",
                    self.step,
                    target.refusal
                );
            }
            match r {
                Ok(()) => added.push((target, data)),
                Err(e) => {
                    assert_eq!(e.target(), target.path, "step {}:{log}", self.step);
                    named.extend(e.temp_left().map(Path::to_path_buf));
                }
            }
        }
        let commit = pick(input, 6) != 0;
        let result = if commit {
            entries.commit()
        } else {
            drop(entries);
            Ok(())
        };
        let what = format!(
            "batch {opts:?}:{log} {} {result:?}",
            if commit { "commit" } else { "drop" }
        );
        let faulted = self.faulted(&begin);
        if commit {
            let late = added.iter().find_map(|(t, _)| t.refusal);
            self.check_expected(&what, faulted, result.is_ok(), late);
        }
        if let Err(e) = &result {
            assert!(
                added.iter().any(|(t, _)| t.path == e.target()),
                "step {} ({what}): the error names another file",
                self.step
            );
            named.extend(e.temp_left().map(Path::to_path_buf));
        }
        self.check_trace(&what, &begin, &result);
        let mut out = Outcome {
            named,
            // Entries dropped after a failed commit, or with the batch,
            // remove their temps on a best-effort basis.
            silent: if faulted && (result.is_err() || !commit) {
                added.len()
            } else {
                0
            },
            temps,
            ..Outcome::default()
        };
        for (target, data) in &added {
            let published = commit
                && match &result {
                    Ok(()) => true,
                    Err(e) => e.replaced().contains(&target.path),
                };
            out.touches
                .extend(self.touch(target, &opts, data, published));
            out.temps += usize::from(target.backup.is_some());
            if commit && result.is_ok() && opts.durability == Durability::Durable {
                out.durable_dirs.extend(durable_dir(&result, &opts, target));
            }
        }
        self.settle(&what, begin, out);
    }

    /// `sweep` of one directory: removes leftovers, never anything else.
    fn sweep(&mut self, input: &mut Input<'_>) {
        let dir = DIRS[pick(input, DIRS.len())];
        let begin = self.begin();
        let result = crate::sweep::sweep(&self.sim, Path::new(dir)).map(|r| r.removed.len());
        let what = format!("sweep {dir}: {result:?}");
        let faulted = self.faulted(&begin);
        let exists = self.sim.stat(dir).is_ok();
        if !faulted {
            assert_eq!(result.is_ok(), exists, "step {} ({what})", self.step);
        }
        let named: Vec<PathBuf> = match &result {
            Ok(_) => Vec::new(),
            Err(e) => e.temp_left().map(Path::to_path_buf).into_iter().collect(),
        };
        let out = Outcome {
            named,
            ..Outcome::default()
        };
        self.settle(&what, begin, out);
        if result.is_ok() && !faulted {
            // A temp the writer cannot open (created with `mode(0o000)`)
            // cannot be locked, so nobody can tell it is stale: it stays.
            let left: Vec<&PathBuf> = self
                .leftovers
                .iter()
                .filter(|t| t.parent() == Some(Path::new(dir)))
                .filter(|t| {
                    self.sim
                        .stat(t)
                        .is_ok_and(|st| self.readable(st.mode, st.uid, st.gid))
                })
                .collect();
            assert!(
                left.is_empty(),
                "step {} ({what}): left {left:?}",
                self.step
            );
        }
    }

    /// Plans a fault: call number N from now, or the next call of a kind.
    fn fault(&mut self, input: &mut Input<'_>) {
        let b = input.u8();
        let errno = ERRNOS[pick(input, ERRNOS.len())];
        if self.planned - self.sim.faults_fired() >= PENDING_FAULTS_MAX {
            return;
        }
        self.planned += 1;
        if b & 1 == 0 {
            let n = self.sim.lock().trace.len() + usize::from(b >> 1) % 48;
            if verbose() {
                eprintln!("step {}: fault: call #{n} fails with {errno}", self.step);
            }
            self.sim.fail_nth(n, errno);
        } else {
            let kinds: Vec<Call> = Call::ALL.into_iter().filter(|c| c.can_fail()).collect();
            let kind = kinds[usize::from(b >> 1) % kinds.len()];
            if verbose() {
                eprintln!("step {}: fault: next {kind} fails with {errno}", self.step);
            }
            self.sim.fail_first(kind, errno);
        }
    }

    /// A power cut (or kill) inside the last operation: every image of the
    /// chosen point is checked, and the run carries on from one of them.
    fn crash(&mut self, input: &mut Input<'_>) {
        let at = input.u16();
        let model = Model::ALL[pick(input, Model::ALL.len())];
        let seed = u64::from(input.u16());
        let choice = input.u8();
        if self.crashes >= CRASHES_MAX {
            return;
        }
        self.crashes += 1;
        let (mark, before, during) = match self.last.take() {
            Some(last) => (last.mark, last.before, last.during),
            None => (self.sim.effects(), self.possible.clone(), BTreeMap::new()),
        };
        let points = self.sim.crash_points_since(mark);
        let point = &points[usize::from(at) % points.len()];
        let last_point = point.effects == self.sim.effects();
        let budget = Budget {
            exhaustive_max: 1 << 7,
            samples: 16,
            seed,
        };
        let images = self.sim.crash_images_quiet(point.effects, model, &budget);
        assert!(!images.is_empty(), "no image at {point} in {model}");
        let what = format!("crash {point} in {model} (seed {seed})");
        if verbose() {
            eprintln!("step {}: {what}, {} images", self.step, images.len());
        }
        for (i, image) in images.iter().enumerate() {
            for key in &self.keys {
                let now = version(&image.lock().volatile, key);
                let allowed: Vec<Version> = if last_point {
                    self.possible[key].clone()
                } else {
                    let mut v = before[key].clone();
                    v.extend(during.get(key).into_iter().flatten().cloned());
                    v
                };
                assert!(
                    allowed.contains(&now),
                    "step {} ({what}, image {i}): {} is {now}, allowed {}",
                    self.step,
                    key.display(),
                    show(&allowed)
                );
            }
            let temps = self.temps_in(image, &what);
            let new = temps.difference(&self.base_temps).count();
            assert!(
                new <= self.capacity,
                "step {} ({what}, image {i}): {new} temps, from at most {} temp names",
                self.step,
                self.capacity
            );
        }
        self.sim = images[usize::from(choice) % images.len()].clone();
        self.recover();
    }
}

/// The directory a successful `Durable` replace fsynced.
fn durable_dir(result: &Result<(), Error>, opts: &Options, target: &Target) -> Vec<PathBuf> {
    match (&target.landing, result) {
        (Some(landing), Ok(())) if opts.durability == Durability::Durable => {
            vec![landing.parent().expect("absolute").to_path_buf()]
        }
        _ => Vec::new(),
    }
}

/// Runs the plan in `data`; see [`super::plan`].
pub(super) fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut run = Run::setup(&mut input);
    let mut ops = 0;
    while !input.is_empty() && run.step < STEPS_MAX && ops < OPS_MAX {
        run.step += 1;
        match pick(&mut input, 10) {
            0..=2 => run.write(&mut input),
            3 | 4 => run.stream(&mut input),
            5 => run.update(&mut input),
            6 => run.batch(&mut input),
            7 => {
                run.fault(&mut input);
                continue;
            }
            8 => {
                run.crash(&mut input);
                continue;
            }
            _ => run.sweep(&mut input),
        }
        ops += 1;
    }
}

/// The mode of a kept file version (0 for anything else).
fn mode_of(version: &Option<Version>) -> u32 {
    match version {
        Some(Version::File { mode, .. }) => *mode,
        _ => 0,
    }
}

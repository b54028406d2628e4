//! Tier 7: differential test. The same operation sequences, without
//! crashes, run by the real protocol on the real filesystem (a tempdir) and
//! on the simulator, must give the same results, the same errors (step,
//! errno, temp left) and the same visible tree (names, kinds, contents,
//! symlink targets, modes, owners, link counts) after every operation.
//!
//! The simulator mirrors the tempdir's absolute path and runs with the
//! process's real uid, gid, root-ness and umask, so even error messages
//! and absolute symlinks compare equal.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use crate::error::Error;
use crate::options::{Durability, Options};
use crate::sim::check::show_name;
use crate::sim::{SimFs, SimKind};

/// Targets relative to the world's root: plain files, new names, symlinks
/// (to a file, dangling, looping, chained, through a symlinked directory),
/// a directory, a path through a file, a missing parent, bad paths.
const TARGETS: [&str; 14] = [
    "d/a",
    "d/new",
    "d/link",
    "d/dangling",
    "d/loop",
    "d/chain",
    "d/up/c",
    "d/sub",
    "d/file/x",
    "missing/x",
    "d/sub/",
    "d/..",
    "e/c",
    "d/abs",
];

/// One visible entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    File {
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u64,
    },
    Dir {
        mode: u32,
    },
    Symlink(PathBuf),
}

/// What an operation returned, without the parts that legitimately differ.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Io {
        step: Option<crate::error::Step>,
        errno: Option<i32>,
        temp_left: bool,
        text: String,
    },
    Other(String),
}

fn outcome(r: Result<(), Error>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(e @ Error::Io { .. }) => Outcome::Io {
            step: e.step(),
            errno: e.raw_os_error(),
            temp_left: e.temp_left().is_some(),
            // The temp's random part differs; the rest of the text must not.
            text: match e.temp_left().and_then(Path::file_name) {
                Some(temp) => e
                    .to_string()
                    .replace(&*temp.to_string_lossy(), &show_name(temp)),
                None => e.to_string(),
            },
        },
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// The two worlds.
trait World {
    fn root(&self) -> &Path;
    fn mkdir(&self, rel: &str, mode: u32);
    fn put(&self, rel: &str, data: &[u8], mode: u32);
    fn link(&self, rel: &str, target: &str);
    fn write(&self, rel: &str, data: &[u8], opts: &Options) -> Result<(), Error>;
    /// open, write `data`, then commit (`Some(true)`), discard
    /// (`Some(false)`) or drop (`None`).
    fn stream(
        &self,
        rel: &str,
        data: &[u8],
        opts: &Options,
        end: Option<bool>,
    ) -> Result<(), Error>;
    /// open, write `data`, seek back and overwrite, seek past the end and
    /// write (a hole), then commit.
    fn seeking(&self, rel: &str, data: &[u8], opts: &Options) -> Result<(), Error>;
    fn tree(&self) -> BTreeMap<String, Entry>;
}

struct Real {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl World for Real {
    fn root(&self) -> &Path {
        &self.root
    }
    fn mkdir(&self, rel: &str, mode: u32) {
        let p = self.root.join(rel);
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fn put(&self, rel: &str, data: &[u8], mode: u32) {
        let p = self.root.join(rel);
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fn link(&self, rel: &str, target: &str) {
        symlink(target, self.root.join(rel)).unwrap();
    }
    fn write(&self, rel: &str, data: &[u8], opts: &Options) -> Result<(), Error> {
        opts.write(self.root.join(rel), data)
    }
    fn stream(
        &self,
        rel: &str,
        data: &[u8],
        opts: &Options,
        end: Option<bool>,
    ) -> Result<(), Error> {
        let mut file = opts.open(self.root.join(rel))?;
        file.write_all(data).unwrap();
        match end {
            Some(true) => file.commit(),
            Some(false) => file.discard(),
            None => Ok(()),
        }
    }
    fn seeking(&self, rel: &str, data: &[u8], opts: &Options) -> Result<(), Error> {
        let file = opts.open(self.root.join(rel))?;
        seek_writes(file, data, |f| f.commit())
    }
    fn tree(&self) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        walk_real(&self.root, "", &mut out);
        out
    }
}

fn walk_real(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Entry>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = show_name(&entry.file_name());
        let rel = format!("{prefix}{name}");
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let mode = meta.mode() & 0o7777;
        let e = if meta.file_type().is_symlink() {
            Entry::Symlink(fs::read_link(entry.path()).unwrap())
        } else if meta.is_dir() {
            walk_real(&entry.path(), &format!("{rel}/"), out);
            Entry::Dir { mode }
        } else {
            Entry::File {
                data: fs::read(entry.path()).unwrap(),
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
                nlink: meta.nlink(),
            }
        };
        out.insert(rel, e);
    }
}

struct Sim {
    sim: SimFs,
    root: PathBuf,
}

impl World for Sim {
    fn root(&self) -> &Path {
        &self.root
    }
    fn mkdir(&self, rel: &str, mode: u32) {
        self.sim.mkdir(self.root.join(rel), mode).unwrap();
    }
    fn put(&self, rel: &str, data: &[u8], mode: u32) {
        let (uid, gid) = ids();
        self.sim
            .put_file(self.root.join(rel), data, mode, uid, gid)
            .unwrap();
    }
    fn link(&self, rel: &str, target: &str) {
        self.sim.symlink(self.root.join(rel), target).unwrap();
    }
    fn write(&self, rel: &str, data: &[u8], opts: &Options) -> Result<(), Error> {
        self.sim.write(self.root.join(rel), data, opts)
    }
    fn stream(
        &self,
        rel: &str,
        data: &[u8],
        opts: &Options,
        end: Option<bool>,
    ) -> Result<(), Error> {
        let mut file = self.sim.open(self.root.join(rel), opts)?;
        file.write_all(data).unwrap();
        match end {
            Some(true) => file.commit(),
            Some(false) => file.discard(),
            None => Ok(()),
        }
    }
    fn seeking(&self, rel: &str, data: &[u8], opts: &Options) -> Result<(), Error> {
        let file = self.sim.open(self.root.join(rel), opts)?;
        seek_writes(file, data, |f| f.commit())
    }
    fn tree(&self) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        self.walk(&self.root, "", &mut out);
        out
    }
}

impl Sim {
    fn walk(&self, dir: &Path, prefix: &str, out: &mut BTreeMap<String, Entry>) {
        for name in self.sim.list_dir(dir).unwrap() {
            let path = dir.join(&name);
            let rel = format!("{prefix}{}", show_name(&name));
            let st = self.sim.stat(&path).unwrap();
            let e = match st.kind {
                SimKind::Symlink => Entry::Symlink(self.sim.read_link(&path).unwrap()),
                SimKind::Dir => {
                    self.walk(&path, &format!("{rel}/"), out);
                    Entry::Dir { mode: st.mode }
                }
                SimKind::File => Entry::File {
                    data: self.sim.read_file(&path).unwrap(),
                    mode: st.mode,
                    uid: st.uid,
                    gid: st.gid,
                    nlink: st.nlink,
                },
            };
            out.insert(rel, e);
        }
    }
}

/// The same seeks and writes on either kind of file.
fn seek_writes<F: Write + Seek>(
    mut file: F,
    data: &[u8],
    commit: impl FnOnce(F) -> Result<(), Error>,
) -> Result<(), Error> {
    file.write_all(data).unwrap();
    file.seek(SeekFrom::Start(1)).unwrap();
    file.write_all(b"XY").unwrap();
    file.seek(SeekFrom::End(3)).unwrap();
    file.write_all(b"tail").unwrap();
    file.seek(SeekFrom::Current(-2)).unwrap();
    file.write_all(b"!").unwrap();
    commit(file)
}

fn ids() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// The process umask, read without changing it: the mode a new file gets.
fn umask(dir: &Path) -> u32 {
    let p = dir.join("umask-probe");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o777)
        .open(&p)
        .unwrap();
    let mode = fs::metadata(&p).unwrap().mode() & 0o777;
    fs::remove_file(&p).unwrap();
    0o777 & !mode
}

fn populate(w: &dyn World) {
    w.mkdir("d", 0o755);
    w.mkdir("d/sub", 0o700);
    w.mkdir("e", 0o750);
    w.put("d/a", b"file a", 0o640);
    w.put("d/file", b"not a directory", 0o600);
    w.put("e/c", b"file c", 0o4755);
    w.link("d/link", "a");
    w.link("d/dangling", "gone");
    w.link("d/loop", "loop");
    w.link("d/chain", "link");
    w.link("d/up", "../e");
    let abs = w.root().join("e/c");
    w.link("d/abs", abs.to_str().unwrap());
}

fn worlds() -> (Real, Sim) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let real = Real { _dir: dir, root };
    let sim = SimFs::new(5);
    let (uid, gid) = ids();
    sim.set_identity(uid, gid, uid == 0);
    sim.set_umask(umask(&real.root));
    sim.mkdir_all(&real.root).unwrap();
    let sim = Sim {
        sim,
        root: real.root.clone(),
    };
    populate(&real);
    populate(&sim);
    (real, sim)
}

#[derive(Clone, Debug)]
struct Op {
    target: usize,
    len: usize,
    create_new: bool,
    follow: bool,
    durable: bool,
    mode: Option<u32>,
    /// 0: write; 1: stream + commit; 2: stream + discard; 3: stream + drop;
    /// 4: seeks and overwrites, then commit.
    how: u8,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..TARGETS.len(),
        prop_oneof![Just(0usize), Just(1), Just(600), Just(9000)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop_oneof![Just(0o600u32), Just(0o644), Just(0o4755)]),
        0..5u8,
    )
        .prop_map(|(target, len, create_new, follow, durable, mode, how)| Op {
            target,
            len,
            create_new,
            follow,
            durable,
            mode,
            how,
        })
}

fn apply(w: &dyn World, op: &Op, tag: u8) -> Outcome {
    let mut opts = Options::new();
    opts.create_new(op.create_new)
        .follow_symlinks(op.follow)
        .durability(if op.durable {
            Durability::Durable
        } else {
            Durability::Consistent
        });
    if let Some(mode) = op.mode {
        opts.mode(mode);
    }
    let data = crate::sim::check::payload(op.len, tag);
    let rel = TARGETS[op.target];
    outcome(match op.how {
        0 => w.write(rel, &data, &opts),
        1 => w.stream(rel, &data, &opts, Some(true)),
        2 => w.stream(rel, &data, &opts, Some(false)),
        3 => w.stream(rel, &data, &opts, None),
        _ => w.seeking(rel, &data, &opts),
    })
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let (real, sim) = worlds();
    prop_assert_eq!(real.tree(), sim.tree(), "after setup");
    for (i, op) in ops.iter().enumerate() {
        let a = apply(&real, op, i as u8);
        let b = apply(&sim, op, i as u8);
        prop_assert_eq!(&a, &b, "op {} {:?}", i, op);
        prop_assert_eq!(
            real.tree(),
            sim.tree(),
            "after op {} {:?} -> {:?}",
            i,
            op,
            a
        );
    }
    Ok(())
}

#[test]
fn every_target_once_with_defaults() {
    // A fixed pass over every target, so each error path is compared at
    // least once whatever proptest draws.
    let ops: Vec<Op> = (0..TARGETS.len())
        .flat_map(|target| {
            [true, false].map(|follow| Op {
                target,
                len: 3,
                create_new: false,
                follow,
                durable: true,
                mode: None,
                how: 0,
            })
        })
        .collect();
    run(&ops).unwrap();
}

fn config() -> Config {
    Config {
        cases: 48,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0xd1ff),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn real_and_simulated_filesystems_agree(ops in prop::collection::vec(op(), 1..8)) {
        run(&ops)?;
    }
}

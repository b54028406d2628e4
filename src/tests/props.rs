//! Tier 4: property tests of interrupted sequences.
//!
//! Random sequences of replaces, creates (`create_new`), discards, drops,
//! `update`s, batch commits and dropped batches over three targets in two
//! directories, with payloads of 0, 1, 512 and 3000 bytes, some of them
//! Durable and some Consistent, some streamed, some with an unnamed
//! (`O_TMPFILE`) temp (on a filesystem with or without `O_TMPFILE`), some
//! keeping a backup (`name~`). At random steps the power fails at a random
//! crash point of that step, in a random model; every image there is
//! checked, one is picked, and the sequence carries on from it, temps left
//! over from earlier crashes included.
//!
//! The oracle keeps, per name (the targets and their backups), the version
//! the process sees and the set of versions a crash may show: a Durable
//! `Ok` (which fsyncs the directories it changed) narrows that set to the
//! current version for every name in those directories; a Consistent `Ok`
//! adds the new version to it.
//!
//! Deterministic: proptest runs from a fixed seed and persists nothing; the
//! failing sequence it prints (with its crash seeds) replays the failure.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use crate::error::Error;
use crate::options::{Durability, Options};
use crate::sim::check::{Version, names, payload, version};
use crate::sim::{Budget, Model, SimFs};
use crate::temp_name::is_temp_name;

const TARGETS: [&str; 3] = ["/d/a", "/d/b", "/e/c"];
/// Every name the oracle follows: the targets, then their backups.
const NAMES: [&str; 6] = ["/d/a", "/d/b", "/e/c", "/d/a~", "/d/b~", "/e/c~"];
const DIRS: [&str; 2] = ["/d", "/e"];
const LENS: [usize; 4] = [0, 1, 512, 3000];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Replace,
    Create,
    Discard,
    Drop,
    Update,
    /// A batch of the targets in `Step::batch`, committed.
    Batch,
    /// The same, dropped before the commit.
    BatchDrop,
}

#[derive(Clone, Debug)]
struct Crash {
    model: usize,
    point: usize,
    image: usize,
    /// Seed for sampling images when a point has too many.
    seed: u64,
}

#[derive(Clone, Debug)]
struct Step {
    kind: Kind,
    target: usize,
    /// For batches: which targets (a bit per target; never empty).
    batch: u8,
    len: usize,
    durable: bool,
    streaming: bool,
    /// `Options::unnamed_temp`.
    unnamed: bool,
    /// Whether the filesystem has `O_TMPFILE`.
    tmpfile: bool,
    /// `Options::backup`.
    backup: bool,
    crash: Option<Crash>,
}

fn step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        4 => Just(Kind::Replace),
        2 => Just(Kind::Create),
        1 => Just(Kind::Discard),
        1 => Just(Kind::Drop),
        2 => Just(Kind::Update),
        3 => Just(Kind::Batch),
        1 => Just(Kind::BatchDrop),
    ];
    let crash = (
        0..Model::ALL.len(),
        any::<usize>(),
        any::<usize>(),
        any::<u64>(),
    )
        .prop_map(|(model, point, image, seed)| Crash {
            model,
            point,
            image,
            seed,
        });
    let flags = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.3),
    );
    (
        kind,
        0..TARGETS.len(),
        1..8u8,
        0..LENS.len(),
        flags,
        prop::option::weighted(0.3, crash),
    )
        .prop_map(
            |(kind, target, batch, len, (durable, streaming, unnamed, tmpfile, backup), crash)| {
                Step {
                    kind,
                    target,
                    batch,
                    len,
                    durable,
                    streaming,
                    unnamed,
                    tmpfile,
                    backup,
                    crash,
                }
            },
        )
}

impl Step {
    /// The targets this step writes.
    fn targets(&self) -> Vec<usize> {
        match self.kind {
            Kind::Batch | Kind::BatchDrop => (0..TARGETS.len())
                .filter(|t| self.batch >> t & 1 == 1)
                .collect(),
            _ => vec![self.target],
        }
    }

    fn options(&self) -> Options {
        let mut opts = Options::new();
        opts.durability(if self.durable {
            Durability::Durable
        } else {
            Durability::Consistent
        })
        .create_new(self.kind == Kind::Create)
        .unnamed_temp(self.unnamed)
        .backup(self.backup);
        opts
    }
}

/// What the test knows about each name of [`NAMES`].
#[derive(Clone, Debug)]
struct Oracle {
    /// The version the process sees.
    current: Vec<Version>,
    /// The versions a crash may leave.
    possible: Vec<Vec<Version>>,
    /// Temps in the volatile view left by earlier crashes.
    leftovers: BTreeSet<OsString>,
}

fn dir_of(name: usize) -> &'static str {
    &NAMES[name][..2]
}

fn backup_of(target: usize) -> usize {
    target + TARGETS.len()
}

fn setup() -> SimFs {
    let sim = SimFs::new(11);
    sim.set_identity(0, 0, true);
    sim.mkdir("/d", 0o755).unwrap();
    sim.mkdir("/e", 0o755).unwrap();
    sim.put_file("/d/a", b"initial a", 0o640, 1234, 5678)
        .unwrap();
    sim.put_file("/e/c", b"initial c", 0o600, 0, 0).unwrap();
    sim
}

fn temps_in(fs_names: impl Fn(&str) -> Vec<OsString>) -> Result<BTreeSet<OsString>, TestCaseError> {
    let mut out = BTreeSet::new();
    for dir in DIRS {
        for name in fs_names(dir) {
            let known = NAMES.iter().any(|t| t[..2] == *dir && t[3..] == *name);
            if !known {
                prop_assert!(is_temp_name(&name), "stray name {dir}/{name:?}");
                out.insert(name);
            }
        }
    }
    Ok(out)
}

/// The new content of `target` in step `i`.
fn data_for(step: &Step, i: usize, target: usize) -> Vec<u8> {
    payload(LENS[step.len], (i * 3 + target) as u8 + 2)
}

/// Runs one step's library call. `current` is what the oracle expects an
/// `update` to read.
fn act(sim: &SimFs, step: &Step, i: usize, current: &[Version]) -> Result<(), Error> {
    sim.set_tmpfile(step.tmpfile);
    let opts = step.options();
    let path = TARGETS[step.target];
    let data = data_for(step, i, step.target);
    match step.kind {
        Kind::Batch | Kind::BatchDrop => {
            let mut batch = sim.batch(&opts);
            for t in step.targets() {
                batch.write(TARGETS[t], &data_for(step, i, t))?;
            }
            if step.kind == Kind::Batch {
                return batch.commit();
            }
            drop(batch);
            return Ok(());
        }
        Kind::Update => {
            let want = match &current[step.target] {
                Version::File { data, .. } => Some(data.clone()),
                _ => None,
            };
            return sim.update(path, &opts, |now| {
                if now.map(<[u8]>::to_vec) != want {
                    return Err(std::io::Error::other("update read something else"));
                }
                Ok(data)
            });
        }
        Kind::Replace | Kind::Create if !step.streaming => {
            return sim.write(path, &data, &opts);
        }
        _ => {}
    }
    let mut file = sim.open(path, &opts)?;
    file.write_all(&data)
        .expect("buffered writes do not fail without faults");
    match step.kind {
        Kind::Discard => file.discard(),
        Kind::Drop => {
            drop(file);
            Ok(())
        }
        _ => file.commit(),
    }
}

fn new_version(old: &Version, data: &[u8]) -> Version {
    let (mode, uid, gid) = match old {
        Version::File { mode, uid, gid, .. } => (*mode, *uid, *gid),
        _ => (0o644, 0, 0),
    };
    Version::File {
        data: data.to_vec(),
        mode,
        uid,
        gid,
    }
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut sim = setup();
    let volatile_now = |sim: &SimFs, t: &str| version(&sim.lock().volatile, Path::new(t));
    let initial: Vec<Version> = NAMES.iter().map(|t| volatile_now(&sim, t)).collect();
    let mut oracle = Oracle {
        possible: initial.iter().map(|v| vec![v.clone()]).collect(),
        current: initial,
        leftovers: BTreeSet::new(),
    };
    for (i, step) in steps.iter().enumerate() {
        let mark = sim.effects();
        let refused = step.kind == Kind::Create && oracle.current[step.target] != Version::Absent;
        let publishes = matches!(
            step.kind,
            Kind::Replace | Kind::Create | Kind::Update | Kind::Batch
        ) && !refused;
        // The names this step changes, and their new versions.
        let mut changes: Vec<(usize, Version)> = Vec::new();
        if publishes {
            for t in step.targets() {
                let old = &oracle.current[t];
                if step.backup && matches!(old, Version::File { .. }) {
                    changes.push((backup_of(t), old.clone()));
                }
                changes.push((t, new_version(old, &data_for(step, i, t))));
            }
        }
        let before = oracle.possible.clone();

        let result = act(&sim, step, i, &oracle.current);
        prop_assert_eq!(result.is_ok(), !refused, "step {}: {:?}", i, result);
        for (u, new) in &changes {
            oracle.current[*u] = new.clone();
        }
        for (u, new) in &changes {
            if step.durable {
                // The directory fsync made every earlier rename in it durable.
                for w in 0..NAMES.len() {
                    if dir_of(w) == dir_of(*u) {
                        oracle.possible[w] = vec![oracle.current[w].clone()];
                    }
                }
            } else if !oracle.possible[*u].contains(new) {
                oracle.possible[*u].push(new.clone());
            }
        }
        // The volatile view: exactly the current versions, no new temps.
        for (u, name) in NAMES.iter().enumerate() {
            prop_assert_eq!(
                &volatile_now(&sim, name),
                &oracle.current[u],
                "step {} {}",
                i,
                name
            );
        }
        let temps = temps_in(|d| sim.list_dir(d).unwrap())?;
        prop_assert!(
            temps.is_subset(&oracle.leftovers),
            "step {}: temps {:?}",
            i,
            temps
        );

        let Some(crash) = &step.crash else {
            continue;
        };
        let points = sim.crash_points_since(mark);
        let point = &points[crash.point % points.len()];
        let last = point.effects == sim.effects();
        let model = Model::ALL[crash.model];
        let budget = Budget {
            exhaustive_max: 1 << 12,
            samples: 64,
            seed: crash.seed,
        };
        let images = sim.crash_images_at(point.effects, model, &budget);
        prop_assert!(!images.is_empty());
        for image in &images {
            for (u, name) in NAMES.iter().enumerate() {
                let mut allowed = if last {
                    oracle.possible[u].clone()
                } else {
                    before[u].clone()
                };
                allowed.extend(changes.iter().filter(|c| c.0 == u).map(|c| c.1.clone()));
                let seen = volatile_now(image, name);
                prop_assert!(
                    allowed.contains(&seen),
                    "step {} crash {} in {}: {} is {} (allowed: {:?})",
                    i,
                    point,
                    model,
                    name,
                    seen,
                    allowed.iter().map(ToString::to_string).collect::<Vec<_>>()
                );
            }
            temps_in(|d| names(&image.lock().volatile, Path::new(d)))?;
        }
        // Carry on from one of the images: it is now the durable state.
        sim = images[crash.image % images.len()].clone();
        for (u, name) in NAMES.iter().enumerate() {
            let v = volatile_now(&sim, name);
            oracle.current[u] = v.clone();
            oracle.possible[u] = vec![v];
        }
        oracle.leftovers = temps_in(|d| sim.list_dir(d).unwrap())?;
    }
    Ok(())
}

fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0xc0ffee),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn interrupted_sequences_keep_every_invariant(steps in prop::collection::vec(step(), 1..14)) {
        run(&steps)?;
    }
}

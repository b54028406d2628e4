//! Tier 4: property tests of interrupted sequences.
//!
//! Random sequences of replaces, creates (`create_new`), discards and drops
//! over three targets in two directories, with payloads of 0, 1, 512 and
//! 3000 bytes, some of them Durable and some Consistent, some streamed. At
//! random steps the power fails at a random crash point of that step, in a
//! random model; every image there is checked, one is picked, and the
//! sequence carries on from it, temps left over from earlier crashes
//! included.
//!
//! The oracle keeps, per target, the version the process sees and the set
//! of versions a crash may show: a Durable `Ok` (which fsyncs the directory)
//! narrows that set to the current version for every target of the
//! directory; a Consistent `Ok` adds the new version to it.
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
const DIRS: [&str; 2] = ["/d", "/e"];
const LENS: [usize; 4] = [0, 1, 512, 3000];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Replace,
    Create,
    Discard,
    Drop,
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
    len: usize,
    durable: bool,
    streaming: bool,
    crash: Option<Crash>,
}

fn step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        4 => Just(Kind::Replace),
        2 => Just(Kind::Create),
        1 => Just(Kind::Discard),
        1 => Just(Kind::Drop),
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
    (
        kind,
        0..TARGETS.len(),
        0..LENS.len(),
        any::<bool>(),
        any::<bool>(),
        prop::option::weighted(0.3, crash),
    )
        .prop_map(|(kind, target, len, durable, streaming, crash)| Step {
            kind,
            target,
            len,
            durable,
            streaming,
            crash,
        })
}

/// What the test knows about each target.
#[derive(Clone, Debug)]
struct Oracle {
    /// The version the process sees.
    current: Vec<Version>,
    /// The versions a crash may leave.
    possible: Vec<Vec<Version>>,
    /// Temps in the volatile view left by earlier crashes.
    leftovers: BTreeSet<OsString>,
}

fn dir_of(target: usize) -> &'static str {
    &TARGETS[target][..2]
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
            let is_target = TARGETS.iter().any(|t| t[..2] == *dir && t[3..] == *name);
            if !is_target {
                prop_assert!(is_temp_name(&name), "stray name {dir}/{name:?}");
                out.insert(name);
            }
        }
    }
    Ok(out)
}

/// Runs one step's library call.
fn act(sim: &SimFs, step: &Step, data: &[u8]) -> Result<(), Error> {
    let mut opts = Options::new();
    opts.durability(if step.durable {
        Durability::Durable
    } else {
        Durability::Consistent
    })
    .create_new(step.kind == Kind::Create);
    let path = TARGETS[step.target];
    if !step.streaming && matches!(step.kind, Kind::Replace | Kind::Create) {
        return sim.write(path, data, &opts);
    }
    let mut file = sim.open(path, &opts)?;
    file.write_all(data)
        .expect("buffered writes do not fail without faults");
    match step.kind {
        Kind::Replace | Kind::Create => file.commit(),
        Kind::Discard => file.discard(),
        Kind::Drop => {
            drop(file);
            Ok(())
        }
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
    let initial: Vec<Version> = TARGETS.iter().map(|t| volatile_now(&sim, t)).collect();
    let mut oracle = Oracle {
        possible: initial.iter().map(|v| vec![v.clone()]).collect(),
        current: initial,
        leftovers: BTreeSet::new(),
    };
    for (i, step) in steps.iter().enumerate() {
        let mark = sim.effects();
        let t = step.target;
        let data = payload(LENS[step.len], i as u8 + 2);
        let old = oracle.current[t].clone();
        let new = new_version(&old, &data);
        let publishes = matches!(step.kind, Kind::Replace | Kind::Create);
        let refused = step.kind == Kind::Create && old != Version::Absent;
        let before = oracle.possible.clone();

        let result = act(&sim, step, &data);
        prop_assert_eq!(result.is_ok(), !refused, "step {}: {:?}", i, result);
        if publishes && !refused {
            oracle.current[t] = new.clone();
            if step.durable {
                // The directory fsync made every earlier rename in it durable.
                for u in 0..TARGETS.len() {
                    if dir_of(u) == dir_of(t) {
                        oracle.possible[u] = vec![oracle.current[u].clone()];
                    }
                }
            } else if !oracle.possible[t].contains(&new) {
                oracle.possible[t].push(new.clone());
            }
        }
        // The volatile view: exactly the current versions, no new temps.
        for (u, target) in TARGETS.iter().enumerate() {
            prop_assert_eq!(
                &volatile_now(&sim, target),
                &oracle.current[u],
                "step {} {}",
                i,
                target
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
            for (u, target) in TARGETS.iter().enumerate() {
                let mut allowed = if last {
                    oracle.possible[u].clone()
                } else {
                    before[u].clone()
                };
                if u == t && publishes && !refused {
                    allowed.push(new.clone());
                }
                let seen = volatile_now(image, target);
                prop_assert!(
                    allowed.contains(&seen),
                    "step {} crash {} in {}: {} is {} (allowed: {:?})",
                    i,
                    point,
                    model,
                    target,
                    seen,
                    allowed.iter().map(ToString::to_string).collect::<Vec<_>>()
                );
            }
            temps_in(|d| names(&image.lock().volatile, Path::new(d)))?;
        }
        // Carry on from one of the images: it is now the durable state.
        sim = images[crash.image % images.len()].clone();
        for (u, target) in TARGETS.iter().enumerate() {
            let v = volatile_now(&sim, target);
            oracle.current[u] = v.clone();
            oracle.possible[u] = vec![v];
        }
        oracle.leftovers = temps_in(|d| sim.list_dir(d).unwrap())?;
    }
    Ok(())
}

fn config() -> Config {
    Config {
        cases: 256,
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

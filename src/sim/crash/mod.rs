//! Crash points and crash images.
//!
//! A run of the protocol leaves a base state (durable before the run) and a
//! log of effects in program order. A *crash point* is a prefix of that log:
//! after any call, or inside one when the call made several effects (a
//! create is an inode and a name; a write is up to three sector pieces and a
//! size). A *crash image* is one state the disk may hold after a power cut
//! at that point; each [`Model`] says which images are possible:
//!
//! - [`Model::Conservative`] ([`conservative`]): any POSIX filesystem.
//! - [`Model::Ext4Ordered`] ([`ext4`]): ext4 `data=ordered` with delayed
//!   allocation.
//! - [`Model::ProcessCrash`] ([`process`]): `kill -9`, no power cut.
//!
//! Every image has been through the recovery step ([`Fs::fsck`]).
//! Enumeration is exhaustive while a point has at most
//! [`Budget::exhaustive_max`] images; beyond that it samples
//! [`Budget::samples`] of them with a generator seeded from
//! [`Budget::seed`] and the point, prints that seed to stderr, and so a run
//! is replayable from the seed.

pub(crate) mod conservative;
pub(crate) mod ext4;
pub(crate) mod process;

use std::fmt;

use super::fs::Fs;
use super::kernel::{Entry, splitmix};
use super::trace::TraceEntry;

/// What a crash may keep and lose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Model {
    /// Any POSIX filesystem: any subset of the unsynced effects survives.
    Conservative,
    /// ext4 `data=ordered`: metadata survives as a program-order prefix.
    Ext4Ordered {
        /// ext4's `auto_da_alloc` (on by default): a rename over an
        /// existing file flushes the source's data with the rename.
        auto_da_alloc: bool,
    },
    /// `kill -9`: the page cache survives; only the unfinished call is cut.
    ProcessCrash,
}

impl Model {
    /// Every model, with ext4 in both `auto_da_alloc` settings.
    pub const ALL: [Model; 4] = [
        Model::Conservative,
        Model::Ext4Ordered {
            auto_da_alloc: true,
        },
        Model::Ext4Ordered {
            auto_da_alloc: false,
        },
        Model::ProcessCrash,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Model::Conservative => "conservative",
            Model::Ext4Ordered {
                auto_da_alloc: true,
            } => "ext4",
            Model::Ext4Ordered {
                auto_da_alloc: false,
            } => "ext4-noautoda",
            Model::ProcessCrash => "kill-9",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bounds on how many images one crash point yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Enumerate every image while a point has at most this many.
    pub exhaustive_max: u64,
    /// Otherwise draw this many at random (plus the two extremes).
    pub samples: u32,
    /// Seed for the sampling; printed by callers so a run can be replayed.
    pub seed: u64,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            exhaustive_max: 1 << 12,
            samples: 256,
            seed: 0x5eed,
        }
    }
}

/// A moment the power may fail: after `effects` logged effects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashPoint {
    /// How many effects of the log happened before the crash.
    pub effects: usize,
    /// `start`, `after #7 rename_at`, or `inside #4 write_at (2/4 effects)`.
    pub label: String,
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// Whether log position `p` falls between two calls (not inside one).
pub(crate) fn is_boundary(log: &[Entry], p: usize) -> bool {
    p == 0 || p == log.len() || log[p - 1].call != log[p].call
}

/// Names the crash point after `p` effects.
pub(crate) fn label(log: &[Entry], trace: &[TraceEntry], p: usize) -> String {
    if p == 0 {
        return "start".to_string();
    }
    let call = log[p - 1].call;
    let name = trace.get(call).map_or("?", |t| t.call.name());
    if is_boundary(log, p) {
        return format!("after #{call} {name}");
    }
    let first = log[..p]
        .iter()
        .rposition(|e| e.call != call)
        .map_or(0, |i| i + 1);
    let total = log[first..].iter().take_while(|e| e.call == call).count();
    format!("inside #{call} {name} ({}/{total} effects)", p - first)
}

/// Counts from one exploration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Crash points visited.
    pub points: u64,
    /// Crash images produced (and checked, when the visitor checks).
    pub images: u64,
    /// Points whose images were sampled rather than enumerated.
    pub sampled_points: u64,
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: Stats) {
        self.points += other.points;
        self.images += other.images;
        self.sampled_points += other.sampled_points;
    }
}

/// A model's view of the log, advanced one effect at a time.
pub(crate) trait Walker {
    /// Takes effect `i` of the log into account.
    fn step(&mut self, log: &[Entry], i: usize);
    /// Produces the images at the current point (after `p` effects), until
    /// `visit` returns false. Returns (images, sampled).
    fn images(
        &self,
        log: &[Entry],
        p: usize,
        rng: &mut Rng,
        budget: &Budget,
        visit: &mut dyn FnMut(&Fs) -> bool,
    ) -> (u64, bool);
}

/// The seeded generator used for sampling.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        splitmix(&mut self.0)
    }
    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn walker(model: Model, base: &Fs) -> Box<dyn Walker> {
    match model {
        Model::Conservative => Box::new(conservative::Conservative::new(base)),
        Model::Ext4Ordered { auto_da_alloc } => Box::new(ext4::Ext4::new(base, auto_da_alloc)),
        Model::ProcessCrash => Box::new(process::Process::new(base)),
    }
}

/// Visits every crash point with at least `from` effects, and every image
/// the model allows there, until `visit` returns false.
pub(crate) fn explore(
    model: Model,
    base: &Fs,
    log: &[Entry],
    trace: &[TraceEntry],
    from: usize,
    budget: &Budget,
    visit: &mut dyn FnMut(&CrashPoint, &Fs) -> bool,
) -> Stats {
    let mut walker = walker(model, base);
    let mut stats = Stats::default();
    let mut keep_going = true;
    for p in 0..=log.len() {
        if p > 0 {
            walker.step(log, p - 1);
        }
        if p < from || !keep_going {
            continue;
        }
        let point = CrashPoint {
            effects: p,
            label: label(log, trace, p),
        };
        // Each point samples from its own stream, so points are independent
        // of each other and of how many images earlier points had.
        let mut rng = Rng::new(budget.seed ^ (p as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let (images, sampled) = walker.images(log, p, &mut rng, budget, &mut |fs: &Fs| {
            keep_going = visit(&point, fs);
            keep_going
        });
        if sampled {
            // The seed is all it takes to see these same images again.
            eprintln!(
                "crashsafe sim: sampled {images} crash images at {point} in {model} \
                 (Budget.seed {:#x})",
                budget.seed
            );
        }
        stats.points += 1;
        stats.images += images;
        stats.sampled_points += u64::from(sampled);
    }
    stats
}

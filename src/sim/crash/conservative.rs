//! The conservative model: what *any* POSIX filesystem may do.
//!
//! POSIX promises almost nothing about a power cut, so this model assumes
//! the least (REFERENCE.md §2.2):
//!
//! - A successful `fsync(file)` makes that inode's creation, data, size and
//!   metadata durable, but **not** any name that points to it.
//! - A successful `fsync(dir)` makes every earlier name change in that
//!   directory durable: creates, links, unlinks, and renames from or into it,
//!   and the directory's own inode (its creation, for a new one).
//! - A failed `fsync(file)` drops the file's pending data and size for good.
//! - Everything else may or may not survive, **in any combination**: any
//!   subset of the pending effects, applied in program order. No ordering
//!   holds between unsynced effects, even within one file.
//! - A rename is one effect: all or nothing.
//! - A write is torn at sector granularity: each piece (first sector,
//!   middle, last sector) survives or not on its own, and a size that
//!   survives without its data reads as zeros.
//! - A name may survive without its inode: the file comes back empty, with
//!   mode 0 and owned by root (what an fsck leaves of an uninitialised inode).
//!
//! So a rename that reached the disk before the file's data gives an empty,
//! short or zero-filled target; the protocol's `fsync(temp)` before the
//! rename is what rules that out here.

use super::{Budget, Rng, Walker};
use crate::sim::fs::{Fs, Ino, Op, apply};
use crate::sim::kernel::Entry;

/// Durable state plus the pending effects (log indices) at one point.
#[derive(Debug)]
pub(crate) struct Conservative {
    durable: Fs,
    pending: Vec<usize>,
}

/// The inode whose content or metadata `op` changes.
fn inode_effect(op: &Op) -> Option<Ino> {
    match op {
        Op::Init { ino, .. }
        | Op::Data { ino, .. }
        | Op::Size { ino, .. }
        | Op::Meta { ino, .. } => Some(*ino),
        _ => None,
    }
}

/// Whether `op` is a name change that `fsync(dir)` makes durable.
fn names_in(op: &Op, d: Ino) -> bool {
    match op {
        Op::Link { dir, .. } | Op::Unlink { dir, .. } => *dir == d,
        Op::Rename {
            from_dir, to_dir, ..
        } => *from_dir == d || *to_dir == d,
        _ => false,
    }
}

impl Conservative {
    pub(crate) fn new(base: &Fs) -> Conservative {
        Conservative {
            durable: base.clone(),
            pending: Vec::new(),
        }
    }

    /// Moves the pending effects selected by `synced` into the durable state.
    fn persist(&mut self, log: &[Entry], synced: impl Fn(&Op) -> bool) {
        let durable = &mut self.durable;
        self.pending.retain(|&j| {
            if synced(&log[j].op) {
                apply(durable, &log[j].op);
                false
            } else {
                true
            }
        });
    }

    fn build(&self, log: &[Entry], keep: impl Fn(usize) -> bool) -> Fs {
        let mut image = self.durable.clone();
        for (j, &idx) in self.pending.iter().enumerate() {
            if keep(j) {
                apply(&mut image, &log[idx].op);
            }
        }
        image.fsck();
        image
    }
}

impl Walker for Conservative {
    fn step(&mut self, log: &[Entry], i: usize) {
        match &log[i].op {
            Op::SyncFile { ino } => self.persist(log, |op| inode_effect(op) == Some(*ino)),
            // issue 12: fsync of a directory makes its own inode durable
            // too (its creation, for a new one), as fsync does for a file.
            Op::SyncDir { dir } => self.persist(log, |op| {
                names_in(op, *dir) || inode_effect(op) == Some(*dir)
            }),
            Op::SyncAll => self.persist(log, |_| true),
            Op::SyncFs { inos } => self.persist(log, |op| {
                inode_effect(op).is_some_and(|i| inos.contains(&i))
                    || inos.iter().any(|&d| names_in(op, d))
            }),
            Op::SyncLost { ino } => self.pending.retain(|&j| {
                !matches!(&log[j].op, Op::Data { ino: i, .. } | Op::Size { ino: i, .. } if i == ino)
            }),
            _ => self.pending.push(i),
        }
    }

    fn images(
        &self,
        log: &[Entry],
        _p: usize,
        rng: &mut Rng,
        budget: &Budget,
        visit: &mut dyn FnMut(&Fs) -> bool,
    ) -> (u64, bool) {
        let n = self.pending.len();
        let exhaustive = n < 63 && (1u64 << n) <= budget.exhaustive_max;
        if exhaustive {
            for mask in 0..1u64 << n {
                if !visit(&self.build(log, |j| mask >> j & 1 == 1)) {
                    return (mask + 1, false);
                }
            }
            return (1 << n, false);
        }
        // Nothing and everything, then random subsets.
        let mut count = 0;
        for all in [false, true] {
            count += 1;
            if !visit(&self.build(log, |_| all)) {
                return (count, true);
            }
        }
        for _ in 0..budget.samples {
            let bits: Vec<bool> = (0..n).map(|_| rng.next() & 1 == 1).collect();
            count += 1;
            if !visit(&self.build(log, |j| bits[j])) {
                break;
            }
        }
        (count, true)
    }
}

//! The process-crash model: `kill -9`, not a power cut.
//!
//! The kernel outlives the process, so everything the process did is kept,
//! synced or not: the image is the volatile view at the crash point. Only
//! unfinished work is cut: a crash inside a call keeps that call's effects
//! so far (for example, a created inode whose name is not linked yet).
//! Files that were open but had no name are gone, as after any close.
//!
//! This model cannot see a missing fsync; it checks leftovers and the
//! ordering of name changes (unlink-then-rename shows up here too).

use super::{Budget, Rng, Walker};
use crate::sim::fs::{Fs, apply};
use crate::sim::kernel::Entry;

/// The volatile state rebuilt from the log.
#[derive(Debug)]
pub(crate) struct Process {
    state: Fs,
}

impl Process {
    pub(crate) fn new(base: &Fs) -> Process {
        Process {
            state: base.clone(),
        }
    }
}

impl Walker for Process {
    fn step(&mut self, log: &[Entry], i: usize) {
        apply(&mut self.state, &log[i].op);
    }

    fn images(
        &self,
        _log: &[Entry],
        _p: usize,
        _rng: &mut Rng,
        _budget: &Budget,
        visit: &mut dyn FnMut(&Fs) -> bool,
    ) -> (u64, bool) {
        let mut image = self.state.clone();
        image.fsck();
        visit(&image);
        (1, false)
    }
}

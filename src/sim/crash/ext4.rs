//! The ext4 `data=ordered` model, with delayed allocation.
//!
//! What ext4 with its defaults adds to POSIX (REFERENCE.md §2.3), and what
//! this model assumes:
//!
//! - **One metadata journal.** Inode creation, names, renames and mode or
//!   owner changes form one log in program order. After a crash the durable
//!   metadata is a prefix of it, cut between two calls (one call's
//!   metadata is one journal handle). The cut lies at or after the last
//!   commit and anywhere up to the crash, because background commits can
//!   happen at any moment.
//! - **Commits.** A successful `fsync` of a file writes that file's data
//!   back and then commits the whole running transaction: the metadata of
//!   *every* file so far, the temp's name included. A successful `fsync` of
//!   a directory commits too. (The conservative model assumes neither.)
//! - **Delayed allocation.** A write only reaches the page cache; the file's
//!   blocks and on-disk size are allocated at writeback, which can happen
//!   at any moment and becomes durable with the next commit. After a crash a
//!   file holds the data of its first *k* writes, for some *k* between what
//!   was surely written back and what was written before the cut; never
//!   garbage and never torn inside a write.
//! - **`auto_da_alloc`** (a switch): a rename over an existing regular file
//!   writes the source's data back in the rename's transaction, so a file
//!   renamed over another is never empty. It does nothing when the target
//!   was absent.
//! - **A failed `fsync`** drops the file's dirty pages: the writes not
//!   surely on disk by then never reach it, whatever later syncs report.
//!
//! Not modelled: `fast_commit`, `data=writeback` (stale blocks),
//! `data=journal`, and writeback that splits a single write.

use std::collections::BTreeMap;

use super::{Budget, Rng, Walker, is_boundary};
use crate::sim::fs::{Fs, Ino, Node, Op, apply};
use crate::sim::kernel::Entry;

/// One write call's effects on one file (its data pieces and size).
#[derive(Debug)]
struct Write {
    call: usize,
    /// The last log index of this write.
    last: usize,
    entries: Vec<usize>,
}

/// The journal and writeback state at one point.
#[derive(Debug)]
pub(crate) struct Ext4 {
    auto_da_alloc: bool,
    /// Content of files before any logged write, and the committed metadata.
    base: Fs,
    committed: Fs,
    /// Log position just after the last commit.
    commit_at: usize,
    /// Uncommitted metadata effects (log indices).
    meta: Vec<usize>,
    writes: BTreeMap<Ino, Vec<Write>>,
    /// Writes surely written back and committed, per file.
    floor: BTreeMap<Ino, usize>,
    /// `auto_da_alloc` flushes: (rename's log index, file, writes flushed).
    /// They count once the cut includes the rename.
    rename_flushes: Vec<(usize, Ino, usize)>,
    /// After a failed fsync, at most this many writes can be on disk.
    cap: BTreeMap<Ino, usize>,
    /// Writes whose data an fsync waited for, per file. Writeback that
    /// nobody waited for (background, `auto_da_alloc`) may commit the size
    /// and an unwritten extent before the data: zeros at the new length.
    synced: BTreeMap<Ino, usize>,
}

/// One file's choice of how many writes are on disk: `options[lo..=hi]`,
/// each (writes whose size is on disk, writes whose data is on disk).
#[derive(Debug)]
struct Choice {
    ino: Ino,
    lo: usize,
    hi: usize,
    options: Vec<(usize, usize)>,
}

impl Ext4 {
    pub(crate) fn new(base: &Fs, auto_da_alloc: bool) -> Ext4 {
        Ext4 {
            auto_da_alloc,
            base: base.clone(),
            committed: base.clone(),
            commit_at: 0,
            meta: Vec::new(),
            writes: BTreeMap::new(),
            floor: BTreeMap::new(),
            rename_flushes: Vec::new(),
            cap: BTreeMap::new(),
            synced: BTreeMap::new(),
        }
    }

    fn written(&self, ino: Ino) -> usize {
        self.writes.get(&ino).map_or(0, Vec::len)
    }

    fn capped(&self, ino: Ino, k: usize) -> usize {
        self.cap.get(&ino).map_or(k, |&c| k.min(c))
    }

    fn raise_floor(&mut self, ino: Ino, k: usize) {
        let k = self.capped(ino, k);
        let floor = self.floor.entry(ino).or_insert(0);
        *floor = (*floor).max(k);
    }

    fn commit(&mut self, log: &[Entry], at: usize) {
        for &j in &self.meta {
            apply(&mut self.committed, &log[j].op);
        }
        self.meta.clear();
        self.commit_at = at;
        let flushes = std::mem::take(&mut self.rename_flushes);
        for (_, ino, k) in flushes {
            self.raise_floor(ino, k);
        }
    }

    /// The cuts allowed at point `p`: call boundaries from the last commit on.
    fn cuts(&self, log: &[Entry], p: usize) -> Vec<usize> {
        (self.commit_at..=p)
            .filter(|&b| is_boundary(log, b))
            .collect()
    }

    /// Per-file choices for a cut at `b`, on the metadata state `meta_fs`.
    fn choices(&self, b: usize, meta_fs: &Fs) -> Vec<Choice> {
        let mut out = Vec::new();
        for (&ino, writes) in &self.writes {
            if !matches!(meta_fs.get(ino).map(|i| &i.node), Some(Node::File { .. })) {
                continue;
            }
            let before_cut = writes.iter().filter(|w| w.last < b).count();
            let hi = self.capped(ino, before_cut);
            let mut lo = self.floor.get(&ino).copied().unwrap_or(0);
            for &(at, file, k) in &self.rename_flushes {
                if file == ino && at < b {
                    lo = lo.max(self.capped(ino, k));
                }
            }
            let lo = lo.min(hi);
            let data_lo = self.synced.get(&ino).copied().unwrap_or(0).min(lo);
            let options: Vec<(usize, usize)> = (lo..=hi)
                .flat_map(|k| (data_lo..=k).map(move |j| (k, j)))
                .collect();
            out.push(Choice {
                ino,
                lo: 0,
                hi: options.len() - 1,
                options,
            });
        }
        out
    }

    fn metadata_at(&self, log: &[Entry], b: usize) -> Fs {
        let mut fs = self.committed.clone();
        for &j in self.meta.iter().take_while(|&&j| j < b) {
            apply(&mut fs, &log[j].op);
        }
        fs
    }

    /// The image for cut `b` with `ks[i]` writes on disk for `choices[i]`.
    fn build(&self, log: &[Entry], meta_fs: &Fs, choices: &[Choice], ks: &[usize]) -> Fs {
        let mut image = meta_fs.clone();
        for (choice, &at) in choices.iter().zip(ks) {
            let (k, j) = choice.options[at];
            let (data, size) = match self.base.get(choice.ino).map(|i| &i.node) {
                Some(Node::File { data, size }) => (data.clone(), *size),
                _ => (Vec::new(), 0),
            };
            if let Some(inode) = image.get_mut(choice.ino) {
                inode.node = Node::File { data, size };
            }
            for (n, write) in self.writes[&choice.ino][..k].iter().enumerate() {
                for &e in &write.entries {
                    // Past `j`: the size is on disk, the data is not.
                    if n < j || matches!(log[e].op, Op::Size { .. }) {
                        apply(&mut image, &log[e].op);
                    }
                }
            }
        }
        image.fsck();
        image
    }
}

impl Walker for Ext4 {
    fn step(&mut self, log: &[Entry], i: usize) {
        let entry = &log[i];
        match &entry.op {
            Op::Data { ino, .. } | Op::Size { ino, .. } => {
                let writes = self.writes.entry(*ino).or_default();
                match writes.last_mut() {
                    Some(w) if w.call == entry.call => {
                        w.last = i;
                        w.entries.push(i);
                    }
                    _ => writes.push(Write {
                        call: entry.call,
                        last: i,
                        entries: vec![i],
                    }),
                }
            }
            Op::Rename {
                ino,
                replaced: Some((_, true)),
                ..
            } if self.auto_da_alloc => {
                let k = self.written(*ino);
                self.rename_flushes.push((i, *ino, k));
                self.meta.push(i);
            }
            Op::SyncFile { ino } => {
                let k = self.written(*ino);
                self.raise_floor(*ino, k);
                let k = self.capped(*ino, k);
                self.synced.insert(*ino, k);
                self.commit(log, i + 1);
            }
            Op::SyncDir { .. } => self.commit(log, i + 1),
            Op::SyncAll => {
                let files: Vec<(Ino, usize)> =
                    self.writes.iter().map(|(&ino, w)| (ino, w.len())).collect();
                for (ino, k) in files {
                    self.raise_floor(ino, k);
                    let k = self.capped(ino, k);
                    self.synced.insert(ino, k);
                }
                self.commit(log, i + 1);
            }
            // syncfs on one of several filesystems: its files' data is on
            // disk. The journal here is one for the whole tree, so no
            // commit is assumed (fewer durable effects: a stricter check).
            Op::SyncFs { inos } => {
                let files: Vec<(Ino, usize)> = self
                    .writes
                    .iter()
                    .filter(|(ino, _)| inos.contains(ino))
                    .map(|(&ino, w)| (ino, w.len()))
                    .collect();
                for (ino, k) in files {
                    self.raise_floor(ino, k);
                    let k = self.capped(ino, k);
                    self.synced.insert(ino, k);
                }
            }
            Op::SyncLost { ino } => {
                // The writes not surely on disk were the ones whose
                // writeback failed; they never come back.
                let k = self.floor.get(ino).copied().unwrap_or(0);
                let cap = self.cap.entry(*ino).or_insert(k);
                *cap = (*cap).min(k);
            }
            _ => self.meta.push(i),
        }
    }

    fn images(
        &self,
        log: &[Entry],
        p: usize,
        rng: &mut Rng,
        budget: &Budget,
        visit: &mut dyn FnMut(&Fs) -> bool,
    ) -> (u64, bool) {
        let cuts = self.cuts(log, p);
        let per_cut: Vec<(Fs, Vec<Choice>)> = cuts
            .iter()
            .map(|&b| {
                let fs = self.metadata_at(log, b);
                let choices = self.choices(b, &fs);
                (fs, choices)
            })
            .collect();
        let count = |choices: &[Choice]| -> u64 {
            choices
                .iter()
                .map(|c| (c.hi - c.lo + 1) as u64)
                .fold(1u64, u64::saturating_mul)
        };
        let total = per_cut
            .iter()
            .map(|(_, c)| count(c))
            .fold(0u64, u64::saturating_add);
        let mut images = 0;
        if total <= budget.exhaustive_max {
            for (fs, choices) in &per_cut {
                let mut ks: Vec<usize> = choices.iter().map(|c| c.lo).collect();
                loop {
                    images += 1;
                    if !visit(&self.build(log, fs, choices, &ks)) {
                        return (images, false);
                    }
                    // Mixed-radix increment over the per-file ranges.
                    let mut i = 0;
                    while i < ks.len() && ks[i] == choices[i].hi {
                        ks[i] = choices[i].lo;
                        i += 1;
                    }
                    if i == ks.len() {
                        break;
                    }
                    ks[i] += 1;
                }
            }
            return (images, false);
        }
        for _ in 0..budget.samples {
            let (fs, choices) = &per_cut[rng.below(per_cut.len() as u64) as usize];
            let ks: Vec<usize> = choices
                .iter()
                .map(|c| c.lo + rng.below((c.hi - c.lo + 1) as u64) as usize)
                .collect();
            images += 1;
            if !visit(&self.build(log, fs, choices, &ks)) {
                break;
            }
        }
        (images, true)
    }
}

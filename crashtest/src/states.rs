//! Crash states: which of the logged writes a disk may hold after a power
//! cut, and building the image of one.
//!
//! A disk with a volatile cache keeps every write completed before the last
//! flush, plus any subset of the writes since (REFERENCE.md §2.1; the
//! CrashMonkey model). The log is cut into *epochs* at its flushes, the
//! writes of an epoch into 4 KiB *units* (the largest size a disk writes
//! without tearing, in practice). A state is an epoch plus the units of it
//! that reached the disk. [`enumerate`] lists, within a budget and in this
//! order: each flush boundary; every prefix of each epoch (a crash at each
//! moment, the disk writing in order); every subset of an epoch of at most
//! [`EXHAUSTIVE_UNITS`] units; seeded random subsets of larger ones.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::blocklog::Event;

/// The unit of persistence.
pub const UNIT: u64 = 4096;
/// Epochs with at most this many units have every subset enumerated.
pub const EXHAUSTIVE_UNITS: usize = 10;

/// Up to 4 KiB of one logged write (or zero-out), aligned to 4 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Index of the event in the log.
    pub event: usize,
    /// Disk offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The writes between two flushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch {
    /// First log index of the epoch (just after the previous flush).
    pub start: usize,
    /// Log index of the flush that ends it, or the log's length.
    pub end: usize,
    /// Its writes cut into units, in log order.
    pub units: Vec<Unit>,
}

/// Cuts a log into epochs and units.
pub fn epochs(events: &[Event]) -> Vec<Epoch> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut units = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let (offset, len) = match e {
            Event::Write { offset, data } => (*offset, data.len() as u64),
            Event::Zero { offset, len } => (*offset, *len),
            Event::Flush => {
                out.push(Epoch {
                    start,
                    end: i,
                    units: std::mem::take(&mut units),
                });
                start = i + 1;
                continue;
            }
            Event::Begin(_) | Event::Ack(_) => continue,
        };
        let mut at = offset;
        while at < offset + len {
            let next = ((at / UNIT) + 1) * UNIT;
            let piece = next.min(offset + len) - at;
            units.push(Unit {
                event: i,
                offset: at,
                len: piece,
            });
            at += piece;
        }
    }
    out.push(Epoch {
        start,
        end: events.len(),
        units,
    });
    out
}

/// What a state is, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// Exactly the writes before a flush.
    Flush,
    /// A prefix of an epoch's writes.
    Prefix,
    /// Any other subset.
    Subset,
}

/// One crash state: epoch `epoch` with `chosen` of its units on disk.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Index into the epochs.
    pub epoch: usize,
    /// Sorted unit indices of that epoch that reached the disk.
    pub chosen: Vec<u32>,
    /// How it was found.
    pub shape: Shape,
}

impl State {
    /// `e3:0,1,5` — the state's name in reports and on the command line.
    pub fn label(&self) -> String {
        let units: Vec<String> = self.chosen.iter().map(u32::to_string).collect();
        format!("e{}:{}", self.epoch, units.join(","))
    }
}

/// A small deterministic generator (splitmix64).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Lists at most `budget` distinct states of `epochs`, most telling first.
pub fn enumerate(epochs: &[Epoch], budget: usize, seed: u64) -> Vec<State> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let last = epochs.len().saturating_sub(1);
    let mut add = |epoch: usize, chosen: Vec<u32>, shape: Shape, out: &mut Vec<State>| {
        if out.len() >= budget {
            return false;
        }
        // All of an epoch's units is the same image as the next epoch's
        // flush boundary.
        let n = epochs[epoch].units.len();
        let (epoch, chosen, shape) = if chosen.len() == n && epoch < last {
            (epoch + 1, Vec::new(), Shape::Flush)
        } else {
            (epoch, chosen, shape)
        };
        if seen.insert((epoch, chosen.clone())) {
            out.push(State {
                epoch,
                chosen,
                shape,
            });
        }
        true
    };
    // 1. Flush boundaries, and the end of the log.
    for e in 0..epochs.len() {
        add(e, Vec::new(), Shape::Flush, &mut out);
    }
    if let Some(ep) = epochs.last() {
        add(
            last,
            (0..ep.units.len() as u32).collect(),
            Shape::Prefix,
            &mut out,
        );
    }
    // 2. Every prefix, epochs taken in turn so a small budget spreads.
    let longest = epochs.iter().map(|e| e.units.len()).max().unwrap_or(0);
    for k in 1..longest {
        for (e, ep) in epochs.iter().enumerate() {
            if k < ep.units.len() && !add(e, (0..k as u32).collect(), Shape::Prefix, &mut out) {
                return out;
            }
        }
    }
    // 3. Every subset of small epochs.
    for (e, ep) in epochs.iter().enumerate() {
        let n = ep.units.len();
        if n <= EXHAUSTIVE_UNITS {
            for mask in 1u32..(1 << n) {
                let chosen: Vec<u32> = (0..n as u32).filter(|i| mask & (1 << i) != 0).collect();
                if !add(e, chosen, Shape::Subset, &mut out) {
                    return out;
                }
            }
        }
    }
    // 4. Random subsets of large epochs, round robin, each unit kept with
    //    a probability drawn per subset (sparse, even, dense).
    let large: Vec<usize> = (0..epochs.len())
        .filter(|&e| epochs[e].units.len() > EXHAUSTIVE_UNITS)
        .collect();
    if large.is_empty() {
        return out;
    }
    let mut rng = Rng::new(seed);
    let mut misses = 0;
    while out.len() < budget && misses < 64 * budget {
        let e = large[rng.below(large.len() as u64) as usize];
        let n = epochs[e].units.len();
        let keep = [8u64, 50, 92][rng.below(3) as usize];
        let chosen: Vec<u32> = (0..n as u32).filter(|_| rng.below(100) < keep).collect();
        let before = out.len();
        add(e, chosen, Shape::Subset, &mut out);
        if out.len() == before {
            misses += 1;
        }
    }
    out
}

/// The disk before the recording: its non-zero 4 KiB blocks.
#[derive(Clone, Debug, Default)]
pub struct Base {
    /// Size of the disk in bytes.
    pub size: u64,
    /// (offset, bytes) runs of non-zero data.
    pub runs: Vec<(u64, Vec<u8>)>,
}

impl Base {
    /// Reads an image, keeping only its non-zero blocks.
    pub fn read(path: &Path) -> io::Result<Base> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)?;
            for (i, block) in buf[..n].chunks(UNIT as usize).enumerate() {
                if block.iter().all(|&b| b == 0) {
                    continue;
                }
                let off = at + (i as u64) * UNIT;
                match runs.last_mut() {
                    Some((start, data)) if *start + data.len() as u64 == off => {
                        data.extend_from_slice(block);
                    }
                    _ => runs.push((off, block.to_vec())),
                }
            }
            at += n as u64;
        }
        Ok(Base { size, runs })
    }
}

fn apply(file: &File, event: &Event, offset: u64, len: u64) -> io::Result<()> {
    match event {
        Event::Write { offset: at, data } => {
            let from = (offset - at) as usize;
            file.write_all_at(&data[from..from + len as usize], offset)
        }
        Event::Zero { .. } => file.write_all_at(&vec![0; len as usize], offset),
        Event::Flush | Event::Begin(_) | Event::Ack(_) => Ok(()),
    }
}

/// Writes the image of `state` to `path`: the base, every write before the
/// epoch, and the chosen units of the epoch, in log order. Sparse.
pub fn build(
    base: &Base,
    events: &[Event],
    epochs: &[Epoch],
    state: &State,
    path: &Path,
) -> io::Result<()> {
    let file = File::create(path)?;
    file.set_len(base.size)?;
    for (offset, data) in &base.runs {
        file.write_all_at(data, *offset)?;
    }
    let epoch = &epochs[state.epoch];
    for event in &events[..epoch.start] {
        match event {
            Event::Write { offset, data } => file.write_all_at(data, *offset)?,
            Event::Zero { offset, len } => apply(&file, event, *offset, *len)?,
            Event::Flush | Event::Begin(_) | Event::Ack(_) => {}
        }
    }
    for &i in &state.chosen {
        let unit = epoch.units[i as usize];
        apply(&file, &events[unit.event], unit.offset, unit.len)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(offset: u64, byte: u8, len: usize) -> Event {
        Event::Write {
            offset,
            data: vec![byte; len],
        }
    }

    #[test]
    fn writes_are_cut_at_4k_and_flushes_end_epochs() {
        let log = vec![
            w(2048, 1, 8192),
            Event::Begin(0),
            Event::Flush,
            w(0, 2, 512),
            Event::Ack(0),
        ];
        let eps = epochs(&log);
        assert_eq!(eps.len(), 2);
        assert_eq!((eps[0].start, eps[0].end), (0, 2));
        let pieces: Vec<(u64, u64)> = eps[0].units.iter().map(|u| (u.offset, u.len)).collect();
        assert_eq!(pieces, vec![(2048, 2048), (4096, 4096), (8192, 2048)]);
        assert_eq!((eps[1].start, eps[1].end), (3, 5));
        assert_eq!(eps[1].units.len(), 1);
    }

    #[test]
    fn small_epochs_get_every_subset_once() {
        // Epoch 0: 3 units, epoch 1: 2 units.
        let log = vec![w(0, 1, 4096 * 3), Event::Flush, w(0, 2, 4096 * 2)];
        let eps = epochs(&log);
        let states = enumerate(&eps, 1000, 1);
        // Epoch 0: 2^3 subsets, but "all" is epoch 1's flush state.
        // Epoch 1: 2^2 subsets.
        assert_eq!(states.len(), 7 + 4);
        let set: HashSet<_> = states.iter().map(|s| (s.epoch, s.chosen.clone())).collect();
        assert_eq!(set.len(), states.len());
        assert!(set.contains(&(0, vec![0, 2])));
        assert!(set.contains(&(1, vec![0, 1])));
        assert!(!set.contains(&(0, vec![0, 1, 2])));
        // Flush boundaries come first.
        assert_eq!(states[0].shape, Shape::Flush);
        assert_eq!(states[1].shape, Shape::Flush);
    }

    #[test]
    fn large_epochs_are_sampled_within_the_budget_and_reproducibly() {
        let log = vec![w(0, 1, 4096 * 40), Event::Flush, w(0, 2, 4096 * 30)];
        let eps = epochs(&log);
        let a = enumerate(&eps, 150, 7);
        assert_eq!(a.len(), 150);
        assert_eq!(a, enumerate(&eps, 150, 7));
        assert_ne!(a, enumerate(&eps, 150, 8));
        // Every prefix is in before any random subset (2 flush states,
        // the full last epoch, 39 + 29 proper prefixes).
        let prefixes = a.iter().filter(|s| s.shape != Shape::Subset).count();
        assert_eq!(prefixes, 2 + 1 + 39 + 29);
        assert!(a.iter().all(|s| s.chosen.windows(2).all(|p| p[0] < p[1])));
        assert_eq!(enumerate(&eps, 5, 7).len(), 5);
    }

    #[test]
    fn an_image_has_the_base_the_durable_writes_and_the_chosen_units() {
        let dir = std::env::temp_dir().join(format!("crashtest-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base_path = dir.join("base.img");
        let base_file = File::create(&base_path).unwrap();
        base_file.set_len(8 * UNIT).unwrap();
        base_file.write_all_at(&[9; 4096], 7 * UNIT).unwrap();
        let base = Base::read(&base_path).unwrap();
        assert_eq!(base.runs.len(), 1);
        assert_eq!(base.runs[0], (7 * UNIT, vec![9; 4096]));
        let log = vec![
            w(0, 1, 4096),
            w(0, 2, 4096), // overwrites the first: log order wins
            Event::Flush,
            w(UNIT, 3, 4096 * 2),
            Event::Zero {
                offset: 7 * UNIT,
                len: UNIT,
            },
        ];
        let eps = epochs(&log);
        let state = State {
            epoch: 1,
            chosen: vec![1, 2],
            shape: Shape::Subset,
        };
        let img = dir.join("state.img");
        build(&base, &log, &eps, &state, &img).unwrap();
        let data = std::fs::read(&img).unwrap();
        assert_eq!(data.len() as u64, 8 * UNIT);
        assert!(data[..4096].iter().all(|&b| b == 2));
        assert!(
            data[4096..8192].iter().all(|&b| b == 0),
            "unit 0 not chosen"
        );
        assert!(data[8192..12288].iter().all(|&b| b == 3));
        assert!(data[7 * 4096..].iter().all(|&b| b == 0), "zeroed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Crate-internal test tiers that drive the simulator (`crate::sim`).
//!
//! | file | tier |
//! |---|---|
//! | `model.rs` | 1: the crash models themselves are right |
//! | `golden.rs` | 2: the exact syscall sequence of each protocol path |
//! | `exhaustive.rs` | 3: every option combination × crash point × image |
//! | `props.rs` | 4: random interrupted sequences (proptest) |
//! | `faults.rs` | 5: every call failed in turn with each error |
//! | `negative.rs` | 6: broken protocol variants are caught |
//! | `differential.rs` | 7: simulator and real filesystem agree |
//! | `syscalls.rs` | the number of calls per replace, pinned |
//! | `dirs.rs` | `create_dir_all`: new directories survive every crash |
//! | `sweep.rs` | `sweep` interleaved with a live writer, call by call |

mod differential;
mod dirs;
mod exhaustive;
mod faults;
mod golden;
mod model;
mod negative;
mod props;
mod recorded;
mod sweep;
mod syscalls;

use std::path::Path;

use crate::sim::check::{Version, version};
use crate::sim::fs::Fs;
use crate::sim::{Budget, Model, SimFs};

/// Every image of a crash right now.
pub(crate) fn images_now(sim: &SimFs, model: Model) -> Vec<Fs> {
    let end = sim.effects();
    let mut out = Vec::new();
    sim.explore(model, end, &Budget::default(), &mut |_, fs| {
        out.push(fs.clone());
        true
    });
    out
}

/// The versions of `path` over `images`, deduplicated, in first-seen order.
pub(crate) fn versions(images: &[Fs], path: &str) -> Vec<Version> {
    let mut out: Vec<Version> = Vec::new();
    for fs in images {
        let v = version(fs, Path::new(path));
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// A regular-file version.
pub(crate) fn file(data: &[u8], mode: u32, uid: u32, gid: u32) -> Version {
    Version::File {
        data: data.to_vec(),
        mode,
        uid,
        gid,
    }
}

//! `sweep` interleaved with a live writer, call by call: it removes nothing
//! a live writer needs, whichever gap of the writer it runs in, and a writer
//! caught between its create and its lock starts again under a new name.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::options::Options;
use crate::protocol::lock_temp;
use crate::sim::SimFs;
use crate::sys::Sys;
use crate::temp_name::is_temp_name;

const OLD: &[u8] = b"old";
const NEW: &[u8] = b"new content";

fn with_old() -> SimFs {
    let sim = SimFs::new(7);
    sim.set_identity(0, 0, true);
    sim.mkdir("/d", 0o755).unwrap();
    sim.put_file("/d/x", OLD, 0o644, 0, 0).unwrap();
    sim
}

/// One replace of `/d/x` with `opts`, returning how many calls it made.
fn replace(sim: &SimFs, opts: &Options) -> usize {
    let mut file = sim.open("/d/x", opts).unwrap();
    std::io::Write::write_all(&mut file, NEW).unwrap();
    file.commit().unwrap();
    sim.trace().len()
}

fn temps(sim: &SimFs) -> Vec<std::ffi::OsString> {
    let names = sim.list_dir("/d").unwrap();
    names.into_iter().filter(|n| is_temp_name(n)).collect()
}

/// A whole `sweep` slotted before each call of a replace in turn (with and
/// without a backup, named and unnamed temp): the replace always succeeds
/// with the new content, and nothing is left behind.
#[test]
fn a_sweep_in_any_gap_of_a_writer_never_hurts_it() {
    let mut variants = Vec::new();
    for backup in [false, true] {
        for unnamed in [false, true] {
            let mut opts = Options::new();
            opts.backup(backup).unnamed_temp(unnamed);
            variants.push(opts);
        }
    }
    for opts in variants {
        let calls = replace(&with_old(), &opts);
        let mut removed_total = 0;
        for gap in 0..=calls {
            let sim = with_old();
            let removed = Arc::new(Mutex::new(None));
            let seen = Arc::clone(&removed);
            sim.before_call(gap, move |s| {
                *seen.lock().unwrap() = Some(s.sweep_report("/d").unwrap());
            });
            let mut file = sim.open("/d/x", &opts).unwrap();
            std::io::Write::write_all(&mut file, NEW).unwrap();
            let result = file.commit();
            let report = removed.lock().unwrap().clone();
            assert!(
                result.is_ok(),
                "gap {gap} {opts:?}: {result:?}, sweep {report:?}"
            );
            assert_eq!(sim.read_file("/d/x").unwrap(), NEW, "gap {gap}");
            assert_eq!(temps(&sim), Vec::<std::ffi::OsString>::new(), "gap {gap}");
            if opts.backup {
                assert_eq!(sim.read_file("/d/x~").unwrap(), OLD, "gap {gap}");
            }
            removed_total += report.map_or(0, |r| r.removed.len());
        }
        // The window between create and lock was hit: the sweep removed the
        // fresh temp there, and the writer started again.
        if !opts.unnamed_temp {
            assert!(removed_total > 0, "{opts:?}: no gap lets the sweep remove");
        }
    }
}

/// The writer's two steps (create, then lock and check) against every gap of
/// a `sweep`: whenever the writer's check passes, its temp is still there
/// after the sweep; whenever it fails, the writer would start again.
#[test]
fn a_writer_locking_in_any_gap_of_a_sweep_keeps_its_temp_or_retries() {
    let name = OsStr::new(".x.crashsafe-abcdefghijkl.tmp");
    // How many calls a sweep of one unlocked temp makes.
    let calls = {
        let sim = with_old();
        let d = sim.open_dir(Path::new("/d")).unwrap();
        let _f = sim.create_at(&d, name, 0o600).unwrap();
        let mark = sim.trace().len();
        sim.sweep("/d").unwrap();
        sim.trace().len() - mark
    };
    let (mut kept, mut retried) = (0, 0);
    for gap in 0..=calls {
        let sim = with_old();
        let d = sim.open_dir(Path::new("/d")).unwrap();
        let file = sim.create_at(&d, name, 0o600).unwrap();
        let start = sim.trace().len();
        let outcome = Arc::new(Mutex::new(None));
        let out = Arc::clone(&outcome);
        let file = Arc::new(file);
        let writer = Arc::clone(&file);
        sim.before_call(start + gap, move |s| {
            *out.lock().unwrap() = Some(lock_temp(s, &writer).is_ok());
        });
        sim.sweep("/d").unwrap();
        let during = outcome.lock().unwrap().take();
        // After the sweep, if no gap of it was left for the writer.
        let locked = during.unwrap_or_else(|| lock_temp(&sim, &file).is_ok());
        let present = sim.list_dir("/d").unwrap().iter().any(|n| n == name);
        if locked {
            assert!(
                present,
                "gap {gap}: the sweep removed a locked, checked temp"
            );
            kept += 1;
        } else {
            retried += 1;
        }
    }
    assert!(kept > 0 && retried > 0, "kept {kept}, retried {retried}");
}

//! `create_dir_all` on the simulator: a file written durably into
//! directories it created survives every crash image; the same directories
//! made without the parent fsyncs do not (the negative control).

use std::path::Path;

use crate::options::Options;
use crate::sim::{Model, SimFs};
use crate::sys::Sys;

fn sim() -> SimFs {
    let sim = SimFs::new(3);
    sim.set_identity(0, 0, true);
    sim.mkdir("/d", 0o755).unwrap();
    sim
}

/// How many crash images of the final state lack `/d/a/b/f` = "new".
fn lost(sim: &SimFs) -> usize {
    let mut lost = 0;
    for model in Model::ALL {
        for image in sim.crash_images(model) {
            if image.read_file("/d/a/b/f").ok().as_deref() != Some(&b"new"[..]) {
                lost += 1;
            }
        }
    }
    lost
}

#[test]
fn a_file_in_new_directories_survives_every_crash() {
    let sim = sim();
    sim.create_dir_all("/d/a/b").unwrap();
    // Every new directory is there after any crash, before any file.
    for model in Model::ALL {
        for image in sim.crash_images(model) {
            assert_eq!(image.list_dir("/d/a/b").unwrap().len(), 0, "{model}");
        }
    }
    // Idempotent: existing directories are fine and not synced again.
    let mark = sim.trace().len();
    sim.create_dir_all("/d/a/b").unwrap();
    assert_eq!(sim.trace_lines()[mark..], ["open_dir(/d/a/b) = ok"]);
    sim.write("/d/a/b/f", b"new", &Options::new()).unwrap();
    assert_eq!(lost(&sim), 0);
}

#[test]
fn without_the_parent_fsyncs_the_conservative_model_loses_it() {
    let sim = sim();
    let d = sim.open_dir(Path::new("/d")).unwrap();
    sim.mkdir_at(&d, "a".as_ref(), 0o777).unwrap();
    let a = sim.open_dir(Path::new("/d/a")).unwrap();
    sim.mkdir_at(&a, "b".as_ref(), 0o777).unwrap();
    sim.write("/d/a/b/f", b"new", &Options::new()).unwrap();
    assert!(lost(&sim) > 0);
}

#[test]
fn create_dir_all_names_what_failed() {
    let sim = sim();
    sim.put_file("/d/file", b"x", 0o644, 0, 0).unwrap();
    let e = sim.create_dir_all("/d/file/sub").unwrap_err();
    assert!(e.to_string().contains("/d/file"), "{e}");
    let e = sim.create_dir_all("").unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

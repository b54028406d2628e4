//! The simulator, checked against reality: every state the real kernel
//! produced for a workload must be one that the simulator's model allows
//! for the same sequence of calls. A real state the model calls impossible
//! is a bug in the model.
//!
//! A state is compared as an [`Abstract`]: for each tracked file, absent or
//! its exact bytes and mode (owners differ by design: the simulator runs as
//! an ordinary user), and how many other names each directory holds
//! (temps, backups; temp names are random).

use std::collections::BTreeSet;
use std::path::Path;

use crashsafe::sim::{Budget, Model, SimFs};

use crate::workload::{self, OWNER, Step, Workload};

/// A file in a crash state: `None` if absent, else (bytes, mode).
pub type FileState = Option<(Vec<u8>, u32)>;

/// A crash state, abstracted for comparison.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Abstract {
    /// Per tracked file: `None` if absent, else (bytes, mode).
    pub files: Vec<(String, FileState)>,
    /// Per directory of a tracked file: how many other names it holds.
    pub others: Vec<(String, usize)>,
}

fn dirs(w: &Workload) -> Vec<String> {
    let mut d: Vec<String> = w
        .tracked
        .iter()
        .map(|t| {
            Path::new(t)
                .parent()
                .map_or(String::new(), |p| p.display().to_string())
        })
        .collect();
    d.sort();
    d.dedup();
    d
}

fn is_tracked(w: &Workload, dir: &str, name: &str) -> bool {
    w.tracked.iter().any(|t| *t == format!("{dir}/{name}"))
}

/// The abstraction of a mounted real state.
pub fn abstract_state(root: &Path, w: &Workload) -> Result<Abstract, String> {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    for t in &w.tracked {
        let p = root.join(t);
        let f = match std::fs::metadata(&p) {
            Ok(m) => Some((
                std::fs::read(&p).map_err(|e| format!("{t}: {e}"))?,
                m.mode() & 0o7777,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{t}: {e}")),
        };
        files.push((t.to_string(), f));
    }
    let mut others = Vec::new();
    for d in dirs(w) {
        let n = std::fs::read_dir(root.join(&d))
            .map_err(|e| format!("{d}: {e}"))?
            .filter_map(Result::ok)
            .filter(|e| !is_tracked(w, &d, &e.file_name().to_string_lossy()))
            .count();
        others.push((d, n));
    }
    Ok(Abstract { files, others })
}

fn abstract_sim(sim: &SimFs, w: &Workload) -> Abstract {
    let mut files = Vec::new();
    for t in &w.tracked {
        let p = format!("/{t}");
        let f = match (sim.read_file(&p), sim.stat(&p)) {
            (Ok(bytes), Ok(st)) => Some((bytes, st.mode)),
            _ => None,
        };
        files.push((t.to_string(), f));
    }
    let mut others = Vec::new();
    for d in dirs(w) {
        let n = sim
            .list_dir(format!("/{d}"))
            .unwrap_or_default()
            .iter()
            .filter(|name| !is_tracked(w, &d, &name.to_string_lossy()))
            .count();
        others.push((d, n));
    }
    Abstract { files, others }
}

/// Every state `model` allows for the workload's calls, at every crash
/// point. Errors if the workload uses something the simulator lacks.
pub fn allowed(w: &Workload, model: Model) -> Result<BTreeSet<Abstract>, String> {
    let sim = SimFs::new(0x13);
    for d in &w.dirs {
        sim.mkdir_all(format!("/{d}"))
            .map_err(|e| format!("sim mkdir {d}: {e}"))?;
    }
    for (path, version, mode) in &w.files {
        sim.put_file(
            format!("/{path}"),
            &workload::content(path, *version),
            *mode,
            OWNER,
            OWNER,
        )
        .map_err(|e| format!("sim setup {path}: {e}"))?;
    }
    if !w.symlinks.is_empty() || !w.stale_temps.is_empty() {
        return Err("the simulator cross-check takes plain files only".to_string());
    }
    for step in &w.steps {
        let (result, fails) = match step {
            Step::Write {
                path,
                version,
                opts,
                fails,
            } => (
                sim.write(
                    format!("/{path}"),
                    &workload::content(path, *version),
                    &opts.options(),
                ),
                *fails,
            ),
            Step::Update {
                path,
                version,
                opts,
            } => {
                let v = *version;
                (
                    sim.update(format!("/{path}"), &opts.options(), move |old| {
                        Ok(workload::updated(old, v))
                    }),
                    false,
                )
            }
            _ => return Err("the simulator cross-check takes write and update only".to_string()),
        };
        if result.is_ok() == fails {
            return Err(format!(
                "the simulator disagrees on the outcome of {step:?}: {result:?}"
            ));
        }
    }
    let budget = Budget {
        exhaustive_max: 1 << 16,
        samples: 4096,
        seed: 0x5eed,
    };
    let mut out = BTreeSet::new();
    for point in sim.crash_points() {
        for image in sim.crash_images_at(point.effects, model, &budget) {
            out.insert(abstract_state_sim(&image, w));
        }
    }
    Ok(out)
}

fn abstract_state_sim(sim: &SimFs, w: &Workload) -> Abstract {
    abstract_sim(sim, w)
}

/// One line for a state, naming versions instead of bytes.
pub fn show(a: &Abstract, w: &Workload) -> String {
    let mut parts = Vec::new();
    for (path, f) in &a.files {
        let what = match f {
            None => "absent".to_string(),
            Some((bytes, mode)) => {
                let known = (0..=16u32).find_map(|v| {
                    let plain = workload::content(path, v);
                    (plain == *bytes).then(|| format!("v{v}"))
                });
                let what = known.unwrap_or_else(|| {
                    if bytes.iter().all(|&b| b == 0) {
                        format!("{} zero bytes", bytes.len())
                    } else {
                        format!("{} other bytes", bytes.len())
                    }
                });
                format!("{what} mode {mode:o}")
            }
        };
        parts.push(format!("{path}: {what}"));
    }
    for (d, n) in &a.others {
        if *n > 0 {
            parts.push(format!("{d}/ has {n} other names"));
        }
    }
    let _ = w;
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use crashsafe::sim::Broken;

    fn state(file: FileState, others: usize) -> Abstract {
        Abstract {
            files: vec![("d/file".to_string(), file)],
            others: vec![("d".to_string(), others)],
        }
    }

    #[test]
    fn the_conservative_model_allows_old_and_new_but_not_garbage() {
        let w = catalog::real()
            .into_iter()
            .find(|w| w.name == "write-existing")
            .unwrap();
        let allowed = allowed(&w, Model::Conservative).unwrap();
        let v = |n| Some((workload::content("d/file", n), 0o640));
        assert!(allowed.contains(&state(v(0), 0)));
        assert!(allowed.contains(&state(v(3), 0)));
        assert!(!allowed.contains(&state(Some((b"garbage".to_vec(), 0o640)), 0)));
        assert!(
            !allowed.contains(&state(None, 0)),
            "the target never vanishes"
        );
    }

    #[test]
    fn the_conservative_model_admits_what_ext4_did_without_the_temp_fsync() {
        // Seen on Linux 6.18 ext4: new length, all zeros, the old mode.
        let w = catalog::broken(Broken::NoFileSync);
        let zeros = state(Some((vec![0; 6000], 0o640)), 0);
        assert!(allowed(&w, Model::Conservative).unwrap().contains(&zeros));
    }

    #[test]
    fn workloads_the_simulator_lacks_are_refused() {
        let w = catalog::real()
            .into_iter()
            .find(|w| w.name == "symlink")
            .unwrap();
        assert!(allowed(&w, Model::Conservative).is_err());
    }
}

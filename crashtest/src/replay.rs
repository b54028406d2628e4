//! Replay and check: build each crash state's image, mount it (recovery
//! runs), check the invariants, unmount, optionally `fsck` it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::check::{self, Marks};
use crate::fsys::FsKind;
use crate::record::Recording;
use crate::simcheck::{self, Abstract};
use crate::states::{self, Epoch, State};
use crate::sys::{Loop, Mounted, interrupted};
use crate::workload::Workload;

/// A failing state.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The state.
    pub state: State,
    /// What was wrong.
    pub problems: Vec<String>,
}

/// What checking the states of one recording found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// States checked.
    pub checked: usize,
    /// States that broke an invariant (or did not mount).
    pub failures: Vec<Failure>,
    /// Each state's abstraction, for the simulator cross-check.
    pub seen: BTreeSet<Abstract>,
}

/// Settings for checking.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Parallel workers (each with its own image and mount point).
    pub workers: usize,
    /// Run the filesystem's checker on every image after the check.
    pub fsck: bool,
    /// Where to keep the smallest failing image, if anywhere.
    pub keep_dir: Option<PathBuf>,
}

struct Job<'a> {
    fs: FsKind,
    w: &'a Workload,
    rec: &'a Recording,
    epochs: &'a [Epoch],
    fsck: bool,
}

impl Job<'_> {
    fn marks(&self, state: &State) -> Marks {
        let end = self.epochs[state.epoch].end;
        check::marks(&self.rec.events, end, self.rec.history.ops.len())
    }

    /// Checks one state in the worker's own directory.
    fn one(&self, state: &State, dir: &Path) -> Result<(Vec<String>, Option<Abstract>), String> {
        let img = dir.join("state.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        states::build(&self.rec.base, &self.rec.events, self.epochs, state, &img)
            .map_err(|e| format!("building the image: {e}"))?;
        let marks = self.marks(state);
        let mut problems;
        let mut seen = None;
        {
            let mut lo = Loop::attach(&img, false)?;
            lo.btrfs = self.fs == FsKind::Btrfs;
            match Mounted::mount(&lo.dev, &mnt, self.fs.name(), self.fs.mount_options()) {
                Err(e) => problems = vec![format!("the image does not mount: {e}")],
                Ok(m) => {
                    problems = check::check(
                        &mnt,
                        &self.w.tracked,
                        &self.w.symlinks,
                        &self.rec.history,
                        &marks,
                    )?;
                    problems.extend(check::check_sets(&mnt, &self.w.sets, &self.rec.history)?);
                    if self.w.sim_check {
                        seen = Some(simcheck::abstract_state(&mnt, self.w)?);
                    }
                    m.unmount()?;
                }
            }
        }
        if self.fsck
            && let Err(e) = self.fs.fsck(&img)
        {
            problems.push(format!("fsck after recovery: {e}"));
        }
        Ok((problems, seen))
    }
}

/// Checks `states` of a recording; stops early when interrupted.
pub fn check_states(
    fs: FsKind,
    w: &Workload,
    rec: &Recording,
    states: &[State],
    work: &Path,
    settings: &Settings,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Outcome, String> {
    let epochs = states::epochs(&rec.events);
    let job = Job {
        fs,
        w,
        rec,
        epochs: &epochs,
        fsck: settings.fsck,
    };
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let outcome = Mutex::new(Outcome::default());
    let error = Mutex::new(None);
    let workers = if fs.parallel() {
        settings.workers.max(1)
    } else {
        1
    };
    std::thread::scope(|scope| {
        for id in 0..workers {
            let (job, next, done, outcome, error) = (&job, &next, &done, &outcome, &error);
            let dir = work.join(format!("worker{id}"));
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= states.len()
                        || interrupted()
                        || error.lock().map_or(true, |e| e.is_some())
                    {
                        break;
                    }
                    match job.one(&states[i], &dir) {
                        Ok((problems, seen)) => {
                            let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
                            o.checked += 1;
                            if let Some(s) = seen {
                                o.seen.insert(s);
                            }
                            if !problems.is_empty() {
                                o.failures.push(Failure {
                                    state: states[i].clone(),
                                    problems,
                                });
                            }
                        }
                        Err(e) => {
                            *error.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(format!("state {}: {e}", states[i].label()));
                        }
                    }
                    progress(done.fetch_add(1, Ordering::SeqCst) + 1);
                }
                let _ = std::fs::remove_file(dir.join("state.img"));
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    if interrupted() {
        return Err("interrupted".to_string());
    }
    let mut outcome = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
    outcome
        .failures
        .sort_by_key(|f| (f.state.chosen.len(), f.state.epoch));
    if let (Some(keep), Some(first)) = (&settings.keep_dir, outcome.failures.first()) {
        keep_image(fs, w, rec, &epochs, first, keep)?;
    }
    Ok(outcome)
}

/// Saves the smallest failing image and prints a command that shows it.
fn keep_image(
    fs: FsKind,
    w: &Workload,
    rec: &Recording,
    epochs: &[Epoch],
    f: &Failure,
    keep: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(keep).map_err(|e| format!("{}: {e}", keep.display()))?;
    let name: String = format!("{}-{}", fs.name(), w.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let img = keep.join(format!("{name}.img"));
    states::build(&rec.base, &rec.events, epochs, &f.state, &img).map_err(|e| e.to_string())?;
    let opts = match fs.mount_options() {
        "" => "loop".to_string(),
        o => format!("loop,{o}"),
    };
    let dir = w
        .tracked
        .first()
        .and_then(|t| Path::new(t).parent())
        .map_or(String::new(), |p| p.display().to_string());
    let cmd = format!(
        "mkdir -p /tmp/crashtest-view && mount -t {} -o {opts} {} /tmp/crashtest-view && ls -la /tmp/crashtest-view/{dir}; umount /tmp/crashtest-view",
        fs.name(),
        img.display()
    );
    let note = format!(
        "{} on {}: state {} ({:?}): {}\nreproduce: {cmd}\n",
        w.name,
        fs.name(),
        f.state.label(),
        f.state.shape,
        f.problems.join("; ")
    );
    std::fs::write(keep.join(format!("{name}.txt")), &note).map_err(|e| e.to_string())?;
    Ok(())
}

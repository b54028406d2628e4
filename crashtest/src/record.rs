//! Recording a workload: make the filesystem, set it up, serve its image
//! through the logging FUSE daemon, attach that as a loop device with
//! direct I/O, mount, run the workload, unmount, and compare the log with
//! the loop device's own counters.

use std::path::Path;

use crate::blocklog::{self, BlockLog, Event, Totals};
use crate::fsys::FsKind;
use crate::states::Base;
use crate::sys::{Loop, Mounted, interrupted};
use crate::workload::{self, History, Workload};
use crate::{fuse, sys};

/// One recorded run of a workload.
#[derive(Debug)]
pub struct Recording {
    /// The disk before the workload's mount.
    pub base: Base,
    /// Writes, flushes and marks, in completion order.
    pub events: Vec<Event>,
    /// The workload's operations and every file version.
    pub history: History,
    /// The log's totals (equal to the loop device's counters).
    pub totals: Totals,
}

fn stop_if_interrupted() -> Result<(), String> {
    if interrupted() {
        Err("interrupted".to_string())
    } else {
        Ok(())
    }
}

/// Records `w` on a fresh `fs` in the work directory `work`.
pub fn record(fs: FsKind, w: &Workload, work: &Path) -> Result<Recording, String> {
    let backing = work.join("backing.img");
    let mnt = work.join("mnt");
    let fuse_dir = work.join("fuse");
    for d in [&mnt, &fuse_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let file =
        std::fs::File::create(&backing).map_err(|e| format!("{}: {e}", backing.display()))?;
    file.set_len(fs.image_size()).map_err(|e| e.to_string())?;
    drop(file);
    fs.mkfs(&backing)?;
    stop_if_interrupted()?;

    // Setup, straight on the image: not part of the log.
    let history = {
        let mut lo = Loop::attach(&backing, false)?;
        lo.btrfs = fs == FsKind::Btrfs;
        let m = Mounted::mount(&lo.dev, &mnt, fs.name(), fs.mount_options())?;
        workload::setup(w, &mnt).map_err(|e| format!("setup of {}: {e}", w.name))?;
        let h = workload::initial(w, &mnt).map_err(|e| format!("setup of {}: {e}", w.name))?;
        m.unmount()?;
        h
    };
    let base = Base::read(&backing).map_err(|e| e.to_string())?;
    stop_if_interrupted()?;

    let log = BlockLog::new();
    let session = fuse::serve(&backing, &fuse_dir, log.clone())
        .map_err(|e| format!("serving the image over FUSE: {e}"))?;
    let result = (|| {
        let mut lo = Loop::attach(&fuse_dir.join(fuse::DISK), true)?;
        // On only now: switching the loop device to direct I/O fsyncs the
        // file once, which is no block-layer flush.
        log.set_on(true);
        lo.btrfs = fs == FsKind::Btrfs;
        let dio = std::fs::read_to_string(format!("/sys/block/{}/loop/dio", lo.name()))
            .unwrap_or_default();
        if dio.trim() != "1" {
            return Err(format!(
                "{} did not take direct I/O: the log would miss writes",
                lo.dev
            ));
        }
        // The counters survive a detach, and loop devices are reused:
        // compare differences.
        let before = read_counters(&lo)?;
        let mut history = history;
        let m = Mounted::mount(&lo.dev, &mnt, fs.name(), fs.mount_options())?;
        let ran = workload::run(w, &mnt, &log, &mut history);
        m.unmount()?;
        ran?;
        // Counters and log read at the same moment: detaching sends one more
        // flush of its own, which belongs to neither.
        let after = read_counters(&lo)?;
        log.set_on(false);
        let events = log.take();
        let counted = Totals {
            write_sectors: after.write_sectors - before.write_sectors,
            flushes: after.flushes - before.flushes,
            zero_sectors: after.zero_sectors - before.zero_sectors,
        };
        drop(lo);
        let totals = blocklog::totals(&events);
        if totals != counted {
            return Err(format!(
                "the block log disagrees with the loop device's counters: log {totals:?}, device {counted:?}"
            ));
        }
        Ok(Recording {
            base,
            events,
            history,
            totals,
        })
    })();
    log.set_on(false);
    drop(session);
    if result.is_err() {
        sys::cleanup(work.to_str().unwrap_or("/nonexistent"));
    }
    let _ = std::fs::remove_file(&backing);
    result
}

fn read_counters(lo: &Loop) -> Result<Totals, String> {
    let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", lo.name()))
        .map_err(|e| format!("loop counters: {e}"))?;
    blocklog::parse_stat(&stat).ok_or_else(|| "loop counters unreadable".to_string())
}

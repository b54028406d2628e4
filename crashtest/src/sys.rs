//! Loop devices, mounts and cleanup, through the standard tools
//! (`losetup`, `mount`, `umount`, `btrfs`).
//!
//! Everything this tool creates lives under one work directory whose path
//! starts with [`PREFIX`] and names this process: mounts below it, loop
//! devices backed by files below it. That is how cleanup finds *ours* and
//! never touches anybody else's. Guards release in `Drop`; [`cleanup`]
//! sweeps whatever a panic or a signal left behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// The start of every work directory's name.
pub const PREFIX: &str = "crashtest.";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Marks the run as interrupted (SIGINT or SIGTERM arrived).
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether SIGINT or SIGTERM arrived: long loops stop and unwind.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Runs a command; its stderr becomes the error on failure.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap_or("")
}

/// An attached loop device, detached on drop.
#[derive(Debug)]
pub struct Loop {
    /// `/dev/loopN`.
    pub dev: String,
    /// Forget it in btrfs's device list before detaching.
    pub btrfs: bool,
}

impl Loop {
    /// `losetup --find --show [--direct-io=on] file`.
    pub fn attach(file: &Path, direct_io: bool) -> Result<Loop, String> {
        let mut args = vec!["--find", "--show"];
        if direct_io {
            args.push("--direct-io=on");
        }
        args.push(p(file));
        let dev = run("losetup", &args)?;
        Ok(Loop { dev, btrfs: false })
    }

    /// `loopN`, for /sys/block.
    pub fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if self.btrfs {
            // Every crash image of one recording has the same filesystem
            // id: a stale entry would make the next mount pick this device.
            let _ = run("btrfs", &["device", "scan", "--forget", &self.dev]);
        }
        let _ = run("losetup", &["--detach", &self.dev]);
    }
}

/// A mounted filesystem, unmounted on drop.
#[derive(Debug)]
pub struct Mounted {
    /// The mount point.
    pub dir: PathBuf,
}

impl Mounted {
    /// `mount -t fstype -o options dev dir`.
    pub fn mount(dev: &str, dir: &Path, fstype: &str, options: &str) -> Result<Mounted, String> {
        let mut args = vec!["-t", fstype];
        if !options.is_empty() {
            args.extend(["-o", options]);
        }
        args.extend([dev, p(dir)]);
        run("mount", &args)?;
        Ok(Mounted {
            dir: dir.to_path_buf(),
        })
    }

    /// Unmounts now and reports an error. A few retries: a child that
    /// another thread is forking holds copies of our open files until its
    /// `exec` closes them, and that makes the mount briefly busy.
    pub fn unmount(self) -> Result<(), String> {
        let mut r = run("umount", &[p(&self.dir)]);
        for _ in 0..50 {
            if r.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            r = run("umount", &[p(&self.dir)]);
        }
        if r.is_ok() {
            std::mem::forget(self);
        }
        r.map(|_| ())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if run("umount", &[p(&self.dir)]).is_err() {
            let _ = run("umount", &["--lazy", p(&self.dir)]);
        }
    }
}

/// Mount points under `root`, deepest first.
pub fn mounts_under(root: &str) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(root))
        .map(str::to_string)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

/// Loop devices whose backing file lies under `root`.
pub fn loops_under(root: &str) -> Vec<String> {
    let text = run(
        "losetup",
        &[
            "--list",
            "--noheadings",
            "--raw",
            "--output",
            "NAME,BACK-FILE",
        ],
    )
    .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, back)| back.starts_with(root))
        .map(|(dev, _)| dev.to_string())
        .collect()
}

/// Releases every mount and loop device under `root`: the safety net
/// after a panic or a signal (the guards normally do it).
pub fn cleanup(root: &str) {
    for m in mounts_under(root) {
        if run("umount", &[&m]).is_err() {
            let _ = run("umount", &["--lazy", &m]);
        }
    }
    for dev in loops_under(root) {
        let _ = run("btrfs", &["device", "scan", "--forget", &dev]);
        let _ = run("losetup", &["--detach", &dev]);
    }
    // The FUSE mount may only go away once its loop device is gone.
    for m in mounts_under(root) {
        let _ = run("umount", &["--lazy", &m]);
    }
}

/// Whether a program is on the PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

//! Cleanup is part of correctness: a crashtest run stopped by SIGINT or
//! SIGTERM, while recording or while checking, leaves no mount, loop device
//! or FUSE session behind. Needs root, /dev/fuse and mkfs.ext4; skips with
//! a note otherwise. Ours are found by the unique work directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".to_string());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".to_string());
    }
    ["mkfs.ext4", "losetup", "mount", "umount"]
        .into_iter()
        .find(|t| !have(t))
        .map(|t| format!("{t} missing"))
}

fn mounts_under(root: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(root))
        .map(str::to_string)
        .collect()
}

fn loops_under(root: &str) -> Vec<String> {
    let out = Command::new("losetup")
        .args([
            "--list",
            "--noheadings",
            "--raw",
            "--output",
            "NAME,BACK-FILE",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, back)| back.starts_with(root))
        .map(|(dev, _)| dev.to_string())
        .collect()
}

/// Restores the machine even when the test fails: kills the run and
/// releases whatever it left under our directory.
struct Guard {
    root: PathBuf,
    child: Option<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let root = self.root.to_string_lossy().to_string();
        for m in mounts_under(&root) {
            let _ = Command::new("umount").args(["--lazy", &m]).status();
        }
        for dev in loops_under(&root) {
            let _ = Command::new("losetup").args(["--detach", &dev]).status();
        }
        for m in mounts_under(&root) {
            let _ = Command::new("umount").args(["--lazy", &m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Starts a long run, waits until a mount whose path contains `phase`
/// appears under our directory, sends `signal`, and checks that nothing of
/// ours is left.
fn stop_during(phase: &str, signal: rustix::process::Signal, tag: &str) {
    if let Some(why) = skip_reason() {
        println!("skipped: {why} (needs root, /dev/fuse and e2fsprogs)");
        return;
    }
    let root = PathBuf::from(format!(
        "/dev/shm/crashtest-cleanup-test-{}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&root).unwrap();
    let mut guard = Guard {
        root: root.clone(),
        child: None,
    };
    let child = Command::new(env!("CARGO_BIN_EXE_crashtest"))
        .args([
            "--fs",
            "ext4",
            "--no-broken",
            "--states",
            "100000",
            "--workdir",
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    guard.child = Some(child);
    let root_s = root.to_string_lossy().to_string();
    let start = Instant::now();
    loop {
        if mounts_under(&root_s).iter().any(|m| m.contains(phase)) {
            break;
        }
        let status = guard.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            status.is_none(),
            "crashtest ended before the {phase} phase: {status:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {phase} mount appeared"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    rustix::process::kill_process(pid, signal).unwrap();
    let child = guard.child.take().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("interrupted"), "stderr: {stderr}");
    assert_eq!(
        mounts_under(&root_s),
        Vec::<String>::new(),
        "mounts left behind"
    );
    // A loop device still held while the filesystem on it is torn down is
    // detached by the kernel once its last user closes it (autoclear), a
    // moment after `losetup -d` returned: give that a bounded moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !loops_under(&root_s).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        loops_under(&root_s),
        Vec::<String>::new(),
        "loop devices left behind"
    );
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(left.is_empty(), "work directory left behind: {left:?}");
}

#[test]
fn sigint_while_recording_releases_everything() {
    // The FUSE session is mounted only while a workload is recorded.
    stop_during("/fuse", rustix::process::Signal::INT, "int");
}

#[test]
fn sigterm_while_checking_releases_everything() {
    // Worker mounts exist only while crash states are checked.
    stop_during("/worker", rustix::process::Signal::TERM, "term");
}

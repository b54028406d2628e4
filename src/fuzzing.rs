//! Fuzz harness bodies, as plain functions of the input bytes.
//!
//! The cargo-fuzz targets in `fuzz/` call these, and so does a normal test
//! that replays `fuzz/corpus/*` and `fuzz/regressions/*`, so stable CI runs
//! every saved input without the fuzzer. Each function panics (the fuzzer's
//! "crash") when an invariant breaks; any input must otherwise be accepted.

use std::ffi::OsString;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Durability, Options};

#[cfg(unix)]
mod plan;

/// Reads typed values from fuzz bytes; past the end every read is zero.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// Wraps `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, i| acc | u64::from(self.u8()) << (8 * i))
    }

    /// One bit of the next byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u16()) % n
    }

    /// Up to `max` bytes: a length byte pair, then that many bytes.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = usize::from(self.u16()) % (max + 1);
        let start = self.pos.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.pos = start + len;
        &self.data[start..end]
    }
}

/// A file name from fuzz bytes: 1 to 255 bytes, no `/` or NUL, never `.` or `..`.
pub fn file_name(input: &mut Input<'_>) -> OsString {
    let raw = input.bytes(255);
    let mut name: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'/' || b == 0 { b'_' } else { b })
        .collect();
    if name.is_empty() || name == b"." || name == b".." {
        name.insert(0, b'f');
    }
    name.truncate(255);
    os_from_bytes(name)
}

#[cfg(unix)]
fn os_from_bytes(bytes: Vec<u8>) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes)
}

#[cfg(not(unix))]
fn os_from_bytes(bytes: Vec<u8>) -> OsString {
    OsString::from(String::from_utf8_lossy(&bytes).into_owned())
}

/// `temp_name` target: for any target name, the temp name is valid,
/// hidden, at most 255 bytes, recognised by `sweep`, and differs for
/// different random bits.
pub fn temp_name(data: &[u8]) {
    let mut input = Input::new(data);
    let name = file_name(&mut input);
    let random = input.u64();
    let temp = crate::temp_name::temp_name(&name, random);
    let bytes = temp.as_encoded_bytes();
    assert!(bytes.len() <= 255, "temp name longer than NAME_MAX");
    assert_eq!(bytes[0], b'.', "temp name not hidden");
    assert!(
        !bytes.contains(&b'/') && !bytes.contains(&0),
        "separator or NUL in temp name"
    );
    assert_ne!(temp, name.as_os_str(), "temp name equals the target name");
    assert!(
        crate::temp_name::is_temp_name(&temp),
        "sweep would not recognise the temp"
    );
    let other = crate::temp_name::temp_name(&name, random ^ (1 << (input.u8() % 60)));
    assert_ne!(temp, other, "different random bits gave the same temp name");
    // The target's own name is a prefix of the temp's, shortened at most,
    // followed by the mark that no ordinary file has.
    let tail = crate::temp_name::MARK.len() + crate::temp_name::RANDOM_LEN + ".tmp".len();
    let kept = &bytes[1..bytes.len() - tail];
    assert!(name.as_encoded_bytes().starts_with(kept));
    assert!(bytes[bytes.len() - tail..].starts_with(crate::temp_name::MARK));
}

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("crashsafe-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Temp-shaped names in `dir`.
fn leftovers(dir: &Path) -> Vec<OsString> {
    std::fs::read_dir(dir)
        .expect("list scratch dir")
        .map(|e| e.expect("dir entry").file_name())
        .filter(|n| crate::temp_name::is_temp_name(n))
        .collect()
}

/// `real_fs` target: the public API on a real directory with arbitrary
/// names, options, contents, chunk sizes and seeks. Never a panic from the
/// library; on `Ok` the file holds exactly the bytes written; on `Err` the
/// old content is intact, the error names the target, and no temp is left.
pub fn real_fs(data: &[u8]) {
    let mut input = Input::new(data);
    let scratch = Scratch::new();
    // The target lives in `a/`; a symlink at it points into `b/`, so no
    // fuzzed name can collide with the link's target.
    let dir = &scratch.0.join("a");
    let other = &scratch.0.join("b");
    std::fs::create_dir(dir).expect("create a/");
    std::fs::create_dir(other).expect("create b/");
    let name = file_name(&mut input);
    let path = dir.join(&name);
    // What is there first: nothing, a file, a symlink to a file, a directory.
    let old: Option<Vec<u8>> = match input.below(4) {
        0 => None,
        1 => {
            let content = input.bytes(64).to_vec();
            std::fs::write(&path, &content).expect("seed file");
            Some(content)
        }
        2 => {
            let content = input.bytes(64).to_vec();
            std::fs::write(other.join("real"), &content).expect("seed link target");
            symlink(Path::new("../b/real"), &path);
            Some(content)
        }
        _ => {
            std::fs::create_dir(&path).expect("seed dir");
            None
        }
    };
    let is_dir = path.is_dir() && !path.is_symlink();
    let mut opts = Options::new();
    opts.durability(if input.bool() {
        Durability::Durable
    } else {
        Durability::Consistent
    })
    .follow_symlinks(input.u8() % 4 != 0)
    .create_new(input.u8() % 4 == 0)
    .backup(input.bool())
    .unnamed_temp(input.bool());
    if input.bool() {
        opts.mode(0o600 | u32::from(input.u8() & 0o77));
    }
    let mut expected: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    let outcome = opts.open(&path).and_then(|mut file| {
        for _ in 0..input.below(8) {
            if input.u8() % 4 == 0 {
                let to = input.below(256);
                file.seek(SeekFrom::Start(to as u64)).expect("seek");
                pos = to;
            }
            let chunk = input.bytes(512);
            file.write_all(chunk).expect("write to a healthy temp");
            // An empty write past the end does not extend the file.
            if !chunk.is_empty() {
                if expected.len() < pos + chunk.len() {
                    expected.resize(pos + chunk.len(), 0);
                }
                expected[pos..pos + chunk.len()].copy_from_slice(chunk);
                pos += chunk.len();
            }
        }
        match input.u8() % 8 {
            0 => file.discard().map(|()| false),
            1 => {
                drop(file);
                Ok(false)
            }
            _ => file.commit().map(|()| true),
        }
    });
    // Where the content lands: a followed symlink replaces its target file.
    let followed = opts.follow_symlinks && path.is_symlink();
    let landed = if followed {
        other.join("real")
    } else {
        path.clone()
    };
    let link_target_before = std::fs::read(other.join("real")).ok();
    match outcome {
        Ok(true) => {
            assert!(!is_dir, "a directory target was replaced");
            assert_eq!(std::fs::read(&landed).expect("read result"), expected);
            if followed {
                assert!(path.is_symlink(), "the followed symlink was replaced");
            } else {
                let after = std::fs::read(other.join("real")).ok();
                assert_eq!(
                    after, link_target_before,
                    "a replaced link changed its old target"
                );
            }
        }
        Ok(false) => {
            if let Some(old) = &old {
                assert_eq!(
                    &std::fs::read(&landed).expect("read old"),
                    old,
                    "discard changed the target"
                );
            }
        }
        Err(e) => {
            assert_eq!(e.target(), path, "error names another path");
            assert!(
                !e.target_replaced(),
                "a healthy filesystem failed after the rename: {e}"
            );
            let shown = e.to_string();
            assert!(
                shown.contains(&*path.to_string_lossy()),
                "message lacks the path: {shown}"
            );
            if let Some(old) = &old {
                assert_eq!(
                    &std::fs::read(&landed).expect("read old"),
                    old,
                    "failed call changed the target"
                );
            }
        }
    }
    assert_eq!(leftovers(dir), Vec::<OsString>::new(), "temp left behind");
    assert_eq!(leftovers(other), Vec::<OsString>::new(), "temp left behind");
}

/// `plan` target: an arbitrary sequence of operations, faults and crashes
/// on the simulator, checked after every step against a model of what the
/// process must see and what a crash may leave.
///
/// # What a plan covers
///
/// - **Starting state**: `/d` and usually `/e`; two or three targets
///   `/d/a`, `/d/b`, `/e/c`, each absent, a regular file (content length,
///   mode with or without setuid/setgid/sticky, owned by the writer or by
///   someone else), a symlink (absolute or relative) to a file of its own
///   in the other directory, a dangling symlink, a symlink to another
///   target (chains and cycles), a directory, a hard-linked file, or a
///   symlink to itself. The writer is root or an ordinary user, with one of
///   four umasks, on a filesystem with or without `RENAME_NOREPLACE` and
///   hard links.
/// - **Operations** (at most 8): one-shot `write`; streaming `open`, then
///   writes of 0 bytes to 9000 (past the 8 KiB buffer) and seeks (from the
///   start, the current position, the end, negative ones included), then
///   `commit`, `discard` or drop; `update` (read-modify-write, sometimes
///   with a failing function); a `Batch` of up to three files, committed or
///   dropped; `sweep` of a directory. Each with its own [`Options`]:
///   durability, mode, symlinks followed or replaced, `create_new`,
///   `backup`, `unnamed_temp`, `HardLinks::Refuse`, `preserve_owner`.
/// - **Faults**: the Nth call from now, or the next call of a kind, fails
///   with `EIO`, `ENOSPC`, `EDQUOT`, `EACCES`, `EINTR`, `EPERM` or
///   `EINVAL`; at most two pending at a time.
/// - **Crashes** (at most 2): a crash point inside the last operation, a
///   model (any POSIX filesystem, ext4 with and without `auto_da_alloc`,
///   `kill -9`) and a sampling seed; every image of that point is checked,
///   and the run carries on from the image the input picks.
///
/// # What is checked
///
/// The model keeps, for every name involved (targets, symlink targets,
/// second names, backups `name~`), the version the process sees and the
/// versions a crash may show. After every operation:
///
/// - Without a fault, the call fails exactly when the model says it must
///   (missing directory, symlink loop, directory, `create_new` on an
///   existing name, hard link refused, unreadable file for `update`, no
///   `RENAME_NOREPLACE` and no hard links, backup without hard links).
/// - `Ok` (or an error with `target_replaced()`): the file behind the name
///   holds exactly the new bytes with the expected mode and owner; a
///   followed symlink is unchanged; the backup holds the old version.
///   An error without `target_replaced()`: the old version. Every other
///   name is unchanged. `update`'s function got the current content.
/// - No temp is left unless the error names it (`temp_left`), or a drop
///   whose cleanup hit a fault left it; no other new name appears.
/// - A failed data fsync gives an error and nothing is published after it;
///   a failed directory fsync gives an error. Errors name the target.
///
/// After a crash, in every image: each name shows a version it held before
/// or during the interrupted operation (at the last point: one it may hold
/// after it), so a version committed `Ok` with `Durability::Durable`
/// survives; only temp-shaped names are new, no more than the operations
/// since the last recovery created.
///
/// # Input layout
///
/// Two bytes (flags, temp-name seed), two per target, then steps until the
/// input ends: one byte picks the kind (write 3/10, stream 2/10, update,
/// batch, fault, crash, sweep 1/10 each), followed by that step's bytes.
#[cfg(unix)]
pub fn plan(data: &[u8]) {
    plan::run(data);
}

#[cfg(unix)]
fn symlink(to: &Path, at: &Path) {
    std::os::unix::fs::symlink(to, at).expect("seed symlink");
}

#[cfg(not(unix))]
fn symlink(_: &Path, _: &Path) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Every saved input of `target` (seed corpus and regressions).
    fn saved_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut inputs = Vec::new();
        for sub in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(sub).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                inputs.push((path, data));
            }
        }
        inputs
    }

    fn replay(target: &str, run: fn(&[u8])) {
        let inputs = saved_inputs(target);
        assert!(
            !inputs.is_empty(),
            "no saved inputs for {target}: the seed corpus is missing"
        );
        for (path, data) in inputs {
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{target} fails on {}", path.display());
        }
    }

    #[test]
    fn replay_temp_name() {
        replay("temp_name", temp_name);
    }

    #[test]
    fn replay_real_fs() {
        replay("real_fs", real_fs);
    }

    #[test]
    fn replay_plan() {
        replay("plan", plan);
    }

    #[test]
    fn input_reads_past_the_end_as_zero() {
        let mut input = Input::new(&[7]);
        assert_eq!(input.u8(), 7);
        assert_eq!(input.u64(), 0);
        assert!(input.bytes(10).is_empty());
        assert!(input.is_empty());
    }
}

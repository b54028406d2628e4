//! The invariants, checked on a recovered crash image.
//!
//! For a state in epoch *e* the power may have failed at any moment between
//! its last chosen write and the flush that ends the epoch: the same image
//! is possible throughout. So an operation counts as *acknowledged* if its
//! `Ack` mark lies before that flush (the strongest sound choice: a correct
//! `Durable` operation flushed everything it promised before returning),
//! and a version may appear if its operation began before that flush.
//!
//! - Each tracked file is absent (only while no `Durable` write of it was
//!   acknowledged and it did not exist before) or holds exactly one
//!   version, with that version's mode and owner.
//! - That version is not older than the last acknowledged `Durable` one.
//! - With `backup`: when the target holds the version written by operation
//!   *j*, `name~` holds the version before it or (during operation *j+1*)
//!   that same version: the old version is always reachable.

use std::path::Path;

use crate::blocklog::Event;
use crate::workload::{History, Version, read_version};

/// Which operations had begun and which were acknowledged at a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// Began before the crash.
    pub begun: Vec<bool>,
    /// Returned `Ok` before the crash.
    pub acked: Vec<bool>,
}

/// The marks before log index `end`.
pub fn marks(events: &[Event], end: usize, ops: usize) -> Marks {
    let mut m = Marks {
        begun: vec![false; ops],
        acked: vec![false; ops],
    };
    for e in &events[..end] {
        match e {
            Event::Begin(i) if *i < ops => m.begun[*i] = true,
            Event::Ack(i) if *i < ops => m.acked[*i] = true,
            _ => {}
        }
    }
    m
}

/// How a file's content looks, for messages.
pub fn describe(content: &[u8], versions: &[Version]) -> String {
    if let Some(v) = versions.iter().find(|v| v.content == content) {
        return match v.op {
            Some(op) => format!("the version of op #{op}"),
            None => "the version before the workload".to_string(),
        };
    }
    if content.is_empty() {
        return "empty".to_string();
    }
    if content.iter().all(|&b| b == 0) {
        return format!("{} zero bytes", content.len());
    }
    let prefix_of = versions
        .iter()
        .find(|v| v.content.len() > content.len() && v.content.starts_with(content));
    match prefix_of {
        Some(v) => format!("a {}-byte prefix of op {:?}'s version", content.len(), v.op),
        None => format!("{} bytes matching no version", content.len()),
    }
}

/// Checks one file of the image; returns the violations.
fn check_file(root: &Path, path: &str, h: &History, m: &Marks) -> Result<Vec<String>, String> {
    let versions = h.of(path);
    let mut out = Vec::new();
    let written_by = |op: usize| h.ops[op].files.contains(&path);
    // The last acknowledged Durable operation on this file sets the floor.
    let floor = (0..h.ops.len())
        .filter(|&i| m.acked[i] && h.ops[i].durable && written_by(i))
        .max();
    let allowed: Vec<&Version> = versions
        .iter()
        .filter(|v| match v.op {
            None => floor.is_none(),
            Some(op) => m.begun[op] && floor.is_none_or(|f| op >= f),
        })
        .collect();
    let existed = versions.first().is_some_and(|v| v.op.is_none());
    let actual =
        read_version(&root.join(path), None).map_err(|e| format!("reading {path}: {e}"))?;
    let Some(actual) = actual else {
        if existed {
            out.push(format!(
                "{path} is missing (it existed before the workload)"
            ));
        } else if let Some(f) = floor {
            out.push(format!(
                "{path} is missing although op #{f} ({}) was acknowledged",
                h.ops[f].label
            ));
        }
        return Ok(out);
    };
    match allowed.iter().find(|v| v.content == actual.content) {
        None => {
            let why = match floor {
                Some(f) => format!(" (op #{f} {} was acknowledged)", h.ops[f].label),
                None => String::new(),
            };
            out.push(format!(
                "{path} holds {}, not an allowed version{why}",
                describe(&actual.content, versions)
            ));
        }
        Some(v) => {
            if (v.mode, v.uid, v.gid) != (actual.mode, actual.uid, actual.gid) {
                out.push(format!(
                    "{path} holds {} with mode {:o} owner {}:{}, but that version had mode {:o} owner {}:{}",
                    describe(&actual.content, versions),
                    actual.mode,
                    actual.uid,
                    actual.gid,
                    v.mode,
                    v.uid,
                    v.gid
                ));
            }
            if let Some(op) = v.op
                && h.ops[op].backup
            {
                out.extend(check_backup(root, path, versions, v)?);
            }
        }
    }
    Ok(out)
}

fn check_backup(
    root: &Path,
    path: &str,
    versions: &[Version],
    current: &Version,
) -> Result<Vec<String>, String> {
    let Some(at) = versions.iter().position(|v| v == current) else {
        return Ok(Vec::new());
    };
    let Some(before) = at.checked_sub(1).map(|i| &versions[i]) else {
        // A new file has no backup.
        return Ok(Vec::new());
    };
    let backup = format!("{path}~");
    let found =
        read_version(&root.join(&backup), None).map_err(|e| format!("reading {backup}: {e}"))?;
    let ok = found
        .as_ref()
        .is_some_and(|b| b.content == before.content || b.content == current.content);
    if ok {
        Ok(Vec::new())
    } else {
        let what = found.map_or("missing".to_string(), |b| describe(&b.content, versions));
        Ok(vec![format!(
            "{path} holds op {:?}'s version but {backup} is {what}: the version before it is lost",
            current.op
        )])
    }
}

/// Checks every tracked file, and that each written-through symlink is
/// still the same symlink (the library replaces its target, never it).
pub fn check(
    root: &Path,
    tracked: &[&'static str],
    links: &[(&'static str, &'static str)],
    h: &History,
    m: &Marks,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for path in tracked {
        out.extend(check_file(root, path, h, m)?);
    }
    for (link, target) in links {
        match std::fs::read_link(root.join(link)) {
            Ok(t) if t == Path::new(target) => {}
            Ok(t) => out.push(format!("{link} now points to {}", t.display())),
            Err(e) => out.push(format!("{link} is no longer a symlink: {e}")),
        }
    }
    Ok(out)
}

// issue 16: all-or-nothing over a set of files.

/// Checks that the members of each set come from one operation: all of
/// the version before the workload (or all absent), or all of the version
/// one operation wrote. Per-file rules (allowed, not older than the last
/// acknowledged) are [`check`]'s.
pub fn check_sets(
    root: &Path,
    sets: &[Vec<&'static str>],
    h: &History,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for set in sets {
        // Per member: a description, and which operation's version it is
        // (None: absent; Some(None): before the workload; an unknown
        // content counts as its own kind, reported by `check`).
        let mut seen: Vec<(&str, String, Option<Option<usize>>)> = Vec::new();
        for path in set {
            let actual =
                read_version(&root.join(path), None).map_err(|e| format!("reading {path}: {e}"))?;
            let (what, from) = match actual {
                None => ("absent".to_string(), None),
                Some(a) => {
                    let versions = h.of(path);
                    let op = versions
                        .iter()
                        .find(|v| v.content == a.content)
                        .map(|v| v.op);
                    (
                        describe(&a.content, versions),
                        Some(op.unwrap_or(Some(usize::MAX))),
                    )
                }
            };
            seen.push((path, what, from));
        }
        if seen.windows(2).any(|w| w[0].2 != w[1].2) {
            let parts: Vec<String> = seen.iter().map(|(p, w, _)| format!("{p}: {w}")).collect();
            out.push(format!("the set is a mix: {}", parts.join(", ")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::OpInfo;

    fn v(op: Option<usize>, byte: u8) -> Version {
        Version {
            op,
            content: vec![byte; 10],
            mode: 0o640,
            uid: 1000,
            gid: 1000,
        }
    }

    fn history() -> History {
        let op = |durable| OpInfo {
            label: "write".to_string(),
            files: vec!["f"],
            durable,
            backup: false,
        };
        History {
            ops: vec![op(true), op(false)],
            versions: vec![("f", vec![v(None, 0), v(Some(0), 1), v(Some(1), 2)])],
        }
    }

    fn with_file(byte: Option<u8>, mode: u32, h: &History, m: &Marks) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "crashtest-check-{}-{:?}-{mode}-{}",
            std::process::id(),
            byte,
            m.acked.iter().filter(|a| **a).count()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        let _ = std::fs::remove_file(&f);
        if let Some(b) = byte {
            std::fs::write(&f, vec![b; 10]).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut h = h.clone();
        // The test runs as whoever runs it: expect that owner.
        let me = std::fs::metadata(&dir).map(|md| {
            use std::os::unix::fs::MetadataExt;
            (md.uid(), md.gid())
        });
        let (uid, gid) = me.unwrap();
        for (_, vs) in &mut h.versions {
            for v in vs {
                v.uid = uid;
                v.gid = gid;
            }
        }
        let out = check(&dir, &["f"], &[], &h, m).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn marks_before_the_end_count() {
        let log = vec![
            Event::Begin(0),
            Event::Flush,
            Event::Ack(0),
            Event::Begin(1),
        ];
        let m = marks(&log, 3, 2);
        assert_eq!(m.begun, vec![true, false]);
        assert_eq!(m.acked, vec![true, false]);
    }

    #[test]
    fn old_version_is_fine_until_a_durable_ack() {
        let h = history();
        let nothing = Marks {
            begun: vec![true, false],
            acked: vec![false, false],
        };
        assert!(with_file(Some(0), 0o640, &h, &nothing).is_empty());
        assert!(with_file(Some(1), 0o640, &h, &nothing).is_empty());
        // Op 1 had not begun: its version cannot be there.
        assert_eq!(with_file(Some(2), 0o640, &h, &nothing).len(), 1);
        let acked = Marks {
            begun: vec![true, true],
            acked: vec![true, false],
        };
        let v = with_file(Some(0), 0o640, &h, &acked);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("acknowledged"), "{v:?}");
        assert!(with_file(Some(2), 0o640, &h, &acked).is_empty());
        assert_eq!(with_file(None, 0o640, &h, &acked).len(), 1);
    }

    #[test]
    fn a_torn_file_or_a_wrong_mode_is_a_violation() {
        let h = history();
        let m = Marks {
            begun: vec![true, true],
            acked: vec![false, false],
        };
        let v = with_file(Some(7), 0o640, &h, &m);
        assert!(v[0].contains("matching no version"), "{v:?}");
        let v = with_file(Some(1), 0o644, &h, &m);
        assert!(v[0].contains("mode 644"), "{v:?}");
    }

    #[test]
    fn a_set_from_two_operations_is_a_mix() {
        let dir = std::env::temp_dir().join(format!("crashtest-sets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let h = History {
            ops: Vec::new(),
            versions: vec![
                ("a", vec![v(None, 0), v(Some(0), 1)]),
                ("b", vec![v(None, 0), v(Some(0), 1)]),
            ],
        };
        let sets = vec![vec!["a", "b"]];
        let run = |a: Option<u8>, b: Option<u8>| {
            for (name, byte) in [("a", a), ("b", b)] {
                let _ = std::fs::remove_file(dir.join(name));
                if let Some(x) = byte {
                    std::fs::write(dir.join(name), vec![x; 10]).unwrap();
                }
            }
            check_sets(&dir, &sets, &h).unwrap()
        };
        assert!(run(Some(0), Some(0)).is_empty());
        assert!(run(Some(1), Some(1)).is_empty());
        assert!(run(None, None).is_empty());
        let mix = run(Some(1), Some(0));
        assert!(mix[0].contains("a mix"), "{mix:?}");
        assert_eq!(run(Some(1), None).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn descriptions_name_zeros_and_prefixes() {
        let vs = vec![v(Some(3), 5)];
        assert_eq!(describe(&[0; 4], &vs), "4 zero bytes");
        assert_eq!(describe(&[], &vs), "empty");
        assert!(describe(&[5; 3], &vs).contains("prefix"));
        assert_eq!(describe(&[5; 10], &vs), "the version of op #3");
    }
}

//! The workloads this tool runs: every public operation and option, and
//! the protocol's deliberately broken variants.

use crashsafe::sim::Broken;

use crate::workload::{Opts, Step, Workload};

fn plain(name: &str) -> Workload {
    Workload {
        name: name.to_string(),
        dirs: vec!["d"],
        files: Vec::new(),
        symlinks: Vec::new(),
        stale_temps: Vec::new(),
        steps: Vec::new(),
        tracked: vec!["d/file"],
        sim_check: true,
        broken: None,
        sets: Vec::new(),
    }
}

/// issue 16: a `DirReplace` set of four files in `s`, replaced three times
/// (from an existing set, or from none; `fsync_each`: the per-file flush).
fn dir_set(name: &str, existing: bool, broken: bool, fsync_each: bool) -> Workload {
    const MEMBERS: [&str; 4] = ["s/f0", "s/f1", "s/f2", "s/f3"];
    let mut w = plain(name);
    if existing {
        w.dirs = vec!["s"];
        w.files = MEMBERS.iter().map(|m| (*m, 0, 0o640)).collect();
    } else {
        w.dirs = Vec::new();
    }
    w.steps = (1..=3)
        .map(|version| Step::DirSet {
            dir: "s",
            members: MEMBERS.to_vec(),
            version,
            broken,
            fsync_each,
        })
        .collect();
    w.tracked = MEMBERS.to_vec();
    w.sets = vec![MEMBERS.to_vec()];
    w.sim_check = false;
    w
}

/// issue 16: the `DirReplace` workloads of the broken kind: the commit
/// exchanges before the set is flushed. Reported as a `NoFileSync`
/// variant (the same mistake), so it must be caught.
pub fn broken_sets() -> Vec<Workload> {
    let mut w = dir_set("broken dir-set NoFlush", true, true, false);
    w.broken = Some(Broken::NoFileSync);
    vec![w]
}

fn write(path: &'static str, version: u32, opts: Opts) -> Step {
    Step::Write {
        path,
        version,
        opts,
        fails: false,
    }
}

/// The workloads of the real protocol.
pub fn real() -> Vec<Workload> {
    let o = Opts::default;
    let mut out = Vec::new();

    let mut w = plain("write-new");
    w.steps = vec![write("d/file", 1, o()), write("d/file", 2, o())];
    out.push(w);

    let mut w = plain("write-existing");
    w.files = vec![("d/file", 0, 0o640)];
    w.steps = (1..=3).map(|v| write("d/file", v, o())).collect();
    out.push(w);

    let mut w = plain("consistent");
    w.files = vec![("d/file", 0, 0o640)];
    let c = Opts {
        consistent: true,
        ..o()
    };
    w.steps = vec![
        write("d/file", 1, c),
        write("d/file", 2, c),
        write("d/file", 3, o()),
    ];
    out.push(w);

    let mut w = plain("backup");
    w.files = vec![("d/file", 0, 0o640)];
    let b = Opts {
        backup: true,
        ..o()
    };
    w.steps = (1..=3).map(|v| write("d/file", v, b)).collect();
    w.sim_check = false;
    out.push(w);

    let mut w = plain("create-new");
    let n = Opts {
        create_new: true,
        ..o()
    };
    w.steps = vec![
        write("d/file", 1, n),
        Step::Write {
            path: "d/file",
            version: 2,
            opts: n,
            fails: true,
        },
    ];
    out.push(w);

    let mut w = plain("unnamed-temp");
    w.files = vec![("d/file", 0, 0o640)];
    let u = Opts {
        unnamed_temp: true,
        ..o()
    };
    w.steps = vec![
        write("d/file", 1, u),
        write("d/file", 2, u),
        write("d/new", 1, u),
    ];
    w.tracked = vec!["d/file", "d/new"];
    w.sim_check = false;
    out.push(w);

    let mut w = plain("symlink");
    w.files = vec![("d/real", 0, 0o600)];
    w.symlinks = vec![("d/link", "real")];
    w.steps = vec![write("d/link", 1, o()), write("d/link", 2, o())];
    w.tracked = vec!["d/real"];
    w.sim_check = false;
    out.push(w);

    let mut w = plain("stream-4mib");
    w.files = vec![("d/file", 0, 0o644)];
    w.steps = (1..=2)
        .map(|v| Step::Stream {
            path: "d/file",
            version: v,
            len: 4 << 20,
            opts: o(),
        })
        .collect();
    w.sim_check = false;
    out.push(w);

    let mut w = plain("update");
    w.files = vec![("d/file", 0, 0o640)];
    w.steps = (1..=3)
        .map(|v| Step::Update {
            path: "d/file",
            version: v,
            opts: o(),
        })
        .collect();
    out.push(w);

    let mut w = plain("batch");
    w.dirs = vec!["a", "b", "c"];
    w.files = vec![("a/one", 0, 0o640), ("b/two", 0, 0o600)];
    let m = Opts {
        mode: Some(0o600),
        ..o()
    };
    let u = Opts {
        unnamed_temp: true,
        ..o()
    };
    w.steps = vec![
        Step::Batch {
            entries: vec![("a/one", 1, o()), ("b/two", 1, u), ("c/three", 1, m)],
            opts: o(),
        },
        Step::Batch {
            entries: vec![
                ("a/one", 2, m),
                ("b/two", 2, o()),
                ("c/three", 2, u),
                ("a/four", 2, o()),
            ],
            opts: o(),
        },
    ];
    w.tracked = vec!["a/one", "b/two", "c/three", "a/four"];
    w.sim_check = false;
    out.push(w);

    let mut w = plain("sweep");
    w.files = vec![("d/file", 0, 0o640), ("d/notes", 0, 0o644)];
    w.stale_temps = vec!["d/.file.aaaaaaaaaaaa.tmp", "d/.notes.bbbbbbbbbbbb.tmp"];
    w.steps = vec![
        write("d/file", 1, o()),
        Step::Sweep { dir: "d" },
        write("d/file", 2, o()),
    ];
    w.tracked = vec!["d/file", "d/notes"];
    w.sim_check = false;
    out.push(w);

    // issue 16
    out.push(dir_set("dir-set-existing", true, false, false));
    out.push(dir_set("dir-set-new", false, false, false));
    // The flush used where `syncfs` is not trusted (FUSE, NFS, overlayfs).
    out.push(dir_set("dir-set-fsync-each", true, false, true));

    out
}

/// The broken variants run as workloads; the first two must be caught on
/// every filesystem.
pub const BROKEN: [Broken; 5] = [
    Broken::NoFileSync,
    Broken::NoDirSync,
    Broken::RenameBeforeSync,
    Broken::ModeAfterSync,
    Broken::UnlinkThenRename,
];

/// Whether a run must fail when `variant` goes uncaught.
pub fn must_catch(variant: Broken) -> bool {
    matches!(variant, Broken::NoFileSync | Broken::NoDirSync)
}

/// A workload for a broken variant: three `Durable` replaces of one
/// existing file (one file, so the simulator cross-check applies).
pub fn broken(variant: Broken) -> Workload {
    let opts = Opts {
        broken: Some(variant),
        ..Opts::default()
    };
    let mut w = plain(&format!("broken {variant:?}"));
    w.files = vec![("d/file", 0, 0o640)];
    w.steps = vec![
        write("d/file", 1, opts),
        write("d/file", 2, opts),
        write("d/file", 3, opts),
    ];
    w.broken = Some(variant);
    w
}

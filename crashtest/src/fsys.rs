//! The filesystems under test: how to make, mount and check each.

use std::path::Path;
use std::sync::OnceLock;

use crate::sys::run;

/// ext4 mount options given on the command line.
pub static EXT4_OPTIONS: OnceLock<String> = OnceLock::new();

/// One filesystem type and how this tool drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    /// ext4 with its default mount options (`data=ordered`, `auto_da_alloc`).
    Ext4,
    /// XFS.
    Xfs,
    /// btrfs.
    Btrfs,
}

impl FsKind {
    /// Every supported filesystem.
    pub const ALL: [FsKind; 3] = [FsKind::Ext4, FsKind::Xfs, FsKind::Btrfs];

    /// `ext4`, `xfs`, `btrfs`.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<FsKind> {
        FsKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Image size: XFS refuses less than 300 MiB and btrfs less than
    /// 109 MiB. Images are sparse, so the size costs nothing by itself.
    pub fn image_size(self) -> u64 {
        match self {
            FsKind::Ext4 => 64 << 20,
            FsKind::Xfs => 320 << 20,
            FsKind::Btrfs => 128 << 20,
        }
    }

    /// The programs this filesystem needs.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            FsKind::Ext4 => &["mkfs.ext4", "e2fsck"],
            FsKind::Xfs => &["mkfs.xfs", "xfs_repair"],
            FsKind::Btrfs => &["mkfs.btrfs", "btrfs"],
        }
    }

    /// Makes the filesystem on `image`. Discards are off (a discard is not a
    /// write we could replay faithfully) and ext4 initialises its inode
    /// tables and journal now, or a kernel thread would write them during
    /// the workload.
    pub fn mkfs(self, image: &Path) -> Result<(), String> {
        let img = image.to_str().unwrap_or("");
        match self {
            FsKind::Ext4 => run(
                "mkfs.ext4",
                &[
                    "-F",
                    "-q",
                    "-E",
                    "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                    img,
                ],
            ),
            FsKind::Xfs => run("mkfs.xfs", &["-f", "-q", "-K", img]),
            FsKind::Btrfs => run("mkfs.btrfs", &["-f", "-q", "-K", img]),
        }
        .map(|_| ())
    }

    /// Mount options: the defaults, except that XFS must accept several
    /// images with one UUID mounted at once; ext4's can be set with
    /// `--ext4-options` (e.g. `dioread_lock`).
    pub fn mount_options(self) -> &'static str {
        match self {
            FsKind::Xfs => "nouuid",
            FsKind::Ext4 => EXT4_OPTIONS.get().map_or("", String::as_str),
            FsKind::Btrfs => "",
        }
    }

    /// Whether crash images may be mounted in parallel. btrfs keeps one
    /// device list per filesystem id, and every image of a recording has
    /// the same id, so its images are checked one at a time.
    pub fn parallel(self) -> bool {
        self != FsKind::Btrfs
    }

    /// A read-only check of an unmounted image (after recovery).
    pub fn fsck(self, image: &Path) -> Result<(), String> {
        let img = image.to_str().unwrap_or("");
        match self {
            FsKind::Ext4 => run("e2fsck", &["-f", "-n", img]),
            FsKind::Xfs => run("xfs_repair", &["-n", "-f", img]),
            FsKind::Btrfs => run("btrfs", &["check", "--readonly", img]),
        }
        .map(|_| ())
    }
}

//! A one-file FUSE filesystem that serves `disk.img` and logs every write
//! and flush into a [`BlockLog`].
//!
//! The loop device attached to `disk.img` with `--direct-io=on` turns each
//! block write into an `O_DIRECT` FUSE `WRITE` and each cache flush into a
//! FUSE `FSYNC`. Three details matter (found the hard way): `fsync` must be
//! answered (an `ENOSYS` makes the kernel stop sending flushes at all),
//! `fallocate` must be answered (discards and zero-outs arrive as it), and
//! one thread serves everything so the log is in completion order.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};

use crate::blocklog::{BlockLog, Event};

/// The served file's name.
pub const DISK: &str = "disk.img";
const DISK_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);
/// `fallocate` mode bits (linux/falloc.h).
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

struct Disk {
    backing: File,
    size: u64,
    log: BlockLog,
}

impl Disk {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let dir = ino == INodeNo::ROOT;
        FileAttr {
            ino,
            size: if dir { 0 } else { self.size },
            blocks: if dir { 0 } else { self.size / 512 },
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o600 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }

    fn zero(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let chunk = vec![0u8; 1 << 20];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len() as u64);
            self.backing
                .write_all_at(&chunk[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }
}

impl Filesystem for Disk {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == DISK {
            reply.entry(&TTL, &self.attr(DISK_INO), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT || ino == DISK_INO {
            reply.attr(&TTL, &self.attr(ino));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == DISK_INO {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::EISDIR);
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let end = (offset + u64::from(size)).min(self.size);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        match self.backing.read_exact_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if offset + data.len() as u64 > self.size {
            reply.error(Errno::ENOSPC);
            return;
        }
        match self.backing.write_all_at(data, offset) {
            Ok(()) => {
                self.log.push(Event::Write {
                    offset,
                    data: data.to_vec(),
                });
                reply.written(data.len() as u32);
            }
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2), not a cache flush: nothing to log.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The loop device's cache flush. The backing file need not reach
        // the host's disk: only the log's order matters.
        self.log.push(Event::Flush);
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) == 0 {
            // Plain preallocation: contents unchanged.
            reply.ok();
            return;
        }
        match self.zero(offset, length.min(self.size.saturating_sub(offset))) {
            Ok(()) => {
                self.log.push(Event::Zero {
                    offset,
                    len: length,
                });
                reply.ok();
            }
            Err(_) => reply.error(Errno::EIO),
        }
    }
}

/// Serves `backing` as `<mountpoint>/disk.img` until dropped.
pub fn serve(
    backing: &Path,
    mountpoint: &Path,
    log: BlockLog,
) -> std::io::Result<BackgroundSession> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(backing)?;
    let size = file.metadata()?.len();
    let disk = Disk {
        backing: file,
        size,
        log,
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("crashtest".to_string()),
        MountOption::NoAtime,
    ];
    // One thread: the log is in the order the requests completed.
    config.n_threads = Some(1);
    fuser::spawn_mount(disk, mountpoint, &config)
}

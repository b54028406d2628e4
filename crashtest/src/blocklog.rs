//! The block log: what the disk was asked to do, in completion order.
//!
//! The FUSE daemon ([`crate::fuse`]) appends every write and flush that the
//! loop device sends; the workload appends a mark when an operation begins
//! and when it returns `Ok`. Reads are not logged: they change nothing.

use std::sync::{Arc, Mutex, MutexGuard};

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A block write: `data` at byte `offset` of the disk.
    Write { offset: u64, data: Vec<u8> },
    /// A discard or zero-out (the loop device turns them into `fallocate`):
    /// the range reads back as zeros once it is on disk.
    Zero { offset: u64, len: u64 },
    /// A cache flush: every write before it is on stable storage.
    Flush,
    /// Operation number `op` of the workload starts.
    Begin(usize),
    /// Operation number `op` returned `Ok`.
    Ack(usize),
}

/// The shared log; the FUSE thread and the workload both append.
#[derive(Clone, Debug, Default)]
pub struct BlockLog {
    events: Arc<Mutex<Vec<Event>>>,
    /// Off while the filesystem is being set up: nothing is logged.
    on: Arc<Mutex<bool>>,
}

impl BlockLog {
    /// An empty log, switched off.
    pub fn new() -> BlockLog {
        BlockLog::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts or stops logging.
    pub fn set_on(&self, on: bool) {
        *self.on.lock().unwrap_or_else(|e| e.into_inner()) = on;
    }

    /// Appends `event` if logging is on.
    pub fn push(&self, event: Event) {
        if *self.on.lock().unwrap_or_else(|e| e.into_inner()) {
            self.lock().push(event);
        }
    }

    /// Everything logged so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.lock())
    }
}

/// Totals of a log, to compare with the loop device's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// 512-byte sectors written.
    pub write_sectors: u64,
    /// Flush requests.
    pub flushes: u64,
    /// 512-byte sectors discarded or zeroed.
    pub zero_sectors: u64,
}

/// Sums a log.
pub fn totals(events: &[Event]) -> Totals {
    let mut t = Totals::default();
    for e in events {
        match e {
            Event::Write { data, .. } => t.write_sectors += data.len() as u64 / 512,
            Event::Zero { len, .. } => t.zero_sectors += len / 512,
            Event::Flush => t.flushes += 1,
            Event::Begin(_) | Event::Ack(_) => {}
        }
    }
    t
}

/// Reads `/sys/block/<dev>/stat`: (sectors written, discard sectors, flushes).
pub fn parse_stat(text: &str) -> Option<Totals> {
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    // Documentation/block/stat.rst: field 7 write sectors, 14 discard
    // sectors, 16 flush requests (1-based).
    Some(Totals {
        write_sectors: *f.get(6)?,
        zero_sectors: *f.get(13)?,
        flushes: *f.get(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_sectors_and_flushes() {
        let log = vec![
            Event::Write {
                offset: 0,
                data: vec![0; 4096],
            },
            Event::Begin(0),
            Event::Flush,
            Event::Zero {
                offset: 8192,
                len: 1024,
            },
            Event::Ack(0),
            Event::Flush,
        ];
        assert_eq!(
            totals(&log),
            Totals {
                write_sectors: 8,
                flushes: 2,
                zero_sectors: 2
            }
        );
    }

    #[test]
    fn stat_fields_are_read_by_position() {
        let line = "  10 0 80 5   7 1 56 9   0 12 14   1 0 8 0   3 2\n";
        assert_eq!(
            parse_stat(line),
            Some(Totals {
                write_sectors: 56,
                flushes: 3,
                zero_sectors: 8
            })
        );
        assert_eq!(parse_stat("1 2 3"), None);
        assert_eq!(parse_stat("a b"), None);
    }

    #[test]
    fn nothing_is_logged_while_off() {
        let log = BlockLog::new();
        log.push(Event::Flush);
        log.set_on(true);
        log.push(Event::Begin(1));
        assert_eq!(log.take(), vec![Event::Begin(1)]);
    }
}

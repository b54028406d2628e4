//! [`AtomicFile`]: a streaming replace.

use std::fmt;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Step};
use crate::options::Options;
use crate::protocol::Replace;
use crate::sys::{RealSys, Sys};

/// Buffer size for small writes; larger writes go straight through.
const BUFFER_LEN: usize = 8 * 1024;

impl<S: Sys> Write for Replace<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Replace::write(self, buf).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing is buffered at this level; durability comes from commit.
        Ok(())
    }
}

impl<S: Sys> Seek for Replace<S> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        Replace::seek(self, to)
    }
}

/// A [`Replace`] behind a write buffer: the engine of [`AtomicFile`], generic
/// so the simulator's tests stream through the same code.
pub(crate) struct Buffered<S: Sys> {
    inner: BufWriter<Replace<S>>,
}

/// Recovers our error from an `io::Error` made by `From<Error>`; any other
/// error (there should be none) is reported as a write failure.
fn unwrap_error(e: io::Error, target: &Path) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        let kind = e.kind();
        if let Some(Ok(ours)) = e.into_inner().map(|inner| inner.downcast::<Error>()) {
            return *ours;
        }
        return Error::io(Step::Write, target, kind.into());
    }
    Error::io(Step::Write, target, e)
}

impl<S: Sys> Buffered<S> {
    pub(crate) fn new(replace: Replace<S>) -> Buffered<S> {
        Buffered {
            inner: BufWriter::with_capacity(BUFFER_LEN, replace),
        }
    }

    pub(crate) fn target(&self) -> &Path {
        self.inner.get_ref().target()
    }

    /// Flushes the buffer, then commits. A failed flush removes the temp.
    pub(crate) fn commit(self) -> Result<(), Error> {
        match self.inner.into_inner() {
            Ok(replace) => replace.commit(),
            Err(e) => {
                let (err, writer) = e.into_parts();
                let (mut replace, _unwritten) = writer.into_parts();
                let err = unwrap_error(err, replace.target());
                // Not a plain drop: if removing the temp fails too, the
                // error must name the temp left behind.
                Err(replace.fail(err))
            }
        }
    }

    /// Drops buffered bytes unwritten and removes the temp.
    pub(crate) fn discard(self) -> Result<(), Error> {
        let (replace, _unwritten) = self.inner.into_parts();
        replace.discard()
    }
}

impl<S: Sys> Write for Buffered<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Sys> Seek for Buffered<S> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

impl<S: Sys> fmt::Debug for Buffered<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.get_ref().fmt(f)
    }
}

/// A file being replaced: write the new content, then [`commit`](Self::commit).
///
/// The new content goes into a hidden temporary file beside the target
/// (`.name.crashsafe-RANDOM.tmp`); readers keep seeing the old file until the commit
/// renames the temp over it. Dropping an `AtomicFile` without committing, or
/// calling [`discard`](Self::discard), removes the temp and leaves the target
/// untouched. Small writes are buffered; `commit` flushes them.
///
/// ```
/// use std::io::Write;
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("notes.txt");
///
/// let mut file = crashsafe::AtomicFile::create(&path)?;
/// writeln!(file, "first line")?;
/// writeln!(file, "second line")?;
/// file.commit()?;
/// assert_eq!(std::fs::read_to_string(&path)?, "first line\nsecond line\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AtomicFile {
    inner: Buffered<RealSys>,
}

impl AtomicFile {
    pub(crate) fn new(replace: Replace<RealSys>) -> AtomicFile {
        AtomicFile {
            inner: Buffered::new(replace),
        }
    }

    /// Starts replacing `path` with the default [`Options`].
    ///
    /// # Errors
    /// As [`Options::open`].
    pub fn create<P: AsRef<Path>>(path: P) -> Result<AtomicFile, Error> {
        Options::new().open(path)
    }

    /// The path this file will replace, as given by the caller.
    pub fn target(&self) -> &Path {
        self.inner.target()
    }

    /// Makes the written content the target's, atomically and (by default)
    /// durably: flush, owner and mode, fsync, rename, directory fsync.
    ///
    /// # Errors
    /// A failure before the rename removes the temp and leaves the target
    /// unchanged. A failure after it ([`Error::target_replaced`]) means the
    /// new content is in place but may not survive a power cut.
    pub fn commit(self) -> Result<(), Error> {
        self.inner.commit()
    }

    /// Removes the temporary file; the target is untouched.
    ///
    /// # Errors
    /// The temp could not be removed ([`Error::temp_left`] names it).
    pub fn discard(self) -> Result<(), Error> {
        self.inner.discard()
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    /// Moves buffered bytes into the temp file. This makes nothing durable
    /// and changes nothing at the target: only [`AtomicFile::commit`] does.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

impl fmt::Debug for AtomicFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicFile")
            .field("target", &self.target())
            .finish_non_exhaustive()
    }
}

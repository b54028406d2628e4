//! Async wrappers for tokio (feature `tokio`): the same replace, run on
//! tokio's blocking thread pool so it never stalls an async worker thread.
//!
//! Each function moves its arguments into a
//! [`spawn_blocking`](::tokio::task::spawn_blocking) task that calls the
//! blocking function of the same name, and awaits it. The guarantees are
//! those of the blocking calls; only where the work runs differs. Call them
//! from within a tokio runtime (any flavour); outside one they panic, as
//! `spawn_blocking` does.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("state.json");
//! # let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
//! # rt.block_on(async {
//! crashsafe::tokio::write(&path, br#"{"level": 3}"#).await?;
//! # Ok::<(), crashsafe::Error>(()) }).unwrap();
//! ```
//!
//! # Cancellation
//!
//! Dropping one of these futures (a `select!` that took another branch, a
//! timeout, an aborted task) does **not** stop the replace: a blocking task
//! cannot be interrupted, so it runs to its end in the background, exactly
//! as the blocking call would, and its result is thrown away. What you find
//! afterwards is therefore what the blocking call leaves: the complete new
//! content after it succeeded, the old content (and no temp) after it failed.
//! Never a torn file, and never a temp left by the cancellation itself.
//!
//! Only if the process exits while such a task is still running (e.g. the
//! runtime was shut down with [`shutdown_background`] or a timeout, then
//! `main` returned) is the replace cut short like a killed process: the
//! target keeps its old content and a hidden temp may remain, which
//! [`sweep`](crate::sweep) removes. A runtime dropped normally waits for
//! its blocking tasks. A task that had not started when its runtime shut
//! down never runs: nothing is touched and the future (if still polled)
//! returns an error with [`std::io::ErrorKind::Interrupted`].
//!
//! There is no async writer (`AsyncWrite` for [`AtomicFile`](crate::AtomicFile)):
//! each write would be its own blocking task holding the file, and a
//! cancelled write would leave unknown bytes in the temp. Build the content
//! in memory, or move an `AtomicFile` into one `spawn_blocking` closure that
//! writes and commits it (`AtomicFile` is `Send`).
//!
//! [`shutdown_background`]: ::tokio::runtime::Runtime::shutdown_background

use std::io;
use std::path::{Path, PathBuf};

use crate::{Batch, Error, Options, Step};

/// [`crate::write`] on the blocking pool: replaces `path` with `contents`,
/// atomically and durably.
///
/// `contents` is moved into the task (no copy); pass an owned buffer
/// (`Vec<u8>`, `String`, `bytes::Bytes`, ...). See the
/// [module docs](self) on cancellation.
///
/// # Errors
/// As [`crate::write`].
pub async fn write<P, C>(path: P, contents: C) -> Result<(), Error>
where
    P: AsRef<Path>,
    C: AsRef<[u8]> + Send + 'static,
{
    write_with(&Options::new(), path, contents).await
}

/// [`Options::write`] on the blocking pool.
///
/// # Errors
/// As [`Options::write`].
pub async fn write_with<P, C>(options: &Options, path: P, contents: C) -> Result<(), Error>
where
    P: AsRef<Path>,
    C: AsRef<[u8]> + Send + 'static,
{
    let options = options.clone();
    let path = path.as_ref().to_path_buf();
    let target = path.clone();
    run(target, move || options.write(path, contents)).await
}

/// [`crate::update`] on the blocking pool: read-modify-write under the
/// cross-process lock. `f` runs on the blocking thread, holding the lock.
///
/// # Errors
/// As [`crate::update`].
pub async fn update<P, F>(path: P, f: F) -> Result<(), Error>
where
    P: AsRef<Path>,
    F: FnOnce(Option<&[u8]>) -> io::Result<Vec<u8>> + Send + 'static,
{
    let path = path.as_ref().to_path_buf();
    let target = path.clone();
    run(target, move || crate::update(path, f)).await
}

/// [`Batch::commit`] on the blocking pool. A dropped future lets the commit
/// run to its end; a batch that never got to commit is dropped there, which
/// removes its temps.
///
/// # Errors
/// As [`Batch::commit`].
pub async fn commit(batch: Batch) -> Result<(), Error> {
    run(PathBuf::new(), move || batch.commit()).await
}

/// Runs `job` on the blocking pool. A panic in `job` is resumed here.
async fn run<F>(target: PathBuf, job: F) -> Result<(), Error>
where
    F: FnOnce() -> Result<(), Error> + Send + 'static,
{
    match ::tokio::task::spawn_blocking(job).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime shut down before the task started, so it
        // never ran and nothing was touched.
        Err(_) => Err(Error::Io {
            step: Step::OpenParent,
            target,
            temp_left: None,
            source: io::Error::new(
                io::ErrorKind::Interrupted,
                "the tokio runtime shut down before the replace started; nothing was changed",
            ),
            dir: None,
        }),
    }
}

//! Streaming into the temp file: a copy loop that stops on a caught signal,
//! the progress line, and running a producer command.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crashsafe::AtomicFile;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, Signal, kill_process};

/// How much input is held in memory at a time.
const CHUNK_LEN: usize = 64 * 1024;

/// The signals that abort a write: the temp is removed and the exit status
/// is 128 + the signal number.
const CAUGHT: [i32; 4] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGPIPE,
];

/// How long a producer gets to exit after crashsafe passed it a signal (or
/// asked it to stop) before it is killed.
const PRODUCER_GRACE: Duration = Duration::from_secs(2);

/// The handlers for [`CAUGHT`]: each stores its signal number in a flag and
/// writes a byte into a socket pair, so a loop waiting in `poll` wakes up.
/// SA_RESTART (which the handlers use) would otherwise resume a blocked
/// `read` and hide the signal until more input arrives.
#[derive(Debug)]
pub(crate) struct Signals {
    caught: Arc<AtomicUsize>,
    wake: UnixStream,
}

impl Signals {
    /// Installs the handlers (once; later calls return the same). Until now
    /// the signals had their defaults (SIGPIPE: ignored by the Rust runtime).
    ///
    /// The result lives until the process exits, and must: the handlers
    /// stay installed, and a handler writing into a socket whose other end
    /// was closed would raise SIGPIPE, run itself again, and loop forever.
    pub(crate) fn install() -> io::Result<&'static Signals> {
        static SIGNALS: OnceLock<Signals> = OnceLock::new();
        if let Some(signals) = SIGNALS.get() {
            return Ok(signals);
        }
        let signals = Signals::register()?;
        Ok(SIGNALS.get_or_init(|| signals))
    }

    fn register() -> io::Result<Signals> {
        let caught = Arc::new(AtomicUsize::new(0));
        let (wake, notify) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        notify.set_nonblocking(true)?;
        for signal in CAUGHT {
            // The flag first: when `poll` wakes because of the byte, the
            // flag is already set. `usize::try_from` cannot fail for these.
            let number = usize::try_from(signal).unwrap_or(usize::MAX);
            signal_hook::flag::register_usize(signal, Arc::clone(&caught), number)?;
            signal_hook::low_level::pipe::register(signal, notify.try_clone()?)?;
        }
        Ok(Signals { caught, wake })
    }

    /// The last signal caught so far, if any.
    pub(crate) fn caught(&self) -> Option<i32> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            n => i32::try_from(n).ok(),
        }
    }

    /// Waits until `input` is readable or a signal arrives; `timeout` None
    /// waits as long as it takes. Returns true if `input` is readable (or at
    /// its end, or in error: the next read tells).
    fn wait(&self, input: Option<&impl AsFd>, timeout: Option<Duration>) -> io::Result<bool> {
        let timeout = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: d.subsec_nanos().into(),
        });
        let mut fds = vec![PollFd::new(&self.wake, PollFlags::IN)];
        if let Some(input) = input {
            fds.push(PollFd::new(input, PollFlags::IN));
        }
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        // Empty the socket; the flag says which signal it was.
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        Ok(fds.get(1).is_some_and(|fd| !fd.revents().is_empty()))
    }
}

/// Why a copy into the temp stopped before the end of the input.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Reading the input failed.
    Read(io::Error),
    /// Writing into the temp failed.
    Write(io::Error),
    /// One of [`CAUGHT`] arrived.
    Signal(i32),
}

/// Streams `input` into `file` until a clean end of input, in fixed-size
/// chunks, checking for a caught signal before every read.
pub(crate) fn copy<R: Read + AsFd>(
    input: &mut R,
    file: &mut AtomicFile,
    signals: &Signals,
    progress: &mut Progress,
) -> Result<u64, Stop> {
    let mut buf = vec![0; CHUNK_LEN];
    let mut total = 0u64;
    loop {
        if let Some(signal) = signals.caught() {
            return Err(Stop::Signal(signal));
        }
        if !signals.wait(Some(&*input), None).map_err(Stop::Read)? {
            continue;
        }
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            // EINTR; EAGAIN from an input another process set non-blocking:
            // `poll` above waits for it to be readable again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                continue;
            }
            Err(e) => return Err(Stop::Read(e)),
        };
        file.write_all(&buf[..n]).map_err(Stop::Write)?;
        total += n as u64;
        progress.update(total);
    }
}

/// How a producer command ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It exited with this status.
    Exited(ExitStatus),
    /// One of [`CAUGHT`] arrived first (the producer still runs).
    Signal(i32),
}

/// Waits for `child` to exit, watching for caught signals. After
/// [`Ended::Signal`] the producer still runs: the caller [`stop`]s it.
pub(crate) fn wait(child: &mut Child, signals: &Signals) -> io::Result<Ended> {
    loop {
        if let Some(signal) = signals.caught() {
            return Ok(Ended::Signal(signal));
        }
        if let Some(status) = child.try_wait()? {
            return Ok(Ended::Exited(status));
        }
        // No pidfd here (it needs Linux 5.3): check again after a short nap
        // or as soon as a signal arrives.
        signals.wait(None::<&UnixStream>, Some(Duration::from_millis(50)))?;
    }
}

/// Sends `signal` to the producer, gives it [`PRODUCER_GRACE`] to exit,
/// then kills it, and reaps it. Errors are ignored: the producer may have
/// exited already, and crashsafe is failing anyway.
pub(crate) fn stop(child: &mut Child, signal: i32) {
    if let Ok(None) = child.try_wait() {
        if let Some(signal) = Signal::from_named_raw(signal) {
            let _ = kill_process(Pid::from_child(child), signal);
        }
        let deadline = Instant::now() + PRODUCER_GRACE;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The exit status for a producer's status: its code, or 128 + the signal
/// that killed it, as a shell reports it.
pub(crate) fn status_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Exit codes are 0..=255 on Unix.
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    match status.signal() {
        Some(signal) => signal_status(signal),
        None => 1,
    }
}

/// 128 + `signal`, the shell's status for a death by that signal.
pub(crate) fn signal_status(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(255)
}

/// The name of a signal, e.g. `SIGTERM`, or its number.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// The producer command as the user typed it, for messages.
pub(crate) fn command_name(command: &[OsString]) -> String {
    command
        .first()
        .map_or_else(String::new, |c| c.to_string_lossy().into_owned())
}

/// A progress line on standard error (bytes so far and the mean rate),
/// only when standard error is a terminal, first after [`Progress::DELAY`]
/// and then at most every [`Progress::EVERY`]. Short writes show nothing.
#[derive(Debug)]
pub(crate) struct Progress {
    enabled: bool,
    start: Instant,
    last: Option<Instant>,
}

impl Progress {
    const DELAY: Duration = Duration::from_millis(500);
    const EVERY: Duration = Duration::from_millis(250);

    pub(crate) fn new() -> Progress {
        Progress {
            enabled: io::stderr().is_terminal(),
            start: Instant::now(),
            last: None,
        }
    }

    fn update(&mut self, total: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.start);
        let due = match self.last {
            None => elapsed >= Self::DELAY,
            Some(last) => now.duration_since(last) >= Self::EVERY,
        };
        if !due {
            return;
        }
        self.last = Some(now);
        // Precision loss in the conversions is irrelevant for a display.
        #[allow(clippy::cast_precision_loss)]
        let rate = total as f64 / elapsed.as_secs_f64();
        // `\r` + erase to the end of line: the line is redrawn in place.
        // A failed write to the terminal is not worth failing over.
        let _ = write!(
            io::stderr(),
            "\r\x1b[Kcrashsafe: {} written, {}/s",
            human(total as f64),
            human(rate)
        );
    }

    /// Erases the progress line, if one was drawn.
    pub(crate) fn finish(&mut self) {
        if self.last.take().is_some() {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
    }
}

/// `bytes` with a binary unit: `512 B`, `1.5 MiB`.
fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human(0.0), "0 B");
        assert_eq!(human(1023.0), "1023 B");
        assert_eq!(human(1536.0), "1.5 KiB");
        assert_eq!(human(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }

    #[test]
    fn statuses() {
        assert_eq!(signal_status(15), 143);
        assert_eq!(signal_status(2), 130);
        assert_eq!(signal_name(13), "SIGPIPE");
        assert_eq!(signal_name(10), "signal 10");
    }
}

//! `crashsafe`: replace a file with standard input, atomically and durably.
//!
//! A durable stand-in for `cmd > file.tmp && mv file.tmp file` and `sponge`
//! in shell scripts. Built only with the `cli` feature; run
//! `crashsafe --help` for usage.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crashsafe::{AtomicFile, Durability, Options};

#[path = "crashsafe/stream.rs"]
mod stream;

use stream::{Ended, Progress, Signals, Stop};

const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP: &str = "\
crashsafe - replace files atomically and durably

Usage:
  crashsafe write [OPTIONS] FILE   replace FILE with standard input
  crashsafe write [OPTIONS] FILE -- CMD [ARGS...]
                                   replace FILE with CMD's output, only if
                                   CMD exits with status 0
  crashsafe sweep DIR              remove stale temporary files left in DIR
  crashsafe --help | --version

The new content goes into a hidden temporary file beside FILE, is flushed to
disk, and is renamed over FILE only after standard input ended cleanly. After a
crash or power cut at any moment FILE holds its complete old or complete new
content, never a torn or empty mix. FILE keeps its mode and owner.

Run 'crashsafe write --help' for the write options.

Examples:
  crashsafe write cfg.json -- jq '.retries = 5' cfg.json
  jq '.retries = 5' cfg.json | crashsafe write cfg.json
  sort -u list.txt | crashsafe write --nonempty list.txt
  render-config | crashsafe write --mode 600 /etc/app/secret.conf
  crashsafe sweep /etc/app

Exit status: 0 on success, 1 when the operation failed (one line on stderr
names the step and the path), 2 for a usage error, 128+n after signal n.
With a producer command: its status when it failed.
";

const WRITE_HELP: &str = "\
crashsafe write - replace FILE with standard input, atomically and durably

Usage: crashsafe write [OPTIONS] [--] FILE
       crashsafe write [OPTIONS] [--] FILE -- CMD [ARGS...]

Standard input is streamed (constant memory, any size) into a temporary file
beside FILE. FILE is replaced only after the input reached its end without a
read error; until then it is left alone. Because the input is read to the end
first, FILE may also be the input of the command that feeds it:
  jq '.x = 1' cfg.json | crashsafe write cfg.json

With '-- CMD [ARGS...]' after FILE, crashsafe runs CMD itself (standard input
and standard error passed through) and streams its standard output into the
temporary file. FILE is replaced only if CMD's output was read to its end and
CMD exited with status 0. If CMD fails or is killed, nothing is replaced and
crashsafe exits with CMD's status (128+n for signal n). Prefer this to a
pipe: a pipe's reader cannot see its writer's exit status.
  crashsafe write cfg.json -- jq '.x = 1' cfg.json

SIGINT, SIGTERM, SIGHUP or SIGPIPE while the content is coming in removes the
temporary file, passes the signal on to CMD, and exits with 128+n; once the
input has ended, the flush and rename finish first. On a terminal, long
writes show the bytes written and the rate on standard error.

Options:
      --mode OCTAL   permission bits of the result (e.g. 644); the umask
                     applies. Default: keep FILE's mode (0666 minus the umask
                     for a new file)
      --no-follow    if FILE is a symlink, replace the link itself with a
                     regular file (default: replace the file it points to)
      --create-new   fail if FILE already exists; it is then left as it is
      --consistent   skip the final directory fsync: still never torn, but a
                     replace that succeeded may roll back after a power cut
      --backup       keep the previous content of FILE as FILE~
      --nonempty     refuse to replace FILE when standard input is empty
  -h, --help         show this help
      --             before FILE: end of options (a FILE named '-' is just
                     a file); after FILE: the producer command follows

Pitfall of the pipe form: a failing upstream command shows up as empty or
truncated input, not as an error, and 'set -o pipefail' only reports the
failure after crashsafe has already replaced FILE. In
  broken-generator | crashsafe write cfg.json
cfg.json would become empty (or half of the output). Use the '-- CMD' form;
or pass --nonempty, which catches empty output only. A closed stdin ('<&-')
also reads as empty.

Exit status: 0 on success, 1 when the operation failed (FILE is unchanged
unless the message says the new content is in place), 2 for a usage error,
CMD's status when CMD failed, 126/127 when CMD cannot be run / is not found,
128+n when interrupted by signal n.
";

const SWEEP_HELP: &str = "\
crashsafe sweep - remove stale temporary files left in a directory

Usage: crashsafe sweep [-v|--verbose] [--] DIR

A process killed while replacing a file can leave a hidden temporary file
(.NAME.crashsafe-RANDOM.tmp) beside it. The target itself is never damaged.
This command removes such leftovers from DIR, at once and never one that a
live writer still holds, and no file without that mark.

Output: the number removed. With --verbose, or when standard output is a
terminal, one line per temp ('removed PATH' or 'kept PATH: why') and then
a summary line.

Options:
  -v, --verbose   list what was removed and what was kept, and why

Example:
  crashsafe sweep /etc/app
";

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Not `eprintln!`, which panics when stderr is a closed pipe:
            // the status must still be the one below.
            let _ = writeln!(io::stderr(), "crashsafe: {failure}");
            ExitCode::from(failure.status)
        }
    }
}

/// A failure to report: one line of text and the exit status.
#[derive(Debug)]
struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    /// The operation was attempted and failed (exit status 1).
    fn failed(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: 1,
        }
    }

    /// The command line was wrong (exit status 2).
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: format!("{} (see 'crashsafe --help')", message.into()),
            status: 2,
        }
    }

    /// Exit with `status` (a producer's status, or 128 + a signal).
    fn with_status(message: impl Into<String>, status: u8) -> Failure {
        Failure {
            message: message.into(),
            status,
        }
    }

    /// A library error, with its OS error and whether the target changed.
    fn from_error(e: &crashsafe::Error) -> Failure {
        let mut message = chain(e);
        if !e.target_replaced() {
            message.push_str("; nothing was replaced");
        }
        Failure::failed(message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error and its sources on one line, separated by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn run(args: Vec<OsString>) -> Result<(), Failure> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Err(Failure::usage("missing command"));
    };
    let rest: Vec<OsString> = args.collect();
    match command.to_str() {
        Some("write") => match parse_write(rest)? {
            Parsed::Run(w) => write(&w),
            Parsed::Help => print(WRITE_HELP),
        },
        Some("sweep") => match parse_sweep(rest)? {
            Parsed::Run((dir, verbose)) => sweep(&dir, verbose),
            Parsed::Help => print(SWEEP_HELP),
        },
        Some("-h" | "--help" | "help") => print(HELP),
        Some("-V" | "--version") => print(&format!("crashsafe {VERSION}\n")),
        _ => Err(Failure::usage(format!(
            "unknown command '{}'",
            command.to_string_lossy()
        ))),
    }
}

fn print(text: &str) -> Result<(), Failure> {
    io::stdout()
        .write_all(text.as_bytes())
        .and_then(|()| io::stdout().flush())
        .map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed<T> {
    Run(T),
    Help,
}

/// The arguments of `crashsafe write`.
#[derive(Debug, Default, PartialEq, Eq)]
struct WriteArgs {
    file: PathBuf,
    mode: Option<u32>,
    no_follow: bool,
    create_new: bool,
    consistent: bool,
    backup: bool,
    nonempty: bool,
    /// The producer command and its arguments (after `FILE --`); empty
    /// means standard input is the content.
    command: Vec<OsString>,
}

/// True for an argument that looks like an option: `-x` or `--x`, not `-`.
fn is_option(arg: &OsStr) -> bool {
    let b = arg.as_encoded_bytes();
    b.len() > 1 && b[0] == b'-'
}

fn parse_write(args: Vec<OsString>) -> Result<Parsed<WriteArgs>, Failure> {
    let mut w = WriteArgs::default();
    let mut files = Vec::new();
    let mut options_ended = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--` after FILE starts the producer command; before FILE it ends
        // the options, so `write -- --x` still names a file `--x`.
        if arg == "--" && !files.is_empty() {
            w.command.extend(args.by_ref());
            if w.command.is_empty() {
                return Err(Failure::usage("missing command after 'FILE --'"));
            }
            break;
        }
        if arg == "--" && !options_ended {
            options_ended = true;
            continue;
        }
        if options_ended || !is_option(&arg) {
            files.push(arg);
            continue;
        }
        let unknown = || {
            Failure::usage(format!(
                "unknown option '{}' for write",
                arg.to_string_lossy()
            ))
        };
        // Every option is ASCII, so an argument that is not UTF-8 is none.
        let text = arg.to_str().ok_or_else(unknown)?;
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (text, None),
        };
        let flag = |set: &mut bool| -> Result<(), Failure> {
            if inline.is_some() {
                return Err(Failure::usage(format!("option {name} takes no value")));
            }
            *set = true;
            Ok(())
        };
        match name {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--mode" => {
                let value = match inline {
                    Some(v) => OsString::from(v),
                    None => args
                        .next()
                        .ok_or_else(|| Failure::usage("option --mode needs a value"))?,
                };
                w.mode = Some(parse_mode(&value)?);
            }
            "--no-follow" => flag(&mut w.no_follow)?,
            "--create-new" => flag(&mut w.create_new)?,
            "--consistent" => flag(&mut w.consistent)?,
            "--backup" => flag(&mut w.backup)?,
            "--nonempty" => flag(&mut w.nonempty)?,
            _ => return Err(unknown()),
        }
    }
    w.file = one_path(files, "FILE")?;
    Ok(Parsed::Run(w))
}

fn parse_sweep(args: Vec<OsString>) -> Result<Parsed<(PathBuf, bool)>, Failure> {
    let mut dirs = Vec::new();
    let mut verbose = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            dirs.extend(args.by_ref());
            break;
        }
        if !is_option(&arg) {
            dirs.push(arg);
            continue;
        }
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Parsed::Help),
            Some("-v" | "--verbose") => verbose = true,
            _ => {
                return Err(Failure::usage(format!(
                    "unknown option '{}' for sweep",
                    arg.to_string_lossy()
                )));
            }
        }
    }
    Ok(Parsed::Run((one_path(dirs, "DIR")?, verbose)))
}

/// Exactly one positional argument.
fn one_path(mut found: Vec<OsString>, what: &str) -> Result<PathBuf, Failure> {
    match found.len() {
        0 => Err(Failure::usage(format!("missing {what}"))),
        1 => Ok(PathBuf::from(found.remove(0))),
        _ => Err(Failure::usage(format!(
            "expected one {what}, got {}",
            found.len()
        ))),
    }
}

/// Octal permission bits: `644`, `0644` or `0o644`, at most `7777`.
fn parse_mode(value: &OsStr) -> Result<u32, Failure> {
    let bad = || {
        Failure::usage(format!(
            "invalid --mode '{}': expected octal permission bits such as 644",
            value.to_string_lossy()
        ))
    };
    let text = value.to_str().ok_or_else(bad)?;
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(bad()),
    }
}

fn write(w: &WriteArgs) -> Result<(), Failure> {
    let mut opts = Options::new();
    opts.follow_symlinks(!w.no_follow).create_new(w.create_new);
    if let Some(mode) = w.mode {
        opts.mode(mode);
    }
    if w.consistent {
        opts.durability(Durability::Consistent);
    }
    if w.backup {
        opts.backup(true);
    }
    let signals = Signals::install()
        .map_err(|e| Failure::failed(format!("cannot install signal handlers: {e}")))?;
    // The temp is created before a producer runs: a target that cannot be
    // written fails here, before the producer does anything.
    let mut file = opts.open(&w.file).map_err(|e| Failure::from_error(&e))?;
    let mut progress = Progress::new();
    let (total, file) = if w.command.is_empty() {
        let copied = stream::copy(&mut io::stdin().lock(), &mut file, signals, &mut progress);
        progress.finish();
        match copied {
            Ok(total) => (total, file),
            Err(stop) => return Err(discarded(stop_message(&w.file, "stdin", stop), file)),
        }
    } else {
        produce(w, file, signals, &mut progress)?
    };
    let file = match signals.caught() {
        Some(signal) => return Err(interrupted(signal, file)),
        None => file,
    };
    if total == 0 && w.nonempty {
        let source = if w.command.is_empty() {
            "standard input was empty".to_owned()
        } else {
            format!("'{}' printed nothing", stream::command_name(&w.command))
        };
        let mut message = format!(
            "{source}; refusing to replace {} (--nonempty)",
            w.file.display()
        );
        if let Err(e) = file.discard() {
            message.push_str(&format!("; {}", chain(&e)));
        }
        return Err(Failure::failed(message));
    }
    // A signal from here on waits until the rename and fsyncs are done: the
    // replace is atomic, stopping it half-way would gain nothing.
    file.commit().map_err(|e| Failure::from_error(&e))?;
    match signals.caught() {
        Some(signal) => Err(Failure::with_status(
            format!(
                "interrupted by {} after the replace had begun; {} holds the new content",
                stream::signal_name(signal),
                w.file.display()
            ),
            stream::signal_status(signal),
        )),
        None => Ok(()),
    }
}

/// Runs the producer command with its stdout streamed into `file`. `Ok`
/// only if its output was read to the end and it exited with status 0. On
/// `Err` the temp is already removed, then the producer was stopped (so a
/// SIGKILL that follows a SIGTERM during its grace period finds no temp).
fn produce(
    w: &WriteArgs,
    mut file: AtomicFile,
    signals: &Signals,
    progress: &mut Progress,
) -> Result<(u64, AtomicFile), Failure> {
    let name = stream::command_name(&w.command);
    let spawned = std::process::Command::new(&w.command[0])
        .args(&w.command[1..])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            // The shell's statuses: 127 not found, 126 found but not runnable.
            let status = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            Failure::with_status(
                format!(
                    "cannot run '{name}': {e}; nothing was replaced in {}",
                    w.file.display()
                ),
                status,
            )
        });
    let mut child = match spawned {
        Ok(child) => child,
        Err(failure) => return Err(discarded(failure, file)),
    };
    let copied = match child.stdout.take() {
        Some(mut out) => stream::copy(&mut out, &mut file, signals, progress),
        None => Ok(0),
    };
    progress.finish();
    let total = match copied {
        Ok(total) => total,
        Err(stop) => {
            // Stop the producer: with the signal crashsafe got, or SIGTERM
            // when crashsafe itself failed.
            let signal = match stop {
                Stop::Signal(signal) => signal,
                Stop::Read(_) | Stop::Write(_) => signal_hook::consts::SIGTERM,
            };
            let failure = discarded(stop_message(&w.file, &name, stop), file);
            stream::stop(&mut child, signal);
            return Err(failure);
        }
    };
    let status = match stream::wait(&mut child, signals) {
        Ok(Ended::Exited(status)) => status,
        Ok(Ended::Signal(signal)) => {
            let failure = discarded(interrupted_message(signal), file);
            stream::stop(&mut child, signal);
            return Err(failure);
        }
        Err(e) => {
            let failure = discarded(
                Failure::failed(format!(
                    "cannot wait for '{name}': {e}; nothing was replaced"
                )),
                file,
            );
            stream::stop(&mut child, signal_hook::consts::SIGTERM);
            return Err(failure);
        }
    };
    if status.success() {
        return Ok((total, file));
    }
    let how = match std::os::unix::process::ExitStatusExt::signal(&status) {
        Some(signal) => format!("was killed by {}", stream::signal_name(signal)),
        None => format!("exited with status {}", status.code().unwrap_or(-1)),
    };
    let failure = Failure::with_status(
        format!(
            "'{name}' {how}; nothing was replaced in {}",
            w.file.display()
        ),
        stream::status_code(status),
    );
    Err(discarded(failure, file))
}

/// Removes the temp after a failure and adds to the message if that failed.
fn discarded(mut failure: Failure, file: AtomicFile) -> Failure {
    if let Some(left) = file.discard().err().as_ref().and_then(|c| c.temp_left()) {
        failure.message.push_str(&format!(
            " (temporary file {} was left behind)",
            left.display()
        ));
    }
    failure
}

/// A signal arrived before the commit: remove the temp, exit 128 + n.
fn interrupted(signal: i32, file: AtomicFile) -> Failure {
    discarded(interrupted_message(signal), file)
}

fn interrupted_message(signal: i32) -> Failure {
    Failure::with_status(
        format!(
            "interrupted by {}; nothing was replaced",
            stream::signal_name(signal)
        ),
        stream::signal_status(signal),
    )
}

fn stop_message(target: &Path, source: &str, stop: Stop) -> Failure {
    match stop {
        Stop::Signal(signal) => interrupted_message(signal),
        Stop::Read(e) => Failure::failed(format!(
            "failed to read {source} for {}: {}; nothing was replaced",
            target.display(),
            chain(&e)
        )),
        Stop::Write(e) => write_failure(target, &e),
    }
}

/// `crashsafe sweep DIR`: prints how many stale temps were removed; with
/// `verbose` (or on a terminal) each one removed or kept, and why.
fn sweep(dir: &Path, verbose: bool) -> Result<(), Failure> {
    let report = crashsafe::sweep_report(dir).map_err(|e| Failure::failed(chain(&e)))?;
    if !verbose && !io::IsTerminal::is_terminal(&io::stdout()) {
        return print(&format!("{}\n", report.removed.len()));
    }
    let mut text = String::new();
    for path in &report.removed {
        text.push_str(&format!("removed {}\n", path.display()));
    }
    for (path, why) in &report.kept {
        text.push_str(&format!("kept {}: {why}\n", path.display()));
    }
    text.push_str(&format!(
        "{} removed, {} kept\n",
        report.removed.len(),
        report.kept.len()
    ));
    print(&text)
}

/// A write into the temp failed; the library's error inside names the step.
fn write_failure(file: &Path, e: &io::Error) -> Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<crashsafe::Error>())
    {
        Some(ours) => Failure::from_error(ours),
        None => Failure::failed(format!(
            "failed to write the temporary file for {}: {}; nothing was replaced",
            file.display(),
            chain(e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn parsed(list: &[&str]) -> WriteArgs {
        match parse_write(args(list)).unwrap() {
            Parsed::Run(w) => w,
            Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn write_flags() {
        let w = parsed(&[
            "--no-follow",
            "--create-new",
            "--consistent",
            "--backup",
            "--nonempty",
            "f",
        ]);
        assert_eq!(
            w,
            WriteArgs {
                file: "f".into(),
                mode: None,
                no_follow: true,
                create_new: true,
                consistent: true,
                backup: true,
                nonempty: true,
                command: vec![],
            }
        );
    }

    #[test]
    fn mode_forms() {
        assert_eq!(parsed(&["--mode", "644", "f"]).mode, Some(0o644));
        assert_eq!(parsed(&["--mode=0600", "f"]).mode, Some(0o600));
        assert_eq!(parsed(&["f", "--mode", "0o4755"]).mode, Some(0o4755));
        for bad in ["", "8", "rw", "0o", "17777", "-1", "+644"] {
            let e = parse_write(args(&["--mode", bad, "f"])).unwrap_err();
            assert_eq!(e.status, 2, "{bad}");
        }
        assert_eq!(parse_write(args(&["f", "--mode"])).unwrap_err().status, 2);
    }

    #[test]
    fn dash_dash_and_single_dash() {
        assert_eq!(parsed(&["--", "--mode"]).file, PathBuf::from("--mode"));
        assert_eq!(parsed(&["-"]).file, PathBuf::from("-"));
    }

    #[test]
    fn producer_command_after_file() {
        let w = parsed(&["--nonempty", "f", "--", "jq", "--arg", "x", "--"]);
        assert_eq!(w.file, PathBuf::from("f"));
        assert!(w.nonempty);
        assert_eq!(w.command, args(&["jq", "--arg", "x", "--"]));
        // Before FILE, `--` ends the options; after it, the command follows.
        let w = parsed(&["--", "-f", "--", "cat"]);
        assert_eq!(w.file, PathBuf::from("-f"));
        assert_eq!(w.command, args(&["cat"]));
        assert_eq!(parsed(&["--", "--"]).file, PathBuf::from("--"));
        assert!(parsed(&["f"]).command.is_empty());
        assert_eq!(parse_write(args(&["f", "--"])).unwrap_err().status, 2);
        assert_eq!(parse_write(args(&["--", "a", "b"])).unwrap_err().status, 2);
    }

    #[test]
    fn usage_errors() {
        for list in [
            &["--bogus", "f"][..],
            &["a", "b"],
            &[],
            &["--nonempty=yes", "f"],
            &["-x", "f"],
        ] {
            assert_eq!(parse_write(args(list)).unwrap_err().status, 2, "{list:?}");
        }
        assert_eq!(parse_sweep(args(&[])).unwrap_err().status, 2);
        assert_eq!(parse_sweep(args(&["-r", "d"])).unwrap_err().status, 2);
    }

    #[test]
    fn help_anywhere() {
        assert_eq!(parse_write(args(&["f", "--help"])).unwrap(), Parsed::Help);
        assert_eq!(parse_sweep(args(&["-h"])).unwrap(), Parsed::Help);
    }
}

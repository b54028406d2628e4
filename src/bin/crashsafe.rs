//! `crashsafe`: replace a file with standard input, atomically and durably.
//!
//! A durable stand-in for `cmd > file.tmp && mv file.tmp file` and `sponge`
//! in shell scripts. Built only with the `cli` feature; run
//! `crashsafe --help` for usage.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crashsafe::{AtomicFile, Durability, Options};

/// How much of standard input is held in memory at a time.
const CHUNK_LEN: usize = 64 * 1024;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP: &str = "\
crashsafe - replace files atomically and durably

Usage:
  crashsafe write [OPTIONS] FILE   replace FILE with standard input
  crashsafe sweep DIR              remove stale temporary files left in DIR
  crashsafe --help | --version

The new content goes into a hidden temporary file beside FILE, is flushed to
disk, and is renamed over FILE only after standard input ended cleanly. After a
crash or power cut at any moment FILE holds its complete old or complete new
content, never a torn or empty mix. FILE keeps its mode and owner.

Run 'crashsafe write --help' for the write options.

Examples:
  jq '.retries = 5' cfg.json | crashsafe write cfg.json
  sort -u list.txt | crashsafe write --nonempty list.txt
  render-config | crashsafe write --mode 600 /etc/app/secret.conf
  crashsafe sweep /etc/app

Exit status: 0 on success, 1 when the operation failed (one line on stderr
names the step and the path), 2 for a usage error.
";

const WRITE_HELP: &str = "\
crashsafe write - replace FILE with standard input, atomically and durably

Usage: crashsafe write [OPTIONS] [--] FILE

Standard input is streamed (constant memory, any size) into a temporary file
beside FILE. FILE is replaced only after the input reached its end without a
read error; until then it is left alone. Because the input is read to the end
first, FILE may also be the input of the command that feeds it:
  jq '.x = 1' cfg.json | crashsafe write cfg.json

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
      --             end of options (a FILE named '-' is just a file)

Pitfall: a failing upstream command usually shows up as EMPTY input, not as
an error, and 'set -o pipefail' only reports the failure after crashsafe has
already replaced FILE. In
  broken-generator | crashsafe write cfg.json
cfg.json would become empty. The same happens when stdin is closed ('<&-'):
it reads as empty. Pass --nonempty whenever empty output can only mean a
failure; or keep the output in a variable or file first and check the
command's exit status before running crashsafe.

Exit status: 0 on success, 1 when the operation failed (FILE is unchanged
unless the message says the new content is in place), 2 for a usage error.
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
            eprintln!("crashsafe: {failure}");
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
}

/// True for an argument that looks like an option: `-x` or `--x`, not `-`.
fn is_option(arg: &OsStr) -> bool {
    let b = arg.as_encoded_bytes();
    b.len() > 1 && b[0] == b'-'
}

fn parse_write(args: Vec<OsString>) -> Result<Parsed<WriteArgs>, Failure> {
    let mut w = WriteArgs::default();
    let mut files = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            files.extend(args.by_ref());
            break;
        }
        if !is_option(&arg) {
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
    let mut file = opts.open(&w.file).map_err(|e| Failure::from_error(&e))?;
    let total = match copy(&mut io::stdin().lock(), &mut file) {
        Ok(total) => total,
        Err(Copy::Read(e)) => return Err(read_failure(&w.file, &e, file.discard().err())),
        Err(Copy::Write(e)) => {
            // The temp's own cleanup error, if any, is less important than
            // the write error, which already says whether a temp was left.
            let _ = file.discard();
            return Err(write_failure(&w.file, &e));
        }
    };
    if total == 0 && w.nonempty {
        let mut message = format!(
            "standard input was empty; refusing to replace {} (--nonempty)",
            w.file.display()
        );
        if let Err(e) = file.discard() {
            message.push_str(&format!("; {}", chain(&e)));
        }
        return Err(Failure::failed(message));
    }
    file.commit().map_err(|e| Failure::from_error(&e))
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

/// Where a copy from stdin into the temp failed.
#[derive(Debug)]
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// Streams `input` into `file` in fixed-size chunks until a clean end of input.
fn copy(input: &mut impl Read, file: &mut AtomicFile) -> Result<u64, Copy> {
    let mut buf = vec![0; CHUNK_LEN];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        file.write_all(&buf[..n]).map_err(Copy::Write)?;
        total += n as u64;
    }
}

fn read_failure(file: &Path, e: &io::Error, cleanup: Option<crashsafe::Error>) -> Failure {
    let mut message = format!(
        "failed to read stdin for {}: {}; nothing was replaced",
        file.display(),
        chain(e)
    );
    if let Some(left) = cleanup.as_ref().and_then(|c| c.temp_left()) {
        message.push_str(&format!(
            " (temporary file {} was left behind)",
            left.display()
        ));
    }
    Failure::failed(message)
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

//! A save-file backend for a game: the save is large, so it is streamed
//! through an [`AtomicFile`] behind a [`BufWriter`] instead of being built in
//! memory, and the previous save is kept as `save~` (`Options::backup`).
//!
//! ```text
//! cargo run --example save_game                   # <temp dir>/crashsafe-example-game, 16 MiB
//! cargo run --example save_game -- DIR 64         # a directory of your choice, 64 MiB
//! ```
//!
//! Each run loads and checks the current save (if any), advances the turn,
//! and writes the next one. Whatever moment the process is killed, `save`
//! and `save~` are each a complete save, never a torn one: the backup is a
//! hard link to the old save, made just before the new one is renamed into
//! place, so no copy is written and there is no moment without either.

use std::error::Error;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crashsafe::Options;

const MAGIC: &str = "crashsafe-demo-save v1";
/// The world is written in regions of this size.
const REGION_LEN: usize = 64 * 1024;

/// FNV-1a, enough to notice a damaged save in an example.
#[derive(Clone, Copy)]
struct Checksum(u64);

impl Checksum {
    fn new() -> Checksum {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A writer that checksums everything passing through it.
struct Checksummed<W> {
    inner: W,
    sum: Checksum,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Fills `region` with the world data of region `index` at `turn`.
fn generate(turn: u64, index: u64, region: &mut [u8]) {
    let mut x = (turn << 32 | index) ^ 0x9e37_79b9_7f4a_7c15;
    for b in region {
        // xorshift64: cheap, deterministic filler standing in for game state.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// Writes the save for `turn` with `regions` regions to `path`, streaming.
fn save(path: &Path, turn: u64, regions: u64) -> Result<(), Box<dyn Error>> {
    let file = Options::new().backup(true).open(path)?;
    // A large buffer means few write calls; AtomicFile's own buffer is small.
    let mut out = Checksummed {
        inner: BufWriter::with_capacity(1 << 20, file),
        sum: Checksum::new(),
    };
    write!(out, "{MAGIC}\nturn {turn}\nregions {regions}\n")?;
    let mut region = vec![0; REGION_LEN];
    for index in 0..regions {
        generate(turn, index, &mut region);
        out.write_all(&region)?;
    }
    let sum = out.sum.0;
    let mut buffered = out.inner;
    writeln!(buffered, "checksum {sum:016x}")?;
    // `into_inner` flushes the BufWriter; if that fails, the AtomicFile is
    // dropped uncommitted and its temp file removed: the old save stays.
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    // The switch: until here, readers (and a crash) see the previous save.
    file.commit()?;
    Ok(())
}

/// What `load` found in a save.
struct Loaded {
    turn: u64,
    bytes: u64,
}

/// Reads a save back, checking its structure and checksum.
fn load(path: &Path) -> Result<Loaded, Box<dyn Error>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut sum = Checksum::new();
    let mut header = |name: &str| -> Result<String, Box<dyn Error>> {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        sum.update(line.as_bytes());
        let value = line.trim_end().strip_prefix(name).map(str::trim);
        value
            .map(str::to_owned)
            .ok_or_else(|| format!("bad header: expected {name:?}, found {line:?}").into())
    };
    header(MAGIC)?;
    let turn: u64 = header("turn")?.parse()?;
    let regions: u64 = header("regions")?.parse()?;
    let mut region = vec![0; REGION_LEN];
    for _ in 0..regions {
        reader.read_exact(&mut region)?;
        sum.update(&region);
    }
    let mut trailer = String::new();
    reader.read_to_string(&mut trailer)?;
    if trailer != format!("checksum {:016x}\n", sum.0) {
        return Err("checksum mismatch: the save is damaged".into());
    }
    let bytes = fs::metadata(path)?.len();
    Ok(Loaded { turn, bytes })
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join("crashsafe-example-game"),
    };
    let mib: u64 = match args.next() {
        Some(n) => n.to_str().ok_or("size must be a number of MiB")?.parse()?,
        None => 16,
    };
    fs::create_dir_all(&dir)?;
    let save_path = dir.join("save");
    let backup_path = dir.join("save~");

    let turn = match load(&save_path) {
        Ok(current) => {
            println!(
                "loaded {}: turn {}, {} bytes, checksum ok",
                save_path.display(),
                current.turn,
                current.bytes
            );
            println!("the new save will keep it as {}", backup_path.display());
            current.turn + 1
        }
        Err(e) if save_path.exists() => {
            // Keep the damaged file for inspection; never back it up over a
            // good backup.
            return Err(format!("{} cannot be loaded: {e}", save_path.display()).into());
        }
        Err(_) => {
            println!("no save in {} yet: new game", dir.display());
            1
        }
    };

    let regions = mib * (1 << 20) / REGION_LEN as u64;
    save(&save_path, turn, regions)?;
    let saved = load(&save_path)?;
    println!(
        "saved turn {} to {} ({} bytes), checksum ok",
        saved.turn,
        save_path.display(),
        saved.bytes
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut line = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                line.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("save_game: {line}");
            ExitCode::FAILURE
        }
    }
}

//! Save slots for a game: each slot is a directory of several files that only
//! make sense together (world, player, thumbnail, metadata), replaced as one
//! unit with [`DirReplace`], loaded through one [`SetReader`].
//!
//! ```text
//! cargo run --example save_slots                  # <temp dir>/crashsafe-example-slots
//! cargo run --example save_slots -- DIR           # a directory of your choice
//! cargo run --example save_slots -- DIR --kills 20  # kill -9 a saving child 20 times
//! ```
//!
//! Each run loads and checks every slot, then saves the next turn into
//! each. With `--kills N` it also starts itself as a child that saves slot 1
//! in a loop, kills it with SIGKILL at a random moment N times, and checks
//! after each kill that the slot is one complete save (old or new, never a
//! mix), then removes what the dead child had staged with
//! [`DirReplace::sweep`] (the next save would remove it too).

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crashsafe::{DirReplace, SetReader};
use serde::{Deserialize, Serialize};

const SLOTS: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Player {
    name: String,
    turn: u64,
    hp: u32,
}

/// What a slot holds, loaded from one version of it.
struct Save {
    turn: u64,
    world: Vec<u8>,
    player: Player,
}

/// The world of `turn`: a few KiB derived from the turn number.
fn world(turn: u64) -> Vec<u8> {
    (0..8192u64)
        .map(|i| (i.wrapping_mul(31) ^ turn) as u8)
        .collect()
}

/// Loads a slot through one reader: every file comes from the same save,
/// whatever another process commits meanwhile.
fn load(slot: &Path) -> Result<Option<Save>, Box<dyn Error>> {
    let reader: SetReader = match DirReplace::open_reader(slot) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = String::from_utf8(reader.read("meta.txt")?)?;
    let turn: u64 = meta
        .trim()
        .strip_prefix("turn ")
        .ok_or("bad meta.txt")?
        .parse()?;
    let player: Player = serde_json::from_slice(&reader.read("player.json")?)?;
    let world = reader.read("world.dat")?;
    let thumbnail = reader.read("thumbnail.png")?;
    // The files only make sense together: check they agree.
    if player.turn != turn || world != self::world(turn) || thumbnail.is_empty() {
        return Err(format!("{}: the files of turn {turn} disagree", slot.display()).into());
    }
    Ok(Some(Save {
        turn,
        world,
        player,
    }))
}

/// Saves the next turn: all four files become visible at once, durably.
fn save(slot: &Path, previous: Option<&Save>) -> Result<u64, Box<dyn Error>> {
    let turn = previous.map_or(1, |s| s.turn + 1);
    let mut set = DirReplace::create(slot)?;
    set.write("world.dat", world(turn))?;
    // Streamed: serde writes straight into the staged file.
    let mut f = set.create_file("player.json")?;
    let player = Player {
        name: previous.map_or_else(|| "ada".into(), |s| s.player.name.clone()),
        turn,
        hp: 100 - (turn % 50) as u32,
    };
    serde_json::to_writer(&mut f, &player)?;
    drop(f);
    // The thumbnail changes every 10 turns; otherwise it is carried over
    // by a hard link, no bytes copied.
    if previous.is_some() && turn % 10 != 0 {
        set.keep("thumbnail.png")?;
    } else {
        set.write("thumbnail.png", format!("PNG of turn {turn}"))?;
    }
    writeln!(set.create_file("meta.txt")?, "turn {turn}")?;
    set.commit()?;
    Ok(turn)
}

/// The child of `--kills`: saves slot 1 forever, until killed.
fn saver_child(dir: &Path) -> Result<(), Box<dyn Error>> {
    let slot = dir.join("slot1");
    loop {
        let current = load(&slot)?;
        save(&slot, current.as_ref())?;
    }
}

fn kill_loop(dir: &Path, kills: u32) -> Result<(), Box<dyn Error>> {
    let slot = dir.join("slot1");
    let exe = std::env::current_exe()?;
    for k in 0..kills {
        let mut child = Command::new(&exe)
            .arg(dir)
            .arg("--child")
            .stdout(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(20 + u64::from(k * 7 % 40)));
        child.kill()?;
        child.wait()?;
        // Recovery: the slot is one complete save; what the child staged
        // is swept.
        let save = load(&slot)?.ok_or("slot 1 vanished")?;
        let swept = DirReplace::sweep(&slot)?;
        println!(
            "kill {}: slot 1 holds turn {} whole; {swept} staging swept",
            k + 1,
            save.turn
        );
    }
    Ok(())
}

fn run() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().filter(|a| !a.starts_with("--")).map_or_else(
        || std::env::temp_dir().join("crashsafe-example-slots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    if args.iter().any(|a| a == "--child") {
        return saver_child(&dir);
    }
    for n in 1..=SLOTS {
        let slot = dir.join(format!("slot{n}"));
        let current = load(&slot)?;
        if let Some(s) = &current {
            println!(
                "slot {n}: {} at turn {}, hp {}, world {} bytes",
                s.player.name,
                s.turn,
                s.player.hp,
                s.world.len()
            );
        }
        let turn = save(&slot, current.as_ref())?;
        println!("slot {n}: saved turn {turn}");
    }
    if let Some(i) = args.iter().position(|a| a == "--kills") {
        let kills = args.get(i + 1).ok_or("--kills needs a count")?.parse()?;
        kill_loop(&dir, kills)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("save_slots: {e}");
            ExitCode::FAILURE
        }
    }
}

//! A typical config-file app: load the settings (defaults when the file does
//! not exist yet), change them, and save them with `crashsafe::write`, so a
//! crash or power cut while saving never leaves a torn or empty config.
//!
//! ```text
//! cargo run --example save_config            # uses <temp dir>/crashsafe-example/config.json
//! cargo run --example save_config -- my.json # or a path of your choice
//! ```
//!
//! Run it twice: the second run loads what the first one saved.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::{env, fs, io};

use serde::{Deserialize, Serialize};

/// The app's settings, stored as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    theme: String,
    font_size: u32,
    recent_files: Vec<String>,
    launches: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            theme: "light".into(),
            font_size: 12,
            recent_files: Vec::new(),
            launches: 0,
        }
    }
}

/// Reads the config, or the defaults when there is none yet.
///
/// A file that exists but does not parse is an error, not a reason to start
/// over with defaults: silently replacing it would lose the user's settings.
fn load(path: &Path) -> Result<Option<Config>, Box<dyn Error>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a valid config: {e}", path.display()).into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Saves the config: the whole new file or, after a crash, the whole old one.
fn save(path: &Path, config: &Config) -> Result<(), Box<dyn Error>> {
    let mut json = serde_json::to_vec_pretty(config)?;
    json.push(b'\n');
    // One call replaces `fs::write`: temp file, fsync, rename, directory
    // fsync. The file keeps its mode and owner if it existed.
    crashsafe::write(path, &json)?;
    Ok(())
}

fn run() -> Result<(), Box<dyn Error>> {
    let path = match env::args_os().nth(1) {
        Some(arg) => PathBuf::from(arg),
        None => {
            let dir = env::temp_dir().join("crashsafe-example");
            fs::create_dir_all(&dir)?;
            dir.join("config.json")
        }
    };

    let mut config = match load(&path)? {
        Some(config) => {
            println!("loaded {}", path.display());
            config
        }
        None => {
            println!(
                "{} does not exist yet: starting from defaults",
                path.display()
            );
            Config::default()
        }
    };

    config.launches += 1;
    config.theme = if config.launches % 2 == 0 {
        "dark"
    } else {
        "light"
    }
    .into();
    config
        .recent_files
        .insert(0, format!("notes-{}.txt", config.launches));
    config.recent_files.truncate(3);

    save(&path, &config)?;
    println!("saved {}:", path.display());
    print!("{}", fs::read_to_string(&path)?);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // crashsafe's errors name the step and the path; the OS error is
            // their source.
            let mut line = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                line.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("save_config: {line}");
            ExitCode::FAILURE
        }
    }
}

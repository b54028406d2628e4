//! Temporary file names: `.{name}.crashsafe-{random}.tmp`, hidden, at most
//! 255 bytes, and carrying a mark (`.crashsafe-` followed by 12 characters of
//! the random alphabet and `.tmp`) that ordinary files do not have: `sweep`
//! removes nothing without it, so a user's `.notes.sessionstore.tmp` is safe.
//! The target's name is shortened inside the temp name if needed; the target
//! itself is never renamed to anything but its own name.

use std::ffi::{OsStr, OsString};

/// How many names are tried before giving up when each one already exists.
pub(crate) const RETRIES_MAX: u32 = 64;

/// Characters of randomness in a name (5 bits each: 60 bits).
pub(crate) const RANDOM_LEN: usize = 12;

/// The longest file name most filesystems accept (`NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;

/// The fixed mark between the target's name and the random part.
pub(crate) const MARK: &[u8] = b".crashsafe-";
const SUFFIX: &[u8] = b".tmp";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Builds the temp name for `target_name` from 64 random bits.
pub(crate) fn temp_name(target_name: &OsStr, random: u64) -> OsString {
    let name = target_name.as_encoded_bytes();
    let room = NAME_MAX - (1 + MARK.len() + RANDOM_LEN + SUFFIX.len());
    let kept = &name[..name.len().min(room)];
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(kept);
    out.extend_from_slice(MARK);
    let mut bits = random;
    for _ in 0..RANDOM_LEN {
        out.push(ALPHABET[(bits & 31) as usize]);
        bits >>= 5;
    }
    out.extend_from_slice(SUFFIX);
    bytes_to_os(out)
}

/// True if `name` has the shape of a temp name this library makes.
pub(crate) fn is_temp_name(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    // "." + at least one byte of the target name + MARK + random + ".tmp"
    let min = 1 + 1 + MARK.len() + RANDOM_LEN + SUFFIX.len();
    if b.len() < min || b.len() > NAME_MAX || b[0] != b'.' || !b.ends_with(SUFFIX) {
        return false;
    }
    let end = b.len() - SUFFIX.len();
    let random = &b[end - RANDOM_LEN..end];
    b[..end - RANDOM_LEN].ends_with(MARK) && random.iter().all(|c| ALPHABET.contains(c))
}

#[cfg(unix)]
fn bytes_to_os(bytes: Vec<u8>) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes)
}

#[cfg(not(unix))]
fn bytes_to_os(bytes: Vec<u8>) -> OsString {
    // Only reached on platforms where every call then fails as unsupported.
    OsString::from(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn short_name() {
        let t = temp_name(OsStr::new("config.toml"), 0);
        assert_eq!(t, OsStr::new(".config.toml.crashsafe-aaaaaaaaaaaa.tmp"));
        assert!(is_temp_name(&t));
    }

    #[test]
    fn different_random_gives_different_names() {
        let a = temp_name(OsStr::new("x"), 1);
        let b = temp_name(OsStr::new("x"), 2);
        assert_ne!(a, b);
    }

    #[test]
    fn long_and_non_utf8_names_fit() {
        let long = vec![0xffu8; 255];
        let t = temp_name(OsStr::from_bytes(&long), u64::MAX);
        assert_eq!(t.len(), 255);
        assert!(is_temp_name(&t));
        assert!(t.as_bytes().starts_with(&[b'.', 0xff]));
    }

    #[test]
    fn other_names_are_not_temp_names() {
        for n in [
            "config.toml",
            ".config.tmp",
            // The shape before the mark: a user's file looked like this.
            ".notes.sessionstore.tmp",
            ".x.aaaaaaaaaaaa.tmp",
            ".x.crashsafe-aaaaaaaaaaa.tmp",
            ".x.crashsafe-aaaaaaaaaaaa.tmpx",
            ".x.crashsafeaaaaaaaaaaaaa.tmp",
            ".x.crashsafe.aaaaaaaaaaaa.tmp",
            "x.crashsafe-aaaaaaaaaaaa.tmp",
            ".x.crashsafe-AAAAAAAAAAAA.tmp",
            "..crashsafe-aaaaaaaaaaaa.tmp",
        ] {
            assert!(!is_temp_name(OsStr::new(n)), "{n}");
        }
    }
}

//! Splitting a user path into its parent directory and file name, refusing
//! paths that do not name a file.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::InvalidReason;

/// Splits `path` into (parent directory, file name).
///
/// Refuses the empty path and every path whose last component is not a plain
/// name: `/`, `..`, `a/.`, `a/..` and anything with a trailing slash (which
/// POSIX reads as "must be a directory"). A bare name has the parent `.`.
pub(crate) fn split(path: &Path) -> Result<(PathBuf, &OsStr), InvalidReason> {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.is_empty() {
        return Err(InvalidReason::Empty);
    }
    if bytes.ends_with(b"/") {
        return Err(InvalidReason::NoFileName);
    }
    let name = path.file_name().ok_or(InvalidReason::NoFileName)?;
    // `Path::file_name` skips a trailing `.` ("a/." gives "a"); the raw bytes
    // must end with exactly the name, after a separator or at the start.
    let name_bytes = name.as_encoded_bytes();
    let head = bytes.len() - name_bytes.len();
    if !bytes.ends_with(name_bytes) || (head > 0 && bytes[head - 1] != b'/') {
        return Err(InvalidReason::NoFileName);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> (String, String) {
        let (d, n) = split(Path::new(p)).unwrap();
        (d.display().to_string(), n.to_string_lossy().into_owned())
    }

    #[test]
    fn plain_paths() {
        assert_eq!(ok("a"), (".".into(), "a".into()));
        assert_eq!(ok("d/a"), ("d".into(), "a".into()));
        assert_eq!(ok("/a"), ("/".into(), "a".into()));
        assert_eq!(ok("/d//a"), ("/d".into(), "a".into()));
        assert_eq!(ok("./a"), (".".into(), "a".into()));
        assert_eq!(ok("../a"), ("..".into(), "a".into()));
        assert_eq!(ok(".hidden"), (".".into(), ".hidden".into()));
    }

    #[test]
    fn refused_paths() {
        assert_eq!(split(Path::new("")), Err(InvalidReason::Empty));
        for p in ["/", "..", ".", "a/", "a/.", "a/..", "/d/a/", "a//"] {
            assert_eq!(split(Path::new(p)), Err(InvalidReason::NoFileName), "{p}");
        }
    }
}

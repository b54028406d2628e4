//! `Options::backup` on a real filesystem: the state a crash between the
//! two renames leaves, and names too long for a backup.

use std::fs;
use std::os::unix::ffi::OsStrExt;

use crashsafe::{Error, HardLinks, InvalidReason, Options};

#[test]
fn a_file_whose_only_other_name_is_its_backup_is_not_hard_linked() {
    // A crash between the backup's rename and the main rename leaves `f`
    // and `f~` as two names of one file.
    let dir = tempfile::tempdir().unwrap();
    let (f, backup) = (dir.path().join("f"), dir.path().join("f~"));
    fs::write(&f, "old").unwrap();
    fs::hard_link(&f, &backup).unwrap();
    let mut opts = Options::new();
    opts.backup(true).hard_links(HardLinks::Refuse);
    opts.write(&f, "new").unwrap();
    assert_eq!(fs::read_to_string(&f).unwrap(), "new");
    assert_eq!(fs::read_to_string(&backup).unwrap(), "old");
    // Without a backup, the same state is not refused either: `f~` is
    // still only the file's own backup.
    fs::remove_file(&backup).unwrap();
    fs::hard_link(&f, &backup).unwrap();
    let mut plain = Options::new();
    plain.hard_links(HardLinks::Refuse);
    plain.write(&f, "newer").unwrap();
    // A real third name is still refused.
    fs::hard_link(&f, dir.path().join("other")).unwrap();
    let err = opts.write(&f, "x").unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidTarget {
            reason: InvalidReason::HardLinked,
            ..
        }
    ));
}

#[test]
fn a_name_too_long_for_its_backup_fails_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(&[b'n'; 255]);
    let path = dir.path().join(name);
    let mut opts = Options::new();
    opts.backup(true);
    for present in [false, true] {
        if present {
            fs::write(&path, "old").unwrap();
        }
        let err = opts.write(&path, "new").unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidTarget {
                    reason: InvalidReason::BackupNameTooLong,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("backup name"), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), usize::from(present), "nothing was created");
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), "old");
    // A 254-byte name has room for `~`.
    let ok = dir.path().join(std::ffi::OsStr::from_bytes(&[b'm'; 254]));
    fs::write(&ok, "old").unwrap();
    opts.write(&ok, "new").unwrap();
    let mut backup = ok.into_os_string();
    backup.push("~");
    assert_eq!(fs::read_to_string(backup).unwrap(), "old");
}

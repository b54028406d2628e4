//! The error numbers the simulator returns: the host's values, taken from
//! rustix, so an `io::Error` built from them has the same `kind()` as the
//! kernel's.

use std::io;

use rustix::io::Errno as E;

/// A raw OS error number.
pub(crate) type Errno = i32;

pub(crate) const ACCESS: Errno = E::ACCESS.raw_os_error();
pub(crate) const AGAIN: Errno = E::AGAIN.raw_os_error();
pub(crate) const BADF: Errno = E::BADF.raw_os_error();
pub(crate) const DQUOT: Errno = E::DQUOT.raw_os_error();
pub(crate) const EXIST: Errno = E::EXIST.raw_os_error();
pub(crate) const INTR: Errno = E::INTR.raw_os_error();
pub(crate) const INVAL: Errno = E::INVAL.raw_os_error();
pub(crate) const IO: Errno = E::IO.raw_os_error();
pub(crate) const ISDIR: Errno = E::ISDIR.raw_os_error();
pub(crate) const LOOP: Errno = E::LOOP.raw_os_error();
pub(crate) const NAMETOOLONG: Errno = E::NAMETOOLONG.raw_os_error();
pub(crate) const NOENT: Errno = E::NOENT.raw_os_error();
pub(crate) const NOSPC: Errno = E::NOSPC.raw_os_error();
pub(crate) const NOTDIR: Errno = E::NOTDIR.raw_os_error();
pub(crate) const NOTEMPTY: Errno = E::NOTEMPTY.raw_os_error();
pub(crate) const NOTSUP: Errno = E::OPNOTSUPP.raw_os_error();
pub(crate) const PERM: Errno = E::PERM.raw_os_error();

/// The symbolic name of `e`, for traces and messages.
pub(crate) fn name(e: Errno) -> String {
    const NAMES: [(Errno, &str); 17] = [
        (ACCESS, "EACCES"),
        (AGAIN, "EWOULDBLOCK"),
        (BADF, "EBADF"),
        (DQUOT, "EDQUOT"),
        (EXIST, "EEXIST"),
        (INTR, "EINTR"),
        (INVAL, "EINVAL"),
        (IO, "EIO"),
        (ISDIR, "EISDIR"),
        (LOOP, "ELOOP"),
        (NAMETOOLONG, "ENAMETOOLONG"),
        (NOENT, "ENOENT"),
        (NOSPC, "ENOSPC"),
        (NOTDIR, "ENOTDIR"),
        (NOTEMPTY, "ENOTEMPTY"),
        (NOTSUP, "EOPNOTSUPP"),
        (PERM, "EPERM"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == e)
        .map(|(_, s)| (*s).to_string())
        .unwrap_or_else(|| format!("errno {e}"))
}

/// The `io::Error` the kernel would return.
pub(crate) fn error(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e)
}

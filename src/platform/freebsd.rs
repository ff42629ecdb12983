//! FreeBSD-only choices (its socket calls are shared with Linux in `sockflags.rs`).

use std::io;
use std::os::fd::RawFd;

/// `posix_fallocate(fd, offset, len)`: FreeBSD has no `fallocate`; only mode 0 (allocate,
/// growing the file if the range ends past it) exists, any other mode is `EOPNOTSUPP`.
pub(crate) fn fallocate(
    fd: RawFd,
    mode: i32,
    offset: libc::off_t,
    len: libc::off_t,
) -> io::Result<i32> {
    if mode != 0 {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    // SAFETY: no pointers; posix_fallocate returns the error number instead of setting
    // errno.
    match unsafe { libc::posix_fallocate(fd, offset, len) } {
        0 => Ok(0),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// The option that lets listeners share a port, the kernel spreading connections among
/// them: FreeBSD's plain SO_REUSEPORT shares without spreading (the last listener gets
/// them all); SO_REUSEPORT_LB (FreeBSD 12 and later) balances.
pub(crate) const SO_REUSEPORT: i32 = libc::SO_REUSEPORT_LB;

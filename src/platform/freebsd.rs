//! FreeBSD-only choices (its socket calls are shared with Linux in `sockflags.rs`).

use std::io;
use std::os::fd::RawFd;

/// Allocates `offset..offset + len` (mode 0 of [`fallocate`](super::fallocate), the only
/// one): `posix_fallocate(fd, offset, len)`, as FreeBSD has no `fallocate`.
pub(crate) fn preallocate(fd: RawFd, offset: libc::off_t, len: libc::off_t) -> io::Result<i32> {
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

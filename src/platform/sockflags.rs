//! Linux and FreeBSD: `accept4`, socket flags set atomically at creation, `MSG_NOSIGNAL`,
//! and `fdatasync`, with the same calls on both.

use std::io;
use std::os::fd::RawFd;

use super::cvt;

/// Flags of every socket coring creates or accepts: close-on-exec and non-blocking (io_uring
/// arms its own poll on EAGAIN; the readiness backend retries on it).
pub(crate) const SOCKET_FLAGS: i32 = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;

/// Flags of every send: a closed peer gives EPIPE, never SIGPIPE.
pub(crate) const SEND_FLAGS: i32 = libc::MSG_NOSIGNAL;

/// `fdatasync(fd)` when `datasync`, else `fsync(fd)`.
pub(crate) fn fsync(fd: RawFd, datasync: bool) -> io::Result<i32> {
    // SAFETY: neither call takes a pointer; a bad fd is reported as EBADF.
    cvt(unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
}

/// `accept4(fd, addr, addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK)`; yields the new descriptor.
///
/// # Safety
///
/// `addr` must be valid for writes of `*addrlen` bytes and `addrlen` for reads and writes,
/// for the whole call.
pub(crate) unsafe fn accept(
    fd: RawFd,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
) -> io::Result<RawFd> {
    // SAFETY: addr and addrlen are valid per this function's contract.
    cvt(unsafe { libc::accept4(fd, addr, addrlen, SOCKET_FLAGS) })
}

/// A new close-on-exec, non-blocking socket of `domain` and `ty`.
pub(crate) fn socket(domain: i32, ty: i32) -> io::Result<RawFd> {
    // SAFETY: socket() takes no pointers.
    cvt(unsafe { libc::socket(domain, ty | SOCKET_FLAGS, 0) })
}

/// A connected pair of close-on-exec, non-blocking sockets.
pub(crate) fn socketpair(domain: i32, ty: i32) -> io::Result<[RawFd; 2]> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    cvt(unsafe { libc::socketpair(domain, ty | SOCKET_FLAGS, 0, fds.as_mut_ptr()) })?;
    Ok(fds)
}

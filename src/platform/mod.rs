//! The few system calls and C types that differ between the Unix kernels coring runs on,
//! behind one set of names and signatures.
//!
//! The op layer, the driver's syscall executor (`driver/syscall.rs`) and the user types call
//! only what this module exports; each platform module below provides every item of the
//! list with the same signature, so the code that calls them needs no `cfg` (the one other
//! platform decision, which backends exist, is made in `driver::backend::select`, with
//! `cfg` at module boundaries):
//!
//! | item | Linux (`linux.rs`) | FreeBSD (`freebsd.rs`) | Apple (`apple.rs`) |
//! |------|--------------------|------------------------|--------------------|
//! | [`Stat`], [`stat`], [`file_stat`] | `struct statx`, `statx(2)` (io_uring STATX writes the same struct) | `struct stat`, `fstatat(2)` / `fstat(2)` (`bsd.rs`) | as FreeBSD |
//! | [`rename`] | `renameat2(2)` | `renameat(2)` (no flags) (`bsd.rs`) | as FreeBSD |
//! | [`fsync`] | `fsync(2)` / `fdatasync(2)` | `fsync(2)` / `fdatasync(2)` | `fcntl(F_FULLFSYNC)` |
//! | [`accept`], [`socket`], [`socketpair`] | `SOCK_CLOEXEC \| SOCK_NONBLOCK`, atomically | as Linux | `fcntl` after the call, plus `SO_NOSIGPIPE` |
//! | [`SEND_FLAGS`] | `MSG_NOSIGNAL` | `MSG_NOSIGNAL` | none (`SO_NOSIGPIPE` is set on every socket) |
//! | [`set_sockaddr_len`] | nothing (no length field) | `sa_len` (`bsd.rs`) | as FreeBSD |
//! | [`read_nowait`] (a read served from the page cache without waiting) | `preadv2(RWF_NOWAIT)` | none (`None`: reads go to the pool) | as FreeBSD |
//! | [`short_read_drains`] (a short stream receive proves the socket empty) | TCP sockets (`SO_PROTOCOL`) | never (kqueue reports no urgent data) (`bsd.rs`) | as FreeBSD |
//! | [`SO_REUSEPORT`] (listeners sharing a port, connections spread among them) | `SO_REUSEPORT` | `SO_REUSEPORT_LB` | `SO_REUSEPORT` (shares, does not spread) |
//! | [`fallocate`] | `fallocate(2)` | mode 0 only (`bsd.rs`), by `posix_fallocate(2)` | mode 0 only (`bsd.rs`), by `F_PREALLOCATE` + `ftruncate` |
//!
//! Where Linux and FreeBSD agree (socket calls with atomic flags, `MSG_NOSIGNAL`, `fsync`),
//! one module, `sockflags.rs`, serves both.
//!
//! Every wrapper returns `Ok(syscall result)` or the `io::Error` of `errno`, so callers do
//! not depend on a platform's errno conventions either.

use std::io;

#[cfg(target_os = "linux")]
pub(crate) mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{
    fallocate, file_stat, read_nowait, rename, set_sockaddr_len, short_read_drains, stat, Stat,
    SO_REUSEPORT, STAT_EMPTY_PATH, STAT_MASK,
};

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
mod sockflags;
#[cfg(target_os = "linux")]
pub(crate) use sockflags::SOCKET_FLAGS;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub(crate) use sockflags::{accept, fsync, socket, socketpair, SEND_FLAGS};

#[cfg(any(target_os = "freebsd", target_vendor = "apple"))]
mod bsd;
#[cfg(any(target_os = "freebsd", target_vendor = "apple"))]
pub(crate) use bsd::{
    fallocate, file_stat, read_nowait, rename, set_sockaddr_len, short_read_drains, stat, Stat,
    STAT_EMPTY_PATH, STAT_MASK,
};

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "freebsd")]
use freebsd::preallocate;
#[cfg(target_os = "freebsd")]
pub(crate) use freebsd::SO_REUSEPORT;

#[cfg(target_vendor = "apple")]
mod apple;
#[cfg(target_vendor = "apple")]
use apple::preallocate;
#[cfg(target_vendor = "apple")]
pub(crate) use apple::{accept, fsync, socket, socketpair, SEND_FLAGS, SO_REUSEPORT};

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_vendor = "apple")))]
compile_error!(
    "coring runs on Linux (io_uring or epoll), FreeBSD and Apple platforms (kqueue); \
     src/platform/ has no module for this target yet"
);

/// What a stat call reports, in the same shape on every platform; `fs::Metadata` wraps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub(crate) size: u64,
    /// The file-type bits of the mode (`mode & S_IFMT`).
    pub(crate) kind: libc::mode_t,
    /// The permission bits of the mode (`mode & 0o7777`).
    pub(crate) perm: u32,
    pub(crate) ino: u64,
    pub(crate) nlink: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) blksize: u32,
    pub(crate) blocks: u64,
    /// `None` where the file system does not report the time.
    pub(crate) modified: Option<Timestamp>,
    pub(crate) accessed: Option<Timestamp>,
    pub(crate) created: Option<Timestamp>,
}

/// Seconds and nanoseconds since the Unix epoch (seconds may be negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp {
    pub(crate) sec: i64,
    pub(crate) nsec: u32,
}

/// Sets or clears `O_NONBLOCK` on `fd`, reading the flags first and changing nothing if
/// they already agree (so a descriptor that ignores the flag and refuses F_SETFL, such as
/// an O_PATH one, is left alone).
pub(crate) fn set_nonblocking(fd: libc::c_int, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; no pointers involved.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let want = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if want != flags {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, want) })?;
    }
    Ok(())
}

/// An `int` socket option of `fd` (`getsockopt(fd, SOL_SOCKET, name)`).
pub(crate) fn socket_option(fd: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live locals; len holds value's size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    cvt(r).map(|_| value)
}

/// A C-style return value (`-1` and `errno` on failure) as a `Result`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

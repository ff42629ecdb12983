//! The backend-neutral description of an operation.

use std::os::fd::RawFd;

use crate::platform;

/// What an operation asks the kernel to do, with raw pointers into memory the operation
/// owns. Every backend translates this in one exhaustive `match`.
///
/// The pointers stay valid from submission until the operation's completion has been
/// handed back to the driver: the op layer guarantees it by keeping the owning value (the
/// op struct, whose kernel-visible parts live on the heap) in the driver's table.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpDesc {
    /// Does nothing; completes with 0. Used by tests and benchmarks of the op path itself.
    Nop,
    /// `pread(fd, buf, len, offset)`; `offset == u64::MAX` means the file position.
    Read {
        fd: RawFd,
        buf: *mut u8,
        len: u32,
        offset: u64,
    },
    /// `pwrite(fd, buf, len, offset)`; `offset == u64::MAX` means the file position.
    Write {
        fd: RawFd,
        buf: *const u8,
        len: u32,
        offset: u64,
    },
    /// `preadv(fd, iov, iovcnt, offset)`.
    Readv {
        fd: RawFd,
        iov: *const libc::iovec,
        iovcnt: u32,
        offset: u64,
    },
    /// `pwritev(fd, iov, iovcnt, offset)`.
    Writev {
        fd: RawFd,
        iov: *const libc::iovec,
        iovcnt: u32,
        offset: u64,
    },
    /// `fsync(fd)` or `fdatasync(fd)`.
    Fsync { fd: RawFd, datasync: bool },
    /// `openat(dirfd, path, flags, mode)`; yields a new fd.
    OpenAt {
        dirfd: RawFd,
        path: *const libc::c_char,
        flags: i32,
        mode: u32,
    },
    /// `close(fd)`.
    Close { fd: RawFd },
    /// `statx(dirfd, path, flags, mask, buf)` on Linux; `fstatat`/`fstat` elsewhere (see
    /// [`platform::stat`]). `flags` may hold [`platform::STAT_EMPTY_PATH`] to describe
    /// `dirfd` itself.
    Statx {
        dirfd: RawFd,
        path: *const libc::c_char,
        flags: i32,
        mask: u32,
        buf: *mut platform::Stat,
    },
    /// `unlinkat(dirfd, path, flags)`.
    UnlinkAt {
        dirfd: RawFd,
        path: *const libc::c_char,
        flags: i32,
    },
    /// `renameat2(olddirfd, oldpath, newdirfd, newpath, flags)` (`renameat` where the kernel
    /// has no rename flags).
    RenameAt {
        olddirfd: RawFd,
        oldpath: *const libc::c_char,
        newdirfd: RawFd,
        newpath: *const libc::c_char,
        flags: u32,
    },
    /// `mkdirat(dirfd, path, mode)`.
    MkdirAt {
        dirfd: RawFd,
        path: *const libc::c_char,
        mode: u32,
    },
    /// `accept4(fd, addr, addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK)`; yields a new fd, always
    /// close-on-exec and non-blocking (see [`platform::accept`]).
    Accept {
        fd: RawFd,
        /// Identity of the open file behind `fd` (see `SharedFd::id`), so a backend that
        /// keeps per-descriptor state can tell a reused descriptor number apart.
        fd_id: u64,
        addr: *mut libc::sockaddr,
        addrlen: *mut libc::socklen_t,
    },
    /// `connect(fd, addr, addrlen)`.
    Connect {
        fd: RawFd,
        /// Identity of the open file behind `fd` (see `SharedFd::id`), so a backend that
        /// keeps per-descriptor state can tell a reused descriptor number apart.
        fd_id: u64,
        addr: *const libc::sockaddr,
        addrlen: libc::socklen_t,
    },
    /// `recv(fd, buf, len, flags)`.
    Recv {
        fd: RawFd,
        /// Identity of the open file behind `fd` (see `SharedFd::id`), so a backend that
        /// keeps per-descriptor state can tell a reused descriptor number apart.
        fd_id: u64,
        buf: *mut u8,
        len: u32,
        flags: i32,
        /// A stream socket: a receive shorter than `len` means nothing more is queued
        /// (not true of datagrams, where each receive takes one datagram).
        stream: bool,
    },
    /// `send(fd, buf, len, flags)`.
    Send {
        fd: RawFd,
        /// Identity of the open file behind `fd` (see `SharedFd::id`), so a backend that
        /// keeps per-descriptor state can tell a reused descriptor number apart.
        fd_id: u64,
        buf: *const u8,
        len: u32,
        flags: i32,
    },
    /// `recvmsg(fd, msg, flags)`.
    RecvMsg {
        fd: RawFd,
        /// Identity of the open file behind `fd` (see `SharedFd::id`), so a backend that
        /// keeps per-descriptor state can tell a reused descriptor number apart.
        fd_id: u64,
        msg: *mut libc::msghdr,
        flags: u32,
    },
    /// `sendmsg(fd, msg, flags)`.
    SendMsg {
        fd: RawFd,
        /// Identity of the open file behind `fd` (see `SharedFd::id`), so a backend that
        /// keeps per-descriptor state can tell a reused descriptor number apart.
        fd_id: u64,
        msg: *const libc::msghdr,
        flags: u32,
    },
    /// `shutdown(fd, how)`.
    Shutdown { fd: RawFd, how: i32 },
}

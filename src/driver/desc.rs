//! The backend-neutral description of an operation.

use crate::platform::c;
use crate::platform::RawFd;

use super::fixed::Fixed;
use crate::platform;

/// The descriptor an operation acts on: the raw number, valid on every backend, the
/// identity of the open file behind it, and the entry it holds in one ring's
/// registered-file table, if it was registered (see [`super::fixed`]). Only the io_uring
/// translation looks at `fixed`, and only when the entry belongs to its own ring;
/// everything else uses `raw`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FdRef {
    pub(crate) raw: RawFd,
    /// Identity of the open file behind `raw` (`SharedFd::id`), so a backend that keeps
    /// per-descriptor state can tell a reused descriptor number apart.
    pub(crate) id: u64,
    // Read by the io_uring backend only (Linux).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fixed: Option<Fixed>,
    /// The file bypasses the page cache (opened for direct IO): a read of it is never
    /// tried from the page cache during submission, where it would wait for the device.
    // Read by the page-cache fast path (io_uring and the readiness backend, Unix).
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) direct: bool,
    /// For a direct file, the device of the file system that holds it (`st_dev`; 0:
    /// unknown): the kernel's refusal of polled IO is a property of the device (its poll
    /// queues) or of its file system, so it is remembered per device (`driver::iopoll`).
    // Read by the polled-ring routing (io_uring, and the mock in tests).
    #[cfg_attr(not(any(target_os = "linux", feature = "test-util")), allow(dead_code))]
    pub(crate) dev: u64,
}

/// What an operation asks the kernel to do, with raw pointers into memory the operation
/// owns. Every backend translates this in one exhaustive `match`.
///
/// The pointers stay valid from submission until the operation's completion has been
/// handed back to the driver: the op layer guarantees it by keeping the owning value (the
/// op struct, whose kernel-visible parts live on the heap) in the driver's table.
///
/// File offsets are positions: there is no "current file position" value. An offset above
/// `i64::MAX` fails with EINVAL on every backend ([`OpDesc::check`]), where io_uring alone
/// would have read `u64::MAX` as "the file position".
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpDesc {
    /// Does nothing; completes with 0. Used by tests and benchmarks of the op path itself.
    Nop,
    /// `pread(fd, buf, len, offset)`. With `buf_index`, `buf..buf + len` lies in that
    /// registered buffer, and the ring that owns it may read with IORING_OP_READ_FIXED;
    /// to any other backend it is a plain read of the same memory.
    Read {
        fd: FdRef,
        buf: *mut u8,
        len: u32,
        offset: u64,
        #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
        buf_index: Option<Fixed>,
    },
    /// `pwrite(fd, buf, len, offset)`; `buf_index` as for [`OpDesc::Read`]
    /// (IORING_OP_WRITE_FIXED).
    Write {
        fd: FdRef,
        buf: *const u8,
        len: u32,
        offset: u64,
        #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
        buf_index: Option<Fixed>,
    },
    /// `preadv(fd, iov, iovcnt, offset)`.
    Readv {
        fd: FdRef,
        iov: *const c::iovec,
        iovcnt: u32,
        offset: u64,
    },
    /// `pwritev(fd, iov, iovcnt, offset)`.
    Writev {
        fd: FdRef,
        iov: *const c::iovec,
        iovcnt: u32,
        offset: u64,
    },
    /// `fsync(fd)` or `fdatasync(fd)`.
    Fsync {
        fd: FdRef,
        // Windows has one flush (FlushFileBuffers).
        #[cfg_attr(windows, allow(dead_code))]
        datasync: bool,
    },
    /// `fallocate(fd, mode, offset, len)` (see [`platform::fallocate`] where there is no
    /// `fallocate`).
    Fallocate {
        fd: FdRef,
        mode: i32,
        offset: u64,
        len: u64,
    },
    /// `ftruncate(fd, len)`.
    Ftruncate { fd: FdRef, len: u64 },
    /// `sync_file_range(fd, offset, len, flags)` (`flags`: Linux's, see
    /// [`platform::fsabi`]; see [`platform::sync_file_range`] where there is none).
    SyncFileRange {
        fd: FdRef,
        offset: u64,
        len: u64,
        flags: u32,
    },
    /// `posix_fadvise(fd, offset, len, advice)` (`advice`: Linux's values).
    Fadvise {
        // Windows has no advice: the executor ignores it.
        #[cfg_attr(windows, allow(dead_code))]
        fd: FdRef,
        offset: u64,
        len: u64,
        #[cfg_attr(windows, allow(dead_code))]
        advice: i32,
    },
    /// `openat(dirfd, path, flags, mode)`; yields a new fd.
    OpenAt {
        dirfd: RawFd,
        path: *const c::c_char,
        flags: i32,
        mode: u32,
    },
    /// `openat2(dirfd, path, how)`; yields a new fd. ENOSYS where there is no `openat2`
    /// (Linux before 5.6, and every other platform): the caller then walks the path with
    /// [`OpDesc::OpenAt`] (`fs::OpenOptions::open_beneath`).
    // Windows has no openat2 (its executor answers ENOSYS).
    #[cfg_attr(windows, allow(dead_code))]
    OpenAt2 {
        dirfd: RawFd,
        path: *const c::c_char,
        how: *const platform::OpenHow,
    },
    /// `close(fd)`.
    Close { fd: RawFd },
    /// `statx(dirfd, path, flags, mask, buf)` on Linux; `fstatat`/`fstat` elsewhere (see
    /// [`platform::stat`]). `flags` may hold [`platform::STAT_EMPTY_PATH`] to describe
    /// `dirfd` itself.
    Statx {
        dirfd: RawFd,
        path: *const c::c_char,
        flags: i32,
        // Linux's statx mask; other platforms report everything.
        #[cfg_attr(windows, allow(dead_code))]
        mask: u32,
        buf: *mut platform::Stat,
    },
    /// `unlinkat(dirfd, path, flags)`.
    UnlinkAt {
        dirfd: RawFd,
        path: *const c::c_char,
        flags: i32,
    },
    /// `renameat2(olddirfd, oldpath, newdirfd, newpath, flags)` (`renameat` where the kernel
    /// has no rename flags).
    RenameAt {
        olddirfd: RawFd,
        oldpath: *const c::c_char,
        newdirfd: RawFd,
        newpath: *const c::c_char,
        flags: u32,
    },
    /// `symlinkat(target, newdirfd, linkpath)`: a symbolic link at `linkpath` whose
    /// content is `target`.
    SymlinkAt {
        target: *const c::c_char,
        newdirfd: RawFd,
        linkpath: *const c::c_char,
    },
    /// `linkat(olddirfd, oldpath, newdirfd, newpath, flags)`.
    LinkAt {
        olddirfd: RawFd,
        oldpath: *const c::c_char,
        newdirfd: RawFd,
        newpath: *const c::c_char,
        // CreateHardLinkW takes no flags.
        #[cfg_attr(windows, allow(dead_code))]
        flags: i32,
    },
    /// `readlinkat(dirfd, path, buf, len)`: yields the bytes written into `buf` (`len` when
    /// the link's content may have been cut short). io_uring has no opcode for it: it runs
    /// on the blocking pool on every backend.
    ReadLinkAt {
        dirfd: RawFd,
        path: *const c::c_char,
        buf: *mut u8,
        len: u32,
    },
    /// The next batch of at most `max` entries of the directory stream `dir`
    /// ([`platform::dir::DirCursor::fill`]); yields how many (0 at the end). No kernel
    /// reads directories asynchronously: it runs on the blocking pool on every backend.
    ReadDir {
        dir: *mut platform::dir::DirCursor,
        max: u32,
    },
    /// `mkdirat(dirfd, path, mode)`.
    MkdirAt {
        dirfd: RawFd,
        path: *const c::c_char,
        // Windows directories have no mode bits.
        #[cfg_attr(windows, allow(dead_code))]
        mode: u32,
    },
    /// `accept4(fd, addr, addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK)`; yields a new fd, always
    /// close-on-exec and non-blocking (see [`platform::accept`]).
    Accept {
        fd: FdRef,
        addr: *mut c::sockaddr,
        addrlen: *mut c::socklen_t,
    },
    /// `connect(fd, addr, addrlen)`.
    Connect {
        fd: FdRef,
        addr: *const c::sockaddr,
        addrlen: c::socklen_t,
    },
    /// `recv(fd, buf, len, flags)`. With `buf_index` (and no flags), `buf..buf + len` lies
    /// in that registered buffer, and the ring that owns it reads the socket with
    /// IORING_OP_READ_FIXED; to any other backend it is a plain receive of the same memory.
    Recv {
        fd: FdRef,
        buf: *mut u8,
        len: u32,
        flags: i32,
        #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
        buf_index: Option<Fixed>,
        /// A stream socket: a receive shorter than `len` means nothing more is queued
        /// (not true of datagrams, where each receive takes one datagram).
        // Read by the readiness backend (Unix).
        #[cfg_attr(windows, allow(dead_code))]
        stream: bool,
    },
    /// A multishot `recv` on a stream socket into the backend's provided buffers: one
    /// completion (with `CQE_F_MORE`) per arrival, each naming the buffer it filled, until a
    /// final completion (EOF, an error, cancellation, or -ENOBUFS when no buffer is left).
    /// Only a backend whose `multishot_recv()` is true receives it.
    RecvMulti {
        // Read by the io_uring backend only (Linux).
        #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
        fd: FdRef,
    },
    /// `send(fd, buf, len, flags)`.
    Send {
        fd: FdRef,
        buf: *const u8,
        len: u32,
        flags: i32,
        /// A stream socket: sends must reach it in the order they were issued (bytes of a
        /// later send must not overtake an earlier one's; see [`OpDesc::is_ordered_write`]).
        stream: bool,
        /// A zero-copy send (io_uring's IORING_OP_SEND_ZC): the kernel sends from `buf`
        /// itself and may reference it after the send completed; a backend that does so
        /// reports a first completion (the result, with [`CQE_F_MORE`](super::CQE_F_MORE))
        /// and, once nothing references the buffer any more, a final notification
        /// ([`CQE_F_NOTIF`](super::CQE_F_NOTIF)). Elsewhere (no such opcode, another
        /// backend) a plain send, with its one completion.
        zerocopy: bool,
        /// With `zerocopy`: the registered buffer `buf..buf + len` lies in
        /// (IORING_RECVSEND_FIXED_BUF on the ring that owns it); ignored otherwise.
        #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
        buf_index: Option<Fixed>,
    },
    /// `recvmsg(fd, msg, flags)`.
    RecvMsg {
        fd: FdRef,
        msg: *mut c::msghdr,
        flags: u32,
    },
    /// `sendmsg(fd, msg, flags)`.
    SendMsg {
        fd: FdRef,
        msg: *const c::msghdr,
        flags: u32,
        /// A stream socket (a vectored write): ordered like [`OpDesc::Send`]'s `stream`.
        stream: bool,
        /// Zero-copy, as [`OpDesc::Send`]'s `zerocopy` (IORING_OP_SENDMSG_ZC).
        zerocopy: bool,
    },
    /// A multishot `accept4` on a listening socket (io_uring's IORING_ACCEPT_MULTISHOT):
    /// one completion (with `CQE_F_MORE`) per accepted connection, its result the new
    /// descriptor (close-on-exec, non-blocking), until a final completion (an error,
    /// cancellation; a final one may still carry a descriptor). Only a backend whose
    /// `multishot_accept()` is true receives it.
    AcceptMulti {
        // Read by the io_uring backend only (Linux).
        #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
        fd: FdRef,
    },
    /// `shutdown(fd, how)`.
    Shutdown { fd: FdRef, how: i32 },
    /// `splice(fd_in, off_in, fd_out, NULL, len, SPLICE_F_MOVE)`: moves up to `len` bytes
    /// from `fd_in` (a file read at `off_in`, or a pipe when `off_in` is `None`) into
    /// `fd_out` (a pipe, or a stream socket when `off_in` is `None`) inside the kernel,
    /// without a copy through user space (Linux; ENOSYS elsewhere). A pipe-to-socket splice
    /// does not wait for the pipe: the caller only issues it for bytes the pipe holds.
    /// io_uring always runs IORING_OP_SPLICE on a worker thread, where a socket that would
    /// block fails it with EAGAIN (no poll is armed for it): the caller then waits with
    /// [`OpDesc::Poll`] and splices again.
    // Issued only where the backend splices (`Backend::splices`: io_uring, Linux).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Splice {
        fd_in: FdRef,
        off_in: Option<u64>,
        fd_out: FdRef,
        len: u32,
    },
    /// `sendfile`: up to `len` bytes of `file` from `offset` to the stream socket `sock`,
    /// inside the kernel (see [`platform::sendfile`] for each kernel's call). Fewer near
    /// the end of the file; 0 at or past it. The readiness backend waits for the socket
    /// as for any send. io_uring has no opcode for it: it runs it during submission when
    /// the file's pages are cached, where a socket without room completes it with EAGAIN
    /// (the caller then waits with [`OpDesc::Poll`]), and otherwise on the blocking pool,
    /// which waits for the socket itself.
    // Windows copies through user space instead and never issues it.
    #[cfg_attr(windows, allow(dead_code))]
    SendFile {
        sock: FdRef,
        file: FdRef,
        offset: u64,
        len: u32,
    },
    /// Waits until `fd` is ready for `interest` (io_uring's single-shot IORING_OP_POLL_ADD,
    /// a zero-timeout `poll(2)` the readiness backend retries on readiness); yields the
    /// `poll(2)` events that are set.
    // Issued only on Linux: `send_file`'s wait for room after io_uring's EAGAIN.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Poll { fd: FdRef, interest: Interest },
}

/// The most buffers one vectored call takes (Linux's `IOV_MAX`), on every platform.
pub(crate) const IOV_MAX: u32 = 1024;

/// The readiness a socket operation waits for when its syscall would block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// The socket a description acts on, when it is a socket operation that waits for
/// readiness if its non-blocking syscall cannot complete yet.
#[derive(Debug, Clone, Copy)]
// Read by the readiness backend (Unix); completion ports wait in the kernel.
#[cfg_attr(windows, allow(dead_code))]
pub(crate) struct SocketTarget {
    pub(crate) fd: RawFd,
    /// The identity of the open file behind `fd` (`SharedFd::id`), which tells a reused
    /// descriptor number apart.
    pub(crate) id: u64,
    pub(crate) interest: Interest,
}

/// What an operation acts on, for the decisions that depend only on that: whether it
/// waits for a socket's readiness, whether it carries a file position that must fit the
/// kernel's, whether its syscall may block. Said once per description, by
/// [`OpDesc::target`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// A socket operation that waits for readiness when its non-blocking syscall cannot
    /// complete yet.
    Socket(#[cfg_attr(windows, allow(dead_code))] SocketTarget),
    /// IO at a file position: `max`, the largest value the call passes as a position or
    /// length (for `sync_file_range`, the range's end), must fit the kernel's signed
    /// `loff_t`. May block.
    File { max: u64 },
    /// Anything else that may block: path lookups, opens, closes, fsync, stat.
    Blocking,
    /// Never blocks: no syscall, or one that returns at once (shutdown), or a multishot
    /// receive or accept (run only by io_uring).
    Immediate,
}

impl OpDesc {
    /// The operation's name, for diagnostics, the mock backend's test handle and the
    /// io_uring test hook that hides opcodes (`Builder::emulate_missing_opcodes`): the
    /// io_uring opcode it becomes, in lower case (`read_fixed` for a read into a
    /// registered buffer, `recv_multi` for the multishot form of `recv`), whichever
    /// backend runs it. Also the opcode's name in [`crate::Metrics::op_latency`].
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OpDesc::Nop => "nop",
            OpDesc::Read {
                buf_index: None, ..
            } => "read",
            OpDesc::Read { .. } => "read_fixed",
            OpDesc::Write {
                buf_index: None, ..
            } => "write",
            OpDesc::Write { .. } => "write_fixed",
            OpDesc::Readv { .. } => "readv",
            OpDesc::Writev { .. } => "writev",
            OpDesc::Fsync { .. } => "fsync",
            OpDesc::Fallocate { .. } => "fallocate",
            OpDesc::Ftruncate { .. } => "ftruncate",
            OpDesc::SyncFileRange { .. } => "sync_file_range",
            OpDesc::Fadvise { .. } => "fadvise",
            OpDesc::OpenAt { .. } => "openat",
            OpDesc::OpenAt2 { .. } => "openat2",
            OpDesc::Close { .. } => "close",
            OpDesc::Statx { .. } => "statx",
            OpDesc::UnlinkAt { .. } => "unlinkat",
            OpDesc::RenameAt { .. } => "renameat",
            OpDesc::MkdirAt { .. } => "mkdirat",
            OpDesc::SymlinkAt { .. } => "symlinkat",
            OpDesc::LinkAt { .. } => "linkat",
            // No io_uring opcode: the system call's name.
            OpDesc::ReadLinkAt { .. } => "readlinkat",
            OpDesc::ReadDir { .. } => "read_dir",
            OpDesc::Accept { .. } => "accept",
            OpDesc::Connect { .. } => "connect",
            OpDesc::Recv {
                buf_index: None, ..
            } => "recv",
            OpDesc::Recv { .. } => "read_fixed",
            OpDesc::RecvMulti { .. } => "recv_multi",
            OpDesc::Send {
                zerocopy: false, ..
            } => "send",
            OpDesc::Send { .. } => "send_zc",
            OpDesc::RecvMsg { .. } => "recvmsg",
            OpDesc::SendMsg {
                zerocopy: false, ..
            } => "sendmsg",
            OpDesc::SendMsg { .. } => "sendmsg_zc",
            OpDesc::AcceptMulti { .. } => "accept_multi",
            OpDesc::Shutdown { .. } => "shutdown",
            OpDesc::Splice { .. } => "splice",
            // No io_uring opcode (the ring splices through a pipe instead): the system
            // call's name.
            OpDesc::SendFile { .. } => "sendfile",
            OpDesc::Poll { .. } => "poll_add",
        }
    }

    /// Whether this is an ordered write: one that must take effect after the earlier
    /// ordered writes of its descriptor, in issue order, on every backend. That is a stream
    /// send (bytes of a later send must not overtake an earlier one's), or a shutdown of
    /// the write side only (a graceful end: what was sent before it goes first). A shutdown
    /// of the read side, or of both (which aborts a writer waiting for a peer that does not
    /// read, as with blocking sockets), takes effect at once; each datagram stands alone.
    #[inline]
    pub(crate) fn is_ordered_write(&self) -> bool {
        matches!(
            self,
            OpDesc::Send { stream: true, .. }
                | OpDesc::SendMsg { stream: true, .. }
                | OpDesc::Shutdown {
                    how: c::SHUT_WR,
                    ..
                }
        )
    }

    /// Whether a [`CancelToken`](crate::cancel::CancelToken) may stop the operation. Not
    /// a close: it gives up a descriptor its caller no longer holds, so skipping it would
    /// leak the descriptor (and the kernel runs a close at once anyway).
    #[inline]
    pub(crate) fn is_cancellable(&self) -> bool {
        !matches!(self, OpDesc::Close { .. })
    }

    /// What the operation acts on ([`Target`]): the one exhaustive match that sorts
    /// descriptions for the readiness backend, the blocking pool and [`OpDesc::check`].
    #[inline]
    pub(crate) fn target(&self) -> Target {
        match *self {
            OpDesc::Recv { fd, .. } | OpDesc::RecvMsg { fd, .. } | OpDesc::Accept { fd, .. } => {
                Target::Socket(SocketTarget {
                    fd: fd.raw,
                    id: fd.id,
                    interest: Interest::Read,
                })
            }
            OpDesc::Send { fd, .. }
            | OpDesc::SendMsg { fd, .. }
            | OpDesc::Connect { fd, .. }
            | OpDesc::SendFile { sock: fd, .. }
            | OpDesc::Splice {
                off_in: None,
                fd_out: fd,
                ..
            } => Target::Socket(SocketTarget {
                fd: fd.raw,
                id: fd.id,
                interest: Interest::Write,
            }),
            OpDesc::Poll { fd, interest } => Target::Socket(SocketTarget {
                fd: fd.raw,
                id: fd.id,
                interest,
            }),
            // From a file into a pipe: reads the file, so it may block on the device.
            OpDesc::Splice {
                off_in: Some(offset),
                ..
            } => Target::File { max: offset },
            OpDesc::Read { offset, .. }
            | OpDesc::Write { offset, .. }
            | OpDesc::Readv { offset, .. }
            | OpDesc::Writev { offset, .. } => Target::File { max: offset },
            OpDesc::Fallocate { offset, len, .. } | OpDesc::Fadvise { offset, len, .. } => {
                Target::File {
                    max: offset.max(len),
                }
            }
            OpDesc::Ftruncate { len, .. } => Target::File { max: len },
            // The range's end must fit too (Linux refuses it with EINVAL; the platforms
            // that sync the whole file instead would not notice).
            OpDesc::SyncFileRange { offset, len, .. } => Target::File {
                max: offset.saturating_add(len),
            },
            OpDesc::Fsync { .. }
            | OpDesc::OpenAt { .. }
            | OpDesc::OpenAt2 { .. }
            | OpDesc::SymlinkAt { .. }
            | OpDesc::LinkAt { .. }
            | OpDesc::ReadLinkAt { .. }
            | OpDesc::ReadDir { .. }
            | OpDesc::Close { .. }
            | OpDesc::Statx { .. }
            | OpDesc::UnlinkAt { .. }
            | OpDesc::RenameAt { .. }
            | OpDesc::MkdirAt { .. } => Target::Blocking,
            OpDesc::Nop
            | OpDesc::Shutdown { .. }
            | OpDesc::RecvMulti { .. }
            | OpDesc::AcceptMulti { .. } => Target::Immediate,
        }
    }

    /// The errno of a description no backend may run, checked once before submission so
    /// that every backend answers alike: EINVAL for a file offset or length (for
    /// `sync_file_range`, the range's end) above `i64::MAX` (the kernel's `loff_t` is signed; io_uring would take
    /// `u64::MAX` as "the file position", a `pread` cannot express it), and for a vectored
    /// call of more than [`IOV_MAX`] buffers (Linux's limit, which Windows' loop over the
    /// buffers would not enforce).
    #[inline]
    pub(crate) fn check(&self) -> Result<(), i32> {
        if let OpDesc::Readv { iovcnt, .. } | OpDesc::Writev { iovcnt, .. } = *self {
            if iovcnt > IOV_MAX {
                return Err(c::EINVAL);
            }
        }
        // A socket operation (its target says so) that reads a file at a position.
        if let OpDesc::SendFile { offset, .. } = *self {
            if offset > i64::MAX as u64 {
                return Err(c::EINVAL);
            }
        }
        let Target::File { max: offset } = self.target() else {
            return Ok(());
        };
        if offset > i64::MAX as u64 {
            return Err(c::EINVAL);
        }
        Ok(())
    }
}

//! Runs an [`OpDesc`] as plain system calls: the readiness backend's and the blocking
//! pool's translation of a description, as `uring::Uring::sqe` is io_uring's.
//!
//! The one place that maps each description onto its syscall. It returns what a CQE would
//! carry: the result, or `-errno`. The calls that differ between kernels (stat, rename,
//! accept, fsync, fallocate, sync_file_range, fadvise, openat2) go through
//! [`crate::platform`], so this file is the same on every Unix.
//! Besides [`execute`], it knows the syscalls' own semantics that every user of them needs:
//! what "not ready yet" looks like ([`outcome`]), and how to run a description on a pool
//! thread without blocking where no cancel reaches ([`execute_blocking`]). Which socket
//! operations wait for which readiness is the description's own fact (`OpDesc::target`).

use std::io;

use super::desc::{FdRef, Interest, Target};
use super::offload::JobCancel;
use super::OpDesc;
use crate::platform;

impl Interest {
    /// The `poll(2)` events of this readiness.
    fn poll_events(self) -> libc::c_short {
        match self {
            Interest::Read => libc::POLLIN,
            Interest::Write => libc::POLLOUT,
        }
    }
}

fn ret(r: isize) -> i32 {
    if r < 0 {
        -io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        r.min(i32::MAX as isize) as i32
    }
}

/// A platform wrapper's result as a CQE would carry it: the value, or `-errno`.
fn res(r: io::Result<i32>) -> i32 {
    match r {
        Ok(n) => n,
        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// An offset as `off_t`, or EINVAL for one the kernel cannot take.
fn offset(off: u64) -> Result<libc::off_t, i32> {
    libc::off_t::try_from(off).map_err(|_| -libc::EINVAL)
}

/// Runs the syscall `desc` describes and returns its result or `-errno`.
///
/// # Safety
///
/// Every pointer in `desc` must be valid for the access the syscall makes, for the whole
/// call (the driver guarantees it: the op owning the memory stays in its table until the
/// completion is reported).
pub(crate) unsafe fn execute(desc: &OpDesc) -> i32 {
    // SAFETY: for every call below, the pointers come from the op that owns them and are
    // valid per this function's contract; lengths are the ones the op computed for them.
    unsafe {
        match *desc {
            OpDesc::Nop => 0,
            // No syscall receives into io_uring's provided buffers, nor accepts more than
            // once.
            OpDesc::RecvMulti { .. } | OpDesc::AcceptMulti { .. } => -libc::EOPNOTSUPP,
            // A registered buffer is plain memory to a syscall (buf_index is io_uring's).
            OpDesc::Read {
                fd: FdRef { raw: fd, .. },
                buf,
                len,
                offset: off,
                ..
            } => match offset(off) {
                Ok(off) => ret(libc::pread(fd, buf.cast(), len as usize, off)),
                Err(e) => e,
            },
            OpDesc::Write {
                fd: FdRef { raw: fd, .. },
                buf,
                len,
                offset: off,
                ..
            } => match offset(off) {
                Ok(off) => ret(libc::pwrite(fd, buf.cast(), len as usize, off)),
                Err(e) => e,
            },
            OpDesc::Readv {
                fd: FdRef { raw: fd, .. },
                iov,
                iovcnt,
                offset: off,
            } => match (offset(off), i32::try_from(iovcnt)) {
                (Ok(off), Ok(n)) => ret(libc::preadv(fd, iov, n, off)),
                _ => -libc::EINVAL,
            },
            OpDesc::Writev {
                fd: FdRef { raw: fd, .. },
                iov,
                iovcnt,
                offset: off,
            } => match (offset(off), i32::try_from(iovcnt)) {
                (Ok(off), Ok(n)) => ret(libc::pwritev(fd, iov, n, off)),
                _ => -libc::EINVAL,
            },
            OpDesc::Fsync {
                fd: FdRef { raw: fd, .. },
                datasync,
            } => res(platform::fsync(fd, datasync)),
            OpDesc::Fallocate {
                fd: FdRef { raw: fd, .. },
                mode,
                offset: off,
                len,
            } => match (offset(off), offset(len)) {
                (Ok(off), Ok(len)) => res(platform::fallocate(fd, mode, off, len)),
                _ => -libc::EINVAL,
            },
            OpDesc::Ftruncate {
                fd: FdRef { raw: fd, .. },
                len,
            } => match offset(len) {
                Ok(len) => ret(libc::ftruncate(fd, len) as isize),
                Err(e) => e,
            },
            OpDesc::SyncFileRange {
                fd: FdRef { raw: fd, .. },
                offset: off,
                len,
                flags,
            } => match (offset(off), offset(len)) {
                (Ok(off), Ok(len)) => res(platform::sync_file_range(fd, off, len, flags)),
                _ => -libc::EINVAL,
            },
            OpDesc::Fadvise {
                fd: FdRef { raw: fd, .. },
                offset: off,
                len,
                advice,
            } => match (offset(off), offset(len)) {
                (Ok(off), Ok(len)) => res(platform::fadvise(fd, off, len, advice)),
                _ => -libc::EINVAL,
            },
            OpDesc::OpenAt {
                dirfd,
                path,
                flags,
                mode,
            } => ret(libc::openat(dirfd, path, flags, mode) as isize),
            OpDesc::OpenAt2 { dirfd, path, how } => res(platform::openat2(dirfd, path, how)),
            OpDesc::Close { fd } => ret(libc::close(fd) as isize),
            OpDesc::Statx {
                dirfd,
                path,
                flags,
                mask,
                buf,
            } => res(platform::stat(dirfd, path, flags, mask, buf)),
            OpDesc::UnlinkAt { dirfd, path, flags } => {
                ret(libc::unlinkat(dirfd, path, flags) as isize)
            }
            OpDesc::RenameAt {
                olddirfd,
                oldpath,
                newdirfd,
                newpath,
                flags,
            } => res(platform::rename(
                olddirfd, oldpath, newdirfd, newpath, flags,
            )),
            // mode_t is u16 on FreeBSD and Darwin; permission bits fit (std casts likewise).
            OpDesc::MkdirAt { dirfd, path, mode } => {
                ret(libc::mkdirat(dirfd, path, mode as libc::mode_t) as isize)
            }
            OpDesc::SymlinkAt {
                target,
                newdirfd,
                linkpath,
            } => ret(libc::symlinkat(target, newdirfd, linkpath) as isize),
            OpDesc::LinkAt {
                olddirfd,
                oldpath,
                newdirfd,
                newpath,
                flags,
            } => ret(libc::linkat(olddirfd, oldpath, newdirfd, newpath, flags) as isize),
            OpDesc::ReadLinkAt {
                dirfd,
                path,
                buf,
                len,
            } => ret(libc::readlinkat(dirfd, path, buf.cast(), len as usize)),
            // The cursor belongs to the operation, which the driver keeps alive (and no one
            // else touches) until this job's completion is reaped.
            OpDesc::ReadDir { dir, max } => (*dir).fill(max),
            OpDesc::Accept {
                fd: FdRef { raw: fd, .. },
                addr,
                addrlen,
                ..
            } => res(platform::accept(fd, addr, addrlen)),
            OpDesc::Connect {
                fd: FdRef { raw: fd, .. },
                addr,
                addrlen,
                ..
            } => connect(fd, addr, addrlen),
            OpDesc::Recv {
                fd: FdRef { raw: fd, .. },
                buf,
                len,
                flags,
                ..
            } => ret(platform::recv(
                fd,
                buf.cast(),
                len as usize,
                flags | libc::MSG_DONTWAIT,
            )),
            // A zero-copy send is a plain one here (see `OpDesc::Send::zerocopy`), and a
            // registered buffer plain memory.
            OpDesc::Send {
                fd: FdRef { raw: fd, .. },
                buf,
                len,
                flags,
                ..
            } => ret(platform::send(
                fd,
                buf.cast(),
                len as usize,
                flags | libc::MSG_DONTWAIT,
            )),
            OpDesc::RecvMsg {
                fd: FdRef { raw: fd, .. },
                msg,
                flags,
                ..
            } => ret(platform::recvmsg(
                fd,
                msg,
                flags as i32 | libc::MSG_DONTWAIT,
            )),
            OpDesc::SendMsg {
                fd: FdRef { raw: fd, .. },
                msg,
                flags,
                ..
            } => ret(platform::sendmsg(
                fd,
                msg,
                flags as i32 | libc::MSG_DONTWAIT,
            )),
            OpDesc::Shutdown {
                fd: FdRef { raw: fd, .. },
                how,
            } => ret(libc::shutdown(fd, how) as isize),
            OpDesc::Splice {
                fd_in,
                off_in,
                fd_out,
                len,
            } => match off_in.map(offset).transpose() {
                Ok(off) => ret(platform::splice(fd_in.raw, off, fd_out.raw, len as usize)),
                Err(e) => e,
            },
            OpDesc::SendFile {
                sock,
                file,
                offset: off,
                len,
            } => match offset(off) {
                Ok(off) => ret(platform::sendfile(sock.raw, file.raw, off, len as usize)),
                Err(e) => e,
            },
            OpDesc::Poll { fd, interest } => {
                let mut p = libc::pollfd {
                    fd: fd.raw,
                    events: interest.poll_events(),
                    revents: 0,
                };
                match ret(libc::poll(&mut p, 1, 0) as isize) {
                    // Not ready: the caller waits for readiness and asks again.
                    0 => -libc::EAGAIN,
                    n if n < 0 => n,
                    _ => i32::from(p.revents as u16),
                }
            }
        }
    }
}

/// Like [`execute`], but waits instead of returning EAGAIN: for running a description on
/// a pool thread. A socket operation waits for its socket's readiness, and so does IO on a
/// file without positions (a pipe, a FIFO, a terminal: the positional call fails with
/// ESPIPE, and the plain `read`/`write` follows, as io_uring ignores the offset for such
/// files). Both wait in [`JobCancel::wait`], so cancelling the job ends the wait with
/// -ECANCELED: a read on a pipe that never gets data does not hold a pool thread (and the
/// descriptor) forever, and one on a non-blocking pipe waits for data instead of
/// failing with EAGAIN.
///
/// # Safety
///
/// As [`execute`].
pub(crate) unsafe fn execute_blocking(desc: &OpDesc, cancel: &JobCancel) -> i32 {
    // SAFETY: forwarded from the caller.
    let mut res = unsafe { execute(desc) };
    let target = desc.target();
    // A signal (without SA_RESTART) interrupted a call that blocks in the kernel: an open
    // waiting for a lease break or for a FIFO's other end, an fsync, a read of a slow
    // device. Run it again, as std does and as io_uring does (its workers never report
    // EINTR). Never close(2): the descriptor is gone whatever it reports. Socket calls and
    // IO on files without positions wait and retry below.
    if !matches!(target, Target::Socket(_)) && !matches!(desc, OpDesc::Close { .. }) {
        while res == -libc::EINTR {
            // SAFETY: forwarded from the caller.
            res = unsafe { execute(desc) };
        }
    }
    let (fd, events, retry): (libc::c_int, libc::c_short, unsafe fn(&OpDesc) -> i32) = match target
    {
        Target::Socket(t) => (t.fd, t.interest.poll_events(), resume),
        _ if res == -libc::ESPIPE => match unpositioned(desc) {
            Some((fd, events)) => {
                // Not tried yet: the descriptor may be in blocking mode, so a plain
                // read now could block where no cancel reaches it. Wait first.
                res = -libc::EAGAIN;
                (fd, events, execute_unpositioned)
            }
            None => return res,
        },
        _ => return res,
    };
    // EINTR: a plain call on a descriptor in blocking mode, interrupted by a signal; wait
    // and try again (io_uring never reports it either).
    while would_block(desc, res) || res == -libc::EINTR {
        if let Err(errno) = cancel.wait(fd, events) {
            return -errno;
        }
        // SAFETY: forwarded from the caller.
        res = unsafe { retry(desc) };
    }
    res
}

/// How a write to a file without positions can avoid blocking once the descriptor was
/// reported writable (see [`execute_unpositioned`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteMode {
    /// Non-blocking mode (EAGAIN comes back, and the job waits again), or a file we know
    /// nothing better for (a terminal, a device): a plain `write`.
    Plain,
    /// A pipe or FIFO in blocking mode: at most `PIPE_BUF` bytes, which fit once it is
    /// writable (a longer write would block until all of it fits).
    PipeChunk,
    /// A socket in blocking mode: `send` with `MSG_DONTWAIT`, the whole length (a stream
    /// takes what fits; a datagram or packet goes whole, never split).
    SocketNoWait,
}

fn write_mode(fd: libc::c_int) -> WriteMode {
    // SAFETY: F_GETFL reads the descriptor's status flags; no pointer involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_NONBLOCK != 0 {
        return WriteMode::Plain;
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `struct stat` into st, which has room for one.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return WriteMode::Plain;
    }
    // SAFETY: fstat succeeded, so it initialised st.
    match unsafe { st.assume_init() }.st_mode & libc::S_IFMT {
        libc::S_IFIFO => WriteMode::PipeChunk,
        libc::S_IFSOCK => WriteMode::SocketNoWait,
        _ => WriteMode::Plain,
    }
}

/// For positional IO, the descriptor and the poll events it waits for when the file has no
/// positions.
fn unpositioned(desc: &OpDesc) -> Option<(libc::c_int, libc::c_short)> {
    match *desc {
        OpDesc::Read { fd, .. } | OpDesc::Readv { fd, .. } => Some((fd.raw, libc::POLLIN)),
        OpDesc::Write { fd, .. } | OpDesc::Writev { fd, .. } => Some((fd.raw, libc::POLLOUT)),
        _ => None,
    }
}

/// Positional IO without the position, for a file that has none (ESPIPE): `read`, `write`,
/// `readv`, `writev`, run once the descriptor was reported ready.
///
/// A write must not block where no cancel reaches it ([`WriteMode`]): to a pipe in
/// blocking mode it writes at most `PIPE_BUF` bytes (of the first buffer, for `writev`),
/// a short write such as io_uring reports; to a socket in blocking mode it sends with
/// `MSG_DONTWAIT`, so a message is never split. A read returns what is there once
/// readable.
///
/// # Safety
///
/// As [`execute`].
unsafe fn execute_unpositioned(desc: &OpDesc) -> i32 {
    // SAFETY: the pointers come from the op that owns them and are valid per this
    // function's contract; lengths are the ones the op computed for them (a capped length
    // is shorter, and a capped iovec is a prefix of the op's first one).
    unsafe {
        match *desc {
            OpDesc::Read { fd, buf, len, .. } => ret(libc::read(fd.raw, buf.cast(), len as usize)),
            OpDesc::Readv {
                fd, iov, iovcnt, ..
            } => match i32::try_from(iovcnt) {
                Ok(n) => ret(libc::readv(fd.raw, iov, n)),
                Err(_) => -libc::EINVAL,
            },
            OpDesc::Write { fd, buf, len, .. } => {
                let len = len as usize;
                match write_mode(fd.raw) {
                    WriteMode::Plain => ret(libc::write(fd.raw, buf.cast(), len)),
                    WriteMode::PipeChunk => {
                        ret(libc::write(fd.raw, buf.cast(), len.min(libc::PIPE_BUF)))
                    }
                    WriteMode::SocketNoWait => {
                        ret(platform::send(fd.raw, buf.cast(), len, libc::MSG_DONTWAIT))
                    }
                }
            }
            OpDesc::Writev {
                fd, iov, iovcnt, ..
            } => {
                let Ok(n) = i32::try_from(iovcnt) else {
                    return -libc::EINVAL;
                };
                match write_mode(fd.raw) {
                    WriteMode::Plain => ret(libc::writev(fd.raw, iov, n)),
                    WriteMode::PipeChunk => {
                        // The first non-empty buffer's first PIPE_BUF bytes.
                        let iovs = std::slice::from_raw_parts(iov, iovcnt as usize);
                        match iovs.iter().find(|v| v.iov_len > 0) {
                            Some(v) => ret(libc::write(
                                fd.raw,
                                v.iov_base,
                                v.iov_len.min(libc::PIPE_BUF),
                            )),
                            None => 0,
                        }
                    }
                    WriteMode::SocketNoWait => {
                        // SAFETY (of the zeroed header): all-zero is a valid empty msghdr.
                        let mut msg: libc::msghdr = std::mem::zeroed();
                        msg.msg_iov = iov.cast_mut();
                        msg.msg_iovlen = iovcnt as _;
                        ret(platform::sendmsg(fd.raw, &msg, libc::MSG_DONTWAIT))
                    }
                }
            }
            _ => unreachable!("coring: only positional IO runs without its position"),
        }
    }
}

/// Runs a socket description again after its descriptor was reported ready (or a wait
/// for it ended). The same as [`execute`] except for connect, whose outcome is read from
/// `SO_ERROR` first: POSIX reports a non-blocking connect's result there once the socket is
/// writable. A second `connect(2)` reports it too on Linux, but BSD kernels (FreeBSD's
/// `soconnectat`) clear the pending error before trying again, losing it.
///
/// # Safety
///
/// As [`execute`].
pub(crate) unsafe fn resume(desc: &OpDesc) -> i32 {
    if let OpDesc::Connect { fd, .. } = *desc {
        let err = socket_error(fd.raw);
        if err != 0 {
            return -err;
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { execute(desc) }
}

/// Takes the socket's pending error (`SO_ERROR`): 0 if none, else the errno (that of
/// `getsockopt` itself if it fails).
fn socket_error(fd: libc::c_int) -> i32 {
    platform::socket_option(fd, libc::SO_ERROR)
        .unwrap_or_else(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// What the result of a readiness-routed socket syscall says ([`outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not ready yet: wait for the descriptor and run the operation again.
    Wait,
    /// Done, and the socket has nothing more to give or no more room: another operation
    /// can wait for the next edge instead of trying first.
    Drained,
    /// Done; the socket may still be ready.
    Ready,
}

/// Whether `res`, returned by [`execute`] or [`resume`] for a readiness-routed `desc`,
/// means "not ready yet" rather than a final result, and if final, whether it shows the
/// socket drained. One match for both questions: this runs on every socket operation.
///
/// Not ready is EAGAIN for every socket operation except connect, which reports a
/// connection still being made as EINPROGRESS (see [`connect`]): a connect's own EAGAIN
/// (a Unix listener's full backlog) is its final answer, as it is on io_uring.
///
/// Drained: a send shorter than asked (the kernel stops a non-blocking send only when the
/// send buffer is full, and freeing space sends a writability edge); a stream receive
/// shorter than asked, only if `reads_drain` (the backend's knowledge of the socket, from
/// [`platform::short_read_drains`]): a TCP receive stops short at the urgent mark, and a
/// Unix stream receive after a message that carried descriptors, with more data queued
/// behind it that sends no new edge; waiting then would hang the read.
#[inline]
pub(crate) fn outcome(desc: &OpDesc, res: i32, reads_drain: bool) -> Outcome {
    let (wait, drained) = match *desc {
        OpDesc::Connect { .. } => (res == -libc::EINPROGRESS, false),
        OpDesc::Recv {
            len, stream: true, ..
        } => (
            res == -libc::EAGAIN,
            reads_drain && res > 0 && (res as u32) < len,
        ),
        // Not `sendfile` or `splice`: they also stop short at the end of the file or of
        // what the pipe holds, with room left in the socket (no writability edge follows).
        OpDesc::Send { len, .. } => (res == -libc::EAGAIN, res >= 0 && (res as u32) < len),
        _ => (res == -libc::EAGAIN, false),
    };
    match (wait, drained) {
        (true, _) => Outcome::Wait,
        (false, true) => Outcome::Drained,
        (false, false) => Outcome::Ready,
    }
}

/// Whether `res` means "not ready yet" for a readiness-routed `desc` (see [`outcome`]).
pub(crate) fn would_block(desc: &OpDesc, res: i32) -> bool {
    outcome(desc, res, false) == Outcome::Wait
}

/// A non-blocking connect, resumable: the first call starts it; once the socket is
/// writable and [`resume`] found no pending error, a second call reports success (EISCONN).
/// Returns -EINPROGRESS while the connection is being made ([`would_block`]).
///
/// # Safety
///
/// `addr` must point to `addrlen` readable bytes.
unsafe fn connect(fd: i32, addr: *const libc::sockaddr, addrlen: libc::socklen_t) -> i32 {
    // SAFETY: forwarded from the caller.
    let r = ret(unsafe { libc::connect(fd, addr, addrlen) } as isize);
    match -r {
        libc::EISCONN => 0,
        // Still connecting: wait for writability. A failure is then read from SO_ERROR by
        // `resume`.
        libc::EINPROGRESS | libc::EALREADY => -libc::EINPROGRESS,
        _ => r,
    }
}

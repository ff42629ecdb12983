//! Runs an [`OpDesc`] as a plain system call, for backends (and opcodes) without io_uring.
//!
//! This is the readiness/blocking-pool counterpart of `uring::Uring::sqe`: the one place
//! that maps each description onto its syscall. It returns what a CQE would carry: the
//! result, or `-errno`. The calls that differ between kernels (stat, rename, accept,
//! fsync) go through [`crate::platform`], so this file is the same on every Unix.

use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::RawFd;

#[cfg(target_os = "linux")]
use super::dense::DenseMap;
use super::desc::FdRef;
use super::offload::JobCancel;
use super::{Completion, OpDesc};
use crate::platform;

/// How the fallback backend runs a description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Completes at once (no syscall, or one that never blocks).
    Inline,
    /// A socket op: try it non-blocking, wait for readability, retry.
    Readable,
    /// A socket op: try it non-blocking, wait for writability, retry.
    Writable,
    /// May block (regular files, path lookups, fsync): run on the blocking pool.
    Blocking,
}

/// Chooses how the fallback backend runs `desc`.
pub(crate) fn route(desc: &OpDesc) -> Route {
    match desc {
        // RecvMulti never reaches a backend without provided buffers; if it did, it would
        // fail at once (see `execute`).
        OpDesc::Nop | OpDesc::Shutdown { .. } | OpDesc::RecvMulti { .. } => Route::Inline,
        OpDesc::Recv { .. } | OpDesc::RecvMsg { .. } | OpDesc::Accept { .. } => Route::Readable,
        OpDesc::Send { .. } | OpDesc::SendMsg { .. } | OpDesc::Connect { .. } => Route::Writable,
        OpDesc::Read { .. }
        | OpDesc::Write { .. }
        | OpDesc::Readv { .. }
        | OpDesc::Writev { .. }
        | OpDesc::Fsync { .. }
        | OpDesc::OpenAt { .. }
        | OpDesc::Close { .. }
        | OpDesc::Statx { .. }
        | OpDesc::UnlinkAt { .. }
        | OpDesc::RenameAt { .. }
        | OpDesc::MkdirAt { .. } => Route::Blocking,
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
            // No syscall receives into io_uring's provided buffers.
            OpDesc::RecvMulti { .. } => -libc::EOPNOTSUPP,
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
            OpDesc::OpenAt {
                dirfd,
                path,
                flags,
                mode,
            } => ret(libc::openat(dirfd, path, flags, mode) as isize),
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
            } => ret(libc::recv(
                fd,
                buf.cast(),
                len as usize,
                flags | libc::MSG_DONTWAIT,
            )),
            OpDesc::Send {
                fd: FdRef { raw: fd, .. },
                buf,
                len,
                flags,
                ..
            } => ret(libc::send(
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
            } => ret(libc::recvmsg(fd, msg, flags as i32 | libc::MSG_DONTWAIT)),
            OpDesc::SendMsg {
                fd: FdRef { raw: fd, .. },
                msg,
                flags,
                ..
            } => ret(libc::sendmsg(fd, msg, flags as i32 | libc::MSG_DONTWAIT)),
            OpDesc::Shutdown {
                fd: FdRef { raw: fd, .. },
                how,
            } => ret(libc::shutdown(fd, how) as isize),
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
    let (fd, events, retry): (libc::c_int, libc::c_short, unsafe fn(&OpDesc) -> i32) =
        match route(desc) {
            Route::Readable => (socket_target(desc).0, libc::POLLIN, resume),
            Route::Writable => (socket_target(desc).0, libc::POLLOUT, resume),
            Route::Blocking if res == -libc::ESPIPE => match unpositioned(desc) {
                Some((fd, events)) => {
                    // Not tried yet: the descriptor may be in blocking mode, so a plain
                    // read now could block where no cancel reaches it. Wait first.
                    res = -libc::EAGAIN;
                    (fd, events, execute_unpositioned)
                }
                None => return res,
            },
            Route::Inline | Route::Blocking => return res,
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
                        ret(libc::send(fd.raw, buf.cast(), len, libc::MSG_DONTWAIT))
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
                        ret(libc::sendmsg(fd.raw, &msg, libc::MSG_DONTWAIT))
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

/// The socket a readiness-routed description acts on, and its open-file identity
/// (`SharedFd::id`, which tells a reused descriptor number apart).
pub(crate) fn socket_target(desc: &OpDesc) -> (libc::c_int, u64) {
    match *desc {
        OpDesc::Recv { fd, fd_id, .. }
        | OpDesc::RecvMsg { fd, fd_id, .. }
        | OpDesc::Accept { fd, fd_id, .. }
        | OpDesc::Send { fd, fd_id, .. }
        | OpDesc::SendMsg { fd, fd_id, .. }
        | OpDesc::Connect { fd, fd_id, .. } => (fd.raw, fd_id),
        _ => unreachable!("coring: only socket operations wait for readiness"),
    }
}

/// Whether a successful socket transfer shows the socket has nothing more to give or no
/// more room, so a readiness backend can wait for the next edge instead of trying again.
///
/// A send shorter than asked: the kernel stops a non-blocking send only when the send
/// buffer is full, and freeing space sends a writability edge.
///
/// A stream receive shorter than asked, only if `reads_drain` (the backend's knowledge of
/// the socket, from [`platform::short_read_drains`]): a TCP receive stops short at the
/// urgent mark, and a Unix stream receive after a message that carried descriptors, with
/// more data queued behind it that sends no new edge; waiting then would hang the read.
pub(crate) fn drained(desc: &OpDesc, res: i32, reads_drain: bool) -> bool {
    match *desc {
        OpDesc::Recv {
            len, stream: true, ..
        } => reads_drain && res > 0 && (res as u32) < len,
        OpDesc::Send { len, .. } => res >= 0 && (res as u32) < len,
        _ => false,
    }
}

/// Whether `res`, returned by [`execute`] or [`resume`] for a readiness-routed `desc`, means
/// "not ready yet: wait for the descriptor and run it again" rather than a final result.
/// That is EAGAIN for every socket operation except connect, which reports a connection
/// still being made as EINPROGRESS (see [`connect`]): a connect's own EAGAIN (a Unix
/// listener's full backlog) is its final answer, as it is on io_uring.
pub(crate) fn would_block(desc: &OpDesc, res: i32) -> bool {
    match desc {
        OpDesc::Connect { .. } => res == -libc::EINPROGRESS,
        _ => res == -libc::EAGAIN,
    }
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

/// Whether inline attempts of one kind are worth a syscall: after [`Streak::MISSES`]
/// attempts in a row that would have blocked, the next [`Streak::PAUSE`] skip the attempt
/// and go straight to the backend, so a workload where attempts keep failing pays the
/// extra syscall on a few operations in every 68 only.
#[derive(Debug, Default)]
struct Streak {
    misses: u32,
    skip: u32,
}

impl Streak {
    /// Attempts that would block, in a row, before a pause.
    const MISSES: u32 = 4;
    /// Operations sent straight to the backend during a pause.
    const PAUSE: u32 = 64;

    /// Whether to attempt this operation inline (counts down a pause).
    fn should_try(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    fn hit(&mut self) {
        self.misses = 0;
    }

    fn miss(&mut self) {
        self.misses += 1;
        if self.misses >= Self::MISSES {
            self.misses = 0;
            self.skip = Self::PAUSE;
        }
    }
}

/// Serves positional reads straight from the page cache when it can (`read_nowait`), so a
/// cached read costs one syscall and no trip through the ring or the pool, and completes in
/// the same poll that issued it. Adaptive ([`Streak`]): after a few reads in a row that
/// would have blocked (data not cached, O_DIRECT, a pipe), it stops trying for a while so
/// uncached workloads do not pay the extra syscall on every read.
#[derive(Debug, Default)]
pub(crate) struct InlineReads {
    streak: Streak,
    pub(crate) hits: u64,
}

impl InlineReads {
    /// The completion of `desc` if it is a positional read the page cache answered.
    ///
    /// # Safety
    ///
    /// As [`execute`]: the pointers in `desc` are valid for the whole call.
    pub(crate) unsafe fn try_complete(&mut self, desc: &OpDesc) -> Option<Completion> {
        // Registered files and buffers are read through the plain descriptor and memory,
        // which stay valid whether registered or not.
        let OpDesc::Read {
            fd,
            buf,
            len,
            offset,
            ..
        } = *desc
        else {
            return None;
        };
        if len == 0 || !self.streak.should_try() {
            return None;
        }
        // SAFETY: forwarded from the caller: buf is valid for len bytes.
        match unsafe { platform::read_nowait(fd.raw, buf, len, offset) } {
            Some(res) => {
                self.streak.hit();
                self.hits += 1;
                Some(Completion { res, flags: 0 })
            }
            None => {
                self.streak.miss();
                None
            }
        }
    }
}

/// The io_uring backend's per-descriptor send state: sends run as non-blocking syscalls
/// during submission where they can, and a stream's sends and shutdown stay in the order
/// they were issued.
///
/// **Inline sends.** A send that finds room in the socket buffer, which is nearly every
/// send of a request/response protocol, completes in the poll that issued it, with no
/// SQE, no CQE, no slot and no second poll of the task. One that would block goes to the
/// ring. Sends that keep finding the buffer full (a bulk writer; a short send counts as a
/// miss) pause this descriptor's attempts ([`Streak`]), not the others'.
///
/// **Order.** The ring does not order operations on one file: a later send issued while an
/// earlier one waits in the kernel for room can go first, and IORING_OP_SHUTDOWN runs on a
/// kernel worker thread, after sends issued behind it. So, per descriptor:
/// - no inline attempt while an earlier send of the descriptor is queued (in the ring or
///   on the pool) or held;
/// - a stream's send or shutdown issued while an earlier one is queued or held is *held*
///   here, in order, and released when the one before it finishes
///   ([`InlineSends::finished`] names the descriptor, [`InlineSends::release`] gives the
///   next): at most one stream send of a descriptor is in the ring at a time;
/// - a shutdown never goes to the ring: the backend runs `shutdown(2)` (which never
///   blocks) when nothing is before it, or at once if it is not [`ordered`].
///
/// This is what the readiness backend guarantees with its per-descriptor queues
/// (`Fallback::attempt`); both run the syscalls through [`execute`]. Datagram sends are
/// not held (each datagram stands alone), only kept from overtaking by inline attempts.
/// An op in flight or held holds its descriptor open, so the number names the same file
/// until its entry here is gone.
#[cfg(target_os = "linux")]
#[derive(Default)]
pub(crate) struct InlineSends {
    /// Per descriptor number.
    fds: DenseMap<SendState>,
    /// Descriptor of each queued or held operation, by operation key.
    keys: DenseMap<RawFd>,
    pub(crate) hits: u64,
}

#[cfg(target_os = "linux")]
#[derive(Default)]
struct SendState {
    /// Sends of this descriptor in the ring or on the pool.
    queued: u32,
    /// A stream's sends and shutdowns waiting for the ones before them, in issue order.
    held: std::collections::VecDeque<(usize, OpDesc)>,
    streak: Streak,
}

#[cfg(target_os = "linux")]
impl SendState {
    fn busy(&self) -> bool {
        self.queued > 0 || !self.held.is_empty()
    }
}

/// The descriptor of an operation this state tracks: a send, sendmsg or shutdown.
#[cfg(target_os = "linux")]
fn send_fd(desc: &OpDesc) -> Option<RawFd> {
    match *desc {
        OpDesc::Send { fd, .. } | OpDesc::SendMsg { fd, .. } | OpDesc::Shutdown { fd, .. } => {
            Some(fd.raw)
        }
        _ => None,
    }
}

/// Whether `desc` must wait behind the earlier sends of its descriptor: a stream send, or
/// a shutdown of the write side only (a graceful end: what was sent before it goes
/// first). A shutdown of the read side, or of both (which aborts a writer waiting for a
/// peer that does not read, as with blocking sockets), takes effect at once.
pub(crate) fn ordered(desc: &OpDesc) -> bool {
    matches!(
        desc,
        OpDesc::Send { stream: true, .. }
            | OpDesc::Shutdown {
                how: libc::SHUT_WR,
                ..
            }
    )
}

#[cfg(target_os = "linux")]
impl InlineSends {
    /// The completion of `desc` if it is a send (`send` or `sendmsg`) that did not have to
    /// wait and had nothing of its descriptor queued or held before it, or a `shutdown`
    /// with nothing before it.
    ///
    /// # Safety
    ///
    /// As [`execute`]: the pointers in `desc` are valid for the whole call.
    pub(crate) unsafe fn try_complete(&mut self, desc: &OpDesc) -> Option<Completion> {
        let fd = match *desc {
            OpDesc::Send { len: 0, .. } => return None,
            OpDesc::Send { fd, .. } | OpDesc::SendMsg { fd, .. } => fd.raw,
            OpDesc::Shutdown { .. } => {
                if self.must_wait(desc).is_some() {
                    return None;
                }
                self.hits += 1;
                // SAFETY: no pointers: a descriptor and a constant.
                let res = unsafe { execute(desc) };
                return Some(Completion { res, flags: 0 });
            }
            _ => return None,
        };
        let st = self.fds.get_or_default(fd as usize);
        if st.busy() || !st.streak.should_try() {
            return None;
        }
        // SAFETY: forwarded from the caller.
        let res = unsafe { execute(desc) };
        if would_block(desc, res) {
            st.streak.miss();
            return None;
        }
        if drained(desc, res, false) {
            st.streak.miss();
        } else {
            st.streak.hit();
        }
        self.hits += 1;
        Some(Completion { res, flags: 0 })
    }

    /// Holds operation `key` if it must wait behind an earlier one of its descriptor
    /// (`true`: the backend submits nothing now; [`InlineSends::release`] gives it back
    /// in its turn, or [`InlineSends::unhold`] when it is cancelled first).
    pub(crate) fn hold(&mut self, key: usize, desc: &OpDesc) -> bool {
        let Some(fd) = self.must_wait(desc) else {
            return false;
        };
        self.fds
            .get_or_default(fd as usize)
            .held
            .push_back((key, *desc));
        self.keys.insert(key, fd);
        true
    }

    /// The descriptor of `desc` if `desc` is [`ordered`] and an earlier operation of that
    /// descriptor is queued or held: it must wait its turn.
    fn must_wait(&self, desc: &OpDesc) -> Option<RawFd> {
        let fd = send_fd(desc).filter(|_| ordered(desc))?;
        self.fds
            .get(fd as usize)
            .is_some_and(SendState::busy)
            .then_some(fd)
    }

    /// Operation `key`, described by `desc`, went to the ring or the pool.
    pub(crate) fn queued(&mut self, key: usize, desc: &OpDesc) {
        if let Some(fd) = send_fd(desc) {
            self.fds.get_or_default(fd as usize).queued += 1;
            self.keys.insert(key, fd);
        }
    }

    /// Operation `key`'s final completion arrived (a no-op unless it is a queued send);
    /// the descriptor, if it now has a held operation free to go ([`InlineSends::release`]).
    pub(crate) fn finished(&mut self, key: usize) -> Option<RawFd> {
        let fd = self.keys.remove(key)?;
        let st = self.fds.get_mut(fd as usize)?;
        st.queued -= 1;
        (st.queued == 0 && !st.held.is_empty()).then_some(fd)
    }

    /// The next held operation of `fd`, if nothing of `fd` is queued: the backend submits
    /// it now (and reports it with [`InlineSends::queued`], or runs a shutdown at once).
    pub(crate) fn release(&mut self, fd: RawFd) -> Option<(usize, OpDesc)> {
        let st = self.fds.get_mut(fd as usize)?;
        if st.queued > 0 {
            return None;
        }
        let (key, desc) = st.held.pop_front()?;
        self.keys.remove(key);
        Some((key, desc))
    }

    /// Puts back at the head of its descriptor's queue an operation [`InlineSends::release`]
    /// gave out that could not be submitted (a full submission queue).
    pub(crate) fn unrelease(&mut self, key: usize, desc: OpDesc) {
        if let Some(fd) = send_fd(&desc) {
            self.fds
                .get_or_default(fd as usize)
                .held
                .push_front((key, desc));
            self.keys.insert(key, fd);
        }
    }

    /// Takes held operation `key` out of its queue (it is being cancelled): its
    /// descriptor, or `None` if it is not held. The descriptor's next held operation may
    /// be free to go now ([`InlineSends::release`] says).
    pub(crate) fn unhold(&mut self, key: usize) -> Option<RawFd> {
        let fd = *self.keys.get(key)?;
        let st = self.fds.get_mut(fd as usize)?;
        let i = st.held.iter().position(|&(k, _)| k == key)?;
        st.held.remove(i);
        self.keys.remove(key);
        Some(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::Streak;

    /// A connected non-blocking Unix stream pair.
    #[cfg(target_os = "linux")]
    fn pair() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[cfg(target_os = "linux")]
    fn send_desc(fd: std::os::fd::RawFd, buf: &[u8]) -> super::OpDesc {
        super::OpDesc::Send {
            fd: super::FdRef {
                raw: fd,
                fixed: None,
            },
            fd_id: 0,
            buf: buf.as_ptr(),
            len: buf.len() as u32,
            flags: crate::platform::SEND_FLAGS,
            stream: true,
        }
    }

    // Per descriptor: a full socket's failed attempts pause its own attempts only, and a
    // send queued in the backend holds back attempts on its descriptor until it finishes.
    #[cfg(target_os = "linux")]
    #[test]
    fn inline_sends_pause_and_wait_per_descriptor() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (full, mut full_peer) = pair();
        let (other, mut other_peer) = pair();
        let chunk = [7u8; 4096];
        while (&full).write(&chunk).is_ok() {}
        let mut sends = super::InlineSends::default();
        let on_full = send_desc(full.as_raw_fd(), &chunk);
        let on_other = send_desc(other.as_raw_fd(), b"hello");
        for _ in 0..Streak::MISSES {
            // SAFETY: the descriptions point to live buffers for the whole call.
            assert!(unsafe { sends.try_complete(&on_full) }.is_none());
        }
        // SAFETY: as above.
        let c = unsafe { sends.try_complete(&on_other) }.expect("another socket was paused");
        assert_eq!(c.res, 5);
        // The queued send on `other` holds back the next attempt there until it finishes.
        sends.queued(9, &on_other);
        // SAFETY: as above.
        assert!(unsafe { sends.try_complete(&on_other) }.is_none());
        // A shutdown waits behind it too (it would fail the queued send).
        let shut = super::OpDesc::Shutdown {
            fd: super::FdRef {
                raw: other.as_raw_fd(),
                fixed: None,
            },
            how: libc::SHUT_WR,
        };
        // SAFETY: no pointers.
        assert!(unsafe { sends.try_complete(&shut) }.is_none());
        // Submitted behind it, a stream send and the shutdown are held, in order; a
        // cancelled held one leaves the queue.
        assert!(sends.hold(10, &on_other));
        assert!(sends.hold(11, &on_other));
        assert!(sends.hold(12, &shut));
        assert_eq!(sends.unhold(11), Some(other.as_raw_fd()));
        assert_eq!(sends.unhold(11), None);
        // Nothing goes while the queued send runs.
        assert!(sends.release(other.as_raw_fd()).is_none());
        assert_eq!(sends.finished(9), Some(other.as_raw_fd()));
        let (key, next) = sends.release(other.as_raw_fd()).expect("the held send");
        assert_eq!(key, 10);
        sends.queued(key, &next);
        assert!(sends.release(other.as_raw_fd()).is_none());
        assert_eq!(sends.finished(10), Some(other.as_raw_fd()));
        assert_eq!(sends.release(other.as_raw_fd()).map(|(k, _)| k), Some(12));
        assert!(sends.release(other.as_raw_fd()).is_none());
        // Nothing queued or held: the attempts are back.
        // SAFETY: as above.
        let again = unsafe { sends.try_complete(&on_other) };
        assert_eq!(again.map(|c| c.res), Some(5));
        let mut got = [0u8; 10];
        std::io::Read::read_exact(&mut other_peer, &mut got).unwrap();
        assert_eq!(&got, b"hellohello");
        // Nothing queued: the shutdown runs at once, and the peer sees end-of-file.
        // SAFETY: no pointers.
        assert_eq!(unsafe { sends.try_complete(&shut) }.map(|c| c.res), Some(0));
        assert_eq!(std::io::Read::read(&mut other_peer, &mut got).unwrap(), 0);
        // `full` is paused: emptied, its next send still skips the attempt.
        full_peer.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 16];
        while std::io::Read::read(&mut full_peer, &mut sink).is_ok_and(|n| n > 0) {}
        // SAFETY: as above.
        assert!(unsafe { sends.try_complete(&on_full) }.is_none());
        assert_eq!(sends.hits, 3);
    }

    #[test]
    fn streak_pauses_after_misses_in_a_row_and_resumes() {
        let mut s = Streak::default();
        // A hit between misses resets the count.
        for _ in 0..Streak::MISSES - 1 {
            assert!(s.should_try());
            s.miss();
        }
        assert!(s.should_try());
        s.hit();
        for _ in 0..Streak::MISSES {
            assert!(s.should_try());
            s.miss();
        }
        // Paused: exactly PAUSE operations skip the attempt.
        for _ in 0..Streak::PAUSE {
            assert!(!s.should_try());
        }
        assert!(s.should_try());
    }
}

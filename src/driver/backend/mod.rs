//! The backend contract: what the driver asks of the kernel interface it runs on.
//!
//! A backend turns [`OpDesc`]s into kernel work and reports completions. It owns no
//! operation state: the driver's table does (a slab keyed by `usize`), and the driver
//! alone decides what an operation's completion means (the one `-errno -> io::Error`
//! conversion, wakers, orphans and their clean-up, the shutdown deadline), so backends
//! cannot drift apart. [`Backend`] is that contract, checked by the compiler; the
//! capabilities a backend may lack are provided methods whose defaults say "not here".
//!
//! Backends: `uring` (Linux's io_uring), `fallback` (readiness through epoll or kqueue,
//! plus a blocking pool, on every Unix), `iocp` (Windows' completion ports, plus the same
//! blocking pool) and, with the `test-util` feature, `mock` (tests play
//! the kernel: operations complete when and how the test says). [`AnyBackend`] holds the
//! one a runtime runs on; calls through it are a `match`, never a `dyn` call. `select`
//! builds it: the one place that knows which backend exists on which platform.
//!
//! # Adding an operation
//!
//! One operation costs these places, and the compiler names each one after the first two
//! (every match over [`OpDesc`] is exhaustive):
//!
//! 1. the op struct (`src/op/`): owns the fd handle, buffer, path; implements
//!    `Operation` (`describe` once, `complete` from the final completion);
//! 2. its [`OpDesc`] variant (`src/driver/desc.rs`), with the raw pointers the kernel
//!    uses, and its arms in that file's `name` and `target` (what it acts on: a socket
//!    and the readiness it waits for, a file position, something that may block, or
//!    nothing that blocks; the readiness backend's route, the blocking pool and the
//!    offset check follow from it);
//! 3. one arm per backend: io_uring's SQE (`Uring::sqe` in `uring/mod.rs`) and the
//!    syscall (`syscall::execute`, which the readiness backend and the blocking pool
//!    run), with a function in `src/platform/` when kernels differ (one per platform
//!    module, same signature), and the Windows executor's (`syscall_windows.rs`, on the
//!    blocking pool). A kernel without the io_uring opcode needs nothing more:
//!    io_uring's probe says the SQE's opcode is missing and the same description runs
//!    through `syscall::execute` on the blocking pool. An operation io_uring has no
//!    opcode for at all (`readlinkat`, reading a directory), or one its SQE cannot express
//!    (a range longer than the 32-bit length field), gets `None` from `Uring::sqe` and
//!    takes the same pool path. The mock backend knows the operation by its `name`;
//! 4. the user API (`src/fs/`, `src/net/`) and its tests, run on every backend.
//!
//! # The completion-port backend (IOCP)
//!
//! Windows' completion ports are completion-based like io_uring, and map onto this trait
//! the same way (`iocp.rs`):
//!
//! - [`Backend::push`] starts the operation (`ReadFile`/`WSARecv`/`AcceptEx`... with an
//!   OVERLAPPED that the backend allocates and keys by `key`). With
//!   `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` set on the handle, a call that succeeds at once
//!   posts no packet: that is [`Push::Completed`] when `inline` allows it, else a
//!   completion the backend keeps for the next [`Backend::reap`]. Operations Windows has no
//!   overlapped form for (path calls, `fsync`'s `FlushFileBuffers`) go to the blocking
//!   pool, as on the readiness backend.
//! - [`Backend::cancel`] is `CancelIoEx(handle, overlapped)`: best effort, and the
//!   operation still posts its one final packet (`ERROR_OPERATION_ABORTED` becomes
//!   `-ECANCELED`). The OVERLAPPED, and the buffer and handle the driver keeps for the
//!   operation, stay alive until that packet is reaped: the driver's orphan rules already
//!   guarantee it, exactly as for an SQE.
//! - [`Backend::enter`] waits with `GetQueuedCompletionStatusEx` (a batch), the timer
//!   deadline as its timeout; [`Backend::unparker`] is `PostQueuedCompletionStatus` with a
//!   reserved key.
//! - [`Backend::reap`] turns each packet's OVERLAPPED back into its key and its status into
//!   `res` (bytes transferred, or `-errno` mapped from the Win32 error).
//! - Registered tables and provided-buffer receives are io_uring's: the IOCP backend keeps
//!   the defaults (registration succeeds and changes nothing; streams read single-shot).
//! - The operation's own description of itself (`OpDesc`) is the same on every platform:
//!   `platform::windows` gives the Unix names the descriptions use (open flags, `iovec`,
//!   `msghdr`, error codes) Windows values, and the backend translates them in one place.

// Readiness (epoll, kqueue) exists on Unix; completion ports on Windows.
#[cfg(unix)]
pub(crate) mod fallback;
#[cfg(windows)]
pub(crate) mod iocp;
#[cfg(feature = "test-util")]
pub(crate) mod mock;
pub(crate) mod select;
// io_uring is a Linux interface; elsewhere the fallback backend is the only one.
#[cfg(target_os = "linux")]
pub(crate) mod uring;

use crate::platform::c;
use crate::platform::RawFd;
use std::io;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::fixed::Registration;
use super::iopoll::PollRoute;
use super::{Completion, OpDesc};
use crate::runtime::BackendKind;

/// What [`Backend::push`] did with an operation.
#[derive(Debug)]
pub(crate) enum Push {
    /// The operation is queued for the kernel; its completions come through
    /// [`Backend::reap`].
    Queued,
    /// The operation finished while being started (only where the caller allowed it): its
    /// final completion, which the backend will not report again.
    Completed(Completion),
    /// Nothing was started: the operation would only wait for its descriptor's readiness
    /// (a receive on a socket known to be empty), so a readiness backend keeps the waker
    /// instead and wakes it when the descriptor may be ready; the caller pushes the same
    /// operation again then, as if for the first time. Completion-based backends never
    /// answer this: waiting is the kernel's job there.
    // Only the readiness backend (Unix) waits this way.
    #[cfg_attr(windows, allow(dead_code))]
    NotReady,
    /// The submission queue is full: the driver enters the kernel, reaps, and pushes
    /// again.
    // Only io_uring's bounded queue fills up.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Full,
}

/// Whether a request went into the backend's submission queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// It did.
    Yes,
    /// The queue is full: the driver enters the kernel, reaps, and asks again.
    // Only io_uring's bounded queue fills up.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    QueueFull,
}

/// What [`Backend::push_linked`] or [`Backend::push_timed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linked {
    /// Queued, with the kernel ordering the operations (or timing the operation) itself.
    // Only io_uring links in the kernel.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Queued,
    /// Not enough room in the submission queue for every entry: nothing was queued; the
    /// driver makes room and asks again (a full queue never splits a chain).
    // Only io_uring's bounded queue fills up.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Full,
    /// The backend cannot do it for these operations: nothing was queued, and the driver
    /// emulates it (holds the second operation until the first has completed in full;
    /// times the operation with the runtime's timers).
    Unsupported,
}

/// How long [`Backend::enter`] may sleep.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Submit and return at once.
    No,
    /// Sleep until a completion or an unpark, at most this long (`None`: no limit).
    Park(Option<Duration>),
}

/// Makes a parked runtime thread return from its wait; callable from any thread.
pub(crate) trait Unpark: Send + Sync + 'static {
    /// Ends the current wait of the runtime, or the next one if it is not waiting.
    fn unpark(&self);
}

/// Maps kernel-entry errors onto the driver's retry classes: EINTR is `Interrupted`,
/// EAGAIN and EBUSY are `WouldBlock` (retry after reaping); the rest are fatal.
// Used by io_uring (Linux) and the test hook that injects enter errors.
#[cfg_attr(not(any(target_os = "linux", feature = "test-util")), allow(dead_code))]
pub(crate) fn classify_enter_error(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(c::EINTR) => io::Error::new(io::ErrorKind::Interrupted, e),
        Some(c::EAGAIN) | Some(c::EBUSY) => io::Error::new(io::ErrorKind::WouldBlock, e),
        _ => e,
    }
}

/// A kernel interface the driver runs operations on (see the module docs).
///
/// Every method is called on the runtime's thread, with the driver borrowed: a backend
/// never calls back into the driver, and reports completions only through
/// [`Backend::reap`] (or [`Push::Completed`]).
pub(crate) trait Backend {
    /// Starts the operation `desc` describes, tagged with `key`, or reports
    /// [`Push::Full`].
    ///
    /// The memory `desc` points to stays valid until the backend has reported the final
    /// completion for `key` (the driver keeps its owner alive until then, whatever
    /// happens to the operation's future). With `inline`, the backend may finish the
    /// operation during this call when that costs no more than starting it (a read the
    /// page cache answers, a send that finds room, a socket call that need not wait) and
    /// return [`Push::Completed`]; without it (the task used up its budget of such
    /// completions and must yield), anything finished at once is reported by the next
    /// reap. A backend that never completes inline simply never returns `Completed`.
    /// `waker` is the submitting task's, for [`Push::NotReady`].
    ///
    /// # Errors
    ///
    /// The operation could not be started and nothing of it reached the kernel; the
    /// driver completes it with this error.
    fn push(&mut self, key: usize, desc: &OpDesc, inline: bool, waker: &Waker) -> io::Result<Push>;

    /// Pushes `first` linked to `second`, as io_uring's IOSQE_IO_LINK: the kernel starts
    /// `second` only after `first` completed with its full result (no error; a read or
    /// write of every byte asked), and otherwise completes `second` with `-ECANCELED`
    /// without starting it. Both are queued one after the other, or neither: nothing
    /// else may be queued between them. Never completes either during the call.
    ///
    /// The default, [`Linked::Unsupported`], has the driver emulate the order: it
    /// pushes `first` alone and holds `second` until `first`'s final completion.
    ///
    /// # Errors
    ///
    /// Neither operation could be started and nothing of them reached the kernel.
    fn push_linked(
        &mut self,
        _first: (usize, &OpDesc),
        _second: (usize, &OpDesc),
    ) -> io::Result<Linked> {
        Ok(Linked::Unsupported)
    }

    /// Pushes operation `key` with a deadline the kernel keeps (io_uring's
    /// IORING_OP_LINK_TIMEOUT): at `deadline` the operation is cancelled (`-ECANCELED`,
    /// or its real result if it finished first). Never completes it during the call.
    ///
    /// The default, [`Linked::Unsupported`], has the driver push it as usual: the
    /// deadline is then kept by the runtime's timer, which cancels the operation.
    ///
    /// # Errors
    ///
    /// As [`Backend::push`].
    fn push_timed(
        &mut self,
        _key: usize,
        _desc: &OpDesc,
        _deadline: Instant,
    ) -> io::Result<Linked> {
        Ok(Linked::Unsupported)
    }

    /// Pushes an operation the driver held back (the second of an emulated chain, or one
    /// that found the queue full), with no task polling it: as [`Backend::push`] without
    /// `inline`, except that it never answers [`Push::NotReady`] (a readiness backend
    /// parks a receive that has to wait, as it parks any other socket operation).
    ///
    /// # Errors
    ///
    /// As [`Backend::push`].
    fn push_held(&mut self, key: usize, desc: &OpDesc) -> io::Result<Push> {
        self.push(key, desc, false, Waker::noop())
    }

    /// Asks for operation `key` to finish early. Best effort: the operation still reports
    /// exactly one final completion (with `-ECANCELED`, or its real result if it finished
    /// first). [`Enqueued::QueueFull`] asks the driver to make room and ask again.
    ///
    /// # Errors
    ///
    /// The request could not be made; the operation then completes on its own.
    fn cancel(&mut self, key: usize) -> io::Result<Enqueued>;

    /// Hands pushed work to the kernel and, if `wait` asks for it, sleeps until at least
    /// one completion, an unpark, or the timeout. An idle backend sleeps in the kernel: it
    /// never spins.
    ///
    /// # Errors
    ///
    /// Transient failures as `ErrorKind::WouldBlock` or `Interrupted` (the driver retries;
    /// see [`classify_enter_error`]); anything else is fatal for the runtime. Pushed work
    /// is never given back on an error: the kernel may have taken it.
    ///
    /// Returns the entry's batch, for [`Metrics::enter_batch`](crate::Metrics): the
    /// entries submitted (io_uring), or the events or packets the wait returned (readiness,
    /// IOCP); 0 when nothing was asked of the kernel.
    fn enter(&mut self, wait: Wait) -> io::Result<usize>;

    /// Passes every available completion to `sink(key, completion)`, where `res` is the
    /// syscall's return value or `-errno`, as in a CQE, and `flags` the CQE flags (0 where
    /// the backend has none).
    fn reap(&mut self, sink: impl FnMut(usize, Completion));

    /// A thread-safe handle that makes a current or the next `enter(Wait::Park(..))`
    /// return.
    fn unparker(&self) -> Arc<dyn Unpark>;

    /// A human-readable description of the backend and its setup, e.g.
    /// "io_uring (256 sq / 512 cq entries, single_issuer+defer_taskrun)".
    fn describe(&self) -> String;

    /// Completions the kernel dropped for want of room in the completion queue, as its
    /// own counter says (io_uring's `cq.koverflow`); 0 for a backend without such a queue.
    fn cq_overflow(&self) -> u64 {
        0
    }

    /// Operations run on the blocking pool so far (0 for a backend without one).
    fn offloaded(&self) -> u64 {
        0
    }

    /// Readiness backends: `Pending` if descriptor `fd` (open file `id`) is known to have
    /// nothing to read, in which case `waker` is woken on its next readable edge; else
    /// `Ready`. A stream's read asks this before building its receive, so a read that
    /// would only wait costs neither an operation nor a trip through [`Backend::push`]
    /// (which would answer [`Push::NotReady`] for it). A completion backend keeps the
    /// default: the kernel does the waiting there.
    fn poll_readable(&mut self, _fd: RawFd, _id: u64, _waker: &Waker) -> Poll<()> {
        Poll::Ready(())
    }

    /// Cancels operation `key` before returning, where the backend can: `Ok(())` means
    /// the kernel no longer acts on it (its final completion may still wait to be reaped).
    /// The caller can then give up the descriptor the operation used at once.
    ///
    /// # Errors
    ///
    /// The backend cannot cancel synchronously (the default); the driver cancels
    /// asynchronously instead.
    fn cancel_sync(&mut self, _key: usize) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(c::EOPNOTSUPP))
    }

    // Registered files and buffers (see `super::fixed`). A backend with tables hands out
    // registrations that carry its ring id, and uses an entry named in a description
    // (`FdRef::fixed`, `buf_index`) only if it carries that id; any other entry it
    // ignores, using the raw descriptor and memory every description also carries.

    /// The id of the ring whose tables registrations go to; `None` without tables.
    fn ring_id(&self) -> Option<NonZeroU32> {
        None
    }

    /// Puts `fd` into the file table; `Ok(None)` without tables (nothing to do: operations
    /// use the descriptor).
    ///
    /// # Errors
    ///
    /// The kernel refused the registration.
    fn register_file(&self, _fd: RawFd) -> io::Result<Option<Registration>> {
        Ok(None)
    }

    /// Puts buffers into the buffer table; `Ok(None)` without tables. The memory must stay
    /// allocated until the registration is dropped.
    ///
    /// # Errors
    ///
    /// The kernel refused the registration.
    fn register_buffers(&self, _bufs: &[c::iovec]) -> io::Result<Option<Registration>> {
        Ok(None)
    }

    // Multishot receives into provided buffers. A backend that supports them accepts
    // `OpDesc::RecvMulti`, which reports any number of completions carrying `CQE_F_MORE`
    // and then one final completion without it; data completions name a provided buffer
    // (`Completion::buffer`) that stays the driver's until `recycle_buf` hands it back, and
    // `provided_buf` reads it meanwhile. A backend without them never sees the description.

    /// Whether the backend runs [`OpDesc::RecvMulti`] (setting up its buffers on first
    /// call).
    fn multishot_recv(&mut self) -> bool {
        false
    }

    /// The size of each provided buffer (0 without them).
    fn provided_buf_size(&self) -> usize {
        0
    }

    /// Whether the backend runs [`OpDesc::AcceptMulti`]: one operation that accepts
    /// connection after connection, each reported by a completion carrying `CQE_F_MORE`
    /// whose result is the new descriptor. Without it, listeners accept one connection per
    /// operation.
    fn multishot_accept(&mut self) -> bool {
        false
    }

    /// The first `len` bytes of provided buffer `bid`, which a completion named.
    fn provided_buf(&self, bid: u16, _len: usize) -> &[u8] {
        unreachable!("coring: a completion named provided buffer {bid} on a backend without them")
    }

    /// Hands provided buffer `bid` back to the kernel.
    fn recycle_buf(&mut self, bid: u16) {
        debug_assert!(
            false,
            "coring: recycled provided buffer {bid} on a backend without them"
        );
    }

    /// Provided buffers filled by the kernel and not yet recycled.
    fn provided_in_use(&self) -> usize {
        0
    }

    /// The routing of direct reads and writes to a polled ring, where the runtime asked
    /// for one ([`crate::Builder::iopoll`]) and the backend has them (see
    /// `driver::iopoll`); `None` where it has none (the runtime then reports polled IO as
    /// unsupported by this backend).
    fn poll_route(&self) -> Option<&PollRoute> {
        None
    }

    /// Whether a file is sent to a socket as two linked [`OpDesc::Splice`]s through a pipe
    /// (with [`OpDesc::Poll`] when the socket has no room), which the kernel runs without
    /// the runtime's thread; otherwise as [`OpDesc::SendFile`] (the default: one
    /// `sendfile(2)` per transfer, waiting for the socket as any send does).
    // Asked on Linux only: splice(2) is Linux's.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn splices(&self) -> bool {
        false
    }
}

/// The backend a runtime runs on, for its whole life (so the size difference between
/// variants costs nothing worth a box). Dispatch is a `match` per call, which the compiler
/// inlines: no `dyn` call on the operation path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AnyBackend {
    #[cfg(target_os = "linux")]
    Uring(uring::Uring),
    #[cfg(unix)]
    Fallback(fallback::Fallback),
    #[cfg(windows)]
    Iocp(iocp::Iocp),
    /// Completes operations when a test says so.
    #[cfg(feature = "test-util")]
    Mock(mock::Mock),
}

impl AnyBackend {
    /// Which kind of backend this is.
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(_) => BackendKind::IoUring,
            #[cfg(unix)]
            AnyBackend::Fallback(_) => BackendKind::Fallback,
            #[cfg(windows)]
            AnyBackend::Iocp(_) => BackendKind::Iocp,
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(_) => BackendKind::Mock,
        }
    }
}

// Every method is forwarded, the provided ones too: a backend's override of a capability
// must never be lost on the way (clippy's `missing_trait_methods` fails the build if a
// provided method is left to its default here).
#[warn(clippy::missing_trait_methods)]
impl Backend for AnyBackend {
    #[inline]
    fn push(&mut self, key: usize, desc: &OpDesc, inline: bool, waker: &Waker) -> io::Result<Push> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.push(key, desc, inline, waker),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.push(key, desc, inline, waker),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.push(key, desc, inline, waker),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.push(key, desc, inline, waker),
        }
    }

    fn push_linked(
        &mut self,
        first: (usize, &OpDesc),
        second: (usize, &OpDesc),
    ) -> io::Result<Linked> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.push_linked(first, second),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.push_linked(first, second),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.push_linked(first, second),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.push_linked(first, second),
        }
    }

    fn push_timed(&mut self, key: usize, desc: &OpDesc, deadline: Instant) -> io::Result<Linked> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.push_timed(key, desc, deadline),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.push_timed(key, desc, deadline),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.push_timed(key, desc, deadline),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.push_timed(key, desc, deadline),
        }
    }

    fn push_held(&mut self, key: usize, desc: &OpDesc) -> io::Result<Push> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.push_held(key, desc),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.push_held(key, desc),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.push_held(key, desc),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.push_held(key, desc),
        }
    }

    fn cancel(&mut self, key: usize) -> io::Result<Enqueued> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.cancel(key),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.cancel(key),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.cancel(key),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.cancel(key),
        }
    }

    #[inline]
    fn enter(&mut self, wait: Wait) -> io::Result<usize> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.enter(wait),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.enter(wait),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.enter(wait),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.enter(wait),
        }
    }

    #[inline]
    fn reap(&mut self, sink: impl FnMut(usize, Completion)) {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.reap(sink),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.reap(sink),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.reap(sink),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.reap(sink),
        }
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.unparker(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.unparker(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.unparker(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.unparker(),
        }
    }

    fn describe(&self) -> String {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.describe(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.describe(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.describe(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.describe(),
        }
    }

    fn cq_overflow(&self) -> u64 {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.cq_overflow(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.cq_overflow(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.cq_overflow(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.cq_overflow(),
        }
    }

    fn offloaded(&self) -> u64 {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.offloaded(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.offloaded(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.offloaded(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.offloaded(),
        }
    }

    #[inline]
    fn poll_readable(&mut self, fd: RawFd, id: u64, waker: &Waker) -> Poll<()> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.poll_readable(fd, id, waker),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.poll_readable(fd, id, waker),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.poll_readable(fd, id, waker),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.poll_readable(fd, id, waker),
        }
    }

    fn cancel_sync(&mut self, key: usize) -> io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.cancel_sync(key),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.cancel_sync(key),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.cancel_sync(key),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.cancel_sync(key),
        }
    }

    fn ring_id(&self) -> Option<NonZeroU32> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.ring_id(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.ring_id(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.ring_id(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.ring_id(),
        }
    }

    fn register_file(&self, fd: RawFd) -> io::Result<Option<Registration>> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.register_file(fd),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.register_file(fd),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.register_file(fd),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.register_file(fd),
        }
    }

    fn register_buffers(&self, bufs: &[c::iovec]) -> io::Result<Option<Registration>> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.register_buffers(bufs),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.register_buffers(bufs),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.register_buffers(bufs),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.register_buffers(bufs),
        }
    }

    fn multishot_recv(&mut self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.multishot_recv(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.multishot_recv(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.multishot_recv(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.multishot_recv(),
        }
    }

    fn multishot_accept(&mut self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.multishot_accept(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.multishot_accept(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.multishot_accept(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.multishot_accept(),
        }
    }

    fn provided_buf_size(&self) -> usize {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.provided_buf_size(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.provided_buf_size(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.provided_buf_size(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.provided_buf_size(),
        }
    }

    fn provided_buf(&self, bid: u16, len: usize) -> &[u8] {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.provided_buf(bid, len),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.provided_buf(bid, len),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.provided_buf(bid, len),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.provided_buf(bid, len),
        }
    }

    fn recycle_buf(&mut self, bid: u16) {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.recycle_buf(bid),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.recycle_buf(bid),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.recycle_buf(bid),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.recycle_buf(bid),
        }
    }

    fn provided_in_use(&self) -> usize {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.provided_in_use(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.provided_in_use(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.provided_in_use(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.provided_in_use(),
        }
    }

    fn poll_route(&self) -> Option<&PollRoute> {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.poll_route(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.poll_route(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.poll_route(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.poll_route(),
        }
    }

    fn splices(&self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            AnyBackend::Uring(b) => b.splices(),
            #[cfg(unix)]
            AnyBackend::Fallback(b) => b.splices(),
            #[cfg(windows)]
            AnyBackend::Iocp(b) => b.splices(),
            #[cfg(feature = "test-util")]
            AnyBackend::Mock(b) => b.splices(),
        }
    }
}

//! Edge-triggered readiness poller: one public API over epoll and kqueue.
//!
//! The platform code lives in `epoll.rs` (Linux, Android) and `kqueue.rs`
//! (Apple platforms and the BSDs); this file holds the shared public types and
//! the contract both implement:
//!
//! - Every descriptor is registered once, edge-triggered, for read *and* write
//!   interest, under a caller-chosen `usize` token. An event says "this may have
//!   changed"; the caller then retries its IO until `EAGAIN`, because a new
//!   event only arrives after a new edge (more data, more buffer space, close).
//! - [`WAKER_TOKEN`] is reserved for the poller's own waker: `register` rejects
//!   it, and `wait` never reports it as an event. It reports it through
//!   [`Events::woken`] instead.
//! - A [`PollerWaker::wake`] is never lost and wakes coalesce: any number of
//!   wakes before (or during) a `wait` make that `wait` return once, and leave
//!   no wake pending for the next one.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
#[cfg(any(target_os = "linux", target_os = "android"))]
use epoll as sys;

// The crate root compiles this module only on epoll or kqueue targets, so every
// target that is not Linux or Android here is a kqueue one.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod kqueue;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use kqueue as sys;

/// The token reserved for the poller's internal waker (`usize::MAX`).
///
/// [`Poller::register`] rejects it with [`io::ErrorKind::InvalidInput`], and no
/// [`Event`] yielded by [`Events`] ever carries it.
pub const WAKER_TOKEN: usize = usize::MAX;

// Readiness bits of an `Event`, set by the platform modules.
const READABLE: u8 = 1 << 0;
const WRITABLE: u8 = 1 << 1;
const ERROR: u8 = 1 << 2;
const READ_CLOSED: u8 = 1 << 3;
const WRITE_CLOSED: u8 = 1 << 4;
const PRIORITY: u8 = 1 << 5;

/// An edge-triggered readiness poller (epoll or kqueue) with a cross-thread waker.
///
/// All methods take `&self`: the kernel object is thread-safe, so a poller can
/// be shared, although coring uses one per core thread. Dropping the poller
/// closes its descriptors (see [`PollerWaker`] for the one exception).
pub struct Poller {
    selector: sys::Selector,
}

impl Poller {
    /// Creates a poller and its waker; every descriptor it opens is close-on-exec.
    ///
    /// # Errors
    ///
    /// Returns the OS error if the epoll/kqueue descriptor or the waker cannot be
    /// created (for example `EMFILE`, or `EINVAL` on a BSD too old for
    /// `EVFILT_USER`).
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            selector: sys::Selector::new()?,
        })
    }

    /// Registers `fd` once, edge-triggered, for both read and write readiness.
    ///
    /// On Linux this is `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET`; on kqueue it
    /// is `EV_ADD | EV_CLEAR` for both `EVFILT_READ` and `EVFILT_WRITE`. A
    /// descriptor that is already ready reports an event at the next
    /// [`wait`](Poller::wait) (a fresh socket usually reports writable).
    ///
    /// On kqueue, a descriptor that supports only one direction (the read end of
    /// a pipe, for example, on which `EVFILT_WRITE` fails with `EINVAL` or
    /// `EPIPE`) is registered for that direction alone.
    ///
    /// Deregister before closing `fd`: epoll keeps watching the open file
    /// description while any duplicate of the descriptor is alive.
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::InvalidInput`] if `token` is [`WAKER_TOKEN`].
    /// - The OS error otherwise, notably `EEXIST` if `fd` is already registered
    ///   (epoll), `EBADF` if it is not open, `EPERM` (epoll) for a regular file.
    ///   A failed registration leaves nothing registered.
    pub fn register(&self, fd: RawFd, token: usize) -> io::Result<()> {
        if token == WAKER_TOKEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "token usize::MAX is reserved for the poller's waker; use another token",
            ));
        }
        self.selector.register(fd, token)
    }

    /// Stops watching `fd`; no event for it is reported by later waits.
    ///
    /// Events already collected into an [`Events`] by an earlier `wait` stay
    /// there: the caller must tolerate a stale token.
    ///
    /// # Errors
    ///
    /// Returns the OS error, notably `ENOENT` if `fd` is not registered and
    /// `EBADF` if it is not open.
    pub fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.selector.deregister(fd)
    }

    /// Waits for readiness events, a wake, or the timeout, and stores the events
    /// in `events` (clearing what it held before).
    ///
    /// `None` waits without a timeout; `Some(Duration::ZERO)` polls without
    /// blocking. On epoll the timeout is rounded *up* to the next millisecond, so
    /// a 0.3 ms timeout sleeps about 1 ms instead of spinning at 0 ms; kqueue
    /// takes it with nanosecond precision. At most [`Events::capacity`] events
    /// are returned; edge-triggered events not returned stay queued in the
    /// kernel for the next call.
    ///
    /// Returning `Ok` with no events is normal: the timeout expired, a
    /// [`PollerWaker`] woke the poller (then [`Events::woken`] is `true`), or a
    /// signal interrupted the wait (`EINTR`). Callers loop. A caller that uses
    /// the waker to announce cross-thread work must look for that work *after*
    /// `wait` returns: the wake is consumed inside `wait`.
    ///
    /// # Errors
    ///
    /// Returns the OS error of the wait (`EBADF`, `EFAULT`, `EINVAL`: all mean a
    /// broken poller). On epoll, if draining the waker's eventfd fails after the
    /// kernel reported events, the error is returned and `events` still holds
    /// those events, which the caller should process before handling the error.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.woken = false;
        events.woken = self.selector.select(&mut events.raw, timeout)?;
        Ok(())
    }

    /// Returns a handle that wakes this poller from any thread.
    pub fn waker(&self) -> PollerWaker {
        PollerWaker {
            inner: self.selector.waker(),
        }
    }
}

impl AsFd for Poller {
    /// The epoll or kqueue descriptor, for nesting the poller in another loop.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.selector.as_fd()
    }
}

impl AsRawFd for Poller {
    /// The epoll or kqueue descriptor, for nesting the poller in another loop.
    fn as_raw_fd(&self) -> RawFd {
        self.selector.as_fd().as_raw_fd()
    }
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// Wakes a [`Poller`] from any thread: `Clone + Send + Sync`.
///
/// A wake makes the `wait` in progress, or else the next one, return. Wakes
/// coalesce: several wakes before a `wait` produce one wakeup. The waker holds
/// only a weak reference: once the poller is dropped, [`wake`](Self::wake)
/// does nothing, and the poller's descriptors are closed as soon as no `wake`
/// call is in progress.
#[derive(Clone)]
pub struct PollerWaker {
    inner: sys::Waker,
}

impl PollerWaker {
    /// Makes the poller's concurrent or next [`Poller::wait`] return.
    ///
    /// This is one `write` (eventfd) or `kevent` (`EVFILT_USER` trigger) system
    /// call; it never blocks. Waking a dropped poller is a no-op.
    ///
    /// # Errors
    ///
    /// Returns the OS error of the system call; with a live poller this means
    /// the process is out of resources or the descriptor was closed behind the
    /// poller's back.
    pub fn wake(&self) -> io::Result<()> {
        self.inner.wake()
    }
}

impl fmt::Debug for PollerWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollerWaker").finish_non_exhaustive()
    }
}

/// A buffer of events filled by [`Poller::wait`].
///
/// On kqueue the read and write filters of a descriptor are reported as two
/// separate events with the same token (one readable, one writable); on epoll
/// one event carries both. Callers must handle either shape.
pub struct Events {
    raw: sys::RawEvents,
    woken: bool,
}

impl Events {
    /// Creates a buffer that holds up to `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            raw: sys::RawEvents::with_capacity(capacity.max(1)),
            woken: false,
        }
    }

    /// The most events one [`Poller::wait`] stores (at least the requested
    /// capacity).
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// How many events the last wait stored.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the last wait stored no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a [`PollerWaker`] woke the last wait.
    ///
    /// Useful for tests and statistics; a runtime should check its
    /// cross-thread queues after every wait whatever this says, since with
    /// several threads waiting on one poller only one of them sees the wake.
    pub fn woken(&self) -> bool {
        self.woken
    }

    /// Removes all events and the woken flag.
    pub fn clear(&mut self) {
        self.raw.clear();
        self.woken = false;
    }

    /// The stored event at `index` (`0..len()`), as [`Events::iter`] yields them.
    #[inline]
    pub fn get(&self, index: usize) -> Option<Event> {
        self.raw.get(index)
    }

    /// Iterates over the stored events, never including the waker's.
    #[inline]
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            events: self,
            pos: 0,
        }
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = Event;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("woken", &self.woken)
            .field("events", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

/// Iterator over the events of an [`Events`], from [`Events::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    events: &'a Events,
    pos: usize,
}

impl Iterator for Iter<'_> {
    type Item = Event;

    #[inline]
    fn next(&mut self) -> Option<Event> {
        let event = self.events.raw.get(self.pos)?;
        self.pos += 1;
        Some(event)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.events.len() - self.pos;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// One readiness event: the token given to [`Poller::register`] and what changed.
///
/// Readiness is a hint, not a promise: after an event the caller retries its
/// IO until it would block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Event {
    token: usize,
    flags: u8,
}

impl Event {
    /// The token the descriptor was registered with.
    #[inline]
    pub fn token(&self) -> usize {
        self.token
    }

    /// Data (or a pending connection, or end of file) can be read.
    #[inline]
    pub fn is_readable(&self) -> bool {
        self.flags & READABLE != 0
    }

    /// Data can be written (or a connect finished).
    #[inline]
    pub fn is_writable(&self) -> bool {
        self.flags & WRITABLE != 0
    }

    /// The descriptor has a pending error (`EPOLLERR`; on kqueue, `EV_ERROR`
    /// or end of file with an error code). The next IO call reports it.
    #[inline]
    pub fn is_error(&self) -> bool {
        self.flags & ERROR != 0
    }

    /// The peer will send nothing more: hang-up or read half closed
    /// (`EPOLLRDHUP`/`EPOLLHUP`; `EV_EOF` on the read filter). Buffered data
    /// may still be readable.
    #[inline]
    pub fn is_read_closed(&self) -> bool {
        self.flags & READ_CLOSED != 0
    }

    /// Writes will fail: hang-up, or the reader of a pipe is gone (`EPOLLHUP`,
    /// or `EPOLLERR` alone or with `EPOLLOUT`; `EV_EOF` on the write filter).
    #[inline]
    pub fn is_write_closed(&self) -> bool {
        self.flags & WRITE_CLOSED != 0
    }

    /// An exceptional condition (`EPOLLPRI`): on a TCP socket, urgent data is pending, and
    /// an ordinary read stops short at the urgent mark with more data queued behind it.
    /// Never set on kqueue.
    #[inline]
    pub fn is_priority(&self) -> bool {
        self.flags & PRIORITY != 0
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("token", &self.token)
            .field("readable", &self.is_readable())
            .field("writable", &self.is_writable())
            .field("error", &self.is_error())
            .field("read_closed", &self.is_read_closed())
            .field("write_closed", &self.is_write_closed())
            .field("priority", &self.is_priority())
            .finish()
    }
}

//! epoll implementation of the poller (Linux, Android).
//!
//! The waker is an eventfd registered edge-triggered under [`WAKER_TOKEN`]. A
//! write to it queues the eventfd's epoll item on the ready list once however
//! many writes happen before the next `epoll_wait` (coalescing), and a write
//! made before `epoll_wait` is found there by it (no lost wake). `select` drains
//! the counter before returning, so the counter never saturates, and filters the
//! waker's event out of the user's events.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Event, ERROR, PRIORITY, READABLE, READ_CLOSED, WAKER_TOKEN, WRITABLE, WRITE_CLOSED};

/// Interest of every user registration: both directions, peer half-close, exceptional
/// conditions (TCP urgent data), edge-triggered.
const INTEREST: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32;

/// Interest of the waker's eventfd.
const WAKER_INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

/// An epoll instance and the eventfd its wakers write to.
#[derive(Debug)]
pub(super) struct Selector {
    ep: OwnedFd,
    /// Shared with the wakers through weak references only, so dropping the
    /// selector closes it.
    eventfd: Arc<OwnedFd>,
}

impl Selector {
    pub(super) fn new() -> io::Result<Selector> {
        // SAFETY: epoll_create1 takes no pointers; its result is checked below.
        let ep = owned_fd(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: eventfd takes no pointers; its result is checked below.
        let efd = owned_fd(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        let selector = Selector {
            ep,
            eventfd: Arc::new(efd),
        };
        selector.ctl(
            libc::EPOLL_CTL_ADD,
            selector.eventfd.as_raw_fd(),
            WAKER_INTEREST,
            WAKER_TOKEN,
        )?;
        Ok(selector)
    }

    pub(super) fn register(&self, fd: RawFd, token: usize) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, INTEREST, token)
    }

    pub(super) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// One `epoll_ctl` call.
    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: u32, token: usize) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token as u64,
        };
        // SAFETY: `event` is a valid epoll_event that outlives the call (kernels
        // before 2.6.9 require a non-null pointer even for EPOLL_CTL_DEL).
        let res = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut event) };
        if res < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for events; returns whether the waker fired.
    pub(super) fn select(
        &self,
        events: &mut RawEvents,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let buf = &mut events.buf;
        buf.clear();
        let max = libc::c_int::try_from(buf.capacity()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the kernel writes at most `max` <= capacity entries into the
        // vector's spare capacity, which stays allocated during the call.
        let n = unsafe { wait(self.ep.as_raw_fd(), buf.as_mut_ptr(), max, timeout) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(err),
            };
        }
        // SAFETY: epoll_wait initialised the first n entries, and 0 <= n <= max
        // <= capacity (n is non-negative: checked above).
        unsafe { buf.set_len(n as usize) };
        let before = buf.len();
        buf.retain(|event| {
            // A copy, not a borrow: epoll_event is packed on x86_64.
            let token = event.u64;
            token != WAKER_TOKEN as u64
        });
        let woken = buf.len() != before;
        if woken {
            self.drain_waker()?;
        }
        Ok(woken)
    }

    /// Resets the eventfd counter to zero so it never saturates.
    fn drain_waker(&self) -> io::Result<()> {
        let mut count: u64 = 0;
        loop {
            // SAFETY: `count` is 8 writable bytes, the size eventfd reads require.
            let n = unsafe {
                libc::read(
                    self.eventfd.as_raw_fd(),
                    (&mut count as *mut u64).cast(),
                    size_of::<u64>(),
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                // Already drained by a concurrent wait on the same poller.
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => return Err(err),
            }
        }
    }

    pub(super) fn waker(&self) -> Waker {
        Waker {
            eventfd: Arc::downgrade(&self.eventfd),
        }
    }

    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.ep.as_fd()
    }
}

/// Writes to the selector's eventfd while the selector is alive.
#[derive(Clone, Debug)]
pub(super) struct Waker {
    eventfd: Weak<OwnedFd>,
}

impl Waker {
    pub(super) fn wake(&self) -> io::Result<()> {
        let Some(eventfd) = self.eventfd.upgrade() else {
            // The poller is gone: nobody is left to wake.
            return Ok(());
        };
        let one: u64 = 1;
        loop {
            // SAFETY: `one` is 8 readable bytes, the size eventfd writes require;
            // the upgraded Arc keeps the descriptor open during the call.
            let n = unsafe {
                libc::write(
                    eventfd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    size_of::<u64>(),
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                // The counter is saturated, so the eventfd is readable: a wake is
                // already pending.
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => return Err(err),
            }
        }
    }
}

/// The buffer `epoll_wait` fills.
pub(super) struct RawEvents {
    buf: Vec<libc::epoll_event>,
}

impl RawEvents {
    pub(super) fn with_capacity(capacity: usize) -> RawEvents {
        RawEvents {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn clear(&mut self) {
        self.buf.clear();
    }

    #[inline]
    pub(super) fn get(&self, index: usize) -> Option<Event> {
        self.buf.get(index).map(to_event)
    }
}

/// Translates epoll bits into the shared readiness flags.
#[inline]
fn to_event(event: &libc::epoll_event) -> Event {
    // Copies, not borrows: epoll_event is packed on x86_64.
    let bits = event.events;
    let token = event.u64;
    let has = |flag: libc::c_int| bits & flag as u32 != 0;
    let mut flags = 0;
    if has(libc::EPOLLIN) {
        flags |= READABLE;
    }
    if has(libc::EPOLLOUT) {
        flags |= WRITABLE;
    }
    if has(libc::EPOLLERR) {
        flags |= ERROR;
    }
    if has(libc::EPOLLPRI) {
        flags |= PRIORITY;
    }
    if has(libc::EPOLLRDHUP) || has(libc::EPOLLHUP) {
        flags |= READ_CLOSED;
    }
    // EPOLLERR alone is how a pipe's write end reports a vanished reader;
    // EPOLLERR with EPOLLOUT is a socket whose writes now fail.
    if has(libc::EPOLLHUP)
        || (has(libc::EPOLLERR) && has(libc::EPOLLOUT))
        || bits == libc::EPOLLERR as u32
    {
        flags |= WRITE_CLOSED;
    }
    Event {
        token: token as usize,
        flags,
    }
}

/// Whether `epoll_pwait2` (Linux 5.11+, nanosecond timeouts) is available; cleared on the
/// first ENOSYS.
static PWAIT2: AtomicBool = AtomicBool::new(true);

/// Waits with the finest timeout the kernel offers: `epoll_pwait2` takes a timespec, so a
/// 50 µs timer is not rounded up to a whole millisecond; older kernels get `epoll_pwait`
/// with the timeout rounded up to milliseconds. Both as raw system calls: glibc's wrappers
/// are cancellation points, which cost ~30 instructions a call in a multi-threaded process
/// and buy nothing here.
///
/// # Safety
///
/// `events` must have room for `max` entries.
unsafe fn wait(
    ep: libc::c_int,
    events: *mut libc::epoll_event,
    max: libc::c_int,
    timeout: Option<Duration>,
) -> libc::c_int {
    if let Some(t) = timeout {
        if PWAIT2.load(Ordering::Relaxed) {
            let ts = libc::timespec {
                tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: t.subsec_nanos() as _,
            };
            // SAFETY: the caller guarantees room for `max` events; `ts` is live for the call
            // and the null sigmask means "do not change the mask".
            let n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    ep,
                    events,
                    max,
                    &ts as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            } as libc::c_int;
            if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
                return n;
            }
            PWAIT2.store(false, Ordering::Relaxed);
        }
    }
    // SAFETY: forwarded from the caller; the null sigmask means "do not change the mask"
    // (epoll_pwait with it is epoll_wait, which not every architecture has as a syscall).
    unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait,
            ep,
            events,
            max,
            timeout_ms(timeout),
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        ) as libc::c_int
    }
}

/// Converts a millisecond timeout for epoll_wait, rounding up so a sub-millisecond
/// timeout sleeps instead of spinning; `None` is infinite (-1).
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(timeout) => {
            let ms = timeout
                .as_secs()
                .saturating_mul(1000)
                .saturating_add(u64::from(timeout.subsec_nanos().div_ceil(1_000_000)));
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    }
}

/// Wraps the result of a descriptor-creating call, or returns errno.
fn owned_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_the_next_millisecond() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(300))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1_000_001))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_secs(3))), 3000);
        assert_eq!(timeout_ms(Some(Duration::MAX)), libc::c_int::MAX);
    }

    #[test]
    fn epoll_bits_translate_to_flags() {
        let event = |bits: libc::c_int| {
            to_event(&libc::epoll_event {
                events: bits as u32,
                u64: 9,
            })
        };
        let read = event(libc::EPOLLIN);
        assert_eq!(read.token(), 9);
        assert!(read.is_readable() && !read.is_writable() && !read.is_read_closed());

        let rdhup = event(libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP);
        assert!(rdhup.is_read_closed() && !rdhup.is_write_closed() && !rdhup.is_error());

        let hup = event(libc::EPOLLHUP);
        assert!(hup.is_read_closed() && hup.is_write_closed());

        let pipe_reader_gone = event(libc::EPOLLERR);
        assert!(pipe_reader_gone.is_error() && pipe_reader_gone.is_write_closed());

        let socket_error = event(libc::EPOLLIN | libc::EPOLLERR);
        assert!(socket_error.is_error() && !socket_error.is_write_closed());
        assert!(!socket_error.is_priority());

        let urgent = event(libc::EPOLLIN | libc::EPOLLPRI);
        assert!(urgent.is_priority() && urgent.is_readable() && !urgent.is_error());
    }
}

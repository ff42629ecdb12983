//! kqueue implementation of the poller (Apple platforms, FreeBSD, NetBSD,
//! OpenBSD, DragonFly).
//!
//! Each registered descriptor gets two knotes, `EVFILT_READ` and
//! `EVFILT_WRITE`, both `EV_CLEAR` (edge-triggered), so it reports read and
//! write readiness as separate events with the same token.
//!
//! The waker is an `EVFILT_USER` knote (ident 0, udata [`WAKER_TOKEN`]) added
//! with `EV_CLEAR`: `NOTE_TRIGGER` marks it active until a `kevent` call
//! returns it, so several triggers before a wait produce one event (coalescing),
//! a trigger made before the wait is returned by it (no lost wake), and no
//! drain is needed. `EVFILT_USER` needs macOS 10.6, FreeBSD 8.1, NetBSD 10,
//! DragonFly 2.9 or OpenBSD 7.6; on older kernels [`Selector::new`] fails with
//! `EINVAL`.
//!
//! `libc::kevent` differs across these systems (NetBSD uses `u32` filters and
//! flags and an integer udata; FreeBSD has an `ext` array), so entries are
//! built from a zeroed value by the `kevent!` macro with inferred casts.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Event, ERROR, READABLE, READ_CLOSED, WAKER_TOKEN, WRITABLE, WRITE_CLOSED};

/// Builds a `libc::kevent` change entry: `kevent!(ident, filter, flags, fflags, udata)`.
macro_rules! kevent {
    ($ident:expr, $filter:expr, $flags:expr, $fflags:expr, $udata:expr) => {{
        // SAFETY: libc::kevent holds only integers and (on most systems) a
        // pointer used as an opaque token, so all-zero bytes are a valid value.
        let mut event: libc::kevent = unsafe { ::std::mem::zeroed() };
        event.ident = $ident as _;
        event.filter = $filter;
        event.flags = $flags;
        event.fflags = $fflags;
        event.udata = $udata as _;
        event
    }};
}

/// The ident of the waker's `EVFILT_USER` knote (idents are per filter, so this
/// never collides with a descriptor).
const WAKER_IDENT: usize = 0;

/// A kqueue, shared with the wakers through weak references only.
#[derive(Debug)]
pub(super) struct Selector {
    kq: Arc<OwnedFd>,
}

impl Selector {
    pub(super) fn new() -> io::Result<Selector> {
        // SAFETY: kqueue takes no arguments; its result is checked below.
        let fd = unsafe { libc::kqueue() };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        // kqueue() has no close-on-exec flag everywhere (kqueuex/kqueue1 are not
        // portable), so set it right away.
        // SAFETY: F_SETFD takes an integer argument; `kq` is an open descriptor.
        if unsafe { libc::fcntl(kq.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let selector = Selector { kq: Arc::new(kq) };
        let mut changes = [kevent!(
            WAKER_IDENT,
            libc::EVFILT_USER,
            libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT,
            0,
            WAKER_TOKEN
        )];
        selector.apply(&mut changes)?;
        match receipt_error(&changes[0]) {
            None => Ok(selector),
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    pub(super) fn register(&self, fd: RawFd, token: usize) -> io::Result<()> {
        let flags = libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT;
        let mut changes = [
            kevent!(fd, libc::EVFILT_READ, flags, 0, token),
            kevent!(fd, libc::EVFILT_WRITE, flags, 0, token),
        ];
        self.apply(&mut changes)?;
        let (read, write) = receipts(&changes);
        match (read, write) {
            (None, None) => Ok(()),
            // One direction is unsupported (a pipe end; EPIPE is also what old
            // macOS reports for a pipe whose other end is gone): keep the other.
            (None, Some(errno)) | (Some(errno), None) if one_way(errno) => Ok(()),
            (None, Some(errno)) => {
                self.rollback(fd, libc::EVFILT_READ);
                Err(io::Error::from_raw_os_error(errno))
            }
            (Some(errno), None) => {
                self.rollback(fd, libc::EVFILT_WRITE);
                Err(io::Error::from_raw_os_error(errno))
            }
            (Some(errno), Some(_)) => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    pub(super) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        let flags = libc::EV_DELETE | libc::EV_RECEIPT;
        let mut changes = [
            kevent!(fd, libc::EVFILT_READ, flags, 0, 0usize),
            kevent!(fd, libc::EVFILT_WRITE, flags, 0, 0usize),
        ];
        self.apply(&mut changes)?;
        match receipts(&changes) {
            // Both knotes missing: the descriptor was not registered.
            (Some(libc::ENOENT), Some(libc::ENOENT)) => {
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            }
            (Some(errno), _) | (_, Some(errno)) if errno != libc::ENOENT => {
                Err(io::Error::from_raw_os_error(errno))
            }
            // One knote missing: `register` kept a single direction.
            _ => Ok(()),
        }
    }

    /// Removes the knote that succeeded when its sibling failed, so a failed
    /// `register` leaves nothing behind.
    fn rollback(&self, fd: RawFd, filter: Filter) {
        let mut changes = [kevent!(
            fd,
            filter,
            libc::EV_DELETE | libc::EV_RECEIPT,
            0,
            0usize
        )];
        // The caller reports the registration error, which is the one that
        // matters; if this delete fails too, closing `fd` still removes the
        // knote, so its result is deliberately not reported.
        self.apply(&mut changes).ok();
    }

    /// Applies `changes` (each with `EV_RECEIPT`) and writes each one's receipt
    /// back over it, so [`receipt_error`] can read the per-change result.
    fn apply(&self, changes: &mut [libc::kevent]) -> io::Result<()> {
        let len = changes.len();
        let changes = changes.as_mut_ptr();
        // SAFETY: `changes` points to `len` initialised entries, read as the
        // change list and overwritten as the event list (kevent allows the same
        // array for both); EV_RECEIPT makes the call return without waiting.
        let res = unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                changes,
                len as _,
                changes,
                len as _,
                ptr::null(),
            )
        };
        if res < 0 {
            let err = io::Error::last_os_error();
            // kevent(2): on EINTR all changes in the changelist were applied.
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
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
        let timeout = timeout.map(timespec);
        let timeout_ptr = timeout
            .as_ref()
            .map_or(ptr::null(), |timeout| timeout as *const libc::timespec);
        let max = libc::c_int::try_from(buf.capacity()).unwrap_or(libc::c_int::MAX);
        // SAFETY: no changes are passed; the kernel writes at most `max` <=
        // capacity entries into the vector's spare capacity, and `timeout_ptr`
        // is null or points to `timeout`, which lives until the call returns.
        let n = unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                ptr::null(),
                0,
                buf.as_mut_ptr(),
                max as _,
                timeout_ptr,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(err),
            };
        }
        // SAFETY: kevent initialised the first n entries, and 0 <= n <= max <=
        // capacity (n is non-negative: checked above).
        unsafe { buf.set_len(n as usize) };
        let before = buf.len();
        buf.retain(|event| !is_waker(event));
        Ok(buf.len() != before)
    }

    pub(super) fn waker(&self) -> Waker {
        Waker {
            kq: Arc::downgrade(&self.kq),
        }
    }

    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.kq.as_fd()
    }
}

/// Triggers the selector's `EVFILT_USER` knote while the selector is alive.
#[derive(Clone, Debug)]
pub(super) struct Waker {
    kq: Weak<OwnedFd>,
}

impl Waker {
    pub(super) fn wake(&self) -> io::Result<()> {
        let Some(kq) = self.kq.upgrade() else {
            // The poller is gone: nobody is left to wake.
            return Ok(());
        };
        let trigger = kevent!(
            WAKER_IDENT,
            libc::EVFILT_USER,
            0,
            libc::NOTE_TRIGGER,
            WAKER_TOKEN
        );
        loop {
            // SAFETY: `trigger` is one initialised change entry; the event list
            // is empty, so the kernel writes nothing; the upgraded Arc keeps the
            // kqueue open during the call.
            let res = unsafe {
                libc::kevent(kq.as_raw_fd(), &trigger, 1, ptr::null_mut(), 0, ptr::null())
            };
            if res >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            // Triggering twice is harmless, so retry an interrupted call.
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// The buffer `kevent` fills.
pub(super) struct RawEvents {
    buf: Vec<libc::kevent>,
}

// SAFETY: the only pointer in libc::kevent is `udata`, which this crate uses as
// an integer token and never dereferences, so the entries carry no thread
// affinity.
unsafe impl Send for RawEvents {}
// SAFETY: as for Send; shared access only reads integers.
unsafe impl Sync for RawEvents {}

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

/// Type of `libc::kevent::filter`: `u32` on NetBSD, `i16` elsewhere.
#[cfg(target_os = "netbsd")]
type Filter = u32;
/// Type of `libc::kevent::filter`: `u32` on NetBSD, `i16` elsewhere.
#[cfg(not(target_os = "netbsd"))]
type Filter = i16;

/// Whether `event` is the waker's `EVFILT_USER` knote.
fn is_waker(event: &libc::kevent) -> bool {
    event.filter == libc::EVFILT_USER && event.udata as usize == WAKER_TOKEN
}

/// The errno a receipt reports, `None` on success.
fn receipt_error(event: &libc::kevent) -> Option<i32> {
    if event.flags & libc::EV_ERROR != 0 && event.data != 0 {
        Some(event.data as i32)
    } else {
        None
    }
}

/// The errors of the read and write receipts, matched by filter.
fn receipts(changes: &[libc::kevent]) -> (Option<i32>, Option<i32>) {
    let mut read = None;
    let mut write = None;
    for change in changes {
        if change.filter == libc::EVFILT_READ {
            read = receipt_error(change);
        } else if change.filter == libc::EVFILT_WRITE {
            write = receipt_error(change);
        }
    }
    (read, write)
}

/// Errors meaning "this descriptor cannot report this direction".
fn one_way(errno: i32) -> bool {
    errno == libc::EINVAL || errno == libc::EPIPE
}

/// Translates a kevent into the shared readiness flags.
fn to_event(event: &libc::kevent) -> Event {
    let eof = event.flags & libc::EV_EOF != 0;
    let mut flags = 0;
    if event.filter == libc::EVFILT_READ {
        flags |= READABLE;
        if eof {
            flags |= READ_CLOSED;
        }
    } else if event.filter == libc::EVFILT_WRITE {
        flags |= WRITABLE;
        if eof {
            flags |= WRITE_CLOSED;
        }
    }
    // With EV_EOF, a non-zero fflags is the socket error.
    if event.flags & libc::EV_ERROR != 0 || (eof && event.fflags != 0) {
        flags |= ERROR;
    }
    Event {
        token: event.udata as usize,
        flags,
    }
}

/// Converts a timeout for kevent, saturating seconds that do not fit time_t.
fn timespec(timeout: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 10^9, so it fits every c_long.
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    }
}

//! Explicit cancellation: cancel operations without dropping their futures, and get their
//! outcomes and buffers back.
//!
//! Dropping an operation's future already cancels it safely, but the buffer goes with it
//! (the runtime frees it once the kernel lets go). With a [`CancelToken`], the future stays
//! and completes: with `ECANCELED` ([`is_cancelled`] says so; `ERROR_OPERATION_ABORTED` on
//! Windows) if the operation had not happened yet, or with its real result
//! if the kernel finished it first, so bytes already read or written are never lost, and
//! the buffer comes back either way.
//!
//! ```
//! use std::time::Duration;
//! use coring::cancel::CancelToken;
//! use coring::net::{TcpListener, TcpStream};
//!
//! coring::start(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let _b = TcpStream::connect(listener.local_addr()?).await?;
//!     let (a, _) = listener.accept().await?;
//!     let token = CancelToken::new();
//!     let read = token.bind(a.read(Vec::with_capacity(64)));
//!     let canceller = token.clone();
//!     coring::spawn(async move {
//!         coring::time::sleep(Duration::from_millis(10)).await;
//!         canceller.cancel();
//!     });
//!     // Nothing was written: the read ends cancelled, and its buffer is ours again.
//!     let (res, buf) = read.await;
//!     assert!(coring::cancel::is_cancelled(&res.unwrap_err()));
//!     assert_eq!(buf.capacity(), 64);
//!     Ok::<(), std::io::Error>(())
//! })
//! .unwrap();
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use crate::driver::Driver;
use crate::runtime::context;

/// Whether `e` is what an operation stopped by a cancel ends with: `ECANCELED`, or on
/// Windows `ERROR_OPERATION_ABORTED` (what `CancelIoEx` ends an operation with).
pub fn is_cancelled(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(crate::platform::c::ECANCELED)
}

/// Cancels the operations of the futures bound to it ([`CancelToken::bind`]), without
/// dropping those futures: each completes with `ECANCELED`, or with its real result if the
/// kernel finished it first, and gives its buffer back.
///
/// A token covers the operations a bound future polls itself (reads, writes, accepts,
/// connects, file and path operations, however deeply nested in `async` code), not those of
/// tasks it spawns, and not timers, and never a close (`File::close`): that gives up a
/// descriptor the caller no longer holds, so it always runs. Once cancelled, a token stays
/// cancelled: operations a bound future starts afterwards end at once with `ECANCELED`,
/// without reaching the kernel.
/// Clones share the token. `!Send`: a token belongs to the thread whose runtime runs its
/// futures.
///
/// What "the kernel finished first" means per backend: on io_uring, an operation whose
/// completion the runtime has reaped, or that the kernel completes before it sees the
/// cancel, returns its result; a stream read served by the stream's multishot receive
/// returns the bytes already received, and the receive itself stays armed (it is the
/// stream's, not the read's). On the readiness fallback, a socket read or accept that waits
/// has nothing in the kernel: it ends cancelled, and what arrives later waits in the socket
/// for the next call; a blocking-pool job that already runs (a file read) finishes and
/// returns its result. Either way no byte, datagram or connection is lost: it goes to the
/// cancelled call or stays for the next one.
///
/// Tokens nest: an operation belongs to the innermost token bound around it, so cancelling
/// an outer token does not reach operations under an inner one; bind nested work with
/// clones of one token to cancel it together.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Rc<Token>,
}

/// A token's shared state.
#[derive(Default)]
pub(crate) struct Token {
    /// Nonzero once an operation was started under the token: the group its operations
    /// carry in the driver's table.
    group: Cell<u32>,
    cancelled: Cell<bool>,
    /// The drivers the token's operations were submitted to (looked through at cancel).
    drivers: RefCell<Vec<Weak<RefCell<Driver>>>>,
    /// Tasks waiting under the token without an operation in the kernel (a read waiting
    /// for readiness, a call waiting for a retained operation): woken at cancel, they see
    /// it and end.
    waiting: RefCell<Vec<Waker>>,
    /// The token of a [`deadline_for`](crate::time::deadline_for): when its timer
    /// cancels it. Operations started under it carry the deadline to the kernel where
    /// the backend can keep it (io_uring's IORING_OP_LINK_TIMEOUT).
    deadline: Cell<Option<std::time::Instant>>,
}

impl Token {
    /// A token that a timer cancels at `deadline` ([`crate::time::Deadline`]).
    pub(crate) fn with_deadline(deadline: std::time::Instant) -> Token {
        let token = Token::default();
        token.deadline.set(Some(deadline));
        token
    }

    /// When the token's deadline cancels it, if it has one.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        self.deadline.get()
    }

    /// Cancels the token's operations (see [`CancelToken::cancel`]). Idempotent.
    pub(crate) fn cancel(&self) {
        if self.cancelled.replace(true) {
            return;
        }
        let group = self.group.get();
        if group != 0 {
            let drivers = std::mem::take(&mut *self.drivers.borrow_mut());
            for d in drivers.iter().filter_map(Weak::upgrade) {
                // Outside any driver call, so the driver is free (a cancel from inside a
                // runtime's own bookkeeping is impossible: that runs no user code).
                if let Ok(mut d) = d.try_borrow_mut() {
                    d.cancel_group(group);
                }
            }
        }
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            w.wake();
        }
    }

    /// Whether the token was cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    /// The group this token's operations carry on `driver`, which is recorded so that a
    /// cancel reaches them.
    pub(crate) fn group_on(&self, driver: &Rc<RefCell<Driver>>) -> u32 {
        let mut drivers = self.drivers.borrow_mut();
        drivers.retain(|d| d.strong_count() > 0);
        if !drivers
            .iter()
            .any(|d| std::ptr::eq(d.as_ptr(), Rc::as_ptr(driver)))
        {
            drivers.push(Rc::downgrade(driver));
        }
        if self.group.get() == 0 {
            self.group.set(next_group());
        }
        self.group.get()
    }

    /// Wakes `waker` when the token is cancelled (a task that waits under it with nothing
    /// in the kernel).
    pub(crate) fn wake_on_cancel(&self, waker: &Waker) {
        let mut waiting = self.waiting.borrow_mut();
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push(waker.clone());
        }
    }
}

/// Group numbers, unique in the process (0 is "none"); they wrap after 4 billion tokens,
/// long after any operation of an early one has finished.
fn next_group() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    loop {
        let g = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if g != 0 {
            return g;
        }
    }
}

impl CancelToken {
    /// A token that has not been cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Binds `future` to this token: the operations it polls can be cancelled with
    /// [`CancelToken::cancel`] (see [`CancelToken`] for what that covers).
    pub fn bind<F: Future>(&self, future: F) -> Cancellable<F> {
        Cancellable {
            token: self.inner.clone(),
            future,
        }
    }

    /// Cancels every operation of the futures bound to this token: those in the kernel are
    /// asked to stop (each still reports its real result if it finished first), and those
    /// not started yet, or waiting without an operation in the kernel, end with
    /// `ECANCELED`. Idempotent.
    pub fn cancel(&self) {
        self.inner.cancel();
    }

    /// Whether [`CancelToken::cancel`] has been called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A future bound to a [`CancelToken`] ([`CancelToken::bind`]); it completes with the
/// future's own output.
#[must_use = "futures do nothing unless awaited"]
pub struct Cancellable<F> {
    token: Rc<Token>,
    future: F,
}

impl<F: Future> Future for Cancellable<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self`, and
        // `Cancellable` has no Drop impl or `Unpin` impl that would move it.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        let _scope = context::enter_cancel_scope(&this.token);
        future.poll(cx)
    }
}

impl<F: fmt::Debug> fmt::Debug for Cancellable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancellable")
            .field("cancelled", &self.token.is_cancelled())
            .field("future", &self.future)
            .finish()
    }
}

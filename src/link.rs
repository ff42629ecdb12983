//! Ordering on the ring: two operations submitted as a chain that the kernel orders.
//!
//! [`link`] submits two operations together, the second behind the first: it starts only
//! after the first has completed with its full result, and if the first fails (or, for a
//! read or write, transfers fewer bytes than it asked for, which breaks an io_uring link)
//! the second ends with `ECANCELED` ([`is_cancelled`](crate::cancel::is_cancelled) is
//! true) without ever starting. Each operation's own result comes back, with its buffer.
//!
//! ```
//! use coring::fs::File;
//!
//! coring::start(async {
//!     let path = std::env::temp_dir().join(format!("coring-link-doc-{}", std::process::id()));
//!     let file = File::create(&path).await?;
//!     // One trip into the kernel for both; the sync runs only if every byte was written.
//!     let ((written, buf), synced) =
//!         coring::link::link(file.write_at(b"hello".to_vec(), 0), file.sync_data()).await;
//!     assert_eq!(written?, 5);
//!     synced?;
//!     assert_eq!(buf, b"hello");
//!     file.close().await?;
//!     std::fs::remove_file(&path)
//! })
//! .unwrap();
//! ```
//!
//! # Backends
//!
//! On io_uring both entries go into the submission queue back to back, the first with
//! IOSQE_IO_LINK, in one trip into the kernel (a full queue is flushed first: a chain is
//! never split). The first is never completed during submission (a page-cache read or a
//! send that need not wait would otherwise finish before its chain exists). Operations the
//! ring does not run as one entry of its own (an opcode the kernel lacks, which runs on
//! the blocking pool; a stream's sends, which the runtime keeps in issue order) are
//! chained by the runtime as on the other backends.
//!
//! On the readiness fallback, IOCP and the mock backend the runtime keeps the same order:
//! it starts the first operation, holds the second back, and starts it only when the first
//! has completed in full; otherwise the second ends with `ECANCELED` without reaching the
//! kernel.
//!
//! # Cancellation
//!
//! Dropping the link's future drops both operations' futures: as for any operation, each
//! is cancelled and its buffer kept by the runtime until the kernel lets go of it (a held
//! second operation never reached the kernel: it ends at once). Cancelling the first
//! (a [`CancelToken`](crate::cancel::CancelToken) bound around the link, or around the
//! first future) cancels the chain.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::runtime::context;

/// Submits `first` and `second` as a chain: `second`'s operation starts only after
/// `first`'s has completed with its full result, and otherwise ends with `ECANCELED`
/// without starting (see the [module docs](self)). Resolves to both outputs once both
/// operations have completed.
///
/// Each future must be a single IO operation that starts on its first poll:
/// [`File::write_at`](crate::fs::File::write_at), [`File::read_at`](crate::fs::File::read_at),
/// [`File::sync_data`](crate::fs::File::sync_data), [`File::sync_all`](crate::fs::File::sync_all),
/// `writev_at`/`readv_at`, [`UdpSocket::send_to`](crate::net::UdpSocket::send_to),
/// [`TcpStream::write`](crate::net::TcpStream::write), a path operation... Futures that
/// loop over several operations (`write_all_at`, `read_exact_at`) cannot be linked: for a
/// write that must be complete before a sync, use
/// [`File::write_all_at_then_sync`](crate::fs::File::write_all_at_then_sync). A stream's
/// read is not an operation of its own on io_uring (the stream's multishot receive serves
/// it): bound it in time with [`deadline_for`](crate::time::deadline_for) instead.
///
/// If `first` ends without starting its operation (an invalid argument, a cancelled
/// token), `second` ends with `ECANCELED` without starting. If `second` ends without
/// starting its operation, `first` runs alone.
///
/// # Panics
///
/// When first polled, with an actionable message, if either future is not a single
/// operation (it starts none on its first poll but does not finish, or starts more than
/// one); and outside a coring runtime.
pub fn link<A: Future, B: Future>(first: A, second: B) -> Link<A, B> {
    Link {
        first: Half::Running(first),
        second: Half::Running(second),
        started: false,
    }
}

/// One future of a link: running, finished with its output, or its output taken.
enum Half<F: Future> {
    Running(F),
    Done(F::Output),
    Taken,
}

impl<F: Future> Half<F> {
    /// Polls the future if it still runs; whether it has finished.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        // SAFETY: `Half` is structurally pinned: the future inside `Running` is never
        // moved, only dropped in place when the state changes below.
        let this = unsafe { self.get_unchecked_mut() };
        let Half::Running(f) = this else {
            return true;
        };
        // SAFETY: see above; `f` lives inside the pinned `Half`.
        let f = unsafe { Pin::new_unchecked(f) };
        match f.poll(cx) {
            Poll::Ready(out) => {
                *this = Half::Done(out);
                true
            }
            Poll::Pending => false,
        }
    }

    /// Whether the future has finished.
    fn is_done(&self) -> bool {
        !matches!(self, Half::Running(_))
    }

    /// The output of a finished future.
    fn take(self: Pin<&mut Self>) -> F::Output {
        // SAFETY: only a `Done` state is moved out of, and it holds no pinned future.
        let this = unsafe { self.get_unchecked_mut() };
        match std::mem::replace(this, Half::Taken) {
            Half::Done(out) => out,
            _ => unreachable!("coring: link output taken before it was ready"),
        }
    }
}

/// Future returned by [`link`]; resolves to `(first's output, second's output)`.
#[must_use = "futures do nothing unless awaited"]
pub struct Link<A: Future, B: Future> {
    // Declared first, dropped first: a dropped link cancels its first operation before
    // it lets go of the second (which, held back, then ends at once).
    first: Half<A>,
    second: Half<B>,
    started: bool,
}

impl<A: Future, B: Future> fmt::Debug for Link<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// What a link's first poll records of the operations its futures submit (see
/// `context::enter_link`).
pub(crate) struct Stage {
    /// The key of the operation the future being polled staged.
    key: Cell<Option<usize>>,
    /// The first future ended without an operation: the second's ends at once.
    cancelled: Cell<bool>,
    /// Which future is being polled, for the misuse message.
    which: Cell<&'static str>,
}

impl Stage {
    /// Whether operations submitted now end at once with `ECANCELED`.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    /// Panics if the future being polled has staged an operation already.
    #[track_caller]
    pub(crate) fn check_single(&self) {
        if self.key.get().is_some() {
            misuse(self.which.get(), "started more than one IO operation");
        }
    }

    /// Records the operation the future being polled staged.
    pub(crate) fn staged(&self, key: usize) {
        self.key.set(Some(key));
    }
}

#[cold]
#[track_caller]
fn misuse(which: &str, what: &str) -> ! {
    panic!(
        "coring::link::link: the {which} future {what} on its first poll; link takes single \
         IO operations that start when first polled (File::write_at, File::sync_data, \
         File::read_at, UdpSocket::send_to, ...). For a write that must be complete before \
         a sync use File::write_all_at_then_sync; to bound a stream read in time use \
         coring::time::deadline_for"
    )
}

impl<A: Future, B: Future> Link<A, B> {
    /// The first poll: stages each future's operation, then hands both to the driver as
    /// one chain.
    fn start(self: Pin<&mut Self>, cx: &mut Context<'_>) {
        // SAFETY: the halves are structurally pinned (never moved out while running).
        let this = unsafe { self.get_unchecked_mut() };
        this.started = true;
        // SAFETY: see above.
        let mut first = unsafe { Pin::new_unchecked(&mut this.first) };
        // SAFETY: see above.
        let mut second = unsafe { Pin::new_unchecked(&mut this.second) };
        let stage = Stage {
            key: Cell::new(None),
            cancelled: Cell::new(false),
            which: Cell::new("first"),
        };
        let first_done = {
            let _scope = context::enter_link(&stage);
            first.as_mut().poll(cx)
        };
        let head = stage.key.take();
        if head.is_none() {
            if !first_done {
                misuse("first", "started no IO operation but did not finish");
            }
            // It ended without reaching the kernel (an invalid argument, a cancelled
            // token): the chain fails, and the second does not start.
            stage.cancelled.set(true);
        }
        stage.which.set("second");
        let second_done = {
            let _scope = context::enter_link(&stage);
            second.as_mut().poll(cx)
        };
        let tail = stage.key.take();
        if let Some(head) = head {
            // Submitted before any misuse panic below, so that a staged first operation
            // never waits for a chain that will not come.
            context::driver().borrow_mut().submit_chain(head, tail);
        }
        if tail.is_none() && !second_done {
            misuse("second", "started no IO operation but did not finish");
        }
    }
}

impl<A: Future, B: Future> Future for Link<A, B> {
    type Output = (A::Output, B::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let started = self.started;
        if !started {
            self.as_mut().start(cx);
        }
        // SAFETY: the halves are structurally pinned (never moved out while running).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let mut first = unsafe { Pin::new_unchecked(&mut this.first) };
        // SAFETY: see above.
        let mut second = unsafe { Pin::new_unchecked(&mut this.second) };
        let (a, b) = if started {
            // Both polled every time (a finished one returns at once): each registers its
            // waker with its own operation.
            (first.as_mut().poll(cx), second.as_mut().poll(cx))
        } else {
            (first.is_done(), second.is_done())
        };
        if a && b {
            Poll::Ready((first.take(), second.take()))
        } else {
            Poll::Pending
        }
    }
}

//! Timers: [`sleep`], [`sleep_until`], [`timeout`], [`deadline_for`] and [`interval`].
//!
//! Deadlines live in an ordered map owned by the runtime's thread; the event loop sleeps in
//! the kernel until the earliest one (or IO, or a wakeup), so an idle runtime uses no CPU.

mod timers;

pub(crate) use timers::{EntryState, Timers};

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::cancel::Token;
use crate::runtime::context;

/// Waits until `duration` has elapsed.
///
/// # Panics
///
/// When polled outside a coring runtime.
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant};
/// coring::start(async {
///     let t = Instant::now();
///     coring::time::sleep(Duration::from_millis(10)).await;
///     assert!(t.elapsed() >= Duration::from_millis(10));
/// });
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(later(Instant::now(), duration))
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
    }
}

/// About thirty years from now: what "never" means for a duration that overflows.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// `t + d`, or [`far_future`] where that does not fit an `Instant`: every deadline the
/// crate computes goes through here, so no duration (`Duration::MAX` included) panics.
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or_else(far_future)
}

/// Future returned by [`sleep`] and [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    /// The runtime's timers and this sleep's entry there, once polled.
    entry: Option<(Rc<RefCell<Timers>>, usize)>,
}

impl Sleep {
    /// The instant this sleep completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline; the sleep can be awaited again afterwards. A task already
    /// waiting on it (reset from elsewhere, e.g. through an `Rc<RefCell<..>>`) is woken at
    /// the new deadline.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        let Some((timers, key)) = self.entry.take() else {
            return;
        };
        let waiting = timers.borrow_mut().remove(key);
        if let Some(waker) = waiting {
            let key = timers.borrow_mut().insert(deadline, &waker);
            self.entry = Some((timers, key));
            // Dropped outside the timers' borrow (a waker's drop may reach them).
            drop(waker);
        }
    }

    fn unregister(&mut self) {
        if let Some((timers, key)) = self.entry.take() {
            let waker = timers.borrow_mut().remove(key);
            // Dropped outside the timers' borrow (a waker's drop may reach them).
            drop(waker);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        match &self.entry {
            Some((timers, key)) => {
                let state = timers.borrow_mut().poll_entry(*key, cx.waker());
                match state {
                    // The replaced waker is dropped here, outside the timers' borrow.
                    EntryState::Armed { replaced } => {
                        drop(replaced);
                        // Only the runtime whose timers hold the entry fires it: awaited
                        // anywhere else, it would never complete.
                        let here = context::try_with(|inner| Rc::ptr_eq(&inner.timers, timers));
                        assert!(
                            here == Some(true),
                            "coring: a Sleep started on one coring runtime is awaited \
                             outside it (on another runtime, or none); await it on the \
                             runtime that started it"
                        );
                        Poll::Pending
                    }
                    EntryState::Fired => {
                        // The entry is freed.
                        self.entry = None;
                        Poll::Ready(())
                    }
                }
            }
            None => {
                if Instant::now() >= deadline {
                    return Poll::Ready(());
                }
                let timers = context::with(
                    "coring::time::sleep polled outside a coring runtime; await it inside \
                     Runtime::block_on or a task",
                    |inner| inner.timers.clone(),
                );
                let key = timers.borrow_mut().insert(deadline, cx.waker());
                self.entry = Some((timers, key));
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The error of a [`timeout`] whose deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Runs `future` for at most `duration`: `Ok(output)` if it finished first, `Err(Elapsed)`
/// otherwise (the future is dropped; an in-flight operation inside it is cancelled and its
/// buffer kept by the runtime until the kernel lets go of it).
///
/// To have the buffer back when a read times out, use [`deadline_for`] instead: the read
/// is cancelled at the deadline and ends with the cancel's error *and its buffer*
/// (test it with [`is_cancelled`](crate::cancel::is_cancelled)):
///
/// ```
/// use std::time::Duration;
///
/// coring::start(async {
///     let socket = coring::net::UdpSocket::bind("127.0.0.1:0")?;
///     let read = socket.recv_from(Vec::with_capacity(4096));
///     let (res, buf) = coring::time::deadline_for(read, Duration::from_millis(10)).await;
///     match res {
///         Ok((n, from)) => println!("{n} bytes from {from}"),
///         Err(e) if coring::cancel::is_cancelled(&e) => println!("timed out"),
///         Err(e) => return Err(e),
///     }
///     assert_eq!(buf.capacity(), 4096); // reusable either way
///     Ok(())
/// })
/// .unwrap();
/// ```
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

/// Future returned by [`timeout`].
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self`, and
        // `Timeout` has no Drop impl that could move it; `sleep` is Unpin.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(v) = future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `future` with a deadline `duration` from now: at the deadline its operations are
/// cancelled, and it completes with its own output, as under a
/// [`CancelToken`](crate::cancel::CancelToken) cancelled then: an operation the deadline
/// stopped ends with `ECANCELED` ([`is_cancelled`](crate::cancel::is_cancelled) is true),
/// one that finished first keeps its real result, and the buffer comes back either way.
/// Unlike [`timeout`], nothing is lost: the future is not dropped, so no byte read or
/// written before the deadline goes missing, and the socket or file stays usable.
///
/// On io_uring each operation the future starts carries the deadline into the kernel: it
/// is submitted linked to an IORING_OP_LINK_TIMEOUT, so the kernel cancels it at the
/// deadline without a trip through the runtime. On the other backends (and for what the
/// kernel cannot time: a stream read served by the stream's multishot receive, a wait for
/// readiness, a stream's send kept in issue order), the runtime's timer cancels at the
/// deadline. A future that waits for something other than IO (a channel, a sleep) is not
/// interrupted: only its operations are cancelled.
///
/// An enclosing `CancelToken` still reaches the future's operations.
///
/// # Panics
///
/// When polled outside a coring runtime.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use coring::net::UdpSocket;
///
/// coring::start(async {
///     let socket = UdpSocket::bind("127.0.0.1:0")?;
///     // Nobody sends: the receive is cancelled after 20 ms, and the buffer comes back.
///     let read = socket.recv_from(Vec::with_capacity(64));
///     let (res, buf) = coring::time::deadline_for(read, Duration::from_millis(20)).await;
///     assert!(coring::cancel::is_cancelled(&res.unwrap_err()));
///     assert_eq!(buf.capacity(), 64);
///     Ok::<(), std::io::Error>(())
/// })
/// .unwrap();
/// ```
pub fn deadline_for<F: Future>(future: F, duration: Duration) -> Deadline<F> {
    deadline_at(future, later(Instant::now(), duration))
}

/// Runs `future` with a deadline at `deadline`; see [`deadline_for`].
pub fn deadline_at<F: Future>(future: F, deadline: Instant) -> Deadline<F> {
    Deadline {
        future,
        token: Rc::new(Token::with_deadline(deadline)),
        deadline,
        sleep: None,
    }
}

/// Future returned by [`deadline_for`] and [`deadline_at`]; resolves to the future's own
/// output.
#[must_use = "futures do nothing unless awaited"]
pub struct Deadline<F> {
    future: F,
    /// Cancelled at the deadline; its scope carries the deadline to the operations.
    token: Rc<Token>,
    deadline: Instant,
    /// The runtime's timer for the deadline, armed on the first poll that waits.
    sleep: Option<Sleep>,
}

impl<F> Deadline<F> {
    /// The instant the future's operations are cancelled at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has cancelled the future's operations (or an enclosing
    /// [`CancelToken`](crate::cancel::CancelToken) has).
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self`, and
        // `Deadline` has no Drop impl that could move it; the other fields are Unpin.
        let this = unsafe { self.get_unchecked_mut() };
        // Checked in the enclosing scope: an enclosing token's cancel (which wakes this
        // task) reaches the deadline's operations too.
        if !this.token.is_cancelled()
            && (context::cancel_requested(cx.waker()) || Instant::now() >= this.deadline)
        {
            this.token.cancel();
        }
        let polled = {
            let _scope = context::enter_cancel_scope(&this.token);
            // SAFETY: see above.
            unsafe { Pin::new_unchecked(&mut this.future) }.poll(cx)
        };
        if polled.is_ready() || this.token.is_cancelled() {
            return polled;
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| sleep_until(deadline));
        if Pin::new(sleep).poll(cx).is_ready() {
            // Cancelled now; the next poll collects what the operations end with.
            this.token.cancel();
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl<F: fmt::Debug> fmt::Debug for Deadline<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("deadline", &self.deadline)
            .field("cancelled", &self.token.is_cancelled())
            .field("future", &self.future)
            .finish()
    }
}

/// A stream of ticks every `period`; the first tick completes at once.
///
/// If a tick is late (the task was busy), the missed ticks are skipped: the next tick is
/// the first multiple of `period` after now, so there is never a burst of catch-up ticks.
///
/// # Panics
///
/// If `period` is zero.
pub fn interval(period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "coring::time::interval: period must be non-zero"
    );
    Interval {
        next: Instant::now(),
        period,
        sleep: None,
    }
}

/// Returned by [`interval`]. Also a [`Stream`](futures_core::Stream) of the ticks'
/// scheduled instants (it never ends).
#[derive(Debug)]
pub struct Interval {
    next: Instant,
    period: Duration,
    /// The timer of the tick being waited for, kept between polls.
    sleep: Option<Sleep>,
}

impl Interval {
    /// Waits for the next tick and returns its scheduled instant. Cancel-safe: a tick
    /// whose wait is dropped is the next one waited for.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick: `Ready` with its scheduled instant once it is due.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let due = self.next;
        let sleep = self.sleep.get_or_insert_with(|| sleep_until(due));
        if Pin::new(sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        let now = Instant::now();
        let mut next = later(due, self.period);
        if next <= now {
            // Skip every missed tick: the next one is the first multiple of the period
            // after now. Computed in u128 nanoseconds so a long stall cannot overflow.
            let period = self.period.as_nanos();
            let ticks = (now - due).as_nanos() / period + 1;
            let ahead = (ticks * period).min(u64::MAX as u128) as u64;
            next = later(due, Duration::from_nanos(ahead));
        }
        self.next = next;
        Poll::Ready(due)
    }

    /// The period between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl futures_core::Stream for Interval {
    type Item = Instant;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        self.get_mut().poll_tick(cx).map(Some)
    }
}

//! Reaching any core: the pool's `Send + Sync` handle, the handles of work started on a
//! core, and the error of every blocking wait.
//!
//! Work crosses to a core as a `Send` closure through that core's mailbox; the closure
//! builds its (possibly `!Send`) future there, which runs as one task of that core. Its
//! output comes back through a [`oneshot`] channel: a task awaiting it is woken through
//! its own core's cross-thread wakeup, a plain thread blocks on the channel's condition
//! variable. An abort travels the other way: a flag and the remote task's waker.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::PoolShared;
use crate::sync::oneshot;
use crate::task::JoinError;

/// Why a blocking wait returned without a value: [`SpawnHandle::wait`],
/// [`Submit::wait`], [`Gather::wait`], [`oneshot::Receiver::recv_blocking`] and
/// [`mpsc::Receiver::recv_blocking`](crate::sync::mpsc::Receiver::recv_blocking).
///
/// Every one of these waits panics, with advice, when called on a coring runtime thread
/// (a pool's core, or inside `block_on`): blocking there would stall the runtime's tasks.
#[derive(Debug)]
#[non_exhaustive]
pub enum WaitError {
    /// The timeout passed first; the value may still come (wait again).
    Timeout,
    /// No value will ever come: the sender is gone (a channel), or the task was aborted or
    /// dropped because its core shut down (a spawn handle).
    Closed,
    /// The task panicked; the payload is inside, to resume with
    /// [`std::panic::resume_unwind`].
    Panicked(Box<dyn Any + Send + 'static>),
}

impl WaitError {
    /// Whether the timeout passed first.
    pub fn is_timeout(&self) -> bool {
        matches!(self, WaitError::Timeout)
    }

    /// Whether nothing will ever come (closed channel, cancelled task).
    pub fn is_closed(&self) -> bool {
        matches!(self, WaitError::Closed)
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, WaitError::Panicked(_))
    }

    fn from_join(e: JoinError) -> WaitError {
        if e.is_panic() {
            WaitError::Panicked(e.into_panic())
        } else {
            WaitError::Closed
        }
    }

    fn panic_message(&self) -> Option<&str> {
        match self {
            WaitError::Panicked(p) => p
                .downcast_ref::<&'static str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str)),
            _ => None,
        }
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Timeout => f.write_str("timed out waiting"),
            WaitError::Closed => f.write_str(
                "closed: the sender is gone, or the task was cancelled (aborted, or its core \
                 shut down)",
            ),
            WaitError::Panicked(_) => match self.panic_message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
        }
    }
}

impl std::error::Error for WaitError {}

impl From<WaitError> for io::Error {
    /// `TimedOut`, `BrokenPipe` (closed) or `Other` (a panic, with its message).
    fn from(e: WaitError) -> io::Error {
        let kind = match e {
            WaitError::Timeout => io::ErrorKind::TimedOut,
            WaitError::Closed => io::ErrorKind::BrokenPipe,
            WaitError::Panicked(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// An abort request for work running on another core (or a blocking thread): a flag, and
/// the waker of the task to wake so it sees the flag.
pub(crate) struct Abort {
    aborted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Abort {
    pub(crate) fn new() -> Arc<Abort> {
        Arc::new(Abort {
            aborted: AtomicBool::new(false),
            waker: Mutex::new(None),
        })
    }

    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        let w = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = w {
            w.wake();
        }
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }
}

/// The future of work started on a core, as that core runs it: stops (dropping `fut`)
/// once aborted, and turns a panic into the caller's [`JoinError`] rather than the task's.
pub(crate) struct Guarded<Fut> {
    fut: Fut,
    abort: Arc<Abort>,
    /// The waker last registered in `abort`, to skip its lock when the task's waker is the
    /// same as last poll (it nearly always is).
    registered: Option<Waker>,
}

impl<Fut> Guarded<Fut> {
    pub(crate) fn new(fut: Fut, abort: Arc<Abort>) -> Guarded<Fut> {
        Guarded {
            fut,
            abort,
            registered: None,
        }
    }
}

impl<Fut: Future> Future for Guarded<Fut> {
    type Output = Result<Fut::Output, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of `self` and only
        // reached through the `Pin::new_unchecked` below; `abort` and `registered` are not
        // pinned (they are moved and replaced freely, which pinning `fut` does not forbid).
        let this = unsafe { self.get_unchecked_mut() };
        if this.abort.is_aborted() {
            return Poll::Ready(Err(JoinError::cancelled()));
        }
        // SAFETY: see above: `fut` stays where it is for as long as `self` is pinned.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => return Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => {}
            Err(payload) => return Poll::Ready(Err(JoinError::panic(payload))),
        }
        // Pending: an abort must be able to wake this task. Registered only now, so work
        // that finishes in its first poll (most calls) never takes the lock.
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let w = cx.waker().clone();
            *this.abort.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
            this.registered = Some(w);
            // An abort between the check above and the registration found no waker: poll
            // again soon to see it.
            if this.abort.is_aborted() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

/// The result of [`PoolHandle::spawn_on`] (and [`Pool::spawn_on`](super::Pool::spawn_on),
/// [`spawn_blocking`](crate::spawn_blocking)): await it on any core, or
/// [`wait`](SpawnHandle::wait) from a plain thread. It is `Send`; dropping it detaches the
/// task, which keeps running.
#[must_use = "dropping a SpawnHandle detaches the task; await it, wait() on it, or abort() it"]
pub struct SpawnHandle<T> {
    rx: oneshot::Receiver<Result<T, JoinError>>,
    abort: Arc<Abort>,
}

impl<T> SpawnHandle<T> {
    pub(crate) fn new(rx: oneshot::Receiver<Result<T, JoinError>>, abort: Arc<Abort>) -> Self {
        SpawnHandle { rx, abort }
    }

    /// Blocks the calling thread (a plain thread, not a runtime's) for the result, at most
    /// `timeout` (`Duration::MAX`: no deadline).
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] if the timeout passed first (the task keeps running: wait
    /// again, or abort it); [`WaitError::Closed`] if the task was aborted, its core shut
    /// down first, or the result was already taken; [`WaitError::Panicked`] with the
    /// task's panic.
    ///
    /// # Panics
    ///
    /// On a coring runtime thread, where blocking would stall that core: `.await` the
    /// handle there instead.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> Result<T, WaitError> {
        crate::sync::forbid_blocking_on_runtime("SpawnHandle::wait");
        match self.rx.recv_blocking(timeout) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(WaitError::from_join(e)),
            Err(e) => Err(e),
        }
    }

    /// Cancels the task from any thread: its core drops its future the next time it gets
    /// control, and the handle yields a cancelled [`JoinError`] (or
    /// [`WaitError::Closed`]) unless the task had finished first. Blocking work
    /// ([`spawn_blocking`](crate::spawn_blocking)) is skipped if it has not started; once
    /// it runs it finishes, and its result is still delivered.
    pub fn abort(&self) {
        self.abort.abort();
    }
}

impl<T> Future for SpawnHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(JoinError::cancelled())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> fmt::Debug for SpawnHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpawnHandle")
    }
}

/// The result of [`PoolHandle::submit_to`]: a call on another core. Await it (on any
/// core) or [`wait`](Submit::wait) from a plain thread. Unlike a [`SpawnHandle`],
/// dropping it before the result arrives cancels the remote work: the call belongs to
/// its caller.
#[must_use = "dropping a Submit cancels the remote work; await it or wait() on it"]
pub struct Submit<T> {
    handle: SpawnHandle<T>,
    /// The outcome arrived: nothing left to cancel on drop (which would otherwise wake
    /// the finished remote task, a cross-core wakeup for nothing).
    done: bool,
}

impl<T> Submit<T> {
    /// Blocks the calling thread (a plain thread, not a runtime's) for the output, at most
    /// `timeout`; see [`SpawnHandle::wait`] for the errors and the panic.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> Result<T, WaitError> {
        let r = self.handle.wait(timeout);
        self.done = !matches!(r, Err(WaitError::Timeout));
        r
    }

    /// Cancels the remote work, as [`SpawnHandle::abort`].
    pub fn abort(&self) {
        self.handle.abort();
    }
}

impl<T> Future for Submit<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = Pin::new(&mut self.handle).poll(cx);
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

impl<T> Drop for Submit<T> {
    fn drop(&mut self) {
        if !self.done {
            self.handle.abort();
        }
    }
}

impl<T> fmt::Debug for Submit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Submit")
    }
}

/// The results of the same work on every core ([`PoolHandle::run_on_all`],
/// [`Sharded::invoke_on_all`](super::Sharded::invoke_on_all)), in core order. Await it or
/// [`wait`](Gather::wait) for all of them; dropping it cancels the unfinished ones.
#[must_use = "dropping a Gather cancels the work not finished yet; await it or wait() on it"]
pub struct Gather<T> {
    calls: Vec<Submit<T>>,
    done: Vec<Option<T>>,
}

impl<T> Gather<T> {
    pub(crate) fn new(calls: Vec<Submit<T>>) -> Gather<T> {
        let done = calls.iter().map(|_| None).collect();
        Gather { calls, done }
    }

    /// Blocks the calling thread (a plain thread, not a runtime's) until every core's
    /// work finished, at most `timeout` in all; the outputs in core order.
    ///
    /// # Errors
    ///
    /// The first core's error (in core order), as [`SpawnHandle::wait`]'s; after a
    /// `Timeout`, waiting again picks up where this left off.
    ///
    /// # Panics
    ///
    /// On a coring runtime thread: `.await` it there.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<T>, WaitError> {
        crate::sync::forbid_blocking_on_runtime("Gather::wait");
        let deadline = Instant::now().checked_add(timeout);
        for (call, slot) in self.calls.iter_mut().zip(self.done.iter_mut()) {
            if slot.is_none() {
                let left = deadline.map_or(Duration::MAX, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                *slot = Some(call.wait(left)?);
            }
        }
        Ok(self
            .done
            .iter_mut()
            .map(|v| v.take().expect("every slot is filled"))
            .collect())
    }
}

// The outputs are kept by value and never pinned.
impl<T> Unpin for Gather<T> {}

impl<T> Future for Gather<T> {
    type Output = Result<Vec<T>, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Nothing here is pinned: `Submit` and `Option<T>` are moved freely.
        let this = self.get_mut();
        let mut pending = false;
        for (call, slot) in this.calls.iter_mut().zip(this.done.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match Pin::new(call).poll(cx) {
                Poll::Ready(Ok(v)) => *slot = Some(v),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(Ok(this
            .done
            .iter_mut()
            .map(|v| v.take().expect("every slot is filled"))
            .collect()))
    }
}

impl<T> fmt::Debug for Gather<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("cores", &self.calls.len())
            .finish()
    }
}

/// A cloneable, `Send + Sync` handle to a [`Pool`](super::Pool): start work on any core
/// from plain threads and from tasks on any core, and route by key with
/// [`current_core`](super::current_core).
///
/// It does not keep the pool running: once the pool shuts down (or is dropped), work sent
/// through a handle is refused, and its handle yields a cancelled [`JoinError`]
/// ([`WaitError::Closed`] from `wait`), never a panic.
///
/// ```
/// let pool = coring::Pool::builder().cores(1).pin(false).build().unwrap();
/// let handle = pool.handle();
/// let out = std::thread::spawn(move || {
///     handle
///         .submit_to(0, || async { coring::current_core().unwrap() + 40 })
///         .wait(std::time::Duration::from_secs(5))
///         .unwrap()
/// });
/// assert_eq!(out.join().unwrap(), 40);
/// pool.shutdown().unwrap();
/// ```
#[derive(Clone)]
pub struct PoolHandle {
    pub(super) shared: Arc<PoolShared>,
}

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle")
            .field("cores", &self.cores())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

impl PoolHandle {
    /// Number of cores of the pool.
    pub fn cores(&self) -> usize {
        self.shared.cores.len()
    }

    /// Whether the pool has been shut down (or dropped): work sent now is refused.
    pub fn is_shut_down(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Sends `f` to core `index`, which calls it inside a new task there and runs the
    /// future it returns (it need not be `Send`; only `f` and the output cross cores).
    fn start<F, Fut>(&self, index: usize, f: F) -> SpawnHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let abort = Abort::new();
        let remote = abort.clone();
        let mailbox = self.shared.mailbox(index);
        // A closed mailbox drops the job: `tx` goes with it and the handle sees Closed.
        mailbox.push(Box::new(move || {
            // `f` runs inside the task's first poll, so its panic is reported to the
            // caller like the future's; the core carries on.
            drop(crate::spawn(async move {
                let out = Guarded::new(async move { f().await }, remote).await;
                let _ = tx.send(out);
            }));
        }));
        SpawnHandle::new(rx, abort)
    }

    /// Runs `f` on core `index`: `f` builds a future there (it need not be `Send`), which
    /// runs as a task of that core. The handle yields its output, or a [`JoinError`] if it
    /// panicked, was aborted, or the core shut down first (also when the pool had already
    /// shut down). Dropping the handle detaches the task.
    ///
    /// # Panics
    ///
    /// If `index >= self.cores()`.
    #[track_caller]
    pub fn spawn_on<F, Fut>(&self, index: usize, f: F) -> SpawnHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.start(index, f)
    }

    /// Calls `f` on core `index` and brings the output of its future back to the caller:
    /// awaited in a task (of any core; the caller's core is woken through its cross-core
    /// wakeup, nothing blocks or polls) or [`wait`](Submit::wait)ed on a plain thread.
    ///
    /// The future is built on the target core, so it may hold `Rc`s and that core's
    /// sockets; only `f` and the output cross. Calls from one thread or task to one core
    /// start in the order they were made. A panic in `f` or its future is the caller's
    /// [`JoinError`]; the target core keeps running. Dropping the [`Submit`] before the
    /// output arrives cancels the call. After shutdown the call is refused (a cancelled
    /// `JoinError`).
    ///
    /// # Panics
    ///
    /// If `index >= self.cores()`.
    #[track_caller]
    pub fn submit_to<F, Fut>(&self, index: usize, f: F) -> Submit<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        Submit {
            handle: self.start(index, f),
            done: false,
        }
    }

    /// Runs `f(core)` on every core; the [`Gather`] completes once every core's future
    /// has finished, with the outputs in core order. A ready barrier: have each core bind
    /// its `SO_REUSEPORT` listener and `coring::spawn` its accept loop in `f`, and once
    /// this returns every listener is bound; no sleeps.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = coring::Pool::builder().cores(1).pin(false).build().unwrap();
    /// let bound = pool
    ///     .handle()
    ///     .run_on_all(|core| async move {
    ///         let listener = coring::net::TcpListener::bind("127.0.0.1:0")?;
    ///         let addr = listener.local_addr()?;
    ///         // The accept loop keeps running after the barrier.
    ///         drop(coring::spawn(async move { let _ = listener.accept().await; }));
    ///         Ok::<_, std::io::Error>((core, addr))
    ///     })
    ///     .wait(Duration::from_secs(10))
    ///     .unwrap();
    /// assert_eq!(bound.len(), 1);
    /// pool.shutdown().unwrap();
    /// ```
    pub fn run_on_all<F, Fut>(&self, f: F) -> Gather<Fut::Output>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let f = Arc::new(f);
        Gather::new(
            (0..self.cores())
                .map(|core| {
                    let f = f.clone();
                    self.submit_to(core, move || f(core))
                })
                .collect(),
        )
    }

    /// Every core's [`Metrics`](crate::Metrics) snapshot, in core order (each taken on its
    /// core by [`coring::metrics`](crate::metrics)); await the [`Gather`], or `wait` for it
    /// from a plain thread.
    pub fn metrics(&self) -> Gather<crate::Metrics> {
        self.run_on_all(|_| async { crate::metrics() })
    }
}

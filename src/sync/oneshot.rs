//! A channel for exactly one value, across cores and threads.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Creates a one-value channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            value: None,
            waker: None,
            sender_alive: true,
            receiver_alive: true,
            blocking: false,
        }),
        cond: Condvar::new(),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_alive: bool,
    receiver_alive: bool,
    /// The receiver waits in `recv_blocking`: only then is the condition variable (whose
    /// notify is a syscall) needed.
    blocking: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    cond: Condvar,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sender was dropped without sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot closed: the sender was dropped without sending")
    }
}

impl std::error::Error for RecvError {}

/// Sends the one value.
pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`.
    ///
    /// # Errors
    ///
    /// Gives the value back if the receiver is gone.
    pub fn send(self, value: T) -> Result<(), T> {
        let mut st = self.inner.lock();
        if !st.receiver_alive {
            return Err(value);
        }
        st.value = Some(value);
        let w = st.waker.take();
        let blocking = st.blocking;
        drop(st);
        if blocking {
            self.inner.cond.notify_all();
        }
        if let Some(w) = w {
            w.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.inner.lock().receiver_alive
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.sender_alive = false;
        let w = st.waker.take();
        let blocking = st.blocking;
        drop(st);
        if blocking {
            self.inner.cond.notify_all();
        }
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Receives the one value: await it, or block a plain thread with
/// [`recv_blocking`](Receiver::recv_blocking).
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Receiver<T> {
    /// Blocks the calling thread (outside any runtime) for the value, at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Err(None)` if the timeout passed, `Err(Some(RecvError))` if the sender was dropped.
    pub fn recv_blocking(&mut self, timeout: Duration) -> Result<T, Option<RecvError>> {
        // A timeout too large to add to now (Duration::MAX) means no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.inner.lock();
        let outcome = loop {
            if let Some(v) = st.value.take() {
                break Ok(v);
            }
            if !st.sender_alive {
                break Err(Some(RecvError));
            }
            st.blocking = true;
            st = match deadline {
                None => self.inner.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break Err(None);
                    }
                    self.inner
                        .cond
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        };
        st.blocking = false;
        outcome
    }

    /// Takes the value if it has been sent.
    pub fn try_recv(&mut self) -> Option<Result<T, RecvError>> {
        let mut st = self.inner.lock();
        match st.value.take() {
            Some(v) => Some(Ok(v)),
            None if !st.sender_alive => Some(Err(RecvError)),
            None => None,
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.inner.lock();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Ok(v));
        }
        if !st.sender_alive {
            return Poll::Ready(Err(RecvError));
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.receiver_alive = false;
        let v = st.value.take();
        drop(st);
        drop(v);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot::Sender")
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}

//! A bounded multi-producer, single-consumer channel that works across cores and threads.
//!
//! `send` waits while the channel holds `capacity` values (backpressure); values from one
//! sender arrive in the order sent, each exactly once.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use super::waiters::{wake, HasWaiters, WaitSlot, Waiters};
use super::{SendError, TryRecvError, TrySendError};

/// Creates a channel holding at most `capacity` values.
///
/// # Panics
///
/// If `capacity` is zero.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "mpsc::channel: capacity must be at least 1");
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            rx_waker: None,
            tx_waiters: Waiters::new(),
            senders: 1,
            receiver_alive: true,
            blocking: false,
        }),
        cond: Condvar::new(),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    rx_waker: Option<Waker>,
    /// Senders waiting for room (see [`Waiters`] for who is woken when).
    tx_waiters: Waiters,
    senders: usize,
    receiver_alive: bool,
    /// Whether the receiver is blocked in `recv_blocking` (only then does a send need the
    /// condition variable, whose notify is a syscall).
    blocking: bool,
}

struct Chan<T> {
    state: Mutex<State<T>>,
    /// For receivers blocking a plain thread ([`Receiver::recv_blocking`]).
    cond: Condvar,
}

impl<T> Chan<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half; clone it for more producers.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value if the receiver is gone.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut value = Some(value);
        let mut slot = WaitSlot::new(&*self.chan);
        poll_fn(|cx| {
            let mut st = self.chan.lock();
            let v = value.take().expect("send polled after completion");
            // Looking for room and registering happen under one lock, as does a receive's
            // pop and wake: a receive cannot slip between them unseen.
            if st.receiver_alive && st.queue.len() >= st.capacity {
                value = Some(v);
                st.tx_waiters.wait(&mut slot.key, cx.waker());
                return Poll::Pending;
            }
            if let Some(key) = slot.key.take() {
                st.tx_waiters.finish(key);
            }
            if !st.receiver_alive {
                return Poll::Ready(Err(SendError(v)));
            }
            st.queue.push_back(v);
            let w = st.rx_waker.take();
            let blocking = st.blocking;
            drop(st);
            if blocking {
                self.chan.cond.notify_one();
            }
            if let Some(w) = w {
                w.wake();
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Sends `value` if there is room right now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the value.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut st = self.chan.lock();
        if !st.receiver_alive {
            return Err(TrySendError::Closed(value));
        }
        if st.queue.len() >= st.capacity {
            return Err(TrySendError::Full(value));
        }
        st.queue.push_back(value);
        let w = st.rx_waker.take();
        let blocking = st.blocking;
        drop(st);
        if blocking {
            self.chan.cond.notify_one();
        }
        if let Some(w) = w {
            w.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.chan.lock().receiver_alive
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.lock().senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = self.chan.lock();
        st.senders -= 1;
        if st.senders == 0 {
            let w = st.rx_waker.take();
            let blocking = st.blocking;
            drop(st);
            if blocking {
                self.chan.cond.notify_all();
            }
            if let Some(w) = w {
                w.wake();
            }
        }
    }
}

impl<T> HasWaiters for Chan<T> {
    fn with_waiters<R>(&self, f: impl FnOnce(&mut Waiters) -> R) -> R {
        f(&mut self.lock().tx_waiters)
    }
}

/// The receiving half.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Receiver<T> {
    /// Receives the next value; `None` once the channel is empty and every sender is gone.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut st = self.chan.lock();
            let (v, sender) = match Self::take(&mut st) {
                Ok(got) => got,
                Err(TryRecvError::Closed) => return Poll::Ready(None),
                Err(TryRecvError::Empty) => {
                    match &st.rx_waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => st.rx_waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            };
            drop(st);
            wake(sender);
            Poll::Ready(Some(v))
        })
        .await
    }

    /// Takes a value if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`], or [`TryRecvError::Closed`] when every sender is gone.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        // The guard is a temporary of this statement: the lock is released before the wake.
        let (v, sender) = Self::take(&mut self.chan.lock())?;
        wake(sender);
        Ok(v)
    }

    /// Blocks the calling thread (outside any runtime) for the next value, at most
    /// `timeout`; `Ok(None)` once every sender is gone.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if the timeout passed first.
    pub fn recv_blocking(&mut self, timeout: Duration) -> Result<Option<T>, TryRecvError> {
        // A timeout too large to add to now (Duration::MAX) means no deadline.
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut st = self.chan.lock();
        let outcome = loop {
            match Self::take(&mut st) {
                Ok(got) => break Ok(Some(got)),
                Err(TryRecvError::Closed) => break Ok(None),
                Err(TryRecvError::Empty) => {}
            }
            st.blocking = true;
            st = match deadline {
                None => self.chan.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break Err(TryRecvError::Empty);
                    }
                    self.chan
                        .cond
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        };
        st.blocking = false;
        drop(st);
        Ok(outcome?.map(|(v, sender)| {
            wake(sender);
            v
        }))
    }

    /// Pops the next value and, since that frees a place, takes one waiting sender to wake
    /// (see [`Waiters`]); the caller wakes it after releasing the lock, as a waker may
    /// run code that uses this channel. No allocation: at most one waker per receive.
    fn take(st: &mut State<T>) -> Result<(T, Option<Waker>), TryRecvError> {
        match st.queue.pop_front() {
            Some(v) => Ok((v, st.tx_waiters.wake_one())),
            None if st.senders == 0 => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Values queued right now.
    pub fn len(&self) -> usize {
        self.chan.lock().queue.len()
    }

    /// Whether nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.chan.lock();
        st.receiver_alive = false;
        let queued = std::mem::take(&mut st.queue);
        let wakers = st.tx_waiters.wake_all();
        drop(st);
        drop(queued);
        for w in wakers {
            w.wake();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mpsc::Sender")
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mpsc::Receiver")
    }
}

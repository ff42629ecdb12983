//! Channels for tasks of one core: no atomics or locks, `!Send` handles.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::waiters::{wake, HasWaiters, WaitSlot, Waiters};
use super::{SendError, TryRecvError, TrySendError};

/// A bounded single-core multi-producer, single-consumer channel.
pub mod mpsc {
    pub use super::{channel, Receiver, Sender};
}

/// A single-core one-value channel.
pub mod oneshot {
    pub use super::{
        oneshot_channel as channel, OneshotReceiver as Receiver, OneshotSender as Sender,
    };
}

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    rx_waker: Option<Waker>,
    /// Senders waiting for room (see [`Waiters`] for who is woken when).
    tx_waiters: Waiters,
    senders: usize,
    receiver_alive: bool,
}

/// Creates a single-core channel holding at most `capacity` values.
///
/// # Panics
///
/// If `capacity` is zero.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(
        capacity > 0,
        "local::mpsc::channel: capacity must be at least 1"
    );
    let st = Rc::new(RefCell::new(State {
        queue: VecDeque::with_capacity(capacity.min(1024)),
        capacity,
        rx_waker: None,
        tx_waiters: Waiters::new(),
        senders: 1,
        receiver_alive: true,
    }));
    (Sender { st: st.clone() }, Receiver { st })
}

/// The sending half of a single-core channel.
pub struct Sender<T> {
    st: Rc<RefCell<State<T>>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value if the receiver is gone.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut value = Some(value);
        let mut slot = WaitSlot::new(&*self.st);
        poll_fn(|cx| {
            let v = value.take().expect("send polled after completion");
            let sent = match self.try_send(v) {
                Ok(()) => Ok(()),
                Err(TrySendError::Closed(v)) => Err(SendError(v)),
                Err(TrySendError::Full(v)) => {
                    value = Some(v);
                    let mut st = self.st.borrow_mut();
                    st.tx_waiters.wait(&mut slot.key, cx.waker());
                    return Poll::Pending;
                }
            };
            if let Some(key) = slot.key.take() {
                self.st.borrow_mut().tx_waiters.finish(key);
            }
            Poll::Ready(sent)
        })
        .await
    }

    /// Sends `value` if there is room right now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the value.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut st = self.st.borrow_mut();
        if !st.receiver_alive {
            return Err(TrySendError::Closed(value));
        }
        if st.queue.len() >= st.capacity {
            return Err(TrySendError::Full(value));
        }
        st.queue.push_back(value);
        let w = st.rx_waker.take();
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.st.borrow_mut().senders += 1;
        Sender {
            st: self.st.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = self.st.borrow_mut();
        st.senders -= 1;
        let w = if st.senders == 0 {
            st.rx_waker.take()
        } else {
            None
        };
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl<T> HasWaiters for RefCell<State<T>> {
    fn with_waiters<R>(&self, f: impl FnOnce(&mut Waiters) -> R) -> R {
        f(&mut self.borrow_mut().tx_waiters)
    }
}

/// The receiving half of a single-core channel.
pub struct Receiver<T> {
    st: Rc<RefCell<State<T>>>,
}

impl<T> Receiver<T> {
    /// Receives the next value; `None` once empty with every sender gone.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| match self.try_recv() {
            Ok(v) => Poll::Ready(Some(v)),
            Err(TryRecvError::Closed) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                self.st.borrow_mut().rx_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Takes a value if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`], or [`TryRecvError::Closed`] when every sender is gone.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut st = self.st.borrow_mut();
        match st.queue.pop_front() {
            Some(v) => {
                // One place freed: one waiting sender is woken (see `Waiters`), after the
                // borrow ends, as its waker may use this channel.
                let sender = st.tx_waiters.wake_one();
                drop(st);
                wake(sender);
                Ok(v)
            }
            None if st.senders == 0 => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.st.borrow_mut();
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

struct OneshotState<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_alive: bool,
    receiver_alive: bool,
}

/// Creates a single-core one-value channel.
pub fn oneshot_channel<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let st = Rc::new(RefCell::new(OneshotState {
        value: None,
        waker: None,
        sender_alive: true,
        receiver_alive: true,
    }));
    (OneshotSender { st: st.clone() }, OneshotReceiver { st })
}

/// Sends the one value of a single-core oneshot.
pub struct OneshotSender<T> {
    st: Rc<RefCell<OneshotState<T>>>,
}

impl<T> OneshotSender<T> {
    /// Sends `value`.
    ///
    /// # Errors
    ///
    /// Gives the value back if the receiver is gone.
    pub fn send(self, value: T) -> Result<(), T> {
        let mut st = self.st.borrow_mut();
        if !st.receiver_alive {
            return Err(value);
        }
        st.value = Some(value);
        let w = st.waker.take();
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        let mut st = self.st.borrow_mut();
        st.sender_alive = false;
        let w = st.waker.take();
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Receives the one value of a single-core oneshot; await it.
pub struct OneshotReceiver<T> {
    st: Rc<RefCell<OneshotState<T>>>,
}

impl<T> std::future::Future for OneshotReceiver<T> {
    type Output = Result<T, super::oneshot::RecvError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut st = self.st.borrow_mut();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Ok(v));
        }
        if !st.sender_alive {
            return Poll::Ready(Err(super::oneshot::RecvError));
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for OneshotReceiver<T> {
    fn drop(&mut self) {
        let mut st = self.st.borrow_mut();
        st.receiver_alive = false;
        let v = st.value.take();
        drop(st);
        drop(v);
    }
}

//! Channels for tasks of one core: no atomics or locks, `!Send` handles.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::chan::{handles, Bounded, Chan, ReceiverRef, SenderRef, State};
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
    let (tx, rx) = handles(Rc::new(RefCell::new(State::new(Bounded::new(capacity)))));
    (Sender { chan: tx }, Receiver { chan: rx })
}

/// The sending half of a single-core channel.
pub struct Sender<T> {
    chan: SenderRef<Rc<RefCell<State<Bounded<T>>>>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value if the receiver is gone.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.chan.send(value).await
    }

    /// Sends `value` if there is room right now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the value.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(value)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            chan: self.chan.clone(),
        }
    }
}

/// The receiving half of a single-core channel.
pub struct Receiver<T> {
    chan: ReceiverRef<Rc<RefCell<State<Bounded<T>>>>>,
}

/// The values received, ending once the channel is empty with every sender gone (as
/// [`recv`](Receiver::recv)).
impl<T> futures_core::Stream for Receiver<T> {
    type Item = T;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.get_mut().chan.poll_recv(cx)
    }
}

impl<T> Receiver<T> {
    /// Receives the next value; `None` once empty with every sender gone.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.chan.poll_recv(cx)).await
    }

    /// Takes a value if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`], or [`TryRecvError::Closed`] when every sender is gone.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.chan.try_recv()
    }
}

/// Creates a single-core one-value channel.
pub fn oneshot_channel<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let (tx, rx) = handles(Rc::new(RefCell::new(State::new(None))));
    (OneshotSender { chan: tx }, OneshotReceiver { chan: rx })
}

/// Sends the one value of a single-core oneshot.
pub struct OneshotSender<T> {
    chan: SenderRef<Rc<RefCell<State<Option<T>>>>>,
}

impl<T> OneshotSender<T> {
    /// Sends `value`.
    ///
    /// # Errors
    ///
    /// Gives the value back if the receiver is gone.
    pub fn send(self, value: T) -> Result<(), T> {
        self.chan.try_send(value).map_err(TrySendError::into_inner)
    }
}

/// Receives the one value of a single-core oneshot; await it.
pub struct OneshotReceiver<T> {
    chan: ReceiverRef<Rc<RefCell<State<Option<T>>>>>,
}

impl<T> Future for OneshotReceiver<T> {
    type Output = Result<T, super::oneshot::RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.chan
            .poll_recv(cx)
            .map(|v| v.ok_or(super::oneshot::RecvError))
    }
}

//! A bounded multi-producer, single-consumer channel that works across cores and threads.
//!
//! `send` waits while the channel holds `capacity` values (backpressure); values from one
//! sender arrive in the order sent, each exactly once.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use super::chan::{handles, Bounded, Chan, ReceiverRef, SenderRef, State, SyncChan};
use super::{SendError, TryRecvError, TrySendError, WaitError};

/// Creates a channel holding at most `capacity` values.
///
/// # Panics
///
/// If `capacity` is zero.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "mpsc::channel: capacity must be at least 1");
    let (tx, rx) = handles(Arc::new(SyncChan::new(State::new(Bounded::new(capacity)))));
    (Sender { chan: tx }, Receiver { chan: rx })
}

/// The sending half; clone it for more producers.
pub struct Sender<T> {
    chan: SenderRef<Arc<SyncChan<Bounded<T>>>>,
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

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            chan: self.chan.clone(),
        }
    }
}

/// The receiving half.
pub struct Receiver<T> {
    chan: ReceiverRef<Arc<SyncChan<Bounded<T>>>>,
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
    /// Receives the next value; `None` once the channel is empty and every sender is gone.
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

    /// Blocks the calling thread (a plain thread, not a runtime's) for the next value, at
    /// most `timeout` (`Duration::MAX`: no deadline).
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] if the timeout passed first, [`WaitError::Closed`] once the
    /// channel is empty and every sender is gone.
    ///
    /// # Panics
    ///
    /// On a coring runtime thread (a pool's core, or inside `block_on`), where blocking
    /// would stall the runtime: use `recv().await` there instead.
    #[track_caller]
    pub fn recv_blocking(&mut self, timeout: Duration) -> Result<T, WaitError> {
        match self
            .chan
            .recv_blocking("mpsc::Receiver::recv_blocking", timeout)
        {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(WaitError::Closed),
            Err(_) => Err(WaitError::Timeout),
        }
    }

    /// Values queued right now.
    pub fn len(&self) -> usize {
        self.chan.lock().queue().len()
    }

    /// Whether nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

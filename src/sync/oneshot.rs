//! A channel for exactly one value, across cores and threads.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::chan::{handles, Chan, ReceiverRef, SenderRef, State, SyncChan};
use super::{TryRecvError, WaitError};

/// Creates a one-value channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = handles(Arc::new(SyncChan::new(State::new(None))));
    (Sender { chan: tx }, Receiver { chan: rx })
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
    chan: SenderRef<Arc<SyncChan<Option<T>>>>,
}

impl<T> Sender<T> {
    /// Sends `value`.
    ///
    /// # Errors
    ///
    /// Gives the value back if the receiver is gone.
    pub fn send(self, value: T) -> Result<(), T> {
        self.chan.try_send(value).map_err(|e| e.into_inner())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }
}

/// Receives the one value: await it, or block a plain thread with
/// [`recv_blocking`](Receiver::recv_blocking).
pub struct Receiver<T> {
    chan: ReceiverRef<Arc<SyncChan<Option<T>>>>,
}

impl<T> Receiver<T> {
    /// Blocks the calling thread (a plain thread, not a runtime's) for the value, at most
    /// `timeout` (`Duration::MAX`: no deadline).
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] if the timeout passed first (the value may still come: call
    /// again), [`WaitError::Closed`] if the sender was dropped without sending.
    ///
    /// # Panics
    ///
    /// On a coring runtime thread (a pool's core, or inside `block_on`), where blocking
    /// would stall the runtime: `.await` the receiver there instead.
    #[track_caller]
    pub fn recv_blocking(&mut self, timeout: Duration) -> Result<T, WaitError> {
        match self
            .chan
            .recv_blocking("oneshot::Receiver::recv_blocking", timeout)
        {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(WaitError::Closed),
            Err(_) => Err(WaitError::Timeout),
        }
    }

    /// Takes the value if it has been sent.
    pub fn try_recv(&mut self) -> Option<Result<T, RecvError>> {
        match self.chan.try_recv() {
            Ok(v) => Some(Ok(v)),
            Err(TryRecvError::Closed) => Some(Err(RecvError)),
            Err(TryRecvError::Empty) => None,
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.chan.poll_recv(cx).map(|v| v.ok_or(RecvError))
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
